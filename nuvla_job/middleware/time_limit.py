"""The longest an action may run: past it, the action is stopped and its job FAILED."""

from __future__ import annotations

import logging
from collections.abc import Callable

import gevent

from ..registry import ActionSpec
from .hooks import JobRun, Middleware

log = logging.getLogger(__name__)


class ActionTimeLimitExceeded(Exception):
    """What a job FAILED by its time limit reports (``--action-timeout``, ``timeout=``)."""


class TimeLimit(Middleware):
    """Stops an action after its own limit (its spec's ``timeout``, from the decorator's
    ``timeout=``), or else after ``default`` seconds (``--action-timeout``; None: no limit).

    The limit is a :class:`gevent.Timeout`, a BaseException: an action's ``except
    Exception`` cannot eat it. It interrupts only where the action yields (I/O, sleep), not
    a CPU-bound loop (the blocked-loop warning names those).
    """

    def __init__(self, default: float | None = None) -> None:
        self.default = default

    def limit(self, spec: ActionSpec) -> float | None:
        return spec.timeout or self.default

    def around_action(self, run: JobRun, call: Callable[[], object]) -> object:
        assert run.spec is not None  # only registered actions run
        limit = self.limit(run.spec)
        if not limit:
            return call()
        timer = gevent.Timeout(limit)
        timer.start()
        try:
            return call()
        except gevent.Timeout as exc:
            if exc is not timer:
                raise  # a timeout of the action's own that it did not catch
            log.error("%s: %s exceeded its time limit of %g s", run.job_id, run.action, limit)
            # With the traceback of where the action was stuck, not of this frame.
            raise ActionTimeLimitExceeded(
                f"action {run.action} exceeded its time limit of {limit:g} s"
            ).with_traceback(exc.__traceback__) from None
        finally:
            timer.close()
