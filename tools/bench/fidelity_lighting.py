"""Does the lighting score tell a relit insert from a mismatched one?

Every case gives two inserts of its target along the ideal boxes on its true clean plate:

- **matched**: the target under the scene's own light (``TruthClip.light``: the studio's
  white light in most families, a coloured and dimmed or brightened one in ``relit``),
  exactly what a perfect inserter would paste;
- **mismatched**: the target under a light the scene does not have. In ``relit`` that is
  the photo pasted as is (the common failure: studio light in a tungsten room); elsewhere
  a cast of 9-16 degrees, with a stop more or less exposure one time in three each.

Scenes of footage filmed under warm light (``warm-lit`` in
:data:`~pvtt.tools.bench.fidelity_truth.SCENES`) are left out: which insert matches them is
not known exactly. The build's scorer scores both, against the true plate and the true cut-out. A useful
lighting score ranks the matched insert above the mismatched one: the benchmark reports
the area under the ROC curve of matched against mismatched scores (the chance that a
random matched insert outscores a random mismatched one) and both medians.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from pvtt.builder.illuminant import light_gains
from pvtt.builder.stages.cutout import cutout_aspect
from pvtt.builder.stages.protocols import Backend, ScoringInput, StageRejected
from pvtt.builder.synthesis import track_to_target
from pvtt.tools.bench.fidelity_truth import TruthCase, ideal_composite, relit_cutout

MISMATCH_KINDS = ("cast", "cast+brighter", "cast+darker")
"""What goes wrong on the mismatched insert of a case under white light."""


def mismatched_light(case: TruthCase) -> tuple[np.ndarray, str]:
    """A light the case's scene does not have, and what kind of mistake it is."""
    if not np.allclose(case.clip.light, 1.0):
        return np.ones(3, np.float32), "pasted as is"
    rng = np.random.default_rng([zlib.crc32(b"lighting"), zlib.crc32(case.spec.family.encode()),
                                 case.spec.seed])
    kind = MISMATCH_KINDS[int(rng.integers(len(MISMATCH_KINDS)))]
    warmth = rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 0.35)
    stops = {"cast": 0.0, "cast+brighter": 1.0, "cast+darker": -1.0}[kind]
    return light_gains(warmth, rng.normal(0.0, 0.04), stops).astype(np.float32), kind


def lighting_probe(case: TruthCase, scorer: Backend, smoothing: int) -> dict[str, Any]:
    """The scorer's lighting score of the matched and the mismatched insert of ``case``;
    ``None`` on scenes filmed under a light of their own (``warm-lit``): what matches them
    is not known exactly."""
    if case.notes.get("scene_light") == "warm":
        return {"lighting_mismatch": None, "lighting_matched": None, "lighting_mismatched": None}
    truth, cutout = case.clip, case.photo.cutout
    height, width = truth.plate.shape[1:3]
    boxes = track_to_target(truth.boxes, (width, height), cutout_aspect(cutout), smoothing)
    wrong, kind = mismatched_light(case)
    scores: dict[str, Any] = {"lighting_mismatch": kind}
    for name, gains in (("lighting_matched", truth.light), ("lighting_mismatched", wrong)):
        synth = ideal_composite(truth.plate, relit_cutout(cutout, gains), boxes)
        try:
            result = scorer.score(ScoringInput(synth=synth, background=truth.plate,  # type: ignore[attr-defined]
                                               cutout=cutout, boxes=boxes, fps=truth.fps))
        except StageRejected:
            result = {}
        scores[name] = result.get("lighting")
    return scores


def auc(positives: list[float], negatives: list[float]) -> float | None:
    """P(a random positive outscores a random negative), ties counting half."""
    if not positives or not negatives:
        return None
    pos, neg = np.asarray(positives)[:, None], np.asarray(negatives)[None, :]
    return float(np.mean((pos > neg) + 0.5 * (pos == neg)))


def separation(results: list[dict[str, Any]]) -> dict[str, Any]:
    """AUC and medians of the matched and mismatched lighting scores over ``results``."""
    matched = [r["metrics"].get("lighting_matched") for r in results]
    mismatched = [r["metrics"].get("lighting_mismatched") for r in results]
    matched = [v for v in matched if v is not None]
    mismatched = [v for v in mismatched if v is not None]
    by_kind: dict[str, list[float]] = {}
    for r in results:
        value = r["metrics"].get("lighting_mismatched")
        if value is not None:
            by_kind.setdefault(r["metrics"]["lighting_mismatch"], []).append(value)
    built = [r["scores"].get("lighting") for r in results if r.get("scores")]
    built = [v for v in built if v is not None]
    return {
        "cases": len(matched),
        "pairs": len(built),
        "pairs_median": float(np.median(built)) if built else None,
        "pairs_at_one": sum(v >= 0.995 for v in built),
        "auc": auc(matched, mismatched),
        "matched_median": float(np.median(matched)) if matched else None,
        "mismatched_median": float(np.median(mismatched)) if mismatched else None,
        "matched_at_one": sum(v >= 0.995 for v in matched),
        "mismatched_median_by_kind": {k: float(np.median(v)) for k, v in sorted(by_kind.items())},
    }


def lighting_line(figures: dict[str, Any]) -> str:
    """One markdown line of :func:`separation`'s figures."""
    if not figures["cases"]:
        return "Lighting: no case under a known light."

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    kinds = ", ".join(f"{k} {fmt(v)}" for k, v in figures["mismatched_median_by_kind"].items())
    line = (f"Lighting score, {figures['cases']} cases: AUC {fmt(figures['auc'])} of matched "
            f"over mismatched inserts; median matched {fmt(figures['matched_median'])}, "
            f"mismatched {fmt(figures['mismatched_median'])} ({kinds}).")
    if figures["pairs"]:
        line += (f" The build's own pairs: median {fmt(figures['pairs_median'])}, "
                 f"{figures['pairs_at_one']} of {figures['pairs']} at 1.00.")
    return line
