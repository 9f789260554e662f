"""``pvtt plan``: clips, pairs, storage and GPU-hours of a build, before any GPU work.

The counts are the build's own: the same shot step (run here, on the CPU, and cached
where the build will look for it) and the same pair planner. Only the prices are
estimates; see :mod:`pvtt.builder.resources`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from PIL import Image

from pvtt.builder.cache import ArtifactCache
from pvtt.builder.catalog import Catalog, check_catalog
from pvtt.builder.launch import node_cpus, rank_workers
from pvtt.builder.near_duplicates import SHOT_STAGE, pair_targets
from pvtt.builder.pairs import choose_images, plan_pairs
from pvtt.builder.pipeline import plan_clips
from pvtt.builder.products import photo_fingerprint
from pvtt.builder.report import BuildReport
from pvtt.builder.resources import (
    ClipSize,
    Estimate,
    ImageSize,
    NodePlan,
    PairSize,
    RatesError,
    StageCost,
    clip_size,
    estimate,
    human_bytes,
    human_hours,
    load_rates,
    node_plan,
)
from pvtt.builder.video import VideoInfo, probe
from pvtt.schemas.config import BuildConfig, ConfigError, load_config
from pvtt.schemas.keys import image_id
from pvtt.tools.commands._common import fail
from pvtt.tools.commands.build import overrides_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan",
        description=(
            "Run the shot step (CPU; cached in the build's cache with --cache-dir) and plan "
            "the pairs exactly as `pvtt build` would (near-duplicate shots and photos "
            "left out, and listed), then estimate the hours of every "
            "stage, the wall time on a node of --gpus ranks, and the bytes written. Rates "
            "come from a build's OUT/report/rates.json (--rates) where it used the same "
            "backends, else from documented defaults; the output says which. The wall time "
            "divides the stage hours by how much that build overlapped its stages."
        ),
        epilog="example: pvtt plan catalog/ --config build.toml --rates old-out/report/rates.json "
        "--gpus 8",
    )
    p.add_argument("catalog", metavar="CATALOG", help="folder with products.csv and media")
    p.add_argument("--config", metavar="TOML", help="build config (defaults: CPU backends)")
    p.add_argument("--rates", metavar="FILE", help="rates.json written by an earlier build")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--cache-dir",
        default=None,
        metavar="DIR",
        help="the build's stage cache (OUT/cache by default): the shots found are kept there",
    )
    p.add_argument("--formats", metavar="LIST", help="lance,tar (default both)")
    p.add_argument("--device", default=None, help="cpu or cuda[:N] for model backends")
    p.add_argument("--limit-pairs", type=int, default=None, metavar="N", help="at most N pairs")
    p.add_argument(
        "--strategy",
        choices=("single", "all", "sampled"),
        default=None,
        help="which product photos become targets",
    )
    p.add_argument(
        "--gpus",
        type=int,
        default=1,
        metavar="N",
        help="build ranks on the node (`pvtt build --gpus N`), for its wall time (default 1)",
    )
    p.add_argument(
        "--cpus",
        type=int,
        default=None,
        metavar="N",
        help="CPUs of the node the ranks share (default: this machine's)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run, drop_rejected=False)


def plan_build(
    catalog: Catalog,
    config: BuildConfig,
    cache: ArtifactCache,
    measured: dict[str, Any] | None,
    *,
    progress: bool = False,
) -> tuple[Estimate, BuildReport]:
    """The estimate for building ``catalog`` with ``config``, and the report of the steps
    run (shots, near-duplicates). Every chosen photo is priced (the build mattes them all);
    those that copy another product's photo are left out of pairing, as in the build."""
    report = BuildReport()
    jobs = plan_clips(catalog, config, cache, report, progress=progress)
    infos: dict[Path, VideoInfo] = {}
    clips: list[ClipSize] = []
    for job in jobs:
        if job.product.video not in infos:
            infos[job.product.video] = probe(job.product.video)
        clips.append(clip_size(job.clip_id, job.shot, infos[job.product.video], config))
    refs = [r for product in catalog for r in choose_images(product, config.pairs)]
    targets = refs
    if config.pairs.near_duplicates != "off":
        targets = pair_targets(
            refs, [photo_fingerprint(r) for r in refs], config, report, catalog.root
        )
    images = []
    for ref in refs:
        with Image.open(ref.path) as img:
            width, height = img.size
        images.append(
            ImageSize(image_id(ref.product.id, ref.token), ref.path.stat().st_size, width, height)
        )
    plans = plan_pairs(catalog, [(j.clip_id, j.product) for j in jobs], targets, config.pairs)
    pairs = [
        PairSize(p.clip_id, image_id(p.target.product.id, p.target.token), p.difficulty.value)
        for p in plans
    ]
    return estimate(config, clips, images, pairs, measured), report


def _rate(value: float | None, unit: str) -> str:
    if value is None:
        return "?"
    return f"{value:,.3g} {unit}/s" if value < 100 else f"{value:,.0f} {unit}/s"


def _measured(stage: StageCost) -> str:
    """The rate as measured and, for stages scaled by pixel count, at what frame size."""
    if stage.rate is None:
        return "?"
    if stage.frame_pixels is None:
        return f"{_rate(stage.rate, stage.unit)} at any size"
    return f"{_rate(stage.rate, stage.unit)} at {stage.frame_pixels / 1e6:.2f} MP"


DUPLICATES_SHOWN = 10


def print_duplicates(report: BuildReport, mode: str) -> None:
    """The near-duplicates found (``pairs.near_duplicates``), the first few by name."""
    if not report.duplicates:
        return
    shots = sum(d.stage == SHOT_STAGE for d in report.duplicates)
    photos = len(report.duplicates) - shots
    verdict = "left out of pairing" if mode == "drop" else "kept (near_duplicates = report)"
    print(
        f"near-duplicates {verdict}: {shots} shot{'' if shots == 1 else 's'}, "
        f"{photos} photo{'' if photos == 1 else 's'}"
    )
    for dup in report.duplicates[:DUPLICATES_SHOWN]:
        print(f"  {dup.item}: {dup.reason}")
    if len(report.duplicates) > DUPLICATES_SHOWN:
        print(f"  ... and {len(report.duplicates) - DUPLICATES_SHOWN} more (--json lists all)")


def print_node(node: NodePlan, pool: str) -> None:
    """The node's wall time, and what the overlap it assumes was measured with."""
    what = "threads" if pool == "threads" else "processes"
    head = (
        f"node: {node.ranks} rank{'s' if node.ranks > 1 else ''} x {node.workers_per_rank} "
        f"pair {what} on {node.cpus} CPUs: wall {human_hours(node.wall_hours)}"
    )
    if node.overlap_source == "measured":
        w = node.measured_with
        print(
            f"{head} (stage hours / {node.overlap:.2f}, the overlap of the --rates build: "
            f"{w.get('workers')} pair {w.get('pair_pool')} on {w.get('cpus')} CPUs, "
            f"{w.get('local_ranks')} rank(s) on its node)"
        )
    else:
        print(
            f"{head} at most (stages one after another; the rates.json of a build gives "
            "how much they overlap)"
        )


def print_plan(
    est: Estimate,
    videos: int,
    report: BuildReport,
    rates: str | None,
    config: BuildConfig,
    node: NodePlan,
) -> None:
    clips_used = max(est.clips, 1)
    print(
        f"{videos} videos -> {est.clips} clips ({est.clip_frames:,} frames, "
        f"{est.clip_frames / clips_used:.0f} per clip), {est.images} target images, "
        f"{est.pairs:,} pairs ({est.pair_frames:,} frames)"
    )
    ran = report.calls.get("shots", 0)
    cached = f"; {videos - ran} from the cache" if ran < videos else ""
    print(f"shot detection: {ran} videos in {report.seconds.get('shots', 0.0):.1f} s (CPU){cached}")
    lost = [r for r in report.rejects if r.stage == "shots"]
    if lost:
        print(
            f"shots dropped by the filter or unreadable videos: {len(lost)} "
            "(see `pvtt shots VIDEO`)"
        )
    print_duplicates(report, config.pairs.near_duplicates)
    total = max(est.pairs, 1)
    print(
        "difficulty: "
        + ", ".join(f"{d} {n:,} ({n / total:.0%})" for d, n in est.difficulty.items())
    )
    print(f"\nrates: {rates or 'defaults (no --rates)'}")
    head = ("stage", "backend", "on", "work", "rate on these clips", "time = work / rate",
            "rate as measured, frame size", "source")  # fmt: skip
    rows = [
        (
            s.stage,
            s.backend,
            s.processor,
            f"{s.work:,.0f} {s.unit}",
            _rate(s.rate_here, s.unit),
            human_hours(s.hours),
            _measured(s),
            s.source,
        )
        for s in est.stages
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for row in [head, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print(
        f"total: {est.gpu_hours:,.2f} GPU-hours ({human_hours(est.gpu_hours)}), "
        f"{est.cpu_hours:,.2f} CPU-hours ({human_hours(est.cpu_hours)})"
    )
    print_node(node, config.pair_pool)
    if est.unpriced:
        print(
            f"not in the totals (no rate): {', '.join(est.unpriced)}; pass --rates from a "
            "build that used these backends"
        )
    notes = {s.note for s in est.stages if s.source == "default" and s.processor == "GPU"}
    for note in sorted(notes):
        print(f"  default: {note}")
    st = est.storage
    measured = sorted(k for k, v in est.bits_per_pixel_source.items() if v == "measured")
    print(
        f"\nstorage (bits per pixel: {'measured: ' + ', '.join(measured) if measured else 'defaults'})"
    )
    clip = st["per_clip_bytes"]
    print(
        f"  per clip: source {human_bytes(clip['source_video'])}, background "
        f"{human_bytes(clip['background_video'])}, masks {human_bytes(clip['masks'])}"
    )
    pair = st["per_pair_bytes"]
    print(
        f"  per pair: synthesized {human_bytes(pair['synth_video'])}, tar sample "
        f"{human_bytes(pair['tar_sample'])}"
    )
    lance = st["lance_bytes"]
    print(
        f"  lance: pairs {human_bytes(lance['pairs'])}, clips {human_bytes(lance['clips'])}, "
        f"products {human_bytes(lance['products'])} = {human_bytes(lance['total'])}"
    )
    print(f"  tar: {human_bytes(st['tar_bytes'])}")
    print(
        f"  dataset ({'+'.join(st['formats'])}): {human_bytes(st['dataset_bytes'])}; "
        f"stage cache {human_bytes(st['cache_bytes'])} more"
    )


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config, overrides_from_args(args))
        measured = load_rates(args.rates) if args.rates else None
    except (ConfigError, RatesError) as exc:
        return fail(str(exc))
    cpus = args.cpus or node_cpus()
    if args.gpus < 1 or cpus < 1:
        return fail(f"--gpus {args.gpus} and --cpus {cpus} must be at least 1")
    catalog, problems = check_catalog(args.catalog)
    for problem in problems:
        print(f"skipped: {problem}", file=sys.stderr)
    if not catalog.products:
        return fail(f"{args.catalog}: no usable product in the catalog")
    with tempfile.TemporaryDirectory(prefix="pvtt-plan-") as scratch:
        cache = ArtifactCache(config.cache_dir or scratch)
        est, report = plan_build(
            catalog, config, cache, measured, progress=not (args.no_progress or args.json)
        )
    node = node_plan(
        est,
        measured,
        ranks=args.gpus,
        cpus=cpus,
        workers=config.workers or rank_workers(config.pair_pool, cpus, args.gpus),
    )
    if args.json:
        out = est.to_json()
        out.update(
            node=node.to_json(),
            videos=len(catalog),
            rates_file=args.rates,
            shots_s=round(report.seconds.get("shots", 0.0), 3),
            shot_rejects=[r.as_dict() for r in report.rejects if r.stage == "shots"],
            near_duplicates=[r.as_dict() for r in report.duplicates],
            near_duplicates_mode=config.pairs.near_duplicates,
        )
        json.dump(out, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print_plan(est, len(catalog), report, args.rates, config, node)
    return 0
