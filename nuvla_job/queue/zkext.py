"""What the queue needs of ZooKeeper beyond kazoo's API: the one module using kazoo's internals.

ZooKeeper 3.6+ watches a whole subtree with one registration that stays (AddWatch, opcode 106)
and reports each created, changed or deleted node with its own path, and reads many nodes in
one request (multiRead, opcode 22). kazoo 2.11 has no API for either, so the requests go
through the client's request queue (`KazooClient._call`) and the events are picked off its
connection (`ConnectionHandler._read_watch_event`) before kazoo dispatches its own watches
(`KazooClient._data_watchers`, `_child_watchers`). The session timeout asked for is read from
`KazooClient._session_timeout`. The watch does not survive a reconnection: callers add it
again on CONNECTED.

Those private names are checked against the kazoo versions this was tested with
(`TESTED_KAZOO`, the pin in pyproject.toml) on first use: another version fails with
`UnsupportedKazoo` rather than in some subtle way later. The integration tests cover them.

Callbacks run right in the connection's reader, not through kazoo's callback queue: an event
is then handled before any response read after it, so a caller that sees a failed request
has already seen the changes that made it fail. They must be quick and never block.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import (
    EXCEPTIONS,
    ConnectionClosedError,
    ConnectionLoss,
    NoWatcherError,
    SessionExpiredError,
)
from kazoo.protocol.serialization import (
    Watch,
    bool_struct,
    int_struct,
    multiheader_struct,
    read_buffer,
    stat_struct,
    write_string,
)
from kazoo.protocol.states import EVENT_TYPE_MAP, WatchedEvent, ZnodeStat
from kazoo.version import __version__ as KAZOO_VERSION

log = logging.getLogger(__name__)

# The kazoo releases (major.minor) whose internals this module was tested against.
TESTED_KAZOO = ("2.11",)

_ADD_WATCH = 106
_REMOVE_WATCHES = 18
_MULTI_READ = 22
_GET_DATA = 4
_ERROR = -1
_MODE_PERSISTENT_RECURSIVE = 1
_WATCHER_ANY = 3  # 3.8 cannot remove a persistent watch by its own type (3.9 can); Any can
_REMOVE_TIMEOUT = 10.0

WatchCallback = Callable[[WatchedEvent], Any]


class UnsupportedKazoo(RuntimeError):
    """The installed kazoo is not one whose internals the queue was tested with."""


def check_kazoo(version: str = KAZOO_VERSION) -> None:
    """Fail with UnsupportedKazoo unless kazoo `version` (default: the installed one) is tested."""
    if ".".join(version.split(".")[:2]) not in TESTED_KAZOO:
        tested = ", ".join(f"{release}.*" for release in TESTED_KAZOO)
        raise UnsupportedKazoo(
            f"kazoo {version} is installed, but the job queue uses kazoo internals tested "
            f"only with kazoo {tested}; install one of those"
        )


# Checked on first use rather than at import: the job API imports the queue for its producer,
# which needs none of this.
_require_tested_kazoo = functools.cache(check_kazoo)


def session_timeout(client: KazooClient) -> float:
    """The session timeout `client` asks of the server, in seconds."""
    _require_tested_kazoo()
    return client._session_timeout / 1000


# -- requests kazoo has no API for ---------------------------------------------------------------


@dataclass(frozen=True)
class _WatchRequest:
    """An AddWatch or RemoveWatches request: a path and an int (mode or watcher type)."""

    type: int
    path: str
    mode: int

    def serialize(self) -> bytes:
        return write_string(self.path) + int_struct.pack(self.mode)

    @staticmethod
    def deserialize(buffer: bytes, offset: int) -> bool:
        return True  # nothing in the reply is of use


@dataclass(frozen=True)
class _MultiRead:
    """A multiRead request (opcode 22, ZooKeeper 3.6+) of getData for each path.

    The reply holds, for each path in order, (data, stat) or the error (e.g. NoNodeError).
    """

    paths: tuple[str, ...]
    type = _MULTI_READ  # a class attribute, not a field: kazoo reads `request.type`

    def serialize(self) -> bytes:
        out = bytearray()
        for path in self.paths:
            out += multiheader_struct.pack(_GET_DATA, False, -1)
            out += write_string(path) + bool_struct.pack(False)  # no watch
        out += multiheader_struct.pack(-1, True, -1)
        return bytes(out)

    @staticmethod
    def deserialize(buffer: bytes, offset: int) -> list[Any]:
        results: list[Any] = []
        while True:
            op_type, done, _ = multiheader_struct.unpack_from(buffer, offset)
            offset += multiheader_struct.size
            if done:
                return results
            if op_type == _GET_DATA:
                data, offset = read_buffer(buffer, offset)
                stat = ZnodeStat._make(stat_struct.unpack_from(buffer, offset))
                offset += stat_struct.size
                results.append((data or b"", stat))
            elif op_type == _ERROR:
                code = int_struct.unpack_from(buffer, offset)[0]
                offset += int_struct.size
                results.append(EXCEPTIONS[code]())
            else:
                raise ValueError(f"unexpected multiRead result type {op_type}")


def multi_read(client: KazooClient, paths: list[str]) -> list[Any]:
    """(data, stat) or the error for each of `paths`, in one request."""
    request = _MultiRead(tuple(_server_path(client, path) for path in paths))
    return _send(client, request).get()


def _send(client: KazooClient, request: Any) -> Any:
    _require_tested_kazoo()
    result = client.handler.async_result()
    client._call(request, result)
    return result


def _server_path(client: KazooClient, path: str) -> str:
    if not client.chroot:
        return path
    return client.chroot if path == "/" else client.chroot + path


# -- persistent recursive watches ----------------------------------------------------------------


class _Watchers:
    """The recursive-watch callbacks of one client connection, by server path.

    `routes` is an immutable snapshot rebuilt on every change, read by the connection's
    reader without a lock: (root, root + "/", callbacks) for each watched path.
    """

    def __init__(self) -> None:
        self.by_path: dict[str, tuple[WatchCallback, ...]] = {}
        self.routes: tuple[tuple[str, str, tuple[WatchCallback, ...]], ...] = ()

    def set(self, path: str, callbacks: tuple[WatchCallback, ...]) -> None:
        if callbacks:
            self.by_path[path] = callbacks
        else:
            self.by_path.pop(path, None)
        self.routes = tuple(
            (root, root.rstrip("/") + "/", cbs) for root, cbs in self.by_path.items()
        )


def _recursive_watchers(client: KazooClient) -> _Watchers:
    """The client's recursive-watch callbacks; hooks its connection once."""
    _require_tested_kazoo()
    connection = client._connection
    watchers: _Watchers | None = getattr(connection, "_nuvla_recursive_watchers", None)
    if watchers is not None:
        return watchers
    if not hasattr(connection, "_read_watch_event"):
        raise UnsupportedKazoo("this kazoo version cannot be hooked for persistent watches")
    registry = _Watchers()
    read_watch_event = connection._read_watch_event

    def read_watch_event_too(buffer: bytes, offset: int) -> Any:
        routes = registry.routes
        if routes:
            watch, _ = Watch.deserialize(buffer, offset)
            path = watch.path
            callbacks = [
                callback
                for root, prefix, callbacks in routes
                if path == root or path.startswith(prefix)
                for callback in callbacks
            ]
            event_type = EVENT_TYPE_MAP.get(watch.type)
            if event_type is not None and callbacks:
                event = WatchedEvent(event_type, client.client_state, client.unchroot(path))
                for callback in callbacks:
                    try:
                        callback(event)
                    except Exception:  # never let it break kazoo's connection loop
                        log.exception("error in the watch callback for %s", path)
                if path not in client._data_watchers and path not in client._child_watchers:
                    return None  # no kazoo watch to fire: spare kazoo's own parsing
        return read_watch_event(buffer, offset)

    connection._read_watch_event = read_watch_event_too
    connection._nuvla_recursive_watchers = registry
    return registry


def add_recursive_watch(client: KazooClient, path: str, callback: WatchCallback) -> None:
    """Watch `path` and everything below it; `callback` gets every created/changed/deleted node.

    `callback` is called in the connection's reader: it must be quick and never block. Adding
    the same callback again only re-registers the watch on the server (needed after a
    reconnection).
    """
    server_path = _server_path(client, path)
    registry = _recursive_watchers(client)
    callbacks = registry.by_path.get(server_path, ())
    if callback not in callbacks:
        registry.set(server_path, (*callbacks, callback))
    _send(client, _WatchRequest(_ADD_WATCH, server_path, _MODE_PERSISTENT_RECURSIVE)).get()


def remove_recursive_watch(client: KazooClient, path: str, callback: WatchCallback) -> None:
    """Stop calling `callback`; the server watch goes when no callback is left on `path`."""
    server_path = _server_path(client, path)
    registry = _recursive_watchers(client)
    callbacks = tuple(cb for cb in registry.by_path.get(server_path, ()) if cb != callback)
    registry.set(server_path, callbacks)
    if callbacks:
        return
    if not client.connected:
        return  # the watch went with the connection
    try:
        _send(client, _WatchRequest(_REMOVE_WATCHES, server_path, _WATCHER_ANY)).get(
            timeout=_REMOVE_TIMEOUT
        )
    except (NoWatcherError, ConnectionLoss, SessionExpiredError, ConnectionClosedError):
        pass
    except client.handler.timeout_exception:
        log.warning("no answer removing the watch on %s", path)
