"""A taken id reaches the job rules as the store's typed DuplicateId and is answered 409,
with nothing queued and the stored job untouched."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from nuvla_job.api import jobs as job_rules
from nuvla_job.api.errors import ApiError
from nuvla_job.api.identity import Caller
from nuvla_job.api.jobs import JobQueue, JobService
from nuvla_job.api.sqlite import SqliteStore

ADMIN = Caller("user/admin", frozenset({"group/nuvla-admin"}))


class ListQueue(JobQueue):
    """The queue as a list of (path, job id)."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, str]] = []

    def put(self, job_id: str, priority: int) -> str:
        path = f"/job/entries/entry-{priority:03d}-{len(self.entries):010d}"
        self.entries.append((path, job_id))
        return path


def test_a_taken_id_is_a_409_and_nothing_is_queued(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, queue = SqliteStore(tmp_path / "jobs.sqlite"), ListQueue()
    try:
        service = JobService(store.jobs, queue)
        fixed = uuid.UUID("00000000-0000-4000-8000-000000000001")
        monkeypatch.setattr(job_rules.uuid, "uuid4", lambda: fixed)
        first = service.add({"action": "a"}, ADMIN)
        with pytest.raises(ApiError) as caught:
            service.add({"action": "b"}, ADMIN)
        assert caught.value.status == 409
        assert caught.value.body() == {
            "status": 409,
            "message": f"{first['id']} already exists",
            "resource-id": first["id"],
        }
        assert [job_id for _, job_id in queue.entries] == [first["id"]]
        assert store.jobs.get(first["id"])["action"] == "a"
    finally:
        store.close()
