"""`pvtt build CATALOG s3://...`: commits land on a real S3 server (moto, loopback)."""

from __future__ import annotations

import json
from pathlib import Path

import boto3

from pvtt.builder.demo import PRODUCTS, make_demo_catalog
from pvtt.loaders import PairDataset
from pvtt.tools.cli import main

BUCKET = "pvtt-build"
KEYS = {"access_key_id": "testing", "secret_access_key": "testing", "region": "us-east-1"}


def test_build_publishes_every_commit_to_s3(s3_endpoint: str, tmp_path: Path, capsys) -> None:
    boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="testing",
                 aws_secret_access_key="testing", region_name="us-east-1").create_bucket(Bucket=BUCKET)
    products = [p for p in PRODUCTS if p.id in {"neck-gold", "mug-blue"}]
    catalog = make_demo_catalog(tmp_path / "catalog", products=products)
    options = {"endpoint_url": s3_endpoint, **KEYS}
    cli_options = [a for k, v in options.items() for a in ("--storage-option", f"{k}={v}")]
    remote = f"s3://{BUCKET}/runs/demo"
    staging = tmp_path / "staging"
    args = ["build", str(catalog), remote, "--strategy", "single", "--no-progress",
            "--staging", str(staging), *cli_options]
    assert main(args) == 0
    capsys.readouterr()
    assert main(["verify", remote, *cli_options]) == 0
    assert "OK:" in capsys.readouterr().out
    local = sorted(s["meta"]["pair_id"] for s in PairDataset(staging, fields=("meta",), passed=None))
    over_s3 = PairDataset(remote, fields=("meta",), passed=None, storage_options=options)
    assert sorted(s["meta"]["pair_id"] for s in over_s3) == local and local
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="testing",
                      aws_secret_access_key="testing", region_name="us-east-1")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="runs/demo/")["Contents"]}
    assert "runs/demo/report/statistics.json" in keys
    assert not any("/cache/" in k or "/." in k for k in keys)  # local cache and temp files stay local
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key="runs/demo/manifest.json")["Body"].read())
    assert manifest["complete"] and all(f"runs/demo/{s['path']}" in keys for s in manifest["shards"])
    # a rerun finds everything committed, uploads nothing new but the report
    assert main(args) == 0
    assert "0 new" in capsys.readouterr().out


def test_s3_output_with_ray_is_refused(tmp_path: Path, capsys) -> None:
    assert main(["build", str(tmp_path), "s3://b/x", "--engine", "ray", "--no-progress"]) == 1
    assert "needs the local engine" in capsys.readouterr().err


def test_ranks_on_two_nodes_publish_to_s3_and_merge_there(s3_endpoint: str, tmp_path: Path, capsys) -> None:
    """Each rank stages in its own folder (as on its own node); the merge runs against S3
    alone and equals a single local build."""
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="testing",
                      aws_secret_access_key="testing", region_name="us-east-1")
    s3.create_bucket(Bucket="pvtt-ranks")
    products = [p for p in PRODUCTS if p.id in {"neck-gold", "mug-blue", "key-fob"}]
    catalog = make_demo_catalog(tmp_path / "catalog", products=products)
    cache = ["--cache-dir", str(tmp_path / "cache")]
    common = ["--strategy", "single", "--no-progress", *cache]
    assert main(["build", str(catalog), str(tmp_path / "local"), *common]) == 0
    options = {"endpoint_url": s3_endpoint, **KEYS}
    cli_options = [a for k, v in options.items() for a in ("--storage-option", f"{k}={v}")]
    remote = "s3://pvtt-ranks/multi"
    for rank in (0, 1):
        assert main(["build", str(catalog), remote, "--rank", str(rank), "--world-size", "2",
                     "--staging", str(tmp_path / f"node{rank}"), *common, *cli_options]) == 0
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="pvtt-ranks", Prefix="multi/")["Contents"]}
    assert {"multi/ranks/r000.json", "multi/ranks/r001.json"} <= keys
    assert "multi/manifest.json" not in keys  # nothing is published before the merge
    capsys.readouterr()
    assert main(["merge", remote, *cli_options]) == 0
    assert "merged 2 ranks" in capsys.readouterr().out
    assert main(["verify", remote, *cli_options]) == 0

    def scores(ds: PairDataset) -> dict[str, float]:
        return {s["meta"]["pair_id"]: s["meta"]["quality_score"] for s in ds}

    local = scores(PairDataset(tmp_path / "local", fields=("meta",), passed=None))
    merged = scores(PairDataset(remote, fields=("meta",), passed=None, storage_options=options))
    assert merged == local and local
    assert main(["merge", remote, *cli_options]) == 0  # merging again changes nothing
