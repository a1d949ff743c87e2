"""CIMI search parameters: parsing, ordering, paging, projection and aggregations.

Ordering, paging and aggregations run on the SQLite store itself (its own schema, in a
temporary folder), not on a copy of its table.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nuvla_job.api.filters import And, Comparison
from nuvla_job.api.query import (
    Query,
    QueryError,
    apply_select,
    limit_offset,
    parse_query,
)
from nuvla_job.api.sqlite_sql import aggregation_result, aggregation_sql, order_by_sql
from tests.support.stores import sqlite_store_with

NOW = datetime(2026, 3, 31, 14, 45, 30, 987654, tzinfo=UTC)


def search(docs: list[dict[str, Any]], query: Query) -> list[str]:
    """The ids the store's own search returns, in order (as an administrator: no ACL)."""
    with sqlite_store_with(docs) as store:
        _, found = store.jobs.search(query, None)
    return [doc["id"] for doc in found]


def aggregate(docs: list[dict[str, Any]], query: Query) -> dict[str, Any]:
    with sqlite_store_with(docs) as store:
        return store.jobs.aggregate(query, None)


# --------------------------------------------------------------------------------------------
# parse_query


def test_defaults():
    query = parse_query({})
    assert query == Query()
    assert (query.filter, query.orderby, query.first, query.last) == (None, [], 1, None)
    assert (query.select, query.aggregations) == (None, [])


def test_full_query():
    query = parse_query(
        {
            "filter": ["state='QUEUED'", "created<'now-1d'"],
            "orderby": ["created:desc,priority", "id:ASC"],
            "first": ["3"],
            "last": ["5"],
            "select": ["state, progress", "tags"],
            "aggregation": ["terms:state,value_count:id", "max:priority"],
            "unrelated": ["ignored"],
        },
        now=NOW,
    )
    assert query.filter == And(
        (
            Comparison("state", "=", "QUEUED"),
            Comparison("created", "<", "2026-03-30T14:45:30.987Z"),
        )
    )
    assert query.orderby == [("created", True), ("priority", False), ("id", False)]
    assert (query.first, query.last) == (3, 5)
    assert query.select == ["state", "progress", "tags"]
    assert query.aggregations == [("terms", "state"), ("value_count", "id"), ("max", "priority")]


def test_single_strings_are_accepted_and_last_repeat_wins():
    query = parse_query({"filter": "state='a'", "first": ["2", "4"], "last": "0"})
    assert query.filter == Comparison("state", "=", "a")
    assert (query.first, query.last) == (4, 0)


def test_blank_parameters_mean_nothing():
    query = parse_query({"filter": ["", " "], "orderby": [""], "select": [" , "]})
    assert query == Query()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"filter": ["state=="]}, "invalid filter: invalid operator '=='"),
        ({"filter": ["nope=1"]}, "invalid filter: unknown attribute 'nope'"),
        ({"filter": ["state='a'", "(state='b'"]}, "invalid filter: filter 2: unbalanced"),
        ({"orderby": ["nope:desc"]}, "unknown attribute 'nope'"),
        ({"orderby": ["created:down"]}, "invalid sort direction 'down' for 'created'"),
        ({"orderby": ["created desc"]}, "invalid attribute path 'created desc'"),
        ({"orderby": ["tags"]}, "cannot sort on 'tags'"),
        ({"first": ["x"]}, "first must be a non-negative integer, not 'x'"),
        ({"first": ["-1"]}, "first must be a non-negative integer"),
        ({"last": ["1.5"]}, "last must be a non-negative integer"),
        ({"last": ["١٢"]}, "last must be a non-negative integer"),  # non-ASCII digits
        ({"last": [str(2**64)]}, "last must be a non-negative integer"),
        ({"first": ["9" * 5000]}, "first must be a non-negative integer"),
        ({"select": ["state,nope"]}, "unknown attribute 'nope' in select"),
        ({"aggregation": ["terms"]}, "aggregation 'terms' must look like op:attribute"),
        ({"aggregation": ["median:priority"]}, "unknown aggregation 'median'"),
        ({"aggregation": ["terms:nope"]}, "unknown attribute 'nope'"),
        ({"aggregation": ["sum:state"]}, "aggregation sum needs a numeric attribute"),
    ],
)
def test_errors(params, message):
    with pytest.raises(QueryError) as caught:
        parse_query(params)
    assert message in str(caught.value)


def test_query_error_is_a_value_error():
    assert issubclass(QueryError, ValueError)


# --------------------------------------------------------------------------------------------
# Ordering and paging


def test_order_by_sql():
    assert order_by_sql(Query()) == "ORDER BY created ASC, id ASC"
    query = parse_query({"orderby": ["priority:desc,target-resource/href,progress:desc"]})
    assert order_by_sql(query) == (
        "ORDER BY priority DESC, target_href ASC, json_extract(doc, '$.\"progress\"') DESC, id ASC"
    )
    assert order_by_sql(parse_query({"orderby": ["id:desc"]})) == ("ORDER BY id DESC")


@pytest.mark.parametrize(
    ("first", "last", "expected"),
    [
        (1, None, (None, 0)),
        (1, 10, (10, 0)),
        (3, 5, (3, 2)),
        (5, 3, (0, 4)),
        (1, 0, (0, 0)),
        (0, 2, (2, 0)),
        (4, 4, (1, 3)),
    ],
)
def test_limit_offset(first, last, expected):
    assert limit_offset(Query(first=first, last=last)) == expected


def test_search_orders_and_pages_in_sqlite():
    docs = [
        {"id": "job/a", "created": "2026-01-02T00:00:00.000Z", "priority": 5, "state": "QUEUED"},
        {"id": "job/b", "created": "2026-01-01T00:00:00.000Z", "priority": 5, "state": "QUEUED"},
        {"id": "job/c", "created": "2026-01-01T00:00:00.000Z", "priority": 1, "state": "FAILED"},
        {"id": "job/d", "created": "2026-01-03T00:00:00.000Z", "priority": 9, "state": "QUEUED"},
    ]
    assert search(docs, parse_query({})) == ["job/b", "job/c", "job/a", "job/d"]
    by_priority = parse_query({"orderby": ["priority:desc"]})
    assert search(docs, by_priority) == ["job/d", "job/a", "job/b", "job/c"]
    page = parse_query({"orderby": ["priority"], "first": ["2"], "last": ["3"]})
    assert search(docs, page) == ["job/a", "job/b"]
    assert search(docs, parse_query({"last": ["0"]})) == []
    queued = parse_query({"filter": ["state='QUEUED'"], "orderby": ["created:desc"]})
    assert search(docs, queued) == ["job/d", "job/a", "job/b"]


# --------------------------------------------------------------------------------------------
# Aggregations

AGG_DOCS = [
    {"id": "job/1", "state": "QUEUED", "priority": 10, "progress": 0, "tags": ["a", "b", "a"]},
    {"id": "job/2", "state": "QUEUED", "priority": 20, "progress": 50, "tags": ["a"]},
    {"id": "job/3", "state": "RUNNING", "priority": 30, "progress": 100.0, "tags": []},
    {
        "id": "job/4",
        "state": "SUCCESS",
        "progress": "n/a",
        "affected-resources": [{"href": "d/1"}, {"href": "d/2"}, {"href": "d/1"}, "x"],
    },
    {"id": "job/5", "state": 7, "name": True, "affected-resources": [{"href": "d/2"}]},
]


def test_aggregations_in_sqlite():
    query = parse_query(
        {
            "aggregation": [
                "terms:state,terms:tags,terms:affected-resources/href,terms:progress",
                "value_count:id,value_count:priority,value_count:tags",
                "max:priority,min:priority,sum:priority,avg:priority",
                "max:progress,min:progress,sum:progress,avg:progress,sum:return-code",
                "max:return-code,terms:name",
            ]
        }
    )
    answer = aggregate(AGG_DOCS, query)

    def buckets(*pairs):
        return {
            "doc_count_error_upper_bound": 0,
            "sum_other_doc_count": 0,
            "buckets": [{"key": k, "doc_count": n} for k, n in pairs],
        }

    assert answer == {
        "terms:state": buckets(("QUEUED", 2), ("RUNNING", 1), ("SUCCESS", 1)),
        "terms:tags": buckets(("a", 2), ("b", 1)),  # a document counts once per value
        "terms:affected-resources/href": buckets(("d/2", 2), ("d/1", 1)),
        "terms:progress": buckets((0, 1), (50, 1), (100.0, 1), ("n/a", 1)),
        "terms:name": buckets((True, 1)),
        "value_count:id": {"value": 5},
        "value_count:priority": {"value": 3},
        "value_count:tags": {"value": 4},
        "max:priority": {"value": 30.0},
        "min:priority": {"value": 10.0},
        "sum:priority": {"value": 60.0},
        "avg:priority": {"value": 20.0},
        "max:progress": {"value": 100.0},
        "min:progress": {"value": 0.0},
        "sum:progress": {"value": 150.0},
        "avg:progress": {"value": 50.0},
        "sum:return-code": {"value": 0.0},
        "max:return-code": {"value": None},
    }


def test_aggregations_follow_the_filter():
    query = parse_query({"filter": ["state='QUEUED'"], "aggregation": ["terms:state,sum:priority"]})
    answer = aggregate(AGG_DOCS, query)
    assert answer["terms:state"]["buckets"] == [{"key": "QUEUED", "doc_count": 2}]
    assert answer["sum:priority"] == {"value": 30.0}


def test_aggregation_sql_rejects_bad_input():
    with pytest.raises(QueryError):
        aggregation_sql("median", "priority")
    with pytest.raises(QueryError, match="unknown attribute 'nope'"):
        aggregation_sql("terms", "nope")
    with pytest.raises(QueryError, match="invalid attribute path"):
        aggregation_sql("terms", "name'); DROP TABLE job; --")
    with pytest.raises(QueryError, match="invalid attribute path"):
        order_by_sql(Query(orderby=[("name'", False)]))


def test_terms_buckets_sort_by_count_then_key():
    rows = [("text", "b", 2), ("text", "a", 2), ("integer", 3, 5), ("true", 1, 2)]
    assert [b["key"] for b in aggregation_result("terms", rows)["buckets"]] == [3, True, "a", "b"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {},
            optional={
                "state": st.sampled_from(["QUEUED", "RUNNING", "SUCCESS"]),
                "tags": st.lists(st.sampled_from(["a", "b", "c"]), max_size=3),
            },
        ),
        max_size=10,
    )
)
def test_terms_count_documents(docs):
    docs = [{"id": f"job/{i}", **doc} for i, doc in enumerate(docs)]
    answer = aggregate(docs, parse_query({"aggregation": ["terms:state,terms:tags"]}))
    for path in ("state", "tags"):
        counts: dict[str, int] = {}
        for doc in docs:
            values = doc.get(path, [])
            for value in set(values if isinstance(values, list) else [values]):
                counts[value] = counts.get(value, 0) + 1
        got = {b["key"]: b["doc_count"] for b in answer[f"terms:{path}"]["buckets"]}
        assert got == counts


# --------------------------------------------------------------------------------------------
# Projection


def test_apply_select():
    doc = {"id": "job/1", "resource-type": "job", "state": "QUEUED", "progress": 5, "acl": {}}
    assert apply_select(doc, None) is doc
    assert apply_select(doc, ["state"]) == {
        "id": "job/1",
        "resource-type": "job",
        "state": "QUEUED",
    }
    assert apply_select(doc, ["tags"]) == {"id": "job/1", "resource-type": "job"}
    assert list(apply_select(doc, ["progress", "state"])) == [
        "id",
        "resource-type",
        "state",
        "progress",
    ]
