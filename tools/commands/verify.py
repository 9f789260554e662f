"""``pvtt verify``: read every shard and row, check tar and Lance agree, decode all media."""

from __future__ import annotations

import argparse

from pvtt.loaders.verify import verify_dataset
from pvtt.schemas.manifest import ManifestError
from pvtt.tools.commands._common import (
    add_dataset_argument,
    fail,
    open_built,
    storage_options_from_args,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify",
        description=(
            "Read every committed tar shard and Lance row, check that tar and Lance hold "
            "the same pairs and that every media blob decodes. Exit 1 and list the "
            "problems when anything is wrong."
        ),
    )
    add_dataset_argument(p)
    p.add_argument("--no-media", action="store_true", help="skip decoding media (faster)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        dataset = open_built(args.out, storage_options_from_args(args))
        report = verify_dataset(dataset, media=not args.no_media)
    except (ValueError, OSError, ManifestError) as exc:
        return fail(str(exc))
    for problem in report.problems:
        print(f"problem: {problem}")
    print(
        f"{'OK' if report.ok else 'FAILED'}: {report.pairs_lance} pairs in Lance, "
        f"{report.pairs_tar} in tar, {report.media_checked} media checked, "
        f"{len(report.problems)} problems"
    )
    return 0 if report.ok else 1
