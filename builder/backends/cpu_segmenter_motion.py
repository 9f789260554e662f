"""Motion cues for the weight-free segmenter: the product's motion, and where it is not.

Why a module of its own: tracking thin and holed products needs more than corners inside
the mask. A ring has few corners and most of them sit on its edge, half outside a mask
eroded by resampling, so points are taken in a band around the mask and Lucas-Kanade
starts from the motion of the step before (fast products move 20-30 px a frame, beyond
a cold start on a small blurred object). And what GrabCut cannot tell by colour, the hole
of a ring showing a background of the ring's own colours, motion can: a pixel that the
background's motion explains and the product's does not is background seen through it.
"""

from __future__ import annotations

import cv2
import numpy as np

IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
_LK = {"winSize": (21, 21), "maxLevel": 3}
_LK_FINE = {"winSize": (7, 7), "maxLevel": 1}
"""A second, small window refines the flow: a 21 px window over an 11 px thick ring sees
mostly background and drags the ring's motion towards it (2.2 px for 3)."""
_BAND = np.ones((3, 3), np.uint8)


def similarity(
    prev_gray: np.ndarray,
    gray: np.ndarray,
    region: np.ndarray,
    guess: np.ndarray,
    min_points: int,
) -> tuple[np.ndarray | None, int]:
    """Similarity transform (tracking pixels) of the points in ``region``, and its inliers.

    ``guess`` (a 2x3 motion in tracking pixels, e.g. the previous step's) seeds the flow;
    a cold start is tried too and the better-supported answer kept. ``None`` when fewer
    than ``min_points`` points move consistently; the support is -1 when plenty of points
    (three times that) were found but not one of them moved consistently: the product is
    gone, not hidden.
    """
    points = cv2.goodFeaturesToTrack(
        prev_gray, maxCorners=400, qualityLevel=0.001, minDistance=2, mask=region, blockSize=5
    )
    if points is None or len(points) < min_points:
        return None, 0 if points is None else len(points)
    best: tuple[np.ndarray | None, int] = (None, 0)
    starts = [cv2.transform(points, guess)]
    if not np.allclose(guess, IDENTITY):
        starts.append(points.copy())
    for start in starts:
        found = _fit(prev_gray, gray, points, start, min_points)
        if found[1] > best[1]:
            best = found
    return best if best[1] or len(points) < 3 * min_points else (None, -1)


def _fit(
    prev_gray: np.ndarray, gray: np.ndarray, points: np.ndarray, start: np.ndarray, min_points: int
) -> tuple[np.ndarray | None, int]:
    flags = cv2.OPTFLOW_USE_INITIAL_FLOW
    moved, ok, _ = cv2.calcOpticalFlowPyrLK(prev_gray, gray, points, start, flags=flags, **_LK)
    moved, ok_fine, _ = _lk(prev_gray, gray, points, moved, **_LK_FINE)
    back, ok_back, _ = _lk(gray, prev_gray, moved, points, **_LK)
    back, ok_back_fine, _ = _lk(gray, prev_gray, moved, back, **_LK_FINE)
    good = (ok[:, 0] == 1) & (ok_back[:, 0] == 1) & (ok_fine[:, 0] == 1)
    good &= ok_back_fine[:, 0] == 1
    good &= np.linalg.norm((back - points)[:, 0], axis=1) < 1.0
    if good.sum() < min_points:
        return None, int(good.sum())
    motion, inliers = cv2.estimateAffinePartial2D(
        points[good], moved[good], method=cv2.RANSAC, ransacReprojThreshold=1.0
    )
    count = 0 if inliers is None else int(inliers.sum())
    if motion is None or count < min_points:
        return None, count
    return motion, count


def _lk(
    prev_gray: np.ndarray, gray: np.ndarray, points: np.ndarray, start: np.ndarray, **params
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lucas-Kanade flow of ``points`` starting from ``start``."""
    return cv2.calcOpticalFlowPyrLK(
        prev_gray, gray, points, start.copy(), flags=cv2.OPTFLOW_USE_INITIAL_FLOW, **params
    )


def track_region(mask_small: np.ndarray) -> np.ndarray:
    """The mask and a band around it: a thin product's corners lie on its edge."""
    return cv2.dilate(mask_small, _BAND)


def background_motion(
    prev_gray: np.ndarray, gray: np.ndarray, mask_small: np.ndarray, min_points: int
) -> np.ndarray:
    """The camera's similarity transform from points away from the product (identity if none)."""
    away = (cv2.dilate(mask_small, np.ones((15, 15), np.uint8)) == 0).astype(np.uint8)
    motion, _ = similarity(prev_gray, gray, away, IDENTITY, min_points)
    return IDENTITY if motion is None else motion


def seen_through(
    prev: np.ndarray,
    frame: np.ndarray,
    motion: np.ndarray,
    camera: np.ndarray,
    crop: tuple[int, int, int, int],
    contrast: float = 24.0,
) -> np.ndarray:
    """Background seen through the product inside ``crop`` of ``frame`` (full resolution).

    A pixel is background when the camera's motion predicts it from the previous frame
    much better than the product's motion does. Flat pixels and pixels the two motions
    move alike carry no evidence. (The reverse, product evidence, is not used: taken as
    sure foreground it let masks creep over a background that moves unlike the camera.)
    """
    x0, y0, x1, y1 = crop
    shift = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0], [0.0, 0.0, 1.0]])
    size = (x1 - x0, y1 - y0)
    cur = frame[y0:y1, x0:x1].astype(np.int16)

    def residual(warp: np.ndarray) -> np.ndarray:
        moved = (shift @ np.vstack([warp, [0.0, 0.0, 1.0]]))[:2]
        pred = cv2.warpAffine(prev, moved, size, flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
        diff = np.abs(cur - pred.astype(np.int16)).sum(-1)
        return cv2.blur(diff.astype(np.float32), (3, 3))

    return residual(motion) > 2 * residual(camera) + contrast


def box_motion(
    prev_gray: np.ndarray, gray: np.ndarray, box_small: np.ndarray, min_points: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """``(product, camera)`` motions (tracking pixels) when only a box is known, else None.

    The camera's motion comes from points outside the box; the product's from the points
    inside it that the camera's motion does not explain (a chain's box is mostly
    background). None when the product does not move apart from the background.
    """
    camera = background_motion(prev_gray, gray, box_small, min_points)
    points = cv2.goodFeaturesToTrack(
        prev_gray, maxCorners=400, qualityLevel=0.001, minDistance=2, mask=box_small, blockSize=5
    )
    if points is None or len(points) < min_points:
        return None
    moved, ok, _ = cv2.calcOpticalFlowPyrLK(prev_gray, gray, points, None, **_LK)
    back, ok_back, _ = cv2.calcOpticalFlowPyrLK(gray, prev_gray, moved, None, **_LK)
    good = (ok[:, 0] == 1) & (ok_back[:, 0] == 1)
    good &= np.linalg.norm((back - points)[:, 0], axis=1) < 1.0
    good &= np.linalg.norm((cv2.transform(points, camera) - moved)[:, 0], axis=1) > 1.5
    if good.sum() < min_points:
        return None
    motion, inliers = cv2.estimateAffinePartial2D(
        points[good], moved[good], method=cv2.RANSAC, ransacReprojThreshold=1.0
    )
    if motion is None or inliers.sum() < min_points:
        return None
    return motion, camera
