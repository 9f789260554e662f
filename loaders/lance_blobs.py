"""Where the values of Lance blob columns lie, so that any process can read them with plain reads.

Lance is not fork-safe once its runtime has started: a DataLoader worker forked from a
process that had used Lance dies in Lance's native code (pylance 14.0.2, measured: about
half of such workers died of SIGSEGV or hung at their first blob read, also on a dataset
opened afresh in the worker). So the loader asks Lance only *where* each blob it will read
lies, when it plans an epoch (one scan of the blob columns' descriptors, no payload), and
reads the bytes itself: a worker forked after that never runs Lance.

A blob v2 descriptor (``kind, position, size, blob_id, blob_uri``) places a value inline in
its row's data file (kind 0, at ``position``), in a sidecar file shared by several values
(kind 1, packed, at ``position``) or in a sidecar of its own (kind 2, dedicated); sidecars
lie in ``data/<data file stem>/<blob_id as 32 binary digits, least significant first>.blob``.
That layout is Lance's, not a documented contract, so :func:`locate` checks it each time,
one value of every kind in every column against Lance's own read. A column that fails the
check, or stores blobs some other way (blob v1, external URIs, data files under another
base), gets a ``why_not`` and is read through Lance instead, in the planning process
only.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import lance
import numpy as np
import pyarrow as pa

INLINE, PACKED, DEDICATED = 0, 1, 2
_DESCRIPTOR = ("kind", "position", "size", "blob_id", "blob_uri")
OPEN_FILES = 16
"""Local files a :class:`RangeFiles` keeps open."""


@dataclass
class BlobSpans:
    """Where each value of one blob column lies, by the table's row position (its slot).

    ``data_file[i]`` indexes ``data_files`` (the row's data file). When ``why_not`` says
    why the values cannot be read with plain reads, only ``null`` is filled in: they must
    be read through Lance.
    """

    null: np.ndarray
    data_files: list[str]
    data_file: np.ndarray
    kind: np.ndarray
    blob_id: np.ndarray
    position: np.ndarray
    size: np.ndarray
    why_not: str | None = None

    @property
    def plain(self) -> bool:
        return self.why_not is None

    def is_null(self, slot: int) -> bool:
        return bool(self.null[slot])

    def path(self, slot: int) -> str:
        """The file value ``slot`` lies in."""
        data = self.data_files[int(self.data_file[slot])]
        if int(self.kind[slot]) == INLINE:
            return data
        stem = data[: -len(".lance")] if data.endswith(".lance") else data
        return f"{stem}/{format(int(self.blob_id[slot]), '032b')[::-1]}.blob"

    def span(self, slot: int) -> tuple[str, int, int]:
        """``(file, offset, size)`` of value ``slot``."""
        return self.path(slot), int(self.position[slot]), int(self.size[slot])


@dataclass
class BlobTable:
    """The located blob columns of one Lance table, with its row ids and (optionally) keys."""

    uri: str
    row_ids: np.ndarray
    """Lance row ids, ascending; a row's position here is its slot in every column."""
    columns: dict[str, BlobSpans]
    keys: dict[str, int] | None = None
    """Key column value -> slot (clips, products)."""
    unreadable: list[str] = field(default_factory=list)
    """Fragments whose descriptors could not be read, with the reason."""

    def slots(self, row_ids: np.ndarray) -> np.ndarray:
        """The slot of each row id, -1 where the row was not located."""
        found = np.searchsorted(self.row_ids, row_ids)
        found = np.minimum(found, max(len(self.row_ids) - 1, 0))
        hit = (
            (self.row_ids[found] == row_ids) if len(self.row_ids) else np.zeros(len(row_ids), bool)
        )
        return np.where(hit, found, -1).astype(np.int64)

    def missing(self, what: str) -> OSError:
        """The error for a row this table could not locate."""
        why = "; ".join(self.unreadable) or "the row is not in the table"
        return OSError(f"{self.uri}: cannot tell where {what} lies: {why}")


def locate(
    table: lance.LanceDataset,
    uri: str,
    columns: Sequence[str],
    key_column: str | None = None,
    *,
    fs: Any = None,
) -> BlobTable:
    """Locate every value of the blob ``columns`` of ``table`` (opened from ``uri``; ``fs``
    reads an object store, None local files).

    One scan of the descriptors (no payload is read), fragment by fragment if the whole
    table cannot be scanned: rows of a fragment that cannot be read are left out and named
    in ``unreadable``, so a read of one of them fails alone.
    """
    names = [*([key_column] if key_column else []), *columns]
    scanned, unreadable = _scan(table, names)
    order = np.argsort(scanned.column("_rowid").to_numpy(), kind="stable")
    scanned = scanned.take(pa.array(order))
    row_ids = scanned.column("_rowid").to_numpy()
    addresses = scanned.column("_rowaddr").to_numpy()
    files = RangeFiles(fs)
    try:
        spans = {
            name: _spans(table, uri, name, scanned.column(name), addresses, files)
            for name in columns
        }
    finally:
        files.close()
    keys = None
    if key_column is not None:
        keys = {key: slot for slot, key in enumerate(scanned.column(key_column).to_pylist())}
    return BlobTable(uri, row_ids, spans, keys, unreadable)


def _scan(table: lance.LanceDataset, names: list[str]) -> tuple[pa.Table, list[str]]:
    args: dict[str, Any] = {"columns": names, "with_row_id": True, "with_row_address": True}
    try:
        return table.to_table(**args), []
    except (OSError, ValueError, RuntimeError):
        pass
    parts, unreadable = [], []
    for fragment in table.get_fragments():
        try:
            parts.append(table.scanner(**args, fragments=[fragment]).to_table())
        except (OSError, ValueError, RuntimeError) as exc:
            unreadable.append(f"fragment {fragment.fragment_id}: {exc}")
    if not parts:
        parts.append(table.scanner(**args, fragments=[]).to_table())
    return pa.concat_tables(parts), unreadable


class _NotPlain(Exception):
    """Why a column's values cannot be read with plain reads."""


def _spans(
    table: lance.LanceDataset,
    uri: str,
    column: str,
    values: pa.ChunkedArray,
    addresses: np.ndarray,
    files: RangeFiles,
) -> BlobSpans:
    null = values.is_null().to_numpy(zero_copy_only=False)
    try:
        return _plain_spans(table, uri, column, values, ~null, addresses, files)
    except _NotPlain as exc:
        nothing = np.zeros(len(values), dtype=np.uint64)
        return BlobSpans(
            null, [], np.full(len(values), -1, np.int32), nothing, nothing, nothing, nothing,
            why_not=str(exc),
        )  # fmt: skip


def _plain_spans(
    table: lance.LanceDataset,
    uri: str,
    column: str,
    values: pa.ChunkedArray,
    valid: np.ndarray,
    addresses: np.ndarray,
    files: RangeFiles,
) -> BlobSpans:
    kind_of = values.type
    if (
        not pa.types.is_struct(kind_of)
        or tuple(kind_of.field(i).name for i in range(kind_of.num_fields)) != _DESCRIPTOR
    ):
        raise _NotPlain(f"{column} is not a blob v2 column ({kind_of})")
    array = values.combine_chunks()
    kind = _numbers(array, "kind", np.uint8)
    unknown = set(np.unique(kind[valid]).tolist()) - {INLINE, PACKED, DEDICATED}
    if unknown:
        raise _NotPlain(f"{column} has blobs of kind {sorted(unknown)} (external or unknown)")
    data_files, per_fragment = _data_files(table, uri, column)
    fragment = (addresses >> np.uint64(32)).astype(np.int64)
    lookup = np.full(max([*per_fragment, int(fragment.max(initial=0))]) + 1, -1, np.int32)
    lookup[list(per_fragment)] = list(per_fragment.values())
    data_file = lookup[fragment]
    if bool((valid & (data_file < 0)).any()):
        raise _NotPlain(f"{column}: a row's fragment is not among the table's fragments")
    data_file[~valid] = -1
    spans = BlobSpans(
        ~valid,
        data_files,
        data_file,
        kind,
        _numbers(array, "blob_id", np.uint32),
        _numbers(array, "position", np.uint64),
        _numbers(array, "size", np.uint64),
    )
    _check(table, column, spans, addresses, valid, files)
    return spans


def _numbers(descriptors: pa.StructArray, name: str, dtype: type) -> np.ndarray:
    """One numeric field of the descriptors; 0 where the value is null."""
    return descriptors.field(name).fill_null(0).to_numpy(zero_copy_only=False).astype(dtype)


def _data_files(
    table: lance.LanceDataset, uri: str, column: str
) -> tuple[list[str], dict[int, int]]:
    """Paths of the data files holding ``column``, and fragment id -> index into them."""
    try:
        field_id = table.lance_schema.field(column).id()
        fragments = [(f.fragment_id, f.metadata.files) for f in table.get_fragments()]
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise _NotPlain(
            f"this pylance does not say which data file holds {column}: {exc}"
        ) from None
    paths: list[str] = []
    per_fragment: dict[int, int] = {}
    for fragment_id, data_files in fragments:
        holding = [f for f in data_files if field_id in f.fields]
        if len(holding) != 1 or getattr(holding[0], "base_id", None) is not None:
            raise _NotPlain(
                f"{column}: fragment {fragment_id} keeps it in no single local data file"
            )
        per_fragment[fragment_id] = len(paths)
        paths.append(f"{uri.rstrip('/')}/data/{holding[0].path}")
    return paths, per_fragment


def _check(
    table: lance.LanceDataset,
    column: str,
    spans: BlobSpans,
    addresses: np.ndarray,
    valid: np.ndarray,
    files: RangeFiles,
) -> None:
    """Read one value of each kind with plain reads and through Lance: the bytes must agree."""
    for kind in np.unique(spans.kind[valid]).tolist():
        slot = int(np.flatnonzero(valid & (spans.kind == kind))[0])
        path, offset, size = spans.span(slot)
        try:
            plain = files.read(path, offset, size)
            ((_address, expected),) = table.read_blobs(column, addresses=[int(addresses[slot])])
        except (OSError, ValueError, RuntimeError, TypeError) as exc:
            raise _NotPlain(
                f"{column}: checking a value of blob kind {kind} failed: {exc}"
            ) from None
        if plain != expected:
            raise _NotPlain(
                f"{column}: a value of blob kind {kind} read from {path} is not Lance's"
            )


class RangeFiles:
    """Byte ranges of files by path: local files by ``os.pread`` on descriptors kept open
    (the :data:`OPEN_FILES` most recent), object-store files by ranged GETs through ``fs``.

    ``pread`` moves no file offset, so descriptors a forked child inherits stay correct;
    each process still makes its own instance.
    """

    def __init__(self, fs: Any = None) -> None:
        self.fs = fs
        self._fds: OrderedDict[str, int] = OrderedDict()

    def read(self, path: str, offset: int, size: int) -> bytes:
        if self.fs is not None:
            data = self.fs.cat_file(path, start=offset, end=offset + size)
        else:
            fd = self._fd(path)
            parts, done = [], 0
            while done < size:
                part = os.pread(fd, size - done, offset + done)
                if not part:
                    break
                parts.append(part)
                done += len(part)
            data = b"".join(parts)
        if len(data) != size:
            raise OSError(f"{path}: {size} bytes at {offset} asked for, {len(data)} there")
        return data

    def read_into(self, path: str, offset: int, out: np.ndarray) -> None:
        """Fill ``out`` (a uint8 array) with the bytes at ``offset``: a local file is read
        straight into it (``os.preadv``), an object-store file is fetched, then copied."""
        size = len(out)
        if self.fs is not None:
            data = self.fs.cat_file(path, start=offset, end=offset + size)
            got = min(len(data), size)
            out[:got] = np.frombuffer(data, np.uint8, got)
        else:
            got = pread_into(self._fd(path), out, offset)
        if got != size:
            raise OSError(f"{path}: {size} bytes at {offset} asked for, {got} there")

    def advise(self, path: str, offset: int, size: int) -> None:
        """Ask the kernel to start reading a local range now (``POSIX_FADV_WILLNEED``), so
        that its read finds it in the page cache; nothing for object-store files."""
        if self.fs is None and hasattr(os, "posix_fadvise"):
            os.posix_fadvise(self._fd(path), offset, size, os.POSIX_FADV_WILLNEED)

    def _fd(self, path: str) -> int:
        fd = self._fds.get(path)
        if fd is not None:
            self._fds.move_to_end(path)
            return fd
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        if hasattr(os, "posix_fadvise"):  # values are read by range, often out of order
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        self._fds[path] = fd
        while len(self._fds) > OPEN_FILES:
            os.close(self._fds.popitem(last=False)[1])
        return fd

    def close(self) -> None:
        while self._fds:
            os.close(self._fds.popitem()[1])


def pread_into(fd: int, out: np.ndarray, offset: int) -> int:
    """Read file ``fd`` at ``offset`` into ``out`` (a uint8 array) with ``os.preadv``, no
    intermediate bytes; returns how many bytes came (fewer at the end of the file)."""
    view = memoryview(out).cast("B")
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if got == 0:
            break
        done += got
    return done
