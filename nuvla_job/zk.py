"""ZooKeeper client construction and connection-state helpers (kazoo)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError
from kazoo.protocol.states import KazooState

from .zk_security import ZkSecurity


def hosts_string(hosts: str | Sequence[str]) -> str:
    """Normalise hosts to kazoo's "h1:2181,h2:2181" form.

    Accepts that string itself or a list such as the upstream CLI's `--zk-hosts h1 h2`
    (whose items may themselves be comma-separated).
    """
    items = [hosts] if isinstance(hosts, str) else list(hosts)
    parts = [part.strip() for item in items for part in item.split(",")]
    parts = [part for part in parts if part]
    if not parts:
        raise ValueError("no ZooKeeper hosts given")
    return ",".join(parts)


# Reconnection attempts: for ever, 0.1 s apart at first, never more than 2 s apart.
RECONNECT = {"max_tries": -1, "delay": 0.1, "backoff": 2, "max_delay": 2.0}


def make_client(
    hosts: str | Sequence[str],
    timeout: float = 10.0,
    use_gevent: bool = True,
    security: ZkSecurity | None = None,
    **kw: Any,
) -> KazooClient:
    """A KazooClient for `hosts`, not yet started (call `.start(timeout)`).

    `timeout` is the session timeout asked of the server (which clamps it to its own
    min/max). With `use_gevent`, kazoo's SequentialGeventHandler is used so callbacks and
    watches run as greenlets; other keyword arguments go to KazooClient as they are.
    `security` adds digest auth with its ACL on every node created, and TLS; without it the
    client is plain (no auth, open ACLs), whatever other clients of the process use.
    """
    for name, value in (security or ZkSecurity()).client_kwargs().items():
        kw.setdefault(name, value)
    # kazoo's default waits up to an hour between reconnection attempts, doubling from
    # 0.1 s: after a 30 s outage an engine would sit idle for up to 25 s more.
    kw.setdefault("connection_retry", dict(RECONNECT))
    if use_gevent and "handler" not in kw:
        kw["handler"] = _gevent_handler()
    handler = kw.get("handler")
    if handler is not None:
        for name in ("connection_retry", "command_retry"):
            # kazoo builds a retry dict with time.sleep and then rejects it when the handler
            # sleeps differently (gevent); give it the handler's sleep.
            if isinstance(kw.get(name), dict):
                kw[name] = {"sleep_func": handler.sleep_func, **kw[name]}
    return KazooClient(hosts=hosts_string(hosts), timeout=timeout, **kw)


@dataclass(frozen=True)
class ZkSettings:
    """Where the engine's ZooKeeper is and how to reach it: what a component needs to make a
    client of its own. The executor hands its settings to each Job (`job.zookeeper`), so an
    action connects as its executor does (the restore_queue action does)."""

    hosts: str  # kazoo's "h1:2181,h2:2181" (see hosts_string)
    timeout: float = 10.0  # the session timeout asked for, in seconds
    security: ZkSecurity = ZkSecurity()

    def make_client(self, use_gevent: bool = True, **kw: Any) -> KazooClient:
        """A client for these settings, not yet started (see `make_client`)."""
        return make_client(
            self.hosts, timeout=self.timeout, use_gevent=use_gevent, security=self.security, **kw
        )


def _gevent_handler() -> Any:
    """kazoo's gevent handler, with a cheaper `select` for its connection loop.

    kazoo's own builds, registers and closes a selector on every turn of the loop, which
    is a tenth of a busy executor's CPU; gevent's `select` does the same wait directly.
    Imported lazily: importing the handler imports gevent.
    """
    import gevent.select
    from kazoo.handlers.gevent import SequentialGeventHandler

    class GeventHandler(SequentialGeventHandler):
        def select(
            self, rlist: list[Any], wlist: list[Any], xlist: list[Any], timeout: float | None = None
        ) -> tuple[list[Any], list[Any], list[Any]]:
            try:
                return gevent.select.select(rlist, wlist, xlist, timeout)
            except OSError as exc:  # a closed socket: what kazoo's own select raises
                raise ValueError("Invalid event mask or fd") from exc

    return GeventHandler()


def wait_connected(client: KazooClient, timeout: float) -> bool:
    """Wait until `client` is connected; True if it is, False after `timeout` seconds."""
    if client.connected:
        return True
    event = client.handler.event_object()

    def listener(state: str) -> bool:
        if state == KazooState.CONNECTED:
            event.set()
            return True  # kazoo removes a listener that returns True
        return False

    client.add_listener(listener)
    try:
        # Checked again after registering, so a connection made in between is not missed.
        return client.connected or bool(event.wait(timeout))
    finally:
        client.remove_listener(listener)


# -- many requests at once ---------------------------------------------------------------------

# Requests a loop keeps in flight at once. kazoo wakes its connection loop with one byte per
# request on a socket pair that holds about 278 of them on Linux; beyond that, with the gevent
# handler, requests fail with "connection closed" (see nuvla_job/queue/consumer.py).
PIPELINE = 200

T = TypeVar("T")


def pipelined(
    items: Iterable[T],
    call: Callable[[T], Any],
    *,
    expected: tuple[type[BaseException], ...] = (NoNodeError,),
    window: int = PIPELINE,
    timeout: float | None = None,
) -> Iterator[tuple[T, Any, BaseException | None]]:
    """`call(item)` (a kazoo ``*_async`` method) for each item, `window` requests in flight.

    Yields, in input order, ``(item, value, None)``, or ``(item, None, error)`` when the
    request failed with one of the `expected` errors (others are raised). `items` are read
    lazily, so a generator of a million paths is fine. `timeout` bounds each wait.
    """
    pending: deque[tuple[T, Any]] = deque()

    def answer() -> tuple[T, Any, BaseException | None]:
        item, result = pending.popleft()
        try:
            return item, result.get(timeout=timeout), None
        except expected as exc:
            return item, None, exc

    for item in items:
        if len(pending) >= window:
            yield answer()
        pending.append((item, call(item)))
    while pending:
        yield answer()


def read_nodes(
    client: KazooClient,
    paths: Iterable[str],
    *,
    timeout: float | None = None,
    window: int = PIPELINE,
) -> Iterator[tuple[str, bytes | None]]:
    """``(path, data)`` for each of `paths`, in order, the reads pipelined (see `pipelined`).

    `data` is None for a node that does not exist (e.g. gone since it was listed), ``b""``
    for a node without data.
    """
    for path, value, error in pipelined(paths, client.get_async, window=window, timeout=timeout):
        yield path, None if error is not None else (value[0] or b"")


def children(client: KazooClient, path: str, timeout: float | None = None) -> list[str]:
    """The names of `path`'s children; none if `path` does not exist."""
    try:
        return client.get_children_async(path).get(timeout=timeout)
    except NoNodeError:
        return []
