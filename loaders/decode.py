"""Decoding of the media a dataset stores: mp4 clips, PNG images, mask sequences."""

from __future__ import annotations

import io

import av
import numpy as np
from PIL import Image


class MediaDecodeError(ValueError):
    """Stored media bytes that do not decode."""


def decode_video(data: bytes, *, what: str = "video") -> np.ndarray:
    """Every frame of an mp4 as RGB uint8 ``T x H x W x 3``."""
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    except (av.error.FFmpegError, IndexError, ValueError) as exc:
        raise MediaDecodeError(f"{what}: not a decodable video: {exc}") from None
    if not frames:
        raise MediaDecodeError(f"{what}: video has no frames")
    return np.stack(frames)


def decode_image(data: bytes, *, mode: str | None = None, what: str = "image") -> np.ndarray:
    """An encoded image as a uint8 array (``mode="RGBA"`` to force 4 channels)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return np.asarray(img.convert(mode) if mode else img)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise MediaDecodeError(f"{what}: not a decodable image: {exc}") from None
