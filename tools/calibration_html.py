"""The report's "gate against human labels" section, from a dataset's labels.

:func:`calibration_html` gives the section's content (tables and an inline SVG plot, no
script, nothing fetched, so it fits the report's Content-Security-Policy), or None when
the dataset has no labels: the report shows the section only when people have judged
pairs. It uses the report's table classes (``l`` for text cells, ``note``).
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from typing import Any

from pvtt.loaders.labels import has_labels
from pvtt.loaders.store import BuiltDataset, open_dataset
from pvtt.tools.calibration import (
    DEFAULT_TARGET_PRECISION,
    Calibration,
    GatePoint,
    calibrate,
    point_at,
)

GRID = tuple(round(0.05 * i, 2) for i in range(21))
"""Thresholds the section's table shows (the JSON of ``pvtt calibrate`` has every one)."""
PLOT_W, PLOT_H, PAD = 420, 220, 34


def calibration_html(
    out: str | os.PathLike[str] | BuiltDataset,
    target_precision: float = DEFAULT_TARGET_PRECISION,
) -> str | None:
    """The section's HTML for the dataset at ``out`` (a folder, or one the report already
    opened, object stores included), or None when it has no labels."""
    dataset = out if isinstance(out, BuiltDataset) else open_dataset(out)
    if not has_labels(dataset):
        return None
    return render(calibrate(dataset, target_precision))


def render(cal: Calibration) -> str:
    """The section for a computed calibration."""
    parts = [
        f"<p>{cal.labelled} pairs labelled by people: {cal.accepted} accepted, "
        f"{cal.rejected} rejected. Precision: the share of the pairs the gate passes that "
        "people accept; recall: the share of the accepted pairs it passes.</p>"
    ]
    if cal.unknown:
        parts.append(
            f'<p class="note">{cal.unknown} labels name pairs this dataset no longer holds; '
            "they are left out.</p>"
        )
    if not cal.accepted or not cal.rejected:
        parts.append(
            '<p class="note">Every label says the same: precision, recall and AUC need '
            "both accepted and rejected pairs.</p>"
        )
    gate_rows = [
        ("stored verdicts (passed)", cal.build),
        (f"gate at the threshold {cal.threshold:.3f}", cal.current),
    ]
    if cal.recommended is not None:
        gate_rows.append((f"for precision ≥ {cal.target_precision:.2f}", cal.recommended))
    parts.append(
        _table(
            ["", "threshold", "passed", "precision", "recall"],
            [
                (name, _num(p.threshold), p.passed, _num(p.precision), _num(p.recall))
                for name, p in gate_rows
            ],
            "calibration-gate",
        )
    )
    if cal.recommended is None:
        parts.append(
            f'<p class="note">No threshold reaches precision {cal.target_precision:.2f} on '
            "these labels.</p>"
        )
    parts.append(_plot(cal.curve, cal.threshold))
    parts.append("<h3>How well each score orders accepted above rejected pairs</h3>")
    parts.append(
        _table(
            ["score", "ROC AUC", "labelled pairs with it"],
            [(c, _num(a["auc"]), a["pairs"]) for c, a in cal.auc.items()],
            "calibration-auc",
        )
    )
    if cal.missed:
        parts.append("<h3>Pairs the gate passes that people reject, by reason</h3>")
        parts.append(_table(["reason", "pairs"], list(cal.missed.items()), "calibration-missed"))
    grid = [point_at(cal.curve, t, cal.accepted) for t in GRID]
    parts.append("<h3>Precision and recall by threshold</h3>")
    parts.append(
        _table(
            ["threshold", "passed", "precision", "recall"],
            [(_num(p.threshold, 2), p.passed, _num(p.precision), _num(p.recall)) for p in grid],
            "calibration-curve",
        )
    )
    return "\n".join(parts)


def _plot(points: Sequence[GatePoint], threshold: float) -> str:
    """Precision and recall against the threshold as an inline SVG (no file, no script)."""

    def x(t: float) -> float:
        return PAD + t * (PLOT_W - 2 * PAD)

    def y(v: float) -> float:
        return PLOT_H - PAD - v * (PLOT_H - 2 * PAD)

    def line(values: list[tuple[float, float]], colour: str) -> str:
        xy = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in values)
        return f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{xy}"/>'

    precision = [(p.threshold, p.precision) for p in points if p.precision is not None]
    recall = [(p.threshold, p.recall) for p in points if p.recall is not None]
    ticks = "".join(
        f'<text x="{x(t):.0f}" y="{PLOT_H - PAD + 14}" font-size="10" text-anchor="middle">'
        f"{t:.1f}</text>"
        f'<text x="{PAD - 4}" y="{y(t) + 3:.0f}" font-size="10" text-anchor="end">{t:.1f}</text>'
        for t in (0.0, 0.5, 1.0)
    )
    return (
        f'<svg id="calibration-plot" role="img" width="{PLOT_W}" height="{PLOT_H}" '
        f'viewBox="0 0 {PLOT_W} {PLOT_H}">'
        "<title>precision (blue) and recall (orange) of the gate by threshold</title>"
        f'<rect x="{PAD}" y="{PAD}" width="{PLOT_W - 2 * PAD}" height="{PLOT_H - 2 * PAD}" '
        'fill="none" stroke="#bbb"/>'
        f'<line x1="{x(threshold):.1f}" x2="{x(threshold):.1f}" y1="{PAD}" '
        f'y2="{PLOT_H - PAD}" stroke="#888" stroke-dasharray="4 3"/>'
        f"{line(precision, '#2b5ea8')}{line(recall, '#e07b00')}{ticks}"
        f'<text x="{PLOT_W / 2:.0f}" y="{PLOT_H - 4}" font-size="11" text-anchor="middle">'
        "quality threshold (dashed: the dataset's)</text>"
        f'<text x="{PAD}" y="{PAD - 8}" font-size="11" fill="#2b5ea8">precision</text>'
        f'<text x="{PAD + 70}" y="{PAD - 8}" font-size="11" fill="#e07b00">recall</text>'
        "</svg>"
    )


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], table_id: str) -> str:
    left = ' class="l"'
    head = "".join(
        f'<th scope="col"{left if i == 0 else ""}>{_e(h)}</th>' for i, h in enumerate(header)
    )
    body = "\n".join(
        f'<tr><th class="l" scope="row">{_e(r[0])}</th>'
        + "".join(f"<td>{_e(c)}</td>" for c in r[1:])
        + "</tr>"
        for r in rows
    )
    return f'<table id="{table_id}">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>'


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)
