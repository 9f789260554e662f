"""Write the copy of the ``pairs`` filter columns ordered by category (see
:mod:`pvtt.schemas.category_copy` for why it exists and what it holds).

It is made again whole for every ``pairs`` version a build, a merge or an edit (rescore,
calibrate, resynth) publishes: a few tens of bytes a row (a 1M-row table's copy is 1.6M
rows of short strings and numbers, 2-7 s on 2 cores). A copy naming another version (one
an older pvtt's edit left, or a crash between the two) is skipped by readers, which then
filter ``pairs`` itself, as before the copy existed.
"""

from __future__ import annotations

import json
from datetime import timedelta

import lance
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pvtt.builder.sinks.lance_layout import CLUSTER_CONFIG_KEY, CLUSTER_KEYS
from pvtt.schemas.category_copy import (
    CATEGORY,
    COPY_COLUMNS,
    PAIRS_ORDER,
    RUNS_KEY,
    SOURCE_VERSION_KEY,
    copy_uri,
)
from pvtt.schemas.shards import FILTER_COLUMNS

KEEP_OLD_VERSIONS = timedelta(hours=1)
"""Older versions of the copy are removed once this old: a reader that opened one a
moment before a rewrite can still finish."""


def write_category_copy(
    pairs: lance.LanceDataset, storage_options: dict[str, str] | None = None
) -> lance.LanceDataset | None:
    """Write the copy of ``pairs`` (at its current version) beside it; None when ``pairs``
    lacks a filter column (a table written by an older pvtt)."""
    names = [c for c in FILTER_COLUMNS if c in COPY_COLUMNS]
    if not set(names) <= set(pairs.schema.names):
        return None
    table = pairs.to_table(columns=names).combine_chunks()  # one chunk: takes run many times faster
    rank = _pairs_rank(table, pairs.config().get(CLUSTER_CONFIG_KEY) == ",".join(CLUSTER_KEYS["pairs"]))
    differs = pc.not_equal(table.column("target_category"), table.column("source_category"))
    other = np.flatnonzero(differs.fill_null(False).to_numpy(zero_copy_only=False))
    second = table.take(other)
    rows = pa.concat_tables([
        table.append_column(CATEGORY, table.column("source_category")),
        second.append_column(CATEGORY, second.column("target_category")),
    ]).combine_chunks()  # fmt: skip
    rank = np.concatenate([rank, rank[other]])
    verdict = rows.column("passed").fill_null(False).to_numpy(zero_copy_only=False)
    codes = _sorted_codes(rows.column(CATEGORY))
    order = np.lexsort((rank, verdict, codes))
    rows = rows.take(order)
    rows = rows.replace_schema_metadata({
        **(table.schema.metadata or {}),  # the schema version, as on pairs
        SOURCE_VERSION_KEY: str(pairs.version),
        RUNS_KEY: json.dumps(_runs(rows.column(CATEGORY), codes[order] * 2 + verdict[order])),
    })  # fmt: skip
    uri = copy_uri(pairs.uri)
    copy = lance.write_dataset(
        rows, uri, mode="overwrite" if _exists(uri, storage_options) else "create",
        storage_options=storage_options, max_rows_per_file=max(1, rows.num_rows),
    )  # fmt: skip
    copy.cleanup_old_versions(older_than=KEEP_OLD_VERSIONS)
    return lance.dataset(uri, storage_options=storage_options)


def _pairs_rank(table: pa.Table, sorted_already: bool) -> np.ndarray:
    """Each row's place in :data:`PAIRS_ORDER`: its position when the table says it is
    stored so (a sort of strings is most of the copy's cost), else found by sorting."""
    if sorted_already:
        return np.arange(table.num_rows)
    order = pc.sort_indices(table, sort_keys=[(k, "ascending") for k in PAIRS_ORDER])
    rank = np.empty(table.num_rows, np.int64)
    rank[order.to_numpy()] = np.arange(table.num_rows)
    return rank


def _sorted_codes(column: pa.ChunkedArray) -> np.ndarray:
    """Each value's rank among the column's distinct values (a string sort of a few
    category names instead of one of every row)."""
    encoded = column.combine_chunks().dictionary_encode()
    names = encoded.dictionary.to_pylist()
    rank = np.empty(len(names), np.int64)
    rank[np.argsort(np.array(names, dtype=object), kind="stable")] = np.arange(len(names))
    return rank[encoded.indices.to_numpy(zero_copy_only=False)]


def _exists(uri: str, storage_options: dict[str, str] | None) -> bool:
    """Whether a copy was written before (Lance warns when it overwrites nothing)."""
    try:
        lance.dataset(uri, storage_options=storage_options)
    except (OSError, ValueError):
        return False
    return True


def _runs(categories: pa.ChunkedArray, keys: np.ndarray) -> dict[str, dict[str, list[int]]]:
    """``{category: {"true" | "false": [start, stop]}}`` of rows sorted by ``keys`` (one
    value per category and verdict): a reader takes a run by its offsets, no index."""
    starts = np.flatnonzero(np.diff(keys, prepend=-1))
    stops = np.append(starts[1:], len(keys))
    runs: dict[str, dict[str, list[int]]] = {}
    for start, stop in zip(starts.tolist(), stops.tolist(), strict=True):
        verdict = "true" if keys[start] % 2 else "false"
        runs.setdefault(categories[start].as_py(), {})[verdict] = [start, stop]
    return runs
