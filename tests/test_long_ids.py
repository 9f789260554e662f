"""Catalog ids of 64 and more characters (Etsy-style) build, and every tar reader reads them.

A pair id joins three such ids, so its tar member names pass USTAR's 100 bytes: they get
PAX headers, which pvtt's own reader, ``pvtt verify``, ``webdataset``, ``tarfile`` and GNU
tar must all read back under the right keys. Ids that would make pair ids too long to
name a file are refused by ``pvtt catalog check`` instead of failing later.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from catalog_factory import make_catalog
from shop_catalog import write_shop_catalog

from pvtt.builder.catalog import MAX_ID_LENGTH, check_catalog
from pvtt.loaders import PairDataset
from pvtt.loaders.store import open_dataset
from pvtt.loaders.tar_reader import ShardFormatError, read_sample, read_sample_json
from pvtt.loaders.verify import verify_dataset
from pvtt.schemas.shards import MAX_KEY_LENGTH
from pvtt.tools.cli import main

STEM = "etsy-1234567890-handmade-sterling-silver-necklace-with-a-long-name"
IDS = (f"{STEM}-a", f"{STEM}-b")  # 68 characters each; pair ids of 215


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("long-ids")
    catalog, config = write_shop_catalog(root / "catalog", IDS)
    assert main(["catalog", "check", str(catalog)]) == 0
    out = root / "out"
    args = ["build", str(catalog), str(out), "--config", str(config), "--formats", "lance,tar",
            "--limit-pairs", "2", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    return out


def _pair_ids(out: Path) -> set[str]:
    ids = set(open_dataset(out).pairs.to_table(columns=["pair_id"]).column("pair_id").to_pylist())
    assert ids and all(len(i) > 200 for i in ids)
    return ids


def _shards(out: Path) -> list[Path]:
    return sorted((out / "tar").glob("*.tar"))


def test_build_and_verify(built: Path) -> None:
    report = verify_dataset(open_dataset(built))
    assert report.ok, report.problems
    assert report.pairs_tar == report.pairs_lance == len(_pair_ids(built))
    assert main(["verify", str(built)]) == 0


def test_pvtt_reads_the_tar_shards(built: Path) -> None:
    ids = _pair_ids(built)
    ds = PairDataset(built, format="tar", passed=None, fields=("synth_video", "target_image", "meta"),
                     num_frames=2, shuffle=False)  # fmt: skip
    samples = list(ds)
    assert {s["meta"]["pair_id"] for s in samples} == ids
    assert all(s["synth_video"].shape[0] == 2 for s in samples)
    # the index's byte ranges start at each sample's PAX header and stay exact
    dataset = open_dataset(built)
    for shard in dataset.shards:
        raw = dataset.shard_path(shard).read_bytes()
        for entry in dataset.shard_index(shard):
            assert raw[entry["offset"] + 156 : entry["offset"] + 157] == tarfile.XHDTYPE
            members = read_sample(dataset.shard_path(shard), entry)
            assert json.loads(members["json"]) == read_sample_json(dataset.shard_path(shard), entry)
            assert json.loads(members["json"])["pair_id"] == entry["key"]


def test_webdataset_keys_are_the_pair_ids(built: Path) -> None:
    webdataset = pytest.importorskip("webdataset")
    urls = [str(p) for p in _shards(built)]
    samples = list(webdataset.WebDataset(urls, shardshuffle=False, empty_check=False))
    assert {s["__key__"] for s in samples} == _pair_ids(built)
    for sample in samples:
        assert {"json", "synth.mp4", "source.mp4", "target.png"} <= set(sample)
        assert json.loads(sample["json"])["pair_id"] == sample["__key__"]


def _expected_names(out: Path) -> list[str]:
    fields = ("json", "synth.mp4", "source.mp4", "target.png")
    return sorted(f"{key}.{field}" for key in _pair_ids(out) for field in fields)


def test_python_tarfile_reads_the_names(built: Path) -> None:
    names = []
    for shard in _shards(built):
        with tarfile.open(shard) as tar:
            names += tar.getnames()
    assert sorted(names) == _expected_names(built)


@pytest.mark.skipif(shutil.which("tar") is None, reason="GNU tar is not installed")
def test_gnu_tar_lists_the_names(built: Path) -> None:
    names = []
    for shard in _shards(built):
        listing = subprocess.run(["tar", "tf", str(shard)], capture_output=True, text=True,
                                 check=True)  # fmt: skip
        names += listing.stdout.split()
    assert sorted(names) == _expected_names(built)


def test_a_bad_pax_record_is_a_format_error(built: Path, tmp_path: Path) -> None:
    dataset = open_dataset(built)
    shard = dataset.shards[0]
    entry = dataset.shard_index(shard)[0]
    raw = bytearray(dataset.shard_path(shard).read_bytes())
    record = entry["offset"] + 512  # the PAX header's data: "NNN path=...\n"
    raw[record : record + 3] = b"999"  # a record length past the header's data
    broken = tmp_path / "broken.tar"
    broken.write_bytes(bytes(raw))
    with pytest.raises(ShardFormatError, match="broken.tar: bad PAX record"):
        read_sample(broken, entry)


def test_catalog_check_refuses_ids_too_long_to_name_files(tmp_path: Path) -> None:
    too_long = "x" * (MAX_ID_LENGTH + 1)
    long_ok = "y" * MAX_ID_LENGTH
    photo = "p" * 130  # fits beside short ids, not with a 100-character id as the source
    root = make_catalog(tmp_path / "catalog", [
        {"id": too_long, "category": "Jewelry", "subcategory": "necklace"},
        {"id": long_ok, "category": "Jewelry", "subcategory": "ring"},
        {"id": "mug-1", "category": "Home", "subcategory": "mug",
         "images": [f"images/{photo}.png", "images/mug-1-front.png"]},
    ], images_per_product=1)  # fmt: skip
    for name in (f"{photo}.png", "mug-1-front.png"):
        shutil.copy(next((root / "images").glob("y*.png")), root / "images" / name)
    catalog, problems = check_catalog(root)
    text = [str(p) for p in problems]
    assert any(
        f"products.csv:2: id: {too_long!r} is 101 characters, at most 100" in t for t in text
    )
    assert any(t.startswith("products.csv:4: images: file name too long") and long_ok in t
               and f"at most {MAX_KEY_LENGTH}" in t and f"{photo}.png" in t for t in text)  # fmt: skip
    assert len(problems) == 2, text
    assert [p.id for p in catalog] == [long_ok, "mug-1"]
    assert [path.name for path in catalog.product("mug-1").images] == ["mug-1-front.png"]
