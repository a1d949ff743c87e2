"""Counts every processed entry in the Prometheus metrics (nuvla_job/metrics.py)."""

from __future__ import annotations

import time

from .. import metrics
from ..outcome import Outcome
from .hooks import JobRun, Middleware


class Metrics(Middleware):
    """Counts takes, each settled entry by action and outcome with its duration, and the
    jobs whose action ran and that ended FAILED (the dead letters)."""

    def after_take(self, run: JobRun) -> None:
        metrics.job_taken()

    def after_settle(self, run: JobRun, outcome: Outcome) -> None:
        metrics.job_done(run.action, outcome, time.perf_counter() - run.started)
        if run.action_ran and outcome.state == "FAILED":
            metrics.dead_letter(run.action)
