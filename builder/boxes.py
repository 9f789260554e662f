"""Boxes of a product over a clip: from masks, gap filling, smoothing, aspect adaptation.

Boxes are ``float32`` arrays ``T x 4`` of ``[x0, y0, x1, y1]`` in pixel-edge
coordinates: a box covers the pixel squares from ``x0`` up to (not including) ``x1``,
so ``x1 - x0`` is the width in pixels and ``box_to_mask(masks_to_boxes(m))`` is the
masks' exact bounding rectangle. A frame without a box is a row of ``nan`` (the seed's
``mask_to_bbox`` crashed on empty masks; a lost frame must not stop a clip).
"""

from __future__ import annotations

import numpy as np


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """Tight boxes of bool masks ``T x H x W`` (or one ``H x W``); ``nan`` rows for empty masks."""
    masks = np.asarray(masks, dtype=bool)
    single = masks.ndim == 2
    if single:
        masks = masks[None]
    if masks.ndim != 3:
        raise ValueError(f"masks must be H x W or T x H x W, got shape {masks.shape}")
    height, width = masks.shape[1:]
    rows = masks.any(axis=2)
    cols = masks.any(axis=1)
    present = rows.any(axis=1)
    boxes = np.full((masks.shape[0], 4), np.nan, dtype=np.float32)
    if present.any():
        rows, cols = rows[present], cols[present]
        boxes[present, 0] = cols.argmax(axis=1)
        boxes[present, 1] = rows.argmax(axis=1)
        boxes[present, 2] = width - cols[:, ::-1].argmax(axis=1)
        boxes[present, 3] = height - rows[:, ::-1].argmax(axis=1)
    return boxes[0] if single else boxes


def box_to_mask(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bool masks of the pixels whose centres lie in each box (``4`` -> ``H x W``, ``T x 4`` -> ``T x H x W``).

    A ``nan`` box gives an empty mask; boxes are clipped to the frame.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    single = boxes.ndim == 1
    boxes = boxes.reshape(-1, 4)
    valid = np.isfinite(boxes).all(axis=1)
    edges = np.zeros((boxes.shape[0], 4), dtype=np.int64)
    limits = np.array([width, height, width, height])
    edges[valid] = np.clip(np.floor(boxes[valid] + 0.5), 0, limits).astype(np.int64)
    xs = np.arange(width)
    ys = np.arange(height)
    in_x = (xs[None] >= edges[:, 0:1]) & (xs[None] < edges[:, 2:3])
    in_y = (ys[None] >= edges[:, 1:2]) & (ys[None] < edges[:, 3:4])
    masks = in_y[:, :, None] & in_x[:, None, :] & valid[:, None, None]
    return masks[0] if single else masks


def interpolate_missing(boxes: np.ndarray) -> np.ndarray:
    """Fill ``nan`` rows linearly between known frames and hold the first/last box at the ends.

    A clip with no box at all is returned unchanged (all ``nan``): there is nothing to hold.
    """
    boxes = _as_boxes(boxes)
    known = np.isfinite(boxes).all(axis=1)
    if known.all() or not known.any():
        return boxes.copy()
    t = np.arange(boxes.shape[0])
    filled = np.empty_like(boxes)
    for c in range(4):
        filled[:, c] = np.interp(t, t[known], boxes[known, c])
    return filled


def smooth_boxes(boxes: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over ``window`` frames that skips ``nan`` rows.

    Rows that are ``nan`` stay ``nan`` (smoothing must not invent a box); near the clip
    ends and gaps the average uses the frames that exist. ``window`` must be odd.
    """
    boxes = _as_boxes(boxes)
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd number of frames, got {window}")
    known = np.isfinite(boxes).all(axis=1)
    values = np.where(known[:, None], boxes, 0.0).astype(np.float64)
    half = window // 2
    sums = np.concatenate([np.zeros((1, 4)), np.cumsum(values, axis=0)])
    counts = np.concatenate([[0], np.cumsum(known)])
    t = np.arange(boxes.shape[0])
    lo = np.clip(t - half, 0, boxes.shape[0])
    hi = np.clip(t + half + 1, 0, boxes.shape[0])
    n = (counts[hi] - counts[lo]).astype(np.float64)
    mean = (sums[hi] - sums[lo]) / np.maximum(n, 1)[:, None]
    out = mean.astype(np.float32)
    out[~known] = np.nan
    return out


def adapt_box_to_aspect(
    boxes: np.ndarray, target_aspect: float, frame_size: tuple[int, int]
) -> np.ndarray:
    """Reshape each box to the target cut-out's aspect (w/h), keeping its centre and area.

    This is the seed's ``adapt_box_for_target``, vectorised over frames, plus what the
    seed left out: the result is kept inside the frame ``frame_size = (width, height)``,
    first by shifting it, then, when it is larger than the frame, by shrinking it about its
    centre at the same aspect. ``nan`` rows stay ``nan``.
    """
    boxes = _as_boxes(boxes).astype(np.float64)
    if not np.isfinite(target_aspect) or target_aspect <= 0:
        raise ValueError(
            f"target_aspect must be a positive width/height ratio, got {target_aspect}"
        )
    width, height = frame_size
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    new_h = np.sqrt(np.maximum(area, 0) / target_aspect)
    new_w = new_h * target_aspect
    shrink = np.minimum(
        1.0, np.minimum(width / np.maximum(new_w, 1e-9), height / np.maximum(new_h, 1e-9))
    )
    new_w *= shrink
    new_h *= shrink
    x0 = np.clip(cx - new_w / 2, 0, width - new_w)
    y0 = np.clip(cy - new_h / 2, 0, height - new_h)
    out = np.stack([x0, y0, x0 + new_w, y0 + new_h], axis=1).astype(np.float32)
    out[~np.isfinite(boxes).all(axis=1)] = np.nan
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float | np.ndarray:
    """Intersection over union of bool masks over their last two axes.

    A float for two ``H x W`` masks, a ``float64`` array of ``T`` for ``T x H x W``
    masks. Two empty masks agree perfectly (1.0): an absent product found absent.
    """
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.shape != b.shape or a.ndim < 2:
        raise ValueError(
            f"iou needs two masks of one shape (H x W or T x H x W), got {a.shape} and {b.shape}"
        )
    inter = np.logical_and(a, b).sum(axis=(-2, -1))
    union = np.logical_or(a, b).sum(axis=(-2, -1))
    out = np.where(union == 0, 1.0, inter / np.maximum(union, 1))
    return float(out) if out.ndim == 0 else out


def _as_boxes(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float32)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be T x 4, got shape {boxes.shape}")
    return boxes
