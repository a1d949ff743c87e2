"""Warn when something blocks the gevent event loop (the hub), naming the job it runs.

Jobs run on greenlets, which only switch when one waits (I/O, sleep, locks). An action that
computes for seconds without waiting stalls every other job of the process, and its
ZooKeeper heartbeats too. gevent's monitor thread notices a hub that has not switched for
``threshold`` seconds; :func:`watch_event_loop` turns each notice into one WARNING line
with the job id, the action and where it was stuck.

The notice arrives on the monitor thread, which cannot read the blocked greenlet's context
variables: the job is found by walking the blocked thread's stack up to the executor's
``_run_action`` frame (whose locals hold the job and the action's name), or else looked up
by greenlet in the executor's running jobs.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Mapping
from types import FrameType
from typing import Any

import gevent
import gevent.events

log = logging.getLogger(__name__)

_ADVICE = "other jobs wait meanwhile: run CPU-bound work in a subprocess or in gevent's threadpool"


class _BlockedLoopReporter:
    def __init__(self, threshold: float, running: Mapping[Any, Any] | None) -> None:
        self.threshold = threshold
        self.running = running if running is not None else {}
        self._last: tuple[int, int] = (0, 0)  # (id of the blocking greenlet, reports in a row)

    def __call__(self, event: object) -> None:
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
        frame = sys._current_frames().get(hub.thread_ident)
        job_id, action = _job_on_stack(frame)
        if job_id is None:
            entry = self.running.get(greenlet)
            job_id = getattr(entry, "job_id", None)
        where = _where(frame)
        seconds = f"{count * self.threshold:g}"
        if job_id is not None:
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


def _job_on_stack(frame: FrameType | None) -> tuple[str | None, str | None]:
    """(job id, action) from the executor's ``_run_action`` frame on the stack, if any."""
    while frame is not None:
        if frame.f_code.co_name == "_run_action" and frame.f_code.co_filename.endswith(
            "executor.py"
        ):
            local = frame.f_locals
            job, name = local.get("job"), local.get("name")
            return getattr(job, "id", None), name if isinstance(name, str) else None
        frame = frame.f_back
    return None, None


def _where(frame: FrameType | None) -> str:
    if frame is None:
        return "an unknown place"
    return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"


def watch_event_loop(threshold: float = 1.0, running: Mapping[Any, Any] | None = None) -> None:
    """Log a WARNING whenever the hub is blocked for more than ``threshold`` seconds.

    ``running`` maps greenlets to queue entries (the executor's running jobs), used to
    name the job when the stack does not show it. Call once per process.
    """
    gevent.config.monitor_thread = True
    gevent.config.max_blocking_time = threshold
    gevent.config.print_blocking_reports = False  # gevent's own multi-line dump on stderr
    gevent.events.subscribers.append(_BlockedLoopReporter(threshold, running))
    with warnings.catch_warnings():
        # The monitor also watches memory when psutil is installed; we do not need it.
        warnings.filterwarnings("ignore", message="Unable to monitor memory usage")
        gevent.get_hub().start_periodic_monitoring_thread()
