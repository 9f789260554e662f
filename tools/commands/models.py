"""``pvtt models check``: which backend and weights each stage of a build would use.

Run it on the GPU node before a build: it exits 1 when a weight is missing or the
requested device is not there, with one line per problem saying how to fix it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from pvtt.builder.models import WeightStatus, check_device, check_weights
from pvtt.schemas.config import ConfigError, load_config
from pvtt.tools.commands._common import fail


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models",
        description="Inspect the model backends and weights of a build configuration.",
    )
    actions = parser.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check",
        help="list every stage's backend and weights, and whether they are here",
        description=(
            "For every stage (detector, segmenter, inpainter, matter, inserter, scorer), "
            "the backend and the weights a build with this config would load, and whether "
            "each is on this machine: a local path exists, a hub id is in the Hugging Face "
            "cache. Builds never download weights. Exits 1 when one is missing or the "
            "device is not available."
        ),
        epilog="example: pvtt models check --config build.toml --device cuda",
    )
    check.add_argument("--config", metavar="TOML", help="build config (defaults: CPU backends)")
    check.add_argument("--device", default=None, help="cpu or cuda[:N] (default: the config's)")
    check.add_argument("--json", action="store_true", help="print one JSON object instead")
    check.set_defaults(func=run_check)


def _status_word(status: WeightStatus) -> str:
    if status.present is None:
        return "unknown"
    if status.source == "none":
        return "ok"
    return "ok" if status.present else "MISSING"


def run_check(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config, {"device": args.device} if args.device else None)
    except ConfigError as exc:
        return fail(str(exc))
    statuses = check_weights(config)
    device = check_device(config.device)
    missing = [s for s in statuses if s.missing]
    if args.json:
        report = {
            "device": dataclasses.asdict(device) | {"ok": device.ok},
            "stages": [dataclasses.asdict(s) | {"missing": s.missing} for s in statuses],
            "ok": device.ok and not missing,
        }
        print(json.dumps(report, indent=2))
        return 0 if report["ok"] else 1
    usable = "ok" if device.ok else "NOT AVAILABLE"
    print(f"device: {device.requested} ({usable}); {device.detail}")
    rows = [
        (s.stage, s.backend, s.weight or "-", _status_word(s), "" if s.missing else s.detail)
        for s in statuses
    ]
    header = ("STAGE", "BACKEND", "WEIGHTS", "STATUS", "")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        cells = [cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True)]
        print("  ".join([*cells, row[4]]).rstrip())
    for s in missing:
        print(f"missing: {s.stage}: {s.detail}")
    if not device.ok:
        print(f"missing: device {device.requested}: not available here; use --device cpu")
    return 0 if device.ok and not missing else 1
