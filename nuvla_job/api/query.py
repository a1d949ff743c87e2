"""A CIMI search: filter, ordering, paging, projection and aggregations.

`parse_query` turns the request parameters into a checked `Query`; each store compiles it
into its own dialect (sqlite_sql.py for SQLite). The helpers here are the parts every store
shares: the page a first/last pair means, and aggregation answers shaped as Nuvla (backed by
Elasticsearch) gives them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from nuvla_job.api import schema
from nuvla_job.api.filters import FilterError, Node, combine, segments

__all__ = [
    "AGGREGATION_OPS",
    "METRIC_OPS",
    "MAX_ORDERBY",
    "MAX_AGGREGATIONS",
    "QueryError",
    "Query",
    "parse_query",
    "check_path",
    "limit_offset",
    "aggregation_key",
    "terms_answer",
    "metric_answer",
    "apply_select",
]

AGGREGATION_OPS = ("terms", "value_count", "max", "min", "sum", "avg")
METRIC_OPS = frozenset({"max", "min", "sum", "avg"})
_NUMERIC = frozenset({"int", "number"})
_MAX_INDEX = 2**63 - 1  # first/last fit a signed 64-bit integer, as databases bind them
# Each sort key is a term of the statement (SQLite refuses more than 2,000) and each
# aggregation a scan of every match: a few of each is all any caller needs.
MAX_ORDERBY = 20
MAX_AGGREGATIONS = 20


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


def check_path(path: str) -> tuple[str, ...]:
    """The checked segments of an attribute path (see filters.segments); QueryError when it
    is not one."""
    try:
        return segments(path)
    except FilterError as exc:
        raise QueryError(str(exc)) from None


def _orderby(values: list[str]) -> list[tuple[str, bool]]:
    order = []
    for item in _items(values):
        path, _, direction = item.partition(":")
        path, direction = path.strip(), direction.strip().lower() or "asc"
        check_path(path)
        if direction not in ("asc", "desc"):
            raise QueryError(f"invalid sort direction '{direction}' for '{path}': use asc or desc")
        if path in schema.LIST_PATHS:
            raise QueryError(f"cannot sort on '{path}', which holds a list")
        order.append((path, direction == "desc"))
    if len(order) > MAX_ORDERBY:
        raise QueryError(f"orderby has more than {MAX_ORDERBY} attributes")
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
        check_path(path)
        if op in METRIC_OPS and schema.ATTRIBUTES.get(path) not in _NUMERIC:
            raise QueryError(f"aggregation {op} needs a numeric attribute, not '{path}'")
        if (op, path) not in result:  # asked twice, answered once (one key in the answer)
            result.append((op, path))
    if len(result) > MAX_AGGREGATIONS:
        raise QueryError(f"more than {MAX_AGGREGATIONS} aggregations in one search")
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
# Paging and aggregation answers, for every store


def limit_offset(query: Query) -> tuple[int | None, int]:
    """(row limit or None for no limit, offset) from the 1-based, inclusive first/last."""
    offset = max(query.first - 1, 0)
    if query.last is None:
        return None, offset
    return max(query.last - offset, 0), offset


def aggregation_key(op: str, path: str) -> str:
    """The key of an aggregation in the answer's ``aggregations`` map."""
    return f"{op}:{path}"


def _bucket_order(bucket: dict[str, Any]) -> tuple[int, int, Any]:
    # Elasticsearch: most documents first, then by key; keys of mixed kinds stay apart.
    key = bucket["key"]
    rank = 0 if isinstance(key, bool) else 1 if isinstance(key, int | float) else 2
    return -bucket["doc_count"], rank, key


def terms_answer(buckets: Iterable[tuple[object, int]]) -> dict[str, Any]:
    """The answer of a ``terms`` aggregation from its (key, document count) pairs; a key is
    a JSON scalar as Python reads it (a boolean stays a bool, apart from 0 and 1)."""
    shaped = [{"key": key, "doc_count": count} for key, count in buckets]
    return {
        "doc_count_error_upper_bound": 0,
        "sum_other_doc_count": 0,
        "buckets": sorted(shaped, key=_bucket_order),
    }


def metric_answer(op: str, value: float | None) -> dict[str, Any]:
    """The answer of a ``value_count``, ``max``, ``min``, ``sum`` or ``avg`` aggregation
    from its value (None when no document had one)."""
    if op == "value_count":
        return {"value": int(value or 0)}
    if op == "sum":
        return {"value": float(value or 0)}
    # Elasticsearch answers metrics as doubles, and null when there is no value at all
    return {"value": None if value is None else float(value)}


# --------------------------------------------------------------------------------------------
# Projection


def apply_select(doc: dict[str, Any], select: Sequence[str] | None) -> dict[str, Any]:
    """`doc` reduced to `select` (plus ``id`` and ``resource-type``); all of it when None."""
    if select is None:
        return doc
    keep = {"id", "resource-type", *select}
    return {key: value for key, value in doc.items() if key in keep}
