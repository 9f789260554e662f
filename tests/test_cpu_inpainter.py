"""The temporal-fill inpainter on clips built to show its two hard cases.

A ghost: the nearest frames that show the hole's background show a hand over it (visible
background to the mask, gone by the frame being filled); the fill must come from the
farther frames that agree with the frame around the hole. An invention: what no frame
shows must be invented once and kept still, not re-invented (and flicker) every frame.
"""

from __future__ import annotations

import cv2
import numpy as np

from pvtt.builder.backends.cpu_inpainter import TemporalFillInpainter

_SIZE = (96, 128)
_PRODUCT = (slice(36, 60), slice(52, 76))
_HAND = (slice(24, 72), slice(40, 88))


def _background(seed: int = 0) -> np.ndarray:
    """A textured still scene: smoothed colour noise, plenty of corners to align on."""
    rng = np.random.default_rng(seed)
    noise = rng.uniform(0, 255, (*_SIZE, 3)).astype(np.float32)
    return np.clip(cv2.GaussianBlur(noise, (0, 0), 2.0) * 3 - 255, 0, 255).astype(np.uint8)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255**2 / max(mse, 1e-10))


def test_a_hand_seen_in_the_nearest_frames_is_not_copied() -> None:
    background = _background()
    frames = np.repeat(background[None], 30, axis=0)
    masks = np.zeros(frames.shape[:3], dtype=bool)
    masks[5:][(slice(None), *_PRODUCT)] = True  # frames 0-4: the product is elsewhere
    masks[:5, 4:20, 4:28] = True
    frames[masks] = (40, 60, 220)
    frames[3:5][(slice(None), *_HAND)] = (205, 150, 120)  # a hand passes, then it leaves
    clean = TemporalFillInpainter(dilate=0.0).inpaint(frames, masks)
    hole = (slice(25, 30), *_PRODUCT)
    np.testing.assert_array_equal(clean[~masks], frames[~masks])
    assert _psnr(clean[hole], np.repeat(background[None], 5, axis=0)[(slice(None), *_PRODUCT)]) >= 40


def test_what_no_frame_shows_is_invented_once() -> None:
    rng = np.random.default_rng(1)
    background = _background().astype(np.float32)
    frames = np.stack(
        [np.clip(background + rng.normal(0, 3, background.shape), 0, 255) for _ in range(12)]
    ).astype(np.uint8)
    masks = np.zeros(frames.shape[:3], dtype=bool)
    masks[(slice(None), *_PRODUCT)] = True
    frames[masks] = (40, 60, 220)
    clean = TemporalFillInpainter(dilate=0.0).inpaint(frames, masks)
    inside = clean[(slice(None), *_PRODUCT)]
    assert np.all(inside == inside[:1])  # still: no flicker
    assert np.abs(inside.astype(int) - (40, 60, 220)).max(axis=-1).min() > 30  # product gone
