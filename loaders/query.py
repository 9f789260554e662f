"""Filters over pairs: one predicate tree, printed as SQL for Lance or evaluated on tar indexes.

One :class:`PairFilter` serves ``pvtt query``, ``pvtt export-pairs`` and the loaders.
Its structured parts (difficulty, score range, category, passed) and the user's
``where`` (parsed and checked by :mod:`pvtt.loaders.where`) are combined as tree nodes,
never by pasting strings: Lance receives SQL printed from the tree, and a tar dataset
evaluates the same tree on its shard indexes, reading a sample's json only when the
where names a column the indexes lack and the dataset has no ``pairs`` table to ask.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import lance
import pyarrow as pa

from pvtt.loaders.category_route import read_by_category
from pvtt.loaders.query_route import read_options
from pvtt.loaders.store import BuiltDataset
from pvtt.loaders.where import (
    Column,
    Compare,
    In,
    Logic,
    Node,
    columns,
    conjunction,
    conjuncts,
    evaluate,
    literal,
    parse_where,
    to_sql,
    typed_table,
)
from pvtt.schemas.shards import FILTER_COLUMNS
from pvtt.schemas.tables import PAIRS_SCHEMA, scalar_columns

DIFFICULTIES = ("easy", "medium", "hard", "expert")
INDEX_COLUMNS = frozenset(FILTER_COLUMNS)
"""Columns every shard index entry carries: a predicate over these reads no sample."""

Entry = tuple[str, dict[str, Any]]
"""``(shard path in the manifest, index entry)`` of one tar sample."""


def lance_table(dataset: lance.LanceDataset, **kwargs: Any) -> pa.Table:
    """``dataset.to_table(**kwargs)``; a filter Lance fails on (a panic) is a ValueError too.

    Requested ``columns`` that the table lacks come back as typed nulls: score columns
    are additive within schema 1, so a table written before a column existed still reads.
    """
    columns = kwargs.get("columns")
    absent = absent_columns(dataset, columns)
    if absent:
        kwargs = {**kwargs, "columns": [c for c in columns if c not in absent]}
    try:
        table = dataset.to_table(**kwargs)
    except RuntimeError as exc:
        raise ValueError(
            f"Lance could not evaluate the filter {kwargs.get('filter')!r}: {exc}"
        ) from exc
    return with_null_columns(table, absent, columns) if absent else table


def absent_columns(dataset: lance.LanceDataset, columns: Sequence[str] | None) -> list[str]:
    """Those of ``columns`` that a table written by an earlier pvtt does not have yet."""
    if not columns:
        return []
    have = set(dataset.schema.names)
    return [c for c in columns if c not in have]


def with_null_columns(table: pa.Table, absent: Sequence[str], order: Sequence[str]) -> pa.Table:
    """``table`` with each ``absent`` column added as nulls of its pairs-schema type, in ``order``."""
    for name in absent:
        table = table.append_column(
            PAIRS_SCHEMA.field(name), pa.nulls(table.num_rows, PAIRS_SCHEMA.field(name).type)
        )
    extra = [c for c in table.column_names if c not in order]  # e.g. _rowid
    return table.select([*order, *extra])


@dataclass(frozen=True)
class PairFilter:
    """Which pairs to select. ``passed=None`` keeps rejected pairs too."""

    difficulty: frozenset[str] | None = None
    min_score: float | None = None
    max_score: float | None = None
    category: frozenset[str] | None = None
    passed: bool | None = True
    where: str | None = None
    _where: Node | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.difficulty is not None:
            unknown = set(self.difficulty) - set(DIFFICULTIES)
            if unknown:
                raise ValueError(
                    f"unknown difficulty {sorted(unknown)}; choose from {DIFFICULTIES}"
                )
        if self.where is not None:
            object.__setattr__(self, "_where", parse_where(self.where))
        for name in ("min_score", "max_score"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")

    @classmethod
    def make(
        cls,
        difficulty: Iterable[str] | str | None = None,
        min_score: float | None = None,
        max_score: float | None = None,
        category: Iterable[str] | str | None = None,
        passed: bool | None = True,
        where: str | None = None,
    ) -> PairFilter:
        """Build a filter from loose arguments (``"easy,hard"`` or a set).

        Difficulty names are case-blind (``"Expert"`` is ``expert``): they are a fixed
        vocabulary, unlike categories, which stay as the taxonomy spells them.
        """
        levels = _as_set(difficulty)
        return cls(
            difficulty=frozenset(d.lower() for d in levels) if levels else None,
            min_score=min_score,
            max_score=max_score,
            category=_as_set(category),
            passed=passed,
            where=where or None,
        )

    def predicate(self) -> Node | None:
        """The whole filter as one checked tree (None selects everything)."""
        parts: list[Node] = []
        if self.difficulty is not None:
            parts.append(_one_of("difficulty", self.difficulty))
        if self.min_score is not None:
            parts.append(Compare(">=", Column("quality_score"), literal(float(self.min_score))))
        if self.max_score is not None:
            parts.append(Compare("<=", Column("quality_score"), literal(float(self.max_score))))
        if self.category is not None:
            sides = ("source_category", "target_category")
            parts.append(Logic("OR", tuple(_one_of(side, self.category) for side in sides)))
        if self.passed is not None:
            parts.append(Compare("=", Column("passed"), literal(bool(self.passed))))
        if self._where is not None:
            parts.append(self._where)
        return conjunction(parts)

    def to_sql(self) -> str | None:
        """The filter as a Lance SQL predicate, printed from :meth:`predicate`."""
        node = self.predicate()
        return None if node is None else to_sql(node)

    @property
    def index_only(self) -> bool:
        """True when shard indexes alone evaluate the filter (no sample json is read)."""
        node = self.predicate()
        return node is None or columns(node) <= INDEX_COLUMNS

    def matches(self, row: dict[str, Any]) -> bool:
        """Evaluate the filter on one row dict (a shard index entry, a sample's json)."""
        node = self.predicate()
        if node is None:
            return True
        return bool(evaluate(node, typed_table([row], _names(node)))[0])


def _one_of(column: str, values: frozenset[str]) -> In:
    return In(Column(column), tuple(literal(v) for v in sorted(values)))


def _names(node: Node) -> list[str]:
    """Columns to type for evaluating ``node`` (pair_id always: it fixes the row count)."""
    return sorted(columns(node) | {"pair_id"})


def _as_set(value: Iterable[str] | str | None) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [v for v in value.split(",")]
    items = frozenset(v.strip() for v in value if v.strip())
    return items or None


def select_pairs(
    dataset: BuiltDataset,
    flt: PairFilter,
    columns: Sequence[str] | None = None,
    limit: int | None = None,
) -> pa.Table:
    """The selected pairs' scalar columns, typed by the schema; media bytes are never read.

    Lance datasets are filtered by Lance: a category filter on the copy of the filter
    columns ordered by category (:mod:`pvtt.loaders.category_route`), others through the
    scalar indexes, or by a full scan where the filter selects many scattered rows
    (:mod:`pvtt.loaders.query_route`; the rows are the same either way). Tar-only datasets
    are filtered on their shard indexes; a sample's json is read only for a column the
    indexes lack.
    """
    allowed = scalar_columns("pairs")
    cols = list(columns) if columns else list(allowed)
    bad = [c for c in cols if c not in allowed]
    if bad:
        raise ValueError(f"unknown or media columns {bad}; scalar columns are {list(allowed)}")
    if dataset.has_lance:
        table, sql = dataset.pairs, flt.to_sql()
        copy = dataset.pairs_by_category if flt.category else None
        rows = read_by_category(copy, flt, cols, limit) if copy is not None else None
        if rows is not None:
            return rows
        options = read_options(table, flt.predicate(), sql)
        return lance_table(table, columns=cols, filter=sql, limit=limit, **options)
    entries = [(s.path, e) for s in dataset.shards for e in dataset.shard_index(s)]
    entries, rows = select_entries(dataset, flt, entries)
    if limit is not None:
        entries = entries[: max(limit, 0)]
        rows = rows[: max(limit, 0)] if rows is not None else None
    if rows is None:
        if set(cols) <= INDEX_COLUMNS:
            rows = [entry for _, entry in entries]
        else:
            rows = [dataset.read_sample_json(path, entry) for path, entry in entries]
    return _typed(rows, cols, entries)


def select_entries(
    dataset: BuiltDataset, flt: PairFilter, entries: list[Entry]
) -> tuple[list[Entry], list[dict[str, Any]] | None]:
    """The tar samples ``flt`` selects, and the json it had to read of them (or None).

    The conjuncts over index columns run on the index entries. The rest, if any, is
    answered by the ``pairs`` Lance table when the dataset has one, else from the json of
    the samples the index part kept: an unselected sample's json is read only when the
    index cannot rule it out.
    """
    node = flt.predicate()
    if node is None or not entries:
        return entries, None
    on_index = [c for c in conjuncts(node) if columns(c) <= INDEX_COLUMNS]
    rest = [c for c in conjuncts(node) if not columns(c) <= INDEX_COLUMNS]
    part = conjunction(on_index)
    if part is not None:
        mask = evaluate(part, _typed([e for _, e in entries], _names(part), entries))
        entries = [e for e, keep in zip(entries, mask, strict=True) if keep]
    remaining = conjunction(rest)
    if remaining is None or not entries:
        return entries, None
    if dataset.has_lance:
        sql = to_sql(node)
        options = read_options(dataset.pairs, node, sql)
        table = lance_table(dataset.pairs, columns=["pair_id"], filter=sql, **options)
        keys = set(table.column("pair_id").to_pylist())
        return [e for e in entries if e[1]["key"] in keys], None
    rows = [dataset.read_sample_json(path, entry) for path, entry in entries]
    mask = evaluate(remaining, _typed(rows, _names(remaining), entries))
    kept = [i for i, keep in enumerate(mask) if keep]
    return [entries[i] for i in kept], [rows[i] for i in kept]


def _typed(rows: list[dict[str, Any]], names: list[str], entries: list[Entry]) -> pa.Table:
    """:func:`typed_table` of the rows of ``entries``; a row that does not fit the schema
    is named by its shard and sample key."""
    try:
        return typed_table(rows, names)
    except ValueError:
        for row, (path, entry) in zip(rows, entries, strict=True):
            try:
                typed_table([row], names)
            except ValueError as exc:
                raise ValueError(f"{path}: sample {entry.get('key')!r}: {exc}") from None
        raise
