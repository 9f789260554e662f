"""The figures of ``pvtt report``, drawn with matplotlib into PNG bytes.

Figures are built on ``matplotlib.figure.Figure`` directly, never through pyplot, so
no global backend or figure registry is touched and nothing needs a display. PNG
rather than SVG: the page inlines them as ``<img>`` data URIs, which every viewer and
every image library (the tests decode them with Pillow) reads.

This module imports matplotlib at the top; :mod:`pvtt.tools.html_report` imports it
only while it renders, so ``pvtt --help`` never loads matplotlib.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

DIFFICULTIES = ("easy", "medium", "hard", "expert")
COLOURS = {"easy": "#2a9d55", "medium": "#3b75c4", "hard": "#e08a1e", "expert": "#b8345a"}
"""One colour per difficulty in every figure (distinguishable with common colour blindness)."""
THRESHOLD_COLOUR = "#444444"
DPI = 100
BINS = np.linspace(0.0, 1.0, 41)


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    fig.set_facecolor("white")
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _tidy(ax) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.tick_params(labelsize=9)


def counts_by_category(
    by_source: Mapping[str, Mapping[str, int]], by_target: Mapping[str, Mapping[str, int]]
) -> bytes:
    """Stacked horizontal bars of pairs per category and difficulty, source and target side."""
    rows = max(len(by_source), len(by_target), 1)
    fig = _figure(10, 1.2 + 0.38 * rows)
    axes = fig.subplots(1, 2, sharex=True)
    for ax, counts, title in zip(
        axes, (by_source, by_target), ("by source category", "by target category"), strict=True
    ):
        cats = sorted(counts, reverse=True)  # alphabetical from the top
        left = np.zeros(len(cats))
        for diff in DIFFICULTIES:
            values = np.array([counts[c].get(diff, 0) for c in cats], dtype=float)
            ax.barh(cats, values, left=left, color=COLOURS[diff], label=diff, height=0.7)
            left += values
        for y, total in enumerate(left):
            ax.text(total, y, f" {int(total)}", va="center", fontsize=9)
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("pairs", fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.margins(x=0.12)
        _tidy(ax)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncols=4, fontsize=9, frameon=False)
    return _png(fig)


def quality_histograms(values: Mapping[str, Sequence[float]], threshold: float | None) -> bytes:
    """One histogram of ``quality_score`` per difficulty, the threshold marked on each."""
    fig = _figure(10, 2.6)
    axes = fig.subplots(1, len(DIFFICULTIES), sharex=True)
    for ax, diff in zip(axes, DIFFICULTIES, strict=True):
        scores = np.asarray(values.get(diff, ()), dtype=float)
        if scores.size:
            ax.hist(scores, bins=BINS, color=COLOURS[diff], edgecolor="white", linewidth=0.5)
        else:
            ax.text(0.5, 0.5, "no pairs", ha="center", va="center", transform=ax.transAxes)
        if threshold is not None:
            ax.axvline(threshold, color=THRESHOLD_COLOUR, linestyle="--", linewidth=1)
        ax.set_title(f"{diff} (n={scores.size})", fontsize=11)
        ax.set_xlim(0, 1)
        ax.set_xlabel("quality_score", fontsize=9)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        _tidy(ax)
    axes[0].set_ylabel("pairs", fontsize=9)
    return _png(fig)


def scorer_boxplots(
    scores: Mapping[str, Mapping[str, Sequence[float]]], threshold: float | None
) -> bytes:
    """Per scorer, a box of its scores for each difficulty; scorers that never ran say so."""
    names = list(scores)
    fig = _figure(10, 2.8)
    axes = np.atleast_1d(fig.subplots(1, len(names), sharey=True))
    for ax, name in zip(axes, names, strict=True):
        per = scores[name]
        present = [d for d in DIFFICULTIES if len(per.get(d, ()))]
        if present:
            box = ax.boxplot(
                [np.asarray(per[d], dtype=float) for d in present],
                tick_labels=present,
                patch_artist=True,
                widths=0.6,
                medianprops={"color": "black"},
                flierprops={"markersize": 3},
            )
            for patch, diff in zip(box["boxes"], present, strict=True):
                patch.set_facecolor(COLOURS[diff])
                patch.set_alpha(0.8)
        else:
            ax.text(
                0.5,
                0.5,
                "not scored\n(null in every pair)",
                ha="center",
                va="center",
                transform=ax.transAxes,
                fontsize=9,
                color="#777777",
            )
            ax.set_xticks([])
        if threshold is not None:
            ax.axhline(threshold, color=THRESHOLD_COLOUR, linestyle="--", linewidth=1)
        ax.set_ylim(0, 1)
        ax.set_title(name, fontsize=11)
        _tidy(ax)
    axes[0].set_ylabel("score", fontsize=9)
    return _png(fig)


def pass_rate_curve(values: Mapping[str, Sequence[float]], threshold: float | None) -> bytes:
    """The share of pairs whose quality reaches a threshold, as the threshold moves over [0, 1]."""
    xs = np.linspace(0.0, 1.0, 201)
    fig = _figure(10, 3.2)
    ax = fig.subplots()
    everything: list[float] = []
    for diff in DIFFICULTIES:
        scores = np.asarray(values.get(diff, ()), dtype=float)
        everything.extend(scores.tolist())
        if scores.size:
            rate = (scores[None, :] >= xs[:, None]).mean(axis=1)
            ax.plot(xs, 100 * rate, color=COLOURS[diff], label=f"{diff} (n={scores.size})")
    if everything:
        scores = np.asarray(everything)
        rate = (scores[None, :] >= xs[:, None]).mean(axis=1)
        ax.plot(xs, 100 * rate, color="black", linewidth=2.2, label=f"all (n={scores.size})")
        if threshold is not None:
            at = 100 * float((scores >= threshold).mean())
            ax.axvline(threshold, color=THRESHOLD_COLOUR, linestyle="--", linewidth=1)
            ax.annotate(
                f"threshold {threshold:.2f}: {at:.0f}% pass",
                (threshold, at),
                xytext=(8, 8),
                textcoords="offset points",
                fontsize=9,
            )
    low = min([*everything, *([] if threshold is None else [threshold])], default=0.0)
    ax.set_xlim(max(0.0, np.floor(10 * low - 0.5) / 10), 1)  # from just below the lowest score
    ax.set_ylim(0, 102)
    ax.set_xlabel("threshold on quality_score", fontsize=9)
    ax.set_ylabel("pairs that pass (%)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, frameon=False, loc="lower left")  # the curves start at the top left
    _tidy(ax)
    return _png(fig)


def bar_chart(
    labels: Sequence[str], values: Sequence[float], xlabel: str, fmt: str = "{:g}"
) -> bytes:
    """Horizontal bars, largest on top, each labelled with its value (``fmt``)."""
    order = np.argsort(np.asarray(values, dtype=float), kind="stable")
    fig = _figure(10, 0.9 + 0.32 * max(len(labels), 1))
    ax = fig.subplots()
    names = [labels[i] for i in order]
    numbers = [float(values[i]) for i in order]
    ax.barh(range(len(names)), numbers, color="#3b75c4", height=0.7)
    ax.set_yticks(range(len(names)), [_short(n) for n in names])
    for y, value in enumerate(numbers):
        ax.text(value, y, " " + fmt.format(value), va="center", fontsize=9)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.margins(x=0.15)
    _tidy(ax)
    return _png(fig)


def _short(label: str, width: int = 60) -> str:
    return label if len(label) <= width else label[: width - 3] + "..."
