"""``pvtt demo``: build a small dataset from a synthetic catalog, on the CPU, no weights."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
from pathlib import Path

from pvtt.builder.demo import make_demo_catalog
from pvtt.loaders.stats import dataset_stats
from pvtt.loaders.store import open_dataset
from pvtt.tools.commands.build import add_build_arguments, print_summary, run_build
from pvtt.tools.commands.stats import print_stats


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
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
    print("\n" + next_steps(out))
    return 0


def next_steps(out: Path) -> str:
    """The commands to try on the demo dataset, written so that they run as shown."""
    script = _pvtt_script()
    python = runnable("python", Path(sys.executable))
    pvtt = runnable("pvtt", script) if script.is_file() else f"{python} -m pvtt.tools.cli"
    ds = shlex.quote(str(out / "dataset"))
    lines = [
        f"{pvtt} query {ds} --difficulty hard,expert --min-score 0.7",
        f"{pvtt} query {ds} --rejected --columns pair_id,quality_score,reject_reason",
        f"{pvtt} stats {ds} --json",
        f"{pvtt} verify {ds}",
        f"{pvtt} report {ds} -o {shlex.quote(str(out / 'report.html'))}"
        "   # then open it in a browser",
        f"{pvtt} preview {ds} --difficulty expert --n 4 -o {shlex.quote(str(out / 'expert.png'))}",
        f"{pvtt} export-pairs {ds} {shlex.quote(str(out / 'seed-layout'))} --difficulty expert",
        f"{python} -c \"import lance; print(lance.dataset('"
        f"{out / 'dataset'}/lance/pairs.lance').count_rows())\"",
    ]
    text = "next, try:\n" + "".join(f"  {line}\n" for line in lines)
    activate = script.parent / "activate"
    if pvtt != "pvtt" and script.is_file() and activate.is_file():
        text += f"(to type plain `pvtt`, put it on the PATH: source {shell_path(activate)})\n"
    return text


def _pvtt_script() -> Path:
    """The ``pvtt`` console script running now, else the one beside this Python (which
    may not exist: ``python -m pvtt.tools.cli`` from a checkout)."""
    argv0 = Path(sys.argv[0])
    if argv0.name in ("pvtt", "pvtt.exe") and argv0.is_file():
        return argv0
    return Path(sys.executable).parent / "pvtt"


def runnable(name: str, program: Path) -> str:
    """How to type ``program`` in a shell here: ``name`` when the PATH finds this very
    file (an active virtual environment), else its path, relative when it is below the
    current folder (``.venv/bin/pvtt``) and absolute otherwise."""
    found = shutil.which(name)
    if found and os.path.abspath(found) == os.path.abspath(program):
        return name
    return shell_path(program)


def shell_path(path: Path) -> str:
    """``path`` as a shell word that runs it from here: relative when below the current
    folder (with a ``/``, so the shell does not search the PATH), else absolute."""
    absolute = os.path.abspath(path)
    relative = os.path.relpath(absolute)
    shown = absolute if relative.startswith("..") else relative
    return shlex.quote(shown if os.sep in shown else f".{os.sep}{shown}")
