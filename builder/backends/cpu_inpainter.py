"""Weight-free inpainter: fill the product's region from frames where it is visible.

In a product video the product moves or the camera does, so most of what the product
hides is visible in another frame of the clip; copying it from there gives the real
background, which no image inpainter can. Frames are aligned by global motion,
estimated at reduced resolution on the unmasked region (see :meth:`_motion`) as a
similarity transform held in a 3 x 3 matrix. A full homography was tried first: fitted
to background points that crowd one part of the frame (a textured shelf above a plain
table), it extrapolated badly where the holes were and drifted by tens of pixels over
two seconds of a static shot; the similarity stays within 0.1 px there.

For each frame the hole is filled from the nearest frames in time first, warping only
the hole's bounding box; motions smaller than ``static_px`` are taken as none, so that
a static camera gives exact copies instead of resampled ones. The background is not
always still where the camera's motion says it is: the hand that held the product, a
kettle being poured, a person leaning over the table are visible background to the
mask but stand elsewhere in other frames, and copied from there they leave ghosts. So a
donor is used only where it agrees with the frame on the known pixels around the hole
(within ``agree`` grey levels, averaged over about ``ring`` pixels). What no frame
shows, or shows only as such a ghost, is invented once: carried from the previous
frame's invention along the background's motion (no flicker), else filled by Telea's
method (``cv2.inpaint``) on a crop around it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pvtt.builder.stages.protocols import BackendInfo, check_frames_and_masks

_RANSAC_PX = 0.3
"""Reprojection tolerance, in pixels of the reduced frames that motion is estimated on."""
_MOTIONS = 3
"""How many distinct motions are fitted between two frames before picking the background's."""


@dataclass(frozen=True)
class _View:
    """One frame as motion estimation sees it: reduced grey image, unmasked region, corners."""

    index: int
    gray: np.ndarray
    visible: np.ndarray
    corners: np.ndarray | None


@dataclass(frozen=True)
class _Box:
    """The bounding box of one frame's hole, and the motion from the reference to that frame."""

    x0: int
    y0: int
    x1: int
    y1: int
    from_ref: np.ndarray


class TemporalFillInpainter:
    """The clip with the (dilated) masked product replaced by background from other frames."""

    def __init__(
        self,
        dilate: float = 0.01,
        motion_size: int = 480,
        features: int = 1000,
        min_inliers: int = 15,
        static_px: float = 0.5,
        dense_offsets: int = 8,
        telea_radius: int = 5,
        ring: int = 8,
        agree: float = 16.0,
    ) -> None:
        self.dilate = dilate
        self.motion_size = motion_size
        self.features = features
        self.min_inliers = min_inliers
        self.static_px = static_px
        self.dense_offsets = dense_offsets
        self.telea_radius = telea_radius
        self.ring = ring
        self.agree = agree
        self.info = BackendInfo(
            kind="inpainter",
            name="cpu-temporal-fill",
            version="2",
            params={
                "dilate": dilate,
                "motion_size": motion_size,
                "features": features,
                "min_inliers": min_inliers,
                "static_px": static_px,
                "dense_offsets": dense_offsets,
                "telea_radius": telea_radius,
                "ring": ring,
                "agree": agree,
            },
        )

    def inpaint(self, frames: np.ndarray, masks: np.ndarray) -> np.ndarray:
        check_frames_and_masks(frames, masks)
        holes = self._dilate(masks)
        if not holes.any():
            return frames.copy()
        to_ref, segment = self._motion(frames, holes)
        out = frames.copy()
        left = holes.copy()
        offsets = self._offsets(frames.shape[0])
        usable = ~holes
        for t in np.flatnonzero(holes.any(axis=(1, 2))):
            self._donate(out, frames, left, usable, t, to_ref, segment, offsets)
        for t in np.flatnonzero(left.any(axis=(1, 2))):
            self._synthesize(out, left, t, to_ref, segment)
        return out

    def _dilate(self, masks: np.ndarray) -> np.ndarray:
        radius = round(self.dilate * max(masks.shape[1:]))
        if radius < 1:
            return masks.copy()
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        return np.stack([cv2.dilate(m.view(np.uint8), kernel).view(bool) for m in masks])

    def _motion(self, frames: np.ndarray, holes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Motions (3 x 3) from each frame to its segment's first frame, and segment ids.

        Points are followed with pyramidal Lucas-Kanade on corners of the unmasked
        region: unlike ORB's integer keypoints it is sub-pixel accurate. Chaining
        frame-to-frame motions would still add up their errors (a slowly moving shirt
        biases each step by a fraction of a pixel), so each frame is matched against a
        keyframe, starting from the chained guess, and a new keyframe is taken only when
        fewer than half of the old one's background points remain. A segment ends where
        two consecutive frames cannot be aligned (a cut, a blur): frames of different
        segments never fill each other.
        """
        count, height, width = holes.shape
        scale = min(1.0, self.motion_size / max(height, width))
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        to_ref = np.repeat(np.eye(3)[None], count, axis=0)
        segment = np.zeros(count, dtype=np.int64)
        previous = key = None
        key_best = 0
        for t in range(count):
            gray = cv2.resize(
                cv2.cvtColor(frames[t], cv2.COLOR_RGB2GRAY), size, interpolation=cv2.INTER_AREA
            )
            visible = cv2.resize((~holes[t]).view(np.uint8), size, interpolation=cv2.INTER_NEAREST)
            corners = cv2.goodFeaturesToTrack(
                gray, maxCorners=self.features, qualityLevel=0.01, minDistance=7, mask=visible
            )
            current = _View(t, gray, visible, corners)
            step = self._match(previous, current, np.eye(3)) if previous is not None else None
            if step is None:
                segment[t] = segment[t - 1] + 1 if t else 0
                key, key_best = current, 0
            else:
                segment[t] = segment[t - 1]
                guess = np.linalg.inv(to_ref[key.index]) @ to_ref[t - 1] @ step[0]
                anchored = self._match(key, current, guess)
                to_key, inliers = anchored if anchored is not None else (guess, 0)
                to_ref[t] = to_ref[key.index] @ to_key
                key_best = max(key_best, inliers)
                if inliers < key_best / 2:
                    key, key_best = current, 0
            previous = current
        up = np.diag([1 / scale, 1 / scale, 1.0])
        down = np.diag([scale, scale, 1.0])
        return up @ to_ref @ down, segment

    def _match(
        self, source: _View, target: _View, guess: np.ndarray
    ) -> tuple[np.ndarray, int] | None:
        """Background motion taking ``target``'s points to ``source``'s, with its inlier count.

        ``guess`` (target -> source) seeds the flow, so that distant frames can be matched.
        """
        if source.corners is None or len(source.corners) < self.min_inliers:
            return None
        start = cv2.perspectiveTransform(source.corners, np.linalg.inv(guess)).astype(np.float32)
        lk = {"winSize": (21, 21), "maxLevel": 3}
        moved, ok, _ = cv2.calcOpticalFlowPyrLK(
            source.gray,
            target.gray,
            source.corners,
            start,
            flags=cv2.OPTFLOW_USE_INITIAL_FLOW,
            **lk,
        )
        back, ok_back, _ = cv2.calcOpticalFlowPyrLK(target.gray, source.gray, moved, None, **lk)
        good = (ok[:, 0] == 1) & (ok_back[:, 0] == 1)
        good &= np.linalg.norm((back - source.corners)[:, 0], axis=1) < 0.5
        x = np.clip(np.round(moved[:, 0, 0]).astype(int), 0, target.gray.shape[1] - 1)
        y = np.clip(np.round(moved[:, 0, 1]).astype(int), 0, target.gray.shape[0] - 1)
        good &= target.visible[y, x] > 0
        if good.sum() < self.min_inliers:
            return None
        return _background_motion(moved[good, 0], source.corners[good, 0], self.min_inliers)

    def _offsets(self, count: int) -> list[int]:
        """Signed frame offsets, nearest first: every frame close by, then sparser further out."""
        distances, d = [], 1
        while d < count:
            distances.append(d)
            d += max(1, d // self.dense_offsets)
        return [signed for d in distances for signed in (-d, d)]

    def _donate(
        self,
        out: np.ndarray,
        frames: np.ndarray,
        left: np.ndarray,
        usable: np.ndarray,
        t: int,
        to_ref: np.ndarray,
        segment: np.ndarray,
        offsets: list[int],
    ) -> None:
        """Fill what is ``left`` of frame ``t``'s hole from the nearest frames ``usable`` there.

        A donor pixel is taken only where the donor agrees with frame ``t`` around the
        hole (see :meth:`_agreement`): what moved since (a finger, a kettle, a person)
        shows there as disagreement, and a farther frame that agrees is used, or none.
        """
        count, height, width = left.shape
        ys, xs = np.nonzero(left[t])
        pad = self.ring
        x0, y0 = max(0, xs.min() - pad), max(0, ys.min() - pad)
        x1, y1 = min(width, xs.max() + 1 + pad), min(height, ys.max() + 1 + pad)
        remaining = left[t, y0:y1, x0:x1]
        patch = out[t, y0:y1, x0:x1]
        known = usable[t, y0:y1, x0:x1]
        box = _Box(x0, y0, x1, y1, np.linalg.inv(to_ref[t]))
        for offset in offsets:
            s = t + offset
            if not 0 <= s < count or segment[s] != segment[t]:
                continue
            source, valid = self._warp(box, frames[s], usable[s], to_ref[s])
            take = remaining & valid
            if take.any():
                take &= self._agreement(source, frames[t, y0:y1, x0:x1], valid & known)
            patch[take] = source[take]
            remaining &= ~take
            if not remaining.any():
                return

    def _agreement(self, source: np.ndarray, frame: np.ndarray, both: np.ndarray) -> np.ndarray:
        """Where ``source`` agrees with ``frame`` on the pixels both show, spread over the box.

        The mean absolute difference on ``both`` is averaged locally (Gaussian of
        ``ring`` pixels); where no shared pixel is near, there is no evidence against the
        donor and it is accepted.
        """
        third = np.full((1, 3), 1 / 3)
        diff = cv2.transform(cv2.absdiff(source, frame), third).astype(np.float32)
        weight = both.astype(np.float32)
        sigma = self.ring / 2
        spread = cv2.GaussianBlur(diff * weight, (0, 0), sigma)
        support = cv2.GaussianBlur(weight, (0, 0), sigma)
        decided = support >= 0.02
        agrees = spread <= self.agree * support
        if decided.all() or not decided.any():
            return agrees | ~decided
        # deep inside a large hole, the verdict of the nearest place that has evidence
        _, labels = cv2.distanceTransformWithLabels(
            (~decided).view(np.uint8), cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_PIXEL
        )
        verdict = np.zeros(int(labels.max()) + 1, dtype=bool)
        verdict[labels[decided]] = agrees[decided]
        return verdict[labels]

    def _synthesize(
        self,
        out: np.ndarray,
        left: np.ndarray,
        t: int,
        to_ref: np.ndarray,
        segment: np.ndarray,
    ) -> None:
        """Fill what no frame shows well: the previous frame's invention, else Telea.

        Filling each frame anew would flicker; what was invented for the previous frame
        (``left``: the hole pixels no donor filled), moved with the background, keeps
        the invented part still against the scene.
        """
        ys, xs = np.nonzero(left[t])
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        remaining = left[t, y0:y1, x0:x1].copy()
        if t > 0 and segment[t - 1] == segment[t] and left[t - 1].any():
            box = _Box(x0, y0, x1, y1, np.linalg.inv(to_ref[t]))
            source, valid = self._warp(box, out[t - 1], left[t - 1], to_ref[t - 1])
            take = remaining & valid
            out[t, y0:y1, x0:x1][take] = source[take]
            remaining &= ~take
        self._telea(out[t], remaining, (x0, y0))

    def _warp(
        self, box: _Box, image: np.ndarray, usable: np.ndarray, to_ref: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``image`` and its ``usable`` pixels seen in ``box``'s frame, cropped to the box."""
        x0, y0, x1, y1 = box.x0, box.y0, box.x1, box.y1
        motion = box.from_ref @ to_ref
        corners = np.array(
            [[x0, y0, 1], [x1, y0, 1], [x0, y1, 1], [x1, y1, 1]], dtype=np.float64
        ).T
        moved = motion @ corners
        if np.abs(moved[:2] / moved[2] - corners[:2]).max() < self.static_px:
            return image[y0:y1, x0:x1], usable[y0:y1, x0:x1].copy()
        shift = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0], [0.0, 0.0, 1.0]])
        warp = np.linalg.inv(shift @ motion)
        size = (x1 - x0, y1 - y0)
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        source = cv2.warpPerspective(image, warp, size, flags=flags)
        valid = cv2.warpPerspective(
            usable.view(np.uint8), warp, size, flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP
        ).view(bool)
        return source, valid

    def _telea(self, frame: np.ndarray, remaining: np.ndarray, origin: tuple[int, int]) -> None:
        """Telea on a crop around what no frame showed (the whole frame costs far more)."""
        if not remaining.any():
            return
        height, width = frame.shape[:2]
        ys, xs = np.nonzero(remaining)
        pad = 2 * self.telea_radius + 2
        x0 = max(0, origin[0] + xs.min() - pad)
        y0 = max(0, origin[1] + ys.min() - pad)
        x1 = min(width, origin[0] + xs.max() + 1 + pad)
        y1 = min(height, origin[1] + ys.max() + 1 + pad)
        mask = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
        mask[ys + origin[1] - y0, xs + origin[0] - x0] = 255
        crop = np.ascontiguousarray(frame[y0:y1, x0:x1])
        frame[y0:y1, x0:x1] = cv2.inpaint(crop, mask, self.telea_radius, cv2.INPAINT_TELEA)


def _background_motion(
    src: np.ndarray, dst: np.ndarray, min_inliers: int
) -> tuple[np.ndarray, int] | None:
    """The background's similarity transform (3 x 3) among the motions of matched points.

    Hands and a moving product often carry more features than the background, so the
    largest RANSAC consensus is not enough: several motions are fitted in turn, and the
    one whose inliers cover the most of the frame wins, since the background surrounds
    what moves in front of it.
    """
    best, best_cover, best_count = None, 0.0, 0
    left = np.ones(len(src), dtype=bool)
    for _ in range(_MOTIONS):
        if left.sum() < min_inliers:
            break
        affine, inliers = cv2.estimateAffinePartial2D(
            src[left], dst[left], method=cv2.RANSAC, ransacReprojThreshold=_RANSAC_PX
        )
        if affine is None or int(inliers.sum()) < min_inliers:
            break
        chosen = np.flatnonzero(left)[inliers[:, 0] > 0]
        cover = _cover(src[chosen])
        if cover > best_cover:
            best, best_cover, best_count = np.vstack([affine, [0.0, 0.0, 1.0]]), cover, len(chosen)
        left[chosen] = False
    return None if best is None else (best, best_count)


def _cover(points: np.ndarray) -> float:
    """Area of the convex hull of ``points``: how much of the frame a motion explains."""
    return float(cv2.contourArea(cv2.convexHull(points.reshape(-1, 1, 2))))
