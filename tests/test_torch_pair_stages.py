"""The torch pair stages give what the CPU (OpenCV) pair stages give, on real media.

Every check compares a torch backend with its CPU counterpart on the same inputs: real
footage (``sam2/04_coffee.mp4``, shrunk) and real cut-outs (``rembg/car-*.out.png``)
along a moving path. Tolerances, stated here once:

- inserter: at most 1 level of 8 bits on any pixel, on at most 0.1 % of the pixels
  (float rounding of resampling weights lands a few ``x.5`` values on the other side);
- torch ops: each OpenCV op (resize, Gaussian blur, affine warp) to 1e-3 of 255.

These run on CPU torch, so CI covers them; the CUDA test repeats the inserter's check on
a GPU and skips without one.
"""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

from pvtt.builder.backends import torch_ops
from pvtt.builder.backends.cpu_inserter import AlphaCompositeInserter
from pvtt.builder.backends.torch_inserter import TorchCompositeInserter
from pvtt.builder.registry import create_backend
from pvtt.builder.stages.cutout import placement_matrix, trim_to_alpha
from pvtt.builder.stages.protocols import Inserter, InsertionInput
from pvtt.schemas.config import BackendConfig, ConfigError

FRAMES, SIZE = 10, (256, 144)
MAX_LEVELS, MAX_SHARE = 1, 1e-3


def load_rgba(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    return trim_to_alpha(cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA))


def moving_boxes(cutout: np.ndarray, width: float) -> np.ndarray:
    """Left to right with a sway, one frame without a box, fractional corners."""
    t = np.arange(FRAMES)
    cx, cy = 70 + 9.3 * t, 80 + 5 * np.sin(t / 3)
    height = width * cutout.shape[0] / cutout.shape[1]
    boxes = np.stack([cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2], 1)
    boxes[4] = np.nan
    return boxes.astype(np.float32)


@pytest.fixture(scope="module")
def footage(shared_data) -> np.ndarray:
    frames = []
    with av.open(str(shared_data / "sam2" / "04_coffee.mp4")) as container:
        for frame in container.decode(video=0):
            rgb = frame.to_ndarray(format="rgb24")
            frames.append(cv2.resize(rgb, SIZE, interpolation=cv2.INTER_AREA))
            if len(frames) == FRAMES:
                break
    return np.stack(frames)


@pytest.fixture(scope="module")
def cutouts(shared_data) -> dict[str, np.ndarray]:
    return {
        name: load_rgba(shared_data / "rembg" / f"{name}.out.png") for name in ("car-2", "car-3")
    }


def assert_frames_match(cpu: np.ndarray, other: np.ndarray, background: np.ndarray) -> None:
    """Within the stated tolerance, and the insert changed the clip (the check can fail)."""
    assert other.shape == cpu.shape and other.dtype == np.uint8
    diff = np.abs(cpu.astype(np.int16) - other.astype(np.int16))
    assert diff.max() <= MAX_LEVELS, f"{int(diff.max())} levels apart"
    assert (diff > 0).mean() <= MAX_SHARE, f"{(diff > 0).mean():.2%} of pixels differ"
    changed = (np.abs(cpu.astype(np.int16) - background).max(axis=-1) > 8).mean()
    assert changed > 0.002, f"the insert changed only {changed:.2%} of the pixels"


@pytest.mark.parametrize("name", ["car-2", "car-3"])
@pytest.mark.parametrize(
    ("width", "params"),
    [
        (90.0, {}),  # the cut-out shrinks: OpenCV's area weights
        (30.0, {"harmonize": 0.0}),  # tiny, no relighting
        (130.0, {"shadow": 0.5, "feather_px": 1.7}),  # contact shadow, wider feather
        (900.0, {"feather_px": 0.0}),  # grows past the frame: linear weights, clipped regions
    ],
)
def test_torch_inserter_matches_the_cpu_inserter(footage, cutouts, name, width, params) -> None:
    cutout = cutouts[name]
    job = InsertionInput(footage, cutout, moving_boxes(cutout, width))
    cpu = AlphaCompositeInserter(**params).insert(job)
    torch_out = TorchCompositeInserter(**params).insert(job)
    assert_frames_match(cpu, torch_out, footage)
    np.testing.assert_array_equal(torch_out[4], footage[4])  # the frame without a box


def test_several_pairs_in_one_batch_equal_one_at_a_time(footage, cutouts) -> None:
    small = np.ascontiguousarray(footage[:, :100, :180])  # another frame size in the batch
    jobs = [
        InsertionInput(footage, cutouts["car-3"], moving_boxes(cutouts["car-3"], 110.0)),
        InsertionInput(small, cutouts["car-2"], moving_boxes(cutouts["car-2"], 60.0)),
        InsertionInput(footage, cutouts["car-2"], np.full((FRAMES, 4), np.nan, np.float32)),
    ]
    inserter = TorchCompositeInserter()
    batched = inserter.insert_many(jobs)
    for job, out in zip(jobs[:2], batched, strict=False):
        np.testing.assert_array_equal(out, inserter.insert(job))
        assert_frames_match(AlphaCompositeInserter().insert(job), out, job.background)
    np.testing.assert_array_equal(batched[2], footage)  # no box: copied


def test_the_registry_builds_the_torch_inserter_on_the_build_device() -> None:
    config = BackendConfig(backend="torch", params={"shadow": 0.3})
    inserter = create_backend("inserter", config, device="cpu")
    assert isinstance(inserter, TorchCompositeInserter) and isinstance(inserter, Inserter)
    assert inserter.device == torch.device("cpu") and inserter.info.params["shadow"] == 0.3
    with pytest.raises(ConfigError, match="bad params"):
        create_backend("inserter", BackendConfig(backend="torch", params={"sigma": 1}), "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_torch_inserter_on_cuda_matches_the_cpu_inserter(footage, cutouts) -> None:
    cutout = cutouts["car-3"]
    job = InsertionInput(footage, cutout, moving_boxes(cutout, 120.0))
    out = TorchCompositeInserter(shadow=0.4, device="cuda").insert(job)
    assert_frames_match(AlphaCompositeInserter(shadow=0.4).insert(job), out, footage)


# --- the OpenCV ops they are built from ------------------------------------------------


@pytest.mark.parametrize(
    ("dst", "area"),
    [((20, 15), True), ((53, 37), True), ((30, 40), True), ((17, 9), True), ((100, 70), False)],
)
def test_resize_weights_are_opencvs(dst, area) -> None:
    image = np.random.default_rng(0).random((37, 53)).astype(np.float32) * 255
    wy, wx = torch_ops.resize_weights((53, 37), dst, area)
    expected = cv2.resize(image, dst, interpolation=cv2.INTER_AREA if area else cv2.INTER_LINEAR)
    np.testing.assert_allclose(wy @ image @ wx.T, expected, atol=1e-3)


def test_gaussian_blur_reflects_at_each_items_own_edge() -> None:
    rng = np.random.default_rng(1)
    images = [rng.random(shape).astype(np.float32) * 255 for shape in ((37, 53), (12, 9))]
    batch = torch.zeros((2, 40, 60))
    for i, image in enumerate(images):
        batch[i, : image.shape[0], : image.shape[1]] = torch.from_numpy(image)
    heights, widths = torch.tensor([37, 12]), torch.tensor([53, 9])
    blurred = torch_ops.gaussian_blur(batch, 2.3, heights, widths).numpy()
    for i, image in enumerate(images):
        h, w = image.shape
        np.testing.assert_allclose(
            blurred[i, :h, :w], cv2.GaussianBlur(image, (0, 0), 2.3), atol=1e-3
        )


def test_warp_affine_is_opencvs_placement() -> None:
    source = np.random.default_rng(2).random((12, 17)).astype(np.float32) * 255
    matrix = placement_matrix(17, 12, np.array([3.3, 4.7, 27.9, 21.2]), origin=(1, 2))
    expected = cv2.warpAffine(source, matrix, (31, 25), flags=cv2.INTER_LINEAR)
    warped = torch_ops.warp_affine(
        torch.from_numpy(source)[None, None],
        torch.tensor([[12, 17]]),
        torch_ops.inverse_placement(matrix[None]),
        25,
        31,
    )
    np.testing.assert_allclose(warped[0, 0].numpy(), expected, atol=1e-3)
