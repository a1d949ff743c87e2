"""`QueueConsumer`: takes entries from the `/job` queue for all the greenlets of a process."""

from __future__ import annotations

import enum
import logging
import time
import uuid
from collections import deque
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import (
    BadVersionError,
    ConnectionClosedError,
    ConnectionLoss,
    KazooException,
    NoNodeError,
    NotEmptyError,
    RolledBackError,
    SessionExpiredError,
)
from kazoo.protocol.states import EventType, KazooState, WatchedEvent

from . import zkext
from .batching import Batcher, Slots
from .layout import ENTRIES, ROOT, TAKEN, Entry
from .view import QueueView, TakeOutcome

log = logging.getLogger(__name__)

# Connection errors after which a request may or may not have been applied, and errors that
# mean the session (and every ephemeral node of it) is gone.
_UNSURE = (ConnectionLoss,)
_SESSION_GONE = (SessionExpiredError, ConnectionClosedError)

# kazoo wakes its connection loop with one byte per request on a socket pair, which holds about
# 278 of them on Linux; with the gevent handler the next request then fails with "connection
# closed" although it stays queued and is sent later. So this consumer keeps its own requests
# in flight well below that, whoever else uses the client.
DEFAULT_MAX_IN_FLIGHT = 64
# ZooKeeper's cost is per request far more than per node: reads, consumes and releases of many
# greenlets share one request each (sizes well under the 1 MiB jute.maxbuffer).
_MAX_READS_PER_REQUEST = 500
_MAX_FINISHES_PER_REQUEST = 200
# A take reads its entry's data together with that of the next entries in line: entries never
# change, and one multiRead for many costs ZooKeeper about as much as one read.
_PREFETCH = 32
# How often `holds` asks again while the connection is only lost (not the session).
_HOLDS_TRIES = 5
# How often a consume removes nodes found under its entry before it gives up.
_CLEANUPS = 3


class FinishOutcome(enum.Enum):
    """How one item of a consume/release multi ended."""

    DONE = "done"
    ENTRY_GONE = "entry gone"  # consume only: someone deleted the entry; our node must go
    NOT_OURS = "not ours"  # the taken node changed (version): someone else's now
    HAS_CHILDREN = "has children"  # consume only: nodes under the entry keep it from going


class QueueConsumer:
    """Take entries from the `/job` queue, many at a time, for all the greenlets of a process.

    Usage::

        consumer = QueueConsumer(client)    # a KazooClient, gevent handler in the executor
        consumer.start()
        entry = consumer.take(timeout=5)    # from any number of greenlets at once
        if entry is not None:
            ...                             # run the job entry.job_id
            consumer.consume(entry)         # done: delete the entry (or release(entry))
        consumer.stop()

    The queue is listed once at start; from then on one persistent recursive watch on `/job`
    (ZooKeeper 3.6+) reports every created and deleted node, so the consumer keeps its own
    view (`QueueView`): the entries, the taken nodes, and a sorted list of the available
    names (neither taken, nor being taken here). A take pops the smallest available name, so
    entries go out by priority then arrival, and no take lists the queue again whatever its
    depth.

    Taking is one transaction: `check(entry, version=-1)` (any version: the entry still
    exists) and `create(taken node, identifier, ephemeral)`, so a taken node is never created
    for an entry someone else already consumed. If the node exists (another consumer holds the
    entry) the next name is tried. The entry's data is read right behind the transaction.

    Consume and release first read the taken node and go on only if it is still ours (its
    `ephemeralOwner` is this session and its data our identifier), then delete with that
    node version: consume deletes the entry and the taken node in one transaction, release
    only the taken node. Both return False, and never raise NoNodeError, when it was not ours.

    ZooKeeper's cost is mostly per request, so the reads (entry data, taken nodes) of all
    greenlets go out together as one multiRead, and their consumes and releases as one multi
    (an item whose op fails is settled alone and the others are sent again): while one such
    request is on its way the next batch fills up.

    Connection states: while suspended no take starts; after every reconnection the view is
    rebuilt (the watch does not survive a new connection, and what happened meanwhile was not
    reported). A lost session takes all our taken nodes with it: `held` is emptied and
    consume/release of those entries return False. A taken node of another consumer blocks
    its entry while it exists; when it goes (released, or its session died) the entry is
    available at once.

    All state changes happen under the client handler's lock, so the consumer works with
    kazoo's threading handler too.
    """

    def __init__(
        self,
        client: KazooClient,
        identifier: str | None = None,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        """Build a consumer on `client`; `identifier` is written into our taken nodes.

        The default identifier is a random 32-hex-char id, as kazoo's LockingQueue uses.
        `max_in_flight` bounds the take transactions in flight at once; more takers wait
        their turn (reads, consumes and releases go out batched, a couple of requests at a
        time).
        """
        self.client = client
        self.identifier = identifier if identifier is not None else uuid.uuid4().hex
        if not self.identifier:
            raise ValueError("identifier must not be empty")
        self._data = self.identifier.encode("utf-8")
        self._lock = client.handler.lock_object()
        self._slots = Slots(client.handler, max_in_flight)
        self._reads = Batcher(client.handler, self._read_many, _MAX_READS_PER_REQUEST)
        self._finishes = Batcher(client.handler, self._finish_many, _MAX_FINISHES_PER_REQUEST)
        self._view = QueueView(on_available=self._wake_one)
        self._waiters: deque[Any] = deque()
        self._started = False
        self._stopped = False
        self._paused = False

    # -- public API ---------------------------------------------------------------------------

    @property
    def held(self) -> list[Entry]:
        """The entries this consumer holds now, by name."""
        with self._lock:
            return self._view.held()

    @property
    def depth(self) -> int:
        """How many entries are available (known, not taken by anyone)."""
        return self._view.depth

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self) -> None:
        """Start no new take until `resume()`; waiting takes keep waiting (or time out)."""
        with self._lock:
            self._paused = True

    def resume(self) -> None:
        with self._lock:
            self._paused = False
            self._wake()

    def start(self) -> None:
        """List the queue and start following it; does nothing if already started."""
        with self._lock:
            if self._started and not self._stopped:
                return
            self._started, self._stopped = True, False
        self.client.add_listener(self._on_state)
        if self.client.connected:
            self._sync()
        # Otherwise the CONNECTED state change syncs.

    def stop(self) -> None:
        """Stop taking: every waiting take returns None; the watch is removed.

        Held entries stay held: consume or release them as usual.
        """
        with self._lock:
            if self._stopped or not self._started:
                self._stopped = True
                return
            self._stopped = True
            self._view.invalidate()
            self._wake()
        self.client.remove_listener(self._on_state)
        zkext.remove_recursive_watch(self.client, ROOT, self._on_event)

    def take(self, timeout: float | None = None) -> Entry | None:
        """Take the first available entry, waiting for one up to `timeout` seconds.

        Returns None on timeout or when the consumer is stopped. While paused or suspended
        (or before the first listing) no take starts: it waits.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        waiter: Any = None
        while True:
            with self._lock:
                if not self._started:
                    raise RuntimeError("QueueConsumer.start() must be called before take()")
                if self._stopped:
                    return None
                name = None if self._paused else self._view.begin_take()
                if name is not None:
                    session = self._view.session
                    waiter = None
                else:
                    waiter = self.client.handler.event_object()
                    self._waiters.append(waiter)
            if name is not None:
                entry = self._take(name, session)
                if entry is not None or (deadline is not None and time.monotonic() >= deadline):
                    return entry
                continue
            remaining = None if deadline is None else deadline - time.monotonic()
            if (remaining is not None and remaining <= 0) or not waiter.wait(remaining):
                with self._lock:
                    if waiter.is_set():
                        self._wake(1)  # woken as we gave up: pass the wake-up on
                    else:
                        self._waiters.remove(waiter)
                return None

    def consume(self, entry: Entry) -> bool:
        """Delete the entry and our taken node in one transaction if the node is still ours.

        `entry` must be the object `take()` returned: an equal Entry from a lost session (the
        same entry may have been taken again since) is refused with False.
        """
        return self._finish(entry, consume=True)

    def release(self, entry: Entry) -> bool:
        """Delete only our taken node (if still ours): the entry is available again.

        Same rules and return value as `consume`.
        """
        return self._finish(entry, consume=False)

    def holds(self, entry: Entry) -> bool:
        """Whether this session still holds `entry`, asked of ZooKeeper (not assumed).

        A process frozen past its session timeout wakes up believing it holds its entries
        while another consumer may have taken them: ask before acting on a take. The read
        goes out batched with the other greenlets' reads, and a `consume` or `release`
        right behind it reuses its answer instead of reading again.
        """
        with self._lock:
            if not self._view.holds(entry):
                return False
            session = self._view.session
        if time.monotonic() - entry.taken_at < self._surely_alive():
            # The server heard from this session that recently: it cannot have expired
            # (and our taken node goes only with it, or with an event that drops it above).
            return True
        for _ in range(_HOLDS_TRIES):
            try:
                read = self._reads.submit(entry.taken_path).get()
            except _UNSURE:
                continue  # the retry waits for the reconnection (kazoo queues requests)
            except _SESSION_GONE:
                return False
            if isinstance(read, Exception):
                return False
            data, stat = read
            if not self._is_ours(data, stat, session):
                return False
            with self._lock:
                return self._view.confirm(entry, session, stat.version)
        return False

    # -- taking -------------------------------------------------------------------------------

    def _take(self, name: str, session: int | None) -> Entry | None:
        """One attempt at `name` (already moved from available to trying)."""
        client = self.client
        sent = time.monotonic()
        try:
            with self._slots:
                outcome, data = self._take_on_server(name)
        except _UNSURE:
            outcome, data = TakeOutcome.UNSURE, b""
        except _SESSION_GONE:
            # "Closed" while connected: kazoo could not wake its connection loop (see
            # DEFAULT_MAX_IN_FLIGHT), and the request may still go out.
            outcome = TakeOutcome.UNSURE if client.connected else TakeOutcome.LOST
            data = b""
        except BaseException:
            with self._lock:
                self._view.abandon_take(name)
            raise
        with self._lock:
            keep = outcome is TakeOutcome.TAKEN and not self._stopped and not self._paused
            entry = Entry(name, data, sent) if keep else None
            outcome = self._view.end_take(name, session, outcome, entry)
            if outcome is TakeOutcome.TAKEN and entry is not None:
                return entry
            # An unsure name is checked now if we can, else by the sync after reconnection.
            give_back = outcome in (TakeOutcome.TAKEN, TakeOutcome.ORPHAN) or (
                outcome is TakeOutcome.UNSURE and client.connected
            )
        if give_back:
            self._give_back(name, session)
        return None

    def _take_on_server(self, name: str) -> tuple[TakeOutcome, bytes]:
        """(outcome, entry data): TAKEN, GONE, BUSY (someone holds it) or ORPHAN."""
        client = self.client
        entry, taken = f"{ENTRIES}/{name}", f"{TAKEN}/{name}"
        for _ in range(2):
            transaction = client.transaction()
            # Version -1 matches any version: this only asserts that the entry exists.
            transaction.check(entry, -1)
            transaction.create(taken, self._data, ephemeral=True)
            committing = transaction.commit_async()
            # Sent after the transaction (and batched with other takers' reads), so it is
            # answered right after it; wasted only if the take fails.
            reading = self._entry_data(name)
            results = committing.get()
            if not (
                isinstance(results[0], RolledBackError) and isinstance(results[1], NoNodeError)
            ):
                break
            # The entry is there but /job/taken is not (someone deleted the tree).
            client.ensure_path(TAKEN)
        if not any(isinstance(result, Exception) for result in results):
            read = reading.get()
            if isinstance(read, NoNodeError):
                return TakeOutcome.ORPHAN, b""  # consumed by someone else right after our take
            return TakeOutcome.TAKEN, read[0]
        if isinstance(results[0], NoNodeError):
            return TakeOutcome.GONE, b""
        return TakeOutcome.BUSY, b""

    def _surely_alive(self) -> float:
        """Seconds after a request within which the session cannot have expired.

        A third of the timeout asked for, at most one second: the server may grant less than
        asked, but never less than twice its tick (one second for the smallest ticks in use).
        """
        return min(zkext.session_timeout(self.client) / 3, 1.0)

    def _entry_data(self, name: str) -> Any:
        """The async read of `name`'s data, issued with those of the next entries in line."""
        with self._lock:
            reading = self._view.prefetched(name)
            if reading is not None and (not reading.ready() or reading.successful()):
                return reading  # (a read that failed, e.g. on a connection loss, is redone)
            ahead = self._view.next_in_line(_PREFETCH)
        # Submitted in one go, so they share one multiRead.
        reading = self._reads.submit(f"{ENTRIES}/{name}")
        readings = [(other, self._reads.submit(f"{ENTRIES}/{other}")) for other in ahead]
        with self._lock:
            for other, result in readings:
                self._view.prefetch(other, result)
        return reading

    def _give_back(self, name: str, session: int | None) -> None:
        """Delete our taken node for `name` if there is one; never raises.

        If that cannot be known (connection lost), the name stays unsure until the next sync.
        """
        try:
            self._delete_own_node(name, session)
        except (*_UNSURE, *_SESSION_GONE):
            with self._lock:
                self._view.mark_unsure(name, session)
            return
        except Exception:
            log.exception("could not delete the taken node of %s", name)
        with self._lock:
            self._view.given_back(name)

    def _delete_own_node(self, name: str, session: int | None) -> bool:
        try:
            data, stat = self.client.get(f"{TAKEN}/{name}")
        except NoNodeError:
            return False
        if not self._is_ours(data, stat, session):
            return False
        try:
            self.client.delete(f"{TAKEN}/{name}", version=stat.version)
        except (NoNodeError, BadVersionError):
            return False
        return True

    def _is_ours(self, data: bytes, stat: Any, session: int | None) -> bool:
        client_id = self.client.client_id
        current = client_id[0] if client_id else None
        return (
            session is not None and stat.ephemeralOwner == session == current and data == self._data
        )

    # -- consume and release ------------------------------------------------------------------

    def _finish(self, entry: Entry, consume: bool) -> bool:
        name = entry.name
        with self._lock:
            if not self._view.begin_finish(entry):
                return False
            session = self._view.session
        done: bool | None = None
        try:
            done = self._finish_on_server(name, consume, session)
            return done
        finally:
            with self._lock:
                self._view.end_finish(name, settled=done is not None)

    def _finish_on_server(self, name: str, consume: bool, session: int | None) -> bool:
        client = self.client
        entry, taken = f"{ENTRIES}/{name}", f"{TAKEN}/{name}"
        unsure = False  # an earlier attempt may have been applied before the connection dropped
        spurious = 0
        cleanups = 0
        with self._lock:
            confirmed = self._view.pop_confirmed(name)
        while True:
            try:
                if confirmed is not None and confirmed[0] == session and not unsure:
                    # `holds` has just read our node on this session: no need to read again.
                    version = confirmed[1]
                else:
                    read = self._reads.submit(taken).get()
                    if isinstance(read, NoNodeError):
                        if unsure:
                            return not consume or client.exists(entry) is None
                        return False
                    data, stat = read
                    if not self._is_ours(data, stat, session):
                        return False
                    version = stat.version
                outcome = self._finishes.submit((name, consume, version)).get()
            except _UNSURE:
                unsure = True
                continue  # the retry waits for the reconnection (kazoo queues requests)
            except _SESSION_GONE:
                if not client.connected or spurious == 3:
                    return False
                # "Closed" while connected: kazoo could not wake its connection loop (see
                # DEFAULT_MAX_IN_FLIGHT); the request may still have gone out.
                spurious += 1
                unsure = True
                continue
            if outcome is FinishOutcome.HAS_CHILDREN and cleanups < _CLEANUPS:
                # Entries never have children; someone made these (the tree's ACLs are
                # open by default). They would keep the entry, and our taken node, forever.
                cleanups += 1
                self._remove_children(entry)
                continue
            if outcome is FinishOutcome.ENTRY_GONE:
                # Someone deleted the entry: our taken node must go anyway.
                self._give_back(name, session)
            elif outcome is FinishOutcome.HAS_CHILDREN:
                log.error("queue entry %s keeps getting child nodes: released", name)
                self._give_back(name, session)
            return outcome is FinishOutcome.DONE

    def _remove_children(self, path: str) -> None:
        try:
            children = self.client.get_children(path)
            for child in children:
                self.client.delete(f"{path}/{child}", recursive=True)
        except NoNodeError:
            return
        except KazooException as exc:
            log.error("could not remove the child nodes of %s: %s", path, type(exc).__name__)
            return
        log.warning(
            "queue entry %s had child nodes (%s): removed", path.rsplit("/", 1)[-1], len(children)
        )

    def _read_many(self, paths: list[str]) -> list[Any]:
        """Flush of `_reads`: (data, stat), or the error, for each path; one request."""
        return zkext.multi_read(self.client, paths)

    def _finish_many(self, items: list[tuple[str, bool, int]]) -> list[FinishOutcome]:
        """Flush of `_finishes`: one multi for many (name, consume, taken version) items.

        A multi stops at its first failing op: that item is settled and the others go again.
        """
        outcomes: dict[int, FinishOutcome] = {}
        todo = list(range(len(items)))
        while todo:
            transaction = self.client.transaction()
            owners: list[tuple[int, bool]] = []  # (item, is the entry op) for each op
            for index in todo:
                name, consume, version = items[index]
                if consume:
                    # The entry first: its deletion is reported before the taken node's, so
                    # no consumer sees it as available in between.
                    transaction.delete(f"{ENTRIES}/{name}")
                    owners.append((index, True))
                transaction.delete(f"{TAKEN}/{name}", version=version)
                owners.append((index, False))
            results = transaction.commit()
            failed = next(
                (
                    op
                    for op, result in enumerate(results)
                    if isinstance(result, Exception) and not isinstance(result, RolledBackError)
                ),
                None,
            )
            if failed is None:
                outcomes.update((index, FinishOutcome.DONE) for index in todo)
                break
            index, entry_op = owners[failed]
            if entry_op and isinstance(results[failed], NoNodeError):
                outcomes[index] = FinishOutcome.ENTRY_GONE
            elif entry_op and isinstance(results[failed], NotEmptyError):
                outcomes[index] = FinishOutcome.HAS_CHILDREN
            else:
                outcomes[index] = FinishOutcome.NOT_OURS
            todo.remove(index)
        return [outcomes[index] for index in range(len(items))]

    # -- following the queue ------------------------------------------------------------------

    def _sync(self) -> None:
        """List the queue and (re)install the watch: at start and after every reconnection."""
        with self._lock:
            if self._stopped:
                return
            # The watch goes on before the listing; what it reports meanwhile is replayed on
            # top of the listing, so the last word about each node wins.
            token = self._view.begin_listing()
        client = self.client
        try:
            zkext.add_recursive_watch(client, ROOT, self._on_event)
            client.ensure_path(ENTRIES)
            client.ensure_path(TAKEN)
            listing_entries = client.get_children_async(ENTRIES)
            listing_taken = client.get_children_async(TAKEN)
            entries, taken = listing_entries.get(), listing_taken.get()
            client_id = client.client_id
        except (*_UNSURE, *_SESSION_GONE) as exc:
            log.info("queue listing interrupted (%r); it is redone on reconnection", exc)
            self._abandon_listing(token)
            return
        except BaseException:
            self._abandon_listing(token)
            raise
        with self._lock:
            if self._stopped or client_id is None:
                return
            session = client_id[0]
            to_check = self._view.apply_listing(token, entries, taken, session)
            if to_check is None:
                return  # stale: a newer listing follows
            self._wake()
        for name in to_check:
            self._give_back(name, session)

    def _abandon_listing(self, token: int) -> None:
        with self._lock:
            self._view.abandon_listing(token)

    def _sync_in_background(self) -> None:
        try:
            self._sync()
        except Exception:
            log.exception("could not list the queue; retried on the next reconnection")

    def _on_state(self, state: str) -> bool:
        # Called in kazoo's connection loop: bookkeeping only, the listing runs elsewhere.
        with self._lock:
            if self._stopped:
                return False
            self._view.invalidate()
            lost = self._view.forget_session() if state == KazooState.LOST else 0
        if lost:
            log.warning("ZooKeeper session lost, and with it the %d entries held", lost)
        if state == KazooState.CONNECTED:
            self.client.handler.spawn(self._sync_in_background)
        return False  # True would unregister the listener

    def _on_event(self, event: WatchedEvent) -> None:
        # Runs in the connection's reader (see zkext): bookkeeping only.
        parent, _, name = event.path.rpartition("/")
        if parent == ENTRIES:
            is_entry = True
        elif parent == TAKEN:
            is_entry = False
        else:
            return
        if event.type == EventType.CREATED:
            created = True
        elif event.type == EventType.DELETED:
            created = False
        else:
            return
        with self._lock:
            orphaned = self._view.record(is_entry, name, created)
            session = self._view.session
        if orphaned and session is not None:
            self.client.handler.spawn(self._give_back, name, session)

    def _wake_one(self) -> None:
        self._wake(1)

    def _wake(self, count: int | None = None) -> None:
        """Wake `count` waiting takes (all by default); called with the lock held."""
        waiters = self._waiters
        while waiters and (count is None or count > 0):
            waiters.popleft().set()
            if count is not None:
                count -= 1
