"""What every data stack ``compare.py`` measures shares: the stored record and the tool contract.

Kept apart from ``compare_formats`` (which registers the tools) so that a tool living in
its own module, such as ``compare_lancedb``, implements :class:`Tool` without importing
the registry that imports it.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

MEDIA = ("synth_video", "source_video", "masks", "target_image")
"""The media of a training sample, in ``PairDataset``'s field names."""
ARROW_BATCH_ROWS = 8
"""Rows per Arrow batch handed to a Lance writer (a few MB each for these pairs)."""


@dataclass(frozen=True)
class Row:
    """One pair as every alternative stores it."""

    key: str
    meta: bytes
    """The pair's scalar columns as json (pvtt's tar ``{key}.json``)."""
    difficulty: str
    quality_score: float
    media: dict[str, bytes]

    @property
    def nbytes(self) -> int:
        return len(self.meta) + sum(len(v) for v in self.media.values())


@dataclass(frozen=True)
class Selector:
    """A filter by difficulty and minimum quality score, as SQL and as a predicate."""

    difficulties: frozenset[str]
    min_score: float

    def __call__(self, difficulty: str, quality_score: float | None) -> bool:
        return (
            difficulty in self.difficulties
            and quality_score is not None
            and quality_score >= self.min_score
        )

    def sql(self) -> str:
        names = ", ".join(f"'{d}'" for d in sorted(self.difficulties))
        return f"difficulty IN ({names}) AND quality_score >= {self.min_score!r}"


class Tool(ABC):
    """Writer and reader of one alternative data stack."""

    name = ""
    needs = ""
    """Package (import name) the tool needs."""

    def missing(self) -> str | None:
        """Why the tool cannot run here, or None."""
        try:
            self._import()
        except (ImportError, RuntimeError, OSError, AttributeError) as exc:
            return f"{self.needs} does not import: {type(exc).__name__}: {exc}"
        return None

    def _import(self) -> Any:
        return importlib.import_module(self.needs)

    @abstractmethod
    def write(self, folder: Path, rows: Iterable[Row], shard_samples: int) -> None:
        """Store ``rows`` in ``folder`` (created), about ``shard_samples`` per shard or file."""

    @abstractmethod
    def rows(self, folder: Path, select: Selector | None = None) -> Iterable[Row]:
        """The tool's dataset of rows in its stored order, filtered its own way."""

    def resume_state(self, folder: Path, skip: int) -> Any:
        """What the tool saves to resume after ``skip`` samples (untimed preparation);
        by default the count, for tools that can only skip ahead."""
        return skip

    @abstractmethod
    def resume(self, folder: Path, state: Any) -> Row:
        """The first row after restoring ``state``, from a fresh dataset."""


def arrow_batches(rows: Iterable[Row], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """``rows`` as record batches of ``schema`` (columns: key, difficulty, quality_score,
    json and the media), :data:`ARROW_BATCH_ROWS` rows each."""
    batch: list[Row] = []
    for row in rows:
        batch.append(row)
        if len(batch) == ARROW_BATCH_ROWS:
            yield _batch(batch, schema)
            batch = []
    if batch:
        yield _batch(batch, schema)


def _batch(rows: list[Row], schema: pa.Schema) -> pa.RecordBatch:
    columns = {
        "key": [r.key for r in rows],
        "difficulty": [r.difficulty for r in rows],
        "quality_score": [r.quality_score for r in rows],
        "json": [r.meta for r in rows],
        **{name: [r.media[name] for r in rows] for name in MEDIA},
    }
    return pa.RecordBatch.from_pydict(columns, schema=schema)
