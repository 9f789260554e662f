"""The media ``pvtt review`` shows for a pair, as bytes a browser plays without help.

The stored mp4s (source, background, synthesized) are served exactly as stored: they
are H.264 with the index first, which a browser plays and seeks by byte ranges. The
masks are lossless arrays no browser reads, so they are drawn over the source clip
(:func:`pvtt.tools.preview.mask_overlay`) and encoded to an mp4 once per pair. The
target cut-out is its stored PNG. Nothing here writes to the dataset.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from pvtt.builder.video import encode_mp4
from pvtt.loaders.frames import decode_frames, decode_masks_at, frame_count
from pvtt.loaders.pair_media import pair_media
from pvtt.loaders.store import BuiltDataset
from pvtt.tools import preview

KINDS: dict[str, str] = {
    "source": "video/mp4",
    "masks": "video/mp4",
    "background": "video/mp4",
    "synth": "video/mp4",
    "target": "image/png",
}
"""What the page shows of a pair, in panel order, and each one's MIME type."""

MASK_HEIGHT = 360
"""Height the mask overlay is drawn at (never above the source's): enough to judge a
mask's edge, and a 720p clip's overlay encodes in a fraction of the time."""
CACHED_ITEMS = 24
"""Media kept in memory: a few pairs' worth, so the browser's range requests for the
pair on screen, and going back a pair or two, read the dataset once."""


class ReviewMedia:
    """Media of a dataset's pairs by kind, read once and kept for a few pairs.

    Safe to call from the server's request threads: reads go one at a time (the Lance
    readers of :mod:`pvtt.loaders.pair_media` keep per-clip state).
    """

    def __init__(self, dataset: BuiltDataset) -> None:
        self._media = pair_media(dataset)
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, str], bytes | None] = OrderedDict()

    def get(self, row: dict[str, Any], kind: str) -> bytes | None:
        """The ``kind`` of pair ``row`` (None when the dataset does not hold it)."""
        if kind not in KINDS:
            raise ValueError(f"unknown media kind {kind!r}; known: {', '.join(KINDS)}")
        key = (row["pair_id"], kind)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            data = self._read(row, kind)
            self._cache[key] = data
            while len(self._cache) > CACHED_ITEMS:
                self._cache.popitem(last=False)
            return data

    def _read(self, row: dict[str, Any], kind: str) -> bytes | None:
        media = self._media
        if kind == "synth":
            return media.synth(row)
        if kind == "source":
            return media.source_video(row)
        if kind == "background":
            return media.background(row)
        if kind == "target":
            return media.target_rgba(row)
        source, masks = media.source_video(row), media.masks(row)
        if not source or not masks:
            return None
        return mask_video(source, masks, float(row["fps"]), what=row["pair_id"])


def mask_video(source: bytes, masks: bytes, fps: float, *, what: str = "pair") -> bytes:
    """The source clip with its masks drawn over it (tint and outline), as an H.264 mp4."""
    count = frame_count(source, what=f"{what}: source_video")
    indices = np.arange(count, dtype=np.int64)
    probe = decode_frames(source, indices[:1], what=f"{what}: source_video")
    height, width = probe.shape[2:]
    if height > MASK_HEIGHT:
        width, height = round(width * MASK_HEIGHT / height), MASK_HEIGHT
    size = (height - height % 2, width - width % 2)
    frames = decode_frames(source, indices, size=size, what=f"{what}: source_video")
    frames = frames.permute(0, 2, 3, 1).numpy()
    mask_frames = decode_masks_at(masks, indices, size=size, what=f"{what}: masks").numpy()
    return encode_mp4(preview.mask_overlay(frames, mask_frames), fps)
