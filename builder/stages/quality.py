"""The quality gate: hard checks first, then one weighted score per pair, and the reason.

A pair that fails any hard check (:mod:`pvtt.builder.stages.checks`) is rejected, the
checks named in its reason; the weighted mean decides the rest.

The seed weighs identity 0.3, temporal 0.2, lighting 0.2 and overall (a VLM's
judgement) 0.3, and keeps a pair at 0.7 or more. A scorer may not run every score (the
CPU scorer has no VLM), so the weights are renormalised over the scores that are
present: a missing score neither counts as zero nor as a pass.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from pvtt.builder.stages.checks import DEFAULT_LIMITS, Limit, failed_checks

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
    checks: Mapping[str, float | None] | None = None,
    limits: Mapping[str, Limit] = DEFAULT_LIMITS,
) -> Verdict:
    """Keep the pair when it passes every hard check and its quality score reaches ``threshold``.

    A failed check rejects the pair whatever its score; the reason names every failed
    check, e.g. ``"removal 0.412 > 0.300; mask 0.211 < 0.500"`` (a value is rounded away
    from its limit, so the inequality printed always holds).

    A rejected pair's reason names every score below the threshold, weakest first
    (or the weakest score, if none is below on its own), every number with
    :data:`REASON_DECIMALS` decimals, e.g.
    ``"quality 0.623 < 0.700 (lowest: temporal 0.412, identity 0.669)"``.
    """
    present = _present(scores, weights)
    quality = quality_score(present, weights)
    failed = failed_checks(checks or {}, limits)
    if failed:
        reason = "; ".join(
            f"{name} {_up(value)} > {_down(limit.bound)}" if limit.op == ">"
            else f"{name} {_down(value)} < {_up(limit.bound)}"
            for name, value, limit in failed
        )
        return Verdict(quality, False, reason)
    if quality >= threshold:
        return Verdict(quality, True, None)
    ranked = sorted(present.items(), key=lambda item: item[1])
    weak = [item for item in ranked if item[1] < threshold] or ranked[:1]
    lowest = ", ".join(f"{name} {_down(value)}" for name, value in weak)
    reason = f"quality {_down(quality)} < {_up(threshold)} (lowest: {lowest})"
    return Verdict(quality, False, reason)


REASON_DECIMALS = 3
"""One precision for every number of every reject reason, so reasons read and compare
alike. Scores are cut down and the threshold rounded up to it, never to the nearest:
0.69996 against 0.7 reads ``0.699 < 0.700``, never ``0.700 < 0.700``. Both start from
the shortest decimal that is the float (``0.41``, not its binary ``0.40999...``), and
of two different floats the smaller has the smaller one, so the ``<`` always holds."""
_STEP = Decimal(1).scaleb(-REASON_DECIMALS)


def _down(value: float) -> str:
    return str(Decimal(repr(value)).quantize(_STEP, rounding=ROUND_FLOOR))


def _up(value: float) -> str:
    return str(Decimal(repr(value)).quantize(_STEP, rounding=ROUND_CEILING))
