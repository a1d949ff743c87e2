"""Concurrency limits (nuvla_job/limits.py): the ZooKeeper recipe in process, then real
executors on the test stack, their jobs' starts and ends read from the file the limited test
actions append to (tests/actions/limited.py)."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

import gevent
import gevent.event
import pytest
from kazoo.client import KazooClient
from nuvla.api import Api

from nuvla_job.limits import LIMITS_ROOT, FleetLimit, LimitLost, limit_path
from tests.integration.test_distributor import run_cli
from tests.integration.test_executor import add, queue_empty, wait_state
from tests.integration.test_metrics import scrape, value
from tests.support.waiting import wait_for

# -- the recipe, in process, on the real ZooKeeper ------------------------------------------------


def line(zk: KazooClient, path: str) -> list[str]:
    """The nodes of a limit's line (none before its first holder)."""
    return zk.get_children(path) if zk.exists(path) else []


def gwait(predicate: Callable[[], object], what: str) -> None:
    wait_for(predicate, what, pause=gevent.sleep, interval=0.01)  # the gevent clients run


def test_fleet_limit_admits_size_holders_in_arrival_order(zk, zk_factory) -> None:
    # Two sessions stand for two executors; six holders want one of two places.
    clients = [zk_factory(use_gevent=True) for _ in range(2)]
    limits = [FleetLimit(client, f"{LIMITS_ROOT}/recipe", 2) for client in clients]
    holding: list[int] = []
    peak = 0
    granted: list[str] = []
    gates = {i: gevent.event.Event() for i in range(6)}

    def hold(i: int) -> None:
        nonlocal peak
        name = limits[i % 2].acquire(f"job{i}")
        granted.append(name)
        holding.append(i)
        peak = max(peak, len(holding))
        gates[i].wait()
        holding.remove(i)
        limits[i % 2].release(name)

    workers = []
    for i in range(6):
        workers.append(gevent.spawn(hold, i))
        # Each arrives before the next (its node exists): arrival order is known.
        gwait(lambda n=i + 1: len(line(zk, f"{LIMITS_ROOT}/recipe")) == n, "arrival")
    assert sorted(holding) == [0, 1]
    for i in range(6):
        gates[i].set()
        gevent.joinall(workers[i : i + 1], timeout=10, raise_error=True)
    assert peak == 2
    assert [name.split("-")[0] for name in granted] == [f"job{i}" for i in range(6)]
    assert zk.get_children(f"{LIMITS_ROOT}/recipe") == []


def test_fleet_limit_gives_a_closed_session_s_place_to_the_next(zk, zk_factory) -> None:
    first, second = zk_factory(use_gevent=True), zk_factory(use_gevent=True)
    path = f"{LIMITS_ROOT}/sessions"
    FleetLimit(first, path, 1).acquire("holder")
    waiter = gevent.spawn(FleetLimit(second, path, 1).acquire, "waiter")
    gwait(lambda: len(line(zk, path)) == 2, "the waiter in line")
    assert not waiter.ready()
    first.stop()  # the holder's session ends, as a dead executor's does
    assert waiter.get(timeout=10).startswith("waiter-")


def test_fleet_limit_a_killed_waiter_leaves_the_line(zk, zk_factory) -> None:
    client = zk_factory(use_gevent=True)
    path = f"{LIMITS_ROOT}/killed"
    limit = FleetLimit(client, path, 1)
    held = limit.acquire("holder")
    waiters = [gevent.spawn(limit.acquire, f"w{i}") for i in range(2)]
    gwait(lambda: len(line(zk, path)) == 3, "two waiters in line")
    waiters[0].kill()  # e.g. its executor shutting down
    assert sorted(name.split("-")[0] for name in zk.get_children(path)) == ["holder", "w1"]
    limit.release(held)
    assert waiters[1].get(timeout=10).startswith("w1-")
    assert limit.waiting == 0


def test_fleet_limit_raises_limit_lost_when_its_node_vanishes(zk, zk_factory) -> None:
    client = zk_factory(use_gevent=True)
    path = f"{LIMITS_ROOT}/vanished"
    limit = FleetLimit(client, path, 1)
    limit.acquire("holder")
    waiter = gevent.spawn(limit.acquire, "waiter")
    gwait(lambda: len(line(zk, path)) == 2, "the waiter in line")
    (node,) = [n for n in zk.get_children(path) if n.startswith("waiter-")]
    zk.delete(f"{path}/{node}")  # what the end of its session does
    with pytest.raises(LimitLost):
        waiter.get(timeout=10)


# -- executors ------------------------------------------------------------------------------------


def marks(log: Path) -> list[tuple[str, str, str]]:
    """(start|end, job id, pid), in the order they were written."""
    text = log.read_text() if log.exists() else ""
    return [tuple(line.split()) for line in text.splitlines()]  # type: ignore[misc]


def peak(lines: list[tuple[str, str, str]], pid: str | None = None) -> int:
    """The most jobs running at once (of one process, when ``pid`` is given)."""
    running = highest = 0
    for mark, _, who in lines:
        if pid is None or who == pid:
            running += 1 if mark == "start" else -1
            highest = max(highest, running)
    return highest


def test_a_limit_of_3_holds_across_3_executors_under_load(
    admin_api: Api, zk: KazooClient, start_executor: Callable, tmp_path: Path
) -> None:
    # 3 executors of 10 slots; the third also caps the action at 1 of its own.
    executors = [start_executor("--concurrency", "10") for _ in range(2)]
    executors.append(start_executor("--concurrency", "10", "--max-concurrent", "test_limited=1"))
    log = tmp_path / "runs.log"
    limited = json.dumps({"log": str(log), "seconds": 0.15})
    unlimited = json.dumps({"log": str(tmp_path / "other.log"), "seconds": 0.05})
    jobs = []
    for _ in range(45):  # the limited jobs with unlimited ones between them
        jobs.append(add(admin_api, "test_limited", payload=limited))
        jobs.append(add(admin_api, "test_sleep", payload=unlimited))
    assert all(wait_state(admin_api, job, timeout=90)["state"] == "SUCCESS" for job in jobs)
    lines = marks(log)
    assert len(lines) == 90
    assert peak(lines) == 3  # reached, never passed
    capped = str(executors[2].pid)
    assert peak(lines, capped) <= 1
    assert len({pid for _, _, pid in lines}) >= 2, "the work went to more than one executor"
    # Every place was given back.
    assert zk.get_children(limit_path("test_limited")) == []


def test_a_fleet_limit_given_on_the_command_line(
    admin_api: Api, zk: KazooClient, start_executor: Callable, tmp_path: Path
) -> None:
    # For an action one cannot edit (Nuvla's own): test_sleep has no limit of its own.
    for _ in range(2):
        start_executor("--concurrency", "5", "--fleet-max-concurrent", "test_sleep=2")
    log = tmp_path / "runs.log"
    payload = json.dumps({"log": str(log), "seconds": 0.1})
    jobs = [add(admin_api, "test_sleep", payload=payload) for _ in range(16)]
    assert all(wait_state(admin_api, job, timeout=60)["state"] == "SUCCESS" for job in jobs)
    assert peak(marks(log)) == 2


def test_a_job_over_the_limit_waits_holding_no_slot_and_starts_in_order(
    admin_api: Api, zk: KazooClient, start_executor: Callable, tmp_path: Path
) -> None:
    process = start_executor("--concurrency", "3", metrics=True)
    url = f"http://127.0.0.1:{process.port}/metrics"
    log, gate = tmp_path / "runs.log", tmp_path / "gate"
    payload = json.dumps({"log": str(log), "gate": str(gate)})
    gated = [add(admin_api, "test_limited_gated", payload=payload)]
    wait_for(lambda: len(marks(log)) == 1, "the first gated job running")
    for waiting in (1, 2):  # each waits before the next is queued: their order is known
        gated.append(add(admin_api, "test_limited_gated", payload=payload))
        wait_for(
            lambda n=waiting: value(scrape(url), "nuvla_job_jobs_waiting_for_limit") == n,
            f"{waiting} job(s) waiting for the limit",
        )
    # 1 running and 2 waiting on 3 slots: the waiting ones hold none, other jobs run.
    others = [add(admin_api, "test_ok") for _ in range(4)]
    assert all(wait_state(admin_api, job)["state"] == "SUCCESS" for job in others)
    assert [admin_api.get(job).data["state"] for job in gated] == ["RUNNING", "QUEUED", "QUEUED"]
    # The other jobs' greenlets end once their entries are consumed, just after SUCCESS.
    wait_for(
        lambda: (
            (samples := scrape(url))
            and value(samples, "nuvla_job_jobs_in_flight") == 1
            and value(samples, "nuvla_job_jobs_waiting_for_limit") == 2
        ),
        "1 job in flight and 2 waiting",
    )
    # A job cancelled while it waits is not run when its turn comes.
    for _ in (1, 2):
        gated.append(add(admin_api, "test_limited_gated", payload=payload))
    wait_for(lambda: value(scrape(url), "nuvla_job_jobs_waiting_for_limit") == 3, "3 jobs waiting")
    admin_api.operation(admin_api.get(gated[3]), "cancel")
    gate.touch()
    states = [wait_state(admin_api, job)["state"] for job in gated]
    assert states == ["SUCCESS", "SUCCESS", "SUCCESS", "CANCELED", "SUCCESS"]
    lines = marks(log)
    assert [job for mark, job, _ in lines if mark == "start"] == [*gated[:3], gated[4]]
    assert peak(lines) == 1
    queue_empty(zk)


def test_a_dead_executor_s_place_comes_back(
    admin_api: Api, zk: KazooClient, start_executor: Callable, tmp_path: Path
) -> None:
    log, gate = tmp_path / "runs.log", tmp_path / "gate"
    payload = json.dumps({"log": str(log), "gate": str(gate)})
    # One slot: once it runs the first job, the dying executor takes no other.
    dying = start_executor("--concurrency", "1", "--zk-timeout", "4")
    first = add(admin_api, "test_limited_gated", payload=payload)
    wait_for(lambda: len(marks(log)) == 1, "the first job running")
    survivor = start_executor("--concurrency", "2", metrics=True)
    second = add(admin_api, "test_limited_gated", payload=payload)
    url = f"http://127.0.0.1:{survivor.port}/metrics"
    wait_for(
        lambda: value(scrape(url), "nuvla_job_jobs_waiting_for_limit") == 1,
        "the second job waiting on the survivor",
    )
    dying.signal(signal.SIGKILL)
    # Its session ends: its place goes to the job in line (its own job's entry goes back
    # to the queue, and in line behind it).
    wait_for(lambda: len(marks(log)) == 2, "the second job started on the survivor", timeout=30)
    gate.touch()
    assert wait_state(admin_api, first)["state"] == "SUCCESS"
    assert wait_state(admin_api, second)["state"] == "SUCCESS"
    starts = [(job, pid) for mark, job, pid in marks(log) if mark == "start"]
    assert starts == [
        (first, str(dying.pid)),
        (second, str(survivor.pid)),
        (first, str(survivor.pid)),
    ]


@pytest.mark.parametrize(
    ("args", "culprit"),
    [
        (["--max-concurrent", "nope=2"], "nope=2"),
        (["--max-concurrent", "test_limited=0"], "test_limited=0"),
        (["--max-concurrent", "test_limited=x"], "test_limited=x"),
        (["--max-concurrent", "test_limited"], "test_limited"),
        (["--fleet-max-concurrent", "test_ok=1,nope=1"], "nope=1"),
    ],
)
def test_bad_limit_options_are_usage_errors(args: list[str], culprit: str) -> None:
    result = run_cli("nuvla_job.cli.executor", *args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"'{culprit}'" in result.stderr
    assert args[0] in result.stderr
