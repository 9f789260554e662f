"""A pair a sink cannot write is rejected with a reason; a pair is in every sink or in none.

Data-dependent errors (a value the tar sample's JSON cannot hold) used to escape the
sink as a traceback that killed the build. Now the writer prepares the pair in every
sink before any writes: a refusal rejects the pair (listed in the report like other
rejects) and the build goes on; an error of the machine part-way through a pair stops
the writer from committing, so no half-written pair becomes visible.
"""

from __future__ import annotations

import copy
import dataclasses
import errno
import json
from pathlib import Path

import pytest
from records_factory import make_samples
from shop_catalog import write_shop_catalog

from pvtt.builder.pipeline import Build
from pvtt.builder.sinks.base import PairSample, SampleError
from pvtt.builder.sinks.lance import LanceSink
from pvtt.builder.sinks.tar import TarSink
from pvtt.builder.writer import DatasetWriter
from pvtt.loaders.store import open_dataset
from pvtt.loaders.verify import verify_dataset
from pvtt.tools.cli import main


class _LanceWithoutPrepare(LanceSink):
    """The Lance sink as one that checks nothing up front: it can refuse only as it writes."""

    prepare = None

    def __init__(self, refuse: str | None = None) -> None:
        super().__init__()
        self.refuse = refuse

    def write(self, sample: PairSample) -> None:
        if sample.pair.pair_id == self.refuse:
            raise SampleError("a value Lance cannot hold")
        LanceSink.prepare(self, sample)()


def _ids(out: Path) -> tuple[set[str], set[str]]:
    """The pair ids in Lance and in tar, after ``pvtt verify``'s checks pass."""
    dataset = open_dataset(out)
    report = verify_dataset(dataset, media=False)
    assert report.ok, report.problems
    lance_ids = set(dataset.pairs.to_table(columns=["pair_id"]).column("pair_id").to_pylist())
    tar_ids = {e["key"] for s in dataset.shards for e in dataset.shard_index(s)}
    return lance_ids, tar_ids


def test_build_rejects_a_pair_the_tar_json_cannot_hold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Lance takes it; JSON has no infinity
    out, poisoned, written = _build_poisoning(tmp_path, monkeypatch, "duration_s", float("inf"))
    assert [r["item"] for r in written] == poisoned
    assert written[0]["reason"].startswith(
        "the tar sink cannot write it: its columns cannot be written as JSON"
    )
    lance_ids, tar_ids = _ids(out)
    assert lance_ids == tar_ids and not set(poisoned) & lance_ids
    assert lance_ids, "the other pair is written"


def test_build_rejects_a_pair_lance_cannot_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # JSON takes it; Lance's int32 column cannot
    out, poisoned, written = _build_poisoning(tmp_path, monkeypatch, "shot_index", 2**40)
    assert [r["item"] for r in written] == poisoned
    assert written[0]["reason"] == (
        "the lance sink cannot write it: column shot_index (int32) cannot hold 1099511627776: "
        "Value 1099511627776 too large to fit in C integer type"
    )
    lance_ids, tar_ids = _ids(out)
    assert lance_ids == tar_ids and not set(poisoned) & lance_ids
    assert lance_ids, "the other pair is written"


def test_rows_lance_cannot_store_reach_no_sink(tmp_path: Path, shared_data: Path) -> None:
    """Wrong types, a null where the schema has none, and bad values in a new clip or
    image row are each one pair's rejection; the same clip and image go in with the next."""
    samples = make_samples(shared_data, 10)
    samples[1].pair.width = "wide"  # type: ignore[assignment]
    samples[2].pair.target_image = None  # type: ignore[assignment]
    clip, product = copy.copy(samples[3].clip), copy.copy(samples[6].product)
    clip.frame_count = product.width = 2**40
    samples[3] = dataclasses.replace(samples[3], clip=clip)  # the first pair of its clip
    samples[6] = dataclasses.replace(samples[6], product=product)  # the first of its image
    assert samples[4].clip.key == clip.key and samples[9].product.key == product.key
    reasons = {
        1: "column width (int32) cannot hold 'wide': Could not convert 'wide' with type str: "
        "tried to convert to int32",
        2: "no value for non-nullable target_image",
        3: f"clips row {clip.key}, column frame_count (int32) cannot hold 1099511627776",
        6: f"products row {product.key}, column width (int32) cannot hold 1099511627776",
    }
    out = tmp_path / "out"
    with DatasetWriter(out, max_samples=4) as writer:
        for i, sample in enumerate(samples):
            if i not in reasons:
                writer.write(sample)
                continue
            with pytest.raises(SampleError) as caught:
                writer.write(sample)
            assert caught.value.key == sample.pair.pair_id
            assert caught.value.reason.startswith(f"the lance sink cannot write it: {reasons[i]}")
    lance_ids, tar_ids = _ids(out)
    assert lance_ids == tar_ids == {s.pair.pair_id for i, s in enumerate(samples) if i not in reasons}
    dataset = open_dataset(out)
    clips = dataset.table("clips").to_table(columns=["clip_id", "frame_count"]).to_pylist()
    assert {"clip_id": clip.key, "frame_count": samples[4].clip.frame_count} in clips


def _write_refusing_one(out: Path, samples: list, bad: int, match: str) -> SampleError:
    """Write ``samples``, the ``bad``-th refused with ``match``; no sink holds it, all the
    others are written. The refusal, for the caller's further checks."""
    with DatasetWriter(out, max_samples=4) as writer:
        for i, sample in enumerate(samples):
            if i == bad:
                with pytest.raises(SampleError, match=match) as caught:
                    writer.write(sample)
                assert caught.value.key == sample.pair.pair_id
            else:
                writer.write(sample)
    lance_ids, tar_ids = _ids(out)
    assert lance_ids == tar_ids == {s.pair.pair_id for i, s in enumerate(samples) if i != bad}
    return caught.value


def test_a_value_a_sink_cannot_encode_reaches_no_sink(tmp_path: Path, shared_data: Path) -> None:
    samples = make_samples(shared_data, 6)
    samples[2].pair.fps = float("nan")
    refused = _write_refusing_one(tmp_path / "out", samples, 2, "the tar sink cannot write it")
    assert "Out of range float values" in refused.reason


def test_a_video_that_does_not_demux_reaches_no_sink(tmp_path: Path, shared_data: Path) -> None:
    """Its keyframes cannot be indexed, so neither sink writes the pair, which is named."""
    samples = make_samples(shared_data, 4)
    samples[1] = dataclasses.replace(samples[1], pair=dataclasses.replace(
        samples[1].pair, synth_video=b"\x00\x00\x00\x18ftypisom not a video" * 8))
    _write_refusing_one(tmp_path / "out", samples, 1, "synth.*cannot be indexed")


def test_an_encode_error_in_prepare_is_a_rejection(
    tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    samples = make_samples(shared_data, 3)
    bad = samples[1].pair.pair_id
    prepare = TarSink.prepare

    def refuse(self, sample):  # noqa: ANN001, ANN202
        if sample.pair.pair_id == bad:
            raise ValueError("cannot encode this value")
        return prepare(self, sample)

    monkeypatch.setattr(TarSink, "prepare", refuse)
    out = tmp_path / "out"
    with DatasetWriter(out) as writer:
        for sample in samples:
            try:
                writer.write(sample)
            except SampleError as exc:
                assert exc.reason == "the tar sink cannot write it: cannot encode this value"
    lance_ids, tar_ids = _ids(out)
    assert lance_ids == tar_ids == {samples[0].pair.pair_id, samples[2].pair.pair_id}


def test_a_sink_without_prepare_refuses_before_the_others_write(
    tmp_path: Path, shared_data: Path
) -> None:
    samples = make_samples(shared_data, 3)
    bad = samples[1].pair.pair_id
    out = tmp_path / "out"
    with DatasetWriter(out, sinks=[_LanceWithoutPrepare(refuse=bad), TarSink()]) as writer:
        for sample in samples:
            if sample.pair.pair_id == bad:
                with pytest.raises(SampleError, match="the lance sink cannot write it"):
                    writer.write(sample)
            else:
                writer.write(sample)
    lance_ids, tar_ids = _ids(out)
    assert lance_ids == tar_ids == {samples[0].pair.pair_id, samples[2].pair.pair_id}


def test_a_machine_error_mid_pair_commits_nothing_half_written(
    tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    samples = make_samples(shared_data, 5)
    bad = samples[4].pair.pair_id
    append = TarSink._append

    def full(self, key, *args):  # noqa: ANN001, ANN202 - after Lance took the pair, before tar
        if key == bad:
            raise OSError(errno.ENOSPC, "No space left on device")
        append(self, key, *args)

    monkeypatch.setattr(TarSink, "_append", full)
    out = tmp_path / "out"
    writer = DatasetWriter(out)
    writer.open()
    for sample in samples[:3]:
        writer.write(sample)
    writer.commit()
    writer.write(samples[3])
    with pytest.raises(OSError, match="No space left"):
        writer.write(samples[4])
    with pytest.raises(RuntimeError, match=f"{bad} to the tar sink failed.*half-written"):
        writer.commit()
    writer.abort()
    monkeypatch.setattr(TarSink, "_append", append)
    with DatasetWriter(out) as again:
        done = {s.pair.pair_id for s in samples[:3]}
        assert all(again.has(key) for key in done) and not again.has(samples[3].pair.pair_id)
    lance_ids, tar_ids = _ids(out)
    assert lance_ids == tar_ids == done


def test_a_refusal_after_another_sink_wrote_stops_the_writer(
    tmp_path: Path, shared_data: Path
) -> None:
    samples = make_samples(shared_data, 2)
    bad = samples[1].pair.pair_id

    class LateTar(TarSink):
        """A sink that checks nothing up front and refuses while writing."""

        prepare = None

        def write(self, sample):  # noqa: ANN001, ANN202
            if sample.pair.pair_id == bad:
                raise SampleError("refused late")
            TarSink.prepare(self, sample)()

    out = tmp_path / "out"
    writer = DatasetWriter(out, sinks=[_LanceWithoutPrepare(), LateTar()])
    writer.open()
    writer.write(samples[0])
    with pytest.raises(RuntimeError, match=f"refused pair {bad} that lance wrote"):
        writer.write(samples[1])
    with pytest.raises(RuntimeError, match="half-written"):
        writer.close()
    writer.abort()
    with DatasetWriter(out) as again:
        assert not again.has(bad) and not again.has(samples[0].pair.pair_id)
    lance_ids, tar_ids = _ids(out)
    assert lance_ids == tar_ids == set()


def _build_poisoning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, column: str, value: object
) -> tuple[Path, list[str], list[dict]]:
    """Build a two-product catalog with ``column = value`` in every neck-gold pair: the
    output folder, the poisoned pair ids and the rejects at stage ``write``."""
    catalog, config = write_shop_catalog(tmp_path / "catalog", ("neck-gold", "mug-blue"))
    made = Build._make
    poisoned: list[str] = []

    def make(self, plan, *args):  # noqa: ANN001, ANN202 - wraps Build._make
        pair = made(self, plan, *args)
        if plan.pair_id.startswith("neck-gold_") and not isinstance(pair, Exception):
            setattr(pair, column, value)
            poisoned.append(plan.pair_id)
        return pair

    monkeypatch.setattr(Build, "_make", make)
    out = tmp_path / "out"
    assert main(["build", str(catalog), str(out), "--config", str(config), "--no-progress"]) == 0
    assert poisoned, "the neck-gold clip made no pair to poison"
    rejects = [
        json.loads(line) for line in (out / "report" / "rejects.jsonl").read_text().splitlines()
    ]
    return out, poisoned, [r for r in rejects if r["stage"] == "write"]
