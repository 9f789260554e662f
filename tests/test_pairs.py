"""Pair planning: the seed's strategies, never a product with itself, seeded difficulty mix."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pvtt.builder.boxes import masks_to_boxes
from pvtt.builder.catalog import Catalog, Product
from pvtt.builder.pairs import choose_images, image_refs, plan_pairs
from pvtt.builder.synthesis import target_boxes
from pvtt.schemas.config import PairsConfig
from pvtt.schemas.taxonomy import Taxonomy

ROWS = [
    ("n1", "Jewelry", "necklace"), ("n2", "Jewelry", "necklace"), ("r1", "Jewelry", "ring"),
    ("k1", "Accessories", "keychain"), ("m1", "Home", "mug"), ("m2", "Home", "mug"),
]


def _catalog(images: int = 3) -> Catalog:
    products = tuple(
        Product(id=i, category=c, subcategory=s, video=Path(f"/c/{i}.mp4"),
                images=tuple(Path(f"/c/{i}-{k}.jpg") for k in range(images)),
                prompt=None, first_frame_box=None, row=n + 2)
        for n, (i, c, s) in enumerate(ROWS)
    )
    return Catalog(root=Path("/c"), products=products, taxonomy=Taxonomy.default())


def _plan(config: PairsConfig, images: int = 3):
    catalog = _catalog(images)
    clips = [(f"{p.id}_s{k:03d}", p) for p in catalog for k in range(2)]
    targets = [r for p in catalog for r in choose_images(p, config)]
    return plan_pairs(catalog, clips, targets, config)


def test_strategies_count_and_never_self() -> None:
    clips, others = 12, 5
    assert len(_plan(PairsConfig(strategy="single"))) == clips * others
    assert len(_plan(PairsConfig(strategy="all"))) == clips * others * 3
    sampled = _plan(PairsConfig(strategy="sampled", images_per_product=2))
    assert len(sampled) == clips * others * 2
    for plan in _plan(PairsConfig(strategy="all")):
        assert plan.source.id != plan.target.product.id
        assert plan.pair_id.startswith(plan.clip_id + "__" + plan.target.product.id + "__")
    assert len({p.pair_id for p in sampled}) == len(sampled)


def test_sampling_is_seeded() -> None:
    a = _plan(PairsConfig(strategy="sampled", images_per_product=1, seed=1), images=5)
    b = _plan(PairsConfig(strategy="sampled", images_per_product=1, seed=1), images=5)
    c = _plan(PairsConfig(strategy="sampled", images_per_product=1, seed=2), images=5)
    assert [p.pair_id for p in a] == [p.pair_id for p in b]
    assert [p.pair_id for p in a] != [p.pair_id for p in c]


def test_same_category_and_difficulty() -> None:
    plans = _plan(PairsConfig(strategy="single", same_category=True))
    assert plans and all(p.source.category == p.target.product.category for p in plans)
    levels = {(p.source.id, p.target.product.id): p.difficulty.value for p in _plan(PairsConfig(strategy="single"))}
    assert levels["n1", "n2"] == "easy"
    assert levels["n1", "r1"] == "medium"
    assert levels["n1", "k1"] == "hard"
    assert levels["n1", "m1"] == "expert"


def test_difficulty_mix_matches_shares() -> None:
    mix = {"easy": 0.1, "medium": 0.3, "hard": 0.3, "expert": 0.3}
    plans = _plan(PairsConfig(strategy="all", difficulty_mix=mix))
    counts = Counter(p.difficulty.value for p in plans)
    total = sum(counts.values())
    assert total > 0
    for level, share in mix.items():
        assert counts[level] / total == pytest.approx(share, abs=0.05), counts


def test_image_tokens_are_unique_and_key_safe() -> None:
    product = Product(id="x", category="Home", subcategory="mug", video=Path("/v.mp4"),
                      images=(Path("/a/front view.jpg"), Path("/b/front view.png"), Path("/c/x.y.jpg")),
                      prompt=None, first_frame_box=None, row=2)
    tokens = [r.token for r in image_refs(product)]
    assert len(set(tokens)) == 3 and all("." not in t and " " not in t for t in tokens)


def test_target_boxes_keep_centre_take_aspect_and_survive_empty_frames() -> None:
    class Clip:
        frames = np.zeros((6, 90, 160, 3), np.uint8)
        masks = np.zeros((6, 90, 160), bool)

    Clip.masks[:, 30:60, 40:100] = True
    Clip.masks[2] = False  # the product disappears for a frame: no crash, box interpolated
    Clip.boxes = masks_to_boxes(Clip.masks)
    boxes = target_boxes(Clip, aspect=0.5, smoothing=3)
    assert np.isfinite(boxes).all()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert np.allclose(w / h, 0.5, atol=1e-3)
    assert np.allclose((boxes[:, 0] + boxes[:, 2]) / 2, 70, atol=0.5)
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 3] <= 90).all()
