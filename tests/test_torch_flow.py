"""The torch Farneback flow against the OpenCV call it stands in for.

``farneback_flow_torch`` must give what ``farneback_flow`` (``cv2.calcOpticalFlowFarneback``
with pvtt's parameters) gives, or GPU and CPU builds would score clips differently. The
windows here are the temporal score's: uint8 greyscale, at most 128 px a side, a small
motion between them, down to the 8 px minimum (where OpenCV's border quirks show).
"""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np
import pytest
import torch

from pvtt.builder.backends.cpu_scorer import farneback_flow
from pvtt.builder.backends.torch_flow import farneback_flow_torch

# Measured against cv2 5.1.0 on these windows (3 pairs a size): mean |diff| 4e-7 px,
# p99 2e-6 px, max 2.3e-5 px, except 8 x 8: 1.3e-5, 1.5e-4, 2.5e-4 (float rounding).
# The bounds leave room for other builds' rounding and still catch algorithmic slips:
# without the level-0 [1, 2, 1] pre-blur the mean is ~1e-2 px and p99 ~0.2 px; without
# the border weights the mean is ~8e-2 px; without the < 10 px border quirk, 8 x 8
# windows are off by 0.75 px on average.
MEAN_TOL, P99_TOL, MAX_TOL = 1e-4, 1e-3, 1e-2


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread: the flow is ~900 small ops, and with two threads each one waits
    for the other (and for whatever shares the cores); measured 0.04 s vs 1.3 s per
    test on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _texture(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth random texture in [0, 255], larger than the window by 32 px a side."""
    noise = np.random.default_rng(seed).random((height + 64, width + 64)).astype(np.float32)
    tex = cv2.GaussianBlur(noise, (0, 0), 3.0)
    return (tex - tex.min()) / (tex.max() - tex.min()) * 255


def _window(image: np.ndarray, height: int, width: int) -> np.ndarray:
    return np.clip(image[32 : 32 + height, 32 : 32 + width] + 0.5, 0, 255).astype(np.uint8)


def _pair(height: int, width: int, seed: int, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(next, prev)`` windows: ``prev`` a crop of a texture, ``next`` the same crop of
    the texture moved by the affine ``matrix``."""
    tex = _texture(height, width, seed)
    moved = cv2.warpAffine(tex, matrix, (tex.shape[1], tex.shape[0]), flags=cv2.INTER_LINEAR)
    return _window(moved, height, width), _window(tex, height, width)


def _affine(seed: int) -> np.ndarray:
    """A small rotation, scale and shift about the texture's middle (a product's motion
    left over once the boxes are aligned)."""
    rng = np.random.default_rng(seed + 100)
    matrix = cv2.getRotationMatrix2D((80.0, 80.0), rng.uniform(-2, 2), 1 + rng.uniform(-0.03, 0.03))
    matrix[:, 2] += rng.uniform(-2.5, 2.5, 2)
    return matrix


def _torch_flow(next_grey: np.ndarray, prev_grey: np.ndarray) -> np.ndarray:
    out = farneback_flow_torch(torch.from_numpy(next_grey)[None], torch.from_numpy(prev_grey)[None])
    return out[0].numpy()


@pytest.mark.parametrize("shift", [(1.0, 0.0), (-2.0, 1.0), (0.5, -0.25), (1.3, 0.7)])
def test_recovers_a_translation_as_opencv_does(shift: tuple[float, float]) -> None:
    matrix = np.float32([[1, 0, shift[0]], [0, 1, shift[1]]])
    next_grey, prev_grey = _pair(128, 128, 0, matrix)
    ref, ours = farneback_flow(next_grey, prev_grey), _torch_flow(next_grey, prev_grey)
    assert ours.shape == ref.shape == (128, 128, 2) and ours.dtype == np.float32
    inner = (slice(16, -16), slice(16, -16))
    # next(x) = prev(x - shift), so the flow from next back to prev is -shift
    for flow in (ref, ours):
        np.testing.assert_allclose(np.median(flow[inner], axis=(0, 1)), -np.array(shift), atol=0.05)
    assert np.abs(ours - ref).max() < MAX_TOL


@pytest.mark.parametrize("size", [(128, 128), (57, 128), (128, 57), (40, 96), (8, 8)])
def test_matches_opencv_on_windows_with_affine_motion(size: tuple[int, int]) -> None:
    diffs = []
    for seed in range(3):
        next_grey, prev_grey = _pair(*size, seed, _affine(seed))
        diffs.append(
            np.abs(_torch_flow(next_grey, prev_grey) - farneback_flow(next_grey, prev_grey))
        )
    diff = np.concatenate([d.ravel() for d in diffs])
    assert diff.mean() < MEAN_TOL
    assert np.percentile(diff, 99) < P99_TOL
    assert diff.max() < MAX_TOL


def test_identical_frames_keep_opencvs_edge_flow() -> None:
    # At zero flow OpenCV takes the last row and column as leaving the image, so two
    # identical frames get a flow there; sampling that is off by a hair at integer
    # positions (grid_sample) misses it by 0.3 px through the first row's in/out test
    for size in [(128, 128), (57, 128), (8, 8)]:
        grey = _pair(*size, 0, _affine(0))[0]
        ref, ours = farneback_flow(grey, grey), _torch_flow(grey, grey)
        assert np.abs(ref).max() > 0.1
        assert np.abs(ours - ref).max() < 1e-4


def test_a_batch_gives_the_single_calls() -> None:
    pairs = [_pair(60, 100, seed, _affine(seed)) for seed in range(4)]
    nexts = torch.from_numpy(np.stack([p[0] for p in pairs]))
    prevs = torch.from_numpy(np.stack([p[1] for p in pairs]))
    batched = farneback_flow_torch(nexts, prevs)
    assert batched.shape == (4, 60, 100, 2)
    for i, (next_grey, prev_grey) in enumerate(pairs):
        np.testing.assert_allclose(batched[i].numpy(), _torch_flow(next_grey, prev_grey), atol=1e-6)


def test_float_frames_are_taken_as_their_values() -> None:
    next_grey, prev_grey = _pair(40, 96, 1, _affine(1))
    as_float = farneback_flow_torch(
        torch.from_numpy(next_grey).float()[None], torch.from_numpy(prev_grey).float()[None]
    )
    np.testing.assert_array_equal(as_float[0].numpy(), _torch_flow(next_grey, prev_grey))


def test_rejects_frames_of_different_shapes() -> None:
    with pytest.raises(ValueError, match="one shape"):
        farneback_flow_torch(torch.zeros(1, 8, 8), torch.zeros(1, 8, 9))
    with pytest.raises(ValueError, match="one shape"):
        farneback_flow_torch(torch.zeros(8, 8), torch.zeros(8, 8))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_gives_the_cpu_result() -> None:
    pairs = [_pair(128, 128, seed, _affine(seed)) for seed in range(4)]
    nexts = torch.from_numpy(np.stack([p[0] for p in pairs]))
    prevs = torch.from_numpy(np.stack([p[1] for p in pairs]))
    cpu = farneback_flow_torch(nexts, prevs)
    cuda = farneback_flow_torch(nexts.cuda(), prevs.cuda())
    assert cuda.device.type == "cuda" and cuda.dtype == torch.float32
    diff = (cuda.cpu() - cpu).abs()
    assert diff.mean() < 1e-5 and diff.max() < 1e-3
