"""Every line logged while an entry is handled names its job and action (monitoring.py)."""

from __future__ import annotations

from .. import monitoring
from .hooks import JobRun, Middleware


class LogContext(Middleware):
    """Binds the job id as soon as the entry is taken, and its action once fetched.

    One greenlet handles one entry, so the binding lasts to the greenlet's end: the lines
    about the entry's consume or release are tagged too.
    """

    def after_take(self, run: JobRun) -> None:
        monitoring.bind_job_context(run.job_id)

    def after_fetch(self, run: JobRun) -> None:
        assert run.job is not None
        monitoring.bind_job_context(run.job.id, run.job.get("action"))
