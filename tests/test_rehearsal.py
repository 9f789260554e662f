"""The rehearsal catalog has the seed catalog's shape, and a tiny rehearsal runs every step.

The end-to-end test writes a tiny rehearsal catalog (3 products, 2 shots each, 320x180),
builds it as two ranks at once, merges, verifies, queries, streams it through
``PairDataset`` + ``DataLoader``, exports the seed layout and writes the report, each
as its own process, exactly as ``python -m pvtt.tools.bench.rehearsal --tiny`` does.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from pvtt.builder.catalog import check_catalog
from pvtt.builder.rehearsal_catalog import (
    CATEGORIES,
    make_rehearsal_catalog,
    plan_rehearsal_catalog,
)
from pvtt.builder.rehearsal_scenes import SETS, ShotPlan, make_set, render_shot
from pvtt.builder.rehearsal_shapes import FAMILIES, Look, render_product
from pvtt.schemas.taxonomy import Difficulty, Taxonomy
from pvtt.tools.bench.rehearsal import (
    TINY,
    Rehearsal,
    Size,
    Step,
    from_json,
    growth,
    markdown,
    rehearse,
    to_json,
)

ETSY_ID = re.compile(r"^etsy-\d{10}-[a-z0-9]+(-[a-z0-9]+)+$")


def test_plan_has_the_seed_catalogs_shape() -> None:
    plan = plan_rehearsal_catalog(40, fps=24)
    taxonomy = Taxonomy.default()
    assert {p.category for p in plan} == set(taxonomy.categories[:CATEGORIES])
    assert len({p.id for p in plan}) == 40
    for p in plan:
        assert ETSY_ID.match(p.id) and len(p.id) >= 35, p.id
        assert 3 <= len(p.photos) <= 8 and p.photos[0] == "plain"
        assert 3 <= len(p.shots) <= 5
        assert all(3 * 24 <= s.frames <= 10 * 24 for s in p.shots)
        kinds = [s.set_kind for s in p.shots]
        assert all(a != b for a, b in zip(kinds, kinds[1:], strict=False)), "consecutive shots share a set"
    assert 35 <= sum(len(p.shots) for p in plan[:10]) <= 45  # the PoC: about 40 clips
    assert len({p.look.family for p in plan}) >= 12


def test_small_catalogs_have_the_named_shapes_and_every_difficulty() -> None:
    plan = plan_rehearsal_catalog(10)
    subs = {p.subcategory for p in plan}
    assert {"ring", "necklace", "mug", "vase", "perfume", "board game", "tote", "keychain"} <= subs
    taxonomy = Taxonomy.default()
    levels = {
        taxonomy.difficulty(a.category, a.subcategory, b.category, b.subcategory)
        for a in plan for b in plan if a.id != b.id
    }
    assert levels == set(Difficulty)


def _enclosed_holes(alpha: np.ndarray) -> int:
    """Background regions the product encloses (not reachable from the border)."""
    background = (alpha < 0.5).astype(np.uint8)
    count, labels = cv2.connectedComponents(background, connectivity=4)
    border = set(np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])))
    return len(set(range(1, count)) - border)


@pytest.mark.parametrize(
    ("family", "subcategory"),
    [("rigid-small", "ring"), ("vessel", "mug"), ("chain", "keychain"), ("bag", "tote"), ("chain", "necklace")],
)
def test_products_with_holes_have_holes(family: str, subcategory: str) -> None:
    look = Look(family, subcategory, (190, 190, 200), (200, 40, 60), "metal", "plain", 1)
    _, alpha = render_product(look, 256)
    assert _enclosed_holes(alpha) >= 1


def test_every_form_family_draws_a_shaded_solid() -> None:
    taxonomy = Taxonomy.default()
    for category in taxonomy.categories:
        for sub in taxonomy.subcategories(category):
            family = taxonomy.form_family(category, sub)
            assert family in FAMILIES, f"no drawing for form family {family!r}"
            look = Look(family, sub, (120, 140, 200), (230, 200, 90), "glossy", "plain", 3)
            rgb, alpha = render_product(look, 128, turn=0.4, angle=10)
            inside = alpha > 0.9
            assert 0.02 < inside.mean() < 0.9, (category, sub, inside.mean())
            luma = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[inside]
            assert luma.std() > 6, f"{sub}: flat colour, no shading"


def test_sets_are_textured_and_shots_move() -> None:
    rng = np.random.default_rng(0)
    for kind in SETS:
        texture = cv2.cvtColor(make_set(kind, rng, (180, 320)), cv2.COLOR_RGB2GRAY).astype(np.float32)
        detail = np.abs(cv2.Laplacian(texture, cv2.CV_32F)).mean()
        assert detail > 0.5 and texture.std() > 4, kind
    look = Look("vessel", "mug", (40, 80, 160), (230, 230, 240), "glossy", "stripes", 3)
    frames = list(render_shot(look, ShotPlan(24, "wood", "pan", 0.2, 0.5, 7), (320, 180)))
    first, last = frames[0][0].astype(np.int16), frames[-1][0].astype(np.int16)
    assert np.abs(first - last).mean() > 5, "the camera did not move"
    assert all(box is not None for _, box in frames)


def test_catalog_passes_check(tmp_path: Path) -> None:
    made = make_rehearsal_catalog(tmp_path / "catalog", 2, scale=0.125, shots=(2, 2), shot_seconds=(1.0, 1.0),
                                  photos=(3, 3), fps=12)
    catalog, problems = check_catalog(made.root)
    assert problems == []
    assert [p.id for p in catalog] == [p.id for p in made.products]
    assert all(p.first_frame_box is not None for p in catalog)
    assert made.frame == (160, 90)
    assert sorted(p.name for p in (made.root / "images").rglob("*.jpg"))[0].startswith("il_fullxfull.")


def test_tiny_rehearsal_runs_every_step(tmp_path: Path) -> None:
    run = rehearse(tmp_path, TINY)
    assert list(run.steps) == ["catalog", "check", "build", "merge", "verify", "stats", "query", "stream",
                               "export-pairs", "report"]
    assert len(run.steps["build"]) == 2  # two ranks, at once
    assert run.work["pairs"] > 0 and run.streamed == run.exported == run.work["pairs"]
    assert all(s.peak_rss_mb > 0 and s.wall_s > 0 for v in run.steps.values() for s in v)
    assert {"shots", "inpaint", "insert", "score"} <= set(run.stages_s)
    assert 0 < run.work["clips_built"] <= run.work["clips"] and run.work["clip_frames"] > 0
    # every generated shot was found by shot detection and kept by the shot filter (each
    # rank plans every clip of the catalog, then makes its own share)
    for rank in range(2):
        stats = json.loads((tmp_path / "out" / "report" / f"r{rank:03d}" / "statistics.json").read_text())
        assert stats["counts"]["clips.planned"] == run.work["clips"] == TINY.products * 2
    pairs = json.loads((tmp_path / "export" / "annotations" / "pairs.json").read_text())["pairs"]
    assert max(len(p["pair_id"]) for p in pairs) > 100  # three Etsy-style ids: longer than a USTAR name
    assert (tmp_path / "report.html").stat().st_size > 0
    assert "| build |" in markdown([run])


def _fake(products: int, inpaint: float, insert: float, frames: int, pairs: int) -> Rehearsal:
    steps = {"build": [Step("build", [], 1.0, inpaint + insert, 100.0, 0, 2.0, "")],
             "stream": [Step("stream", [], 1.0, pairs * 0.1, 50.0, 0, 2.0, "")]}
    work = {"products": products, "clips": products * 4, "frames": frames, "images": products * 5,
            "clips_built": products * 4, "clip_frames": frames, "pairs": pairs}
    return Rehearsal(Size(products=products), work, steps, {"inpaint": inpaint, "insert": insert}, pairs, pairs, 0)


def test_growth_marks_what_grows_faster_than_its_work() -> None:
    runs = [_fake(10, 100.0, 50.0, 1000, 80), _fake(40, 400.0, 400.0, 4000, 320)]
    g = growth(runs)
    stages = {row["name"]: row for row in g["stages"]}
    assert stages["inpaint"]["per_unit"] == 1.0 and not stages["inpaint"]["superlinear"]
    assert stages["insert"]["growth"] == 8.0 and stages["insert"]["superlinear"]
    assert g["work"]["pairs"] == 4.0
    table = markdown(runs)
    assert "| insert | 50.0 | 400.0 | 8.00 | 4.00 (pairs) | 2.00 **faster than work** |" in table
    assert markdown(from_json(json.loads(json.dumps(to_json(runs))))) == table  # --from-json prints it again
