"""Near-duplicate shots of one video and photos repeated across products are found before
pairing, listed by `pvtt plan` and the build report, and left out (``pairs.near_duplicates``)."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from catalog_factory import make_catalog
from conftest import shared_data_dir
from PIL import Image

from pvtt.builder.cache import ArtifactCache
from pvtt.builder.catalog import load_catalog
from pvtt.builder.demo import FPS, PRODUCTS, render_photo, render_shot
from pvtt.builder.pipeline import plan_clips
from pvtt.builder.report import BuildReport
from pvtt.builder.stages.dedup import (
    Fingerprint,
    duplicate_photos,
    fingerprint,
    hash_distance,
    near_identical,
)
from pvtt.builder.video import write_mp4
from pvtt.loaders.store import open_dataset
from pvtt.schemas.config import ConfigError, load_config
from pvtt.tools.cli import main

SHOT = 16
CONFIG = """
[shots]
min_scene_len = 6
min_duration_s = 0.3
min_frames = 8
[pairs]
strategy = "all"
near_duplicates = "{mode}"
"""


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def _copy(photo: Path, to: Path) -> None:
    """``photo`` as a reseller would repost it: three quarters the size, as a JPEG."""
    with Image.open(photo) as img:
        img = img.convert("RGB")
        img.resize((img.width * 3 // 4, img.height * 3 // 4), Image.LANCZOS).save(to, quality=70)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three products: ``loop``'s video shows shots A, B and A again; ``mug``'s photo is
    reposted (resized, re-encoded) as ``copycat``'s; every other shot and photo is distinct."""
    root = tmp_path_factory.mktemp("dedup") / "catalog"
    (root / "videos").mkdir(parents=True)
    (root / "images").mkdir(parents=True)
    neck, mug = PRODUCTS[0], PRODUCTS[4]
    rng = np.random.default_rng(7)
    first, box = render_shot(neck, rng, SHOT)
    second, _ = render_shot(neck, rng, SHOT)
    write_mp4(root / "videos" / "loop.mp4", np.concatenate([first, second, first]), FPS)
    Image.fromarray(render_photo(neck, rng)).save(root / "images" / "loop-1.png")
    mug_shot, mug_box = render_shot(mug, rng, SHOT)
    write_mp4(root / "videos" / "mug.mp4", mug_shot, FPS)
    Image.fromarray(render_photo(mug, rng)).save(root / "images" / "mug-1.png")
    copy_shot, copy_box = render_shot(PRODUCTS[3], rng, SHOT)
    write_mp4(root / "videos" / "copycat.mp4", copy_shot, FPS)
    _copy(root / "images" / "mug-1.png", root / "images" / "copycat-1.jpg")
    Image.fromarray(render_photo(PRODUCTS[3], rng)).save(root / "images" / "copycat-2.png")

    def row(pid: str, demo, box, images):  # noqa: ANN001, ANN202 - a products.csv row
        return {"id": pid, "category": demo.category, "subcategory": demo.subcategory,
                "video": f"videos/{pid}.mp4", "images": images, "prompt": demo.subcategory,
                "first_frame_box": tuple(round(v) for v in box)}  # fmt: skip

    make_catalog(root, [
        row("loop", neck, box, ["images/loop-1.png"]),
        row("mug", mug, mug_box, ["images/mug-1.png"]),
        row("copycat", PRODUCTS[3], copy_box, ["images/copycat-1.jpg", "images/copycat-2.png"]),
    ])  # fmt: skip
    return root


def _config(tmp_path: Path, mode: str) -> Path:
    path = tmp_path / f"{mode}.toml"
    path.write_text(CONFIG.format(mode=mode), encoding="utf-8")
    return path


def _plan(catalog: Path, config: Path, cache: Path) -> dict:
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        code = main(["plan", str(catalog), "--config", str(config), "--json",
                     "--cache-dir", str(cache)])  # fmt: skip
    assert code == 0
    return json.loads(buffer.getvalue())


def test_a_reposted_photo_is_near_identical_a_different_one_is_not(tmp_path: Path) -> None:
    car = shared_data_dir() / "rembg" / "car-2.jpg"
    _copy(car, tmp_path / "repost.jpg")
    original, repost = fingerprint(_rgb(car)), fingerprint(_rgb(tmp_path / "repost.jpg"))
    other = fingerprint(_rgb(shared_data_dir() / "rembg" / "car-3.jpg"))
    assert hash_distance(original, repost) <= 2 and near_identical(original, repost, 6)
    assert hash_distance(original, other) > 16 and not near_identical(original, other, 6)
    # a colour variant: the same picture with its red and blue swapped is another product
    variant = fingerprint(_rgb(car)[..., ::-1])
    assert not near_identical(original, variant, 64)


def test_photos_of_one_product_may_look_alike() -> None:
    same = Fingerprint(0x0F0F, (10,) * 48)
    found = duplicate_photos(["a-1", "a-2", "b-1", "c-1"], ["a", "a", "b", "c"],
                             [same, same, same, Fingerprint(~0x0F0F & (2**64 - 1), (10,) * 48)],
                             max_bits=6)  # fmt: skip
    assert [(d.item, d.kept, d.bits) for d in found] == [("b-1", "a-1", 0)]


def test_plan_lists_and_build_leaves_out_the_copies(catalog: Path, tmp_path: Path) -> None:
    config = _config(tmp_path, "drop")
    plan = _plan(catalog, config, tmp_path / "cache")
    listed = {(d["stage"], d["item"]) for d in plan["near_duplicates"]}
    assert listed == {
        ("dedup-shots", "videos/loop.mp4@32"),
        ("dedup-photos", "images/copycat-1.jpg (product copycat)"),
    }
    out = tmp_path / "out"
    assert main(["build", str(catalog), str(out), "--config", str(config),
                 "--cache-dir", str(tmp_path / "cache"), "--no-progress"]) == 0  # fmt: skip
    report = out / "report"
    rejects = [json.loads(line) for line in (report / "rejects.jsonl").read_text().splitlines()]
    dropped = {(r["stage"], r["item"]) for r in rejects if r["stage"].startswith("dedup")}
    assert dropped == listed
    shot = next(r for r in rejects if r["stage"] == "dedup-shots")
    assert shot["reason"].startswith("near-duplicate shot: repeats frames 0-16")
    found = [json.loads(line) for line in (report / "duplicates.jsonl").read_text().splitlines()]
    assert {(d["stage"], d["item"]) for d in found} == listed
    stats = json.loads((report / "statistics.json").read_text())
    assert stats["counts"]["pairs.planned"] == plan["pairs"]
    # neither the repeated shot nor the reposted photo is in a pair; the rest are
    pairs = open_dataset(out).pairs.to_table(columns=["pair_id"]).column("pair_id").to_pylist()
    assert pairs and not any(p.startswith("loop_s002") or p.endswith("copycat-1") for p in pairs)
    assert any(p.endswith("__mug-1") for p in pairs)


def test_plan_says_what_it_would_leave_out(
    catalog: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, "drop")
    assert main(["plan", str(catalog), "--config", str(config), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "near-duplicates left out of pairing: 1 shot, 1 photo" in text
    assert "  videos/loop.mp4@32: near-duplicate shot: repeats frames 0-16" in text


@pytest.mark.parametrize("mode", ["off", "report"])
def test_off_and_report_keep_every_shot_and_photo(
    catalog: Path, tmp_path: Path, mode: str
) -> None:
    kept = _plan(catalog, _config(tmp_path, mode), tmp_path / "cache")
    dropped = _plan(catalog, _config(tmp_path, "drop"), tmp_path / "cache")
    assert kept["clips"] == dropped["clips"] + 1
    assert kept["pairs"] > dropped["pairs"]
    names = {d["item"] for d in kept["near_duplicates"]}
    assert names == (set() if mode == "off" else {d["item"] for d in dropped["near_duplicates"]})


def test_a_left_out_shot_does_not_renumber_the_others(catalog: Path, tmp_path: Path) -> None:
    ids = {}
    for mode in ("off", "drop"):
        config = load_config(_config(tmp_path, mode))
        jobs = plan_clips(load_catalog(catalog), config, ArtifactCache(tmp_path / "c"),
                          BuildReport())  # fmt: skip
        ids[mode] = [j.clip_id for j in jobs]
    assert ids["drop"] == [i for i in ids["off"] if i != "loop_s002"]
    assert len(ids["off"]) == len(ids["drop"]) + 1


def test_bad_settings_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pairs.near_duplicates must be drop, report or off"):
        load_config(None, {"pairs.near_duplicates": "yes"})
    with pytest.raises(ConfigError, match="pairs.near_duplicate_bits must be 0..64"):
        load_config(None, {"pairs.near_duplicate_bits": 65})
