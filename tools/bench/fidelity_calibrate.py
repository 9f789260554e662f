"""Hard-check limits from a fidelity benchmark run: fitted on tuning, reported on held-out.

    python -m pvtt.tools.bench.fidelity_calibrate RUN.json [--keep 0.8] [--threshold 0.7]

``RUN.json`` is what ``python -m pvtt.tools.bench.fidelity --split all --json RUN.json``
writes: every pair with its check scores, its quality score and its truth label. The
gate rejects a pair when any check crosses its limit or its quality score is under the
threshold, so limits interact; they are fitted by coordinate ascent from the current
ones (:data:`~pvtt.builder.stages.checks.DEFAULT_LIMITS`): each check in turn gets the
limit, among the values the tuning pairs take, that catches the most defective pairs
while the gate keeps at least ``--keep`` of the good ones (or, when no limit can, keeps
the most), until nothing changes. The held-out split never informs a limit; its figures
under the fitted limits are printed beside the tuning ones.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pvtt.builder.stages.checks import CHECK_NAMES, DEFAULT_LIMITS, Limit


def _rejected(case: dict[str, Any], limits: dict[str, Limit], threshold: float) -> bool:
    scores = case.get("scores") or {}
    if case["quality_score"] < threshold:
        return True
    return any(
        scores.get(name) is not None and limit.fails(float(scores[name]))
        for name, limit in limits.items()
    )


def gate_figures(cases: list[dict[str, Any]], limits: dict[str, Limit],
                 threshold: float) -> dict[str, Any]:
    """Recall of defective pairs, share of good ones kept and precision under ``limits``."""
    bad = [c for c in cases if c["defective"]]
    good = [c for c in cases if not c["defective"]]
    caught = sum(_rejected(c, limits, threshold) for c in bad)
    kept = sum(not _rejected(c, limits, threshold) for c in good)
    rejected = caught + len(good) - kept
    return {
        "pairs": len(cases), "defective": len(bad),
        "recall": caught / len(bad) if bad else None,
        "good_kept": kept / len(good) if good else None,
        "precision": caught / rejected if rejected else None,
    }


def _objective(figures: dict[str, Any], keep: float) -> tuple[float, float]:
    recall, kept = figures["recall"] or 0.0, figures["good_kept"] or 0.0
    return (recall, kept) if kept >= keep else (-1.0 + kept, recall)


def fit_limits(cases: list[dict[str, Any]], keep: float, threshold: float,
               start: dict[str, Limit] | None = None, rounds: int = 5) -> dict[str, Limit]:
    """Coordinate ascent over each check's limit (see the module's docstring)."""
    limits = dict(start or DEFAULT_LIMITS)
    for _ in range(rounds):
        changed = False
        for name in CHECK_NAMES:
            values = sorted({float(c["scores"][name]) for c in cases
                             if (c.get("scores") or {}).get(name) is not None})
            if not values:
                continue
            op = limits[name].op
            # a limit just past each value: "> v" rejects above v, "< v'" below the next
            bounds = values if op == ">" else [v + 1e-6 for v in values]
            best = limits[name]
            score = _objective(gate_figures(cases, limits, threshold), keep)
            for bound in bounds:
                trial = {**limits, name: Limit(op, round(bound, 6))}
                trial_score = _objective(gate_figures(cases, trial, threshold), keep)
                if trial_score > score:
                    best, score = trial[name], trial_score
            if best != limits[name]:
                limits[name], changed = best, True
        if not changed:
            break
    return limits


def made_pairs(payload: dict[str, Any], split: str) -> list[dict[str, Any]]:
    """The cases of ``split`` that made a pair (the gate judged them)."""
    return [c for c in payload["cases"]
            if c["split"] == split and c.get("lost") is None and "quality_score" in c]


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pvtt.tools.bench.fidelity_calibrate",
        description="Fit the hard checks' limits on a fidelity run's tuning split and "
                    "report them on its held-out split.")
    parser.add_argument("run", type=Path, help="JSON written by fidelity --split all --json")
    parser.add_argument("--keep", type=float, default=0.8,
                        help="share of good tuning pairs the gate must keep (default 0.8)")
    parser.add_argument("--threshold", type=float, default=0.7,
                        help="the weighted mean's keep threshold (default 0.7)")
    args = parser.parse_args(argv)
    try:
        payload = json.loads(args.run.read_text(encoding="utf-8"))
        tuning, held = made_pairs(payload, "tuning"), made_pairs(payload, "held-out")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        parser.error(f"{args.run}: not a fidelity benchmark JSON ({exc})")
    if not tuning:
        parser.error(f"{args.run}: no tuning pair to fit on (run fidelity with --split all)")
    fitted = fit_limits(tuning, args.keep, args.threshold)
    print("| check | current limit | fitted limit |\n|---|---|---|")
    for name in CHECK_NAMES:
        now, new = DEFAULT_LIMITS[name], fitted[name]
        print(f"| {name} | {now.op} {now.bound:g} | {new.op} {new.bound:.3g} |")
    print("\n| split | pairs (defective) | limits | recall | good kept | precision |")
    print("|---|---:|---|---:|---:|---:|")
    for split, cases in (("tuning", tuning), ("held-out", held)):
        if not cases:
            continue
        for label, limits in (("current", DEFAULT_LIMITS), ("fitted", fitted)):
            f = gate_figures(cases, dict(limits), args.threshold)
            print(f"| {split} | {f['pairs']} ({f['defective']}) | {label} | {_fmt(f['recall'])} "
                  f"| {_fmt(f['good_kept'])} | {_fmt(f['precision'])} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
