"""The queue producer against a real ZooKeeper, checked with kazoo's own LockingQueue."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

import pytest
from kazoo.client import KazooClient
from kazoo.recipe.queue import LockingQueue

from nuvla_job import queue
from nuvla_job.api.zk_queue import ZooKeeperJobQueue
from nuvla_job.zk import hosts_string, make_client, wait_connected
from tests.support.zookeeper import ZooKeeperServer

ENTRY_NAME = re.compile(r"^entry-(\d{3})-(\d{10})$")


def job_id() -> str:
    return f"job/{uuid.uuid4()}"


def entry_names(zk: KazooClient) -> list[str]:
    return sorted(zk.get_children(queue.ENTRIES))


def read_all(zk: KazooClient, paths: list[str]) -> list[str]:
    """The data of `paths` as text, fetched in one pipelined burst."""
    pending = [zk.get_async(path) for path in paths]
    return [result.get()[0].decode("utf-8") for result in pending]


def queued_ids(zk: KazooClient) -> list[str]:
    """Job ids in the order consumers take them (ascending entry name)."""
    return read_all(zk, [f"{queue.ENTRIES}/{name}" for name in entry_names(zk)])


def test_entry_prefix() -> None:
    assert queue.entry_prefix(0) == "/job/entries/entry-000-"
    assert queue.entry_prefix(7) == "/job/entries/entry-007-"
    assert queue.entry_prefix(999) == "/job/entries/entry-999-"


@pytest.mark.parametrize("priority", [-1, 1000, 12345])
def test_bad_priority_raises_and_creates_nothing(zk: KazooClient, priority: int) -> None:
    with pytest.raises(ValueError):
        queue.entry_prefix(priority)
    with pytest.raises(ValueError):
        queue.put(zk, job_id(), priority)
    assert zk.exists(queue.ENTRIES) is None


@pytest.mark.parametrize("priority", ["5", 5.0, True, None])
def test_non_int_priority_raises(priority: object) -> None:
    with pytest.raises(TypeError):
        queue.entry_prefix(priority)  # type: ignore[arg-type]


def test_put_creates_persistent_entry_holding_exactly_the_id(zk: KazooClient) -> None:
    the_id = job_id()
    path = queue.put(zk, the_id, 42)

    assert path.startswith("/job/entries/entry-042-")
    name = path.rsplit("/", 1)[1]
    assert ENTRY_NAME.match(name)
    data, stat = zk.get(path)
    assert data == the_id.encode("utf-8")
    assert stat.ephemeralOwner == 0  # survives the producer's session


def test_put_default_priority_is_999(zk: KazooClient) -> None:
    assert queue.put(zk, job_id()).startswith(queue.entry_prefix(999))


def test_entries_sort_by_priority_then_arrival(zk: KazooClient) -> None:
    puts = [("a", 500), ("b", 10), ("c", 500), ("d", 10), ("e", 999), ("f", 0)]
    for name, priority in puts:
        queue.put(zk, f"job/{name}", priority)

    assert queued_ids(zk) == ["job/f", "job/b", "job/d", "job/a", "job/c", "job/e"]
    priorities = [int(ENTRY_NAME.match(n).group(1)) for n in entry_names(zk)]  # type: ignore[union-attr]
    assert priorities == [0, 10, 10, 500, 500, 999]


def test_kazoo_locking_queue_takes_our_entries_in_order_and_consumes_them(
    zk: KazooClient,
) -> None:
    puts = [(job_id(), 300), (job_id(), 5), (job_id(), 999), (job_id(), 5)]
    for the_id, priority in puts:
        queue.put(zk, the_id, priority)
    expected = [puts[1][0], puts[3][0], puts[0][0], puts[2][0]]

    taker = LockingQueue(zk, queue.ROOT)
    taken = []
    for _ in expected:
        value = taker.get(timeout=5)
        assert value is not None
        # While held, the lock is /job/taken/<same entry name> holding the taker's id.
        held = zk.get_children(queue.TAKEN)
        assert len(held) == 1 and ENTRY_NAME.match(held[0])
        assert zk.get(f"{queue.TAKEN}/{held[0]}")[0] == taker.id
        assert zk.exists(f"{queue.ENTRIES}/{held[0]}") is not None
        taken.append(value.decode("utf-8"))
        assert taker.consume() is True

    assert taken == expected
    assert zk.get_children(queue.ENTRIES) == []
    assert zk.get_children(queue.TAKEN) == []
    assert taker.get(timeout=0.2) is None


def test_put_many_accepts_ids_and_pairs_in_chunks(zk: KazooClient) -> None:
    items: list[str | tuple[str, int]] = []
    for i in range(2500):
        items.append((f"job/{i:05d}", i % 3) if i % 2 else f"job/{i:05d}")

    paths = queue.put_many(zk, iter(items), chunk_size=1000)

    pairs = [(it, 999) if isinstance(it, str) else it for it in items]
    assert read_all(zk, paths) == [the_id for the_id, _ in pairs]
    for (_, priority), path in zip(pairs, paths, strict=True):
        assert path.startswith(queue.entry_prefix(priority))
    # Priority first; within one priority, arrival order is input order (sorted() is stable).
    assert queued_ids(zk) == [the_id for the_id, _ in sorted(pairs, key=lambda pair: pair[1])]


def test_put_many_reports_what_earlier_chunks_created(zk: KazooClient) -> None:
    items: list[str | tuple[str, int]] = [job_id() for _ in range(5)]
    items.append((job_id(), 1000))  # invalid, in the second chunk

    with pytest.raises(queue.PutManyError) as info:
        queue.put_many(zk, items, chunk_size=3)

    assert isinstance(info.value.__cause__, ValueError)
    assert len(info.value.created) == 3
    assert sorted(info.value.created) == [f"{queue.ENTRIES}/{n}" for n in entry_names(zk)]


@pytest.mark.parametrize("bad", ["", "job/", "job/a b", "job/a?x", "nuvlabox/1", "job/\u00e9"])
def test_put_refuses_what_no_consumer_would_run(zk: KazooClient, bad: str) -> None:
    with pytest.raises(ValueError, match="not a job id"):
        queue.put(zk, bad)
    with pytest.raises(queue.PutManyError):
        queue.put_many(zk, [bad])
    assert zk.exists(queue.ENTRIES) is None


def test_the_job_api_queues_through_put(zk: KazooClient) -> None:
    """The job API's queue makes its entries with `put`: same node, same id check."""
    api_queue = ZooKeeperJobQueue(zk, timeout=5.0)
    the_id = job_id()
    path = api_queue.put(the_id, 3)
    assert path.startswith(queue.entry_prefix(3)) and ENTRY_NAME.match(path.rsplit("/", 1)[1])
    assert zk.get(path)[0] == the_id.encode()
    assert api_queue.find(the_id, 3) == path
    assert api_queue.find(the_id, 4) is None
    with pytest.raises(ValueError, match="not a job id"):
        api_queue.put("job/a b", 3)
    assert entry_names(zk) == [path.rsplit("/", 1)[1]]


def test_put_many_of_nothing_touches_nothing(zk: KazooClient) -> None:
    assert queue.put_many(zk, []) == []
    assert zk.exists(queue.ENTRIES) is None


def test_hosts_string_accepts_cli_lists() -> None:
    assert hosts_string("h1:2181,h2:2181") == "h1:2181,h2:2181"
    assert hosts_string(["h1:2181", "h2"]) == "h1:2181,h2"
    assert hosts_string(["h1:2181,h2:2181", " h3 "]) == "h1:2181,h2:2181,h3"
    with pytest.raises(ValueError):
        hosts_string([])


def test_make_client_with_gevent_handler_can_put(
    zookeeper: ZooKeeperServer, zk: KazooClient
) -> None:
    client = make_client([zookeeper.hosts], timeout=5.0, connection_retry={"max_tries": 3})
    client.start(timeout=10)
    try:
        from kazoo.handlers.gevent import SequentialGeventHandler

        assert isinstance(client.handler, SequentialGeventHandler)
        the_id = job_id()
        path = queue.put(client, the_id, 1)
    finally:
        client.stop()
        client.close()
    assert zk.get(path)[0] == the_id.encode()


def test_zookeeper_restart_keeps_port_and_data(zookeeper: ZooKeeperServer, zk: KazooClient) -> None:
    the_id = job_id()
    path = queue.put(zk, the_id, 7)
    hosts, old_pid = zookeeper.hosts, zookeeper.pid

    zookeeper.restart(down_for=0.5)

    assert zookeeper.running and zookeeper.pid != old_pid
    assert zookeeper.hosts == hosts
    assert zookeeper.four_letter_word("ruok") == "imok"
    # The old client reconnects by itself to the same address.
    assert wait_connected(zk, timeout=15)
    assert zk.get(path)[0] == the_id.encode()


def test_zookeeper_stop_makes_server_unreachable(zookeeper: ZooKeeperServer) -> None:
    zookeeper.stop()
    try:
        assert not zookeeper.running and zookeeper.pid is None
        assert zookeeper.four_letter_word("ruok", timeout=0.5) == ""
    finally:
        zookeeper.start()
    assert zookeeper.four_letter_word("ruok") == "imok"


def test_zookeeper_crash_keeps_acknowledged_writes(
    zookeeper: ZooKeeperServer, zk: KazooClient, zk_factory: Callable[..., KazooClient]
) -> None:
    # forceSync=no skips fsync only; an acknowledged write is in the OS and survives kill -9.
    paths = queue.put_many(zk, [job_id() for _ in range(50)])

    zookeeper.kill()
    zookeeper.start()

    fresh = zk_factory()
    assert sorted(paths) == [f"{queue.ENTRIES}/{n}" for n in entry_names(fresh)]


def test_make_client_reconnects_at_least_every_two_seconds() -> None:
    # kazoo's own default grows to an hour between attempts; a long outage would then leave
    # the engines idle long after ZooKeeper is back (see docs/reliability.md, scenario 2).
    for use_gevent in (True, False):
        client = make_client("127.0.0.1:1", use_gevent=use_gevent)
        assert client._conn_retry.max_delay <= 2.0 and client._conn_retry.max_tries == -1
