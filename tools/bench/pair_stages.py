"""Benchmark the pair stages, insert and score: the torch backends against the CPU ones.

Run ``python -m pvtt.tools.bench.pair_stages`` (``--help`` for sizes). The same pairs
(real footage, ``sam2/04_coffee.mp4``, resized; real cut-outs, ``rembg/car-*.out.png``,
along moving boxes of several sizes) go through the CPU inserter and scorer (the
baseline, one pair per call, as a build calls them) and through the torch ones on
``--device`` (CUDA when present), ``--batch`` pairs per call, in the same run. It prints
pairs/s of each and the ratio torch / CPU (above 1: torch is faster), and how far the
outputs are apart (8-bit levels, score units). A second insert row keeps the frames on
the device before and after (as when they are decoded there): the copies through the
host are what the first row pays on top. The torch scorer's temporal score is
the CPU scorer's own (Farneback); its seconds are printed apart, to show what stays on
the CPU.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from itertools import islice

import av
import cv2
import numpy as np
import torch

from pvtt.builder.backends.cpu_inserter import AlphaCompositeInserter
from pvtt.builder.backends.cpu_scorer import StatisticsScorer, frames_to_score
from pvtt.builder.backends.torch_inserter import TorchCompositeInserter
from pvtt.builder.backends.torch_scorer import TorchStatisticsScorer
from pvtt.builder.stages.cutout import trim_to_alpha
from pvtt.builder.stages.protocols import InsertionInput, ScoringInput
from pvtt.tools.bench.media import test_media_dir


def footage(size: tuple[int, int], frames: int) -> np.ndarray:
    """The first ``frames`` frames of the coffee shot, resized to ``size`` (w, h)."""
    with av.open(str(test_media_dir() / "sam2" / "04_coffee.mp4")) as container:
        decoded = islice(container.decode(video=0), frames)
        return np.stack(
            [
                cv2.resize(f.to_ndarray(format="rgb24"), size, interpolation=cv2.INTER_AREA)
                for f in decoded
            ]
        )


def cutouts() -> list[np.ndarray]:
    out = []
    for name in ("car-3", "car-2"):
        bgra = cv2.imread(str(test_media_dir() / "rembg" / f"{name}.out.png"), cv2.IMREAD_UNCHANGED)
        out.append(trim_to_alpha(cv2.cvtColor(bgra, cv2.COLOR_BGRA2RGBA)))
    return out


def jobs(frames: np.ndarray, count: int) -> list[InsertionInput]:
    """``count`` pairs: cut-outs alternating, box widths from a fifth to a half of the frame."""
    t = np.arange(len(frames))
    h, w = frames.shape[1:3]
    out = []
    for i, cutout in zip(
        range(count), np.resize(np.array(cutouts(), dtype=object), count), strict=True
    ):
        width = w * (0.2 + 0.3 * (i % 4) / 3)
        height = width * cutout.shape[0] / cutout.shape[1]
        cx = w * 0.3 + (w * 0.4) * t / max(len(t) - 1, 1)
        cy = h * 0.55 + 0.03 * h * np.sin(t / 5 + i)
        boxes = np.stack([cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2], 1)
        out.append(InsertionInput(frames, cutout, boxes.astype(np.float32)))
    return out


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def batches(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1280x720", help="frame size WxH (default 1280x720)")
    parser.add_argument("--frames", type=int, default=48, help="frames per clip")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4, help="pairs per torch call")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    size = tuple(int(v) for v in args.size.split("x"))
    pairs = jobs(footage(size, args.frames), args.pairs)
    print(
        f"{args.pairs} pairs of {args.frames} frames at {args.size}; torch on {args.device}, "
        f"{args.batch} pairs per call; torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads"
    )

    cpu_inserter, torch_inserter = (
        AlphaCompositeInserter(),
        TorchCompositeInserter(device=args.device),
    )
    cpu_scorer, torch_scorer = StatisticsScorer(), TorchStatisticsScorer(device=args.device)
    torch_inserter.insert_many(pairs[:1])  # warm-up: CUDA context, kernels
    cpu_s, synths = timed(lambda: [cpu_inserter.insert(job) for job in pairs])
    torch_s, out = timed(
        lambda: [
            clip
            for batch in batches(pairs, args.batch)
            for clip in torch_inserter.insert_many(batch)
        ]
    )
    levels = max(
        int(np.abs(a.astype(np.int16) - b).max()) for a, b in zip(synths, out, strict=True)
    )
    report("insert", cpu_s, torch_s, args.pairs, f"max {levels} levels apart")
    resident = [  # frames decoded onto the device: no copy through the host either way
        InsertionInput(torch.from_numpy(j.background).to(args.device), j.cutout, j.boxes)
        for j in pairs
    ]
    resident_s, _ = timed(lambda: _synchronized(torch_inserter, resident, args.batch))
    report("insert", cpu_s, resident_s, args.pairs, "torch with the frames already on the device")

    samples = [
        ScoringInput(s, j.background, j.cutout, j.boxes) for s, j in zip(synths, pairs, strict=True)
    ]
    torch_scorer.score_many(samples[:1])  # warm-up: also builds the Lab table
    cpu_s, expected = timed(lambda: [cpu_scorer.score(s) for s in samples])
    torch_s, got = timed(
        lambda: [
            r for batch in batches(samples, args.batch) for r in torch_scorer.score_many(batch)
        ]
    )
    apart = max(
        abs(a[k] - b[k])
        for a, b in zip(expected, got, strict=True)
        for k in ("identity", "lighting")
        if a[k] is not None
    )
    report("score", cpu_s, torch_s, args.pairs, f"max {apart:.1e} apart")
    temporal_s, _ = timed(
        lambda: [cpu_scorer._temporal(*_temporal_inputs(s, cpu_scorer.frames)) for s in samples]
    )
    print(
        f"  of which temporal (Farneback, CPU in both): {temporal_s:.2f} s "
        f"({temporal_s / cpu_s:.0%} of the CPU scorer's time)"
    )


def _synchronized(inserter: TorchCompositeInserter, jobs: list, batch: int) -> None:
    for part in batches(jobs, batch):
        inserter.insert_many(part)
    if inserter.device.type == "cuda":
        torch.cuda.synchronize(inserter.device)


def _temporal_inputs(sample: ScoringInput, frames: int) -> tuple:
    synth, boxes, valid, _, cutout = frames_to_score(sample, frames)
    return synth, boxes, valid, cutout


def report(stage: str, cpu_s: float, torch_s: float, pairs: int, note: str) -> None:
    print(
        f"{stage:6s} cpu {pairs / cpu_s:7.2f} pairs/s   torch {pairs / torch_s:7.2f} pairs/s   "
        f"torch/cpu {cpu_s / torch_s:5.2f}x   ({note})"
    )


if __name__ == "__main__":
    main()
