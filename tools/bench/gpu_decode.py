"""Benchmark 16-frame window decoding on the GPU (NVDEC) against the CPU path, on a CUDA node.

Run ``python -m pvtt.tools.bench.gpu_decode [--quick] [--json FILE]`` where torch sees a
GPU and torchcodec loads (see the README, "Decoding on the GPU"). Real 720p clips (3.0-5.0 s
of ``sam2/04_coffee.mp4``, as ``tools/bench/seek.py`` uses) are encoded as the builder
encodes them (keyframe every ``clip.keyframe_interval`` frames, index at the front), and the
same random 16-frame windows are decoded by every path, the frames ending on the GPU, where
training wants them:

- **cpu, GOP 250**: the CPU decoder on the same clips encoded as builds encoded them before
  ``clip.keyframe_interval`` (a keyframe every 250 frames, so a window decodes from the
  clip's start): the loader's window rate before this work, in one process;
- **cpu**: the loader's CPU decoder (:func:`pvtt.loaders.frames.decode_frames`, as
  ``PairDataset`` calls it), then a copy to the GPU, in one process; and in a pool of
  ``--processes`` processes (default: every core), the rate a DataLoader with that many
  workers could reach at best (the copy to the GPU left out there);
- **pynvvideocodec**, **torchcodec-beta**, **torchcodec-ffmpeg**: NVDEC through
  :func:`pvtt.loaders.gpu_decode.decode_frames_on_device` with each decoder (torchcodec with
  its own NVDEC interface or FFmpeg's), one window at a time and from ``--threads`` threads
  at once (NVDEC has several engines).

With ``--loader``, the same comparison end to end: a Lance dataset of ``--pairs`` pairs
(``tools/bench/loader.py``'s clips and pairs) read through a ``DataLoader`` with each of
``--workers``: ``PairDataset`` decoding in the workers (frames then copied to the GPU)
against ``PairDataset(decode=False)`` with the windows decoded on the GPU by
:func:`pvtt.loaders.gpu_decode.decode_on_device` (``--threads``' largest), in samples/s.

Every rate is also given as a ratio to the single-process CPU rate measured in the same
run. A path that does not load is reported with its error instead of a figure. The GPU
frames are compared with the CPU frames of the same window (mean absolute difference in
8-bit levels): hardware decoders round the colour conversion their own way.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from pvtt.builder.video import encode_mp4, read_frames
from pvtt.builder.writer import DatasetWriter
from pvtt.loaders.dataset import PairDataset
from pvtt.loaders.frames import decode_frames
from pvtt.loaders.gpu_decode import decode_frames_on_device, decode_on_device
from pvtt.schemas.config import ClipConfig
from pvtt.tools.bench.loader import load_cutouts, make_clips, make_samples
from pvtt.tools.bench.media import test_media_dir

WINDOW = 16
SEGMENTS = ((0, 135), (135, 150), (60, 105), (195, 90))
"""(first frame, frames) of ``04_coffee.mp4`` (287 frames at 29.97 fps): 3.0-5.0 s clips."""

OLD_KEYFRAME_INTERVAL = 250
"""x264's default GOP, which builds used before ``clip.keyframe_interval``: the issue's "today"."""
GPU_PATHS = (
    ("pynvvideocodec", "pynvvideocodec", "beta"),
    ("torchcodec-beta", "torchcodec", "beta"),
    ("torchcodec-ffmpeg", "torchcodec", "ffmpeg"),
)
"""(row name, ``decoder``, ``cuda_backend``) of the GPU paths."""

_CLIPS: list[bytes] = []


def encode_clips(video: Path, keyframe_interval: int) -> tuple[list[bytes], list[int]]:
    """The segments encoded as a build encodes clips; their bytes and frame counts."""
    clips, counts = [], []
    for start, length in SEGMENTS:
        frames, fps = read_frames(video, start, start + length)
        clips.append(
            encode_mp4(frames, fps, crf=ClipConfig.crf, keyframe_interval=keyframe_interval)
        )
        counts.append(len(frames))
    return clips, counts


def windows(counts: list[int], per_clip: int, seed: int) -> list[tuple[int, np.ndarray]]:
    """(clip, frame indices) of random 16-frame windows, interleaved across clips."""
    rng = np.random.default_rng(seed)
    starts = [rng.integers(0, n - WINDOW + 1, size=per_clip) for n in counts]
    return [
        (c, np.arange(starts[c][i], starts[c][i] + WINDOW, dtype=np.int64))
        for i in range(per_clip)
        for c in range(len(counts))
    ]


def _pool_init(clips: list[bytes]) -> None:
    torch.set_num_threads(1)
    _CLIPS[:] = clips


def _pool_window(job: tuple[int, np.ndarray]) -> int:
    return len(decode_frames(_CLIPS[job[0]], job[1]))


def _rate(fn: Callable[[], int], repeats: int) -> float:
    """Items per second of ``fn`` (which returns how many it made): best of ``repeats``."""
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        frames = fn()
        best = max(best, frames / (time.perf_counter() - start))
    return best


def measure(args: argparse.Namespace) -> dict[str, Any]:
    video = test_media_dir() / "sam2" / "04_coffee.mp4"
    clips, counts = encode_clips(video, ClipConfig.keyframe_interval)
    jobs = windows(counts, args.windows, args.seed)
    device = torch.device("cuda")
    rows: dict[str, Any] = {}

    def cpu_one(clips: list[bytes] = clips) -> int:
        for c, idx in jobs:
            decode_frames(clips[c], idx).to(device, non_blocking=True)
        torch.cuda.synchronize()
        return len(jobs) * WINDOW

    cpu_one()  # warm-up: CUDA context, decoder libraries
    rows["cpu, 1 process"] = {"fps": _rate(cpu_one, args.repeats)}
    before, _ = encode_clips(video, OLD_KEYFRAME_INTERVAL)
    rows[f"cpu, 1 process, GOP {OLD_KEYFRAME_INTERVAL}"] = {
        "fps": _rate(lambda: cpu_one(before), args.repeats)
    }
    with ProcessPoolExecutor(args.processes, initializer=_pool_init, initargs=(clips,)) as pool:
        list(pool.map(_pool_window, jobs[: args.processes]))  # start every worker
        rows[f"cpu, {args.processes} processes"] = {
            "fps": _rate(lambda: sum(pool.map(_pool_window, jobs, chunksize=4)), args.repeats)
        }
    reference = {i: decode_frames(clips[c], idx) for i, (c, idx) in enumerate(jobs[:8])}
    for name, decoder, backend in GPU_PATHS:

        def gpu(
            job: tuple[int, np.ndarray], decoder: str = decoder, backend: str = backend
        ) -> torch.Tensor:
            return decode_frames_on_device(
                clips[job[0]], job[1], device=device, decoder=decoder, cuda_backend=backend
            )

        try:
            diffs = [
                (gpu(jobs[i]).cpu().int() - reference[i].int()).abs().float().mean().item()
                for i in reference
            ]
        except (ImportError, RuntimeError, ValueError) as exc:  # the row's finding
            rows[name] = {"error": f"{type(exc).__name__}: {exc}"[:400]}
            continue

        def one(gpu: Callable[..., torch.Tensor] = gpu) -> int:
            for job in jobs:
                gpu(job)
            torch.cuda.synchronize()
            return len(jobs) * WINDOW

        rows[f"{name}, 1 stream"] = {
            "fps": _rate(one, args.repeats),
            "mean_abs_diff": float(np.mean(diffs)),
        }
        for threads in args.threads:
            with ThreadPoolExecutor(threads) as pool:

                def many(gpu: Callable[..., torch.Tensor] = gpu, pool: Any = pool) -> int:
                    for _ in pool.map(gpu, jobs):
                        pass
                    torch.cuda.synchronize()
                    return len(jobs) * WINDOW

                many()
                rows[f"{name}, {threads} threads"] = {"fps": _rate(many, args.repeats)}
    base = rows["cpu, 1 process"]["fps"]
    before = rows[f"cpu, 1 process, GOP {OLD_KEYFRAME_INTERVAL}"]["fps"]
    for row in rows.values():
        if "fps" in row:
            row["x_cpu"], row["x_before"] = row["fps"] / base, row["fps"] / before
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(device),
        "cores": os.cpu_count(),
        "windows": len(jobs),
        "clips": [{"frames": n, "bytes": len(b)} for n, b in zip(counts, clips, strict=True)],
        "rows": rows,
    }


def measure_loader(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Samples/s through a DataLoader: decoded in the workers, or bytes there and NVDEC here."""
    media = test_media_dir()
    clips = make_clips(media / "sam2" / "04_coffee.mp4", SEGMENTS)
    samples = make_samples(args.pairs, clips, load_cutouts(media / "rembg"), seed=args.seed)
    out = root / "dataset"
    with DatasetWriter(out, formats=("lance",)) as writer:
        for sample in samples:
            writer.write(sample)
    device = torch.device("cuda")
    common = {"fields": ("synth_video",), "passed": None, "num_frames": WINDOW, "seed": args.seed}
    threads = max(args.threads)
    rows: dict[str, Any] = {}
    for workers in args.workers:

        def cpu(workers: int = workers) -> int:
            loader = DataLoader(PairDataset(out, **common), batch_size=None, num_workers=workers)
            count = 0
            for sample in loader:
                sample["synth_video"].to(device, non_blocking=True)
                count += 1
            torch.cuda.synchronize()
            return count

        def gpu(workers: int = workers) -> int:
            dataset = PairDataset(out, decode=False, **common)
            loader = DataLoader(dataset, batch_size=None, num_workers=workers)
            count = sum(1 for _ in decode_on_device(loader, device=device, threads=threads))
            torch.cuda.synchronize()
            return count

        rows[f"{workers} workers, decoded there"] = {"samples_s": _rate(cpu, args.repeats)}
        rows[f"{workers} workers, bytes; NVDEC x{threads}"] = {
            "samples_s": _rate(gpu, args.repeats)
        }
    return {"pairs": len(samples), "rows": rows}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer windows and repeats")
    parser.add_argument("--windows", type=int, help="windows per clip (default 40, quick 10)")
    parser.add_argument("--repeats", type=int, help="timed passes, best kept (default 3, quick 2)")
    parser.add_argument("--processes", type=int, default=os.cpu_count(), help="CPU pool size")
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[4, 8], help="GPU decode threads to try"
    )
    parser.add_argument("--loader", action="store_true", help="also measure through PairDataset")
    parser.add_argument("--pairs", type=int, default=96, help="pairs of the --loader dataset")
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[4, 8], help="DataLoader workers for --loader"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every figure here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.windows = args.windows or (10 if args.quick else 40)
    args.repeats = args.repeats or (2 if args.quick else 3)
    if not torch.cuda.is_available():
        sys.exit("gpu_decode: torch sees no GPU here; run it on a CUDA node")
    results = measure(args)
    if args.loader:
        with tempfile.TemporaryDirectory(prefix="pvtt-gpu-decode-") as tmp:
            results["loader"] = measure_loader(args, Path(tmp))
    print(
        f"{results['device']}, {results['cores']} cores, {results['windows']} windows of {WINDOW} frames"
    )
    print("x cpu: over the CPU decoder in one process; x before: over it on GOP-250 clips")
    print(f"{'path':<30}{'frames/s':>10}{'x cpu':>8}{'x before':>10}  notes")
    for name, row in results["rows"].items():
        if "error" in row:
            print(f"{name:<30}{'-':>10}{'-':>8}{'-':>10}  {row['error']}")
        else:
            diff = f"mean |gpu - cpu| {row['mean_abs_diff']:.2f}" if "mean_abs_diff" in row else ""
            print(
                f"{name:<30}{row['fps']:>10.0f}{row['x_cpu']:>8.2f}{row['x_before']:>10.2f}  {diff}"
            )
    if "loader" in results:
        print(f"\nthrough a DataLoader, {results['loader']['pairs']} pairs, 16-frame windows")
        for name, row in results["loader"]["rows"].items():
            print(f"{name:<36}{row['samples_s']:>8.1f} samples/s")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
