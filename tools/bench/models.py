"""GPU throughput of the model stages, and how busy a model build keeps the GPU.

Run on a GPU node (random weights; no downloads)::

    python -m pvtt.tools.bench.models --json models.json

It prints frames/s of Grounding DINO detection (swin-T + BERT-base, the
grounding-dino-tiny architecture), DINOv2-small and CLIP ViT-B/32 embedding,
and a SmolVLM-256M-shaped judge (8 frames a clip, 64 new tokens), each with
peak GPU memory; then builds the demo catalog with model backends (Grounding
DINO, SAM2 hiera-t, CPU inpainting/matting/insertion, composite CPU + DINOv2
scorer; tar output) while NVML samples GPU utilisation, and prints the share of
wall time the GPU was busy. SAM2's own rates come from
``python -m pvtt.tools.bench.sam2_speed``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

FRAME = (720, 1280)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _peak_reset() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def _peak_mib() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


def _frames(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (n, FRAME[0] // 8, FRAME[1] // 8, 3), dtype=np.uint8)
    return np.repeat(np.repeat(base, 8, axis=1), 8, axis=2)


def _timed(fn, repeat: int) -> float:
    fn()  # warm-up (kernels, autotuning)
    _sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def grounding_dino_parts():
    import transformers as tf

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "mug", "necklace", "product"]
    words += [f"w{i}" for i in range(30522 - len(words))]
    tokenizer = tf.BertTokenizer(vocab={w: i for i, w in enumerate(words)})
    processor = tf.GroundingDinoProcessor(image_processor=tf.GroundingDinoImageProcessor(), tokenizer=tokenizer)
    model = tf.GroundingDinoForObjectDetection(tf.GroundingDinoConfig())
    return model, processor


def bench_detection(device: str, frames: int, batch: int) -> dict[str, Any]:
    from pvtt.builder.backends.grounding_dino import GroundingDinoDetector
    from pvtt.builder.stages.protocols import Prompt, StageRejected

    model, processor = grounding_dino_parts()
    detector = GroundingDinoDetector(model, processor, device=device, box_threshold=1.0,
                                     text_threshold=1.0, stride=1, max_frames=frames, batch_size=batch)
    clip = _frames(frames)

    def run() -> None:
        try:  # threshold 1: every frame is scanned, nothing passes
            detector.detect(clip, Prompt(text="mug"))
        except StageRejected:
            pass

    _peak_reset()
    seconds = _timed(run, 3)
    return {"stage": "detection (Grounding DINO swin-T, 720p)", "frames_per_s": frames / seconds,
            "batch": batch, "peak_mib": _peak_mib()}


def bench_embedding(device: str, images: int) -> list[dict[str, Any]]:
    import transformers as tf

    from pvtt.builder.backends.embedding_scorer import EncoderSpec, ImageEncoder

    out = []
    specs = [
        ("dinov2-small", EncoderSpec("dinov2"), tf.Dinov2Model(tf.Dinov2Config(hidden_size=384, num_attention_heads=6, intermediate_size=1536)), tf.BitImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})),
        ("clip-vit-b32", EncoderSpec("clip"), tf.CLIPVisionModelWithProjection(tf.CLIPVisionConfig()), tf.CLIPImageProcessor()),
    ]
    crops = list(_frames(images)[:, :224, :224])
    for name, spec, model, processor in specs:
        encoder = ImageEncoder(spec, model.to(device).eval(), processor)
        _peak_reset()
        seconds = _timed(lambda e=encoder: e.embed(crops, 64, device.startswith("cuda")), 3)
        out.append({"stage": f"embedding ({name})", "frames_per_s": images / seconds, "peak_mib": _peak_mib()})
    return out


def bench_vlm(device: str, clips: int, frames_per_clip: int = 8, new_tokens: int = 64) -> dict[str, Any]:
    """SmolVLM-256M-shaped Idefics3 with random weights, fed model inputs directly."""
    import transformers as tf

    text = tf.LlamaConfig(vocab_size=49280, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                          num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192)
    vision = tf.Idefics3VisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                     num_attention_heads=12, image_size=512, patch_size=16)
    config = tf.Idefics3Config(text_config=text, vision_config=vision, scale_factor=4, image_token_id=49190)
    model = tf.Idefics3ForConditionalGeneration(config).to(device, dtype=torch.bfloat16).eval()
    per_image = (512 // 16) ** 2 // 16
    prompt = torch.randint(0, 49000, (1, 40))
    image_tokens = torch.full((1, per_image * frames_per_clip), 49190)
    input_ids = torch.cat([image_tokens, prompt], dim=1).to(device)
    pixels = torch.rand(1, frames_per_clip, 3, 512, 512, device=device, dtype=torch.bfloat16)

    def run() -> None:
        with torch.inference_mode():
            for _ in range(clips):
                model.generate(input_ids=input_ids, pixel_values=pixels, max_new_tokens=new_tokens,
                               min_new_tokens=new_tokens, do_sample=False)

    _peak_reset()
    seconds = _timed(run, 2)
    return {"stage": f"VLM judge (SmolVLM-256M shape, {frames_per_clip} frames, {new_tokens} tokens)",
            "frames_per_s": clips * frames_per_clip / seconds, "clips_per_s": clips / seconds,
            "peak_mib": _peak_mib()}


class GpuSampler:
    """Samples NVML's utilisation of ``gpus`` (default: the current one) in a thread."""

    def __init__(self, gpus: list[int] | None = None, interval: float = 0.05) -> None:
        import pynvml

        pynvml.nvmlInit()
        self._nvml = pynvml
        indices = gpus if gpus is not None else [torch.cuda.current_device()]
        self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in indices]
        self.interval = interval
        self.samples: list[list[int]] = []
        self.times: list[float] = []
        """Epoch seconds of each sample (builds' timelines are in the same clock)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append([self._nvml.nvmlDeviceGetUtilizationRates(h).gpu for h in self._handles])
            self.times.append(time.time())
            time.sleep(self.interval)

    def __enter__(self) -> GpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def busy_share(self) -> float:
        """Mean utilisation over samples and GPUs, as a fraction."""
        return float(np.mean(self.samples)) / 100 if self.samples else float("nan")

    def busy_between(self, start: float, end: float) -> float:
        """Mean utilisation of the samples taken between epoch seconds ``start`` and ``end``."""
        inside = [s for t, s in zip(self.times, self.samples, strict=True) if start <= t <= end]
        return float(np.mean(inside)) / 100 if inside else float("nan")


def bench_build(device: str, workdir: Path, *, quick: bool = False) -> dict[str, Any]:
    """The demo catalog built with model backends; GPU busy share over the build's wall time."""
    import transformers as tf

    from pvtt.builder.catalog import load_catalog
    from pvtt.builder.demo import PRODUCTS, make_demo_catalog
    from pvtt.builder.pipeline import Build
    from pvtt.schemas.config import load_config

    gdino_dir, dino_dir = workdir / "gdino", workdir / "dinov2"
    model, processor = grounding_dino_parts()
    model.save_pretrained(gdino_dir)
    processor.save_pretrained(gdino_dir)
    tf.Dinov2Model(tf.Dinov2Config(hidden_size=384, num_attention_heads=6, intermediate_size=1536)).save_pretrained(dino_dir)
    tf.BitImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}).save_pretrained(dino_dir)
    products = PRODUCTS[:2] if quick else PRODUCTS
    catalog = load_catalog(make_demo_catalog(workdir / "catalog", products=products))
    sam2 = {"random_weights": True, "max_lost_share": 1.0}
    if quick:
        sam2["image_size"] = 256
    config = load_config(None, {
        "device": device,
        "detector.backend": "grounding-dino", "detector.model": str(gdino_dir),
        "detector.params": {"box_threshold": 0.0, "text_threshold": 0.0},
        "segmenter.backend": "sam2",
        "segmenter.params": sam2,
        "scorer.backend": "composite",
        "scorer.params": {"members": [{"backend": "cpu"}, {"backend": "embedding", "model": str(dino_dir)}]},
        "output.formats": ["tar"],
    })
    build = Build(catalog, workdir / "out", config, progress=False)
    start = time.perf_counter()
    if device.startswith("cuda"):
        with GpuSampler() as sampler:
            result = build.run()
        busy, samples = sampler.busy_share, len(sampler.samples)
    else:
        result, busy, samples = build.run(), float("nan"), 0
    wall = time.perf_counter() - start
    stats = result.report.as_dict()
    return {"stage": "demo build with model backends", "wall_s": wall, "pairs": result.written,
            "gpu_busy_share": busy, "samples": samples,
            "time_per_stage_s": stats["time_per_stage_s"], "rejects": stats["rejects_by_reason"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--skip", default="", help="comma list of: detection,embedding,vlm,build")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="2 demo products, SAM2 at 256 px (CPU smoke run)")
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    rows: list[dict[str, Any]] = []
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    print(f"device {args.device} ({gpu}), torch {torch.__version__}")
    if "detection" not in skip:
        rows.append(bench_detection(args.device, args.frames, 8))
    if "embedding" not in skip:
        rows.extend(bench_embedding(args.device, args.frames * 4))
    if "vlm" not in skip:
        rows.append(bench_vlm(args.device, clips=4))
    for row in rows:
        peak = f"{row['peak_mib']:.0f} MiB" if row.get("peak_mib") is not None else "-"
        print(f"{row['stage']:60s} {row['frames_per_s']:9.1f} frames/s   peak {peak}")
    if "build" not in skip:
        with tempfile.TemporaryDirectory(prefix="pvtt-bench-") as tmp:
            build = bench_build(args.device, Path(tmp), quick=args.quick)
        rows.append(build)
        print(f"demo build: {build['pairs']} pairs in {build['wall_s']:.1f} s, GPU busy "
              f"{build['gpu_busy_share']:.1%} of wall time ({build['samples']} NVML samples)")
        print("time per stage (s): " + json.dumps(build["time_per_stage_s"]))
    if args.json:
        args.json.write_text(json.dumps({"gpu": gpu, "rows": rows}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
