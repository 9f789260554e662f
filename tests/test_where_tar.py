"""``where=`` on tar datasets: typed by the schema, answered without reading unselected json.

Before, a tar dataset read the json of every candidate sample (in every worker) and
let Arrow guess column types from the values, so a score column null in every row
became type ``null`` and ``score_overall > 0.6`` failed on tar while Lance answered it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from records_factory import make_samples

from pvtt.builder.writer import DatasetWriter
from pvtt.loaders import PairDataset
from pvtt.loaders.query import PairFilter, select_pairs
from pvtt.loaders.selection import select
from pvtt.loaders.store import BuiltDataset, open_dataset
from pvtt.schemas.tables import PAIRS_SCHEMA, scalar_columns


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """Lance and tar; ``score_overall`` is null in every pair (no VLM judge ran)."""
    out = tmp_path_factory.mktemp("where-tar") / "out"
    with DatasetWriter(out, max_samples=8) as writer:
        for sample in make_samples(shared_data, 24):
            writer.write(sample)
    return out


@pytest.fixture(scope="module")
def tar_only(built: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = Path(shutil.copytree(built, tmp_path_factory.mktemp("tar-only") / "out"))
    shutil.rmtree(out / "lance")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest.update(formats=["tar"], tables={})
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


@pytest.fixture
def json_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Keys of the samples whose json is read (every json read goes through here)."""
    keys: list[str] = []
    original = BuiltDataset.read_sample_json

    def spy(self: BuiltDataset, shard: str, entry: dict) -> dict:
        keys.append(entry["key"])
        return original(self, shard, entry)

    monkeypatch.setattr(BuiltDataset, "read_sample_json", spy)
    return keys


def _ids(out: Path, flt: PairFilter) -> list[str]:
    table = select_pairs(open_dataset(out), flt, columns=["pair_id"])
    return sorted(table.column("pair_id").to_pylist())


@pytest.mark.parametrize(
    ("where", "some"),
    [
        ("score_overall > 0.6", False),
        ("score_overall IS NULL AND score_identity > 0.6", True),
        ("NOT (score_overall <= 0.6) OR shot_index = 1", True),
    ],
)
def test_a_score_null_everywhere_filters_on_tar_as_on_lance(
    built: Path, tar_only: Path, where: str, some: bool
) -> None:
    flt = PairFilter.make(passed=None, where=where)
    on_lance = _ids(built, flt)
    assert _ids(tar_only, flt) == on_lance
    assert bool(on_lance) == some
    ds = PairDataset(tar_only, format="tar", fields=("meta",), passed=None, where=where, shuffle=False)
    assert [s["meta"]["pair_id"] for s in ds] == on_lance


def test_a_where_over_index_columns_reads_no_json(
    tar_only: Path, json_reads: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    where = "difficulty_level >= 2 AND quality_score > 0.5 AND target_id <> 'P001'"
    flt = PairFilter.make(passed=None, where=where)
    assert flt.index_only
    dataset = open_dataset(tar_only)
    selection = select(dataset, flt, "tar")
    assert json_reads == [] and 0 < len(selection) < 24
    rows = select_pairs(dataset, flt, columns=["pair_id", "difficulty", "quality_score"])
    assert json_reads == [] and sorted(rows.column("pair_id").to_pylist()) == selection.pair_ids

    read: list[str] = []
    original = BuiltDataset.read_sample

    def spy(self: BuiltDataset, shard: str, entry: dict, fields=None) -> dict:
        read.append(entry["key"])
        return original(self, shard, entry, fields)

    monkeypatch.setattr(BuiltDataset, "read_sample", spy)
    ds = PairDataset(tar_only, format="tar", fields=("meta",), passed=None, where=where, shuffle=False)
    assert [s["meta"]["pair_id"] for s in ds] == selection.pair_ids
    assert set(read) | set(json_reads) <= set(selection.pair_ids)


def test_a_where_over_other_columns_asks_the_pairs_table(
    built: Path, json_reads: list[str]
) -> None:
    flt = PairFilter.make(passed=None, where="score_identity > 0.6 AND shot_index = 1")
    assert not flt.index_only
    selection = select(open_dataset(built), flt, "tar")
    assert json_reads == []
    assert selection.pair_ids == _ids(built, flt) and selection.pair_ids


def test_tar_only_reads_the_json_of_index_candidates_only(
    built: Path, tar_only: Path, json_reads: list[str]
) -> None:
    flt = PairFilter.make(passed=None, where="difficulty = 'hard' AND score_identity > 0.6")
    selection = select(open_dataset(tar_only), flt, "tar")
    hard = _ids(built, PairFilter.make(passed=None, difficulty="hard"))
    assert sorted(json_reads) == hard and len(hard) < 24
    assert selection.pair_ids == _ids(built, flt)


def test_select_pairs_on_tar_is_typed_by_the_schema(built: Path, tar_only: Path) -> None:
    flt = PairFilter.make(passed=None)
    names = [c for c in scalar_columns("pairs") if c != "target_boxes"]
    on_tar = select_pairs(open_dataset(tar_only), flt, columns=names).sort_by("pair_id")
    on_lance = select_pairs(open_dataset(built), flt, columns=names).sort_by("pair_id")
    for name in names:
        assert on_tar.schema.field(name).type == PAIRS_SCHEMA.field(name).type, name
    assert on_tar.to_pylist() == on_lance.to_pylist()


def test_an_index_entry_of_the_wrong_type_is_named(tar_only: Path, tmp_path: Path) -> None:
    out = Path(shutil.copytree(tar_only, tmp_path / "out"))
    index = sorted((out / "tar").glob("*.index.json"))[0]
    data = json.loads(index.read_text())
    data["samples"][1]["quality_score"] = "high"
    index.write_text(json.dumps(data))
    key = data["samples"][1]["key"]
    with pytest.raises(ValueError, match=rf"pairs-.*\.tar: sample '{key}': .*pairs schema"):
        select_pairs(open_dataset(out), PairFilter.make(min_score=0.5), columns=["pair_id"])
