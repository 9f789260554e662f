"""Reading one selected pair's media bytes, from Lance or from a tar shard.

Only requested fields are read. Clip-level media (source, background, masks)
and product cut-outs are shared by many pairs: a bounded LRU cache keeps the
recent ones so consecutive pairs of one clip read its media once. A clip's or a
cut-out's bytes are found in a key -> location map of its table, made with the reader
from one scan of the key and blob descriptor columns: a filtered Lance query per lookup
cost ~0.7 ms, as much as reading the cut-out itself (``tools/bench/compare.py``).

Readers are made where an epoch is planned and serve a forked child too, through
``forked()``: the plan is inherited, files are the child's own.
"""

from __future__ import annotations

import copy
import os
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from pvtt.loaders.forking import LanceForkError
from pvtt.loaders.lance_blobs import BlobTable, RangeFiles, locate, pread_into
from pvtt.loaders.selection import Selection
from pvtt.loaders.store import BuiltDataset
from pvtt.loaders.tar_reader import (
    RangeBuffer,
    ShardFormatError,
    entry_range,
    iter_members,
    member_spans,
    parse_sample_json,
)
from pvtt.schemas.masks import MASKS_FILE_EXTENSION
from pvtt.schemas.shards import overlaid_meta

MEDIA_FIELDS = ("synth_video", "source_video", "background_video", "masks", "target_image")
FIELDS = (*MEDIA_FIELDS, "meta")

_LANCE_COLUMNS: dict[str, tuple[str, dict[str, str]]] = {
    "pairs": ("pair_id", {"synth_video": "synth_video"}),
    "clips": (
        "clip_id",
        {"source_video": "source_video", "background_video": "background_video", "masks": "masks"},
    ),
    "products": ("image_id", {"target_image": "image_rgba"}),
}
"""Table -> (key column, {field: blob column}) of the media read from Lance."""
_TAR_MEMBERS = {
    "synth_video": "synth.mp4",
    "source_video": "source.mp4",
    "background_video": "background.mp4",
    "masks": f"masks.{MASKS_FILE_EXTENSION}",
    "target_image": "target.png",
    "meta": "json",
}


_WHOLE_SAMPLE = {"synth.mp4", "source.mp4"}
"""Members whose request makes reading a tar sample's whole byte range worthwhile."""
OPEN_SHARDS = 16
"""Local shard files a ``TarReader`` keeps open."""


Allocate = Callable[[int], np.ndarray]
"""Gives a reader the buffer (a 1-D uint8 array of exactly that many bytes) one sample's
media are read into."""


@dataclass(frozen=True)
class _Span:
    """A stored value to read with a plain read, and the cache key it goes under (None: not
    cached)."""

    path: str
    offset: int
    size: int
    cache_key: tuple[str, str] | None


def place(
    sources: Mapping[str, bytes | _Span],
    alloc: Allocate,
    read_span: Callable[[_Span, np.ndarray], None] | None = None,
) -> dict[str, slice]:
    """Lay ``sources`` end to end in one ``alloc``-ed buffer: bytes are copied in, spans
    read in by ``read_span``; returns each field's slice of the buffer."""
    sizes = [s.size if isinstance(s, _Span) else len(s) for s in sources.values()]
    buffer = alloc(sum(sizes))
    out: dict[str, slice] = {}
    at = 0
    for (name, source), size in zip(sources.items(), sizes, strict=True):
        part = buffer[at : at + size]
        if isinstance(source, _Span):
            assert read_span is not None
            read_span(source, part)
        else:
            part[:] = np.frombuffer(source, np.uint8)
        out[name] = slice(at, at + size)
        at += size
    return out


class MissingFieldError(KeyError):
    """A requested field the dataset does not store in this format."""


class ByteLRU:
    """A least-recently-used cache bounded by total bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Any, bytes] = OrderedDict()
        self._size = 0

    def get(self, key: Any) -> bytes | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: Any, value: bytes) -> None:
        if key in self._items or len(value) > self.max_bytes:
            return
        self._items[key] = value
        self._size += len(value)
        while self._size > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self._size -= len(old)


class LanceReader:
    """Media of selected pairs from the ``pairs``, ``clips`` and ``products`` tables.

    Made where the epoch is planned: Lance locates every blob the requested fields need
    (:func:`~pvtt.loaders.lance_blobs.locate`; a clip's or cut-out's by its key), then the
    bytes are read with plain reads, also in a process forked later (:meth:`forked`),
    which never runs Lance. A column Lance would not let us locate is read through Lance,
    in this process only.
    """

    def __init__(
        self,
        dataset: BuiltDataset,
        selection: Selection,
        cache_bytes: int,
        fields: tuple[str, ...] = MEDIA_FIELDS,
    ) -> None:
        assert selection.row_ids is not None
        self.dataset = dataset
        self.selection = selection
        self.pid = os.getpid()
        self.cache = ByteLRU(cache_bytes)
        self.bytes_read = 0
        self.files = RangeFiles(dataset.storage.fs)
        self._tables: dict[str, Any] = {}
        self.blobs: dict[str, BlobTable] = {}
        for table, (key, columns) in _LANCE_COLUMNS.items():
            wanted = [column for name, column in columns.items() if name in fields]
            if not wanted:
                continue
            handle = dataset.pairs if table == "pairs" else dataset.table(table)
            uri = dataset.storage.lance_uri(dataset.manifest.tables[table].path)
            self._tables[table] = handle
            self.blobs[table] = locate(
                handle, uri, wanted, None if table == "pairs" else key, fs=dataset.storage.fs
            )
        self._pair_slots = (
            self.blobs["pairs"].slots(selection.row_ids) if "pairs" in self.blobs else None
        )
        self._parent: LanceReader | None = None

    def lance_only(self) -> list[str]:
        """Why each column that cannot be read without Lance cannot (empty: none)."""
        return [
            spans.why_not
            for table in self.blobs.values()
            for spans in table.columns.values()
            if spans.why_not is not None
        ]

    def forked(self, dataset: BuiltDataset) -> LanceReader:
        """This reader for a process forked from the one that made it: the same plan, its
        own files and cache, and no Lance (``dataset`` is that process's own handle)."""
        if self.lance_only():
            raise LanceForkError(
                f"{self.dataset.root}: this process was forked from one running Lance, which "
                "is not fork-safe, and some media can only be read through Lance ("
                + "; ".join(self.lance_only())
                + "): give the DataLoader multiprocessing_context='spawn' "
                '(with an `if __name__ == "__main__":` guard)'
            )
        child = copy.copy(self)
        child.dataset, child.pid = dataset, os.getpid()
        child.cache = ByteLRU(self.cache.max_bytes)
        child.files = RangeFiles(dataset.storage.fs)
        child.bytes_read = 0
        child._tables = {}
        # the parent's Lance handles stay referenced: releasing them would run Lance code here
        child._parent = self
        return child

    def read(self, index: int, fields: tuple[str, ...]) -> tuple[dict[str, bytes], dict[str, Any]]:
        sources, meta = self._sources(index, fields)
        media = {
            name: self._fetch(source) if isinstance(source, _Span) else source
            for name, source in sources.items()
        }
        return media, meta

    def read_into(
        self, index: int, fields: tuple[str, ...], alloc: Allocate
    ) -> tuple[dict[str, slice], dict[str, Any]]:
        """Like :meth:`read`, but the media go into one buffer, ``alloc(total bytes)``, each
        field at its slice: values read with plain reads straight into it, cached ones
        copied."""
        sources, meta = self._sources(index, fields)

        def read_span(span: _Span, out: np.ndarray) -> None:
            self.files.read_into(span.path, span.offset, out)
            self.bytes_read += span.size
            if span.cache_key is not None:
                self.cache.put(span.cache_key, out.tobytes())

        return place(sources, alloc, read_span), meta

    def advise(self, index: int, fields: tuple[str, ...]) -> None:
        """Start the kernel reading pair ``index``'s media (its row must be fetched): read a
        few pairs ahead, a cold epoch's scattered blobs come in parallel, not one by one."""
        if self.lance_only():
            return  # such values are read through Lance, which this may not run
        sources, _ = self._sources(index, fields)
        for source in sources.values():
            if isinstance(source, _Span):
                self.files.advise(source.path, source.offset, source.size)

    def _sources(
        self, index: int, fields: tuple[str, ...]
    ) -> tuple[dict[str, bytes | _Span], dict[str, Any]]:
        """The scalar columns of pair ``index`` and, for each media field, its bytes (cached,
        or read through Lance) or where to read them."""
        meta = self.selection.row(index)
        out: dict[str, bytes | _Span] = {}
        if "synth_video" in fields:
            assert self._pair_slots is not None
            slot = int(self._pair_slots[index])
            out["synth_video"] = self._blob("pairs", "synth_video", slot, meta["pair_id"], None)
        for name, column in _LANCE_COLUMNS["clips"][1].items():
            if name in fields:
                out[name] = self._shared("clips", column, meta["clip_id"])
        if "target_image" in fields:
            image = f"{meta['target_id']}__{meta['pair_id'].split('__', 2)[2]}"
            out["target_image"] = self._shared("products", "image_rgba", image)
        return out, meta

    def _shared(self, table: str, column: str, key: str) -> bytes | _Span:
        cached = self.cache.get((column, key))
        if cached is not None:
            return cached
        slot = self.blobs[table].keys.get(key)  # type: ignore[union-attr]
        if slot is None:
            raise MissingFieldError(f"{key}: {column} is not stored in this dataset")
        return self._blob(table, column, slot, key, (column, key))

    def _blob(
        self, table: str, column: str, slot: int, key: str, cache_key: tuple[str, str] | None
    ) -> bytes | _Span:
        """Where value ``slot`` of ``column`` lies; a value that only Lance can read is read
        (and cached under ``cache_key``) now."""
        located = self.blobs[table]
        if slot < 0:
            raise located.missing(f"{column} of {key}")
        spans = located.columns[column]
        if spans.is_null(slot):
            raise MissingFieldError(f"{key}: {column} is not stored in this dataset")
        if spans.plain:
            return _Span(*spans.span(slot), cache_key)
        row_id = int(located.row_ids[slot])
        ((_address, data),) = self._tables[table].read_blobs(column, ids=[row_id])
        if data is None:
            raise MissingFieldError(f"{key}: {column} is not stored in this dataset")
        self.bytes_read += len(data)
        if cache_key is not None:
            self.cache.put(cache_key, data)
        return data

    def _fetch(self, span: _Span) -> bytes:
        data = self.files.read(span.path, span.offset, span.size)
        self.bytes_read += len(data)
        if span.cache_key is not None:
            self.cache.put(span.cache_key, data)
        return data


class TarReader:
    """Media of selected pairs read by byte range from their tar shards.

    Local shards stay open (the :data:`OPEN_SHARDS` most recent), read without the
    kernel's readahead. A request for both per-pair videos reads the sample's whole
    byte range at once: its other members are small, and one read instead of a header
    read and a data read per member made a cold epoch of every field 1.5x faster
    (``tools/bench/compare.py``). Other requests seek past the members not asked for.
    """

    def __init__(self, dataset: BuiltDataset, selection: Selection) -> None:
        self.dataset = dataset
        self.selection = selection
        self.bytes_read = 0
        self._files: OrderedDict[str, BinaryIO] = OrderedDict()

    def forked(self, dataset: BuiltDataset) -> TarReader:
        """This reader for a forked process: the same selection, its own open files (a file
        offset shared with the parent would make their seeks and reads race)."""
        return TarReader(dataset, self.selection)

    def read(self, index: int, fields: tuple[str, ...]) -> tuple[dict[str, bytes], dict[str, Any]]:
        assert self.selection.shard_entries is not None
        path, entry = self.selection.shard_entries[index]
        wanted = {_TAR_MEMBERS[f] for f in fields} | {"json"}
        if not self.dataset.storage.local:
            members = self.dataset.read_sample(path, entry, wanted)
            self.bytes_read += sum(len(v) for v in members.values())
        elif _WHOLE_SAMPLE <= wanted:
            fh = self._open(path)
            _, offset, end = entry_range(entry, path)
            fh.seek(offset)
            buf = RangeBuffer(fh.read(end - offset), offset)
            self.bytes_read += end - offset
            members = {f: d for f, d in iter_members(buf, path, entry, wanted) if d is not None}
        else:
            fh = self._open(path)
            members = {f: d for f, d in iter_members(fh, path, entry, wanted) if d is not None}
            self.bytes_read += sum(len(v) for v in members.values())
        meta = overlaid_meta(parse_sample_json(members.pop("json"), path, entry["key"]), entry)
        return _pick(members, fields, path, entry), meta

    def read_into(
        self, index: int, fields: tuple[str, ...], alloc: Allocate
    ) -> tuple[dict[str, slice], dict[str, Any]]:
        """Like :meth:`read`, but the media go into one buffer, ``alloc(bytes)``, each field
        at its slice. Where :meth:`read` reads a sample's whole byte range, it is read
        straight into the buffer and the fields are its members' slices (the buffer holds
        the tar headers and the other members too); otherwise the members read are copied
        in."""
        assert self.selection.shard_entries is not None
        path, entry = self.selection.shard_entries[index]
        wanted = {_TAR_MEMBERS[f] for f in fields} | {"json"}
        if not self.dataset.storage.local:
            media, meta = self.read(index, fields)
            return place(media, alloc), meta
        if not _WHOLE_SAMPLE <= wanted:
            return self._members_into(path, entry, fields, wanted, alloc)
        key, offset, end = entry_range(entry, path)
        buffer = alloc(end - offset)
        got = pread_into(self._open(path).fileno(), buffer, offset)
        if got != end - offset:
            raise ShardFormatError(
                f"{path}: sample {key!r} is truncated: bytes {offset}-{end} indexed, {got} there"
            )
        self.bytes_read += got
        spans = {
            member: slice(start - offset, start - offset + size)
            for member, start, size in member_spans(RangeBuffer(buffer, offset), path, entry)
        }
        meta = overlaid_meta(
            parse_sample_json(buffer[spans.pop("json")].tobytes(), path, key), entry
        )
        return _pick(spans, fields, path, entry), meta

    def _members_into(
        self, path: str, entry: Any, fields: tuple[str, ...], wanted: set[str], alloc: Allocate
    ) -> tuple[dict[str, slice], dict[str, Any]]:
        """Some members of a local sample: its headers read to find them, then each wanted
        member read straight into its slice of ``alloc(their total)``; no bytes object
        and no copy on the way (``synth_video`` + ``meta`` of ~1.2 MB samples, in one
        process, warm: 1.50-1.58k -> 1.79-1.91k samples/s on the 2-core box)."""
        fh = self._open(path)
        found = {
            m: (start, size) for m, start, size in member_spans(fh, path, entry) if m in wanted
        }
        if "json" not in found:
            raise ShardFormatError(f"{path}: sample {entry['key']!r} has no json")
        start, size = found.pop("json")
        raw = os.pread(fh.fileno(), size, start)
        if len(raw) != size:
            raise ShardFormatError(f"{path}: member {entry['key']}.json is truncated")
        meta = overlaid_meta(parse_sample_json(raw, path, entry["key"]), entry)
        places = _pick(found, fields, path, entry)
        spans, total = {}, 0
        for name, (_, size) in places.items():
            spans[name] = slice(total, total + size)
            total += size
        buffer = alloc(total)
        for name, (start, size) in places.items():
            got = pread_into(fh.fileno(), buffer[spans[name]], start)
            if got != size:
                raise ShardFormatError(
                    f"{path}: member {entry['key']}.{_TAR_MEMBERS[name]} is truncated"
                )
            self.bytes_read += size
        return spans, meta

    def advise(self, index: int, fields: tuple[str, ...]) -> None:
        """Start the kernel reading sample ``index``'s byte range (local shards only)."""
        assert self.selection.shard_entries is not None
        if not self.dataset.storage.local or not hasattr(os, "posix_fadvise"):
            return
        path, entry = self.selection.shard_entries[index]
        _, offset, end = entry_range(entry, path)
        os.posix_fadvise(self._open(path).fileno(), offset, end - offset, os.POSIX_FADV_WILLNEED)

    def _open(self, path: str) -> BinaryIO:
        fh = self._files.get(path)
        if fh is not None:
            self._files.move_to_end(path)
            return fh
        fh = open(self.dataset.storage.path(path), "rb")  # noqa: SIM115 - closed when evicted
        if hasattr(os, "posix_fadvise"):  # samples are read by range, often out of order
            os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_RANDOM)
        self._files[path] = fh
        while len(self._files) > OPEN_SHARDS:
            self._files.popitem(last=False)[1].close()
        return fh


def _pick(
    members: Mapping[str, Any], fields: tuple[str, ...], path: str, entry: Any
) -> dict[str, Any]:
    """Each media field's member of a tar sample (``members`` by member name)."""
    out: dict[str, Any] = {}
    for name in fields:
        if name == "meta":
            continue
        member = _TAR_MEMBERS[name]
        if member not in members:
            raise MissingFieldError(
                f"{path}: sample {entry['key']} has no {member}; build with "
                f"output.tar_{'masks' if name == 'masks' else 'background'} = true "
                "or read format='lance'"
            )
        out[name] = members[member]
    return out
