"""Benchmark the build's pair pool: pairs per minute with worker processes against threads.

Run ``python -m pvtt.tools.bench.pair_pool [--quick] [--rounds N] [--workers N] [--json FILE]``.
It writes the synthetic demo catalog into a temporary folder, builds it once to fill the
artefact cache (not timed), then builds it again into fresh output folders over that cache
with ``pair_pool = "threads"`` and ``"processes"``, taking turns round by round (the
machine is shared, so the load drifts; each round's order alternates). Those builds run
the per-pair stages (insert, score, check, encode, write) and decode the cached clips, as
a build that adds pairs to prepared clips does.

Figures: pairs per minute of each build's wall time (median over rounds), the ratio
processes / threads, and whether both made the same pair ids with the same scores (the
pools must not change the output; ``tests/test_build.py`` checks the bytes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from pvtt.builder.catalog import load_catalog
from pvtt.builder.demo import PRODUCTS, make_demo_catalog
from pvtt.builder.pipeline import Build
from pvtt.loaders.store import open_dataset
from pvtt.schemas.config import load_config

QUICK_PRODUCTS = ("neck-gold", "ring-ruby", "mug-blue")
KINDS = ("threads", "processes")


def pool_build(
    catalog: Path, out: Path, cache: Path, kind: str, workers: int | None, strategy: str
) -> dict[str, Any]:
    """One build of ``catalog`` with pair pool ``kind``; its wall time and pair rate."""
    overrides: dict[str, Any] = {
        "cache_dir": str(cache),
        "pair_pool": kind,
        "pairs.strategy": strategy,
    }
    if workers is not None:
        overrides["workers"] = workers
    config = load_config(None, overrides)
    start = time.perf_counter()
    result = Build(load_catalog(catalog), out, config, progress=False).run()
    wall = time.perf_counter() - start
    return {
        "pairs": result.written,
        "wall_s": round(wall, 3),
        "pairs_per_min": round(result.written / wall * 60, 2),
    }


def scores(out: Path) -> dict[str, float]:
    table = open_dataset(out).pairs.to_table(columns=["pair_id", "quality_score"])
    return dict(
        zip(
            table.column("pair_id").to_pylist(),
            table.column("quality_score").to_pylist(),
            strict=True,
        )
    )


def run(quick: bool, rounds: int, workers: int | None, strategy: str) -> dict[str, Any]:
    """Fill the cache, then ``rounds`` builds with each pool in turn; every figure."""
    products = [p for p in PRODUCTS if p.id in QUICK_PRODUCTS] if quick else list(PRODUCTS)
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
    with tempfile.TemporaryDirectory(prefix="pvtt-bench-pool-") as tmp:
        root = Path(tmp)
        catalog = make_demo_catalog(root / "catalog", products=products)
        fill = pool_build(catalog, root / "fill", root / "cache", "threads", workers, strategy)
        print(f"cache filled: {fill['pairs']} pairs in {fill['wall_s']:.1f} s (not counted)")
        made: dict[str, dict[str, float]] = {}
        for r in range(rounds):
            order = KINDS if r % 2 == 0 else KINDS[::-1]
            for kind in order:
                out = root / f"{kind}-{r}"
                fig = pool_build(catalog, out, root / "cache", kind, workers, strategy)
                runs[kind].append(fig)
                made[kind] = scores(out)
                print(
                    f"round {r}: {kind:<9} {fig['pairs']} pairs in {fig['wall_s']:6.2f} s "
                    f"= {fig['pairs_per_min']:7.1f} pairs/min"
                )
    median = {k: statistics.median(f["pairs_per_min"] for f in runs[k]) for k in KINDS}
    ratio = median["processes"] / median["threads"] if median["threads"] else float("nan")
    same = made["threads"] == made["processes"]
    print(
        f"\nmedian pairs/min: threads {median['threads']:.1f}, processes "
        f"{median['processes']:.1f}; processes / threads = {ratio:.2f}x; "
        f"same pairs and scores: {same}"
    )
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "date": time.strftime("%Y-%m-%d"),
        "quick": quick,
        "products": [p.id for p in products],
        "strategy": strategy,
        "workers": workers,
        "runs": runs,
        "median_pairs_per_min": median,
        "processes_over_threads": round(ratio, 3),
        "same_output": same,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 of the 6 demo products")
    parser.add_argument("--rounds", type=int, default=3, help="builds per pool (default 3)")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="pair workers (default: the build's, CPU count at most 8)",
    )
    parser.add_argument(
        "--strategy",
        choices=("single", "all", "sampled"),
        default="sampled",
        help="pairs.strategy (single: fewer pairs)",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="write every figure to FILE")
    args = parser.parse_args(argv)
    figures = run(args.quick, args.rounds, args.workers, args.strategy)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2), encoding="utf-8")
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
