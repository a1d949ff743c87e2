"""The CIMI filter language: one tree, parsed once and checked, that each store compiles.

A filter such as ``state=['QUEUED','RUNNING'] and created<'now-7d'`` is parsed into a small tree
of immutable nodes (`And`, `Or`, `Comparison`), with every path, operator, value and limit
checked here, so a tree that exists is valid. Each store compiles the tree into its own
dialect (sqlite_sql.py for SQLite); evaluate.py runs it in Python, the reference the SQL
dialects are tested against. Every dialect gives the same answer for every document.

Semantics, shared by every dialect:

- A path in ``schema.LIST_PATHS`` names a list (only a JSON array counts; anything else reads
  as an empty list); a comparison holds when it holds for ANY element, as in Elasticsearch.
- ``a=null`` holds when ``a`` is missing or null (for a list: no non-null element);
  ``a!=v`` is exactly ``not (a=v)``.
- Values only match values of their own kind: strings with strings, numbers with numbers,
  booleans with booleans (``=``/``!=`` only). Anything else is simply false.
- A path of ``schema.INDEXED`` holds only values of its declared type (string or integer);
  any other value there reads as null. (Stores keep those paths in indexed columns of that
  type, written from the document, so filters on them run on indexes.)
- Dates (paths of ``schema.DATE_ATTRIBUTES``) are normalised to ``YYYY-MM-DDTHH:MM:SS.mmmZ`` at
  parse time, date math (``now-7d/d``) included, so they compare as plain strings.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, cast

from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from nuvla_job.api import schema
from nuvla_job.timeutil import format_time

__all__ = [
    "FilterError",
    "And",
    "Or",
    "Comparison",
    "Node",
    "Scalar",
    "Value",
    "OPERATORS",
    "MAX_DEPTH",
    "MAX_COMPARISONS",
    "MAX_VALUES",
    "parse",
    "combine",
    "fold",
    "segments",
    "list_split",
    "normalize_date",
]

OPERATORS = ("=", "!=", "<", "<=", ">", ">=", "^=")
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+\Z")
_INT64 = (-(2**63), 2**63 - 1)
# Limits that keep a hostile filter a 400 rather than a database error: a database parses
# nested groups on a bounded stack (SQLite's overflows near 30 levels of the SQL a dialect
# writes), caps the depth of an expression (SQLite at 1,000: a run of N `or` is N deep) and
# the parameters of one statement (SQLite at 32,766; a value costs a dialect at most two).
# Comparisons are counted after `fold`: `state='A' or state='B' or ...` is one.
MAX_DEPTH = 20
MAX_COMPARISONS = 500
MAX_VALUES = 10_000
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


class _DateMath(str):
    """The text of a ``now...`` value in a cached tree: `parse` resolves it against the
    caller's clock before any tree leaves this module."""


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
    return format_time(moment)


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
    return format_time(moment)


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
_value: _scalar | value_list
_scalar: STRING | INT | DATE | TRUE | FALSE | NULL
value_list: _LSQB [_scalar (_COMMA _scalar)*] _RSQB

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
class _ValueList:
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


def _literal(token: Token, path: str, op: str) -> Scalar:
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


class _Build(Transformer[Token, Node]):
    """Turns the parse tree into nodes while LALR parsing (no intermediate tree)."""

    def comparison(self, items: list[Any]) -> Comparison:
        path_token, op_token, raw = items
        path = _check_path(path_token)
        op = _check_operator(op_token)
        if isinstance(raw, _ValueList):
            if op not in ("=", "!="):
                raise FilterError(
                    f"a list value only works with = and != (position {_pos(op_token)})"
                )
            return Comparison(path, op, tuple(_literal(t, path, op) for t in raw.tokens))
        value = _literal(raw, path, op)
        if op not in ("=", "!=") and (value is None or isinstance(value, bool)):
            raise FilterError(
                f"{_kind_name(value)} can only be compared with = or != (position {_pos(op_token)})"
            )
        if op == "^=" and not isinstance(value, str):
            raise FilterError(f"^= needs a string value (position {_pos(op_token)})")
        return Comparison(path, op, value)

    def value_list(self, items: list[Token | None]) -> _ValueList:
        return _ValueList(tuple(t for t in items if t is not None))

    def conj(self, items: list[Node]) -> And:
        return And(_flatten(And, items))

    def disj(self, items: list[Node]) -> Or:
        return Or(_flatten(Or, items))

    def start(self, items: list[Node]) -> Node:
        return items[0]


def _flatten(kind: type[And] | type[Or], items: list[Node]) -> tuple[Node, ...]:
    children: list[Node] = []
    for item in items:
        if isinstance(item, kind):
            children.extend(item.children)
        else:
            children.append(item)
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
        pos = exc.pos_in_stream or 0
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
    # The LALR parser reports the end of the text as an UnexpectedToken of type $END.
    expected: set[str] = exc.expected if isinstance(exc, UnexpectedToken) else set()
    if "_RPAR" in expected and not expected & {"_RSQB", "_COMMA"}:
        return FilterError("unbalanced parentheses: missing ')' at the end of the filter")
    return FilterError(f"the filter ends too early; expected {_describe(expected)}")


def _parse_text(text: str) -> tuple[Node, bool]:
    """The checked tree for `text` (date math left unresolved) and whether it holds date
    math."""
    if not text.strip():
        raise FilterError("empty filter")
    try:
        # The inline transformer makes the parser return our nodes, not a lark tree.
        node = cast(Node, _PARSER.parse(text))
    except UnexpectedInput as exc:
        raise _syntax_error(text, exc) from None
    has_date_math = _check_limits(node)
    return node, has_date_math


def _check_limits(node: Node, together: bool = False) -> bool:
    """FilterError when `node` (several filters joined, if `together`) is over a limit;
    whether it holds date math."""
    what, nests, has = (
        ("the filters together", "nest", "have") if together else ("the filter", "nests", "has")
    )
    depth, values, has_date_math = _measure(node)
    if depth > MAX_DEPTH:
        raise FilterError(f"{what} {nests} and/or groups more than {MAX_DEPTH} levels deep")
    if values > MAX_VALUES:
        raise FilterError(f"{what} {has} more than {MAX_VALUES} values")
    if _comparisons(fold(node)) > MAX_COMPARISONS:
        raise FilterError(
            f"{what} {has} more than {MAX_COMPARISONS} comparisons; compare an attribute "
            "with a list rather than joining comparisons of it with 'or' "
            "(state=['QUEUED','RUNNING'])"
        )
    return has_date_math


def _comparisons(node: Node) -> int:
    if isinstance(node, Comparison):
        return 1
    return sum(_comparisons(child) for child in node.children)


_parse_cached = lru_cache(maxsize=1024)(_parse_text)


def _measure(node: Node) -> tuple[int, int, bool]:
    """How deep and/or groups nest, how many values the tree holds, and whether one is date
    math (iteratively: the tree may be too deep to recurse)."""
    deepest, values, has_date_math, stack = 0, 0, False, [(node, 1)]
    while stack:
        current, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(current, Comparison):
            items = current.value if isinstance(current.value, tuple) else (current.value,)
            values += len(items)
            has_date_math = has_date_math or any(isinstance(v, _DateMath) for v in items)
        else:
            stack.extend((child, depth + 1) for child in current.children)
    return deepest, values, has_date_math


def _resolve(node: Node, now: datetime) -> Node:
    if isinstance(node, Comparison):
        if isinstance(node.value, tuple):
            value: Value = tuple(_resolve_value(v, now) for v in node.value)
        else:
            value = _resolve_value(node.value, now)
        return Comparison(node.path, node.op, value)
    return type(node)(tuple(_resolve(child, now) for child in node.children))


def _resolve_value(value: Scalar, now: datetime) -> Scalar:
    return _apply_date_math(value, now) if isinstance(value, _DateMath) else value


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
    if len(nodes) == 1:
        return nodes[0]
    combined = And(_flatten(And, nodes))
    _check_limits(combined, together=True)
    return combined


def fold(node: Node) -> Node:
    """The same filter in fewer comparisons, for dialects to compile: in an ``or`` group the
    ``=`` comparisons of one path become one any-of comparison (``state=['A','B']``), and in
    an ``and`` group the ``!=`` ones one none-of (``a!='x' and a!='y'`` is ``not (a='x' or
    a='y')``); a group left with one member is that member. Equal for every document, by
    the semantics above; a long run of ``or`` becomes one indexed ``IN``.
    """
    if isinstance(node, Comparison):
        return node
    op = "=" if isinstance(node, Or) else "!="
    members: list[Node | str] = []  # a str stands for the folded comparison of that path
    values: dict[str, list[Scalar]] = {}
    single: dict[str, Comparison] = {}
    for child in node.children:
        child = fold(child)
        if not isinstance(child, Comparison) or child.op != op:
            members.append(child)
            continue
        found = child.value if isinstance(child.value, tuple) else (child.value,)
        if child.path in values:
            values[child.path].extend(found)
            single.pop(child.path, None)
            continue
        values[child.path] = list(found)
        single[child.path] = child
        members.append(child.path)
    children = tuple(
        (single.get(m) or Comparison(m, op, tuple(values[m]))) if isinstance(m, str) else m
        for m in members
    )
    return children[0] if len(children) == 1 else type(node)(children)


# --------------------------------------------------------------------------------------------
# Paths


@lru_cache(maxsize=256)
def segments(path: str, relative: bool = False) -> tuple[str, ...]:
    """The checked segments of a path (``a/b`` -> ``("a", "b")``): a dialect may paste them
    into its SQL text, so they hold only ``[A-Za-z0-9_-]``. A `relative` path is one inside
    a list element, whose head is not an attribute. FilterError for anything else."""
    parts = tuple(path.split("/"))
    if not all(_SEGMENT.match(s) for s in parts):
        raise FilterError(f"invalid attribute path '{path}'")
    if not relative and parts[0] not in schema.ATTRIBUTES:
        raise FilterError(f"unknown attribute '{parts[0]}'")
    return parts


def list_split(path: str) -> tuple[str, str | None]:
    """For a path of ``schema.LIST_PATHS``: the path of the list, and the path inside each
    element (None when the elements are the values themselves)."""
    head, _, rest = path.partition("/")
    if schema.ATTRIBUTES[head] == "hrefs":
        return head, rest
    return path, None
