"""Recovery of interrupted adds running while an add of this server waits for its queue
entry (both are greenlets; the add yields while ZooKeeper creates the entry): the add's
job is left to the add, so it gets one entry, not two."""

from __future__ import annotations

from nuvla_job.api.jobs import JobService
from nuvla_job.api.sqlite import Database, SqliteJobStore
from tests.unit.test_add_entry_not_recorded import ADMIN, ListQueue


class RecoveryDuringPut(ListQueue):
    """Runs the service's recovery while the first entry is being created."""

    service: JobService
    recovered: int | None = None

    def put(self, job_id: str, priority: int) -> str:
        if self.recovered is None:
            self.recovered = -1  # (recovery's own put must not recover again)
            self.recovered = self.service.recover_pending()
        return super().put(job_id, priority)


def test_an_add_in_progress_is_not_recovered_as_well() -> None:
    store, queue = SqliteJobStore(Database(":memory:")), RecoveryDuringPut()
    jobs = queue.service = JobService(store, queue)
    doc = jobs.add({"action": "a"}, ADMIN)
    assert queue.recovered == 0
    assert [job for _, job in queue.entries] == [doc["id"]]
    assert store.pending_enqueue() == []
