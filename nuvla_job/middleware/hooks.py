"""The hook protocol: :class:`Middleware`, what its hooks see (:class:`JobRun`), and the
:class:`Chain` the executor calls them through.

One queue entry goes through these hooks, in this order, all in the entry's greenlet:

``after_take(run)``
    the entry was taken; its job is not fetched yet (``run.job`` is None).
``after_fetch(run)``
    the job was read from the job API (``run.job`` is set, and ``run.spec`` when its action
    is registered). Pull mode, which takes no entry, starts here.
``around_action(run, call)``
    wraps the action: returns ``call()`` (the action's return code) or raises. Only jobs
    that get as far as running their action pass here.
``after_action(run, exception)``
    the action returned (``exception`` None) or raised, and the entry is still ours; the
    job's outcome is written next (a :class:`~.retries.RetryPlan` left in ``run.retry``
    makes it another attempt instead of ``FAILED``).
``after_error(run, exception)``
    an unexpected error ended the handling (the entry is consumed). Not called in pull
    mode, where the error ends the command.
``after_settle(run, outcome)``
    the entry was consumed, released or lost. Not called in pull mode.

Hooks before the action run in the chain's order, those after it in reverse order, and the
first ``around_action`` is the outermost, so that a middleware's "after" sees the state its
"before" left. An exception from ``after_take``, ``after_fetch`` or ``around_action`` is the
entry's (an unexpected error, or what the action raised); one from a later hook is logged
and the others still run: the outcome is written and the entry settled whatever they do.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..job import Job
    from ..outcome import Outcome
    from ..queue import Entry
    from ..registry import ActionSpec
    from .retries import RetryPlan

log = logging.getLogger(__name__)


@dataclass(eq=False)
class JobRun:
    """One entry's way through the executor, as the hooks see it."""

    entry: Entry | None  # None in pull mode
    job_id: str | None  # None when the entry holds no job id
    job: Job | None = None  # once fetched
    # The spec of the job's action once the job is fetched; None while it is not, or when
    # no action of that name is registered.
    spec: ActionSpec | None = None
    started: float = field(default_factory=time.perf_counter)
    action_ran: bool = False  # the action was called (whatever it then did)
    retry: RetryPlan | None = None  # set after a failed attempt that gets another one

    @property
    def action(self) -> str | None:
        """The name of the job's action when it is a registered one (else None): only such
        names become metrics labels, whatever the jobs hold."""
        return self.spec.name if self.spec is not None else None


class Middleware:
    """Base class of the executor's middleware: every hook does nothing; override some."""

    def after_take(self, run: JobRun) -> None:
        """The entry was taken; its job is not fetched yet."""

    def after_fetch(self, run: JobRun) -> None:
        """The job was fetched (pull mode starts here)."""

    def around_action(self, run: JobRun, call: Callable[[], object]) -> object:
        """Run the action by returning ``call()``; may raise instead."""
        return call()

    def after_action(self, run: JobRun, exception: BaseException | None) -> None:
        """The action returned (``exception`` None) or raised; its outcome is written next."""

    def after_error(self, run: JobRun, exception: Exception) -> None:
        """An unexpected error ended the entry's handling; the entry is consumed."""

    def after_settle(self, run: JobRun, outcome: Outcome) -> None:
        """The entry was consumed, released or lost (queue mode only)."""


def _defined(middleware: Iterable[Middleware], hook: str) -> list[Callable]:
    """The ``hook`` methods of the middleware that define it: the base's no-ops cost no call."""
    base = getattr(Middleware, hook)
    return [getattr(m, hook) for m in middleware if getattr(type(m), hook) is not base]


class Chain:
    """The executor's middleware, in order, called hook by hook."""

    def __init__(self, middleware: Iterable[Middleware] = ()) -> None:
        self.middleware = tuple(middleware)
        self._after_take = _defined(self.middleware, "after_take")
        self._after_fetch = _defined(self.middleware, "after_fetch")
        self._around_action = _defined(self.middleware, "around_action")
        after = tuple(reversed(self.middleware))
        self._after_action = _defined(after, "after_action")
        self._after_error = _defined(after, "after_error")
        self._after_settle = _defined(after, "after_settle")

    def after_take(self, run: JobRun) -> None:
        for hook in self._after_take:
            hook(run)

    def after_fetch(self, run: JobRun) -> None:
        for hook in self._after_fetch:
            hook(run)

    def around_action(self, run: JobRun, call: Callable[[], object]) -> object:
        """Call the action through every ``around_action``, the first one outermost."""
        for around in reversed(self._around_action):
            call = partial(around, run, call)
        return call()

    def after_action(self, run: JobRun, exception: BaseException | None) -> None:
        for hook in self._after_action:
            _call_logging_errors(hook, run, exception)

    def after_error(self, run: JobRun, exception: Exception) -> None:
        for hook in self._after_error:
            _call_logging_errors(hook, run, exception)

    def after_settle(self, run: JobRun, outcome: Outcome) -> None:
        for hook in self._after_settle:
            _call_logging_errors(hook, run, outcome)


def _call_logging_errors(hook: Callable[..., None], run: JobRun, argument: object) -> None:
    try:
        hook(run, argument)
    except Exception:
        log.exception("%s: middleware %s failed", run.job_id, getattr(hook, "__qualname__", hook))
