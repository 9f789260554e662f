"""A clip with known answers: a real cut-out moved along a known path over real footage.

Segmenters and inpainters are judged against this: the footage is the true clean
background, the pasted cut-out's alpha is the true mask, and its tight box the true box.
The footage (``sam2/04_coffee.mp4``: a static camera over a table) and the cut-out
(``rembg/car-3.out.png``, the left car) are real, so colours, noise and texture are too.
Optionally the camera pans (a moving crop window), so that inpainters must align frames.
The compositing is the pair fidelity benchmark's (:mod:`pvtt.tools.bench.fidelity_truth`),
whose cases cover many more products, backgrounds and motions.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import av
import cv2
import numpy as np

from pvtt.builder.boxes import masks_to_boxes
from pvtt.tools.bench.fidelity_truth import composite, premultiplied_rgba

VIDEO = "sam2/04_coffee.mp4"
CUTOUT = "rembg/car-3.out.png"


@dataclass(frozen=True)
class TruthClip:
    background: np.ndarray
    """Clean frames ``T x H x W x 3`` uint8: the footage without the pasted product."""
    frames: np.ndarray
    """The composited clip ``T x H x W x 3`` uint8."""
    masks: np.ndarray
    """True masks ``T x H x W`` bool (pasted alpha >= 0.5)."""
    boxes: np.ndarray
    """True boxes ``T x 4`` float32, tight around :attr:`masks`."""
    cutout: np.ndarray
    """The RGBA cut-out that was pasted, trimmed to its alpha."""


def load_cutout(data_dir: Path) -> np.ndarray:
    """The left car of ``car-3.out.png``, RGBA, trimmed to its alpha's bounding box."""
    rgba = cv2.cvtColor(
        cv2.imread(str(data_dir / CUTOUT), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGRA2RGBA
    )
    left = rgba[:, : rgba.shape[1] // 2]
    ys, xs = np.nonzero(left[..., 3] >= 128)
    return np.ascontiguousarray(left[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])


def load_footage(data_dir: Path, num_frames: int, size: tuple[int, int], pan: int) -> np.ndarray:
    """The first ``num_frames`` frames, resized so that a ``size`` window can pan ``pan`` px right."""
    width, height = size
    scaled = (width + pan, round((width + pan) * 9 / 16))
    out = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    decoded = 0
    with av.open(str(data_dir / VIDEO)) as container:
        for t, frame in enumerate(islice(container.decode(video=0), num_frames)):
            img = cv2.resize(frame.to_ndarray(format="rgb24"), scaled, interpolation=cv2.INTER_AREA)
            dx = round(pan * t / max(num_frames - 1, 1))
            dy = round((scaled[1] - height) * t / max(num_frames - 1, 1))
            out[t] = img[dy : dy + height, dx : dx + width]
            decoded += 1
    if decoded < num_frames:
        raise ValueError(f"{data_dir / VIDEO} has {decoded} frames, fewer than {num_frames}")
    return out


@functools.lru_cache(maxsize=4)
def make_truth_clip(
    data_dir: Path,
    num_frames: int = 60,
    size: tuple[int, int] = (640, 360),
    product_width: float = 190.0,
    pan: int = 0,
) -> TruthClip:
    """Paste the car along a smooth path over the footage; cached (the arrays are shared, read-only).

    The path runs left to right along the table at the bottom of the frame, bobbing a
    little, and the car grows by 15 % over the clip, so that every background pixel under
    it is visible in some other frame.
    """
    width, height = size
    background = load_footage(data_dir, num_frames, size, pan)
    cutout = load_cutout(data_dir)
    ch, cw = cutout.shape[:2]
    src = premultiplied_rgba(cutout)
    frames = np.empty_like(background)
    masks = np.empty((num_frames, height, width), dtype=bool)
    for t in range(num_frames):
        u = t / max(num_frames - 1, 1)
        scale = product_width * (1.0 + 0.15 * u) / cw
        x0 = 0.03 * width + u * (width - 0.06 * width - product_width * 1.15)
        y_bottom = 0.97 * height - 0.03 * height * np.sin(2 * np.pi * u)
        y0 = y_bottom - ch * scale
        affine = np.array([[scale, 0, x0], [0, scale, y0]], dtype=np.float64)
        warped = cv2.warpAffine(src, affine, (width, height), flags=cv2.INTER_LINEAR)
        frames[t], alpha = composite(background[t], warped)
        masks[t] = alpha >= 0.5
    for array in (background, frames, masks, cutout):
        array.flags.writeable = False
    boxes = masks_to_boxes(masks)
    boxes.flags.writeable = False
    return TruthClip(background=background, frames=frames, masks=masks, boxes=boxes, cutout=cutout)
