"""``pvtt export-pairs``: the seed's folder layout and ``pairs.json`` (sections 5.1, 5.2).

For tools that expect plain files: ``videos/source|background|synthesized``,
``images/source|target``, ``masks/{clip_id}/0001.png ...`` and
``annotations/pairs.json|quality_scores.json|statistics.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm

from pvtt.loaders.pair_media import pair_media
from pvtt.loaders.query import select_pairs
from pvtt.loaders.stats import dataset_stats
from pvtt.loaders.store import BuiltDataset
from pvtt.schemas.keys import InvalidKeyError, check_pair_row_ids
from pvtt.schemas.manifest import ManifestError
from pvtt.schemas.masks import decode_masks
from pvtt.tools.commands._common import add_filter_arguments, fail, filter_from_args, open_built

SEED_FORMAT_VERSION = "1.0"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export-pairs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("out", metavar="OUT", help="a built dataset folder")
    p.add_argument("dir", metavar="DIR", help="folder to write (created)")
    add_filter_arguments(p)
    p.add_argument("--limit", type=int, default=None, metavar="N")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        dataset = open_built(args.out)
        flt = filter_from_args(args)
        rows = select_pairs(dataset, flt, limit=args.limit).to_pylist()
        count = export_pairs(dataset, rows, Path(args.dir))
    except (ValueError, ManifestError) as exc:
        return fail(str(exc))
    print(f"exported {count} pairs to {args.dir}")
    return 0


def check_rows(dataset: BuiltDataset, rows: list[dict[str, Any]]) -> None:
    """Refuse rows whose ids cannot be file names: every output path is built from them."""
    for row in rows:
        try:
            check_pair_row_ids(row)
        except InvalidKeyError as exc:
            raise InvalidKeyError(
                f"{dataset.root}: pairs row {row.get('pair_id')!r}: {exc}; nothing exported "
                "(ids name the files written; run `pvtt verify` on this dataset)"
            ) from None


def export_pairs(dataset: BuiltDataset, rows: list[dict[str, Any]], dest: Path) -> int:
    check_rows(dataset, rows)  # all of them before the first file is written
    for sub in ("videos/source", "videos/background", "videos/synthesized", "images/source",
                "images/target", "masks", "annotations"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
    media = pair_media(dataset)
    entries, scores = [], []
    written_clips: set[str] = set()
    for row in tqdm(rows, desc="export", unit="pair", disable=None):
        pid, clip = row["pair_id"], row["clip_id"]
        image = pid.split("__", 2)[2]
        target_png = f"images/target/{row['target_id']}__{image}_nobg.png"
        out = {"video": f"videos/synthesized/{pid}.mp4", "background": None, "masks": None}
        (dest / out["video"]).write_bytes(media.synth(row))
        (dest / target_png).write_bytes(media.target_rgba(row))
        source_video = f"videos/source/{clip}.mp4"
        source_image, source_ext = media.source_image(row)
        source_png = f"images/source/{row['source_id']}{source_ext}" if source_image else None
        if clip not in written_clips:
            written_clips.add(clip)
            (dest / source_video).write_bytes(media.source_video(row))
            if source_image:
                (dest / source_png).write_bytes(source_image)
            background = media.background(row)
            if background:
                (dest / f"videos/background/{clip}_bg.mp4").write_bytes(background)
            masks = media.masks(row)
            if masks:
                _write_mask_frames(dest / "masks" / clip, masks)
        if (dest / f"videos/background/{clip}_bg.mp4").exists():
            out["background"] = f"videos/background/{clip}_bg.mp4"
        if (dest / "masks" / clip).exists():
            out["masks"] = f"masks/{clip}/"
        entries.append(
            {
                "pair_id": pid,
                "source": {
                    "id": row["source_id"], "clip_id": clip, "video": source_video,
                    "product_image": source_png, "category": row["source_category"],
                    "subcategory": row["source_subcategory"],
                },
                "target": {
                    "id": row["target_id"], "product_image": target_png,
                    "category": row["target_category"], "subcategory": row["target_subcategory"],
                },
                "output": out,
                "metadata": {
                    "difficulty": row["difficulty"], "quality_score": row["quality_score"],
                    "frame_count": row["frame_count"], "resolution": [row["width"], row["height"]],
                    "fps": row["fps"], "passed": row["passed"],
                },
            }
        )
        scores.append({k: row[k] for k in ("pair_id", "score_identity", "score_temporal",
                                           "score_lighting", "score_overall", "quality_score",
                                           "passed", "reject_reason")})
    ann = dest / "annotations"
    pairs_doc = {"version": SEED_FORMAT_VERSION, "total_pairs": len(entries), "pairs": entries}
    (ann / "pairs.json").write_text(json.dumps(pairs_doc, indent=2))
    (ann / "quality_scores.json").write_text(json.dumps(scores, indent=2))
    (ann / "statistics.json").write_text(json.dumps(dataset_stats(dataset), indent=2))
    return len(entries)


def _write_mask_frames(folder: Path, data: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, mask in enumerate(decode_masks(data), start=1):
        Image.fromarray(mask.astype("uint8") * 255).save(folder / f"{i:04d}.png")
