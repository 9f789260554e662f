"""Reading a built dataset from S3: a real S3-compatible server (moto) on loopback.

A dataset built locally is uploaded to a bucket; everything read through
``s3://`` must equal what the local copy gives: pair ids, tensors, queries,
statistics and the verify report.
"""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
import torch
from records_factory import make_samples
from torch.utils.data import DataLoader

from pvtt.builder.writer import DatasetWriter
from pvtt.loaders import PairDataset
from pvtt.loaders.fs import S3Options, Storage
from pvtt.loaders.query import PairFilter, select_pairs
from pvtt.loaders.store import open_dataset
from pvtt.schemas.manifest import ManifestError
from pvtt.tools.cli import main

BUCKET = "pvtt-test"
PREFIX = "datasets/out"
KEYS = {"access_key_id": "testing", "secret_access_key": "testing", "region": "us-east-1"}


@pytest.fixture(scope="module")
def endpoint(s3_endpoint: str) -> str:
    return s3_endpoint


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    out = tmp_path_factory.mktemp("s3ds") / "out"
    with DatasetWriter(out, max_samples=10, include_masks=True) as writer:
        for sample in make_samples(shared_data, 60):
            writer.write(sample)
    return out


@pytest.fixture(scope="module")
def remote(built: Path, endpoint: str) -> str:
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=BUCKET)
    for path in sorted(p for p in built.rglob("*") if p.is_file()):
        client.upload_file(str(path), BUCKET, f"{PREFIX}/{path.relative_to(built).as_posix()}")
    return f"s3://{BUCKET}/{PREFIX}"


@pytest.fixture(scope="module")
def options(endpoint: str) -> dict[str, str]:
    return {"endpoint_url": endpoint, **KEYS}


def _cli_options(options: dict[str, str]) -> list[str]:
    return [arg for k, v in options.items() for arg in ("--storage-option", f"{k}={v}")]


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        if isinstance(a[name], torch.Tensor):
            assert torch.equal(a[name], b[name]), name
        else:  # meta: nan for null scores, so compare as JSON text
            assert json.dumps(a[name], sort_keys=True) == json.dumps(b[name], sort_keys=True)


@pytest.mark.parametrize("fmt", ["lance", "tar"])
def test_pairs_over_s3_equal_the_local_copy(
    built: Path, remote: str, options: dict, fmt: str
) -> None:
    kwargs = dict(
        format=fmt,
        difficulty="hard,expert",
        min_score=0.4,
        passed=None,
        seed=3,
        fields=("synth_video", "source_video", "masks", "target_image", "meta"),
        num_frames=3,
    )
    local = list(PairDataset(built, **kwargs))
    over_s3 = list(PairDataset(remote, storage_options=options, **kwargs))
    assert len(local) == len(over_s3) > 10
    assert [s["meta"]["pair_id"] for s in over_s3] == [s["meta"]["pair_id"] for s in local]
    for a, b in zip(local, over_s3, strict=True):
        _same(a, b)


def test_a_tar_sample_is_one_ranged_get(remote: str, options: dict, monkeypatch) -> None:
    ds = PairDataset(
        remote,
        storage_options=options,
        format="tar",
        passed=None,
        num_frames=2,
        fields=("synth_video", "target_image", "meta"),
    )
    ctx = ds._ctx()
    fs = ctx.reader.dataset.storage.fs
    real, ranges = fs.cat_file, []

    def counting(path: str, start: int | None = None, end: int | None = None, **kw):  # noqa: ANN202
        ranges.append((start, end))
        return real(path, start=start, end=end, **kw)

    monkeypatch.setattr(fs, "cat_file", counting)
    assert sum(1 for _ in ds) == 60
    assert ctx.selection.shard_entries is not None
    expected = [(int(e["offset"]), int(e["end"])) for _, e in ctx.selection.shard_entries]
    assert sorted(ranges) == sorted(expected)


@pytest.mark.parametrize("fmt", ["lance", "tar"])
def test_where_filter_over_s3(built: Path, remote: str, options: dict, fmt: str) -> None:
    kwargs = dict(format=fmt, where="shot_index = 1", passed=None, fields=("meta",), shuffle=False)
    ids = [s["meta"]["pair_id"] for s in PairDataset(remote, storage_options=options, **kwargs)]
    expected = (
        select_pairs(
            open_dataset(built),
            PairFilter.make(**{k: kwargs[k] for k in ("where", "passed")}),
            columns=["pair_id"],
        )
        .column("pair_id")
        .to_pylist()
    )
    assert ids == sorted(expected) and ids


@pytest.mark.filterwarnings("ignore:lance is not fork-safe")  # workers read tar only
def test_forked_workers_read_s3(built: Path, remote: str, options: dict) -> None:
    """The main process has already used s3fs (the manifest) when the workers fork."""
    kwargs = dict(format="tar", passed=None, seed=5, fields=("target_image", "meta"))
    expected = [s["meta"]["pair_id"] for s in PairDataset(built, **kwargs)]
    ds = PairDataset(remote, storage_options=options, **kwargs)
    got = [s["meta"]["pair_id"] for s in DataLoader(ds, batch_size=None, num_workers=2)]
    assert got == expected


def test_cli_query_and_stats_over_s3(built: Path, remote: str, options: dict, capsys) -> None:
    query = [
        "--difficulty",
        "medium,expert",
        "--min-score",
        "0.5",
        "--all",
        "--format",
        "json",
        "--columns",
        "pair_id,difficulty,quality_score,passed,target_boxes",
    ]
    assert main(["query", str(built), *query]) == 0
    local = json.loads(capsys.readouterr().out)
    assert main(["query", remote, *_cli_options(options), *query]) == 0
    assert json.loads(capsys.readouterr().out) == local and local
    assert main(["stats", str(built), "--json"]) == 0
    local_stats = json.loads(capsys.readouterr().out)
    assert main(["stats", remote, *_cli_options(options), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == local_stats  # bytes of every table too


def test_cli_verify_over_s3(built: Path, remote: str, options: dict, capsys) -> None:
    assert main(["verify", str(built)]) == 0
    local = capsys.readouterr().out
    assert main(["verify", remote, *_cli_options(options)]) == 0
    out = capsys.readouterr().out
    assert out == local and out.startswith("OK: 60 pairs in Lance, 60 in tar")


def test_verify_over_s3_finds_a_truncated_shard(
    remote: str, options: dict, endpoint: str, capsys
) -> None:
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    shard = open_dataset(remote, options).shards[0]
    data = client.get_object(Bucket=BUCKET, Key=f"{PREFIX}/{shard.path}")["Body"].read()
    broken = f"{PREFIX}-broken"
    for obj in client.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX + "/")["Contents"]:
        key = broken + obj["Key"][len(PREFIX) :]
        client.copy_object(Bucket=BUCKET, Key=key, CopySource={"Bucket": BUCKET, "Key": obj["Key"]})
    client.put_object(Bucket=BUCKET, Key=f"{broken}/{shard.path}", Body=data[: len(data) // 2])
    assert main(["verify", f"s3://{BUCKET}/{broken}", "--no-media", *_cli_options(options)]) == 1
    out = capsys.readouterr().out
    assert f"{shard.path}: {len(data) // 2} bytes, manifest says {len(data)}" in out


def test_standard_aws_environment_without_options(
    built: Path, remote: str, endpoint: str, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    assert main(["query", str(built), "--all", "--format", "json"]) == 0
    local = capsys.readouterr().out
    assert main(["query", remote, "--all", "--format", "json"]) == 0
    assert capsys.readouterr().out == local
    tar = PairDataset(remote, format="tar", fields=("meta",), passed=None, shuffle=False)
    assert len(list(tar)) == 60


def test_missing_dataset_and_bad_options_are_clear_errors(
    built: Path, remote: str, options: dict, capsys
) -> None:
    with pytest.raises(ManifestError, match=f"s3://{BUCKET}/nothing/manifest.json: no manifest"):
        open_dataset(f"s3://{BUCKET}/nothing", options)
    with pytest.raises(ValueError, match="unknown storage option 'endpoint'"):
        open_dataset(remote, {"endpoint": "http://127.0.0.1:1"})
    with pytest.raises(ValueError, match="not to local folders"):
        open_dataset(built, options)
    with pytest.raises(ValueError, match="unsupported scheme gs://"):
        open_dataset("gs://bucket/out")
    assert main(["query", remote, "--storage-option", "endpoint_url"]) == 1
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_one_option_dict_maps_to_s3fs_and_lance() -> None:
    opts = S3Options.resolve(
        {
            "aws_endpoint": "http://127.0.0.1:9000",
            "key": "AK",
            "secret": "SK",
            "region": "eu-west-1",
        },
        environ={"AWS_SESSION_TOKEN": "from-env", "AWS_REGION": "us-east-1"},
    )
    assert opts.fsspec_kwargs() == {
        "client_kwargs": {"endpoint_url": "http://127.0.0.1:9000", "region_name": "eu-west-1"},
        "key": "AK",
        "secret": "SK",  # the env token is not mixed into given credentials
    }
    assert opts.lance_options() == {
        "aws_endpoint": "http://127.0.0.1:9000",
        "aws_access_key_id": "AK",
        "aws_secret_access_key": "SK",
        "aws_region": "eu-west-1",
        "allow_http": "true",
    }
    assert "SK" not in repr(opts) and "AK" not in repr(opts)
    env = S3Options.resolve(
        None, environ={"AWS_ENDPOINT_URL": "https://s3.example", "AWS_DEFAULT_REGION": "ap-south-1"}
    )
    assert env.lance_options() == {"aws_endpoint": "https://s3.example", "aws_region": "ap-south-1"}
    assert S3Options.resolve({"anon": "true"}, environ={}).lance_options() == {
        "aws_skip_signature": "true"
    }
    with pytest.raises(ValueError, match="both access_key_id and secret_access_key"):
        S3Options.resolve({"access_key_id": "AK"}, environ={})
    assert Storage("relative/folder").local
