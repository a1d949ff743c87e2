"""A real standalone ZooKeeper (tests, quick start, benchmarks) from Debian's jars.

Usage::

    server = ZooKeeperServer()
    server.start()            # waits until it answers `ruok` and serves requests
    client = KazooClient(hosts=server.hosts)
    server.restart()          # same port, same data dir: "ZooKeeper down, then back"
    server.close()            # stop and delete the temporary directory

With ``tls=ZooKeeperTls(keystore, truststore)`` the server also listens for TLS clients on
``server.secure_port`` (``server.secure_hosts``); the plain port stays for readiness checks.

Environment overrides (for machines where ZooKeeper is not the Debian package):
``ZOOKEEPER_JAVA_DIR`` (where the jars are, default /usr/share/java), ``ZOOKEEPER_CLASSPATH``
(a complete classpath, used as is) and ``JAVA`` (the java binary).
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .lifecycle import Service
from .ports import free_port
from .processes import stop_process

MAIN_CLASS = "org.apache.zookeeper.server.ZooKeeperServerMain"
DEFAULT_JAVA_DIR = "/usr/share/java"

# Each group contributes every distinct jar its globs match. The Debian zookeeper.jar also has a
# manifest Class-Path, but we list what the server needs explicitly so a differently packaged jar
# set still works.
_REQUIRED_GROUPS: tuple[tuple[str, ...], ...] = (
    ("zookeeper.jar", "zookeeper-[0-9]*.jar"),  # not -it, -recipes-*, -contrib-*
    ("zookeeper-jute.jar", "zookeeper-jute-[0-9]*.jar"),
    ("slf4j-api.jar", "slf4j-api-[0-9]*.jar"),
)
# The netty modules the server (NettyServerCnxnFactory, X509Util) and those modules depend on;
# not netty-all, an aggregate that would put two copies of every class on the classpath.
_NETTY_MODULES = (
    "buffer",
    "codec",
    "common",
    "handler",
    "resolver",
    "transport",
    "transport-native-epoll",
    "transport-native-unix-common",
)
_OPTIONAL_GROUPS: tuple[tuple[str, ...], ...] = tuple(
    (f"{name}.jar", f"{name}-[0-9]*.jar")
    for name in (
        *(f"netty-{module}" for module in _NETTY_MODULES),
        "metrics-core",
        "commons-cli",
        "commons-io",
        "snappy-java",
    )
)
# Exactly one slf4j binding, first found wins. slf4j-simple needs no config file and writes to
# stderr, which goes to our log file; jdk14 also logs to stderr by default; nop is silent.
_SLF4J_BINDINGS: tuple[str, ...] = ("slf4j-simple", "slf4j-jdk14", "slf4j-nop")

_VERSION_SUFFIX = re.compile(r"-\d[^/]*\.jar$")


@dataclass(frozen=True)
class ZooKeeperTls:
    """PEM files for the secure client port (ZooKeeper reads PEM key and trust stores)."""

    keystore: str  # the server's private key (PKCS#8) followed by its certificate chain
    truststore: str  # the CA certificates that client certificates must chain to
    client_auth: str = "need"  # need | want | none: whether clients must show a certificate


class ZooKeeperNotAvailable(RuntimeError):
    """Java or the ZooKeeper jars are missing."""


class ZooKeeperStartError(RuntimeError):
    """The server process died or never became ready."""


# A local server is small and short-lived: the serial collector and the quick (C1) compiler
# alone cost it a third less CPU per request than the JVM's defaults tuned for big servers,
# which matters on a laptop running ZooKeeper, the job API and the engine side by side.
DEFAULT_JVM_ARGS = ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")


def _jar_key(path: Path) -> str:
    # "zookeeper-3.8.0.jar" and "zookeeper.jar" are the same jar (Debian symlinks one to the
    # other); the key is the unversioned name.
    return _VERSION_SUFFIX.sub(".jar", path.name)


def _pick(java_dir: Path, patterns: Iterable[str]) -> list[Path]:
    """Jars matching `patterns`, one per unversioned name, preferring the unversioned file."""
    by_key: dict[str, Path] = {}
    seen_real: set[Path] = set()
    candidates = {p for pattern in patterns for p in java_dir.glob(pattern)}
    # Unversioned names first; among versioned copies, the highest version (roughly).
    ordered = sorted(candidates, key=lambda p: p.name, reverse=True)
    ordered.sort(key=lambda p: p.name != _jar_key(p))
    for path in ordered:
        if not path.is_file():
            continue
        real = path.resolve()
        key = _jar_key(path)
        if real in seen_real or key in by_key:
            continue
        seen_real.add(real)
        by_key[key] = path
    return [by_key[k] for k in sorted(by_key)]


def build_classpath(java_dir: str | os.PathLike[str] | None = None) -> str:
    """The classpath for ZooKeeperServerMain from the jars installed in `java_dir`."""
    override = os.environ.get("ZOOKEEPER_CLASSPATH")
    if override:
        return override
    directory = Path(java_dir or os.environ.get("ZOOKEEPER_JAVA_DIR", DEFAULT_JAVA_DIR))
    jars: list[Path] = []
    for patterns in _REQUIRED_GROUPS:
        found = _pick(directory, patterns)
        if not found:
            raise ZooKeeperNotAvailable(
                f"no {patterns[0]} in {directory}; install it with "
                "`apt-get install zookeeper` (or set ZOOKEEPER_JAVA_DIR / ZOOKEEPER_CLASSPATH)"
            )
        jars.extend(found)
    for binding in _SLF4J_BINDINGS:
        found = _pick(directory, (f"{binding}.jar", f"{binding}-[0-9]*.jar"))
        if found:
            jars.append(found[0])
            break
    for patterns in _OPTIONAL_GROUPS:
        jars.extend(_pick(directory, patterns))
    return os.pathsep.join(str(j) for j in jars)


def find_java() -> str:
    """The java binary: $JAVA, $JAVA_HOME/bin/java, or java on PATH."""
    candidates = [os.environ.get("JAVA")]
    if os.environ.get("JAVA_HOME"):
        candidates.append(os.path.join(os.environ["JAVA_HOME"], "bin", "java"))
    candidates.append(shutil.which("java"))
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise ZooKeeperNotAvailable("java not found; install a JRE (apt-get install default-jre)")


def four_letter_word(host: str, port: int, command: str, timeout: float = 2.0) -> str:
    """Send a ZooKeeper four-letter command and return the reply ('' if nothing answered)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(command.encode("ascii"))
            chunks = []
            while chunk := sock.recv(65536):  # the server closes after replying
                chunks.append(chunk)
    except OSError:
        return ""
    return b"".join(chunks).decode("utf-8", "replace")


class ZooKeeperServer(Service):
    """One standalone ZooKeeper process on 127.0.0.1 with a private temporary directory.

    The port and the data directory are fixed at construction and kept across `restart()`,
    so clients can reconnect and find their data. Session timeouts can be short: tickTime is
    500 ms and sessions may ask for anything between 1 s and 60 s.
    """

    host = "127.0.0.1"
    # The JVM entry point; an ensemble member (localstack/ensemble.py) runs QuorumPeerMain.
    main_class = MAIN_CLASS

    def __init__(
        self,
        port: int | None = None,
        *,
        tick_time_ms: int = 500,
        min_session_timeout_ms: int = 1000,
        max_session_timeout_ms: int = 60000,
        extra_config: Mapping[str, str] | None = None,
        jvm_args: Iterable[str] = (),
        log_level: str = "info",
        start_timeout: float = 30.0,
        base_dir: str | os.PathLike[str] | None = None,
        tls: ZooKeeperTls | None = None,
        own_session: bool = False,
    ) -> None:
        # own_session: as for processes.EngineProcess (a terminal's Ctrl-C skips the JVM).
        self.own_session = own_session
        self._port_fixed = port is not None
        self._port = port if port is not None else free_port(self.host)
        self.tls = tls
        self._secure_port = free_port(self.host) if tls else None
        self.tick_time_ms = tick_time_ms
        self.min_session_timeout_ms = min_session_timeout_ms
        self.max_session_timeout_ms = max_session_timeout_ms
        self.extra_config = dict(extra_config or {})
        self.jvm_args = list(jvm_args)
        self.log_level = log_level
        self.start_timeout = start_timeout
        self.base_dir = Path(tempfile.mkdtemp(prefix="zk-test-", dir=base_dir))
        self.data_dir = self.base_dir / "data"
        self.data_dir.mkdir()
        self.config_path = self.base_dir / "zoo.cfg"
        self.log_path = self.base_dir / "zookeeper.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._starts = 0

    # -- properties -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def hosts(self) -> str:
        """The connection string for clients, "127.0.0.1:PORT"."""
        return f"{self.host}:{self._port}"

    @property
    def secure_port(self) -> int | None:
        """The TLS client port (None without `tls`)."""
        return self._secure_port

    @property
    def secure_hosts(self) -> str:
        """The connection string for TLS clients, "127.0.0.1:SECURE_PORT"."""
        if self._secure_port is None:
            raise ValueError("this ZooKeeperServer was made without tls")
        return f"{self.host}:{self._secure_port}"

    @property
    def pid(self) -> int | None:
        """The pid of the running server process, None when stopped."""
        return self._process.pid if self.running and self._process else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the server and wait until it serves requests; no-op if already running."""
        if self.running:
            return
        attempts = 1 if (self._port_fixed or self._starts) else 3
        for attempt in range(attempts):
            try:
                self._spawn()
                self._wait_ready()
            except ZooKeeperStartError:
                self._reap()
                # free_port() can race with another process grabbing the port; on the very
                # first start we may still move to another one (never on restart).
                if attempt + 1 < attempts and "Address already in use" in self.log_tail(200):
                    self._port = free_port(self.host)
                    if self.tls:
                        self._secure_port = free_port(self.host)
                    continue
                raise
            break
        self._starts += 1

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server: SIGTERM, then SIGKILL if it is still alive after `timeout`."""
        if self._process is not None:
            stop_process(self._process, timeout)
        self._reap()

    def kill(self) -> None:
        """Crash the server (SIGKILL): no clean shutdown, like a power cut of the process."""
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
        self._reap()

    def restart(self, down_for: float = 0.0, timeout: float = 10.0) -> None:
        """Stop, stay down `down_for` seconds, start again on the same port and data dir."""
        self.stop(timeout)
        if down_for > 0:
            time.sleep(down_for)
        self.start()

    def close(self, remove_files: bool = True) -> None:
        """Stop the server and (by default) delete its temporary directory."""
        self.stop()
        if remove_files:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    # -- diagnostics ------------------------------------------------------------------------

    def four_letter_word(self, command: str, timeout: float = 2.0) -> str:
        """Send a four-letter command (ruok, srvr, mntr, cons, ...) and return the reply."""
        return four_letter_word(self.host, self._port, command, timeout)

    def log_tail(self, lines: int = 40) -> str:
        """The last `lines` lines of the server log (all starts are appended to one file)."""
        try:
            text = self.log_path.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"<ZooKeeperServer {self.hosts} {state} dir={self.base_dir}>"

    # -- internals --------------------------------------------------------------------------

    def _write_config(self) -> None:
        config = {
            "tickTime": str(self.tick_time_ms),
            "dataDir": str(self.data_dir),
            "clientPort": str(self._port),
            "clientPortAddress": self.host,
            "minSessionTimeout": str(self.min_session_timeout_ms),
            # Without this, the maximum is 20 * tickTime = 10 s and longer client timeouts
            # are silently cut down.
            "maxSessionTimeout": str(self.max_session_timeout_ms),
            "maxClientCnxns": "0",  # many clients from 127.0.0.1 (default limit is 60)
            "admin.enableServer": "false",  # no Jetty on the classpath, no port 8080
            "4lw.commands.whitelist": "*",
            # Acknowledged writes still reach the OS (they survive kill -9), we only skip
            # fsync, which makes writes orders of magnitude faster on CI disks.
            "forceSync": "no",
        }
        if self.tls:
            config["secureClientPort"] = str(self._secure_port)
            config["secureClientPortAddress"] = self.host
        config.update(self.extra_config)
        lines = [f"{key}={value}" for key, value in config.items()]
        self.config_path.write_text("\n".join(lines) + "\n", "utf-8")

    def _command(self) -> list[str]:
        return [
            find_java(),
            *DEFAULT_JVM_ARGS,
            *self.jvm_args,
            # The config file turns unknown keys into these properties too; setting them
            # here as well keeps them effective if a future version stops doing that.
            "-Dzookeeper.admin.enableServer=false",
            "-Dzookeeper.4lw.commands.whitelist=*",
            "-Dzookeeper.jmx.log4j.disable=true",
            *self._tls_properties(),
            f"-Dorg.slf4j.simpleLogger.defaultLogLevel={self.log_level}",
            "-Dorg.slf4j.simpleLogger.showDateTime=true",
            "-Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS",
            "-cp",
            build_classpath(),
            self.main_class,
            str(self.config_path),
        ]

    def _tls_properties(self) -> list[str]:
        if not self.tls:
            return []
        return [
            # Only the Netty connection factory serves TLS.
            "-Dzookeeper.serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory",
            f"-Dzookeeper.ssl.keyStore.location={self.tls.keystore}",
            "-Dzookeeper.ssl.keyStore.type=PEM",
            f"-Dzookeeper.ssl.trustStore.location={self.tls.truststore}",
            "-Dzookeeper.ssl.trustStore.type=PEM",
            f"-Dzookeeper.ssl.clientAuth={self.tls.client_auth}",
            # Without a registered x509 provider the server drops TLS clients after the
            # handshake ("X509 Auth provider not found").
            "-Dzookeeper.authProvider.x509="
            "org.apache.zookeeper.server.auth.X509AuthenticationProvider",
        ]

    def _secure_port_open(self) -> bool:
        if self._secure_port is None:
            return True
        try:
            with socket.create_connection((self.host, self._secure_port), timeout=1.0):
                return True
        except OSError:
            return False

    def _spawn(self) -> None:
        self._write_config()
        command = self._command()
        with open(self.log_path, "ab") as log:
            stamp = time.strftime("%H:%M:%S")
            log.write(f"==== {stamp} starting ZooKeeper on {self.hosts} ====\n".encode())
            log.flush()
            # The child keeps its own copy of the log file descriptor.
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.base_dir,
                start_new_session=self.own_session,
            )
        # Safety net for interpreters that exit without running fixture teardown.
        atexit.register(self.stop)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise ZooKeeperStartError(
                    f"ZooKeeper exited with status {self._process.returncode} during start; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            # `ruok` answers as soon as the socket is up, before the database is loaded;
            # `srvr` reports a Mode only once requests are being served.
            if (
                self.four_letter_word("ruok", 1.0) == "imok"
                and "Mode:" in self.four_letter_word("srvr", 1.0)
                and self._secure_port_open()
            ):
                return
            time.sleep(0.05)
        self.kill()
        raise ZooKeeperStartError(
            f"ZooKeeper did not answer on {self.hosts} within {self.start_timeout:.0f} s; "
            f"log {self.log_path}:\n{self.log_tail()}"
        )

    def _reap(self) -> None:
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
            self._process.wait()
            self._process = None
        atexit.unregister(self.stop)
