"""The executor table of engine-behaviour.md, one test per row, on in-memory doubles of the
job API and of the queue (tests/support/executor_doubles.py). The same rows run against a
real executor process, the real job API and ZooKeeper in tests/integration/test_executor.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import gevent
import gevent.event
import pytest
import requests
from kazoo.protocol.states import KazooState
from nuvla.job_engine.job.actions.utils.bulk_action import UnfinishedBulkActionToMonitor

from nuvla_job import executor as executor_module
from nuvla_job import job as job_module
from nuvla_job.executor import Executor
from nuvla_job.job import SUPPORTED_VERSION
from nuvla_job.metrics import outcome_label
from nuvla_job.middleware import JobRun, Middleware
from nuvla_job.newer_version import NewerVersionWaits
from nuvla_job.outcome import Decision, LeaveRunning, Outcome
from nuvla_job.registry import ActionRegistry
from tests.support.executor_doubles import FakeApi, FakeConsumer, api_error


class Recorder(Middleware):
    """Records what the hooks were told."""

    def __init__(self) -> None:
        self.settled: list[tuple[str | None, str | None, Outcome]] = []
        self.action_exceptions: list[BaseException | None] = []
        self.errors: list[Exception] = []

    def after_action(self, run: JobRun, exception: BaseException | None) -> None:
        self.action_exceptions.append(exception)

    def after_error(self, run: JobRun, exception: Exception) -> None:
        self.errors.append(exception)

    def after_settle(self, run: JobRun, outcome: Outcome) -> None:
        self.settled.append((run.job_id, run.action, outcome))


def returning(value: Any) -> type:
    class Returns:
        seen: list[str] = []  # the job's state when the action started

        def __init__(self, job: Any) -> None:
            self.job = job

        def do_work(self) -> Any:
            Returns.seen.append(self.job["state"])
            return value

    return Returns


class Raises:
    def __init__(self, job: Any) -> None:
        self.job = job

    def do_work(self) -> int:
        raise RuntimeError("boom from the action")


class LeavesRunning:
    """Tags its job as a bulk action does, then hands it to a monitor by raising
    ``exception`` (ours, or upstream's)."""

    exception: type[BaseException] = LeaveRunning

    def __init__(self, job: Any) -> None:
        self.job = job

    def do_work(self) -> int:
        self.job.update_job(tags=["monitor"])
        raise self.exception()


class UpstreamLeavesRunning(LeavesRunning):
    exception = UnfinishedBulkActionToMonitor


class Gated:
    """Runs until the test opens the gate; counts its starts and ends."""

    gate = gevent.event.Event()
    started: list[str] = []
    ended: list[str] = []

    def __init__(self, job: Any) -> None:
        self.job = job

    def do_work(self) -> int:
        Gated.started.append(self.job.id)
        Gated.gate.wait()
        Gated.ended.append(self.job.id)
        return 0


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture
def consumer() -> FakeConsumer:
    return FakeConsumer()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def actions() -> ActionRegistry:
    registry = ActionRegistry(lite=False)
    registry.register("ok", returning(0))
    registry.register("fails_3", returning(3))
    registry.register("raises", Raises)
    registry.register("gated", Gated)
    registry.register("leaves_running", LeavesRunning)
    registry.register("upstream_leaves_running", UpstreamLeavesRunning)
    return registry


@pytest.fixture
def executor(
    api: FakeApi, consumer: FakeConsumer, actions: ActionRegistry, recorder: Recorder
) -> Executor:
    return Executor(api, consumer, actions, middleware=[recorder], concurrency=4, grace_period=5)


@pytest.fixture(autouse=True)
def _fresh_gate() -> Iterator[None]:
    Gated.gate = gevent.event.Event()
    Gated.started, Gated.ended = [], []
    yield
    Gated.gate.set()


@pytest.fixture
def short_delays(monkeypatch: pytest.MonkeyPatch) -> None:
    """Release delays of a few milliseconds (the real ones are seconds)."""
    monkeypatch.setattr(executor_module, "NEWER_VERSION_DELAY", 0.02)
    monkeypatch.setattr(executor_module, "API_RETRY_FIRST", 0.01)


def handle(executor: Executor, consumer: FakeConsumer, data: str | bytes) -> Outcome:
    return executor.handle(consumer.take_now(data))


def consumed_only(consumer: FakeConsumer) -> bool:
    return len(consumer.consumed) == 1 and not consumer.released and not consumer.held


# -- rows of the table ---------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["QUEUED", "RUNNING"])
def test_queued_or_interrupted_running_job_is_set_running_and_run(
    api: FakeApi, consumer: FakeConsumer, executor: Executor, actions: ActionRegistry, state: str
) -> None:
    job_id = api.add_job("ok", state=state)
    handle(executor, consumer, job_id)
    assert actions.get("ok").seen == ["RUNNING"]
    assert api.states_written(job_id) == ["RUNNING", "SUCCESS"]


def test_return_code_zero_succeeds_and_consumes(
    api: FakeApi, consumer: FakeConsumer, executor: Executor, recorder: Recorder
) -> None:
    job_id = api.add_job("ok")
    assert handle(executor, consumer, job_id) == Outcome.consume("SUCCESS")
    assert (api.jobs[job_id]["state"], api.jobs[job_id]["return-code"]) == ("SUCCESS", 0)
    assert consumed_only(consumer)
    assert recorder.settled == [(job_id, "ok", Outcome.consume("SUCCESS"))]


def test_non_zero_return_code_fails_with_it(
    api: FakeApi, consumer: FakeConsumer, executor: Executor
) -> None:
    job_id = api.add_job("fails_3")
    assert handle(executor, consumer, job_id) == Outcome.consume("FAILED")
    assert (api.jobs[job_id]["state"], api.jobs[job_id]["return-code"]) == ("FAILED", 3)
    assert consumed_only(consumer)


def test_raising_action_fails_with_type_and_traceback(
    api: FakeApi, consumer: FakeConsumer, executor: Executor, recorder: Recorder
) -> None:
    job_id = api.add_job("raises")
    assert handle(executor, consumer, job_id) == Outcome.consume("FAILED")
    job = api.jobs[job_id]
    assert (job["state"], job["return-code"]) == ("FAILED", 1)
    assert job["status-message"].startswith("RuntimeError: boom from the action\n")
    assert "Traceback" in job["status-message"] and "in do_work" in job["status-message"]
    assert consumed_only(consumer)
    [raised] = recorder.action_exceptions
    assert isinstance(raised, RuntimeError)


def test_raising_mixed_job_goes_back_to_pull_mode(
    api: FakeApi, consumer: FakeConsumer, executor: Executor
) -> None:
    job_id = api.add_job("raises", **{"execution-mode": "mixed"})
    assert handle(executor, consumer, job_id) == Outcome.consume("QUEUED")
    job = api.jobs[job_id]
    assert (job["state"], job["execution-mode"]) == ("QUEUED", "pull")
    assert "will be re-run in pull mode" in job["status-message"]
    assert "return-code" not in job
    assert consumed_only(consumer)


@pytest.mark.parametrize("action", ["leaves_running", "upstream_leaves_running"])
def test_action_leaving_its_job_running_for_a_monitor_is_consumed_unwritten(
    api: FakeApi, consumer: FakeConsumer, executor: Executor, recorder: Recorder, action: str
) -> None:
    job_id = api.add_job(action)
    assert handle(executor, consumer, job_id) == Outcome.left_running()
    job = api.jobs[job_id]
    assert (job["state"], job["tags"]) == ("RUNNING", ["monitor"])
    assert "return-code" not in job and "status-message" not in job
    assert api.states_written(job_id) == ["RUNNING"]  # no final state: the monitor writes it
    assert consumed_only(consumer)  # the slot and the entry are free
    assert recorder.action_exceptions == [None]  # a normal end: nothing for Sentry
    assert outcome_label(Outcome.left_running()) == "left_running"


def test_pull_mode_job_left_running_exits_zero(api: FakeApi, executor: Executor) -> None:
    job_id = api.add_job("upstream_leaves_running", **{"execution-mode": "pull"})
    assert executor.run_pull(job_id) == 0
    assert api.jobs[job_id]["state"] == "RUNNING"


@pytest.mark.parametrize("state", ["SUCCESS", "FAILED", "CANCELED"])
def test_final_job_is_left_alone_and_consumed(
    api: FakeApi, consumer: FakeConsumer, executor: Executor, recorder: Recorder, state: str
) -> None:
    job_id = api.add_job("ok", state=state)
    assert handle(executor, consumer, job_id) == Outcome.consume()
    assert api.edits == []
    assert consumed_only(consumer)
    # A registered action still labels the entry in the metrics.
    assert recorder.settled == [(job_id, "ok", Outcome.consume())]


def test_missing_job_is_asked_twice_then_consumed(
    api: FakeApi, consumer: FakeConsumer, executor: Executor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(job_module, "NOT_FOUND_RETRY_DELAY", 0.0)
    missing = "job/00000000-0000-0000-0000-000000000000"
    assert handle(executor, consumer, missing) == Outcome.consume()
    assert api.gets == [missing, missing]
    assert api.edits == []
    assert consumed_only(consumer)


@pytest.mark.parametrize("data", [b"not a job id", b"\xff\xfe", b"", b"other/123"])
def test_entry_that_holds_no_job_id_is_consumed_unread(
    api: FakeApi, consumer: FakeConsumer, executor: Executor, data: bytes
) -> None:
    assert handle(executor, consumer, data) == Outcome.consume()
    assert api.gets == [] and api.edits == []
    assert consumed_only(consumer)


@pytest.mark.parametrize(
    "broken", [{"action": None}, {"state": 7}, {"version": "2"}, {"id": "job/someone-else"}]
)
def test_malformed_job_is_consumed_untouched(
    api: FakeApi, consumer: FakeConsumer, executor: Executor, broken: dict
) -> None:
    job_id = api.add_job("ok")
    api.jobs[job_id].update(broken)
    assert handle(executor, consumer, job_id) == Outcome.consume()
    assert api.edits == []
    assert consumed_only(consumer)


def test_unregistered_action_fails_naming_it(
    api: FakeApi, consumer: FakeConsumer, executor: Executor, recorder: Recorder
) -> None:
    job_id = api.add_job("no_such_action")
    assert handle(executor, consumer, job_id) == Outcome.consume("FAILED")
    job = api.jobs[job_id]
    assert (job["state"], job["return-code"]) == ("FAILED", 1)
    assert "no action 'no_such_action' is registered" in job["status-message"]
    assert api.states_written(job_id) == ["FAILED"]  # never RUNNING
    assert consumed_only(consumer)
    assert recorder.settled == [(job_id, None, Outcome.consume("FAILED"))]  # not a label


def test_older_version_fails_naming_both_versions(
    api: FakeApi, consumer: FakeConsumer, executor: Executor
) -> None:
    job_id = api.add_job("ok", version=SUPPORTED_VERSION - 1)
    assert handle(executor, consumer, job_id) == Outcome.consume("FAILED")
    message = api.jobs[job_id]["status-message"]
    assert f"version {SUPPORTED_VERSION - 1}" in message
    assert f"version {SUPPORTED_VERSION} this engine supports" in message
    assert api.states_written(job_id) == ["FAILED"]
    assert consumed_only(consumer)


def test_newer_version_is_released_untouched_after_a_delay(
    api: FakeApi, consumer: FakeConsumer, executor: Executor, short_delays: None
) -> None:
    job_id = api.add_job("ok", version=SUPPORTED_VERSION + 1)
    started = gevent.get_hub().loop.now()
    assert handle(executor, consumer, job_id) == Outcome.release(after=0.02)
    assert gevent.get_hub().loop.now() - started >= 0.015
    assert api.edits == []
    assert consumer.released and not consumer.consumed and not consumer.held


@pytest.mark.parametrize("releases, seconds", [(3, 0.0), (1, 601.0)])
def test_newer_version_released_past_its_bounds_is_failed_saying_no_engine_took_it(
    api: FakeApi,
    consumer: FakeConsumer,
    actions: ActionRegistry,
    short_delays: None,
    releases: int,
    seconds: float,
) -> None:
    clock = [1000.0]
    waits = NewerVersionWaits(max_releases=3, max_wait=600.0, clock=lambda: clock[0])
    executor = Executor(api, consumer, actions, newer_versions=waits)
    job_id = api.add_job("ok", version=SUPPORTED_VERSION + 1)
    for _ in range(releases):
        assert handle(executor, consumer, job_id) == Outcome.release(after=0.02)
    clock[0] += seconds
    assert handle(executor, consumer, job_id) == Outcome.consume("FAILED")
    message = api.jobs[job_id]["status-message"]
    assert message.startswith(
        f"no engine took this job: its version {SUPPORTED_VERSION + 1} is newer than "
        f"{SUPPORTED_VERSION}, the newest this engine runs, and it went back to the queue "
        f"{releases} time(s) over {seconds:.0f} s"
    )
    assert api.states_written(job_id) == ["FAILED"]
    # Another job's count is its own.
    other = api.add_job("ok", version=SUPPORTED_VERSION + 1)
    assert handle(executor, consumer, other) == Outcome.release(after=0.02)


def test_pull_mode_job_found_in_the_queue_is_consumed_without_running_it(
    api: FakeApi, consumer: FakeConsumer, executor: Executor, actions: ActionRegistry
) -> None:
    job_id = api.add_job("ok", **{"execution-mode": "pull"})
    assert handle(executor, consumer, job_id) == Outcome.consume()
    assert api.edits == [] and actions.get("ok").seen == []
    assert consumed_only(consumer)
    # Pulled by whoever may run it, the same job runs.
    assert executor.run_pull(job_id) == 0
    assert api.states_written(job_id) == ["RUNNING", "SUCCESS"]


@pytest.mark.parametrize(
    "error", [500, 503, requests.ConnectionError("refused"), OSError("network down")]
)
def test_job_api_down_when_fetching_releases_after_a_growing_delay(
    api: FakeApi, consumer: FakeConsumer, executor: Executor, short_delays: None, error: Any
) -> None:
    job_id = api.add_job("ok")
    api.fail("get", error, times=2)
    assert handle(executor, consumer, job_id) == Outcome.release(after=0.01)
    assert handle(executor, consumer, job_id) == Outcome.release(after=0.02)  # doubled
    assert len(consumer.released) == 2 and not consumer.consumed
    assert api.edits == []
    # Once the job API answers, the job runs and the delay starts again from the first.
    assert handle(executor, consumer, job_id) == Outcome.consume("SUCCESS")
    api.fail("get", error)
    assert handle(executor, consumer, job_id) == Outcome.release(after=0.01)


@pytest.mark.parametrize("error", [502, requests.ConnectionError("refused")])
def test_job_api_down_when_setting_running_releases_without_running(
    api: FakeApi,
    consumer: FakeConsumer,
    executor: Executor,
    actions: ActionRegistry,
    short_delays: None,
    error: Any,
) -> None:
    job_id = api.add_job("ok")
    api.fail("edit", error, state="RUNNING")
    assert handle(executor, consumer, job_id) == Outcome.release(after=0.01)
    assert actions.get("ok").seen == []
    assert consumer.released and not consumer.consumed


def test_refused_update_drops_the_entry(
    api: FakeApi, consumer: FakeConsumer, executor: Executor
) -> None:
    # 409: the job became final meanwhile (e.g. cancelled).
    job_id = api.add_job("ok")
    api.fail("edit", 409, state="RUNNING")
    assert handle(executor, consumer, job_id) == Outcome.consume()
    assert consumed_only(consumer)


def test_unexpected_error_is_reported_and_consumed(
    api: FakeApi, consumer: FakeConsumer, executor: Executor, recorder: Recorder
) -> None:
    job_id = api.add_job("ok")
    api.fail("edit", 400, state="RUNNING")  # no row of the table handles a 400
    assert handle(executor, consumer, job_id) == Outcome.consume()
    assert consumed_only(consumer)
    [error] = recorder.errors
    assert "400" in str(error)


def test_outcome_write_failing_is_retried_without_running_the_action_again(
    api: FakeApi, consumer: FakeConsumer, executor: Executor, actions: ActionRegistry
) -> None:
    job_id = api.add_job("ok")
    api.fail("edit", 503, state="SUCCESS")
    assert handle(executor, consumer, job_id) == Outcome.consume("SUCCESS")
    assert actions.get("ok").seen == ["RUNNING"]
    assert api.jobs[job_id]["state"] == "SUCCESS"


@pytest.fixture
def short_write_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Outcome-write retries a few milliseconds apart (the real ones start at 0.2 s)."""
    monkeypatch.setattr(executor_module, "OUTCOME_RETRY_FIRST", 0.005)
    monkeypatch.setattr(executor_module, "OUTCOME_RETRY_MAX", 0.02)


@pytest.mark.parametrize(
    ("action", "state", "error"),
    [
        ("ok", "SUCCESS", requests.ConnectionError("refused")),
        ("fails_3", "FAILED", 507),
        ("raises", "FAILED", 500),
        ("ok", "SUCCESS", 403),  # a session whose new login failed too
        ("ok", "SUCCESS", 401),
    ],
)
def test_outcome_write_is_retried_until_it_lands_and_the_entry_kept_meanwhile(
    api: FakeApi,
    consumer: FakeConsumer,
    executor: Executor,
    actions: ActionRegistry,
    short_write_retries: None,
    action: str,
    state: str,
    error: Any,
) -> None:
    job_id = api.add_job(action)
    api.fail("edit", error, times=5, state=state)
    assert handle(executor, consumer, job_id) == Outcome.consume(state)
    assert api.jobs[job_id]["state"] == state
    assert api.states_written(job_id) == ["RUNNING", state]  # written once, when it landed
    assert consumed_only(consumer)
    if action == "ok":
        assert actions.get("ok").seen == ["RUNNING"]  # the action ran once


def test_outcome_write_retries_end_when_the_entry_is_lost(
    api: FakeApi, consumer: FakeConsumer, executor: Executor, short_write_retries: None
) -> None:
    job_id = api.add_job("ok")
    api.fail("edit", 503, times=10**6, state="SUCCESS")
    entry = consumer.take_now(job_id)
    greenlet = gevent.spawn(executor.handle, entry)
    wait_for(lambda: len(api.gets) == 1 and api.states_written(job_id) == ["RUNNING"])
    gevent.sleep(0.05)  # a few retries
    consumer.lose_session()
    assert greenlet.get(timeout=5) == Outcome.lost()
    assert not consumer.consumed and not consumer.released
    assert api.jobs[job_id]["state"] == "RUNNING"


def test_outcome_write_already_landed_is_not_written_twice(
    api: FakeApi, consumer: FakeConsumer, executor: Executor, short_write_retries: None
) -> None:
    # The first write reached the job API but its answer was lost; the retry finds the job
    # final (409) and the entry is consumed.
    job_id = api.add_job("ok")
    original = api.edit
    lost_answers = [True]

    def edit(job: str, data: dict[str, Any], select: str | None = None) -> Any:
        answer = original(job, data, select)
        if data.get("state") == "SUCCESS":
            if lost_answers:
                lost_answers.pop()
                raise requests.ConnectionError("answer lost")
            raise api_error(409)
        return answer

    api.edit = edit  # type: ignore[method-assign]
    assert handle(executor, consumer, job_id) == Outcome.consume()
    assert api.jobs[job_id]["state"] == "SUCCESS"
    assert consumed_only(consumer)


def test_entry_found_no_longer_ours_before_the_action_is_not_run(
    api: FakeApi, consumer: FakeConsumer, executor: Executor, actions: ActionRegistry
) -> None:
    job_id = api.add_job("ok")
    entry = consumer.take_now(job_id)
    consumer.lose_session()  # e.g. frozen past the session timeout after the take
    assert executor.handle(entry) == Outcome.lost()
    assert actions.get("ok").seen == []
    assert not consumer.consumed and not consumer.released


def test_entry_found_no_longer_ours_after_the_action_gets_no_outcome(
    api: FakeApi, consumer: FakeConsumer, executor: Executor
) -> None:
    job_id = api.add_job("gated")
    entry = consumer.take_now(job_id)
    greenlet = gevent.spawn(executor.handle, entry)
    wait_for(lambda: Gated.started == [job_id])
    consumer.lose_session()
    Gated.gate.set()
    assert greenlet.get(timeout=5) == Outcome.lost()
    assert Gated.ended == [job_id]
    assert api.states_written(job_id) == ["RUNNING"]  # no final state
    assert not consumer.consumed and not consumer.released


# -- the take loop: session loss and shutdown ----------------------------------------------------


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    with gevent.Timeout(timeout, AssertionError(f"not true within {timeout} s")):
        while not condition():
            gevent.sleep(0.005)


@pytest.fixture
def running(executor: Executor) -> Iterator[gevent.Greenlet]:
    """The executor's take loop, in a greenlet; stopped after the test."""
    greenlet = gevent.spawn(executor.run)
    yield greenlet
    if not greenlet.dead:
        executor.stop()
        executor.stop()
        greenlet.join(timeout=15)


def test_session_loss_kills_running_actions_and_writes_nothing(
    api: FakeApi,
    consumer: FakeConsumer,
    executor: Executor,
    recorder: Recorder,
    running: gevent.Greenlet,
) -> None:
    jobs = [api.add_job("gated") for _ in range(3)]
    for job_id in jobs:
        consumer.put(job_id)
    wait_for(lambda: sorted(Gated.started) == sorted(jobs))
    consumer.lose_session()
    executor.session_changed(KazooState.LOST)
    wait_for(lambda: len(recorder.settled) == 3)
    assert {outcome for _, _, outcome in recorder.settled} == {Outcome.lost()}
    Gated.gate.set()
    gevent.sleep(0.05)
    assert Gated.ended == []  # killed mid-action: never came back to write an outcome
    assert all(api.states_written(job_id) == ["RUNNING"] for job_id in jobs)
    assert not consumer.consumed and not consumer.released
    assert executor.in_flight() == []


def test_stop_lets_running_jobs_finish_then_exits(
    api: FakeApi, consumer: FakeConsumer, executor: Executor, running: gevent.Greenlet
) -> None:
    job_id = api.add_job("gated")
    consumer.put(job_id)
    wait_for(lambda: Gated.started == [job_id])
    executor.stop()
    assert consumer.paused
    gevent.sleep(0.05)
    assert not running.dead  # within the grace period
    Gated.gate.set()
    assert running.get(timeout=10) == 0
    assert api.jobs[job_id]["state"] == "SUCCESS" and consumer.stopped


def test_grace_period_over_releases_running_jobs(
    api: FakeApi, consumer: FakeConsumer, executor: Executor, running: gevent.Greenlet
) -> None:
    executor.grace_period = 0.05
    job_id = api.add_job("gated")
    consumer.put(job_id)
    wait_for(lambda: Gated.started == [job_id])
    executor.stop()
    assert running.get(timeout=10) == 0
    assert [e.job_id for e in consumer.released] == [job_id] and not consumer.consumed
    assert api.states_written(job_id) == ["RUNNING"]


def test_outcome_write_retries_last_through_the_grace_period_then_release(
    api: FakeApi,
    consumer: FakeConsumer,
    executor: Executor,
    running: gevent.Greenlet,
    short_write_retries: None,
) -> None:
    executor.grace_period = 0.3
    job_id = api.add_job("ok")
    api.fail("edit", 503, times=10**6, state="SUCCESS")
    consumer.put(job_id)
    wait_for(lambda: api.states_written(job_id) == ["RUNNING"])
    executor.stop()
    started = gevent.get_hub().loop.now()
    assert running.get(timeout=10) == 0
    # Still retried after the stop request, until the grace period was over.
    assert gevent.get_hub().loop.now() - started >= 0.25
    assert [e.job_id for e in consumer.released] == [job_id] and not consumer.consumed


def test_second_stop_releases_at_once(
    api: FakeApi, consumer: FakeConsumer, executor: Executor, running: gevent.Greenlet
) -> None:
    job_id = api.add_job("gated")
    consumer.put(job_id)
    wait_for(lambda: Gated.started == [job_id])
    executor.stop()
    executor.stop()  # the grace period (5 s) ends now
    assert running.get(timeout=2) == 0
    assert [e.job_id for e in consumer.released] == [job_id]


def test_stop_cuts_a_release_delay_short(
    api: FakeApi, consumer: FakeConsumer, executor: Executor, running: gevent.Greenlet
) -> None:
    # NEWER_VERSION_DELAY is 5 s: the entry would be kept that long without the stop.
    job_id = api.add_job("ok", version=SUPPORTED_VERSION + 1)
    consumer.put(job_id)
    wait_for(lambda: bool(executor._delaying))
    executor.stop()
    assert running.get(timeout=3) == 0
    assert [e.job_id for e in consumer.released] == [job_id]
    assert api.edits == []


def test_outcome_decisions_are_an_enum() -> None:
    assert [d.value for d in Decision] == ["consume", "release", "lost"]
    assert Outcome.release(after=2.0).decision is Decision.RELEASE
