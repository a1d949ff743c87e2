"""`cancel_children_jobs`: cancel every unfinished child of a cancelled job.

The job API creates this job (target: the cancelled job) when a `bulk...` job is cancelled.
A child that is itself a `bulk...` job gets its own `cancel_children_jobs` from the API in
turn, so a whole tree is cancelled.
"""

import logging

from nuvla.api import NuvlaError
from nuvla.api.models import CimiResource

from nuvla_job.job import Job
from nuvla_job.jobsearch import any_of, iter_jobs, quote
from nuvla_job.registry import action
from nuvla_job.states import UNFINISHED_STATES

log = logging.getLogger(__name__)

# 404: deleted meanwhile; 409: it reached a final state meanwhile. Nothing left to cancel.
GONE = (404, 409)


@action("cancel_children_jobs")
class CancelChildrenJobs:
    def __init__(self, job: Job) -> None:
        self.job = job
        self.api = job.api

    def do_work(self) -> int:
        parent = self.job.target_resource_href
        if not parent:
            self.job.set_status_message("no target-resource: which job's children to cancel?")
            return 1
        children = f"parent-job={quote(parent)} and state={any_of(UNFINISHED_STATES)}"
        cancelled, gone, failed = 0, 0, []
        for child in iter_jobs(self.api, children, select="id"):
            try:
                self.api.operation(CimiResource(child), "cancel")
                cancelled += 1
            except NuvlaError as exc:
                status = exc.response.status_code if exc.response is not None else None
                if status in GONE:
                    gone += 1
                    continue
                log.error("%s: cannot cancel %s: %s", self.job.id, child["id"], exc.reason)
                failed.append(child["id"])
        message = f"cancelled {cancelled} child job(s) of {parent}"
        if gone:
            message += f"; {gone} finished or went away meanwhile"
        if failed:
            message += f"; {len(failed)} could not be cancelled: {', '.join(failed[:10])}"
        self.job.set_status_message(message)
        return 1 if failed else 0
