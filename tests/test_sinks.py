"""Tar + Lance sinks: round trip, one commit point, resume and SIGKILL safety."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from records_factory import make_samples

from pvtt.builder.writer import DatasetWriter, WriterLockedError
from pvtt.loaders.query import PairFilter, select_pairs
from pvtt.loaders.store import open_dataset, read_blobs_by_key
from pvtt.loaders.tar_reader import read_sample, read_sample_json
from pvtt.loaders.verify import verify_dataset
from pvtt.schemas.manifest import ManifestError, manifest_path, read_manifest
from pvtt.schemas.masks import MASKS_FILE_EXTENSION
from pvtt.schemas.version import SchemaVersionError

HERE = Path(__file__).parent


def _build(out: Path, samples, **kw) -> None:
    with DatasetWriter(out, max_samples=kw.pop("max_samples", 16), **kw) as writer:
        for s in samples:
            writer.write(s)


def test_round_trip_both_sinks(tmp_path: Path, shared_data: Path) -> None:
    samples = make_samples(shared_data, 40)
    out = tmp_path / "out"
    _build(out, samples, include_masks=True, include_background=True)
    dataset = open_dataset(out)
    manifest = dataset.manifest
    assert manifest.complete and manifest.counts["pairs"] == 40
    assert [s.samples for s in manifest.shards] == [16, 16, 8]
    assert sum(sum(s.counts.values()) for s in manifest.shards) == 40
    assert (out / "lance" / "pairs.lance").is_dir()
    report = verify_dataset(dataset)
    assert report.ok, report.problems
    assert report.pairs_lance == report.pairs_tar == 40
    # tar samples carry the documented members and the scalar columns
    shard = dataset.shards[0]
    entry = dataset.shard_index(shard)[0]
    members = read_sample(dataset.shard_path(shard), entry)
    assert set(members) == {
        "json", "synth.mp4", "source.mp4", "target.png", "background.mp4", f"masks.{MASKS_FILE_EXTENSION}"
    }
    meta = json.loads(members["json"])
    original = next(s.pair for s in samples if s.pair.pair_id == entry["key"])
    assert meta["quality_score"] == pytest.approx(original.quality_score)
    assert members["synth.mp4"] == original.synth_video
    # Lance rows equal the records, media as blobs
    row = dataset.pairs.to_table(filter=f"pair_id = '{entry['key']}'", columns=["difficulty", "quality_score"]).to_pylist()[0]
    assert row["difficulty"] == original.difficulty
    blobs = read_blobs_by_key(dataset.pairs, "synth_video", "pair_id", [entry["key"]])
    assert blobs[entry["key"]] == original.synth_video
    assert dataset.table("clips").count_rows() == len({s.clip.clip_id for s in samples})
    assert dataset.table("products").count_rows() == len({s.product.image_id for s in samples})


@pytest.mark.parametrize(
    "flt",
    [
        PairFilter(),
        PairFilter(passed=None),
        PairFilter.make(difficulty="hard,expert", passed=None),
        PairFilter.make(min_score=0.5, max_score=0.8, passed=None),
        PairFilter.make(category="Home"),
        PairFilter.make(difficulty="medium", passed=False),
    ],
)
def test_lance_filter_equals_python_filter_over_tar(tmp_path: Path, shared_data: Path, flt) -> None:
    out = tmp_path / "out"
    _build(out, make_samples(shared_data, 48))
    dataset = open_dataset(out)
    lance_ids = set(select_pairs(dataset, flt, columns=["pair_id"]).column("pair_id").to_pylist())
    tar_ids = set()
    for shard in dataset.shards:
        for entry in dataset.shard_index(shard):
            row = read_sample_json(dataset.shard_path(shard), entry)
            if flt.matches(row):
                tar_ids.add(row["pair_id"])
    assert lance_ids == tar_ids
    assert lance_ids, "each filter selects something on this data"


def test_tar_only_query_with_where(tmp_path: Path, shared_data: Path) -> None:
    out = tmp_path / "out"
    _build(out, make_samples(shared_data, 20), formats=["tar"])
    dataset = open_dataset(out)
    assert not dataset.has_lance
    table = select_pairs(dataset, PairFilter(passed=None, where="shot_index = 1"), columns=["pair_id", "shot_index"])
    assert table.num_rows > 0 and set(table.column("shot_index").to_pylist()) == {1}
    assert verify_dataset(dataset).ok


def test_resume_skips_committed_and_drops_uncommitted(tmp_path: Path, shared_data: Path) -> None:
    samples = make_samples(shared_data, 30)
    out = tmp_path / "out"
    writer = DatasetWriter(out, max_samples=8, commit_interval_s=1e9)
    assert writer.open() == set()
    for s in samples[:20]:
        writer.write(s)  # two full shards committed, 4 pending
    writer.abort()  # like a crash: pending pairs are not committed
    committed = read_manifest(out).counts["pairs"]
    assert committed == 16
    dataset = open_dataset(out)
    assert dataset.pairs.count_rows() == 16
    writer = DatasetWriter(out, max_samples=8, commit_interval_s=1e9)
    done = writer.open()
    assert done == {s.pair.pair_id for s in samples[:16]}
    for s in samples:
        if not writer.has(s.pair.pair_id):
            writer.write(s)
    writer.close()
    dataset = open_dataset(out)
    report = verify_dataset(dataset, media=False)
    assert report.ok, report.problems
    ids = dataset.pairs.to_table(columns=["pair_id"]).column("pair_id").to_pylist()
    assert sorted(ids) == sorted(s.pair.pair_id for s in samples)


def test_second_writer_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = DatasetWriter(out)
    first.open()
    with pytest.raises(WriterLockedError):
        DatasetWriter(out).open()
    first.abort()


def test_newer_schema_version_is_refused(tmp_path: Path, shared_data: Path) -> None:
    out = tmp_path / "out"
    _build(out, make_samples(shared_data, 4))
    data = json.loads(manifest_path(out).read_text())
    data["schema_version"] = 2
    manifest_path(out).write_text(json.dumps(data))
    with pytest.raises(SchemaVersionError, match="upgrade pvtt"):
        open_dataset(out)


def test_missing_manifest_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no manifest"):
        open_dataset(tmp_path)


@pytest.mark.parametrize("trial", range(4))
def test_sigkill_at_random_points_then_resume(tmp_path: Path, shared_data: Path, trial: int) -> None:
    """A writer killed anywhere leaves a valid dataset; a rerun completes it exactly."""
    out = tmp_path / "out"
    count = 40
    cmd = [sys.executable, str(HERE / "writer_worker.py"), str(out), str(shared_data), str(count)]
    rng = random.Random(trial)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # wait until the writer has started committing, then kill at a random moment
    deadline = time.monotonic() + 60
    while not manifest_path(out).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(rng.uniform(0.0, 1.5))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    if manifest_path(out).exists():
        report = verify_dataset(open_dataset(out), media=False)
        assert report.ok, report.problems
    finished = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    dataset = open_dataset(out)
    report = verify_dataset(dataset)
    assert report.ok, report.problems
    expected = sorted(s.pair.pair_id for s in make_samples(shared_data, count))
    ids = dataset.pairs.to_table(columns=["pair_id"]).column("pair_id").to_pylist()
    assert sorted(ids) == expected
    tar_ids = [e["key"] for s in dataset.shards for e in dataset.shard_index(s)]
    assert sorted(tar_ids) == expected
    leftovers = [p.name for p in (out / "tar").iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_shards_roll_over_by_bytes(tmp_path: Path, shared_data: Path) -> None:
    samples = make_samples(shared_data, 12)
    sample_bytes = sum(
        len(b) for b in (samples[0].pair.synth_video, samples[0].clip.source_video, samples[0].product.image_rgba)
    )
    out = tmp_path / "out"
    _build(out, samples, max_samples=1000, max_bytes=3 * sample_bytes, formats=["tar"])
    shards = open_dataset(out).shards
    assert len(shards) >= 3 and all(s.samples <= 4 for s in shards)
    assert sum(s.samples for s in shards) == 12


def _run_rank(out: Path, shared: Path, count: int, rank: int, world: int, die_after: int = -1) -> int:
    cmd = [sys.executable, str(HERE / "writer_worker.py"), str(out), str(shared), str(count), str(rank), str(world)]
    env = {**os.environ, "PVTT_TEST_DIE_AFTER": str(die_after)}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == (0 if die_after < 0 else -signal.SIGKILL), done.stderr
    return done.returncode


def test_three_ranks_then_merge_equal_one_writer(tmp_path: Path, shared_data: Path) -> None:
    from pvtt.builder.merge import merge

    count = 36
    single = tmp_path / "single"
    _run_rank(single, shared_data, count, 0, 1)
    multi = tmp_path / "multi"
    for rank in range(3):
        _run_rank(multi, shared_data, count, rank, 3)
    assert not manifest_path(multi).exists()  # nothing visible before the merge
    merged = merge(multi)
    assert merged.world_size == 3 and merged.counts["pairs"] == count
    assert merge(multi).merged == merged.merged  # idempotent
    a, b = open_dataset(single), open_dataset(multi)
    report = verify_dataset(b)
    assert report.ok, report.problems
    for table in ("pairs", "clips", "products"):
        key = {"pairs": "pair_id", "clips": "clip_id", "products": "image_id"}[table]
        assert sorted(a.table(table).to_table(columns=[key]).column(key).to_pylist()) == sorted(
            b.table(table).to_table(columns=[key]).column(key).to_pylist()
        )
    def scores(d) -> dict:
        rows = d.pairs.to_table(columns=["pair_id", "quality_score"]).to_pylist()
        return {r["pair_id"]: r["quality_score"] for r in rows}

    assert scores(a) == scores(b)
    assert {Path(s.path).name[:10] for s in b.shards} == {"pairs-r000", "pairs-r001", "pairs-r002"}


def test_a_killed_rank_is_rerun_alone_then_merged(tmp_path: Path, shared_data: Path) -> None:
    from pvtt.builder.merge import merge

    count = 36
    out = tmp_path / "multi"
    _run_rank(out, shared_data, count, 0, 3)
    _run_rank(out, shared_data, count, 2, 3)
    _run_rank(out, shared_data, count, 1, 3, die_after=9)  # killed mid-way (commits every 7)
    with pytest.raises(ManifestError, match=r"ranks \[1\]"):
        merge(out)
    _run_rank(out, shared_data, count, 1, 3)  # only the dead rank again
    merged = merge(out)
    ids = open_dataset(out).pairs.to_table(columns=["pair_id"]).column("pair_id").to_pylist()
    assert sorted(ids) == sorted(s.pair.pair_id for s in make_samples(shared_data, count))
    assert merged.counts["pairs"] == count
    assert verify_dataset(open_dataset(out)).ok


def test_merging_again_after_rerunning_ranks_gives_the_same_tables(tmp_path: Path, shared_data: Path) -> None:
    from pvtt.builder.merge import merge

    out = tmp_path / "multi"
    for rank in range(2):
        _run_rank(out, shared_data, 24, rank, 2)
    first = merge(out)
    for rank in range(2):  # nothing new to write, but the rank manifests are rewritten
        _run_rank(out, shared_data, 24, rank, 2)
    second = merge(out)
    assert second.counts == first.counts
    report = verify_dataset(open_dataset(out))
    assert report.ok, report.problems
    assert open_dataset(out).pairs.count_rows() == 24


def test_written_files_are_readable_by_others(tmp_path: Path, shared_data: Path) -> None:
    import stat

    out = tmp_path / "out"
    old = os.umask(0o022)
    try:
        _build(out, make_samples(shared_data, 4))
    finally:
        os.umask(old)
    for path in (out / "manifest.json", *(out / "tar").iterdir()):
        assert stat.S_IMODE(path.stat().st_mode) & 0o044 == 0o044, path


def test_short_keys_stay_plain_ustar_byte_for_byte(tmp_path: Path, shared_data: Path) -> None:
    """PAX headers are for names over 100 bytes only: shards of short keys are unchanged."""
    import io
    import tarfile

    out = tmp_path / "out"
    _build(out, make_samples(shared_data, 5), formats=["tar"], include_masks=True)
    shard = next((out / "tar").glob("*.tar"))
    expected = io.BytesIO()
    with tarfile.open(shard) as source, tarfile.open(
        fileobj=expected, mode="w", format=tarfile.USTAR_FORMAT
    ) as copy:
        for member in source.getmembers():
            assert member.type == tarfile.REGTYPE and not member.pax_headers
            copy.addfile(member, source.extractfile(member))
    assert shard.read_bytes() == expected.getvalue()
