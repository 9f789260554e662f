"""`pvtt plan` against the build that follows it: same clips, pairs and mix; rates round-trip."""

from __future__ import annotations

import contextlib
import io
import json
import re
import tarfile
from pathlib import Path

import pytest

from pvtt.builder.demo import PRODUCTS, make_demo_catalog
from pvtt.builder.resources import (
    H200_SAM2_FPS,
    ClipSize,
    ImageSize,
    PairSize,
    RatesError,
    estimate,
    load_rates,
    measured_rates,
)
from pvtt.loaders.store import open_dataset
from pvtt.schemas.config import BackendConfig, BuildConfig
from pvtt.tools.cli import main

# three products whose clips all track on the CPU, so the build makes every planned pair
SUBSET = [p for p in PRODUCTS if p.id in {"ring-ruby", "key-fob", "mug-blue"}]


def _plan(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(["plan", *args, "--strategy", "single", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_catalog(tmp_path_factory.mktemp("plan") / "catalog", products=SUBSET)


@pytest.fixture(scope="module")
def planned_then_built(
    catalog: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("plan-built") / "out"
    buffer = io.StringIO()  # capsys is function-scoped
    with contextlib.redirect_stdout(buffer):
        code = main(
            [
                "plan",
                str(catalog),
                "--strategy",
                "single",
                "--json",
                "--cache-dir",
                str(out / "cache"),
            ]
        )
    assert code == 0
    plan = json.loads(buffer.getvalue())
    assert main(["build", str(catalog), str(out), "--strategy", "single", "--no-progress"]) == 0
    return plan, out


def test_plan_counts_what_the_build_makes(planned_then_built: tuple[dict, Path]) -> None:
    plan, out = planned_then_built
    dataset = open_dataset(out)
    counts = dataset.manifest.counts
    stats = json.loads((out / "report" / "statistics.json").read_text())
    built = stats["counts"]
    # the plan counts what the build attempts; a clip the segmenter loses takes its pairs
    lost_clips, lost_pairs = built.get("rejected.clip", 0), built.get("pairs.lost_with_clip", 0)
    assert plan["clips"] == built["clips.planned"] == 6 and plan["images"] == 3
    assert plan["pairs"] == built["pairs.planned"] == 12 == counts["pairs"] + lost_pairs
    made = counts["by_difficulty"]
    assert sum(plan["difficulty"].values()) == 12
    assert all(made.get(k, 0) <= v for k, v in plan["difficulty"].items())
    clips = (
        dataset.table("clips").to_table(columns=["frame_count"]).column("frame_count").to_pylist()
    )
    pairs = dataset.pairs.to_table(columns=["frame_count"]).column("frame_count").to_pylist()
    assert plan["clips"] == len(clips) + lost_clips
    if not lost_clips:
        assert {k: v for k, v in plan["difficulty"].items() if v} == made
        assert plan["clip_frames"] == sum(clips) and plan["pair_frames"] == sum(pairs)
    else:
        assert plan["clip_frames"] > sum(clips) and plan["pair_frames"] > sum(pairs)
    # the plan's shot detection was cached where the build looked: the build ran none
    assert "shots" not in stats["time_per_stage_s"]


def test_rates_file_round_trips_into_plan(
    planned_then_built: tuple[dict, Path], catalog: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out = planned_then_built
    rates_path = out / "report" / "rates.json"
    rates = load_rates(rates_path)
    stats = json.loads((out / "report" / "statistics.json").read_text())
    assert rates["stages"]["segment"]["backend"] == "cpu"
    assert rates["stages"]["detect"]["unit"] == "clips"
    plan = _plan(capsys, str(catalog), "--rates", str(rates_path))
    by_stage = {s["stage"]: s for s in plan["stages"]}
    for stage, entry in rates["stages"].items():
        row = by_stage[stage]
        assert row["source"] == "measured" and row["rate"] == entry["rate"], stage
        # the same catalog at the same frame size: the plan predicts the build's own seconds
        # (more, where a clip was lost part way and its pairs never made)
        seconds = stats["time_per_stage_s"][stage]
        if stats["counts"].get("rejected.clip", 0):
            assert row["hours"] * 3600 >= seconds * 0.99 - 0.002, stage
        else:
            assert row["hours"] * 3600 == pytest.approx(seconds, rel=0.01, abs=0.002), stage
    assert set(rates["stages"]) >= {
        "detect",
        "segment",
        "inpaint",
        "matte",
        "insert",
        "score",
        "encode",
    }
    # storage: bits per pixel measured by the build give its media bytes back
    assert set(plan["bits_per_pixel_source"].values()) == {"measured"}
    tar_bytes = sum(f.stat().st_size for f in (out / "tar").iterdir())
    made = plan["pairs"] - stats["counts"].get("pairs.lost_with_clip", 0)  # of those planned
    assert plan["storage"]["tar_bytes"] * made / plan["pairs"] == pytest.approx(tar_bytes, rel=0.1)
    synth = 0
    for shard in (out / "tar").glob("*.tar"):
        with tarfile.open(shard) as tar:
            synth += sum(m.size for m in tar.getmembers() if m.name.endswith(".synth.mp4"))
    assert plan["storage"]["per_pair_bytes"]["synth_video"] * made == pytest.approx(
        synth, rel=0.01
    )


def test_plan_gives_the_node_wall_time_from_the_builds_overlap(
    planned_then_built: tuple[dict, Path], catalog: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The rates file carries how much the build overlapped its stages; the plan's wall
    time for one rank is the build's own, and N ranks split it."""
    _, out = planned_then_built
    rates_path = out / "report" / "rates.json"
    node = load_rates(rates_path)["node"]
    stats = json.loads((out / "report" / "statistics.json").read_text())
    assert node["pair_pool"] == "threads" and node["workers"] >= 1 and node["cpus"] >= 1
    assert node["wall_s"] == stats["wall_s"] and node["overlap"] > 0
    assert node["overlap"] == pytest.approx(node["stage_s"] / node["wall_s"], rel=1e-3)
    one = _plan(capsys, str(catalog), "--rates", str(rates_path), "--cpus", "16")
    four = _plan(capsys, str(catalog), "--rates", str(rates_path), "--cpus", "16", "--gpus", "4")
    assert one["node"]["overlap_source"] == "measured"
    assert one["node"]["measured_with"]["workers"] == node["workers"]
    assert one["node"]["workers_per_rank"] == 8 and four["node"]["workers_per_rank"] == 4
    assert four["node"]["wall_hours"] == pytest.approx(one["node"]["wall_hours"] / 4)
    wall = one["node"]["wall_hours"] * 3600
    if stats["counts"].get("rejected.clip", 0):  # a lost clip's pairs were planned, not made
        assert wall >= stats["wall_s"] * 0.95
    else:
        assert wall == pytest.approx(stats["wall_s"], rel=0.05)
    bare = _plan(capsys, str(catalog))
    assert bare["node"]["overlap_source"] == "none"
    assert bare["node"]["wall_hours"] == pytest.approx(bare["gpu_hours"] + bare["cpu_hours"])
    args = ["--rates", str(rates_path), "--gpus", "2", "--no-progress"]
    assert main(["plan", str(catalog), "--strategy", "single", *args]) == 0
    assert "node: 2 ranks x " in capsys.readouterr().out


def test_plan_text_names_sources(catalog: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(catalog), "--strategy", "single", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "6 clips" in text and "12 pairs" in text
    assert "rates: defaults" in text and "CPU-hours" in text


def test_plan_table_reads_without_a_footnote(
    catalog: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each row's time is its work over the rate beside it; the rate as measured (at
    another frame size, for the stages scaled by pixel count) has its own column."""
    assert main(["plan", str(catalog), "--strategy", "single", "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("stage "))
    head = lines[start]
    assert "rate on these clips" in head and "time = work / rate" in head
    assert "rate as measured, frame size" in head
    seconds = {"s": 1.0, "min": 60.0, "h": 3600.0}
    rows = lines[start + 1 : next(i for i, line in enumerate(lines) if line.startswith("total"))]
    assert len(rows) >= 8
    for row in rows:
        cells = re.split(r"\s{2,}", row)
        work, rate, time = (cells[i].split() for i in (3, 4, 5))
        assert rate[1] == f"{work[1]}/s", row
        expected = float(work[0].replace(",", "")) / float(rate[0].replace(",", ""))
        shown = float(time[0]) * seconds[time[1]]
        assert abs(expected - shown) <= 0.05 * seconds[time[1]] + 0.01 * shown, row
        assert cells[6].endswith(("MP", "at any size")), row


def test_bad_rates_file_names_it(
    tmp_path: Path, catalog: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "rates.json"
    bad.write_text(json.dumps({"format": "pvtt-rates/1", "stages": {"segment": {"rate": -1}}}))
    with pytest.raises(RatesError, match="rates.json: stages.segment.rate"):
        load_rates(bad)
    assert main(["plan", str(catalog), "--rates", str(tmp_path / "missing.json")]) == 1
    assert "missing.json: rates file not found" in capsys.readouterr().err


def _gpu_config(**sections: BackendConfig) -> BuildConfig:
    config = BuildConfig(device="cuda")
    for kind, section in sections.items():
        setattr(config, kind, section)
    return config


def test_gpu_defaults_and_pixel_scaling() -> None:
    small = [ClipSize("a_s000", 100, 640, 360)]
    large = [ClipSize("a_s000", 100, 1280, 720)]
    pairs = [PairSize("a_s000", "b__1", "hard")]
    images = [ImageSize("b__1", 50_000, 400, 300)]
    config = _gpu_config(
        segmenter=BackendConfig("sam2"),
        inpainter=BackendConfig("diffusers"),
        detector=BackendConfig("grounding-dino", params={"stride": 2}),
        scorer=BackendConfig("vlm"),
    )
    est = {s.stage: s for s in estimate(config, small, images, pairs).stages}
    assert est["segment"].processor == "GPU" and est["segment"].rate == H200_SAM2_FPS
    assert est["detect"].rate == pytest.approx(22.6 * 2)
    assert est["score"].unit == "pairs" and est["score"].rate == pytest.approx(6.3 / 8)
    assert est["inpaint"].hours is None
    assert "inpaint" in estimate(config, small, images, pairs).unpriced
    big = {s.stage: s for s in estimate(config, large, images, pairs).stages}
    # a GPU model stage resizes to its own input; CPU frame work grows with the pixels
    assert big["segment"].hours == pytest.approx(est["segment"].hours)
    assert big["insert"].hours == pytest.approx(4 * est["insert"].hours)


def test_measured_rates_skip_cached_stages() -> None:
    stats = {
        "counts": {"clips.ok": 2, "frames.clips": 100, "pixels.clips": 100 * 64 * 36},
        "time_per_stage_s": {"segment": 2.0, "score": 0.5, "inpaint": 0.0},
        "calls_per_stage": {"segment": 2, "score": 5},
    }
    rates = measured_rates(stats, BuildConfig())
    assert rates["stages"]["segment"]["rate"] == 50.0  # 2 clips of 50 frames in 2 s
    assert rates["stages"]["score"] == {
        "unit": "pairs",
        "work": 5.0,
        "seconds": 0.5,
        "rate": 10.0,
        "backend": "cpu",
        "model": None,
    }
    assert "inpaint" not in rates["stages"] and rates["frame_pixels"] == 64 * 36
