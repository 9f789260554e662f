"""Every fuzz target of :mod:`pvtt.tools.fuzz`, with a CI-sized, seeded number of cases.

The properties live with the runner (``python -m pvtt.tools.fuzz --examples N``) so the
long runs and CI check the same things; each target also replays the inputs that once
broke it (a tar header whose negative size made the reader loop for ever, a manifest
nested deeper than the recursion limit, a mask payload of 64 MB of empty runs).
"""

from __future__ import annotations

import pytest

from pvtt.schemas.config import BuildConfig, ConfigError
from pvtt.tools import fuzz

CASES = {
    "manifest": 300,
    "config": 400,
    "config_text": 200,
    "catalog": 200,
    "plan": 300,
    "plan_arguments": 500,
    "curriculum": 400,
    "curriculum_order": 100,
    "masks": 300,
    "tar": 400,
    "where": 60,
}

def test_every_target_has_a_ci_budget() -> None:
    assert set(CASES) == set(fuzz.TARGETS)


@pytest.mark.parametrize(
    "name",
    list(CASES),
)
def test_target_holds(name: str) -> None:
    target = fuzz.TARGETS[name]
    cases = fuzz.run(target, CASES[name], seed=0)
    assert cases >= min(CASES[name], 20) + len(target.examples)


def test_runner_counts_cases_and_fails_on_a_broken_property(capsys: pytest.CaptureFixture) -> None:
    assert fuzz.main(["--examples", "15", "--targets", "plan_arguments", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "plan_arguments" in out and "15 cases" in out

    broken = fuzz.Target(
        "broken", "always fails", fuzz.st.integers(), lambda v: None if v < 5 else 1 / 0
    )
    fuzz.TARGETS["broken"] = broken
    try:
        assert fuzz.main(["--examples", "50", "--targets", "broken", "--seed", "1"]) == 1
    finally:
        del fuzz.TARGETS["broken"]
    captured = capsys.readouterr()
    assert "FAILED" in captured.out and "ZeroDivisionError" in captured.err
    assert "value=5" in captured.err  # shrunk to the smallest failing case


def test_a_hanging_case_fails_instead_of_hanging(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fuzz, "CASE_TIMEOUT_S", 0.2)

    def spin(value: int) -> None:
        while value >= 0:
            pass

    target = fuzz.Target("spin", "loops", fuzz.st.just(1), spin)
    with pytest.raises(fuzz.Hang):
        fuzz.run(target, 1, seed=0)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"pairs": {"images_per_product": "2"}}, "config.pairs.images_per_product: expected int"),
        ({"device": None}, "config.device: expected str"),
        ({"output": {"formats": "tar"}}, r"config.output.formats: expected list\[str\]"),
        ({"pairs": {"difficulty_mix": {"easy": "a lot"}}}, "config.pairs.difficulty_mix"),
        ({"workers": True}, "config.workers: expected int or nothing"),
    ],
)
def test_config_values_are_checked_by_key(table: dict, message: str) -> None:
    """Found by the config target: wrong types crashed validate() with a TypeError."""
    with pytest.raises(ConfigError, match=message):
        BuildConfig.from_dict(table).validate()
    assert BuildConfig.from_dict({"quality": {"threshold": 1}}).validate().quality.threshold == 1
