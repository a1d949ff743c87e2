"""An add whose queue entry was made but could not be recorded (the disk filled in between):
the add has happened, and recovery later clears its mark without queueing it again."""

from __future__ import annotations

from nuvla_job.api.identity import Caller
from nuvla_job.api.jobs import JobQueue, JobService
from nuvla_job.api.sqlite import Database, SqliteJobStore
from nuvla_job.api.store import StoreError

ADMIN = Caller("user/admin", frozenset({"group/nuvla-admin"}))


class ListQueue(JobQueue):
    """The queue as a list of (path, job id); the ZooKeeper one is tested end to end in
    tests/faults (scenario 7, a real full disk)."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, str]] = []

    def put(self, job_id: str, priority: int) -> str:
        path = f"/job/entries/entry-{priority:03d}-{len(self.entries):010d}"
        self.entries.append((path, job_id))
        return path

    def remove(self, path: str) -> None:
        self.entries = [e for e in self.entries if e[0] != path]

    def find(self, job_id: str, priority: int) -> str | None:
        return next((p for p, j in self.entries if j == job_id), None)


class DiskFullOnce(SqliteJobStore):
    """Recording the entry fails once, as on a disk that just filled up."""

    failed = False

    def mark_enqueued(self, job_id: str, entry_path: str | None) -> None:
        if not self.failed:
            self.failed = True
            raise StoreError("the job database's disk is full")
        super().mark_enqueued(job_id, entry_path)


def test_the_add_succeeds_and_recovery_clears_the_mark_without_requeueing() -> None:
    store, queue = DiskFullOnce(Database(":memory:")), ListQueue()
    jobs = JobService(store, queue)
    doc = jobs.add({"action": "a"}, ADMIN)  # answered as added: no error to retry
    assert store.get(doc["id"]) is not None
    assert [j for _, j in queue.entries] == [doc["id"]]
    assert doc["tags"] == [queue.entries[0][0]]
    assert [d["id"] for d in store.pending_enqueue()] == [doc["id"]]

    # An executor took and finished it before recovery ran; its entry is gone.
    store.update(doc["id"], lambda d: {**d, "state": "SUCCESS"})
    queue.entries.clear()
    assert jobs.recover_pending() == 1
    assert store.pending_enqueue() == []
    assert queue.entries == []  # not queued again
