"""Weight-free segmenter: track the product's mask with optical flow, refine it with GrabCut.

Why this design: OpenCV 5's headless build keeps only the MIL tracker without model
files (CSRT/KCF are gone, DaSiamRPN/Nano/Vit need weights), and a box tracker alone
drifts. Instead the previous frame's *mask* is carried forward: Lucas-Kanade flow on
corners inside it (kept only when the backward flow returns to the start) gives a robust
similarity transform, the warped mask becomes GrabCut's prior (probable foreground and
background, a sure core, sure background outside a margin) and the colour models
carry over from frame to frame. Motion also says what colour cannot (see
``cpu_segmenter_motion``): background seen through a ring's hole moves with the camera,
not the product, and is held out as sure background. Frames where the motion or the
mask fails a check (an occluder passing, a blurred jump) are bridged with the last
trusted motion, the whole shape kept behind the occluder, rather than losing the clip.
GrabCut runs on a crop around the product downscaled to ``work_size`` pixels on its
long side, so a 720p clip costs the same as a 360p one. Masks are then voted over
three motion-compensated frames to remove flicker.
"""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np

from pvtt.builder.backends.cpu_segmenter_motion import (
    IDENTITY,
    background_motion,
    box_motion,
    seen_through,
    similarity,
    track_region,
)
from pvtt.builder.boxes import iou, masks_to_boxes
from pvtt.builder.stages.protocols import BackendInfo, Detection, StageRejected, Track

_MIN_TRACK_PX = 64
"""Tracking resolution is raised (up to full) until the product's short side spans this."""


class TrackerGrabCutSegmenter:
    """Masks of the product on every frame, propagated both ways from a detection box."""

    def __init__(
        self,
        work_size: int = 256,
        track_size: int = 640,
        margin: float = 0.2,
        iterations: int = 2,
        first_iterations: int = 5,
        core_erosion: float = 0.15,
        min_points: int = 8,
        min_prior_iou: float = 0.5,
        max_area_change: float = 1.6,
        max_lost_frames: int = 8,
        smooth: bool = True,
    ) -> None:
        self.work_size = work_size
        self.track_size = track_size
        self.margin = margin
        self.iterations = iterations
        self.first_iterations = first_iterations
        self.core_erosion = core_erosion
        self.min_points = min_points
        self.min_prior_iou = min_prior_iou
        self.max_area_change = max_area_change
        self.max_lost_frames = max_lost_frames
        self.smooth = smooth
        self.info = BackendInfo(
            kind="segmenter",
            name="cpu-tracker-grabcut",
            version="3",
            params={
                "work_size": work_size,
                "track_size": track_size,
                "margin": margin,
                "iterations": iterations,
                "first_iterations": first_iterations,
                "core_erosion": core_erosion,
                "min_points": min_points,
                "min_prior_iou": min_prior_iou,
                "max_area_change": max_area_change,
                "max_lost_frames": max_lost_frames,
                "smooth": smooth,
            },
        )

    def segment(self, frames: np.ndarray, detection: Detection) -> Track:
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(
                f"frames must be uint8 T x H x W x 3, got {frames.dtype} {frames.shape}"
            )
        count, height, width = frames.shape[:3]
        start = detection.frame_index
        if not 0 <= start < count:
            raise ValueError(f"detection frame {start} is outside the clip of {count} frames")
        box = np.asarray(detection.box, dtype=np.float64)
        box = np.clip(box, 0, [width, height, width, height])
        if not np.isfinite(box).all() or box[2] - box[0] < 2 or box[3] - box[1] < 2:
            raise StageRejected(
                f"detection box {detection.box} is empty inside a {width}x{height} frame"
            )

        masks = np.zeros((count, height, width), dtype=bool)
        to_next = np.repeat(IDENTITY[None], count, axis=0)
        for t, mask, motion in self._propagate(frames, range(start, count), box):
            masks[t] = mask
            if t > start:
                to_next[t - 1] = motion
        if start > 0:
            backward = self._propagate(frames, range(start, -1, -1), box, masks[start])
            for t, mask, motion in backward:
                masks[t] = mask
                to_next[t] = cv2.invertAffineTransform(motion)
        if self.smooth and count >= 3:
            _vote(masks, to_next)
        empty = np.flatnonzero(~masks.any(axis=(1, 2)))
        if empty.size:
            raise StageRejected(
                f"product lost at frame {empty[0]}: its mask vanished when smoothed"
            )
        return Track(masks=masks, boxes=masks_to_boxes(masks))

    def _propagate(
        self, frames: np.ndarray, order: range, box: np.ndarray, first: np.ndarray | None = None
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """``(frame, mask, motion from the frame before in order)`` along ``order``.

        Starts from GrabCut in ``box`` on ``order[0]``, or from its known mask ``first``
        (not yielded again) when going backwards after the forward pass. A frame whose
        motion or mask fails a check (an occluder passing in front, a blurred jump) is
        bridged: the last trusted mask moves on with the last trusted motion, and the
        frame's mask is GrabCut's inside that prediction. Only ``max_lost_frames`` such
        frames without a trusted one between lose the product. A frame whose points are
        too few but whose mask lies where the last motion predicts is neither.
        """
        height, width = frames.shape[1:3]
        small_side = max(min(box[2] - box[0], box[3] - box[1]), 1.0)
        scale = min(1.0, max(self.track_size / max(height, width), _MIN_TRACK_PX / small_side))
        first_t = order[0]
        if first is None:
            seen = self._seen_from_box(frames, order, box, scale)
            try:
                mask, models = self._grabcut_box(frames[first_t], box, first_t, seen)
            except StageRejected:  # motion mistook the product for background: colour alone
                mask, models = self._grabcut_box(frames[first_t], box, first_t, np.zeros_like(seen))
            yield first_t, mask, IDENTITY
        else:
            mask, models = first, None
        prev_t, prev_gray = first_t, _gray(frames[first_t], scale)
        velocity = IDENTITY
        shape = mask  # the whole product, parts hidden behind an occluder included
        lost: list[tuple[int, str]] = []
        for t in order[1:]:
            gray = _gray(frames[t], scale)
            motion, unsure = self._motion(prev_gray, gray, mask, scale, velocity, t)
            prior = cv2.warpAffine(
                shape.view(np.uint8), motion, (width, height), flags=cv2.INTER_NEAREST
            ).view(bool)
            if not prior.any():
                raise StageRejected(f"product lost at frame {t}: the tracked mask left the frame")
            prior_box = masks_to_boxes(prior).astype(np.float64)
            x0, y0, x1, y1, _ = self._crop(prior_box, frames.shape[1:])
            camera = _to_full(background_motion(prev_gray, gray, _small(mask, prev_gray), 8), scale)
            seen_bg = seen_through(frames[prev_t], frames[t], motion, camera, (x0, y0, x1, y1))
            # what hid part of the product the frame before is an occluder, not a hole: a
            # flat one trailing along looks like background the camera's motion explains
            occluder = cv2.warpAffine(
                (shape & ~mask).view(np.uint8), camera, (width, height), flags=cv2.INTER_NEAREST
            )
            seen_bg &= occluder[y0:y1, x0:x1] == 0
            kept = None if models is None else (models[0].copy(), models[1].copy())
            new_mask, models = self._grabcut_prior(frames[t], prior, models, t, seen_bg)
            expected = prior.copy()
            expected[y0:y1, x0:x1] &= ~seen_bg
            seen_in_prior = int((prior[y0:y1, x0:x1] & seen_bg).sum())
            dropped = int((prior & ~new_mask).sum())
            opening = 0 < 3 * seen_in_prior >= dropped and (
                (new_mask & expected).sum() >= 0.9 * new_mask.sum()
            )
            failure = self._check(new_mask, expected, opening)
            if failure:
                lost.append((t, unsure or failure))
                if len(lost) > self.max_lost_frames:
                    raise StageRejected(f"product lost at frame {lost[0][0]}: {lost[0][1]}")
                models = kept or models
                seen = new_mask & prior
                mask = seen if seen.any() else prior
                shape = prior
            else:
                if not unsure:  # a mask found where a guessed motion put it proves nothing more
                    lost.clear()
                    velocity = motion
                mask = new_mask
                # less than the prediction and not opening up: partly hidden, the prediction
                # stays whole for the frames after
                whole = opening or new_mask.sum() >= 0.95 * expected.sum()
                shape = new_mask if whole else expected
            yield t, mask, motion
            prev_t, prev_gray = t, gray

    def _check(self, new_mask: np.ndarray, expected: np.ndarray, opening: bool) -> str:
        """Why ``new_mask`` is not the product ``expected`` from the motion ('' if it is).

        A mask much smaller than expected passes when ``opening``: inside the prediction,
        with motion showing background in a third or more of what it dropped, the hole of a ring or the gaps of a chain that the first frame filled.
        """
        ratio = int(new_mask.sum()) / max(int(expected.sum()), 1)
        if opening and ratio >= 1 / self.max_area_change**3:
            return ""
        if not 1 / self.max_area_change <= ratio <= self.max_area_change:
            return f"mask area changed {ratio:.2f}x in one frame"
        agreement = iou(new_mask, expected)
        if agreement < self.min_prior_iou:
            return (
                "the mask moved away from the tracked motion "
                f"(IoU {agreement:.2f} with the prediction)"
            )
        return ""

    def _motion(
        self,
        prev_gray: np.ndarray,
        gray: np.ndarray,
        mask: np.ndarray,
        scale: float,
        velocity: np.ndarray,
        t: int,
    ) -> tuple[np.ndarray, str]:
        """Similarity transform (full-resolution pixels) taking the product to frame ``t``.

        Falls back to ``velocity`` (the last trusted step) with the reason when too few of
        the product's points move consistently; gives up when none does.
        """
        small = _small(mask, prev_gray)
        guess = velocity.copy()
        guess[:, 2] *= scale
        # points on the product itself first: the band around it also holds the edge of
        # an occluder, which would win once most of the product is behind it
        motion, support = similarity(prev_gray, gray, small, guess, 2 * self.min_points)
        if motion is None:
            motion, in_band = similarity(
                prev_gray, gray, track_region(small), guess, self.min_points
            )
            if in_band >= 0 or support < 0:
                support = in_band
        if support < 0:
            raise StageRejected(f"product lost at frame {t}: none of its points moved consistently")
        if motion is None:
            return velocity, f"only {support} of its points moved consistently"
        return _to_full(motion, scale), ""

    def _crop(self, box: np.ndarray, shape: tuple[int, ...]) -> tuple[int, int, int, int, float]:
        """Crop around ``box`` with the margin, and the scale that brings it to ``work_size``."""
        height, width = shape[:2]
        pad = self.margin * max(box[2] - box[0], box[3] - box[1]) + 4
        x0, y0 = int(max(0, box[0] - pad)), int(max(0, box[1] - pad))
        x1, y1 = int(min(width, np.ceil(box[2] + pad))), int(min(height, np.ceil(box[3] + pad)))
        scale = min(1.0, self.work_size / max(x1 - x0, y1 - y0))
        return x0, y0, x1, y1, scale

    def _seen_from_box(
        self, frames: np.ndarray, order: range, box: np.ndarray, scale: float
    ) -> np.ndarray:
        """Background seen inside ``box`` on ``order[0]``: pixels the next two frames show
        moving with the camera while the product moves otherwise (a ring's hole, the gaps
        of a chain), on ``self._crop`` of the box; empty when nothing moves apart. (The box
        stands for the product on the later frames too: their motion is small or found
        anyway by the points in the box that the camera's motion does not explain.)"""
        crop = self._crop(box, frames.shape[1:])[:4]
        seen = np.zeros((crop[3] - crop[1], crop[2] - crop[0]), bool)
        first = frames[order[0]]
        first_gray = _gray(first, scale)
        x0, y0, x1, y1 = np.round(box * scale).astype(int)
        box_small = np.zeros_like(first_gray)
        box_small[y0:y1, x0:x1] = 1
        for t in order[1:3]:
            found = box_motion(_gray(frames[t], scale), first_gray, box_small, self.min_points)
            if found is not None:
                motion, camera = (_to_full(m, scale) for m in found)
                seen |= seen_through(frames[t], first, motion, camera, crop)
        return seen

    def _grabcut_box(
        self, frame: np.ndarray, box: np.ndarray, t: int, seen: np.ndarray
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """GrabCut in ``box``, with the background ``seen`` through the product held out."""
        x0, y0, x1, y1, scale = self._crop(box, frame.shape)
        crop = _work_image(frame, (x0, y0, x1, y1), scale)
        rect = np.round((box - [x0, y0, x0, y0]) * scale).astype(int)
        labels = np.full(crop.shape[:2], cv2.GC_BGD, np.uint8)
        labels[rect[1] : max(rect[3], rect[1] + 1), rect[0] : max(rect[2], rect[0] + 1)] = (
            cv2.GC_PR_FGD
        )
        seen_small = cv2.resize(seen.view(np.uint8), crop.shape[1::-1], cv2.INTER_NEAREST) > 0
        labels[seen_small] = cv2.GC_BGD
        models = (np.zeros((1, 65)), np.zeros((1, 65)))
        # GrabCut seeds its colour models by k-means on OpenCV's RNG, which is per thread:
        # seeded, a clip's masks do not depend on which thread ran which clips before
        cv2.setRNGSeed(t)
        cv2.grabCut(crop, labels, None, *models, self.first_iterations, cv2.GC_INIT_WITH_MASK)
        mask = self._finish(labels, frame.shape, (x0, y0, x1, y1))
        if mask.sum() < 0.05 * (box[2] - box[0]) * (box[3] - box[1]):
            raise StageRejected(
                f"product not found inside its box {box.round(1).tolist()} at frame {t}"
            )
        return mask, models

    def _grabcut_prior(
        self,
        frame: np.ndarray,
        prior: np.ndarray,
        models: tuple[np.ndarray, np.ndarray] | None,
        t: int,
        seen_bg: np.ndarray,
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """GrabCut seeded by the moved mask ``prior``, on ``self._crop`` of its box.

        ``seen_bg`` (on that crop): background seen through a hole by its motion, sure
        background even inside the prior.
        """
        box = masks_to_boxes(prior).astype(np.float64)
        x0, y0, x1, y1, scale = self._crop(box, frame.shape)
        crop = _work_image(frame, (x0, y0, x1, y1), scale)
        size = crop.shape[1::-1]
        prior_small = cv2.resize(
            prior[y0:y1, x0:x1].view(np.uint8), size, interpolation=cv2.INTER_NEAREST
        )
        side = max(3, int(self.core_erosion * min(box[2] - box[0], box[3] - box[1]) * scale) | 1)
        core = cv2.erode(prior_small, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side)))
        near = cv2.dilate(prior_small, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side)))
        labels = np.full(crop.shape[:2], cv2.GC_BGD, np.uint8)
        labels[near > 0] = cv2.GC_PR_BGD
        labels[prior_small > 0] = cv2.GC_PR_FGD
        labels[core > 0] = cv2.GC_FGD
        seen_small = cv2.resize(seen_bg.view(np.uint8), size, interpolation=cv2.INTER_NEAREST)
        labels[seen_small > 0] = cv2.GC_BGD
        if models is None:
            models = (np.zeros((1, 65)), np.zeros((1, 65)))
            cv2.setRNGSeed(t)
            cv2.grabCut(crop, labels, None, *models, self.iterations, cv2.GC_INIT_WITH_MASK)
        else:
            cv2.grabCut(crop, labels, None, *models, self.iterations, cv2.GC_EVAL)
        return self._finish(labels, frame.shape, (x0, y0, x1, y1)), models

    def _finish(
        self, labels: np.ndarray, shape: tuple[int, ...], crop: tuple[int, int, int, int]
    ) -> np.ndarray:
        """GrabCut labels -> a clean full-frame mask: main components, upsampled smoothly."""
        x0, y0, x1, y1 = crop
        fg = ((labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)).astype(np.uint8)
        opened = cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        # opening clears specks; on a product of 1-2 px wires (a chain) it clears the product
        fg = _main_components(opened if opened.sum() >= 0.7 * fg.sum() else fg)
        full = np.zeros(shape[:2], dtype=bool)
        if fg.shape != (y1 - y0, x1 - x0):
            up = cv2.resize(fg * 255, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
            full[y0:y1, x0:x1] = up >= 128
        else:
            full[y0:y1, x0:x1] = fg > 0
        return full


def _small(mask: np.ndarray, like: np.ndarray) -> np.ndarray:
    """``mask`` at tracking resolution, as uint8, never empty when ``mask`` is not."""
    small = cv2.resize(mask.view(np.uint8), like.shape[::-1], interpolation=cv2.INTER_NEAREST)
    if small.sum() < 16:
        small = cv2.dilate(small, np.ones((5, 5), np.uint8))
    return small


def _to_full(motion: np.ndarray, scale: float) -> np.ndarray:
    """A similarity transform in tracking pixels, in full-resolution pixels."""
    full = motion.copy()
    full[:, 2] /= scale
    return full


def _gray(frame: np.ndarray, scale: float) -> np.ndarray:
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    if scale < 1.0:
        gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return gray


def _work_image(frame: np.ndarray, crop: tuple[int, int, int, int], scale: float) -> np.ndarray:
    x0, y0, x1, y1 = crop
    out = np.ascontiguousarray(frame[y0:y1, x0:x1])
    if scale < 1.0:
        out = cv2.resize(out, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return out


def _main_components(fg: np.ndarray, share: float = 0.1) -> np.ndarray:
    """The largest component and those at least ``share`` of it: specks go, but not the
    parts of a product an occluder cuts in two, nor the links of a chain."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    if count <= 2:
        return fg
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.flatnonzero(areas >= share * areas.max()) + 1
    return np.isin(labels, keep).astype(np.uint8)


def _vote(masks: np.ndarray, to_next: np.ndarray) -> None:
    """In place: majority of each mask and its two neighbours warped onto it (ends kept)."""
    count, height, width = masks.shape
    boxes = masks_to_boxes(masks)
    before = masks[0].copy()
    for t in range(1, count - 1):
        current = masks[t].copy()
        x0, y0 = np.floor(np.nanmin(boxes[t - 1 : t + 2, :2], axis=0)).astype(int) - 2
        x1, y1 = np.ceil(np.nanmax(boxes[t - 1 : t + 2, 2:], axis=0)).astype(int) + 2
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
        shift = np.array([[0.0, 0.0, -x0], [0.0, 0.0, -y0]])
        votes = current[y0:y1, x0:x1].astype(np.uint8)
        after = cv2.invertAffineTransform(to_next[t])
        for neighbour, motion in ((before, to_next[t - 1]), (masks[t + 1], after)):
            votes += cv2.warpAffine(
                neighbour.view(np.uint8),
                motion + shift,
                (x1 - x0, y1 - y0),
                flags=cv2.INTER_NEAREST,
            )
        masks[t, y0:y1, x0:x1] = votes >= 2
        before = current
