"""Row order of a Lance table: rows a selective filter picks are stored next to each other.

A query through a scalar index finds its rows in about a millisecond; what costs is the
take of those rows from the data files, and a take costs per *run* of adjacent rows, not
per row (on the store bench's 1M-row ``pairs`` table, 7,890 scattered rows took 32 ms
to read, the same rows stored together 1.9 ms). The Lance sink therefore writes the
``pairs`` rows sorted by :data:`CLUSTER_KEYS` before it compacts: a filter on difficulty,
``passed`` and a score range reads at most one run per (difficulty, passed) value.

Only fragments no scalar index covers yet are rewritten, so a table's indexes never need
remapping, and what an earlier finalize clustered and indexed is left alone: a resumed
build adds its own sorted run. Pair ids, scores and every value stay as they are; only
row addresses change, as compaction already changes them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import lance
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from lance.fragment import write_fragments

from pvtt.schemas.tables import MEDIA_COLUMNS, TABLE_KEYS, TABLE_SCHEMAS

CLUSTER_KEYS: dict[str, tuple[str, ...]] = {
    "pairs": ("difficulty_level", "passed", "quality_score"),
}
"""Sort keys per table, most significant first; the table's key (``pair_id``) follows
them only to make the order total. The first two have 4 x 2 values, so a range of the
third is at most 8 runs.

Difficulty and the gate verdict are what nearly every selection names (``passed=True``
is the loader's default); the score range comes next. Categories cannot also be
contiguous: a category filter still reads scattered rows (see ``tools/bench/store.py``).
"""
CLUSTER_CONFIG_KEY = "pvtt.cluster_keys"
"""Table config key naming the sort keys once every row of the table is in that order;
the loaders read it (``pvtt.loaders.query_route``, same key) to route filters."""
BUCKET_KEYS = 2
"""Leading keys whose values split the rows into buckets sorted one at a time (8 for
``pairs``): memory holds one bucket's scalar columns, not the table's."""
CHUNK_ROWS = 4_096
"""Rows whose media are read at once while rewriting."""
CHUNK_BYTES = 64 << 20
"""Media bytes held per read while rewriting, whatever the row count."""


def cluster_unindexed(
    uri: Path | str,
    name: str,
    *,
    rows_per_fragment: int,
    storage_options: dict[str, str] | None = None,
) -> lance.LanceDataset | None:
    """Rewrite the fragments of table ``name`` that no index covers, sorted by its keys.

    Returns the new version, or None when there was nothing to do (no keys for this
    table, no unindexed rows, or those rows already in order). Media columns are read
    with Lance's blob reader a chunk at a time (:data:`CHUNK_BYTES`), scalar columns a
    bucket at a time (:data:`BUCKET_KEYS`).

    The table's config names the keys (:data:`CLUSTER_CONFIG_KEY`) once all its rows
    are sorted: when this call sorted every fragment, or an earlier one had. A table
    written before pvtt clustered keeps its indexed rows in their old order and gets
    no such entry.
    """
    keys = CLUSTER_KEYS.get(name)
    if not keys:
        return None
    ds = lance.dataset(str(uri), storage_options=storage_options)
    covered: set[int] = set()
    for index in ds.list_indices():
        covered.update(index["fragment_ids"])
    fragments = [f for f in ds.get_fragments() if f.fragment_id not in covered]
    if not fragments:
        return None
    sorted_before = ds.config().get(CLUSTER_CONFIG_KEY) == ",".join(keys)
    flag = {} if covered and not sorted_before else {CLUSTER_CONFIG_KEY: ",".join(keys)}
    present = [k for k in (*keys, TABLE_KEYS[name]) if k in ds.schema.names]
    media = [c for c in MEDIA_COLUMNS[name] if c in ds.schema.names]
    table = ds.scanner(columns=[*present, *media], with_row_id=True, fragments=fragments).to_table()
    if table.num_rows == 0:
        return None
    order = pc.sort_indices(
        table, sort_keys=[(k, "ascending", "at_end") for k in present]
    ).to_numpy()
    if len(fragments) == 1 and np.array_equal(order, np.arange(len(order))):
        if flag and not sorted_before:  # e.g. a one-row table
            ds.update_config(flag)
            return lance.dataset(str(uri), storage_options=storage_options)
        return None  # one fragment, already sorted (a finalize that ran before)
    # the table's own fields (one written by an earlier pvtt may lack some), but media as
    # written: Lance reports a blob column as an extension type
    schema = pa.schema(
        [TABLE_SCHEMAS[name].field(f.name) if f.name in media else f for f in ds.schema],
        metadata=ds.schema.metadata,
    )
    buckets = table.select(present[:BUCKET_KEYS]).take(order).to_pylist()
    batches = _sorted_batches(
        ds, fragments, schema, media, present, list(dict.fromkeys(map(_values, buckets)))
    )
    reader = pa.RecordBatchReader.from_batches(schema, _counted(batches, table.num_rows, uri))
    new = write_fragments(
        reader,
        str(uri),
        schema=schema,
        max_rows_per_file=rows_per_fragment,
        storage_options=storage_options,
    )
    group = lance.LanceOperation.RewriteGroup(
        old_fragments=[f.metadata for f in fragments], new_fragments=new
    )
    ds = lance.LanceDataset.commit(
        str(uri),
        lance.LanceOperation.Rewrite(groups=[group], rewritten_indices=[]),
        read_version=ds.version,
        storage_options=storage_options,
    )
    if flag and not sorted_before:
        ds.update_config(flag)
        ds = lance.dataset(str(uri), storage_options=storage_options)
    return ds


def _values(row: dict[str, object]) -> tuple[tuple[str, object], ...]:
    return tuple(row.items())


def _counted(
    batches: Iterator[pa.RecordBatch], rows: int, uri: Path | str
) -> Iterator[pa.RecordBatch]:
    """``batches``, checked to hold ``rows`` rows in all before the last is handed on."""
    seen = 0
    for batch in batches:
        seen += batch.num_rows
        if seen > rows:
            break
        yield batch
    if seen != rows:  # raising here fails the write: nothing is committed
        raise RuntimeError(
            f"{uri}: sorting read {seen} rows of {rows}; the table is left as it was"
        )


def _chunks(sizes: np.ndarray) -> Iterator[slice]:
    """Consecutive slices of at most :data:`CHUNK_ROWS` rows and :data:`CHUNK_BYTES`
    media bytes (a single larger row gets a chunk of its own)."""
    start = 0
    while start < len(sizes):
        end = min(start + CHUNK_ROWS, len(sizes))
        over = np.flatnonzero(np.cumsum(sizes[start:end]) > CHUNK_BYTES)
        if over.size:
            end = start + max(int(over[0]), 1)
        yield slice(start, end)
        start = end


def _sorted_batches(
    ds: lance.LanceDataset,
    fragments: Sequence[lance.LanceFragment],
    schema: pa.Schema,
    media: Sequence[str],
    keys: Sequence[str],
    buckets: Sequence[tuple[tuple[str, object], ...]],
) -> Iterator[pa.RecordBatch]:
    """The rows of ``fragments`` sorted by ``keys``, as batches of ``schema`` with media
    as bytes.

    One bucket (a value of the leading :data:`BUCKET_KEYS` keys, in key order) at a
    time: its scalar columns are read by one scan of the fragments (a take of scattered
    rows costs ~25 us a row with every column, a scan far less) and sorted in memory;
    its media are then read a chunk at a time by row id.
    """
    names = [f.name for f in schema]
    for bucket in buckets:
        where = None
        for column, value in bucket:
            test = pc.field(column).is_null() if value is None else pc.field(column) == value
            where = test if where is None else where & test
        part = ds.scanner(
            columns=names,
            filter=where,
            fragments=fragments,
            with_row_id=True,
            late_materialization=False,
            use_scalar_index=False,
        ).to_table()
        part = part.take(
            pc.sort_indices(part, sort_keys=[(k, "ascending", "at_end") for k in keys])
        )
        sizes = np.zeros(part.num_rows, dtype=np.int64)
        for column in media:  # blob descriptions: the byte size of each value, nothing read
            size = part.column(column).combine_chunks().field("size")
            sizes += pc.fill_null(size, 0).to_numpy(zero_copy_only=False).astype(np.int64)
        row_ids = part.column("_rowid").to_numpy()
        for piece in _chunks(sizes):
            rows = part.slice(piece.start, piece.stop - piece.start)
            ids = row_ids[piece].tolist()
            columns = []
            for field in schema:
                if field.name in media:
                    blobs = ds.read_blobs(field.name, ids=ids, preserve_order=True)
                    columns.append(pa.array([b for _, b in blobs], type=field.type))
                else:
                    columns.append(rows.column(field.name).combine_chunks().cast(field.type))
            yield pa.RecordBatch.from_arrays(columns, schema=schema)
