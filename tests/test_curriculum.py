"""Curriculum schedules and the curriculum's epoch order: pacing, mix, quality floors, resume."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pvtt.loaders.curriculum import (
    DEFAULT_PATH,
    DIFFICULTIES,
    PACINGS,
    CurriculumSchedule,
    curriculum_order,
)
from pvtt.loaders.plan import SamplePlan

LEVELS = np.arange(len(DIFFICULTIES))


def as_vector(mix: dict[str, float]) -> np.ndarray:
    return np.array([mix.get(d, 0.0) for d in DIFFICULTIES]) / sum(mix.values())


def balanced_levels(per_level: int, seed: int = 0) -> np.ndarray:
    levels = np.repeat(LEVELS, per_level)
    return np.random.default_rng(seed).permutation(levels).astype(np.int8)


def mix_outliers(
    order: np.ndarray,
    levels: np.ndarray,
    schedule: CurriculumSchedule,
    samples_per_step: int,
    window_steps: int,
    sigmas: float = 4.0,
) -> list[tuple[int, str, int, float]]:
    """Windows and difficulties whose observed count is off the schedule by > ``sigmas`` sd.

    Each position is a Bernoulli draw with the step's weight, so a window's count
    of a difficulty has mean sum(w) and variance sum(w (1 - w)).
    """
    steps = np.arange(len(order)) // samples_per_step
    weights = schedule.weights_table(steps)
    drawn = levels[order]
    bad = []
    for lo in range(0, len(order), window_steps * samples_per_step):
        window = slice(lo, lo + window_steps * samples_per_step)
        w = weights[window]
        for lv, name in enumerate(DIFFICULTIES):
            mean = w[:, lv].sum()
            sd = np.sqrt((w[:, lv] * (1 - w[:, lv])).sum())
            seen = int((drawn[window] == lv).sum())
            if abs(seen - mean) > sigmas * sd + 1:
                bad.append((lo, name, seen, float(mean)))
    return bad


@pytest.mark.parametrize("pacing", PACINGS)
def test_weights_run_the_path_from_easy_to_the_target_mix(pacing: str) -> None:
    total = 1000
    sched = CurriculumSchedule(pacing=pacing, total_steps=total)
    assert sched.weights(0) == pytest.approx(
        dict(zip(DIFFICULTIES, as_vector(DEFAULT_PATH[0]), strict=True))
    )
    target = dict(zip(DIFFICULTIES, as_vector(DEFAULT_PATH[-1]), strict=True))
    assert sched.weights(total) == pytest.approx(target)
    assert sched.weights(5 * total) == pytest.approx(target)
    table = sched.weights_table(np.arange(0, total + 1))
    assert np.allclose(table.sum(axis=1), 1) and (table >= 0).all()
    mean_level = table @ LEVELS
    assert (np.diff(mean_level) >= -1e-12).all()  # never gets easier
    assert (np.diff(table[:, 0]) <= 1e-12).all()  # easy share only shrinks
    assert mean_level[-1] > mean_level[0] + 1.5
    # Expert opens only in the last leg of the default path.
    first_expert = int(np.argmax(table[:, 3] > 0))
    assert sched.progress(first_expert) > 2 / 3 - 1e-9


def test_pacings_have_their_shapes() -> None:
    total = 100
    lin, root, expo, step = (
        CurriculumSchedule(p, total) for p in ("linear", "root", "exponential", "step")
    )
    assert lin.progress(25) == pytest.approx(0.25)
    assert root.progress(25) == pytest.approx(0.5)
    assert expo.progress(50) == pytest.approx(np.expm1(2.5) / np.expm1(5))
    assert root.progress(50) > lin.progress(50) > expo.progress(50)
    # Step pacing with stages == len(path): each stage is exactly one mix of the path.
    mixes = [tuple(np.round(step.weights_table(np.array([s]))[0], 12)) for s in range(total + 1)]
    assert len(set(mixes)) == 4
    for stage in range(4):
        s = stage * total // 4
        assert step.weights_table(np.array([s]))[0] == pytest.approx(as_vector(DEFAULT_PATH[stage]))
        if stage:
            assert mixes[s - 1] != mixes[s]
    custom = CurriculumSchedule(lambda t: 3 * t - 1, total)
    assert custom.progress(0) == 0.0 and custom.progress(100) == 1.0
    assert custom.progress(50) == pytest.approx(0.5)
    two = CurriculumSchedule("linear", 10, path=[{"easy": 1}, {"Expert": 2}])
    assert two.weights(5) == pytest.approx({"easy": 0.5, "medium": 0, "hard": 0, "expert": 0.5})


def test_schedule_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="pacing 'cosine'"):
        CurriculumSchedule("cosine")
    with pytest.raises(ValueError, match="total_steps"):
        CurriculumSchedule(total_steps=0)
    with pytest.raises(ValueError, match="unknown difficulty 'trivial'"):
        CurriculumSchedule(path=[{"trivial": 1}, {"easy": 1}])
    with pytest.raises(ValueError, match="needs a positive share"):
        CurriculumSchedule(path=[{"easy": 0}, {"hard": 1}])
    with pytest.raises(ValueError, match="at least 2 mixes"):
        CurriculumSchedule(path=[{"easy": 1}])
    with pytest.raises(ValueError, match="breakpoint"):
        CurriculumSchedule(min_quality=[(0.5, 1.5)])
    with pytest.raises(ValueError, match="non-finite"):
        CurriculumSchedule(lambda t: float("nan"), 10).weights(3)


def test_min_quality_is_piecewise_constant_over_progress() -> None:
    sched = CurriculumSchedule("linear", 100, min_quality=[(0.75, 0.8), (0.25, 0.5)])
    assert [sched.min_quality(s) for s in (0, 24, 25, 74, 75, 100, 500)] == [
        None,
        None,
        0.5,
        0.5,
        0.8,
        0.8,
        0.8,
    ]
    assert CurriculumSchedule(min_quality=0.3).min_quality(0) == 0.3
    assert CurriculumSchedule().min_quality(10) is None


@pytest.mark.parametrize(("pacing", "seed"), [("linear", 0), ("root", 1), ("step", 2)])
def test_drawn_mix_follows_the_schedule_per_window(pacing: str, seed: int) -> None:
    levels = balanced_levels(150, seed)
    sched = CurriculumSchedule(pacing, total_steps=100)
    order = curriculum_order(
        levels, sched, seed=seed, epoch=0, num_positions=3200, samples_per_step=32
    )
    assert mix_outliers(order, levels, sched, 32, window_steps=10) == []
    # The check has teeth: the same draws judged against another schedule fail it.
    other = CurriculumSchedule("exponential" if pacing != "exponential" else "linear", 100)
    assert mix_outliers(order, levels, other, 32, window_steps=10)


def test_difficulties_without_samples_are_renormalised_away() -> None:
    levels = np.array([0, 1, 1, 2, 0, 2, 1], dtype=np.int8)  # no expert
    sched = CurriculumSchedule("linear", 10)
    order = curriculum_order(levels, sched, seed=0, epoch=0, num_positions=400, samples_per_step=4)
    late = levels[order[300:]]
    assert set(late.tolist()) == {0, 1, 2}
    hard_only = np.array([2, 3, 3], dtype=np.int8)
    with pytest.raises(ValueError, match=r"at step 0 .* \['hard', 'expert'\]"):
        curriculum_order(hard_only, sched, seed=0, epoch=0, num_positions=5, samples_per_step=1)
    with pytest.raises(ValueError, match="selection is empty"):
        curriculum_order(
            np.array([], dtype=np.int8), sched, seed=0, epoch=0, num_positions=1, samples_per_step=1
        )
    assert (
        curriculum_order(
            hard_only, sched, seed=0, epoch=0, num_positions=0, samples_per_step=1
        ).size
        == 0
    )


def test_each_difficulty_is_used_up_before_it_repeats() -> None:
    levels = balanced_levels(5)
    sched = CurriculumSchedule("linear", 1, path=[{"easy": 1, "hard": 1}, {"easy": 1, "hard": 1}])
    order = curriculum_order(levels, sched, seed=3, epoch=0, num_positions=400, samples_per_step=1)
    for lv in (0, 2):
        drawn = order[levels[order] == lv]
        pool = set(np.flatnonzero(levels == lv).tolist())
        for cycle in range(len(drawn) // 5):
            assert set(drawn[cycle * 5 : cycle * 5 + 5].tolist()) == pool
    assert set(levels[order].tolist()) == {0, 2}


def test_quality_floor_skips_low_quality_pairs_once_in_force() -> None:
    levels = balanced_levels(50)
    qualities = np.random.default_rng(1).random(len(levels))
    sched = CurriculumSchedule("linear", 100, min_quality=[(0.5, 0.6)])
    order = curriculum_order(
        levels, sched, seed=0, epoch=0, num_positions=2000, samples_per_step=20, qualities=qualities
    )
    before, after = qualities[order[:1000]], qualities[order[1000:]]
    assert (after >= 0.6).all()
    assert (before < 0.6).mean() > 0.4
    everything_low = np.full(len(levels), 0.1)
    with pytest.raises(ValueError, match="min_quality 0.6"):
        curriculum_order(
            levels,
            sched,
            seed=0,
            epoch=0,
            num_positions=2000,
            samples_per_step=20,
            qualities=everything_low,
        )


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    epoch=st.integers(0, 3),
    short=st.integers(0, 300),
    extra=st.integers(0, 300),
    samples_per_step=st.integers(1, 16),
    start=st.integers(0, 2000),
)
def test_curriculum_order_is_prefix_stable_and_seeded(
    seed: int, epoch: int, short: int, extra: int, samples_per_step: int, start: int
) -> None:
    levels = balanced_levels(7, seed % 5)
    qualities = np.linspace(0, 1, len(levels))
    sched = CurriculumSchedule("root", 100, min_quality=[(0.3, 0.2), (0.8, 0.5)])
    args = dict(
        seed=seed,
        epoch=epoch,
        samples_per_step=samples_per_step,
        start_position=start,
        qualities=qualities,
    )
    long = curriculum_order(levels, sched, num_positions=short + extra, **args)
    assert np.array_equal(
        curriculum_order(levels, sched, num_positions=short, **args), long[:short]
    )
    assert long.dtype == np.int64 and ((long >= 0) & (long < len(levels))).all()


def test_resume_keeps_the_curriculum_position() -> None:
    """A resumed epoch, on the same or another world size, continues the same draws."""
    levels = balanced_levels(40)
    sched = CurriculumSchedule("linear", 60, adaptive=True)
    sched.update({"easy": 0.2, "hard": 1.0})
    saved = json.loads(json.dumps(sched.state_dict()))
    order = curriculum_order(
        levels, sched, seed=4, epoch=1, num_positions=960, samples_per_step=16, start_position=960
    )
    plan = SamplePlan(len(levels), world_size=4, num_workers=2, batch_size=4, order=order)
    k = 50
    yielded = [dataclasses.replace(plan, rank=r).rank_positions()[:k] for r in range(4)]
    consumed = plan.advanced(k).consumed

    restored = CurriculumSchedule("linear", 60, adaptive=True)
    restored.load_state_dict(saved)
    again = curriculum_order(
        levels,
        restored,
        seed=4,
        epoch=1,
        num_positions=960,
        samples_per_step=16,
        start_position=960,
    )
    assert np.array_equal(again, order)
    resumed = SamplePlan(len(levels), world_size=3, consumed=consumed, order=again)
    rest = [dataclasses.replace(resumed, rank=r).rank_positions() for r in range(3)]
    assert sorted(np.concatenate(yielded + rest).tolist()) == sorted(order.tolist())
    # Position by position the resumed run is on the steps where it stopped.
    assert np.array_equal(np.sort(np.concatenate(rest)), np.sort(order[consumed:]))
    assert np.array_equal(resumed.remaining, order[consumed:])


def test_adaptive_update_shifts_weight_to_the_difficulty_still_learned() -> None:
    plain = CurriculumSchedule("linear", 100)
    sched = CurriculumSchedule("linear", 100, adaptive=True, ema=0.5, max_factor=3.0)
    assert sched.weights(60) == pytest.approx(plain.weights(60))
    for _ in range(5):
        sched.update({"easy": 0.1, "medium": 0.4, "hard": 1.2, "expert": 0.4})
    before, after = plain.weights(60), sched.weights(60)
    shift = {d: after[d] / before[d] for d in DIFFICULTIES if before[d] > 0}
    assert max(shift, key=shift.get) == "hard"
    assert shift["easy"] < 1 < shift["hard"]
    assert sum(after.values()) == pytest.approx(1)
    # Bounded: no difficulty moves by more than max_factor against the paced mix.
    ratios = np.array(list(shift.values()))
    assert ratios.max() / ratios.min() <= 3.0 * 3.0 + 1e-9
    # A level the pacing has not opened stays closed.
    assert after["expert"] == 0 and sched.weights(0) == plain.weights(0)
    # The EMA follows the losses: once hard is learned, its weight falls back.
    for _ in range(20):
        sched.update({"easy": 0.1, "medium": 0.4, "hard": 0.05, "expert": 0.4})
    assert sched.weights(60)["hard"] < before["hard"]


def test_adaptive_state_round_trips_and_is_checked() -> None:
    sched = CurriculumSchedule("step", 500, adaptive=True)
    sched.update({"medium": 2.0, "easy": 0.5})
    sched.update({"Hard": 1.0})
    state = json.loads(json.dumps(sched.state_dict()))
    twin = CurriculumSchedule("step", 500, adaptive=True)
    assert twin.weights(400) != sched.weights(400)
    twin.load_state_dict(state)
    assert twin.weights(400) == sched.weights(400)
    assert twin.state_dict() == sched.state_dict()
    with pytest.raises(ValueError, match="saved pacing='step' but this schedule has pacing='root'"):
        CurriculumSchedule("root", 500, adaptive=True).load_state_dict(state)
    with pytest.raises(ValueError, match="total_steps"):
        CurriculumSchedule("step", 600, adaptive=True).load_state_dict(state)
    with pytest.raises(ValueError, match="adaptive=False"):
        CurriculumSchedule("step", 500).update({"easy": 1.0})
    with pytest.raises(ValueError, match="unknown difficulty"):
        sched.update({"impossible": 1.0})
    with pytest.raises(ValueError, match="finite"):
        sched.update({"easy": float("inf")})


def curriculum_digest() -> str:
    """Digest of one quality-floored, exponential-paced epoch order."""
    levels = np.random.default_rng(0).integers(0, 4, 500).astype(np.int8)
    sched = CurriculumSchedule("exponential", 300, min_quality=[(0.5, 0.3)])
    order = curriculum_order(
        levels,
        sched,
        seed=9,
        epoch=2,
        num_positions=5000,
        samples_per_step=8,
        qualities=np.linspace(0, 1, 500),
    )
    return hashlib.sha256(order.tobytes()).hexdigest()


def test_a_fresh_process_draws_the_same_curriculum() -> None:
    script = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        "from test_curriculum import curriculum_digest; print(curriculum_digest())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "777"}
    there = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=120,
    ).stdout.strip()
    assert there == curriculum_digest()
