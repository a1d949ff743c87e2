"""Executor presence (nuvla_job/presence.py) on a real ZooKeeper: announce, in-flight jobs,
rate limit, re-creation after session loss, and the executor process announcing itself."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import gevent
import pytest
from kazoo.client import KazooClient

from nuvla_job.presence import ROOT, ExecutorPresence, node_name
from tests.conftest import wipe
from tests.support import waiting

WAIT = 15.0
INFO = {
    "name": "exec-a",
    "host": "h",
    "pid": 42,
    "concurrency": 7,
    "started": "2026-01-01T00:00:00.000Z",
}


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    # gevent.sleep lets the gevent-handler client of the test work meanwhile.
    return waiting.wait_for(predicate, what, timeout, pause=gevent.sleep, interval=0.02)


def read(client: KazooClient, path: str) -> dict[str, Any] | None:
    stat = client.exists(path)
    if stat is None:
        return None
    return json.loads(client.get(path)[0])


@pytest.fixture
def presences(zk: KazooClient) -> Iterator[list[ExecutorPresence]]:
    """Presences made by a test, all stopped after it; /executors is wiped first."""
    wipe(zk, ROOT)
    made: list[ExecutorPresence] = []
    yield made
    for presence in made:
        presence.stop()


@pytest.mark.parametrize("use_gevent", [False, True], ids=["threading", "gevent"])
def test_announces_info_and_in_flight_jobs(
    zk: KazooClient, zk_factory, presences, use_gevent: bool
) -> None:
    client = zk_factory(use_gevent=use_gevent)
    presence = ExecutorPresence()
    presences.append(presence)
    presence.start(client, INFO)
    path = f"{ROOT}/{node_name('exec-a', client.client_id[0])}"
    doc = wait_for(lambda: read(zk, path), "the presence node")
    assert {k: doc[k] for k in INFO} == INFO
    assert doc["in-flight"] == [] and doc["in-flight-count"] == 0
    assert zk.exists(path).ephemeralOwner == client.client_id[0]

    presence.set_in_flight(["job/b", "job/a"])
    doc = wait_for(lambda: (d := read(zk, path)) and d["in-flight"] and d, "in-flight ids")
    assert doc["in-flight"] == ["job/a", "job/b"] and doc["in-flight-count"] == 2
    # Its own path only: the fixed layout is left alone.
    assert zk.exists("/job") is None and zk.exists("/election") is None

    presence.stop()
    assert zk.exists(path) is None


def test_writes_at_most_once_a_second(zk: KazooClient, zk_factory, presences) -> None:
    client = zk_factory()
    presence = ExecutorPresence()
    presences.append(presence)
    presence.start(client, INFO)
    path = f"{ROOT}/{node_name('exec-a', client.client_id[0])}"
    wait_for(lambda: zk.exists(path), "the presence node")
    started = time.monotonic()
    for index in range(60):  # a change every 25 ms for 1.5 s
        presence.set_in_flight([f"job/{index}"])
        gevent.sleep(0.025)
    elapsed = time.monotonic() - started
    wait_for(lambda: read(zk, path)["in-flight"] == ["job/59"], "the last change")
    writes = zk.exists(path).version  # each set bumps the version; the create is 0
    assert 1 <= writes <= elapsed / presence.min_interval + 2
    # Nothing changes: nothing is written.
    version = zk.exists(path).version
    gevent.sleep(1.2)
    assert zk.exists(path).version == version


def test_recreated_after_session_loss(zk: KazooClient, zk_factory, presences) -> None:
    client = zk_factory(timeout=4.0)
    presence = ExecutorPresence()
    presences.append(presence)
    presence.start(client, INFO)
    presence.set_in_flight(["job/x"])
    old_session = client.client_id[0]
    old_path = f"{ROOT}/{node_name('exec-a', old_session)}"
    wait_for(lambda: (read(zk, old_path) or {}).get("in-flight") == ["job/x"], "the node")

    zk_factory(client_id=client.client_id).stop()  # closes (expires) the client's session

    wait_for(lambda: client.connected and client.client_id[0] != old_session, "a new session")
    new_path = f"{ROOT}/{node_name('exec-a', client.client_id[0])}"
    doc = wait_for(lambda: read(zk, new_path), "the node of the new session")
    assert doc["in-flight"] == ["job/x"]
    assert zk.exists(old_path) is None
    assert zk.get_children(ROOT) == [new_path.rsplit("/", 1)[1]]


def test_recreated_when_deleted(zk: KazooClient, zk_factory, presences) -> None:
    client = zk_factory()
    presence = ExecutorPresence(check_interval=0.2)
    presences.append(presence)
    presence.start(client, INFO)
    path = f"{ROOT}/{node_name('exec-a', client.client_id[0])}"
    wait_for(lambda: zk.exists(path), "the presence node")
    zk.delete(path)
    wait_for(lambda: zk.exists(path), "the node created again")


def test_executor_process_announces_its_running_jobs(
    admin_api, zk: KazooClient, start_executor, presences
) -> None:
    # A free slot left: an executor whose slots are all busy waits for one before it
    # notices a stop request, so its stop would wait for the jobs.
    executor = start_executor(
        "--concurrency", "3", "--name", "presence-exec", "--grace-period", "1"
    )
    ids = [
        admin_api.add("job", {"action": "test_sleep", "payload": json.dumps({"seconds": 30})}).data[
            "resource-id"
        ]
        for _ in range(2)
    ]

    def node() -> dict[str, Any] | None:
        names = zk.get_children(ROOT) if zk.exists(ROOT) else []
        docs = [read(zk, f"{ROOT}/{n}") for n in names if n.startswith("presence-exec-")]
        return docs[0] if docs and docs[0] else None

    doc = wait_for(lambda: (d := node()) and d["in-flight-count"] == 2 and d, "2 in flight")
    assert doc["pid"] == executor.pid and doc["concurrency"] == 3
    assert sorted(doc["in-flight"]) == sorted(ids)
    executor.stop()
    wait_for(lambda: node() is None, "the node deleted on stop")
