"""Concurrency limits: at most N jobs of an action running at once, in one executor and
across the fleet.

A job whose action is limited waits, still QUEUED, after its fetch and before it is set
RUNNING: first for its executor's own cap (:class:`LocalLimit`, ``--max-concurrent``), then
for a place in the fleet-wide limit (:class:`FleetLimit`, ``@action(max_concurrent=)`` or
``--fleet-max-concurrent``). Both serve first come, first served, so jobs start in the order
their executors took them from the queue (priority, then age). While it waits a job holds
its queue entry but no executor slot (executor.py).

ZooKeeper layout (outside the queue's ``/job`` and the elections' ``/election``):
``/limits/<action>/<job-uuid>-<sequence>``, one ephemeral sequential node per job waiting or
running: the first N by sequence run, the others wait. A node's rank only ever goes down
(nodes are added at the end), so a job that found itself among the first N stays there and
N is never exceeded. Ephemeral: when an executor dies its session ends and its places go to
the next in line. Executors disagreeing on N (a rolling upgrade) each count against their
own N.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING
from urllib.parse import quote

import gevent
import gevent.event
from kazoo.exceptions import (
    ConnectionClosedError,
    KazooException,
    NodeExistsError,
    NoNodeError,
    SessionExpiredError,
)

from .backoff import jittered_backoff

if TYPE_CHECKING:
    from kazoo.client import KazooClient

    from .registry import ActionSpec

log = logging.getLogger(__name__)

LIMITS_ROOT = "/limits"
# Waits after failed ZooKeeper requests (jittered, doubled per failure in a row).
RETRY_FIRST, RETRY_MAX = 0.2, 5.0


class LimitLost(Exception):
    """The ZooKeeper session that held a job's place in a limit's line has ended."""


def limit_path(action: str) -> str:
    """The node of an action's fleet-wide limit (any action name is a valid node name)."""
    name = quote(action, safe="")
    if name in (".", ".."):  # the only names ZooKeeper refuses that quote() leaves alone
        name = name.replace(".", "%2E")
    return f"{LIMITS_ROOT}/{name}"


def _sequence(name: str) -> int | None:
    """The place of a node ``<label>-<sequence>`` in its line; None for a node that is not
    a place (an operator's), which is not counted.

    ZooKeeper writes the sequence as ``%010d`` of a signed 32-bit counter: after 2**31
    nodes it goes negative (``-000000005``, ``-2147483648``); those come after the
    positive ones, so they are counted from 2**32 down."""
    if name[-12:-10] == "--" and name[-10:].isdigit():
        value = -int(name[-10:])
    elif name[-11:-10] == "-" and name[-10:].isdigit():
        value = int(name[-10:])
    elif name[-11:-9] == "--" and name[-9:].isdigit():
        value = -int(name[-9:])
    else:
        return None
    return value if value >= 0 else value + 2**32


class LocalLimit:
    """At most ``size`` holders at once in this process, first come, first served.

    A released place is handed to the first in line, so a late arrival cannot overtake."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.holders = 0
        self._line: deque[gevent.event.Event] = deque()

    @property
    def waiting(self) -> int:
        return len(self._line)

    def acquire(self) -> None:
        if self.holders < self.size and not self._line:
            self.holders += 1
            return
        turn = gevent.event.Event()
        self._line.append(turn)
        try:
            turn.wait()
        except BaseException:
            if turn.is_set():
                self.release()  # handed a place it will not use: pass it on
            else:
                self._line.remove(turn)
            raise

    def release(self) -> None:
        if self._line:
            self._line.popleft().set()  # the place changes hands: holders stays
        else:
            self.holders -= 1


@dataclass(eq=False)
class _Place:
    name: str
    since: int  # the first listing of the limit's children that was sent after its creation
    turn: gevent.event.Event = field(default_factory=gevent.event.Event)
    lost: bool = False


class FleetLimit:
    """At most ``size`` holders at once across every process, through ZooKeeper.

    :meth:`acquire` creates the caller's ephemeral sequential node under ``path`` and blocks
    until the node is among the first ``size`` by sequence; :meth:`release` deletes it. A
    process reads the children once per change for all its waiters (one watch, one
    greenlet), not once per waiter.
    """

    def __init__(self, client: KazooClient, path: str, size: int) -> None:
        self.client = client
        self.path = path
        self.size = size
        self._line: dict[str, _Place] = {}
        self._listings = 0  # listings of the children sent so far
        self._changed = gevent.event.Event()
        self._follower: gevent.Greenlet | None = None
        self._path_made = False

    @property
    def waiting(self) -> int:
        return len(self._line)

    def acquire(self, label: str) -> str:
        """Wait for a place; returns the node name to :meth:`release`. Raises
        :class:`LimitLost` when the session holding the node ends while it waits."""
        if not self._path_made:
            try:
                self.client.ensure_path(self.path)
            except NodeExistsError:
                pass
            self._path_made = True
        # A label ending in "-" would make a negative sequence's sign ambiguous.
        label = label.rstrip("-") or "place"
        created = self.client.create(f"{self.path}/{label}-", ephemeral=True, sequence=True)
        place = _Place(created.rsplit("/", 1)[1], self._listings)
        self._line[place.name] = place
        try:
            self._changed.set()
            if self._follower is None:
                self._follower = gevent.spawn(self._follow)
            place.turn.wait()
        except BaseException:
            self._line.pop(place.name, None)
            self.release(place.name)
            raise
        if place.lost:
            raise LimitLost(f"{self.path}/{place.name} is gone: its ZooKeeper session ended")
        return place.name

    def release(self, name: str) -> None:
        """Give the place back. If ZooKeeper cannot be reached now, the deletion is retried
        in the background until it lands or the session ends (which deletes it too)."""
        try:
            self.client.delete(f"{self.path}/{name}")
        except (NoNodeError, SessionExpiredError, ConnectionClosedError):
            pass
        except (KazooException, self.client.handler.timeout_exception):
            gevent.spawn(self._delete_later, name)

    def _delete_later(self, name: str) -> None:
        failures = 0
        while True:
            failures += 1
            gevent.sleep(jittered_backoff(failures, RETRY_FIRST, RETRY_MAX))
            try:
                self.client.delete(f"{self.path}/{name}")
                return
            except (NoNodeError, SessionExpiredError, ConnectionClosedError):
                return
            except (KazooException, self.client.handler.timeout_exception) as exc:
                log.warning("%s/%s: not released yet (%s): retrying", self.path, name, exc)

    def _on_change(self, _event: object) -> None:
        self._changed.set()  # runs on the kazoo handler: only wake the follower

    def _follow(self) -> None:
        """While anyone here waits: list the children, start the first ``size``, wait for a
        change."""
        failures = 0
        try:
            while self._line:
                self._changed.clear()
                number = self._listings
                self._listings += 1
                try:
                    children = self.client.get_children(self.path, watch=self._on_change)
                except NoNodeError:
                    children = []
                except (KazooException, self.client.handler.timeout_exception) as exc:
                    failures += 1
                    log.debug("%s: listing failed (%s): retrying", self.path, exc)
                    gevent.sleep(jittered_backoff(failures, RETRY_FIRST, RETRY_MAX))
                    continue
                failures = 0
                self._grant(children, number)
                if self._line:
                    self._changed.wait()
        finally:
            self._follower = None

    def _grant(self, children: list[str], number: int) -> None:
        ranked = sorted((seq, name) for name in children if (seq := _sequence(name)) is not None)
        first = {name for _, name in ranked[: self.size]}
        present = set(children)
        for name, place in list(self._line.items()):
            if name in first:
                del self._line[name]
                place.turn.set()
            elif name not in present and place.since <= number:
                # Listed after its creation and not there: its session is gone.
                del self._line[name]
                place.lost = True
                place.turn.set()


class Held:
    """The places one job holds; :meth:`release` gives them back, the last taken first (the
    fleet-wide place is the one the rest of the fleet waits for)."""

    def __init__(self) -> None:
        self._releases: list[Callable[[], None]] = []

    def add(self, release: Callable[[], None]) -> None:
        self._releases.append(release)

    def release(self) -> None:
        while self._releases:
            self._releases.pop()()


class Limits:
    """The limits one executor applies, by action name.

    ``local``: this executor's own caps (``--max-concurrent``). ``fleet``: fleet-wide sizes
    that win over the actions' ``@action(max_concurrent=)`` (``--fleet-max-concurrent``, for
    actions one cannot edit). ``client``: the ZooKeeper session the fleet-wide limits live
    in (None: none apply, as in pull mode).
    """

    def __init__(
        self,
        client: KazooClient | None = None,
        local: Mapping[str, int] | None = None,
        fleet: Mapping[str, int] | None = None,
    ) -> None:
        self.client = client
        self._local = {name: LocalLimit(size) for name, size in (local or {}).items()}
        self._fleet_sizes = dict(fleet or {})
        self._fleet: dict[str, FleetLimit] = {}

    def fleet_size(self, spec: ActionSpec) -> int | None:
        return self._fleet_sizes.get(spec.name, spec.max_concurrent)

    def applies(self, spec: ActionSpec) -> bool:
        return spec.name in self._local or (
            self.client is not None and self.fleet_size(spec) is not None
        )

    def acquire(self, spec: ActionSpec, job_id: str) -> Held:
        """Wait for the job's places: this executor's cap first (no fleet-wide place is held
        while waiting for it), then the fleet-wide one."""
        held = Held()
        try:
            local = self._local.get(spec.name)
            if local is not None:
                local.acquire()
                held.add(local.release)
            size = self.fleet_size(spec)
            if self.client is not None and size is not None:
                fleet = self._fleet.get(spec.name)
                if fleet is None:
                    fleet = self._fleet[spec.name] = FleetLimit(
                        self.client, limit_path(spec.name), size
                    )
                label = job_id.rsplit("/", 1)[-1]
                held.add(partial(fleet.release, fleet.acquire(label)))
        except BaseException:
            held.release()
            raise
        return held


def parse_caps(values: Iterable[str], known: Iterable[str]) -> dict[str, int]:
    """``ACTION=N`` values (several per value, comma-separated) as sizes by action name.
    Raises ValueError, saying which value is wrong, for a bad pair or an action no module
    registered (a typo would otherwise leave the action unlimited)."""
    names = set(known)
    caps: dict[str, int] = {}
    for value in values:
        for pair in filter(None, (part.strip() for part in value.split(","))):
            name, equals, count = pair.rpartition("=")
            if not equals or not name:
                raise ValueError(f"'{pair}' is not ACTION=N")
            if name not in names:
                raise ValueError(f"'{pair}': no action '{name}' is registered")
            if not count.isdigit() or int(count) < 1:
                raise ValueError(f"'{pair}': N must be a whole number >= 1")
            caps[name] = int(count)
    return caps
