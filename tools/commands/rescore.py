"""``pvtt rescore``: score a built dataset's pairs again, as a new version; media untouched.

Runs the scorer of ``--config`` (default: the dataset's own build config) on every
stored pair, a scorer added since the build (a VLM judge) too, and judges each pair
again with that config's quality gate. The scores, ``quality_score``, ``passed`` and
``reject_reason`` become a new version of the Lance pairs table (a column update: no
media file is read back or rewritten) and new tar shard indexes that carry the same
values, so both formats agree; the manifest names them last. A crash leaves the
previous dataset, and its readers, untouched; a re-run scores only the pairs the
crashed run had not (their scores are kept under OUT/report/).

``--dry-run`` scores everything and prints how many verdicts would flip, writing
nothing but the progress file (which a later real run reuses).
"""

from __future__ import annotations

import argparse
import sys

from pvtt.schemas.config import ConfigError
from pvtt.schemas.manifest import ManifestError
from pvtt.tools.commands._common import fail


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rescore",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "examples:\n"
            "  pvtt rescore OUT --dry-run                 # what would flip, nothing written\n"
            '  pvtt rescore OUT --config vlm.toml         # [scorer] name = "vlm" adds score_overall'
        ),
    )
    p.add_argument("out", metavar="OUT", help="a built dataset folder (local)")
    p.add_argument(
        "--config",
        metavar="TOML",
        help="build config whose [scorer] and [quality] to use (default: the dataset's own)",
    )
    p.add_argument("--device", choices=("cpu", "cuda"), help="device of the scorer")
    p.add_argument(
        "--dry-run", action="store_true", help="score and report the flips; publish nothing"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pvtt.schemas.config import load_config  # noqa: PLC0415 - not for --help
    from pvtt.tools.rescore import rescore

    try:
        config = None if args.config is None else load_config(args.config)
        result = rescore(
            args.out,
            config,
            device=args.device,
            dry_run=args.dry_run,
            progress=not args.no_progress,
        )
    except (ValueError, OSError, ManifestError, ConfigError) as exc:
        return fail(str(exc))
    print(result.summary(), file=sys.stdout)
    return 0
