"""Filters over pairs, pushed down to Lance as SQL or applied to shard indexes.

One :class:`PairFilter` serves ``pvtt query``, ``pvtt export-pairs`` and the
loaders. Its structured parts (difficulty, score range, category, passed) are
turned into a SQL predicate with quoted literals; a user's ``where`` text is
only ever handed to Lance's own filter parser, never evaluated by pvtt.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import lance
import pyarrow as pa

from pvtt.loaders.store import BuiltDataset
from pvtt.schemas.tables import scalar_columns

DIFFICULTIES = ("easy", "medium", "hard", "expert")


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def check_where(where: str) -> str:
    """A user's SQL predicate, checked to be one expression before Lance parses it.

    ``to_sql`` puts it in parentheses after the structured filters; a text that closes
    them (``true) OR (true``), ends the statement (``;``) or comments out the rest
    (``--``, ``/*``) would change what the other filters mean, so it is refused.
    """
    depth, quote, i = 0, "", 0
    while i < len(where):
        char = where[i]
        if quote:
            if char == quote and where[i + 1 : i + 2] == quote:
                i += 1  # a doubled quote is the quote character itself
            elif char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise ValueError(f"where {where!r}: a ')' closes a parenthesis it did not open")
        elif char == ";" or where.startswith(("--", "/*"), i):
            raise ValueError(f"where {where!r}: one expression only, without ';' or comments")
        i += 1
    if quote or depth:
        raise ValueError(f"where {where!r}: an unclosed {'quote' if quote else 'parenthesis'}")
    return where


def lance_table(dataset: lance.LanceDataset, **kwargs: Any) -> pa.Table:
    """``dataset.to_table(**kwargs)``; a filter Lance fails on (a panic) is a ValueError too."""
    try:
        return dataset.to_table(**kwargs)
    except RuntimeError as exc:
        raise ValueError(
            f"Lance could not evaluate the filter {kwargs.get('filter')!r}: {exc}"
        ) from exc


@dataclass(frozen=True)
class PairFilter:
    """Which pairs to select. ``passed=None`` keeps rejected pairs too."""

    difficulty: frozenset[str] | None = None
    min_score: float | None = None
    max_score: float | None = None
    category: frozenset[str] | None = None
    passed: bool | None = True
    where: str | None = None

    def __post_init__(self) -> None:
        if self.difficulty is not None:
            unknown = set(self.difficulty) - set(DIFFICULTIES)
            if unknown:
                raise ValueError(
                    f"unknown difficulty {sorted(unknown)}; choose from {DIFFICULTIES}"
                )
        if self.where is not None:
            check_where(self.where)
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
        """Build a filter from loose arguments (``"easy,hard"`` or a set)."""
        return cls(
            difficulty=_as_set(difficulty),
            min_score=min_score,
            max_score=max_score,
            category=_as_set(category),
            passed=passed,
            where=where or None,
        )

    def to_sql(self) -> str | None:
        """The filter as a Lance SQL predicate (None selects everything)."""
        parts: list[str] = []
        if self.difficulty is not None:
            parts.append(f"difficulty IN ({', '.join(_quote(d) for d in sorted(self.difficulty))})")
        if self.min_score is not None:
            parts.append(f"quality_score >= {float(self.min_score)!r}")
        if self.max_score is not None:
            parts.append(f"quality_score <= {float(self.max_score)!r}")
        if self.category is not None:
            values = ", ".join(_quote(c) for c in sorted(self.category))
            parts.append(f"(source_category IN ({values}) OR target_category IN ({values}))")
        if self.passed is not None:
            parts.append(f"passed = {'true' if self.passed else 'false'}")
        if self.where:
            parts.append(f"({self.where})")
        return " AND ".join(parts) if parts else None

    @property
    def index_only(self) -> bool:
        """True when shard indexes alone can evaluate the filter (no ``where``)."""
        return self.where is None

    def matches(self, row: dict[str, Any]) -> bool:
        """Evaluate the structured part on a row dict (shard index entries, tar json)."""
        if self.where is not None:
            raise ValueError("a `where` filter needs Lance; use select_rows()")
        if self.difficulty is not None and row["difficulty"] not in self.difficulty:
            return False
        score = row.get("quality_score")
        if self.min_score is not None and (score is None or score < self.min_score):
            return False
        if self.max_score is not None and (score is None or score > self.max_score):
            return False
        if self.category is not None and not (
            row["source_category"] in self.category or row["target_category"] in self.category
        ):
            return False
        return self.passed is None or bool(row["passed"]) == self.passed


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
    """The selected pairs' scalar columns; media bytes are never read.

    Lance datasets are filtered by Lance (scalar indexes); tar-only datasets are
    filtered on their shard indexes, or, for ``where``, through a temporary Lance
    table of their ``json`` members so the same SQL applies.
    """
    allowed = scalar_columns("pairs")
    cols = list(columns) if columns else list(allowed)
    bad = [c for c in cols if c not in allowed]
    if bad:
        raise ValueError(f"unknown or media columns {bad}; scalar columns are {list(allowed)}")
    if dataset.has_lance:
        return lance_table(dataset.pairs, columns=cols, filter=flt.to_sql(), limit=limit)
    rows = _tar_rows(dataset, flt)
    if flt.where is not None:
        with tempfile.TemporaryDirectory(prefix="pvtt-query-") as tmp:
            table = pa.Table.from_pylist(rows) if rows else None
            if table is None:
                return pa.table({c: [] for c in cols})
            tmp_ds = lance.write_dataset(table, f"{tmp}/q.lance")
            return lance_table(tmp_ds, columns=cols, filter=flt.to_sql(), limit=limit)
    rows = rows[:limit] if limit is not None else rows
    return pa.Table.from_pylist([{c: r.get(c) for c in cols} for r in rows])


def _tar_rows(dataset: BuiltDataset, flt: PairFilter) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for shard in dataset.shards:
        entries = dataset.shard_index(shard)
        if flt.index_only:
            entries = [e for e in entries if flt.matches(e)]
        for entry in entries:
            rows.append(dataset.read_sample_json(shard.path, entry))
    return rows
