"""Weight-free detector: the catalog's first-frame box, else the object that stands out.

A catalog row may give ``first_frame_box``; that is the most reliable prompt there is
and is used as is. Without it the product is guessed on the first frame: in product
footage it is the object in front of the set, and the set reaches the frame's border.
So the border band is taken as sure background and GrabCut separates what differs
from it (its colour models and smoothness term beat per-pixel saliency: OpenCV's
saliency module is contrib-only, and spectral-residual or border-distance maps lit up
textured backgrounds in trials). The connected component with the most centre-weighted
area becomes the box.
"""

from __future__ import annotations

import cv2
import numpy as np

from pvtt.builder.stages.protocols import BackendInfo, Detection, Prompt, StageRejected


class FirstFrameOrSaliencyDetector:
    """The product's box on frame 0: the prompt's box when given, else a foreground estimate."""

    def __init__(
        self,
        work_size: int = 160,
        border: float = 0.06,
        iterations: int = 5,
        centre_sigma: float = 0.35,
        min_area: float = 0.005,
        max_area: float = 0.85,
    ) -> None:
        self.work_size = work_size
        self.border = border
        self.iterations = iterations
        self.centre_sigma = centre_sigma
        self.min_area = min_area
        self.max_area = max_area
        self.info = BackendInfo(
            kind="detector",
            name="cpu-saliency",
            version="1",
            params={
                "work_size": work_size,
                "border": border,
                "iterations": iterations,
                "centre_sigma": centre_sigma,
                "min_area": min_area,
                "max_area": max_area,
            },
        )

    def detect(self, frames: np.ndarray, prompt: Prompt) -> Detection:
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or not len(frames):
            raise ValueError(
                f"frames must be uint8 T x H x W x 3 with T >= 1, got {frames.dtype} {frames.shape}"
            )
        height, width = frames.shape[1:3]
        if prompt.box is not None:
            return Detection(0, _clip_box(prompt.box, width, height), 1.0, prompt.text)
        box, score = self._foreground_box(frames[0])
        return Detection(0, box, score, prompt.text)

    def foreground(self, image: np.ndarray) -> np.ndarray:
        """GrabCut's foreground (uint8 0/1) at reduced size, the border band being background."""
        height, width = image.shape[:2]
        scale = min(1.0, self.work_size / max(height, width))
        small = np.ascontiguousarray(
            cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        )
        h, w = small.shape[:2]
        band = max(1, round(self.border * min(h, w)))
        labels = np.zeros((h, w), np.uint8)
        models = (np.zeros((1, 65)), np.zeros((1, 65)))
        rect = (band, band, w - 2 * band, h - 2 * band)
        cv2.setRNGSeed(0)
        cv2.grabCut(small, labels, rect, *models, self.iterations, cv2.GC_INIT_WITH_RECT)
        fg = ((labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)).astype(np.uint8)
        return cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))

    def _foreground_box(self, image: np.ndarray) -> tuple[tuple[float, float, float, float], float]:
        """Box of the main foreground component and its share of all foreground (the score)."""
        height, width = image.shape[:2]
        fg = self.foreground(image)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
        if count < 2:
            raise StageRejected(
                "no product found on the first frame: nothing stands out from its border"
            )
        h, w = fg.shape
        y = (np.arange(h) - (h - 1) / 2) / (self.centre_sigma * h)
        x = (np.arange(w) - (w - 1) / 2) / (self.centre_sigma * w)
        prior = np.exp(-0.5 * (y[:, None] ** 2 + x[None] ** 2))
        weight = np.bincount(labels.ravel(), weights=prior.ravel(), minlength=count)[1:]
        best = 1 + int(np.argmax(weight))
        area = stats[best, cv2.CC_STAT_AREA] / fg.size
        if not self.min_area <= area <= self.max_area:
            raise StageRejected(
                f"no product found on the first frame: the main foreground region covers "
                f"{area:.1%} of it (expected {self.min_area:.1%} to {self.max_area:.0%})"
            )
        score = float(stats[best, cv2.CC_STAT_AREA] / stats[1:, cv2.CC_STAT_AREA].sum())
        left, top = stats[best, cv2.CC_STAT_LEFT], stats[best, cv2.CC_STAT_TOP]
        right = left + stats[best, cv2.CC_STAT_WIDTH]
        bottom = top + stats[best, cv2.CC_STAT_HEIGHT]
        sx, sy = width / w, height / h
        return _clip_box((left * sx, top * sy, right * sx, bottom * sy), width, height), score


def _clip_box(box: tuple[float, ...], width: int, height: int) -> tuple[float, float, float, float]:
    if len(box) != 4 or not np.isfinite(np.asarray(box, dtype=np.float64)).all():
        raise ValueError(f"a box must be four finite numbers x0,y0,x1,y1, got {box}")
    x0, y0, x1, y1 = (float(v) for v in box)
    x0, x1 = min(max(x0, 0.0), width), min(max(x1, 0.0), width)
    y0, y1 = min(max(y0, 0.0), height), min(max(y1, 0.0), height)
    if x1 - x0 < 1 or y1 - y0 < 1:
        raise StageRejected(
            f"the prompt box {tuple(box)} is empty inside the {width}x{height} frame"
        )
    return (x0, y0, x1, y1)
