"""The survival funnel: per stage, items in and out, the reasons, seconds and GPU-seconds per
kept pair, in the report JSON and the HTML report, consistent from one stage to the next."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from shop_catalog import write_shop_catalog

from pvtt.builder.funnel import STAGES, build_funnel, merge_funnels
from pvtt.builder.report import BuildReport
from pvtt.loaders.store import open_dataset
from pvtt.tools.cli import main
from pvtt.tools.html_report import load_build_statistics


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("funnel")
    catalog, config = write_shop_catalog(root / "catalog", ("neck", "mug"))
    out = root / "out"
    assert main(["build", str(catalog), str(out), "--config", str(config), "--no-progress"]) == 0
    return out


def _rows(funnel: dict) -> dict[str, dict]:
    return {row["stage"]: row for row in funnel["stages"]}


def test_a_build_reports_its_funnel_in_pipeline_order(built: Path) -> None:
    stats = json.loads((built / "report" / "statistics.json").read_text())
    funnel = stats["funnel"]
    assert [r["stage"] for r in funnel["stages"]] == [s.name for s in STAGES]
    rows = _rows(funnel)
    counts = stats["counts"]
    assert rows["shots"]["in"] == 2 and rows["matte"]["in"] == 2
    # where a stage's items are the next one's, its out is the next one's in
    for before, after in (("shots", "dedup-shots"), ("matte", "dedup-photos"),
                          ("pair", "resume"), ("insert", "gate")):  # fmt: skip
        assert rows[before]["out"] == rows[after]["in"], (before, after)
    assert rows["resume"]["out"] == rows["insert"]["in"] + rows["clip"]["pairs_lost"]
    assert rows["dedup-shots"]["out"] == counts["clips.planned"] == rows["clip"]["in"]
    # every item lost has a reason, counted
    for name, row in rows.items():
        if name != "shots":  # videos in, shots out: one video yields several
            assert sum(row["reasons"].values()) == row["in"] - row["out"], name
    # the gate's out and the kept pairs are the dataset's passed pairs
    passed = open_dataset(built).pairs.to_table(columns=["passed"]).column("passed").to_pylist()
    assert rows["gate"]["out"] == funnel["kept_pairs"] == sum(passed)
    assert rows["write"]["out"] == len(passed) and rows["gate"]["in"] == len(passed) > 0
    assert rows["clip"]["seconds"] > 0 and rows["insert"]["seconds"] > 0
    # a CPU build: no GPU-seconds
    assert not funnel["on_gpu"] and funnel["gpu_s_per_kept_pair"] is None
    assert all(r["gpu_s_per_kept_pair"] is None for r in funnel["stages"])


def test_gate_reasons_name_the_failed_checks() -> None:
    report = BuildReport()
    report.count("gate.passed", 3)
    report.count("gate.failed.removal, mask", 2)
    report.count("gate.failed.quality", 1)
    report.count("pairs.to_write", 6)
    gate = _rows(report.as_dict()["funnel"])["gate"]
    assert (gate["in"], gate["out"]) == (6, 3)
    assert gate["reasons"] == {"removal, mask": 2, "quality": 1}


def _gpu_stats(passed: int, segment_s: float, inpaint_s: float) -> dict:
    report = BuildReport()
    report.count("pairs.passed", passed)
    report.seconds.update(segment=segment_s, inpaint=inpaint_s, detect=1.0)
    report.extra.update(device="cuda", backends={"segmenter": {"backend": "sam2"},
                                                 "inpainter": {"backend": "diffusers"},
                                                 "detector": {"backend": "cpu"}})  # fmt: skip
    return report.as_dict()


def test_gpu_seconds_per_kept_pair_count_model_stages_on_cuda() -> None:
    funnel = build_funnel(_gpu_stats(passed=4, segment_s=6.0, inpaint_s=2.0))
    clip = _rows(funnel)["clip"]
    # the CPU detector's second is the clip stage's, not the GPU's
    assert clip["seconds"] == 9.0 and clip["gpu_s"] == 8.0
    assert clip["gpu_s_per_kept_pair"] == 2.0 and funnel["gpu_s_per_kept_pair"] == 2.0
    cpu = build_funnel({**_gpu_stats(4, 6.0, 2.0), "device": "cpu"})
    assert cpu["gpu_s_per_kept_pair"] is None and _rows(cpu)["clip"]["gpu_s"] == 0


def _rank_stats(share: int) -> dict:
    """A rank's statistics: the whole catalog's photos, its share of the pairs."""
    report = BuildReport()
    report.count("images.chosen", 4)
    report.count("images.ok", 4)
    report.count("pairs.assigned", share)
    report.count("pairs.passed", share - 1)
    report.seconds["segment"] = float(share)
    report.extra.update(device="cuda", backends={"segmenter": {"backend": "sam2"}})
    return report.as_dict()


def test_ranks_share_the_catalog_stages_and_add_their_own() -> None:
    merged = merge_funnels([_rank_stats(3)["funnel"], _rank_stats(5)["funnel"]])
    rows = _rows(merged)
    assert rows["matte"]["in"] == 4  # every rank matted the whole catalog: counted once
    assert rows["resume"]["in"] == 8 and rows["clip"]["gpu_s"] == 8.0
    assert merged["kept_pairs"] == 6 and merged["gpu_s_per_kept_pair"] == round(8.0 / 6, 4)


def test_html_report_shows_the_funnel(built: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    page = tmp_path / "report.html"
    assert main(["report", str(built), "-o", str(page), "--per-difficulty", "0"]) == 0
    html = page.read_text(encoding="utf-8")
    table = html[html.index('<table id="funnel-table">') :]
    table = table[: table.index("</table>")]
    for stage in STAGES:
        assert f'<th class="l" scope="row">{stage.name}</th>' in table
    assert "GPU-s / kept pair" in table


def test_a_two_rank_build_counts_the_catalog_once_and_every_pair(
    built: Path, tmp_path: Path
) -> None:
    catalog, config = write_shop_catalog(tmp_path / "catalog", ("neck", "mug"))
    out = tmp_path / "out"
    for rank in (0, 1):
        assert main(["build", str(catalog), str(out), "--config", str(config), "--rank",
                     str(rank), "--world-size", "2", "--no-progress"]) == 0  # fmt: skip
    assert main(["merge", str(out)]) == 0
    stats, _, notes = load_build_statistics(open_dataset(out))
    assert stats is not None and not notes
    ranks = _rows(stats["funnel"])
    one = _rows(json.loads((built / "report" / "statistics.json").read_text())["funnel"])
    # the same catalog as one rank built: the same funnel, seconds aside
    for name, row in one.items():
        assert (ranks[name]["in"], ranks[name]["out"]) == (row["in"], row["out"]), name
    assert ranks["resume"]["in"] == ranks["pair"]["out"] > 0
