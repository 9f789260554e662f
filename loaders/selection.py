"""Which pairs an epoch draws from, and where each one's bytes live.

A :class:`Selection` is the filtered list of pairs in canonical order (sorted by
``pair_id``), with what the loader needs to plan (difficulty level, quality score) and
to read (a Lance row id, or a tar shard and byte range). It is computed from metadata
only: Lance pushes the filter down to its scalar indexes; a tar dataset is planned from
its shard indexes, so shards without a selected sample are never opened, and a ``where``
over a column the indexes lack is answered by the ``pairs`` table when there is one
(sample json otherwise).

A Lance selection is compact: numpy arrays of row ids (8 bytes), difficulty codes (1) and
quality scores (4) per pair, about 13 bytes a pair. Planning reads only ``pair_id`` (to
sort), ``difficulty_level`` and ``quality_score``; the scalar columns a sample yields are
read per batch of selected rows (:class:`LanceRows`). Holding them all as Arrow cost
~1,100 bytes a pair and 5 s to a first sample at a million selected pairs
(``tools/bench/loader.py --plan``), in every process that planned.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import lance
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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
from pvtt.schemas.tables import TABLE_SCHEMAS, scalar_columns

LEVEL = {d: i for i, d in enumerate(DIFFICULTIES)}
META_COLUMNS = tuple(c for c in scalar_columns("pairs") if c != "target_boxes")
"""The scalar columns a sample's ``meta`` holds (per-frame boxes are large and not yielded)."""
DICT_ROWS = 256
"""Rows of a batch turned into Python dicts together."""
READ_COLUMNS = ("pair_id", "clip_id", "target_id", "frame_count")
"""The scalar columns reading and decoding a sample need when ``meta`` is not asked for."""


class LanceRows:
    """Scalar columns of selected pairs, read from the ``pairs`` table per batch of rows.

    :meth:`fetch` reads a batch in one take by row id, kept as Arrow; :meth:`row` answers
    from that batch (or reads its one row). A take costs ~0.6 ms a row for 64 rows of a
    2M-row table and ~0.03 ms for 4,096 (pylance 14), so callers grow their batches. A
    process that will fork children which must not run Lance calls :meth:`hold` first:
    every selected row is read once, as Arrow, and the children share its pages (Arrow
    never writes to them, so copy-on-write copies nothing).
    """

    def __init__(
        self,
        table: lance.LanceDataset,
        row_ids: np.ndarray,
        columns: Sequence[str],
        sql: str | None = None,
    ) -> None:
        self.table = table
        self.row_ids = row_ids
        self.sql = sql
        """The filter that selected the rows: :meth:`hold` scans with it."""
        self.columns = list(columns)
        self.absent = absent_columns(table, self.columns)
        self.held: pa.Table | None = None
        self._batch: pa.Table | None = None
        self._at: dict[int, int] = {}
        """Selected pair index -> its row in ``_batch``."""
        self._dicts: tuple[pa.Table | None, int, list[dict[str, Any]]] = (None, 0, [])
        """(table, first row, rows as dicts) of the rows last turned into Python."""

    def _take(self, indices: np.ndarray) -> pa.Table:
        present = [c for c in self.columns if c not in self.absent]
        try:
            table = self.table._take_rows(self.row_ids[indices].tolist(), columns=present)
        except RuntimeError as exc:  # Lance reports a data file it cannot read this way too
            raise OSError(f"reading rows of the pairs table failed: {exc}") from exc
        return with_null_columns(table, self.absent, self.columns)

    def fetch(self, indices: Sequence[int] | np.ndarray) -> None:
        """Read the rows of selected pairs ``indices`` at once; ``row`` then answers them.
        Rows held for a fork are picked from memory in that order (Arrow's take), so they
        too turn into Python a chunk at a time: 0.2 ms a row one by one here, loaded."""
        idx = np.asarray(indices, dtype=np.int64)
        self._batch = None  # a failed read leaves no stale batch behind
        self._batch = self.held.take(idx) if self.held is not None else self._take(idx)
        self._at = {index: at for at, index in enumerate(idx.tolist())}

    def fetched(self, index: int) -> dict[str, Any] | None:
        """Selected pair ``index``'s row if it is in memory, without reading."""
        at = self._at.get(index)
        if at is not None and self._batch is not None:
            return self._dict(self._batch, at, DICT_ROWS)
        if self.held is not None:  # not fetched: its row alone
            return self._dict(self.held, index, 1)
        return None

    def _dict(self, table: pa.Table, at: int, chunk: int) -> dict[str, Any]:
        """Row ``at`` of ``table`` as a dict. A batch, read in its order, is turned into
        Python ``chunk`` rows at once: 0.006 ms a row for 256 against 0.067 ms alone."""
        held, first, rows = self._dicts
        if held is not table or not first <= at < first + len(rows):
            first = at - at % chunk
            rows = table.slice(first, chunk).to_pylist()
            self._dicts = (table, first, rows)
        return rows[at - first]

    def row(self, index: int) -> dict[str, Any]:
        """The scalar columns of selected pair ``index``."""
        found = self.fetched(index)
        if found is None:
            self.fetch([index])
            found = self.fetched(index)
        assert found is not None
        return found

    def hold(self) -> None:
        """Read every selected row now, for children forked from this process.

        One filtered scan, put in selection order by row id: 3x faster than a take of
        every row (3.2 s against 5.8 s for 970k of 2M rows). A table that cannot be scanned
        whole (a fragment left out as unreadable) is read by take.
        """
        if self.held is not None:
            return
        present = [c for c in self.columns if c not in self.absent]
        try:
            scanned = self.table.to_table(columns=present, filter=self.sql, with_row_id=True)
        except (OSError, ValueError, RuntimeError):
            self.held = self._take(np.arange(len(self.row_ids)))
            return
        ids = scanned.column("_rowid").to_numpy()
        by_id = np.argsort(ids)
        at = np.searchsorted(ids, self.row_ids, sorter=by_id)
        found = by_id[np.minimum(at, max(len(ids) - 1, 0))]
        if len(ids) < len(self.row_ids) or not np.array_equal(ids[found], self.row_ids):
            self.held = self._take(np.arange(len(self.row_ids)))  # the table changed
            return
        table = scanned.take(pa.array(found)).drop_columns(["_rowid"])
        self.held = with_null_columns(table, self.absent, self.columns)


@dataclass
class Selection:
    """The selected pairs, sorted by ``pair_id``."""

    levels: np.ndarray
    """Difficulty codes (int8, 0..3 for easy..expert)."""
    qualities: np.ndarray
    """Quality scores (float32, NaN where none)."""
    pair_ids: list[str] | None
    """Pair ids (tar; a Lance selection reads them with its rows)."""
    rows: LanceRows | None
    """Scalar columns read per batch (Lance); None for tar, whose json is read with the sample."""
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
        return len(self.levels)

    @property
    def plan_bytes(self) -> int:
        """Bytes of the per-pair arrays this selection keeps (rows held for a fork aside)."""
        arrays = (self.levels, self.qualities, self.row_ids)
        return sum(a.nbytes for a in arrays if a is not None)

    def pair_id(self, index: int) -> str | None:
        """Pair ``index``'s id: tar's from its index entry, Lance's from its row once that
        was read (None before)."""
        if self.pair_ids is not None:
            return self.pair_ids[index]
        row = self.rows.fetched(index) if self.rows is not None else None
        return row.get("pair_id") if row is not None else None

    def fetch(self, indices: Sequence[int] | np.ndarray) -> None:
        """Read the scalar columns of the selected pairs ``indices`` in one batch (Lance)."""
        if self.rows is not None:
            self.rows.fetch(indices)

    def row(self, index: int) -> dict[str, Any]:
        """The scalar columns of selected pair ``index`` (Lance selections)."""
        assert self.rows is not None
        return self.rows.row(index)


def fingerprint(dataset: BuiltDataset, flt: PairFilter, fmt: str) -> str:
    """Identity of (dataset version, filter, format): a saved loader state must match it."""
    m = dataset.manifest
    # Only the built tables: a review appending labels does not change which pairs are read.
    version = {k: v.version for k, v in m.tables.items() if k in TABLE_SCHEMAS}
    blob = json.dumps([m.build_id, version, [s.path for s in m.shards], flt.to_sql(), fmt])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def select(
    dataset: BuiltDataset,
    flt: PairFilter,
    fmt: str,
    *,
    skip_unreadable: bool = False,
    columns: Sequence[str] = META_COLUMNS,
) -> Selection:
    """The pairs of ``dataset`` that ``flt`` selects, read from format ``fmt``.

    ``skip_unreadable``: leave out the pairs of a Lance fragment or a shard index that
    cannot be read (listed in ``Selection.unreadable``) instead of raising. ``columns``:
    the scalar columns a Lance selection's rows hold (:data:`META_COLUMNS` for ``meta``).
    """
    if fmt == "lance":
        return _select_lance(dataset, flt, skip_unreadable, columns)
    if fmt == "tar":
        return _select_tar(dataset, flt, skip_unreadable)
    raise ValueError(f"format must be 'lance' or 'tar', got {fmt!r}")


def _levels(values: list[str]) -> np.ndarray:
    return np.array([LEVEL[v] for v in values], dtype=np.int8)


def _qualities(values: list[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float32)


def _level_codes(column: pa.ChunkedArray) -> np.ndarray:
    """Difficulty codes from ``difficulty_level``, or from ``difficulty`` names in Arrow."""
    if pa.types.is_integer(column.type):
        return column.to_numpy().astype(np.int8)
    codes = pc.index_in(column, value_set=pa.array(DIFFICULTIES))
    if codes.null_count:
        raise ValueError("pairs table: a difficulty outside " + ", ".join(DIFFICULTIES))
    return codes.to_numpy().astype(np.int8)


def _select_lance(
    dataset: BuiltDataset, flt: PairFilter, skip_unreadable: bool, row_columns: Sequence[str]
) -> Selection:
    names = dataset.pairs.schema.names
    level = "difficulty_level" if "difficulty_level" in names else "difficulty"
    wanted = ["pair_id", level, "quality_score"]
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
    table = with_null_columns(table, absent, wanted)
    order = pc.sort_indices(table.column("pair_id"))
    table = table.drop_columns(["pair_id"]).take(order)  # the ids are not kept
    row_ids = table.column("_rowid").to_numpy().astype(np.uint64)
    qualities = table.column("quality_score").fill_null(np.nan).to_numpy().astype(np.float32)
    levels = _level_codes(table.column(level))
    return lance_selection(dataset, flt, (row_ids, levels, qualities), row_columns, unreadable)


def lance_selection(
    dataset: BuiltDataset,
    flt: PairFilter,
    arrays: tuple[np.ndarray, np.ndarray, np.ndarray],
    columns: Sequence[str],
    unreadable: list[tuple[str, int]],
) -> Selection:
    """The Lance selection planned elsewhere, from its ``(row_ids, levels, qualities)``
    (a spawned DataLoader worker gets them in shared memory): nothing is scanned."""
    row_ids, levels, qualities = arrays
    return Selection(
        levels=levels,
        qualities=qualities,
        pair_ids=None,
        rows=LanceRows(dataset.pairs, row_ids, columns, flt.to_sql()),
        row_ids=row_ids,
        shard_entries=None,
        fingerprint=fingerprint(dataset, flt, "lance"),
        unreadable=list(unreadable),
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
        levels=_levels([e["difficulty"] for _, e in entries]),
        qualities=_qualities([e["quality_score"] for _, e in entries]),
        pair_ids=[e["key"] for _, e in entries],
        rows=None,
        row_ids=None,
        shard_entries=entries,
        fingerprint=fingerprint(dataset, flt, "tar"),
        unreadable=unreadable,
    )
