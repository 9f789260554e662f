"""``pvtt shots VIDEO``: the shots a build would cut from one video, and which it keeps."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pvtt.builder.stages.shots import DETECTORS, ShotConfig, ShotList, detect_shots


def register(subparsers: argparse._SubParsersAction) -> None:
    defaults = ShotConfig()
    parser = subparsers.add_parser(
        "shots",
        description=(
            "Cut a video into shots with PySceneDetect and show which ones the shot filter "
            "keeps. Frame numbers are 0-based, end frames exclusive."
        ),
    )
    parser.add_argument("video", type=Path, metavar="VIDEO")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--detector", choices=DETECTORS, default=defaults.detector)
    parser.add_argument(
        "--threshold", type=float, default=None, help="detector threshold (default: its own)"
    )
    parser.add_argument(
        "--min-scene-len",
        type=int,
        default=defaults.min_scene_len,
        help=f"shortest shot the detector cuts, in frames (default {defaults.min_scene_len})",
    )
    parser.add_argument(
        "--min-duration",
        type=float,
        default=defaults.min_duration_s,
        help=f"drop shots shorter than this, seconds (default {defaults.min_duration_s})",
    )
    parser.add_argument(
        "--min-frames",
        type=int,
        default=defaults.min_frames,
        help=f"drop shots with fewer frames (default {defaults.min_frames})",
    )
    parser.set_defaults(func=run)


def format_table(shot_list: ShotList) -> str:
    """A readable listing: one line per shot with its frames, times and the filter's verdict."""
    kept = len(shot_list.kept)
    lines = [
        f"{shot_list.video}: {shot_list.frame_count} frames at {shot_list.fps:g} fps, "
        f"{len(shot_list.shots)} shot{'s' * (len(shot_list.shots) != 1)}, {kept} kept",
        f"{'#':>3}  {'frames':>15}  {'count':>6}  {'time (s)':>17}  kept",
    ]
    for index, shot in enumerate(shot_list.shots):
        frames = f"{shot.start_frame}-{shot.end_frame}"
        times = f"{shot.start_time:.3f}-{shot.end_time:.3f}"
        verdict = "yes" if shot.kept else f"no   {shot.reason}"
        lines.append(f"{index:>3}  {frames:>15}  {shot.frame_count:>6}  {times:>17}  {verdict}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        config = ShotConfig(
            detector=args.detector,
            threshold=args.threshold,
            min_scene_len=args.min_scene_len,
            min_duration_s=args.min_duration,
            min_frames=args.min_frames,
        )
        shot_list = detect_shots(args.video, config)
    except ValueError as exc:  # VideoError names the file; a bad option says which
        print(f"pvtt shots: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(shot_list.to_json()))
    else:
        print(format_table(shot_list))
    return 0
