"""The torch pair stages give what the CPU (OpenCV) pair stages give, on real media.

Every check compares a torch backend with its CPU counterpart on the same inputs: real
footage (``sam2/04_coffee.mp4``, shrunk) and real cut-outs (``rembg/car-*.out.png``)
along a moving path. Tolerances, stated here once:

- inserter: at most 1 level of 8 bits on any pixel, on at most 0.1 % of the pixels
  (float rounding of resampling weights lands a few ``x.5`` values on the other side);
- scorer: identity and lighting within 1e-3 of the CPU scorer's (absolute), temporal
  equal (it is the CPU scorer's own Farneback path);
- torch ops: each OpenCV op (resize, Gaussian blur, affine warp) to 1e-3 of 255.

These run on CPU torch, so CI covers them; the CUDA test repeats the inserter's check on
a GPU and skips without one.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

from pvtt.builder.backends import torch_inserter, torch_ops
from pvtt.builder.backends.cpu_inserter import AlphaCompositeInserter
from pvtt.builder.backends.cpu_scorer import StatisticsScorer
from pvtt.builder.backends.torch_inserter import TorchCompositeInserter
from pvtt.builder.backends.torch_scorer import TorchStatisticsScorer
from pvtt.builder.demo import PRODUCTS, draw_product
from pvtt.builder.registry import backend_weights, create_backend
from pvtt.builder.stages.cutout import placement_matrix, trim_to_alpha
from pvtt.builder.stages.protocols import (
    BatchReporting,
    Inserter,
    InsertionInput,
    Scorer,
    ScoringInput,
    StageRejected,
)
from pvtt.schemas.config import BackendConfig, ConfigError

FRAMES, SIZE = 10, (256, 144)
MAX_LEVELS, MAX_SHARE = 1, 1e-3
SCORE_TOLERANCE = 1e-3


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
        alone = inserter.insert(job)
        assert np.abs(out.astype(np.int16) - alone).max() <= MAX_LEVELS  # float sums batched
        assert_frames_match(AlphaCompositeInserter().insert(job), out, job.background)
    np.testing.assert_array_equal(batched[2], footage)  # no box: copied


def test_batches_of_bounded_memory_give_the_same_clips(footage, cutouts, monkeypatch) -> None:
    jobs = [
        InsertionInput(footage, cutouts["car-3"], moving_boxes(cutouts["car-3"], 110.0)),
        InsertionInput(footage, cutouts["car-2"], moving_boxes(cutouts["car-2"], 60.0)),
    ]
    inserter = TorchCompositeInserter()
    whole = inserter.insert_many(jobs)
    plans = [inserter._plan(job.boxes, footage.shape[1:3]) for job in jobs]
    rois = np.concatenate([p.roi for p in plans])
    largest = int((rois[:, 3] - rois[:, 1]).max() * (rois[:, 2] - rois[:, 0]).max())
    budget = 4 * largest  # four regions a batch: 9 + 9 items split, one batch holds both pairs
    parts = torch_inserter.batches(plans, budget)
    assert len(parts) > 2 and sum(len(p.frames) for b in parts for _, p in b) == sum(len(p.frames) for p in plans)
    assert any(len({i for i, _ in b}) == 2 for b in parts)
    monkeypatch.setattr(torch_inserter, "BATCH_PIXELS", budget)
    for out, expected in zip(inserter.insert_many(jobs), whole, strict=True):
        assert np.abs(out.astype(np.int16) - expected).max() <= MAX_LEVELS


def test_one_clip_is_uploaded_once_and_dropped_with_it() -> None:
    resident = torch_inserter._ResidentClips(torch.device("meta"), keep=2)
    clip = np.zeros((2, 4, 4, 3), np.uint8)
    first = resident.get(clip)
    assert resident.get(clip) is first and first.device.type == "meta"
    others = [np.zeros((2, 4, 4, 3), np.uint8) for _ in range(2)]
    for other in others:
        resident.get(other)
    assert resident.get(clip) is not first  # the oldest of three went (keep=2)
    del clip, others, other
    assert not resident._clips  # each copy goes with its host array


def test_frames_already_on_the_device_stay_there(footage, cutouts) -> None:
    job = InsertionInput(footage, cutouts["car-2"], moving_boxes(cutouts["car-2"], 100.0))
    inserter = TorchCompositeInserter()
    expected = inserter.insert(job)
    resident = torch.from_numpy(footage.copy())
    (out,) = inserter.insert_many([InsertionInput(resident, job.cutout, job.boxes)])
    assert isinstance(out, torch.Tensor) and out.dtype == torch.uint8
    np.testing.assert_array_equal(out.numpy(), expected)
    np.testing.assert_array_equal(resident.numpy(), footage)  # the input is left as it was
    elsewhere = InsertionInput(
        torch.empty(footage.shape, dtype=torch.uint8, device="meta"), job.cutout, job.boxes
    )
    with pytest.raises(ValueError, match="background is on meta"):
        inserter.insert_many([elsewhere])


def test_pairs_from_threads_batch_and_a_bad_pair_spoils_no_other(footage, cutouts) -> None:
    empty = cutouts["car-3"].copy()
    empty[..., 3] = 0
    jobs = [
        InsertionInput(footage, cutouts[name], moving_boxes(cutouts[name], width))
        for name, width in (("car-3", 80.0), ("car-2", 120.0), ("car-3", 50.0), ("car-2", 70.0))
    ]
    jobs.insert(2, InsertionInput(footage, empty, jobs[0].boxes))
    inserter = TorchCompositeInserter(batch_pairs=3)

    def insert(job: InsertionInput) -> np.ndarray | Exception:
        try:
            return inserter.insert(job)
        except StageRejected as exc:
            return exc

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(insert, jobs))
    assert isinstance(results.pop(2), StageRejected)
    del jobs[2]
    for job, out in zip(jobs, results, strict=True):
        assert_frames_match(AlphaCompositeInserter().insert(job), out, footage)
    assert isinstance(inserter, BatchReporting)
    stats = inserter.batch_stats()["torch-alpha-composite"]
    assert stats["calls"] == stats["items"] == 5 and stats["largest"] <= 3


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


# --- the scorer -------------------------------------------------------------------------


def flat_cutout() -> np.ndarray:
    """A drawn product of flat colours (the demo's): its resized colours sit on whole
    levels, where the identity score's 8-bit histogram is most sensitive to the last bit."""
    rgb, mask = draw_product(next(p for p in PRODUCTS if p.id == "mug-blue"), 170)
    return trim_to_alpha(np.dstack([rgb, mask.astype(np.uint8) * 255]))


def scoring_cases(footage, cutouts) -> list[ScoringInput]:
    """Undamaged inserts of several sizes, a flat-coloured product, and one pasted under
    another light (lighting < 1)."""
    cases = []
    flat = flat_cutout()
    boxes = moving_boxes(flat, 95.0)
    synth = AlphaCompositeInserter().insert(InsertionInput(footage, flat, boxes))
    cases.append(ScoringInput(synth, footage, flat, boxes))
    for name, width in (("car-3", 120.0), ("car-2", 40.0), ("car-2", 220.0)):
        boxes = moving_boxes(cutouts[name], width)
        synth = AlphaCompositeInserter().insert(InsertionInput(footage, cutouts[name], boxes))
        cases.append(ScoringInput(synth, footage, cutouts[name], boxes))
    warm = np.clip(footage * np.array([1.0, 0.8, 0.55]), 0, 255).astype(np.uint8)
    boxes = moving_boxes(cutouts["car-3"], 150.0)
    pasted = AlphaCompositeInserter(harmonize=0.0).insert(
        InsertionInput(warm, cutouts["car-3"], boxes)
    )
    cases.append(ScoringInput(pasted, warm, cutouts["car-3"], boxes))
    return cases


TEMPORAL_TOLERANCE = 1e-3
"""The temporal score with the flows on the device, against OpenCV's flows, on textured
products (measured on these cases: at most 4e-6; the torch flow is OpenCV's within float
rounding). Over a flat-coloured product the flow is ill-posed and the score moves by up
to ``FLAT_TEMPORAL_TOLERANCE`` (0.029 measured on the demo's mug)."""
FLAT_TEMPORAL_TOLERANCE = 0.05


def assert_scores_match(cpu: dict, other: dict, temporal_tolerance: float = 0.0) -> None:
    assert other.keys() == cpu.keys() and other["overall"] is None
    for key in ("identity", "lighting"):
        assert abs(other[key] - cpu[key]) <= SCORE_TOLERANCE, (key, cpu[key], other[key])
    assert abs(other["temporal"] - cpu["temporal"]) <= temporal_tolerance


def test_temporal_flows_on_the_device_match_opencvs(footage, cutouts) -> None:
    """``flow_on_device``: every window of a pair through the torch Farneback, one batch a
    window size (here on CPU torch, as on CUDA by default)."""
    cases = scoring_cases(footage, cutouts)  # the first is the flat-coloured mug
    scorer = TorchStatisticsScorer(flow_on_device=True)
    batches = []
    device_flows = scorer._device_flows
    scorer.cpu.flows_fn = lambda pairs: batches.append(len(pairs)) or device_flows(pairs)
    got = scorer.score_many(cases)
    assert_scores_match(StatisticsScorer().score(cases[0]), got[0], FLAT_TEMPORAL_TOLERANCE)
    for case, scores in zip(cases[1:], got[1:], strict=True):
        assert_scores_match(StatisticsScorer().score(case), scores, TEMPORAL_TOLERANCE)
    assert len(batches) == len(cases) and min(batches) > 1  # a pair's windows in one call
    default = TorchStatisticsScorer()
    assert default.cpu.flows_fn == default.cpu._each_flow  # OpenCV's, one window at a time
    assert scorer.info.params["flow_on_device"] and "flow_on_device" not in default.info.params


def test_torch_scorer_matches_the_cpu_scorer_and_batches(footage, cutouts) -> None:
    cases = scoring_cases(footage, cutouts)
    cpu = [StatisticsScorer().score(case) for case in cases]
    assert min(s["lighting"] for s in cpu) < 0.9  # the pasted case tests the lighting score
    scorer = TorchStatisticsScorer()
    batched = scorer.score_many(cases)
    for case, expected, got in zip(cases, cpu, batched, strict=True):
        assert_scores_match(expected, got)
        # float sums batched differently: a last bit can move a pixel to the next level
        assert scorer.score(case) == pytest.approx(got, abs=SCORE_TOLERANCE)


def test_scores_from_threads_batch_and_a_rejected_pair_spoils_no_other(footage, cutouts) -> None:
    cases = scoring_cases(footage, cutouts)
    nan = np.full((FRAMES, 4), np.nan, np.float32)
    cases.insert(1, ScoringInput(footage, footage, cutouts["car-3"], nan))
    del cases[-1]  # four pairs and a rejected one: enough to batch
    scorer = TorchStatisticsScorer(batch_pairs=3)

    def score(case: ScoringInput) -> dict | Exception:
        try:
            return scorer.score(case)
        except StageRejected as exc:
            return exc

    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(score, cases))
    assert isinstance(results.pop(1), StageRejected)
    del cases[1]
    for case, got in zip(cases, results, strict=True):
        assert_scores_match(StatisticsScorer().score(case), got)
    stats = scorer.batch_stats()["torch-statistics"]
    assert stats["calls"] == stats["items"] == 5 and stats["largest"] <= 3


def test_torch_scorer_rejects_what_the_cpu_scorer_rejects(footage, cutouts) -> None:
    nan = np.full((FRAMES, 4), np.nan, np.float32)
    with pytest.raises(StageRejected, match="no frame of the synthesized clip has a box"):
        TorchStatisticsScorer().score(ScoringInput(footage, footage, cutouts["car-3"], nan))
    off = np.tile(np.float32([[-400, -300, -200, -100]]), (FRAMES, 1))
    with pytest.raises(StageRejected, match="off the frame"):
        TorchStatisticsScorer().score(ScoringInput(footage, footage, cutouts["car-3"], off))


def test_the_registry_builds_the_torch_scorer_and_asks_for_rafts_weights() -> None:
    scorer = create_backend("scorer", BackendConfig(backend="torch", params={"frames": 4}), "cpu")
    assert isinstance(scorer, TorchStatisticsScorer) and isinstance(scorer, Scorer)
    assert scorer.info.params["frames"] == 4
    raft = BackendConfig(backend="torch", params={"flow": "raft", "flow_weights": "raft.pt"})
    assert backend_weights("scorer", raft) == ["raft.pt"]
    with pytest.raises(ConfigError, match="bad params"):
        create_backend("scorer", BackendConfig(backend="torch", params={"sigma": 1}), "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_torch_scorer_on_cuda_matches_the_cpu_scorer(footage, cutouts) -> None:
    cases = scoring_cases(footage, cutouts)
    got = TorchStatisticsScorer(device="cuda").score_many(cases)
    for case, scores in zip(cases, got, strict=True):
        assert_scores_match(StatisticsScorer().score(case), scores)
    flows = TorchStatisticsScorer(device="cuda", flow_on_device=True).score_many(cases)
    for case, scores in zip(cases[1:], flows[1:], strict=True):  # textured products
        assert_scores_match(StatisticsScorer().score(case), scores, TEMPORAL_TOLERANCE)


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
