"""Throughput of a model-backend build on 1 GPU and on every GPU of the node.

Run on a multi-GPU node (random weights, no downloads)::

    python -m pvtt.tools.bench.multigpu --json multigpu.json

Builds the demo catalog with Grounding DINO + SAM2 + a CPU/DINOv2 composite scorer
(tar output): on GPU 0 as the old serial local engine did (one clip at a time, one
scorer forward per pair), on GPU 0 overlapped (two clips on their own CUDA streams,
scorer crops batched across pairs), then as one rank per GPU followed by ``pvtt
merge``, while NVML samples every GPU's utilisation. Prints pairs/s of each as a ratio
to the first run, and the mean busy share of the GPUs used. Each build has its own
artefact cache, so every clip's model stages run in both.

``--catalog 720p`` builds a rehearsal catalog of 3-10 s clips of 1280x720 instead
(``--products``, ``--catalog-dir`` to keep it between runs), and ``--tunings gpu`` makes
the pairs in worker processes with the torch pair stages::

    python -m pvtt.tools.bench.multigpu --catalog 720p --catalog-dir cat720 --tunings gpu
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

_GPU = {"clip_workers": 4, "batch_across_pairs": True, "workers": 12, "pair_pool": "processes",
        "pair_backends": "torch"}
TUNINGS = {
    "serial": {"clip_workers": 1, "batch_across_pairs": False},
    "overlapped": {"clip_workers": 2, "batch_across_pairs": True},
    "wide": {"clip_workers": 2, "batch_across_pairs": True, "workers": 16},
    "gpu": _GPU,
    "gpu-fast": {**_GPU, "preset": "superfast", "flow_on_device": True},
}
"""``serial``: one clip's stages at a time, one scorer forward per pair (the old local
engine); ``overlapped``: two clips' stages at once on their own CUDA streams, scorer
crops batched across the pairs in flight; ``wide``: overlapped with 16 pair threads
instead of the default 8 (for nodes with many cores per GPU); ``gpu``: pairs made in 12
worker processes (``pair_pool = "processes"``: the build's own process, which runs SAM2's
per-frame loop, is no longer starved of the GIL by pair threads), each with the inserter
and the statistics scorer as torch ops on the GPU (``inserter = "torch"``, a ``torch``
member in the composite scorer), and four clips' stages at once (at 720p two kept the
pair workers idle more than half of the time); ``gpu-fast``: ``gpu`` with the two
opt-in trades of throughput, x264's ``superfast`` preset (``clip.preset``: half the
encoding CPU for 1.44x the bytes) and the temporal score's flows on the GPU (the torch
scorer's ``flow_on_device``: equal on textured products, within 0.03 on flat ones)."""

CATALOGS = ("demo", "720p")
"""``demo``: ``pvtt demo``'s catalog (120 pairs of small clips); ``720p``: a rehearsal
catalog (:mod:`pvtt.builder.rehearsal_catalog`) of one 3-10 s shot of 1280x720 at 24 fps
per product, every photo of every other product paired with each clip, as the seed's
sets pair about a hundred products' photos with each clip."""


def _config(workdir: Path, device: str, tuning: str = "overlapped", catalog: str = "demo") -> Any:
    from pvtt.schemas.config import load_config

    knobs = TUNINGS[tuning]
    pair_backends = knobs.get("pair_backends", "cpu")
    embedding = {"backend": "embedding", "model": str(workdir / "dinov2"),
                 "params": {"batch_across_pairs": knobs["batch_across_pairs"]}}
    return load_config(None, {
        "device": device,
        "clip_workers": knobs["clip_workers"],
        "clip.preset": knobs.get("preset", "veryfast"),
        "workers": knobs.get("workers"),
        "pair_pool": knobs.get("pair_pool", "threads"),
        "detector.backend": "grounding-dino", "detector.model": str(workdir / "gdino"),
        "detector.params": {"box_threshold": 0.0, "text_threshold": 0.0},
        "segmenter.backend": "sam2",
        "segmenter.params": {"random_weights": True, "max_lost_share": 1.0},
        "inserter.backend": pair_backends,
        "scorer.backend": "composite",
        "scorer.params": {"members": [_statistics_member(pair_backends, knobs), embedding]},
        "pairs.strategy": "all" if catalog == "720p" else "sampled",
        "output.formats": ["tar"],
    })


def _statistics_member(backend: str, knobs: dict[str, Any]) -> dict[str, Any]:
    """The composite's statistics member: ``cpu`` or ``torch``, the latter with its flows
    on the GPU when the tuning asks."""
    if knobs.get("flow_on_device"):
        return {"backend": backend, "params": {"flow_on_device": True}}
    return {"backend": backend}


def prepare(workdir: Path, catalog: str = "demo", products: int = 8,
            catalog_dir: Path | None = None) -> None:
    """The catalog (``catalog_dir``'s when it holds one) and random-weight model folders."""
    import transformers as tf

    from pvtt.builder.demo import make_demo_catalog
    from pvtt.builder.rehearsal_catalog import make_rehearsal_catalog
    from pvtt.tools.bench.models import grounding_dino_parts

    model, processor = grounding_dino_parts()
    model.save_pretrained(workdir / "gdino")
    processor.save_pretrained(workdir / "gdino")
    tf.Dinov2Model(tf.Dinov2Config(hidden_size=384, num_attention_heads=6, intermediate_size=1536)).save_pretrained(workdir / "dinov2")
    tf.BitImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}).save_pretrained(workdir / "dinov2")
    target = workdir / "catalog"
    if catalog_dir is not None and (catalog_dir / "products.csv").exists():
        target.symlink_to(catalog_dir.resolve())
    elif catalog == "720p":
        make_rehearsal_catalog(catalog_dir or target, products=products, shots=(1, 1))
        if catalog_dir is not None:
            target.symlink_to(catalog_dir.resolve())
    else:
        make_demo_catalog(target)


def build_rank(workdir: Path, out: Path, rank: int, world: int, tuning: str, catalog: str) -> int:
    from pvtt.builder.catalog import load_catalog
    from pvtt.builder.pipeline import Build

    config = _config(workdir, "cuda", tuning, catalog)
    config.cache_dir = str(out / "cache")
    result = Build(load_catalog(workdir / "catalog"), out, config, rank=rank, world_size=world,
                   progress=False).run()
    return result.written


def run(world: int, workdir: Path, out: Path, tuning: str = "overlapped",
        catalog: str = "demo") -> dict[str, Any]:
    """Build with ``world`` ranks (one process per GPU), merge, and time it."""
    start = time.perf_counter()
    from pvtt.tools.bench.models import GpuSampler

    with GpuSampler(list(range(world))) as sampler:
        procs = []
        for rank in range(world):
            env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(rank)}
            cmd = [sys.executable, "-m", "pvtt.tools.bench.multigpu", "--rank", str(rank),
                   "--world-size", str(world), "--workdir", str(workdir), "--out", str(out),
                   "--tuning", tuning, "--catalog", catalog]
            procs.append(subprocess.Popen(cmd, env=env))
        codes = [p.wait() for p in procs]
        if any(codes):
            raise RuntimeError(f"ranks exited with {codes}")
        manifest = _merge(out) if world > 1 else None
    wall = time.perf_counter() - start
    pairs = manifest.counts["pairs"] if manifest else _pairs(out)
    figures = _stage_figures(out, world)
    return {"gpus": world, "tuning": tuning, "catalog": catalog, **figures, "pairs": pairs,
            "wall_s": wall, "pairs_per_s": pairs / wall, "gpu_busy": sampler.busy_share,
            **_pair_phase(figures["timeline"], sampler, pairs / world)}


def _pair_phase(timeline: dict[str, float], sampler: Any, pairs: float) -> dict[str, float]:
    """Rank 0's pair phase (its first pair submitted to its last written): its length, its
    pairs/s (the rank's share of the pairs) and the GPUs' busy share within it."""
    if "pairs_until_s" not in timeline:
        return {}
    start = timeline["started_at"] + timeline["pairs_from_s"]
    end = timeline["started_at"] + timeline["pairs_until_s"]
    return {"pair_phase_s": end - start, "pair_phase_pairs_per_s": pairs / max(end - start, 1e-9),
            "pair_phase_gpu_busy": sampler.busy_between(start, end)}


def _merge(out: Path) -> Any:
    """``pvtt merge`` (imported here: a one-GPU run needs no Lance)."""
    from pvtt.builder.merge import merge

    return merge(out)


def _stage_figures(out: Path, world: int) -> dict[str, Any]:
    """Rank 0's seconds per stage (summed over threads) and its scorer batching figures."""
    folder = out / "report" if world == 1 else out / "report" / "r000"
    stats = json.loads((folder / "statistics.json").read_text())
    return {"stage_s": stats["time_per_stage_s"], "batching": stats.get("batching", {}),
            "encoder": stats.get("encoder"), "timeline": stats.get("timeline", {})}


def _pairs(out: Path) -> int:
    from pvtt.schemas.manifest import read_manifest

    return read_manifest(out).counts["pairs"]


def _print_row(row: dict[str, Any], base: float, name: str) -> None:
    """One run's figures: pairs/s against the first run's, the pair phase, the stages."""
    print(f"{row['gpus']} GPU(s) {name}, {row['catalog']} catalog, {row['tuning']}: {row['pairs']} pairs in "
          f"{row['wall_s']:.1f} s = {row['pairs_per_s']:.2f} pairs/s "
          f"({row['pairs_per_s'] / base:.2f}x the first row), GPUs busy {row['gpu_busy']:.1%}, "
          f"encoder {row['encoder']}")
    if "pair_phase_s" in row:
        print(f"   pair phase (rank 0's first pair to its last): {row['pair_phase_s']:.1f} s, "
              f"{row['pair_phase_pairs_per_s']:.2f} pairs/s a rank, "
              f"GPUs busy {row['pair_phase_gpu_busy']:.1%}")
    top = sorted(row["stage_s"].items(), key=lambda kv: -kv[1])[:6]
    print("   rank 0 stage seconds (summed over threads): "
          + ", ".join(f"{k} {v:.1f}" for k, v in top))
    for kind, models in row["batching"].items():
        for model, figures in models.items():
            if figures["calls"]:  # pair workers' own backends report nothing here
                print(f"   {kind} {model}: mean batch {figures['mean_batch']} images "
                      f"over {figures['batches']} forwards ({figures['calls']} calls)")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--tunings", default="serial,overlapped",
                        help="comma-separated one-GPU runs before the all-GPU one: "
                             + ", ".join(TUNINGS))
    parser.add_argument("--catalog", choices=CATALOGS, default="demo",
                        help="demo: pvtt demo's catalog; 720p: a rehearsal catalog of 3-10 s 720p clips")
    parser.add_argument("--products", type=int, default=8, help="products of the 720p catalog")
    parser.add_argument("--catalog-dir", type=Path,
                        help="use the catalog in this folder, or write the generated one there")
    parser.add_argument("--rank", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--world-size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--tuning", choices=sorted(TUNINGS), default="overlapped", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rank is not None:  # a child: one rank on its one visible GPU
        build_rank(args.workdir, args.out, args.rank, args.world_size, args.tuning, args.catalog)
        return 0
    import torch

    gpus = torch.cuda.device_count()
    name = torch.cuda.get_device_name(0) if gpus else "none"
    rows: list[dict[str, Any]] = []

    def record(row: dict[str, Any]) -> None:
        """Print a run's figures as soon as it ends, and keep the JSON whole after each run:
        a call cut short by its time limit still leaves the runs it finished."""
        rows.append(row)
        _print_row(row, rows[0]["pairs_per_s"], name)
        if args.json:
            args.json.write_text(json.dumps({"gpu": name, "rows": rows}, indent=2))

    with tempfile.TemporaryDirectory(prefix="pvtt-multigpu-") as tmp:
        workdir = Path(tmp)
        prepare(workdir, args.catalog, args.products, args.catalog_dir)
        tunings = [t for t in args.tunings.split(",") if t]
        for tuning in tunings:
            record(run(1, workdir, workdir / tuning, tuning, args.catalog))
        if gpus > 1:
            record(run(gpus, workdir, workdir / "all", tunings[-1], args.catalog))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
