"""Retries (middleware/retries.py and the executor's retry write) on the in-memory doubles of
the job API and the queue: the engine-behaviour row "the action failed and its retry policy
has attempts left", on this project's job API and on a Nuvla server's fixed schema. The
same runs through real processes in tests/integration/test_retries_and_delays.py."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import gevent
import pytest

from nuvla_job import attempts
from nuvla_job.executor import Executor
from nuvla_job.middleware.retries import Policy, Retries
from nuvla_job.middleware.time_limit import TimeLimit
from nuvla_job.outcome import Decision, Outcome
from nuvla_job.registry import ActionRegistry, ActionSpec
from nuvla_job.timeutil import parse_time
from tests.support.executor_doubles import FakeApi, FakeConsumer

# The attributes of a job on a Nuvla server (job-resource.md): nothing else may be sent.
NUVLA_ATTRIBUTES = {
    "state",
    "return-code",
    "status-message",
    "progress",
    "execution-mode",
    "tags",
    "affected-resources",
    "nested-jobs",
}


class Flaky:
    """Raises ConnectionError until its job has had ``fails`` attempts."""

    fails = 2
    runs: list[str] = []

    def __init__(self, job: Any) -> None:
        self.job = job

    def do_work(self) -> int:
        Flaky.runs.append(self.job.id)
        if Flaky.runs.count(self.job.id) <= Flaky.fails:
            raise ConnectionError(f"flaky {Flaky.runs.count(self.job.id)}")
        return 0


class Broken:
    def __init__(self, job: Any) -> None:
        self.job = job

    def do_work(self) -> int:
        raise KeyError("not worth a retry")


class Returns1:
    def __init__(self, job: Any) -> None:
        self.job = job

    def do_work(self) -> int:
        return 1


class Slow:
    def __init__(self, job: Any) -> None:
        self.job = job

    def do_work(self) -> int:
        gevent.sleep(10)
        return 0


@pytest.fixture(autouse=True)
def _fresh() -> None:
    Flaky.runs = []


@pytest.fixture
def actions() -> ActionRegistry:
    registry = ActionRegistry(lite=False)
    # Back-offs of tenths of a second: the Nuvla-server form holds the entry that long.
    policy: dict[str, Any] = {
        "retries": 2,
        "backoff": 0.2,
        "max_backoff": 0.4,
        "retry_on": (ConnectionError,),
    }
    registry.add(ActionSpec("flaky", Flaky, **policy))
    registry.add(ActionSpec("broken", Broken, **policy))
    registry.add(ActionSpec("returns_1", Returns1, **policy))
    registry.add(ActionSpec("slow", Slow, timeout=0.05, retries=1, backoff=0.1))
    registry.add(ActionSpec("flaky_once", Flaky))  # no retries
    return registry


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture
def consumer() -> FakeConsumer:
    return FakeConsumer()


@pytest.fixture
def executor(api: FakeApi, consumer: FakeConsumer, actions: ActionRegistry) -> Executor:
    middleware = [TimeLimit(), Retries(random.Random(14))]
    return Executor(api, consumer, actions, middleware=middleware, concurrency=4)


def own_job(api: FakeApi, action: str, **attrs: Any) -> str:
    """A job as this project's job API stores it (with its `attempts`)."""
    return api.add_job(action, attempts=0, **{"execution-mode": "push", **attrs})


def run(executor: Executor, consumer: FakeConsumer, job_id: str) -> Outcome:
    return executor.handle(consumer.take_now(job_id))


def attempts_of(executor: Executor, consumer: FakeConsumer, job_id: str, count: int) -> list:
    """Run the job ``count`` times, queueing it again as the scheduler would in between
    (the job API's claim removes the `not-before`)."""
    outcomes = []
    for _ in range(count):
        outcomes.append(run(executor, consumer, job_id))
        executor.api.jobs[job_id].pop("not-before", None)
    return outcomes


def seconds_until(moment: str) -> float:
    return (parse_time(moment) - datetime.now(UTC)).total_seconds()


def test_a_failed_attempt_with_attempts_left_waits_for_the_scheduler(
    api: FakeApi, consumer: FakeConsumer, executor: Executor
) -> None:
    job_id = own_job(api, "flaky")
    assert run(executor, consumer, job_id) == Outcome.retry()
    job = api.jobs[job_id]
    assert (job["state"], job["attempts"], job["progress"]) == ("QUEUED", 1, 0)
    assert 0.1 - 0.05 <= seconds_until(job["not-before"]) <= 0.2  # backoff 0.2 s, jittered
    first, second = job["status-message"].split("\n")
    assert first == "attempt 1 of 3 failed: ConnectionError: flaky 1"
    assert second.startswith(f"attempt 2 runs at {job['not-before']} (in ")
    [line] = job["attempt-errors"]
    assert line.startswith("attempt 1 failed at ") and line.endswith(": ConnectionError: flaky 1")
    assert consumer.consumed and not consumer.released  # the scheduler queues it again


def test_the_third_attempt_succeeds_with_its_attempts_in_the_job(
    api: FakeApi, consumer: FakeConsumer, executor: Executor
) -> None:
    job_id = own_job(api, "flaky")
    outcomes = attempts_of(executor, consumer, job_id, 3)
    assert outcomes == [Outcome.retry(), Outcome.retry(), Outcome.consume("SUCCESS")]
    job = api.jobs[job_id]
    assert (job["state"], job["attempts"]) == ("SUCCESS", 3)
    assert [e.split(": ", 1)[1] for e in job["attempt-errors"]] == [
        "ConnectionError: flaky 1",
        "ConnectionError: flaky 2",
    ]
    assert api.states_written(job_id) == ["RUNNING", "QUEUED"] * 2 + ["RUNNING", "SUCCESS"]
    # Each attempt is counted in the edit that starts it.
    starts = [data for _, data in api.edits if data.get("state") == "RUNNING"]
    assert [data["attempts"] for data in starts] == [1, 2, 3]


def test_the_last_failure_is_failed_with_each_attempts_error(
    api: FakeApi, consumer: FakeConsumer, executor: Executor
) -> None:
    Flaky.fails = 10
    try:
        job_id = own_job(api, "flaky")
        outcomes = attempts_of(executor, consumer, job_id, 3)
    finally:
        Flaky.fails = 2
    assert outcomes[-1] == Outcome.consume("FAILED")
    job = api.jobs[job_id]
    assert (job["state"], job["return-code"], job["attempts"]) == ("FAILED", 1, 3)
    assert len(job["attempt-errors"]) == 3
    message = job["status-message"]
    assert message.startswith("ConnectionError: flaky 3\nfailed after 3 attempt(s):\n")
    for number in (1, 2, 3):
        assert f"  attempt {number} failed at " in message
        assert f": ConnectionError: flaky {number}\n" in message
    assert "Traceback" in message


def test_an_error_outside_retry_on_fails_at_once(
    api: FakeApi, consumer: FakeConsumer, executor: Executor
) -> None:
    job_id = own_job(api, "broken")
    assert run(executor, consumer, job_id) == Outcome.consume("FAILED")
    assert api.jobs[job_id]["status-message"].startswith("KeyError: 'not worth a retry'\n")


def test_a_non_zero_return_code_is_final(
    api: FakeApi, consumer: FakeConsumer, executor: Executor
) -> None:
    job_id = own_job(api, "returns_1")
    assert run(executor, consumer, job_id) == Outcome.consume("FAILED")
    assert api.jobs[job_id]["return-code"] == 1


def test_no_policy_no_retry(api: FakeApi, consumer: FakeConsumer, executor: Executor) -> None:
    job_id = own_job(api, "flaky_once")
    assert run(executor, consumer, job_id) == Outcome.consume("FAILED")
    assert api.jobs[job_id]["attempts"] == 1


def test_a_time_limit_exceeded_is_a_failure_like_any_other(
    api: FakeApi, consumer: FakeConsumer, executor: Executor
) -> None:
    job_id = own_job(api, "slow")
    assert attempts_of(executor, consumer, job_id, 1) == [Outcome.retry()]
    assert "exceeded its time limit" in api.jobs[job_id]["status-message"]
    assert run(executor, consumer, job_id) == Outcome.consume("FAILED")


def test_the_jobs_own_policy_overrides_the_actions_numbers(
    api: FakeApi, consumer: FakeConsumer, executor: Executor
) -> None:
    job_id = own_job(api, "flaky_once", retry={"retries": 1, "backoff": 30})
    assert run(executor, consumer, job_id) == Outcome.retry()
    assert 15 - 1 <= seconds_until(api.jobs[job_id]["not-before"]) <= 30
    job_id = own_job(api, "flaky", retry={"retries": 0})
    assert run(executor, consumer, job_id) == Outcome.consume("FAILED")


def test_a_mixed_job_exhausts_its_push_retries_then_goes_to_pull_mode(
    api: FakeApi, consumer: FakeConsumer, executor: Executor
) -> None:
    Flaky.fails = 10
    try:
        job_id = own_job(api, "flaky", **{"execution-mode": "mixed"})
        outcomes = attempts_of(executor, consumer, job_id, 3)
    finally:
        Flaky.fails = 2
    assert outcomes == [Outcome.retry(), Outcome.retry(), Outcome.consume("QUEUED")]
    job = api.jobs[job_id]
    assert (job["state"], job["execution-mode"]) == ("QUEUED", "pull")


def test_a_taken_entry_of_a_waiting_job_is_dropped_unrun(
    api: FakeApi, consumer: FakeConsumer, executor: Executor
) -> None:
    # An executor died between writing the retry and consuming: its entry comes back.
    job_id = own_job(api, "flaky", **{"not-before": "2030-01-01T00:00:00.000Z"})
    assert run(executor, consumer, job_id) == Outcome.consume()
    assert Flaky.runs == [] and api.edits == []


def test_on_a_nuvla_server_nothing_unknown_is_sent_and_the_entry_is_held(
    api: FakeApi, consumer: FakeConsumer, executor: Executor
) -> None:
    job_id = api.add_job("flaky", tags=["/job/entries/entry-999-0000000001"])  # no `attempts`
    outcome = run(executor, consumer, job_id)
    assert outcome.decision is Decision.RELEASE and outcome.retried
    assert 0.1 <= outcome.release_after <= 0.2
    assert consumer.released and not consumer.consumed
    for _, data in api.edits:
        assert set(data) <= NUVLA_ATTRIBUTES, data
    job = api.jobs[job_id]
    assert job["state"] == "QUEUED"
    assert job["tags"] == ["/job/entries/entry-999-0000000001", "attempt:1"]
    assert job["status-message"].startswith("attempt 1 of 3 failed: ConnectionError: flaky 1")
    # The count survives in the document: the next attempt is the second.
    assert run(executor, consumer, job_id).retried
    assert api.jobs[job_id]["tags"][-1] == "attempt:2"
    assert run(executor, consumer, job_id) == Outcome.consume("SUCCESS")
    assert api.jobs[job_id]["tags"][-1] == "attempt:3"


def test_on_a_nuvla_server_a_job_without_retries_keeps_its_tags(
    api: FakeApi, consumer: FakeConsumer, executor: Executor
) -> None:
    job_id = api.add_job("flaky_once", tags=["x"])
    assert run(executor, consumer, job_id) == Outcome.consume("FAILED")
    assert api.jobs[job_id]["tags"] == ["x"]
    assert all(set(data) <= NUVLA_ATTRIBUTES for _, data in api.edits)


def test_the_attempt_count_lives_in_the_document() -> None:
    assert attempts.count({"attempts": 4}) == 4
    assert attempts.count({"tags": ["a", "attempt:3"]}) == 3
    assert attempts.count({"tags": ["attempt:x"]}) == 0
    assert attempts.start({"attempts": 4}, retried=False) == {"attempts": 5}
    assert attempts.start({"tags": ["a"]}, retried=False) == {}
    assert attempts.start({"tags": ["attempt:2", "a"]}, retried=True) == {
        "tags": ["a", "attempt:3"]
    }
    assert len(attempts.with_error({"attempt-errors": ["e"] * 60}, "x")) == attempts.MAX_ERRORS


def test_a_jobs_policy_ignores_bad_values_and_is_read_only_from_our_api() -> None:
    spec = ActionSpec("a", object, retries=2, backoff=3.0, max_backoff=9.0)
    assert Policy.of(spec, {"attempts": 0, "retry": {"retries": "x", "backoff": -1}}) == Policy(
        2, 3.0, 9.0, (Exception,)
    )
    assert Policy.of(spec, {"retry": {"retries": 5}}).retries == 2  # not from a Nuvla server
    assert Policy.of(spec, {"attempts": 0, "retry": {"retries": 5, "backoff": 20}}) == Policy(
        5, 20.0, 20.0, (Exception,)
    )
