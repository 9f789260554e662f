"""Hard checks of a pair: four weight-free statistics, each a failure the eye sees at once.

The weighted quality score (:mod:`pvtt.builder.stages.quality`) averages: a pair whose
background still shows the source product can still score 0.8 on identity, temporal and
lighting. Each check here looks at one stage's output against what that stage was given,
and a pair that fails any of them is rejected whatever its mean (issue 14):

- **removal** (:func:`removal`, lower is better): is the source product still visible in
  the background video? The product's colour model (a histogram of the masked source
  pixels against one of the ring around them) is back-projected into the background: the
  mean product likelihood inside the removed region, less that of the surrounding ring.
  A clean plate reads like its surroundings (about 0); a left-over product reads like the
  product (up to 1).
- **mask** (:func:`mask_completeness`): does the mask cover the product, steadily? The
  IoU of the mask's bounding box with the prompt box on the prompt frame (a mask of only
  part of the product has a smaller box), times the steadiness of the track (the smallest
  ratio of consecutive mask areas, and the share of frames with a mask).
- **insert** (:func:`insert_visibility`): is the inserted product there, opaque and whole?
  Its realised opacity (how far the synthesized pixels moved from the background toward
  the cut-out's colour, where the cut-out is opaque and differs from the background),
  times the share of the target box inside the frame, times a size factor for tiny boxes.
- **cutout** (:func:`cutout_completeness`): does the cut-out keep the whole product? The
  photo's foreground is whatever differs from its border colour (shadows, darker copies of
  the border colour, excluded); the cut-out's area and extent against that foreground's,
  and the share of the foreground it covers where it was cut from (found by matching its
  pixels in the photo), which sees a lost arc of a ring that keeps the ring's extent.

All are numbers in [0, 1] computed from a handful of sampled frames, so they cost little
next to the scorer and run with any backends, model builds included.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from pvtt.builder.stages.cutout import placement_matrix

CHECK_NAMES = ("removal", "mask", "insert", "cutout")


@dataclass(frozen=True)
class Limit:
    """A check's hard limit: ``op`` is ``">"`` when a value above ``bound`` fails."""

    op: str
    bound: float

    def fails(self, value: float) -> bool:
        return value > self.bound if self.op == ">" else value < self.bound


DEFAULT_LIMITS: dict[str, Limit] = {
    "removal": Limit(">", 0.049),
    "mask": Limit("<", 0.861),
    "insert": Limit("<", 0.871),
    "cutout": Limit("<", 0.30),
}
"""Fitted on the tuning split of :mod:`pvtt.tools.bench.fidelity` by
:mod:`pvtt.tools.bench.fidelity_calibrate` (seeds 1-9 but 5 of every family, CPU
backends, 2026-12-03: 81 pairs, 55 defective; the limits that catch the most defective
pairs while the gate keeps 80 % of the good ones), never on the demo or the held-out
split. ``cutout`` stays low because the photo-foreground estimate is rough: good cut-outs
of real car photos (reflections, grey studio floors) score 0.45-0.59, and a grey product
on a grey sweep reads as its own shadow."""

SAMPLED_FRAMES = 8
_LOCATE_TOLERANCE = 4.0
"""RMS grey levels within which a cut-out's opaque pixels are the photo's own."""
_BINS = 16
_MIN_PIXELS = 16


def _sample(count: int, wanted: int = SAMPLED_FRAMES) -> np.ndarray:
    return np.unique(np.linspace(0, count - 1, min(count, wanted)).round().astype(int))


def _colour_index(pixels: np.ndarray) -> np.ndarray:
    """Each RGB pixel's bin of a ``16 x 16 x 16`` colour histogram."""
    q = (pixels.astype(np.int32) * _BINS) // 256
    return (q[..., 0] * _BINS + q[..., 1]) * _BINS + q[..., 2]


def _histogram(pixels: np.ndarray) -> np.ndarray:
    hist = np.bincount(_colour_index(pixels).ravel(), minlength=_BINS**3).astype(np.float64)
    return hist / max(hist.sum(), 1.0)


def removal(frames: np.ndarray, masks: np.ndarray, background: np.ndarray) -> float:
    """How much of the source product the background still shows, in [0, 1] (0: none).

    ``frames`` and ``background`` are ``T x H x W x 3`` uint8, ``masks`` ``T x H x W``
    (non-zero: product). The ring is the pixels within a quarter of the mask's mean side
    of it (a Euclidean distance transform: linear in the pixels whatever the width, where
    a dilation by a disc of that width took 1.6 s a 720p frame for a product filling half
    of it). Each frame's work is done on the mask's box grown by the ring (nothing outside
    it counts).
    """
    picked = [t for t in _sample(len(frames)) if masks[t].any()]
    if not picked:
        return 0.0
    product, around, regions = [], [], []
    for t in picked:
        full = masks[t] > 0
        side = math.sqrt(np.count_nonzero(full))
        width = max(2, round(0.25 * side))
        area = _grown_box(full, width + 1)
        mask = full[area]
        near = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        ring = (_distance_to(mask) <= width) & ~near
        if ring.sum() < _MIN_PIXELS:
            continue
        product.append(frames[t][area][mask])
        around.append(frames[t][area][ring])
        regions.append((t, area, mask, ring))
    if not regions:
        return 0.0
    p_product = _histogram(np.concatenate(product))
    p_ring = _histogram(np.concatenate(around))
    likelihood = p_product / (p_product + p_ring + 1e-4)
    gaps = []
    for t, area, mask, ring in regions:
        plate = background[t][area]
        inside = likelihood[_colour_index(plate[mask])].mean()
        outside = likelihood[_colour_index(plate[ring])].mean()
        gaps.append(float(inside - outside))
    return float(np.clip(np.mean(gaps), 0.0, 1.0))


def _distance_to(mask: np.ndarray) -> np.ndarray:
    """Each pixel's Euclidean distance to the nearest pixel of ``mask`` (0 on it)."""
    return cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def _grown_box(mask: np.ndarray, margin: int) -> tuple[slice, slice]:
    """The rows and columns of ``mask``'s non-zero box grown by ``margin``, in the frame."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    height, width = mask.shape
    return (
        slice(max(0, rows[0] - margin), min(height, rows[-1] + 1 + margin)),
        slice(max(0, cols[0] - margin), min(width, cols[-1] + 1 + margin)),
    )


def clip_checks(clip_frames: np.ndarray, masks: np.ndarray, background: np.ndarray,
                detection: Mapping[str, object]) -> dict[str, float]:
    """The checks that look at the clip alone (``removal``, ``mask``): the same for every
    pair made of the clip, so a build makes them once per clip (at 720p they cost seconds
    a clip, which pair by pair was most of a GPU build's CPU time)."""
    prompt = detection.get("box")
    return {
        "removal": removal(clip_frames, masks, background),
        "mask": mask_completeness(masks, None if prompt is None else np.asarray(prompt),
                                  int(detection.get("frame_index", 0))),  # type: ignore[call-overload]
    }


def _mask_box(mask: np.ndarray) -> np.ndarray | None:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)


def _box_iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def mask_completeness(masks: np.ndarray, prompt_box: np.ndarray | None, prompt_frame: int = 0
                      ) -> float:
    """How wholly and steadily the masks cover the product, in [0, 1] (1: whole, steady).

    ``prompt_box`` is the detection the track started from (``[x0, y0, x1, y1]`` on
    ``prompt_frame``); without one only steadiness counts.
    """
    if masks.dtype.kind in "bu":  # a count per frame: several times a reduction over axis 1
        areas = np.array([np.count_nonzero(m) for m in masks], np.float64)
    else:
        areas = (masks > 0).reshape(len(masks), -1).sum(axis=1).astype(np.float64)
    present = areas > 0
    if not present.any():
        return 0.0
    cover = 1.0
    if prompt_box is not None and np.isfinite(prompt_box).all():
        frame = min(max(int(prompt_frame), 0), len(masks) - 1)
        box = _mask_box(masks[frame] > 0)
        cover = 0.0 if box is None else _box_iou(box, np.asarray(prompt_box, np.float64))
    shown = areas[present]
    steady = float((np.minimum(shown[1:], shown[:-1]) / np.maximum(shown[1:], shown[:-1])).min()
                   ) if len(shown) > 1 else 1.0
    return float(cover * steady * present.mean())


def _placed_alpha(cutout: np.ndarray, box: np.ndarray, region: tuple[int, int, int, int]
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The cut-out's RGB and alpha in [0, 1] placed along ``box`` (frame coordinates), on
    the frame's ``region = (x0, y0, x1, y1)`` only."""
    x0, y0, x1, y1 = region
    size = (max(1, round(box[2] - box[0])), max(1, round(box[3] - box[1])))
    layer = cv2.resize(cutout.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    matrix = placement_matrix(size[0], size[1], box) - np.array([[0, 0, x0], [0, 0, y0]])
    warped = cv2.warpAffine(layer, matrix, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR)
    return warped[..., :3], warped[..., 3] / 255.0


def _box_region(box: np.ndarray, shape: tuple[int, int], margin: int = 2
                ) -> tuple[int, int, int, int] | None:
    """The pixels of an ``H x W`` frame that ``box`` can touch (its bilinear edge included),
    or None when it lies outside the frame."""
    height, width = shape
    x0, y0 = max(0, int(np.floor(box[0])) - margin), max(0, int(np.floor(box[1])) - margin)
    x1 = min(width, int(np.ceil(box[2])) + margin)
    y1 = min(height, int(np.ceil(box[3])) + margin)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def insert_visibility(synth: np.ndarray, background: np.ndarray, cutout: np.ndarray,
                      boxes: np.ndarray, min_side: float = 12.0) -> float:
    """How visible the inserted product is, in [0, 1] (1: opaque, whole, in the frame).

    ``cutout`` is straight RGBA uint8; a box whose shorter side is under ``min_side``
    pixels scores in proportion. Each frame's work is done on the box's pixels only (the
    cut-out is transparent elsewhere): a 720p frame costs the product's area, not the
    frame's.
    """
    height, width = synth.shape[1:3]
    values = []
    for t in _sample(len(synth)):
        box = np.asarray(boxes[t], np.float64)
        if not np.isfinite(box).all() or box[2] <= box[0] or box[3] <= box[1]:
            values.append(0.0)
            continue
        area = (box[2] - box[0]) * (box[3] - box[1])
        inside = max(0.0, min(box[2], width) - max(box[0], 0.0)) * max(
            0.0, min(box[3], height) - max(box[1], 0.0))
        size = min(1.0, min(box[2] - box[0], box[3] - box[1]) / min_side)
        region = _box_region(box, (height, width))
        if region is None:
            values.append(0.0)  # inside is 0: the box is off the frame
            continue
        x0, y0, x1, y1 = region
        rgb, alpha = _placed_alpha(cutout, box, region)
        bg = background[t, y0:y1, x0:x1].astype(np.float32)
        expected = rgb - bg
        contrast = np.linalg.norm(expected, axis=-1)
        where = (alpha >= 0.9) & (contrast >= 30.0)
        if where.sum() < _MIN_PIXELS:
            opacity = 1.0  # the cut-out looks like the background here: nothing to tell
        else:
            moved = (synth[t, y0:y1, x0:x1].astype(np.float32) - bg)[where]
            along = (moved * expected[where]).sum(axis=-1) / contrast[where] ** 2
            opacity = float(np.clip(np.median(np.clip(along, 0.0, 1.0)), 0.0, 1.0))
        values.append(opacity * (inside / area) * size)
    return float(np.mean(values))


def photo_foreground(photo: np.ndarray, tolerance: float = 30.0) -> np.ndarray:
    """What differs from the photo's border colour, less shadows: the product, roughly.

    A shadow is a darker copy of the border colour (same hue, 35-95 % of its brightness);
    so is a grey or silver product on a grey sweep, which this cannot see.
    """
    rgb = photo.astype(np.float32)
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    colour = np.median(border, axis=0)
    far = np.linalg.norm(rgb - colour, axis=-1) >= tolerance
    norm = np.linalg.norm(rgb, axis=-1) * np.linalg.norm(colour) + 1e-6
    cosine = (rgb @ colour) / norm
    ratio = np.linalg.norm(rgb, axis=-1) / (np.linalg.norm(colour) + 1e-6)
    shadow = (cosine > 0.995) & (ratio > 0.35) & (ratio < 0.95)
    mask = (far & ~shadow).astype(np.uint8)
    return cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)) > 0


def cutout_completeness(photo: np.ndarray, cutout: np.ndarray) -> float:
    """How much of the photo's product the cut-out keeps, in [0, 1] (1: all of it).

    ``cutout`` is the trimmed RGBA the matter made of ``photo`` (same scale, cropped), so
    areas and extents compare without aligning: the smallest of the area ratio and the
    width and height ratios of the two bounding boxes.
    """
    foreground = photo_foreground(photo)
    kept = cutout[..., 3] >= 128
    fg_box, cut_box = _mask_box(foreground), _mask_box(kept)
    if fg_box is None or foreground.sum() < _MIN_PIXELS:
        return 1.0  # nothing stands out of the background: nothing to tell
    if cut_box is None:
        return 0.0
    ratios = [
        kept.sum() / foreground.sum(),
        (cut_box[2] - cut_box[0]) / (fg_box[2] - fg_box[0]),
        (cut_box[3] - cut_box[1]) / (fg_box[3] - fg_box[1]),
    ]
    at = _locate(cutout, photo)
    if at is not None:  # the share of the foreground the cut-out covers where it lies
        x, y = at
        placed = np.zeros(foreground.shape, bool)
        placed[y : y + kept.shape[0], x : x + kept.shape[1]] = kept
        ratios.append((placed & foreground).sum() / foreground.sum())
    return float(np.clip(min(ratios), 0.0, 1.0))


def _locate(cutout: np.ndarray, photo: np.ndarray) -> tuple[int, int] | None:
    """Where the trimmed ``cutout`` was cut from ``photo`` (its top-left corner), or None
    when its colours are not the photo's (a matter that recolours, or another scale).

    Matters keep the photo's pixels under the alpha, so the opaque pixels match exactly
    at one offset."""
    ch, cw = cutout.shape[:2]
    if ch > photo.shape[0] or cw > photo.shape[1]:
        return None
    weight = (cutout[..., 3] >= 128).astype(np.float32)
    if weight.sum() < _MIN_PIXELS:
        return None
    diff = cv2.matchTemplate(photo.astype(np.float32), cutout[..., :3].astype(np.float32),
                             cv2.TM_SQDIFF, mask=np.dstack([weight] * 3))
    lowest, _, (x, y), _ = cv2.minMaxLoc(diff)
    best = lowest / (3 * weight.sum())
    return (x, y) if best < _LOCATE_TOLERANCE**2 else None


def failed_checks(checks: Mapping[str, float | None],
                  limits: Mapping[str, Limit] = DEFAULT_LIMITS) -> list[tuple[str, float, Limit]]:
    """The checks that cross their limit, in :data:`CHECK_NAMES` order (None: not run)."""
    out = []
    for name in CHECK_NAMES:
        value = checks.get(name)
        if value is not None and name in limits and limits[name].fails(value):
            out.append((name, float(value), limits[name]))
    return out
