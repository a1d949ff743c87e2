"""The bulk monitor, as Nuvla runs it: `monitor_bulk_jobs` distributes one `monitor_bulk_job`
job per running bulk parent, which updates that parent from its children.

A bulk parent is a job whose action starts with `bulk` and whose children are jobs with
`parent-job` set to it. It launches them, tags itself `monitor` and ends its run leaving its
job RUNNING (nuvla_job.outcome.LeaveRunning, or upstream's UnfinishedBulkActionToMonitor): no
executor slot stays busy while the children run. Every 30 s the elected `monitor_bulk_jobs`
distribution (election `/election/monitor_bulk_job`, shared with Nuvla's own distributors)
creates a `monitor_bulk_job` job for each RUNNING parent tagged `monitor` that has none
QUEUED or RUNNING. That job updates its parent in one of two ways:

- a parent whose status message is Nuvla's `BulkActionResult` JSON (Nuvla's `bulk_*`
  actions) is treated exactly as Nuvla's monitor does: its progress grows with the children
  found final, the result lists them (`Job failed` / `Job canceled` for the others), and at
  progress 100 it is SUCCESS; a parent created more than an hour ago is cancelled instead;
- a parent of this project's contract (`bulk_jobs`: its children recorded in `nested-jobs`)
  gets the share of final children as its progress and, once all are final, SUCCESS if they
  all succeeded, else FAILED, with a summary. It has no time limit.

`monitor_bulk_jobs` is also an action, kept for jobs of that name queued by earlier versions:
it updates every RUNNING parent of the second kind at once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from nuvla.api import Api, NuvlaError
from nuvla.api.models import CimiResource

from nuvla_job.bulk import JOB_CANCELED_REASON, JOB_FAILED_REASON, MONITOR_TAG, BulkResult
from nuvla_job.job import Job
from nuvla_job.jobsearch import any_of, count_by_state, iter_jobs, quote
from nuvla_job.registry import action, action_and_target, distribution
from nuvla_job.states import (
    FINAL_STATES,
    JOB_CANCELED,
    JOB_FAILED,
    JOB_QUEUED,
    JOB_RUNNING,
    JOB_SUCCESS,
    UNFINISHED_STATES,
)

log = logging.getLogger(__name__)

MONITOR_ACTION = "monitor_bulk_job"
MONITOR_INTERVAL = 30  # upstream's
RUNNING_PARENTS = "action^='bulk' and state='RUNNING'"
MONITORED_PARENTS = f"{RUNNING_PARENTS} and tags={quote(MONITOR_TAG)}"
# Nuvla's bulk jobs are given up (cancelled) when still running this long after creation.
NUVLA_BULK_EXPIRY = "1h"
# Upstream reads at most this many parents, and this many children of a parent, per run.
SEARCH_LIMIT = 10_000
FAILED_SHOWN = 10


# -- this project's contract (bulk_jobs) ------------------------------------------------------


@dataclass(frozen=True)
class Standing:
    """Where a parent stands: its progress, and its final state once every child is final."""

    progress: int
    state: str | None  # SUCCESS or FAILED when done, else None
    message: str


def assess(api: Api, parent: dict) -> Standing | None:
    """The parent's standing from its children; None while it is still launching them."""
    expected = len(parent.get("nested-jobs") or [])
    if not expected:
        return None
    children = f"parent-job={quote(parent['id'])}"
    counts = count_by_state(api, children)
    total = max(expected, sum(counts.values()))
    done = sum(counts[state] for state in FINAL_STATES)
    if done < total:
        return Standing(done * 100 // total, None, f"{done} of {total} child job(s) final")
    outcomes = ", ".join(f"{counts[s]} {s}" for s in FINAL_STATES if counts[s])
    message = f"{total} child job(s): {outcomes}"
    if counts[JOB_SUCCESS] == total:
        return Standing(100, JOB_SUCCESS, message)
    unsuccessful = [
        doc["id"]
        for doc in api.search(
            "job",
            filter=f"{children} and state!='SUCCESS'",
            select="id",
            last=FAILED_SHOWN,
            orderby="created",
        ).data.get("resources", [])
    ]
    return Standing(
        100,
        JOB_FAILED,
        f"{message}; not successful: {', '.join(unsuccessful)}"
        + (", ..." if total - counts[JOB_SUCCESS] > FAILED_SHOWN else ""),
    )


def follow_nested(api: Api, parent: dict) -> str | None:
    """Update a parent of this project's contract; returns the final state written, if any."""
    standing = assess(api, parent)
    if standing is None:
        return None
    if standing.state is None:
        if standing.progress != parent.get("progress"):
            api.edit(parent["id"], {"progress": standing.progress})
        return None
    api.edit(
        parent["id"],
        {
            "state": standing.state,
            "return-code": 0 if standing.state == JOB_SUCCESS else 1,
            "status-message": standing.message,
        },
    )
    log.info("%s: %s (%s)", parent["id"], standing.state, standing.message)
    return standing.state


# -- Nuvla's bulk actions ---------------------------------------------------------------------


def _expired(api: Api, parent_id: str) -> bool:
    window = f"id={quote(parent_id)} and created>'now-{NUVLA_BULK_EXPIRY}'"
    return api.search("job", filter=window, last=0).data.get("count", 0) == 0


def follow_nuvla(api: Api, parent: CimiResource, result: BulkResult) -> str | None:
    """Update a parent of Nuvla's bulk actions as Nuvla's monitor does."""
    if _expired(api, parent.id):
        log.warning("%s: still running an hour after its creation: cancelled", parent.id)
        api.operation(parent, "cancel")
        return JOB_CANCELED
    children = api.search(
        "job",
        filter=f"parent-job={quote(parent.id)}",
        last=SEARCH_LIMIT,
        select="id,target-resource,state",
    ).data.get("resources", [])
    by_state: dict[str, list[dict]] = {}
    for child in children:
        by_state.setdefault(child["state"], []).append(child)
    unfinished = by_state.get(JOB_RUNNING, []) + by_state.get(JOB_QUEUED, [])
    done = [
        child
        for state in (JOB_SUCCESS, JOB_FAILED, JOB_CANCELED)
        for child in by_state.get(state, [])
    ]
    # Upstream's arithmetic, kept as is so that both monitors write the same progress: the
    # part still missing is shared among the children, and the final ones' shares are added.
    progress = parent.data.get("progress", 0)
    count = len(done) + len(unfinished)
    left = 100 - progress
    progress += int(len(done) * (left / count)) if count else left
    result.queued = [child["id"] for child in by_state.get(JOB_QUEUED, [])]
    result.running = [child["id"] for child in by_state.get(JOB_RUNNING, [])]
    for child in done:
        resource = (child.get("target-resource") or {}).get("href", child["id"])
        if child["state"] == JOB_SUCCESS:
            result.add_success(resource)
        else:
            reason = JOB_FAILED_REASON if child["state"] == JOB_FAILED else JOB_CANCELED_REASON
            if not result.has_failed(reason, resource):
                result.fail(reason, resource)
    body: dict[str, Any] = {"progress": progress, "status-message": result.to_json()}
    if progress == 100:
        body.update({"state": JOB_SUCCESS, "return-code": 0})
    api.edit(parent.id, body)
    log.info("%s: %d of %d child job(s) final, progress %d", parent.id, len(done), count, progress)
    return JOB_SUCCESS if progress == 100 else None


# -- the action and the distribution ----------------------------------------------------------


def _gone_or_final(exc: NuvlaError) -> bool:
    """The parent was deleted (404) or became final meanwhile (409): nothing to do."""
    status = exc.response.status_code if exc.response is not None else None
    return status in (404, 409)


@action(MONITOR_ACTION)
class MonitorBulkJob:
    """Updates its target, a running bulk parent, from the parent's children."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.api = job.api

    def do_work(self) -> int:
        self.job.set_progress(10)
        target = self.job.target_resource_href
        if not target:
            self.job.set_status_message("monitor_bulk_job needs a target-resource (the bulk job)")
            return 1
        try:
            parent = self.api.get(target)
            if parent.data.get("state") in FINAL_STATES:
                return 0
            result = BulkResult.parse(parent.data.get("status-message"))
            if result is not None:
                follow_nuvla(self.api, parent, result)
            else:
                follow_nested(self.api, parent.data)
        except NuvlaError as exc:
            if not _gone_or_final(exc):
                raise
        return 0


@distribution(
    "monitor_bulk_jobs",
    MONITOR_INTERVAL,
    election=MONITOR_ACTION,
    unique_key=action_and_target,
)
def monitor_each_parent(api: Api) -> Iterator[dict]:
    """One `monitor_bulk_job` job per RUNNING parent tagged `monitor` that has none waiting.

    The search before each add is upstream's (and all a Nuvla server allows); on this
    project's job API the unique key monitor_bulk_job:<parent> also closes the race between
    that search and the add."""
    parents = api.search("job", filter=MONITORED_PARENTS, select="id", last=SEARCH_LIMIT)
    for parent in parents.data.get("resources", []):
        target = parent["id"]
        waiting = (
            f"state={any_of(UNFINISHED_STATES)} and action={quote(MONITOR_ACTION)}"
            f" and target-resource/href={quote(target)}"
        )
        if api.search("job", filter=waiting, last=0).data.get("count", 0) == 0:
            yield {"action": MONITOR_ACTION, "target-resource": {"href": target}}


@action("monitor_bulk_jobs")
class MonitorBulkJobs:
    """Updates every RUNNING parent of this project's contract (jobs of earlier versions)."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.api = job.api

    def do_work(self) -> int:
        parents = settled = 0
        for parent in iter_jobs(self.api, RUNNING_PARENTS, select="id,state,progress,nested-jobs"):
            parents += 1
            try:
                settled += follow_nested(self.api, parent) is not None
            except NuvlaError as exc:
                if not _gone_or_final(exc):
                    raise
        self.job.set_status_message(f"{parents} running bulk job(s), {settled} settled")
        return 0
