"""Reading one selected pair's media bytes, from Lance or from a tar shard.

Only requested fields are read. Clip-level media (source, background, masks)
and product cut-outs are shared by many pairs: a bounded LRU cache keeps the
recent ones so consecutive pairs of one clip read its media once.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

from pvtt.loaders.selection import Selection
from pvtt.loaders.store import BuiltDataset, read_blobs_by_key
from pvtt.schemas.masks import MASKS_FILE_EXTENSION

MEDIA_FIELDS = ("synth_video", "source_video", "background_video", "masks", "target_image")
FIELDS = (*MEDIA_FIELDS, "meta")

_CLIP_COLUMNS = {"source_video": "source_video", "background_video": "background_video", "masks": "masks"}
_TAR_MEMBERS = {
    "synth_video": "synth.mp4",
    "source_video": "source.mp4",
    "background_video": "background.mp4",
    "masks": f"masks.{MASKS_FILE_EXTENSION}",
    "target_image": "target.png",
    "meta": "json",
}


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
        self.pairs = dataset.table("pairs")
        self.clips = dataset.table("clips")
        self.products = dataset.table("products")
        self.cache = ByteLRU(cache_bytes)
        self.bytes_read = 0

    def read(self, index: int, fields: tuple[str, ...]) -> tuple[dict[str, bytes], dict[str, Any]]:
        assert self.selection.meta is not None and self.selection.row_ids is not None
        meta = self.selection.row(index)
        out: dict[str, bytes] = {}
        if "synth_video" in fields:
            row_id = int(self.selection.row_ids[index])
            (_addr, data), = self.pairs.read_blobs("synth_video", ids=[row_id])
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
        data = self._need(read_blobs_by_key(table, column, key_column, [key]).get(key), column, key)
        self.cache.put((column, key), data)
        return data

    def _need(self, data: bytes | None, column: str, key: str) -> bytes:
        if data is None:
            raise MissingFieldError(f"{key}: {column} is not stored in this dataset")
        self.bytes_read += len(data)
        return data


class TarReader:
    """Media of selected pairs read by byte range from their tar shards."""

    def __init__(self, dataset: BuiltDataset, selection: Selection) -> None:
        self.dataset = dataset
        self.selection = selection
        self.bytes_read = 0

    def read(self, index: int, fields: tuple[str, ...]) -> tuple[dict[str, bytes], dict[str, Any]]:
        assert self.selection.shard_entries is not None
        path, entry = self.selection.shard_entries[index]
        wanted = {_TAR_MEMBERS[f] for f in fields} | {"json"}
        members = self.dataset.read_sample(path, entry, wanted)
        self.bytes_read += sum(len(v) for v in members.values())
        meta = json.loads(members.pop("json"))
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
