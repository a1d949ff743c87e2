"""A distribution loop's ticks with a real distributor process, ZooKeeper and job API: no
tick while the connection is suspended (and a tick cut by a suspension creates nothing
more), a tick that outlasts its interval skips the slots it missed, and what a generator
yields that is not a job body is skipped. Distributions from tests/actions/distributions.py.

The distributor reaches ZooKeeper through a proxy the test can cut (tests/support/zkproxy.py),
so only its connection is suspended: the job API would add the jobs it asked for.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from nuvla.api import Api

from nuvla_job.distributor import tick_offset
from nuvla_job.localstack.processes import TEST_ACTIONS
from tests.support.jobapi import JobApiProcess
from tests.support.processes import EngineProcess
from tests.support.waiting import wait_for
from tests.support.zkproxy import SessionNotingProxy
from tests.support.zookeeper import ZooKeeperServer

# Long enough that a cut link never ends the session: the distributor keeps its leadership.
SESSION_TIMEOUT = 30
SUSPENDED = "ZooKeeper connection suspended: 1 distribution(s) paused"

Start = Callable[..., EngineProcess]


@pytest.fixture
def proxy(zookeeper: ZooKeeperServer) -> Iterator[SessionNotingProxy]:
    with SessionNotingProxy(zookeeper.hosts) as proxy:
        yield proxy


@pytest.fixture
def start_distributor(
    zookeeper: ZooKeeperServer, job_api: JobApiProcess, zk: KazooClient, proxy: SessionNotingProxy
) -> Iterator[Start]:
    """Start `job-distributor` running one distribution; leader once started. They are
    stopped before the proxy closes (a distributor cut off waits to leave its elections)."""
    started: list[EngineProcess] = []

    def start(distribution: str, env: dict[str, str], hosts: str | None = None) -> EngineProcess:
        args = [
            "--zk-hosts",
            hosts or zookeeper.hosts,
            "--zk-timeout",
            str(SESSION_TIMEOUT),
            "--api-url",
            job_api.endpoint,
            "--api-credentials-file",
            str(job_api.credentials_path),
            "--actions-path",
            str(TEST_ACTIONS),
            "--name",
            f"ticks-{distribution}",
            "--distribution-include",
            distribution,
        ]
        process = EngineProcess("nuvla_job.cli.distributor", args, env).start()
        started.append(process)
        process.wait_for_log(f"leader of {distribution}:")
        return process

    yield start
    for process in started:
        process.close()


def calls(record: Path) -> list[float]:
    """The times the `recorded` distribution was called at."""
    return [float(line) for line in record.read_text().split()] if record.exists() else []


def tagged(api: Api, tag: str) -> int:
    return api.search("job", filter=f"tags='{tag}'", last=0).count


def test_no_tick_while_the_connection_is_suspended(
    start_distributor: Start, proxy: SessionNotingProxy, tmp_path: Path
) -> None:
    record = tmp_path / "calls"
    process = start_distributor("recorded", {"RECORDED_LOG": str(record)}, proxy.hosts)
    wait_for(lambda: len(calls(record)) >= 2, "two ticks")
    proxy.cut()
    try:
        process.wait_for_log(SUSPENDED)
        before = len(calls(record))
        skipped = "recorded: tick skipped: ZooKeeper cannot confirm the leadership now"
        wait_for(lambda: process.log().count(skipped) >= 3, "three ticks skipped")
        assert len(calls(record)) == before, "the generator ran while suspended"
    finally:
        proxy.mend()
    wait_for(lambda: len(calls(record)) > before, "a tick once the connection is back")
    log = process.log()
    assert "leadership" not in log.split(SUSPENDED, 1)[1].replace(skipped, "")  # never lost


def test_a_tick_cut_by_a_suspension_creates_nothing_more(
    start_distributor: Start, proxy: SessionNotingProxy, admin_api: Api, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    process = start_distributor("gated_tick", {"GATED_TICK_GATE": str(gate)}, proxy.hosts)
    wait_for(lambda: tagged(admin_api, "gated:1:first"), "the first job of the first tick")
    proxy.cut()
    try:
        process.wait_for_log(SUSPENDED)
        gate.touch()  # the generator yields its second body now, while suspended
        process.wait_for_log("gated_tick: tick interrupted: ZooKeeper connection suspended")
    finally:
        proxy.mend()
    # The next tick, once reconnected, runs whole: both of its jobs.
    wait_for(lambda: tagged(admin_api, "gated:2:second"), "the second tick's jobs")
    assert tagged(admin_api, "gated:2:first") == 1
    assert tagged(admin_api, "gated:1:second") == 0


def test_a_tick_longer_than_its_interval_skips_the_missed_slots(
    start_distributor: Start, tmp_path: Path
) -> None:
    record = tmp_path / "calls"
    env = {"RECORDED_LOG": str(record), "RECORDED_SECONDS": "2.5"}  # interval: 1 s
    process = start_distributor("recorded", env)
    wait_for(lambda: len(calls(record)) >= 3, "three ticks", timeout=30)
    assert "recorded: the tick took longer than the interval; 2 tick(s) skipped" in process.log()
    offset = tick_offset("recorded", 1.0)
    starts = calls(record)
    for start in starts:
        # On the grid (k + offset), never started as soon as the previous tick ended.
        off_grid = abs((start - offset) - round(start - offset))
        assert off_grid < 0.25, f"a tick at {off_grid:.2f} s off its grid: {starts}"
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert all(math.isclose(gap, 3.0, abs_tol=0.3) for gap in gaps), gaps


def test_what_is_not_a_job_body_is_skipped_and_the_tick_goes_on(
    start_distributor: Start, admin_api: Api
) -> None:
    process = start_distributor("odd_yields", {"ODD_YIELDS": "1"})
    process.wait_for_log("distributed 2 job(s) for odd_yields; 3 failed")
    log = process.log()
    for kind in ("str", "NoneType", "list"):
        assert f"odd_yields: the generator yielded {kind} instead of a job body: skipped" in log
    assert "crashed" not in log
    assert tagged(admin_api, "odd:first") >= 1 and tagged(admin_api, "odd:last") >= 1
