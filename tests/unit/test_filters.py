"""The CIMI filter language: grammar, dates, the SQLite dialect, and SQL == Python semantics.

Every SQL check runs on the SQLite store itself (its own schema, in a temporary folder), not
on a copy of its table.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nuvla_job.api import schema
from nuvla_job.api.evaluate import evaluate
from nuvla_job.api.filters import (
    MAX_DEPTH,
    And,
    Comparison,
    FilterError,
    Node,
    Or,
    combine,
    normalize_date,
    parse,
)
from nuvla_job.api.query import Query
from nuvla_job.api.sqlite import SqliteStore
from nuvla_job.api.sqlite_sql import filter_sql
from nuvla_job.states import STATES
from tests.support.stores import sqlite_store_with

NOW = datetime(2026, 3, 31, 14, 45, 30, 987654, tzinfo=UTC)  # a Tuesday


def eq(path, value, op="="):
    return Comparison(path, op, value)


def select_ids(store: SqliteStore, node: Node) -> set[str]:
    """The ids the store's own search finds for `node` (as an administrator: no ACL)."""
    _, docs = store.jobs.search(Query(filter=node), None)
    return {doc["id"] for doc in docs}


@pytest.fixture
def empty_store() -> Iterator[SqliteStore]:
    with sqlite_store_with([]) as store:
        yield store


# --------------------------------------------------------------------------------------------
# Grammar


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("state='QUEUED'", eq("state", "QUEUED")),
        ('state="QUEUED"', eq("state", "QUEUED")),
        ("state!='QUEUED'", eq("state", "QUEUED", "!=")),
        ("priority<5", eq("priority", 5, "<")),
        ("priority<=5", eq("priority", 5, "<=")),
        ("priority>-5", eq("priority", -5, ">")),
        ("priority>=0", eq("priority", 0, ">=")),
        ("action^='bulk'", eq("action", "bulk", "^=")),
        ("name=true", eq("name", True)),
        ("name=false", eq("name", False)),
        ("name=null", eq("name", None)),
        ("name!=null", eq("name", None, "!=")),
        ("name=NULL", eq("name", None)),
        ("state=['QUEUED','RUNNING']", eq("state", ("QUEUED", "RUNNING"))),
        ("state!=[ 'QUEUED' , \"RUNNING\" ]", eq("state", ("QUEUED", "RUNNING"), "!=")),
        ("state=[]", eq("state", ())),
        ("name=[null, 1, 'x', true]", eq("name", (None, 1, "x", True))),
        ("target-resource/href='deployment/1'", eq("target-resource/href", "deployment/1")),
        ("acl/owners='group/nuvla-admin'", eq("acl/owners", "group/nuvla-admin")),
        ("  state  =  'a'  ", eq("state", "a")),
        ("name='it\\'s'", eq("name", "it's")),
        ('name="say \\"hi\\""', eq("name", 'say "hi"')),
        ("name='back\\\\slash'", eq("name", "back\\slash")),
        ("name='a\"b'", eq("name", 'a"b')),
        ("name=''", eq("name", "")),
        ("name='and or ( ) [ ]'", eq("name", "and or ( ) [ ]")),
        ("name=2026-11-28", eq("name", "2026-11-28")),  # not a date attribute: plain text
        ("created=2026-11-28", eq("created", "2026-11-28T00:00:00.000Z")),
        ("created<2026-11-28T04:28:53Z", eq("created", "2026-11-28T04:28:53.000Z", "<")),
        ("created<2026-11-28T04:28:53.1234Z", eq("created", "2026-11-28T04:28:53.123Z", "<")),
        ("created<2026-11-28T04:28:53+02:00", eq("created", "2026-11-28T02:28:53.000Z", "<")),
        ("created<'2026-11-28T04:28:53.5-0130'", eq("created", "2026-11-28T05:58:53.500Z", "<")),
        ("created>'2026'", eq("created", "2026-01-01T00:00:00.000Z", ">")),
        ("created>'2026-11-28 10:00'", eq("created", "2026-11-28T10:00:00.000Z", ">")),
        ("created^='2026-11'", eq("created", "2026-11", "^=")),  # a prefix stays text
        (
            "created=[2026-01-01,'2026-02-01']",
            eq("created", tuple(f"2026-0{m}-01T00:00:00.000Z" for m in (1, 2))),
        ),
        ("created=5", eq("created", 5)),
    ],
)
def test_parses_every_form(text, expected):
    assert parse(text, NOW) == expected


def test_and_binds_tighter_than_or():
    a, b, c = eq("state", "a"), eq("state", "b"), eq("state", "c")
    assert parse("state='a' or state='b' and state='c'") == Or((a, And((b, c))))
    assert parse("state='a' and state='b' or state='c'") == Or((And((a, b)), c))
    assert parse("(state='a' or state='b') and state='c'") == And((Or((a, b)), c))
    assert parse("state='a' AND (state='b' OR state='c')") == And((a, Or((b, c))))


def test_nested_groups_are_flattened():
    a, b, c = eq("state", "a"), eq("state", "b"), eq("state", "c")
    assert parse("state='a' and (state='b' and state='c')") == And((a, b, c))
    assert parse("((state='a')) or (state='b' or state='c')") == Or((a, b, c))
    assert parse("(state='a')and(state='b')") == And((a, b))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("(state='a'", "unbalanced parentheses: missing ')'"),
        ("state='a')", "unbalanced parentheses: unexpected ')' at position 10"),
        ("(state='a' or (state='b')", "unbalanced parentheses"),
        ("state=='a'", "invalid operator '==' at position 6"),
        ("state=>1", "invalid operator '=>'"),
        ("state~'a'", "invalid operator '~'"),
        ("state 'a'", "expected an operator"),
        ("state=", "expected a value"),
        ("x=1", "unknown attribute 'x' at position 1"),
        ("state='a' and foo/bar=1", "unknown attribute 'foo' at position 15"),
        ("name='abc", "unterminated string starting at position 6"),
        ('name="abc\\"', "unterminated string starting at position 6"),
        ("created<'yesterday'", "invalid date 'yesterday' for 'created' at position 9"),
        ("created<2026-13-01", "invalid date '2026-13-01'"),
        ("created<'now-7x'", "invalid date 'now-7x'"),
        ("", "empty filter"),
        ("   ", "empty filter"),
        ("state='a' and", "expected"),
        ("state='a' state='b'", "unexpected 'state' at position 11"),
        ("state=['a'", "expected ',' or ']'"),
        ("state=['a', ['b']]", "unexpected '['"),
        ("state<['a']", "a list value only works with = and !="),
        ("name<null", "null can only be compared with = or !="),
        ("name>true", "true/false can only be compared with = or !="),
        ("priority^=5", "^= needs a string value"),
        ("priority=99999999999999999999", "out of range"),
        ("state=queued", "unexpected 'queued' at position 7; expected a value"),
        ("state='a' & state='b'", "unexpected character '&' at position 11"),
    ],
)
def test_errors_say_what_and_where(text, message):
    with pytest.raises(FilterError) as caught:
        parse(text, NOW)
    assert message in str(caught.value)
    assert "Traceback" not in str(caught.value) and "Token(" not in str(caught.value)


def test_hostile_filters_are_refused_cleanly():
    deep = "state='a'"
    for i in range(60):
        deep = f"(state='a' {'and' if i % 2 else 'or'} {deep})"
    with pytest.raises(FilterError, match=f"more than {MAX_DEPTH} levels deep"):
        parse(deep)
    with pytest.raises(FilterError, match="out of range"):
        parse("priority=" + "9" * 5000)
    many = "state=[" + ",".join(["'x'"] * 10_001) + "]"
    with pytest.raises(FilterError, match="more than 10000 values"):
        parse(many)  # the limit is the language's: every dialect is spared the tree
    spread = " or ".join(f"name='{i}'" for i in range(10_001))
    with pytest.raises(FilterError, match="more than 10000 values"):
        parse(spread)
    assert filter_sql(parse("state=[" + ",".join(["'x'"] * 10_000) + "]"))[1] == ["x"] * 10_000
    long_text = "state='" + "x" * 10_000 + "'"
    assert parse(long_text) == parse(long_text) == eq("state", "x" * 10_000)


def test_filter_error_is_a_value_error():
    assert issubclass(FilterError, ValueError)


def test_parse_is_cached_without_date_math_only():
    text = "state='QUEUED' and priority<10"
    assert parse(text) is parse(text)
    later = NOW + timedelta(hours=1)
    assert parse("created<'now'", NOW) == eq("created", "2026-03-31T14:45:30.987Z", "<")
    assert parse("created<'now'", later) == eq("created", "2026-03-31T15:45:30.987Z", "<")


def test_combine():
    assert combine([]) is None
    assert combine(["", "  "]) is None
    assert combine(["state='a'", ""]) == eq("state", "a")
    assert combine(["state='a' or state='b'", "priority=1 and progress=2"]) == And(
        (Or((eq("state", "a"), eq("state", "b"))), eq("priority", 1), eq("progress", 2))
    )
    with pytest.raises(FilterError, match=r"^filter 2: unknown attribute 'nope'"):
        combine(["state='a'", "nope=1"])
    with pytest.raises(FilterError, match=r"^unknown attribute 'nope'"):
        combine(["nope=1"])


# --------------------------------------------------------------------------------------------
# Dates


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", "2026-03-31T14:45:30.987Z"),
        ("now-7d", "2026-03-24T14:45:30.987Z"),
        ("now+1h", "2026-03-31T15:45:30.987Z"),
        ("now-30m", "2026-03-31T14:15:30.987Z"),
        ("now-90s", "2026-03-31T14:44:00.987Z"),
        ("now+2w", "2026-04-14T14:45:30.987Z"),
        ("now-1M", "2026-02-28T14:45:30.987Z"),  # the 31st clamps to February's end
        ("now+1y", "2027-03-31T14:45:30.987Z"),
        ("now/s", "2026-03-31T14:45:30.000Z"),
        ("now/m", "2026-03-31T14:45:00.000Z"),
        ("now/h", "2026-03-31T14:00:00.000Z"),
        ("now/d", "2026-03-31T00:00:00.000Z"),
        ("now-1d/d", "2026-03-30T00:00:00.000Z"),
        ("now/w", "2026-03-30T00:00:00.000Z"),  # Monday
        ("now/M", "2026-03-01T00:00:00.000Z"),
        ("now/y", "2026-01-01T00:00:00.000Z"),
        ("now-1d+12h", "2026-03-31T02:45:30.987Z"),
        (" now-7d ", "2026-03-24T14:45:30.987Z"),
    ],
)
def test_date_math(text, expected):
    assert normalize_date(text, NOW) == expected
    assert parse(f"created<'{text}'", NOW) == eq("created", expected, "<")


def test_date_math_resolves_in_utc_and_defaults_to_the_clock():
    paris = timezone(timedelta(hours=2))
    assert normalize_date("now", NOW.astimezone(paris)) == "2026-03-31T14:45:30.987Z"
    assert normalize_date("now", NOW.replace(tzinfo=None)) == "2026-03-31T14:45:30.987Z"
    before = datetime.now(UTC) - timedelta(seconds=1)
    assert normalize_date("now") > normalize_date("now", before)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-28", "2026-11-28T00:00:00.000Z"),
        ("2026-11-28T04:28", "2026-11-28T04:28:00.000Z"),
        ("2026-11-28T04:28:53.123Z", "2026-11-28T04:28:53.123Z"),
        ("2026-11-28T04:28:53.123456789Z", "2026-11-28T04:28:53.123Z"),
        ("2026-11-28T00:30:00+01:00", "2026-11-27T23:30:00.000Z"),
        ("2026-11-28T23:30:00-0100", "2026-11-29T00:30:00.000Z"),
        ("2026-11-28T23:30:00-01", "2026-11-29T00:30:00.000Z"),
        ("2026-02", "2026-02-01T00:00:00.000Z"),
        ("0005-01-01", "0005-01-01T00:00:00.000Z"),  # timeutil.format_time keeps 4 digits
    ],
)
def test_iso_dates_normalise(text, expected):
    assert normalize_date(text) == expected


@pytest.mark.parametrize("text", ["2026-02-30", "26-01-01", "now-", "tomorrow", "2026-01-01T25:00"])
def test_bad_dates(text):
    with pytest.raises(FilterError, match="invalid date"):
        normalize_date(text)


def test_date_math_out_of_range():
    with pytest.raises(FilterError, match="out of range"):
        parse("created<'now+999999999y'", NOW)


# --------------------------------------------------------------------------------------------
# SQL


@pytest.mark.parametrize(
    ("text", "sql"),
    [
        ("state='QUEUED'", "state = ?"),
        ("state!='QUEUED'", "state IS NOT ?"),
        ("state=['QUEUED','RUNNING']", "state IN (?, ?)"),
        ("created>=2026-01-01 and created<'now-7d'", "created >= ? AND created < ?"),
        ("priority<100", "priority < ?"),
        ("target-resource/href='deployment/1'", "target_href = ?"),
        ("parent-job=null", "parent_job IS NULL"),
        ("execution-mode!=null", "execution_mode IS NOT NULL"),
        ("action^='bulk'", "action >= ? AND action < ?"),
        ("state=1", "0"),  # a TEXT column never holds a number
        ("state!=1", "1"),
    ],
)
def test_indexed_paths_compile_to_their_column(text, sql):
    assert filter_sql(parse(text, NOW))[0] == sql


def test_other_paths_compile_to_json_functions():
    sql, params = filter_sql(parse("progress>=50", NOW))
    assert "json_extract(doc, '$.\"progress\"') >= ?" in sql
    assert params == [50]
    sql, _ = filter_sql(parse("tags^='x'", NOW))
    assert sql.startswith("EXISTS (SELECT 1 FROM json_each(doc, '$.\"tags\"')")
    # A tag equal to a string is a lookup in the store's side table of tags.
    sql, _ = filter_sql(parse("tags='x'", NOW))
    assert sql == "id IN (SELECT job_id FROM job_tag WHERE tag = ?)"
    sql, _ = filter_sql(parse("acl/owners='x'", NOW))
    assert 'json_each(doc, \'$."acl"."owners"\')' in sql


@pytest.mark.parametrize(
    "text",
    [
        "state='v1' or name!='v2' and tags=['v3','v4'] or acl/owners^='v5'",
        "affected-resources/href='v6' and created<'2031-02-03' and priority=[9876, 5432]",
        "name=\"x') OR 1=1 --\" or description='\"; DROP TABLE job; --'",
        "progress>4242 and return-code!=-3131 and name=true",
    ],
)
def test_values_only_travel_as_parameters(text):
    sql, params = filter_sql(parse(text, NOW))
    for value in params:
        if value not in ("true", "false"):  # JSON type names for booleans
            assert str(value) not in sql
    assert "v1" not in sql and "OR 1=1" not in sql and "DROP" not in sql
    assert sql.count("?") == len(params)
    with sqlite_store_with([{"id": "job/1", "name": "x') OR 1=1 --"}]) as store:
        store.db.read(f"SELECT 1 FROM job WHERE {sql}", params)  # valid SQL


def test_hand_built_paths_are_validated():
    for path in ("name'); DROP TABLE job; --", 'name/"x', "nope"):
        with pytest.raises(FilterError):
            filter_sql(Comparison(path, "=", "x"))


@pytest.mark.parametrize(
    "text",
    [
        "state='QUEUED'",
        "state=['QUEUED','RUNNING']",
        "created<'now-7d'",
        "created>=2026-01-01 and created<2026-02-01",
        "target-resource/href='deployment/1'",
        "tags='/job/entries/entry-999-0000000001'",
    ],
)
def test_common_filters_use_an_index(text, empty_store):
    sql, params = filter_sql(parse(text, NOW))
    plan = empty_store.db.read(f"EXPLAIN QUERY PLAN SELECT doc FROM job WHERE {sql}", params)
    assert any("USING INDEX" in row[-1] for row in plan), plan


# --------------------------------------------------------------------------------------------
# Semantics, checked in Python and on the store


DOCS = [
    {"id": "job/1", "state": "QUEUED", "priority": 10, "tags": ["a", "b"], "name": "x"},
    {"id": "job/2", "state": "RUNNING", "priority": 999, "tags": [], "name": None},
    {"id": "job/3", "state": 5, "progress": "50", "tags": "a", "name": 1},
    {"id": "job/4", "affected-resources": [{"href": "d/1"}, {"href": None}, "d/2"], "name": True},
    {"id": "job/5", "affected-resources": [{}], "acl": {"owners": ["u/1"]}, "progress": 50},
    {"id": "job/6", "tags": [None, 3], "acl": {"owners": "u/1"}, "progress": 49.5},
]


@pytest.fixture(scope="module")
def docs_store(store_with) -> Iterator[SqliteStore]:
    """DOCS on each store in turn."""
    with store_with(DOCS) as store:
        yield store


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("state='QUEUED'", {1}),
        ("state!='QUEUED'", {2, 3, 4, 5, 6}),  # missing (and wrongly typed) match !=
        ("state=null", {3, 4, 5, 6}),  # a number in the TEXT column reads as null
        ("state!=null", {1, 2}),
        ("priority>=10", {1, 2}),
        ("priority<'z'", set()),  # no number-vs-text ordering
        ("tags='a'", {1}),  # "a" is not a list
        ("tags!='a'", {2, 3, 4, 5, 6}),
        ("tags=null", {2, 3, 4, 5}),
        ("tags!=null", {1, 6}),
        ("tags=3", {6}),
        ("tags=['b', 3]", {1, 6}),
        ("tags^=''", {1}),
        ("name=null", {2, 5, 6}),
        ("name=1", {3}),  # true is not 1
        ("name=true", {4}),
        ("name!='x'", {2, 3, 4, 5, 6}),
        ("name='1'", set()),
        ("progress=50", {5}),  # "50" is text
        ("progress>49", {5, 6}),
        ("progress<50", {6}),
        ("affected-resources/href='d/1'", {4}),
        ("affected-resources/href=null", {1, 2, 3, 5, 6}),
        ("affected-resources/href^='d/'", {4}),
        ("acl/owners='u/1'", {5}),
        ("acl=null", {1, 2, 3, 4}),
        ("state='QUEUED' or tags=3 and progress<50", {1, 6}),
        ("(state='QUEUED' or tags=3) and progress<50", {6}),
        # or-ed comparisons on one list (PostgreSQL: one EXISTS for them all)
        ("tags='a' or tags=3 or name=1", {1, 3, 6}),
        ("tags='zz' or tags^='b' or tags!='a'", {1, 2, 3, 4, 5, 6}),
        ("tags=null or tags='b' or tags=3", {1, 2, 3, 4, 5, 6}),
        ("affected-resources/href='d/1' or affected-resources/href^='x' or tags='a'", {1, 4}),
    ],
)
def test_semantics(text, ids, docs_store):
    node = parse(text, NOW)
    expected = {f"job/{i}" for i in ids}
    assert {d["id"] for d in DOCS if evaluate(node, d)} == expected
    assert select_ids(docs_store, node) == expected


# --------------------------------------------------------------------------------------------
# Property: SQL and Python agree on random documents and filters

STRINGS = ["QUEUED", "RUNNING", "a", "ab", "abc", "b", "", "job/1", "job/12", "o'k", 'say "hi"']
STRINGS += ["back\\slash", "é", "Ωmega", "z", "\U0010ffff", "1"]
DATES = ["2026-03-24T14:45:30.987Z", "2026-03-31T00:00:00.000Z", "2026-03-31T14:45:30.987Z"]
DATES += ["2026-04-01T00:00:00.000Z"]
DATE_MATH = {"now": DATES[2], "now-7d": DATES[0], "now/d": DATES[1], "now+1d/d": DATES[3]}
INTS = [-5, 0, 1, 2, 10, 999]
PREFIXES = ["", "a", "job/", "QUE", "2026-03-3", "\U0010ffff", "é"]

scalars = st.one_of(
    st.sampled_from(STRINGS + DATES),
    st.sampled_from(INTS),
    st.sampled_from([0.5, 1.0, 2.5]),
    st.booleans(),
    st.none(),
)
any_json = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.sampled_from(["href", "owners", "x"]), scalars, max_size=2),
)
strings = st.sampled_from(STRINGS)
string_lists = st.lists(st.one_of(strings, scalars), max_size=3)
href_map = st.fixed_dictionaries({"href": st.one_of(strings, scalars)})


def typed(strategy):
    """Values of the schema's type half of the time, any JSON at all otherwise."""
    return st.one_of(strategy, any_json)


ATTRIBUTE_VALUES = {
    "state": typed(st.sampled_from(STATES + ("a",))),
    "action": typed(strings),
    "created": typed(st.sampled_from(DATES)),
    "updated": typed(st.sampled_from(DATES)),
    "started": typed(st.sampled_from(DATES)),
    "priority": typed(st.sampled_from(INTS)),
    "progress": typed(st.sampled_from(INTS)),
    "parent-job": typed(strings),
    "execution-mode": typed(st.sampled_from(schema.EXECUTION_MODES)),
    "name": typed(strings),
    "target-resource": typed(href_map),
    "tags": typed(string_lists),
    "nested-jobs": typed(string_lists),
    "affected-resources": typed(st.lists(st.one_of(href_map, href_map, any_json), max_size=3)),
    "acl": typed(
        st.fixed_dictionaries({}, optional={"owners": string_lists, "view-data": any_json})
    ),
}
documents = st.fixed_dictionaries({}, optional=ATTRIBUTE_VALUES)

FILTER_PATHS = [
    *schema.INDEXED,
    "tags",
    "nested-jobs",
    "affected-resources/href",
    "acl/owners",
    "acl/view-data",
    "name",
    "progress",
    "started",
    "target-resource",
    "acl",
    "description",
]


def scalars_in(value: object, found: dict) -> dict:
    """The distinct non-float scalars inside a JSON value (keyed so that 1 and True differ)."""
    if isinstance(value, list | dict):
        for item in value.values() if isinstance(value, dict) else value:
            scalars_in(item, found)
    elif not isinstance(value, float):
        found[(type(value).__name__, value)] = value
    return found


@st.composite
def comparisons(draw, seen: dict):
    """(comparison node as parse must build it, its text). Paths are often attributes of the
    documents and literals values `seen` under them there, so that comparisons do hit."""
    present = [p for p in FILTER_PATHS if p.split("/")[0] in seen]
    path = draw(st.sampled_from(present if present and draw(st.booleans()) else FILTER_PATHS))
    is_date = path in schema.DATE_ATTRIBUTES
    seen = seen.get(path.split("/")[0], ())

    def quote(text):
        mark = draw(st.sampled_from(["'", '"']))
        return mark + text.replace("\\", "\\\\").replace(mark, "\\" + mark) + mark

    def literal():
        if seen and draw(st.booleans()):
            value = draw(st.sampled_from(seen))
            if not (is_date and isinstance(value, str) and value not in DATES):
                return render_literal(value)
        kind = draw(st.sampled_from(["str", "str", "int", "bool", "null"]))
        if kind == "int":
            return render_literal(draw(st.sampled_from(INTS)))
        if kind == "bool":
            return render_literal(draw(st.booleans()))
        if kind == "null":
            return None, "null"
        if is_date and draw(st.booleans()):
            math = draw(st.sampled_from(sorted(DATE_MATH)))
            return DATE_MATH[math], quote(math)
        return render_literal(draw(st.sampled_from(DATES if is_date else STRINGS + DATES)))

    def render_literal(value):
        if value is None:
            return None, "null"
        if isinstance(value, bool):
            return value, draw(st.sampled_from([str(value).lower(), str(value).upper()]))
        if isinstance(value, int):
            return value, str(value)
        return value, value if value in DATES and draw(st.booleans()) else quote(value)

    shape = draw(st.sampled_from(["scalar", "scalar", "list", "prefix"]))
    if shape == "prefix":
        texts = [v for v in seen if isinstance(v, str)] + PREFIXES
        text = draw(st.sampled_from(texts))
        value = text[: draw(st.integers(0, len(text)))]
        return Comparison(path, "^=", value), f"{path}^={quote(value)}"
    if shape == "list":
        items = [literal() for _ in range(draw(st.integers(0, 3)))]
        op = draw(st.sampled_from(["=", "!="]))
        text = "[" + ", ".join(t for _, t in items) + "]"
        return Comparison(path, op, tuple(v for v, _ in items)), f"{path}{op}{text}"
    value, text = literal()
    ops = ["=", "!="] if value is None or isinstance(value, bool) else ["=", "!=", "<", "<="]
    op = draw(st.sampled_from(ops + ([">", ">="] if len(ops) > 2 else [])))
    space = draw(st.sampled_from(["", " "]))
    return Comparison(path, op, value), f"{path}{space}{op}{space}{text}"


def render(tree, parent=None) -> str:
    if isinstance(tree[0], Comparison):
        return tree[1]
    kind, children = tree
    text = f" {kind} ".join(render(child, kind) for child in children)
    # an Or under an And needs parentheses; a group of the same kind gets them to test them
    return f"({text})" if parent == kind or (parent == "and" and kind == "or") else text


def expected_node(tree):
    if isinstance(tree[0], Comparison):
        return tree[0]
    kind, children = tree
    flat = []
    for child in map(expected_node, children):
        same = isinstance(child, And if kind == "and" else Or)
        flat.extend(child.children if same else [child])
    return (And if kind == "and" else Or)(tuple(flat))


def filter_trees(seen: dict):
    return st.recursive(
        comparisons(seen),
        lambda kids: st.tuples(
            st.sampled_from(["and", "or"]), st.lists(kids, min_size=2, max_size=3)
        ),
        max_leaves=5,
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(docs=st.lists(documents, min_size=2, max_size=12), data=st.data())
def test_sql_and_python_agree(docs, data, store_with):
    docs = [{"id": f"job/{i}", **doc} for i, doc in enumerate(docs)]
    docs = json.loads(json.dumps(docs))  # exactly what the store reads back
    attributes = {name for doc in docs for name in doc if name != "id"}
    seen = {a: tuple(scalars_in([d.get(a) for d in docs], {}).values()) for a in attributes}
    with store_with(docs) as store:
        for _ in range(data.draw(st.integers(2, 6))):
            tree = data.draw(filter_trees(seen))
            text = render(tree)
            node = parse(text, NOW)
            assert node == expected_node(tree), text
            in_python = {doc["id"] for doc in docs if evaluate(node, doc)}
            assert select_ids(store, node) == in_python, text


def test_rendering_uses_precedence():
    a, b, c = ((Comparison(n, "=", i), f"{n}={i}") for i, n in enumerate("abc"))
    assert render(("and", [("or", [a, b]), c])) == "(a=0 or b=1) and c=2"
    assert render(("or", [a, ("and", [b, c])])) == "a=0 or b=1 and c=2"
