"""The failed-login back-off's rules, on a fake clock (the HTTP side is tested in
tests/integration/test_api_security.py against the real job API)."""

from __future__ import annotations

import pytest

from nuvla_job.api.throttle import LoginLimits, LoginThrottle, TooManyFailures


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def attempt(throttle: LoginThrottle, name: str, address: str, success: bool) -> None:
    throttle.begin(name, address)
    throttle.end(name, address, success)


def refused_for(throttle: LoginThrottle, name: str, address: str = "10.0.0.1") -> int:
    with pytest.raises(TooManyFailures) as err:
        throttle.begin(name, address)
    return err.value.retry_after


def make(**limits) -> tuple[LoginThrottle, Clock]:
    clock = Clock()
    defaults = {"max_failures": 3, "max_failures_per_address": 0, "backoff": 10.0, "window": 100.0}
    return LoginThrottle(LoginLimits(**{**defaults, **limits}), clock), clock


def test_back_off_starts_at_the_limit_and_doubles_up_to_the_window() -> None:
    throttle, clock = make()
    for _ in range(3):
        attempt(throttle, "alice", "10.0.0.1", False)
    assert refused_for(throttle, "alice") == 10
    attempt(throttle, "bob", "10.0.0.1", True)  # other names are not affected
    clock.now += 10
    attempt(throttle, "alice", "10.0.0.1", False)
    assert refused_for(throttle, "alice") == 20
    clock.now += 20
    attempt(throttle, "alice", "10.0.0.1", False)
    assert refused_for(throttle, "alice") == 40
    clock.now += 40
    attempt(throttle, "alice", "10.0.0.1", False)
    assert refused_for(throttle, "alice") == 80
    clock.now += 80
    attempt(throttle, "alice", "10.0.0.1", False)
    assert refused_for(throttle, "alice") == 100  # capped at the window


def test_success_resets_the_name_and_the_window_forgets() -> None:
    throttle, clock = make()
    for _ in range(2):
        attempt(throttle, "alice", "10.0.0.1", False)
    attempt(throttle, "alice", "10.0.0.1", True)
    for _ in range(2):
        attempt(throttle, "alice", "10.0.0.1", False)
    throttle.begin("alice", "10.0.0.1")  # still allowed: the success cleared the count
    throttle.end("alice", "10.0.0.1", False)
    assert refused_for(throttle, "alice") == 10
    clock.now += 100
    for _ in range(2):
        attempt(throttle, "alice", "10.0.0.1", False)
    throttle.begin("alice", "10.0.0.1")  # forgotten after the window: a fresh count


def test_address_limit_counts_every_name_and_success_does_not_clear_it() -> None:
    throttle, _ = make(max_failures=0, max_failures_per_address=4)
    for index in range(3):
        attempt(throttle, f"name-{index}", "10.0.0.9", False)
    attempt(throttle, "mallory", "10.0.0.9", True)  # a valid account of the attacker
    attempt(throttle, "name-3", "10.0.0.9", False)
    assert refused_for(throttle, "anyone", "10.0.0.9") == 10
    throttle.begin("anyone", "10.0.0.10")  # other addresses are not affected


def test_attempts_being_verified_count_against_the_limit() -> None:
    throttle, _ = make()
    for _ in range(3):
        throttle.begin("alice", "10.0.0.1")  # three parallel guesses in flight
    assert refused_for(throttle, "alice") == 1
    for _ in range(3):
        throttle.end("alice", "10.0.0.1", False)
    assert refused_for(throttle, "alice") == 10


def test_no_outcome_releases_without_counting() -> None:
    throttle, _ = make(max_failures=1)
    throttle.begin("alice", "10.0.0.1")
    throttle.end("alice", "10.0.0.1", None)  # e.g. the database failed
    throttle.begin("alice", "10.0.0.1")


def test_zero_limits_turn_the_throttle_off() -> None:
    throttle, _ = make(max_failures=0, max_failures_per_address=0)
    for _ in range(100):
        attempt(throttle, "alice", "10.0.0.1", False)
    throttle.begin("alice", "10.0.0.1")


def test_forgotten_counters_are_pruned() -> None:
    throttle, clock = make()
    for index in range(6_000):  # a spray of names, one failure each
        attempt(throttle, f"old-{index}", "10.0.0.1", False)
    clock.now += 100  # a window later
    for index in range(5_000):
        attempt(throttle, f"new-{index}", "10.0.0.1", index % 2 == 0)
    # Pruned once past 10,000: the forgotten and the succeeded ones are gone.
    counters = throttle.store.counters  # type: ignore[attr-defined]  # MemoryCounters
    assert len(counters) < 5_000
    assert not any("old-" in key for key in counters)


def test_failures_from_one_address_never_lock_the_name_out_from_another() -> None:
    # The finding: five anonymous bad logins for a name made even its right secret get 429,
    # from anywhere; done to the admin key, whose id is logged, executors could not start.
    throttle, clock = make(max_failures_per_address=50)
    for _ in range(20):
        try:
            attempt(throttle, "credential/admin", "203.0.113.5", False)
        except TooManyFailures:
            clock.now += 1
    assert refused_for(throttle, "credential/admin", "203.0.113.5") > 0
    attempt(throttle, "credential/admin", "10.0.0.7", True)  # the executor, from its address
    throttle.begin("credential/admin", "10.0.0.7")
    throttle.end("credential/admin", "10.0.0.7", True)
    # and a success there clears nothing of the attacker's count
    assert refused_for(throttle, "credential/admin", "203.0.113.5") > 0


def test_a_limit_per_name_from_every_address_can_be_turned_on() -> None:
    throttle, _ = make(max_failures=0, max_failures_per_name=4)
    for index in range(4):  # one guess from each of four addresses
        attempt(throttle, "alice", f"198.51.100.{index}", False)
    assert refused_for(throttle, "alice", "10.0.0.1") == 10  # from anywhere, as asked
    throttle.begin("bob", "10.0.0.1")
