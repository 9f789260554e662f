"""``pvtt calibrate``: the quality gate against human labels (from ``pvtt review``).

Prints the precision and recall of ``passed`` (the share of passed pairs people accept,
and the share of accepted pairs the gate passes) at the dataset's threshold and at the
lowest threshold that reaches ``--target-precision``, each score's ROC AUC against the
labels, and the rejects the gate lets through by reason. ``--json`` prints every
threshold. Nothing is written unless ``--apply`` is given: then every pair is judged
again at the recommended threshold (or ``--threshold``) and ``passed`` and
``reject_reason`` are published as a new version of the pairs table; scores and media
stay as they are.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from pvtt.schemas.manifest import ManifestError
from pvtt.tools.commands._common import fail, open_built, print_table

if TYPE_CHECKING:
    from pvtt.tools.calibration import Calibration

DEFAULT_TARGET_PRECISION = 0.9  # pvtt.tools.calibration.DEFAULT_TARGET_PRECISION


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: pvtt calibrate OUT --target-precision 0.95 --apply",
    )
    p.add_argument("out", metavar="OUT", help="a built dataset folder with labels")
    p.add_argument(
        "--target-precision",
        type=float,
        default=DEFAULT_TARGET_PRECISION,
        metavar="P",
        help=f"precision the recommended threshold must reach (default {DEFAULT_TARGET_PRECISION})",
    )
    p.add_argument("--json", action="store_true", help="print the whole calibration as JSON")
    p.add_argument(
        "--apply",
        action="store_true",
        help="write the verdicts at the recommended threshold (or --threshold) as a new version",
    )
    p.add_argument(
        "--threshold", type=float, metavar="T", help="with --apply: this threshold instead"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pvtt.loaders.labels import has_labels  # Lance: not for --help
    from pvtt.tools.calibration import apply_threshold, calibrate

    try:
        if args.threshold is not None and not args.apply:
            raise ValueError("--threshold only goes with --apply")
        dataset = open_built(args.out)
        if not dataset.has_lance:
            raise ValueError(
                f"{args.out}: calibrate needs the Lance pairs table (tar-only dataset)"
            )
        if not has_labels(dataset):
            raise ValueError(f"{args.out}: no labels yet; judge some pairs with pvtt review first")
        cal = calibrate(dataset, args.target_precision)
        if args.json:
            json.dump(cal.to_dict(), sys.stdout, indent=1)
            sys.stdout.write("\n")
        else:
            _print(cal)
        if args.apply:
            threshold = args.threshold
            if threshold is None:
                if cal.recommended is None:
                    raise ValueError(
                        f"no threshold reaches precision {args.target_precision}; "
                        "give --threshold to apply one anyway"
                    )
                threshold = cal.recommended.threshold
            info, passed, changed = apply_threshold(args.out, threshold)
            print(
                f"applied threshold {threshold:.6g}: {passed} pairs pass, {changed} verdicts "
                f"changed; pairs table version {info.version}",
                file=sys.stderr if args.json else sys.stdout,
            )
    except (ValueError, OSError, ManifestError) as exc:
        return fail(str(exc))
    return 0


def _print(cal: Calibration) -> None:
    import pyarrow as pa

    print(
        f"{cal.labelled} labelled pairs: {cal.accepted} accepted, {cal.rejected} rejected"
        + (
            f" ({cal.unknown} labels of pairs no longer in the dataset left out)"
            if cal.unknown
            else ""
        )
    )
    rows = [("stored passed", cal.build), ("gate at the threshold", cal.current)]
    if cal.recommended is not None:
        rows.append((f"precision >= {cal.target_precision:g}", cal.recommended))
    print_table(
        pa.Table.from_pylist(
            [
                {
                    "gate": name,
                    "threshold": p.threshold,
                    "passed": p.passed,
                    "precision": p.precision,
                    "recall": p.recall,
                }
                for name, p in rows
            ]
        ),
        "table",
    )
    if cal.recommended is None:
        print(f"no threshold reaches precision {cal.target_precision:g} on these labels")
    print()
    print_table(
        pa.Table.from_pylist(
            [{"score": c, "roc_auc": a["auc"], "pairs": a["pairs"]} for c, a in cal.auc.items()]
        ),
        "table",
    )
    if cal.missed:
        print(
            "\nrejected by people, passed by the gate, by reason: "
            + ", ".join(f"{reason} {n}" for reason, n in cal.missed.items())
        )
