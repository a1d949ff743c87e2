"""An add interrupted between storing the job and queueing it is finished at the next start,
without ever queueing a job twice (the ordering documented in nuvla_job/api/jobs.py)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from kazoo.client import KazooClient

from nuvla_job import queue
from nuvla_job.api.sqlite import SqliteStore
from nuvla_job.api.store import Store
from nuvla_job.timeutil import now_iso
from tests.support.jobapi import JobApiProcess
from tests.support.stores import ApiStore


def pending_job(priority: int) -> dict:
    now = now_iso()
    return {
        "id": f"job/{uuid.uuid4()}",
        "resource-type": "job",
        "action": "recovered",
        "state": "QUEUED",
        "progress": 0,
        "execution-mode": "push",
        "version": 2,
        "priority": priority,
        "created": now,
        "updated": now,
        "acl": {"owners": ["group/nuvla-admin"]},
    }


def entries_for(zk: KazooClient, job_id: str) -> list[str]:
    if not zk.exists(queue.ENTRIES):
        return []
    return [
        name
        for name in zk.get_children(queue.ENTRIES)
        if zk.get(f"{queue.ENTRIES}/{name}")[0] == job_id.encode()
    ]


def _store(db: str | Path) -> Store:
    if isinstance(db, str):
        from nuvla_job.api.postgres import PostgresStore

        return PostgresStore(db)
    return SqliteStore(db)


def test_interrupted_adds_are_queued_once_at_start(
    zookeeper, zk: KazooClient, api_store: ApiStore
) -> None:
    server = JobApiProcess(zookeeper.hosts, db=api_store.db())
    # The state a crash leaves: two jobs stored and marked; one of them got its entry
    # just before the crash, the other did not.
    store = _store(server.db)
    lost, entered = pending_job(7), pending_job(8)
    store.jobs.insert(lost, enqueue_pending=True)
    store.jobs.insert(entered, enqueue_pending=True)
    existing = queue.put(zk, entered["id"], 8)
    store.close()
    try:
        server.start()
        api = server.admin_api()
        # Recovery runs once the API's ZooKeeper session is up; wait on its visible result.
        deadline = time.monotonic() + 20
        while not api.get(lost["id"]).data.get("tags") and time.monotonic() < deadline:
            time.sleep(0.1)
        lost_tags = api.get(lost["id"]).data["tags"]
        entered_tags = api.get(entered["id"]).data["tags"]
    finally:
        server.close()
    assert len(entries_for(zk, lost["id"])) == 1
    assert lost_tags[0].startswith("/job/entries/entry-007-")
    assert entries_for(zk, entered["id"]) == [existing.rsplit("/", 1)[1]]
    assert entered_tags == [existing]
