"""A real throw-away PostgreSQL server (tests, benchmarks) from Debian's `postgresql` package.

Usage::

    server = PostgresServer()
    server.start()                 # initdb in a temporary folder, serve on a free port
    url = server.url("jobs")       # postgresql://postgres@127.0.0.1:PORT/jobs
    server.create_database("jobs")
    server.close()                 # stop by pid (fast shutdown, SIGKILL after a timeout)

The cluster is made for speed, not safety: fsync, synchronous commit and full-page writes
are off (a crash of the machine may lose it; it is deleted at close anyway). Clients log in
as ``postgres`` without a password, over loopback TCP only.

Run as root, initdb and postgres (which refuse root) run as ``nobody``, the temporary folder
given to that user. ``POSTGRES_BIN`` names the folder of the binaries when they are not
under /usr/lib/postgresql/<version>/bin.
"""

from __future__ import annotations

import atexit
import grp
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from .lifecycle import Service
from .ports import free_port
from .processes import ADDRESS_IN_USE, BIND_ATTEMPTS, stop_process

DEBIAN_BINARIES = "/usr/lib/postgresql/*/bin"
# The unprivileged account a root caller runs the server as.
UNPRIVILEGED = ("nobody", "nogroup")
SUPERUSER = "postgres"
_READY = "database system is ready to accept connections"
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class PostgresNotAvailable(RuntimeError):
    """The PostgreSQL server binaries are not installed."""


class PostgresStartError(RuntimeError):
    """initdb failed, or the server died or never became ready."""


def find_binaries() -> Path:
    """The folder holding initdb and postgres: $POSTGRES_BIN, or Debian's newest version."""
    override = os.environ.get("POSTGRES_BIN")
    candidates = [Path(override)] if override else []
    versions = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(versions, key=lambda p: _version(p.parent.name), reverse=True)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "postgres").is_file():
            return folder
    raise PostgresNotAvailable(
        "PostgreSQL's initdb is not installed; install it with `apt-get install postgresql` "
        "(or set POSTGRES_BIN to the folder of initdb and postgres)"
    )


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", name))


def check_name(name: str) -> str:
    """A database name safe to write into SQL as it is (lower-case letters, digits, _)."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"not a plain database name: {name!r}")
    return name


class PostgresServer(Service):
    """One PostgreSQL server on 127.0.0.1 with its cluster in a private temporary folder."""

    host = "127.0.0.1"
    _open: set[PostgresServer] = set()

    def __init__(self, start_timeout: float = 60.0, max_connections: int = 200) -> None:
        self.start_timeout = start_timeout
        self.max_connections = max_connections
        self.bin = find_binaries()
        self.base_dir = Path(tempfile.mkdtemp(prefix="postgres-test-"))
        self.data_dir = self.base_dir / "data"
        self.log_path = self.base_dir / "postgres.log"
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._run_as: tuple[int, int] | None = None
        if os.geteuid() == 0:
            user, group = UNPRIVILEGED
            self._run_as = (pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid)
            os.chown(self.base_dir, *self._run_as)
        PostgresServer._open.add(self)

    # -- processes --------------------------------------------------------------------------

    def _command(self, program: str, *args: str) -> list[str]:
        command = [str(self.bin / program), *args]
        if self._run_as is None:
            return command
        uid, gid = self._run_as
        # setpriv execs the program: the pid we hold is the server's own.
        return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *command]

    def _initdb(self) -> None:
        result = subprocess.run(
            self._command(
                "initdb",
                "--pgdata",
                str(self.data_dir),
                "--username",
                SUPERUSER,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--no-locale",
                "--no-sync",  # nothing here needs to survive a crash of the machine
            ),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            cwd=self.base_dir,
            timeout=self.start_timeout,
        )
        if result.returncode != 0:
            raise PostgresStartError(f"initdb failed ({result.returncode}):\n{result.stderr}")

    def start(self) -> PostgresServer:
        """Create the cluster (first time) and start the server; wait until it accepts
        connections. Another process may take the free port first: then another is tried."""
        if self._process is not None and self._process.poll() is None:
            return self
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        for attempt in range(BIND_ATTEMPTS):
            self.port = self.port if self.port and attempt == 0 else free_port(self.host)
            self._spawn()
            try:
                self._wait_ready()
                return self
            except PostgresStartError:
                lost_race = ADDRESS_IN_USE in self.log_tail() or "could not bind" in self.log_tail()
                if not lost_race or attempt + 1 == BIND_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    def _spawn(self) -> None:
        settings = {
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": str(self.base_dir),
            "max_connections": str(self.max_connections),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "64MB",
            "logging_collector": "off",
        }
        options = [arg for name, value in settings.items() for arg in ("-c", f"{name}={value}")]
        # The log file is opened by us (root may write where `nobody` cannot).
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                self._command("postgres", "-D", str(self.data_dir), *options),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.base_dir,
            )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        offset = self._log_size()
        while _READY not in self._log_since(offset):
            assert self._process is not None
            if self._process.poll() is not None:
                raise PostgresStartError(
                    f"postgres exited with {self._process.returncode}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise PostgresStartError(
                    f"postgres not ready within {self.start_timeout} s:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def _log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(offset)
                return log.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process and self._process.poll() is None else None

    def stop(self, timeout: float = 20.0) -> int | None:
        """Fast shutdown by pid (SIGINT: clients are disconnected), SIGKILL after
        ``timeout``; returns the exit status."""
        process, self._process = self._process, None
        return None if process is None else stop_process(process, timeout, signal.SIGINT)

    def kill(self) -> None:
        """SIGKILL by pid (a crash); the cluster stays for a restart."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._process = None

    def restart(self) -> None:
        """Stop and start again on the same port with the same data."""
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)
        PostgresServer._open.discard(self)

    @classmethod
    def close_all(cls) -> None:
        for server in list(cls._open):
            server.close()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- databases --------------------------------------------------------------------------

    def url(self, database: str = SUPERUSER) -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{check_name(database)}"

    def execute(self, *statements: str, database: str = SUPERUSER) -> None:
        """Run statements outside a transaction (CREATE/DROP DATABASE cannot run in one)."""
        import psycopg  # the `postgresql` extra: only callers of this method need it

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement.encode())

    def create_database(self, name: str, template: str | None = None) -> str:
        """A new empty database (a copy of ``template`` when given); returns its URL."""
        copy = f" TEMPLATE {check_name(template)}" if template else ""
        self.execute(f"CREATE DATABASE {check_name(name)}{copy}")
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self.execute(f"DROP DATABASE IF EXISTS {check_name(name)} WITH (FORCE)")


atexit.register(PostgresServer.close_all)
