"""The report of ``compare.py``: one Markdown table (metric x tool) and one figure.

A cell reads ``value (a, b)``: ``a`` is the value over pvtt's (Lance) figure for that row,
``b`` over the raw limit's, so for a rate above 1 is faster and for a time or a size
above 1 is slower or larger. ``n/a`` marks a tool that does not run here, ``-`` a row
that does not apply to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

RAW = "raw"


def fmt(value: float | None) -> str:
    """A figure with about three significant digits, never in exponent notation."""
    if value is None:
        return "n/a"
    size = abs(value)
    if size >= 100:
        return f"{value:,.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _tools(recs: Sequence[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r["tool"] for r in recs))


def _cell(rec: dict[str, Any]) -> str:
    if rec["value"] is None:
        return "-" if rec["note"] == "not applicable" else "n/a"
    if rec["tool"] == RAW:
        return fmt(rec["value"])
    ratios = [
        fmt(rec[k]) if rec[k] is not None else "n/a" for k in ("ratio_to_pvtt", "ratio_to_raw")
    ]
    return f"{fmt(rec['value'])} ({ratios[0]}, {ratios[1]})"


def header(results: dict[str, Any]) -> str:
    """Date, machine and dataset of the run, in one paragraph."""
    m, d, st = results["machine"], results["dataset"], results["settings"]
    clips = ", ".join(f"{c['seconds']:.1f} s" for c in d["clips"])
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    load = results.get("load_avg_start", [None])[0]
    return (
        f"{results['date'][:10]}, {m['cpu'] or 'unknown CPU'}, {m['cores']} cores, "
        f"{m['memory_gb']} GB RAM, Python {m['python']} ({versions}); load average "
        f"{fmt(load)} at the start (a shared machine). {d['pairs']} pairs of 1280x720 H.264 "
        f"clips ({clips}), {d['payload_bytes'] / d['pairs'] / 1e6:.2f} MB per pair, "
        f"{d['shard_samples']} pairs per shard/file; filters select "
        + ", ".join(f"{v['selected']} ({k})" for k, v in d["filters"].items())
        + f"; medians of {st['reps']} read repeats ({st['resume_reps']} resumes each) and "
        f"{st['write_reps']} writes; decoded rows: the first {st['decode_samples']} samples; "
        f"total {results.get('total_s', 0):.0f} s."
        + oversubscribed(results)
    )


def oversubscribed(results: dict[str, Any]) -> str:
    """A sentence naming the worker counts above the machine's cores ('' when none)."""
    cores = results["machine"]["cores"] or 0
    over = [n for n in results["settings"].get("workers", ()) if n > cores]
    if not over:
        return ""
    counts = ", ".join(str(n) for n in over)
    return (
        f" With {counts} workers on {cores} cores (each worker and the main process a busy "
        "process), the cores are oversubscribed."
    )


def markdown_table(results: dict[str, Any]) -> str:
    recs = results["records"]
    tools = _tools(recs)
    by = {(r["tool"], r["metric"]): r for r in recs}
    metrics = list(dict.fromkeys(r["metric"] for r in recs))
    lines = [
        header(results),
        "",
        "Each cell: value (ratio to pvtt Lance, ratio to the raw limit). "
        "↑ higher is better, ↓ lower is better.",
        "",
        "| metric | unit | " + " | ".join(tools) + " |",
        "|---|---|" + "---:|" * len(tools),
    ]
    for name in metrics:
        first = by[(tools[0], name)]
        arrow = "↑" if first["higher_is_better"] else "↓"
        cells = [_cell(by[(t, name)]) for t in tools]
        lines.append(f"| {first['label']} | {first['unit']} {arrow} | " + " | ".join(cells) + " |")
    missing = {
        r["tool"]: r["note"]
        for r in recs
        if r["value"] is None and r["note"] and r["note"] != "not applicable"
    }
    for tool, why in missing.items():
        lines.append(f"\n{tool}: n/a, {why}")
    if results.get("behind"):
        lines.append("\npvtt behind an alternative on: " + "; ".join(results["behind"]))
    return "\n".join(lines) + "\n"


def print_table(results: dict[str, Any]) -> None:
    print(markdown_table(results))


def plot(results: dict[str, Any], path: Path) -> None:
    """One panel per metric: each tool's value as a bar, the raw limit as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = results["records"]
    metrics = list(dict.fromkeys(r["metric"] for r in recs))
    tools = [t for t in _tools(recs) if t != RAW]
    cols = 4
    rows = -(-len(metrics) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.9 * rows), squeeze=False)
    colours = plt.get_cmap("tab10").colors
    for ax, name in zip(axes.flat, metrics, strict=False):
        by = {r["tool"]: r for r in recs if r["metric"] == name}
        values = [by[t]["value"] or 0.0 for t in tools]
        ax.barh(range(len(tools)), values, color=[colours[i % 10] for i in range(len(tools))])
        ax.set_yticks(range(len(tools)), tools, fontsize=8)
        ax.invert_yaxis()
        raw = by[RAW]["value"]
        if raw:
            ax.axvline(raw, color="black", linestyle="--", linewidth=1, label="raw limit")
        for i, t in enumerate(tools):
            label = "n/a" if by[t]["value"] is None else fmt(by[t]["value"])
            if by[t]["note"] == "not applicable":
                label = "-"
            ax.text(values[i], i, " " + label, va="center", fontsize=7)
        arrow = "↑" if by[tools[0]]["higher_is_better"] else "↓"
        ax.set_title(f"{by[tools[0]]['label']}\n{by[tools[0]]['unit']} {arrow}", fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
        ax.margins(x=0.25)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    fig.suptitle(f"pvtt vs data stacks ({results['date'][:10]}; dashed: raw limit)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
