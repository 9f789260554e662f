"""A weight-free inserter: paste the cut-out along its boxes, under the scene's light.

A plain paste looks wrong in three ways a compositor can fix without a model: hard
resampled edges (feathered here), the photo's own white balance (the cut-out is relit
part of the way to the colour of the scene's light, a von Kries gain in linear RGB), and
an object that floats (an optional soft contact shadow). The scene's light is estimated
once per clip from the clean background (shades of grey, :func:`scene_light`): light
does not change from frame to frame, so the insert cannot flicker with what passes by,
and a gain keeps the product's own colours, where pulling its colours towards the
surroundings would repaint a red product green on a green table. Exposure is left as
the photo has it: a dark-coloured set and a dim one look alike to statistics.
All the work happens in a small region around each box.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from pvtt.builder.illuminant import luminance, relight, scene_light
from pvtt.builder.stages.cutout import placement_matrix, trim_to_alpha
from pvtt.builder.stages.protocols import BackendInfo, InsertionInput


def composite_params(
    feather_px: float, harmonize: float, shadow: float, grey_norm: float
) -> dict[str, float]:
    """The compositor's settings, checked: every backend that composites (CPU, torch) takes
    the same ones and records them alike in its ``BackendInfo``."""
    if not 0.0 <= harmonize <= 1.0 or not 0.0 <= shadow <= 1.0:
        raise ValueError(f"harmonize and shadow must be in [0, 1], got {harmonize}, {shadow}")
    return {
        "feather_px": feather_px,
        "harmonize": harmonize,
        "shadow": shadow,
        "grey_norm": grey_norm,
    }


class AlphaCompositeInserter:
    """Alpha-composite the cut-out into every frame that has a box.

    ``feather_px`` softens the pasted edge inwards (Gaussian sigma in frame pixels; no
    halo of cut-out colour outside it); ``harmonize`` in [0, 1] is how far the cut-out's
    light moves towards the colour of the scene's (0 = paste as is, 1 = the estimated
    light in full; an estimate fooled by a scene's own colours does less harm part way);
    ``shadow`` in [0, 1] is the darkness of the contact shadow under the object (0 =
    none); ``grey_norm`` the Minkowski norm of the light's estimate.
    """

    def __init__(
        self,
        feather_px: float = 1.0,
        harmonize: float = 0.6,
        shadow: float = 0.0,
        grey_norm: float = 8.0,
    ) -> None:
        params = composite_params(feather_px, harmonize, shadow, grey_norm)
        self.feather_px = feather_px
        self.harmonize = harmonize
        self.shadow = shadow
        self.grey_norm = grey_norm
        self.info = BackendInfo(
            kind="inserter", name="cpu-alpha-composite", version="2", params=params
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
        premult = _relit(premult, alpha, self.gains(frames, valid))
        for t in np.flatnonzero(valid):
            self._composite(out[t], boxes[t], premult, alpha)
        return out

    def gains(self, frames: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """The per-channel linear gain that moves the cut-out ``harmonize`` of the way to
        the colour of the scene's light (luminance 1: exposure kept), from up to 8 of
        the frames with a box."""
        if self.harmonize == 0.0:
            return np.ones(3)
        picked = np.flatnonzero(valid)
        picked = picked[np.unique(np.linspace(0, len(picked) - 1, 8).round().astype(int))]
        light, _ = scene_light(frames[picked], self.grey_norm)
        colour = np.maximum(light, 1e-6) ** self.harmonize
        return colour / float(luminance(colour))

    def _composite(
        self,
        frame: np.ndarray,
        box: np.ndarray,
        premult: np.ndarray,
        alpha: np.ndarray,
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


def _relit(premult: np.ndarray, alpha: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """Premultiplied colour with its straight colour relit by ``gains``."""
    if np.allclose(gains, 1.0):
        return premult
    straight = premult / np.maximum(alpha, 1e-3)[..., None]
    return relight(np.clip(straight, 0, 255), gains) * alpha[..., None]


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
