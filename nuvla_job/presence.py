"""Executor presence: one ephemeral znode per running executor, under ``/executors``.

The node is ``/executors/<name>-<session id in hex>`` and holds JSON: the executor's name,
host, pid, concurrency, start time and the ids of the jobs it is running. It lives outside
the fixed layout (``/job``, ``/election``), so nothing else that reads ZooKeeper notices it.
Being ephemeral, it disappears with the executor's session; after a session loss a new one
is created under the new session id. The dashboard of the job API lists these nodes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NodeExistsError, NoNodeError
from kazoo.protocol.states import KazooState

from .timeutil import now_iso

log = logging.getLogger(__name__)

ROOT = "/executors"
# The node's data must stay far below ZooKeeper's 1 MiB limit: list at most this many ids
# (``in-flight-count`` always has the real number).
MAX_LISTED = 1000
MIN_WRITE_INTERVAL = 1.0
# How often the node's existence is checked when nothing changes (someone may delete it).
CHECK_INTERVAL = 5.0


def node_name(name: str, session_id: int) -> str:
    """The znode name of an executor in a session: ``<name>-<session id in hex>``."""
    safe = name.replace("/", "_") or "executor"
    return f"{safe}-{session_id:x}"


class ExecutorPresence:
    """Announces an executor in ZooKeeper and keeps its list of in-flight jobs current.

    ``start(zk, info)`` creates the node in the background (``info`` holds name, host, pid,
    concurrency, started); ``set_in_flight(ids)`` records the running jobs, written at most
    once per ``min_interval`` seconds and only when they changed; ``stop()`` deletes the
    node. Works with kazoo's gevent and threading handlers (the writer runs on the handler).
    """

    def __init__(
        self, min_interval: float = MIN_WRITE_INTERVAL, check_interval: float = CHECK_INTERVAL
    ) -> None:
        self.min_interval = min_interval
        self.check_interval = check_interval
        self.path: str | None = None  # the node of the current session, once created
        self._zk: KazooClient | None = None
        self._info: dict[str, Any] = {}
        self._in_flight: list[str] = []
        self._written: list[str] | None = None
        self._worker: Any = None

    def start(self, zk: KazooClient, info: dict[str, Any]) -> None:
        """Announce the executor (in the background: returns at once)."""
        if self._zk is not None:
            raise RuntimeError("presence already started")
        self._zk = zk
        self._info = dict(info)
        self._wake = zk.handler.event_object()
        self._stopped = zk.handler.event_object()
        zk.add_listener(self._on_state)
        self._worker = zk.handler.spawn(self._run)

    def set_in_flight(self, job_ids: Iterable[str]) -> None:
        """The ids of the jobs running now; written soon if they changed."""
        ids = sorted(set(job_ids))
        if ids != self._in_flight:
            self._in_flight = ids
            if self._zk is not None:
                self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop updating and delete the node (it would vanish with the session anyway)."""
        zk = self._zk
        if zk is None:
            return
        self._stopped.set()
        self._wake.set()
        zk.remove_listener(self._on_state)
        if self._worker is not None:
            self._worker.join(timeout)
        path, self.path = self.path, None
        if path is not None and zk.state == KazooState.CONNECTED:
            try:
                zk.delete(path)
            except (KazooException, zk.handler.timeout_exception) as exc:
                log.debug("presence node %s not deleted: %s", path, type(exc).__name__)
        self._zk = None

    # -- the writer ---------------------------------------------------------------------------

    def _on_state(self, state: str) -> None:
        # Called on kazoo's event thread: only wake the writer. After a loss, the next
        # CONNECTED is a new session, whose node the writer creates.
        if state == KazooState.CONNECTED:
            self._wake.set()

    def _run(self) -> None:
        zk = self._zk  # set by start(); stop() clears it only after this loop ends
        if zk is None:
            return
        while not self._stopped.is_set():
            try:
                wrote = self._sync()
            except (KazooException, zk.handler.timeout_exception) as exc:
                log.debug("presence not updated yet: %s", type(exc).__name__)
                wrote = False
            if self._stopped.is_set():
                break
            if wrote:
                # Rate limit: changes made meanwhile are written in one go afterwards.
                self._stopped.wait(self.min_interval)
            self._wake.wait(self.check_interval)
            self._wake.clear()

    def _data(self, in_flight: list[str]) -> bytes:
        doc = {
            **self._info,
            "in-flight": in_flight[:MAX_LISTED],
            "in-flight-count": len(in_flight),
            "updated": now_iso(),
        }
        return json.dumps(doc).encode()

    def _sync(self) -> bool:
        """Create or update the node as needed; True if something was written."""
        zk = self._zk
        if zk is None or zk.state != KazooState.CONNECTED:
            return False
        path = f"{ROOT}/{node_name(str(self._info.get('name', '')), zk.client_id[0])}"
        in_flight = self._in_flight
        if path == self.path and in_flight == self._written:
            if zk.exists(path) is not None:
                return False
            self.path = None  # deleted by someone: create it again
        if path == self.path:
            try:
                zk.set(path, self._data(in_flight))
            except NoNodeError:
                self.path = None
        if path != self.path:
            try:
                zk.create(path, self._data(in_flight), ephemeral=True, makepath=True)
            except NodeExistsError:  # created by an earlier try whose answer was lost
                zk.set(path, self._data(in_flight))
            log.info("announced in ZooKeeper as %s", path)
            self.path = path
        self._written = in_flight
        return True
