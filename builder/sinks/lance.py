"""The ``pairs``, ``clips`` and ``products`` Lance tables.

Rows are buffered and written as uncommitted fragments (durable, invisible);
a flush commits each table's pending fragments as one Lance ``Append``, and the
manifest then names the new versions. Media columns are Lance blobs, so scans
of the metadata columns never read them.

Each row is converted to Arrow against its table's schema when the sink takes it
(``prepare``), not when the buffer is written: a value the table cannot store
(an int32 column given 2**40, a string where a number belongs, a null in a required
column) is then refused as that pair's :class:`SampleError`, where at write or
commit time it would fail a whole buffer of pairs with no pair to blame.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import lance
import pyarrow as pa
from lance.fragment import FragmentMetadata, write_fragments

from pvtt.builder.sinks.base import PairSample, SampleError
from pvtt.builder.sinks.category_copy import write_category_copy
from pvtt.builder.sinks.lance_layout import cluster_unindexed
from pvtt.builder.video import VideoError, mp4_keyframe_index
from pvtt.schemas.manifest import Manifest, TableInfo, fsync_dir
from pvtt.schemas.records import ClipRecord, PairRecord, ProductRecord, to_row
from pvtt.schemas.tables import KEYFRAME_COLUMNS, MEDIA_COLUMNS, TABLE_KEYS, TABLE_SCHEMAS

log = logging.getLogger(__name__)

LANCE_DIR = "lance"

SCALAR_INDEXES: dict[str, tuple[tuple[str, str], ...]] = {
    "pairs": (
        ("pair_id", "BTREE"),
        ("difficulty", "BITMAP"),
        ("source_category", "BITMAP"),
        ("target_category", "BITMAP"),
        ("passed", "BITMAP"),
        ("quality_score", "BTREE"),
    ),
    "clips": (("clip_id", "BTREE"),),
    "products": (("image_id", "BTREE"),),
}
"""Bitmaps for low-cardinality filter columns, B-trees for keys and scores."""


class _Table:
    """Pending rows (one-row Arrow batches) and fragments of one table."""

    def __init__(self, uri: Path, name: str, fragment_bytes: int) -> None:
        self.uri = uri
        self.name = name
        self.schema = TABLE_SCHEMAS[name]
        self.media = frozenset(MEDIA_COLUMNS[name])
        self.scalars = pa.struct([f for f in self.schema if f.name not in self.media])
        self.required = tuple(f.name for f in self.schema if not f.nullable)
        self.fragment_bytes = fragment_bytes
        self.rows: list[pa.RecordBatch] = []
        self.row_bytes = 0
        self.fragments: list[FragmentMetadata] = []
        self.keys: set[str] = set()
        self.pending_keys: list[str] = []
        self.durable = DurableTree(uri, durable=True)

    def encode(self, record: ProductRecord | ClipRecord | PairRecord) -> _Row:
        """The record as a one-row batch of this table, or :class:`SampleError` saying why not.

        Arrow checks each value against the column type here; Lance refuses a null in a
        non-nullable column only when it writes, so that is checked here too.
        """
        row = to_row(record)
        # the pair's own row needs no name: the writer's SampleError carries the pair id
        where = "" if isinstance(record, PairRecord) else f"{self.name} row {record.key}, "
        for column, media in KEYFRAME_COLUMNS[self.name].items():
            if row.get(column) is None and row.get(media) is not None:
                try:
                    index = mp4_keyframe_index(row[media])
                except VideoError as exc:
                    raise SampleError(f"{where}{media} cannot be indexed: {exc.message}") from None
                row[column] = None if index is None else index.frames
        missing = [name for name in self.required if row.get(name) is None]
        if missing:
            raise SampleError(f"{where}no value for non-nullable {', '.join(missing)}")
        try:
            batch = arrow_batch(row, self.schema, self.scalars, self.media)
        except (ValueError, TypeError, OverflowError) as exc:  # ArrowInvalid, ArrowTypeError
            raise SampleError(f"{where}{_bad_column(row, self.schema, self.media, exc)}") from None
        return _Row(self, batch, record.key, _media_bytes(row))

    def add(self, batch: pa.RecordBatch, key: str, size: int) -> None:
        self.rows.append(batch)
        self.keys.add(key)
        self.pending_keys.append(key)
        self.row_bytes += size
        if self.row_bytes >= self.fragment_bytes:
            self.write_pending_rows()

    def write_pending_rows(self) -> None:
        if not self.rows:
            return
        # one chunk a row: Lance reads the batches ``to_reader`` cuts there, media zero-copy
        table = pa.Table.from_batches(self.rows, schema=self.schema)
        self.fragments.extend(write_fragments(table.to_reader(), str(self.uri), schema=self.schema))
        self.rows, self.row_bytes = [], 0

    def commit(self, version: int) -> lance.LanceDataset:
        self.write_pending_rows()
        ds = lance.LanceDataset.commit(
            str(self.uri), lance.LanceOperation.Append(self.fragments), read_version=version
        )
        self.fragments = []
        self.pending_keys = []
        return ds

    def hand_over(self, manifest: Manifest, name: str) -> None:
        """Rank mode: record the written fragments in the rank's manifest, uncommitted."""
        self.write_pending_rows()
        manifest.fragments.setdefault(name, []).extend(
            json.dumps(f.to_json()) for f in self.fragments
        )
        manifest.keys.setdefault(name, []).extend(self.pending_keys)
        self.fragments = []
        self.pending_keys = []


@dataclass(frozen=True)
class _Row:
    """A row encoded for its table, not yet added (see :meth:`LanceSink.prepare`)."""

    table: _Table
    batch: pa.RecordBatch
    key: str
    size: int

    def add(self) -> None:
        if self.key not in self.table.keys:  # a clip or image row goes in once
            self.table.add(self.batch, self.key, self.size)


class LanceSink:
    """Appends pairs, and each clip and product image once, to the three tables.

    With ``commit=False`` (a rank of a multi-rank build) fragments are written but not
    committed: the rank's manifest lists them, and ``pvtt merge`` commits every rank's
    fragments in one Lance transaction per table.
    """

    name = "lance"

    def __init__(
        self,
        *,
        fragment_bytes: int = 256 << 20,
        compact: bool = True,
        target_rows_per_fragment: int = 1 << 20,
        commit: bool = True,
    ) -> None:
        self.commit = commit
        self.fragment_bytes = fragment_bytes
        self.compact = compact
        self.target_rows_per_fragment = target_rows_per_fragment
        self._tables: dict[str, _Table] = {}
        self._versions: dict[str, int] = {}

    def recover(self, out: Path, manifest: Manifest, rank: int) -> set[str]:
        root = out / LANCE_DIR
        root.mkdir(parents=True, exist_ok=True)
        if not self.commit:  # rank mode: what the rank manifest lists is all there is
            for name in TABLE_SCHEMAS:
                table = _Table(root / f"{name}.lance", name, self.fragment_bytes)
                table.keys = set(manifest.keys.get(name, []))
                self._tables[name] = table
            return set(manifest.keys.get("pairs", []))
        committed: dict[str, set[str]] = {}
        for name, schema in TABLE_SCHEMAS.items():
            uri = root / f"{name}.lance"
            info = manifest.tables.get(name)
            durable = True
            if info is None:
                if uri.exists():  # tables of a first run that never committed
                    shutil.rmtree(uri)
                ds = lance.write_dataset(schema.empty_table(), str(uri), schema=schema)
                committed[name] = set()
                durable = False
            else:
                ds = lance.dataset(str(uri))
                if ds.latest_version != info.version:
                    log.info("lance %s: rolling back to committed version %s", name, info.version)
                    ds.checkout_version(info.version).restore()
                    ds = lance.dataset(str(uri))
                    durable = False
                key = TABLE_KEYS[name]
                committed[name] = set(ds.to_table(columns=[key]).column(key).to_pylist())
            table = _Table(uri, name, self.fragment_bytes)
            table.keys = committed[name]
            if not durable:  # the manifest is about to name this version
                table.durable.sync()
            self._tables[name] = table
            self._versions[name] = ds.version
            manifest.tables[name] = TableInfo(
                path=f"{LANCE_DIR}/{name}.lance", version=ds.version, rows=ds.count_rows()
            )
        return committed["pairs"]

    def prepare(self, sample: PairSample) -> Callable[[], None]:
        """Encode the pair's row, and its clip and product rows if new, and return what adds them.

        A value a table cannot store raises :class:`SampleError` naming the row, with
        nothing buffered; the returned call only buffers the encoded rows (and writes a
        fragment when the buffer is full: its errors are the machine's).
        """
        rows: list[_Row] = []
        if self.commit:  # a rank writes product rows only through write_product (rank 0)
            rows += self._new_row("products", sample.product)
        rows += self._new_row("clips", sample.clip)
        rows.append(self._tables["pairs"].encode(sample.pair))
        return lambda: _add_all(rows)

    def write(self, sample: PairSample) -> None:
        self.prepare(sample)()

    def write_product(self, record: ProductRecord) -> None:
        """A product image row, once, whether or not a pair uses it."""
        _add_all(self._new_row("products", record))

    def _new_row(self, name: str, record: ProductRecord | ClipRecord) -> list[_Row]:
        table = self._tables[name]
        return [] if record.key in table.keys else [table.encode(record)]

    def wants_commit(self) -> bool:
        return False

    def flush(self, manifest: Manifest) -> None:
        # products and clips first: a committed pair always finds its clip and product
        for name in ("products", "clips", "pairs"):
            table = self._tables[name]
            if not self.commit:
                table.hand_over(manifest, name)
                continue
            table.write_pending_rows()
            if not table.fragments:
                continue
            ds = table.commit(self._versions[name])
            self._record(manifest, name, ds)
        # Lance does not fsync; the manifest must never name versions a power cut could lose
        for table in self._tables.values():
            table.durable.sync()

    def finalize(self, manifest: Manifest) -> None:
        """Compact each commit's small fragments, sorting the rows not yet indexed
        (:mod:`.lance_layout`), then build or extend the scalar indexes.

        Every commit appends at least one fragment; queries over thousands of small
        fragments are many times slower than over a few large ones, and a selective
        query over unsorted rows reads them one by one. In rank mode this is
        ``pvtt merge``'s work.
        """
        if not self.commit:
            return
        for name in SCALAR_INDEXES:
            ds = optimise_table(
                self._tables[name].uri,
                name,
                compact=self.compact,
                target_rows_per_fragment=self.target_rows_per_fragment,
                durable=self._tables[name].durable,
            )
            if ds is not None:
                self._record(manifest, name, ds)

    def prune(self) -> None:
        """Delete what only superseded table versions use, once the complete manifest is out.

        Compaction rewrites every blob; the pre-compaction files would otherwise double
        the table on disk. Only files of versions older than the latest go; files no
        version names yet (another rank's uncommitted fragments) are left alone.
        """
        if self.commit:
            for table in self._tables.values():
                prune_old_versions(table.uri)

    def _record(self, manifest: Manifest, name: str, ds: lance.LanceDataset) -> None:
        self._versions[name] = ds.version
        manifest.tables[name] = TableInfo(
            path=f"{LANCE_DIR}/{name}.lance", version=ds.version, rows=ds.count_rows()
        )


def optimise_table(
    uri: Path | str,
    name: str,
    *,
    compact: bool = True,
    target_rows_per_fragment: int = 1 << 20,
    storage_options: dict[str, str] | None = None,
    durable: DurableTree | None = None,
) -> lance.LanceDataset | None:
    """Compact a table's fragments (sorting the rows no index covers yet, see
    :mod:`.lance_layout`), build or extend its scalar indexes, make it durable; for
    ``pairs``, write its copy ordered by category (:mod:`.category_copy`).

    ``uri`` is a folder or, with ``storage_options``, an object-store URI (nothing to
    fsync there: an object is durable once its upload returns). ``durable`` tracks what
    of a local table is already on disk; without it every file is fsynced (a clean file's
    fsync is cheap). Returns the new version, or None for an empty table.
    """
    if durable is None and isinstance(uri, Path):
        durable = DurableTree(uri, durable=False)  # unknown history: fsync it all (cheap if clean)
    ds = lance.dataset(str(uri), storage_options=storage_options)
    if ds.count_rows() == 0:
        if durable is not None:
            durable.sync()
        return None
    if compact:  # compaction rewrites these rows anyway: in sorted order
        sorted_ds = cluster_unindexed(
            uri, name, rows_per_fragment=target_rows_per_fragment, storage_options=storage_options
        )
        ds = sorted_ds if sorted_ds is not None else ds
    if compact and len(ds.get_fragments()) > 1:
        ds.optimize.compact_files(target_rows_per_fragment=target_rows_per_fragment)
        ds = lance.dataset(str(uri), storage_options=storage_options)
    existing = {tuple(i["fields"]) for i in ds.list_indices()}
    for column, kind in SCALAR_INDEXES[name]:
        if (column,) not in existing:
            ds.create_scalar_index(column, index_type=kind)
    if existing:
        ds.optimize.optimize_indices()  # cover fragments appended since
    if durable is not None:
        durable.sync()
    ds = lance.dataset(str(uri), storage_options=storage_options)
    if name == "pairs":  # beside the table, not named by the manifest: readers check its version
        write_category_copy(ds, storage_options)
    return ds


class DurableTree:
    """The files under a folder known to be on disk, so a sync fsyncs only what is new.

    Lance writes without fsync. A file is known by (inode, mtime, size): Lance never
    rewrites a data file in place, and a replaced file (the version hint) gets a new
    inode. Unlike a "modified since" time, this also catches fragments written long
    before the commit that names them (a full fragment is written as soon as its rows
    reach ``fragment_bytes``), and re-fsyncs nothing a previous commit synced.
    """

    def __init__(self, root: Path, *, durable: bool) -> None:
        """``durable``: what ``root`` holds now is already on disk (a committed table)."""
        self.root = root
        self._known: dict[str, tuple[int, int, int]] = {}
        if durable:
            self._known = {path: key for path, key, _ in self._scan()}

    def sync(self) -> None:
        """fsync every new or changed file, then the folders whose entries changed."""
        folders: set[str] = set()
        for path, key, new_dir in self._scan():
            if self._known.get(path) == key:
                continue
            if not new_dir:
                _fsync_file(path)
            folders.add(os.path.dirname(path))
            self._known[path] = key
        for folder in folders:
            fsync_dir(Path(folder))

    def _scan(self) -> Iterator[tuple[str, tuple[int, int, int], bool]]:
        """(path, (inode, mtime ns, size), is a folder) of everything under the root."""
        stack = [str(self.root)]
        while stack:
            try:
                entries = list(os.scandir(stack.pop()))
            except FileNotFoundError:
                continue
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                is_dir = entry.is_dir(follow_symlinks=False)
                if is_dir:
                    stack.append(entry.path)
                    yield entry.path, (st.st_ino, 0, 0), True  # a new folder: sync its parent
                else:
                    yield entry.path, (st.st_ino, st.st_mtime_ns, st.st_size), False


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _add_all(rows: list[_Row]) -> None:
    for row in rows:
        row.add()


def arrow_batch(
    row: dict[str, Any], schema: pa.Schema, scalars: pa.StructType, media: frozenset[str]
) -> pa.RecordBatch:
    """One row as a batch of ``schema`` whose media columns wrap the row's bytes objects.

    Arrow raises on a value its column's type cannot hold. The scalar columns are
    converted as one struct value (``scalars``: the schema less its media columns),
    which takes a third of the time ``RecordBatch.from_pylist`` does for one row.
    ``from_pylist`` of the media would copy every byte into one fresh buffer, and the
    page faults of that new memory cost more than Lance's write: the compare bench's
    110 MB ``pairs`` fragment took 0.36 s to convert and write that way, 0.04 s this way.
    """
    values = pa.array([row], type=scalars)
    columns = [
        _blob(row[f.name], f.type) if f.name in media else values.field(f.name) for f in schema
    ]
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _bad_column(
    row: dict[str, Any], schema: pa.Schema, media: frozenset[str], exc: Exception
) -> str:
    """Which column made ``arrow_batch`` fail, and Arrow's words (which name no column)."""
    for f in schema:
        try:
            if f.name in media:
                _blob(row[f.name], f.type)
            else:
                pa.array([row[f.name]], f.type)
        except (ValueError, TypeError, OverflowError) as column_exc:
            return f"column {f.name} ({f.type}) cannot hold {row[f.name]!r:.80}: {column_exc}"
    return f"the row does not fit the Lance table: {exc}"


def _blob(data: bytes | None, type_: pa.DataType) -> pa.Array:
    """A one-value large binary array over ``data`` itself (no copy)."""
    if data is None:
        return pa.nulls(1, type_)
    offsets = pa.py_buffer(_OFFSETS.pack(0, len(data)))
    return pa.Array.from_buffers(type_, 1, [None, offsets, pa.py_buffer(data)])


_OFFSETS = struct.Struct("<2q")


def _media_bytes(row: dict[str, Any]) -> int:
    return sum(len(v) for v in row.values() if isinstance(v, bytes | bytearray)) + 512


def prune_old_versions(uri: Path | str, storage_options: dict[str, str] | None = None) -> int:
    """Remove every version but the latest (and the files only they used); bytes freed.

    Call only after the manifest naming the latest version is written: until then a
    crash must be able to fall back on the previous one. Files that no version names
    yet (another rank's uncommitted fragments) are left alone.
    """
    try:
        ds = lance.dataset(str(uri), storage_options=storage_options)
    except (ValueError, FileNotFoundError, OSError):
        return 0  # no table was ever committed
    stats = ds.cleanup_old_versions(older_than=timedelta(0))
    return int(stats.bytes_removed)
