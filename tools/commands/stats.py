"""``pvtt stats``: counts by difficulty x category, score quantiles, bytes per table."""

from __future__ import annotations

import argparse
import json

from pvtt.loaders.query import DIFFICULTIES
from pvtt.loaders.stats import dataset_stats
from pvtt.schemas.manifest import ManifestError
from pvtt.tools.commands._common import (
    add_dataset_argument,
    fail,
    open_built,
    storage_options_from_args,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stats")
    add_dataset_argument(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        stats = dataset_stats(open_built(args.out, storage_options_from_args(args)))
    except (ValueError, OSError, ManifestError) as exc:
        return fail(str(exc))
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    print_stats(stats)
    return 0


def print_stats(stats: dict) -> None:
    state = "complete" if stats["complete"] else "INCOMPLETE (build still running or killed)"
    print(f"build {stats['build_id']}: {stats['pairs']} pairs, {stats['passed']} passed, {state}")
    header = f"{'source category':24}" + "".join(f"{d:>8}" for d in DIFFICULTIES) + f"{'total':>8}"
    print(header)
    for cat, counts in stats["by_source_category"].items():
        print(
            f"{cat:24}"
            + "".join(f"{counts[d]:>8}" for d in DIFFICULTIES)
            + f"{sum(counts.values()):>8}"
        )
    totals = stats["by_difficulty"]
    print(f"{'all':24}" + "".join(f"{totals[d]:>8}" for d in DIFFICULTIES) + f"{stats['pairs']:>8}")
    print("\nquality_score quantiles (q10 / median / q90):")
    for diff in DIFFICULTIES:
        q = stats["scores"][diff]["quality_score"]
        text = f"{q['q10']:.3f} / {q['q50']:.3f} / {q['q90']:.3f}" if q else "-"
        print(f"  {diff:8} {text}")
    print("\nstorage:")
    for name, size in stats["bytes"].items():
        print(f"  {name:16} {size / 1e6:10.2f} MB")
