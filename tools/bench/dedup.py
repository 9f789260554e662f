"""Benchmark what near-duplicate detection (``pairs.near_duplicates``) adds to a build.

Run ``python -m pvtt.tools.bench.dedup [--repeat N] [--json FILE]``. Every figure is a
ratio against the work the build does anyway on the same input, measured in the same run:

- **shots**: fingerprinting the shots of ``sam2/04_coffee.mp4`` (the shared test data's
  real 720p clip, cut into three 3 s shots: first, middle and last frame of each, from
  one decoding pass at 128 px) over detecting the shots of the same video (PySceneDetect, as ``pvtt plan``
  and the build run it once per video);
- **photos**: fingerprinting a decoded product photo (``rembg/car-2.jpg``) over decoding
  it, and over cutting it out with the CPU matter;
- **compare**: comparing one photo with 5,000 kept ones (the vectorised search that finds
  copies across a catalog) over fingerprinting one photo.

Timings are the median of ``--repeat`` runs, the measured work and its baseline taking
turns (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pvtt.builder.near_duplicates import shot_prints
from pvtt.builder.products import load_rgb
from pvtt.builder.registry import create_backend
from pvtt.builder.stages.dedup import Fingerprint, duplicate_photos, fingerprint
from pvtt.builder.stages.shots import Shot, ShotConfig, detect_shots
from pvtt.schemas.config import BackendConfig, BuildConfig
from pvtt.tools.bench.media import test_media_dir

SHOTS = ((0, 90), (90, 180), (180, 270))
"""Three 3 s shots of ``04_coffee.mp4`` (29.97 fps), as frame ranges."""
KEPT = 5000


def _seconds(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _median(fn: Callable[[], Any], repeat: int) -> float:
    return statistics.median(_seconds(fn) for _ in range(repeat))


def _ratio(fn: Callable[[], Any], baseline: Callable[[], Any], repeat: int) -> float:
    """Median time of ``fn`` over that of ``baseline``, the two taking turns to go first,
    so that a change in the machine's load weighs on both alike."""
    times: tuple[list[float], list[float]] = ([], [])
    for i in range(repeat):
        for which in (0, 1) if i % 2 == 0 else (1, 0):
            times[which].append(_seconds((fn, baseline)[which]))
    return statistics.median(times[0]) / statistics.median(times[1])


def measure(repeat: int) -> dict[str, float]:
    media = test_media_dir()
    video = media / "sam2" / "04_coffee.mp4"
    photo = media / "rembg" / "car-2.jpg"
    config = BuildConfig()
    shots = [Shot(a, b, a / 29.97, b / 29.97) for a, b in SHOTS]
    shots_x_detection = _ratio(
        lambda: shot_prints(video, shots, config),
        lambda: detect_shots(video, ShotConfig(min_frames=1)),
        repeat,
    )
    data = photo.read_bytes()
    image = load_rgb(data, str(photo))
    photo_x_decode = _ratio(lambda: fingerprint(image), lambda: load_rgb(data, str(photo)), repeat)
    matter = create_backend("matter", BackendConfig(), "cpu")
    photo_x_matte = _ratio(lambda: fingerprint(image), lambda: matter.matte(image), repeat)
    one = _median(lambda: fingerprint(image), max(repeat, 20))
    rng = np.random.default_rng(0)
    kept = [Fingerprint(int(h), tuple(rng.integers(0, 256, 48))) for h in
            rng.integers(0, 2**63, KEPT, dtype=np.int64)]  # fmt: skip
    owners = [str(i) for i in range(KEPT)]
    search = _median(lambda: duplicate_photos(range(KEPT), owners, kept, 6), 1) / KEPT
    return {
        "shots_x_detection": shots_x_detection,
        "photo_x_decode": photo_x_decode,
        "photo_x_matte": photo_x_matte,
        "compare_x_fingerprint": search / one,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per timing (median)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures here")
    args = parser.parse_args(argv)
    figures = measure(args.repeat)
    print(f"shots:   fingerprinting 3 shots = {figures['shots_x_detection']:.3f}x shot detection")
    print(f"photos:  fingerprint = {figures['photo_x_decode']:.3f}x decoding the photo, "
          f"{figures['photo_x_matte']:.4f}x its CPU cut-out")  # fmt: skip
    print(f"compare: one photo against {KEPT:,} kept = "
          f"{figures['compare_x_fingerprint']:.3f}x fingerprinting it (per photo, averaged)")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
