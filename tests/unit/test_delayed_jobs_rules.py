"""The job rules of delayed jobs (api/jobs.py) on the real SQLite store and an in-memory queue:
a job with a future `not-before` waits without an entry, `queue_due` queues the due ones once,
the `retry` operation puts a FAILED job back. The same flows run end to end, with the real
scheduler, executor and ZooKeeper, in tests/integration/test_retries_and_delays.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from nuvla_job.api.errors import ApiError
from nuvla_job.api.identity import Caller
from nuvla_job.api.jobs import JobQueue, JobService, QueueUnavailable
from nuvla_job.api.sqlite import DUE_SQL, Database, SqliteJobStore
from nuvla_job.timeutil import format_time

ADMIN = Caller("user/admin", frozenset({"group/nuvla-admin"}))
USER = Caller("user/someone", frozenset({"user/someone", "group/nuvla-user"}))


class ListQueue(JobQueue):
    """The queue as a list of (path, job id); ``fail_after`` makes put_many fail midway."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, str]] = []
        self.fail_after: int | None = None
        self.certain = True

    def put(self, job_id: str, priority: int) -> str:
        path = f"/job/entries/entry-{priority:03d}-{len(self.entries):010d}"
        self.entries.append((path, job_id))
        return path

    def put_many(self, items: list[tuple[str, int]]) -> list[str]:
        paths = []
        for job_id, priority in items:
            if self.fail_after is not None and len(paths) == self.fail_after:
                raise QueueUnavailable("ConnectionLoss", paths, self.certain)
            paths.append(self.put(job_id, priority))
        return paths

    def remove(self, path: str) -> None:
        self.entries = [e for e in self.entries if e[0] != path]

    def find(self, job_id: str, priority: int) -> str | None:
        return next((p for p, j in self.entries if j == job_id), None)

    def queued(self) -> list[str]:
        return [job_id for _, job_id in self.entries]


@pytest.fixture
def store() -> SqliteJobStore:
    return SqliteJobStore(Database(":memory:"))


@pytest.fixture
def queue() -> ListQueue:
    return ListQueue()


@pytest.fixture
def jobs(store: SqliteJobStore, queue: ListQueue) -> JobService:
    return JobService(store, queue)


def at(seconds: float) -> str:
    return format_time(datetime.now(UTC) + timedelta(seconds=seconds))


def test_every_added_job_counts_its_attempts_from_zero(jobs: JobService) -> None:
    assert jobs.add({"action": "a"}, ADMIN)["attempts"] == 0


def test_a_job_due_later_waits_without_an_entry(
    jobs: JobService, queue: ListQueue, store: SqliteJobStore
) -> None:
    due = at(60)
    doc = jobs.add({"action": "a", "not-before": due}, ADMIN)
    assert (doc["state"], doc["not-before"]) == ("QUEUED", due)
    assert queue.entries == [] and "tags" not in doc
    assert store.pending_enqueue() == []  # not owed an entry: the scheduler's
    assert jobs.queue_due(ADMIN, 100) == {"queued": 0, "more": False}  # not due yet
    assert queue.entries == []


def test_a_job_due_already_is_queued_at_once(jobs: JobService, queue: ListQueue) -> None:
    doc = jobs.add({"action": "a", "not-before": at(-5)}, ADMIN)
    assert "not-before" not in doc
    assert queue.queued() == [doc["id"]]


def test_a_pull_job_takes_no_not_before(jobs: JobService) -> None:
    with pytest.raises(ApiError) as raised:
        jobs.add({"action": "a", "execution-mode": "pull", "not-before": at(60)}, ADMIN)
    assert raised.value.status == 400 and "not-before" in raised.value.message


def test_due_jobs_are_queued_once_earliest_first_in_batches(
    jobs: JobService, queue: ListQueue, store: SqliteJobStore
) -> None:
    later = jobs.add({"action": "a", "not-before": at(60)}, ADMIN)["id"]
    added = [jobs.add({"action": "a", "not-before": at(0.5 + i / 100)}, ADMIN) for i in range(5)]
    # Make them due: the store compares with the time it is given.
    for doc in added:
        store.update(doc["id"], lambda d: {**d, "not-before": format_time(datetime(2020, 1, 1))})
    store.update(added[3]["id"], lambda d: {**d, "not-before": "2019-01-01T00:00:00.000Z"})
    assert jobs.queue_due(ADMIN, 2) == {"queued": 2, "more": True}
    assert queue.queued()[0] == added[3]["id"]  # the earliest first
    assert jobs.queue_due(ADMIN, 2) == {"queued": 2, "more": True}
    assert jobs.queue_due(ADMIN, 2) == {"queued": 1, "more": False}
    assert jobs.queue_due(ADMIN, 2) == {"queued": 0, "more": False}
    assert sorted(queue.queued()) == sorted(d["id"] for d in added)  # each once
    for doc in added:
        stored = store.get(doc["id"])
        assert stored is not None and "not-before" not in stored
        assert stored["tags"] == [p for p, j in queue.entries if j == doc["id"]]
    assert store.pending_enqueue() == []
    assert later not in queue.queued()


def test_queue_due_is_for_administrators_with_a_sane_limit(jobs: JobService) -> None:
    with pytest.raises(ApiError) as raised:
        jobs.queue_due(USER, 10)
    assert raised.value.status == 403
    for limit in (0, -1, 10**6, "10", True):
        with pytest.raises(ApiError) as raised:
            jobs.queue_due(ADMIN, limit)  # type: ignore[arg-type]
        assert raised.value.status == 400


@pytest.mark.parametrize("certain", [True, False])
def test_a_queue_failing_midway_leaves_no_job_lost_or_queued_twice(
    jobs: JobService, queue: ListQueue, store: SqliteJobStore, certain: bool
) -> None:
    ids = [jobs.add({"action": "a", "not-before": at(30)}, ADMIN)["id"] for _ in range(3)]
    for job_id in ids:
        store.update(job_id, lambda d: {**d, "not-before": "2020-01-01T00:00:00.000Z"})
    queue.fail_after, queue.certain = 1, certain
    with pytest.raises(ApiError) as raised:
        jobs.queue_due(ADMIN, 10)
    assert raised.value.status == 503
    assert queue.queued() == [ids[0]]
    first = store.get(ids[0])
    assert first is not None and first["tags"] == [queue.entries[0][0]]
    pending = {d["id"] for d in store.pending_enqueue()}
    if certain:
        # Surely not queued: they wait again and the next call queues them.
        assert pending == set()
        queue.fail_after = None
        assert jobs.queue_due(ADMIN, 10) == {"queued": 2, "more": False}
        assert sorted(queue.queued()) == sorted(ids)
    else:
        # Perhaps queued: they stay owed an entry, and the job API's recovery (which looks
        # for an entry first) finishes them.
        assert pending == set(ids[1:])
        assert jobs.queue_due(ADMIN, 10) == {"queued": 0, "more": False}
        queue.fail_after = None
        assert jobs.recover_pending() == 2
        assert sorted(queue.queued()) == sorted(ids)


def test_a_waiting_job_can_be_cancelled_and_is_never_queued(
    jobs: JobService, queue: ListQueue, store: SqliteJobStore
) -> None:
    job_id = jobs.add({"action": "a", "not-before": at(30)}, ADMIN)["id"]
    jobs.operation(job_id, "cancel", ADMIN)
    doc = store.get(job_id)
    assert doc is not None and doc["state"] == "CANCELED" and "not-before" not in doc
    store.update(job_id, lambda d: d)  # nothing left for the due query
    assert jobs.queue_due(ADMIN, 10)["queued"] == 0 and queue.entries == []


def test_an_edit_back_to_queued_with_a_not_before_waits_even_when_due(
    jobs: JobService, queue: ListQueue, store: SqliteJobStore
) -> None:
    # The executor's retry write: the job's entry is consumed next, so the job must wait for
    # the scheduler even when its time has come already.
    job_id = jobs.add({"action": "a"}, ADMIN)["id"]
    jobs.edit(job_id, {"state": "RUNNING", "attempts": 1}, [], ADMIN)
    due = at(-1)
    doc = jobs.edit(job_id, {"state": "QUEUED", "not-before": due}, [], ADMIN)
    assert doc["not-before"] == due
    assert jobs.queue_due(ADMIN, 10)["queued"] == 1
    assert queue.queued() == [job_id, job_id]  # the add's entry, then the retry's


def test_not_before_is_refused_on_a_job_that_does_not_wait(jobs: JobService) -> None:
    job_id = jobs.add({"action": "a"}, ADMIN)["id"]
    jobs.edit(job_id, {"state": "RUNNING"}, [], ADMIN)
    with pytest.raises(ApiError) as raised:
        jobs.edit(job_id, {"not-before": at(10)}, [], ADMIN)
    assert raised.value.status == 400


def test_leaving_queued_drops_the_not_before(jobs: JobService, store: SqliteJobStore) -> None:
    job_id = jobs.add({"action": "a", "not-before": at(30)}, ADMIN)["id"]
    doc = jobs.edit(job_id, {"state": "RUNNING"}, [], ADMIN)
    assert "not-before" not in doc


def test_retry_queues_a_failed_job_again_keeping_its_history(
    jobs: JobService, queue: ListQueue, store: SqliteJobStore
) -> None:
    job_id = jobs.add({"action": "a"}, ADMIN)["id"]
    errors = ["attempt 1 failed at 2026-01-01T00:00:00.000Z: RuntimeError: boom"]
    jobs.edit(job_id, {"state": "RUNNING", "attempts": 1}, [], ADMIN)
    jobs.edit(job_id, {"state": "FAILED", "return-code": 1, "attempt-errors": errors}, [], ADMIN)
    ops = {op["rel"] for op in jobs.get(job_id, ADMIN)["operations"]}
    assert "retry" in ops
    answer = jobs.operation(job_id, "retry", ADMIN)
    assert answer["message"] == f"{job_id} queued again"
    doc = store.get(job_id)
    assert doc is not None
    assert (doc["state"], doc["progress"], doc["attempts"]) == ("QUEUED", 0, 1)
    assert doc["attempt-errors"] == errors
    assert "return-code" not in doc and "duration" not in doc
    assert doc["status-message"] == "queued again by user/admin for attempt 2"
    assert jobs.queue_due(ADMIN, 10)["queued"] == 1  # due at once
    assert queue.queued()[-1] == job_id
    assert "retry" not in {op["rel"] for op in jobs.get(job_id, ADMIN)["operations"]}


@pytest.mark.parametrize("state", ["QUEUED", "SUCCESS", "CANCELED"])
def test_only_a_failed_job_is_retried(jobs: JobService, store: SqliteJobStore, state: str) -> None:
    job_id = jobs.add({"action": "a"}, ADMIN)["id"]
    store.update(job_id, lambda d: {**d, "state": state})
    with pytest.raises(ApiError) as raised:
        jobs.operation(job_id, "retry", ADMIN)
    assert raised.value.status == 409 and "only a FAILED job is retried" in raised.value.message


def test_retry_needs_the_manage_right(jobs: JobService, store: SqliteJobStore) -> None:
    job_id = jobs.add({"action": "a"}, ADMIN)["id"]
    store.update(job_id, lambda d: {**d, "state": "FAILED"})
    with pytest.raises(ApiError) as raised:
        jobs.operation(job_id, "retry", USER)
    assert raised.value.status == 403


@pytest.mark.parametrize(
    ("retry", "message"),
    [
        ("3", "must be a map"),
        ({"tries": 3}, "unknown key(s) tries"),
        ({"retries": -1}, "'retry/retries' must be an integer from 0 to 1000"),
        ({"retries": 1001}, "'retry/retries' must be an integer from 0 to 1000"),
        ({"retries": 2, "backoff": 0}, "'retry/backoff' must be a number of seconds > 0"),
        ({"retries": 2, "max-backoff": True}, "'retry/max-backoff' must be a number"),
        ({"retries": 2, "max-backoff": 1e9}, "at most 2592000"),
        ({"retries": 2, "backoff": 5, "max-backoff": 1}, "must not be shorter"),
    ],
)
def test_a_bad_retry_policy_is_refused_naming_it(
    jobs: JobService, retry: object, message: str
) -> None:
    with pytest.raises(ApiError) as raised:
        jobs.add({"action": "a", "retry": retry}, ADMIN)
    assert raised.value.status == 400 and message in raised.value.message


def test_a_retry_policy_is_stored(jobs: JobService) -> None:
    policy = {"retries": 4, "backoff": 0.5, "max-backoff": 3}
    assert jobs.add({"action": "a", "retry": policy}, ADMIN)["retry"] == policy


def test_the_due_query_runs_on_its_index(store: SqliteJobStore) -> None:
    for _ in range(3):  # an empty table would make any plan look fine
        store.insert({"id": f"job/{_}", "state": "QUEUED", "created": at(0)})
    plan = store.db.read(f"EXPLAIN QUERY PLAN {DUE_SQL}", ("2030-01-01T00:00:00.000Z", 10))
    details = " ".join(str(row[-1]) for row in plan)
    assert "USING INDEX job_due" in details, details
    assert "TEMP B-TREE" not in details  # ordered by the index, not sorted


def test_a_database_of_an_older_version_gains_the_column(tmp_path) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as conn:  # the job table as an older version made it
        conn.execute(
            "CREATE TABLE job (id TEXT PRIMARY KEY, doc TEXT NOT NULL, enqueue_pending INTEGER"
            " NOT NULL DEFAULT 0, state TEXT, action TEXT, created TEXT, updated TEXT,"
            " priority INTEGER, target_href TEXT, parent_job TEXT, execution_mode TEXT)"
        )
        conn.execute(
            "INSERT INTO job(id, doc, state) VALUES ('job/1', '{\"id\": \"job/1\"}', 'QUEUED')"
        )
    store = SqliteJobStore(Database(str(path)))
    assert store.claim_due("2030-01-01T00:00:00.000Z", 10) == []
    assert store.get("job/1") == {"id": "job/1"}
