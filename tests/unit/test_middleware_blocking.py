"""The blocked-loop warning (nuvla_job/middleware/blocking.py) learns each greenlet's job from
the hooks, not from the stack: fed gevent's event for a greenlet, it names that job."""

from __future__ import annotations

import logging

import gevent
import gevent.event
import gevent.events
import pytest

from nuvla_job.job import Job
from nuvla_job.middleware import JobRun
from nuvla_job.middleware.blocking import BlockedLoopWarning
from nuvla_job.outcome import Outcome


def blocked(greenlet: object) -> gevent.events.EventLoopBlocked:
    return gevent.events.EventLoopBlocked(greenlet, 1.0, [])


def test_the_report_names_the_job_of_the_blocked_greenlet(
    caplog: pytest.LogCaptureFixture,
) -> None:
    warning = BlockedLoopWarning(threshold=1.0)
    taken, fetched, settled = gevent.event.Event(), gevent.event.Event(), gevent.event.Event()
    run = JobRun(None, "job/abc")

    def handling() -> None:
        warning.after_take(run)
        taken.set()
        gevent.sleep(0.01)
        run.job = Job(None, {"id": "job/abc", "action": "busy", "state": "RUNNING"})  # type: ignore[arg-type]
        warning.after_fetch(run)
        fetched.set()
        settled.wait()
        warning.after_settle(run, Outcome.consume())

    greenlet = gevent.spawn(handling)
    caplog.set_level(logging.WARNING, logger="nuvla_job.middleware.blocking")
    taken.wait()
    warning.notice(blocked(greenlet))  # before the fetch: the job id only
    fetched.wait()
    warning.notice(blocked(greenlet))
    settled.set()
    greenlet.join()
    warning.notice(blocked(greenlet))  # done with its entry: no job any more
    warning.notice(object())  # other gevent events are ignored
    first, second, third = (r.getMessage() for r in caplog.records)
    assert first.startswith("job/abc: action ? blocked the event loop for more than 1 s")
    assert second.startswith("job/abc: action busy blocked the event loop for more than 2 s")
    assert "other jobs wait meanwhile" in second
    assert caplog.records[1].job_id == "job/abc" and caplog.records[1].action == "busy"
    assert third.startswith("the event loop was blocked for more than 3 s")  # 3 in a row
    assert warning.jobs == {}
