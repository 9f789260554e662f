"""The quality gate: one weighted score per pair, and the reason when it fails.

The seed weighs identity 0.3, temporal 0.2, lighting 0.2 and overall (a VLM's
judgement) 0.3, and keeps a pair at 0.7 or more. A scorer may not run every score (the
CPU scorer has no VLM), so the weights are renormalised over the scores that are
present: a missing score neither counts as zero nor as a pass.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_WEIGHTS: dict[str, float] = {
    "identity": 0.3,
    "temporal": 0.2,
    "lighting": 0.2,
    "overall": 0.3,
}


@dataclass(frozen=True)
class Verdict:
    """Whether a pair is kept, and why not."""

    quality_score: float
    passed: bool
    reject_reason: str | None


def _present(scores: Mapping[str, float | None], weights: Mapping[str, float]) -> dict[str, float]:
    """The scores that ran, checked: each in [0, 1] and with a weight."""
    present = {}
    for name, value in scores.items():
        if value is None:
            continue
        if name not in weights:
            raise ValueError(f"score {name!r} has no weight (weights: {sorted(weights)})")
        if not (isinstance(value, numbers.Real) and 0.0 <= value <= 1.0):
            raise ValueError(f"score {name!r} must be a number in [0, 1], got {value!r}")
        present[name] = float(value)
    if not present or sum(weights[name] for name in present) <= 0:
        raise ValueError(
            f"no weighted score to judge: scores {dict(scores)}, weights {dict(weights)}"
        )
    return present


def quality_score(
    scores: Mapping[str, float | None], weights: Mapping[str, float] = DEFAULT_WEIGHTS
) -> float:
    """The weighted mean of the scores present (not None), weights renormalised over them."""
    present = _present(scores, weights)
    total = sum(weights[name] for name in present)
    return sum(weights[name] * value for name, value in present.items()) / total


def judge(
    scores: Mapping[str, float | None],
    threshold: float = 0.7,
    weights: Mapping[str, float] = DEFAULT_WEIGHTS,
) -> Verdict:
    """Keep the pair when its quality score reaches ``threshold``.

    A rejected pair's reason names every score below the threshold, weakest first
    (or the weakest score, if none is below on its own), e.g.
    ``"quality 0.62 < 0.70 (lowest: temporal 0.41, identity 0.66)"``.
    """
    present = _present(scores, weights)
    quality = quality_score(present, weights)
    if quality >= threshold:
        return Verdict(quality, True, None)
    ranked = sorted(present.items(), key=lambda item: item[1])
    weak = [item for item in ranked if item[1] < threshold] or ranked[:1]
    digits = _digits_below(quality, threshold)
    lowest = ", ".join(
        f"{name} {value:.{_digits_below(value, threshold)}f}" for name, value in weak
    )
    reason = f"quality {quality:.{digits}f} < {threshold:.{digits}f} (lowest: {lowest})"
    return Verdict(quality, False, reason)


def _digits_below(value: float, threshold: float) -> int:
    """Decimals that show ``value`` below ``threshold``: 2, or more when they round alike
    (0.6996 against 0.70 needs 5)."""
    gap = threshold - value
    if gap <= 0 or round(value, 2) < round(threshold, 2):
        return 2
    return min(6, max(2, 1 - math.floor(math.log10(gap))))
