"""The pure parts of nuvla_job/limits.py: place order, node names, option parsing, and the
in-process limit (the ZooKeeper recipe runs on a real server in
tests/integration/test_limits.py)."""

from __future__ import annotations

import gevent
import gevent.event
import pytest

from nuvla_job.limits import Limits, LocalLimit, _sequence, limit_path, parse_caps
from nuvla_job.registry import ActionSpec, action


def test_places_are_ordered_by_sequence_also_past_the_counter_s_wrap() -> None:
    names = [
        "a1b2-c3d4-0000000007",
        "a1b2-c3d4-2147483647",  # the last positive value
        "a1b2-c3d4--2147483648",  # then ZooKeeper's counter goes negative
        "a1b2-c3d4--000000005",
    ]
    keys = [_sequence(name) for name in names]
    assert keys == sorted(keys)
    assert keys[0] == 7
    for not_a_place in ("lock", "x-12", "x-000000000a", "0000000001"):
        assert _sequence(not_a_place) is None


def test_any_action_name_is_one_node() -> None:
    assert limit_path("nuvlabox_update") == "/limits/nuvlabox_update"
    assert limit_path("a/b c") == "/limits/a%2Fb%20c"
    assert limit_path(".") == "/limits/%2E"
    assert limit_path("..") == "/limits/%2E%2E"


def test_caps_are_parsed_and_checked_against_the_registered_actions() -> None:
    known = ["a", "b=c"]
    assert parse_caps(["a=2", "b=c=3, a=4"], known) == {"a": 4, "b=c": 3}
    assert parse_caps([], known) == {}
    for bad, message in [
        ("a", "'a' is not ACTION=N"),
        ("=2", "'=2' is not ACTION=N"),
        ("z=1", "no action 'z' is registered"),
        ("a=0", "N must be a whole number >= 1"),
        ("a=-1", "N must be a whole number >= 1"),
        ("a=1.5", "N must be a whole number >= 1"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_caps([bad], known)


def test_which_actions_are_limited() -> None:
    class Work:
        pass

    plain = ActionSpec("plain", Work)
    fleet = ActionSpec("fleet", Work, max_concurrent=3)
    assert not Limits().applies(fleet)  # no ZooKeeper session: pull mode
    limits = Limits(object(), local={"plain": 2}, fleet={"other": 1})  # type: ignore[arg-type]
    assert limits.applies(plain) and limits.applies(fleet)
    assert not limits.applies(ActionSpec("none", Work))
    assert limits.fleet_size(fleet) == 3
    assert Limits(object(), fleet={"fleet": 1}).fleet_size(fleet) == 1  # type: ignore[arg-type]


def test_decorator_keeps_the_fleet_limit() -> None:
    @action("unit_limited", max_concurrent=2)
    class Limited:
        pass

    (spec,) = Limited.__dict__["__nuvla_job_actions__"]
    assert spec.max_concurrent == 2


def test_local_limit_serves_first_come_first_served() -> None:
    limit = LocalLimit(2)
    order: list[int] = []
    done = gevent.event.Event()

    def work(i: int) -> None:
        limit.acquire()
        order.append(i)
        done.wait()
        limit.release()

    workers = [gevent.spawn(work, i) for i in range(5)]
    gevent.idle()
    assert order == [0, 1] and limit.waiting == 3
    # A release hands the place to the first in line: a newcomer cannot overtake it.
    late = gevent.spawn(work, 99)
    done.set()
    gevent.joinall([*workers, late], timeout=5, raise_error=True)
    assert order == [0, 1, 2, 3, 4, 99]
    assert (limit.holders, limit.waiting) == (0, 0)


def test_a_killed_waiter_leaves_the_line() -> None:
    limit = LocalLimit(1)
    limit.acquire()
    first = gevent.spawn(limit.acquire)
    second = gevent.spawn(limit.acquire)
    gevent.idle()
    first.kill()  # e.g. its executor shutting down
    assert limit.waiting == 1
    limit.release()  # to `second`, the one left in line
    second.get(timeout=5)
    assert (limit.holders, limit.waiting) == (1, 0)
