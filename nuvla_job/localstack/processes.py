"""Engine processes (executor, distributor) started by tests or the quick start, stopped
by pid."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The directory holding the nuvla_job package, so children import this very copy.
REPO = Path(__file__).resolve().parents[2]
TEST_ACTIONS = REPO / "tests" / "actions"


def stop_process(process: subprocess.Popen, timeout: float) -> int:
    """Stop a child by pid: SIGCONT (a frozen process cannot handle SIGTERM), SIGTERM, and
    SIGKILL if it is still alive after ``timeout`` seconds. Returns its exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGCONT)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


class EngineProcess:
    """`python -m <module> <args>` with its output in a log file; stopped by pid."""

    def __init__(self, module: str, args: list[str], env: dict[str, str] | None = None) -> None:
        self.module = module
        self.args = args
        self.env = env or {}
        self.dir = Path(tempfile.mkdtemp(prefix="engine-"))
        self.log_path = self.dir / "process.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> EngineProcess:
        env = {**os.environ, "PYTHONPATH": str(REPO), **self.env}
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", self.module, *self.args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                env=env,
            )
        return self

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def signal(self, sig: int) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self._process is not None
        return self._process.wait(timeout)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit status."""
        if self._process is None:
            return None
        return stop_process(self._process, timeout)

    def kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def log(self) -> str:
        try:
            return self.log_path.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, text: str, timeout: float = 30.0) -> None:
        """Wait until `text` appears in the log (the process's own report of an event)."""
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if self._process is not None and self._process.poll() is not None:
                raise AssertionError(
                    f"process exited ({self._process.returncode}) before "
                    f"logging {text!r}:\n{self.log()[-3000:]}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{text!r} not logged within {timeout} s:\n{self.log()[-3000:]}"
                )
            time.sleep(0.05)


def executor_process(
    zk_hosts: str,
    api_url: str,
    credentials: str,
    *extra: str,
    env: dict[str, str] | None = None,
    actions_path: Path | None = TEST_ACTIONS,
) -> EngineProcess:
    """A `job-executor` process (not started) for the given stack."""
    args = [
        "--zk-hosts",
        zk_hosts,
        "--api-url",
        api_url,
        "--api-credentials-file",
        credentials,
        *extra,
    ]
    if actions_path is not None:
        args += ["--actions-path", str(actions_path)]
    return EngineProcess("nuvla_job.cli.executor", args, env)
