"""`cleanup_jobs`: delete jobs in a final state older than an age, with one bulk delete.

Payload (optional): `{"days": N}`, default 7. Distributed once a day.
"""

from nuvla_job.job import Job
from nuvla_job.jobsearch import any_of
from nuvla_job.registry import action, distribute
from nuvla_job.states import FINAL_STATES

DEFAULT_DAYS = 7


def cleanup_filter(days: int) -> str:
    # Date math is resolved by the job API with its own clock: no skew with ours.
    return f"state={any_of(FINAL_STATES)} and created<'now-{days}d'"


@action("cleanup_jobs")
class CleanupJobs:
    """Deletes final jobs created more than `days` days ago; reports how many."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.api = job.api

    def do_work(self) -> int:
        payload = self.job.payload if isinstance(self.job.payload, dict) else {}
        days = payload.get("days", DEFAULT_DAYS)
        if not isinstance(days, int) or isinstance(days, bool) or days < 0:
            self.job.set_status_message(f"payload 'days' must be an integer >= 0, not {days!r}")
            return 1
        self.job.set_progress(10)
        answer = self.api.delete_bulk("job", cleanup_filter(days)).data
        deleted = int(answer.get("deleted", 0))
        message = f"deleted {deleted} job(s) in a final state older than {days} day(s)"
        if answer.get("timed_out"):
            # The store stopped part-way; the next daily run deletes the rest.
            message += " (the bulk delete timed out: some are left for the next run)"
        self.job.set_status_message(message)
        return 0


distribute("cleanup_jobs", 24 * 3600)
