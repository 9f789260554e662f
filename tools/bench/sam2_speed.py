"""Benchmark the SAM2 segmenter: SAM2's own tracking rate against pvtt's whole segment step.

Run on a GPU machine::

    python -m pvtt.tools.bench.sam2_speed --frames 240 --size 1280x720 [--checkpoint PT]

or slowly on a CPU: ``--device cpu --frames 8 --size 320x180 --image-size 256``. It
measures, on one clip of ``--frames`` frames at ``--size`` with the product prompted on the
middle frame:

- (a) SAM2's propagation alone: frames per second of ``propagate_in_video`` forwards and
  backwards, with the inference state already built and prompted, SAM2 as it ships
  (image encoder one frame at a time);
- (b) pvtt end to end from the clip's MP4 bytes: decode (PyAV, in memory) + inference state
  from memory + prompt + propagation (image encoder ``--encoder-batch`` frames at a time;
  several values may be given) + masks to the host + boxes + ``encode_masks``;
- (c) the ratio of (b)'s rate to (a)'s (the issue asks for at least 0.9), and the peak GPU
  memory of each.

The clip is ``--video`` with ``--box`` (default: the test media's
``sam2/04_coffee.mp4``, played forwards then backwards to reach ``--frames`` without a
cut) or, when that is missing, a synthetic one: a textured background panning under a
moving striped ellipse. Weights are random unless ``--checkpoint`` is given. SAM2's speed
does not depend on them, but untrained masks are speckle, which the mask codec
compresses far slower than a product's outline; so with random weights (b) encodes a
stand-in of the same shape instead, the synthetic ellipse's masks (the output says so).
Each measurement is repeated (``--repeat``) after a warm-up; the fastest run is kept.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pvtt.builder.backends.sam2_segmenter import (
    DEFAULT_CONFIG,
    DEFAULT_ENCODER_BATCH,
    OBJ_ID,
    Sam2Segmenter,
    autocast,
    build_predictor,
    init_state_from_frames,
)
from pvtt.builder.boxes import masks_to_boxes
from pvtt.builder.stages.protocols import Detection
from pvtt.builder.video import decode_video_bytes, encode_mp4, probe, read_frames
from pvtt.schemas.masks import encode_masks
from pvtt.tools.bench.media import test_media_dir

DEFAULT_VIDEO = "sam2/04_coffee.mp4"
DEFAULT_BOX = (800.0, 415.0, 985.0, 615.0)
"""The blue mug of ``sam2/04_coffee.mp4`` at 1280x720 (it stays near there)."""
FPS = 30
Box = tuple[float, float, float, float]


def real_clip(path: Path, frames: int, size: tuple[int, int], box: Box) -> tuple[np.ndarray, Box]:
    """``frames`` frames of ``path`` fitted in ``size``, ping-ponged; the box scaled to them."""
    decoded, _ = read_frames(path, 0, frames, max_size=size)
    scale = decoded.shape[2] / probe(path).display_size[0]
    while len(decoded) < frames:
        decoded = np.concatenate([decoded, decoded[::-1]])
    return decoded[:frames], (box[0] * scale, box[1] * scale, box[2] * scale, box[3] * scale)


def ellipse_masks(frames: int, size: tuple[int, int]) -> np.ndarray:
    """An ellipse moving across the frame and bobbing: the synthetic product's masks."""
    width, height = size
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    rx, ry = 0.12 * width, 0.18 * height
    out = np.empty((frames, height, width), dtype=bool)
    for t in range(frames):
        u = t / max(frames - 1, 1)
        cx = width * (0.3 + 0.4 * u)
        cy = height * (0.5 + 0.15 * np.sin(2 * np.pi * u))
        out[t] = ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1
    return out


def synthetic_clip(frames: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A panning textured background with the striped ellipse of :func:`ellipse_masks` on it."""
    width, height = size
    rng = np.random.default_rng(seed)
    pad = width // 4
    grid = (1, 3, height // 24 + 2, (width + pad) // 24 + 2)
    background = F.interpolate(
        torch.from_numpy(rng.uniform(0, 255, grid)), size=(height, width + pad), mode="bicubic"
    )
    background = background.clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()
    ys, xs = np.mgrid[0:height, 0:width]
    stripes = (xs + ys) // 12 % 2 == 1
    out = np.empty((frames, height, width, 3), np.uint8)
    for t, inside in enumerate(ellipse_masks(frames, size)):
        shift = int(pad * t / max(frames - 1, 1))
        out[t] = background[:, shift : shift + width]
        out[t][inside & stripes] = (200, 40, 40)
        out[t][inside & ~stripes] = (240, 220, 60)
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def propagate_only(
    segmenter: Sam2Segmenter, frames: np.ndarray, detection: Detection
) -> tuple[float, float | None]:
    """Seconds of SAM2's two ``propagate_in_video`` passes alone, and the peak GPU MiB.

    The state is built as the segmenter builds it (same offloading) but keeps SAM2's own
    one-frame feature cache, so this is SAM2's tracking as it ships.
    """
    predictor = segmenter.predictor
    device = predictor.device
    long_clip = len(frames) > segmenter.offload_after_frames
    video, kept = segmenter.offload_video_to_cpu, segmenter.offload_state_to_cpu
    state = init_state_from_frames(
        predictor,
        frames,
        offload_video_to_cpu=long_clip if video is None else video,
        offload_state_to_cpu=long_clip if kept is None else kept,
    )
    start = detection.frame_index
    with torch.inference_mode(), autocast(device):
        predictor.add_new_points_or_box(
            state, frame_idx=start, obj_id=OBJ_ID, box=np.float32(detection.box)
        )
        _sync(device)
        t0 = time.perf_counter()
        for reverse in (False, True):
            for _ in predictor.propagate_in_video(state, start_frame_idx=start, reverse=reverse):
                pass
        _sync(device)
        seconds = time.perf_counter() - t0
    state.clear()
    return seconds, _peak_mib(device)


def end_to_end(
    segmenter: Sam2Segmenter, data: bytes, detection: Detection, stand_in: np.ndarray | None
) -> tuple[dict[str, float], int, float | None]:
    """Seconds of each step from MP4 bytes to encoded masks, the blob's size, peak GPU MiB."""
    t0 = time.perf_counter()
    frames, _ = decode_video_bytes(data)
    t1 = time.perf_counter()
    track = segmenter.segment(frames, detection)
    t2 = time.perf_counter()
    blob = encode_masks(track.masks if stand_in is None else stand_in)
    t3 = time.perf_counter()
    steps = {
        "decode_s": t1 - t0,
        "segment_s": t2 - t1,
        "encode_masks_s": t3 - t2,
        "total_s": t3 - t0,
    }
    return steps, len(blob), _peak_mib(segmenter.predictor.device)


def state_init_seconds(segmenter: Sam2Segmenter, frames: np.ndarray) -> float:
    """Seconds to build the inference state from memory (part of (b)'s segment step)."""
    device = segmenter.predictor.device
    _sync(device)
    t0 = time.perf_counter()
    state = init_state_from_frames(segmenter.predictor, frames)
    _sync(device)
    seconds = time.perf_counter() - t0
    state.clear()
    return seconds


def run(args: argparse.Namespace) -> dict[str, Any]:
    width, height = (int(v) for v in args.size.lower().split("x"))
    device = torch.device(args.device)
    video = args.video or test_media_dir() / DEFAULT_VIDEO
    if video.is_file():
        box = tuple(float(v) for v in args.box.split(",")) if args.box else DEFAULT_BOX
        clip, box = real_clip(video, args.frames, (width, height), box)
        source = str(video)
    else:
        clip = synthetic_clip(args.frames, (width, height))
        box = tuple(masks_to_boxes(ellipse_masks(args.frames, (width, height))[args.frames // 2]))
        source = "synthetic"
    data = encode_mp4(clip, FPS, crf=20)
    count, height, width = clip.shape[:3]
    detection = Detection(frame_index=count // 2, box=box, score=1.0)
    random_weights = args.checkpoint is None
    stand_in = ellipse_masks(count, (width, height)) if random_weights else None

    predictor = build_predictor(
        args.checkpoint,
        config=args.config,
        image_size=args.image_size,
        device=str(device),
        random_weights=random_weights,
    )
    segmenters = {
        batch: Sam2Segmenter(
            predictor,
            model=args.checkpoint,
            config=args.config,
            max_lost_share=1.0,
            encoder_batch=batch,
        )
        for batch in args.encoder_batch
    }
    warm = clip[: min(count, 2 * max(args.encoder_batch))]
    for segmenter in segmenters.values():  # kernels, allocator and caches for every shape
        segmenter.segment(warm, Detection(len(warm) // 2, box, 1.0))

    frames, _ = decode_video_bytes(data)
    first = next(iter(segmenters.values()))
    propagate_runs: list[float] = []
    e2e_runs: dict[int, list[dict[str, float]]] = {batch: [] for batch in segmenters}
    peaks: dict[str, float | None] = {}
    blob_bytes = 0
    for _ in range(args.repeat):
        _reset_peak(device)
        seconds, peaks["propagate"] = propagate_only(first, frames, detection)
        propagate_runs.append(seconds)
        for batch, segmenter in segmenters.items():
            _reset_peak(device)
            steps, blob_bytes, peaks[f"end_to_end_batch{batch}"] = end_to_end(
                segmenter, data, detection, stand_in
            )
            e2e_runs[batch].append(steps)
    init_s = min(state_init_seconds(first, frames) for _ in range(args.repeat))

    rate_a = count / min(propagate_runs)
    best = {batch: min(runs, key=lambda s: s["total_s"]) for batch, runs in e2e_runs.items()}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    return {
        "device": name or "cpu",
        "torch": torch.__version__,
        "sam2": version("sam2"),
        "config": args.config,
        "checkpoint": args.checkpoint,
        "image_size": int(predictor.image_size),
        "frames": count,
        "size": f"{width}x{height}",
        "source": source,
        "mp4_bytes": len(data),
        "masks_encoded": "segmenter output" if stand_in is None else "ellipse stand-in",
        "masks_bytes": blob_bytes,
        "repeat": args.repeat,
        "state_init_s": init_s,
        "propagate_only_s": propagate_runs,
        "propagate_fps": rate_a,
        "end_to_end": {
            str(batch): {
                "runs": runs,
                "best": best[batch],
                "fps": count / best[batch]["total_s"],
                "ratio": count / best[batch]["total_s"] / rate_a,
            }
            for batch, runs in e2e_runs.items()
        },
        "peak_gpu_mib": peaks,
    }


def _print(result: dict[str, Any]) -> None:
    def mib(value: float | None) -> str:
        return "n/a" if value is None else f"{value:,.0f} MiB"

    peaks = result["peak_gpu_mib"]
    print(
        f"\nSAM2 {result['config']} at {result['image_size']}px on {result['device']}: "
        f"{result['frames']} frames {result['size']} ({result['source']}), masks encoded: "
        f"{result['masks_encoded']}; state init {result['state_init_s']:.3f} s"
    )
    header = ("", "frames/s", "total s", "decode s", "segment s", "encode s", "ratio", "peak GPU")
    print(f"{header[0]:<30}" + "".join(f"{h:>11}" for h in header[1:-1]) + f"{header[-1]:>13}")
    print(
        f"{'(a) SAM2 propagate only':<30}{result['propagate_fps']:>11.2f}"
        f"{min(result['propagate_only_s']):>11.3f}{'':>44}{mib(peaks['propagate']):>13}"
    )
    for batch, row in result["end_to_end"].items():
        b = row["best"]
        print(
            f"{f'(b) pvtt, encoder batch {batch}':<30}{row['fps']:>11.2f}{b['total_s']:>11.3f}"
            f"{b['decode_s']:>11.3f}{b['segment_s']:>11.3f}{b['encode_masks_s']:>11.3f}"
            f"{row['ratio']:>10.3f}x{mib(peaks[f'end_to_end_batch{batch}']):>13}"
        )
    print("(c) ratio = (b) frames/s over (a) frames/s; the issue asks for at least 0.9x")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="SAM2 Hydra config name")
    parser.add_argument("--checkpoint", help="SAM2 checkpoint (.pt); random weights if omitted")
    parser.add_argument("--image-size", type=int, help="model input size (config default: 1024)")
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--size", default="1280x720", help="WIDTHxHEIGHT the clip is fitted in")
    parser.add_argument("--video", type=Path, help=f"source clip (default: shared {DEFAULT_VIDEO})")
    parser.add_argument("--box", help="x0,y0,x1,y1 of the product on --video's first frame")
    parser.add_argument(
        "--encoder-batch",
        type=int,
        nargs="+",
        default=[DEFAULT_ENCODER_BATCH],
        help="frames per image-encoder call in (b); several values are compared",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs (the fastest is kept)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    if args.video is not None and args.box is None:
        parser.error("--video needs --box")
    result = run(args)
    _print(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
