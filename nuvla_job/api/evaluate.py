"""The filter language run in Python: whether one document matches a tree.

The reference semantics (see filters.py): each store's SQL dialect is property-tested
against it, on the store's own schema (tests/unit/test_filters.py).
"""

from __future__ import annotations

from typing import Any

from . import schema
from .filters import And, Comparison, FilterError, Node, Or, Scalar, Value, list_split, segments

__all__ = ["evaluate"]

_MISSING = object()


def _walk(value: object, path: tuple[str, ...]) -> object:
    for segment in path:
        if not isinstance(value, dict) or segment not in value:
            return _MISSING
        value = value[segment]
    return value


def _scalar_value(doc: dict[str, Any], path: str) -> object:
    value = _walk(doc, segments(path))
    if value is _MISSING:
        return None
    if path in schema.INDEXED:
        # an indexed path holds only values of its declared type; others read as null
        wanted = str if schema.INDEXED[path] == "str" else int
        if not isinstance(value, wanted) or isinstance(value, bool):
            return None
    return value


def _elements(doc: dict[str, Any], path: str) -> list[object]:
    list_path, inner = list_split(path)
    items = _walk(doc, segments(list_path))
    if not isinstance(items, list):
        return []
    if inner is None:
        return items
    inner_segments = segments(inner, relative=True)
    found = [_walk(item, inner_segments) for item in items]
    return [None if v is _MISSING else v for v in found]


def _match(actual: object, op: str, expected: Scalar) -> bool:
    """One non-null filter value against one JSON value, kinds kept apart."""
    if isinstance(expected, bool):
        return isinstance(actual, bool) and actual == expected
    if isinstance(expected, int):
        if not isinstance(actual, int | float) or isinstance(actual, bool):
            return False
        return _compare(actual, op, expected)
    if not isinstance(actual, str) or not isinstance(expected, str):
        return False
    if op == "^=":
        return actual.startswith(expected)
    return _compare(actual, op, expected)


def _compare(actual: Any, op: str, expected: Any) -> bool:
    """`actual op expected` for two values of one kind (both numbers, or both strings)."""
    if op == "=":
        return bool(actual == expected)
    if op == "<":
        return bool(actual < expected)
    if op == "<=":
        return bool(actual <= expected)
    if op == ">":
        return bool(actual > expected)
    return bool(actual >= expected)


def _holds(doc: dict[str, Any], path: str, op: str, value: Value) -> bool:
    if isinstance(value, tuple):
        return any(_holds(doc, path, op, v) for v in value)
    if path in schema.LIST_PATHS:
        elements = _elements(doc, path)
        if value is None:
            return all(e is None for e in elements)
        return any(_match(e, op, value) for e in elements)
    actual = _scalar_value(doc, path)
    if value is None:
        return actual is None
    return _match(actual, op, value)


def evaluate(node: Node, doc: dict[str, Any]) -> bool:
    """Whether `doc` (a job document as parsed from JSON) matches `node`."""
    if isinstance(node, Comparison):
        if node.op == "!=":
            return not _holds(doc, node.path, "=", node.value)
        return _holds(doc, node.path, node.op, node.value)
    if isinstance(node, And):
        return all(evaluate(child, doc) for child in node.children)
    if isinstance(node, Or):
        return any(evaluate(child, doc) for child in node.children)
    raise FilterError(f"not a filter node: {node!r}")
