"""The quality gate against human labels: precision and recall per threshold, AUC per scorer.

A human *accept* is the positive class: the gate's precision at a threshold is the
share of the pairs it passes that people accept, its recall the share of the accepted
pairs it passes. The gate is the builder's own (:func:`pvtt.builder.stages.quality.judge`
with the build's weights and the current hard-check limits): a pair passes at
threshold ``t`` when no hard check fails and its weighted quality score reaches ``t``.
Each pair's quality score and checks are computed once, so the whole curve costs one
sort, and ``--apply`` writes exactly the verdicts the curve counted.

Each scorer's ROC AUC says how well its score alone orders accepted above rejected
pairs (0.5: no better than chance), in the direction the gate reads it (a higher
``removal`` is worse, so its AUC is taken on the negated score).
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa

from pvtt.builder.stages.checks import CHECK_NAMES, DEFAULT_LIMITS, failed_checks
from pvtt.builder.stages.quality import judge, quality_score
from pvtt.loaders.labels import latest_labels
from pvtt.loaders.query import PairFilter, select_pairs
from pvtt.loaders.store import BuiltDataset, open_dataset
from pvtt.schemas.config import QualityConfig
from pvtt.schemas.labels import ACCEPT
from pvtt.schemas.manifest import Manifest, TableInfo
from pvtt.schemas.tables import scalar_columns
from pvtt.tools.dataset_edit import replace_pair_columns

DEFAULT_TARGET_PRECISION = 0.9
SCORE_COLUMNS = tuple(c for c in scalar_columns("pairs") if c.startswith("score_"))
PAIR_COLUMNS = ("pair_id", "quality_score", "passed", "reject_reason", *SCORE_COLUMNS)


def gate_threshold(manifest: Manifest) -> float:
    """The quality threshold the dataset's gate uses (its build config, else the default)."""
    quality = manifest.config.get("quality") or {}
    return float(quality.get("threshold", QualityConfig().threshold))


def gate_weights(manifest: Manifest) -> dict[str, float]:
    quality = manifest.config.get("quality") or {}
    return dict(quality.get("weights") or QualityConfig().weights)


@dataclass(frozen=True)
class GatePoint:
    """The gate at one threshold, against the labelled pairs."""

    threshold: float
    passed: int
    accepted_passed: int
    precision: float | None
    """None when the gate passes no labelled pair."""
    recall: float | None
    """None when no labelled pair is accepted."""


@dataclass
class Calibration:
    """Everything ``pvtt calibrate`` reports; :meth:`to_dict` is its ``--json``."""

    labelled: int
    accepted: int
    rejected: int
    unknown: int
    """Labels of pairs the dataset no longer holds (not counted anywhere else)."""
    threshold: float
    target_precision: float
    build: GatePoint
    """The verdicts stored in ``passed`` (the build's gate)."""
    current: GatePoint
    """The gate recomputed at the dataset's threshold (current limits)."""
    recommended: GatePoint | None
    """The lowest threshold whose precision reaches the target (the most recall at it)."""
    curve: list[GatePoint]
    auc: dict[str, dict[str, Any]]
    missed: dict[str, int] = field(default_factory=dict)
    """Pairs the gate passes at the current threshold that people reject, by reason."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GateInputs:
    """Per labelled pair: the gate's quality score, whether its checks pass, the label."""

    pair_ids: list[str]
    quality: np.ndarray
    """float64, NaN where the pair has no weighted score (the gate never passes it)."""
    checks_ok: np.ndarray
    accepted: np.ndarray
    stored_passed: np.ndarray
    scores: dict[str, np.ndarray]
    reasons: list[str | None]
    unknown: int


def gate_inputs(dataset: BuiltDataset) -> GateInputs:
    """The labelled pairs of ``dataset`` with what the gate needs of each."""
    labels = latest_labels(dataset)
    weights = gate_weights(dataset.manifest)
    rows = select_pairs(dataset, PairFilter.make(passed=None), columns=list(PAIR_COLUMNS))
    by_id = {r["pair_id"]: r for r in rows.to_pylist() if r["pair_id"] in labels}
    ids = sorted(by_id)
    quality, ok = [], []
    for pid in ids:
        q, passes = _gate_parts(by_id[pid], weights)
        quality.append(q)
        ok.append(passes)
    return GateInputs(
        pair_ids=ids,
        quality=np.array(quality, dtype=np.float64),
        checks_ok=np.array(ok, dtype=bool),
        accepted=np.array([labels[p]["label"] == ACCEPT for p in ids], dtype=bool),
        stored_passed=np.array([bool(by_id[p]["passed"]) for p in ids], dtype=bool),
        scores={
            c: np.array([_float(by_id[p][c]) for p in ids], dtype=np.float64)
            for c in (*SCORE_COLUMNS, "quality_score")
        },
        reasons=[labels[p]["reason"] for p in ids],
        unknown=len(labels) - len(ids),
    )


def _gate_parts(row: dict[str, Any], weights: dict[str, float]) -> tuple[float, bool]:
    """The pair's weighted quality score (NaN without one) and whether its checks pass."""
    scores = {n: row.get(f"score_{n}") for n in weights}
    checks = {n: row.get(f"score_{n}") for n in CHECK_NAMES}
    try:
        q = quality_score(scores, weights)
    except ValueError:  # no weighted score at all: the gate has nothing to pass
        return math.nan, False
    return q, not failed_checks(checks, DEFAULT_LIMITS)


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)


def gate_point(inputs: GateInputs, threshold: float, passed: np.ndarray | None = None) -> GatePoint:
    """Precision and recall of the gate at ``threshold`` (or of the verdicts ``passed``)."""
    if passed is None:
        passed = inputs.checks_ok & (inputs.quality >= threshold)
    hits = int((passed & inputs.accepted).sum())
    n_passed, n_accepted = int(passed.sum()), int(inputs.accepted.sum())
    return GatePoint(
        threshold=float(threshold),
        passed=n_passed,
        accepted_passed=hits,
        precision=hits / n_passed if n_passed else None,
        recall=hits / n_accepted if n_accepted else None,
    )


def curve(inputs: GateInputs) -> list[GatePoint]:
    """The gate at every threshold where its verdicts change: each labelled pair's score."""
    values = np.unique(inputs.quality[~np.isnan(inputs.quality)])
    return [gate_point(inputs, float(t)) for t in values]


def point_at(points: list[GatePoint], threshold: float, accepted: int) -> GatePoint:
    """The gate at any ``threshold``, read off the curve: its verdicts are those at the
    lowest labelled score at or above it (none passes above the highest)."""
    above = [p for p in points if p.threshold >= threshold]
    if not above:
        return GatePoint(float(threshold), 0, 0, None, 0.0 if accepted else None)
    return replace(min(above, key=lambda p: p.threshold), threshold=float(threshold))


def threshold_for_precision(points: list[GatePoint], target: float) -> GatePoint | None:
    """The lowest threshold whose precision reaches ``target``: the most recall that keeps it."""
    meeting = [p for p in points if p.precision is not None and p.precision >= target]
    return min(meeting, key=lambda p: p.threshold) if meeting else None


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Probability that a random positive outscores a random negative (ties count half);
    None without both classes. The Mann-Whitney U statistic with average ranks."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    mean_rank = ends - (counts - 1) / 2.0  # ranks from 1, ties averaged
    ranks = mean_rank[inverse.reshape(-1)]
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def scorer_aucs(inputs: GateInputs) -> dict[str, dict[str, Any]]:
    """ROC AUC of each score column on the labelled pairs that have it."""
    out: dict[str, dict[str, Any]] = {}
    for column, values in inputs.scores.items():
        name = column.removeprefix("score_")
        have = ~np.isnan(values)
        lower_is_better = name in DEFAULT_LIMITS and DEFAULT_LIMITS[name].op == ">"
        signed = -values[have] if lower_is_better else values[have]
        out[column] = {
            "auc": roc_auc(signed, inputs.accepted[have]),
            "pairs": int(have.sum()),
            "higher_is_better": not lower_is_better,
        }
    return out


def calibrate(
    dataset: BuiltDataset, target_precision: float = DEFAULT_TARGET_PRECISION
) -> Calibration:
    """The gate of ``dataset`` against its labels (reads scalar columns only)."""
    if not 0.0 < target_precision <= 1.0:
        raise ValueError(f"target precision must be in (0, 1], got {target_precision}")
    inputs = gate_inputs(dataset)
    threshold = gate_threshold(dataset.manifest)
    points = curve(inputs)
    current = gate_point(inputs, threshold)
    passed_now = inputs.checks_ok & (inputs.quality >= threshold)
    missed = Counter(
        reason or "unspecified"
        for reason, gate, human in zip(inputs.reasons, passed_now, inputs.accepted, strict=True)
        if gate and not human
    )
    return Calibration(
        labelled=len(inputs.pair_ids),
        accepted=int(inputs.accepted.sum()),
        rejected=int((~inputs.accepted).sum()),
        unknown=inputs.unknown,
        threshold=threshold,
        target_precision=target_precision,
        build=gate_point(inputs, threshold, inputs.stored_passed),
        current=current,
        recommended=threshold_for_precision(points, target_precision),
        curve=points,
        auc=scorer_aucs(inputs),
        missed=dict(missed.most_common()),
    )


def apply_threshold(out: str | os.PathLike[str], threshold: float) -> tuple[TableInfo, int, int]:
    """Judge every pair again at ``threshold`` and publish ``passed`` and ``reject_reason``
    as a new version of the pairs table, and the threshold in the manifest's config.

    Returns the new table version, the pairs passed, and how many verdicts changed.
    Scores, media and every other column stay as they are.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    dataset = open_dataset(out)
    weights = gate_weights(dataset.manifest)
    rows = select_pairs(dataset, PairFilter.make(passed=None), columns=list(PAIR_COLUMNS))
    ids, passed, reasons, changed = [], [], [], 0
    for row in rows.to_pylist():
        verdict = _verdict(row, threshold, weights)
        ids.append(row["pair_id"])
        passed.append(verdict[0])
        reasons.append(verdict[1])
        changed += verdict[0] != row["passed"]
    updates = pa.table(
        {"pair_id": ids, "passed": passed, "reject_reason": reasons},
        schema=pa.schema(
            [
                pa.field("pair_id", pa.string()),
                pa.field("passed", pa.bool_()),
                pa.field("reject_reason", pa.string()),
            ]
        ),
    )
    n_passed = sum(passed)

    def edit(manifest: Manifest) -> None:
        quality = dict(manifest.config.get("quality") or {})
        quality["threshold"] = float(threshold)
        manifest.config = {**manifest.config, "quality": quality}
        if "passed" in manifest.counts:
            manifest.counts["passed"] = n_passed

    info = replace_pair_columns(out, updates, edit)
    return info, n_passed, changed


def _verdict(
    row: dict[str, Any], threshold: float, weights: dict[str, float]
) -> tuple[bool, str | None]:
    """The builder's verdict on a stored pair at ``threshold``; a pair without any weighted
    score never passes (as :func:`gate_inputs` counts it)."""
    scores = {n: row.get(f"score_{n}") for n in weights}
    checks = {n: row.get(f"score_{n}") for n in CHECK_NAMES}
    try:
        verdict = judge(scores, threshold, weights, checks, DEFAULT_LIMITS)
    except ValueError:
        return False, row["reject_reason"] or "no quality score"
    return verdict.passed, verdict.reject_reason
