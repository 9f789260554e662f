"""The compositor, the statistics scorer and the quality gate, on real footage.

A real cut-out (``rembg/car-3.out.png``) is inserted along a smooth path into real
footage (``sam2/04_coffee.mp4``); the clip is then damaged on purpose, one way at a
time, and the score meant to catch each damage must drop while the quality score still
ranks the undamaged clip first.
"""

from __future__ import annotations

import re
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pvtt.builder.backends.cpu_inserter import AlphaCompositeInserter
from pvtt.builder.backends.cpu_scorer import StatisticsScorer, grey_window
from pvtt.builder.illuminant import angle_deg, light_gains, luminance, relight, srgb_to_linear
from pvtt.builder.stages.cutout import cutout_aspect, trim_to_alpha
from pvtt.builder.stages.protocols import (
    Inserter,
    InsertionInput,
    Scorer,
    ScoringInput,
    StageRejected,
)
from pvtt.builder.stages.quality import DEFAULT_WEIGHTS, judge, quality_score
from pvtt.builder.synthesis import track_to_target
from pvtt.tools.bench.fidelity_truth import CaseSpec, generate_case, ideal_composite

FRAMES, SIZE = 24, (320, 180)


def load_rgba(path: Path) -> np.ndarray:
    return trim_to_alpha(
        cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGRA2RGBA)
    )


def box_path(aspect: float, width: float = 180.0) -> np.ndarray:
    """A smooth path: left to right across the table with a slow vertical sway."""
    t = np.arange(FRAMES)
    cx, cy = 110 + 3.0 * t, 120 + 6 * np.sin(t / 8)
    height = width / aspect
    return np.stack([cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2], 1).astype(
        np.float32
    )


@pytest.fixture(scope="module")
def footage(shared_data) -> np.ndarray:
    frames = []
    with av.open(str(shared_data / "sam2" / "04_coffee.mp4")) as container:
        for frame in container.decode(video=0):
            frames.append(
                cv2.resize(frame.to_ndarray(format="rgb24"), SIZE, interpolation=cv2.INTER_AREA)
            )
            if len(frames) == FRAMES:
                break
    return np.stack(frames)


@pytest.fixture(scope="module")
def clips(shared_data, footage) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Synthesized clips and the boxes the scorer is told, undamaged and damaged."""
    car3 = load_rgba(shared_data / "rembg" / "car-3.out.png")
    car2 = load_rgba(shared_data / "rembg" / "car-2.out.png")
    boxes = box_path(car3.shape[1] / car3.shape[0])
    inserter = AlphaCompositeInserter()
    synth = inserter.insert(InsertionInput(footage, car3, boxes, fps=30.0))

    # where the insert covers each frame, to damage the insert alone
    white = car3.copy()
    white[..., :3] = 255
    cover = (
        AlphaCompositeInserter(harmonize=0.0).insert(
            InsertionInput(np.zeros_like(footage), white, boxes)
        )[..., :1]
        / 255.0
    )

    def on_insert(damaged: np.ndarray) -> np.ndarray:
        return np.clip(synth * (1 - cover) + damaged * cover + 0.5, 0, 255).astype(np.uint8)

    flicker = 1 + 0.08 * np.where(np.arange(FRAMES) % 2 == 0, 1, -1)
    shaky = boxes + np.repeat(np.random.default_rng(0).normal(0, 1.5, (FRAMES, 2)), 2, axis=1)
    shaky = shaky.astype(np.float32)
    shifted = boxes + np.float32(0.4 * (boxes[0, 2] - boxes[0, 0])) * np.array(
        [1, 0, 1, 0], np.float32
    )
    return {
        "undamaged": (synth, boxes),
        "flicker": (on_insert(synth * flicker[:, None, None, None]), boxes),
        "jitter": (inserter.insert(InsertionInput(footage, car3, shaky, fps=30.0)), shaky),
        "cast": (on_insert(synth * np.array([1.0, 1.0, 0.85])), boxes),
        "wrong product": (inserter.insert(InsertionInput(footage, car2, boxes, fps=30.0)), boxes),
        "off track": (synth, shifted),
        "cutout": (car3, boxes),
    }


@pytest.fixture(scope="module")
def scores(clips, footage) -> dict[str, dict[str, float | None]]:
    scorer = StatisticsScorer()
    car3 = clips["cutout"][0]
    table = {
        name: scorer.score(ScoringInput(synth, footage, car3, boxes, fps=30.0))
        for name, (synth, boxes) in clips.items()
        if name != "cutout"
    }
    print("\n" + "".join(f"{n:14s} {s}\n" for n, s in table.items()))
    return table


# --- the inserter ---------------------------------------------------------------------


def square_cutout(colour: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    cutout = np.zeros((40, 60, 4), np.uint8)
    cutout[..., :3] = colour
    cutout[..., 3] = 255
    return cutout


def test_inserter_places_with_sub_pixel_accuracy_and_skips_nan_boxes() -> None:
    inserter = AlphaCompositeInserter(feather_px=0.0, harmonize=0.0)
    assert isinstance(inserter, Inserter) and inserter.info.kind == "inserter"
    background = np.full((3, 100, 120, 3), 20, np.uint8)
    boxes = np.array(
        [[10.3, 20.7, 40.3, 40.7], [50.25, 30.5, 90.25, 60.5], [np.nan] * 4], np.float32
    )
    out = inserter.insert(InsertionInput(background, square_cutout(), boxes))
    ys, xs = np.mgrid[:100, :120] + 0.5
    for t in range(2):
        cover = (out[t, ..., 0].astype(float) - 20) / 235
        x0, y0, x1, y1 = boxes[t]
        assert cover.sum() == pytest.approx((x1 - x0) * (y1 - y0), rel=2e-3)
        assert (cover * xs).sum() / cover.sum() == pytest.approx((x0 + x1) / 2, abs=0.02)
        assert (cover * ys).sum() / cover.sum() == pytest.approx((y0 + y1) / 2, abs=0.02)
    assert np.array_equal(out[2], background[2])


def test_inserter_feathers_inwards_without_a_halo() -> None:
    background = np.full((1, 80, 100, 3), 40, np.uint8)
    box = np.array([[20.0, 20.0, 80.0, 60.0]], np.float32)
    sharp = AlphaCompositeInserter(feather_px=0.0, harmonize=0.0).insert(
        InsertionInput(background, square_cutout(), box)
    )[0, 40, :, 0]
    soft = AlphaCompositeInserter(feather_px=2.0, harmonize=0.0).insert(
        InsertionInput(background, square_cutout(), box)
    )[0, 40, :, 0]
    assert np.array_equal(soft[:20], sharp[:20]) and np.all(soft[:20] == 40)
    assert soft[20] < sharp[20] and soft[21] < 255 and soft[30] == 255 == sharp[30]


def test_inserter_relights_part_of_the_way_to_the_scene_light() -> None:
    rng = np.random.default_rng(0)
    grey_scene = rng.integers(20, 236, (4, 120, 160, 1)).repeat(3, axis=3).astype(np.uint8)
    warm = light_gains(0.3, stops=-0.5)
    warm_scene = np.clip(relight(grey_scene, warm) + 0.5, 0, 255).astype(np.uint8)
    box = np.tile(np.array([[50.0, 40.0, 110.0, 80.0]], np.float32), (4, 1))
    grey = square_cutout((128, 128, 128))
    plain = AlphaCompositeInserter(harmonize=0.0).insert(InsertionInput(warm_scene, grey, box))
    assert np.array_equal(plain[0, 60, 80], [128, 128, 128])
    half = AlphaCompositeInserter(harmonize=0.5).insert(InsertionInput(warm_scene, grey, box))
    full = AlphaCompositeInserter(harmonize=1.0).insert(InsertionInput(warm_scene, grey, box))
    cast = [angle_deg(srgb_to_linear(out[0, 60, 80]), np.ones(3)) for out in (half, full)]
    truth = angle_deg(warm, np.ones(3))
    assert 0.35 * truth < cast[0] < 0.65 * truth and abs(cast[1] - truth) < 1.5
    assert abs(float(luminance(srgb_to_linear(full[0, 60, 80])))
               - float(luminance(srgb_to_linear(np.array([128, 128, 128]))))) < 0.02  # exposure kept
    on_grey = AlphaCompositeInserter(harmonize=1.0).insert(InsertionInput(grey_scene, grey, box))
    assert angle_deg(srgb_to_linear(on_grey[0, 60, 80]), np.ones(3)) < 1.0


def test_inserter_light_is_one_per_clip() -> None:
    rng = np.random.default_rng(3)
    levels = 120 + rng.choice([-40, 40], 30)
    background = np.broadcast_to(levels[:, None, None, None], (30, 90, 120, 3)).astype(np.uint8)
    background = background * np.array([1.0, 0.9, 0.7])  # warm, flickering in level only
    boxes = np.tile(np.array([[40.0, 30.0, 80.0, 60.0]], np.float32), (30, 1))
    job = InsertionInput(background.astype(np.uint8), square_cutout((200, 200, 200)), boxes, fps=30.0)
    inside = AlphaCompositeInserter().insert(job)[:, 45, 60].astype(int)
    assert (inside == inside[0]).all() and inside[0, 0] > inside[0, 2]


def test_inserter_contact_shadow_is_optional() -> None:
    background = np.full((1, 100, 120, 3), 200, np.uint8)
    box = np.array([[30.0, 20.0, 90.0, 60.0]], np.float32)
    cutout = square_cutout((90, 90, 90))
    cutout[30:, :, 3] = 0  # the object's bottom edge ends above the box's
    off = AlphaCompositeInserter().insert(InsertionInput(background, cutout, box))
    on = AlphaCompositeInserter(shadow=0.5).insert(InsertionInput(background, cutout, box))
    assert np.all(off[0, 62:, :] == 200)
    assert on[0, 61, 60, 0] < 170 and on[0, 61, 5, 0] == 200 and on[0, 95, 60, 0] == 200


def test_inserter_rejects_an_empty_cutout() -> None:
    background = np.zeros((1, 20, 20, 3), np.uint8)
    empty = np.zeros((10, 10, 4), np.uint8)
    with pytest.raises(StageRejected, match="empty cut-out"):
        AlphaCompositeInserter().insert(
            InsertionInput(background, empty, np.zeros((1, 4), np.float32))
        )


# --- the scorer on a real composite -----------------------------------------------------


def test_scores_are_in_range_and_overall_is_not_run(scores) -> None:
    assert isinstance(StatisticsScorer(), Scorer)
    for table in scores.values():
        assert table["overall"] is None
        assert all(0.0 <= table[name] <= 1.0 for name in ("identity", "temporal", "lighting"))


def test_flicker_and_jitter_drop_the_temporal_score(scores) -> None:
    clean = scores["undamaged"]["temporal"]
    assert clean >= 0.6
    assert scores["flicker"]["temporal"] < clean - 0.3
    assert scores["jitter"]["temporal"] < clean - 0.3


def test_a_colour_cast_drops_the_lighting_score(scores) -> None:
    clean = scores["undamaged"]["lighting"]
    assert clean >= 0.8
    assert scores["cast"]["lighting"] < clean - 0.3


def test_a_wrong_or_misplaced_product_drops_the_identity_score(scores) -> None:
    clean = scores["undamaged"]["identity"]
    assert clean >= 0.7
    assert scores["wrong product"]["identity"] < clean - 0.2
    assert scores["off track"]["identity"] < clean - 0.3


def test_quality_ranks_the_undamaged_clip_first_and_passes_it(scores) -> None:
    quality = {name: quality_score(table) for name, table in scores.items()}
    assert max(quality, key=quality.get) == "undamaged"
    assert judge(scores["undamaged"]).passed
    assert not judge(scores["off track"]).passed


def test_scorer_rejects_a_clip_without_boxes(footage, clips) -> None:
    nan = np.full((FRAMES, 4), np.nan, np.float32)
    with pytest.raises(StageRejected, match="no frame"):
        StatisticsScorer().score(ScoringInput(footage, footage, clips["cutout"][0], nan))


# --- the quality gate -------------------------------------------------------------------


def test_quality_score_renormalises_over_present_scores() -> None:
    assert DEFAULT_WEIGHTS == {"identity": 0.3, "temporal": 0.2, "lighting": 0.2, "overall": 0.3}
    all_four = {"identity": 0.9, "temporal": 0.5, "lighting": 0.7, "overall": 0.8}
    assert quality_score(all_four) == pytest.approx(0.27 + 0.1 + 0.14 + 0.24)
    three = {**all_four, "overall": None}
    assert quality_score(three) == pytest.approx((0.27 + 0.1 + 0.14) / 0.7)
    assert quality_score({"temporal": 0.4}) == pytest.approx(0.4)
    assert quality_score(
        three, {"identity": 1.0, "temporal": 0.0, "lighting": 0.0}
    ) == pytest.approx(0.9)


def test_judge_names_the_weakest_scores() -> None:
    verdict = judge({"identity": 0.8, "temporal": 0.41, "lighting": 0.66, "overall": None})
    assert not verdict.passed
    assert verdict.quality_score == pytest.approx((0.24 + 0.082 + 0.132) / 0.7)
    assert verdict.reject_reason == (
        "quality 0.648 < 0.700 (lowest: temporal 0.410, lighting 0.660)"
    )
    kept = judge({"identity": 0.8, "temporal": 0.75, "lighting": 0.7, "overall": None})
    assert kept.passed and kept.reject_reason is None
    close = judge({"identity": 0.7, "temporal": 0.6996, "lighting": 0.7})  # quality 0.69989
    assert close.reject_reason == "quality 0.699 < 0.700 (lowest: temporal 0.699)"


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.floats(0.0, 1.0), min_size=1, max_size=4),
    st.floats(0.01, 1.0),
)
def test_reject_reasons_have_one_format_and_hold(values: list[float], threshold: float) -> None:
    """Every number of every reason has three decimals, and the printed quality is below
    the printed threshold (0.69996 against 0.7 never reads 0.700 < 0.700)."""
    names = ("identity", "temporal", "lighting", "overall")
    verdict = judge(dict(zip(names, values, strict=False)), threshold=threshold)
    if verdict.passed:
        return
    numbers = re.findall(r"\d+\.\d+|\d+", verdict.reject_reason)
    assert all(re.fullmatch(r"\d\.\d{3}", n) for n in numbers), verdict.reject_reason
    shown, limit = (float(n) for n in numbers[:2])
    assert shown < limit and shown <= verdict.quality_score


def test_quality_rejects_bad_scores() -> None:
    with pytest.raises(ValueError, match="no weighted score"):
        quality_score({"identity": None, "overall": None})
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        quality_score({"identity": 1.2})
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        quality_score({"identity": float("nan")})
    with pytest.raises(ValueError, match="has no weight"):
        quality_score({"sharpness": 0.5})


def _has_torchvision() -> bool:
    try:
        import torchvision  # noqa: F401
    except (ImportError, RuntimeError):
        return False
    return True


@pytest.mark.gpu
@pytest.mark.skipif(not _has_torchvision(), reason="RAFT needs torchvision (absent beside CPU torch)")
def test_raft_flow_plugs_into_the_temporal_score(tmp_path: Path) -> None:
    import torch
    from torchvision.models.optical_flow import raft_small

    device = "cuda" if torch.cuda.is_available() else "cpu"
    checkpoint = tmp_path / "raft_small.pth"  # random weights: this tests the plumbing
    torch.save(raft_small(weights=None).state_dict(), checkpoint)
    scorer = StatisticsScorer(flow="raft", flow_weights=str(checkpoint), flow_device=device)
    rng = np.random.default_rng(0)
    prev = cv2.GaussianBlur(rng.integers(0, 255, (64, 80), dtype=np.uint8), (0, 0), 2)
    nxt = np.roll(prev, 3, axis=1)  # the content moves 3 px right
    flow = scorer.flow_fn(nxt, prev)
    assert flow.shape == (64, 80, 2) and flow.dtype == np.float32
    assert np.isfinite(flow).all()
    assert scorer.info.params["flow"] == "raft"


def test_fast_smooth_motion_keeps_its_temporal_score_and_jitter_does_not(shared_data: Path) -> None:
    """A product swinging 20-30 px a frame (the template's motion) is not jitter; 4 px of it
    on top is (1.5 px, which a slow insert shows, hides in a blurred fast one)."""
    case = generate_case(CaseSpec("fast-motion", 1), shared_data, frames=24)
    truth, cutout = case.clip, case.photo.cutout
    size = (truth.plate.shape[2], truth.plate.shape[1])
    boxes = track_to_target(truth.boxes, size, cutout_aspect(cutout), 5)
    scorer = StatisticsScorer()
    smooth = scorer.score(ScoringInput(ideal_composite(truth.plate, cutout, boxes),
                                       truth.plate, cutout, boxes, truth.fps))
    shaky = boxes + np.repeat(np.random.default_rng(0).normal(0, 4.0, (len(boxes), 2)), 2, axis=1)
    jittered = scorer.score(ScoringInput(ideal_composite(truth.plate, cutout, shaky),
                                         truth.plate, cutout, shaky, truth.fps))
    assert smooth["temporal"] > 0.65
    assert jittered["temporal"] < smooth["temporal"] - 0.3


def test_the_temporal_scores_grey_window_equals_the_whole_frames() -> None:
    """The flow windows are cut from a grey crop, not a grey frame: same pixels, at frame
    edges, corners and with centres off the frame (border replication) too."""
    rng = np.random.default_rng(7)
    for _ in range(400):
        h, w = (int(v) for v in rng.integers(12, 120, 2))
        frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        size = (int(rng.integers(8, 70)), int(rng.integers(8, 70)))
        centre = np.array([rng.uniform(-40, w + 40), rng.uniform(-40, h + 40)])
        whole = cv2.getRectSubPix(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), size,
                                  (float(centre[0]), float(centre[1])))
        np.testing.assert_array_equal(grey_window(frame, size, centre), whole)
