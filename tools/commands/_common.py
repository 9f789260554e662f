"""Arguments and output helpers shared by the read-side commands.

Lance, pyarrow and the loaders are imported where a command runs, not here: a
command's parser (``pvtt query --help``) needs none of them.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pvtt.schemas.manifest import MANIFEST_NAME, ManifestError
from pvtt.schemas.taxonomy import Difficulty

if TYPE_CHECKING:
    import pyarrow as pa

    from pvtt.loaders.query import PairFilter
    from pvtt.loaders.store import BuiltDataset

DIFFICULTIES = tuple(d.value for d in Difficulty)


def add_filter_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("filters")
    group.add_argument(
        "--difficulty",
        type=str.lower,  # `Expert` is `expert`: difficulties are stored lower-case
        metavar="LIST",
        help=f"comma-separated subset of {','.join(DIFFICULTIES)} (any case)",
    )
    group.add_argument("--min-score", type=float, metavar="X", help="quality_score >= X")
    group.add_argument("--max-score", type=float, metavar="Y", help="quality_score <= Y")
    group.add_argument(
        "--category", metavar="LIST", help="source or target category (comma-separated)"
    )
    passed = group.add_mutually_exclusive_group()
    passed.add_argument(
        "--passed",
        dest="passed",
        action="store_const",
        const=True,
        default=True,
        help="only pairs that passed the quality threshold (default)",
    )
    passed.add_argument(
        "--rejected",
        dest="passed",
        action="store_const",
        const=False,
        help="only rejected pairs (hard-negative mining)",
    )
    passed.add_argument(
        "--all", dest="passed", action="store_const", const=None, help="passed and rejected"
    )
    group.add_argument(
        "--where",
        metavar="SQL",
        help='extra SQL predicate over scalar columns, e.g. "frame_count > 90"',
    )


def add_dataset_argument(parser: argparse.ArgumentParser) -> None:
    """``OUT`` (a folder or ``s3://`` URI) and ``--storage-option KEY=VALUE``."""
    parser.add_argument("out", metavar="OUT", help="a built dataset folder, or s3://bucket/prefix")
    add_storage_option_argument(parser)


def add_storage_option_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storage-option",
        dest="storage_options",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=(
            "object-store setting, repeatable: endpoint_url, access_key_id, "
            "secret_access_key, session_token, region, anon, allow_http (the AWS_* "
            "environment variables are used for any not given)"
        ),
    )


def storage_options_from_args(args: argparse.Namespace) -> dict[str, str] | None:
    options: dict[str, str] = {}
    for item in args.storage_options:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--storage-option {item!r}: expected KEY=VALUE")
        options[key.strip()] = value
    return options or None


def open_built(out: str | Path, storage_options: dict[str, str] | None = None) -> BuiltDataset:
    """The dataset at ``out``; when ``out`` is a folder holding datasets rather than one
    (``pvtt demo``'s OUT holds OUT/dataset), the error names them."""
    from pvtt.loaders.store import open_dataset

    try:
        return open_dataset(out, storage_options)
    except ManifestError as exc:
        inside = datasets_inside(out)
        if not inside:
            raise
        raise ManifestError(f"{exc} (did you mean {' or '.join(inside)}?)") from None


def datasets_inside(out: str | Path) -> list[str]:
    """Datasets one level below the local folder ``out`` (``out/dataset`` first)."""
    folder = Path(out)
    if "://" in str(out) or not folder.is_dir() or (folder / MANIFEST_NAME).exists():
        return []
    found = sorted(p for p in folder.iterdir() if (p / MANIFEST_NAME).is_file())
    found.sort(key=lambda p: p.name != "dataset")
    return [str(p) for p in found]


def filter_from_args(args: argparse.Namespace) -> PairFilter:
    from pvtt.loaders.query import PairFilter

    return PairFilter.make(
        difficulty=args.difficulty,
        min_score=args.min_score,
        max_score=args.max_score,
        category=args.category,
        passed=args.passed,
        where=args.where,
    )


def jsonable(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value


def print_table(table: pa.Table, fmt: str) -> None:
    rows = [{k: jsonable(v) for k, v in row.items()} for row in table.to_pylist()]
    if fmt == "json":
        json.dump(rows, sys.stdout, indent=1)
        sys.stdout.write("\n")
    elif fmt == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=table.column_names)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()}
            )
    else:
        names = table.column_names
        cells = [[_cell(r[n]) for n in names] for r in rows]
        widths = [max([len(n)] + [len(c[i]) for c in cells]) for i, n in enumerate(names)]
        print("  ".join(n.ljust(w) for n, w in zip(names, widths, strict=True)))
        for c in cells:
            print("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)))
        print(f"({len(rows)} rows)")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    text = str(value)
    return text if len(text) <= 48 else text[:45] + "..."


def fail(message: str) -> int:
    message = re.sub(r",? ?/\S+\.rs:\d+:\d+", "", message)  # Lance's Rust source locations
    print(f"pvtt: error: {message}", file=sys.stderr)
    return 1
