"""The bad-input corpus through one build: each case rejected with its file named, or built.

The corpus (``python -m pvtt.tools.badinputs``) mixes every bad case with good products;
one build of it must finish, list each rejected case at its stage, build each accepted
one normalised, and lose nothing else.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pvtt.loaders.store import open_dataset, read_blobs_by_key
from pvtt.loaders.verify import verify_dataset
from pvtt.tools.badinputs import CLIP_BOX, Case, read_cases
from pvtt.tools.badinputs import main as write_corpus
from pvtt.tools.cli import main as pvtt

REJECTED = (
    "video-truncated", "video-truncated-faststart", "video-zero-byte", "video-text",
    "video-audio-only", "video-one-frame", "video-photo",
    "photo-truncated", "photo-zero-byte", "photo-text", "photo-link-out",
    "row-path-leaves", "row-path-absolute", "row-symlink-out", "row-missing-video",
    "row-duplicate-id", "row-unknown-category", "row-not-utf8",
)  # fmt: skip
ACCEPTED = (
    "good-neck-gold", "good-key-fob", "good-mug-blue",
    "video-8k", "video-odd-size", "video-rotated", "video-vfr",
    "row-quoted-fields", "csv-bom",
    "photo-cmyk", "photo-gray16", "photo-rgb48", "photo-gray", "photo-bilevel", "photo-palette",
    "photo-palette-alpha", "photo-alpha", "photo-gray-alpha", "photo-exif-rotated",
    "photo-odd-size",
)  # fmt: skip


class Built:
    """The corpus, its build and what the build holds, read once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.out = root / "out"
        self.cases = {case.name: case for case in read_cases(root)}
        self.rejects = [json.loads(line) for line in (self.out / "report/rejects.jsonl").open()]
        self.dataset = open_dataset(self.out)
        self.clips = self.dataset.table("clips").to_table(
            columns=["clip_id", "source_id", "subcategory", "width", "height", "fps",
                     "frame_count", "backends"]
        ).to_pylist()  # fmt: skip
        self.products = (
            self.dataset.table("products")
            .to_table(columns=["image_id", "product_id", "image_path", "width", "height"])
            .to_pylist()
        )
        self.pairs = self.dataset.pairs.to_table(
            columns=["pair_id", "source_id", "target_image", "width", "height"]
        ).to_pylist()

    def rejects_of(self, case: Case) -> list[dict]:
        return [r for r in self.rejects if case.names in r["item"] or case.names in r["reason"]]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("badinputs")
    assert write_corpus([str(root)]) == 0
    args = ["build", str(root / "catalog"), str(root / "out"), "--config", str(root / "build.toml")]
    assert pvtt([*args, "--no-progress"]) == 0  # the build finishes
    return Built(root)


def test_the_corpus_holds_every_case_listed_here(built: Built) -> None:
    assert sorted(built.cases) == sorted(REJECTED + ACCEPTED)
    assert {n for n, c in built.cases.items() if c.expect == "reject"} == set(REJECTED)
    assert all(c.doc for c in built.cases.values())


@pytest.mark.parametrize("name", REJECTED)
def test_rejected_case_is_listed_with_its_file(built: Built, name: str) -> None:
    case = built.cases[name]
    found = built.rejects_of(case)
    assert found, f"{case.names} is in no reject: {built.rejects}"
    assert {r["stage"] for r in found} == {case.stage}
    if case.kind == "video":  # nothing was built from it
        assert case.product not in {c["source_id"] for c in built.clips}
    if case.kind == "image":
        assert case.file not in {p["image_path"] for p in built.products}
        assert case.product in {c["source_id"] for c in built.clips}  # its product stays
    if name == "row-duplicate-id":  # the first row with the id is the one built
        assert {c["subcategory"] for c in built.clips if c["source_id"] == case.product} == {"mug"}


@pytest.mark.parametrize("name", ACCEPTED)
def test_accepted_case_is_built(built: Built, name: str) -> None:
    case = built.cases[name]
    if case.kind == "image":
        _check_photo(built, case)
        return
    [clip] = [c for c in built.clips if c["source_id"] == case.product]
    assert any(p["source_id"] == case.product for p in built.pairs)
    width, height = clip["width"], clip["height"]
    assert width % 2 == 0 and height % 2 == 0
    assert max(width, height) <= max(CLIP_BOX) and min(width, height) <= min(CLIP_BOX)
    if case.display is not None:  # the shape as displayed: rotation applied, any size in
        assert width / height == pytest.approx(case.display[0] / case.display[1], rel=0.03)
    if name == "video-8k":
        assert clip["frame_count"] == 2 and (width, height) == CLIP_BOX
    if name == "video-vfr":  # resampled to its average rate, one frame per slot
        assert (clip["fps"], clip["frame_count"]) == (12.0, 24)
    if name == "row-quoted-fields":
        assert case.file in {p["image_path"] for p in built.products}
        detection = json.loads(clip["backends"])["detection"]
        assert detection["label"] == 'silver "chain", front\nsecond line'


def _check_photo(built: Built, case: Case) -> None:
    [product] = [p for p in built.products if p["image_path"] == case.file]
    assert (product["width"], product["height"]) == case.display  # upright (EXIF applied)
    assert any(p["target_image"] == case.file for p in built.pairs)
    blob = read_blobs_by_key(
        built.dataset.table("products"), "image_rgba", "image_id", [product["image_id"]]
    )[product["image_id"]]
    cutout = np.asarray(Image.open(io.BytesIO(blob)))
    assert cutout.dtype == np.uint8 and cutout.shape[2] == 4
    covered = (cutout[..., 3] > 128).mean()
    assert 0.2 < covered < 0.98, f"cut-out covers {covered:.0%} of its box"
    if case.name != "photo-bilevel":  # one bit leaves the product one flat colour
        assert cutout[..., :3][cutout[..., 3] > 128].std() > 10  # its stripes and shading


def test_nothing_else_is_lost(built: Built) -> None:
    # a row of bad photos beside a good one stays: only those photos are rejected
    kept = {c.product for c in built.cases.values() if c.expect == "accept" or c.kind == "image"}
    assert {c["source_id"] for c in built.clips} == kept
    assert {p["source_id"] for p in built.pairs} == kept
    every_reject_explained = [
        r for r in built.rejects
        if not any(c.names in r["item"] or c.names in r["reason"]
                   for c in built.cases.values() if c.expect == "reject")
    ]  # fmt: skip
    assert every_reject_explained == []
    report = verify_dataset(built.dataset)
    assert report.ok, report.problems
    stats = json.loads((built.out / "report/statistics.json").read_text())
    assert stats["rejects"] == len(built.rejects)
    assert built.dataset.manifest.complete
