"""The filter language's limits, and `fold`: every filter the language accepts runs in the
SQLite store (none ends in a database error), every one past a limit is a FilterError of
our own, and folded trees match the same documents as the trees they come from."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nuvla_job.api.evaluate import evaluate
from nuvla_job.api.filters import (
    MAX_COMPARISONS,
    MAX_DEPTH,
    MAX_VALUES,
    And,
    Comparison,
    FilterError,
    Or,
    combine,
    fold,
    parse,
)
from nuvla_job.api.query import MAX_AGGREGATIONS, MAX_ORDERBY, Query, QueryError, parse_query
from nuvla_job.api.sqlite import SqliteStore
from tests.support.stores import sqlite_store_with

DOCS = [
    {
        "id": f"job/{i}",
        "state": "QUEUED" if i % 2 else "RUNNING",
        "name": f"n{i}",
        "priority": i,
        "tags": [f"t{i}", "common"],
        "affected-resources": [{"href": f"r/{i}"}],
        "acl": {"owners": ["group/nuvla-admin"], "view-data": [f"user/{i}"]},
    }
    for i in range(6)
]
# The comparisons whose SQL nests deepest: lists of maps, negations, null, prefixes on lists.
HEAVY = [
    "affected-resources/href!='r/1'",
    "acl/owners!=['x',null]",
    "tags^='t'",
    "name!=null",
    "target-resource/href!='a'",
    "created>'now-1d'",
    "payload!=true",
]


@pytest.fixture(scope="module")
def store() -> Iterator[SqliteStore]:
    with sqlite_store_with(DOCS) as store:
        yield store


def _runs(store: SqliteStore, text: list[str] | str) -> None:
    """Search with the filter as an admin and as a user (the ACL adds SQL of its own); a
    database error would raise StoreError."""
    query = parse_query({"filter": [text] if isinstance(text, str) else text})
    for principals in (None, frozenset({"user/1", "group/nuvla-user"})):
        store.jobs.search(query, principals)
        store.jobs.aggregate(Query(filter=query.filter, aggregations=[("terms", "tags")]), None)
        assert query.filter is not None
        count, docs = store.jobs.search(query, None)
        assert {d["id"] for d in docs} == {d["id"] for d in DOCS if evaluate(query.filter, d)}


def _nested(depth: int, leaf: str, other: str) -> str:
    """`depth` levels of groups, alternating and/or, each with a heavy comparison."""
    text = leaf
    for level in range(depth - 1):
        text = f"{other} {'and' if level % 2 else 'or'} ({text})"
    return text


@pytest.mark.parametrize("leaf", HEAVY)
def test_the_deepest_filter_allowed_runs(store: SqliteStore, leaf: str) -> None:
    for other in HEAVY:
        _runs(store, _nested(MAX_DEPTH, leaf, other))
    with pytest.raises(FilterError, match=f"more than {MAX_DEPTH} levels deep"):
        parse(_nested(MAX_DEPTH + 1, leaf, leaf))


def test_groups_nested_on_the_left_and_in_several_filters_count_alike(store: SqliteStore) -> None:
    text = "name='a'"
    for level in range(MAX_DEPTH - 1):
        text = f"({text}) {'and' if level % 2 else 'or'} tags!='x'"
    _runs(store, text)
    # A second filter joins with `and`: an `or` at the top becomes one level deeper.
    with pytest.raises(FilterError, match="the filters together nest"):
        combine([_nested(MAX_DEPTH, "name='a'", "tags!='x'") + " or name='z'", "state='A'"])


def test_the_most_comparisons_allowed_run(store: SqliteStore) -> None:
    # None of these fold: different operators or paths.
    kinds = ["priority<{i}", "name^='{i}'", "tags>'{i}'", "state>'{i}'", "progress>={i}"]
    terms = [kinds[i % len(kinds)].format(i=i) for i in range(MAX_COMPARISONS)]
    for joiner in (" or ", " and "):
        _runs(store, joiner.join(terms))
        with pytest.raises(FilterError, match=f"more than {MAX_COMPARISONS} comparisons"):
            parse(joiner.join([*terms, "priority>1"]))
    groups = [f"({t} and name!='x')" for t in terms[: MAX_COMPARISONS // 2]]
    _runs(store, " or ".join(groups))
    # Spread over several filters, they count together.
    half = " or ".join(terms[: MAX_COMPARISONS // 2 + 1])
    with pytest.raises(FilterError, match="the filters together have more than"):
        combine([half, half])


def test_long_runs_of_or_on_one_attribute_are_one_comparison(store: SqliteStore) -> None:
    # The shape the finding sent: 1,000 and 10,000 terms were "Expression tree is too large".
    for count in (1_000, MAX_VALUES):
        names = " or ".join(f"name='n{i}'" for i in range(count))
        _runs(store, names)
        _runs(store, " or ".join(f"state='{i}' or action='{i}'" for i in range(count // 2)))
        _runs(store, " and ".join(f"tags!='{i}'" for i in range(count)))
    with pytest.raises(FilterError, match=f"more than {MAX_VALUES} values"):
        parse(" or ".join(f"name='n{i}'" for i in range(MAX_VALUES + 1)))


def test_values_are_counted_over_every_filter_of_a_search() -> None:
    half = "state=[" + ",".join(f"'{i}'" for i in range(MAX_VALUES // 2 + 1)) + "]"
    with pytest.raises(FilterError, match=f"the filters together have more than {MAX_VALUES}"):
        combine([half, half])
    with pytest.raises(QueryError, match="invalid filter: the filters together"):
        parse_query({"filter": [half, half]})


def test_orderby_and_aggregations_are_bounded(store: SqliteStore) -> None:
    within = parse_query({"orderby": [",".join(["name"] * MAX_ORDERBY)]})
    store.jobs.search(within, None)
    with pytest.raises(QueryError, match=f"orderby has more than {MAX_ORDERBY} attributes"):
        parse_query({"orderby": [",".join(["name"] * (MAX_ORDERBY + 1))]})
    # The same aggregation twice is one (the answer has one key for it).
    assert parse_query({"aggregation": ["terms:tags,terms:tags"]}).aggregations == [
        ("terms", "tags")
    ]
    many = ",".join(f"terms:name/{i}" for i in range(MAX_AGGREGATIONS + 1))
    with pytest.raises(QueryError, match=f"more than {MAX_AGGREGATIONS} aggregations"):
        parse_query({"aggregation": [many]})


# -- fold ---------------------------------------------------------------------------------------


def eq(path: str, value: object, op: str = "=") -> Comparison:
    return Comparison(path, op, value)  # type: ignore[arg-type]


def test_fold_joins_comparisons_of_one_path() -> None:
    assert fold(parse("state='a' or state='b' or priority=1 or state=['c',null]")) == Or(
        (eq("state", ("a", "b", "c", None)), eq("priority", 1))
    )
    assert fold(parse("tags!='a' and name='x' and tags!=['b']")) == And(
        (eq("tags", ("a", "b"), "!="), eq("name", "x"))
    )
    assert fold(parse("state='a' or state='b'")) == eq("state", ("a", "b"))
    # Other operators, or = under `and` and != under `or`, stay as they are.
    for text in ("state='a' and state='b'", "tags!='a' or tags!='b'", "priority<1 or priority<2"):
        assert fold(parse(text)) == parse(text)
    assert fold(parse("(tags!='a' and tags!='b') or state='c'")) == Or(
        (eq("tags", ("a", "b"), "!="), eq("state", "c"))
    )


PATHS = ["state", "name", "tags", "priority", "affected-resources/href", "acl/owners"]
VALUES = ["QUEUED", "n1", "t2", "common", "r/3", "user/1", 2, 3, None, True]
comparison_texts = st.builds(
    lambda path, op, value: f"{path}{op}{_literal(value)}",
    st.sampled_from(PATHS),
    st.sampled_from(["=", "=", "!=", "!="]),
    st.sampled_from(VALUES),
)


def _literal(value: object) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    return str(value) if isinstance(value, int) else f"'{value}'"


filter_texts = st.recursive(
    comparison_texts,
    lambda kids: st.builds(
        lambda joiner, parts: "(" + f" {joiner} ".join(parts) + ")",
        st.sampled_from(["and", "or"]),
        st.lists(kids, min_size=2, max_size=5),
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(text=filter_texts)
def test_folded_trees_match_what_their_trees_match(store: SqliteStore, text: str) -> None:
    node = parse(text)
    folded = fold(node)
    for doc in DOCS:
        assert evaluate(folded, doc) == evaluate(node, doc), (text, doc["id"])
    # and the store (which compiles the folded tree) agrees with the unfolded one
    _, docs = store.jobs.search(Query(filter=node), None)
    assert {d["id"] for d in docs} == {d["id"] for d in DOCS if evaluate(node, d)}, text
