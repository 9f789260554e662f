"""The ``pvtt`` command line.

Each sub-command lives in its own module under :mod:`pvtt.tools.commands` and
exposes ``register(subparsers)``, which adds its parser and sets ``func``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from pvtt import __version__

# Module names under pvtt.tools.commands, in the order `pvtt --help` lists them.
COMMAND_MODULES = (
    "demo",
    "build",
    "shots",
    "matte",
    "catalog",
    "models",
    "plan",
    "query",
    "stats",
    "verify",
    "merge",
    "export_pairs",
    "preview",
    "report",
)


def build_parser() -> argparse.ArgumentParser:
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
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"pvtt.tools.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"pvtt.tools.commands.{name}":
                continue  # command not shipped in this build
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
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
