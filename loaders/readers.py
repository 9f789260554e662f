"""Reading one selected pair's media bytes, from Lance or from a tar shard.

Only requested fields are read. Clip-level media (source, background, masks)
and product cut-outs are shared by many pairs: a bounded LRU cache keeps the
recent ones so consecutive pairs of one clip read its media once. A clip's or a
cut-out's row is found in a key -> row id map of its table, made on first use from
the key column alone: a filtered Lance query per lookup cost ~0.7 ms, as much as
reading the cut-out itself (``tools/bench/compare.py``).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any, BinaryIO

from pvtt.loaders.selection import Selection
from pvtt.loaders.store import BuiltDataset
from pvtt.loaders.tar_reader import RangeBuffer, entry_range, iter_members, parse_sample_json
from pvtt.schemas.masks import MASKS_FILE_EXTENSION

MEDIA_FIELDS = ("synth_video", "source_video", "background_video", "masks", "target_image")
FIELDS = (*MEDIA_FIELDS, "meta")

_CLIP_COLUMNS = {
    "source_video": "source_video",
    "background_video": "background_video",
    "masks": "masks",
}
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
    """Media of selected pairs from the ``pairs``, ``clips`` and ``products`` tables."""

    def __init__(self, dataset: BuiltDataset, selection: Selection, cache_bytes: int) -> None:
        self.selection = selection
        self.pairs = dataset.pairs  # the handle the selection opened
        self.clips = dataset.table("clips")
        self.products = dataset.table("products")
        self.cache = ByteLRU(cache_bytes)
        self.bytes_read = 0
        self._row_ids: dict[str, dict[str, int]] = {}

    def read(self, index: int, fields: tuple[str, ...]) -> tuple[dict[str, bytes], dict[str, Any]]:
        assert self.selection.meta is not None and self.selection.row_ids is not None
        meta = self.selection.row(index)
        out: dict[str, bytes] = {}
        if "synth_video" in fields:
            row_id = int(self.selection.row_ids[index])
            ((_addr, data),) = self.pairs.read_blobs("synth_video", ids=[row_id])
            out["synth_video"] = self._need(data, "synth_video", meta["pair_id"])
        for name, column in _CLIP_COLUMNS.items():
            if name in fields:
                out[name] = self._shared(self.clips, column, "clip_id", meta["clip_id"])
        if "target_image" in fields:
            image = f"{meta['target_id']}__{meta['pair_id'].split('__', 2)[2]}"
            out["target_image"] = self._shared(self.products, "image_rgba", "image_id", image)
        return out, meta

    def _shared(self, table: Any, column: str, key_column: str, key: str) -> bytes:
        cached = self.cache.get((column, key))
        if cached is not None:
            return cached
        row_id = self._row_id(table, key_column, key)
        data = None
        if row_id is not None:
            ((_addr, data),) = table.read_blobs(column, ids=[row_id])
        data = self._need(data, column, key)
        self.cache.put((column, key), data)
        return data

    def _row_id(self, table: Any, key_column: str, key: str) -> int | None:
        """The row id of ``key`` in ``table``; the map is one scan of the key column."""
        ids = self._row_ids.get(key_column)
        if ids is None:
            keys = table.to_table(columns=[key_column], with_row_id=True)
            ids = dict(
                zip(
                    keys.column(key_column).to_pylist(),
                    keys.column("_rowid").to_pylist(),
                    strict=True,
                )
            )
            self._row_ids[key_column] = ids
        return ids.get(key)

    def _need(self, data: bytes | None, column: str, key: str) -> bytes:
        if data is None:
            raise MissingFieldError(f"{key}: {column} is not stored in this dataset")
        self.bytes_read += len(data)
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
        meta = parse_sample_json(members.pop("json"), path, entry["key"])
        out: dict[str, bytes] = {}
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
        return out, meta

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
