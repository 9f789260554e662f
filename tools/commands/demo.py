"""``pvtt demo``: build a small dataset from a synthetic catalog, on the CPU, no weights."""

from __future__ import annotations

import argparse
from pathlib import Path

from pvtt.builder.demo import make_demo_catalog
from pvtt.loaders.stats import dataset_stats
from pvtt.loaders.store import open_dataset
from pvtt.tools.commands.build import add_build_arguments, print_summary, run_build
from pvtt.tools.commands.stats import print_stats


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="build a demo dataset from a synthetic catalog (CPU, a few minutes)",
        description=(
            "Write a synthetic catalog (multi-shot product videos with camera motion, "
            "product photos on plain backgrounds, four categories) into OUT/catalog, "
            "build it with the weight-free CPU backends, and print the statistics."
        ),
    )
    p.add_argument("out", metavar="OUT", nargs="?", default="pvtt-demo", help="default: pvtt-demo")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic catalog")
    add_build_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.gpus is not None or args.engine != "local":
        print("pvtt: error: the demo runs the local engine; use `pvtt build` for --gpus or --engine")
        return 2
    out = Path(args.out)
    catalog = out / "catalog"
    if not (catalog / "products.csv").exists():
        print(f"writing a synthetic catalog to {catalog}")
        make_demo_catalog(catalog, seed=args.seed)
    result = run_build(str(catalog), str(out / "dataset"), args)
    if isinstance(result, int):
        return result
    print_summary(result)
    print()
    print_stats(dataset_stats(open_dataset(out / "dataset")))
    ds = out / "dataset"
    print(
        "\nnext, try:\n"
        f"  pvtt query {ds} --difficulty hard,expert --min-score 0.7\n"
        f"  pvtt query {ds} --rejected --columns pair_id,quality_score,reject_reason\n"
        f"  pvtt stats {ds} --json\n"
        f"  pvtt verify {ds}\n"
        f"  pvtt report {ds} -o {out / 'report.html'}   (then open it in a browser)\n"
        f"  pvtt preview {ds} --difficulty expert --n 4 -o {out / 'expert.png'}\n"
        f"  pvtt export-pairs {ds} {out / 'seed-layout'} --difficulty expert\n"
        "  python -c \"import lance; print(lance.dataset('"
        f"{ds}/lance/pairs.lance').count_rows())\""
    )
    return 0
