"""The real job API as a separate process on a free loopback port (tests, quick start).

Usage::

    server = JobApiProcess(zk_hosts)
    server.start()               # waits until /api/cloud-entry-point answers
    api = server.admin_api()     # a nuvla.api.Api logged in with the admin key
    server.stop()                # SIGTERM by pid, SIGKILL after a timeout
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import requests
from nuvla.api import Api

from .lifecycle import Service
from .ports import free_port
from .processes import ADDRESS_IN_USE, BIND_ATTEMPTS, child_env, stop_process


class JobApiClients:
    """Clients of a job API at ``endpoint``, and its ``job-api`` management commands on
    ``db``: for one process (:class:`JobApiProcess`) or several behind a balancer."""

    credentials_path: Path
    program: list[str]
    this_copy: bool
    db: Path | str

    @property
    def endpoint(self) -> str:
        raise NotImplementedError

    @property
    def tls(self) -> bool:
        raise NotImplementedError

    @property
    def log_paths(self) -> list[Path]:
        """The log of each process serving ``endpoint``."""
        raise NotImplementedError

    def wait_queue_connected(self, timeout: float = 30.0) -> None:
        raise NotImplementedError

    def credentials(self) -> dict[str, str]:
        return json.loads(self.credentials_path.read_text())

    def api(self) -> Api:
        """An anonymous client (no cookie file on disk)."""
        api = Api(endpoint=self.endpoint, insecure=True, persist_cookie=False)
        if self.tls:
            # requests lets REQUESTS_CA_BUNDLE override verify=False: ignore the environment.
            api.session.trust_env = False
        return api

    def admin_api(self) -> Api:
        api = self.api()
        creds = self.credentials()
        response = api.login_apikey(creds["key"], creds["secret"])
        assert response.status_code == 201, response.text
        return api

    def cli(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a `job-api` management subcommand on this server's database."""
        return subprocess.run(
            [*self.program, *args, "--db", str(self.db)],
            capture_output=True,
            text=True,
            input=input,
            env=child_env(this_copy=self.this_copy),
            timeout=60,
        )

    def user_api(self, username: str, password: str = "pw-Secret-1", *groups: str) -> Api:
        """Create a user through the CLI and return a client logged in as that user."""
        group_args = [a for g in groups for a in ("--group", g)]
        result = self.cli("add-user", username, "--password", password, *group_args)
        assert result.returncode == 0, result.stderr
        api = self.api()
        response = api.login_password(username, password)
        assert response.status_code == 201, response.text
        api.user_id = result.stdout.strip()
        return api


class BindFailed(RuntimeError):
    """The server exited because its port was taken."""


class JobApiProcess(JobApiClients, Service):
    """One `job-api serve` process with its own temporary database."""

    host = "127.0.0.1"

    def __init__(
        self,
        zk_hosts: str,
        *extra_args: str,
        start_timeout: float = 30.0,
        env: dict[str, str] | None = None,
        program: Sequence[str] | None = None,
        port: int | None = None,
        own_session: bool = False,
        db: str | None = None,
    ) -> None:
        """``port``: this one, or fail (default: a free one, another if it is taken first).
        ``own_session``: as for :class:`~.processes.EngineProcess`. ``db``: the ``--db``
        value (default: a SQLite file in its temporary folder), e.g. a PostgreSQL URL."""
        # The `job-api` command: this interpreter's module, or e.g. an installed console script.
        self.this_copy = not program
        self.program = list(program) if program else [sys.executable, "-m", "nuvla_job.cli.api"]
        self.zk_hosts = zk_hosts
        self.extra_args = list(extra_args)
        self.start_timeout = start_timeout
        self.env = env or {}
        self.base_dir = Path(tempfile.mkdtemp(prefix="job-api-test-"))
        self.db: Path | str = self.base_dir / "jobs.sqlite" if db is None else db
        self.credentials_path = self.base_dir / "admin-credentials.json"
        self.log_path = self.base_dir / "job-api.log"
        self.port_fixed = port is not None
        self.port = port if port is not None else free_port(self.host)
        self.own_session = own_session
        self._process: subprocess.Popen[bytes] | None = None
        self._starts = 0

    @property
    def tls(self) -> bool:
        return "--tls-cert" in self.extra_args or "JOB_API_TLS_CERT" in self.env

    @property
    def endpoint(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def log_paths(self) -> list[Path]:
        return [self.log_path]

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process and self._process.poll() is None else None

    def command(self) -> list[str]:
        return [
            *self.program,
            "serve",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--db",
            str(self.db),
            "--zk-hosts",
            self.zk_hosts,
            "--admin-credentials",
            str(self.credentials_path),
            *self.extra_args,
        ]

    def start(self, wait_queue: bool = True) -> None:
        """Start and wait until it answers (and, by default, is connected to ZooKeeper).

        The port from free_port() may be taken by another process before the server binds
        it: on its first start the server then moves to another port (at most
        BIND_ATTEMPTS tries), as ZooKeeperServer does; a restart keeps its port, which
        clients already know.
        """
        if self.pid:
            return
        attempts = 1 if (self._starts or self.port_fixed) else BIND_ATTEMPTS
        for attempt in range(attempts):
            try:
                self._spawn()
                self._wait_ready()
            except BindFailed:
                if attempt + 1 < attempts:
                    self.port = free_port(self.host)
                    continue
                raise
            break
        self._starts += 1
        if wait_queue:
            self.wait_queue_connected(self.start_timeout)

    def _spawn(self) -> None:
        env = child_env(self.env, this_copy=self.this_copy)
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.base_dir,
                env=env,
                start_new_session=self.own_session,
            )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        url = f"{self.endpoint}/api/cloud-entry-point"
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                failure = BindFailed if ADDRESS_IN_USE in self.log_tail(5) else RuntimeError
                raise failure(f"job API exited with {self._process.returncode}:\n{self.log_tail()}")
            try:
                # A test certificate is self-signed: nothing to verify it against.
                if requests.get(url, timeout=1, verify=not self.tls).status_code == 200:
                    return
            except requests.RequestException:
                pass  # not up yet; or another process holds the port (then ours exits)
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"job API did not answer within {self.start_timeout} s:\n{self.log_tail()}"
        )

    def wait_queue_connected(self, timeout: float = 30.0) -> None:
        """Wait until the server is connected to ZooKeeper again (``/api/health`` is 200)."""
        deadline = time.monotonic() + timeout
        url = f"{self.endpoint}/api/health"
        while requests.get(url, timeout=5, verify=not self.tls).status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError(f"job API not connected to ZooKeeper after {timeout} s")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop by pid (SIGTERM, then SIGKILL); returns the exit status."""
        process, self._process = self._process, None
        return None if process is None else stop_process(process, timeout)

    def kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text("utf-8", "replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""
