"""Smoke test of ``tools/bench/compare.py``: a tiny run yields every figure, table and plot."""

from __future__ import annotations

import json
import math

from pvtt.tools.bench import compare
from pvtt.tools.bench.compare_formats import MDSTool


def test_compare_reports_every_tool_and_metric(shared_data, tmp_path, monkeypatch):
    """Eight short pairs through every tool; one alternative made unavailable degrades to n/a."""
    monkeypatch.setattr(MDSTool, "missing", lambda self: "pretend missing (test)")
    out, md, png = tmp_path / "r.json", tmp_path / "t.md", tmp_path / "p.png"
    compare.main(
        [
            "--pairs", "8", "--clips", "1", "--max-frames", "12", "--decode-samples", "1",
            "--shard-samples", "2", "--reps", "1", "--write-reps", "1", "--resume-reps", "1",
            "--data", str(shared_data), "--dir", str(tmp_path),
            "--json", str(out), "--markdown", str(md), "--plot", str(png),
        ]
    )  # fmt: skip
    results = json.loads(out.read_text(encoding="utf-8"))
    assert results["dataset"]["pairs"] == 8
    recs = {(r["tool"], r["metric"]): r for r in results["records"]}
    assert len(recs) == len(results["records"]) == len(compare.METRICS) * (1 + len(compare.TOOLS))
    for metric in compare.METRICS:
        for tool in (compare.RAW, *compare.TOOLS):
            rec = recs[(tool, metric.name)]
            if tool != compare.RAW and tool not in metric.tools:
                assert rec["value"] is None and rec["note"] == "not applicable"
            elif tool == "mds":
                assert rec["value"] is None and rec["note"] == "pretend missing (test)"
            else:
                assert isinstance(rec["value"], float) and math.isfinite(rec["value"]), rec
                assert rec["value"] > 0 and rec["ratio_to_raw"] > 0, rec
                if tool != compare.RAW:
                    assert rec["ratio_to_pvtt"] > 0, rec
    for metric in compare.METRICS:
        if metric.pvtt_metric is None:
            assert recs[("pvtt-lance", metric.name)]["ratio_to_pvtt"] == 1.0
    # tar and webdataset store each pair's bytes plus headers
    raw_size = recs[(compare.RAW, "storage")]["value"]
    assert recs[("pvtt-tar", "storage")]["value"] > raw_size
    assert recs[("webdataset", "storage")]["value"] > raw_size

    table = md.read_text(encoding="utf-8").splitlines()
    head = next(line for line in table if line.startswith("| metric |"))
    assert [c.strip() for c in head.strip("|").split("|")][2:] == [compare.RAW, *compare.TOOLS]
    body = [line for line in table if line.startswith("| ") and line != head]
    assert [line.split("|")[1].strip() for line in body] == [m.label for m in compare.METRICS]
    assert all(line.count("|") == len(compare.TOOLS) + 4 for line in body)
    assert "mds: n/a, pretend missing (test)" in md.read_text(encoding="utf-8")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
