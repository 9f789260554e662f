"""``pvtt rescore``: new scores as a new version, media untouched, both formats agreeing."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from records_factory import make_samples

from pvtt.builder.stages.protocols import BackendInfo, ScoringInput
from pvtt.builder.stages.quality import judge
from pvtt.builder.writer import DatasetWriter
from pvtt.loaders import PairDataset
from pvtt.loaders.query import PairFilter, select_pairs
from pvtt.loaders.store import open_dataset
from pvtt.loaders.verify import verify_dataset
from pvtt.schemas.manifest import MANIFEST_NAME, read_manifest
from pvtt.schemas.shards import OVERLAY_KEY
from pvtt.schemas.tables import MEDIA_COLUMNS
from pvtt.tools import dataset_edit
from pvtt.tools.cli import main
from pvtt.tools.rescore import SCORE_COLUMNS, rescore

PAIRS = 24


class JudgeScorer:
    """A scorer added after the build: it fills ``overall`` (null in the built dataset),
    read off the pair's target box so that pairs differ."""

    info = BackendInfo(kind="scorer", name="test-judge", version="1")

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls = 0
        self.fail_after = fail_after

    def score(self, sample: ScoringInput) -> dict[str, float | None]:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("killed")
        self.calls += 1
        return expected_scores(float(sample.boxes[0][0]))


def expected_scores(x0: float) -> dict[str, float | None]:
    overall = (x0 % 12) / 11.0
    return {"identity": 0.8, "temporal": 0.8, "lighting": None, "overall": overall}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """The factory's pairs, each with its own target box (x0 = its number)."""
    out = tmp_path_factory.mktemp("rescore") / "out"
    with DatasetWriter(out, max_samples=10) as writer:
        for i, sample in enumerate(make_samples(shared_data, PAIRS)):
            boxes = [(float(i), 10.0, 40.0 + i, 30.0)] * len(sample.pair.target_boxes)
            writer.write(replace(sample, pair=replace(sample.pair, target_boxes=boxes)))
    return out


@pytest.fixture
def out(built: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "out"
    shutil.copytree(built, copy)
    return copy


def _files(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _blobs(root: Path) -> dict[tuple[str, str, int], bytes]:
    """Every media blob of every Lance table, by table, column and row."""
    dataset = open_dataset(root)
    out = {}
    for name in ("pairs", "clips", "products"):
        table = dataset.table(name)
        rows = list(range(table.count_rows()))
        for column in MEDIA_COLUMNS[name]:
            for i, (_addr, data) in zip(rows, table.read_blobs(column, indices=rows), strict=True):
                out[name, column, i] = data
    return out


def _expected(root: Path) -> dict[str, dict]:
    """What the judge scorer and the default gate make of each pair."""
    rows = select_pairs(
        open_dataset(root),
        PairFilter.make(passed=None),
        columns=["pair_id", "target_boxes", "score_removal", "score_mask", "score_insert"],
    ).to_pylist()
    out = {}
    for row in rows:
        scores = expected_scores(row["target_boxes"][0][0])
        verdict = judge(scores)
        out[row["pair_id"]] = {
            "scores": scores,
            "quality": verdict.quality_score,
            "passed": verdict.passed,
        }
    return out


def _current(root: Path) -> dict[str, dict]:
    cols = ["pair_id", *SCORE_COLUMNS, "quality_score", "passed", "reject_reason"]
    rows = select_pairs(open_dataset(root), PairFilter.make(passed=None), columns=cols)
    return {r["pair_id"]: r for r in rows.to_pylist()}


def test_rescore_publishes_new_scores_and_keeps_every_media_byte(out: Path) -> None:
    before_files, before_blobs = _files(out), _blobs(out)
    before = read_manifest(out)
    result = rescore(out, scorer=JudgeScorer(), progress=False)
    after_files = _files(out)
    changed = [f for f, digest in before_files.items() if after_files.get(f) != digest]
    # no data or index file rewritten: Lance and tar only gained files (the category copy
    # was written again for the new version)
    assert changed == [
        "lance/pairs.lance/_versions/latest_version_hint.json",
        "lance/pairs_by_category.lance/_versions/latest_version_hint.json",
        MANIFEST_NAME,
    ]
    assert _blobs(out) == before_blobs
    manifest = read_manifest(out)
    assert manifest.tables["pairs"].version == result.info.version > before.tables["pairs"].version
    assert manifest.backends["scorer"]["backend"] == "test-judge"
    expected = _expected(out)
    current = _current(out)
    assert (
        result.passed
        == sum(e["passed"] for e in expected.values())
        == manifest.counts.get("passed", result.passed)
    )
    for pid, want in expected.items():
        row = current[pid]
        for name, value in want["scores"].items():
            got = row[f"score_{name}"]
            assert (got is None) if value is None else got == pytest.approx(value, abs=1e-6)
        assert row["quality_score"] == pytest.approx(want["quality"], abs=1e-6)
        assert row["passed"] == want["passed"]
    report = verify_dataset(open_dataset(out))
    assert report.ok, report.problems
    dataset = open_dataset(out)  # category filters read the copy made for the new scores
    assert dataset.pairs_by_category is not None
    category = dataset.pairs.to_table(columns=["source_category"]).column(0)[0].as_py()
    flt = PairFilter.make(category=category, passed=None)
    names = ["pair_id", "quality_score", "passed"]
    assert select_pairs(dataset, flt, columns=names).sort_by("pair_id").to_pylist() == (
        dataset.pairs.to_table(columns=names, filter=flt.to_sql()).sort_by("pair_id").to_pylist()
    )


@pytest.mark.parametrize("fmt", ["lance", "tar"])
def test_the_loader_filters_on_the_new_scores(out: Path, fmt: str) -> None:
    rescore(out, scorer=JudgeScorer(), progress=False)
    expected = _expected(out)
    for min_score in (0.5, 0.8):
        want = {p for p, e in expected.items() if e["passed"] and e["quality"] >= min_score}
        ds = PairDataset(out, format=fmt, min_score=min_score, fields=("meta",))
        got = [sample["meta"]["pair_id"] for sample in ds]
        assert sorted(got) == sorted(want) and want
    rejected = PairDataset(out, format=fmt, passed=False, fields=("meta",))
    assert {s["meta"]["pair_id"] for s in rejected} == {
        p for p, e in expected.items() if not e["passed"]
    }


def test_tar_indexes_carry_the_new_columns_and_verify_catches_a_disagreement(out: Path) -> None:
    rescore(out, scorer=JudgeScorer(), progress=False)
    manifest = read_manifest(out)
    shard = manifest.shards[0]
    path = out / shard.index
    index = json.loads(path.read_text())
    entry = index["samples"][0]
    assert entry[OVERLAY_KEY]["score_overall"] == pytest.approx(
        _expected(out)[entry["key"]]["scores"]["overall"], abs=1e-6
    )
    entry[OVERLAY_KEY]["score_overall"] = 0.123
    path.write_text(json.dumps(index))
    report = verify_dataset(open_dataset(out), media=False)
    assert not report.ok
    assert any(
        "disagree" in p and entry["key"] in p and "score_overall" in p for p in report.problems
    )


def test_dry_run_counts_flips_and_writes_nothing_but_progress(out: Path, capsys) -> None:
    before = _files(out)
    result = rescore(out, scorer=JudgeScorer(), dry_run=True, progress=False)
    assert result.info is None
    was = {p: r["passed"] for p, r in _current(out).items()}
    expected = _expected(out)
    assert result.to_pass == sum(e["passed"] and not was[p] for p, e in expected.items())
    assert result.to_fail == sum(was[p] and not e["passed"] for p, e in expected.items())
    after = _files(out)
    assert {f: d for f, d in after.items() if not f.startswith("report/")} == before


def test_a_killed_rescore_leaves_the_dataset_as_it_was_and_a_rerun_finishes(out: Path) -> None:
    before_manifest = (out / MANIFEST_NAME).read_bytes()
    before = _current(out)
    with pytest.raises(RuntimeError, match="killed"):
        rescore(out, scorer=JudgeScorer(fail_after=10), progress=False)
    assert (out / MANIFEST_NAME).read_bytes() == before_manifest
    assert _current(out) == before
    assert verify_dataset(open_dataset(out), media=False).ok
    (progress,) = (out / "report").glob("rescore-*.jsonl")
    saved = len(progress.read_text().splitlines())
    assert 0 < saved <= 10  # scores made before the kill, in order, kept
    scorer = JudgeScorer()
    result = rescore(out, scorer=scorer, progress=False)
    assert (result.scored, scorer.calls) == (PAIRS - saved, PAIRS - saved)  # the rest from disk
    assert {p: r["passed"] for p, r in _current(out).items()} == {
        p: e["passed"] for p, e in _expected(out).items()
    }
    assert not list((out / "report").glob("rescore-*.jsonl"))


def test_a_rescore_killed_before_its_manifest_is_rolled_back_and_redone(
    out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before_manifest = (out / MANIFEST_NAME).read_bytes()
    before = _current(out)

    def crash(*args: object, **kwargs: object) -> None:
        raise OSError("killed before the manifest")

    with monkeypatch.context() as patch:
        patch.setattr(dataset_edit, "write_manifest", crash)
        with pytest.raises(OSError, match="killed"):
            rescore(out, scorer=JudgeScorer(), progress=False)
    assert (out / MANIFEST_NAME).read_bytes() == before_manifest  # Lance moved on, readers not
    assert _current(out) == before
    assert verify_dataset(open_dataset(out), media=False).ok
    rescore(out, scorer=JudgeScorer(), progress=False)
    assert verify_dataset(open_dataset(out), media=False).ok
    assert {p: r["passed"] for p, r in _current(out).items()} == {
        p: e["passed"] for p, e in _expected(out).items()
    }


def test_the_command_rescores_with_the_cpu_scorer(out: Path, capsys) -> None:
    assert main(["rescore", str(out), "--dry-run", "--no-progress"]) == 0
    assert "dry run: nothing written" in capsys.readouterr().out
    assert main(["rescore", str(out), "--no-progress"]) == 0
    assert f"{PAIRS} pairs rescored" in capsys.readouterr().out
    rows = _current(out)
    assert all(r["score_identity"] is not None for r in rows.values())
    assert read_manifest(out).backends["scorer"]["backend"] == "cpu-statistics"
    assert verify_dataset(open_dataset(out), media=False).ok


def test_the_command_names_a_missing_dataset(tmp_path: Path, capsys) -> None:
    assert main(["rescore", str(tmp_path / "nothing")]) != 0
    assert "no manifest" in capsys.readouterr().err


def test_scores_agree_with_json_after_overlay() -> None:
    from pvtt.schemas.shards import overlaid_meta

    meta = {"pair_id": "a", "score_overall": None, "passed": True, "quality_score": 0.9}
    entry = {
        "key": "a",
        "passed": False,
        "quality_score": 0.4,
        OVERLAY_KEY: {"score_overall": 0.4, "reject_reason": "low"},
    }
    assert overlaid_meta(meta, entry) == {
        "pair_id": "a",
        "score_overall": 0.4,
        "passed": False,
        "quality_score": 0.4,
        "reject_reason": "low",
    }
    assert np.isclose(overlaid_meta(meta, {"key": "a"})["quality_score"], 0.9)


def test_tar_readers_hand_out_the_rescored_values(out: Path) -> None:
    """The tar members keep the build's json; readers apply the index overlay over it."""
    rescore(out, scorer=JudgeScorer(), progress=False)
    dataset = open_dataset(out)
    columns = ["pair_id", "score_overall", "quality_score", "passed", "reject_reason"]
    lance = select_pairs(dataset, PairFilter.make(passed=None), columns=columns).to_pylist()
    loaded = PairDataset(out, format="tar", passed=None, fields=("meta",), shuffle=False)
    tar = {s["meta"]["pair_id"]: s["meta"] for s in loaded}
    undecoded = PairDataset(
        out, format="tar", passed=None, fields=("meta",), shuffle=False, decode=False
    )
    tar_undecoded = {s["meta"]["pair_id"]: s["meta"] for s in undecoded}
    assert len(lance) == len(tar) == len(tar_undecoded) == PAIRS
    assert any(row["score_overall"] is not None for row in lance)  # the new scorer's column
    for row in lance:
        for meta in (tar[row["pair_id"]], tar_undecoded[row["pair_id"]]):
            for column in ("score_overall", "quality_score"):
                assert meta[column] == pytest.approx(row[column], abs=1e-6, nan_ok=True)
            reason = row["reject_reason"] or ""  # the loader's meta gives null strings as ""
            assert (meta["passed"], meta["reject_reason"]) == (row["passed"], reason)
