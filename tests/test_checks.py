"""The hard checks of a pair on constructed inputs, and the gate naming a failed check."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pyarrow as pa
import pytest

from pvtt.builder.stages.checks import (
    DEFAULT_LIMITS,
    Limit,
    _colour_index,
    _histogram,
    _sample,
    clip_checks,
    cutout_completeness,
    insert_visibility,
    mask_completeness,
    removal,
)
from pvtt.builder.stages.quality import judge

T, H, W = 6, 64, 96


def _scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A textured green-grey background with a red disc moving across it: frames, masks, plate."""
    rng = np.random.default_rng(0)
    plate = np.empty((T, H, W, 3), np.uint8)
    plate[:] = (90, 120, 90)
    plate = np.clip(plate + rng.integers(-12, 13, plate.shape), 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[:H, :W]
    masks = np.stack([(yy - 32) ** 2 + (xx - 30 - 4 * t) ** 2 < 14**2 for t in range(T)])
    frames = plate.copy()
    frames[masks] = (200, 40, 40)
    return frames, masks.astype(np.uint8), plate


def test_a_clean_removal_scores_low_and_a_left_over_product_high() -> None:
    frames, masks, plate = _scene()
    assert removal(frames, masks, plate) < 0.1
    assert removal(frames, masks, frames) > 0.8
    assert removal(frames, masks, frames) > DEFAULT_LIMITS["removal"].bound


def _removal_on_whole_frames(frames, masks, background) -> float:
    """:func:`removal` on whole frames: the reference of its region version."""
    product, around, regions = [], [], []
    for t in [t for t in _sample(len(frames)) if masks[t].any()]:
        mask = masks[t] > 0
        width = max(2, round(0.25 * math.sqrt(mask.sum())))
        outside = (~mask).astype(np.uint8)
        distance = cv2.distanceTransform(outside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        near = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        ring = (distance <= width) & ~near
        if ring.sum() >= 16:
            product.append(frames[t][mask])
            around.append(frames[t][ring])
            regions.append((t, mask, ring))
    if not regions:
        return 0.0
    p_product, p_ring = _histogram(np.concatenate(product)), _histogram(np.concatenate(around))
    likelihood = p_product / (p_product + p_ring + 1e-4)
    gaps = []
    for t, mask, ring in regions:
        seen = likelihood[_colour_index(background[t])]
        gaps.append(float(seen[mask].mean() - seen[ring].mean()))
    return float(np.clip(np.mean(gaps), 0.0, 1.0))


@pytest.mark.parametrize("seed", range(4))
def test_removal_on_the_masks_region_equals_it_on_whole_frames(seed: int) -> None:
    """Masks at the frame's edges and corners, of any size: the ring grown past the frame."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (T, H, W, 3), dtype=np.uint8)
    plate = np.clip(frames.astype(int) + rng.integers(-40, 41, frames.shape), 0, 255).astype(np.uint8)
    masks = np.zeros((T, H, W), np.uint8)
    for t in range(T - 1):  # the last frame has no mask
        y, x = rng.integers(-10, H - 4), rng.integers(-10, W - 4)
        h, w = rng.integers(3, 40, 2)
        masks[t, max(0, y) : y + h, max(0, x) : x + w] = 1
    assert removal(frames, masks, plate) == _removal_on_whole_frames(frames, masks, plate)


def test_clip_checks_are_the_clip_alone_checks() -> None:
    frames, masks, plate = _scene()
    detection = {"box": [16.0, 18.0, 45.0, 47.0], "frame_index": 0}
    assert clip_checks(frames, masks, plate, detection) == {
        "removal": removal(frames, masks, plate),
        "mask": mask_completeness(masks, np.asarray(detection["box"]), 0),
    }
    assert mask_completeness(masks.astype(bool), None) == mask_completeness(masks * 7, None)


def test_a_mask_of_half_the_box_fails_completeness() -> None:
    _, masks, _ = _scene()
    box = np.array([16, 18, 44, 46], float)  # the disc's box on frame 0
    assert mask_completeness(masks, box, 0) > 0.8
    half = masks.copy()
    half[:, :, :30] = 0  # only the right half of the disc
    assert mask_completeness(half, box, 0) < DEFAULT_LIMITS["mask"].bound
    jumpy = masks.copy()
    jumpy[3] = 0
    jumpy[3, 30:34, 30:34] = 1
    assert mask_completeness(jumpy, box, 0) < DEFAULT_LIMITS["mask"].bound


def _cutout() -> np.ndarray:
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[..., :3] = (230, 200, 30)
    rgba[..., 3] = 255
    return rgba


def test_a_translucent_or_clipped_insert_fails_visibility() -> None:
    _, _, plate = _scene()
    cut = _cutout()
    boxes = np.tile(np.array([[30, 20, 50, 40]], np.float64), (T, 1))
    opaque = plate.copy()
    opaque[:, 20:40, 30:50] = (230, 200, 30)
    assert insert_visibility(opaque, plate, cut, boxes) > 0.9
    faint = plate.astype(np.float32)
    faint[:, 20:40, 30:50] = 0.7 * faint[:, 20:40, 30:50] + 0.3 * np.array((230, 200, 30))
    assert insert_visibility(faint.astype(np.uint8), plate, cut, boxes) < DEFAULT_LIMITS[
        "insert"].bound
    clipped = np.tile(np.array([[80, 20, 120, 60]], np.float64), (T, 1))
    shown = plate.copy()
    shown[:, 20:60, 80:] = (230, 200, 30)
    assert insert_visibility(shown, plate, cut, clipped) < DEFAULT_LIMITS["insert"].bound


def _visibility_on_whole_frames(synth, background, cutout, boxes, min_side=12.0) -> float:
    """:func:`insert_visibility` as first written, on whole frames: the reference of its
    box-region version."""
    from pvtt.builder.stages.cutout import placement_matrix

    height, width = synth.shape[1:3]
    values = []
    for t in _sample(len(synth)):
        box = boxes[t]
        area = (box[2] - box[0]) * (box[3] - box[1])
        inside = max(0.0, min(box[2], width) - max(box[0], 0.0)) * max(
            0.0, min(box[3], height) - max(box[1], 0.0))
        size = (max(1, round(box[2] - box[0])), max(1, round(box[3] - box[1])))
        layer = cv2.resize(cutout.astype(np.float32), size, interpolation=cv2.INTER_AREA)
        warped = cv2.warpAffine(layer, placement_matrix(size[0], size[1], box), (width, height),
                                flags=cv2.INTER_LINEAR)
        rgb, alpha = warped[..., :3], warped[..., 3] / 255.0
        bg = background[t].astype(np.float32)
        expected = rgb - bg
        contrast = np.linalg.norm(expected, axis=-1)
        where = (alpha >= 0.9) & (contrast >= 30.0)
        opacity = 1.0
        if where.sum() >= 16:
            moved = (synth[t].astype(np.float32) - bg)[where]
            along = (moved * expected[where]).sum(axis=-1) / contrast[where] ** 2
            opacity = float(np.clip(np.median(np.clip(along, 0.0, 1.0)), 0.0, 1.0))
        values.append(opacity * (inside / area) * min(1.0, min(box[2] - box[0], box[3] - box[1]) / min_side))
    return float(np.mean(values))


@pytest.mark.parametrize("seed", range(6))
def test_visibility_on_the_boxs_region_equals_it_on_whole_frames(seed: int) -> None:
    """Boxes inside, across the edges and corners, and off the frame; fractional, tiny, large."""
    rng = np.random.default_rng(seed)
    plate = rng.integers(0, 256, (T, H, W, 3), dtype=np.uint8)
    cut = np.zeros((30, 24, 4), np.uint8)
    cut[..., :3] = rng.integers(0, 256, (30, 24, 3))
    cut[3:27, 2:22, 3] = 255
    centres = rng.uniform(-0.3, 1.3, (T, 2)) * (W, H)
    sides = rng.uniform(3, 60, (T, 2))
    boxes = np.concatenate([centres - sides / 2, centres + sides / 2], axis=1)
    synth = np.clip(plate.astype(int) + rng.integers(-90, 91, plate.shape), 0, 255).astype(np.uint8)
    assert insert_visibility(synth, plate, cut, boxes) == _visibility_on_whole_frames(
        synth, plate, cut, boxes)


def test_a_cut_out_missing_its_top_half_scores_half_and_a_lost_product_fails() -> None:
    photo = np.full((80, 80, 3), 245, np.uint8)
    photo[20:60, 25:55] = (40, 60, 160)
    photo[60:64, 22:58] = (150, 150, 150)  # a contact shadow: not part of the product
    whole = np.zeros((40, 30, 4), np.uint8)
    whole[..., :3] = (40, 60, 160)
    whole[..., 3] = 255
    assert cutout_completeness(photo, whole) > 0.9
    assert 0.45 < cutout_completeness(photo, whole[20:]) < 0.55
    assert cutout_completeness(photo, whole[32:]) < DEFAULT_LIMITS["cutout"].bound


def test_a_cut_out_that_keeps_its_extent_but_loses_an_arc_is_caught_where_it_lies() -> None:
    photo = np.full((100, 100, 3), 240, np.uint8)
    ys, xs = np.mgrid[0:100, 0:100]
    ring = np.abs(np.hypot(xs - 50, ys - 50) - 30) < 5
    photo[ring] = (180, 40, 60)
    rgba = np.dstack([photo, np.where(ring, 255, 0).astype(np.uint8)])
    whole = rgba[15:86, 15:86]
    assert cutout_completeness(photo, whole) > 0.95
    broken = whole.copy()
    broken[8:34, 20:, 3] = 0  # the upper right arc lost; the box keeps its width and height
    broken[28:46, 28:46, 3] = 255  # and the hole filled: the area is about the same
    assert broken[..., 3].astype(bool).sum() >= 0.95 * whole[..., 3].astype(bool).sum()
    assert min(broken[..., 3].any(axis=0).mean(), broken[..., 3].any(axis=1).mean()) > 0.9
    assert cutout_completeness(photo, broken) < 0.85


def test_a_failing_hard_check_names_itself_in_the_reject_reason() -> None:
    scores = {"identity": 0.95, "temporal": 0.95, "lighting": 0.95}
    limits = {"removal": Limit(">", 0.3), "mask": Limit("<", 0.5), "insert": Limit("<", 0.5)}
    assert judge(scores, checks={"removal": 0.05, "mask": 0.9, "insert": 0.9}, limits=limits).passed
    verdict = judge(scores, checks={"removal": 0.4123, "mask": 0.9, "insert": 0.2},
                    limits=limits).reject_reason
    assert verdict == "removal 0.413 > 0.300; insert 0.200 < 0.500"
    assert not judge(scores, checks={"cutout": 0.0}).passed


@pytest.mark.parametrize("value", [0.30000001, 0.3 + 1e-12])
def test_a_value_just_over_its_limit_still_reads_over_it(value: float) -> None:
    reason = judge({"identity": 1.0}, checks={"removal": value},
                   limits={"removal": Limit(">", 0.3)}).reject_reason
    assert reason == "removal 0.301 > 0.300"


def test_a_dataset_built_before_the_checks_still_loads(tmp_path, shared_data) -> None:
    """Schema 1 written without the check columns: the loader reads it, the columns absent."""
    import lance
    from records_factory import make_samples

    from pvtt.builder.writer import DatasetWriter
    from pvtt.loaders.dataset import PairDataset
    from pvtt.loaders.query import PairFilter, select_pairs
    from pvtt.loaders.store import open_dataset
    from pvtt.schemas.manifest import manifest_path

    out = tmp_path / "out"
    with DatasetWriter(out) as writer:
        for sample in make_samples(shared_data, 3):
            writer.write(sample)
    pairs = open_dataset(out).pairs
    new = ["score_removal", "score_mask", "score_insert", "score_cutout"]
    table = lance.dataset(pairs.uri)
    table.drop_columns(new)
    manifest = json.loads(manifest_path(out).read_text())
    manifest["tables"]["pairs"]["version"] = lance.dataset(pairs.uri).version
    manifest_path(out).write_text(json.dumps(manifest))
    dataset = open_dataset(out)
    assert not set(new) & set(dataset.pairs.schema.names)
    table = select_pairs(dataset, PairFilter(passed=None), columns=["pair_id", "quality_score"])
    assert table.num_rows == 3
    assert len(PairDataset(out, passed=None)) == 3
    every = select_pairs(dataset, PairFilter(passed=None))
    assert every.column("score_removal").null_count == 3  # absent: typed nulls
    assert every.schema.field("score_removal").type == pa.float32()
    metas = [s["meta"] for s in PairDataset(out, passed=None, fields=("meta",))]
    assert len(metas) == 3 and all(m["score_removal"] != m["score_removal"] for m in metas)  # nan
