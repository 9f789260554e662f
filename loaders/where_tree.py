"""The tree of a ``where`` predicate: its nodes, their SQL types, and the SQL Lance gets.

A tree is built by :func:`pvtt.loaders.where.parse_where` (a user's text) or directly
(pvtt's structured filters), and is always in the shape Lance evaluates consistently:
no NOT node (negation is pushed into the comparisons, IS NULL and LIKE; NOT IN is
``<>`` per value), no BETWEEN
(two comparisons), no sub-expression made of literals only (folded to one literal),
and conditions combined only by AND and OR. Lance converts a literal that faces a
column in such a top-level comparison to the column's type, but not one nested under
NOT; in this shape every comparison is top-level, so one rule describes both Lance and
pvtt's Arrow evaluation (:mod:`pvtt.loaders.where_arrow`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from functools import cache
from typing import Union

import numpy as np
import pyarrow as pa

from pvtt.schemas.tables import PAIRS_SCHEMA, scalar_columns

Value = Union[str, int, float, bool, datetime, None]  # noqa: UP007 (a runtime alias)
INT64 = (-(2**63), 2**63 - 1)
FLOAT32_MAX = float(np.finfo(np.float32).max)
FUNCTIONS = {"lower": "utf8_lower", "upper": "utf8_upper", "length": "utf8_length", "abs": "abs"}
"""SQL function -> Arrow compute function: the only calls a where may make."""
INVERSE = {"=": "<>", "<>": "=", "<": ">=", ">=": "<", ">": "<=", "<=": ">"}
"""The comparison that is true exactly when this one is false (NULL stays NULL)."""


class WhereError(ValueError):
    """A where pvtt refuses: not one expression, outside the allowlist, or ill-typed."""


@dataclass(frozen=True)
class Column:
    name: str


@dataclass(frozen=True)
class Literal:
    value: Value
    kind: str
    """``string``, ``integer``, ``float``, ``boolean``, ``timestamp`` or ``null``
    (kept beside the value: ``1 == True`` in Python, not in SQL)."""


@dataclass(frozen=True)
class Compare:
    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class Arith:
    """``+ - * /``; a division by zero is NULL (printed with NULLIF for Lance)."""

    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class Negate:
    operand: Node


@dataclass(frozen=True)
class Logic:
    op: str  # AND / OR
    items: tuple[Node, ...]


@dataclass(frozen=True)
class In:
    """``operand IN (values)``. Its negation is ``<>`` per value: DataFusion simplifies
    ``x NOT IN (a) OR x NOT IN (b)`` to TRUE, also for a NULL ``x`` (measured)."""

    operand: Node
    values: tuple[Literal, ...]


@dataclass(frozen=True)
class IsNull:
    operand: Node
    negated: bool = False


@dataclass(frozen=True)
class Like:
    operand: Node
    pattern: str
    negated: bool = False
    ignore_case: bool = False


@dataclass(frozen=True)
class Call:
    name: str
    operand: Node


Node = Union[Column, Literal, Compare, Arith, Negate, Logic, In, IsNull, Like, Call]  # noqa: UP007
VALUES = (Column, Literal, Arith, Negate, Call)
"""Nodes that are values; the rest are conditions, combined only by AND and OR."""


def literal(value: Value) -> Literal:
    """A literal node of a Python value (bool before int: ``True`` is an int too)."""
    if value is None:
        return Literal(None, "null")
    if isinstance(value, bool):
        return Literal(value, "boolean")
    if isinstance(value, int):
        if not INT64[0] <= value <= INT64[1]:
            raise WhereError(f"the number {value} is out of range (64-bit integers)")
        return Literal(value, "integer")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise WhereError(f"the number {value} is not finite")
        return Literal(value, "float")
    if isinstance(value, str):
        return Literal(value, "string")
    if isinstance(value, datetime):
        return Literal(utc(value), "timestamp")
    raise TypeError(f"no SQL literal for {type(value).__name__}")


def utc(value: datetime) -> datetime:
    """A naive UTC datetime (Lance compares a TIMESTAMP literal with UTC columns as UTC)."""
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


def logic(op: str, items: list[Node]) -> Node:
    """``a op b op ...`` flattened (an item that is itself an ``op`` gives its items), so
    that one predicate has one tree however it was written or negated."""
    flat = [p for i in items for p in (i.items if isinstance(i, Logic) and i.op == op else [i])]
    return flat[0] if len(flat) == 1 else Logic(op, tuple(flat))


def conjunction(items: list[Node]) -> Node | None:
    """``a AND b AND ...`` of the nodes given, flattened (None for none)."""
    return logic("AND", items) if items else None


def conjuncts(node: Node) -> list[Node]:
    """The parts of a top-level AND (the node itself otherwise)."""
    return list(node.items) if isinstance(node, Logic) and node.op == "AND" else [node]


def children(node: Node) -> tuple[Node, ...]:
    if isinstance(node, (Compare, Arith)):
        return (node.left, node.right)
    if isinstance(node, Logic):
        return node.items
    if isinstance(node, (Negate, In, IsNull, Like, Call)):
        return (node.operand,)
    return ()


def columns(node: Node) -> set[str]:
    """The column names a tree reads."""
    if isinstance(node, Column):
        return {node.name}
    found: set[str] = set()
    for child in children(node):
        found |= columns(child)
    return found


def negate(node: Node) -> Node:
    """NOT ``node``, pushed down to the comparisons (three-valued: NULL stays NULL)."""
    if isinstance(node, Logic):
        return logic("OR" if node.op == "AND" else "AND", [negate(i) for i in node.items])
    if isinstance(node, Compare):
        return Compare(INVERSE[node.op], node.left, node.right)
    if isinstance(node, In):
        return logic("AND", [Compare("<>", node.operand, value) for value in node.values])
    if isinstance(node, (IsNull, Like)):
        return replace(node, negated=not node.negated)
    if isinstance(node, Literal):
        return node if node.value is None else literal(not node.value)
    return Compare("=", node, literal(False))  # a boolean column


# -- types ---------------------------------------------------------------------------------


def _kind(dtype: pa.DataType) -> str | None:
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return "string"
    if pa.types.is_integer(dtype):
        return "integer"
    if pa.types.is_floating(dtype):
        return "float"
    if pa.types.is_boolean(dtype):
        return "boolean"
    if pa.types.is_timestamp(dtype):
        return "timestamp"
    return None


@cache
def column_types() -> dict[str, pa.DataType]:
    """Columns a where may name (the pairs' scalar columns of a comparable type)."""
    out = {}
    for name in scalar_columns("pairs"):
        dtype = PAIRS_SCHEMA.field(name).type
        if _kind(dtype) is not None:
            out[name] = dtype
    return out


NUMBERS = {"integer", "float"}


def _comparable(a: str, b: str) -> bool:
    return a == b or "null" in (a, b) or {a, b} <= NUMBERS


def _fits(column: Column, value: Literal) -> None:
    """Lance converts a literal facing a column to the column's type, or refuses."""
    dtype = column_types()[column.name]
    kind = _kind(dtype)
    ok = value.kind in ("null", kind) or (kind == "float" and value.kind == "integer")
    if ok and value.kind == "integer" and pa.types.is_integer(dtype):
        info = np.iinfo(dtype.to_pandas_dtype())
        if not info.min <= value.value <= info.max:  # type: ignore[operator]
            raise WhereError(
                f"{to_sql(value)} does not fit column {column.name} ({dtype}): "
                f"it holds {info.min}..{info.max}"
            )
    if ok and dtype == pa.float32() and value.kind in NUMBERS:
        if abs(value.value) > FLOAT32_MAX:  # type: ignore[arg-type]
            raise WhereError(f"{to_sql(value)} does not fit column {column.name} ({dtype})")
    if not ok:
        raise WhereError(
            f"column {column.name} holds {kind} values ({dtype}); "
            f"it cannot be compared with {to_sql(value)}"
        )


def _pair(left: Node, right: Node, what: str) -> None:
    if isinstance(left, Column) and isinstance(right, Literal):
        _fits(left, right)
    elif isinstance(right, Column) and isinstance(left, Literal):
        _fits(right, left)
    else:
        a, b = value_kind(left), value_kind(right)
        if not _comparable(a, b):
            raise WhereError(f"{what}: cannot compare {a} {to_sql(left)} with {b} {to_sql(right)}")


def value_kind(node: Node) -> str:
    """The SQL type of a value node; a condition here is refused (combine conditions
    with AND, OR and NOT only: Lance types a comparison nested in another differently)."""
    if not isinstance(node, VALUES):
        raise WhereError(
            f"{to_sql(node)}: a condition cannot be compared or tested here; "
            "combine conditions with AND, OR and NOT"
        )
    return kind_of(node)


def kind_of(node: Node) -> str:
    """The SQL type of a node, checking it on the way (a WhereError if ill-typed)."""
    if isinstance(node, Column):
        return _kind(column_types()[node.name]) or "null"
    if isinstance(node, Literal):
        return node.kind
    if isinstance(node, Compare):
        _pair(node.left, node.right, to_sql(node))
        return "boolean"
    if isinstance(node, Arith):
        kinds = [value_kind(node.left), value_kind(node.right)]
        if not set(kinds) <= NUMBERS | {"null"}:
            raise WhereError(f"{to_sql(node)}: {node.op} needs numbers, got {' and '.join(kinds)}")
        return "float" if "float" in kinds else "integer"
    if isinstance(node, Negate):
        kind = value_kind(node.operand)
        if kind not in NUMBERS | {"null"}:
            raise WhereError(f"{to_sql(node)}: only numbers can be negated, got {kind}")
        return kind
    if isinstance(node, Logic):
        for item in node.items:
            kind = kind_of(item)
            if kind not in ("boolean", "null"):
                raise WhereError(f"{node.op} needs true/false conditions; {to_sql(item)} is {kind}")
        return "boolean"
    if isinstance(node, In):
        for value in node.values:
            _pair(node.operand, value, to_sql(node))
        return "boolean"
    if isinstance(node, IsNull):
        value_kind(node.operand)
        return "boolean"
    if isinstance(node, Like):
        kind = value_kind(node.operand)
        if kind not in ("string", "null"):
            raise WhereError(f"{to_sql(node)}: LIKE needs a string, {to_sql(node.operand)} is {kind}")
        return "boolean"
    if isinstance(node, Call):
        kind = value_kind(node.operand)
        wants = NUMBERS if node.name == "abs" else {"string"}
        if kind not in wants | {"null"}:
            what = "number" if node.name == "abs" else "string"
            raise WhereError(f"{to_sql(node)}: {node.name} needs a {what}, got {kind}")
        return {"lower": "string", "upper": "string", "length": "integer"}.get(node.name, kind)
    raise TypeError(f"not a where node: {node!r}")


# -- printing for Lance --------------------------------------------------------------------


def sql_literal(value: Value) -> str:
    """A value as a Lance SQL literal: ``'it''s'`` (a backslash stays itself), ``1.5``,
    ``TRUE``, ``NULL``, ``TIMESTAMP '2026-01-02 03:04:05.000000'``. The one place pvtt
    quotes SQL."""
    node = literal(value)
    if node.kind == "null":
        return "NULL"
    if node.kind == "boolean":
        return "TRUE" if node.value else "FALSE"
    if node.kind == "string":
        return "'" + str(node.value).replace("'", "''") + "'"
    if node.kind == "timestamp":
        return f"TIMESTAMP '{node.value:%Y-%m-%d %H:%M:%S.%f}'"
    return repr(node.value)


def sql_in(column: str, values: list[Value]) -> str:
    """```column` IN (values...)`` with each value quoted (``FALSE`` for no values)."""
    if not values:
        return "FALSE"
    return f"`{column}` IN ({', '.join(sql_literal(v) for v in values)})"


def to_sql(node: Node) -> str:
    """The tree as Lance filter SQL: backtick columns, quoted literals, explicit parentheses."""
    if isinstance(node, Column):
        return f"`{node.name}`"
    if isinstance(node, Literal):
        return sql_literal(node.value)
    if isinstance(node, Call):
        return f"{node.name}({to_sql(node.operand)})"
    if isinstance(node, Arith) and node.op == "/" and not _nonzero(node.right):
        return f"{_sub(node.left)} / NULLIF({to_sql(node.right)}, 0)"
    if isinstance(node, (Compare, Arith)):
        return f"{_sub(node.left)} {node.op} {_sub(node.right)}"
    if isinstance(node, Negate):
        return f"-({to_sql(node.operand)})"  # never "--": that would start a comment
    if isinstance(node, Logic):
        return f" {node.op} ".join(_sub(item) for item in node.items)
    if isinstance(node, In):
        return f"{_sub(node.operand)} IN ({', '.join(to_sql(v) for v in node.values)})"
    neg = "NOT " if node.negated else ""
    if isinstance(node, IsNull):
        return f"{_sub(node.operand)} IS {neg}NULL"
    if isinstance(node, Like):
        op = "ILIKE" if node.ignore_case else "LIKE"
        return f"{_sub(node.operand)} {neg}{op} {sql_literal(node.pattern)}"
    raise TypeError(f"not a where node: {node!r}")


def _nonzero(node: Node) -> bool:
    return isinstance(node, Literal) and node.kind in NUMBERS and node.value != 0


def _sub(node: Node) -> str:
    text = to_sql(node)
    return text if isinstance(node, (Column, Literal, Call)) else f"({text})"
