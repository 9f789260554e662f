"""The weight-free product track and background estimate, judged against a known truth."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from truth import TruthClip, make_truth_clip

from pvtt.builder.backends.cpu_detector import FirstFrameOrSaliencyDetector
from pvtt.builder.backends.cpu_inpainter import TemporalFillInpainter
from pvtt.builder.backends.cpu_segmenter import TrackerGrabCutSegmenter
from pvtt.builder.boxes import box_to_mask, iou, masks_to_boxes
from pvtt.builder.stages.protocols import (
    Detection,
    Detector,
    Inpainter,
    Prompt,
    Segmenter,
    StageRejected,
)


@pytest.fixture(scope="module")
def truth(shared_data: Path) -> TruthClip:
    return make_truth_clip(shared_data)


def _psnr_where_recoverable(estimate: np.ndarray, clip: TruthClip) -> float:
    """PSNR inside the true masks, over pixels that some other frame shows unmasked."""
    count = len(clip.masks)
    seen_elsewhere = np.stack(
        [(~np.delete(clip.masks, t, axis=0)).any(axis=0) for t in range(count)]
    )
    region = clip.masks & seen_elsewhere
    assert region.sum() > 0.9 * clip.masks.sum()
    error = estimate[region].astype(np.float64) - clip.background[region]
    return float(10 * np.log10(255.0**2 / np.mean(error**2)))


def _timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def test_backends_implement_protocols() -> None:
    assert isinstance(FirstFrameOrSaliencyDetector(), Detector)
    assert isinstance(TrackerGrabCutSegmenter(), Segmenter)
    assert isinstance(TemporalFillInpainter(), Inpainter)
    assert (
        TrackerGrabCutSegmenter(iterations=3).info.fingerprint()
        != TrackerGrabCutSegmenter().info.fingerprint()
    )


@pytest.mark.parametrize("start", [0, 30])
def test_segmenter_tracks_the_true_product(truth: TruthClip, start: int) -> None:
    frames = np.asarray(truth.frames)
    detection = Detection(start, tuple(float(v) for v in truth.boxes[start]), 1.0)
    track, seconds = _timed(TrackerGrabCutSegmenter().segment, frames, detection)
    ious = iou(track.masks, truth.masks)
    print(
        f"\nsegmenter from frame {start}: mean IoU {ious.mean():.3f}, min {ious.min():.3f}, "
        f"{len(frames) / seconds:.0f} frames/s at {frames.shape[2]}x{frames.shape[1]}"
    )
    assert track.masks.shape == truth.masks.shape
    np.testing.assert_array_equal(track.boxes, masks_to_boxes(track.masks))
    assert ious.mean() >= 0.85
    assert ious.min() >= 0.7


def test_segmenter_rejects_a_lost_product(truth: TruthClip) -> None:
    frames = np.array(truth.frames)
    frames[20:] = truth.background[20:]
    detection = Detection(0, tuple(float(v) for v in truth.boxes[0]), 1.0)
    with pytest.raises(StageRejected, match="product lost at frame 20"):
        TrackerGrabCutSegmenter().segment(frames, detection)


def test_inpainter_recovers_the_background(truth: TruthClip) -> None:
    frames, masks = np.asarray(truth.frames), np.asarray(truth.masks)
    inpainter = TemporalFillInpainter()
    clean, seconds = _timed(inpainter.inpaint, frames, masks)
    psnr = _psnr_where_recoverable(clean, truth)
    holes = inpainter._dilate(masks)
    print(f"\ninpainter, true masks: PSNR {psnr:.2f} dB, {len(frames) / seconds:.0f} frames/s")
    assert clean.shape == frames.shape and clean.dtype == np.uint8
    np.testing.assert_array_equal(clean[~holes], frames[~holes])
    assert psnr >= 30.0


def test_inpainter_aligns_a_panning_camera(shared_data: Path) -> None:
    panned = make_truth_clip(shared_data, pan=32)
    clean = TemporalFillInpainter().inpaint(np.asarray(panned.frames), np.asarray(panned.masks))
    psnr = _psnr_where_recoverable(clean, panned)
    print(f"\ninpainter, camera panning 32 px: PSNR {psnr:.2f} dB")
    assert psnr >= 30.0


def test_track_then_background_end_to_end(truth: TruthClip) -> None:
    frames = np.asarray(truth.frames)
    detection = Detection(0, tuple(float(v) for v in truth.boxes[0]), 1.0)
    track = TrackerGrabCutSegmenter().segment(frames, detection)
    clean = TemporalFillInpainter().inpaint(frames, track.masks)
    psnr = _psnr_where_recoverable(clean, truth)
    print(f"\nsegmenter masks -> inpainter: PSNR {psnr:.2f} dB")
    assert psnr >= 30.0


def test_detector_uses_the_prompt_box() -> None:
    frames = np.zeros((2, 40, 60, 3), dtype=np.uint8)
    detection = FirstFrameOrSaliencyDetector().detect(frames, Prompt("mug", box=(-5, 10, 30, 50)))
    assert detection == Detection(0, (0.0, 10.0, 30.0, 40.0), 1.0, "mug")
    with pytest.raises(StageRejected, match="empty"):
        FirstFrameOrSaliencyDetector().detect(frames, Prompt("mug", box=(70, 10, 90, 20)))


def test_detector_finds_the_product_without_a_box(shared_data: Path) -> None:
    image = np.asarray(Image.open(shared_data / "rembg" / "car-2.jpg").convert("RGB"))
    alpha = np.asarray(Image.open(shared_data / "rembg" / "car-2.out.png"))[..., 3] >= 128
    detection = FirstFrameOrSaliencyDetector().detect(image[None], Prompt("car"))
    height, width = alpha.shape
    found = box_to_mask(np.array(detection.box), height, width)
    overlap = iou(found, box_to_mask(masks_to_boxes(alpha), height, width))
    print(f"\ndetector without a box on car-2.jpg: box IoU {overlap:.3f}")
    assert detection.frame_index == 0 and overlap >= 0.8


def test_detector_rejects_a_featureless_frame() -> None:
    frames = np.full((1, 90, 160, 3), 120, dtype=np.uint8)
    frames[0] = cv2.GaussianBlur(frames[0], (5, 5), 0)
    with pytest.raises(StageRejected, match="no product found"):
        FirstFrameOrSaliencyDetector().detect(frames, Prompt("anything"))
