"""Every query the dashboard's views make is answered by indexes, for an administrator and for
a user (whose ACL narrowing is driven by the side table ``job_reader``): checked on SQLite's
query plans of the statements the store runs (``SqliteJobStore.explain``), so a change that
turns one into a scan of the job table fails here, whatever the table's size.

The requests are those of nuvla_job/api/static/dashboard/views.js and app.js; their cost at
1,000,000 jobs is measured by ``python -m bench.dashboard`` (docs/benchmarks.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from nuvla_job.api import sqlite as sqlite_store
from nuvla_job.api.query import parse_query
from nuvla_job.api.sqlite import SqliteJobStore, SqliteStore

ADMIN = None
USER = frozenset({"user/u", "group/nuvla-user", "group/nuvla-anon"})
PARENT = "job/00000000-0000-4000-8000-000000000001"
SINCE = "2026-01-01T00:00:00.000Z"
UNTIL = "2026-01-02T00:00:00.000Z"

ORDERS = ("updated:desc", "created:desc", "created:asc", "priority:asc", "duration:desc")
# (name, filter, orderby): the search form's fields one by one, its sorts, and the queries
# the other views make of the job collection.
SEARCHES = [
    *(
        (f"no filter, sorted {order}", None, order)
        for order in (
            "updated:desc",
            "created:desc",
            "created:asc",
            "priority:asc",
            "duration:desc",
        )
    ),
    ("state", "state='FAILED'", "updated:desc"),
    ("states", "state='QUEUED' or state='RUNNING'", "updated:desc"),
    ("action", "action='deployment_state'", "updated:desc"),
    ("tag", "tags='/job/entries/entry-999-0000000001'", "updated:desc"),
    ("target", "target-resource/href='deployment/1'", "updated:desc"),
    ("parent", f"parent-job='{PARENT}'", "updated:desc"),
    ("time range", f"updated>='{SINCE}' and updated<'{UNTIL}'", "updated:desc"),
    # The failure-rate link of the per-action table: an action's failed jobs since a time.
    (
        "failed of an action",
        f"action='a' and state='FAILED' and updated>='{SINCE}'",
        "updated:desc",
    ),
    ("one job", f"id='{PARENT}'", "updated:desc"),
]


def docs() -> list[dict]:
    base = {"resource-type": "job", "created": SINCE, "updated": SINCE, "priority": 999}
    found = [
        {
            **base,
            "id": f"job/{i:08d}-0000-4000-8000-000000000000",
            "action": "deployment_state" if i % 2 else "a",
            "state": ("SUCCESS", "FAILED", "QUEUED")[i % 3],
            "duration": i % 7,
            "tags": [f"/job/entries/entry-999-{i:010d}"],
            "target-resource": {"href": f"deployment/{i}"},
            "parent-job": PARENT if i % 5 == 0 else None,
            "acl": {"owners": ["group/nuvla-admin"], "view-data": ["user/u" if i % 4 else "v"]},
        }
        for i in range(200)
    ]
    return [{k: v for k, v in d.items() if v is not None} for d in found]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Iterator[SqliteJobStore]:
    sqlite = SqliteStore(Path(tmp_path_factory.mktemp("plans")) / "jobs.sqlite")
    sqlite.jobs.insert_many(docs())
    yield sqlite.jobs
    sqlite.close()


def query(filter_text: str | None, orderby: str, last: int = 25, aggregation: str | None = None):
    params = {"orderby": [orderby], "first": ["1"], "last": [str(last)]}
    if filter_text:
        params["filter"] = [filter_text]
    if aggregation:
        params["aggregation"] = [aggregation]
    return parse_query(params)


BY_ID = re.compile(
    r"SCAN mine; SEARCH job USING (COVERING )?INDEX sqlite_autoindex_job_1 \(id=\?\)"
)
# A read of the whole job table, or of every document's JSON.
FULL_SCAN = re.compile(r"^SCAN job$|SCAN job USING|VIRTUAL TABLE")


def check_indexed(plans: dict[str, list[str]], user: bool) -> None:
    for statement, lines in plans.items():
        text = "; ".join(lines)
        if user:
            # Driven by the jobs the user may see, each read by its id.
            assert "SEARCH job_reader USING" in text, text
            assert BY_ID.search(text), text
        for line in lines:
            if statement == "page" and not user and line.startswith("SCAN job USING"):
                continue  # an index read in the page's order, up to its LIMIT
            assert not FULL_SCAN.search(line), (statement, text)


@pytest.mark.parametrize(("name", "filter_text", "orderby"), SEARCHES, ids=[s[0] for s in SEARCHES])
@pytest.mark.parametrize("who", ["admin", "user"])
def test_every_search_of_the_views_is_indexed(store, who, name, filter_text, orderby) -> None:
    plans = store.explain(query(filter_text, orderby), ADMIN if who == "admin" else USER)
    check_indexed(plans, who == "user")


def test_the_admins_page_in_the_views_order_reads_no_sort_of_the_table(store) -> None:
    # The default order within a state or an action comes from an index, not a sort of all
    # their jobs (SUCCESS may be most of a million).
    for text in ("state='SUCCESS'", "action='a'", "action='a' and state='FAILED'"):
        page = "; ".join(store.explain(query(text, "updated:desc"), ADMIN)["page"])
        assert "USE TEMP B-TREE FOR ORDER BY" not in page, (text, page)


def test_the_admins_count_of_one_state_is_the_kept_total(store) -> None:
    count = store.explain(query("state='SUCCESS'", "updated:desc"), ADMIN)["count"]
    assert count == ["SEARCH job_state_total USING PRIMARY KEY (state=?)"], count
    found = store.search(query("state='SUCCESS' or state='FAILED'", "updated:desc", 0), ADMIN)
    expected = sum(1 for d in docs() if d["state"] in ("SUCCESS", "FAILED"))
    assert found[0] == expected


def test_the_per_action_table_and_fleet_samples_are_indexed(store) -> None:
    admin = "; ".join(store.explain_updated_counts(SINCE, UNTIL, ADMIN, ["SUCCESS", "FAILED"]))
    assert "COVERING INDEX job_updated_action_state" in admin, admin
    user = store.explain_updated_counts(SINCE, UNTIL, USER)
    check_indexed({"count": user}, user=True)


def test_a_user_who_may_see_many_jobs_is_checked_on_the_readers_index(store, monkeypatch) -> None:
    # Beyond READER_DRIVEN_MOST visible jobs, the filter's index drives the read and each
    # candidate is looked up in job_reader: still no scan, and the same answer.
    narrow = store.search(query("state='FAILED'", "updated:desc", 100), USER)
    monkeypatch.setattr(sqlite_store, "READER_DRIVEN_MOST", 0)
    plans = store.explain(query("state='FAILED'", "updated:desc"), USER)
    for lines in plans.values():
        text = "; ".join(lines)
        assert "job_state_updated (state=?)" in text, text
        assert "job_reader USING COVERING INDEX job_reader_job (job_id=? AND principal=?)" in text
    assert store.search(query("state='FAILED'", "updated:desc", 100), USER) == narrow
    expected = {
        d["id"] for d in docs() if d["state"] == "FAILED" and "user/u" in d["acl"]["view-data"]
    }
    assert {d["id"] for d in narrow[1]} == expected and narrow[0] == len(expected)


def test_the_children_of_a_job_by_state_are_indexed(store) -> None:
    for who in ("admin", "user"):
        q = query(f"parent-job='{PARENT}'", "updated:desc", 20, "terms:state")
        principals = ADMIN if who == "admin" else USER
        check_indexed(store.explain(q, principals), who == "user")
        count, _ = store.search(q, principals)
        terms = store.aggregate(q, principals)["terms:state"]["buckets"]
        assert sum(b["doc_count"] for b in terms) == count > 0
