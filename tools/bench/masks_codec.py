"""Benchmark the mask-sequence codecs against PNG per frame, on real-like masks.

Run ``python -m pvtt.tools.bench.masks_codec``. Each codec of
:data:`pvtt.schemas.masks.MASK_CODECS` is measured in the same run as the baseline,
1-bit PNG per frame (Pillow), and reported as ratios to it: ``size`` below 1 is smaller
than PNG, ``decode`` above 1 decodes faster. Mask sources:

- ``blob``: a smooth shape moving, turning and growing over 720p frames (needs no data);
- ``tracked``: masks from the CPU segmenter (optical flow + GrabCut) on a real video,
  by default the mug of ``sam2/04_coffee.mp4`` in the test media (tests/data) when present;
- ``--masks FILE.npy``: any bool ``T x H x W`` array you saved.
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable
from itertools import islice
from pathlib import Path

import av
import numpy as np
from PIL import Image

from pvtt.builder.backends.cpu_segmenter import TrackerGrabCutSegmenter
from pvtt.builder.stages.protocols import Detection
from pvtt.schemas.masks import MASK_CODECS, decode_masks, encode_masks
from pvtt.tools.bench.media import test_media_dir

DEFAULT_VIDEO = "sam2/04_coffee.mp4"
DEFAULT_BOX = (800.0, 415.0, 985.0, 615.0)
"""The blue mug on the first frame of ``sam2/04_coffee.mp4`` (1280x720)."""


def blob_masks(frames: int = 150, size: tuple[int, int] = (1280, 720), seed: int = 0) -> np.ndarray:
    """A smooth random outline that moves, turns and grows: a stand-in for a tracked product."""
    width, height = size
    rng = np.random.default_rng(seed)
    harmonics = rng.normal(0, 0.08, (6, 2)) / np.arange(1, 7)[:, None]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    out = np.empty((frames, height, width), dtype=bool)
    for t in range(frames):
        u = t / max(frames - 1, 1)
        cx, cy = width * (0.3 + 0.4 * u), height * (0.5 + 0.1 * np.sin(2 * np.pi * u))
        radius = 0.2 * height * (1 + 0.3 * u)
        angle = np.arctan2(ys - cy, xs - cx) - 1.5 * u
        k = np.arange(1, 7)[:, None, None]
        wobble = (harmonics[:, 0, None, None] * np.cos(k * angle)).sum(0)
        wobble += (harmonics[:, 1, None, None] * np.sin(k * angle)).sum(0)
        out[t] = np.hypot(xs - cx, ys - cy) < radius * (1 + wobble)
    return out


def tracked_masks(video: Path, box: tuple[float, float, float, float], frames: int) -> np.ndarray:
    """The CPU segmenter's masks of the object in ``box`` over the first ``frames`` frames."""
    with av.open(str(video)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in islice(container.decode(video=0), frames)]
    track = TrackerGrabCutSegmenter().segment(np.stack(decoded), Detection(0, box, 1.0))
    return track.masks


def png_frames(masks: np.ndarray) -> list[bytes]:
    out = []
    for frame in masks:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def decode_png_frames(frames: list[bytes]) -> np.ndarray:
    return np.stack([np.asarray(Image.open(io.BytesIO(f)).convert("1")) for f in frames])


def _best_time(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure(masks: np.ndarray, repeat: int = 3) -> list[dict[str, float | str]]:
    """Size, encode and decode time of PNG per frame and of every codec, checking each round trip."""
    pngs = png_frames(masks)
    if not np.array_equal(decode_png_frames(pngs), masks):
        raise AssertionError("PNG per frame did not round-trip")
    png_size = sum(len(p) for p in pngs)
    png_decode = _best_time(lambda: decode_png_frames(pngs), repeat)
    rows: list[dict[str, float | str]] = [
        {
            "codec": "png-per-frame",
            "bytes": png_size,
            "size": 1.0,
            "decode_ms": png_decode * 1e3,
            "decode": 1.0,
            "encode_ms": _best_time(lambda: png_frames(masks), 1) * 1e3,
        }
    ]
    for codec in MASK_CODECS:
        data = encode_masks(masks, codec)
        if not np.array_equal(decode_masks(data), masks):
            raise AssertionError(f"codec {codec} did not round-trip")
        decode = _best_time(lambda data=data: decode_masks(data), repeat)
        rows.append(
            {
                "codec": codec,
                "bytes": len(data),
                "size": len(data) / png_size,
                "decode_ms": decode * 1e3,
                "decode": png_decode / decode,
                "encode_ms": _best_time(lambda codec=codec: encode_masks(masks, codec), 1) * 1e3,
            }
        )
    return rows


def _print(name: str, masks: np.ndarray, rows: list[dict[str, float | str]]) -> None:
    t, h, w = masks.shape
    print(f"\n{name}: {t} x {h} x {w}, {masks.mean():.1%} foreground")
    print(
        f"{'codec':<20}{'bytes':>12}{'size/PNG':>10}{'decode ms':>11}{'speed/PNG':>11}{'encode ms':>11}"
    )
    for r in rows:
        print(
            f"{r['codec']:<20}{r['bytes']:>12,}{r['size']:>10.3f}{r['decode_ms']:>11.1f}"
            f"{r['decode']:>10.1f}x{r['encode_ms']:>11.1f}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--video", type=Path, help=f"video to track (default: shared data {DEFAULT_VIDEO})"
    )
    parser.add_argument("--box", help="x0,y0,x1,y1 of the object on the video's first frame")
    parser.add_argument("--frames", type=int, default=150, help="frames to track and to synthesise")
    parser.add_argument(
        "--masks", type=Path, action="append", default=[], help="bool T x H x W .npy"
    )
    parser.add_argument("--repeat", type=int, default=3, help="timing repeats (best is kept)")
    args = parser.parse_args(argv)

    if args.video is not None and args.box is None:
        parser.error("--video needs --box")
    video = args.video or test_media_dir() / DEFAULT_VIDEO
    box = tuple(float(v) for v in args.box.split(",")) if args.box else DEFAULT_BOX
    if len(box) != 4:
        parser.error(f"--box needs four numbers x0,y0,x1,y1, got {args.box!r}")
    sources: dict[str, Callable[[], np.ndarray]] = {"blob": lambda: blob_masks(args.frames)}
    if video.is_file():
        sources[f"tracked {video.name}"] = lambda: tracked_masks(video, box, args.frames)
    else:
        print(f"(no video at {video}: skipping tracked masks; pass --video and --box)")
    for path in args.masks:
        sources[str(path)] = lambda path=path: np.load(path, allow_pickle=False).astype(bool)
    for name, load in sources.items():
        masks = load()
        _print(name, masks, measure(masks, args.repeat))


if __name__ == "__main__":
    main()
