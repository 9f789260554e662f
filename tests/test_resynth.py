"""``pvtt resynth``: selected pairs made again replace their old rows, in both formats."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import lance
import pytest
from records_factory import make_samples

from pvtt.builder.writer import DatasetWriter
from pvtt.loaders import PairDataset
from pvtt.loaders.query import PairFilter, select_pairs
from pvtt.loaders.store import open_dataset, read_blobs_by_key
from pvtt.loaders.verify import verify_dataset
from pvtt.schemas.config import BuildConfig
from pvtt.schemas.manifest import MANIFEST_NAME, read_manifest
from pvtt.tools import resynth as resynth_module
from pvtt.tools.cli import main
from pvtt.tools.resynth import STAGING_DIR, resynth

PAIRS = 24
WHERE = "passed = false"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    out = tmp_path_factory.mktemp("resynth") / "out"
    with DatasetWriter(out, max_samples=10) as writer:
        for sample in make_samples(shared_data, PAIRS):
            writer.write(sample)
    return out


@pytest.fixture
def out(built: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "out"
    shutil.copytree(built, copy)
    return copy


def _rows(root: Path) -> dict[str, dict]:
    table = select_pairs(open_dataset(root), PairFilter.make(passed=None))
    return {r["pair_id"]: r for r in table.to_pylist()}


def _synth(root: Path, ids: list[str]) -> dict[str, bytes]:
    return read_blobs_by_key(open_dataset(root).pairs, "synth_video", "pair_id", ids)


def _selected(root: Path) -> set[str]:
    table = select_pairs(open_dataset(root), PairFilter.make(passed=None, where=WHERE))
    return set(table.column("pair_id").to_pylist())


def _config(seed: int = 7) -> BuildConfig:
    config = BuildConfig()
    config.pairs.seed = seed
    config.output.commit_interval_s = 0.0  # stage every pair as it is made
    return config


def _tar_samples(root: Path) -> dict[str, dict]:
    """Every pair the tar shards yield to the loader (counted: one per pair id)."""
    ds = PairDataset(root, format="tar", passed=None, fields=("meta", "synth_video"), decode=False)
    samples = [(s["meta"]["pair_id"], s) for s in ds]
    counts = Counter(pid for pid, _ in samples)
    assert max(counts.values()) == 1, counts.most_common(3)
    return dict(samples)


def test_resynth_replaces_exactly_the_selected_pairs(out: Path) -> None:
    before, selected = _rows(out), _selected(out)
    old_version = read_manifest(out).tables["pairs"].version
    old_synth = _synth(out, sorted(before))
    result = resynth(out, WHERE, _config(), progress=False)
    assert (result.selected, result.replaced, result.made) == (len(selected),) * 3
    after = _rows(out)
    assert set(after) == set(before) and len(after) == PAIRS  # one row per pair id
    assert result.passed_before == 0  # the selection is the rejected pairs
    assert result.passed_after == sum(after[p]["passed"] for p in selected)
    new_synth = _synth(out, sorted(after))
    for pid, row in after.items():
        if pid in selected:
            assert row["build_id"] != before[pid]["build_id"]
            assert new_synth[pid] != old_synth[pid]  # made by the CPU inserter now
            assert row["score_removal"] is not None  # the build's checks ran on it
        else:
            assert row == before[pid]
            assert new_synth[pid] == old_synth[pid]
    tar = _tar_samples(out)
    assert set(tar) == set(after)
    for pid, sample in tar.items():
        assert sample["meta"]["build_id"] == after[pid]["build_id"]
        assert bytes(sample["synth_video"]) == new_synth[pid]
    manifest = read_manifest(out)
    history = lance.dataset(str(out / manifest.tables["pairs"].path), version=old_version)
    assert history.count_rows() == PAIRS  # the old rows stay in Lance's history
    assert manifest.counts["passed"] == sum(r["passed"] for r in after.values())
    assert not (out / STAGING_DIR).exists()
    report = verify_dataset(open_dataset(out))
    assert report.ok, report.problems
    assert (report.pairs_lance, report.pairs_tar) == (PAIRS, PAIRS)
    assert open_dataset(out).pairs_by_category is not None  # written for the new version


def test_a_killed_resynth_leaves_the_dataset_as_it_was_and_a_rerun_finishes(
    out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before_manifest = (out / MANIFEST_NAME).read_bytes()
    before, selected = _rows(out), _selected(out)
    real = resynth_module.make_pair
    calls = []

    def dies_after_five(*args: object, **kwargs: object) -> object:
        if len(calls) == 5:
            raise RuntimeError("killed")
        calls.append(1)
        return real(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(resynth_module, "make_pair", dies_after_five)
        with pytest.raises(RuntimeError, match="killed"):
            resynth(out, WHERE, _config(), progress=False)
    assert (out / MANIFEST_NAME).read_bytes() == before_manifest
    assert _rows(out) == before
    assert verify_dataset(open_dataset(out), media=False).ok
    (staging,) = (out / STAGING_DIR).iterdir()
    staged = read_manifest(staging).tables["pairs"].rows
    assert 0 < staged <= 5  # pairs made before the kill, written in order, committed
    result = resynth(out, WHERE, _config(), progress=False)
    assert result.made == len(selected) - staged  # the staged pairs were not made again
    assert result.replaced == len(selected)
    after = _rows(out)
    assert len(after) == PAIRS and {p for p in after if after[p] != before[p]} == selected
    assert set(_tar_samples(out)) == set(after)
    assert verify_dataset(open_dataset(out), media=False).ok


def test_a_resynth_killed_before_its_manifest_is_published_again(
    out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before_manifest = (out / MANIFEST_NAME).read_bytes()
    before = _rows(out)

    def crash(*args: object, **kwargs: object) -> None:
        raise OSError("killed before the manifest")

    with monkeypatch.context() as patch:
        patch.setattr(resynth_module, "write_manifest", crash)
        with pytest.raises(OSError, match="killed"):
            resynth(out, WHERE, _config(), progress=False)
    assert (out / MANIFEST_NAME).read_bytes() == before_manifest  # Lance and tar moved on
    assert _rows(out) == before
    assert set(_tar_samples(out)) == set(before)
    result = resynth(out, WHERE, _config(), progress=False)
    assert result.made == 0 and result.replaced == len(_selected_of(before))
    assert len(_rows(out)) == PAIRS
    assert set(_tar_samples(out)) == set(before)
    report = verify_dataset(open_dataset(out), media=False)
    assert report.ok, report.problems


def _selected_of(rows: dict[str, dict]) -> set[str]:
    return {p for p, r in rows.items() if not r["passed"]}


def test_the_command_resynthesises_and_names_an_empty_selection(out: Path, capsys) -> None:
    assert main(["resynth", str(out), "--where", "pair_id = 'none'", "--no-progress"]) != 0
    assert "selects no pair" in capsys.readouterr().err
    selected = _selected(out)
    code = main(["resynth", str(out), "--where", WHERE, "--seed", "3", "--no-progress"])
    assert code == 0
    assert f"{len(selected)} of {len(selected)} selected pairs replaced" in capsys.readouterr().out
    assert verify_dataset(open_dataset(out), media=False).ok
