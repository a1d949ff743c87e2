"""Reports the exceptions of actions, and unexpected errors, to Sentry (monitoring.py)."""

from __future__ import annotations

from collections.abc import Callable

from .. import monitoring
from .hooks import JobRun, Middleware

Capture = Callable[..., None]


class Sentry(Middleware):
    """Sends each exception tagged with its job, its action and this executor's name.

    ``capture`` is :func:`monitoring.capture_exception` (a no-op without a DSN); tests may
    pass a recorder.
    """

    def __init__(self, executor: str, capture: Capture = monitoring.capture_exception) -> None:
        self.executor = executor
        self.capture = capture

    def after_action(self, run: JobRun, exception: BaseException | None) -> None:
        if exception is not None:
            action = run.job.get("action") if run.job is not None else None
            self.capture(exception, job_id=run.job_id, action=action, executor=self.executor)

    def after_error(self, run: JobRun, exception: Exception) -> None:
        self.capture(exception, job_id=run.job_id, executor=self.executor)
