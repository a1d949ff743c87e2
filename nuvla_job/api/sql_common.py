"""What every SQL dialect of the query language shares: the indexed columns, and the filter
compiler's skeleton (kinds of values, grouping, prefixes, negation, and/or), which each
dialect (sqlite_sql.py, postgres_sql.py) completes with its own JSON access.

A comparison compiles to a :class:`Fragment`; a dialect writes its parameter mark
(``mark``) for values, never the values themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import schema
from .filters import And, Comparison, FilterError, Node, Or, Scalar, Value, fold

# The column of each indexed path (schema.INDEXED): `id` is the primary key.
COLUMNS: dict[str, str] = {
    "id": "id",
    "state": "state",
    "action": "action",
    "created": "created",
    "updated": "updated",
    "priority": "priority",
    "target-resource/href": "target_href",
    "parent-job": "parent_job",
    "execution-mode": "execution_mode",
    "not-before": "not_before",
    "unique-key": "unique_key",
    "duration": "duration",
}


@dataclass(frozen=True, slots=True)
class Fragment:
    sql: str
    params: tuple[Any, ...]
    nullable: bool  # may be NULL where the comparison is false (matters only under negation)
    negation: str | None = None  # a simpler negation than the generic one, same params


def kind(value: object) -> str:
    """Which JSON values a filter value can match: 'str', 'num', 'bool' or 'null'."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    return "num" if isinstance(value, int) else "str"


def group(value: Value) -> dict[str, list[Scalar]]:
    """Values by kind, in first-seen order (a scalar is a one-value group)."""
    values = value if isinstance(value, tuple) else (value,)
    groups: dict[str, list[Scalar]] = {}
    for v in values:
        groups.setdefault(kind(v), []).append(v)
    return groups


def prefix_upper(prefix: str) -> str | None:
    """The least string above every string starting with `prefix` (code point order, which
    is the byte order of UTF-8: SQLite's BINARY, PostgreSQL's "C"), or None when there is
    none."""
    chars = list(prefix)
    while chars:
        code = ord(chars[-1])
        if code < 0x10FFFF:
            code += 1
            if 0xD800 <= code <= 0xDFFF:
                code = 0xE000  # surrogates never occur in valid text
            chars[-1] = chr(code)
            return "".join(chars)
        chars.pop()
    return None


def wrap(sql: str) -> str:
    # Parenthesise anything with a top-level AND/OR in it (over-wrapping is harmless).
    return f"({sql})" if " AND " in sql or " OR " in sql else sql


class FilterCompiler:
    """Filter trees to one dialect's boolean SQL; subclasses give the JSON access."""

    mark = "?"  # the parameter mark
    false_sql = "0"
    true_sql = "1"
    null_safe_not_equal = "IS NOT"  # `a <this> ?`: true when a is NULL

    def is_not_true(self, sql: str) -> str:
        """SQL true where `sql` is false or NULL."""
        return f"({sql}) IS NOT 1"

    # -- the dialect's part ---------------------------------------------------------------

    def scalar(self, path: str, op: str, value: Value) -> Fragment:
        raise NotImplementedError

    def list_path(self, path: str, op: str, value: Value) -> Fragment:
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------

    @property
    def false(self) -> Fragment:
        return Fragment(self.false_sql, (), False)

    def test(self, op: str, expr: str, values: list[Scalar]) -> tuple[str, tuple[Any, ...]]:
        """`expr op value` for one value, or membership for several (only with '=')."""
        mark = self.mark
        if op == "=" and len(values) > 1:
            return f"{expr} IN ({', '.join([mark] * len(values))})", tuple(values)
        value = values[0]
        if op == "^=":
            upper = prefix_upper(str(value))
            if upper is None:
                return f"{expr} >= {mark}", (value,)
            return f"{expr} >= {mark} AND {expr} < {mark}", (value, upper)
        return f"{expr} {op} {mark}", (value,)

    def any_of(self, parts: list[Fragment]) -> Fragment:
        if not parts:
            return self.false
        if len(parts) == 1:
            return parts[0]
        return Fragment(
            " OR ".join(f"({p.sql})" for p in parts),
            tuple(v for p in parts for v in p.params),
            any(p.nullable for p in parts),
        )

    def indexed(self, path: str, op: str, value: Value) -> Fragment:
        column = COLUMNS[path]
        # The column only holds values of its own type (schema.INDEXED).
        column_kind = "num" if schema.INDEXED[path] == "int" else "str"
        parts = []
        for value_kind, values in group(value).items():
            if value_kind == "null":
                parts.append(Fragment(f"{column} IS NULL", (), False, f"{column} IS NOT NULL"))
            elif value_kind == column_kind:
                sql, params = self.test(op, column, values)
                # `column = ?` is NULL on a NULL column: its null-safe negation
                negation = None
                if sql == f"{column} = {self.mark}":
                    negation = f"{column} {self.null_safe_not_equal} {self.mark}"
                parts.append(Fragment(sql, params, True, negation))
        return self.any_of(parts)

    def comparison(self, node: Comparison) -> Fragment:
        op = "=" if node.op == "!=" else node.op
        if node.path in schema.LIST_PATHS:
            fragment = self.list_path(node.path, op, node.value)
        elif node.path in schema.INDEXED:
            fragment = self.indexed(node.path, op, node.value)
        else:
            fragment = self.scalar(node.path, op, node.value)
        if node.op != "!=":
            return fragment
        if fragment.sql == self.false_sql and not fragment.params:
            return Fragment(self.true_sql, (), False)
        if fragment.negation is not None:
            return Fragment(fragment.negation, fragment.params, False)
        if fragment.nullable:
            return Fragment(self.is_not_true(fragment.sql), fragment.params, False)
        return Fragment(f"NOT ({fragment.sql})", fragment.params, False)

    def node(self, node: Node) -> Fragment:
        if isinstance(node, Comparison):
            return self.comparison(node)
        if isinstance(node, And | Or) and node.children:
            joiner = " AND " if isinstance(node, And) else " OR "
            parts = [self.node(child) for child in node.children]
            return Fragment(
                joiner.join(wrap(p.sql) for p in parts),
                tuple(v for p in parts for v in p.params),
                any(p.nullable for p in parts),
            )
        raise FilterError(f"not a filter node: {node!r}")

    def compile(self, node: Node) -> tuple[str, list[Any]]:
        """A parameterised boolean expression selecting the rows of table ``job`` whose
        ``doc`` matches `node` (a tree from filters.parse)."""
        fragment = self.node(fold(node))
        return fragment.sql, list(fragment.params)


def order_terms(orderby: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
    """The sort keys of a search (default: ``created``); `id` always ends them so that
    paging is stable."""
    order = orderby or [("created", False)]
    if all(path != "id" for path, _ in order):
        order = [*order, ("id", False)]
    return order
