"""Smoke runs of the benchmarks added with review, rescoring, near-duplicates and the torch
pair stages: each runs end to end on a tiny input and reports every figure it promises."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_dedup_bench_reports_each_ratio(tmp_path: Path) -> None:
    from pvtt.tools.bench import dedup

    out = tmp_path / "dedup.json"
    dedup.main(["--repeat", "1", "--json", str(out)])
    figures = json.loads(out.read_text())
    promised = {"shots_x_detection", "photo_x_decode", "photo_x_matte", "compare_x_fingerprint"}
    assert set(figures) == promised
    assert all(value > 0 for value in figures.values()), figures


def test_verdict_update_bench_compares_bytes_written(tmp_path: Path) -> None:
    from pvtt.tools.bench import verdict_update

    out = tmp_path / "verdicts.json"
    verdict_update.main(["--pairs", "16", "--blob-kb", "4", "--json", str(out)])
    ways = json.loads(out.read_text())["ways"]
    assert set(ways) == {"merge_insert", "pvtt", "update"}
    assert ways["merge_insert"]["bytes_ratio"] == 1.0
    # the column update writes verdicts only; merge_insert copies every blob
    assert ways["pvtt"]["bytes_added"] < ways["merge_insert"]["bytes_added"] / 4


pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_rescore_bench_weighs_each_way_against_a_rebuild(tmp_path: Path) -> None:
    from pvtt.tools.bench import rescore

    out = tmp_path / "rescore.json"
    rescore.main(["--quick", "--json", str(out)])
    ways = json.loads(out.read_text())
    assert set(ways) == {"rebuild_cold", "rebuild_warm", "rescore", "resynth"}
    assert ways["rescore"]["pairs"] == ways["rebuild_cold"]["pairs"] > 0
    assert ways["rescore"]["written"] < ways["rebuild_cold"]["written"] / 20  # scores only
    assert 0 < ways["resynth"]["pairs"] <= ways["rebuild_cold"]["pairs"]


def test_pair_stages_bench_compares_torch_with_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    from pvtt.tools.bench import pair_stages

    pair_stages.main(["--size", "160x90", "--frames", "6", "--pairs", "2", "--batch", "2"])
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("insert") and "levels apart" in line for line in lines), lines
    assert any(line.startswith("score") for line in lines), lines


@pytest.mark.filterwarnings("ignore:lance is not fork-safe")
def test_loader_bench_worker_part_rates_batched_and_single(
    tmp_path: Path, shared_data: Path
) -> None:
    """Part 5 alone: every run of the same bytes, per sample and in batches, against one file."""
    from pvtt.tools.bench import loader

    out = tmp_path / "loader.json"
    loader.main(
        ["--pairs", "12", "--clips", "1", "--reps", "1", "--parts", "5",
         "--data", str(shared_data), "--dir", str(tmp_path), "--json", str(out)]
    )  # fmt: skip
    rows = json.loads(out.read_text())["workers"]["rows"]
    expected = {
        f"{fmt}{batch}_w{workers}"
        for fmt in ("lance", "tar")
        for batch in ("", f"_b{loader.WORKER_BATCH}")
        for workers in loader.WORKERS
    }
    assert set(rows) == expected | {"one_file"}
    assert rows["one_file"]["ratio_vs_one_file"] == 1.0
    assert all(row["samples_s"] > 0 and row["ratio_vs_one_file"] > 0 for row in rows.values())


def test_evict_drops_a_file_named_itself_and_every_file_of_a_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compare's raw baselines evict one file: a file root used to be skipped (rglob of a
    file yields nothing), so the raw read was warm while every tool's was cold."""
    import os

    from pvtt.tools.bench import loader

    one = tmp_path / "raw.bin"
    one.write_bytes(b"x" * 4096)
    folder = tmp_path / "dataset"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "a.lance").write_bytes(b"y")
    (folder / "b.json").write_bytes(b"z")
    dropped: list[str] = []

    def fadvise(fd: int, offset: int, length: int, advice: int) -> None:
        assert advice == os.POSIX_FADV_DONTNEED
        dropped.append(os.readlink(f"/proc/self/fd/{fd}"))

    monkeypatch.setattr(loader.os, "posix_fadvise", fadvise)
    loader.evict(one, folder)
    assert sorted(dropped) == sorted(str(p) for p in (one, folder / "data" / "a.lance", folder / "b.json"))


def test_multigpu_pair_phase_reads_the_gpu_samples_inside_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The pair phase of a build's timeline: its rate and the GPU samples taken within it
    only (the start-up's idle GPU does not count), printed with the run's figures."""

    from pvtt.tools.bench.models import GpuSampler
    from pvtt.tools.bench.multigpu import _pair_phase, _print_row

    sampler = GpuSampler.__new__(GpuSampler)  # its samples, without NVML
    sampler.times, sampler.samples = [100.0, 105.0, 110.0, 120.0], [[0], [40], [80], [0]]
    timeline = {"started_at": 100.0, "pairs_from_s": 4.0, "pairs_until_s": 14.0}
    phase = _pair_phase(timeline, sampler, pairs=20)
    assert phase == {"pair_phase_s": 10.0, "pair_phase_pairs_per_s": 2.0,
                     "pair_phase_gpu_busy": 0.6}
    assert _pair_phase({"started_at": 100.0}, sampler, pairs=0) == {}  # no pair made
    row = {"gpus": 1, "catalog": "720p", "tuning": "gpu", "pairs": 20, "wall_s": 40.0,
           "pairs_per_s": 0.5, "gpu_busy": 0.3, "encoder": "libx264", "stage_s": {"encode": 9.0},
           "batching": {}, **phase}
    _print_row(row, 0.25, "H200")
    out = capsys.readouterr().out
    assert "0.50 pairs/s (2.00x the first row)" in out
    assert "pair phase (rank 0's first pair to its last): 10.0 s, 2.00 pairs/s a rank, GPUs busy 60.0%" in out
