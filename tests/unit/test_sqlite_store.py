"""The SQLite store: indexed columns follow the document, the total stays exact, a taken id
is a typed conflict."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nuvla_job.api.query import parse_query
from nuvla_job.api.sqlite import SqliteJobStore, SqliteStore
from nuvla_job.api.store import Conflict, DuplicateId, Principal, StoreError


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteJobStore]:
    sqlite = SqliteStore(tmp_path / "jobs.sqlite")
    yield sqlite.jobs
    sqlite.close()


def doc(n: int, **attrs) -> dict:
    return {
        "id": f"job/{n}",
        "resource-type": "job",
        "action": "a",
        "state": "QUEUED",
        "priority": 5,
        "created": f"2026-01-01T00:00:0{n}.000Z",
        **attrs,
    }


def ids(store: SqliteJobStore, text: str) -> list[str]:
    _, docs = store.search(parse_query({"filter": [text]}), None)
    return sorted(d["id"] for d in docs)


def test_columns_follow_updates_and_keep_only_their_type(store: SqliteJobStore) -> None:
    store.insert(doc(1))
    store.insert(doc(2, state=5, priority="7"))  # wrongly typed: NULL in the columns
    assert ids(store, "state='QUEUED'") == ["job/1"]
    assert ids(store, "state='5'") == [] and ids(store, "priority=7") == []
    store.update("job/1", lambda d: {**d, "state": "RUNNING", "progress": 10})
    assert ids(store, "state='RUNNING'") == ["job/1"]
    assert ids(store, "state='QUEUED'") == []
    store.update("job/1", lambda d: {**d, "progress": 20})  # no indexed column changes
    assert ids(store, "state='RUNNING' and progress=20") == ["job/1"]
    store.mark_enqueued("job/1", "/job/entries/entry-005-0000000001")
    assert store.pending_enqueue() == []
    assert ids(store, "tags='/job/entries/entry-005-0000000001'") == ["job/1"]


def test_total_is_exact_through_every_write(store: SqliteJobStore) -> None:
    total = parse_query({"last": ["0"]})
    store.insert_many(doc(n) for n in range(1, 6))
    store.insert(doc(7))
    store.delete("job/1")
    store.delete("job/404")
    store.delete_matching(parse_query({"filter": ["id='job/2' or id='job/3'"]}), None)
    assert store.search(total, None)[0] == 3
    filtered = parse_query({"filter": ["id!=null"], "last": ["0"]})
    assert store.search(filtered, None)[0] == 3


def test_a_taken_id_is_a_typed_conflict_and_changes_nothing(store: SqliteJobStore) -> None:
    store.insert(doc(1))
    with pytest.raises(DuplicateId, match=r"^job/1 already exists$") as caught:
        store.insert(doc(1, state="RUNNING"))
    assert isinstance(caught.value, Conflict)
    assert store.get("job/1")["state"] == "QUEUED"
    assert store.search(parse_query({"last": ["0"]}), None)[0] == 1


def test_other_integrity_errors_are_store_errors_not_conflicts(tmp_path: Path) -> None:
    sqlite = SqliteStore(tmp_path / "jobs.sqlite")
    try:
        with pytest.raises(StoreError) as caught, sqlite.db.write() as conn:
            conn.execute("INSERT INTO job(id, doc) VALUES ('job/x', NULL)")  # NOT NULL
        assert not isinstance(caught.value, Conflict)
    finally:
        sqlite.close()


def test_a_taken_principal_name_is_a_typed_conflict(tmp_path: Path) -> None:
    sqlite = SqliteStore(tmp_path / "jobs.sqlite")
    try:
        alice = Principal("user/1", "user", "alice", "h", "user/1", ("user/1",), 1.0)
        sqlite.identities.add_principal(alice)
        with pytest.raises(DuplicateId):
            sqlite.identities.add_principal(Principal(**{**alice.__dict__, "id": "user/2"}))
        assert sqlite.identities.principal("user", "alice") == alice
    finally:
        sqlite.close()


def test_an_uncreatable_folder_is_a_one_line_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(
        StoreError, match=r"^cannot create the folder .*a-file/sub for the database"
    ):
        SqliteStore(blocker / "sub" / "jobs.sqlite")
