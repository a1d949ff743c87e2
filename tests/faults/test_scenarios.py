"""The fault scenarios (issue 6's seven, issue 16's two of the job API on PostgreSQL), each
under a load of jobs on two real executors, a real job API (or two replicas behind HAProxy)
and real ZooKeeper; after each, the invariants of invariants.py must hold.

Run them all with `make faults`; `make test` runs the `faults_ci` ones with fewer jobs.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nuvla_job.localstack.ensemble import ZooKeeperEnsemble
from nuvla_job.localstack.postgres import PostgresServer
from nuvla_job.localstack.zookeeper import ZooKeeperServer
from tests.faults.conftest import FaultSettings
from tests.faults.diskfull import DiskFullUnavailable, SmallDisk
from tests.faults.report import Row
from tests.faults.stack import FaultStack, poll, wait_for
from tests.support.haproxy import require_haproxy
from tests.support.needs import require

pytestmark = pytest.mark.faults

# Short sessions where the scenario waits for one to expire; the default otherwise.
SHORT_SESSION = 3.0
ZK_OUTAGE = 30.0
API_OUTAGE = 20.0
GRACE_PERIOD = 30.0  # longer than the longest action (5 s): SIGTERM lets every job finish
FROZEN_AT_LEAST = 8.0  # longer than the session timeout and than any action
PG_OUTAGE = 20.0


@pytest.fixture
def zookeeper_server() -> Iterator[ZooKeeperServer]:
    with ZooKeeperServer() as server:
        yield server


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator:
    stacks: list[FaultStack] = []

    def make(zk_hosts: str, **kw) -> FaultStack:
        stack = FaultStack(tmp_path, zk_hosts, **kw)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.close()


def conclude(
    stack: FaultStack,
    rows: list[Row],
    number: int,
    scenario: str,
    faults: str,
    recover_s: float | None,
    *,
    duplicates_allowed: bool = True,
) -> None:
    """Wait for the load to drain, check the invariants, add the row, fail on violations.

    ``duplicates_allowed``: False where no executor dies or loses its session, so that no
    action may run twice."""
    if stack.target:
        stack.finish_load()
    if stack.refused:
        statuses = sorted({status for status, _ in stack.refused})
        faults += f"; {len(stack.refused)} adds refused ({statuses}) and retried"
    if stack.answer_lost:
        faults += f" ({len(stack.answer_lost)} of them unanswered)"
    # `>=`: a job the API refused but stored anyway is counted too (the checker finds it).
    poll(lambda: (stack.final_count() or 0) >= len(stack.added), 300, interval=0.5)
    verdict = stack.verdict(duplicates_allowed)
    if verdict.made_unanswered:
        faults += (
            f"; {len(verdict.made_unanswered)} unanswered adds had been made and had run "
            "before they were sent again (a second job each)"
        )
    problems = verdict.hard_failures()
    if verdict.still_queued:
        problems.append(f"{verdict.still_queued} jobs never ran")
    rows.append(
        Row(
            number,
            scenario,
            verdict.jobs,
            faults,
            len(verdict.lost),
            verdict.duplicate_executions,
            recover_s,
            "; ".join(p.split(":")[0] for p in problems) or "hold",
        )
    )
    assert not problems, "\n".join(problems)


def load(stack: FaultStack, jobs: int) -> None:
    """Start adding the jobs and return once a quarter of them have started."""
    stack.start_load(jobs)
    stack.wait_mid_load()


def test_zookeeper_leader_killed(
    make_stack,
    fault_settings: FaultSettings,
    fault_rows,
) -> None:
    ensemble = ZooKeeperEnsemble(3)
    try:
        ensemble.start()
        stack = make_stack(ensemble.hosts).start()
        load(stack, fault_settings.jobs)
        leader = ensemble.wait_for_leader()
        killed_at = time.time()
        leader.kill()
        new_leader = ensemble.wait_for_leader(30)
        assert new_leader is not leader
        elected_at = time.time()
        resumed = wait_for(
            lambda: stack.first_start_after(elected_at), 60, "a job started under the new leader"
        )
        leader.start()  # rejoins as a follower
        conclude(
            stack,
            fault_rows,
            1,
            "ZooKeeper ensemble of 3: leader killed",
            f"kill -9 of leader (server.{leader.myid}) mid-load",
            resumed - killed_at,
        )
    finally:
        ensemble.close()


def test_zookeeper_down_and_back(
    make_stack, zookeeper_server: ZooKeeperServer, fault_settings: FaultSettings, fault_rows
) -> None:
    stack = make_stack(zookeeper_server.hosts).start()
    load(stack, fault_settings.jobs)
    down_at = time.time()
    zookeeper_server.stop()
    time.sleep(ZK_OUTAGE)  # the fault's length is the point: nothing to wait for
    back_at = time.time()
    zookeeper_server.start()
    # A take that was in flight as ZooKeeper went down may still start its action: allow
    # two seconds, then nothing may start until ZooKeeper is back.
    during = [r for r in stack.executions() if r.kind == "start" and down_at + 2 < r.time < back_at]
    assert not during, f"{len(during)} jobs started while ZooKeeper was down"
    resumed = wait_for(
        lambda: stack.first_start_after(back_at), 90, "a job started after ZooKeeper came back"
    )
    conclude(
        stack,
        fault_rows,
        2,
        "whole ZooKeeper down, then back",
        f"ZooKeeper stopped for {ZK_OUTAGE:.0f} s",
        resumed - back_at,
    )


@pytest.mark.faults_ci
def test_session_expiry_of_a_frozen_executor(
    make_stack, zookeeper_server: ZooKeeperServer, fault_settings: FaultSettings, fault_rows
) -> None:
    stack = make_stack(zookeeper_server.hosts, zk_timeout=SHORT_SESSION).start()
    load(stack, fault_settings.jobs)
    frozen = stack.executors["a"]
    frozen.signal(signal.SIGSTOP)
    frozen_at = time.time()
    held = stack.in_flight("a")
    other = stack.pid_of("b")
    try:
        # Its session expires; the other executor takes every job it held.
        wait_for(
            lambda: (
                held
                <= {
                    r.job_id
                    for r in stack.executions()
                    if r.kind == "start" and r.pid == other and r.time > frozen_at
                }
            ),
            60,
            f"executor b to take the {len(held)} jobs of the frozen one",
        )
        taken_over = time.time()
        # Stay frozen until every action it was running is past its end (at most 5 s): on
        # SIGCONT they all return at once and must find their entries gone.
        time.sleep(max(0.0, frozen_at + FROZEN_AT_LEAST - time.time()))
    finally:
        frozen.signal(signal.SIGCONT)
    resumed_at = time.time()
    conclude(
        stack,
        fault_rows,
        3,
        "session expiry of a frozen executor",
        f"SIGSTOP of executor a for {resumed_at - frozen_at:.0f} s "
        f"({len(held)} jobs in flight), then SIGCONT",
        taken_over - frozen_at,
    )
    # Its jobs were finished by the other executor, never by the frozen one.
    jobs = stack.jobs()
    written_by_frozen = [j for j in held if jobs[j].get("updated-by") == "user/executor-a"]
    assert not written_by_frozen, written_by_frozen[:5]


def test_job_api_down_and_back(
    make_stack, zookeeper_server: ZooKeeperServer, fault_settings: FaultSettings, fault_rows
) -> None:
    stack = make_stack(zookeeper_server.hosts).start()
    load(stack, fault_settings.jobs)
    stack.api.stop()  # same port and database when it starts again
    time.sleep(API_OUTAGE)  # the fault's length is the point: nothing to wait for
    back_at = time.time()
    stack.api.start()
    resumed = wait_for(
        lambda: stack.first_start_after(back_at), 90, "a job started after the job API came back"
    )
    # Jobs were released, not failed: the checker refuses any job that is not SUCCESS; and
    # none ran twice: an outcome the job API could not take was written again later.
    conclude(
        stack,
        fault_rows,
        4,
        "job API down, then back",
        f"job API stopped for {API_OUTAGE:.0f} s; "
        f"{stack.outcomes_written_late()} outcomes written late",
        resumed - back_at,
        duplicates_allowed=False,  # outcomes are written again, actions not run again
    )


@pytest.mark.faults_ci
def test_executor_killed_mid_job(
    make_stack, zookeeper_server: ZooKeeperServer, fault_settings: FaultSettings, fault_rows
) -> None:
    stack = make_stack(zookeeper_server.hosts, zk_timeout=SHORT_SESSION).start()
    load(stack, fault_settings.jobs)
    held = stack.in_flight("a")
    killed_at = time.time()
    stack.executors["a"].kill()
    other = stack.pid_of("b")
    wait_for(
        lambda: (
            held
            <= {
                r.job_id
                for r in stack.executions()
                if r.kind == "start" and r.pid == other and r.time > killed_at
            }
        ),
        60,
        f"executor b to take the {len(held)} jobs of the killed one",
    )
    conclude(
        stack,
        fault_rows,
        5,
        "kill -9 of an executor mid-job",
        f"kill -9 of executor a ({len(held)} jobs in flight)",
        time.time() - killed_at,
    )


@pytest.mark.faults_ci
def test_sigterm_lets_running_jobs_finish(
    make_stack, zookeeper_server: ZooKeeperServer, fault_settings: FaultSettings, fault_rows
) -> None:
    stack = make_stack(zookeeper_server.hosts, grace_period=GRACE_PERIOD).start()
    load(stack, fault_settings.jobs)
    stopping = stack.executors["a"]
    held = stack.in_flight("a")
    asked_at = time.time()
    stopping.signal(signal.SIGTERM)
    code = stopping.wait(GRACE_PERIOD + 30)
    drained = time.time() - asked_at
    stack.stopped_codes["a"] = code
    assert code == 0, stopping.log()[-3000:]
    assert "releasing" not in stopping.log(), "jobs were released instead of finishing"
    pid = stack.pid_of("a")
    ended = {r.job_id for r in stack.executions() if r.kind == "end" and r.pid == pid}
    assert held <= ended, f"{len(held - ended)} running jobs did not finish"
    conclude(
        stack,
        fault_rows,
        6,
        "SIGTERM with a grace period",
        f"SIGTERM to executor a ({len(held)} jobs running, grace {GRACE_PERIOD:.0f} s)",
        drained,
    )
    jobs = stack.jobs()
    assert all(jobs[j].get("updated-by") == "user/executor-a" for j in held)


def test_disk_full_under_the_job_api(
    make_stack,
    zookeeper_server: ZooKeeperServer,
    fault_settings: FaultSettings,
    fault_rows,
    tmp_path: Path,
) -> None:
    disk = SmallDisk(tmp_path / "dbfs")
    try:
        disk.mount()
    except DiskFullUnavailable as exc:
        fault_rows.append(Row.not_run(7, "disk full under the job API", str(exc)))
        require(False, str(exc))
    try:
        stack = make_stack(zookeeper_server.hosts)
        stack.api.db = disk.path / "jobs.sqlite"
        stack.start()
        first = stack.add_jobs(fault_settings.jobs // 2)
        assert not first.errors, first.errors[:5]
        stack.wait_mid_load()
        disk.fill()
        refused = stack.add_jobs(fault_settings.jobs - fault_settings.jobs // 2)
        assert refused.errors, "no add failed on a full disk"
        for status, body in refused.errors:
            assert status in (503, 507), (status, body)
            assert isinstance(body, dict) and "full" in body["message"], body
        freed_at = time.time()
        disk.free()
        retried = wait_for(lambda: stack.add_jobs(1).added, 30, "an add on a freed disk")
        recovered = time.time() - freed_at
        assert retried
        # Add what was refused, so the scenario still runs its full load.
        more = stack.add_jobs(len(refused.errors) - 1)
        assert not more.errors, more.errors[:5]
        conclude(
            stack,
            fault_rows,
            7,
            "disk full under the job API",
            f"database's file system filled ({len(refused.errors)} adds refused; "
            f"{stack.outcomes_written_late()} outcomes written late)",
            recovered,
            duplicates_allowed=False,  # outcomes are written again, actions not run again
        )
        # An add whose entry was made but not recorded (the disk filled in between) keeps
        # its "owed an entry" mark until the job API's recovery: it must clear the mark
        # without queueing the job again.
        stack.api.stop()
        stack.api.start()
        wait_for(lambda: not stack.pending_enqueue(), 30, "the pending marks cleared")
        entries, taken = stack.queue_snapshot()
        assert not entries and not taken, (list(entries)[:5], taken[:5])
    finally:
        disk.free()
        # The job API must be stopped before its file system goes away.
        if "stack" in locals():
            stack.close()
        disk.unmount()


@pytest.mark.faults_ci
def test_job_api_replica_killed(
    make_stack,
    zookeeper_server: ZooKeeperServer,
    fault_settings: FaultSettings,
    fault_rows,
    postgres_db: str,
) -> None:
    require_haproxy()
    # Two replicas on one PostgreSQL behind the balancer, as in docker-compose.yml. Each job
    # carries a unique key: an add whose answer died with its replica is sent again and
    # answered the job it made, as a client should do.
    stack = make_stack(zookeeper_server.hosts, db=postgres_db, replicas=2, unique_adds=True)
    stack.start()
    load(stack, fault_settings.jobs)
    killed_at = time.time()
    stack.apis[1].kill()
    resumed = wait_for(
        lambda: stack.first_start_after(killed_at), 60, "a job started after the kill"
    )
    conclude(
        stack,
        fault_rows,
        8,
        "kill -9 of a job API replica (PostgreSQL)",
        "kill -9 of one of two replicas behind HAProxy mid-load; "
        f"{stack.outcomes_written_late()} outcomes written late",
        resumed - killed_at,
        duplicates_allowed=False,  # executors live: outcomes are written again, not run again
    )
    # The adds the dead replica left half-done were finished by the live one, once each.
    assert not stack.pending_enqueue()


@pytest.mark.faults_ci
def test_postgresql_down_and_back(
    make_stack, zookeeper_server: ZooKeeperServer, fault_settings: FaultSettings, fault_rows
) -> None:
    require_haproxy()
    database = PostgresServer()
    try:
        database.start()
        url = database.create_database("faults")
        # No unique keys: an add refused must have stored nothing (the checker looks).
        stack = make_stack(zookeeper_server.hosts, db=url, replicas=2).start()
        load(stack, fault_settings.jobs)
        database.stop()
        down_at = time.time()
        time.sleep(PG_OUTAGE)  # the fault's length is the point: nothing to wait for
        database.start()  # same port, same data
        back_at = time.time()
        added_again = wait_for(
            lambda: stack.first_add_after(back_at), 60, "an add after PostgreSQL came back"
        )
        resumed = wait_for(
            lambda: stack.first_start_after(back_at), 90, "a job started after PostgreSQL came back"
        )
        during = [(status, body) for status, body in stack.refused if status not in (0, 502)]
        assert stack.refused, "no add was refused while PostgreSQL was down"
        for status, body in during:
            assert status == 503, (status, body)
            assert isinstance(body, dict) and body.get("message"), body
            assert "psycopg" not in body["message"].lower(), body
        conclude(
            stack,
            fault_rows,
            9,
            "PostgreSQL down, then back (two replicas)",
            f"PostgreSQL stopped for {PG_OUTAGE:.0f} s (adds again "
            f"{added_again - back_at:.1f} s after it was back); "
            f"{stack.outcomes_written_late()} outcomes written late",
            resumed - back_at,
            duplicates_allowed=False,  # outcomes are written again, actions not run again
        )
        assert back_at - down_at >= PG_OUTAGE
        assert not stack.pending_enqueue()
    finally:
        database.close()
