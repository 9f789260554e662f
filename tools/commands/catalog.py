"""``pvtt catalog check CATALOG``: every problem of a catalog, with file and row.

Meant to be run before a build (and in a catalog's own CI): it exits 1 when
anything is wrong, so a script can stop before spending GPU hours.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from pvtt.builder.catalog import check_catalog


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "catalog",
        description="Inspect a catalog folder (products.csv, media, optional taxonomy.yaml).",
    )
    actions = parser.add_subparsers(dest="catalog_command", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check",
        help="list every problem of a catalog, with file and row",
        description=(
            "List every problem of a catalog: one line each, as FILE:ROW: COLUMN: MESSAGE, "
            "then a summary. Exits 1 when there is any problem."
        ),
    )
    check.add_argument("catalog", metavar="CATALOG", type=Path, help="the catalog folder")
    check.add_argument(
        "--no-media",
        action="store_true",
        help="do not decode videos and images (still checks they exist inside the catalog)",
    )
    check.add_argument("--json", action="store_true", help="print one JSON object instead")
    check.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    catalog, problems = check_catalog(args.catalog, check_media=not args.no_media)
    if args.json:
        report = {
            "catalog": str(catalog.root),
            "products": [
                {"id": p.id, "category": p.category, "subcategory": p.subcategory, "row": p.row}
                for p in catalog.products
            ],
            "problems": [dataclasses.asdict(problem) for problem in problems],
        }
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        for problem in problems:
            print(problem)
        noun = "problem" if len(problems) == 1 else "problems"
        print(f"{catalog.root}: {len(catalog)} products ok, {len(problems)} {noun}")
    return 1 if problems else 0
