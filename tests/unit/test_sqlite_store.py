"""The SQLite store: indexed columns follow the document, the total stays exact."""

from __future__ import annotations

from nuvla_job.api.query import parse_query
from nuvla_job.api.sqlite import Database, SqliteJobStore


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


def test_columns_follow_updates_and_keep_only_their_type() -> None:
    store = SqliteJobStore(Database(":memory:"))
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


def test_total_is_exact_through_every_write() -> None:
    store = SqliteJobStore(Database(":memory:"))
    total = parse_query({"last": ["0"]})
    store.insert_many(doc(n) for n in range(1, 6))
    store.insert(doc(7))
    store.delete("job/1")
    store.delete("job/404")
    store.delete_matching(parse_query({"filter": ["id='job/2' or id='job/3'"]}), None)
    assert store.search(total, None)[0] == 3
    filtered = parse_query({"filter": ["id!=null"], "last": ["0"]})
    assert store.search(filtered, None)[0] == 3
