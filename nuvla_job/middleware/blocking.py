"""Warn when something blocks the gevent event loop (the hub), naming the job it runs.

Jobs run on greenlets, which only switch when one waits (I/O, sleep, locks). An action that
computes for seconds without waiting stalls every other job of the process, and its
ZooKeeper heartbeats too. gevent's monitor thread notices a hub that has not switched for
``threshold`` seconds; :class:`BlockedLoopWarning` turns each notice into one WARNING line
with the job id, the action and where it was stuck.

The notice arrives on the monitor thread, which cannot read the blocked greenlet's context
variables: the middleware's hooks record which job each greenlet handles, and the report
looks the blocked greenlet up there.
"""

from __future__ import annotations

import logging
import sys
import warnings
from types import FrameType
from typing import TYPE_CHECKING

import gevent
import gevent.events

from .hooks import JobRun, Middleware

if TYPE_CHECKING:
    from ..outcome import Outcome

log = logging.getLogger(__name__)

_ADVICE = "other jobs wait meanwhile: run CPU-bound work in a subprocess or in gevent's threadpool"


class BlockedLoopWarning(Middleware):
    """Logs a WARNING whenever the hub is blocked for more than ``threshold`` seconds, naming
    the job of the blocked greenlet. :meth:`watch` starts gevent's monitor (once a process).
    """

    def __init__(self, threshold: float = 1.0) -> None:
        self.threshold = threshold
        # greenlet -> (job id, action) of the entry it handles. Written by the hub's thread,
        # read by the monitor's: single dict operations, atomic under the GIL.
        self.jobs: dict[object, tuple[str, str | None]] = {}
        self._last: tuple[int, int] = (0, 0)  # (id of the blocking greenlet, reports in a row)

    # -- hooks ------------------------------------------------------------------------------

    def after_take(self, run: JobRun) -> None:
        if run.job_id is not None:
            self.jobs[gevent.getcurrent()] = (run.job_id, None)

    def after_fetch(self, run: JobRun) -> None:
        assert run.job is not None
        self.jobs[gevent.getcurrent()] = (run.job.id, run.job.get("action"))

    def after_settle(self, run: JobRun, outcome: Outcome) -> None:
        self.jobs.pop(gevent.getcurrent(), None)

    # -- the monitor ------------------------------------------------------------------------

    def watch(self) -> None:
        """Start gevent's monitor thread and report its notices. Call once per process."""
        gevent.config.monitor_thread = True
        gevent.config.max_blocking_time = self.threshold
        gevent.config.print_blocking_reports = False  # gevent's own multi-line dump on stderr
        gevent.events.subscribers.append(self.notice)
        with warnings.catch_warnings():
            # The monitor also watches memory when psutil is installed; we do not need it.
            warnings.filterwarnings("ignore", message="Unable to monitor memory usage")
            gevent.get_hub().start_periodic_monitoring_thread()

    def notice(self, event: object) -> None:
        """gevent's event subscriber (called on the monitor thread)."""
        if not isinstance(event, gevent.events.EventLoopBlocked):
            return
        try:
            self._report(event)
        except Exception:  # never let a report break gevent's monitor thread
            log.debug("could not report a blocked event loop", exc_info=True)

    def _report(self, event: gevent.events.EventLoopBlocked) -> None:
        greenlet = event.greenlet
        same, count = self._last
        count = count + 1 if same == id(greenlet) else 1
        self._last = (id(greenlet), count)
        hub = event.hub or gevent.get_hub()
        where = _where(sys._current_frames().get(hub.thread_ident))
        seconds = f"{count * self.threshold:g}"
        job = self.jobs.get(greenlet)
        if job is not None:
            job_id, action = job
            log.warning(
                "%s: action %s blocked the event loop for more than %s s (at %s); %s",
                job_id,
                action or "?",
                seconds,
                where,
                _ADVICE,
                extra={"job_id": job_id, "action": action},
            )
        else:
            log.warning(
                "the event loop was blocked for more than %s s (at %s, in %s)",
                seconds,
                where,
                greenlet,
            )


def _where(frame: FrameType | None) -> str:
    if frame is None:
        return "an unknown place"
    return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"
