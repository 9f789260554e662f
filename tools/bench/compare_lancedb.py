"""LanceDB as ``compare.py`` measures it: a LanceDB table read by LanceDB's training loader.

LanceDB's documentation for PyTorch training points to ``lancedb.streaming
.StreamingDataset``, an ``IterableDataset`` over a table that builds a permutation
(row ids in read order) with the filter pushed down into the scan, splits it into
``num_splits`` parts for ranks and DataLoader workers, prefetches ``read_batch_size``
rows per request on threads, and resumes mid-epoch from its own ``state_dict`` (per-split
positions: a fresh dataset skips to them without reading what came before). The bench
uses it that way:

- **write**: ``lancedb.connect(folder).create_table`` from record batches. The media are
  plain ``large_binary`` columns, as LanceDB's multimodal guide stores images and video:
  the loader's row reads (``Permutation.take_offsets``) return their bytes, where
  blob-encoded columns would come back as descriptors to fetch one by one. LanceDB's
  ``create_table`` has no rows-per-file setting, so ``shard_samples`` does not apply.
- **read**: ``StreamingDataset(shuffle=False)``, which keeps the stored order, with
  ``num_splits`` equal to the DataLoader's worker count (it must be a multiple of it;
  each worker reads one contiguous split), ``read_batch_size`` of
  :data:`LANCEDB_BATCH` (the size lance.torch reads with here; LanceDB's default of 64
  rows is sized for small rows, 64 of these pairs are ~200 MB), its other settings at
  their defaults. A transform turns each fetched ``RecordBatch`` into rows.
- **resume**: the ``state_dict`` after ``skip`` samples, loaded into a fresh dataset.

LanceDB bundles its own Lance, and its fork support (0.40, "experimental" in its own
warning) does not cover a runtime in use: after the parent process had read a table
through ``StreamingDataset``, a forked DataLoader worker hung in 1 of 2 epochs here (a
``lance-cpu`` thread spinning, no row ever returned). So :class:`LanceDBRows` builds its
``StreamingDataset`` in the process that iterates, and ``rows`` only imports ``lancedb``
in the calling process (what a training script does before it forks; forking after the
import alone never hung here), so a worker does not pay the ~1.1 s import inside a timed
epoch. LanceDB's fork hook, registered at import, restarts its event-loop thread in
every forked child and warns once per child.

``StreamingDataset`` keeps all splits the same length: with ``num_splits`` of 2 and an
odd number of rows it drops the last row of the epoch, which ``compare.py`` reports as a
failed count. The bench's pair counts (96 quick, 400 by default) are even.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
from torch.utils.data import IterableDataset, get_worker_info

from pvtt.tools.bench.compare_base import MEDIA, Row, Selector, Tool, arrow_batches

TABLE = "pairs"
"""The table's name in the LanceDB database (the tool's folder)."""
LANCEDB_BATCH = 16
"""Rows per ``StreamingDataset`` fetch (its ``read_batch_size``)."""
COLUMNS = ["key", "difficulty", "quality_score", "json", *MEDIA]
LANCEDB_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string()),
        pa.field("difficulty", pa.string()),
        pa.field("quality_score", pa.float64()),
        pa.field("json", pa.binary()),
        *[pa.field(name, pa.large_binary()) for name in MEDIA],
    ]
)


class LanceDBTool(Tool):
    name = "lancedb"
    needs = "lancedb"

    def _import(self) -> Any:
        """``lancedb`` with its training loader (``lancedb.streaming``, from 0.36)."""
        import lancedb
        import lancedb.streaming  # noqa: F401  (absent before 0.36: the tool is missing)

        return lancedb

    def write(self, folder: Path, rows: Iterable[Row], shard_samples: int) -> None:
        """One table, written by LanceDB; ``shard_samples`` has no LanceDB counterpart."""
        lancedb = self._import()
        reader = pa.RecordBatchReader.from_batches(
            LANCEDB_SCHEMA, arrow_batches(rows, LANCEDB_SCHEMA)
        )
        lancedb.connect(str(folder)).create_table(TABLE, data=reader, schema=LANCEDB_SCHEMA)

    def rows(self, folder: Path, select: Selector | None = None) -> Iterable[Row]:
        self._import()
        return LanceDBRows(folder, None if select is None else select.sql())

    def resume_state(self, folder: Path, skip: int) -> dict[str, Any]:
        """``StreamingDataset.state_dict()`` after a training loop took ``skip`` samples."""
        self._import()
        ds = streaming_dataset(folder, None, num_splits=1)
        it = iter(ds)
        for _ in range(skip):
            next(it)
        state = ds.state_dict()
        it.close()
        return state

    def resume(self, folder: Path, state: dict[str, Any]) -> Row:
        ds = streaming_dataset(folder, None, num_splits=state["num_splits"])
        ds.load_state_dict(state)
        it = iter(ds)
        row = next(it)
        it.close()
        return row


def streaming_dataset(folder: Path, sql: str | None, num_splits: int) -> Any:
    """LanceDB's ``StreamingDataset`` over the tool's table, in stored order, as rows."""
    import lancedb
    from lancedb.streaming import StreamingDataset

    table = lancedb.connect(str(folder)).open_table(TABLE)
    return StreamingDataset(
        table,
        num_splits=num_splits,
        shuffle=False,
        columns=COLUMNS,
        filter=sql,
        transform=batch_rows,
        read_batch_size=LANCEDB_BATCH,
    )


def batch_rows(batch: pa.RecordBatch) -> list[Row]:
    """``StreamingDataset``'s transform: one fetched batch as rows (bytes copied out)."""
    cols = batch.to_pydict()
    return [
        Row(
            key=cols["key"][i],
            meta=cols["json"][i],
            difficulty=cols["difficulty"][i],
            quality_score=cols["quality_score"][i],
            media={name: cols[name][i] for name in MEDIA},
        )
        for i in range(batch.num_rows)
    ]


class LanceDBRows(IterableDataset):
    """A ``StreamingDataset`` made in the iterating process: one split per DataLoader
    worker (one split in a process without workers)."""

    def __init__(self, folder: Path, sql: str | None) -> None:
        super().__init__()
        self.folder = folder
        self.sql = sql

    def __iter__(self) -> Iterator[Row]:
        worker = get_worker_info()
        yield from streaming_dataset(self.folder, self.sql, worker.num_workers if worker else 1)
