"""A weight-free inserter: paste the cut-out along its boxes, matched to the scene's light.

A plain paste looks wrong in three ways a compositor can fix without a model: hard
resampled edges (feathered here), the photo's own exposure and white balance (pulled
part of the way towards the background around the box, Reinhard-style in Lab), and an
object that floats (an optional soft contact shadow). The colour match is computed from
the clean background in a ring around each box and smoothed over time, because
per-frame statistics jump when something passes by and would make the insert flicker.
All the work happens in a small region around each box.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from pvtt.builder.stages.cutout import placement_matrix, trim_to_alpha
from pvtt.builder.stages.protocols import BackendInfo, InsertionInput

_STD_RATIO = (0.8, 1.25)
"""How far harmonisation may scale the cut-out's contrast, whatever the ring says.

The ring's spread is mostly the texture of the scene (a plain table has almost none),
not its light, so it is allowed only a mild say in the product's contrast."""


class AlphaCompositeInserter:
    """Alpha-composite the cut-out into every frame that has a box.

    ``feather_px`` softens the pasted edge inwards (Gaussian sigma in frame pixels; no
    halo of cut-out colour outside it); ``harmonize`` in [0, 1] is how far the cut-out's
    Lab mean and contrast move towards the surrounding background's (0 = paste as is;
    full strength would repaint the product in the scene's colours); ``shadow`` in
    [0, 1] is the darkness of the contact shadow under the object (0 = none);
    ``ring_frac`` the width of the ring around the box, as a fraction of the box's
    geometric-mean side; ``smooth_s`` the Gaussian time constant, in seconds, of the
    colour statistics.
    """

    def __init__(
        self,
        feather_px: float = 1.0,
        harmonize: float = 0.35,
        shadow: float = 0.0,
        ring_frac: float = 0.25,
        smooth_s: float = 0.5,
    ) -> None:
        if not 0.0 <= harmonize <= 1.0 or not 0.0 <= shadow <= 1.0:
            raise ValueError(f"harmonize and shadow must be in [0, 1], got {harmonize}, {shadow}")
        self.feather_px = feather_px
        self.harmonize = harmonize
        self.shadow = shadow
        self.ring_frac = ring_frac
        self.smooth_s = smooth_s
        self.info = BackendInfo(
            kind="inserter",
            name="cpu-alpha-composite",
            version="1",
            params={
                "feather_px": feather_px,
                "harmonize": harmonize,
                "shadow": shadow,
                "ring_frac": ring_frac,
                "smooth_s": smooth_s,
            },
        )

    def insert(self, job: InsertionInput) -> np.ndarray:
        """The synthesized clip ``T x H x W x 3`` uint8; frames with a ``nan`` box are copied."""
        frames, boxes = job.background, np.asarray(job.boxes, np.float64)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
            raise ValueError(
                f"background must be T x H x W x 3 uint8, got {frames.dtype} {frames.shape}"
            )
        if boxes.shape != (len(frames), 4):
            raise ValueError(f"boxes must be T x 4 for T={len(frames)}, got {boxes.shape}")
        cutout = trim_to_alpha(job.cutout)
        valid = (
            np.isfinite(boxes).all(axis=1)
            & (boxes[:, 2] > boxes[:, 0])
            & (boxes[:, 3] > boxes[:, 1])
        )
        out = frames.copy()
        if not valid.any():
            return out
        premult, alpha = _premultiplied(cutout)
        transfer = self._transfers(frames, boxes, valid, cutout, job.fps)
        for t in np.flatnonzero(valid):
            self._composite(out[t], boxes[t], premult, alpha, transfer[t])
        return out

    def _transfers(
        self,
        frames: np.ndarray,
        boxes: np.ndarray,
        valid: np.ndarray,
        cutout: np.ndarray,
        fps: float,
    ) -> np.ndarray:
        """Per frame, the Lab gain and offset (``T x 2 x 3``) that harmonise the cut-out.

        The target mean is the cut-out's moved ``harmonize`` of the way to the ring's
        median; the target spread its spread times the ring/cut-out spread ratio to the
        power ``harmonize`` (clamped). Ring statistics are robust (median, MAD) and
        Gaussian-smoothed over the frames that have a box.
        """
        transfer = np.zeros((len(frames), 2, 3))
        transfer[:, 0] = 1.0
        lab = _lab(cutout[..., :3])[cutout[..., 3] >= 128]
        if self.harmonize == 0.0 or len(lab) < 16:
            return transfer
        mu_c, sd_c = lab.mean(axis=0), np.maximum(lab.std(axis=0), 1.0)
        ring = np.full((len(frames), 2, 3), np.nan)
        for t in np.flatnonzero(valid):
            ring[t] = _ring_stats(frames[t], boxes[t], self.ring_frac)
        ring = _smooth_over_time(ring, self.smooth_s * fps)
        known = np.isfinite(ring).all(axis=(1, 2))
        mu_t = mu_c + self.harmonize * (ring[known, 0] - mu_c)
        ratio = np.clip(ring[known, 1] / sd_c, *_STD_RATIO) ** self.harmonize
        transfer[known, 0] = ratio
        transfer[known, 1] = mu_t - mu_c * ratio
        return transfer

    def _composite(
        self,
        frame: np.ndarray,
        box: np.ndarray,
        premult: np.ndarray,
        alpha: np.ndarray,
        transfer: np.ndarray,
    ) -> None:
        """Paste into ``frame`` in place, touching only the region around ``box``."""
        h, w = frame.shape[:2]
        x0, y0, x1, y1 = box
        pad = 2 + 3 * self.feather_px
        below = 0.35 * (y1 - y0) if self.shadow > 0 else 0.0
        rx0, ry0 = max(0, math.floor(x0 - pad)), max(0, math.floor(y0 - pad))
        rx1, ry1 = min(w, math.ceil(x1 + pad)), min(h, math.ceil(y1 + pad + below))
        if rx1 <= rx0 or ry1 <= ry0:
            return
        size = (max(1, round(x1 - x0)), max(1, round(y1 - y0)))
        shrink = size[0] < alpha.shape[1] or size[1] < alpha.shape[0]
        interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        colour = cv2.resize(premult, size, interpolation=interp)
        a = cv2.resize(alpha, size, interpolation=interp)
        colour = _harmonised(colour, a, transfer)
        matrix = placement_matrix(size[0], size[1], box, origin=(rx0, ry0))
        roi_size = (rx1 - rx0, ry1 - ry0)
        colour = cv2.warpAffine(colour, matrix, roi_size, flags=cv2.INTER_LINEAR)
        a = cv2.warpAffine(a, matrix, roi_size, flags=cv2.INTER_LINEAR)
        if self.feather_px > 0:
            a_soft = np.minimum(a, cv2.GaussianBlur(a, (0, 0), self.feather_px))
        else:
            a_soft = a
        roi = frame[ry0:ry1, rx0:rx1].astype(np.float32)
        if self.shadow > 0:
            roi *= 1.0 - self.shadow * _contact_shadow(box, (rx0, ry0), roi.shape[:2])[..., None]
        straight = colour / np.maximum(a, 1e-3)[..., None]
        roi += a_soft[..., None] * (straight - roi)
        frame[ry0:ry1, rx0:rx1] = np.clip(roi + 0.5, 0, 255).astype(np.uint8)


def _premultiplied(cutout: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Colour times alpha and alpha, float32 in [0, 255] and [0, 1].

    Resampling premultiplied colour keeps the (arbitrary) colour of transparent pixels
    from bleeding into the edge as a dark or light fringe.
    """
    alpha = cutout[..., 3].astype(np.float32) / 255.0
    return cutout[..., :3].astype(np.float32) * alpha[..., None], alpha


def _lab(rgb: np.ndarray) -> np.ndarray:
    """Float Lab (L in [0, 100]) of uint8 or float [0, 255] RGB."""
    return cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)


def _ring_stats(frame: np.ndarray, box: np.ndarray, ring_frac: float) -> np.ndarray:
    """Median and MAD-scaled spread (``2 x 3``, Lab) of the background around ``box``.

    Falls back to the whole enlarged region when the ring is mostly off the frame.
    """
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = box
    margin = ring_frac * math.sqrt((x1 - x0) * (y1 - y0))
    ex0, ey0 = max(0, math.floor(x0 - margin)), max(0, math.floor(y0 - margin))
    ex1, ey1 = min(w, math.ceil(x1 + margin)), min(h, math.ceil(y1 + margin))
    if ex1 <= ex0 or ey1 <= ey0:
        return np.full((2, 3), np.nan)
    lab = _lab(frame[ey0:ey1, ex0:ex1])
    ring = np.ones(lab.shape[:2], bool)
    ring[
        max(0, math.floor(y0) - ey0) : max(0, math.ceil(y1) - ey0),
        max(0, math.floor(x0) - ex0) : max(0, math.ceil(x1) - ex0),
    ] = False
    pixels = lab[ring] if ring.sum() >= 32 else lab.reshape(-1, 3)
    median = np.median(pixels, axis=0)
    spread = 1.4826 * np.median(np.abs(pixels - median), axis=0)
    return np.stack([median, np.maximum(spread, 1.0)])


def _smooth_over_time(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian average along axis 0 over the finite rows.

    Every row gets the average of its finite neighbours, so a frame whose ring was off
    the picture borrows its neighbours' colour match instead of jumping to none.
    """
    finite = np.isfinite(values).all(axis=tuple(range(1, values.ndim)))
    if sigma <= 0 or not finite.any():
        return values
    idx = np.arange(len(values))
    weights = np.exp(-0.5 * ((idx[:, None] - idx[None, finite]) / sigma) ** 2)
    total = weights.sum(axis=1, keepdims=True)
    weights = np.divide(weights, total, out=np.full_like(weights, np.nan), where=total > 0)
    return np.tensordot(weights, values[finite], axes=1)


def _harmonised(premult: np.ndarray, alpha: np.ndarray, transfer: np.ndarray) -> np.ndarray:
    """Apply the Lab gain/offset ``transfer`` to premultiplied colour (returned premultiplied)."""
    if np.array_equal(transfer, [[1, 1, 1], [0, 0, 0]]):
        return premult
    straight = premult / np.maximum(alpha, 1e-3)[..., None]
    lab = _lab(np.clip(straight, 0, 255))
    lab = lab * transfer[0].astype(np.float32) + transfer[1].astype(np.float32)
    lab[..., 0] = np.clip(lab[..., 0], 0, 100)
    rgb = cv2.cvtColor(lab, cv2.COLOR_Lab2RGB) * 255.0
    return np.clip(rgb, 0, 255) * alpha[..., None]


def _contact_shadow(box: np.ndarray, origin: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """A soft elliptical shadow, darkest under the bottom edge of ``box``, in [0, 1]."""
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    shift = 4
    scale = 1 << shift
    centre = (
        round(((x0 + x1) / 2 - origin[0] - 0.5) * scale),
        round((y1 - origin[1] - 0.5) * scale),
    )
    axes = (max(1, round(0.45 * bw * scale)), max(1, round(0.06 * bh * scale + scale)))
    canvas = np.zeros(shape, np.float32)
    cv2.ellipse(canvas, centre, axes, 0, 0, 360, 1.0, -1, cv2.LINE_AA, shift)
    return cv2.GaussianBlur(canvas, (0, 0), max(1.0, 0.08 * bh))
