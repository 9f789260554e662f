"""``pvtt query``: select pairs by difficulty, score, category or SQL; metadata only."""

from __future__ import annotations

import argparse

from pvtt.schemas.manifest import ManifestError
from pvtt.tools.commands._common import (
    add_dataset_argument,
    add_filter_arguments,
    fail,
    filter_from_args,
    open_built,
    print_table,
    storage_options_from_args,
)

DEFAULT_COLUMNS = "pair_id,difficulty,source_category,target_category,quality_score,passed"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "query",
        description=(
            "Print the pairs of a built dataset that match the filters. Filters run "
            "inside Lance, through its scalar indexes, or as one scan when they select "
            "many scattered rows; media bytes are never read."
        ),
        epilog="example: pvtt query OUT --difficulty hard,expert --min-score 0.8 --format json",
    )
    add_dataset_argument(p)
    add_filter_arguments(p)
    p.add_argument("--columns", default=DEFAULT_COLUMNS, help=f"default: {DEFAULT_COLUMNS}")
    p.add_argument("--limit", type=int, default=None, metavar="N")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pvtt.loaders.query import select_pairs  # Lance: not needed by `pvtt query --help`

    try:
        flt = filter_from_args(args)
        dataset = open_built(args.out, storage_options_from_args(args))
        columns = [c.strip() for c in args.columns.split(",") if c.strip()]
        table = select_pairs(dataset, flt, columns=columns, limit=args.limit)
    except (ValueError, OSError, ManifestError) as exc:
        return fail(str(exc))
    print_table(table, args.format)
    return 0
