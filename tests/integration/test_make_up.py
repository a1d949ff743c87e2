"""`make up` (python -m nuvla_job.cli.up): the stack starts, the snippet it prints works when
pasted into Python, and Ctrl-C or SIGTERM stops every process it reported, by pid.

Each test runs the real command: ZooKeeper, the job API, an executor and a distributor.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from nuvla_job.client import Client
from nuvla_job.localstack.processes import child_env
from tests.support.waiting import wait_for

START_TIMEOUT = 90.0


class Up:
    """The command running, its output gathered line by line by a thread."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "nuvla_job.cli.up", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=child_env(),
            # Its own process group, as a shell's foreground job: Ctrl-C is sent to it.
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for_output(self, text: str, timeout: float = START_TIMEOUT) -> str:
        def seen() -> bool:
            if self.process.poll() is not None and text not in self.output:
                raise AssertionError(f"exited {self.process.returncode}:\n{self.output}")
            return text in self.output

        wait_for(seen, f"{text!r} in the output of make up", timeout)
        return self.output

    def wait_up(self) -> dict[str, int]:
        """Wait for the banner; the pids it reports."""
        self.wait_for_output("export JOB_API_URL=")
        match = re.search(r"^  pids: +(.+)$", self.output, re.MULTILINE)
        assert match, self.output
        return {name: int(pid) for name, pid in re.findall(r"([\w-]+)=(\d+)", match.group(1))}

    def value(self, label: str) -> str:
        match = re.search(rf"^  {label}: +(\S+)$", self.output, re.MULTILINE)
        assert match, self.output
        return match.group(1)

    def snippet(self) -> str:
        """The Python the banner says to paste."""
        match = re.search(r"\(\.venv/bin/python\):\n\n(.+?)\n\nOr from a shell", self.output, re.S)
        assert match, self.output
        return match.group(1) + "\n"

    def finish(self, timeout: float) -> int:
        code = self.process.wait(timeout)
        self._reader.join(5)
        return code

    def close(self) -> None:
        """After a failed test: stop it as Ctrl-C would, then for good."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.send_signal(signal.SIGINT)  # the command's own kill of the rest
                self.process.wait(30)


@pytest.fixture
def up_factory() -> Iterator[type[Up]]:
    started: list[Up] = []

    class Started(Up):
        def __init__(self, *args: str) -> None:
            super().__init__(*args)
            started.append(self)

    yield Started
    for up in started:
        up.close()


def alive(pid: int) -> bool:
    """Whether the process is still there (not even a zombie waiting to be reaped)."""
    return Path(f"/proc/{pid}").exists()


def test_up_starts_the_stack_the_snippet_runs_a_job_and_ctrl_c_stops_everything(
    up_factory: type[Up],
) -> None:
    up = up_factory("--port", "0")
    pids = up.wait_up()
    assert set(pids) == {"zookeeper", "job-api", "executor", "distributor"}
    assert all(alive(pid) for pid in pids.values())
    dashboard = up.value("dashboard")
    assert requests.get(dashboard, timeout=10).status_code == 200
    credentials = Path(up.value("admin credentials"))
    assert credentials.stat().st_mode & 0o077 == 0  # the admin key is the owner's only

    # Pasted at the interactive prompt, line by line, as a user would.
    pasted = subprocess.run(
        [sys.executable, "-i"],
        input=up.snippet(),
        capture_output=True,
        text=True,
        timeout=90,
        env=child_env(),
    )
    out = pasted.stdout + pasted.stderr
    assert "Traceback" not in out and "Error" not in out, out
    assert "RUNNING 0 None" in out, out  # QUEUED too, unless the executor was quicker
    assert re.search(r"SUCCESS 0 \d+\n", pasted.stdout), out  # state, return code, duration

    os.killpg(up.process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    assert up.finish(60) == 0, up.output
    assert "stopped" in up.output
    assert [pid for pid in pids.values() if alive(pid)] == []
    assert not credentials.exists()  # its folder went with the job API


def test_a_second_signal_kills_what_is_still_stopping(up_factory: type[Up]) -> None:
    # Running jobs may take the grace period (60 s here) to end once stopping begins.
    up = up_factory("--port", "0", "--grace-period", "60")
    pids = up.wait_up()
    with Client.from_credentials_file(up.value("admin credentials")) as client:
        job = client.submit("sleep", payload={"seconds": 300})
        wait_for(lambda: job.refresh().state == "RUNNING", "the long job RUNNING", 60)
    up.process.send_signal(signal.SIGTERM)
    up.wait_for_output("SIGTERM: stopping", 30)
    assert up.process.poll() is None  # the executor waits for its running job
    began = time.monotonic()
    up.process.send_signal(signal.SIGINT)
    assert up.finish(30) == 0, up.output
    assert time.monotonic() - began < 20  # not the 60 s grace period
    assert "SIGINT again: killing" in up.output
    assert [pid for pid in pids.values() if alive(pid)] == []


def test_a_taken_port_is_a_clear_error_and_leaves_nothing(up_factory: type[Up]) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        up = up_factory("--port", str(port))
        assert up.finish(START_TIMEOUT) == 1, up.output
    assert f"port {port} is taken" in up.output
    assert "--port 0" in up.output
    assert "Traceback" not in up.output
    started = re.search(r"^stopping (.+)$", up.output, re.MULTILINE)
    assert started, up.output  # ZooKeeper had started: it is stopped again
    for pid in re.findall(r"=(\d+)", started.group(1)):
        assert not alive(int(pid))


def test_ctrl_c_during_the_start_stops_what_had_started(up_factory: type[Up]) -> None:
    up = up_factory("--port", "0")
    up.wait_for_output("starting ZooKeeper")  # ZooKeeper's JVM takes seconds to serve
    up.process.send_signal(signal.SIGINT)
    assert up.finish(START_TIMEOUT) == 0, up.output
    assert "SIGINT: stopping" in up.output
    assert "export JOB_API_URL=" not in up.output  # it never reported a running stack
    assert "Traceback" not in up.output
    started = re.search(r"^stopping (.+)$", up.output, re.MULTILINE)
    assert started, up.output  # at least ZooKeeper had started: it is stopped again
    pids = [int(pid) for pid in re.findall(r"=(\d+)", started.group(1))]
    assert pids and [pid for pid in pids if alive(pid)] == []
    assert up.output.rstrip().endswith("stopped")
