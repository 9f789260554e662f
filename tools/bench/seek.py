"""Benchmark the keyframe interval: storage of each interval against random-window decoding.

Run ``python -m pvtt.tools.bench.seek [--quick] [--json FILE]``. Real 720p clips (3.0-5.0
s of ``sam2/04_coffee.mp4`` of the shared test data, as ``tools/bench/loader.py`` uses)
are encoded as the builder encodes them (:func:`pvtt.builder.video.encode_mp4` at the
build's default crf) with each keyframe interval, and the same random 16-frame windows are
decoded from every encoding. Every figure is a ratio against a baseline measured in the
same run:

- **bytes**: the encoding's size over the size at interval 250 (x264's default, which the
  builder used before intervals were configurable);
- **x plain**: window frames/s of the loader's decoder (:func:`decode_frames`, as
  ``PairDataset`` calls it) over plain PyAV decoding exactly those frames from the same
  bytes: ``container.seek`` to the keyframe at or before the window, decode to its last
  frame, convert the window's frames to rgb24 (``thread_type="AUTO"`` as the loader sets
  it); ``x kept`` the same with the frames written into one array, as a loader returns them;
- **x today**: the loader's window rate over its rate on the interval-250 encodings;
- **x all**: the loader's window rate over plain PyAV decoding every frame of the clip in
  order (the issue's "0.32x" figure).

The loader and the baselines run one after the other on each window (taking turns to go
first), and the intervals take turns window by window, so that a change in the machine's
load weighs on all alike (the machine is shared).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np

from pvtt.builder.video import encode_mp4, keyframe_index, read_frames
from pvtt.loaders.frames import decode_frames
from pvtt.schemas.config import ClipConfig
from pvtt.tools.bench.media import test_media_dir

KB = 1e3
SEGMENTS = ((0, 135), (135, 150), (60, 105), (195, 90))
"""(first frame, frames) of ``04_coffee.mp4`` (287 frames at 29.97 fps): 3.0-5.0 s clips."""
INTERVALS = (250, 32, 16, 8, 4)
BASE_INTERVAL = 250
WINDOW = 16
CRF = ClipConfig.crf


def plain_window(data: bytes, wanted: np.ndarray, *, keep: bool = False) -> int:
    """Plain PyAV: seek to the keyframe at or before ``wanted[0]``, decode to ``wanted[-1]``,
    convert the frames of ``wanted`` (ascending, contiguous) to rgb24; returns how many.

    Frame ``i`` is the one whose timestamp is ``i`` frame durations after the stream's
    start (constant-rate clips, as the builder writes them). ``keep`` writes the frames
    into one array, as a loader returns them.
    """
    first, last = int(wanted[0]), int(wanted[-1])
    count = 0
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        step = 1 / (stream.average_rate * stream.time_base)
        origin = stream.start_time or 0
        out = np.empty((len(wanted), stream.height, stream.width, 3), np.uint8) if keep else None
        container.seek(origin + round(first * step), stream=stream, backward=True)
        for frame in container.decode(stream):
            index = round((frame.pts - origin) / step)
            if index < first:
                continue
            image = frame.to_ndarray(format="rgb24")
            if out is not None:
                out[count] = image
            count += 1
            if index >= last:
                break
    return count


def plain_all(data: bytes) -> int:
    """Plain PyAV: every frame to rgb24, in order; returns the frame count."""
    count = 0
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            frame.to_ndarray(format="rgb24")
            count += 1
    return count


def _timed(fn: Callable[[], int]) -> tuple[float, int]:
    start = time.perf_counter()
    count = fn()
    return time.perf_counter() - start, count


def encode_clips(video: Path, segments: tuple[tuple[int, int], ...]) -> list[dict[str, Any]]:
    """Each segment decoded once and encoded with every interval."""
    clips = []
    for start, length in segments:
        frames, fps = read_frames(video, start, start + length)
        encoded = {}
        for interval in INTERVALS:
            data = encode_mp4(frames, fps, crf=CRF, keyframe_interval=interval)
            encoded[interval] = {"data": data, "keyframes": len(keyframe_index(io.BytesIO(data)).frames)}
        clips.append({"frames": len(frames), "encoded": encoded})
    return clips


def measure(clips: list[dict[str, Any]], windows: int, seed: int) -> dict[int, dict[str, Any]]:
    """Seconds and frames of the loader and each baseline, per interval."""
    rng = np.random.default_rng(seed)
    kinds = ("loader", "plain", "kept")
    totals = {i: {k: [0.0, 0] for k in (*kinds, "all")} for i in INTERVALS}
    for clip in clips:
        for interval in INTERVALS:  # every frame once per clip and interval
            took, count = _timed(lambda d=clip["encoded"][interval]["data"]: plain_all(d))
            totals[interval]["all"][0] += took
            totals[interval]["all"][1] += count
        starts = rng.integers(0, clip["frames"] - WINDOW + 1, size=windows)
        for turn, start in enumerate(starts):
            wanted = np.arange(start, start + WINDOW, dtype=np.int64)
            for interval in INTERVALS:
                data = clip["encoded"][interval]["data"]
                runs = [
                    ("loader", lambda d=data, w=wanted: len(decode_frames(d, w))),
                    ("plain", lambda d=data, w=wanted: plain_window(d, w)),
                    ("kept", lambda d=data, w=wanted: plain_window(d, w, keep=True)),
                ]
                for kind, fn in runs if turn % 2 else runs[::-1]:  # neither always first
                    took, count = _timed(fn)
                    if count != WINDOW:
                        raise RuntimeError(f"{kind} decoded {count} frames of a {WINDOW}-frame window")
                    totals[interval][kind][0] += took
                    totals[interval][kind][1] += count
    rows: dict[int, dict[str, Any]] = {}
    for interval in INTERVALS:
        row: dict[str, Any] = {
            "bytes": sum(len(c["encoded"][interval]["data"]) for c in clips),
            "keyframes": sum(c["encoded"][interval]["keyframes"] for c in clips),
        }
        for kind, (seconds, count) in totals[interval].items():
            row[f"{kind}_s"], row[f"{kind}_frames"] = seconds, count
            row[f"{kind}_fps"] = count / seconds
        rows[interval] = row
    base = rows[BASE_INTERVAL]
    for row in rows.values():
        row["ratio_bytes"] = row["bytes"] / base["bytes"]
        row["ratio_vs_plain"] = row["loader_fps"] / row["plain_fps"]
        row["ratio_vs_kept"] = row["loader_fps"] / row["kept_fps"]
        row["ratio_vs_today"] = row["loader_fps"] / base["loader_fps"]
        row["ratio_vs_all"] = row["loader_fps"] / row["all_fps"]
    return rows


def report(rows: dict[int, dict[str, Any]], clips: list[dict[str, Any]], windows: int) -> None:
    frames = [c["frames"] for c in clips]
    print(
        f"{len(clips)} clips of {', '.join(map(str, frames))} frames 1280x720 H.264 crf {CRF}, "
        f"{windows} random {WINDOW}-frame windows each, decoded from every encoding\n"
        "   bytes:   size / size at interval 250\n"
        "   x plain: loader frames/s / plain PyAV seeking to the keyframe and decoding exactly "
        "the window (x kept: frames kept in one array)\n"
        "   x today: loader frames/s / loader frames/s at interval 250\n"
        "   x all:   loader frames/s / plain PyAV decoding every frame in order"
    )
    print(
        f"{'interval':>8} {'KB/clip':>8} {'bytes':>6} {'keys/clip':>9} {'loader f/s':>10} "
        f"{'x plain':>8} {'x kept':>7} {'x today':>8} {'x all':>6}"
    )
    for interval, r in rows.items():
        print(
            f"{interval:>8} {r['bytes'] / len(clips) / KB:>8.0f} {r['ratio_bytes']:>6.2f} "
            f"{r['keyframes'] / len(clips):>9.1f} {r['loader_fps']:>10.0f} "
            f"{r['ratio_vs_plain']:>8.2f} {r['ratio_vs_kept']:>7.2f} "
            f"{r['ratio_vs_today']:>8.2f} {r['ratio_vs_all']:>6.2f}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 clips, 8 windows each")
    parser.add_argument("--clips", type=int, help="clips (default 4, quick 2)")
    parser.add_argument("--windows", type=int, help="random windows per clip (default 24, quick 8)")
    parser.add_argument("--data", type=Path, default=test_media_dir(), help="the test media (default: tests/data of the checkout)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every figure here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    n_clips = args.clips or (2 if args.quick else len(SEGMENTS))
    windows = args.windows or (8 if args.quick else 24)
    video = args.data / "sam2" / "04_coffee.mp4"
    if not video.is_file():
        parser.error(f"{video}: missing; pass --data with the test media folder (tests/data of a checkout)")
    load_start = os.getloadavg()
    start = time.perf_counter()
    clips = encode_clips(video, SEGMENTS[:n_clips])
    rows = measure(clips, windows, args.seed)
    report(rows, clips, windows)
    total = time.perf_counter() - start
    load_end = os.getloadavg()
    print(
        f"\ntotal {total:.0f} s; load average (1 min) {load_start[0]:.1f} at the start, "
        f"{load_end[0]:.1f} at the end on {os.cpu_count()} cores (other jobs share this machine)"
    )
    if args.json is not None:
        results = {
            "argv": sys.argv[1:],
            "clips": [c["frames"] for c in clips],
            "windows": windows,
            "intervals": {str(k): v for k, v in rows.items()},
            "total_s": total,
            "load_avg_start": load_start,
            "load_avg_end": load_end,
        }
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
