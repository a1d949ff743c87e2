"""A CIMI search: filter, ordering, paging, projection and aggregations.

`parse_query` turns the request parameters into a `Query`; the helpers below turn a `Query`
into the SQL pieces the SQLite store runs, and shape aggregation results as Nuvla (backed by
Elasticsearch) answers them.

How the store runs a search (``where_sql`` gives ``1`` when there is no filter)::

    where, params = where_sql(query)
    limit, offset = limit_offset(query)
    count = SELECT COUNT(*) FROM job WHERE <where>                      -- params
    rows  = SELECT doc FROM job WHERE <where> <order_by_sql(query)>
            LIMIT <limit or -1> OFFSET <offset>                         -- skipped when limit == 0
    for op, path in query.aggregations:                                 -- one statement each
        rows = WITH hits AS (SELECT * FROM job WHERE <where>) <aggregation_sql(op, path)>
        aggregations[aggregation_key(op, path)] = aggregation_result(op, rows)
    resources = [apply_select(doc, query.select) for doc in docs]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from nuvla_job.api import schema
from nuvla_job.api.filters import FilterError, Node, combine, json_path, to_sql

__all__ = [
    "AGGREGATION_OPS",
    "QueryError",
    "Query",
    "parse_query",
    "where_sql",
    "order_by_sql",
    "limit_offset",
    "aggregation_key",
    "aggregation_sql",
    "aggregation_result",
    "apply_select",
]

AGGREGATION_OPS = ("terms", "value_count", "max", "min", "sum", "avg")
_METRIC_OPS = frozenset({"max", "min", "sum", "avg"})
_NUMERIC = frozenset({"int", "number"})
_MAX_INDEX = 2**63 - 1  # LIMIT/OFFSET are bound as 64-bit SQLite integers
_SCALAR_TYPES = "('text', 'integer', 'real', 'true', 'false')"


class QueryError(ValueError):
    """Bad search parameters; the message is meant for a 400 answer."""


@dataclass(frozen=True)
class Query:
    filter: Node | None = None
    orderby: list[tuple[str, bool]] = field(default_factory=list)  # (path, descending)
    first: int = 1
    last: int | None = None
    select: list[str] | None = None
    aggregations: list[tuple[str, str]] = field(default_factory=list)  # (op, path)


# --------------------------------------------------------------------------------------------
# Parameters


def _values(params: Mapping[str, Sequence[str] | str], key: str) -> list[str]:
    raw = params.get(key)
    if raw is None:
        return []
    return [raw] if isinstance(raw, str) else [str(v) for v in raw]


def _items(values: Iterable[str]) -> list[str]:
    """The non-blank entries of comma separated (and possibly repeated) parameters."""
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def _json_path(path: str) -> str:
    """The JSON path of a validated attribute path; QueryError when it is not one."""
    try:
        return json_path(path)
    except FilterError as exc:
        raise QueryError(str(exc)) from None


def _check_path(path: str) -> str:
    _json_path(path)
    return path


def _orderby(values: list[str]) -> list[tuple[str, bool]]:
    order = []
    for item in _items(values):
        path, _, direction = item.partition(":")
        path, direction = _check_path(path.strip()), direction.strip().lower() or "asc"
        if direction not in ("asc", "desc"):
            raise QueryError(f"invalid sort direction '{direction}' for '{path}': use asc or desc")
        if path in schema.LIST_PATHS:
            raise QueryError(f"cannot sort on '{path}', which holds a list")
        order.append((path, direction == "desc"))
    return order


def _index(values: list[str], name: str) -> int | None:
    if not values:
        return None
    text = values[-1].strip()  # a repeated parameter: the last one wins
    if not (text.isascii() and text.isdigit() and len(text) <= 19 and int(text) <= _MAX_INDEX):
        raise QueryError(f"{name} must be a non-negative integer, not '{values[-1]}'")
    return int(text)


def _select(values: list[str]) -> list[str] | None:
    names = _items(values)
    for name in names:
        if name not in schema.ATTRIBUTES:
            raise QueryError(f"unknown attribute '{name}' in select")
    return names or None


def _aggregations(values: list[str]) -> list[tuple[str, str]]:
    result = []
    for item in _items(values):
        op, colon, path = (part.strip() for part in item.partition(":"))
        if not colon or not path:
            raise QueryError(f"aggregation '{item}' must look like op:attribute (terms:state)")
        if op not in AGGREGATION_OPS:
            raise QueryError(f"unknown aggregation '{op}': use one of {', '.join(AGGREGATION_OPS)}")
        _check_path(path)
        if op in _METRIC_OPS and schema.ATTRIBUTES.get(path) not in _NUMERIC:
            raise QueryError(f"aggregation {op} needs a numeric attribute, not '{path}'")
        result.append((op, path))
    return result


def parse_query(params: Mapping[str, Sequence[str]], now: datetime | None = None) -> Query:
    """A Query from request parameters (each may repeat); unknown parameters are ignored.

    Repeated ``filter`` parameters are joined with ``and``; date math resolves against `now`.
    Raises QueryError for anything malformed.
    """
    try:
        node = combine(_values(params, "filter"), now)
    except FilterError as exc:
        raise QueryError(f"invalid filter: {exc}") from None
    first = _index(_values(params, "first"), "first")
    return Query(
        filter=node,
        orderby=_orderby(_values(params, "orderby")),
        first=1 if first is None else first,
        last=_index(_values(params, "last"), "last"),
        select=_select(_values(params, "select")),
        aggregations=_aggregations(_values(params, "aggregation")),
    )


# --------------------------------------------------------------------------------------------
# SQL


def where_sql(query: Query) -> tuple[str, list]:
    """The WHERE expression and its parameters (``1`` when there is no filter)."""
    return ("1", []) if query.filter is None else to_sql(query.filter)


def _sort_expr(path: str) -> str:
    if path in schema.INDEXED_COLUMNS:
        return schema.INDEXED_COLUMNS[path][0]
    return f"json_extract(doc, '{_json_path(path)}')"


def order_by_sql(query: Query) -> str:
    """``ORDER BY ...`` for the query; `id` always ends it so that paging is stable."""
    order = query.orderby or [("created", False)]
    if all(path != "id" for path, _ in order):
        order = [*order, ("id", False)]
    terms = [f"{_sort_expr(path)} {'DESC' if desc else 'ASC'}" for path, desc in order]
    return "ORDER BY " + ", ".join(terms)


def limit_offset(query: Query) -> tuple[int | None, int]:
    """(row limit or None for no limit, offset) from the 1-based, inclusive first/last."""
    offset = max(query.first - 1, 0)
    if query.last is None:
        return None, offset
    return max(query.last - offset, 0), offset


# --------------------------------------------------------------------------------------------
# Aggregations


def aggregation_key(op: str, path: str) -> str:
    """The key of an aggregation in the answer's ``aggregations`` map."""
    return f"{op}:{path}"


def _list_source(path: str) -> tuple[str, str, str]:
    """FROM clause over the elements of a list path, and the (type, value) of an element."""
    head, _, inner = path.partition("/")
    list_path, inner = (head, inner) if schema.ATTRIBUTES[head] == "hrefs" else (path, "")
    source = (
        f"FROM hits, json_each(hits.doc, '{_json_path(list_path)}') AS j "
        "WHERE typeof(j.key) = 'integer'"
    )
    if not inner:
        return source, "j.type", "j.value"
    where = json_path(inner, relative=True)
    return (
        source,
        f"CASE WHEN j.type = 'object' THEN json_type(j.value, '{where}') END",
        f"CASE WHEN j.type = 'object' THEN json_extract(j.value, '{where}') END",
    )


def aggregation_sql(op: str, path: str) -> str:
    """One SELECT statement computing an aggregation over a relation named ``hits`` (the
    searched rows of table ``job``, all columns); run it as
    ``WITH hits AS (SELECT * FROM job WHERE <where>) <this>`` and hand every row it returns to
    `aggregation_result`. terms rows are (json type, key, doc count); the others one (value,).
    """
    if op not in AGGREGATION_OPS:
        raise QueryError(f"unknown aggregation '{op}'")
    where = _json_path(path)  # validates the path
    if path in schema.LIST_PATHS:
        source, type_expr, value_expr = _list_source(path)
        if op == "terms":
            # a document counts once per distinct element; ids are unique among documents
            return (
                f"SELECT {type_expr} AS t, {value_expr} AS k, "
                f"COUNT(DISTINCT json_extract(hits.doc, '$.\"id\"')) AS n {source} "
                f"AND {type_expr} IN {_SCALAR_TYPES} GROUP BY t, k"
            )
        if op == "value_count":
            return f"SELECT COUNT(*) {source} AND {type_expr} != 'null'"
        raise QueryError(f"aggregation {op} does not work on the list '{path}'")
    if path in schema.INDEXED_COLUMNS:
        column, sql_type = schema.INDEXED_COLUMNS[path]
        json_type = "text" if sql_type == "TEXT" else "integer"
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


_SQL_FUNCTIONS = {"value_count": "COUNT", "max": "MAX", "min": "MIN", "sum": "SUM", "avg": "AVG"}


def _metric(op: str, expr: str) -> str:
    return f"{_SQL_FUNCTIONS[op]}({expr})"


def _bucket_key(json_type: str, key: object) -> object:
    return json_type == "true" if json_type in ("true", "false") else key


def _bucket_order(bucket: dict) -> tuple:
    # Elasticsearch: most documents first, then by key; keys of mixed kinds stay apart.
    key = bucket["key"]
    rank = 0 if isinstance(key, bool) else 1 if isinstance(key, int | float) else 2
    return -bucket["doc_count"], rank, key


def aggregation_result(op: str, rows: Iterable[Sequence]) -> dict:
    """The Elasticsearch-shaped answer for the rows of `aggregation_sql(op, path)`."""
    if op == "terms":
        buckets = [{"key": _bucket_key(t, k), "doc_count": n} for t, k, n in rows]
        return {
            "doc_count_error_upper_bound": 0,
            "sum_other_doc_count": 0,
            "buckets": sorted(buckets, key=_bucket_order),
        }
    found = [row[0] for row in rows]
    value = found[0] if found else None
    if op == "value_count":
        return {"value": int(value or 0)}
    if op == "sum":
        return {"value": float(value or 0)}
    # Elasticsearch answers metrics as doubles, and null when there is no value at all
    return {"value": None if value is None else float(value)}


# --------------------------------------------------------------------------------------------
# Projection


def apply_select(doc: dict, select: Sequence[str] | None) -> dict:
    """`doc` reduced to `select` (plus ``id`` and ``resource-type``); all of it when None."""
    if select is None:
        return doc
    keep = {"id", "resource-type", *select}
    return {key: value for key, value in doc.items() if key in keep}
