"""End to end on the CPU: the demo catalog through `pvtt build`, then every read command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from pvtt.builder.demo import PRODUCTS, make_demo_catalog
from pvtt.loaders.store import open_dataset
from pvtt.loaders.verify import verify_dataset
from pvtt.schemas.manifest import manifest_path
from pvtt.tools.cli import main

SUBSET = [p for p in PRODUCTS if p.id in {"neck-gold", "neck-silver", "ring-ruby", "key-fob", "mug-blue"}]


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_demo_catalog(tmp_path_factory.mktemp("demo") / "catalog", products=SUBSET)
    # one bad row: a truncated video, listed in the report, nothing else lost
    data = (root / "videos" / "mug-blue.mp4").read_bytes()
    (root / "videos" / "broken.mp4").write_bytes(data[: len(data) // 3])
    with open(root / "products.csv", "a", encoding="utf-8") as fh:
        fh.write("broken,Home,vase,videos/broken.mp4,images/mug-blue-1.png,,\n")
    return root


@pytest.fixture(scope="module")
def built(catalog: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("built") / "out"
    assert main(["build", str(catalog), str(out), "--strategy", "single", "--no-progress"]) == 0
    return out


def _ids_and_scores(out: Path) -> dict[str, float]:
    table = open_dataset(out).pairs.to_table(columns=["pair_id", "quality_score"])
    return dict(zip(table.column("pair_id").to_pylist(), table.column("quality_score").to_pylist(), strict=True))


def test_build_makes_every_difficulty_and_verifies(built: Path) -> None:
    dataset = open_dataset(built)
    manifest = dataset.manifest
    assert manifest.complete
    by_difficulty = manifest.counts["by_difficulty"]
    assert set(by_difficulty) == {"easy", "medium", "hard", "expert"}, by_difficulty
    assert manifest.counts["pairs"] >= 30
    report = verify_dataset(dataset)
    assert report.ok, report.problems
    assert report.pairs_lance == report.pairs_tar == manifest.counts["pairs"]
    row = dataset.pairs.to_table(limit=1, columns=["backends", "width", "height", "frame_count", "fps"]).to_pylist()[0]
    assert set(json.loads(row["backends"])) == {"detector", "segmenter", "inpainter", "matter", "inserter", "scorer"}
    assert row["width"] % 2 == 0 and row["height"] % 2 == 0 and row["frame_count"] >= 50


def test_dataset_card_describes_the_build(built: Path) -> None:
    card = (built / "README.md").read_text()
    manifest = open_dataset(built).manifest
    assert f"build `{manifest.build_id}`" in card
    for difficulty, n in manifest.counts["by_difficulty"].items():
        assert f"| {difficulty} | {n} |" in card
    assert "| `quality_score` |" in card and "PairDataset(" in card
    assert f'version={manifest.tables["pairs"].version}' in card
    assert '"segmenter"' in card  # backends


def test_report_lists_bad_input_with_its_file(built: Path) -> None:
    stats = json.loads((built / "report" / "statistics.json").read_text())
    assert stats["time_per_stage_s"]["segment"] > 0 and stats["time_per_stage_s"]["insert"] > 0
    assert stats["encoder"] == "libx264" and stats["pair_pool"]["kind"] == "threads"
    timeline = stats["timeline"]  # the pair phase, within the build's wall time
    assert time.time() - 3600 < timeline["started_at"] < time.time()
    assert 0 < timeline["pairs_from_s"] < timeline["pairs_until_s"] <= stats["wall_s"] + 0.01
    rejects = [json.loads(line) for line in (built / "report" / "rejects.jsonl").read_text().splitlines()]
    broken = [r for r in rejects if "broken.mp4" in r["reason"] or "broken" in r["item"]]
    assert broken and broken[0]["stage"] == "catalog"
    assert "videos/broken.mp4" in broken[0]["reason"]


def test_query_json_and_where(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["query", str(built), "--all", "--format", "json", "--columns", "pair_id,difficulty,quality_score,passed"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == open_dataset(built).manifest.counts["pairs"]
    assert main(["query", str(built), "--difficulty", "hard,expert", "--min-score", "0.5", "--format", "json"]) == 0
    hard = json.loads(capsys.readouterr().out)
    expected = [r for r in rows if r["difficulty"] in ("hard", "expert") and r["quality_score"] >= 0.5 and r["passed"]]
    assert sorted(r["pair_id"] for r in hard) == sorted(r["pair_id"] for r in expected)
    assert main(["query", str(built), "--all", "--where", "shot_index = 1", "--format", "csv", "--columns", "pair_id,shot_index"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "pair_id,shot_index" and all(line.endswith(",1") for line in lines[1:])
    assert main(["query", str(built), "--where", "no_such_column = 1"]) == 1
    assert "no_such_column" in capsys.readouterr().err


def test_stats_json(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stats", str(built), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["pairs"] == sum(stats["by_difficulty"].values())
    assert stats["bytes"]["lance/pairs"] > 0 and stats["bytes"]["tar"] > 0
    assert stats["scores"]["expert"]["quality_score"]["q50"] is not None


def test_export_pairs_seed_layout(built: Path, tmp_path: Path) -> None:
    dest = tmp_path / "seed"
    assert main(["export-pairs", str(built), str(dest), "--all", "--limit", "3"]) == 0
    doc = json.loads((dest / "annotations" / "pairs.json").read_text())
    assert doc["version"] == "1.0" and doc["total_pairs"] == 3
    for pair in doc["pairs"]:
        for path in (pair["output"]["video"], pair["source"]["video"], pair["target"]["product_image"]):
            assert (dest / path).stat().st_size > 0
        assert (dest / pair["output"]["background"]).exists()
        assert sorted(os.listdir(dest / pair["output"]["masks"]))[0] == "0001.png"
        assert pair["metadata"]["difficulty"] in ("easy", "medium", "hard", "expert")
    assert (dest / "annotations" / "quality_scores.json").exists()


def test_rerun_is_a_no_op_and_inserter_change_reruns_only_insertion(
    built: Path, catalog: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _ids_and_scores(built)
    assert main(["build", str(catalog), str(built), "--strategy", "single", "--no-progress"]) == 0
    assert "0 new" in capsys.readouterr().out
    assert _ids_and_scores(built) == before
    # a new output sharing the cache, with only the inserter changed
    config = tmp_path / "build.toml"
    config.write_text("[inserter]\nparams = { harmonize = 0.0 }\n")
    out = tmp_path / "out2"
    args = ["build", str(catalog), str(out), "--strategy", "single", "--no-progress",
            "--config", str(config), "--cache-dir", str(built / "cache")]
    assert main(args) == 0
    calls = json.loads((out / "report" / "statistics.json").read_text())["calls_per_stage"]
    assert calls.get("insert", 0) == len(before) and calls.get("score", 0) == len(before)
    for stage in ("shots", "segment", "inpaint", "matte", "detect"):
        assert calls.get(stage, 0) == 0, f"{stage} ran again: {calls}"
    assert set(_ids_and_scores(out)) == set(before)


def test_killed_build_resumes_without_duplicates(built: Path, catalog: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    config = tmp_path / "build.toml"
    config.write_text("[output]\nshard_max_samples = 4\ncommit_interval_s = 0.0\n")
    cmd = [sys.executable, "-m", "pvtt.tools.cli", "build", str(catalog), str(out), "--strategy",
           "single", "--no-progress", "--config", str(config), "--cache-dir", str(built / "cache")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # kill once some pairs are committed
        if manifest_path(out).exists() and json.loads(manifest_path(out).read_text())["shards"]:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = open_dataset(out)
    assert not partial.manifest.complete
    assert verify_dataset(partial, media=False).ok
    assert subprocess.run(cmd, capture_output=True, timeout=300).returncode == 0
    resumed = open_dataset(out)
    assert verify_dataset(resumed).ok
    assert _ids_and_scores(out) == pytest.approx(_ids_and_scores(built))


def test_three_ranks_then_merge_equal_one_process(built: Path, catalog: Path, tmp_path: Path) -> None:
    out = tmp_path / "ranks"
    common = ["--strategy", "single", "--no-progress", "--cache-dir", str(built / "cache")]
    for rank in range(3):
        assert main(["build", str(catalog), str(out), "--rank", str(rank), "--world-size", "3", *common]) == 0
    assert not manifest_path(out).exists()
    assert main(["merge", str(out)]) == 0
    assert _ids_and_scores(out) == pytest.approx(_ids_and_scores(built))
    assert verify_dataset(open_dataset(out)).ok
    assert "pvtt training pairs" in (out / "README.md").read_text()
    products = lambda d: sorted(open_dataset(d).table("products").to_table(columns=["image_id"]).column("image_id").to_pylist())  # noqa: E731
    assert products(out) == products(built)
    assert {p.name for p in (out / "report").iterdir()} >= {"r000", "r001", "r002"}


def test_a_killed_rank_is_rerun_alone(built: Path, catalog: Path, tmp_path: Path) -> None:
    out = tmp_path / "ranks"
    config = tmp_path / "build.toml"
    config.write_text("[output]\nshard_max_samples = 2\ncommit_interval_s = 0.0\n")
    common = ["--strategy", "single", "--no-progress", "--cache-dir", str(built / "cache"), "--config", str(config)]
    for rank in (0, 2):
        assert main(["build", str(catalog), str(out), "--rank", str(rank), "--world-size", "3", *common]) == 0
    cmd = [sys.executable, "-m", "pvtt.tools.cli", "build", str(catalog), str(out), "--rank", "1",
           "--world-size", "3", *common]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    own = out / "ranks" / "r001.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # kill rank 1 once it has committed a shard
        if own.exists() and json.loads(own.read_text())["shards"]:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert main(["merge", str(out)]) == 1  # rank 1 did not finish
    assert subprocess.run(cmd, capture_output=True, timeout=300).returncode == 0
    assert main(["merge", str(out)]) == 0
    assert _ids_and_scores(out) == pytest.approx(_ids_and_scores(built))


def test_concurrent_clips_and_pairs_give_the_same_dataset(built: Path, catalog: Path, tmp_path: Path) -> None:
    """Clip stages on two threads and pairs of several clips in flight: same pairs, same scores,
    written in plan order (a fresh cache, so every clip stage runs again)."""
    out = tmp_path / "concurrent"
    args = ["build", str(catalog), str(out), "--strategy", "single", "--no-progress",
            "--clip-workers", "2", "--workers", "3", "--cache-dir", str(tmp_path / "cache")]
    assert main(args) == 0
    assert _ids_and_scores(out) == _ids_and_scores(built)
    order = lambda d: open_dataset(d).pairs.to_table(columns=["pair_id"]).column("pair_id").to_pylist()  # noqa: E731
    assert order(out) == order(built)
    stats = json.loads((out / "report" / "statistics.json").read_text())
    assert stats["counts"]["clips.ok"] == open_dataset(out).table("clips").count_rows()
    assert stats["counts"]["clips.ok"] == open_dataset(built).table("clips").count_rows()


BUILD_TIME = frozenset({"build_id", "created_at"})
"""Fields that differ between any two builds of the same pairs."""


def _tar_members(out: Path) -> dict[tuple[str, str], object]:
    """Every member of every shard, in order: bytes, or the json without build-time fields."""
    found: dict[tuple[str, str], object] = {}
    for shard in sorted((out / "tar").glob("*.tar")):
        with tarfile.open(shard) as tf:
            for member in tf.getmembers():
                data = tf.extractfile(member).read()
                if member.name.endswith(".json"):
                    data = {k: v for k, v in json.loads(data).items() if k not in BUILD_TIME}
                found[(shard.name, member.name)] = data
    return found


def _rows(out: Path, table: str) -> list[dict]:
    rows = open_dataset(out).table(table).to_table().to_pylist()
    return [{k: v for k, v in row.items() if k not in BUILD_TIME} for row in rows]


@pytest.mark.parametrize(
    ("pool", "flags"),
    [("processes", ["--pair-pool", "processes"]), ("threads", ["--encode-workers", "2"])],
    ids=["processes", "encode-threads"],
)
def test_pair_pools_build_the_threaded_dataset(
    built: Path, catalog: Path, tmp_path: Path, pool: str, flags: list[str]
) -> None:
    """Pairs made in worker processes (clip arrays in shared memory), or encoded on threads
    of their own, give the threaded build's dataset: same shards, same members, same
    bytes, same rows, same order."""
    threads = json.loads((built / "report" / "statistics.json").read_text())["pair_pool"]
    assert threads["kind"] == "threads" and threads["encode_workers"] == 0
    out = tmp_path / "pool"
    args = ["build", str(catalog), str(out), "--strategy", "single", "--no-progress",
            "--workers", "2", "--cache-dir", str(built / "cache"), *flags]
    assert main(args) == 0
    members = _tar_members(out)
    assert members and list(members) == list(_tar_members(built))
    assert members == _tar_members(built)
    for table in ("pairs", "clips", "products"):
        assert _rows(out, table) == _rows(built, table), table
    stats = json.loads((out / "report" / "statistics.json").read_text())
    assert stats["pair_pool"]["kind"] == pool and stats["pair_pool"]["workers"] == 2
    made = open_dataset(out).manifest.counts
    for stage in ("insert", "score", "check"):  # the workers' timings reached the report
        assert stats["calls_per_stage"][stage] == made["pairs"] + stats["counts"].get("rejected.pair", 0)
        assert stats["time_per_stage_s"][stage] > 0
    assert stats["counts"]["pairs.passed"] == open_dataset(built).manifest.counts["passed"]


def _sigint_default() -> None:
    """Ctrl-C's default in the child: a test run in the background (nohup, ``cmd &`` in a
    script, as CI may) ignores SIGINT, and a child inherits that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_interrupted_process_build_aborts_its_open_shard_and_resumes(
    built: Path, catalog: Path, tmp_path: Path
) -> None:
    """Ctrl-C reaches the build's process alone: it stops the workers, aborts the open
    shard, and the same command resumes to the uninterrupted dataset."""
    out = tmp_path / "out"
    config = tmp_path / "build.toml"
    config.write_text('pair_pool = "processes"\n[output]\nshard_max_samples = 4\n'
                      "commit_interval_s = 0.0\n")
    cmd = [sys.executable, "-m", "pvtt.tools.cli", "build", str(catalog), str(out), "--strategy",
           "single", "--no-progress", "--config", str(config), "--cache-dir", str(built / "cache")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=_sigint_default)
    deadline = time.monotonic() + 120
    # interrupt while the first shard is being written: pairs made in processes come so
    # fast that waiting for a commit let a warm-cache build finish before the signal
    while time.monotonic() < deadline and not list((out / "tar").glob(".*.tmp")):
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) != 0
    partial = open_dataset(out)
    assert not partial.manifest.complete
    assert verify_dataset(partial, media=False).ok
    assert subprocess.run(cmd, capture_output=True, timeout=300).returncode == 0
    assert verify_dataset(open_dataset(out)).ok
    assert _ids_and_scores(out) == _ids_and_scores(built)
