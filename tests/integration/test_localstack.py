"""The local stack's launchers (nuvla_job/localstack/): a lost race for a free port moves the
service to another port, and every process's temporary folder is removed when closed."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import requests

from nuvla_job.localstack import processes
from nuvla_job.localstack.processes import REPO
from tests.support.jobapi import JobApiProcess
from tests.support.processes import EngineProcess, executor_process, serving_on_free_port
from tests.support.zookeeper import ZooKeeperServer

pytest_plugins = ["pytester"]


@contextmanager
def taken(port: int) -> Iterator[None]:
    """Hold ``port`` on 127.0.0.1 as another process that won the race for it would."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        yield


def test_job_api_moves_to_another_port_when_its_port_is_taken(
    zookeeper: ZooKeeperServer,
) -> None:
    server = JobApiProcess(zookeeper.hosts)
    lost = server.port
    try:
        with taken(lost):
            server.start()
            assert server.port != lost
            assert "Address already in use" in server.log_path.read_text()
            url = f"{server.endpoint}/api/cloud-entry-point"
            assert requests.get(url, timeout=10).status_code == 200
    finally:
        server.close()
    assert not server.base_dir.exists()


def test_a_restart_keeps_the_port(zookeeper: ZooKeeperServer) -> None:
    with JobApiProcess(zookeeper.hosts) as server:
        port = server.port
        server.stop()
        server.start()
        assert server.port == port


def test_an_engine_process_that_lost_its_port_is_started_on_another(
    zookeeper: ZooKeeperServer, job_api: JobApiProcess, monkeypatch
) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    lost = holder.getsockname()[1]
    picks, real = [lost], processes.free_port
    # The first free port handed out is the one another process holds: the race, lost.
    monkeypatch.setattr(processes, "free_port", lambda: picks.pop() if picks else real())
    started: list[EngineProcess] = []

    def start(port: int) -> EngineProcess:
        process = executor_process(
            zookeeper.hosts,
            job_api.endpoint,
            str(job_api.credentials_path),
            "--metrics-port",
            str(port),
        ).start()
        started.append(process)
        return process

    try:
        process = serving_on_free_port(start, "running up to")
    finally:
        holder.close()
    assert len(started) == 2 and started[0].exited
    # It retried only because the first one reported "Address already in use"; that try
    # was closed at once.
    assert not started[0].dir.exists()
    assert process is started[1] and process.port not in (None, lost)
    metrics = requests.get(f"http://127.0.0.1:{process.port}/metrics", timeout=10)
    assert metrics.status_code == 200
    process.close()
    assert not process.dir.exists() and process.exited


def test_engine_processes_left_open_are_closed_after_each_test(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two tests of their own, run with this suite's conftest: the first leaves a process
    # running, the second finds it stopped and its folder gone (before any exit handler).
    pytester.makeconftest((REPO / "tests" / "conftest.py").read_text())
    pytester.makepyfile(
        """
        import sys

        from tests.support.processes import EngineProcess

        left = []

        def test_leaves_a_process_running():
            sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
            left.append(EngineProcess("sleeper", [], program=sleeper).start())
            assert not left[0].exited and left[0].dir.exists()

        def test_finds_it_closed():
            [process] = left
            assert process.exited and not process.dir.exists()
        """
    )
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the inner run imports this suite's tests/
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
