"""`pvtt build --engine ray` on a local Ray (2 CPUs) against the local engine: same pairs."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from records_factory import make_samples

from pvtt.builder.demo import PRODUCTS, make_demo_catalog
from pvtt.builder.engines.ray_engine import RayOptions, _part, _RankWriter, stage_gpus
from pvtt.builder.merge import merge
from pvtt.builder.report import BuildReport, Reject
from pvtt.loaders.store import open_dataset
from pvtt.loaders.verify import verify_dataset
from pvtt.schemas.config import ConfigError, load_config
from pvtt.tools.cli import main

SUBSET = [
    p for p in PRODUCTS if p.id in {"neck-gold", "neck-silver", "ring-ruby", "key-fob", "mug-blue"}
]


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_catalog(tmp_path_factory.mktemp("ray") / "catalog", products=SUBSET)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _pairs(out: Path) -> dict[str, tuple]:
    columns = [
        "pair_id",
        "quality_score",
        "score_identity",
        "score_temporal",
        "passed",
        "difficulty",
    ]
    rows = open_dataset(out).pairs.to_table(columns=columns).to_pylist()
    return {r["pair_id"]: tuple(r[c] for c in columns[1:]) for r in rows}


def _assert_same_pairs(got: dict[str, tuple], expected: dict[str, tuple]) -> None:
    assert set(got) == set(expected)
    for pair_id, row in expected.items():
        assert got[pair_id] == pytest.approx(row), pair_id


def _keys(out: Path, table: str, column: str) -> list[str]:
    return sorted(
        open_dataset(out).table(table).to_table(columns=[column]).column(column).to_pylist()
    )


def _rejects(out: Path) -> set[tuple[str, str]]:
    lines = (out / "report" / "rejects.jsonl").read_text().splitlines()
    return {(r["stage"], r["item"]) for r in map(json.loads, lines)}


@pytest.fixture(scope="module")
def built(
    catalog: Path, local_ray: None, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path, list[str]]:
    """A local build and a Ray build of the same catalog; the Ray one hits the local cache."""
    root = tmp_path_factory.mktemp("builds")
    common = ["--strategy", "single", "--no-progress", "--cache-dir", str(root / "cache")]
    local, on_ray = root / "local", root / "ray"
    assert main(["build", str(catalog), str(local), *common]) == 0
    assert main(["build", str(catalog), str(on_ray), "--engine", "ray", *common]) == 0
    return local, on_ray, common


def test_ray_build_equals_local_build(built: tuple[Path, Path, list[str]]) -> None:
    local, on_ray, _ = built
    expected, got = _pairs(local), _pairs(on_ray)
    assert len(expected) >= 30
    _assert_same_pairs(got, expected)
    assert _keys(on_ray, "clips", "clip_id") == _keys(local, "clips", "clip_id")
    assert _keys(on_ray, "products", "image_id") == _keys(local, "products", "image_id")
    assert main(["verify", str(on_ray)]) == 0

    # two write ranks, each with its own shards, published by one merge
    manifest = json.loads((on_ray / "manifest.json").read_text())
    assert manifest["complete"] and manifest["world_size"] == 2 and manifest["merged"]
    assert {s["rank"] for s in manifest["shards"]} == {0, 1}
    # the clip and image stages were cache hits; the clips the tracker lost are reported
    stats = json.loads((on_ray / "report" / "statistics.json").read_text())
    for stage in ("shots", "detect", "segment", "inpaint", "matte"):
        assert stats["calls_per_stage"].get(stage, 0) == 0, stats["calls_per_stage"]
    assert stats["calls_per_stage"]["insert"] == len(expected)
    assert stats["cache"]["hits"] >= 10 and stats["cache"]["misses"] == 0
    assert _rejects(on_ray) == _rejects(local) and any(s == "clip" for s, _ in _rejects(local))
    # both engines count the same funnel (the Ray build's stages were cache hits: its seconds differ)
    local_stats = json.loads((local / "report" / "statistics.json").read_text())
    assert _flow(stats) == _flow(local_stats) and _flow(stats)[0][1] > 0


def _flow(stats: dict) -> list[tuple[str, int, int, dict[str, int]]]:
    return [(r["stage"], r["in"], r["out"], r["reasons"]) for r in stats["funnel"]["stages"]]


def test_ray_finishes_a_folder_that_local_ranks_began(
    built: tuple[Path, Path, list[str]],
    catalog: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    local, _, common = built
    out = tmp_path / "out"
    assert main(["build", str(catalog), str(out), "--rank", "0", "--world-size", "2", *common]) == 0
    rank0 = json.loads((out / "ranks" / "r000.json").read_text())["counts"]["pairs"]
    capsys.readouterr()
    assert main(["build", str(catalog), str(out), "--engine", "ray", *common]) == 0
    expected = _pairs(local)
    summary = capsys.readouterr().out  # rank 0's pairs are kept, rank 1's are made
    assert f"{len(expected) - rank0} new, {rank0} already done" in summary
    _assert_same_pairs(_pairs(out), expected)
    assert main(["verify", str(out)]) == 0


def test_ray_rerun_of_a_finished_build_changes_nothing(
    built: tuple[Path, Path, list[str]],
    catalog: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, built_on_ray, common = built
    on_ray = tmp_path / "ray"
    shutil.copytree(built_on_ray, on_ray)
    before = _pairs(on_ray)
    capsys.readouterr()
    assert main(["build", str(catalog), str(on_ray), "--engine", "ray", *common]) == 0
    assert f"0 new, {len(before)} already done" in capsys.readouterr().out
    assert _pairs(on_ray) == before


def test_a_pair_the_sinks_refuse_is_rejected_on_its_rank(
    local_ray: None, shared_data: Path, tmp_path: Path
) -> None:
    """A pair Lance cannot store used to raise in the rank writer actor and fail the build."""
    import ray

    samples = make_samples(shared_data, 6)  # clip 0: samples 0-2 (rank 0), clip 1: 3-5 (rank 1)
    samples[1].pair.shot_index = 2**40
    bad = samples[1].pair
    out = tmp_path / "out"
    writers = [
        ray.remote(num_cpus=0, max_restarts=0)(_RankWriter).remote(
            out, load_config(None), rank, 2, "test", {}
        )
        for rank in range(2)
    ]
    ray.get([w.open.remote() for w in writers])
    ray.get(writers[0].write_products.remote({s.product.key: s.product for s in samples}))
    made = BuildReport()  # what the pair stage counts for each pair it hands on
    for s in samples[:3]:
        made.count(f"pairs.{'passed' if s.pair.passed else 'rejected'}")
    calls = [
        writers[rank].write.remote(group[0].clip.key, group, parts)
        for rank, group, parts in ((0, samples[:3], [_part(made)]), (1, samples[3:], []))
    ]
    assert ray.get(calls) == [2, 3]
    (part, written), _ = ray.get([w.close.remote() for w in writers])
    assert written == 2
    assert part["rejects"] == [
        Reject(
            "write",
            bad.pair_id,
            "the lance sink cannot write it: column shot_index (int32) cannot hold "
            "1099511627776: Value 1099511627776 too large to fit in C integer type",
        )
    ]
    assert sum(n for k, n in part["counts"].items() if k.startswith("pairs.")) == 2
    merge(out)
    dataset = open_dataset(out)
    assert verify_dataset(dataset, media=False).ok
    lance_ids = set(dataset.pairs.to_table(columns=["pair_id"]).column("pair_id").to_pylist())
    tar_ids = {e["key"] for shard in dataset.shards for e in dataset.shard_index(shard)}
    assert lance_ids == tar_ids == {s.pair.pair_id for s in samples} - {bad.pair_id}


def test_ray_missing_says_how_to_install(
    catalog: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    assert (
        main(["build", str(catalog), str(tmp_path / "out"), "--engine", "ray", "--no-progress"])
        == 1
    )
    assert "pip install 'pvtt[ray]'" in capsys.readouterr().err


def test_gpus_only_for_model_stages_of_a_cuda_build(tmp_path: Path) -> None:
    config = tmp_path / "build.toml"
    config.write_text('device = "cuda"\n[segmenter]\nbackend = "sam2"\nmodel = "x.pt"\n')
    cuda = load_config(config)
    assert stage_gpus(cuda, RayOptions()) == {"matte": 0.0, "clip": 1.0, "pair": 0.0}
    assert stage_gpus(cuda, RayOptions(gpus_per_actor={"clip": 0.5}))["clip"] == 0.5
    assert set(stage_gpus(load_config(None), RayOptions()).values()) == {0.0}
    with pytest.raises(ConfigError, match="unknown stages"):
        RayOptions(gpus_per_actor={"insert": 1.0})


def test_a_machine_fault_in_a_ray_task_surfaces_as_its_oserror() -> None:
    from ray.exceptions import RayTaskError

    from pvtt.builder.engines.ray_engine import machine_cause

    full = OSError(28, "No space left on device")
    assert machine_cause(RayTaskError("write", "traceback", full)) is full
    assert machine_cause(RayTaskError("write", "traceback", ValueError("bad"))) is None
    assert machine_cause(KeyboardInterrupt()) is None
