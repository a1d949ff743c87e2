"""The CIMI filter language: parsing, SQL compilation and Python evaluation.

A filter such as ``state=['QUEUED','RUNNING'] and created<'now-7d'`` is parsed into a small tree
of immutable nodes (`And`, `Or`, `Comparison`). The same tree is either compiled to a
parameterised SQLite expression over the ``job`` table (`to_sql`) or evaluated against a
document in Python (`evaluate`); both give the same answer for every document.

Semantics, shared by both back ends:

- A path in ``schema.LIST_PATHS`` names a list (only a JSON array counts; anything else reads
  as an empty list); a comparison holds when it holds for ANY element, as in Elasticsearch.
- ``a=null`` holds when ``a`` is missing or null (for a list: no non-null element);
  ``a!=v`` is exactly ``not (a=v)``.
- Values only match values of their own kind: strings with strings, numbers with numbers,
  booleans with booleans (``=``/``!=`` only). Anything else is simply false.
- A path of ``schema.INDEXED_COLUMNS`` is read from its generated column, which keeps only
  values of the column's type (string for TEXT, integer for INTEGER) and NULL otherwise; so a
  wrongly typed value there reads as null. The store must build those columns as::

      <column> <TYPE> GENERATED ALWAYS AS (CASE json_type(doc, '<json path>')
          WHEN '<text|integer>' THEN json_extract(doc, '<json path>') END)

- Dates (paths of ``schema.DATE_ATTRIBUTES``) are normalised to ``YYYY-MM-DDTHH:MM:SS.mmmZ`` at
  parse time, date math (``now-7d/d``) included, so they compare as plain strings.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from nuvla_job.api import schema

__all__ = [
    "FilterError",
    "And",
    "Or",
    "Comparison",
    "Node",
    "parse",
    "combine",
    "to_sql",
    "evaluate",
    "json_path",
    "normalize_date",
    "format_date",
]

OPERATORS = ("=", "!=", "<", "<=", ">", ">=", "^=")
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+\Z")
_INT64 = (-(2**63), 2**63 - 1)
# Limits that keep a hostile filter a 400: the evaluators recurse, SQLite caps parameters.
MAX_DEPTH = 50
MAX_PARAMETERS = 10_000
_CACHED_LENGTH = 4096  # longer texts are parsed every time rather than kept in the cache


class FilterError(ValueError):
    """A filter the user got wrong; the message is meant for a 400 answer."""


# --------------------------------------------------------------------------------------------
# Nodes


Scalar = str | int | bool | None
Value = Scalar | tuple[Scalar, ...]


@dataclass(frozen=True, slots=True)
class Comparison:
    """``path op value``; a tuple value means "any of" (only with ``=`` and ``!=``)."""

    path: str
    op: str
    value: Value


@dataclass(frozen=True, slots=True)
class And:
    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    children: tuple[Node, ...]


Node = Comparison | And | Or


@dataclass(frozen=True, slots=True)
class _DateMath:
    """A ``now...`` value, resolved against the caller's clock after the (cached) parse."""

    text: str


# --------------------------------------------------------------------------------------------
# Dates

_ISO_DATE = re.compile(
    r"(?P<y>\d{4})(?:-(?P<mo>\d{2})(?:-(?P<d>\d{2})"
    r"(?:[Tt ](?P<h>\d{2})(?::(?P<mi>\d{2})(?::(?P<s>\d{2})(?:[.,](?P<f>\d+))?)?)?"
    r"(?P<tz>[Zz]|[+-]\d{2}(?::?\d{2})?)?)?)?)?\Z"
)
_DATE_MATH = re.compile(r"now(?:[+-]\d{1,9}[smhdwMy]|/[smhdwMy])*\Z")
_DATE_MATH_OP = re.compile(r"([+-])(\d+)([smhdwMy])|/([smhdwMy])")
_FIXED_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def format_date(moment: datetime) -> str:
    """The stored form of an instant: UTC, millisecond precision, ``Z`` suffix."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T"
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}."
        f"{moment.microsecond // 1000:03d}Z"
    )


def _parse_iso(text: str) -> datetime | None:
    match = _ISO_DATE.match(text)
    if match is None:
        return None
    part = match.groupdict()
    fraction = (part["f"] or "0")[:6].ljust(6, "0")
    try:
        moment = datetime(
            int(part["y"]),
            int(part["mo"] or 1),
            int(part["d"] or 1),
            int(part["h"] or 0),
            int(part["mi"] or 0),
            int(part["s"] or 0),
            int(fraction),
            tzinfo=UTC,
        )
        tz = part["tz"]
        if tz and tz not in "Zz":
            digits = tz[1:].replace(":", "")
            offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:] or 0))
            moment = moment - offset if tz[0] == "+" else moment + offset
    except (ValueError, OverflowError):
        return None
    return moment


def _add_months(moment: datetime, months: int) -> datetime:
    year, month = divmod(moment.month - 1 + months, 12)
    year += moment.year
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return moment.replace(year=year, month=month + 1, day=day)


def _round_down(moment: datetime, unit: str) -> datetime:
    if unit == "s":
        return moment.replace(microsecond=0)
    if unit == "m":
        return moment.replace(second=0, microsecond=0)
    if unit == "h":
        return moment.replace(minute=0, second=0, microsecond=0)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit == "d":
        return day
    if unit == "w":
        return day - timedelta(days=day.weekday())  # ISO weeks start on Monday
    if unit == "M":
        return day.replace(day=1)
    return day.replace(month=1, day=1)


def _apply_date_math(text: str, now: datetime) -> str:
    moment = now
    try:
        for sign, amount, unit, rounding in _DATE_MATH_OP.findall(text[3:]):
            if rounding:
                moment = _round_down(moment, rounding)
                continue
            n = int(amount) if sign == "+" else -int(amount)
            if unit in _FIXED_UNITS:
                moment = moment + timedelta(**{_FIXED_UNITS[unit]: n})
            else:
                moment = _add_months(moment, n * 12 if unit == "y" else n)
    except (ValueError, OverflowError):
        raise FilterError(f"date math '{text}' gives a date out of range") from None
    return format_date(moment)


def normalize_date(text: str, now: datetime | None = None) -> str:
    """An ISO-8601 date (any precision, ``Z`` or offset) or date math (``now-7d``, ``now/d``)
    in the stored format. Raises FilterError when `text` is neither."""
    text = text.strip()
    if _DATE_MATH.match(text):
        return _apply_date_math(text, _utc(now))
    moment = _parse_iso(text)
    if moment is None:
        raise FilterError(
            f"invalid date '{text}': use ISO-8601 (2026-11-28T00:00:00Z) or date math (now-7d)"
        )
    return format_date(moment)


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


# --------------------------------------------------------------------------------------------
# Parsing

_GRAMMAR = r"""
start: _disj
_disj: disj | _conj
disj: _conj (_OR _conj)+
_conj: conj | _atom
conj: _atom (_AND _atom)+
_atom: comparison | _LPAR _disj _RPAR
comparison: PATH OP _value
_value: _scalar | list
_scalar: STRING | INT | DATE | TRUE | FALSE | NULL
list: _LSQB [_scalar (_COMMA _scalar)*] _RSQB

PATH: /[A-Za-z0-9_-]+(\/[A-Za-z0-9_-]+)*/
OP: /[=!<>^~]+/
STRING: /'(?:[^'\\]|\\[\s\S])*'/ | /"(?:[^"\\]|\\[\s\S])*"/
DATE.3: /\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:[Zz]|[+-]\d{2}(?::?\d{2})?)?)?/
INT.2: /-?\d+/
TRUE.2: /true(?![\w-])/i
FALSE.2: /false(?![\w-])/i
NULL.2: /null(?![\w-])/i
_AND.2: /and(?![\w-])/i
_OR.2: /or(?![\w-])/i
_LPAR: "("
_RPAR: ")"
_LSQB: "["
_RSQB: "]"
_COMMA: ","

%import common.WS
%ignore WS
"""

# What each terminal is, in words, for error messages.
_EXPECTED = {
    "PATH": "an attribute name",
    "OP": "an operator (= != < <= > >= ^=)",
    "STRING": "a value",
    "INT": "a value",
    "DATE": "a value",
    "TRUE": "a value",
    "FALSE": "a value",
    "NULL": "a value",
    "_LSQB": "a value",
    "_AND": "'and'",
    "_OR": "'or'",
    "_LPAR": "'('",
    "_RPAR": "')'",
    "_RSQB": "']'",
    "_COMMA": "','",
    "$END": "the end of the filter",
}


@dataclass(frozen=True, slots=True)
class _List:
    tokens: tuple[Token, ...]


def _unquote(token: Token) -> str:
    body = token.value[1:-1]
    text = re.sub(r"\\([\s\S])", r"\1", body)  # a backslash keeps the next character as is
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise FilterError(f"invalid character in string at position {_pos(token)}") from None
    return text


def _pos(token: Token) -> int:
    return (token.start_pos or 0) + 1


def _literal(token: Token, path: str, op: str) -> Scalar | _DateMath:
    """The value of one literal token, as seen by `path` (dates are normalised there)."""
    kind = token.type
    if kind == "NULL":
        return None
    if kind in ("TRUE", "FALSE"):
        return kind == "TRUE"
    if kind == "INT":
        number = int(token.value) if len(token.value) <= 20 else _INT64[1] + 1
        if not _INT64[0] <= number <= _INT64[1]:
            raise FilterError(f"integer {token.value} at position {_pos(token)} is out of range")
        return number
    text = _unquote(token) if kind == "STRING" else token.value
    if path not in schema.DATE_ATTRIBUTES or op == "^=":
        return text  # a prefix is matched on the stored text, never read as a date
    if _DATE_MATH.match(text.strip()):
        return _DateMath(text.strip())
    try:
        return normalize_date(text)
    except FilterError:
        raise FilterError(
            f"invalid date '{text}' for '{path}' at position {_pos(token)}; "
            "use ISO-8601 (2026-11-28T00:00:00Z) or date math (now-7d)"
        ) from None


def _check_path(token: Token) -> str:
    path = token.value
    head = path.split("/", 1)[0]
    if head not in schema.ATTRIBUTES:
        raise FilterError(f"unknown attribute '{head}' at position {_pos(token)}")
    return path


def _check_operator(token: Token) -> str:
    if token.value not in OPERATORS:
        raise FilterError(
            f"invalid operator '{token.value}' at position {_pos(token)}; "
            "use one of = != < <= > >= ^="
        )
    return token.value


def _kind_name(value: object) -> str:
    return "null" if value is None else "true/false"


class _Build(Transformer):
    """Turns the parse tree into nodes while LALR parsing (no intermediate tree)."""

    def comparison(self, items: list) -> Comparison:
        path_token, op_token, raw = items
        path = _check_path(path_token)
        op = _check_operator(op_token)
        if isinstance(raw, _List):
            if op not in ("=", "!="):
                raise FilterError(
                    f"a list value only works with = and != (position {_pos(op_token)})"
                )
            value = tuple(_literal(t, path, op) for t in raw.tokens)
            return Comparison(path, op, value)
        value = _literal(raw, path, op)
        if op not in ("=", "!=") and (value is None or isinstance(value, bool)):
            raise FilterError(
                f"{_kind_name(value)} can only be compared with = or != (position {_pos(op_token)})"
            )
        if op == "^=" and not isinstance(value, str):
            raise FilterError(f"^= needs a string value (position {_pos(op_token)})")
        return Comparison(path, op, value)

    def list(self, items: list) -> _List:
        return _List(tuple(t for t in items if t is not None))

    def conj(self, items: list) -> And:
        return And(_flatten(And, items))

    def disj(self, items: list) -> Or:
        return Or(_flatten(Or, items))

    def start(self, items: list) -> Node:
        return items[0]


def _flatten(kind: type, items: list) -> tuple[Node, ...]:
    children: list[Node] = []
    for item in items:
        children.extend(item.children if isinstance(item, kind) else (item,))
    return tuple(children)


def _lexed_operator(token: Token) -> Token:
    _check_operator(token)  # while lexing, so that `state==` blames the operator
    return token


_PARSER = Lark(
    _GRAMMAR,
    parser="lalr",
    lexer="contextual",
    transformer=_Build(),
    lexer_callbacks={"OP": _lexed_operator},
)


def _describe(expected: set[str]) -> str:
    words = sorted({_EXPECTED.get(name, name) for name in expected})
    return " or ".join(words)


def _syntax_error(text: str, exc: UnexpectedInput) -> FilterError:
    """A short, positioned message for a lark parse failure."""
    if isinstance(exc, UnexpectedCharacters):
        pos = exc.pos_in_stream
        char = text[pos]
        if char in "'\"":
            return FilterError(f"unterminated string starting at position {pos + 1}")
        if char == ")":
            return FilterError(f"unbalanced parentheses: unexpected ')' at position {pos + 1}")
        return FilterError(
            f"unexpected character {char!r} at position {pos + 1}; "
            f"expected {_describe(exc.allowed)}"
        )
    if isinstance(exc, UnexpectedToken) and exc.token.type != "$END":
        token = exc.token
        if token.type == "_RPAR":
            return FilterError(f"unbalanced parentheses: unexpected ')' at position {_pos(token)}")
        return FilterError(
            f"unexpected {token.value!r} at position {_pos(token)}; "
            f"expected {_describe(exc.expected)}"
        )
    expected = exc.expected if isinstance(exc, UnexpectedToken | UnexpectedEOF) else set()
    if "_RPAR" in expected and not expected & {"_RSQB", "_COMMA"}:
        return FilterError("unbalanced parentheses: missing ')' at the end of the filter")
    return FilterError(f"the filter ends too early; expected {_describe(expected)}")


def _parse_text(text: str) -> tuple[Node, bool]:
    """The tree for `text` (date math left unresolved) and whether it holds date math."""
    if not text.strip():
        raise FilterError("empty filter")
    try:
        node = _PARSER.parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(text, exc) from None
    if _depth(node) > MAX_DEPTH:
        raise FilterError(f"the filter nests and/or groups more than {MAX_DEPTH} levels deep")
    return node, _has_date_math(node)


_parse_cached = lru_cache(maxsize=1024)(_parse_text)


def _depth(node: Node) -> int:
    """How deep and/or groups nest (iteratively: the tree may be too deep to recurse)."""
    deepest, stack = 0, [(node, 1)]
    while stack:
        current, depth = stack.pop()
        deepest = max(deepest, depth)
        if not isinstance(current, Comparison):
            stack.extend((child, depth + 1) for child in current.children)
    return deepest


def _has_date_math(node: Node) -> bool:
    if isinstance(node, Comparison):
        values = node.value if isinstance(node.value, tuple) else (node.value,)
        return any(isinstance(v, _DateMath) for v in values)
    return any(_has_date_math(child) for child in node.children)


def _resolve(node: Node, now: datetime) -> Node:
    if isinstance(node, Comparison):
        if isinstance(node.value, tuple):
            value: Value = tuple(_resolve_value(v, now) for v in node.value)
        else:
            value = _resolve_value(node.value, now)
        return Comparison(node.path, node.op, value)
    return type(node)(tuple(_resolve(child, now) for child in node.children))


def _resolve_value(value: Scalar | _DateMath, now: datetime) -> Scalar:
    return _apply_date_math(value.text, now) if isinstance(value, _DateMath) else value


def parse(text: str, now: datetime | None = None) -> Node:
    """Parse one filter expression; date math is resolved against `now` (default: the clock).

    Raises FilterError (with a message fit for the user) on any mistake.
    """
    parsed = _parse_cached if len(text) <= _CACHED_LENGTH else _parse_text
    node, has_date_math = parsed(text)
    return _resolve(node, _utc(now)) if has_date_math else node


def combine(texts: list[str], now: datetime | None = None) -> Node | None:
    """Several filters joined with ``and``; None when there is no non-blank one."""
    present = [t for t in texts if t and t.strip()]
    nodes: list[Node] = []
    for number, text in enumerate(present, start=1):
        try:
            nodes.append(parse(text, now))
        except FilterError as exc:
            if len(present) == 1:
                raise
            raise FilterError(f"filter {number}: {exc}") from None
    if not nodes:
        return None
    return nodes[0] if len(nodes) == 1 else And(_flatten(And, nodes))


# --------------------------------------------------------------------------------------------
# Paths


@lru_cache(maxsize=256)
def _segments(path: str, relative: bool = False) -> tuple[str, ...]:
    """The validated segments of a filter path (this guards the SQL text against injection);
    a `relative` path is one inside a list element, whose head is not an attribute."""
    segments = tuple(path.split("/"))
    if not all(_SEGMENT.match(s) for s in segments):
        raise FilterError(f"invalid attribute path '{path}'")
    if not relative and segments[0] not in schema.ATTRIBUTES:
        raise FilterError(f"unknown attribute '{segments[0]}'")
    return segments


def json_path(path: str, relative: bool = False) -> str:
    """The SQLite JSON path of a validated filter path: ``a/b`` -> ``$."a"."b"``."""
    return "$" + "".join(f'."{s}"' for s in _segments(path, relative))


def _list_split(path: str) -> tuple[str, str | None]:
    """For a list path: the path of the list, and the path inside each element (or None)."""
    head, _, rest = path.partition("/")
    if schema.ATTRIBUTES[head] == "hrefs":
        return head, rest
    return path, None


# --------------------------------------------------------------------------------------------
# SQL


_NUMERIC_TYPES = "('integer', 'real')"


@dataclass(frozen=True, slots=True)
class _Fragment:
    sql: str
    params: tuple
    nullable: bool  # may be NULL where the comparison is false (matters only under negation)
    negation: str | None = None  # a simpler negation than the generic one, same params


_FALSE = _Fragment("0", (), False)
_TRUE = _Fragment("1", (), False)


def _kind(value: object) -> str:
    """Which JSON values a filter value can match: 'str', 'num', 'bool' or 'null'."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    return "num" if isinstance(value, int) else "str"


def _group(value: Value) -> dict[str, list]:
    """Values by kind, in first-seen order (a scalar is a one-value group)."""
    values = value if isinstance(value, tuple) else (value,)
    groups: dict[str, list] = {}
    for v in values:
        groups.setdefault(_kind(v), []).append(v)
    return groups


def _test(op: str, expr: str, values: list) -> tuple[str, tuple]:
    """`expr op value` for one value, or membership for several (only with '=')."""
    if op == "=" and len(values) > 1:
        return f"{expr} IN ({', '.join('?' * len(values))})", tuple(values)
    value = values[0]
    if op == "^=":
        upper = _prefix_upper(value)
        if upper is None:
            return f"{expr} >= ?", (value,)
        return f"{expr} >= ? AND {expr} < ?", (value, upper)
    return f"{expr} {op} ?", (value,)


def _prefix_upper(prefix: str) -> str | None:
    """The least string above every string starting with `prefix` (code point order, which
    is SQLite's BINARY order on UTF-8), or None when there is none."""
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


def _typed_test(op: str, kind: str, type_expr: str, value_expr: str, values: list) -> _Fragment:
    """A comparison against JSON values whose type is given by `type_expr`."""
    if kind == "bool":  # only '=' reaches here: a boolean is matched by its JSON type
        names = ["true" if v else "false" for v in values]
        sql, params = _test("=", type_expr, names)
        return _Fragment(sql, params, True)
    type_test = f"{type_expr} = 'text'" if kind == "str" else f"{type_expr} IN {_NUMERIC_TYPES}"
    sql, params = _test(op, value_expr, values)
    return _Fragment(f"{type_test} AND {sql}", params, True)


def _any_of(parts: list[_Fragment]) -> _Fragment:
    if not parts:
        return _FALSE
    if len(parts) == 1:
        return parts[0]
    return _Fragment(
        " OR ".join(f"({p.sql})" for p in parts),
        tuple(v for p in parts for v in p.params),
        any(p.nullable for p in parts),
    )


def _indexed(path: str, op: str, value: Value) -> _Fragment:
    column, sql_type = schema.INDEXED_COLUMNS[path]
    # The generated column only holds values of its own type (see the module docstring).
    column_kind = "num" if sql_type == "INTEGER" else "str"
    parts = []
    for kind, values in _group(value).items():
        if kind == "null":
            parts.append(_Fragment(f"{column} IS NULL", (), False, f"{column} IS NOT NULL"))
        elif kind == column_kind:
            sql, params = _test(op, column, values)
            # `column = ?` is NULL on a NULL column; `IS NOT` is its null-safe negation
            negation = f"{column} IS NOT ?" if sql == f"{column} = ?" else None
            parts.append(_Fragment(sql, params, True, negation))
    return _any_of(parts)


def _scalar(path: str, op: str, value: Value) -> _Fragment:
    where = json_path(path)
    type_expr = f"json_type(doc, '{where}')"
    value_expr = f"json_extract(doc, '{where}')"
    parts = []
    for kind, values in _group(value).items():
        if kind == "null":
            parts.append(_Fragment(f"{value_expr} IS NULL", (), False, f"{value_expr} IS NOT NULL"))
        else:
            parts.append(_typed_test(op, kind, type_expr, value_expr, values))
    return _any_of(parts)


def _element_exprs(inner: str | None) -> tuple[str, str]:
    """(type, value) SQL of one element of a json_each over a list path."""
    if inner is None:
        return "j.type", "j.value"
    where = json_path(inner, relative=True)  # the CASE keeps json_* off elements that are not maps
    return (
        f"CASE WHEN j.type = 'object' THEN json_type(j.value, '{where}') END",
        f"CASE WHEN j.type = 'object' THEN json_extract(j.value, '{where}') END",
    )


def _list(path: str, op: str, value: Value) -> _Fragment:
    list_path, inner = _list_split(path)
    type_expr, value_expr = _element_exprs(inner)
    # typeof(j.key) = 'integer' keeps array elements only: a scalar or a map is not a list.
    source = f"json_each(doc, '{json_path(list_path)}') AS j WHERE typeof(j.key) = 'integer'"
    parts, tests = [], []
    for kind, values in _group(value).items():
        if kind == "null":
            no_value = f"NOT EXISTS (SELECT 1 FROM {source} AND {type_expr} != 'null')"
            parts.append(_Fragment(no_value, (), False))
        else:
            tests.append(_typed_test(op, kind, type_expr, value_expr, values))
    if tests:
        test = _any_of(tests)
        parts.append(
            _Fragment(f"EXISTS (SELECT 1 FROM {source} AND ({test.sql}))", test.params, False)
        )
    return _any_of(parts)


def _comparison_sql(node: Comparison) -> _Fragment:
    op = "=" if node.op == "!=" else node.op
    if node.path in schema.LIST_PATHS:
        fragment = _list(node.path, op, node.value)
    elif node.path in schema.INDEXED_COLUMNS:
        fragment = _indexed(node.path, op, node.value)
    else:
        fragment = _scalar(node.path, op, node.value)
    if node.op != "!=":
        return fragment
    if fragment is _FALSE:
        return _TRUE
    if fragment.negation is not None:
        return _Fragment(fragment.negation, fragment.params, False)
    if fragment.nullable:
        return _Fragment(f"({fragment.sql}) IS NOT 1", fragment.params, False)
    return _Fragment(f"NOT ({fragment.sql})", fragment.params, False)


def _node_sql(node: Node) -> _Fragment:
    if isinstance(node, Comparison):
        return _comparison_sql(node)
    if isinstance(node, And | Or) and node.children:
        joiner = " AND " if isinstance(node, And) else " OR "
        parts = [_node_sql(child) for child in node.children]
        return _Fragment(
            joiner.join(_wrap(p.sql) for p in parts),
            tuple(v for p in parts for v in p.params),
            any(p.nullable for p in parts),
        )
    raise FilterError(f"not a filter node: {node!r}")


def _wrap(sql: str) -> str:
    # Parenthesise anything with a top-level AND/OR in it (over-wrapping is harmless).
    return f"({sql})" if " AND " in sql or " OR " in sql else sql


def to_sql(node: Node) -> tuple[str, list]:
    """A parameterised SQLite boolean expression selecting the rows of table ``job`` whose
    ``doc`` matches `node`; values only ever travel as ``?`` parameters."""
    fragment = _node_sql(node)
    if len(fragment.params) > MAX_PARAMETERS:
        raise FilterError(f"the filter has more than {MAX_PARAMETERS} values")
    return fragment.sql, list(fragment.params)


# --------------------------------------------------------------------------------------------
# Python evaluation

_MISSING = object()


def _walk(value: object, segments: tuple[str, ...]) -> object:
    for segment in segments:
        if not isinstance(value, dict) or segment not in value:
            return _MISSING
        value = value[segment]
    return value


def _scalar_value(doc: dict, path: str) -> object:
    value = _walk(doc, _segments(path))
    if value is _MISSING:
        return None
    if path in schema.INDEXED_COLUMNS:
        # mirror the generated column, which keeps only values of its own type
        wanted = str if schema.INDEXED_COLUMNS[path][1] == "TEXT" else int
        if not isinstance(value, wanted) or isinstance(value, bool):
            return None
    return value


def _elements(doc: dict, path: str) -> list:
    list_path, inner = _list_split(path)
    items = _walk(doc, _segments(list_path))
    if not isinstance(items, list):
        return []
    if inner is None:
        return items
    inner_segments = _segments(inner, relative=True)
    found = [_walk(item, inner_segments) for item in items]
    return [None if v is _MISSING else v for v in found]


def _match(actual: object, op: str, expected: Scalar) -> bool:
    """One non-null filter value against one JSON value, kinds kept apart."""
    if isinstance(expected, bool):
        return isinstance(actual, bool) and actual == expected
    if isinstance(expected, int):
        if not isinstance(actual, int | float) or isinstance(actual, bool):
            return False
    elif not isinstance(actual, str):
        return False
    if op == "=":
        return actual == expected
    if op == "^=":
        return actual.startswith(expected)
    if op == "<":
        return actual < expected
    if op == "<=":
        return actual <= expected
    if op == ">":
        return actual > expected
    return actual >= expected


def _holds(doc: dict, path: str, op: str, value: Value) -> bool:
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


def evaluate(node: Node, doc: dict) -> bool:
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
