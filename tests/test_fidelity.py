"""The pair fidelity benchmark: its truth is exact, its metrics are right, and it runs."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from pvtt.builder.boxes import masks_to_boxes
from pvtt.builder.stages.cutout import trim_to_alpha
from pvtt.tools.bench import fidelity
from pvtt.tools.bench.fidelity import (
    PSNR_CAP,
    boundary_f,
    box_ious,
    frame_ious,
    ideal_composite,
    label,
    psnr,
    residue,
    ssim,
)
from pvtt.tools.bench.fidelity_truth import (
    FAMILIES,
    CaseSpec,
    TruthCase,
    case_specs,
    composite,
    generate_case,
    split_of,
    straight_rgba,
)

TINY = {"size": (128, 72), "frames": 6, "photo_size": 96}


@pytest.fixture(scope="module")
def cases(shared_data: Path) -> dict[str, TruthCase]:
    """One tiny case of each family whose truth is most intricate."""
    families = ("ring", "chain", "occlusion", "fast-motion", "frame-edge", "light-on-light")
    return {f: generate_case(CaseSpec(f, 3), shared_data, **TINY) for f in families}


def _digest(case: TruthCase) -> str:
    h = hashlib.sha256()
    for array in (case.clip.frames, case.clip.plate, case.clip.layer, case.photo.image,
                  case.photo.alpha, case.photo.cutout):
        h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


def test_compositing_the_truth_reproduces_the_clip_and_the_photo(cases) -> None:
    for family, case in cases.items():
        clip = case.clip
        for t in range(len(clip.frames)):
            frame, alpha = composite(clip.plate[t], clip.layer[t])
            assert np.array_equal(frame, clip.frames[t]), (family, t)
            assert np.array_equal(alpha >= 0.5, clip.masks[t]), (family, t)
        assert clip.masks[0].any(), family  # the first frame prompts the segmenter
        boxes = clip.boxes
        assert np.array_equal(boxes, masks_to_boxes(clip.masks), equal_nan=True)
        photo = case.photo
        image, alpha = composite(photo.background, photo.layer)
        assert np.array_equal(image, photo.image), family
        assert np.allclose(alpha, photo.alpha)
        assert np.array_equal(photo.cutout, trim_to_alpha(straight_rgba(photo.layer)))


def test_cases_exercise_what_their_family_names(cases) -> None:
    edge = cases["frame-edge"].clip.masks
    assert (edge[:, 0].any() or edge[:, -1].any() or edge[:, :, 0].any() or edge[:, :, -1].any())
    occluded = cases["occlusion"].clip
    assert (occluded.plate != occluded.frames).any()
    ring = cases["ring"].clip.masks[0]
    ys, xs = np.nonzero(ring)
    centre = ring[int(ys.mean()), int(xs.mean())]
    assert not centre  # the hole of the ring is not part of it
    blurred = cases["fast-motion"].clip.alpha
    assert ((blurred > 0.05) & (blurred < 0.95)).sum() > 0.1 * (blurred >= 0.95).sum()


def test_same_seed_same_case_and_the_split_is_stated(shared_data: Path) -> None:
    spec = CaseSpec("holed", 7)
    assert _digest(generate_case(spec, shared_data, **TINY)) == _digest(
        generate_case(spec, shared_data, **TINY))
    assert _digest(generate_case(CaseSpec("holed", 8), shared_data, **TINY)) != _digest(
        generate_case(spec, shared_data, **TINY))
    assert [split_of(s) for s in range(6)] == ["held-out"] + ["tuning"] * 4 + ["held-out"]
    held = case_specs(20, "held-out")
    assert len(held) == 4 * len(FAMILIES) and all(s.seed % 5 == 0 for s in held)
    assert len(case_specs(20, "all")) == 20 * len(FAMILIES)
    with pytest.raises(ValueError, match="unknown case family"):
        CaseSpec("spirals", 0)


def test_mask_metrics_on_constructed_masks() -> None:
    a = np.zeros((3, 40, 60), bool)
    a[:, 10:30, 10:30] = True
    b = np.zeros_like(a)
    b[:, 10:30, 35:55] = True
    assert frame_ious(a, a).tolist() == [1.0, 1.0, 1.0]
    assert frame_ious(a, b).tolist() == [0.0, 0.0, 0.0]
    empty = np.zeros_like(a)
    assert frame_ious(empty, empty).tolist() == [1.0, 1.0, 1.0]
    assert boundary_f(a[0], a[0], 1.0) == 1.0
    assert boundary_f(a[0], b[0], 2.0) == 0.0
    shifted = np.roll(a[0], 1, axis=1)
    assert boundary_f(shifted, a[0], 1.5) == 1.0 and boundary_f(shifted, a[0], 0.5) < 1.0
    assert boundary_f(empty[0], empty[0], 1.0) == 1.0 and boundary_f(a[0], empty[0], 1.0) == 0.0


def test_image_metrics_on_constructed_images() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    assert psnr(img, img) == PSNR_CAP
    brighter = np.clip(img.astype(int) + 10, 0, 255).astype(np.uint8)
    flat = np.full_like(img, 100)
    assert psnr(flat + 10, flat) == pytest.approx(10 * math.log10(255**2 / 100))
    region = np.zeros(img.shape[:3], bool)
    assert math.isnan(psnr(img, brighter, region))
    region[:, :8] = True
    assert psnr(img, img, region) == PSNR_CAP
    assert ssim(img, img) == pytest.approx(1.0)
    assert ssim(rng.integers(0, 256, img.shape, dtype=np.uint8), img) < 0.1
    assert box_ious(np.array([[0, 0, 10, 10], [np.nan] * 4, [np.nan] * 4, [0, 0, 10, 10]]),
                    np.array([[0, 0, 10, 10], [np.nan] * 4, [0, 0, 5, 5], [0, 0, 10, 5]])
                    ).tolist() == [1.0, 1.0, 0.0, 0.5]


def test_residue_of_the_source_is_high_and_of_the_true_plate_zero(cases) -> None:
    for family, case in cases.items():
        clip = case.clip
        assert residue(clip.frames, clip.frames, clip.plate, clip.masks) == 1.0, family
        assert residue(clip.plate, clip.frames, clip.plate, clip.masks) == 0.0, family
        half = ((clip.frames.astype(int) + clip.plate) // 2).astype(np.uint8)
        assert 0.0 <= residue(half, clip.frames, clip.plate, clip.masks) <= 1.0


def test_ideal_composite_pastes_the_cutout_in_its_boxes() -> None:
    plate = np.full((2, 40, 60, 3), 50, np.uint8)
    cutout = np.zeros((10, 20, 4), np.uint8)
    cutout[..., 0] = 200
    cutout[..., 3] = 255
    boxes = np.array([[10, 10, 30, 20], [np.nan] * 4], np.float32)
    out = ideal_composite(plate, cutout, boxes)
    assert (out[0, 10:20, 10:30, 0] == 200).all() and (out[0, :10] == 50).all()
    assert np.array_equal(out[1], plate[1])
    clear = cutout.copy()
    clear[..., 3] = 0
    assert np.array_equal(ideal_composite(plate, clear, boxes), plate)


def test_labels_name_every_defect() -> None:
    good = {"mask_iou": 0.95, "residue": 0.01, "plate_psnr": 33.0, "alpha_iou": 0.97,
            "box_iou": 0.9, "insert_ssim": 0.8}
    assert label(good) == (False, [])
    bad = {**good, "mask_iou": 0.4, "residue": 0.3, "alpha_iou": None}
    defective, reasons = label(bad)
    assert defective and [r.split()[0] for r in reasons] == ["mask_iou", "residue"]
    assert label(good, lost="clip: product lost")[1] == ["no pair (clip: product lost)"]


def test_quick_run_end_to_end(shared_data: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "fidelity.json"
    assert fidelity.main(["--quick", "--families", "baseline,ring", "--data", str(shared_data),
                          "--json", str(out), "--sheets", str(tmp_path / "sheets")]) == 0
    printed = capsys.readouterr().out
    assert "| baseline | 1 |" in printed and "mask IoU >= 0.85" in printed
    report = json.loads(out.read_text())
    assert [c["case"] for c in report["cases"]] == ["baseline-000", "ring-000"]
    assert report["backends"]["segmenter"]["backend"] == "cpu-tracker-grabcut"
    for case in report["cases"]:
        assert case["split"] == "held-out"
        assert 0.0 <= case["metrics"]["alpha_iou"] <= 1.0
        assert case["defective"] == bool(case["reasons"])
        if case["lost"] is None:
            assert isinstance(case["passed"], bool)
            assert 0.0 <= case["metrics"]["mask_iou"] <= 1.0
            assert case["metrics"]["insert_ssim_oracle"] is not None
    gate = report["summary"]["held-out"]["gate"]
    assert gate["pairs"] + gate["lost"] == 2
    assert sorted(p.name for p in (tmp_path / "sheets").iterdir()) == [
        "baseline-000.png", "ring-000.png"]


def test_a_backend_is_chosen_by_name_and_a_wrong_one_is_refused(shared_data, capsys) -> None:
    with pytest.raises(SystemExit):
        fidelity.main(["--quick", "--families", "baseline", "--set", "inpainter.backend=nope",
                       "--data", str(shared_data)])
    assert "nope" in capsys.readouterr().err


def _pair(defective: bool, removal: float, quality: float = 0.9, split: str = "tuning") -> dict:
    return {"split": split, "lost": None, "defective": defective, "quality_score": quality,
            "scores": {"removal": removal, "mask": 1.0, "insert": 1.0, "cutout": 1.0}}


def test_calibration_fits_a_limit_on_tuning_and_reports_held_out(tmp_path, capsys) -> None:
    from pvtt.tools.bench import fidelity_calibrate as cal

    tuning = [_pair(True, r) for r in (0.2, 0.3, 0.5)] + [_pair(False, r) for r in (0.01, 0.05, 0.1)]
    tuning.append(_pair(True, 0.0, quality=0.5))  # the weighted mean catches this one
    fitted = cal.fit_limits(tuning, keep=0.8, threshold=0.7)
    assert fitted["removal"].op == ">" and 0.1 <= fitted["removal"].bound < 0.2
    figures = cal.gate_figures(tuning, fitted, 0.7)
    assert figures["recall"] == 1.0 and figures["good_kept"] == 1.0 and figures["precision"] == 1.0
    held = [_pair(True, 0.15, split="held-out"), _pair(False, 0.12, split="held-out")]
    run = tmp_path / "run.json"
    run.write_text(json.dumps({"cases": tuning + held}))
    assert cal.main([str(run)]) == 0
    out = capsys.readouterr().out
    current = cal.DEFAULT_LIMITS["removal"].bound
    assert f"| removal | > {current:g} | > 0.1 |" in out and "| held-out | 2 (1) | fitted |" in out
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(SystemExit):
        cal.main([str(bad)])
    assert "not a fidelity benchmark JSON" in capsys.readouterr().err
