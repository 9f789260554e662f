"""``pvtt merge``: publish all ranks of a multi-rank build as one dataset."""

from __future__ import annotations

import argparse

from pvtt.schemas.manifest import ManifestError
from pvtt.tools.commands._common import (
    add_storage_option_argument,
    fail,
    storage_options_from_args,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "merge",
        description=(
            "After `pvtt build ... --rank R --world-size W` ran for every R, commit all "
            "ranks' Lance fragments in one transaction per table and write one manifest. "
            "Idempotent: merging again after re-running a dead rank picks it up. OUT may be "
            "an s3:// prefix that ranks on several nodes published into."
        ),
    )
    p.add_argument("out", metavar="OUT", help="the output folder (or s3:// URI) all ranks wrote into")
    add_storage_option_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pvtt.builder.merge import merge

    try:
        manifest = merge(args.out, storage_options_from_args(args))
    except (ManifestError, ValueError) as exc:
        return fail(str(exc))
    counts = manifest.counts
    print(
        f"merged {manifest.world_size} ranks into {args.out}: {counts.get('pairs', 0)} pairs "
        f"({counts.get('passed', 0)} passed), {len(manifest.shards)} shards"
    )
    return 0
