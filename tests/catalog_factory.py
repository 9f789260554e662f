"""Tiny valid catalogs for tests, written into a temporary folder.

Media are generated, not copied, so tests need nothing outside the repo: a
16-frame 64x48 H.264 clip per product and small PNGs. A product given as a
dict may name its own ``video`` / ``images``; those strings go into
``products.csv`` as they are and nothing is created for them, which is how
tests point rows at missing or broken files.
"""

from __future__ import annotations

import csv
import functools
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import av
import numpy as np
import yaml
from PIL import Image

COLUMNS = ("id", "category", "subcategory", "video", "images", "prompt", "first_frame_box")
VIDEO_SIZE = (64, 48)  # width, height of generated clips
VIDEO_FRAMES = 16

# One product of each relation to the first: easy, medium, hard, expert.
DEFAULT_PRODUCTS: tuple[dict[str, str], ...] = (
    {"id": "necklace-1", "category": "Jewelry", "subcategory": "necklace", "prompt": "necklace"},
    {"id": "necklace-2", "category": "jewelry", "subcategory": "Necklace"},
    {"id": "ring-1", "category": "Jewelry", "subcategory": "ring"},
    {"id": "keychain-1", "category": "Accessories", "subcategory": "keychain"},
    {"id": "bear-1", "category": "Toys", "subcategory": "stuffed animal"},
)


@functools.lru_cache(maxsize=4)
def video_bytes(frames: int = VIDEO_FRAMES, size: tuple[int, int] = VIDEO_SIZE) -> bytes:
    """An H.264 mp4 (moov at the end, as PyAV writes it) of a moving gradient; cached per shape."""
    width, height = size
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=8, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        xs = np.linspace(0, 255, width, dtype=np.float32)
        for i in range(frames):
            rgb = np.empty((height, width, 3), dtype=np.uint8)
            rgb[..., 0] = (xs[None, :] + 16 * i) % 256
            rgb[..., 1] = np.linspace(0, 255, height, dtype=np.uint8)[:, None]
            rgb[..., 2] = 40 * (i % 4)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def write_video(
    path: Path, *, frames: int = VIDEO_FRAMES, size: tuple[int, int] = VIDEO_SIZE
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(video_bytes(frames, size))
    return path


def write_audio_only(path: Path, *, seconds: float = 0.5) -> Path:
    """An AAC-only file (no video stream), e.g. ``song.m4a`` or ``voice.mp4``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = 16000
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=rate, layout="mono")
        t = np.arange(int(rate * seconds), dtype=np.float32) / rate
        samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = rate
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def write_image(path: Path, *, size: tuple[int, int] = (32, 24), seed: int = 0) -> Path:
    """A small noisy RGB image (noise keeps PNGs from compressing to a few bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def write_products_csv(
    root: Path, rows: Sequence[Mapping[str, object]], *, encoding: str = "utf-8"
) -> Path:
    path = root / "products.csv"
    with path.open("w", newline="", encoding=encoding) as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({column: row.get(column, "") for column in COLUMNS})
    return path


def make_catalog(
    root: Path,
    products: Sequence[Mapping[str, object]] | None = None,
    *,
    images_per_product: int = 2,
    taxonomy: Mapping[str, object] | None = None,
    encoding: str = "utf-8",
) -> Path:
    """Write a catalog folder at ``root`` and return it.

    Each product needs ``id``, ``category`` and ``subcategory``. Without
    ``video`` it gets ``videos/{id}.mp4``; without ``images`` it gets
    ``images/{id}-{k}.png``. ``images`` may be a list (joined with ';') or a
    string written as is. ``first_frame_box`` may be a 4-tuple or a string.
    ``taxonomy`` writes a ``taxonomy.yaml`` override.
    """
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for index, product in enumerate(DEFAULT_PRODUCTS if products is None else products):
        row = {key: value for key, value in product.items() if key in COLUMNS}
        pid = str(row["id"])
        if "video" not in row:
            write_video(root / "videos" / f"{pid}.mp4")
            row["video"] = f"videos/{pid}.mp4"
        if "images" not in row:
            names = [f"images/{pid}-{k}.png" for k in range(images_per_product)]
            for k, name in enumerate(names):
                write_image(root / name, seed=index * 100 + k)
            row["images"] = names
        if not isinstance(row["images"], str):
            row["images"] = ";".join(str(name) for name in row["images"])
        box = row.get("first_frame_box")
        if box is not None and not isinstance(box, str):
            row["first_frame_box"] = ",".join(str(v) for v in box)
        rows.append(row)
    write_products_csv(root, rows, encoding=encoding)
    if taxonomy is not None:
        (root / "taxonomy.yaml").write_text(yaml.safe_dump(dict(taxonomy)), encoding="utf-8")
    return root
