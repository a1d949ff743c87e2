"""Retries, delayed jobs and dead letters with real processes: executors, the elected
scheduler (in `job-executor --distributions` and in `job-distributor`), the real job API,
the operator CLI and ZooKeeper. The test actions are in tests/actions/retries.py."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from nuvla.api import Api

from nuvla_job.localstack.ports import free_port
from nuvla_job.localstack.processes import TEST_ACTIONS
from nuvla_job.timeutil import format_time, parse_time
from tests.integration.test_executor import add, queue_empty, wait_state
from tests.integration.test_metrics import scrape, value
from tests.integration.test_operator_cli import Cli, entries_by_job, run_cli, stack_env
from tests.support.jobapi import JobApiProcess
from tests.support.processes import EngineProcess
from tests.support.waiting import wait_for
from tests.support.zookeeper import ZooKeeperServer

SESSION = 3.0  # short ZooKeeper sessions where a test kills a process
TICK = 1.0  # the scheduler's default tick
# Scheduling, queueing, taking and starting on a shared, busy CI machine.
SLACK = 1.5
SCHEDULER_ONLY = ("--distribution-include", "scheduler")


def starts(record: Path) -> list[tuple[str, int, int, float]]:
    """(job id, attempt, pid, time) of every recorded start, in order."""
    if not record.exists():
        return []
    rows = []
    for line in record.read_text().splitlines():
        _, job_id, attempt, pid, when = line.split()
        rows.append((job_id, int(attempt), int(pid), float(when)))
    return rows


def payload(record: Path, **more: object) -> str:
    return json.dumps({"record": str(record), **more})


def later(seconds: float) -> str:
    return format_time(datetime.now(UTC) + timedelta(seconds=seconds))


@pytest.fixture
def cli(job_api: JobApiProcess, zookeeper: ZooKeeperServer, tmp_path: Path) -> Cli:
    env = stack_env(job_api, zookeeper, tmp_path / "data")
    return lambda *args, input=None: run_cli(*args, env=env, input=input)


@pytest.fixture
def start_scheduler(
    zookeeper: ZooKeeperServer, job_api: JobApiProcess, zk: KazooClient
) -> Iterator:
    """Start `job-distributor` processes running only the scheduler; stopped after."""
    started: list[EngineProcess] = []

    def start(name: str) -> EngineProcess:
        args = [
            "--zk-hosts",
            zookeeper.hosts,
            "--zk-timeout",
            str(SESSION),
            "--api-url",
            job_api.endpoint,
            "--api-credentials-file",
            str(job_api.credentials_path),
            "--actions-path",
            str(TEST_ACTIONS),
            "--name",
            name,
            *SCHEDULER_ONLY,
        ]
        process = EngineProcess("nuvla_job.cli.distributor", args).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


# -- retries ------------------------------------------------------------------------------------


def test_a_flaky_action_succeeds_on_its_third_attempt_with_the_attempts_in_the_job(
    admin_api: Api, zk: KazooClient, start_executor, tmp_path: Path
) -> None:
    record = tmp_path / "runs"
    start_executor("--distributions", *SCHEDULER_ONLY)
    job_id = add(admin_api, "test_flaky", payload=payload(record, fails=2))
    job = wait_state(admin_api, job_id, timeout=60)
    assert (job["state"], job["attempts"]) == ("SUCCESS", 3)
    assert [e.split(": ", 1)[1] for e in job["attempt-errors"]] == [
        "ConnectionError: flaky attempt 1",
        "ConnectionError: flaky attempt 2",
    ]
    runs = starts(record)
    assert [attempt for _, attempt, _, _ in runs] == [1, 2, 3]  # each attempt ran once
    # Each waited out its back-off (0.2 s, then 0.4 s, jittered down to half) at least.
    gaps = [b[3] - a[3] for a, b in zip(runs, runs[1:], strict=False)]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2, gaps
    queue_empty(zk)


def test_while_it_waits_a_retry_is_queued_in_the_job_store_not_in_zookeeper(
    admin_api: Api, zk: KazooClient, start_executor, tmp_path: Path
) -> None:
    # No scheduler runs: the failed attempt waits in the job store, with no entry.
    start_executor()
    job_id = add(admin_api, "test_flaky", payload=payload(tmp_path / "runs", fails=1))
    job = wait_for(
        lambda: (
            (j := admin_api.get(job_id).data).get("attempts") == 1 and j["state"] == "QUEUED" and j
        ),
        "the first attempt to fail",
    )
    assert job["status-message"].startswith("attempt 1 of 4 failed: ConnectionError")
    assert "not-before" in job
    queue_empty(zk)
    assert job_id not in entries_by_job(zk)


def test_retries_go_on_across_a_kill_9_of_the_executor_without_losing_the_count(
    admin_api: Api, zk: KazooClient, start_executor, start_scheduler, tmp_path: Path
) -> None:
    record = tmp_path / "runs"
    start_scheduler(f"scheduler-{uuid.uuid4().hex[:6]}")
    first = start_executor("--zk-timeout", str(SESSION))
    job_id = add(admin_api, "test_fails_then_hangs", payload=payload(record, seconds=120))
    # Attempt 1 raises, attempt 2 hangs: kill its executor mid-attempt.
    wait_for(lambda: [a for _, a, _, _ in starts(record)] == [1, 2], "attempt 2 to start", 30)
    first.kill()
    second = start_executor("--zk-timeout", str(SESSION))
    job = wait_state(admin_api, job_id, timeout=SESSION + 30)
    assert (job["state"], job["attempts"]) == ("SUCCESS", 3)  # counted on, not reset
    runs = starts(record)
    assert [a for _, a, _, _ in runs] == [1, 2, 3]
    # Attempts 1 and 2 by the first executor, 3 by the second (actions run in its process).
    assert (runs[0][2], runs[1][2], runs[2][2]) == (first.pid, first.pid, second.pid)
    [error] = job["attempt-errors"]  # the killed attempt left no error, only its count
    assert error.endswith("RuntimeError: attempt 1 breaks")
    queue_empty(zk)


# -- delayed jobs -------------------------------------------------------------------------------


def test_a_delayed_job_waits_without_an_entry_then_runs_on_time(
    cli: Cli, admin_api: Api, zk: KazooClient, start_executor, tmp_path: Path
) -> None:
    record = tmp_path / "runs"
    start_executor("--distributions", *SCHEDULER_ONLY)
    submitted = cli(
        "submit", "test_recorded", "--payload", payload(record), "--delay", "4s", "--json"
    )
    assert submitted.returncode == 0, submitted.stderr
    answer = json.loads(submitted.stdout)
    job_id, due = answer["id"], parse_time(answer["not-before"]).timestamp()
    job = admin_api.get(job_id).data
    assert (job["state"], job["not-before"]) == ("QUEUED", answer["not-before"])
    assert job_id not in entries_by_job(zk)  # no consumer can see it early
    restored = cli("restore", "--dry-run", "--min-age", "0", "--json")
    report = json.loads(restored.stdout)
    assert report["waiting"] >= 1 and job_id not in {m["id"] for m in report["missing"]}
    job = wait_state(admin_api, job_id, timeout=30)
    assert job["state"] == "SUCCESS" and "not-before" not in job
    [(_, _, _, started)] = starts(record)
    assert due <= started < due + TICK + SLACK, started - due
    queue_empty(zk)


def test_submit_at_a_time_and_a_bad_delay(cli: Cli, admin_api: Api) -> None:
    moment = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    submitted = cli("submit", "test_recorded", "--at", moment.isoformat(), "--json")
    assert submitted.returncode == 0, submitted.stderr
    job = admin_api.get(json.loads(submitted.stdout)["id"]).data
    assert parse_time(job["not-before"]) == moment
    bad = cli("submit", "test_recorded", "--delay", "soon")
    assert bad.returncode == 3 and "'soon' is not a duration" in bad.stderr
    both = cli("submit", "test_recorded", "--delay", "5s", "--at", moment.isoformat())
    assert both.returncode == 3 and "--delay or --at, not both" in both.stderr


def test_a_waiting_job_is_cancelled_and_never_runs(
    cli: Cli, admin_api: Api, zk: KazooClient, start_executor, tmp_path: Path
) -> None:
    record = tmp_path / "runs"
    start_executor("--distributions", *SCHEDULER_ONLY)
    job_id = add(admin_api, "test_recorded", payload=payload(record), **{"not-before": later(2)})
    assert cli("cancel", job_id).returncode == 0
    # Past its time, with a ticking scheduler: still cancelled, never run.
    witness = add(admin_api, "test_recorded", payload=payload(record), **{"not-before": later(3)})
    assert wait_state(admin_api, witness, timeout=30)["state"] == "SUCCESS"
    assert admin_api.get(job_id).data["state"] == "CANCELED"
    assert [j for j, _, _, _ in starts(record)] == [witness]


def test_delayed_jobs_run_once_on_time_through_a_scheduler_failover(
    admin_api: Api, zk: KazooClient, start_executor, start_scheduler, tmp_path: Path
) -> None:
    record = tmp_path / "runs"
    start_executor()
    schedulers = [start_scheduler(f"scheduler-{n}-{uuid.uuid4().hex[:6]}") for n in "ab"]
    wait_for(
        lambda: sum("leader of scheduler:" in p.log() for p in schedulers) == 1,
        "one scheduler to lead",
    )
    leader = next(p for p in schedulers if "leader of scheduler:" in p.log())
    # 40 jobs due over the next 14 s; the leader is killed at about 5 s.
    due: dict[str, float] = {}
    for index in range(40):
        moment = later(2 + index * 0.3)
        job_id = add(admin_api, "test_recorded", payload=payload(record), **{"not-before": moment})
        due[job_id] = parse_time(moment).timestamp()
    time.sleep(max(0.0, min(due.values()) + 3 - time.time()))  # some ran under the leader
    killed_at = time.time()
    leader.kill()
    wait_for(lambda: len(starts(record)) == len(due), "every delayed job to run", SESSION + 40)
    runs = starts(record)
    assert sorted(j for j, _, _, _ in runs) == sorted(due)  # each exactly once
    for job_id, _, _, started in runs:
        late = started - due[job_id]
        assert late >= 0, (job_id, late)  # never early
        if due[job_id] < killed_at - TICK:
            assert late < TICK + SLACK, (job_id, late)
        else:  # within the session timeout plus one tick of its time
            assert late < SESSION + TICK + SLACK, (job_id, late)
    assert all(wait_state(admin_api, j)["state"] == "SUCCESS" for j in due)
    queue_empty(zk)


# -- dead letters ---------------------------------------------------------------------------------


def test_dead_letters_are_listed_counted_and_retried(
    cli: Cli, admin_api: Api, zk: KazooClient, start_executor, tmp_path: Path
) -> None:
    record = tmp_path / "runs"
    port = free_port()
    start_executor("--distributions", *SCHEDULER_ONLY, "--metrics-port", str(port))
    # No retry of its own: its first failure is final.
    job_id = add(admin_api, "test_flaky", payload=payload(record, fails=1), retry={"retries": 0})
    assert wait_state(admin_api, job_id)["state"] == "FAILED"
    listed = cli("list", "--failed", "--action", "test_flaky", "--last", "100", "--json")
    assert listed.returncode == 0, listed.stderr
    [failed] = [j for j in json.loads(listed.stdout)["jobs"] if j["id"] == job_id]
    assert failed["status-message"].startswith("ConnectionError: flaky attempt 1")
    text = cli("list", "--failed", "--action", "test_flaky", "--last", "100")
    line = next(row for row in text.stdout.splitlines() if job_id in row)
    assert "ConnectionError: flaky attempt 1" in line
    samples = scrape(f"http://127.0.0.1:{port}/metrics")
    assert value(samples, "nuvla_job_dead_letters_total", action="test_flaky") == 1.0

    retried = cli("retry", job_id)
    assert retried.returncode == 0, retried.stderr
    assert f"{job_id}: {job_id} queued again" in retried.stdout
    job = wait_state(admin_api, job_id, timeout=30)
    assert (job["state"], job["attempts"]) == ("SUCCESS", 2)  # a new attempt, counted on
    assert len(job["attempt-errors"]) == 1  # its history kept
    assert [a for _, a, _, _ in starts(record)] == [1, 2]

    again = cli("retry", job_id, "job/00000000-0000-0000-0000-000000000000")
    assert again.returncode == 1
    assert "only a FAILED job is retried" in again.stdout and "not found" in again.stdout
