"""The PostgreSQL store (nuvla_job/api/postgres.py) where it differs from SQLite: versioned
migrations, its typed conflicts, its query budget (statement_timeout), values PostgreSQL
cannot hold, an exact total with many writers, and, through a real `job-api serve`, that a
query waiting on the database does not stall the other requests (gevent-cooperative)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
import requests

from nuvla_job import queue
from nuvla_job.api.postgres import HEAVY_CALLS, MIGRATIONS, POOL_SIZE, PostgresStore
from nuvla_job.api.query import parse_query
from nuvla_job.api.store import DuplicateId, QueryTimeout, StoreLimits, UniqueKeyTaken, Unstorable
from tests.support.jobapi import JobApiProcess
from tests.support.postgres import PostgresServer
from tests.support.waiting import wait_for


@pytest.fixture
def store(postgres_db: str) -> Iterator[PostgresStore]:
    store = PostgresStore(postgres_db)
    yield store
    store.close()


def _rows(url: str, sql: str, *params: object) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql.encode(), params).fetchall()


def test_migrations_are_applied_once_and_recorded(postgres_db: str) -> None:
    first = PostgresStore(postgres_db)
    first.jobs.insert({"id": "job/1", "state": "QUEUED"})
    # A second process (a replica) finds the schema up to date and the data kept.
    second = PostgresStore(postgres_db)
    try:
        assert second.db.migrate() == []
        assert second.jobs.get("job/1") == {"id": "job/1", "state": "QUEUED"}
    finally:
        first.close()
        second.close()
    versions = _rows(postgres_db, "SELECT version FROM schema_migrations ORDER BY version")
    assert [v for (v,) in versions] == sorted(MIGRATIONS)


def test_typed_conflicts(store: PostgresStore) -> None:
    store.jobs.insert({"id": "job/1", "state": "QUEUED", "unique-key": "k"})
    with pytest.raises(DuplicateId, match="job/1 already exists"):
        store.jobs.insert({"id": "job/1", "state": "QUEUED"})
    with pytest.raises(UniqueKeyTaken):
        store.jobs.insert({"id": "job/2", "state": "QUEUED", "unique-key": "k"})
    store.jobs.insert({"id": "job/3", "state": "FAILED", "unique-key": "k"})  # final: free
    with pytest.raises(UniqueKeyTaken):
        store.jobs.update("job/3", lambda doc: {**doc, "state": "QUEUED"})
    assert store.jobs.get("job/3") == {"id": "job/3", "state": "FAILED", "unique-key": "k"}
    assert store.jobs.search(parse_query({}), None)[0] == 2


def test_a_query_past_its_budget_is_a_query_timeout(postgres_db: str) -> None:
    store = PostgresStore(postgres_db, StoreLimits(query_timeout=0.2))
    try:
        started = time.monotonic()
        with pytest.raises(QueryTimeout):
            store.db.read("SELECT pg_sleep(5)")
        assert time.monotonic() - started < 3
        assert store.jobs.get("job/none") is None  # the connection is usable again
    finally:
        store.close()


def test_nul_characters_are_refused_in_our_words(store: PostgresStore) -> None:
    with pytest.raises(Unstorable, match="NUL"):
        store.jobs.insert({"id": "job/1", "name": "a\x00b"})
    with pytest.raises(Unstorable, match="NUL"):
        store.jobs.search(parse_query({"filter": ["name='a\x00b'"]}), None)


def test_the_total_stays_exact_with_concurrent_writers(postgres_db: str) -> None:
    stores = [PostgresStore(postgres_db) for _ in range(2)]
    try:

        def writer(n: int) -> None:
            store = stores[n % 2]
            for i in range(25):
                store.jobs.insert({"id": f"job/{n}-{i}", "state": "QUEUED"})
                if i % 5 == 0:
                    store.jobs.delete(f"job/{n}-{i}")

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        unfiltered = stores[0].jobs.search(parse_query({}), None)[0]
        counted = stores[1].jobs.search(parse_query({"filter": ["id!=null"]}), None)[0]
        assert unfiltered == counted == 4 * 20
    finally:
        for store in stores:
            store.close()


def test_a_waiting_query_does_not_stall_other_requests(zookeeper, postgres_db: str) -> None:
    """An edit waits on a row another client holds locked; meanwhile the same job API
    answers gets and health checks at once, then finishes the edit when the lock goes."""
    with JobApiProcess(zookeeper.hosts, db=postgres_db) as server:
        admin = server.admin_api()
        held = admin.add("job", {"action": "test_held"}).data["resource-id"]
        other = admin.add("job", {"action": "test_other"}).data["resource-id"]
        editor = server.admin_api()
        answers: list[int] = []
        with psycopg.connect(postgres_db) as lock:
            lock.execute(b"SELECT 1 FROM job WHERE id = %s FOR UPDATE", (held,))

            def edit() -> None:
                response = editor.session.put(
                    f"{server.endpoint}/api/{held}", json={"status-message": "edited"}, timeout=30
                )
                answers.append(response.status_code)

            thread = threading.Thread(target=edit)
            thread.start()
            waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            wait_for(
                lambda: _rows(postgres_db, waiting)[0][0] == 1, "the edit waiting on the lock", 10
            )
            started = time.monotonic()
            for _ in range(10):
                got = admin.session.get(f"{server.endpoint}/api/{other}", timeout=5)
                assert got.status_code == 200 and got.json()["id"] == other
                assert requests.get(f"{server.endpoint}/api/health", timeout=5).status_code
            assert time.monotonic() - started < 5
            assert thread.is_alive() and not answers  # the edit is still waiting
            lock.rollback()
        thread.join(30)
        assert answers == [200]
        assert admin.get(held).data["status-message"] == "edited"


def test_postgresql_down_adds_are_503_nothing_half_stored_and_it_recovers(zookeeper, zk) -> None:
    """PostgreSQL stopped under a running job API: adds and reads answer 503 in our words
    (nothing stored, nothing queued); once it is back, the next add succeeds without a
    restart of the job API (the figure: how long after PostgreSQL answers again)."""
    with PostgresServer() as server:
        url = server.create_database("jobs")
        with JobApiProcess(zookeeper.hosts, db=url) as api:
            http = api.admin_api().session
            base = f"{api.endpoint}/api"
            kept = http.post(f"{base}/job", json={"action": "test_before"}, timeout=10)
            assert kept.status_code == 201
            server.stop()
            refused = [
                http.post(f"{base}/job", json={"action": "test_during"}, timeout=30)
                for _ in range(2)
            ]
            assert {r.status_code for r in refused} == {503}, [r.text for r in refused]
            assert all("database" in r.json()["message"] for r in refused)
            assert "psycopg" not in refused[0].text and "Traceback" not in refused[0].text
            got = http.get(f"{base}/{kept.json()['resource-id']}", timeout=30)
            assert got.status_code == 503
            server.start()  # same port, same data
            back = time.monotonic()
            wait_for(
                lambda: (
                    http.post(f"{base}/job", json={"action": "test_after"}, timeout=30).status_code
                    == 201
                ),
                "an add to succeed again",
                30,
            )
            recovered = time.monotonic() - back
            print(f"adds succeeded again {recovered:.2f} s after PostgreSQL was back")
            assert recovered < 10
        rows = _rows(url, "SELECT doc->>'action' FROM job ORDER BY doc->>'action'")
        assert [action for (action,) in rows][:2] == ["test_after", "test_before"]
        assert all(action != "test_during" for (action,) in rows)
    entries = [zk.get(f"{queue.ENTRIES}/{n}")[0] for n in zk.get_children(queue.ENTRIES)]
    assert kept.json()["resource-id"].encode() in entries
    assert len(entries) == len(rows)  # one entry per stored job, none for a refused add


def test_searches_waiting_on_the_database_leave_connections_for_gets(
    store: PostgresStore, postgres_db: str
) -> None:
    """More searches than the pool has connections, all stuck (another client locks the
    table of the total they read): a get still finds a connection at once."""
    store.jobs.insert({"id": "job/1", "state": "QUEUED"})
    done: list[int] = []
    with psycopg.connect(postgres_db) as lock:
        lock.execute(b"LOCK TABLE job_total IN ACCESS EXCLUSIVE MODE")
        searches = [
            threading.Thread(
                target=lambda: done.append(store.jobs.search(parse_query({}), None)[0])
            )
            for _ in range(POOL_SIZE + 4)
        ]
        for thread in searches:
            thread.start()
        waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        wait_for(lambda: _rows(postgres_db, waiting)[0][0] >= HEAVY_CALLS, "searches stuck", 10)
        time.sleep(0.2)  # the rest would take the remaining connections by now, were they let
        started = time.monotonic()
        assert store.jobs.get("job/1") == {"id": "job/1", "state": "QUEUED"}
        assert time.monotonic() - started < 1
        lock.rollback()
    for thread in searches:
        thread.join(30)
    assert done == [1] * (POOL_SIZE + 4)


def _changed(second: int, state: str, duration: int | None, owner: str, action: str) -> dict:
    doc = {
        "id": f"job/{second}-{state}",
        "action": action,
        "state": state,
        "updated": f"2026-01-01T00:00:{second:02d}.000Z",
        "acl": {"owners": [owner]},
    }
    return doc if duration is None else {**doc, "duration": duration}


def test_updated_counts_on_the_covering_index(store: PostgresStore, postgres_db: str) -> None:
    store.jobs.insert_many(
        [
            _changed(10, "SUCCESS", 3, "user/u", "b"),
            _changed(11, "SUCCESS", 3, "user/v", "b"),
            _changed(12, "FAILED", 7, "user/u", "b"),
            _changed(13, "RUNNING", None, "user/u", "a"),
            _changed(20, "SUCCESS", 1, "user/u", "b"),  # outside [10, 20)
            _changed(9, "SUCCESS", 1, "user/u", "b"),  # before it
        ]
    )
    since, until = "2026-01-01T00:00:10.000Z", "2026-01-01T00:00:20.000Z"
    assert sorted(store.jobs.updated_counts(since, until, None), key=str) == sorted(
        [("a", "RUNNING", None, 1), ("b", "FAILED", 7, 1), ("b", "SUCCESS", 3, 2)], key=str
    )
    finals = store.jobs.updated_counts(since, until, None, states=["SUCCESS", "FAILED"])
    assert sorted(finals, key=str) == [("b", "FAILED", 7, 1), ("b", "SUCCESS", 3, 2)]
    assert store.jobs.updated_counts(since, until, frozenset({"user/v"})) == [
        ("b", "SUCCESS", 3, 1)
    ]
    # An administrator's counts read the index alone (no table access), however big.
    with psycopg.connect(postgres_db) as conn:
        conn.execute(b"SET enable_seqscan = off")
        plan = conn.execute(
            b"EXPLAIN SELECT action, state, duration, count(*) FROM job"
            b" WHERE updated >= %s AND updated < %s GROUP BY action, state, duration",
            (since, until),
        ).fetchall()
    text = " ".join(row[0] for row in plan)
    assert "Index Only Scan using job_updated_action_state" in text, text


def test_per_state_counts_stay_exact_through_every_write(store: PostgresStore) -> None:
    """A search for one state (or a few) is counted from job_state_total: it must agree
    with a real count (a filter the fast path does not take) after every kind of write."""
    jobs = store.jobs

    def check() -> None:
        for states in (["QUEUED"], ["RUNNING"], ["SUCCESS", "FAILED"], ["NONE"]):
            fast = jobs.search(parse_query({"filter": [f"state={states}"]}), None)[0]
            real = jobs.search(parse_query({"filter": [f"state={states} and id!=null"]}), None)
            assert fast == real[0], states

    jobs.insert_many([{"id": f"job/b{i}", "state": "QUEUED"} for i in range(5)])
    jobs.insert({"id": "job/1", "state": "QUEUED"})
    jobs.insert({"id": "job/2", "state": 5})  # not a state the column holds
    check()
    jobs.update("job/1", lambda doc: {**doc, "state": "RUNNING"})
    jobs.update("job/b0", lambda doc: {**doc, "state": "SUCCESS"})
    jobs.update("job/b1", lambda doc: {**doc, "progress": 5})  # same state
    jobs.update("job/2", lambda doc: {**doc, "state": "FAILED"})
    check()
    jobs.delete("job/b2")
    jobs.delete("job/none")
    check()
    assert jobs.delete_matching(parse_query({"filter": ["id^='job/b'"]}), None) == 4
    check()
    assert jobs.search(parse_query({"filter": ["state='QUEUED'"]}), None)[0] == 0
    assert jobs.search(parse_query({"filter": ["state=['RUNNING','FAILED']"]}), None)[0] == 2
    # A user's search is counted on the rows they may see, never from the totals.
    assert jobs.search(parse_query({"filter": ["state='RUNNING'"]}), frozenset({"u/x"}))[0] == 0


def test_hundreds_of_comparisons_on_a_list_stop_within_the_budget(postgres_db: str) -> None:
    """An `or` of 500 prefix comparisons on a list of 1,000 elements: each its own EXISTS,
    PostgreSQL cancelled it 40-56 s past a 3 s statement_timeout; merged into one EXISTS
    (postgres_sql.py), it stops on time."""
    store = PostgresStore(postgres_db, StoreLimits(query_timeout=1.0))
    try:
        tags = [f"tag-{j}" for j in range(1000)]
        store.jobs.insert_many({"id": f"job/{i}", "tags": tags} for i in range(1000))
        heaviest = " or ".join(f"tags^='x{i}'" for i in range(500))
        started = time.monotonic()
        with pytest.raises(QueryTimeout):
            store.jobs.search(parse_query({"filter": [heaviest]}), None)
        assert time.monotonic() - started < 4  # unmerged: about 13 s
    finally:
        store.close()
