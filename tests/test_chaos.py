"""The crash campaign, short: kills of one build process and of one rank, and a full disk.

``python -m pvtt.tools.chaos --kills 50 --ranks 2 --disk-full`` is the full campaign; here
a few trials of each kind run against one reference build of a three-product catalog.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pvtt.tools.chaos import (
    Campaign,
    Fingerprint,
    differences,
    final_problems,
    fingerprint,
    summary,
)


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> Campaign:
    return Campaign.prepare(tmp_path_factory.mktemp("chaos"), products=3, seed=1)


def test_killed_builds_resume_to_the_reference(campaign: Campaign) -> None:
    tally = campaign.single_process(3)
    assert tally.tried >= 3
    assert [t.problems for t in tally.trials if not t.ok] == []
    assert tally.survived == tally.tried
    text = summary({"single": tally.as_dict(), "ok": True, "seconds": 1.0})
    assert f"kills survived {tally.tried}/{tally.tried}" in text


def test_a_killed_rank_is_rerun_alone_then_merged(campaign: Campaign) -> None:
    tally = campaign.multi_rank(2, 1)
    assert tally.tried == 1
    assert [t.problems for t in tally.trials if not t.ok] == []


def test_full_output_disk_stops_with_one_clear_line_and_resumes(campaign: Campaign) -> None:
    trials, skipped = campaign.disk_full((0.5,), cache=False)
    if skipped:
        pytest.skip(skipped)
    [trial] = trials
    assert trial.problems == []


def test_full_cache_disk_stops_the_build(campaign: Campaign) -> None:
    trials, skipped = campaign.disk_full((), cache=True)
    if skipped:
        pytest.skip(skipped)
    [trial] = trials
    assert trial.problems == []


def test_checks_catch_a_damaged_dataset(campaign: Campaign, tmp_path: Path) -> None:
    """The campaign's checks fail on what a broken resume would leave."""
    out = tmp_path / "copy"
    shutil.copytree(campaign.work / "reference", out)
    assert final_problems(out, campaign.reference) == []
    shard = sorted((out / "tar").glob("*.tar"))[-1]
    shard.write_bytes(shard.read_bytes()[:-1024])
    (out / "tar" / "pairs-r000-999999.tar").write_bytes(b"left by a killed run")
    problems = final_problems(out, campaign.reference)
    assert any("bytes, manifest says" in p for p in problems)
    assert any("pairs-r000-999999.tar" in p for p in problems)


def test_differences_name_missing_extra_twice_and_changed() -> None:
    def row(score: float) -> tuple:  # one value per SCORE_COLUMNS entry
        return (score, 0.1, 0.2, 0.3, None, score >= 0.5, None, 30)

    ref = Fingerprint({"a": row(0.5), "b": row(0.25)}, {"c1"}, {"i1"}, [])
    got = Fingerprint({"a": row(0.5000001), "x": row(0.1)}, {"c1"}, set(), ["x"])
    problems = differences(ref, got)
    assert problems[0] == "1 pair ids twice: ['x']"
    assert "1 pairs missing: ['b']" in problems
    assert "1 pairs not in the reference: ['x']" in problems
    assert "1 product images missing: ['i1']" in problems
    assert any(p.startswith("a: scores differ") and "0.5000001" in p for p in problems)
    assert differences(ref, ref) == []


def test_fingerprint_reads_every_pair_once(campaign: Campaign) -> None:
    again = fingerprint(campaign.work / "reference")
    assert again == campaign.reference
    assert len(again.pairs) >= 6 and again.duplicates == []
    assert {key.split("__")[0] for key in again.pairs} <= again.clips
