"""Assembling and running the job API: store, identities, ZooKeeper, the WSGI server."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import gevent
import gevent.event
import orjson
from gevent import ssl
from gevent.pool import Pool
from gevent.pywsgi import WSGIHandler, WSGIServer
from kazoo.client import KazooClient
from kazoo.exceptions import KazooException
from kazoo.protocol.states import KazooState

from ..zk import make_client
from ..zk_security import ZkAccessDenied, ZkSecurity, secure_tree
from .app import Settings, create_app
from .draining import Draining
from .identity import ADMIN_GROUP, Identities
from .jobs import JobService, QueueUnavailable
from .offloop import DEFAULT_THREADS, OffLoop, OffLoopStore
from .private_files import FILE_MODE, private_folder, tighten, tighten_fd
from .proxies import TrustedProxies
from .request_headers import RequestHeaders
from .store import Store, StoreError, StoreLimits, StoreUrl, open_store, parse_store_url
from .throttle import LoginLimits
from .zk_queue import ZooKeeperJobQueue

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConnectionLimits:
    """What one client connection may hold of the server.

    Each connection holds a greenlet and a socket: without these, idle or slow clients
    could keep every slot of the server, and nobody else would get an answer.
    """

    max_connections: int = 1000  # beyond: answered 503 at once, and closed
    idle_timeout: float = 15.0  # seconds a connection may wait for its (next) request
    # Seconds from the first byte of a request to the end of its headers; also the longest
    # pause while reading its body or writing its answer.
    header_timeout: float = 10.0


class _HeadersLate(TimeoutError):
    """The request's headers did not arrive within ConnectionLimits.header_timeout."""


class LeanHandler(WSGIHandler):
    """gevent's WSGI handler with a lighter header parser, no access log, and the time
    limits of :class:`ConnectionLimits`.

    gevent parses request headers with the email package, a sixth of the server's CPU per
    request; :class:`RequestHeaders` reads the same lines directly, with the same limits.
    """

    server: NoDelayWSGIServer
    _deadline: gevent.Timeout | None = None
    _late = False

    def MessageClass(self, rfile: Any, *args: Any) -> RequestHeaders:  # noqa: N802 - gevent's name
        return RequestHeaders.read(rfile)

    def log_request(self) -> None:
        pass  # the server runs without an access log (log=None); skip formatting the line

    def read_requestline(self) -> str:
        limits = self.server.limits
        # Waiting for a request: a connection quiet for idle_timeout is closed (the
        # timeout, an OSError, ends gevent's loop over the connection's requests).
        self.socket.settimeout(limits.idle_timeout)
        if not self.rfile.peek(1):
            return ""  # the client closed it
        # From its first byte, the request line and headers have header_timeout in all,
        # whatever pace they trickle in at; every later read or write, as long.
        self.socket.settimeout(limits.header_timeout)
        self._deadline = gevent.Timeout.start_new(limits.header_timeout, _HeadersLate())
        try:
            line: str = super().read_requestline()
        except _HeadersLate:
            self._late = True
            raise
        return line

    def read_request(self, raw_requestline: str) -> Any:
        try:
            return super().read_request(raw_requestline)
        finally:
            self._cancel_deadline()

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.close()
            self._deadline = None

    # gevent answers a request it cannot parse (request line too long, bad header line, bad
    # chunked body) with an empty text/plain body; callers of this API get a JSON error.
    def handle_one_request(self) -> Any:
        try:
            result = super().handle_one_request()
        finally:
            self._cancel_deadline()
        if result is None and self._late:
            return "408", _raw_json_error(408, _PROTOCOL_ERRORS[408])
        if isinstance(result, tuple):
            status = int(result[0])
            return result[0], _raw_json_error(status, _PROTOCOL_ERRORS.get(status, "bad request"))
        return result

    def _handle_client_error(self, ex: BaseException) -> Any:
        if isinstance(ex, TimeoutError):  # headers too slow: the client's doing, no traceback
            return "408", b""
        return super()._handle_client_error(ex)

    def _send_error_response_if_possible(self, error_code: int) -> None:
        if self.response_length:
            self.close_connection = True
            return
        body = orjson.dumps(
            {
                "status": error_code,
                "message": _PROTOCOL_ERRORS.get(error_code, "internal server error"),
            }
        )
        try:
            self.start_response(
                f"{error_code} {HTTPStatus(error_code).phrase}",
                [
                    ("Content-Type", "application/json"),
                    ("Connection", "close"),
                    ("Content-Length", str(len(body))),
                ],
            )
            self.write(body)
        except OSError:
            self.close_connection = True


_PROTOCOL_ERRORS = {
    400: "malformed HTTP request",
    408: "the request's headers did not arrive in time",
    414: "request line too long: send long searches as a form body (PUT)",
    503: "the job API has no room for another connection; retry later",
}


def _raw_json_error(status: int, message: str) -> bytes:
    body = orjson.dumps({"status": status, "message": message})
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


ADMIN_IDENTITY = "user/admin"


class NoDelayWSGIServer(WSGIServer):
    """gevent's WSGI server with Nagle's algorithm off on every connection, and at most
    ``limits.max_connections`` of them.

    On a kept-alive connection the response goes out in more than one write; with Nagle on,
    the second waits for the client's delayed ACK: 40 ms per request instead of 1 ms.
    Requests are read by :class:`LeanHandler`. A connection beyond the maximum is not left
    waiting in the accept queue (where a health check would time out behind idle clients):
    it is answered 503 at once and closed.
    """

    handler_class = LeanHandler

    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self.connections = 0

    def do_handle(self, *args: Any) -> None:
        if self.connections >= self.limits.max_connections:
            gevent.spawn(self._refuse, *args)
            return
        self.connections += 1
        super().do_handle(*args)

    def do_close(self, *args: Any) -> None:
        self.connections -= 1
        super().do_close(*args)

    def _refuse(self, sock: socket.socket, address: tuple) -> None:
        try:
            if self.ssl_args:
                sock = self.wrap_socket(sock, **self.ssl_args)
            sock.settimeout(1.0)
            # Read what the client sent first: closing on unread data would reset the
            # connection before it reads the answer.
            sock.recv(65536)
            sock.sendall(_raw_json_error(503, _PROTOCOL_ERRORS[503]))
            sock.shutdown(socket.SHUT_WR)
        except (OSError, ssl.SSLError):
            pass
        finally:
            sock.close()

    def handle(self, sock: socket.socket, address: tuple) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().handle(sock, address)

    def wrap_socket_and_handle(self, client_socket: socket.socket, address: tuple) -> None:
        # A failed handshake (plain HTTP on the TLS port, an untrusted certificate) is the
        # client's problem: one debug line, not a traceback from the hub. A client that
        # never completes it is one that sends its headers too slowly.
        client_socket.settimeout(self.limits.header_timeout)
        try:
            tls_socket = self.wrap_socket(client_socket, **self.ssl_args)
        except (ssl.SSLError, OSError) as exc:
            log.debug("TLS handshake with %s failed: %s", address[0], exc)
            client_socket.close()
            return
        try:
            self.handle(tls_socket, address)
        finally:
            tls_socket.close()


class TlsConfigError(Exception):
    """The TLS certificate or key cannot be loaded (reported as a one-line CLI error)."""


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """A server-side TLS context (TLS 1.2 or newer) for the certificate chain and key."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise TlsConfigError(
            f"cannot load TLS certificate {cert} with key {key}: "
            f"{getattr(exc, 'reason', None) or exc.strerror or exc}"
        ) from None
    return context


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(base) / "nuvla-job"


def default_db() -> str:
    """The database when none is given: a SQLite file in the user's data folder."""
    return str(default_data_dir() / "jobs.sqlite")


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8200
    db: str | None = None  # a file path or URL (store.parse_store_url); None: default_db()
    zk_hosts: str = "127.0.0.1:2181"
    zk_security: ZkSecurity = ZkSecurity()
    admin_credentials: str = ""
    trust_authn_header: bool = False
    trusted_proxies: tuple[str, ...] = ()  # proxies.TrustedProxies: X-Forwarded-For believed
    max_body: int = 4 * 1024 * 1024
    max_connections: int = ConnectionLimits.max_connections
    idle_timeout: float = ConnectionLimits.idle_timeout
    header_timeout: float = ConnectionLimits.header_timeout
    tls_cert: str | None = None
    tls_key: str | None = None
    login_max_failures: int = LoginLimits.max_failures
    login_max_failures_per_address: int = LoginLimits.max_failures_per_address
    login_max_failures_per_name: int = LoginLimits.max_failures_per_name
    login_backoff: float = LoginLimits.backoff
    login_window: float = LoginLimits.window
    metrics: bool = True
    public_url: str = ""  # the base URI clients are told (check_public_url); "": endpoint
    db_threads: int = DEFAULT_THREADS  # offloop.OffLoop: database calls running at once
    query_timeout: float = StoreLimits.query_timeout  # seconds one transaction may run
    dashboard_interval: float = 5.0  # seconds between two fleet samples (api/fleet.py)
    # seconds between two looks for interrupted adds on a shared store (replicas)
    recovery_interval: float = 30.0

    def resolved(self) -> ServerConfig:
        """The defaults filled in; StoreUrlError when `db` names no store."""
        db = default_db() if self.db is None else self.db
        creds = self.admin_credentials or str(self.store_url.folder / "admin-credentials.json")
        return ServerConfig(**{**self.__dict__, "db": db, "admin_credentials": creds})

    @property
    def store_url(self) -> StoreUrl:
        """The store `db` names (StoreUrlError when it names none)."""
        return parse_store_url(default_db() if self.db is None else self.db)

    @property
    def endpoint(self) -> str:
        scheme = "https" if self.tls_cert else "http"
        return f"{scheme}://{self.host}:{self.port}"


def check_public_url(value: str) -> str:
    """A public URL (``https://host[:port][/prefix]``) without its trailing slash; ValueError
    with a message for a usage error otherwise."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"'{value}' is not an http:// or https:// URL with a host")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"'{value}' must have no user, query or fragment")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ValueError(f"'{value}' has an invalid port") from None
    return value.strip().rstrip("/")


def ensure_admin_key(identities: Identities, path: str, endpoint: str) -> bool:
    """Create the first admin API key and write it to ``path`` (mode 0600). True if created."""
    if identities.has_admin_key():
        return False
    key, secret = identities.add_api_key(ADMIN_IDENTITY, [ADMIN_GROUP])
    target = Path(path)
    private_folder(target.parent)
    # Created with owner-only permissions from the first byte, not chmod-ed afterwards; a
    # file that existed keeps its mode through O_CREAT, so it is tightened before the write.
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    tighten_fd(fd, target)
    with os.fdopen(fd, "w") as handle:
        json.dump({"endpoint": endpoint, "key": key, "secret": secret}, handle)
    log.info("created the admin API key %s; its secret is in %s", key, target)
    return True


class JobApiServer:
    """The running job API: call :meth:`serve_forever`, stop with :meth:`stop`."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config.resolved()
        # First, so that a bad certificate fails before anything is created.
        ssl_args = {}
        if self.config.tls_cert:
            ssl_args = {"ssl_context": tls_context(self.config.tls_cert, self.config.tls_key or "")}
        limits = StoreLimits(query_timeout=self.config.query_timeout)
        # Every database call runs in the pool's threads, never on the event loop, unless
        # the store yields to other greenlets itself (PostgreSQL).
        store = open_store(self.config.store_url, limits)
        self.offloop = OffLoop(self.config.db_threads)
        self.cooperative = bool(getattr(store, "cooperative", False))
        self.store: Store = store if self.cooperative else OffLoopStore(store, self.offloop)
        self.shared = bool(getattr(store, "shared", False))
        self._recovery: gevent.Greenlet | None = None
        self.identities = Identities(self.store.identities, cache_sessions=not self.shared)
        if not ensure_admin_key(
            self.identities, self.config.admin_credentials, self.config.endpoint
        ):
            tighten(Path(self.config.admin_credentials))
        self.zk: KazooClient = make_client(
            self.config.zk_hosts, use_gevent=True, security=self.config.zk_security
        )
        self.zk.add_listener(self._on_zk_state)
        self.jobs = JobService(self.store.jobs, ZooKeeperJobQueue(self.zk))
        settings = Settings(
            trust_authn_header=self.config.trust_authn_header,
            secure_cookie=bool(self.config.tls_cert),
            max_body=self.config.max_body,
            metrics=self.config.metrics,
            dashboard_interval=self.config.dashboard_interval,
            public_url=self.config.public_url or self.config.endpoint,
            trusted_proxies=TrustedProxies(self.config.trusted_proxies),
            login_limits=LoginLimits(
                max_failures=self.config.login_max_failures,
                max_failures_per_address=self.config.login_max_failures_per_address,
                max_failures_per_name=self.config.login_max_failures_per_name,
                backoff=self.config.login_backoff,
                window=self.config.login_window,
            ),
        )
        self.app = create_app(
            self.jobs,
            self.identities,
            settings,
            queue_state=lambda: str(self.zk.state),
            offloop=None if self.cooperative else self.offloop,
            # A shared store keeps the back-off for every replica.
            login_counters=(
                store.login_counters(self.config.login_window)  # type: ignore[attr-defined]
                if self.shared
                else None
            ),
        )
        self.draining = Draining(self.app)
        self.http = NoDelayWSGIServer(
            (self.config.host, self.config.port),
            self.draining,
            # Unbounded: the limit is counted here (beyond it a connection is refused, not
            # left waiting); the pool is what stop() kills what is left of.
            spawn=Pool(),
            limits=ConnectionLimits(
                max_connections=self.config.max_connections,
                idle_timeout=self.config.idle_timeout,
                header_timeout=self.config.header_timeout,
            ),
            log=None,
            error_log=logging.getLogger("nuvla_job.api.http"),
            **ssl_args,
        )

    def _on_zk_state(self, state: KazooState) -> None:
        log.info("ZooKeeper connection: %s", state)
        if state == KazooState.CONNECTED:
            # Kazoo calls listeners on its event thread: do the work in a greenlet.
            gevent.spawn(self._recover)

    def _recover_periodically(self) -> None:
        # On a shared store a replica may die mid-add: another finishes it (postgres.py
        # hands out only the marks of dead processes).
        while True:
            gevent.sleep(self.config.recovery_interval)
            if self.zk.connected:
                self._finish_interrupted_adds()

    def _recover(self) -> None:
        self._secure_parents()
        self._finish_interrupted_adds()

    def _finish_interrupted_adds(self) -> None:
        try:
            done = self.jobs.recover_pending()
            if done:
                log.warning("queued %d job(s) whose add had been interrupted", done)
        except (QueueUnavailable, StoreError) as exc:
            log.warning("could not finish interrupted adds yet: %s", exc)

    def _secure_parents(self) -> None:
        # Parents created before auth was turned on are still open: give them our ACL.
        try:
            changed = secure_tree(self.zk, self.config.zk_security)
        except ZkAccessDenied as exc:
            log.error("%s", exc)
        except KazooException as exc:
            log.warning("could not check the ACL of the engine's nodes: %s", type(exc).__name__)
        else:
            if changed:
                log.warning(
                    "ZooKeeper: set the engine's ACL on %d existing node(s): %s",
                    len(changed),
                    ", ".join(changed[:10]),
                )

    def start(self) -> None:
        # Connecting in the background lets the API answer (reads, pull jobs) while
        # ZooKeeper is still unreachable; queued adds answer 503 until it is connected.
        self.zk.start_async()
        self.http.start()
        if self.shared:
            self._recovery = gevent.spawn(self._recover_periodically)
        log.info(
            "job API listening on %s (database %s)", self.config.endpoint, self.config.store_url
        )

    def stop(self, timeout: float = 5.0) -> None:
        # Stop accepting, let running requests finish, then drop the idle connections.
        # Held waits answer at once (their clients ask again elsewhere or after the restart).
        self.http.close()
        if self._recovery is not None:
            self._recovery.kill()
        self.jobs.changes.close()
        if not self.draining.drain(timeout):
            log.warning("requests still running after %.0f s are cut off", timeout)
        self.http.stop(timeout=0.5)
        try:
            self.zk.stop()
            self.zk.close()
        finally:
            self.store.close()  # an OffLoopStore closes its pool too
            if self.cooperative:
                self.offloop.close()

    def serve_forever(self) -> None:
        self.start()
        stopped = gevent.event.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            gevent.signal_handler(sig, stopped.set)
        stopped.wait()
        log.info("stopping the job API")
        self.stop()
