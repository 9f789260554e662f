"""The weight-free segmenter on thin, holed and occluded products (drawn, so truth is exact)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pvtt.builder.backends.cpu_segmenter import TrackerGrabCutSegmenter
from pvtt.builder.boxes import iou, masks_to_boxes
from pvtt.builder.stages.protocols import Detection

_SIZE = (200, 140)
_FRAMES = 16


def _texture(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Grey grain (the ring and the scene share its tones, so colour cannot split them)."""
    noise = cv2.GaussianBlur(rng.uniform(0, 255, shape).astype(np.float32), (0, 0), sigma)
    noise = (noise - noise.min()) / (np.ptp(noise) + 1e-6)
    return np.repeat((40 + 180 * noise)[..., None], 3, axis=-1)


def _ring_clip(occluded: bool) -> tuple[np.ndarray, np.ndarray]:
    """A bluish grained ring sliding right over a static grey scene, ``(frames, masks)``; its
    hole shows a patch of the ring's own tones, so colour alone fills it. With ``occluded``
    a flat bar sweeps left across the ring mid-clip."""
    rng = np.random.default_rng(3)
    width, height = _SIZE
    tint = np.array([0.6, 0.8, 1.1])
    scene = _texture(rng, (height, width), 2.0)
    patch = np.zeros((height, width), np.uint8)
    cv2.circle(patch, (62, 70), 24, 1, -1)
    scene[patch > 0] *= tint
    skin = _texture(rng, (height, width), 1.5) * tint
    frames = np.empty((_FRAMES, height, width, 3), np.uint8)
    masks = np.zeros((_FRAMES, height, width), bool)
    for t in range(_FRAMES):
        ring = np.zeros((height, width), np.uint8)
        cv2.circle(ring, (50 + 3 * t, 70), 32, 1, 11)
        shifted = np.roll(skin, 3 * t, axis=1)
        frame = np.where(ring[..., None] > 0, shifted, scene)
        visible = ring > 0
        if occluded:
            bar = np.zeros((height, width), bool)
            left = 150 - 9 * t
            bar[:, max(left, 0) : max(left + 18, 0)] = True
            frame[bar] = (200, 60, 60)
            visible &= ~bar
        frames[t] = frame.astype(np.uint8)
        masks[t] = visible
    return frames, masks


@pytest.mark.parametrize("occluded", [False, True])
def test_segmenter_keeps_a_ring_open_and_tracks_it_past_an_occluder(occluded: bool) -> None:
    frames, masks = _ring_clip(occluded)
    box = tuple(float(v) for v in masks_to_boxes(masks[:1])[0])
    track = TrackerGrabCutSegmenter().segment(frames, Detection(0, box, 1.0))
    ious = iou(track.masks, masks)
    hole = np.zeros(masks.shape[1:], np.uint8)
    cv2.circle(hole, (50 + 3 * 8, 70), 20, 1, -1)
    filled = (track.masks[8] & (hole > 0)).mean() / (hole > 0).mean()
    print(f"\nring, occluded={occluded}: mean IoU {ious.mean():.3f}, min {ious.min():.3f}, "
          f"hole filled {filled:.2f} at frame 8")
    assert ious.mean() >= 0.8
    assert filled < 0.2
