"""``pvtt calibrate``: the gate against human labels, checked against brute-force counts."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from datetime import datetime, timezone
from itertools import product
from pathlib import Path

import numpy as np
import pytest
from records_factory import make_samples

from pvtt.builder.writer import DatasetWriter
from pvtt.loaders.labels import latest_labels
from pvtt.loaders.query import PairFilter, select_pairs
from pvtt.loaders.store import open_dataset, read_blobs_by_key
from pvtt.schemas.manifest import read_manifest
from pvtt.tools.calibration import (
    DEFAULT_TARGET_PRECISION,
    GatePoint,
    calibrate,
    roc_auc,
    threshold_for_precision,
)
from pvtt.tools.calibration_html import calibration_html
from pvtt.tools.cli import main
from pvtt.tools.commands import calibrate as calibrate_command
from pvtt.tools.dataset_edit import append_labels

REMOVAL_LIMIT = 0.049
COLUMNS = ["pair_id", "quality_score", "passed", "reject_reason", "score_removal", "synth_video"]


def _samples(shared: Path) -> list:
    """The factory's 24 pairs; every fifth fails the removal check whatever its score."""
    out = []
    for i, s in enumerate(make_samples(shared, 24)):
        removal = 0.3 if i % 5 == 0 else 0.01
        pair = replace(s.pair, score_removal=removal)
        if removal > REMOVAL_LIMIT:
            pair = replace(pair, passed=False, reject_reason="removal 0.300 > 0.049")
        out.append(replace(s, pair=pair))
    return out


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    out = tmp_path_factory.mktemp("calibrate") / "out"
    with DatasetWriter(out, max_samples=10) as writer:
        for sample in _samples(shared_data):
            writer.write(sample)
    return out


def _rows(out: Path) -> list[dict]:
    columns = ["pair_id", "quality_score", "passed", "reject_reason", "score_removal"]
    table = select_pairs(open_dataset(out), PairFilter.make(passed=None), columns=columns)
    return table.to_pylist()


def _verdict(row: dict, index: int) -> tuple[str, str | None]:
    """People accept the good-looking pairs, with a few disagreements either way."""
    good = row["quality_score"] > 0.62 and row["score_removal"] <= REMOVAL_LIMIT
    if index % 7 == 3:
        good = not good
    if good:
        return "accept", None
    return "reject", ("residue" if row["score_removal"] > REMOVAL_LIMIT else "lighting")


@pytest.fixture
def labelled(unlabelled: Path, tmp_path: Path) -> Path:
    """A copy of the dataset with 20 of its 24 pairs labelled (and one stale label)."""
    out = tmp_path / "out"
    shutil.copytree(unlabelled, out)
    now = datetime.now(timezone.utc)
    rows = []
    for i, row in enumerate(_rows(out)[:20]):
        label, reason = _verdict(row, i)
        rows.append(
            {
                "pair_id": row["pair_id"],
                "label": label,
                "reason": reason,
                "reviewer": "r",
                "time": now,
                "build_id": "test",
            }
        )
    rows.append({**rows[0], "pair_id": "gone__P9__img0"})  # a pair no longer in the dataset
    append_labels(out, rows)
    return out


def _files(out: Path) -> dict[str, bytes | int]:
    """Every file of the dataset: the manifest by content, the rest by size."""
    return {
        str(p.relative_to(out)): p.read_bytes() if p.name == "manifest.json" else p.stat().st_size
        for p in out.rglob("*")
        if p.is_file()
    }


def _expected(out: Path, threshold: float) -> tuple[int, float | None, float | None]:
    """Brute force: (passed, precision, recall) of the gate at ``threshold`` on the labels."""
    labels = latest_labels(open_dataset(out))
    rows = [r for r in _rows(out) if r["pair_id"] in labels]
    gate = [r["score_removal"] <= REMOVAL_LIMIT and r["quality_score"] >= threshold for r in rows]
    human = [labels[r["pair_id"]]["label"] == "accept" for r in rows]
    hits = sum(g and h for g, h in zip(gate, human, strict=True))
    return (
        sum(gate),
        hits / sum(gate) if sum(gate) else None,
        hits / sum(human) if sum(human) else None,
    )


# -- the figures ----------------------------------------------------------------------


def _pairwise_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    pos, neg = scores[positive], scores[~positive]
    wins = sum((p > n) + 0.5 * (p == n) for p, n in product(pos, neg))
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(5))
def test_roc_auc_is_the_share_of_correctly_ordered_pairs(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 6, size=40) / 5  # many ties
    positive = rng.random(40) < 0.4
    assert roc_auc(scores, positive) == pytest.approx(_pairwise_auc(scores, positive))


def test_roc_auc_edges() -> None:
    positive = np.array([True, True, False, False])
    assert roc_auc(np.array([0.9, 0.8, 0.2, 0.1]), positive) == 1.0
    assert roc_auc(np.array([0.1, 0.2, 0.8, 0.9]), positive) == 0.0
    assert roc_auc(np.array([0.5, 0.5, 0.5, 0.5]), positive) == 0.5
    assert roc_auc(np.array([0.1, 0.2]), np.array([True, True])) is None


def test_the_threshold_for_a_precision_is_the_lowest_that_reaches_it() -> None:
    points = [
        GatePoint(0.2, 10, 7, 0.7, 1.0),
        GatePoint(0.4, 8, 7, 0.875, 1.0),
        GatePoint(0.5, 6, 6, 1.0, 0.86),
        GatePoint(0.6, 5, 4, 0.8, 0.57),
        GatePoint(0.7, 3, 3, 1.0, 0.43),
    ]
    assert threshold_for_precision(points, 0.85).threshold == 0.4
    assert threshold_for_precision(points, 0.9).threshold == 0.5
    assert threshold_for_precision(points[:2], 0.9) is None


def test_precision_and_recall_at_every_threshold_match_a_brute_force_count(labelled: Path) -> None:
    cal = calibrate(open_dataset(labelled))
    assert (cal.labelled, cal.unknown) == (20, 1)
    assert cal.accepted + cal.rejected == 20 and cal.accepted > 3 and cal.rejected > 3
    rows = {r["pair_id"]: r for r in _rows(labelled)}
    labels = latest_labels(open_dataset(labelled))
    scored = sorted({rows[p]["quality_score"] for p in labels if p in rows})
    assert len(cal.curve) == len(scored)
    for point, score in zip(cal.curve, scored, strict=True):
        assert point.threshold == pytest.approx(score, abs=1e-6)
        passed, precision, recall = _expected(labelled, score - 1e-6)
        assert (point.passed, point.precision, point.recall) == (passed, precision, recall)
    assert (cal.current.passed, cal.current.precision, cal.current.recall) == _expected(
        labelled, 0.7
    )
    meeting = [p for p in cal.curve if p.precision is not None and p.precision >= 0.9]
    assert cal.recommended == min(meeting, key=lambda p: p.threshold)
    assert cal.target_precision == DEFAULT_TARGET_PRECISION


def test_the_stored_verdicts_and_the_rejects_the_gate_misses(labelled: Path) -> None:
    cal = calibrate(open_dataset(labelled), target_precision=0.8)
    labels = latest_labels(open_dataset(labelled))
    rows = [r for r in _rows(labelled) if r["pair_id"] in labels]
    stored = [r for r in rows if r["passed"]]
    assert cal.build.passed == len(stored)
    assert cal.build.accepted_passed == sum(
        labels[r["pair_id"]]["label"] == "accept" for r in stored
    )
    missed: dict[str, int] = {}
    for r in rows:
        label = labels[r["pair_id"]]
        if (
            r["score_removal"] <= REMOVAL_LIMIT
            and r["quality_score"] >= 0.7
            and label["label"] == "reject"
        ):
            missed[label["reason"]] = missed.get(label["reason"], 0) + 1
    assert cal.missed == missed and missed  # the flipped labels: rejects the gate passes


def test_each_score_gets_its_auc_in_the_direction_the_gate_reads_it(labelled: Path) -> None:
    cal = calibrate(open_dataset(labelled))
    labels = latest_labels(open_dataset(labelled))
    rows = [r for r in _rows(labelled) if r["pair_id"] in labels]
    human = np.array([labels[r["pair_id"]]["label"] == "accept" for r in rows])
    quality = np.array([r["quality_score"] for r in rows])
    removal = np.array([r["score_removal"] for r in rows])
    assert cal.auc["quality_score"]["auc"] == pytest.approx(_pairwise_auc(quality, human))
    assert cal.auc["score_removal"]["auc"] == pytest.approx(_pairwise_auc(-removal, human))
    assert cal.auc["score_removal"]["higher_is_better"] is False
    assert cal.auc["score_overall"] == {"auc": None, "pairs": 0, "higher_is_better": True}
    assert cal.auc["quality_score"]["auc"] > 0.6  # the labels follow the score, mostly


# -- the command ----------------------------------------------------------------------


def test_calibrate_prints_and_changes_nothing(
    labelled: Path, capsys: pytest.CaptureFixture
) -> None:
    before = _files(labelled)
    assert main(["calibrate", str(labelled)]) == 0
    text = capsys.readouterr().out
    assert "20 labelled pairs" in text and "precision >= 0.9" in text and "score_removal" in text
    assert main(["calibrate", str(labelled), "--json", "--target-precision", "0.8"]) == 0
    payload = json.loads(capsys.readouterr().out)
    expected = calibrate(open_dataset(labelled), 0.8).to_dict()
    assert payload == json.loads(json.dumps(expected))
    assert _files(labelled) == before


def test_command_default_matches_the_module() -> None:
    assert calibrate_command.DEFAULT_TARGET_PRECISION == DEFAULT_TARGET_PRECISION


def test_apply_writes_the_verdicts_as_a_new_version_and_leaves_media_alone(
    labelled: Path, capsys: pytest.CaptureFixture
) -> None:
    before = read_manifest(labelled)
    old = open_dataset(labelled)
    synth_before = read_blobs_by_key(
        old.pairs, "synth_video", "pair_id", [r["pair_id"] for r in _rows(labelled)]
    )
    data_files = {p: p.stat().st_size for p in (labelled / "lance/pairs.lance/data").iterdir()}
    target = calibrate(old, 0.8).recommended
    assert target is not None and target.threshold != 0.7
    assert main(["calibrate", str(labelled), "--target-precision", "0.8", "--apply"]) == 0
    assert "pairs table version" in capsys.readouterr().out

    after = read_manifest(labelled)
    assert after.tables["pairs"].version > before.tables["pairs"].version
    assert after.config["quality"]["threshold"] == target.threshold
    rows = _rows(labelled)
    for r in rows:
        gate = r["score_removal"] <= REMOVAL_LIMIT and r["quality_score"] >= target.threshold - 1e-6
        assert r["passed"] == gate, r
        if not gate:
            check = r["score_removal"] > REMOVAL_LIMIT
            assert r["reject_reason"].startswith("removal" if check else "quality"), r
        else:
            assert r["reject_reason"] is None
    assert after.counts["passed"] == sum(r["passed"] for r in rows)
    kept = select_pairs(open_dataset(labelled), PairFilter.make(passed=True), columns=["pair_id"])
    assert sorted(kept.column("pair_id").to_pylist()) == sorted(
        r["pair_id"] for r in rows if r["passed"]
    )
    # media: the same bytes, the same data files, and only small new files beside them
    new = open_dataset(labelled)
    assert (
        read_blobs_by_key(new.pairs, "synth_video", "pair_id", list(synth_before)) == synth_before
    )
    now = {p: p.stat().st_size for p in (labelled / "lance/pairs.lance/data").iterdir()}
    assert {p: now[p] for p in data_files} == data_files
    assert sum(now[p] for p in set(now) - set(data_files)) < 0.05 * sum(data_files.values())
    # the tar shards' indexes agree with the table
    passed = {r["pair_id"]: r["passed"] for r in rows}
    for shard in new.shards:
        for entry in new.shard_index(shard):
            assert entry["passed"] == passed[entry["key"]]
        assert shard.passed == sum(e["passed"] for e in new.shard_index(shard))
    # the stored verdicts are now the gate's at the dataset's (new) threshold
    cal = calibrate(new, 0.8)
    assert cal.threshold == target.threshold and cal.build == cal.current


def test_apply_with_a_threshold_of_ones_own(labelled: Path) -> None:
    assert main(["calibrate", str(labelled), "--apply", "--threshold", "0.5"]) == 0
    assert all(
        r["passed"] == (r["score_removal"] <= REMOVAL_LIMIT and r["quality_score"] >= 0.5)
        for r in _rows(labelled)
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--threshold", "0.5"], "--threshold only goes with --apply"),
        (["--target-precision", "0"], "target precision must be in (0, 1]"),
        (["--apply", "--threshold", "1.5"], "threshold must be in [0, 1]"),
    ],
)
def test_bad_arguments_are_clear_errors(
    labelled: Path, args: list[str], message: str, capsys: pytest.CaptureFixture
) -> None:
    assert main(["calibrate", str(labelled), *args]) == 1
    assert message in capsys.readouterr().err


def test_without_labels_calibrate_says_what_to_do(
    unlabelled: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["calibrate", str(unlabelled)]) == 1
    assert "no labels yet; judge some pairs with pvtt review first" in capsys.readouterr().err


# -- the report section -----------------------------------------------------------------


def test_the_report_section_exists_only_with_labels(unlabelled: Path, labelled: Path) -> None:
    assert calibration_html(unlabelled) is None
    page = calibration_html(labelled)
    cal = calibrate(open_dataset(labelled))
    for table in ("calibration-gate", "calibration-auc", "calibration-curve", "calibration-missed"):
        assert f'<table id="{table}">' in page
    assert '<svg id="calibration-plot"' in page and "<polyline" in page
    assert "20 pairs labelled by people" in page
    assert f"<td>{cal.recommended.threshold:.3f}</td>" in page
    assert "1 labels name pairs this dataset no longer holds" in page
    assert "http" not in page and "src=" not in page and "<script" not in page
    assert calibration_html(open_dataset(labelled)) == page  # an opened dataset does too


def test_labels_leave_verify_and_saved_loader_states_alone(
    unlabelled: Path, labelled: Path
) -> None:
    from pvtt.loaders import PairDataset
    from pvtt.loaders.verify import verify_dataset

    report = verify_dataset(open_dataset(labelled), media=False)
    assert report.problems == []  # the labels log repeats pair ids by design
    before = PairDataset(unlabelled, fields=("meta",), shuffle=False)
    state = before.state_dict(samples_seen=3)
    after = PairDataset(labelled, fields=("meta",), shuffle=False)
    after.load_state_dict(state)  # a review in between does not change what is read
    assert [s["meta"]["pair_id"] for s in after] == [s["meta"]["pair_id"] for s in before][3:]


def test_the_html_report_shows_the_calibration_with_labels(
    unlabelled: Path, labelled: Path
) -> None:
    from pvtt.tools.html_report import gather_report, render_html

    for out, shown in ((unlabelled, False), (labelled, True)):
        page = render_html(gather_report(open_dataset(out), per_difficulty=0, progress=False))
        assert ('id="calibration"' in page) is shown
        assert ("Gate against human labels" in page) is shown
