"""The time limit middleware (nuvla_job/middleware/time_limit.py), on gevent greenlets."""

from __future__ import annotations

import traceback

import gevent
import pytest

from nuvla_job.middleware import JobRun
from nuvla_job.middleware.time_limit import ActionTimeLimitExceeded, TimeLimit
from nuvla_job.registry import ActionSpec


def run_of(action: str = "slow", timeout: float | None = None) -> JobRun:
    run = JobRun(None, "job/1")
    run.spec = ActionSpec(action, object, timeout=timeout)
    return run


def stuck_in_sleep() -> int:
    gevent.sleep(5)
    return 0


def test_an_action_over_the_limit_raises_naming_it_and_where_it_was() -> None:
    limit = TimeLimit(default=0.05)
    started = gevent.get_hub().loop.now()
    with pytest.raises(ActionTimeLimitExceeded) as caught:
        limit.around_action(run_of(), stuck_in_sleep)
    assert gevent.get_hub().loop.now() - started < 1
    assert str(caught.value) == "action slow exceeded its time limit of 0.05 s"
    text = "".join(traceback.format_exception(caught.value))
    assert "in stuck_in_sleep" in text
    assert "During handling" not in text  # the gevent.Timeout is not shown as a second error


def test_the_action_own_limit_wins_over_the_default() -> None:
    limit = TimeLimit(default=10)
    assert limit.limit(ActionSpec("slow", object, timeout=0.05)) == 0.05
    assert limit.limit(ActionSpec("other", object)) == 10
    with pytest.raises(ActionTimeLimitExceeded, match="of 0.05 s"):
        limit.around_action(run_of(timeout=0.05), stuck_in_sleep)


def test_no_limit_runs_the_action_as_it_is() -> None:
    assert TimeLimit().around_action(run_of(), lambda: 3) == 3
    assert TimeLimit(default=None).limit(ActionSpec("slow", object)) is None


def test_an_action_timeout_of_its_own_passes_through() -> None:
    own = gevent.Timeout(0.01)

    def action() -> int:
        with own:
            gevent.sleep(1)
        return 0

    with pytest.raises(gevent.Timeout) as caught:
        TimeLimit(default=5).around_action(run_of(), action)
    assert caught.value is own


def test_a_killed_action_is_not_reported_as_timed_out_later() -> None:
    limit = TimeLimit(default=0.1)
    greenlet = gevent.spawn(limit.around_action, run_of(), stuck_in_sleep)
    gevent.sleep(0.01)
    greenlet.kill(gevent.GreenletExit)
    assert isinstance(greenlet.value, gevent.GreenletExit)
    gevent.sleep(0.15)  # past the limit: the timer was cancelled with the action
    assert greenlet.exception is None
