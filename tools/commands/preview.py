"""``pvtt preview``: look at pairs as source | masks | background | synthesized | target.

``-o`` picks the output by its extension: ``.mp4`` (H.264, every frame), ``.gif``
(at most 10 frames/s, smaller panels) or ``.png`` (a contact sheet: one row per
sampled frame). Without PAIR_ID the filters select ``--n`` pairs, stacked one
under the other. Background and masks come from the Lance ``clips`` table; a
tar-only dataset shows what its samples hold and marks the rest ``n/a``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pvtt.builder.video import write_mp4
from pvtt.loaders.decode import MediaDecodeError
from pvtt.loaders.frames import decode_frames, decode_masks_at, decode_rgba, frame_count
from pvtt.loaders.pair_media import LancePairMedia, TarPairMedia, pair_media
from pvtt.loaders.query import PairFilter, select_pairs
from pvtt.loaders.store import BuiltDataset
from pvtt.loaders.where_tree import sql_literal
from pvtt.schemas.manifest import ManifestError
from pvtt.tools import preview
from pvtt.tools.commands._common import (
    add_filter_arguments,
    fail,
    filter_from_args,
    open_built,
)

FORMATS = (".mp4", ".gif", ".png")
GIF_MAX_FPS = 10.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "preview",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples: pvtt preview OUT PAIR_ID -o pair.gif; "
        "pvtt preview OUT --difficulty expert --n 4 -o expert.png",
    )
    p.add_argument("out", metavar="OUT", help="a built dataset folder")
    p.add_argument("pair_id", metavar="PAIR_ID", nargs="?", help="the pair to show")
    p.add_argument(
        "-o", "--output", metavar="FILE", help="FILE.mp4|.gif|.png (default: PAIR_ID.mp4)"
    )
    add_filter_arguments(p)
    p.add_argument("--n", type=int, default=4, metavar="K", help="pairs to show without PAIR_ID")
    p.add_argument("--frames", type=int, default=4, metavar="K", help="rows of a .png sheet")
    p.add_argument(
        "--height",
        type=int,
        default=None,
        metavar="PX",
        help="panel height (default 240, 160 for .gif)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        output = _output_path(args)
        dataset = open_built(args.out)
        rows = _select(dataset, args)
        height = args.height or (160 if output.suffix == ".gif" else 240)
        if height < 16 or args.frames < 1:
            raise ValueError("--height must be at least 16 and --frames at least 1")
        media = pair_media(dataset)
        fps = float(rows[0]["fps"])
        step = max(1, math.ceil(fps / GIF_MAX_FPS)) if output.suffix == ".gif" else 1
        clips = [
            _pair_preview(media, row, height, output.suffix, step, args.frames) for row in rows
        ]
        frames = preview.grid(clips) if len(clips) > 1 else clips[0]
        _write(output, frames, fps / step)
    except (ValueError, OSError, ManifestError, MediaDecodeError) as exc:
        return fail(str(exc))
    print(f"wrote {output} ({len(rows)} pair{'s' if len(rows) > 1 else ''})")
    return 0


def _output_path(args: argparse.Namespace) -> Path:
    if args.output is None:
        return Path(f"{args.pair_id or 'preview'}.mp4")
    output = Path(args.output)
    if output.suffix.lower() not in FORMATS:
        raise ValueError(f"{output}: unknown output type; use one of {', '.join(FORMATS)}")
    return output.with_suffix(output.suffix.lower())


def _select(dataset: BuiltDataset, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The row of PAIR_ID (passed or not), or up to ``--n`` rows the filters select."""
    if args.pair_id is not None:
        filters = ("difficulty", "min_score", "max_score", "category", "where")
        if any(getattr(args, name) is not None for name in filters):
            raise ValueError("give PAIR_ID or filters (--difficulty, --where, ...), not both")
        flt = PairFilter.make(passed=None, where=f"pair_id = {sql_literal(args.pair_id)}")
        rows = select_pairs(dataset, flt, limit=1).to_pylist()
        if not rows:
            raise ValueError(f"{args.out}: no pair {args.pair_id!r}")
        return rows
    if args.n < 1:
        raise ValueError(f"--n must be at least 1, got {args.n}")
    rows = select_pairs(dataset, filter_from_args(args), limit=args.n).to_pylist()
    if not rows:
        raise ValueError(f"{args.out}: no pair matches the filters")
    return rows


def _pair_preview(
    media: LancePairMedia | TarPairMedia,
    row: dict[str, Any],
    height: int,
    kind: str,
    step: int,
    sheet_rows: int,
) -> np.ndarray:
    """One pair's captioned panels, at the frames the output format shows."""
    pid = row["pair_id"]
    synth_bytes = media.synth(row)
    total = frame_count(synth_bytes, row.get("frame_count"), what=f"{pid}: synth_video")
    if kind == ".png":
        indices = preview.sample_indices(total, sheet_rows)
    else:
        indices = np.arange(0, total, step, dtype=np.int64)
    width = max(2, 2 * round(height * row["width"] / row["height"] / 2))
    size = (height, width)

    def video(data: bytes | None, what: str) -> np.ndarray | None:
        if not data:
            return None
        n = frame_count(data, what=f"{pid}: {what}")
        frames = decode_frames(data, np.minimum(indices, n - 1), size=size, what=f"{pid}: {what}")
        return frames.permute(0, 2, 3, 1).numpy()

    masks_bytes = media.masks(row)
    masks = None
    if masks_bytes:
        masks = decode_masks_at(masks_bytes, indices, size=size, what=f"{pid}: masks").numpy()
    target_bytes = media.target_rgba(row)
    target = None
    if target_bytes:
        target = decode_rgba(target_bytes, what=f"{pid}: target").permute(1, 2, 0).numpy()
    frames = preview.panels(
        video(media.source_video(row), "source_video"),
        video(synth_bytes, "synth_video"),
        masks=masks,
        background=video(media.background(row), "background_video"),
        target=target,
    )
    if kind == ".png":  # one caption under the sheet, not one per row
        frames = preview.contact_sheet(frames, len(frames))[None]
    return preview.with_caption(frames, preview.caption_lines(row))


def _write(output: Path, frames: np.ndarray, fps: float) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix == ".mp4":
        write_mp4(output, preview.pad_even(frames), fps)
    elif output.suffix == ".gif":
        images = [Image.fromarray(f) for f in frames]
        duration = max(20, round(1000 / fps))
        images[0].save(output, save_all=True, append_images=images[1:], duration=duration, loop=0)
    else:
        Image.fromarray(frames[0]).save(output)
