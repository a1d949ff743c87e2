"""QueueConsumer against a real ZooKeeper, beside kazoo's LockingQueue.

How gevent is used here: the consumer runs exactly as in the executor, on a KazooClient with
kazoo's gevent handler, and the tests drive it with explicit greenlets. The pytest process is
NOT monkey-patched (the other tests, and the `zk` fixture's client, use real threads), so:

- the gevent hub runs only while the test's main greenlet waits on gevent (`greenlet.get`,
  `gevent.joinall`, `gevent.idle`, `gevent.sleep` in `wait_until`);
- a call on a threading-handler client (`zk`, used to arrange and inspect the tree) blocks the
  whole gevent side meanwhile. That is harmless, and some tests rely on it: watch events cannot
  reach the consumer between that call and the next gevent wait, which stages races exactly;
- kazoo `LockingQueue` consumers (the upstream engine's recipe) run on threading clients in real
  threads, as upstream does, while the main thread runs the hub.

A subprocess that monkey-patches would hide failures behind process plumbing and could not
reach inside the consumer; this keeps everything in one debuggable process. Waits are on
results or on conditions (`wait_until`), never on fixed sleeps.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import gevent
import pytest
from kazoo.client import KazooClient
from kazoo.recipe.queue import LockingQueue

from nuvla_job.queue import (
    ENTRIES,
    ROOT,
    TAKEN,
    Entry,
    QueueConsumer,
    put,
    put_many,
)
from tests.support import waiting
from tests.support.zookeeper import ZooKeeperServer

WAIT = 10.0


def wait_until(predicate: Callable[[], Any], timeout: float = WAIT, what: str = "") -> None:
    """Poll `predicate` (letting the gevent hub run) until it is true or `timeout` passes."""
    waiting.wait_for(predicate, what or repr(predicate), timeout, pause=gevent.sleep, interval=0.01)


def expire_session(zk_factory: Callable[..., KazooClient], client: KazooClient) -> None:
    """Close `client`'s session from a second client that joins it (kazoo's test trick)."""
    intruder = zk_factory(client_id=client.client_id)
    intruder.stop()


def entry_names(client: KazooClient) -> list[str]:
    return sorted(client.get_children(ENTRIES))


@pytest.fixture
def gevent_client(zk: KazooClient, zk_factory: Callable[..., KazooClient]) -> KazooClient:
    """A started client on kazoo's gevent handler (after `zk` cleaned the tree)."""
    return zk_factory(use_gevent=True)


@pytest.fixture
def new_consumer(
    zk: KazooClient, zk_factory: Callable[..., KazooClient]
) -> Iterator[Callable[..., QueueConsumer]]:
    """Make started consumers, each on its own gevent client unless one is given."""
    made: list[QueueConsumer] = []

    def make(client: KazooClient | None = None, **kw: Any) -> QueueConsumer:
        consumer = QueueConsumer(client or zk_factory(use_gevent=True), **kw)
        consumer.start()
        made.append(consumer)
        return consumer

    yield make
    for consumer in made:
        consumer.stop()


# -- Entry ------------------------------------------------------------------------------------


def test_entry_properties() -> None:
    entry = Entry("entry-042-0000000017", b"job/0b5c1e6a-5f3f-4e86-9a3f-1d2f7ad2d2c4")
    assert entry.path == f"{ENTRIES}/entry-042-0000000017"
    assert entry.taken_path == f"{TAKEN}/entry-042-0000000017"
    assert entry.priority == 42
    assert entry.job_id == "job/0b5c1e6a-5f3f-4e86-9a3f-1d2f7ad2d2c4"
    # A sequence past 2**31 is formatted negative by ZooKeeper: still a well-formed name.
    assert Entry("entry-999--2147483648", b"").priority == 999
    for name in ("garbage", "entry-1-0000000001", "entry-001-12", "entry-001-0000000001x"):
        assert Entry(name, b"job/x").priority is None
    for data in (
        b"",
        b"\xff\xfe",
        b"job/",
        b"nuvlabox/1",
        b"job/a b",
        b"job/a\n",
        b"job/a/b",
        b"job/a\x00b",
        b"job/a?x",
        b"job/a#x",
        b"job/a%2fb",
    ):
        assert Entry("entry-001-0000000001", data).job_id is None


# -- taking -----------------------------------------------------------------------------------


def test_takes_by_priority_then_arrival(
    zk: KazooClient, new_consumer: Callable[..., QueueConsumer]
) -> None:
    put_many(zk, [("job/a", 5), ("job/b", 1), ("job/c", 5), ("job/d", 0), ("job/e", 1)])
    consumer = new_consumer()
    assert consumer.depth == 5

    first = consumer.take(timeout=WAIT)
    assert first is not None and first.job_id == "job/d"
    # Queued after start: followed through the watch, and still ordered by priority first.
    put(zk, "job/f", 0)
    wait_until(lambda: consumer.depth == 5, what="the new entry in the view")

    taken = [consumer.take(timeout=WAIT) for _ in range(5)]
    assert [e.job_id for e in taken if e] == ["job/f", "job/b", "job/e", "job/a", "job/c"]
    assert consumer.take(timeout=0.05) is None
    assert consumer.held == sorted([first, *taken], key=lambda e: e.name)  # type: ignore[arg-type]


def test_new_entry_wakes_a_waiting_take(
    zk: KazooClient, new_consumer: Callable[..., QueueConsumer]
) -> None:
    consumer = new_consumer()
    waiting = gevent.spawn(consumer.take, WAIT)
    gevent.idle()  # runs the take until it blocks
    assert not waiting.ready()

    started = time.monotonic()
    put(zk, "job/new", 3)
    entry = waiting.get(timeout=WAIT)
    latency = time.monotonic() - started
    assert entry is not None and entry.job_id == "job/new"
    assert latency < 1.0, f"the take woke {latency:.3f} s after the entry was queued"


def test_concurrent_takes_get_distinct_entries(
    zk: KazooClient, new_consumer: Callable[..., QueueConsumer]
) -> None:
    paths = put_many(zk, [(f"job/{i}", i % 4) for i in range(30)])
    consumer = new_consumer()
    takers = [gevent.spawn(consumer.take, WAIT) for _ in range(20)]
    gevent.joinall(takers, timeout=WAIT, raise_error=True)

    names = [taker.value.name for taker in takers]
    assert len(set(names)) == 20
    first_20 = sorted(path.rsplit("/", 1)[1] for path in paths)[:20]
    assert sorted(names) == first_20
    assert sorted(zk.get_children(TAKEN)) == first_20
    assert [e.name for e in consumer.held] == first_20
    assert consumer.depth == 10


def test_consume_deletes_entry_and_taken_node(
    zk: KazooClient, new_consumer: Callable[..., QueueConsumer]
) -> None:
    put_many(zk, ["job/1", "job/2"])
    consumer = new_consumer()
    entry = consumer.take(timeout=WAIT)
    assert entry is not None
    assert zk.exists(entry.taken_path) is not None
    assert zk.get(entry.taken_path)[0] == consumer.identifier.encode()

    assert consumer.consume(entry) is True
    assert zk.exists(entry.path) is None
    assert zk.exists(entry.taken_path) is None
    assert consumer.held == []
    assert consumer.consume(entry) is False  # not ours any more: False, no NoNodeError
    assert consumer.release(entry) is False
    assert len(entry_names(zk)) == 1


def test_consume_removes_nodes_someone_put_under_the_entry(
    zk: KazooClient, new_consumer: Callable[..., QueueConsumer]
) -> None:
    # The finding: an entry with a child node stayed in /job/entries and /job/taken after
    # the executor dropped it (ZooKeeper does not delete a node that has children).
    put_many(zk, ["job/1", "job/2"])
    consumer = new_consumer()
    entry = consumer.take(timeout=WAIT)
    assert entry is not None
    zk.create(f"{entry.path}/child/grandchild", b"x", makepath=True)
    assert consumer.consume(entry) is True
    assert zk.exists(entry.path) is None
    assert zk.exists(entry.taken_path) is None
    assert consumer.held == []
    rest = consumer.take(timeout=WAIT)
    assert rest is not None and rest.job_id == "job/2"


def test_release_makes_the_entry_available_to_another_consumer(
    zk: KazooClient, new_consumer: Callable[..., QueueConsumer]
) -> None:
    put(zk, "job/released", 0)
    first, second = new_consumer(identifier="first"), new_consumer(identifier="second")
    entry = first.take(timeout=WAIT)
    assert entry is not None
    assert second.take(timeout=0.1) is None  # held by the first consumer

    assert first.release(entry) is True
    assert zk.exists(entry.taken_path) is None and zk.exists(entry.path) is not None
    again = second.take(timeout=WAIT)
    assert again == entry
    assert zk.get(entry.taken_path)[0] == b"second"
    assert first.release(entry) is False
    assert second.consume(again) is True


def test_consume_or_release_of_an_entry_another_consumer_now_holds_is_refused(
    zk: KazooClient, new_consumer: Callable[..., QueueConsumer]
) -> None:
    put_many(zk, ["job/x", "job/y"])
    consumer = new_consumer()
    x, y = consumer.take(timeout=WAIT), consumer.take(timeout=WAIT)
    assert x is not None and y is not None

    # Our taken node replaced by another session's in one step. `zk` is a threading client:
    # the gevent side does not run until consume() waits, so the consumer still believes it
    # holds x and must find out from ZooKeeper itself (ownership check).
    swap = zk.transaction()
    swap.delete(x.taken_path)
    swap.create(x.taken_path, b"someone-else", ephemeral=True)
    assert not any(isinstance(result, Exception) for result in swap.commit())
    assert consumer.consume(x) is False
    assert zk.get(x.taken_path)[0] == b"someone-else"
    assert zk.exists(x.path) is not None

    # Same data as ours (our identifier) but another session: still not ours.
    swap = zk.transaction()
    swap.delete(y.taken_path)
    swap.create(y.taken_path, consumer.identifier.encode(), ephemeral=True)
    assert not any(isinstance(result, Exception) for result in swap.commit())
    assert consumer.release(y) is False
    data, stat = zk.get(y.taken_path)
    assert stat.ephemeralOwner == zk.client_id[0]
    assert consumer.held == []


def test_concurrent_consumes_are_settled_one_by_one_when_one_fails(
    zk: KazooClient, new_consumer: Callable[..., QueueConsumer]
) -> None:
    put_many(zk, [f"job/{i}" for i in range(5)])
    consumer = new_consumer()
    entries = [consumer.take(timeout=WAIT) for _ in range(5)]
    assert all(entries)
    gone = entries[2]
    assert gone is not None
    # Deleted behind the consumer's back (the gevent side is blocked during this call); the
    # consumes below go out together, and the one of `gone` fails inside the shared multi.
    zk.delete(gone.path)
    consumes = [gevent.spawn(consumer.consume, entry) for entry in entries]
    gevent.joinall(consumes, timeout=WAIT, raise_error=True)

    assert [g.value for g in consumes] == [True, True, False, True, True]
    assert entry_names(zk) == []
    wait_until(lambda: zk.get_children(TAKEN) == [], what="the orphaned taken node deleted")
    assert consumer.held == []


def test_taken_node_whose_entry_is_gone_is_cleaned_up(
    zk: KazooClient,
    zk_factory: Callable[..., KazooClient],
    new_consumer: Callable[..., QueueConsumer],
) -> None:
    put_many(zk, ["job/1", "job/2"])
    consumer = new_consumer()
    entry = consumer.take(timeout=WAIT)
    assert entry is not None
    # Someone else's taken node without an entry (e.g. a kazoo consumer between its create and
    # its own clean-up): not ours, so left alone.
    other = zk_factory()
    other.create(f"{TAKEN}/entry-000-9999999999", b"other", ephemeral=True)

    zk.delete(entry.path)  # the entry goes while we hold it
    wait_until(lambda: zk.exists(entry.taken_path) is None, what="our taken node deleted")
    assert consumer.held == []
    assert consumer.consume(entry) is False
    assert zk.exists(f"{TAKEN}/entry-000-9999999999") is not None
    # The consumer goes on with the rest of the queue.
    rest = consumer.take(timeout=WAIT)
    assert rest is not None and rest.job_id == "job/2"
    assert consumer.consume(rest) is True


def test_entry_taken_by_another_client_waits_for_its_session_to_end(
    zk: KazooClient,
    zk_factory: Callable[..., KazooClient],
    new_consumer: Callable[..., QueueConsumer],
) -> None:
    blocked = put(zk, "job/blocked", 0).rsplit("/", 1)[1]
    put(zk, "job/free", 9)
    zk.ensure_path(TAKEN)
    other = zk_factory()
    other.create(f"{TAKEN}/{blocked}", b"0123456789abcdef0123456789abcdef", ephemeral=True)

    consumer = new_consumer()
    free = consumer.take(timeout=WAIT)
    assert free is not None and free.job_id == "job/free"
    waiting = gevent.spawn(consumer.take, WAIT)
    gevent.idle()
    assert not waiting.ready()

    other.stop()  # its session closes: its ephemeral taken node goes
    entry = waiting.get(timeout=WAIT)
    assert entry is not None and entry.name == blocked
    assert zk.get(entry.taken_path)[0] == consumer.identifier.encode()


def test_lost_session_drops_held_entries_and_the_consumer_goes_on(
    zk: KazooClient,
    zk_factory: Callable[..., KazooClient],
    new_consumer: Callable[..., QueueConsumer],
) -> None:
    put_many(zk, [(f"job/{i}", 1) for i in range(3)])
    client = zk_factory(use_gevent=True)
    consumer = new_consumer(client)
    old = [consumer.take(timeout=WAIT), consumer.take(timeout=WAIT)]
    session = client.client_id[0]

    expire_session(zk_factory, client)
    wait_until(
        lambda: client.connected and client.client_id[0] != session and consumer.depth == 3,
        what="a new session and the queue listed again",
    )
    assert consumer.held == []
    assert zk.get_children(TAKEN) == []
    # Stale entries are refused, even though the same entries are taken again below.
    again = [consumer.take(timeout=WAIT) for _ in range(3)]
    assert [e.name for e in again if e] == entry_names(zk)
    assert again[:2] == old
    assert consumer.consume(old[0]) is False  # type: ignore[arg-type]
    for entry in again:
        assert consumer.consume(entry) is True  # type: ignore[arg-type]
    assert entry_names(zk) == []


def test_no_take_while_suspended_and_resync_after(
    zookeeper: ZooKeeperServer,
    zk: KazooClient,
    zk_factory: Callable[..., KazooClient],
    new_consumer: Callable[..., QueueConsumer],
) -> None:
    put_many(zk, ["job/1", "job/2", "job/3"])
    # Sessions long enough to outlive a server restart, however slow the JVM is to start.
    client = zk_factory(use_gevent=True, timeout=30.0)
    consumer = new_consumer(client)
    held = consumer.take(timeout=WAIT)
    session = client.client_id[0]

    zookeeper.stop()
    try:
        wait_until(lambda: not client.connected, what="the connection to drop")
        assert consumer.take(timeout=0.2) is None  # two entries known, none taken
    finally:
        zookeeper.start()
    # While this greenlet blocks, the gevent client cannot reconnect: the entry is queued
    # while it is away, and no watch reports it; the listing on reconnection must.
    put(zk_factory(timeout=30.0), "job/while-away", 0)
    wait_until(lambda: client.connected, what="the reconnection")
    # Same session (down for less than its timeout): our taken node survived.
    assert client.client_id[0] == session
    entries = [consumer.take(timeout=WAIT) for _ in range(3)]
    assert [e.job_id for e in entries if e] == ["job/while-away", "job/2", "job/3"]
    assert consumer.held == sorted([held, *entries], key=lambda e: e.name)  # type: ignore[arg-type]
    assert consumer.consume(held) is True  # type: ignore[arg-type]


def test_changes_reported_during_the_listing_are_replayed_on_it(
    zk: KazooClient, gevent_client: KazooClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept, dropped = (path.rsplit("/", 1)[1] for path in put_many(zk, ["job/kept", "job/gone"]))
    list_children = gevent_client.get_children_async
    listings: dict[str, Any] = {}

    def get_children_async(path: str, *args: Any, **kw: Any) -> Any:
        if path == TAKEN:
            # Between the two listings: after the server listed the entries, so only the
            # watch reports these changes (and it does before the taken listing's answer).
            listings[ENTRIES].get()
            put(zk, "job/late", 0)
            zk.delete(f"{ENTRIES}/{dropped}")
        listings[path] = list_children(path, *args, **kw)
        return listings[path]

    monkeypatch.setattr(gevent_client, "get_children_async", get_children_async)
    consumer = QueueConsumer(gevent_client)
    try:
        consumer.start()
        assert consumer.depth == 2
        taken = [consumer.take(timeout=0.2) for _ in range(3)]
        assert [e.job_id for e in taken if e] == ["job/late", "job/kept"]
        assert taken[1].name == kept  # type: ignore[union-attr]
    finally:
        consumer.stop()


def test_malformed_names_and_data_are_handed_out_in_name_order(
    zk: KazooClient, new_consumer: Callable[..., QueueConsumer]
) -> None:
    good = put(zk, "job/good", 5).rsplit("/", 1)[1]
    zk.create(f"{ENTRIES}/garbage", b"job/garbage")
    zk.create(f"{ENTRIES}/entry-1-2", b"\xff\xfe")
    zk.create(f"{ENTRIES}/entry-000-", b"not a job id", sequence=True)
    zk.create(f"{ENTRIES}/zzz", b"")
    consumer = new_consumer()

    taken = []
    while (entry := consumer.take(timeout=0.2)) is not None:
        taken.append(entry)
    assert [e.name for e in taken] == entry_names(zk)
    by_name = {e.name: e for e in taken}
    assert by_name[good].job_id == "job/good" and by_name[good].priority == 5
    assert by_name["garbage"].priority is None and by_name["garbage"].job_id == "job/garbage"
    assert by_name["entry-1-2"].priority is None and by_name["entry-1-2"].job_id is None
    assert by_name["zzz"].data == b"" and by_name["zzz"].job_id is None
    for entry in taken:
        assert consumer.consume(entry) is True
    assert entry_names(zk) == []


def test_pause_resume_and_stop(zk: KazooClient, new_consumer: Callable[..., QueueConsumer]) -> None:
    consumer = new_consumer()
    consumer.pause()
    assert consumer.paused
    put(zk, "job/1", 1)
    wait_until(lambda: consumer.depth == 1, what="the entry in the view")
    assert consumer.take(timeout=0.1) is None
    consumer.resume()
    entry = consumer.take(timeout=WAIT)
    assert entry is not None and entry.job_id == "job/1"

    waiting = [gevent.spawn(consumer.take) for _ in range(3)]
    gevent.idle()
    consumer.stop()
    assert [g.get(timeout=WAIT) for g in waiting] == [None, None, None]
    assert consumer.take() is None
    # Held entries can still be finished after stop().
    assert consumer.consume(entry) is True
    consumer.start()  # a stopped consumer can start again
    put(zk, "job/2", 1)
    again = consumer.take(timeout=WAIT)
    assert again is not None and again.job_id == "job/2"


def test_works_on_the_threading_handler_too(
    zk: KazooClient, zk_factory: Callable[..., KazooClient]
) -> None:
    """Not the executor's setup, but nothing in the consumer is gevent-only."""
    put_many(zk, [(f"job/{i}", i % 3) for i in range(60)])
    consumer = QueueConsumer(zk_factory())
    consumer.start()
    done: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        while (entry := consumer.take(timeout=0.5)) is not None:
            assert consumer.consume(entry)
            with lock:
                done.append(entry.name)

    try:
        threads = [threading.Thread(target=work) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)
    finally:
        consumer.stop()
    assert len(done) == len(set(done)) == 60
    assert entry_names(zk) == [] and zk.get_children(TAKEN) == []


def test_the_watch_is_removed_on_stop(
    zk: KazooClient, gevent_client: KazooClient, zookeeper: ZooKeeperServer
) -> None:
    def watches() -> str:
        return zookeeper.four_letter_word("wchc")

    consumer = QueueConsumer(gevent_client)
    consumer.start()
    consumer.start()  # idempotent
    assert f"\t{ROOT}\n" in watches()
    consumer.stop()
    assert f"\t{ROOT}\n" not in watches()


# -- the shared queue -------------------------------------------------------------------------


def test_shared_queue_with_kazoo_locking_queues(
    zk: KazooClient,
    zk_factory: Callable[..., KazooClient],
    new_consumer: Callable[..., QueueConsumer],
) -> None:
    """Two of our consumers (10 greenlets each) and two kazoo LockingQueue consumers (threads)
    on one queue of 500 entries: every job consumed exactly once, nothing left behind.

    Everyone releases about one entry in ten the first time it sees it, so entries also
    change hands between the implementations.
    """
    total = 500
    rng = random.Random(7)
    put_many(zk, [(f"job/{i}", rng.choice((0, 1, 2, 500, 999))) for i in range(total)])
    work = 0.01

    lock = threading.Lock()
    consumed: dict[str, list[str]] = {}
    seen: set[str] = set()
    finished = threading.Event()
    errors: list[BaseException] = []

    def first_sight(job_id: str) -> bool:
        with lock:
            first = job_id not in seen
            seen.add(job_id)
            return first and int(job_id.split("/")[1]) % 10 == 0

    def record(who: str, job_id: str) -> None:
        with lock:
            consumed.setdefault(who, []).append(job_id)
            if sum(map(len, consumed.values())) >= total:
                finished.set()

    def ours(consumer: QueueConsumer, who: str) -> None:
        while not finished.is_set():
            entry = consumer.take(timeout=0.2)
            if entry is None:
                continue
            assert entry.job_id is not None
            gevent.sleep(work)
            if first_sight(entry.job_id):
                assert consumer.release(entry) is True
            else:
                assert consumer.consume(entry) is True
                record(who, entry.job_id)

    def theirs(queue: LockingQueue, who: str) -> None:
        try:
            while not finished.is_set():
                value = queue.get(timeout=0.2)
                if value is None:
                    continue
                time.sleep(work)
                if first_sight(value.decode()):
                    assert queue.release() is True
                else:
                    assert queue.consume() is True
                    record(who, value.decode())
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)
            finished.set()

    threads = [
        threading.Thread(target=theirs, args=(LockingQueue(zk_factory(), ROOT), f"kazoo-{i}"))
        for i in range(2)
    ]
    for thread in threads:
        thread.start()
    greenlets = [
        gevent.spawn(ours, consumer, f"ours-{i}")
        for i, consumer in enumerate([new_consumer(), new_consumer()])
        for _ in range(10)
    ]
    try:
        deadline = time.monotonic() + 40
        while not finished.is_set() and time.monotonic() < deadline:
            failed = [g for g in greenlets if g.dead and g.exception is not None]
            if failed:
                failed[0].get()
            gevent.sleep(0.05)
        finished.set()
        gevent.joinall(greenlets, timeout=WAIT, raise_error=True)
    finally:
        finished.set()
        for thread in threads:
            thread.join(WAIT)
    if errors:
        raise errors[0]

    everything = [job_id for jobs in consumed.values() for job_id in jobs]
    assert len(everything) == len(set(everything)), "a job was processed twice"
    assert set(everything) == {f"job/{i}" for i in range(total)}
    assert set(consumed) == {"ours-0", "ours-1", "kazoo-0", "kazoo-1"}, {
        who: len(jobs) for who, jobs in consumed.items()
    }
    assert zk.get_children(ENTRIES) == []
    assert zk.get_children(TAKEN) == []
