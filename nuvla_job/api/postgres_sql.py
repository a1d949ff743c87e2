"""The PostgreSQL dialect of the query language: filter trees, orderings and aggregations
compiled to parameterised SQL over the PostgreSQL store's ``job`` table (postgres.py).

The table holds each document as ``jsonb`` in ``doc`` and the paths of ``schema.INDEXED`` in
columns of their own (sql_common.COLUMNS), text ones ``COLLATE "C"``, so that they compare
and sort by code point as SQLite's do. Every other path is read with ``->`` on text keys,
which is NULL through anything but an object (a list is never indexed into), as SQLite's
JSON paths are. Values only travel as ``%s`` parameters; the only user text in the SQL is a
path's segments, which filters.segments has checked (``[A-Za-z0-9_-]``).

The shared part of the filter compiler is sql_common.py's; the answers are those of
evaluate.py for every document (filters.py gives the semantics).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from . import schema
from .filters import Comparison, Node, Or, Scalar, Value, list_split, segments
from .query import AGGREGATION_OPS, Query, QueryError, check_path, metric_answer, terms_answer
from .sql_common import COLUMNS, FilterCompiler, Fragment, group, order_terms, wrap

__all__ = [
    "column_sql_type",
    "json_expr",
    "filter_sql",
    "order_by_sql",
    "aggregation_sql",
    "aggregation_result",
    "acl_sql",
]

_SQL_TYPES = {"str": 'TEXT COLLATE "C"', "int": "BIGINT"}


def column_sql_type(path: str) -> str:
    """The SQL type of an indexed path's column."""
    return _SQL_TYPES[schema.INDEXED[path]]


def json_expr(path: str, base: str = "doc", relative: bool = False) -> str:
    """The jsonb at a checked path: ``a/b`` -> ``doc -> 'a' -> 'b'``."""
    return base + "".join(f" -> '{s}'" for s in segments(path, relative))


def _text(expr: str) -> str:
    """A jsonb string's text, compared by code point (other kinds: their text, never used
    without a type test)."""
    return f"({expr} #>> '{{}}') COLLATE \"C\""


def _number(expr: str) -> str:
    # A CASE, not a type test beside a cast: PostgreSQL may evaluate AND's sides in any order.
    return f"CASE WHEN jsonb_typeof({expr}) = 'number' THEN ({expr})::numeric END"


def _not_null(expr: str) -> str:
    return f"COALESCE(jsonb_typeof({expr}), 'null') <> 'null'"


def _elements(list_path: str, base: str = "doc") -> str:
    """FROM-clause of the elements of a list path (none when it is not a JSON array)."""
    expr = json_expr(list_path, base)
    return f"jsonb_array_elements(CASE WHEN jsonb_typeof({expr}) = 'array' THEN {expr} END) AS j"


class _PostgresFilters(FilterCompiler):
    """The shared compiler (sql_common.py) on PostgreSQL's jsonb operators."""

    mark = "%s"
    false_sql = "FALSE"
    true_sql = "TRUE"
    null_safe_not_equal = "IS DISTINCT FROM"

    def is_not_true(self, sql: str) -> str:
        return f"({sql}) IS NOT TRUE"

    def _typed_test(self, op: str, kind: str, expr: str, values: list[Scalar]) -> Fragment:
        """A comparison of the jsonb `expr` against values of one kind."""
        if kind == "bool":  # only '=' reaches here
            names: list[Scalar] = ["true" if v else "false" for v in values]
            sql, params = self.test("=", f"({expr} #>> '{{}}')", names)
            return Fragment(f"jsonb_typeof({expr}) = 'boolean' AND {sql}", params, True)
        if kind == "str":
            sql, params = self.test(op, _text(expr), values)
            return Fragment(f"jsonb_typeof({expr}) = 'string' AND {sql}", params, True)
        sql, params = self.test(op, _number(expr), values)
        return Fragment(sql, params, True)

    def scalar(self, path: str, op: str, value: Value) -> Fragment:
        expr = json_expr(path)
        parts = []
        for kind, values in group(value).items():
            if kind == "null":
                present = _not_null(expr)
                parts.append(Fragment(f"NOT ({present})", (), False, present))
            else:
                parts.append(self._typed_test(op, kind, expr, values))
        return self.any_of(parts)

    def list_path(self, path: str, op: str, value: Value) -> Fragment:
        list_path, inner = list_split(path)
        element = "j.value" if inner is None else json_expr(inner, "j.value", relative=True)
        source = _elements(list_path)
        parts, tests = [], []
        for kind, values in group(value).items():
            if kind == "null":
                no_value = f"NOT EXISTS (SELECT 1 FROM {source} WHERE {_not_null(element)})"
                parts.append(Fragment(no_value, (), False))
            else:
                tests.append(self._typed_test(op, kind, element, values))
        if tests:
            test = self.any_of(tests)
            parts.append(
                Fragment(f"EXISTS (SELECT 1 FROM {source} WHERE {test.sql})", test.params, False)
            )
        return self.any_of(parts)

    def node(self, node: Node) -> Fragment:
        if isinstance(node, Or) and len(node.children) > 1:
            return self._or_merging_lists(node)
        return super().node(node)

    def _or_merging_lists(self, node: Or) -> Fragment:
        """`or` with the positive comparisons on one list merged into one EXISTS over its
        elements (the same answer: some element matches one of them): PostgreSQL runs each
        EXISTS on its own and, with hundreds of them, answers its statement_timeout only
        tens of seconds late; one EXISTS is cancelled on time."""
        lists: dict[str, list[Comparison]] = {}
        for child in node.children:
            if (
                isinstance(child, Comparison)
                and child.path in schema.LIST_PATHS
                and child.op != "!="
                and "null" not in group(child.value)
            ):
                lists.setdefault(child.path, []).append(child)
        merged = {path for path, found in lists.items() if len(found) > 1}
        parts: list[Fragment] = []
        for child in node.children:
            if isinstance(child, Comparison) and child.path in merged:
                found = lists[child.path]
                if any(child is c for c in found):  # a != one stays apart, below
                    if child is found[0]:
                        parts.append(self._exists_any(child.path, found))
                    continue
            parts.append(self.node(child))
        return Fragment(
            " OR ".join(wrap(p.sql) for p in parts),
            tuple(v for p in parts for v in p.params),
            any(p.nullable for p in parts),
        )

    def _exists_any(self, path: str, comparisons: list[Comparison]) -> Fragment:
        list_path, inner = list_split(path)
        element = "j.value" if inner is None else json_expr(inner, "j.value", relative=True)
        tests = [
            self._typed_test(c.op, kind, element, values)
            for c in comparisons
            for kind, values in group(c.value).items()
        ]
        test = self.any_of(tests)
        sql = f"EXISTS (SELECT 1 FROM {_elements(list_path)} WHERE {test.sql})"
        return Fragment(sql, test.params, False)


_FILTERS = _PostgresFilters()


def filter_sql(node: Node) -> tuple[str, list[Any]]:
    """A parameterised boolean expression selecting the rows of table ``job`` whose ``doc``
    matches `node` (a tree from filters.parse, whose limits keep the parameters far under
    PostgreSQL's 65,535)."""
    return _FILTERS.compile(node)


def acl_sql(principals: frozenset[str] | None) -> tuple[str, list[Any]]:
    """Rows whose ACL grants one of `principals` a right (every right implies viewing)."""
    if principals is None:
        return "TRUE", []
    acl = "job.doc -> 'acl'"
    sql = (
        f"EXISTS (SELECT 1 FROM jsonb_each(CASE WHEN jsonb_typeof({acl}) = 'object'"
        f" THEN {acl} END) AS r WHERE r.key = ANY(%s::text[]) AND r.value ?| %s::text[])"
    )
    return sql, [list(schema.ACL_RIGHTS), sorted(principals)]


# --------------------------------------------------------------------------------------------
# Ordering


def _sort_keys(path: str, desc: bool) -> list[str]:
    # SQLite's order: NULL first (ascending), then numbers (a JSON true/false reads as 1/0),
    # then text (objects and lists as their JSON text).
    direction = "DESC NULLS LAST" if desc else "ASC NULLS FIRST"
    if path in COLUMNS:
        return [f"{COLUMNS[path]} {direction}"]
    check_path(path)
    expr = json_expr(path)
    kind = (
        f"CASE jsonb_typeof({expr}) WHEN 'number' THEN 1 WHEN 'boolean' THEN 1"
        f" WHEN 'string' THEN 2 WHEN 'object' THEN 2 WHEN 'array' THEN 2 END"
    )
    number = (
        f"CASE jsonb_typeof({expr}) WHEN 'number' THEN ({expr})::numeric"
        f" WHEN 'boolean' THEN CASE WHEN ({expr})::boolean THEN 1 ELSE 0 END END"
    )
    text = f"CASE WHEN jsonb_typeof({expr}) IN ('string', 'object', 'array') THEN {_text(expr)} END"
    return [f"{key} {direction}" for key in (kind, number, text)]


def order_by_sql(query: Query) -> str:
    """``ORDER BY ...`` for the query; `id` always ends it so that paging is stable."""
    terms = [key for path, desc in order_terms(query.orderby) for key in _sort_keys(path, desc)]
    return "ORDER BY " + ", ".join(terms)


# --------------------------------------------------------------------------------------------
# Aggregations

_SCALAR_TYPES = "('string', 'number', 'boolean')"
_SQL_FUNCTIONS = {"value_count": "COUNT", "max": "MAX", "min": "MIN", "sum": "SUM", "avg": "AVG"}


def aggregation_sql(op: str, path: str) -> str:
    """One SELECT computing an aggregation over a relation named ``hits`` (the searched rows
    of table ``job``); run it as ``WITH hits AS (SELECT * FROM job WHERE <where>) <this>``
    and hand its rows to `aggregation_result`. terms rows are (key as JSON text, document
    count); the others one (value,)."""
    if op not in AGGREGATION_OPS:
        raise QueryError(f"unknown aggregation '{op}'")
    check_path(path)
    if path in schema.LIST_PATHS:
        list_path, inner = list_split(path)
        element = "j.value" if inner is None else json_expr(inner, "j.value", relative=True)
        source = f"FROM hits, {_elements(list_path, 'hits.doc')}"
        if op == "terms":
            # a document counts once per distinct element; ids are unique among documents
            return (
                f"SELECT ({element})::text AS k, COUNT(DISTINCT hits.id) AS n {source}"
                f" WHERE jsonb_typeof({element}) IN {_SCALAR_TYPES} GROUP BY {element}"
            )
        if op == "value_count":
            return f"SELECT COUNT(*) {source} WHERE {_not_null(element)}"
        raise QueryError(f"aggregation {op} does not work on the list '{path}'")
    if path in COLUMNS:
        column = COLUMNS[path]
        if op == "terms":
            return (
                f"SELECT to_jsonb({column})::text AS k, COUNT(*) AS n FROM hits"
                f" WHERE {column} IS NOT NULL GROUP BY {column}"
            )
        return f"SELECT {_SQL_FUNCTIONS[op]}({column}) FROM hits"
    expr = json_expr(path)
    if op == "terms":
        return (
            f"SELECT ({expr})::text AS k, COUNT(*) AS n FROM hits"
            f" WHERE jsonb_typeof({expr}) IN {_SCALAR_TYPES} GROUP BY {expr}"
        )
    if op == "value_count":
        return f"SELECT COUNT(*) FROM hits WHERE {_not_null(expr)}"
    return f"SELECT {_SQL_FUNCTIONS[op]}({_number(expr)}) FROM hits"


def aggregation_result(op: str, rows: Iterable[Sequence[Any]]) -> dict[str, Any]:
    """The answer (query.terms_answer / metric_answer) for the rows of
    `aggregation_sql(op, path)`."""
    if op == "terms":
        return terms_answer((orjson.loads(k), n) for k, n in rows)
    found = [row[0] for row in rows]
    value = found[0] if found else None
    return metric_answer(op, None if value is None else float(value))
