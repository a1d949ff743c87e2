"""Retries: a failed attempt with attempts left is queued again after a back-off.

The policy is the action's (``@action("name", retries=N, backoff=, max_backoff=,
retry_on=)``), and a job on this project's job API may override its numbers with its own
``retry`` attribute (``{"retries": N, "backoff": s, "max-backoff": s}``; ``retry_on`` stays
the action's: exception types are not data). A failure is ``do_work`` raising one of
``retry_on`` (the time limit is one, an ``Exception``); a non-zero return code is the
action's own verdict and stays final.

When a failure gets another attempt, this middleware leaves a :class:`RetryPlan` on the
run (``run.retry``); the executor writes it instead of ``FAILED``: ``QUEUED`` with a status
message naming the attempt, the error and when the next attempt runs. Attempts are counted
in the job document (nuvla_job/attempts.py), so the plan survives any crash.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .. import attempts
from ..backoff import jittered_backoff
from ..registry import ActionSpec
from .hooks import JobRun, Middleware

log = logging.getLogger(__name__)

# The most retries, and the longest wait, a job's own `retry` attribute may ask for (the
# job API checks them too: api/schema.py).
MAX_RETRIES = 1000
MAX_BACKOFF = 30 * 86400.0


@dataclass(frozen=True)
class Policy:
    """How often a failed job runs again and how long it waits before each attempt."""

    retries: int
    backoff: float
    max_backoff: float
    retry_on: tuple[type[BaseException], ...]

    @classmethod
    def of(cls, spec: ActionSpec, job: Mapping[str, Any]) -> Policy:
        """The action's policy with the numbers the job's ``retry`` attribute overrides."""
        policy = cls(spec.retries, spec.backoff, spec.max_backoff, spec.retry_on)
        own = job.get(attempts.RETRY)
        if not isinstance(own, dict) or not attempts.own_api(job):
            return policy
        retries, backoff, cap = (
            own.get("retries", policy.retries),
            own.get("backoff", policy.backoff),
            own.get("max-backoff", policy.max_backoff),
        )
        # Checked by the job API when stored; a bad value here keeps the action's number.
        if not _count(retries):
            retries = policy.retries
        if not _seconds(backoff):
            backoff = policy.backoff
        if not _seconds(cap):
            cap = policy.max_backoff
        return cls(retries, float(backoff), float(max(cap, backoff)), policy.retry_on)

    def retries_on(self, exception: BaseException) -> bool:
        return self.retries > 0 and isinstance(exception, self.retry_on)

    @property
    def attempts(self) -> int:
        """The most attempts a job gets: the first one and its retries."""
        return self.retries + 1


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_RETRIES


def _seconds(value: object) -> bool:
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= MAX_BACKOFF
    )


@dataclass(frozen=True)
class RetryPlan:
    """Attempt ``attempt`` of at most ``attempts`` failed; the next one runs after ``delay``
    seconds."""

    attempt: int
    attempts: int
    delay: float


class Retries(Middleware):
    """Decides, once an action has raised, whether its job gets another attempt.

    ``rng``: the jitter's random source (tests pass a seeded one).
    """

    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng

    def after_action(self, run: JobRun, exception: BaseException | None) -> None:
        run.retry = self.plan(run, exception)

    def plan(self, run: JobRun, exception: BaseException | None) -> RetryPlan | None:
        job, spec = run.job, run.spec
        if exception is None or job is None or spec is None or run.entry is None:
            return None  # succeeded, or pull mode: a pull job is run by whoever pulls it
        if job.is_in_pull_mode:
            return None
        policy = Policy.of(spec, job)
        if not policy.retries_on(exception):
            return None
        attempt = max(1, attempts.count(job))  # this one, counted when it started
        if attempt >= policy.attempts:
            log.info(
                "%s: attempt %d of %d failed: no attempt left", job.id, attempt, policy.attempts
            )
            return None
        delay = jittered_backoff(attempt, policy.backoff, policy.max_backoff, self.rng)
        delay = min(delay, MAX_BACKOFF)  # an action's own policy is unbounded
        return RetryPlan(attempt, policy.attempts, delay)
