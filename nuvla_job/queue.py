"""The ZooKeeper job queue under `/job` (the layout is fixed by the ZooKeeper layout spec).

`/job/entries/entry-PPP-SSSSSSSSSS` holds one job id per queued job (PPP = priority, lower is
taken first; S = ZooKeeper's sequence), and `/job/taken/<entry name>` is the ephemeral lock of
the consumer working on it. The layout is shared with kazoo's `LockingQueue`, the Nuvla API
server and the upstream executor, so names and data must stay exactly as they are.

The producer side is `put` and `put_many`; the consumer side is `QueueConsumer`, which hands
out `Entry` objects to many greenlets of one process.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import (
    EXCEPTIONS,
    BadVersionError,
    ConnectionClosedError,
    ConnectionLoss,
    NoNodeError,
    NoWatcherError,
    RolledBackError,
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
from kazoo.protocol.states import (
    EVENT_TYPE_MAP,
    EventType,
    KazooState,
    WatchedEvent,
    ZnodeStat,
)
from sortedcontainers import SortedList

log = logging.getLogger(__name__)

# -- layout ------------------------------------------------------------------------------------

ROOT = "/job"
ENTRIES = f"{ROOT}/entries"
TAKEN = f"{ROOT}/taken"
ENTRY_PREFIX = "entry-"

MIN_PRIORITY = 0
MAX_PRIORITY = 999
DEFAULT_PRIORITY = 999

# A multi-op request must fit in the server's jute.maxbuffer (1 MiB by default); each create
# costs roughly its path, its data and ~60 bytes of framing and ACL.
DEFAULT_CHUNK_SIZE = 1000
MAX_CHUNK_BYTES = 512 * 1024
_OP_OVERHEAD = 64


def check_priority(priority: int) -> int:
    """Return `priority` if it is a valid queue priority (an int in 0..999)."""
    # bool is an int subclass; True as a priority is a bug, not priority 1.
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise TypeError(f"priority must be an int, not {type(priority).__name__}")
    if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise ValueError(f"priority must be in {MIN_PRIORITY}..{MAX_PRIORITY}, got {priority}")
    return priority


def entry_prefix(priority: int) -> str:
    """The path prefix for a sequential entry: `/job/entries/entry-PPP-`."""
    return f"{ENTRIES}/{ENTRY_PREFIX}{check_priority(priority):03d}-"


def _encode_job_id(job_id: str) -> bytes:
    if not isinstance(job_id, str):
        raise TypeError(f"job id must be a str, not {type(job_id).__name__}")
    if not job_id:
        raise ValueError("job id must not be empty")
    return job_id.encode("utf-8")


# -- producer ----------------------------------------------------------------------------------


def put(client: KazooClient, job_id: str, priority: int = DEFAULT_PRIORITY) -> str:
    """Queue `job_id`; return the created entry path.

    Not retried on connection loss: a sequential create may have succeeded before the
    connection dropped, and a blind retry would queue the job twice. Callers decide.
    """
    path = entry_prefix(priority)
    data = _encode_job_id(job_id)
    return client.create(path, data, sequence=True, makepath=True)


class PutManyError(Exception):
    """A chunk of `put_many` failed; `created` lists the entries committed before it.

    Each chunk is atomic: the failed chunk created nothing, except that on a connection loss
    during its commit ZooKeeper may or may not have applied it.
    """

    def __init__(self, message: str, created: list[str]) -> None:
        super().__init__(f"{message} ({len(created)} entries were created before)")
        self.created = created


def _chunks(
    items: Iterable[str | tuple[str, int]], chunk_size: int
) -> Iterator[list[tuple[str, bytes]]]:
    """Validated (prefix, data) chunks, bounded by count and by approximate request size."""
    chunk: list[tuple[str, bytes]] = []
    size = 0
    for item in items:
        job_id, priority = (item, DEFAULT_PRIORITY) if isinstance(item, str) else item
        prefix, data = entry_prefix(priority), _encode_job_id(job_id)
        op_size = len(prefix) + len(data) + _OP_OVERHEAD
        if chunk and (len(chunk) >= chunk_size or size + op_size > MAX_CHUNK_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append((prefix, data))
        size += op_size
    if chunk:
        yield chunk


def put_many(
    client: KazooClient,
    items: Iterable[str | tuple[str, int]],
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> list[str]:
    """Queue many jobs, one ZooKeeper transaction per chunk; return the paths in input order.

    `items` are job ids (queued with the default priority) or `(job_id, priority)` pairs.
    Items are consumed lazily, so a generator of a million ids is fine. On any failure (a bad
    item or a ZooKeeper error) `PutManyError` is raised, chained to the cause.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    created: list[str] = []
    chunks = _chunks(items, chunk_size)
    ensured = False
    while True:
        try:
            chunk = next(chunks, None)
            if chunk is None:
                return created
            if not ensured:
                # Transactions cannot create parents (no makepath).
                client.ensure_path(ENTRIES)
                ensured = True
            transaction = client.transaction()
            for prefix, data in chunk:
                transaction.create(prefix, data, sequence=True)
            results = transaction.commit()
        except Exception as exc:
            raise PutManyError(f"put_many failed: {exc!r}", created) from exc
        failures = [r for r in results if isinstance(r, Exception)]
        if failures:
            # The op that failed is the one that is not a RolledBackError.
            cause = next((f for f in failures if not isinstance(f, RolledBackError)), failures[0])
            raise PutManyError(f"put_many transaction failed: {cause!r}", created) from cause
        created.extend(results)


# -- consumer ----------------------------------------------------------------------------------

# ZooKeeper formats the sequence with %010d, so past 2**31 changes of /job/entries it is negative.
_ENTRY_NAME = re.compile(rf"{ENTRY_PREFIX}(\d{{3}})-(\d{{10}}|-\d{{9,10}})")
# `job/` and URL-safe characters, as the job API makes them. Anything else is garbage: asked
# of the job API, an id with a control character, "?", "#" or "%" could fail like an
# unreachable API and be retried for ever.
_JOB_ID = re.compile(r"job/[A-Za-z0-9._~:-]+")

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
# Two batches on their way at once: the next one leaves without waiting for the answer.
_FLUSHES_IN_FLIGHT = 2
# A take reads its entry's data together with that of the next entries in line: entries never
# change, and one multiRead for many costs ZooKeeper about as much as one read.
_PREFETCH = 32
# How often `holds` asks again while the connection is only lost (not the session).
_HOLDS_TRIES = 5


@dataclass(frozen=True)
class Entry:
    """A queue entry as taken: its node name under `/job/entries` and its data."""

    name: str
    data: bytes
    # When the take was sent (time.monotonic()): the session was alive then.
    taken_at: float = field(default=0.0, compare=False)

    @property
    def path(self) -> str:
        return f"{ENTRIES}/{self.name}"

    @property
    def taken_path(self) -> str:
        return f"{TAKEN}/{self.name}"

    @property
    def priority(self) -> int | None:
        """The priority from a well-formed name (`entry-PPP-SSSSSSSSSS`), else None."""
        match = _ENTRY_NAME.fullmatch(self.name)
        return int(match.group(1)) if match else None

    @property
    def job_id(self) -> str | None:
        """The job id if the data is one (`job/<id>`, URL-safe, in UTF-8), else None."""
        try:
            text = self.data.decode("utf-8")
        except UnicodeDecodeError:
            return None
        return text if _JOB_ID.fullmatch(text) else None


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
    view: the entries, the taken nodes, and a sorted list of the available names (neither
    taken, nor being taken here). A take pops the smallest available name, so entries go out by
    priority then arrival, and no take lists the queue again whatever its depth.

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
        self._slots = _Slots(client.handler, max_in_flight)
        self._reads = _Batcher(client.handler, self._read_many, _MAX_READS_PER_REQUEST)
        self._finishes = _Batcher(client.handler, self._finish_many, _MAX_FINISHES_PER_REQUEST)
        # The view, from the listing and the watch.
        self._entries: set[str] = set()
        self._taken: set[str] = set()
        # Names out of the available list because of what this consumer is doing.
        self._trying: set[str] = set()  # a take transaction is in flight
        self._held: dict[str, Entry] = {}  # ours
        self._closing: set[str] = set()  # held, with a consume or release in flight
        self._unsure: set[str] = set()  # a connection loss hid whether we created its node
        # Entry data read ahead of the takes (name -> async (data, stat) or error).
        self._prefetched: dict[str, Any] = {}
        # Taken-node versions `holds` just read from the server, for `consume`/`release`.
        self._confirmed: dict[str, tuple[int, int]] = {}  # name -> (session, version)
        self._available = SortedList()
        self._waiters: deque[Any] = deque()
        self._session: int | None = None  # the session the view and `_held` belong to
        self._generation = 0  # bumped by every state change: a sync in flight is then stale
        self._pending: list[tuple[bool, str, bool]] | None = None  # events during a sync
        self._ready = False
        self._started = False
        self._stopped = False
        self._paused = False

    # -- public API ---------------------------------------------------------------------------

    @property
    def held(self) -> list[Entry]:
        """The entries this consumer holds now, by name."""
        with self._lock:
            return [self._held[name] for name in sorted(self._held)]

    @property
    def depth(self) -> int:
        """How many entries are available (known, not taken by anyone)."""
        return len(self._available)

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
            self._ready = False
            self._generation += 1
            self._pending = None
            self._wake()
        self.client.remove_listener(self._on_state)
        _remove_recursive_watch(self.client, ROOT, self._on_event)

    def take(self, timeout: float | None = None) -> Entry | None:
        """Take the first available entry, waiting for one up to `timeout` seconds.

        Returns None on timeout or when the consumer is stopped. While paused or suspended
        (or before the first listing) no take starts: it waits.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                if not self._started:
                    raise RuntimeError("QueueConsumer.start() must be called before take()")
                if self._stopped:
                    return None
                if self._ready and not self._paused and self._available:
                    name = self._available.pop(0)
                    self._trying.add(name)
                    session = self._session
                    waiter = None
                else:
                    waiter = self.client.handler.event_object()
                    self._waiters.append(waiter)
            if waiter is None:
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
        name = entry.name
        with self._lock:
            if self._held.get(name) is not entry:
                return False
            session = self._session
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
                if self._held.get(name) is not entry or session != self._session:
                    return False
                self._confirmed[name] = (session, stat.version)
            return True
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
            outcome, data = "unsure", b""
        except _SESSION_GONE:
            # "Closed" while connected: kazoo could not wake its connection loop (see
            # DEFAULT_MAX_IN_FLIGHT), and the request may still go out.
            outcome, data = ("unsure" if client.connected else "lost"), b""
        except BaseException:
            with self._lock:
                self._trying.discard(name)
                self._refresh(name)
            raise
        give_back = False
        with self._lock:
            self._trying.discard(name)
            if outcome == "gone":
                # Its deletion event came before this answer, so the view should know already;
                # if it does not, trust the server rather than retry the name for ever.
                self._entries.discard(name)
            ours = session is not None and session == self._session and outcome != "lost"
            if ours and outcome == "taken":
                if name not in self._entries:
                    outcome = "orphan"  # its deletion was reported while we were taking it
                elif not self._stopped and not self._paused:
                    entry = self._held[name] = Entry(name, data, sent)
                    return entry
            if ours and outcome == "unsure":
                self._unsure.add(name)
            # An unsure name is checked now if we can, else by the sync after reconnection.
            give_back = ours and (
                outcome in ("taken", "orphan") or (outcome == "unsure" and client.connected)
            )
            self._refresh(name)
        if give_back:
            self._give_back(name, session)
        return None

    def _take_on_server(self, name: str) -> tuple[str, bytes]:
        """(outcome, entry data): taken, gone, busy (someone holds it) or orphan."""
        client = self.client
        entry_path, taken_path = f"{ENTRIES}/{name}", f"{TAKEN}/{name}"
        for _ in range(2):
            transaction = client.transaction()
            # Version -1 matches any version: this only asserts that the entry exists.
            transaction.check(entry_path, -1)
            transaction.create(taken_path, self._data, ephemeral=True)
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
                return "orphan", b""  # consumed by someone else right after our take
            return "taken", read[0]
        return ("gone" if isinstance(results[0], NoNodeError) else "busy"), b""

    def _surely_alive(self) -> float:
        """Seconds after a request within which the session cannot have expired.

        A third of the timeout asked for, at most one second: the server may grant less than
        asked, but never less than twice its tick (one second for the smallest ticks in use).
        """
        asked = getattr(self.client, "_session_timeout", 0) / 1000
        return min(asked / 3, 1.0)

    def _entry_data(self, name: str) -> Any:
        """The async read of `name`'s data, issued with those of the next entries in line."""
        with self._lock:
            reading = self._prefetched.pop(name, None)
            if reading is not None and (not reading.ready() or reading.successful()):
                return reading  # (a read that failed, e.g. on a connection loss, is redone)
            ahead = [
                other
                for other in self._available.islice(0, _PREFETCH)
                if other not in self._prefetched
            ]
        # Submitted in one go, so they share one multiRead.
        reading = self._reads.submit(f"{ENTRIES}/{name}")
        readings = [(other, self._reads.submit(f"{ENTRIES}/{other}")) for other in ahead]
        with self._lock:
            for other, result in readings:
                if other in self._entries:  # not deleted meanwhile
                    self._prefetched.setdefault(other, result)
        return reading

    def _give_back(self, name: str, session: int | None) -> None:
        """Delete our taken node for `name` if there is one; never raises.

        If that cannot be known (connection lost), the name stays unsure until the next sync.
        """
        try:
            self._delete_own_node(name, session)
        except (*_UNSURE, *_SESSION_GONE):
            with self._lock:
                if session == self._session:
                    self._unsure.add(name)
                    self._refresh(name)
            return
        except Exception:
            log.exception("could not delete the taken node of %s", name)
        with self._lock:
            self._unsure.discard(name)
            self._refresh(name)

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
            # Identity, not equality: an Entry of a lost session equals a later take of it.
            if self._held.get(name) is not entry or name in self._closing:
                return False
            self._closing.add(name)
            session = self._session
        done: bool | None = None
        try:
            done = self._finish_on_server(name, consume, session)
            return done
        finally:
            with self._lock:
                self._closing.discard(name)
                if done is not None:
                    self._held.pop(name, None)
                self._refresh(name)

    def _finish_on_server(self, name: str, consume: bool, session: int | None) -> bool:
        client = self.client
        entry_path, taken_path = f"{ENTRIES}/{name}", f"{TAKEN}/{name}"
        unsure = False  # an earlier attempt may have been applied before the connection dropped
        spurious = 0
        with self._lock:
            confirmed = self._confirmed.pop(name, None)
        while True:
            try:
                if confirmed is not None and confirmed[0] == session and not unsure:
                    # `holds` has just read our node on this session: no need to read again.
                    version = confirmed[1]
                else:
                    read = self._reads.submit(taken_path).get()
                    if isinstance(read, NoNodeError):
                        if unsure:
                            return not consume or client.exists(entry_path) is None
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
            if outcome == "entry gone":
                # Someone deleted the entry: our taken node must go anyway.
                self._give_back(name, session)
            return outcome == "done"

    def _read_many(self, paths: list[str]) -> list[Any]:
        """Flush of `_reads`: (data, stat), or the error, for each path; one request."""
        return _multi_read(self.client, paths)

    def _finish_many(self, items: list[tuple[str, bool, int]]) -> list[str]:
        """Flush of `_finishes`: one multi for many (name, consume, taken version) items.

        Each gets "done", "entry gone" or "not ours". A multi stops at its first failing op:
        that item is settled and the others go again.
        """
        outcomes: dict[int, str] = {}
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
                outcomes.update((index, "done") for index in todo)
                break
            index, entry_op = owners[failed]
            gone = entry_op and isinstance(results[failed], NoNodeError)
            outcomes[index] = "entry gone" if gone else "not ours"
            todo.remove(index)
        return [outcomes[index] for index in range(len(items))]

    # -- following the queue ------------------------------------------------------------------

    def _sync(self) -> None:
        """List the queue and (re)install the watch: at start and after every reconnection."""
        with self._lock:
            if self._stopped:
                return
            self._generation += 1
            generation = self._generation
            self._ready = False
            # The watch goes on before the listing; what it reports meanwhile is replayed on
            # top of the listing, so the last word about each node wins.
            self._pending = []
        client = self.client
        try:
            _add_recursive_watch(client, ROOT, self._on_event)
            client.ensure_path(ENTRIES)
            client.ensure_path(TAKEN)
            listing_entries = client.get_children_async(ENTRIES)
            listing_taken = client.get_children_async(TAKEN)
            entries, taken = set(listing_entries.get()), set(listing_taken.get())
            client_id = client.client_id
        except (*_UNSURE, *_SESSION_GONE) as exc:
            log.info("queue listing interrupted (%r); it is redone on reconnection", exc)
            self._drop_pending(generation)
            return
        except BaseException:
            self._drop_pending(generation)
            raise
        with self._lock:
            if generation != self._generation or self._stopped or client_id is None:
                return
            events, self._pending = self._pending or [], None
            for is_entry, name, created in events:
                names = entries if is_entry else taken
                if created:
                    names.add(name)
                else:
                    names.discard(name)
            session = client_id[0]
            if session != self._session:
                self._forget_session()
                self._session = session
            self._entries, self._taken = entries, taken
            self._prefetched = {}
            self._confirmed = {n: v for n, v in self._confirmed.items() if v[0] == session}
            orphans = []
            for name in list(self._held):
                if name in self._closing:
                    continue
                if name not in taken:
                    del self._held[name]  # someone deleted our taken node
                elif name not in entries:
                    del self._held[name]
                    orphans.append(name)
            # Taken nodes that may be ours though nothing here holds them: after an unsure
            # take, or left without their entry.
            to_check = (self._unsure & taken) | (taken - entries)
            to_check -= self._held.keys() | self._trying | self._closing
            to_check.update(orphans)
            self._unsure = to_check & self._unsure
            blocked = self._trying | self._held.keys() | self._unsure
            self._available = SortedList(
                name for name in entries if name not in taken and name not in blocked
            )
            self._ready = True
            self._wake()
        for name in sorted(to_check):
            self._give_back(name, session)

    def _drop_pending(self, generation: int) -> None:
        with self._lock:
            if generation == self._generation:
                self._pending = None

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
            self._generation += 1
            self._ready = False
            self._pending = None
            lost = len(self._held) if state == KazooState.LOST else 0
            if state == KazooState.LOST:
                self._forget_session()
        if lost:
            log.warning("ZooKeeper session lost, and with it the %d entries held", lost)
        if state == KazooState.CONNECTED:
            self.client.handler.spawn(self._sync_in_background)
        return False  # True would unregister the listener

    def _forget_session(self) -> None:
        """The session ended: its taken nodes, hence everything we held, are gone."""
        self._held.clear()
        self._unsure.clear()
        self._confirmed.clear()
        self._session = None

    def _on_event(self, event: WatchedEvent) -> None:
        # Runs in the connection's reader (see _add_recursive_watch): bookkeeping only.
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
        orphan_of = None
        with self._lock:
            if self._pending is not None:
                self._pending.append((is_entry, name, created))
                return
            names = self._entries if is_entry else self._taken
            if created:
                names.add(name)
            else:
                names.discard(name)
                if is_entry:
                    self._prefetched.pop(name, None)
                if name in self._held and name not in self._closing:
                    # Our entry or our taken node was deleted by someone else: not ours any
                    # more, and a taken node without its entry is ours to delete.
                    del self._held[name]
                    if is_entry:
                        orphan_of = self._session
            self._refresh(name)
        if orphan_of is not None:
            self.client.handler.spawn(self._give_back, name, orphan_of)

    def _refresh(self, name: str) -> None:
        """Put `name` in or out of the available list after something about it changed."""
        if (
            name in self._entries
            and name not in self._taken
            and name not in self._trying
            and name not in self._held
            and name not in self._unsure
        ):
            if name not in self._available:
                self._available.add(name)
                self._wake(1)
        else:
            self._available.discard(name)

    def _wake(self, count: int | None = None) -> None:
        """Wake `count` waiting takes (all by default); called with the lock held."""
        waiters = self._waiters
        while waiters and (count is None or count > 0):
            waiters.popleft().set()
            if count is not None:
                count -= 1


class _Slots:
    """At most `size` holders at a time, served in order; works with any kazoo handler."""

    def __init__(self, handler: Any, size: int) -> None:
        if size < 1:
            raise ValueError("max_in_flight must be at least 1")
        self._handler = handler
        self._lock = handler.lock_object()
        self._free = size
        self._waiters: deque[Any] = deque()

    def __enter__(self) -> None:
        with self._lock:
            if self._free:
                self._free -= 1
                return
            turn = self._handler.event_object()
            self._waiters.append(turn)
        try:
            turn.wait()
        except BaseException:
            # Killed while waiting: give back the slot if it was handed over meanwhile.
            with self._lock:
                if not turn.is_set():
                    self._waiters.remove(turn)
                    raise
            self.__exit__()
            raise

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            if self._waiters:
                self._waiters.popleft().set()  # the slot passes straight to the next holder
            else:
                self._free += 1


class _Batcher:
    """Group commit: many callers' items go out together, `parallel` flushes at a time.

    `submit(item)` returns an async result. Whatever is submitted while the flushes are on
    their way goes in a next one, so batches grow with the load and a lone caller waits for
    nothing.
    `flush(items)` returns one outcome per item; if it raises, every item of that flush gets
    the exception.
    """

    def __init__(
        self,
        handler: Any,
        flush: Callable[[list[Any]], list[Any]],
        size: int,
        parallel: int = _FLUSHES_IN_FLIGHT,
    ) -> None:
        self._handler = handler
        self._flush = flush
        self._size = size
        self._parallel = parallel
        self._lock = handler.lock_object()
        self._pending: list[tuple[Any, Any]] = []
        self._flushing = 0

    def submit(self, item: Any) -> Any:
        result = self._handler.async_result()
        with self._lock:
            self._pending.append((item, result))
            start = self._flushing < self._parallel
            if start:
                self._flushing += 1
        if start:
            self._handler.spawn(self._run)
        return result

    def _run(self) -> None:
        while True:
            with self._lock:
                batch = self._pending[: self._size]
                del self._pending[: self._size]
                if not batch:
                    self._flushing -= 1
                    return
            try:
                outcomes = self._flush([item for item, _ in batch])
            except BaseException as exc:
                for _, result in batch:
                    result.set_exception(exc)
                if not isinstance(exc, Exception):
                    with self._lock:
                        self._flushing -= 1
                    raise
            else:
                for (_, result), outcome in zip(batch, outcomes, strict=True):
                    result.set(outcome)


# -- persistent recursive watches --------------------------------------------------------------
# ZooKeeper 3.6+ watches a whole subtree with one registration that stays (AddWatch, opcode 106)
# and reports each created, changed or deleted node with its own path, and reads many nodes in
# one request (multiRead, opcode 22). kazoo 2.11 has no API for either, so the requests go
# through the client's request queue and the events are picked off its connection before kazoo
# dispatches its own watches. The two private kazoo names used here
# (`KazooClient._call` and `ConnectionHandler._read_watch_event`) are covered by the integration
# tests. The watch does not survive a reconnection: callers add it again on CONNECTED.
#
# Callbacks run right in the connection's reader, not through kazoo's callback queue: an event
# is then handled before any response read after it, so a caller that sees a failed request
# has already seen the changes that made it fail. They must be quick and never block.

_ADD_WATCH = 106
_REMOVE_WATCHES = 18
_MULTI_READ = 22
_GET_DATA = 4
_ERROR = -1
_MODE_PERSISTENT_RECURSIVE = 1
_WATCHER_ANY = 3  # 3.8 cannot remove a persistent watch by its own type (3.9 can); Any can
_REMOVE_TIMEOUT = 10.0

WatchCallback = Callable[[WatchedEvent], Any]


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


def _multi_read(client: KazooClient, paths: list[str]) -> list[Any]:
    """(data, stat) or the error for each of `paths`, in one request."""
    request = _MultiRead(tuple(_server_path(client, path) for path in paths))
    return _send(client, request).get()


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _recursive_watchers(client: KazooClient) -> dict[str, list[WatchCallback]]:
    """The client's recursive-watch callbacks by server path; hooks its connection once."""
    connection = client._connection
    watchers: dict[str, list[WatchCallback]] | None = getattr(
        connection, "_nuvla_recursive_watchers", None
    )
    if watchers is not None:
        return watchers
    if not hasattr(connection, "_read_watch_event"):
        raise RuntimeError("this kazoo version cannot be hooked for persistent watches")
    registry: dict[str, list[WatchCallback]] = {}
    read_watch_event = connection._read_watch_event

    def read_watch_event_too(buffer: bytes, offset: int) -> Any:
        if registry:
            watch, _ = Watch.deserialize(buffer, offset)
            event_type = EVENT_TYPE_MAP.get(watch.type)
            # The lists are replaced, never changed in place, so no lock is needed here.
            callbacks = [
                callback
                for root, callbacks in list(registry.items())
                if _under(watch.path, root)
                for callback in callbacks
            ]
            if event_type is not None and callbacks:
                event = WatchedEvent(event_type, client.client_state, client.unchroot(watch.path))
                for callback in callbacks:
                    try:
                        callback(event)
                    except Exception:  # never let it break kazoo's connection loop
                        log.exception("error in the watch callback for %s", watch.path)
                if watch.path not in client._data_watchers and (
                    watch.path not in client._child_watchers
                ):
                    return None  # no kazoo watch to fire: spare kazoo's own parsing
        return read_watch_event(buffer, offset)

    connection._read_watch_event = read_watch_event_too
    connection._nuvla_recursive_watchers = registry
    return registry


def _send(client: KazooClient, request: Any) -> Any:
    result = client.handler.async_result()
    client._call(request, result)
    return result


def _server_path(client: KazooClient, path: str) -> str:
    if not client.chroot:
        return path
    return client.chroot if path == "/" else client.chroot + path


def _add_recursive_watch(client: KazooClient, path: str, callback: WatchCallback) -> None:
    """Watch `path` and everything below it; `callback` gets every created/changed/deleted node.

    `callback` is called in the connection's reader: it must be quick and never block. Adding
    the same callback again only re-registers the watch on the server (needed after a
    reconnection).
    """
    server_path = _server_path(client, path)
    registry = _recursive_watchers(client)
    callbacks = registry.get(server_path, [])
    if callback not in callbacks:
        registry[server_path] = [*callbacks, callback]
    _send(client, _WatchRequest(_ADD_WATCH, server_path, _MODE_PERSISTENT_RECURSIVE)).get()


def _remove_recursive_watch(client: KazooClient, path: str, callback: WatchCallback) -> None:
    """Stop calling `callback`; the server watch goes when no callback is left on `path`."""
    server_path = _server_path(client, path)
    registry = _recursive_watchers(client)
    callbacks = [cb for cb in registry.get(server_path, []) if cb != callback]
    if callbacks:
        registry[server_path] = callbacks
        return
    registry.pop(server_path, None)
    if not client.connected:
        return  # the watch went with the connection
    try:
        _send(client, _WatchRequest(_REMOVE_WATCHES, server_path, _WATCHER_ANY)).get(
            timeout=_REMOVE_TIMEOUT
        )
    except (NoWatcherError, *_UNSURE, *_SESSION_GONE):
        pass
    except client.handler.timeout_exception:
        log.warning("no answer removing the watch on %s", path)
