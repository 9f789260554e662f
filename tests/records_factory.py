"""Valid pair samples built from real small media, for sink and reader tests."""

from __future__ import annotations

import io
import json
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from pvtt.builder.sinks.base import PairSample
from pvtt.builder.video import encode_mp4, read_frames
from pvtt.schemas.keys import clip_id as make_clip_id
from pvtt.schemas.keys import image_id, pair_id
from pvtt.schemas.masks import DEFAULT_MASK_CODEC, encode_masks
from pvtt.schemas.records import ClipRecord, PairRecord, ProductRecord
from pvtt.schemas.taxonomy import Difficulty

FRAMES = 6
SIZE = (96, 54)
CATEGORIES = [("Jewelry", "necklace"), ("Home", "mug"), ("Toys", "plush"), ("Jewelry", "ring")]


@lru_cache(maxsize=4)
def _media(shared: str) -> dict[str, bytes]:
    root = Path(shared)
    frames, fps = read_frames(root / "sam2" / "04_coffee.mp4", 0, FRAMES, max_size=SIZE)
    video = encode_mp4(frames, fps)
    dark = encode_mp4((frames // 2).astype(np.uint8), fps)
    masks = np.zeros((len(frames), frames.shape[1], frames.shape[2]), dtype=bool)
    masks[:, 10:30, 20:50] = True
    rgba = Image.open(root / "rembg" / "car-3.out.png").convert("RGBA")
    rgba.thumbnail((48, 48))
    photo = Image.open(root / "rembg" / "car-3.jpg").convert("RGB")
    photo.thumbnail((64, 64))
    png, jpg = io.BytesIO(), io.BytesIO()
    rgba.save(png, format="PNG")
    photo.save(jpg, format="JPEG")
    return {
        "video": video,
        "synth": dark,
        "masks": encode_masks(masks),
        "rgba": png.getvalue(),
        "image": jpg.getvalue(),
        "frames": str(len(frames)),
        "size": json.dumps([frames.shape[2], frames.shape[1]]),
        "fps": str(float(fps)),
    }


def make_samples(shared: Path, count: int, *, build_id: str = "test", seed: int = 0) -> list[PairSample]:
    """``count`` pairs over a few clips and products, scores spread over [0, 1]."""
    media = _media(str(shared))
    frames = int(media["frames"])
    width, height = json.loads(media["size"])
    fps = float(media["fps"])
    rng = np.random.default_rng(seed)
    n_products, n_images = 4, 8
    products: dict[tuple[int, int], ProductRecord] = {}
    for p in range(n_products):
        cat, sub = CATEGORIES[p % len(CATEGORIES)]
        for k in range(n_images):
            products[p, k] = ProductRecord(
                image_id=image_id(f"P{p:03d}", f"img{k}"), product_id=f"P{p:03d}",
                image_path=f"images/P{p:03d}_{k}.jpg", category=cat, subcategory=sub,
                width=48, height=27, aspect=48 / 27, image=media["image"],
                image_rgba=media["rgba"], build_id=build_id,
            )
    clips = []
    for p in range(n_products):
        cat, sub = CATEGORIES[p % len(CATEGORIES)]
        for shot in range(2):
            clips.append(
                ClipRecord(
                    clip_id=make_clip_id(f"P{p:03d}", shot), source_id=f"P{p:03d}", shot_index=shot,
                    source_path=f"videos/P{p:03d}.mp4", category=cat, subcategory=sub,
                    start_frame=shot * frames, end_frame=(shot + 1) * frames, frame_count=frames,
                    width=width, height=height, fps=fps, duration_s=frames / fps,
                    source_boxes=[(20, 10, 50, 30)] * frames, masks_codec=DEFAULT_MASK_CODEC,
                    source_video=media["video"], background_video=media["video"],
                    masks=media["masks"], build_id=build_id,
                )
            )
    combos = [
        (clip, products[t, k])
        for k in range(n_images)
        for clip in clips
        for t in range(n_products)
        if f"P{t:03d}" != clip.source_id
    ]
    if count > len(combos):
        raise ValueError(f"at most {len(combos)} samples")
    samples: list[PairSample] = []
    for clip, product in combos[:count]:
        token = product.image_id.split("__")[1]
        key = pair_id(clip.clip_id, product.product_id, token)
        diff = _difficulty(
            (clip.category, clip.subcategory), (product.category, product.subcategory)
        )
        score = float(rng.uniform(0.3, 1.0))
        passed = score >= 0.7
        pair = PairRecord(
            pair_id=key, clip_id=clip.clip_id, source_id=clip.source_id,
            shot_index=clip.shot_index, target_id=product.product_id,
            target_image=product.image_path, source_category=clip.category,
            source_subcategory=clip.subcategory, target_category=product.category,
            target_subcategory=product.subcategory, difficulty=diff.value,
            difficulty_level=diff.level, score_identity=score, score_temporal=score,
            score_lighting=score, score_overall=None, quality_score=score, passed=passed,
            reject_reason=None if passed else f"quality {score:.2f} < 0.70",
            frame_count=frames, width=width, height=height, fps=fps, duration_s=frames / fps,
            target_boxes=[(20.0, 10.0, 50.0, 30.0)] * frames, synth_video=media["synth"],
            build_id=build_id,
        )
        samples.append(PairSample(pair=pair, clip=clip, product=product))
    return samples


def _difficulty(src: tuple[str, str], tgt: tuple[str, str]) -> Difficulty:
    if src == tgt:
        return Difficulty.EASY
    if src[0] == tgt[0]:
        return Difficulty.MEDIUM
    return Difficulty.HARD if {src[1], tgt[1]} <= {"necklace", "ring"} else Difficulty.EXPERT
