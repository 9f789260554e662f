"""The survival funnel of a build: per stage, items in and out, why the others were lost,
seconds spent, and GPU-seconds per kept pair. It is the table datasets are compared by.

It is computed from a build's statistics (``statistics.json``: counts, seconds per timer,
rejects by reason), so it can be recomputed from an old report and summed over ranks
(:func:`merge_funnels`). Where a stage's items are the next stage's, ``out`` of one row
is ``in`` of the next; in every row with reasons, the reasons add up to ``in - out``.

Stages and their units, in pipeline order:

- ``shots`` (videos in, usable shots out: a video yields several), ``dedup-shots``
  (shots), ``matte`` and ``dedup-photos`` (photos), ``pair`` (candidate pairs in, planned
  pairs out): every rank of a multi-rank build runs them on the whole catalog (scope
  ``catalog``);
- ``resume`` (this rank's pairs in, those not written before out), ``clip`` (clips: cut,
  detect, segment, inpaint; the pairs of a lost clip are ``pairs_lost``), ``insert``
  (pairs of the clips made: insert and score), ``gate`` (the quality verdict), ``write``
  (pairs handed to the sinks; with ``quality.drop_rejected`` off, the gate's rejects are
  written too, flagged): each rank its share (scope ``rank``).

GPU-seconds are the seconds a stage's calls took on a CUDA build where its backend is a
model (not ``cpu``), summed over threads: the time the stage held the GPU, an upper bound
of its kernel time. They are divided by the kept pairs: those passed and written.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

GPU_TIMERS = {
    "detect": "detector",
    "segment": "segmenter",
    "inpaint": "inpainter",
    "matte": "matter",
    "insert": "inserter",
    "score": "scorer",
}
"""Timers of model stages, with the backend kind whose device they ran on."""


@dataclass(frozen=True)
class Stage:
    name: str
    unit: str
    timers: tuple[str, ...]
    scope: str


STAGES = (
    Stage("shots", "videos -> shots", ("shots",), "catalog"),
    Stage("dedup-shots", "shots", ("dedup-shots",), "catalog"),
    Stage("matte", "photos", ("matte", "cutout-check"), "catalog"),
    Stage("dedup-photos", "photos", ("dedup-photos",), "catalog"),
    Stage("pair", "pairs", ("plan",), "catalog"),
    Stage("resume", "pairs", (), "rank"),
    Stage("clip", "clips", ("cut", "detect", "segment", "inpaint", "clip-check"), "rank"),
    Stage("insert", "pairs", ("insert", "score"), "rank"),
    Stage("gate", "pairs", ("check",), "rank"),
    Stage("write", "pairs", ("write",), "rank"),
)
"""The funnel's rows in pipeline order (see the module docstring)."""
SAMPLED_OUT = "not sampled (pairs.limit or pairs.difficulty_mix)"
ALREADY_WRITTEN = "already written (resumed build)"


def gate_reason(reason: str) -> str:
    """The checks a gate verdict names, without numbers: ``"removal, mask"`` or
    ``"quality"`` (see :func:`pvtt.builder.stages.quality.judge`)."""
    return ", ".join(part.split()[0] for part in reason.split("; ") if part.strip()) or reason


def _by_stage(rejects_by_reason: Mapping[str, int]) -> dict[str, Counter[str]]:
    out: dict[str, Counter[str]] = {}
    for key, n in rejects_by_reason.items():
        stage, _, kind = key.partition(": ")
        out.setdefault(stage, Counter())[kind or key] += int(n)
    return out


def _flows(c: Mapping[str, int]) -> dict[str, dict[str, Any]]:
    """``in``, ``out`` and ``reasons`` of every stage, from the build's counts."""
    gate_failed = Counter(
        {k.removeprefix("gate.failed."): n for k, n in c.items() if k.startswith("gate.failed.")}
    )
    made = c.get("gate.passed", 0) + sum(gate_failed.values())
    pending = c.get("pairs.assigned", 0) - c.get("pairs.already_done", 0)
    sampled_out = c.get("pairs.candidates", 0) - c.get("pairs.planned", 0)
    return {
        "shots": {"in": c.get("videos", 0), "out": c.get("shots.kept", 0)},
        "dedup-shots": {"in": c.get("shots.kept", 0), "out": c.get("clips.planned", 0)},
        "matte": {"in": c.get("images.chosen", 0), "out": c.get("images.ok", 0)},
        "dedup-photos": {"in": c.get("images.ok", 0), "out": c.get("images.targets", 0)},
        "pair": {
            "in": c.get("pairs.candidates", 0),
            "out": c.get("pairs.planned", 0),
            "reasons": Counter({SAMPLED_OUT: sampled_out} if sampled_out else {}),
        },
        "resume": {
            "in": c.get("pairs.assigned", 0),
            "out": pending,
            "reasons": Counter(
                {ALREADY_WRITTEN: c["pairs.already_done"]} if c.get("pairs.already_done") else {}
            ),
        },
        "clip": {
            "in": c.get("clips.todo", 0),
            "out": c.get("clips.ok", 0),
            "pairs_lost": c.get("pairs.lost_with_clip", 0),
        },
        "insert": {"in": pending - c.get("pairs.lost_with_clip", 0), "out": made},
        "gate": {"in": made, "out": c.get("gate.passed", 0), "reasons": gate_failed},
        "write": {
            "in": c.get("pairs.to_write", 0),
            "out": c.get("pairs.to_write", 0) - c.get("rejected.write", 0),
        },
    }


def _gpu_timers(stats: Mapping[str, Any]) -> set[str]:
    """The timers whose stage ran a model on a CUDA device in this build."""
    if not str(stats.get("device", "cpu")).startswith("cuda"):
        return set()
    backends = stats.get("backends", {})
    return {
        timer
        for timer, kind in GPU_TIMERS.items()
        if backends.get(kind, {}).get("backend", "cpu") != "cpu"
    }


def build_funnel(stats: Mapping[str, Any]) -> dict[str, Any]:
    """The funnel of one build (or rank) from its statistics (``BuildReport.as_dict``)."""
    counts: Mapping[str, int] = stats.get("counts", {})
    seconds: Mapping[str, float] = stats.get("time_per_stage_s", {})
    rejects = _by_stage(stats.get("rejects_by_reason", {}))
    flows = _flows(counts)
    gpu = _gpu_timers(stats)
    rows = []
    for stage in STAGES:
        flow = flows[stage.name]
        reasons = flow.get("reasons") or rejects.get(stage.name, Counter())
        rows.append(
            {
                "stage": stage.name,
                "unit": stage.unit,
                "scope": stage.scope,
                "in": flow["in"],
                "out": flow["out"],
                "reasons": dict(reasons.most_common()),
                **({"pairs_lost": flow["pairs_lost"]} if "pairs_lost" in flow else {}),
                "seconds": round(sum(seconds.get(t, 0.0) for t in stage.timers), 3),
                "gpu_s": round(sum(seconds.get(t, 0.0) for t in stage.timers if t in gpu), 3),
            }
        )
    return _finish(rows, counts.get("pairs.passed", 0), bool(gpu), seconds)


def _finish(
    rows: list[dict[str, Any]], kept: int, on_gpu: bool, seconds: Mapping[str, float]
) -> dict[str, Any]:
    """Rows with GPU-seconds per kept pair, and the totals."""
    for row in rows:
        row["gpu_s_per_kept_pair"] = round(row["gpu_s"] / kept, 4) if on_gpu and kept else None
    timed = {t for stage in STAGES for t in stage.timers}
    total_gpu = sum(row["gpu_s"] for row in rows)
    return {
        "stages": rows,
        "kept_pairs": kept,
        "on_gpu": on_gpu,
        "gpu_s_per_kept_pair": round(total_gpu / kept, 4) if on_gpu and kept else None,
        "other_seconds": {k: round(v, 3) for k, v in sorted(seconds.items()) if k not in timed},
    }


def merge_funnels(funnels: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The funnel of a multi-rank build from its ranks' funnels: a ``catalog`` row is the
    first rank's (every rank ran it whole), a ``rank`` row the sum of the ranks' shares."""
    first = funnels[0]
    rows = []
    for i, row in enumerate(first["stages"]):
        if row["scope"] == "catalog":
            rows.append(dict(row))
            continue
        parts = [f["stages"][i] for f in funnels]
        reasons: Counter[str] = Counter()
        for part in parts:
            reasons.update(part["reasons"])
        merged = dict(row, reasons=dict(reasons.most_common()))
        for key in ("in", "out", "pairs_lost", "seconds", "gpu_s"):
            if key in row:
                merged[key] = round(sum(p[key] for p in parts), 3)
        rows.append(merged)
    seconds: Counter[str] = Counter()
    for f in funnels:
        seconds.update(f.get("other_seconds", {}))
    kept = sum(int(f["kept_pairs"]) for f in funnels)
    return _finish(rows, kept, any(f["on_gpu"] for f in funnels), seconds)
