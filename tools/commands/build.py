"""``pvtt build``: a catalog into a dataset of pairs (tar shards and Lance tables)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from pvtt.builder.catalog import check_catalog
from pvtt.builder.launch import local_device
from pvtt.builder.models import check_device, check_weights
from pvtt.builder.pipeline import Build, BuildResult, machine_failure
from pvtt.builder.publish import Publisher, default_staging, is_remote
from pvtt.builder.writer import WriterLockedError
from pvtt.schemas.config import ConfigError, load_config
from pvtt.schemas.manifest import ManifestError
from pvtt.tools.commands._common import (
    add_storage_option_argument,
    fail,
    storage_options_from_args,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "build",
        description=(
            "Cut the catalog's videos into shots, track and remove the product, cut out "
            "every product photo, then synthesize, score and write every pair. Per-clip "
            "and per-image work is cached; run the same command again after a crash or a "
            "config change and only the missing work is done."
        ),
        epilog="example: pvtt build catalog/ out/ --config build.toml --formats lance,tar",
    )
    p.add_argument("catalog", metavar="CATALOG", help="folder with products.csv and media")
    p.add_argument("out", metavar="OUT", help="output folder (created; resumed if it exists)")
    add_build_arguments(p)
    p.set_defaults(func=run)


def add_build_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="TOML", help="build config (defaults: CPU backends)")
    p.add_argument("--formats", metavar="LIST", help="lance,tar (default both)")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local (this process, or one rank with --rank) or ray (Ray Data; "
                        "install the ray extra)")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="Ray cluster to join (default RAY_ADDRESS, else a local Ray)")
    p.add_argument("--rank", type=int, default=None, help="this process's share (0-based)")
    p.add_argument("--world-size", type=int, default=None, help="number of shares")
    p.add_argument("--device", default=None, help="cpu or cuda[:N] for model backends")
    p.add_argument("--gpus", default=None, metavar="all|N",
                   help="one build process per GPU of this node, then `pvtt merge`")
    p.add_argument("--workers", type=int, default=None,
                   help="threads or processes making pairs (default: this rank's share of "
                        "the node's CPUs, threads at most 8)")
    p.add_argument("--pair-pool", choices=("threads", "processes"), default=None,
                   help="where --workers make pairs: threads of this process (default) or "
                        "worker processes (clip arrays in shared memory, same output)")
    p.add_argument("--encode-workers", type=int, default=None, metavar="N",
                   help="threads encoding synthesized clips apart from the pair threads "
                        "(default 0: each pair thread encodes its own)")
    p.add_argument("--clip-workers", type=int, default=None, metavar="N",
                   help="clips prepared at once, each on its own CUDA stream (default 1; "
                        "2 keeps a GPU busier with model backends)")
    p.add_argument("--limit-pairs", type=int, default=None, metavar="N", help="at most N pairs")
    p.add_argument("--strategy", choices=("single", "all", "sampled"), default=None,
                   help="which product photos become targets")
    p.add_argument("--drop-rejected", action="store_true",
                   help="do not keep pairs below the quality threshold")
    p.add_argument("--cache-dir", default=None, help="stage artefact cache (default OUT/cache)")
    p.add_argument("--staging", default=None, metavar="DIR",
                   help="for an s3:// OUT: the local folder the build commits into before "
                        "each commit is uploaded (default ~/.cache/pvtt/staging/<hash>)")
    add_storage_option_argument(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _distributed(args: argparse.Namespace) -> tuple[int, int]:
    rank, world = args.rank, args.world_size
    env = os.environ
    if rank is None:
        rank = int(env.get("RANK", env.get("SLURM_PROCID", 0)))
    if world is None:
        world = int(env.get("WORLD_SIZE", env.get("SLURM_NTASKS", 1)))
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"--rank {rank} must be in [0, --world-size {world})")
    return rank, world


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if args.formats:
        out["output.formats"] = [f.strip() for f in args.formats.split(",") if f.strip()]
    if args.device:
        out["device"] = local_device(args.device)
    if getattr(args, "workers", None) is not None:  # `pvtt plan` shares these overrides
        out["workers"] = args.workers
    if getattr(args, "pair_pool", None) is not None:
        out["pair_pool"] = args.pair_pool
    if getattr(args, "encode_workers", None) is not None:
        out["encode_workers"] = args.encode_workers
    if getattr(args, "clip_workers", None) is not None:
        out["clip_workers"] = args.clip_workers
    if args.limit_pairs is not None:
        out["pairs.limit"] = args.limit_pairs
    if args.strategy:
        out["pairs.strategy"] = args.strategy
    if args.drop_rejected:
        out["quality.drop_rejected"] = True
    if args.cache_dir:
        out["cache_dir"] = args.cache_dir
    return out


def run_build(catalog_dir: str, out: str, args: argparse.Namespace) -> BuildResult | int:
    if is_remote(out) and args.engine != "local":
        return fail("an s3:// OUT needs the local engine (ranks: build locally, then copy)")
    try:
        config = load_config(args.config, overrides_from_args(args))
        rank, world = _distributed(args)
    except ConfigError as exc:
        return fail(str(exc))
    missing = [w for w in check_weights(config) if w.missing]
    device = check_device(config.device)
    device_ok = device.ok or args.engine == "ray"  # Ray: the workers' GPUs count, not ours
    if missing or not device_ok:
        for weight in missing:
            print(f"missing: {weight.stage} ({weight.backend}): {weight.detail}", file=sys.stderr)
        if not device_ok:
            print(f"device: {device.detail}", file=sys.stderr)
        return fail("the build would fail on the weights or device above; see `pvtt models check`")
    catalog, problems = check_catalog(catalog_dir)
    for problem in problems:
        print(f"skipped: {problem}", file=sys.stderr)
    if not catalog.products:
        return fail(f"{catalog_dir}: no usable product in the catalog")
    try:
        if args.engine == "ray":
            from dataclasses import asdict

            from pvtt.builder.engines.ray_engine import RayOptions, run_ray_build

            return run_ray_build(catalog, out, config, address=args.ray_address,
                                 options=RayOptions(**asdict(config.engine)),
                                 problems=problems, progress=not args.no_progress)
        publisher = None
        if is_remote(out):
            staging = Path(args.staging) if args.staging else default_staging(out)
            publisher = Publisher(staging, out, storage_options_from_args(args))
            print(f"staging in {staging}, publishing each commit to {out}", file=sys.stderr)
            out = str(staging)
        build = Build(catalog, out, config, rank=rank, world_size=world,
                      progress=not args.no_progress,
                      on_commit=publisher.publish if publisher else None)
        for problem in problems:
            build.report.reject("catalog", f"{problem.file}:{problem.row}", problem.message)
        result = build.run()
        if publisher is not None:
            publisher.publish()  # the report written after the last commit
    except OSError as exc:
        if machine_failure(exc):
            return fail(f"{exc} (the dataset keeps its last commit; free space or quota and run "
                        f"the same command again to resume)")
        return fail(str(exc))
    except (ConfigError, ManifestError, WriterLockedError) as exc:
        return fail(str(exc))
    return result


def _child_argv(args: argparse.Namespace) -> list[str]:
    """The build arguments a ``--gpus`` child repeats (its rank and device are added)."""
    argv = [args.catalog, args.out]
    for flag, value in (("--config", args.config), ("--formats", args.formats),
                        ("--limit-pairs", args.limit_pairs), ("--strategy", args.strategy),
                        ("--cache-dir", args.cache_dir), ("--workers", args.workers),
                        ("--clip-workers", args.clip_workers),
                        ("--pair-pool", args.pair_pool),
                        ("--encode-workers", args.encode_workers)):
        if value is not None:
            argv += [flag, str(value)]
    if args.drop_rejected:
        argv.append("--drop-rejected")
    return argv + ["--no-progress"]


def print_summary(result: BuildResult) -> None:
    stats = result.report.as_dict()
    counts = result.manifest_counts
    print(f"\nbuilt {result.out}: {counts.get('pairs', 0)} pairs "
          f"({counts.get('passed', 0)} passed), {result.written} new, "
          f"{result.skipped_done} already done; {stats['rejects']} rejects")
    print("pairs by difficulty: " + json.dumps(counts.get("by_difficulty", {})))
    shares = stats["time_share"]
    if shares:
        print("time per stage: " + ", ".join(f"{k} {v:.0%}" for k, v in shares.items()))
    if stats["rejects"]:
        print(f"rejects by reason (see {Path(result.out) / 'report' / 'rejects.jsonl'}):")
        for reason, n in list(stats["rejects_by_reason"].items())[:10]:
            print(f"  {n:5d}  {reason}")


def run_per_gpu(args: argparse.Namespace, argv: list[str]) -> int:
    """``--gpus``: one rank per GPU as child processes, then merge."""
    from pvtt.builder.launch import launch_per_gpu, visible_gpus
    from pvtt.builder.merge import merge

    try:
        gpus = visible_gpus(args.gpus)
    except ValueError as exc:
        return fail(str(exc))
    codes = launch_per_gpu(argv, gpus)
    failed = [rank for rank, code in enumerate(codes) if code]
    if failed:
        return fail(f"ranks {failed} failed (exit codes {[codes[r] for r in failed]}); "
                    f"re-run them with --rank R --world-size {len(gpus)}, then `pvtt merge`")
    try:
        manifest = merge(args.out)
    except ManifestError as exc:
        return fail(str(exc))
    print(f"{len(gpus)} GPUs: {manifest.counts.get('pairs', 0)} pairs merged into {args.out}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.gpus is not None:
        if args.engine != "local" or args.rank is not None or args.world_size is not None:
            return fail("--gpus launches its own ranks; drop --engine, --rank and --world-size")
        return run_per_gpu(args, _child_argv(args))
    result = run_build(args.catalog, args.out, args)
    if isinstance(result, int):
        return result
    print_summary(result)
    return 0
