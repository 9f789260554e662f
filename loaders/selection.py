"""Which pairs an epoch draws from, and where each one's bytes live.

A :class:`Selection` is the filtered list of pairs in canonical order (sorted by
``pair_id``), with the metadata the loader needs to plan (difficulty level,
quality score) and to read (a Lance row id, or a tar shard and byte range). It
is computed from metadata only: Lance pushes the filter down to its scalar
indexes; a tar dataset is planned from its shard indexes, so shards without a
selected sample are never opened.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from typing import Any

import lance
import numpy as np
import pyarrow as pa

from pvtt.loaders.query import DIFFICULTIES, PairFilter
from pvtt.loaders.store import BuiltDataset
from pvtt.schemas.tables import scalar_columns

LEVEL = {d: i for i, d in enumerate(DIFFICULTIES)}


@dataclass
class Selection:
    """The selected pairs, sorted by ``pair_id``."""

    pair_ids: list[str]
    levels: np.ndarray
    qualities: np.ndarray
    meta: pa.Table | None
    """Scalar columns of the selected pairs as Arrow (Lance), row ``i`` for pair ``i``;
    None for tar, whose json is read with the sample. Kept columnar: one Python dict per
    row would cost ~1 GB and seconds per worker at a million pairs."""
    row_ids: np.ndarray | None
    """Lance row ids (Lance datasets)."""
    shard_entries: list[tuple[str, dict[str, Any]]] | None
    """``(shard path, index entry)`` per pair (tar datasets)."""
    fingerprint: str

    def __len__(self) -> int:
        return len(self.pair_ids)

    def row(self, index: int) -> dict[str, Any]:
        """The scalar columns of selected pair ``index`` (Lance selections)."""
        assert self.meta is not None
        return self.meta.slice(index, 1).to_pylist()[0]


def fingerprint(dataset: BuiltDataset, flt: PairFilter, fmt: str) -> str:
    """Identity of (dataset version, filter, format): a saved loader state must match it."""
    m = dataset.manifest
    version = {k: v.version for k, v in m.tables.items()}
    blob = json.dumps([m.build_id, version, [s.path for s in m.shards], flt.to_sql(), fmt])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def select(dataset: BuiltDataset, flt: PairFilter, fmt: str) -> Selection:
    """The pairs of ``dataset`` that ``flt`` selects, read from format ``fmt``."""
    if fmt == "lance":
        return _select_lance(dataset, flt)
    if fmt == "tar":
        return _select_tar(dataset, flt)
    raise ValueError(f"format must be 'lance' or 'tar', got {fmt!r}")


def _levels(values: list[str]) -> np.ndarray:
    return np.array([LEVEL[v] for v in values], dtype=np.int8)


def _qualities(values: list[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float32)


def _select_lance(dataset: BuiltDataset, flt: PairFilter) -> Selection:
    # per-frame boxes are large and the loader does not yield them: leave them out
    columns = [c for c in scalar_columns("pairs") if c != "target_boxes"]
    table = dataset.pairs.to_table(columns=columns, filter=flt.to_sql(), with_row_id=True)
    table = table.sort_by("pair_id")
    row_ids = table.column("_rowid").to_numpy()
    meta = table.drop_columns(["_rowid"])
    return Selection(
        pair_ids=table.column("pair_id").to_pylist(),
        levels=_levels(table.column("difficulty").to_pylist()),
        qualities=_qualities(table.column("quality_score").to_pylist()),
        meta=meta,
        row_ids=row_ids,
        shard_entries=None,
        fingerprint=fingerprint(dataset, flt, "lance"),
    )


def _select_tar(dataset: BuiltDataset, flt: PairFilter) -> Selection:
    entries: list[tuple[str, dict[str, Any]]] = []
    structured = PairFilter(flt.difficulty, flt.min_score, flt.max_score, flt.category, flt.passed)
    for shard in dataset.shards:
        for entry in dataset.shard_index(shard):
            if structured.matches(entry):
                entries.append((shard.path, entry))
    if flt.where is not None:
        entries = _where_on_json(dataset, entries, flt.where)
    entries.sort(key=lambda e: e[1]["key"])
    return Selection(
        pair_ids=[e["key"] for _, e in entries],
        levels=_levels([e["difficulty"] for _, e in entries]),
        qualities=_qualities([e["quality_score"] for _, e in entries]),
        meta=None,
        row_ids=None,
        shard_entries=entries,
        fingerprint=fingerprint(dataset, flt, "tar"),
    )


def _where_on_json(
    dataset: BuiltDataset, entries: list[tuple[str, dict[str, Any]]], where: str
) -> list[tuple[str, dict[str, Any]]]:
    """Apply a SQL ``where`` to tar samples through Lance's own filter parser."""
    if not entries:
        return entries
    rows = [dataset.read_sample_json(path, e) for path, e in entries]
    with tempfile.TemporaryDirectory(prefix="pvtt-where-") as tmp:
        tmp_ds = lance.write_dataset(pa.Table.from_pylist(rows), f"{tmp}/w.lance")
        keep = set(tmp_ds.to_table(columns=["pair_id"], filter=where).column("pair_id").to_pylist())
    return [(p, e) for p, e in entries if e["key"] in keep]
