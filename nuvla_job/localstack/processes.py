"""Engine processes (executor, distributor) started by tests or the quick start, stopped
by pid."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .ports import free_port

# The directory holding the nuvla_job package: a source checkout (tests, `make run`), or
# site-packages when installed.
REPO = Path(__file__).resolve().parents[2]
# In a checkout, children get it on PYTHONPATH so that they import this very copy; an installed
# package is found by the interpreter itself, and the checkout-only parts are absent.
IN_CHECKOUT = (REPO / "pyproject.toml").is_file()
TEST_ACTIONS: Path | None = REPO / "tests" / "actions" if IN_CHECKOUT else None


def child_env(*layers: dict[str, str], this_copy: bool = True) -> dict[str, str]:
    """This process's environment for a child, with ``layers`` on top (later ones win).

    ``this_copy``: the child is this interpreter running the package (``-m``); False for
    a program of another install, which imports that install only (no PYTHONPATH).
    """
    env = dict(os.environ)
    if not this_copy:
        env.pop("PYTHONPATH", None)
    elif IN_CHECKOUT:
        env["PYTHONPATH"] = str(REPO)
    for layer in layers:
        env.update(layer)
    return env


def stop_process(
    process: subprocess.Popen, timeout: float, sig: signal.Signals = signal.SIGTERM
) -> int:
    """Stop a child by pid: SIGCONT (a frozen process cannot handle SIGTERM), ``sig``, and
    SIGKILL if it is still alive after ``timeout`` seconds. Returns its exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGCONT)
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


class EngineProcess:
    """`python -m <module> <args>` with its output in a log file; stopped by pid.

    ``program``: run this command instead of the module (e.g. an installed console script).
    Each has a temporary folder (its working directory and log), removed by :meth:`close`;
    :meth:`close_all` closes every one not closed yet (the tests call it after each test,
    and it runs at exit), so a caller may read the log after :meth:`stop`.
    ``own_session``: the child leads a session of its own, so a terminal's Ctrl-C reaches
    only the caller, which then stops its children in its own order (`make up`).
    """

    _open: set[EngineProcess] = set()
    # The port it serves on, when started by serving_on_free_port().
    port: int | None = None

    def __init__(
        self,
        module: str,
        args: list[str],
        env: dict[str, str] | None = None,
        program: Sequence[str] | None = None,
        own_session: bool = False,
    ) -> None:
        self.module = module
        self.own_session = own_session
        self.args = args
        self.env = env or {}
        self.this_copy = not program
        self.program = list(program) if program else [sys.executable, "-m", module]
        self.dir = Path(tempfile.mkdtemp(prefix="engine-"))
        self.log_path = self.dir / "process.log"
        self._process: subprocess.Popen[bytes] | None = None
        EngineProcess._open.add(self)

    def start(self) -> EngineProcess:
        env = child_env(self.env, this_copy=self.this_copy)
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [*self.program, *self.args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                env=env,
                start_new_session=self.own_session,
            )
        return self

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    @property
    def exited(self) -> bool:
        return self._process is not None and self._process.poll() is not None

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

    def close(self, timeout: float = 10.0) -> None:
        """Stop it (if running) and remove its folder, log included."""
        self.stop(timeout)
        shutil.rmtree(self.dir, ignore_errors=True)
        EngineProcess._open.discard(self)

    @classmethod
    def close_all(cls) -> None:
        for process in list(cls._open):
            process.close()

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


atexit.register(EngineProcess.close_all)

# How many ports serving_on_free_port() tries, and a server's report of a lost race for one.
BIND_ATTEMPTS = 3
ADDRESS_IN_USE = "Address already in use"


def serving_on_free_port(
    start: Callable[[int], EngineProcess], ready: str, attempts: int = BIND_ATTEMPTS
) -> EngineProcess:
    """``start(port)`` a process that serves on a port from free_port(), and wait until it
    logs ``ready``; its ``port`` is set.

    Another process may take the port between free_port() and the child's bind: the child
    then exits reporting "Address already in use", and another port is tried.
    """
    while True:
        attempts -= 1
        port = free_port()
        process = start(port)
        try:
            process.wait_for_log(ready)
        except AssertionError:
            if attempts > 0 and process.exited and ADDRESS_IN_USE in process.log():
                process.close()
                continue
            raise
        process.port = port
        return process


def executor_process(
    zk_hosts: str,
    api_url: str,
    credentials: str,
    *extra: str,
    env: dict[str, str] | None = None,
    actions_path: Path | None = TEST_ACTIONS,
    own_session: bool = False,
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
    return EngineProcess("nuvla_job.cli.executor", args, env, own_session=own_session)
