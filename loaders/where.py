"""The ``where`` language: a user's SQL predicate, parsed by a real parser and checked.

A user's text is parsed by sqlglot, tokenised like Lance's filter dialect
(``'strings'`` with ``''`` for a quote and a backslash as itself; column names bare, or
in ```backticks``` to keep their case), as ONE expression, and converted node by node
into pvtt's tree (:mod:`pvtt.loaders.where_tree`). Only an allowlist converts: columns
of the pairs table, literals, comparisons, AND/OR/NOT, IN, BETWEEN, IS [NOT] NULL,
[NOT] [I]LIKE, ``+ - * /`` and ``lower``/``upper``/``length``/``abs``, and
``TIMESTAMP '...'``; anything else (and any comment, ``;``, double quote or
``$$string$$``) is refused with the part that was not understood. The tree is
type-checked with Lance's rules, normalised (NOT pushed down, BETWEEN as two
comparisons, literal-only parts folded), and then:

* :func:`to_sql` prints the SQL Lance receives from the tree, never from the user's
  text, so what Lance parses is what pvtt checked, and pvtt's structured filters are
  combined with the user's as tree nodes, not by pasting strings;
* :func:`evaluate` runs the same tree on Arrow tables (tar shard indexes, sample json
  typed by :func:`typed_table`), so a tar dataset selects the pairs Lance would.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from functools import cache
from typing import Any

from pvtt.loaders.where_arrow import evaluate, fold, like_regex, typed_table
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
    columns,
    conjunction,
    conjuncts,
    kind_of,
    literal,
    logic,
    negate,
    sql_in,
    sql_literal,
    to_sql,
)
from pvtt.schemas.tables import PAIRS_SCHEMA

__all__ = [
    "Column", "Compare", "In", "Logic", "Node", "WhereError", "columns", "conjunction",
    "conjuncts", "evaluate", "like_regex", "literal", "parse_where", "sql_in", "sql_literal",
    "to_sql", "typed_table",
]  # fmt: skip
_COMPARE = ("=", "<>", "<", "<=", ">", ">=")
_ARITH = ("+", "-", "*", "/")


@cache
def _dialect() -> Any:
    """sqlglot tokenised like Lance's filter dialect (imported on first use: ~70 ms)."""
    from sqlglot import tokens
    from sqlglot.dialects.dialect import Dialect

    class PvttLanceFilter(Dialect):
        class Tokenizer(tokens.Tokenizer):
            QUOTES = ["'"]  # Lance: 'string', with '' for a quote; a backslash is itself
            IDENTIFIERS = ["`"]  # Lance: `Column` (case kept); bare names are lowercased
            STRING_ESCAPES = ["'"]
            HEREDOC_STRINGS: list[str] = []  # no $$dollar$$ strings

    return PvttLanceFilter()


def parse_where(text: str) -> Node:
    """The checked tree of a user's where text; a WhereError names what is refused."""
    from sqlglot.errors import SqlglotError
    from sqlglot.tokens import TokenType

    if not isinstance(text, str) or not text.strip():
        raise WhereError(f"where {text!r}: an empty expression")
    shown = repr(text) if len(text) <= 200 else repr(text[:200]) + "..."
    dialect = _dialect()
    try:
        tokens = dialect.tokenize(text)
        for token in tokens:
            if token.comments:
                raise WhereError(f"where {shown}: comments are not supported")
            if token.token_type == TokenType.SEMICOLON:
                raise WhereError(f"where {shown}: one expression only, without ';'")
            if token.token_type == TokenType.UNKNOWN:
                raise WhereError(
                    f"where {shown}: unexpected {token.text!r}; write strings in 'single "
                    "quotes' and column names bare or in `backticks`"
                )
        with _quiet_sqlglot():
            trees = dialect.parser().parse(tokens, text)
    except SqlglotError as exc:
        first = str(exc).splitlines()[0]
        raise WhereError(f"where {shown}: not a valid SQL expression ({first})") from None
    except RecursionError:
        raise WhereError(f"where {shown}: nested too deeply") from None
    if len(trees) != 1 or trees[0] is None:
        raise WhereError(f"where {shown}: one expression only")
    try:
        node = _convert(trees[0])
        kind = kind_of(node)
        if kind != "boolean":
            raise WhereError(f"not a true/false condition (it is {kind})")
        node = _fold(node)
        kind_of(node)  # again: a folded literal must fit the column it faces
    except WhereError as exc:
        raise WhereError(f"where {shown}: {exc}") from None
    except RecursionError:
        raise WhereError(f"where {shown}: nested too deeply") from None
    return node


@contextlib.contextmanager
def _quiet_sqlglot() -> Iterator[None]:
    """sqlglot logs a warning for text it falls back to reading as a command: pvtt refuses
    that text with its own message, so the warning would only be noise on the console."""
    logger = logging.getLogger("sqlglot")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@cache
def _grammar() -> dict[type, tuple[str, frozenset[str]]]:
    """sqlglot node class -> (pvtt construct, the arguments it may carry). Exact classes
    only, and every other argument must be empty: ``NOT LIKE`` is a Like with ``negate``,
    a flag an allowlist of classes alone would let through as LIKE."""
    from sqlglot import exp

    one, two = frozenset({"this"}), frozenset({"this", "expression"})
    table: dict[type, tuple[str, frozenset[str]]] = {
        exp.Paren: ("paren", one),
        exp.Column: ("column", frozenset({"this", "table", "db", "catalog"})),
        exp.Literal: ("literal", frozenset({"this", "is_string"})),
        exp.Boolean: ("literal", one),
        exp.Null: ("literal", frozenset()),
        exp.Neg: ("negate", one),
        exp.Cast: ("cast", frozenset({"this", "to"})),
        exp.And: ("AND", two),
        exp.Or: ("OR", two),
        exp.Not: ("not", one),
        exp.Is: ("is", two),
        exp.In: ("in", frozenset({"this", "expressions", "query", "unnest", "field"})),
        exp.Between: ("between", frozenset({"this", "low", "high"})),
        exp.Like: ("like", frozenset({"this", "expression", "negate"})),
        exp.ILike: ("ilike", frozenset({"this", "expression", "negate"})),
    }
    for cls, op in {exp.EQ: "=", exp.NEQ: "<>", exp.LT: "<", exp.LTE: "<=", exp.GT: ">", exp.GTE: ">="}.items():  # fmt: skip
        table[cls] = (op, two)
    for cls, op in {exp.Add: "+", exp.Sub: "-", exp.Mul: "*", exp.Div: "/"}.items():
        table[cls] = (op, two)
    for cls, name in {exp.Lower: "lower", exp.Upper: "upper", exp.Length: "length", exp.Abs: "abs"}.items():  # fmt: skip
        table[cls] = (f"call:{name}", one)
    return table


def _convert(e: Any) -> Node:
    """sqlglot expression -> pvtt node, for the allowlisted node types only."""
    from sqlglot import exp

    rule = _grammar().get(type(e))
    if rule is None:
        what = e.sql() if isinstance(e, exp.Expression) else repr(e)
        if isinstance(e, exp.Func):
            raise WhereError(f"{what}: function not supported; allowed: {', '.join(FUNCTIONS)}")
        raise WhereError(f"{what}: not supported in a where (an expression over the pairs columns)")
    what, allowed = rule
    extra = sorted(k for k, v in e.args.items() if k not in allowed and v not in (None, False, []))
    if extra:
        raise WhereError(f"{e.sql()}: not supported in a where ({', '.join(extra)})")
    if what == "paren":
        return _convert(e.this)
    if what == "column":
        return _column(e)
    if what == "literal":
        return _literal(e)
    if what == "negate":
        inner = _convert(e.this)
        if isinstance(inner, Literal) and inner.kind in NUMBERS:
            return literal(-inner.value)  # type: ignore[operator]
        return Negate(inner)
    if what == "cast":
        return _timestamp(e)
    if what in _COMPARE:
        return Compare(what, _convert(e.this), _convert(e.expression))
    if what in _ARITH:
        return Arith(what, _convert(e.this), _divisor(e) if what == "/" else _convert(e.expression))
    if what in ("AND", "OR"):
        return logic(what, [_convert(e.this), _convert(e.expression)])
    if what == "not":
        return _not(_convert(e.this))
    if what == "is":
        if not isinstance(e.expression, exp.Null):
            raise WhereError(f"{e.sql()}: only IS NULL and IS NOT NULL are supported")
        return IsNull(_convert(e.this))
    if what == "in":
        return _in(e)
    if what == "between":  # two comparisons, each typed as Lance types a comparison
        x = _convert(e.this)
        low, high = _convert(e.args["low"]), _convert(e.args["high"])
        return logic("AND", [Compare(">=", x, low), Compare("<=", x, high)])
    if what in ("like", "ilike"):
        pattern = _convert(e.expression)
        if not (isinstance(pattern, Literal) and pattern.kind == "string"):
            raise WhereError(f"{e.sql()}: the LIKE pattern must be a 'string'")
        like = Like(_convert(e.this), str(pattern.value), ignore_case=what == "ilike")
        return negate(like) if e.args.get("negate") else like
    return Call(what.removeprefix("call:"), _convert(e.this))


def _not(node: Node) -> Node:
    """NOT of a condition, pushed down (a NOT node would hide comparisons from Lance's
    literal typing, which looks through AND and OR only)."""
    kind = kind_of(node)
    if kind not in ("boolean", "null"):
        raise WhereError(f"NOT needs a true/false condition; {to_sql(node)} is {kind}")
    return negate(node)


def _divisor(e: Any) -> Node:
    """The right side of ``/``; ``NULLIF(x, 0)`` is ``x`` (pvtt prints it so, as a division
    by zero is NULL)."""
    from sqlglot import exp

    right = e.expression
    if type(right) is exp.Nullif and right.expression == exp.Literal.number(0):
        extra = [k for k, v in right.args.items() if k not in ("this", "expression") and v]
        if not extra:
            return _convert(right.this)
    return _convert(right)


def _fold(node: Node) -> Node:
    """Each part made of literals only, replaced by its value (as Lance would see it)."""
    if isinstance(node, (Arith, Negate, Call)) and not columns(node):
        return fold(node)
    if isinstance(node, (Compare, Arith)):
        return type(node)(node.op, _fold(node.left), _fold(node.right))
    if isinstance(node, Logic):
        return logic(node.op, [_fold(item) for item in node.items])
    if isinstance(node, Negate):
        return Negate(_fold(node.operand))
    if isinstance(node, Call):
        return Call(node.name, _fold(node.operand))
    if isinstance(node, (In, IsNull, Like)):
        return _with_operand(node, _fold(node.operand))
    return node


def _with_operand(node: In | IsNull | Like, operand: Node) -> Node:
    return replace(node, operand=operand)


def _column(e: Any) -> Column:
    from sqlglot import exp

    if e.table or e.args.get("db") or e.args.get("catalog"):
        raise WhereError(f"{e.sql()}: name a column of the pairs table, without a table")
    ident = e.this
    if not isinstance(ident, exp.Identifier):
        raise WhereError(f"{e.sql()}: not a column name")
    name = ident.this if ident.quoted else ident.this.lower()
    if name not in column_types():
        if name in PAIRS_SCHEMA.names:
            raise WhereError(f"column {name} is a list or media column; it cannot be filtered on")
        raise WhereError(
            f"unknown column {name!r}; the columns are {', '.join(column_types())}"
        )
    return Column(name)


def _literal(e: Any) -> Literal:
    from sqlglot import exp

    if isinstance(e, exp.Null):
        return literal(None)
    if isinstance(e, exp.Boolean):
        return literal(bool(e.this))
    text = e.this
    if e.is_string:
        return literal(text)
    try:
        number: int | float = int(text) if text.isdigit() else float(text)
    except ValueError:
        raise WhereError(f"{text!r} is not a number") from None
    return literal(number)


def _timestamp(e: Any) -> Literal:
    from sqlglot import exp

    to = e.to.this if isinstance(e.to, exp.DataType) else None
    types = (exp.DataType.Type.TIMESTAMP, exp.DataType.Type.TIMESTAMPTZ)
    value = e.this
    if to not in types or not (isinstance(value, exp.Literal) and value.is_string):
        raise WhereError(f"{e.sql()}: the only cast supported is TIMESTAMP 'YYYY-MM-DD HH:MM:SS'")
    try:
        return literal(datetime.fromisoformat(value.this))
    except ValueError:
        raise WhereError(f"{value.this!r} is not a timestamp (YYYY-MM-DD HH:MM:SS)") from None


def _in(e: Any) -> In:
    if e.args.get("query") or e.args.get("unnest") or e.args.get("field"):
        raise WhereError(f"{e.sql()}: IN takes a list of values; subqueries are not supported")
    values = [_convert(v) for v in e.expressions]
    if not values:
        raise WhereError(f"{e.sql()}: an empty IN list")
    for value in values:
        if not isinstance(value, Literal):
            raise WhereError(f"{e.sql()}: IN lists hold literal values only")
        if value.kind == "null":
            raise WhereError(f"{e.sql()}: NULL in an IN list never matches; use IS NULL")
    return In(_convert(e.this), tuple(values))  # type: ignore[arg-type]


