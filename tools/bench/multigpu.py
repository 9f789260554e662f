"""Throughput of a model-backend build on 1 GPU and on every GPU of the node.

Run on a multi-GPU node (random weights, no downloads)::

    python -m pvtt.tools.bench.multigpu --json multigpu.json

Builds the demo catalog with Grounding DINO + SAM2 + a CPU/DINOv2 composite scorer
(tar output): on GPU 0 as the old serial local engine did (one clip at a time, one
scorer forward per pair), on GPU 0 overlapped (two clips on their own CUDA streams,
scorer crops batched across pairs), then as one rank per GPU followed by ``pvtt
merge``, while NVML samples every GPU's utilisation. Prints pairs/s of each as a ratio
to the serial run, and the mean busy share of the GPUs used. Each build has its own
artefact cache, so every clip's model stages run in both.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TUNINGS = {
    "serial": {"clip_workers": 1, "batch_across_pairs": False},
    "overlapped": {"clip_workers": 2, "batch_across_pairs": True},
    "wide": {"clip_workers": 2, "batch_across_pairs": True, "workers": 16},
}
"""``serial``: one clip's stages at a time, one scorer forward per pair (the old local
engine); ``overlapped``: two clips' stages at once on their own CUDA streams, scorer
crops batched across the pairs in flight; ``wide``: overlapped with 16 pair threads
instead of the default 8 (for nodes with many cores per GPU)."""


def _config(workdir: Path, device: str, tuning: str = "overlapped") -> Any:
    from pvtt.schemas.config import load_config

    knobs = TUNINGS[tuning]
    return load_config(None, {
        "device": device,
        "clip_workers": knobs["clip_workers"],
        "workers": knobs.get("workers"),
        "detector.backend": "grounding-dino", "detector.model": str(workdir / "gdino"),
        "detector.params": {"box_threshold": 0.0, "text_threshold": 0.0},
        "segmenter.backend": "sam2",
        "segmenter.params": {"random_weights": True, "max_lost_share": 1.0},
        "scorer.backend": "composite",
        "scorer.params": {"members": [{"backend": "cpu"}, {"backend": "embedding", "model": str(workdir / "dinov2"),
                                                                   "params": {"batch_across_pairs": knobs["batch_across_pairs"]}}]},
        "output.formats": ["tar"],
    })


def prepare(workdir: Path) -> None:
    """The demo catalog and random-weight model folders."""
    import transformers as tf

    from pvtt.builder.demo import make_demo_catalog
    from pvtt.tools.bench.models import grounding_dino_parts

    model, processor = grounding_dino_parts()
    model.save_pretrained(workdir / "gdino")
    processor.save_pretrained(workdir / "gdino")
    tf.Dinov2Model(tf.Dinov2Config(hidden_size=384, num_attention_heads=6, intermediate_size=1536)).save_pretrained(workdir / "dinov2")
    tf.BitImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}).save_pretrained(workdir / "dinov2")
    make_demo_catalog(workdir / "catalog")


def build_rank(workdir: Path, out: Path, rank: int, world: int, tuning: str) -> int:
    from pvtt.builder.catalog import load_catalog
    from pvtt.builder.pipeline import Build

    config = _config(workdir, "cuda", tuning)
    config.cache_dir = str(out / "cache")
    result = Build(load_catalog(workdir / "catalog"), out, config, rank=rank, world_size=world,
                   progress=False).run()
    return result.written


def run(world: int, workdir: Path, out: Path, tuning: str = "overlapped") -> dict[str, Any]:
    """Build with ``world`` ranks (one process per GPU), merge, and time it."""
    from pvtt.builder.merge import merge

    start = time.perf_counter()
    from pvtt.tools.bench.models import GpuSampler

    with GpuSampler(list(range(world))) as sampler:
        procs = []
        for rank in range(world):
            env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(rank)}
            cmd = [sys.executable, "-m", "pvtt.tools.bench.multigpu", "--rank", str(rank),
                   "--world-size", str(world), "--workdir", str(workdir), "--out", str(out),
                   "--tuning", tuning]
            procs.append(subprocess.Popen(cmd, env=env))
        codes = [p.wait() for p in procs]
        if any(codes):
            raise RuntimeError(f"ranks exited with {codes}")
        manifest = merge(out) if world > 1 else None
    wall = time.perf_counter() - start
    pairs = manifest.counts["pairs"] if manifest else _pairs(out)
    return {"gpus": world, "tuning": tuning, **_stage_figures(out, world), "pairs": pairs, "wall_s": wall, "pairs_per_s": pairs / wall, "gpu_busy": sampler.busy_share}


def _stage_figures(out: Path, world: int) -> dict[str, Any]:
    """Rank 0's seconds per stage (summed over threads) and its scorer batching figures."""
    folder = out / "report" if world == 1 else out / "report" / "r000"
    stats = json.loads((folder / "statistics.json").read_text())
    return {"stage_s": stats["time_per_stage_s"], "batching": stats.get("batching", {})}


def _pairs(out: Path) -> int:
    from pvtt.schemas.manifest import read_manifest

    return read_manifest(out).counts["pairs"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--tunings", default="serial,overlapped",
                        help="comma-separated one-GPU runs before the all-GPU one: "
                             + ", ".join(TUNINGS))
    parser.add_argument("--rank", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--world-size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--tuning", choices=sorted(TUNINGS), default="overlapped", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rank is not None:  # a child: one rank on its one visible GPU
        build_rank(args.workdir, args.out, args.rank, args.world_size, args.tuning)
        return 0
    import torch

    gpus = torch.cuda.device_count()
    name = torch.cuda.get_device_name(0) if gpus else "none"
    with tempfile.TemporaryDirectory(prefix="pvtt-multigpu-") as tmp:
        workdir = Path(tmp)
        prepare(workdir)
        tunings = [t for t in args.tunings.split(",") if t]
        rows = [run(1, workdir, workdir / t, t) for t in tunings]
        if gpus > 1:
            rows.append(run(gpus, workdir, workdir / "all", tunings[-1]))
    base = rows[0]["pairs_per_s"]
    for row in rows:
        print(f"{row['gpus']} GPU(s) {name}, {row['tuning']}: {row['pairs']} pairs in "
              f"{row['wall_s']:.1f} s = {row['pairs_per_s']:.2f} pairs/s "
              f"({row['pairs_per_s'] / base:.2f}x serial on 1 GPU), GPUs busy {row['gpu_busy']:.1%}")
        top = sorted(row["stage_s"].items(), key=lambda kv: -kv[1])[:6]
        print("   rank 0 stage seconds (summed over threads): "
              + ", ".join(f"{k} {v:.1f}" for k, v in top))
        for kind, models in row["batching"].items():
            for model, figures in models.items():
                print(f"   {kind} {model}: mean batch {figures['mean_batch']} images "
                      f"over {figures['batches']} forwards ({figures['calls']} calls)")
    if args.json:
        args.json.write_text(json.dumps({"gpu": name, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
