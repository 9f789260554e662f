"""``pvtt report``: one self-contained HTML page about a built dataset.

The page holds a summary, pairs by difficulty x category, quality score
distributions per difficulty and per scorer, the pass rate against the threshold,
rejects by reason, time per stage, storage per table, and a gallery of the best and
rejected pairs of each difficulty as animated thumbnails (source | synthesized |
target), each rejected pair with the check that rejected it. With --truth, a
section shows how the gate did against ground truth: the precision and recall of
its rejections, the good pairs it kept, per check and per goal, from a fidelity
benchmark run (python -m pvtt.tools.bench.fidelity --json FILE). Figures and
thumbnails are inlined: the file needs no network and no other file to be
viewed, and its Content-Security-Policy forbids any fetch.

-o defaults to OUT/report/report.html beside the build's statistics, or to
./report.html when OUT is an s3:// prefix. Needs matplotlib (pip install matplotlib).
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

from pvtt.builder.report import REPORT_DIR
from pvtt.loaders.decode import MediaDecodeError
from pvtt.schemas.manifest import ManifestError, atomic_write_bytes
from pvtt.tools.commands._common import (
    add_dataset_argument,
    fail,
    open_built,
    storage_options_from_args,
)
from pvtt.tools.html_report import THUMB_HEIGHT, gather_report, render_html

DEFAULT_NAME = "report.html"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: pvtt report pvtt-demo/dataset -o demo-report.html --truth fidelity.json",
    )
    add_dataset_argument(p)
    p.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help=f"the HTML file (default: OUT/{REPORT_DIR}/{DEFAULT_NAME}; "
        f"./{DEFAULT_NAME} when OUT is s3://)",
    )
    p.add_argument(
        "--per-difficulty",
        type=int,
        default=3,
        metavar="K",
        help="gallery: the K best passed and K rejected pairs of each difficulty "
        "(default 3; 0: none)",
    )
    p.add_argument(
        "--thumb-height",
        type=int,
        default=THUMB_HEIGHT,
        metavar="PX",
        help=f"gallery thumbnail height in pixels (default {THUMB_HEIGHT})",
    )
    p.add_argument(
        "--truth",
        type=Path,
        metavar="FILE",
        help="a fidelity benchmark JSON (python -m pvtt.tools.bench.fidelity --json FILE): "
        "adds the gate's precision, recall and goals against ground truth",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("matplotlib") is None:
        return fail("pvtt report draws its figures with matplotlib: pip install matplotlib")
    started = time.perf_counter()
    try:
        dataset = open_built(args.out, storage_options_from_args(args))
        output = _output_path(args, dataset.storage.local)
        data = gather_report(
            dataset,
            per_difficulty=args.per_difficulty,
            thumb_height=args.thumb_height,
            truth=args.truth,
        )
        page = render_html(data).encode("utf-8")
        atomic_write_bytes(output, page)
    except (ValueError, OSError, ManifestError, MediaDecodeError) as exc:
        return fail(str(exc))
    elapsed = time.perf_counter() - started
    print(f"wrote {output} ({len(page) / 1e6:.2f} MB, {len(data.rows)} pairs, {elapsed:.1f} s)")
    return 0


def _output_path(args: argparse.Namespace, local: bool) -> Path:
    if args.output is not None:
        return Path(args.output)
    if local:
        return Path(args.out) / REPORT_DIR / DEFAULT_NAME
    return Path(DEFAULT_NAME)
