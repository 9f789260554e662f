"""The ``pvtt`` command line.

Each sub-command lives in its own module under :mod:`pvtt.tools.commands` and
exposes ``register(subparsers)``, which adds its parser and sets ``func``. The
command modules import torch, Lance and pandas, which take seconds to load, so only
the invoked command's module is imported; ``pvtt --help`` lists every command from
:data:`COMMANDS` without importing any of them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from pvtt import __version__

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "build a demo dataset from a synthetic catalog (CPU, a few minutes)"),
    "build": ("build", "build training pairs from a catalog"),
    "shots": ("shots", "detected shots, before and after the shot filter"),
    "matte": ("matte", "cut the product out of one photo (RGBA PNG)"),
    "catalog": ("catalog", "check a catalog folder"),
    "models": ("models", "check the model weights a build would use"),
    "plan": ("plan", "clips, pairs, storage and GPU-hours of a build, before building"),
    "query": ("query", "select pairs by difficulty, score, category or SQL (never reads media)"),
    "stats": ("stats", "counts, score quantiles and storage of a built dataset"),
    "verify": ("verify", "check every shard, row and media blob of a built dataset"),
    "merge": ("merge", "publish every rank of a multi-rank build as one dataset"),
    "export-pairs": (
        "export_pairs",
        "write the seed's folder layout and pairs.json for the selected pairs",
    ),
    "preview": ("preview", "side-by-side video (or contact sheet) of one pair or a filtered few"),
    "report": ("report", "a self-contained HTML report: plots, rejects, timings, a gallery"),
    "review": ("review", "judge pairs in a local web page; verdicts go to a labels table"),
    "calibrate": ("calibrate", "the quality gate against human labels: precision, recall, AUC"),
    "rescore": ("rescore", "score the pairs again (a new scorer too) as a new version; media kept"),
    "resynth": ("resynth", "regenerate selected pairs (other backends or seed) as a new version"),
}
"""Command name -> (module under ``pvtt.tools.commands``, its one-line help), in the
order ``pvtt --help`` lists them."""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``pvtt`` parser with ``command``'s own parser; the others are listed only."""
    parser = argparse.ArgumentParser(
        prog="pvtt",
        description=(
            "Build product-video-template-transfer training pairs into WebDataset "
            "shards and Lance tables, then query and inspect them."
        ),
        epilog="Start with `pvtt demo` to build a small synthetic dataset on the CPU.",
    )
    parser.add_argument("--version", action="version", version=f"pvtt {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        if name == command:
            module = importlib.import_module(f"pvtt.tools.commands.{module_name}")
            module.register(sub)  # a parser of its own; the listing is never shown then
        else:
            sub.add_parser(name, help=help_text)
    return parser


def invoked_command(argv: Sequence[str]) -> str | None:
    """The sub-command ``argv`` names: its first word that is not an option (``pvtt``'s
    own options take no value); None when ``pvtt``'s own help comes first."""
    for arg in argv:
        if arg in ("-h", "--help"):
            return None
        if not arg.startswith("-"):
            return arg
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(invoked_command(argv))
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:  # the build log may lower pvtt's own level
        handler.setLevel(level)
    if args.verbose < 2:  # third-party progress chatter drowns pvtt's own output
        for name in ("pyscenedetect", "numba", "PIL"):
            logging.getLogger(name).setLevel(logging.WARNING)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
