"""Counts every processed entry in the Prometheus metrics (nuvla_job/metrics.py)."""

from __future__ import annotations

import time

from .. import metrics
from ..outcome import Outcome
from .hooks import JobRun, Middleware


class Metrics(Middleware):
    """Counts takes, and each settled entry by action and outcome with its duration."""

    def after_take(self, run: JobRun) -> None:
        metrics.job_taken()

    def after_settle(self, run: JobRun, outcome: Outcome) -> None:
        metrics.job_done(run.action, outcome, time.perf_counter() - run.started)
