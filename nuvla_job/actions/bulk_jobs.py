"""`bulk_jobs`: the generic parent job. It launches the child jobs of its payload and leaves
itself RUNNING for the bulk monitor (nuvla_job/actions/monitor_bulk_job.py), which settles it.

Payload `{"jobs": [<job body>, ...]}`, each body as for `api.add('job', body)` (a child's
`payload` may be JSON rather than a JSON text). Children inherit the parent's ACL and
priority unless they set their own. The parent's contract with the monitor:

- it creates all its children first, then records them in `nested-jobs` (one edit): a parent
  with `nested-jobs` has launched everything, so all of them final means it is done;
- it then tags itself `monitor` and ends its run with LeaveRunning: the entry is consumed and
  the executor's slot freed while the children run;
- the monitor gives it the share of final children as its progress and, when every child is
  final, SUCCESS if they all succeeded, else FAILED, with a summary of the outcomes.

Cancelling a parent (job API) creates `cancel_children_jobs`, which cancels the children.
"""

import json
import logging

from nuvla_job.bulk import MONITOR_TAG
from nuvla_job.job import Job
from nuvla_job.jobsearch import iter_jobs, quote
from nuvla_job.outcome import LeaveRunning
from nuvla_job.registry import action

log = logging.getLogger(__name__)


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
    """Creates the child jobs of its payload, then hands itself to the monitor."""

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
        tags = [tag for tag in self.job.get("tags", []) if tag != MONITOR_TAG]
        self.job.update_job(tags=[*tags, MONITOR_TAG])
        raise LeaveRunning()

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
