"""A ``where`` tree evaluated on Arrow: how tar datasets select what Lance would.

Tar shard indexes and sample json are turned into Arrow tables typed by the pairs
schema (:func:`typed_table`), never typed from their values, and the tree of
:mod:`pvtt.loaders.where_tree` runs on them with Lance's rules: a literal facing a
column in a comparison or an IN list takes the column's type; other operands are
widened as DataFusion widens them (Arrow alone would narrow the literal); two computed
float sides compare in IEEE totalOrder as arrow-rs compares them; LIKE reads a pattern
as Lance does; a division by zero is NULL. The fuzz target ``where`` checks all of this
against Lance itself, case by case.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from pvtt.loaders.where_tree import (
    FUNCTIONS,
    NUMBERS,
    Arith,
    Call,
    Column,
    Compare,
    In,
    IsNull,
    Like,
    Literal,
    Logic,
    Negate,
    Node,
    WhereError,
    column_types,
    kind_of,
    literal,
    to_sql,
    utc,
)
from pvtt.schemas.tables import PAIRS_SCHEMA

_COMPARE = {"=": "equal", "<>": "not_equal", "<": "less", "<=": "less_equal", ">": "greater", ">=": "greater_equal"}  # fmt: skip
_ARITH = {"+": "add", "-": "subtract", "*": "multiply", "/": "divide"}
_ROW = "__pvtt_row__"


def evaluate(node: Node, table: pa.Table) -> np.ndarray:
    """A boolean mask: the rows of ``table`` (pairs columns typed by the schema) where
    ``node`` is true (NULL counts as false, as in a SQL WHERE)."""
    if table.num_rows == 0:
        return np.zeros(0, dtype=bool)
    indexed = table.append_column(_ROW, pa.array(np.arange(table.num_rows, dtype=np.int64)))
    try:
        kept = indexed.filter(_expr(node, pa.bool_())).column(_ROW).to_numpy()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise WhereError(f"could not evaluate {to_sql(node)}: {exc}") from None
    mask = np.zeros(table.num_rows, dtype=bool)
    mask[kept] = True
    return mask


def fold(node: Node) -> Literal:
    """The value of a node made of literals only, computed as it would be on a column."""
    try:
        one = pads.dataset(pa.table({_ROW: [0]})).to_table(columns={"v": _expr(node)})
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise WhereError(f"could not compute {to_sql(node)}: {exc}") from None
    return literal(one.column("v")[0].as_py())


def typed_table(rows: list[dict[str, Any]], names: list[str] | tuple[str, ...]) -> pa.Table:
    """Rows (tar index entries, sample json) as Arrow with the pairs schema's types.

    Types come from the schema, never from the values: a score column null in every row
    is still float32, so ``score_overall > 0.6`` means the same as on Lance. Missing keys
    are null; json timestamps (ISO text) become timestamps.
    """
    schema = pa.schema([pa.field(n, PAIRS_SCHEMA.field(n).type, nullable=True) for n in names])
    stamps = [f.name for f in schema if pa.types.is_timestamp(f.type)]
    if stamps:
        rows = [{**r, **{s: _stamp(r.get(s)) for s in stamps}} for r in rows]
    try:
        return pa.Table.from_pylist(rows, schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
        raise ValueError(f"a sample's columns do not match the pairs schema: {exc}") from None


def _stamp(value: Any) -> Any:
    if isinstance(value, str):
        return utc(datetime.fromisoformat(value)).replace(tzinfo=timezone.utc)
    return value


def like_regex(pattern: str) -> str:
    """A LIKE pattern as an anchored RE2 regex, read as Lance reads it: ``%`` any run,
    ``_`` one character, a backslash takes the next character literally, and a backslash
    that ends the pattern is itself (Arrow's ``match_like`` reads those last two apart)."""
    out, i = ["(?s)^"], 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(_regex_char(pattern[i]))
        elif char == "%":
            out.append(".*")
        elif char == "_":
            out.append(".")
        else:
            out.append(_regex_char(char))
        i += 1
    return "".join(out) + "$"


def _regex_char(char: str) -> str:
    return char if char.isalnum() else f"\\x{{{ord(char):x}}}"


def _scalar(value: Literal, dtype: pa.DataType | None = None) -> pa.Scalar:
    if value.kind == "null":
        return pa.scalar(None, dtype or pa.null())
    if value.kind == "timestamp":
        return pa.scalar(value.value, dtype or pa.timestamp("us", tz="UTC"))
    if dtype is not None and pa.types.is_floating(dtype):
        return pa.scalar(float(value.value), dtype)  # type: ignore[arg-type]
    return pa.scalar(value.value, dtype)


def _facing(node: Node, other: Node) -> pc.Expression:
    """One side of a comparison: a literal facing a column takes the column's type (and
    the column keeps its own), as Lance converts it; other sides are widened."""
    if isinstance(node, Literal) and isinstance(other, Column):
        return pc.scalar(_scalar(node, column_types()[other.name]))
    if isinstance(node, Column) and isinstance(other, Literal):
        return pc.field(node.name)
    return _widened(node, other)


def _widened(node: Node, other: Node) -> pc.Expression:
    """``node`` cast to its common numeric type with ``other``, as DataFusion coerces the
    two sides of an operator. Arrow left to itself casts a literal to the array's type
    (``float32 * 2.5`` computed in float32, ``int32 * 2**31`` wrapping in int32), where
    DataFusion widens the array (float64, int64)."""
    common = _common(arrow_type(node), arrow_type(other))
    if isinstance(node, Literal) and node.kind in NUMBERS:
        return pc.scalar(_scalar(node, common))
    expr = _expr(node)
    return expr if common == arrow_type(node) else expr.cast(common)


def arrow_type(node: Node) -> pa.DataType:
    """The Arrow type DataFusion gives a value node."""
    if isinstance(node, Column):
        return column_types()[node.name]
    if isinstance(node, Literal):
        return _LITERAL_TYPES[node.kind]
    if isinstance(node, Arith):
        return _common(arrow_type(node.left), arrow_type(node.right))
    if isinstance(node, Negate):
        return arrow_type(node.operand)
    if isinstance(node, Call):
        return {"lower": pa.string(), "upper": pa.string(), "length": pa.int32()}.get(
            node.name, arrow_type(node.operand)
        )
    return pa.bool_()


_LITERAL_TYPES = {
    "string": pa.string(), "integer": pa.int64(), "float": pa.float64(),
    "boolean": pa.bool_(), "timestamp": pa.timestamp("us", tz="UTC"), "null": pa.null(),
}  # fmt: skip


def _common(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    """DataFusion's numeric coercion: a float type wins over integers (float32 stays
    float32 beside an int64), else the wider of the two."""
    if pa.types.is_null(a):
        return b
    if pa.types.is_null(b) or not (pa.types.is_integer(a) or pa.types.is_floating(a)):
        return a
    if not (pa.types.is_integer(b) or pa.types.is_floating(b)):
        return a
    floats = [t for t in (a, b) if pa.types.is_floating(t)]
    return max(floats or [a, b], key=lambda t: t.bit_width)


def _expr(node: Node, want: pa.DataType | None = None) -> pc.Expression:
    """The Arrow expression of a node; ``want`` types a bare NULL (Arrow has kernels for
    typed nulls, not for the null type, in logic and string functions)."""
    if isinstance(node, Column):
        return pc.field(node.name)
    if isinstance(node, Literal):
        return pc.scalar(_scalar(node, want if node.kind == "null" else None))
    if isinstance(node, Compare):
        if kind_of(node.left) == kind_of(node.right) == "null":
            return pc.scalar(pa.scalar(None, pa.bool_()))
        left, right = _facing(node.left, node.right), _facing(node.right, node.left)
        arrays = not isinstance(node.left, Literal) and not isinstance(node.right, Literal)
        if arrays and "float" in (kind_of(node.left), kind_of(node.right)):
            return _total_order(node.op, left, right)
        return getattr(pc, _COMPARE[node.op])(left, right)
    if isinstance(node, Arith):
        left, right = _widened(node.left, node.right), _widened(node.right, node.left)
        if node.op == "/":  # a division by zero is NULL, as NULLIF makes it in Lance
            null = pc.scalar(pa.scalar(None, arrow_type(node)))
            right = pc.if_else(pc.equal(right, pc.scalar(0)), null, right)
        return getattr(pc, _ARITH[node.op])(left, right)
    if isinstance(node, Negate):
        return pc.negate(_expr(node.operand))
    if isinstance(node, Logic):
        combine = pc.and_kleene if node.op == "AND" else pc.or_kleene
        out = _expr(node.items[0], pa.bool_())
        for item in node.items[1:]:
            out = combine(out, _expr(item, pa.bool_()))
        return out
    if isinstance(node, Call):
        text = pa.string() if node.name != "abs" else None
        return getattr(pc, FUNCTIONS[node.name])(_expr(node.operand, text))
    if isinstance(node, IsNull):
        return (pc.is_valid if node.negated else pc.is_null)(_expr(node.operand))
    if isinstance(node, In):
        return _in(node)
    if isinstance(node, Like):
        regex = like_regex(node.pattern)
        operand = _expr(node.operand, pa.string())
        out = pc.match_substring_regex(operand, pattern=regex, ignore_case=node.ignore_case)
        return pc.invert(out) if node.negated else out
    raise TypeError(f"not a where node: {node!r}")


def _total_order(op: str, a: pc.Expression, b: pc.Expression) -> pc.Expression:
    """A float comparison of two computed sides in IEEE 754 totalOrder, as Lance (arrow-rs)
    compares two arrays of floats: -0.0 sorts before 0.0, and NaN after everything and
    equal to itself (against a literal Lance compares by IEEE ``==``/``<``, as Arrow C++
    always does). Measured: ``q * -1 < q`` keeps q = 0.0, ``q * -1 < 0`` does not."""
    if op in ("=", "<>"):
        same = pc.or_kleene(
            pc.and_kleene(pc.equal(a, b), pc.equal(_negative_zero(a), _negative_zero(b))),
            pc.and_kleene(pc.is_nan(_double(a)), pc.is_nan(_double(b))),
        )
        return same if op == "=" else pc.invert(same)
    if op in (">", "<="):
        a, b = b, a  # a > b is b < a; a <= b is NOT (b < a)
    b_zero = pc.and_kleene(pc.equal(_double(b), pc.scalar(0.0)), pc.invert(_negative_zero(b)))
    zeros = pc.and_kleene(_negative_zero(a), b_zero)
    below = pc.or_kleene(pc.less(a, b), zeros)
    nan_a, nan_b = pc.is_nan(_double(a)), pc.is_nan(_double(b))
    less = pc.if_else(nan_a, pc.scalar(False), pc.if_else(nan_b, pc.scalar(True), below))
    return less if op in ("<", ">") else pc.invert(less)


def _double(x: pc.Expression) -> pc.Expression:
    return x.cast(pa.float64())


def _negative_zero(x: pc.Expression) -> pc.Expression:
    """True for -0.0 (1 / -0.0 is -inf), false for any other value, NULL for NULL."""
    x = _double(x)
    zero = pc.scalar(0.0)
    return pc.and_kleene(pc.equal(x, zero), pc.less(pc.divide(pc.scalar(1.0), x), zero))


def _in(node: In) -> pc.Expression:
    """SQL IN: NULL for a NULL operand, else membership."""
    x = node.operand
    if not isinstance(x, Column) or pa.types.is_floating(column_types()[x.name]):
        # one IEEE comparison per value (Arrow's is_in hashes -0.0 apart from 0.0)
        out = pc.equal(_facing(x, node.values[0]), _facing(node.values[0], x))
        for value in node.values[1:]:
            out = pc.or_kleene(out, pc.equal(_facing(x, value), _facing(value, x)))
        return out
    dtype = column_types()[x.name]
    values = pa.array([_scalar(v, dtype).as_py() for v in node.values], dtype)
    field = pc.field(x.name)
    return pc.if_else(pc.is_null(field), pa.scalar(None, pa.bool_()), pc.is_in(field, values))
