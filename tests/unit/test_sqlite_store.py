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


def _changed(n: int, second: int, state: str, duration: int | None, owner: str) -> dict:
    """A job last updated at the given second of 2026-01-01T00:00."""
    extra = {} if duration is None else {"duration": duration}
    return doc(
        n,
        state=state,
        action="b" if n % 2 else "a",
        acl={"owners": ["group/nuvla-admin"], "view-data": [owner]},
        **{"updated": f"2026-01-01T00:00:{second:02d}.000Z"},
        **extra,
    )


def test_updated_counts_counts_a_range_by_action_state_and_duration(
    store: SqliteJobStore,
) -> None:
    store.insert_many(
        [
            _changed(1, 10, "SUCCESS", 3, "user/u"),
            _changed(3, 11, "SUCCESS", 3, "user/v"),
            _changed(5, 12, "FAILED", 7, "user/u"),
            _changed(2, 12, "RUNNING", None, "user/u"),
            _changed(4, 20, "SUCCESS", 1, "user/u"),  # outside [10, 20)
            _changed(6, 9, "SUCCESS", 1, "user/u"),  # before it
        ]
    )
    since, until = "2026-01-01T00:00:10.000Z", "2026-01-01T00:00:20.000Z"
    assert sorted(store.updated_counts(since, until, None)) == [
        ("a", "RUNNING", None, 1),
        ("b", "FAILED", 7, 1),
        ("b", "SUCCESS", 3, 2),
    ]
    finals = store.updated_counts(since, until, None, states=["SUCCESS", "FAILED"])
    assert sorted(finals) == [("b", "FAILED", 7, 1), ("b", "SUCCESS", 3, 2)]
    # A user counts the jobs they may see, only.
    mine = store.updated_counts(since, until, frozenset({"user/v"}))
    assert mine == [("b", "SUCCESS", 3, 1)]


def test_updated_counts_read_the_covering_index_alone(store: SqliteJobStore) -> None:
    sql = (
        "EXPLAIN QUERY PLAN SELECT action, state, duration, count(*) FROM job"
        " INDEXED BY job_updated_action_state WHERE updated >= ? AND updated < ?"
        " GROUP BY action, state, duration"
    )
    plan = " ".join(str(row[-1]) for row in store.db.read(sql, ("a", "b")))
    assert "COVERING INDEX job_updated_action_state" in plan, plan


def test_columns_added_to_an_older_database_are_filled_from_the_documents(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.sqlite"
    sqlite = SqliteStore(path)
    sqlite.jobs.insert_many([_changed(1, 10, "SUCCESS", 4, "user/u")])
    with sqlite.db.write() as conn:  # as a version before these columns made it
        conn.execute("DROP INDEX job_updated_action_state")
        conn.execute("CREATE INDEX job_updated ON job(updated)")
        conn.execute("DROP INDEX job_duration_id")
        conn.execute("ALTER TABLE job DROP COLUMN duration")
    sqlite.close()
    reopened = SqliteStore(path)
    try:
        rows = reopened.jobs.updated_counts("2026", "2027", None)
        assert rows == [("b", "SUCCESS", 4, 1)]
        names = {r[0] for r in reopened.db.read("SELECT name FROM sqlite_master")}
        assert "job_updated_action_state" in names and "job_updated" not in names
    finally:
        reopened.close()


def _visible(store: SqliteJobStore, principals: set[str], text: str | None = None) -> list[str]:
    params = {"filter": [text]} if text else {}
    count, docs = store.search(parse_query(params), frozenset(principals))
    assert count == len(docs)
    return sorted(d["id"] for d in docs)


def test_the_readers_and_tags_side_tables_follow_every_write(store: SqliteJobStore) -> None:
    store.insert(doc(1, acl={"owners": ["group/nuvla-admin"], "view-data": ["user/u"]}))
    store.insert_many([doc(2, acl={"manage": ["user/u", "user/v"]}, tags=["t", 3])])
    store.insert(doc(3, acl={"owners": "user/u"}))  # not a list: grants nothing
    assert _visible(store, {"user/u"}) == ["job/1", "job/2"]
    assert _visible(store, {"user/v"}) == ["job/2"]
    assert _visible(store, {"user/w", "user/v"}, "tags='t'") == ["job/2"]
    store.update("job/1", lambda d: {**d, "acl": {"edit-acl": ["user/w"]}})
    assert _visible(store, {"user/u"}) == ["job/2"]
    assert _visible(store, {"user/w"}) == ["job/1"]
    store.update("job/2", lambda d: {**d, "tags": ["s"]})
    assert ids(store, "tags='t'") == [] and ids(store, "tags='s'") == ["job/2"]
    store.delete("job/2")
    store.delete_matching(parse_query({"filter": ["id='job/1'"]}), frozenset({"user/w"}))
    rows = store.db.read("SELECT count(*) FROM job_reader UNION ALL SELECT count(*) FROM job_tag")
    assert rows == [(0,), (0,)]
    # The kept total of each state follows inserts, state changes and deletes.
    store.update("job/3", lambda d: {**d, "state": "FAILED"})
    assert store.db.read("SELECT state, n FROM job_state_total WHERE n > 0") == [("FAILED", 1)]


def test_side_tables_missing_from_an_older_database_are_filled_from_the_documents(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.sqlite"
    sqlite = SqliteStore(path)
    sqlite.jobs.insert_many([doc(1, acl={"view-meta": ["user/u"]}, tags=["t"])])
    with sqlite.db.write() as conn:  # as a version before them made it
        conn.execute("DROP TRIGGER job_side_rows_gone")
        for table in ("job_reader", "job_tag", "job_state_total"):
            conn.execute(f"DROP TABLE {table}")
    sqlite.close()
    reopened = SqliteStore(path)
    try:
        assert _visible(reopened.jobs, {"user/u"}, "tags='t'") == ["job/1"]
        assert reopened.jobs.search(parse_query({"filter": ["state='QUEUED'"]}), None)[0] == 1
    finally:
        reopened.close()
