"""The lighting score: the colour and level of the light, estimated and compared."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from pvtt.builder.backends.cpu_scorer import StatisticsScorer
from pvtt.builder.illuminant import (
    angle_deg,
    light_gains,
    linear_to_srgb,
    luminance,
    relight,
    scene_light,
    shades_of_grey,
    srgb_to_linear,
)
from pvtt.tools.bench.fidelity_lighting import auc, lighting_line, lighting_probe, separation
from pvtt.tools.bench.fidelity_truth import CaseSpec, generate_case, relit_cutout


def test_srgb_round_trip_and_relight() -> None:
    values = np.arange(256, dtype=np.float32)
    assert np.allclose(linear_to_srgb(srgb_to_linear(values)), values, atol=0.01)
    grey = np.full((2, 2, 3), 128, np.uint8)
    half = relight(grey, np.full(3, 0.5))
    assert np.allclose(srgb_to_linear(half), 0.5 * srgb_to_linear(grey), atol=1e-3)
    assert relight(np.full((1, 1, 3), 250.0), np.full(3, 4.0)).max() == pytest.approx(255.0)


def test_light_gains_have_the_level_and_cast_asked() -> None:
    white = light_gains(0.0)
    assert angle_deg(white, np.ones(3)) == pytest.approx(0.0, abs=1e-6)
    warm = light_gains(0.25, stops=-1.0)
    assert float(luminance(warm)) == pytest.approx(0.5)
    assert 9.0 < angle_deg(warm, np.ones(3)) < 13.0
    assert warm[0] > warm[1] > warm[2]
    assert light_gains(-0.25)[2] > light_gains(-0.25)[0]


def test_shades_of_grey_spans_grey_world_to_white_patch() -> None:
    pixels = np.array([[0.2, 0.4, 0.6], [0.6, 0.4, 0.2]])
    assert np.allclose(shades_of_grey(pixels, 1.0), [0.4, 0.4, 0.4])
    assert np.allclose(shades_of_grey(pixels, 64.0), [0.6, 0.4, 0.6], atol=0.01)
    with pytest.raises(ValueError, match="no pixels"):
        shades_of_grey(np.zeros((0, 3)))


def test_scene_light_ignores_clipped_pixels() -> None:
    frames = np.zeros((2, 32, 32, 3), np.uint8)
    frames[:, :16] = (200, 160, 120)  # a warm-lit wall
    frames[:, 16:] = 255  # a window clipped to white
    estimate, clipped = scene_light(frames, 8.0)
    assert angle_deg(estimate, srgb_to_linear(np.array([200, 160, 120]))) < 0.5
    assert clipped == pytest.approx(0.5)


@pytest.mark.parametrize("seed", [1, 4, 6])
def test_a_photo_pasted_as_is_under_dim_coloured_light_scores_low(
    shared_data: Path, seed: int
) -> None:
    case = generate_case(CaseSpec("relit", seed), shared_data, size=(192, 108), frames=8)
    assert float(luminance(case.clip.light)) < 0.8  # dimmed: brighter scenes clip, see README
    scores = lighting_probe(case, StatisticsScorer(frames=4), smoothing=5)
    assert scores["lighting_mismatch"] == "pasted as is"
    assert scores["lighting_matched"] > scores["lighting_mismatched"] + 0.3


def test_a_cast_the_scene_lacks_scores_low_and_the_scene_light_high(shared_data: Path) -> None:
    case = generate_case(CaseSpec("baseline", 2), shared_data, size=(192, 108), frames=8)
    assert case.notes["scene_light"] == "white"
    scores = lighting_probe(case, StatisticsScorer(frames=4), smoothing=5)
    assert scores["lighting_matched"] > 0.8
    assert scores["lighting_mismatched"] < 0.5


def test_relit_cutout_keeps_alpha_and_white_light_is_a_no_op() -> None:
    cutout = np.zeros((4, 4, 4), np.uint8)
    cutout[..., :3], cutout[..., 3] = 180, np.arange(16).reshape(4, 4) * 16
    assert relit_cutout(cutout, np.ones(3)) is cutout
    warm = relit_cutout(cutout, light_gains(0.3))
    assert np.array_equal(warm[..., 3], cutout[..., 3])
    assert warm[0, 0, 0] > warm[0, 0, 2]


def test_auc_and_the_summary_line() -> None:
    assert auc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert auc([0.5], [0.5]) == 0.5
    assert auc([], [0.1]) is None
    results = [
        {"metrics": {"lighting_matched": 0.9, "lighting_mismatched": 0.2,
                     "lighting_mismatch": "cast"}, "scores": {"lighting": 1.0}},
        {"metrics": {"lighting_matched": None, "lighting_mismatched": None,
                     "lighting_mismatch": None}, "scores": {"lighting": 0.4}},
    ]
    figures = separation(results)
    assert figures["cases"] == 1 and figures["auc"] == 1.0
    assert figures["pairs"] == 2 and figures["pairs_at_one"] == 1
    assert math.isclose(figures["pairs_median"], 0.7)
    line = lighting_line(figures)
    assert "AUC 1.00" in line and "cast 0.20" in line and "1 of 2 at 1.00" in line
