"""The stack of `make up`: ZooKeeper, the job API, one executor and one distributor on this
machine, on the embedded defaults, started in that order and stopped in the reverse one.

Usage::

    stack = LocalStack(api_port=8200)
    stack.start()                # each part waits until it serves; stopping() is asked between
    print(stack.pids())          # {"zookeeper": ..., "job-api": ..., "executor": ..., ...}
    stack.stop()                 # by pid: SIGTERM, SIGKILL after a timeout; folders removed
    stack.kill()                 # from a signal handler during stop(): SIGKILL what is left

Every process leads a session of its own, so a terminal's Ctrl-C reaches only the command
holding the stack, which stops the processes in order: the engines first (the executor's
running jobs get ``grace_period`` seconds), then the job API, then ZooKeeper.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

from .jobapi import JobApiProcess
from .processes import EngineProcess, executor_process
from .zookeeper import ZooKeeperServer

# Seconds a process may take to stop after SIGTERM (the executor: beyond its grace period).
STOP_TIMEOUT = 10.0


class StackStopped(Exception):
    """A stop was asked for while the stack was starting."""


class LocalStack:
    """The four processes of a local stack; ``api_port`` None or 0: a free port."""

    def __init__(
        self,
        *,
        api_port: int | None = None,
        zk_port: int | None = None,
        concurrency: int = 100,
        grace_period: float = 10.0,
    ) -> None:
        self.concurrency = concurrency
        self.grace_period = grace_period
        self.api_port = api_port or None
        self.zookeeper = ZooKeeperServer(zk_port or None, own_session=True)
        self.job_api: JobApiProcess | None = None
        self.executor: EngineProcess | None = None
        self.distributor: EngineProcess | None = None
        self._killed = False

    @property
    def dashboard_url(self) -> str:
        assert self.job_api is not None
        return f"{self.job_api.endpoint}/dashboard"

    def start(self, stopping: Callable[[], bool] = lambda: False) -> None:
        """Start every part, each once the one before serves; :class:`StackStopped` when
        ``stopping()`` turns true between two of them (then :meth:`stop` what started)."""
        self.zookeeper.start()
        self._check(stopping)
        self.job_api = JobApiProcess(self.zookeeper.hosts, port=self.api_port, own_session=True)
        self.job_api.start()
        self._check(stopping)
        credentials = str(self.job_api.credentials_path)
        self.executor = executor_process(
            self.zookeeper.hosts,
            self.job_api.endpoint,
            credentials,
            "--concurrency",
            str(self.concurrency),
            "--grace-period",
            str(self.grace_period),
            "--name",
            "local-executor",
            actions_path=None,
            own_session=True,
        ).start()
        self.executor.wait_for_log("running up to")
        self._check(stopping)
        args = [
            "--zk-hosts",
            self.zookeeper.hosts,
            "--api-url",
            self.job_api.endpoint,
            "--api-credentials-file",
            credentials,
            "--name",
            "local-distributor",
        ]
        self.distributor = EngineProcess(
            "nuvla_job.cli.distributor", args, own_session=True
        ).start()
        # The scheduler is one of its distributions: delayed jobs run once it leads.
        self.distributor.wait_for_log("leader of scheduler:")
        self._check(stopping)

    def _check(self, stopping: Callable[[], bool]) -> None:
        if stopping() or self._killed:
            raise StackStopped

    def _parts(self) -> list[tuple[str, int | None]]:
        """(name, pid or None when not running), in start order."""
        parts: list[tuple[str, int | None]] = [("zookeeper", self.zookeeper.pid)]
        if self.job_api is not None:
            parts.append(("job-api", self.job_api.pid))
        for name, process in (("executor", self.executor), ("distributor", self.distributor)):
            if process is not None:
                parts.append((name, None if process.exited else process.pid))
        return parts

    def pids(self) -> dict[str, int]:
        """The running processes by name."""
        return {name: pid for name, pid in self._parts() if pid is not None}

    def exited(self) -> str | None:
        """The name of a started process that is no longer running, if any."""
        for name, pid in self._parts():
            if pid is None:
                return name
        return None

    def logs(self) -> dict[str, str]:
        """Each part's log file."""
        found = {"zookeeper": str(self.zookeeper.log_path)}
        if self.job_api is not None:
            found["job-api"] = str(self.job_api.log_path)
        for name, process in (("executor", self.executor), ("distributor", self.distributor)):
            if process is not None:
                found[name] = str(process.log_path)
        return found

    def stop(self) -> None:
        """Stop every part started, the last started first, and remove their folders."""
        if self.distributor is not None:
            self.distributor.close(STOP_TIMEOUT)
        if self.executor is not None:
            self.executor.close(self.grace_period + STOP_TIMEOUT)
        if self.job_api is not None:
            self.job_api.close()
        self.zookeeper.close()

    def kill(self) -> None:
        """SIGKILL every part still running (a second Ctrl-C): :meth:`stop`, under way or
        next, then reaps them and removes their folders. Safe in a signal handler: it only
        sends signals (waiting for a child there could deadlock with a wait under way)."""
        self._killed = True
        for pid in self.pids().values():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass  # it ended meanwhile
