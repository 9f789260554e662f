"""Which pairs an epoch draws from, and where each one's bytes live.

A :class:`Selection` is the filtered list of pairs in canonical order (sorted by
``pair_id``), with the metadata the loader needs to plan (difficulty level,
quality score) and to read (a Lance row id, or a tar shard and byte range). It
is computed from metadata only: Lance pushes the filter down to its scalar
indexes; a tar dataset is planned from its shard indexes, so shards without a
selected sample are never opened, and a ``where`` over a column the indexes lack
is answered by the ``pairs`` table when there is one (sample json otherwise).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from pvtt.loaders.query import (
    DIFFICULTIES,
    Entry,
    PairFilter,
    absent_columns,
    lance_table,
    select_entries,
    with_null_columns,
)
from pvtt.loaders.store import BuiltDataset
from pvtt.schemas.manifest import ManifestError
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
    unreadable: list[tuple[str, int]] = dataclasses.field(default_factory=list)
    """``(what and why, pairs it held)`` for each Lance fragment or shard index that could
    not be read when selecting (``skip_unreadable``); its pairs are left out. The count
    is before filtering: the filter cannot be evaluated on what cannot be read."""

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


def select(
    dataset: BuiltDataset, flt: PairFilter, fmt: str, *, skip_unreadable: bool = False
) -> Selection:
    """The pairs of ``dataset`` that ``flt`` selects, read from format ``fmt``.

    ``skip_unreadable``: leave out the pairs of a Lance fragment or a shard index that
    cannot be read (listed in ``Selection.unreadable``) instead of raising.
    """
    if fmt == "lance":
        return _select_lance(dataset, flt, skip_unreadable)
    if fmt == "tar":
        return _select_tar(dataset, flt, skip_unreadable)
    raise ValueError(f"format must be 'lance' or 'tar', got {fmt!r}")


def _levels(values: list[str]) -> np.ndarray:
    return np.array([LEVEL[v] for v in values], dtype=np.int8)


def _qualities(values: list[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float32)


def _select_lance(dataset: BuiltDataset, flt: PairFilter, skip_unreadable: bool) -> Selection:
    # per-frame boxes are large and the loader does not yield them: leave them out
    wanted = [c for c in scalar_columns("pairs") if c != "target_boxes"]
    absent = absent_columns(dataset.pairs, wanted)
    columns = [c for c in wanted if c not in absent]
    args = {"columns": columns, "filter": flt.to_sql(), "with_row_id": True}
    unreadable: list[tuple[str, int]] = []
    if not skip_unreadable:
        table = lance_table(dataset.pairs, **args)
    else:
        lance_table(dataset.pairs.scanner(**args, fragments=[]))  # a bad filter still raises
        parts = []
        for fragment in dataset.pairs.get_fragments():
            try:
                parts.append(dataset.pairs.scanner(**args, fragments=[fragment]).to_table())
            except (OSError, ValueError, RuntimeError) as exc:
                what = f"{dataset.manifest.tables['pairs'].path} fragment {fragment.fragment_id}"
                unreadable.append((f"{what}: {exc}", fragment.metadata.physical_rows))
        table = (
            pa.concat_tables(parts)
            if parts
            else lance_table(dataset.pairs.scanner(**args, fragments=[]))
        )
    table = with_null_columns(table, absent, wanted).sort_by("pair_id")
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
        unreadable=unreadable,
    )


def _select_tar(dataset: BuiltDataset, flt: PairFilter, skip_unreadable: bool) -> Selection:
    entries: list[Entry] = []
    unreadable: list[tuple[str, int]] = []
    for shard in dataset.shards:
        try:
            index = dataset.shard_index(shard)
        except ManifestError as exc:
            if not skip_unreadable:
                raise
            unreadable.append((str(exc), shard.samples))
            continue
        entries.extend((shard.path, entry) for entry in index)
    entries, _ = select_entries(dataset, flt, entries)
    entries.sort(key=lambda e: e[1]["key"])
    return Selection(
        pair_ids=[e["key"] for _, e in entries],
        levels=_levels([e["difficulty"] for _, e in entries]),
        qualities=_qualities([e["quality_score"] for _, e in entries]),
        meta=None,
        row_ids=None,
        shard_entries=entries,
        fingerprint=fingerprint(dataset, flt, "tar"),
        unreadable=unreadable,
    )
