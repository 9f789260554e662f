"""Benchmark the SAM2 segmenter: SAM2's own tracking rate against pvtt's whole segment step.

Run on a GPU machine::

    python -m pvtt.tools.bench.sam2_speed --frames 240 --size 1280x720 [--checkpoint PT]

or slowly on a CPU: ``--device cpu --frames 8 --size 320x180 --image-size 256``. It
measures, on one clip of ``--frames`` frames at ``--size`` with the product prompted on the
middle frame:

- (a) SAM2's propagation alone: frames per second of ``propagate_in_video`` forwards and
  backwards, with the inference state already built and prompted (SAM2's own cost);
- (b) pvtt end to end from the clip's MP4 bytes: decode (PyAV, in memory) + inference state
  from memory + prompt + propagation + masks to the host + boxes + ``encode_masks``;
- (c) the ratio of (b)'s rate to (a)'s (the issue asks for at least 0.9), and the peak GPU
  memory of each.

The clip is ``--video`` (default: the shared test data's ``sam2/04_coffee.mp4``, played
forwards then backwards to reach ``--frames`` without a cut) or, when that is missing, a
synthetic one: a textured background panning under a moving striped ellipse. Weights are
random unless ``--checkpoint`` is given: the rate of SAM2 does not depend on them, but
untrained masks may be empty, so losses are not rejected here. Each measurement is
repeated (``--repeat``) after a warm-up, and the fastest run is kept.
"""

from __future__ import annotations

import argparse
import json
import os
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
    OBJ_ID,
    Sam2Segmenter,
    autocast,
    build_predictor,
    init_state_from_frames,
)
from pvtt.builder.stages.protocols import Detection
from pvtt.builder.video import decode_video_bytes, encode_mp4, probe, read_frames
from pvtt.schemas.masks import encode_masks

DEFAULT_VIDEO = "sam2/04_coffee.mp4"
DEFAULT_BOX = (800.0, 415.0, 985.0, 615.0)
"""The blue mug of ``sam2/04_coffee.mp4`` at 1280x720 (it stays near there)."""
FPS = 30


def _default_data() -> Path:
    env = os.environ.get("PVTT_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "data"


def real_clip(
    path: Path, frames: int, size: tuple[int, int], box: tuple[float, float, float, float]
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """``frames`` frames of ``path`` fitted in ``size``, ping-ponged; the box scaled to them."""
    decoded, _ = read_frames(path, 0, frames, max_size=size)
    source_width = probe(path).display_size[0]
    while len(decoded) < frames:
        decoded = np.concatenate([decoded, decoded[::-1]])
    scale = decoded.shape[2] / source_width
    return decoded[:frames], tuple(v * scale for v in box)


def synthetic_clip(
    frames: int, size: tuple[int, int], seed: int = 0
) -> tuple[np.ndarray, list[tuple[float, float, float, float]]]:
    """A panning textured background with a striped ellipse moving over it; its boxes."""
    width, height = size
    rng = np.random.default_rng(seed)
    pad = width // 4
    noise = torch.from_numpy(rng.uniform(0, 255, (1, 3, height // 24 + 2, (width + pad) // 24 + 2)))
    background = F.interpolate(noise, size=(height, width + pad), mode="bicubic")
    background = background.clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    rx, ry = 0.12 * width, 0.18 * height
    out = np.empty((frames, height, width, 3), np.uint8)
    boxes = []
    for t in range(frames):
        u = t / max(frames - 1, 1)
        shift = int(pad * u)
        out[t] = background[:, shift : shift + width]
        cx = width * (0.3 + 0.4 * u)
        cy = height * (0.5 + 0.15 * np.sin(2 * np.pi * u))
        inside = ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1
        stripes = ((xs + ys) // 12 % 2).astype(bool)
        out[t][inside & stripes] = (200, 40, 40)
        out[t][inside & ~stripes] = (240, 220, 60)
        boxes.append((cx - rx, cy - ry, cx + rx, cy + ry))
    return out, boxes


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def propagate_only(
    segmenter: Sam2Segmenter, frames: np.ndarray, detection: Detection
) -> tuple[float, float | None]:
    """Seconds of SAM2's two ``propagate_in_video`` passes alone, and the peak GPU MiB."""
    predictor = segmenter.predictor
    device = predictor.device
    long_clip = len(frames) > segmenter.offload_after_frames
    video = segmenter.offload_video_to_cpu
    state_offload = segmenter.offload_state_to_cpu
    state = init_state_from_frames(
        predictor,
        frames,
        offload_video_to_cpu=long_clip if video is None else video,
        offload_state_to_cpu=long_clip if state_offload is None else state_offload,
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
    peak = _peak_mib(device)
    state.clear()
    return seconds, peak


def end_to_end(
    segmenter: Sam2Segmenter, data: bytes, detection: Detection
) -> tuple[dict[str, float], int, float | None]:
    """Seconds of each step from MP4 bytes to encoded masks, the blob's size, peak GPU MiB."""
    t0 = time.perf_counter()
    frames, _ = decode_video_bytes(data)
    t1 = time.perf_counter()
    track = segmenter.segment(frames, detection)
    t2 = time.perf_counter()
    blob = encode_masks(track.masks)
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
    video = args.video or _default_data() / DEFAULT_VIDEO
    if video.is_file():
        given = tuple(float(v) for v in args.box.split(",")) if args.box else DEFAULT_BOX
        clip, box = real_clip(video, args.frames, (width, height), given)
        source = str(video)
    else:
        clip, boxes = synthetic_clip(args.frames, (width, height))
        box = boxes[args.frames // 2]
        source = "synthetic"
    data = encode_mp4(clip, FPS, crf=20)
    detection = Detection(frame_index=len(clip) // 2, box=box, score=1.0)

    predictor = build_predictor(
        args.checkpoint,
        config=args.config,
        image_size=args.image_size,
        device=str(device),
        random_weights=args.checkpoint is None,
    )
    segmenter = Sam2Segmenter(
        predictor, model=args.checkpoint, config=args.config, max_lost_share=1.0
    )
    warm = clip[: min(len(clip), 8)]
    segmenter.segment(warm, Detection(len(warm) // 2, box, 1.0))  # kernels, allocator, caches

    frames, _ = decode_video_bytes(data)
    propagate_runs, e2e_runs = [], []
    peak_a = peak_b = None
    blob_bytes = 0
    for _ in range(args.repeat):
        _reset_peak(device)
        seconds, peak_a = propagate_only(segmenter, frames, detection)
        propagate_runs.append(seconds)
        _reset_peak(device)
        steps, blob_bytes, peak_b = end_to_end(segmenter, data, detection)
        e2e_runs.append(steps)
    init_s = min(state_init_seconds(segmenter, frames) for _ in range(args.repeat))

    count = len(frames)
    best_a = min(propagate_runs)
    best_b = min(e2e_runs, key=lambda s: s["total_s"])
    rate_a, rate_b = count / best_a, count / best_b["total_s"]
    return {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "torch": torch.__version__,
        "sam2": version("sam2"),
        "config": args.config,
        "checkpoint": args.checkpoint,
        "image_size": int(predictor.image_size),
        "frames": count,
        "size": f"{frames.shape[2]}x{frames.shape[1]}",
        "source": source,
        "mp4_bytes": len(data),
        "masks_bytes": blob_bytes,
        "repeat": args.repeat,
        "propagate_only_s": propagate_runs,
        "end_to_end_s": e2e_runs,
        "state_init_s": init_s,
        "propagate_fps": rate_a,
        "end_to_end_fps": rate_b,
        "ratio": rate_b / rate_a,
        "best_end_to_end": best_b,
        "peak_gpu_mib_propagate": peak_a,
        "peak_gpu_mib_end_to_end": peak_b,
    }


def _print(result: dict[str, Any]) -> None:
    def mib(value: float | None) -> str:
        return "n/a" if value is None else f"{value:,.0f} MiB"

    best = result["best_end_to_end"]
    print(
        f"\nSAM2 {result['config']} at {result['image_size']}px on {result['device']}: "
        f"{result['frames']} frames {result['size']} ({result['source']})"
    )
    rows = [
        (
            "(a) SAM2 propagate only",
            f"{result['propagate_fps']:.2f}",
            f"{min(result['propagate_only_s']):.3f}",
            mib(result["peak_gpu_mib_propagate"]),
        ),
        (
            "(b) pvtt end to end",
            f"{result['end_to_end_fps']:.2f}",
            f"{best['total_s']:.3f}",
            mib(result["peak_gpu_mib_end_to_end"]),
        ),
        ("    decode (PyAV)", "", f"{best['decode_s']:.3f}", ""),
        ("    segment", "", f"{best['segment_s']:.3f}", ""),
        ("      of which state init", "", f"{result['state_init_s']:.3f}", ""),
        ("    encode_masks", "", f"{best['encode_masks_s']:.3f}", ""),
    ]
    print(f"{'':<28}{'frames/s':>10}{'seconds':>10}{'peak GPU':>14}")
    for name, fps, seconds, peak in rows:
        print(f"{name:<28}{fps:>10}{seconds:>10}{peak:>14}")
    verdict = "meets" if result["ratio"] >= 0.9 else "misses"
    print(f"(c) ratio (b)/(a): {result['ratio']:.3f}x ({verdict} the 0.9x target)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="SAM2 Hydra config name")
    parser.add_argument("--checkpoint", help="SAM2 checkpoint (.pt); random weights if omitted")
    parser.add_argument("--image-size", type=int, help="model input size (config default: 1024)")
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--size", default="1280x720", help="WIDTHxHEIGHT the clip is fitted in")
    parser.add_argument("--video", type=Path, help=f"source clip (default: shared {DEFAULT_VIDEO})")
    parser.add_argument("--box", help="x0,y0,x1,y1 of the product on --video's first frame")
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
