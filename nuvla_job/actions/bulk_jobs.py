"""Parent/child ("bulk") jobs: `bulk_jobs` launches children, `monitor_bulk_jobs` settles parents.

A parent is a job whose action starts with `bulk` and whose children are separate jobs with
`parent-job` set to it. The parent's contract with the monitor:

- it creates all its children first, then records them in `nested-jobs` (one edit): a parent
  with `nested-jobs` has launched everything, so all of them final means it is done;
- it stays `RUNNING` while they run; its progress is the share of children that are final;
- when every child is final it becomes `SUCCESS` if they all succeeded, else `FAILED`, with a
  summary of the outcomes in its status message.

`bulk_jobs` is the generic parent: payload `{"jobs": [<job body>, ...]}`, each body as for
`api.add('job', body)` (a child's `payload` may be JSON rather than a JSON text). Children
inherit the parent's ACL and priority unless they set their own. After launching, it follows
its children itself and ends with their summary. The executor writes a final state as soon as
an action returns, so the parent waits in its greenlet, which holds one executor slot until its
children are done: keep fewer bulk jobs running at once than the executors have slots.
`monitor_bulk_jobs` (distributed every minute) settles any RUNNING parent, including parents
whose own run went away and parents of other `bulk...` actions that follow the contract.

Cancelling a parent (job API) creates `cancel_children_jobs`, which cancels the children.
"""

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

from nuvla.api import Api, NuvlaError

from nuvla_job.job import Job
from nuvla_job.jobsearch import count_by_state, has_unfinished, iter_jobs, quote
from nuvla_job.registry import action, distribution
from nuvla_job.states import FINAL_STATES

log = logging.getLogger(__name__)

MONITOR_INTERVAL = 60
MONITOR_PRIORITY = 100
# How often a waiting `bulk_jobs` parent looks at its children.
POLL_SECONDS = 1.0
RUNNING_PARENTS = "action^='bulk' and state='RUNNING'"
FAILED_SHOWN = 10


@dataclass(frozen=True)
class Outcome:
    """Where a parent stands: its progress, and its final state once every child is final."""

    progress: int
    state: str | None  # SUCCESS or FAILED when done, else None
    message: str


def assess(api: Api, parent: dict) -> Outcome | None:
    """The parent's standing from its children; None while it is still launching them."""
    expected = len(parent.get("nested-jobs") or [])
    if not expected:
        return None
    children = f"parent-job={quote(parent['id'])}"
    counts = count_by_state(api, children)
    total = max(expected, sum(counts.values()))
    done = sum(counts[state] for state in FINAL_STATES)
    if done < total:
        return Outcome(done * 100 // total, None, f"{done} of {total} child job(s) final")
    outcomes = ", ".join(f"{counts[s]} {s}" for s in FINAL_STATES if counts[s])
    message = f"{total} child job(s): {outcomes}"
    if counts["SUCCESS"] == total:
        return Outcome(100, "SUCCESS", message)
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
    return Outcome(
        100,
        "FAILED",
        f"{message}; not successful: {', '.join(unsuccessful)}"
        + (", ..." if total - counts["SUCCESS"] > FAILED_SHOWN else ""),
    )


# -- the generic parent ---------------------------------------------------------------------------


def _child_bodies(payload: object) -> list[dict] | str:
    """The payload's child bodies, or what is wrong with it."""
    jobs = payload.get("jobs") if isinstance(payload, dict) else None
    if not isinstance(jobs, list):
        return 'payload must be {"jobs": [<job body>, ...]}'
    for index, body in enumerate(jobs):
        if not isinstance(body, dict) or not isinstance(body.get("action"), str):
            return f"payload jobs[{index}] is not a job body with an 'action'"
    return jobs


@action("bulk_jobs")
class BulkJobs:
    """Creates the child jobs of its payload, then follows them until all are final."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.api = job.api

    def do_work(self) -> int:
        bodies = _child_bodies(self.job.payload)
        if isinstance(bodies, str):
            self.job.set_status_message(bodies)
            return 1
        if not bodies:
            self.job.set_status_message("no child jobs to run")
            return 0
        if not self.job.get("nested-jobs"):
            self._launch(bodies)
        return self._follow()

    def _launch(self, bodies: list[dict]) -> None:
        # A run interrupted part-way (executor crash) resumes: children are created in order,
        # so the ones already there are the first ones of the list.
        ids = [
            doc["id"]
            for doc in iter_jobs(self.api, f"parent-job={quote(self.job.id)}", select="id")
        ]
        for body in bodies[len(ids) :]:
            child = {
                "acl": self.job["acl"],
                "priority": self.job.get("priority", 999),
                **body,
                "parent-job": self.job.id,
            }
            if not isinstance(child.get("payload", ""), str):
                child["payload"] = json.dumps(child["payload"])  # the job API wants a JSON text
            ids.append(self.api.add("job", child).data["resource-id"])
        self.job.add_nested_jobs(ids)
        log.info("%s: %d child job(s) launched", self.job.id, len(ids))

    def _follow(self) -> int:
        progress = self.job.get("progress", 0)
        while True:
            parent = self.api.get(self.job.id).data
            if parent["state"] in FINAL_STATES:
                # Cancelled, or settled by monitor_bulk_jobs first: the executor's own write
                # is then refused (409) and the entry dropped.
                return 0 if parent["state"] == "SUCCESS" else 1
            outcome = assess(self.api, parent)
            if outcome is not None and outcome.state is not None:
                self.job.set_status_message(outcome.message)
                return 0 if outcome.state == "SUCCESS" else 1
            if outcome is not None and outcome.progress != progress:
                progress = outcome.progress
                self.job.set_progress(progress)
            time.sleep(POLL_SECONDS)


# -- the monitor ----------------------------------------------------------------------------------


@action("monitor_bulk_jobs")
class MonitorBulkJobs:
    """Updates every RUNNING bulk parent from its children; settles those that are done."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.api = job.api

    def do_work(self) -> int:
        parents = settled = 0
        for parent in iter_jobs(self.api, RUNNING_PARENTS, select="id,state,progress,nested-jobs"):
            parents += 1
            try:
                settled += self._update(parent)
            except NuvlaError as exc:
                status = exc.response.status_code if exc.response is not None else None
                if status not in (404, 409):  # gone, or finished meanwhile
                    raise
        self.job.set_status_message(f"{parents} running bulk job(s), {settled} settled")
        return 0

    def _update(self, parent: dict) -> int:
        outcome = assess(self.api, parent)
        if outcome is None:
            return 0
        if outcome.state is None:
            if outcome.progress != parent.get("progress"):
                self.api.edit(parent["id"], {"progress": outcome.progress})
            return 0
        self.api.edit(
            parent["id"],
            {
                "state": outcome.state,
                "return-code": 0 if outcome.state == "SUCCESS" else 1,
                "status-message": outcome.message,
            },
        )
        log.info("%s: %s (%s)", parent["id"], outcome.state, outcome.message)
        return 1


@distribution("monitor_bulk_jobs", MONITOR_INTERVAL)
def monitor_when_needed(api: Api) -> Iterator[dict]:
    """One monitor job per interval while bulk parents run and the previous one is done."""
    if api.search("job", filter=RUNNING_PARENTS, last=0).data.get("count", 0) == 0:
        return
    if has_unfinished(api, "monitor_bulk_jobs"):
        return
    yield {"action": "monitor_bulk_jobs", "priority": MONITOR_PRIORITY}
