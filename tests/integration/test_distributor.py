"""The distributor with real processes: elections on a real ZooKeeper, jobs in the real job
API. Distributions come from tests/actions/distributions.py."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from nuvla.api import Api

from nuvla_job.backoff import backoff_delay
from nuvla_job.distributor import (
    SelectionError,
    election_path,
    next_tick,
    select,
    tick_offset,
)
from nuvla_job.localstack.processes import REPO, TEST_ACTIONS
from nuvla_job.registry import Distribution
from nuvla_job.timeutil import parse_time
from tests.support.jobapi import JobApiProcess
from tests.support.processes import EngineProcess
from tests.support.zookeeper import ZooKeeperServer

SESSION_TIMEOUT = 2.0
# Session expiry is checked every tickTime (0.5 s); the new leader then needs a round trip
# or two, and the log is polled every 50 ms.
FAILOVER_MARGIN = 1.5

Start = Callable[..., EngineProcess]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def start_distributor(
    zookeeper: ZooKeeperServer, job_api: JobApiProcess, zk: KazooClient
) -> Iterator[Start]:
    """Start `job-distributor` processes on the test stack; each stopped by pid after."""
    started: list[EngineProcess] = []

    def start(
        name: str,
        *extra: str,
        env: dict[str, str] | None = None,
        zk_timeout: float = SESSION_TIMEOUT,
    ) -> EngineProcess:
        args = [
            "--zk-hosts",
            zookeeper.hosts,
            "--zk-timeout",
            str(zk_timeout),
            "--api-url",
            job_api.endpoint,
            "--api-credentials-file",
            str(job_api.credentials_path),
            "--actions-path",
            str(TEST_ACTIONS),
            "--name",
            name,
            *extra,
        ]
        process = EngineProcess("nuvla_job.cli.distributor", args, env)
        started.append(process.start())
        return process

    yield start
    for process in started:
        process.stop()


def count_in_log(process: EngineProcess, text: str) -> int:
    return process.log().count(text)


def wait_count(process: EngineProcess, text: str, count: int, timeout: float = 30.0) -> None:
    """Wait until `text` was logged at least `count` times."""
    deadline = time.monotonic() + timeout
    while count_in_log(process, text) < count:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{text!r} logged {count_in_log(process, text)} times, not "
                f"{count}, within {timeout} s:\n{process.log()[-3000:]}"
            )
        time.sleep(0.05)


def wait_leader(
    processes: list[EngineProcess], distribution: str, timeout: float = 30.0
) -> EngineProcess:
    """The one process that logged its leadership of `distribution`."""
    text = f"leader of {distribution}:"
    deadline = time.monotonic() + timeout
    while True:
        leaders = [p for p in processes if text in p.log()]
        if leaders:
            assert len(leaders) == 1, f"two leaders of {distribution}"
            return leaders[0]
        if time.monotonic() > deadline:
            logs = "\n----\n".join(p.log()[-2000:] for p in processes)
            raise AssertionError(f"no leader of {distribution} within {timeout} s:\n{logs}")
        time.sleep(0.05)


def distributed(distribution: str, jobs: int = 1) -> str:
    """The log line of one tick, up to the end of the line."""
    return f"distributed {jobs} job(s) for {distribution}\n"


def jobs_of(api: Api, names: list[str]) -> list[dict]:
    """Every job created by the distributors `names`, oldest first."""
    tags = " or ".join(f"tags='distributor:{name}'" for name in names)
    return [
        r.data for r in api.search("job", filter=tags, orderby="created:asc", last=10000).resources
    ]


def tag(job: dict, prefix: str) -> str:
    values = [t.split(":", 1)[1] for t in job.get("tags", []) if t.startswith(prefix + ":")]
    assert len(values) == 1, job.get("tags")
    return values[0]


def created(job: dict) -> float:
    return parse_time(job["created"]).timestamp()


def assert_one_distributor_per_interval(
    jobs: list[dict], distribution: str, interval: float, per_tick: int = 1
) -> dict[int, set[str]]:
    """Bucket the jobs of `distribution` by the interval of the tick grid they were created
    in: every bucket holds one tick's jobs, all from one distributor."""
    offset = tick_offset(distribution, interval)
    buckets: dict[int, list[str]] = defaultdict(list)
    for job in jobs:
        if tag(job, "distribution") != distribution:
            continue
        # `created` is truncated to milliseconds: tolerate it reading a little early.
        buckets[math.floor((created(job) - offset + 0.01) / interval)].append(
            tag(job, "distributor")
        )
    assert buckets, f"no job of {distribution}"
    for bucket, creators in sorted(buckets.items()):
        assert len(set(creators)) == 1, f"interval {bucket} has jobs from {set(creators)}"
        assert len(creators) <= per_tick, f"interval {bucket} has {len(creators)} jobs"
    return {bucket: set(creators) for bucket, creators in buckets.items()}


def contenders(zk: KazooClient, distribution: str) -> list[str]:
    return zk.Election(election_path(distribution)).contenders()


def wait_contenders(zk: KazooClient, distribution: str, count: int, timeout: float = 30.0) -> None:
    """Wait until `count` processes have joined the election of `distribution`."""
    deadline = time.monotonic() + timeout
    while len(contenders(zk, distribution)) < count:
        assert time.monotonic() < deadline, f"{contenders(zk, distribution)} joined"
        time.sleep(0.05)


# -- elections -----------------------------------------------------------------------------------


def test_exactly_one_distributor_creates_jobs(
    admin_api: Api, start_distributor: Start, zk: KazooClient
) -> None:
    a, b = unique("dist-a"), unique("dist-b")
    first = start_distributor(a, "--distribution-include", "tick", "multi")
    second = start_distributor(b, "--distribution-include", "tick", "multi")
    leaders = {name: wait_leader([first, second], name) for name in ("tick", "multi")}
    for name, leader in leaders.items():
        wait_count(leader, distributed(name, 3 if name == "multi" else 1), 3)
    assert set(contenders(zk, "tick")) == {a, b}
    jobs = jobs_of(admin_api, [a, b])
    for name in ("tick", "multi"):
        creators = assert_one_distributor_per_interval(
            jobs, name, 1.0, per_tick=3 if name == "multi" else 1
        )
        leader_name = a if leaders[name] is first else b
        assert set().union(*creators.values()) == {leader_name}
    # Every multi tick created its three bodies.
    multi = [j for j in jobs if "distribution:multi" in j["tags"]]
    assert {t for j in multi for t in j["tags"] if t.startswith("multi:")} == {
        "multi:0",
        "multi:1",
        "multi:2",
    }


def test_kill_9_of_the_leader_fails_over_within_the_session_timeout(
    admin_api: Api, start_distributor: Start, zk: KazooClient
) -> None:
    a, b = unique("dist-a"), unique("dist-b")
    processes = [
        start_distributor(a, "--distribution-include", "tick"),
        start_distributor(b, "--distribution-include", "tick"),
    ]
    leader = wait_leader(processes, "tick")
    other = processes[1 - processes.index(leader)]
    wait_count(leader, distributed("tick"), 2)
    wait_contenders(zk, "tick", 2)
    killed_at = time.monotonic()
    leader.kill()
    other.wait_for_log("leader of tick:", timeout=SESSION_TIMEOUT + 10)
    failover = time.monotonic() - killed_at
    print(f"\nfailover after kill -9: {failover:.2f} s (session timeout {SESSION_TIMEOUT} s)")
    assert failover < SESSION_TIMEOUT + FAILOVER_MARGIN
    wait_count(other, distributed("tick"), 3)
    creators = assert_one_distributor_per_interval(jobs_of(admin_api, [a, b]), "tick", 1.0)
    assert set().union(*creators.values()) == {a, b}


def test_sigterm_leaves_the_elections_and_the_other_takes_over_at_once(
    admin_api: Api, start_distributor: Start, zk: KazooClient
) -> None:
    a, b = unique("dist-a"), unique("dist-b")
    # A long session timeout: a takeover faster than it proves the election was left.
    long_timeout = 30.0
    processes = [
        start_distributor(a, "--distribution-include", "tick", "multi", zk_timeout=long_timeout),
        start_distributor(b, "--distribution-include", "tick", "multi", zk_timeout=long_timeout),
    ]
    leader = wait_leader(processes, "tick")
    other = processes[1 - processes.index(leader)]
    wait_count(leader, distributed("tick"), 1)
    wait_contenders(zk, "tick", 2)
    stopped_at = time.monotonic()
    leader.signal(signal.SIGTERM)
    assert leader.wait(15) == 0
    other.wait_for_log("leader of tick:", timeout=long_timeout)
    other.wait_for_log("leader of multi:", timeout=long_timeout)
    takeover = time.monotonic() - stopped_at
    print(f"\ntakeover after SIGTERM: {takeover:.2f} s (session timeout {long_timeout:g} s)")
    assert takeover < 5.0
    assert "left election /election/tick" in leader.log()
    assert "Traceback" not in leader.log()
    leader_name = a if leader is processes[0] else b
    other_name = b if leader_name == a else a
    assert contenders(zk, "tick") == [other_name]
    wait_count(other, distributed("tick"), 2)
    assert_one_distributor_per_interval(jobs_of(admin_api, [a, b]), "tick", 1.0)


def test_a_leader_frozen_past_its_session_never_distributes_again(
    admin_api: Api, start_distributor: Start, zk: KazooClient
) -> None:
    """SIGSTOP the leader until its session expires: the other takes over; the thawed one
    finds its leadership gone before any tick, rejoins, and leads again later."""
    a, b = unique("dist-a"), unique("dist-b")
    processes = [
        start_distributor(a, "--distribution-include", "tick"),
        start_distributor(b, "--distribution-include", "tick"),
    ]
    frozen = wait_leader(processes, "tick")
    other = processes[1 - processes.index(frozen)]
    frozen_name = a if frozen is processes[0] else b
    wait_count(frozen, distributed("tick"), 1)
    wait_contenders(zk, "tick", 2)
    frozen.signal(signal.SIGSTOP)
    try:
        other.wait_for_log("leader of tick:", timeout=SESSION_TIMEOUT + 10)
        wait_count(other, distributed("tick"), 2)
    finally:
        thawed_at = time.time()
        frozen.signal(signal.SIGCONT)
    frozen.wait_for_log("no longer leader of tick: rejoining its election", timeout=15)
    wait_count(other, distributed("tick"), 4)
    jobs = jobs_of(admin_api, [a, b])
    late = [j for j in jobs if tag(j, "distributor") == frozen_name and created(j) > thawed_at]
    assert late == [], "the thawed leader distributed after losing its session"
    assert_one_distributor_per_interval(jobs, "tick", 1.0)
    # It rejoined: stopping the current leader hands the leadership back at once.
    other.signal(signal.SIGTERM)
    assert other.wait(15) == 0
    wait_count(frozen, "leader of tick:", 2, timeout=5)
    wait_count(frozen, distributed("tick"), count_in_log(frozen, distributed("tick")) + 1)


def test_distributions_in_the_executor_share_the_election(
    admin_api: Api, start_executor: Start, start_distributor: Start, zk: KazooClient
) -> None:
    executor_name, standalone = unique("exec"), unique("dist")
    executor = start_executor(
        "--name",
        executor_name,
        "--zk-timeout",
        str(SESSION_TIMEOUT),
        "--distributions",
        "--distribution-include",
        "tick",
    )
    executor.wait_for_log("leader of tick:")
    distributor = start_distributor(standalone, "--distribution-include", "tick")
    wait_contenders(zk, "tick", 2)
    wait_count(executor, distributed("tick"), 2)
    # The single binary runs what it distributes.
    first = jobs_of(admin_api, [executor_name])[0]
    deadline = time.monotonic() + 30
    while admin_api.get(first["id"]).data["state"] != "SUCCESS":
        assert time.monotonic() < deadline, "the distributed job did not run"
        time.sleep(0.1)
    executor.signal(signal.SIGTERM)
    distributor.wait_for_log("leader of tick:", timeout=5)
    assert executor.wait(30) == 0
    wait_count(distributor, distributed("tick"), 2)
    creators = assert_one_distributor_per_interval(
        jobs_of(admin_api, [executor_name, standalone]), "tick", 1.0
    )
    assert set().union(*creators.values()) == {executor_name, standalone}


# -- the loop ------------------------------------------------------------------------------------


def test_a_crashing_generator_is_restarted_with_back_off(
    admin_api: Api, start_distributor: Start, tmp_path: Path
) -> None:
    name = unique("dist")
    counter = tmp_path / "crashy-calls"
    process = start_distributor(
        name,
        "--distribution-include",
        "crashy",
        "tick",
        env={"CRASHY_COUNTER": str(counter), "CRASHY_FAILURES": "3"},
    )
    process.wait_for_log(distributed("crashy"), timeout=30)
    log = process.log()
    for failures, backoff in ((1, 1), (2, 2), (3, 4)):
        assert f"crashy: the generator crashed ({failures} in a row)" in log
        assert f"(back-off {backoff} s)" in log
    assert "crashy: the generator crashed (4 in a row)" not in log
    assert "RuntimeError: crashy fails on purpose (call 3)" in log
    assert counter.read_text() == "4"
    # tick, in the same process, never missed an interval meanwhile.
    ticks = sorted(
        created(j) for j in jobs_of(admin_api, [name]) if "distribution:tick" in j["tags"]
    )
    assert len(ticks) >= 5, log
    assert max(b - a for a, b in zip(ticks, ticks[1:], strict=False)) < 1.5


def test_a_failing_add_is_logged_and_the_loop_goes_on(
    admin_api: Api, start_distributor: Start
) -> None:
    name = unique("dist")
    process = start_distributor(name, "--distribution-include", "partly_bad")
    wait_count(process, "distributed 2 job(s) for partly_bad; 1 failed", 2)
    assert "partly_bad: adding a test_ok job failed: NuvlaError" in process.log()
    assert "generator crashed" not in process.log()
    assert len(jobs_of(admin_api, [name])) >= 4


def test_a_distribution_key_keeps_one_unfinished_job(
    admin_api: Api, start_distributor: Start
) -> None:
    """`keyed` yields the same job twice per tick under the key action:target: the job API
    adds it once and answers the holder after that, tick after tick, until it is final."""
    name = unique("dist")
    target = f"deployment/{uuid.uuid4()}"
    process = start_distributor(
        name, "--distribution-include", "keyed", env={"KEYED_TARGET": target}
    )
    wait_count(process, "distributed 0 job(s) for keyed; 2 already unfinished", 2)
    assert "distributed 1 job(s) for keyed; 1 already unfinished" in process.log()
    [job] = jobs_of(admin_api, [name])
    assert job["unique-key"] == f"test_ok:{target}"
    admin_api.edit(job["id"], {"state": "SUCCESS"})
    wait_count(process, "distributed 1 job(s) for keyed; 1 already unfinished", 2)
    jobs = jobs_of(admin_api, [name])
    assert len(jobs) == 2
    assert [j["state"] for j in jobs] == ["SUCCESS", "QUEUED"]


# -- options -------------------------------------------------------------------------------------


def test_include_exclude_and_interval_in_upstream_form(
    admin_api: Api, start_distributor: Start
) -> None:
    name = unique("dist")
    process = start_distributor(
        name,
        "--distribution-include",
        "tick",
        "multi",
        "--distribution-exclude",
        "multi",
        "crashy",
        "--distribution-interval",
        "tick:2",
        "multi:5",
    )
    wait_count(process, distributed("tick"), 3)
    log = process.log()
    assert "leader of tick: distributing every 2 s" in log
    for absent in ("multi", "crashy", "partly_bad", "test_ok"):
        assert f"distribution {absent} every" not in log
    ticks = [created(j) for j in jobs_of(admin_api, [name])]
    gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
    assert gaps and all(1.8 < gap < 2.2 for gap in gaps), gaps
    assert_one_distributor_per_interval(jobs_of(admin_api, [name]), "tick", 2.0)


def test_options_from_the_environment_and_the_one_line_form(
    admin_api: Api, start_distributor: Start
) -> None:
    name = unique("dist")
    process = start_distributor(
        name,
        env={
            "JOB_DISTRIBUTION_INCLUDE": "test_ok tick",
            "JOB_DISTRIBUTION_EXCLUDE": "tick",
            "JOB_DISTRIBUTION_INTERVAL": "test_ok:2",
        },
    )
    wait_count(process, distributed("test_ok"), 2)
    assert "leader of test_ok: distributing every 2 s" in process.log()
    assert "distribution tick every" not in process.log()
    jobs = jobs_of(admin_api, [name])
    assert {(j["action"], j["priority"], tag(j, "distribution")) for j in jobs} == {
        ("test_ok", 50, "test_ok")
    }


def run_cli(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a command line that must fail before reaching any server."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            module,
            "--api-url",
            "http://127.0.0.1:9",
            "--zk-hosts",
            "127.0.0.1:9",
            "--actions-path",
            str(TEST_ACTIONS),
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "culprit"),
    [
        (["--distribution-interval", "nope:5"], "nope"),
        (["--distribution-interval", "tick:abc"], "tick:abc"),
        (["--distribution-interval", "tick:1.5"], "tick:1.5"),
        (["--distribution-interval", "tick:0"], "tick:0"),
        (["--distribution-interval", "tick:-3"], "tick:-3"),
        (["--distribution-interval", "tick"], "tick"),
        (["--distribution-interval", "tick:5", "multi:x"], "multi:x"),
        (["--distribution-exclude", "tick", "nope"], "nope"),
        (["--distribution-include", "nope"], "nope"),
    ],
)
@pytest.mark.parametrize("module", ["nuvla_job.cli.distributor", "nuvla_job.cli.executor"])
def test_bad_distribution_options_are_usage_errors(
    module: str, args: list[str], culprit: str
) -> None:
    result = run_cli(module, *args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "Usage:" in result.stderr
    assert f"'{culprit}'" in result.stderr
    option = args[0]
    assert option in result.stderr


# -- the schedule and the option parsing, in process ---------------------------------------------


def test_ticks_fall_on_one_grid_whatever_the_start() -> None:
    offset = tick_offset("tick", 10.0)
    assert 0 <= offset < 10.0
    assert tick_offset("tick", 10.0) == offset  # the same in every process
    for now in (1000.0, 1000.0 + offset, 1003.7, 1009.99):
        tick = next_tick(now, 10.0, offset)
        assert now < tick <= now + 10.0
        assert (tick - offset) % 10.0 == pytest.approx(0.0, abs=1e-6)
    assert next_tick(1000.0 + offset, 10.0, offset) == 1010.0 + offset  # strictly after


def test_back_off_doubles_up_to_its_cap() -> None:
    assert [backoff_delay(n, 1.0, 60.0) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]


def test_selection_applies_include_exclude_and_intervals() -> None:
    known = {name: Distribution(name, 30.0, lambda api: []) for name in ("a", "b", "c")}
    assert [d.name for d in select(known)] == ["a", "b", "c"]
    chosen = select(known, include=["a,b"], exclude=["b"], intervals=["a:5", "c:7"])
    assert [(d.name, d.interval) for d in chosen] == [("a", 5.0)]
    assert known["a"].interval == 30.0  # the registered distribution is left alone
    with pytest.raises(SelectionError) as raised:
        select(known, intervals=["a:5", "b:0"])
    assert raised.value.option == "--distribution-interval"
    assert "'b:0'" in str(raised.value)
