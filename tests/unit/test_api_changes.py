"""The job API's held waits (api/changes.py): who is woken by a write, superseding by watch
token and seq, and the stop that answers every held request."""

from __future__ import annotations

import gevent

from nuvla_job.api.changes import Changes, etag


def test_etag_is_the_content_whatever_the_key_order() -> None:
    assert etag({"a": 1, "b": [1, 2]}) == etag({"b": [1, 2], "a": 1})
    assert etag({"a": 1, "b": [1, 2]}) != etag({"a": 1, "b": [2, 1]})
    assert len(etag({})) == 24


def test_a_write_wakes_only_the_waiters_of_that_job() -> None:
    changes = Changes()
    one, other = changes.register(["job/1", "job/2"]), changes.register(["job/3"])
    assert len(changes) == 2
    changes.changed("job/2")
    assert one.wait(0) == {"job/2"}
    assert other.wait(0) == set()
    changes.unregister(one)
    changes.unregister(other)
    assert len(changes) == 0
    changes.changed("job/2")  # nobody left: nothing to do


def test_a_waiter_sleeps_until_the_write() -> None:
    changes = Changes()
    waiter = changes.register(["job/1"])
    gevent.spawn_later(0.05, changes.changed, "job/1")
    started = gevent.get_hub().loop.now()
    assert waiter.wait(5) == {"job/1"}
    assert gevent.get_hub().loop.now() - started < 2


def test_a_higher_seq_of_one_watch_supersedes_the_held_request() -> None:
    changes = Changes()
    held = changes.register(["job/1"], ("user/a", "t"), 1)
    other_caller = changes.register(["job/1"], ("user/b", "t"), 1)
    newer = changes.register(["job/2"], ("user/a", "t"), 2)
    assert held.done and held.superseded
    assert not newer.done
    assert not other_caller.done  # a token is only its caller's
    # A request that was overtaken on its way arrives superseded.
    late = changes.register(["job/1"], ("user/a", "t"), 1)
    assert late.superseded
    # The same seq again (a retry) supersedes nothing.
    again = changes.register(["job/3"], ("user/a", "t"), 2)
    assert not newer.done and not again.done


def test_close_answers_every_held_request_and_the_next_ones() -> None:
    changes = Changes()
    waiter = changes.register(["job/1"])
    changes.close()
    assert waiter.done and waiter.closed
    assert waiter.wait(5) == set()  # at once
    assert changes.register(["job/2"]).closed
