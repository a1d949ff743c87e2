"""The SQLite dialect of the query language: filter trees, orderings and aggregations
compiled to parameterised SQL over the store's ``job`` table (sqlite.py).

The shared part of the filter compiler is sql_common.py's. The table holds each document as
JSON text in ``doc`` and the paths of ``schema.INDEXED`` in columns of their own (`COLUMNS`),
which the store writes from the document, keeping only values of the column's type (NULL
otherwise). Filters and orderings on those paths read the columns, and so run on their
indexes; every other path is read with SQLite's JSON1 functions.
Values only ever travel as ``?`` parameters; the only user text in the SQL is a path's
segments, which filters.segments has checked.

The answers are those of evaluate.py for every document (filters.py gives the semantics).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from . import schema
from .filters import Node, Scalar, Value, list_split, segments
from .query import (
    AGGREGATION_OPS,
    Query,
    QueryError,
    check_path,
    metric_answer,
    terms_answer,
)
from .sql_common import COLUMNS, FilterCompiler, Fragment, group, order_terms

__all__ = [
    "COLUMNS",
    "column_sql_type",
    "json_path",
    "filter_sql",
    "order_by_sql",
    "aggregation_sql",
    "aggregation_result",
]

_SQL_TYPES = {"str": "TEXT", "int": "INTEGER"}


def column_sql_type(path: str) -> str:
    """The SQL type of an indexed path's column."""
    return _SQL_TYPES[schema.INDEXED[path]]


def json_path(path: str, relative: bool = False) -> str:
    """The SQLite JSON path of a checked filter path: ``a/b`` -> ``$."a"."b"``."""
    return "$" + "".join(f'."{s}"' for s in segments(path, relative))


# --------------------------------------------------------------------------------------------
# Filters


_NUMERIC_TYPES = "('integer', 'real')"


def _element_exprs(inner: str | None) -> tuple[str, str]:
    """(type, value) SQL of one element ``j`` of a json_each over a list path."""
    if inner is None:
        return "j.type", "j.value"
    where = json_path(inner, relative=True)  # the CASE keeps json_* off elements that are not maps
    return (
        f"CASE WHEN j.type = 'object' THEN json_type(j.value, '{where}') END",
        f"CASE WHEN j.type = 'object' THEN json_extract(j.value, '{where}') END",
    )


# Lists of strings the store also keeps in a side table of (value, job_id) rows, indexed by
# value (sqlite.py writes them with the document): ``path = 'text'`` is a lookup there.
SIDE_TABLES: dict[str, tuple[str, str]] = {"tags": ("job_tag", "tag")}


class _SqliteFilters(FilterCompiler):
    """The shared compiler (sql_common.py) on SQLite's JSON1 functions."""

    def _typed_test(
        self, op: str, kind: str, type_expr: str, value_expr: str, values: list[Scalar]
    ) -> Fragment:
        """A comparison against JSON values whose type is given by `type_expr`."""
        if kind == "bool":  # only '=' reaches here: a boolean is matched by its JSON type
            names: list[Scalar] = ["true" if v else "false" for v in values]
            sql, params = self.test("=", type_expr, names)
            return Fragment(sql, params, True)
        type_test = f"{type_expr} = 'text'" if kind == "str" else f"{type_expr} IN {_NUMERIC_TYPES}"
        sql, params = self.test(op, value_expr, values)
        return Fragment(f"{type_test} AND {sql}", params, True)

    def scalar(self, path: str, op: str, value: Value) -> Fragment:
        where = json_path(path)
        type_expr = f"json_type(doc, '{where}')"
        value_expr = f"json_extract(doc, '{where}')"
        parts = []
        for kind, values in group(value).items():
            if kind == "null":
                parts.append(
                    Fragment(f"{value_expr} IS NULL", (), False, f"{value_expr} IS NOT NULL")
                )
            else:
                parts.append(self._typed_test(op, kind, type_expr, value_expr, values))
        return self.any_of(parts)

    def list_path(self, path: str, op: str, value: Value) -> Fragment:
        list_path, inner = list_split(path)
        side = SIDE_TABLES.get(path) if op == "=" else None
        groups = group(value)
        if side is not None and "str" in groups:
            # The side table holds exactly the list's string elements: an element equal to
            # one of the strings is a row of it. The other kinds of value keep the JSON test.
            table, column = side
            strings = groups.pop("str")
            sql, params = self.test("=", column, strings)
            found = Fragment(f"id IN (SELECT job_id FROM {table} WHERE {sql})", params, False)
            if not groups:
                return found
            others = tuple(v for vs in groups.values() for v in vs)
            return self.any_of([found, self.list_path(path, op, others)])
        type_expr, value_expr = _element_exprs(inner)
        # typeof(j.key) = 'integer' keeps array elements only: a scalar or a map is not a list.
        source = f"json_each(doc, '{json_path(list_path)}') AS j WHERE typeof(j.key) = 'integer'"
        parts, tests = [], []
        for kind, values in group(value).items():
            if kind == "null":
                no_value = f"NOT EXISTS (SELECT 1 FROM {source} AND {type_expr} != 'null')"
                parts.append(Fragment(no_value, (), False))
            else:
                tests.append(self._typed_test(op, kind, type_expr, value_expr, values))
        if tests:
            test = self.any_of(tests)
            parts.append(
                Fragment(f"EXISTS (SELECT 1 FROM {source} AND ({test.sql}))", test.params, False)
            )
        return self.any_of(parts)


_FILTERS = _SqliteFilters()


def filter_sql(node: Node) -> tuple[str, list[Any]]:
    """A parameterised boolean expression selecting the rows of table ``job`` whose ``doc``
    matches `node` (a tree from filters.parse, whose limits keep the parameters well under
    SQLite's 32,766, its expressions under 1,000 deep and its groups within its parser's
    stack)."""
    return _FILTERS.compile(node)


# --------------------------------------------------------------------------------------------
# Ordering


def _sort_expr(path: str) -> str:
    if path in COLUMNS:
        return COLUMNS[path]
    check_path(path)
    return f"json_extract(doc, '{json_path(path)}')"


def order_by_sql(query: Query) -> str:
    """``ORDER BY ...`` for the query; `id` always ends it so that paging is stable."""
    order = order_terms(query.orderby)
    terms = [f"{_sort_expr(path)} {'DESC' if desc else 'ASC'}" for path, desc in order]
    return "ORDER BY " + ", ".join(terms)


# --------------------------------------------------------------------------------------------
# Aggregations

_SCALAR_TYPES = "('text', 'integer', 'real', 'true', 'false')"
_SQL_FUNCTIONS = {"value_count": "COUNT", "max": "MAX", "min": "MIN", "sum": "SUM", "avg": "AVG"}


def _list_source(path: str) -> tuple[str, str, str]:
    """FROM clause over the elements of a list path, and the (type, value) of an element."""
    list_path, inner = list_split(path)
    source = (
        f"FROM hits, json_each(hits.doc, '{json_path(list_path)}') AS j "
        "WHERE typeof(j.key) = 'integer'"
    )
    type_expr, value_expr = _element_exprs(inner or None)
    return source, type_expr, value_expr


def _metric(op: str, expr: str) -> str:
    return f"{_SQL_FUNCTIONS[op]}({expr})"


def aggregation_sql(op: str, path: str) -> str:
    """One SELECT statement computing an aggregation over a relation named ``hits`` (the
    searched rows of table ``job``, all columns); run it as
    ``WITH hits AS (SELECT * FROM job WHERE <where>) <this>`` and hand every row it returns to
    `aggregation_result`. terms rows are (json type, key, doc count); the others one (value,).
    """
    if op not in AGGREGATION_OPS:
        raise QueryError(f"unknown aggregation '{op}'")
    check_path(path)
    where = json_path(path)
    if path in schema.LIST_PATHS:
        source, type_expr, value_expr = _list_source(path)
        if op == "terms":
            # a document counts once per distinct element; ids are unique among documents
            return (
                f"SELECT {type_expr} AS t, {value_expr} AS k, "
                f"COUNT(DISTINCT hits.id) AS n {source} "
                f"AND {type_expr} IN {_SCALAR_TYPES} GROUP BY t, k"
            )
        if op == "value_count":
            return f"SELECT COUNT(*) {source} AND {type_expr} != 'null'"
        raise QueryError(f"aggregation {op} does not work on the list '{path}'")
    if path in COLUMNS:
        column = COLUMNS[path]
        json_type = "text" if schema.INDEXED[path] == "str" else "integer"
        if op == "terms":
            return (
                f"SELECT '{json_type}' AS t, {column} AS k, COUNT(*) AS n FROM hits "
                f"WHERE {column} IS NOT NULL GROUP BY k"
            )
        return f"SELECT {_metric(op, column)} FROM hits"
    type_expr, value_expr = f"json_type(doc, '{where}')", f"json_extract(doc, '{where}')"
    if op == "terms":
        return (
            f"SELECT {type_expr} AS t, {value_expr} AS k, COUNT(*) AS n FROM hits "
            f"WHERE {type_expr} IN {_SCALAR_TYPES} GROUP BY t, k"
        )
    if op == "value_count":
        return f"SELECT COUNT({value_expr}) FROM hits"
    number = f"CASE WHEN {type_expr} IN ('integer', 'real') THEN {value_expr} END"
    return f"SELECT {_metric(op, number)} FROM hits"


def _bucket_key(json_type: str, key: object) -> object:
    # SQLite reads a JSON true/false as 1/0: its JSON type tells them apart from numbers.
    return json_type == "true" if json_type in ("true", "false") else key


def aggregation_result(op: str, rows: Iterable[Sequence[Any]]) -> dict[str, Any]:
    """The answer (query.terms_answer / metric_answer) for the rows of
    `aggregation_sql(op, path)`."""
    if op == "terms":
        return terms_answer((_bucket_key(t, k), n) for t, k, n in rows)
    found = [row[0] for row in rows]
    return metric_answer(op, found[0] if found else None)
