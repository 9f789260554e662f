"""Boxes from masks, gap filling, smoothing and the seed's aspect adaptation."""

from __future__ import annotations

import numpy as np
import pytest

from pvtt.builder.boxes import (
    adapt_box_to_aspect,
    box_to_mask,
    interpolate_missing,
    iou,
    masks_to_boxes,
    smooth_boxes,
)


def test_masks_to_boxes_tight_and_nan_for_empty() -> None:
    masks = np.zeros((3, 10, 12), dtype=bool)
    masks[0, 2:5, 3:9] = True
    masks[2, 9, 11] = True
    boxes = masks_to_boxes(masks)
    assert boxes.dtype == np.float32 and boxes.shape == (3, 4)
    np.testing.assert_array_equal(boxes[0], [3, 2, 9, 5])
    assert np.isnan(boxes[1]).all()
    np.testing.assert_array_equal(boxes[2], [11, 9, 12, 10])
    np.testing.assert_array_equal(masks_to_boxes(masks[0]), [3, 2, 9, 5])


def test_box_to_mask_inverts_masks_to_boxes() -> None:
    rng = np.random.default_rng(0)
    masks = rng.random((20, 17, 23)) > 0.97
    masks[5] = False
    rects = box_to_mask(masks_to_boxes(masks), 17, 23)
    for m, r in zip(masks, rects, strict=True):
        if not m.any():
            assert not r.any()
            continue
        ys, xs = np.nonzero(m)
        expected = np.zeros_like(m)
        expected[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] = True
        np.testing.assert_array_equal(r, expected)
    single = box_to_mask(np.array([1.0, 2.0, 4.0, 3.0]), 5, 6)
    assert single.shape == (5, 6) and single.sum() == 3 and single[2, 1:4].all()


def test_interpolate_missing_fills_linearly_and_holds_ends() -> None:
    nan = np.nan
    boxes = np.array(
        [[nan] * 4, [0, 0, 10, 10], [nan] * 4, [nan] * 4, [6, 3, 16, 13], [nan] * 4],
        dtype=np.float32,
    )
    filled = interpolate_missing(boxes)
    np.testing.assert_allclose(filled[0], [0, 0, 10, 10])
    np.testing.assert_allclose(filled[2], [2, 1, 12, 11])
    np.testing.assert_allclose(filled[3], [4, 2, 14, 12])
    np.testing.assert_allclose(filled[5], [6, 3, 16, 13])
    assert np.isnan(interpolate_missing(np.full((3, 4), nan))).all()


def test_smooth_boxes_ignores_nan_and_keeps_gaps() -> None:
    boxes = np.array(
        [[0, 0, 10, 10], [2, 0, 12, 10], [np.nan] * 4, [6, 0, 16, 10]], dtype=np.float32
    )
    smoothed = smooth_boxes(boxes, 3)
    np.testing.assert_allclose(smoothed[0], [1, 0, 11, 10])
    np.testing.assert_allclose(smoothed[1], [1, 0, 11, 10])
    assert np.isnan(smoothed[2]).all()
    np.testing.assert_allclose(smoothed[3], [6, 0, 16, 10])
    constant = np.tile(np.array([[1, 2, 3, 4]], dtype=np.float32), (7, 1))
    np.testing.assert_allclose(smooth_boxes(constant, 5), constant)
    with pytest.raises(ValueError, match="odd"):
        smooth_boxes(boxes, 2)


def _centre_area_aspect(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    centre = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
    return centre, w * h, w / h


def test_adapt_box_keeps_centre_and_area_inside_frame() -> None:
    boxes = np.array([[100, 100, 300, 200], [400, 50, 450, 250], [np.nan] * 4], dtype=np.float32)
    adapted = adapt_box_to_aspect(boxes, 1.5, (1280, 720))
    centre, area, aspect = _centre_area_aspect(adapted[:2].astype(np.float64))
    ref_centre, ref_area, _ = _centre_area_aspect(boxes[:2].astype(np.float64))
    np.testing.assert_allclose(centre, ref_centre, atol=1e-3)
    np.testing.assert_allclose(area, ref_area, rtol=1e-5)
    np.testing.assert_allclose(aspect, 1.5, rtol=1e-5)
    assert np.isnan(adapted[2]).all()
    per_row = np.concatenate([adapt_box_to_aspect(b[None], 1.5, (1280, 720)) for b in boxes])
    np.testing.assert_array_equal(adapted, per_row)


def test_adapt_box_shifts_then_shrinks_to_fit() -> None:
    near_edge = np.array([[0, 0, 100, 100]], dtype=np.float32)
    shifted = adapt_box_to_aspect(near_edge, 4.0, (640, 360))[0]
    w, h = shifted[2] - shifted[0], shifted[3] - shifted[1]
    np.testing.assert_allclose(shifted, [0, 25, 200, 75], atol=1e-4)
    np.testing.assert_allclose([w * h, w / h], [10_000, 4.0], rtol=1e-5)

    too_big = np.array([[100, 100, 600, 300]], dtype=np.float32)
    shrunk = adapt_box_to_aspect(too_big, 0.25, (640, 360))[0]
    w, h = shrunk[2] - shrunk[0], shrunk[3] - shrunk[1]
    np.testing.assert_allclose([w / h, h], [0.25, 360], rtol=1e-5)
    assert shrunk[0] >= 0 and shrunk[1] >= 0 and shrunk[2] <= 640 and shrunk[3] <= 360 + 1e-4
    np.testing.assert_allclose((shrunk[0] + shrunk[2]) / 2, 350, atol=1e-3)
    with pytest.raises(ValueError, match="target_aspect"):
        adapt_box_to_aspect(too_big, 0.0, (640, 360))


def test_iou_per_frame_and_empty() -> None:
    a = np.zeros((2, 4, 4), dtype=bool)
    b = np.zeros((2, 4, 4), dtype=bool)
    a[0, :2] = True
    b[0, 1:3] = True
    np.testing.assert_allclose(iou(a, b), [4 / 12, 1.0])
    assert iou(a[0], a[0]) == 1.0
    with pytest.raises(ValueError):
        iou(a, b[0])
