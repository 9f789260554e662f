"""PairDataset on a damaged dataset: what ``on_error="raise"`` names and ``"skip"`` counts.

Each fault is made on a copy of a small built dataset (16 pairs, tar shards of 4,
Lance tables of several fragments): a truncated shard, a shard deleted before or in
the middle of an epoch, a Lance data file gone, media that does not decode, a
sample json that belongs to another pair. ``raise`` must name the shard file, or
the table, row and pair; ``skip`` must yield every other pair once, count what it
skipped in ``skipped`` and in the loader state (DataLoader workers included), and
resume exactly after the skips.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import lance
import pytest
from records_factory import make_samples
from torch.utils.data import DataLoader

from pvtt.builder.sinks.lance import LanceSink
from pvtt.builder.sinks.tar import TarSink
from pvtt.builder.writer import DatasetWriter
from pvtt.loaders import PairDataset
from pvtt.loaders.dataset import SampleError
from pvtt.loaders.store import open_dataset

PAIRS = 16
BAD_MEDIA = 3  # sample whose synth.mp4 does not decode in the bad-media dataset


def _rotten(mp4: bytes) -> bytes:
    """``mp4`` with its coded pictures zeroed: it demuxes (the writer indexes its
    keyframes) but no frame decodes, as after bit rot in storage."""
    start = mp4.index(b"mdat") + 4
    return mp4[:start] + bytes(len(mp4) - start)


def _build(out: Path, shared: Path, *, bad_media: bool = False) -> Path:
    samples = make_samples(shared, PAIRS)
    if bad_media:
        s = samples[BAD_MEDIA]
        samples[BAD_MEDIA] = dataclasses.replace(
            s, pair=dataclasses.replace(s.pair, synth_video=_rotten(s.pair.synth_video))
        )
    sinks = [LanceSink(compact=False, fragment_bytes=20_000), TarSink(max_samples=4)]
    with DatasetWriter(out, sinks=sinks) as writer:
        for sample in samples:
            writer.write(sample)
    return out


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    return _build(tmp_path_factory.mktemp("faults") / "clean", shared_data)


@pytest.fixture(scope="module")
def bad_media(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> tuple[Path, str]:
    """A dataset with one synth.mp4 that does not decode, and that pair's id."""
    out = _build(tmp_path_factory.mktemp("faults") / "bad", shared_data, bad_media=True)
    return out, make_samples(shared_data, PAIRS)[BAD_MEDIA].pair.pair_id


@pytest.fixture
def damaged(clean: Path, tmp_path: Path) -> Path:
    """A fresh copy of the clean dataset for one test to break."""
    return Path(shutil.copytree(clean, tmp_path / "copy"))


def _dataset(out: Path, fmt: str, on_error: str, **kwargs) -> PairDataset:
    kwargs.setdefault("fields", ("synth_video", "meta"))
    return PairDataset(out, format=fmt, num_frames=2, shuffle=False, passed=None,
                       on_error=on_error, **kwargs)  # fmt: skip


def _ids(samples) -> list[str]:
    return [s["meta"]["pair_id"] for s in samples]


def _shards(out: Path) -> dict[str, list[dict]]:
    """Shard path -> its index entries (key, byte range), from the committed dataset."""
    dataset = open_dataset(out)
    return {s.path: dataset.shard_index(s) for s in dataset.shards}


def _order(out: Path) -> list[str]:
    """Every pair id in the loader's unshuffled order."""
    return sorted(e["key"] for entries in _shards(out).values() for e in entries)


def _fragments(out: Path, table: str) -> list[tuple[Path, list[str]]]:
    """``(data file, keys)`` of each fragment of a Lance table at its committed version."""
    dataset = open_dataset(out)
    info = dataset.manifest.tables[table]
    ds = lance.dataset(out / info.path, version=info.version)
    key = {"pairs": "pair_id", "clips": "clip_id", "products": "image_id"}[table]
    return [
        (out / info.path / "data" / f.data_files()[0].path,
         f.to_table(columns=[key]).column(key).to_pylist())
        for f in ds.get_fragments()
    ]  # fmt: skip


# -- tar shards -----------------------------------------------------------------------------


def test_truncated_shard(damaged: Path) -> None:
    path, entries = list(_shards(damaged).items())[1]
    cut = entries[2]["offset"] + 700  # inside the third sample
    shard = damaged / path
    shard.write_bytes(shard.read_bytes()[:cut])
    lost = sorted(e["key"] for e in entries if e["end"] > cut)
    assert len(lost) == 2

    with pytest.raises(SampleError, match=rf"{shard}.*pair {lost[0]}.*trunc"):
        list(_dataset(damaged, "tar", "raise"))
    skipping = _dataset(damaged, "tar", "skip")
    got = _ids(skipping)
    assert got == [k for k in _order(damaged) if k not in lost]
    assert skipping.skipped == 2 and skipping.state_dict()["skipped"] == 2
    assert skipping.state_dict()["consumed"] == PAIRS  # the skipped positions are used up too


def test_shard_deleted_after_the_manifest(damaged: Path, caplog: pytest.LogCaptureFixture) -> None:
    path, entries = list(_shards(damaged).items())[2]
    (damaged / path).unlink()
    lost = {e["key"] for e in entries}

    with pytest.raises(SampleError, match=rf"{damaged / path}.*pair .*No such file"):
        list(_dataset(damaged, "tar", "raise"))
    skipping = _dataset(damaged, "tar", "skip", fields=("meta",))
    with caplog.at_level("WARNING", logger="pvtt.loaders.dataset"):
        got = _ids(skipping)
    assert set(got) == set(_order(damaged)) - lost and len(got) == PAIRS - 4
    assert skipping.skipped == 4
    logged = [r.getMessage() for r in caplog.records if "skipped pair" in r.getMessage()]
    assert len(logged) == 4 and all(path in m for m in logged)


def test_shard_deleted_mid_epoch_then_resume_is_exact(damaged: Path) -> None:
    """Stop after 8 yields with skips behind; the resumed run yields exactly the rest."""
    order = _order(damaged)
    shards = _shards(damaged)
    # the shard whose first pair comes latest: it is still unread after 2 pairs
    path, entries = max(shards.items(), key=lambda kv: min(order.index(e["key"]) for e in kv[1]))
    keys = {e["key"] for e in entries}
    assert min(order.index(k) for k in keys) >= 2

    first = _dataset(damaged, "tar", "skip", fields=("meta",))
    it = iter(first)
    head = _ids(next(it) for _ in range(2))
    (damaged / path).unlink()
    head += _ids(next(it) for _ in range(6))
    state = first.state_dict()
    skipped_before = [k for k in order[: order.index(head[-1])] if k in keys]
    assert state["skipped"] == len(skipped_before)
    assert state["consumed"] == order.index(head[-1]) + 1  # skipped positions count

    second = _dataset(damaged, "tar", "skip", fields=("meta",))
    second.load_state_dict(state)
    tail = _ids(second)
    assert head + tail == [k for k in order if k not in keys]
    assert second.skipped == len(keys)


@pytest.mark.filterwarnings("ignore:lance is not fork-safe")  # tar workers never open Lance
def test_deleted_shard_mid_epoch_with_two_workers(damaged: Path) -> None:
    """Workers skip and count; the main process sees their count in ``skipped`` and the state."""
    order = _order(damaged)
    path, entries = max(
        _shards(damaged).items(), key=lambda kv: min(order.index(e["key"]) for e in kv[1])
    )
    keys = {e["key"] for e in entries}
    # 2 workers x prefetch 2, one sample taken: positions up to 4 may be read before the delete
    assert min(order.index(k) for k in keys) >= 5

    ds = _dataset(damaged, "tar", "skip", fields=("meta",))
    loader = DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context="fork")
    it = iter(loader)
    got = _ids([next(it)])
    (damaged / path).unlink()
    got += _ids(it)
    assert got == [k for k in order if k not in keys]  # in plan order, nothing twice
    assert ds.skipped == len(keys)
    assert ds.state_dict(samples_seen=len(got))["skipped"] == len(keys)

    raising = _dataset(damaged, "tar", "raise", fields=("meta",))
    with pytest.raises(SampleError, match=rf"{damaged / path}.*No such file"):
        list(DataLoader(raising, batch_size=None, num_workers=2, multiprocessing_context="fork"))


def test_sample_json_of_another_pair(damaged: Path) -> None:
    path, entries = list(_shards(damaged).items())[0]
    shard = damaged / path
    raw = shard.read_bytes()
    key = entries[1]["key"]
    other = key[:-1] + ("1" if key[-1] != "1" else "2")  # same length: the tar stays valid
    start, end = entries[1]["offset"], entries[1]["end"]
    shard.write_bytes(raw[:start] + raw[start:end].replace(f'"pair_id": "{key}"'.encode(), f'"pair_id": "{other}"'.encode(), 1) + raw[end:])  # fmt: skip
    assert shard.read_bytes() != raw

    with pytest.raises(SampleError, match=rf"{shard}.*pair {key}: its json belongs to '{other}'"):
        list(_dataset(damaged, "tar", "raise", fields=("meta",)))
    skipping = _dataset(damaged, "tar", "skip", fields=("meta",))
    assert key not in _ids(skipping) and skipping.skipped == 1


# -- Lance ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("table", "field"), [("pairs", "synth_video"), ("clips", "source_video")])
def test_lance_data_file_gone_mid_epoch(damaged: Path, table: str, field: str) -> None:
    order = _order(damaged)
    data_file, keys = _fragments(damaged, table)[-1]
    pairs = _fragments(damaged, "pairs")
    lost = (
        set(keys)
        if table == "pairs"
        else {k for _, ks in pairs for k in ks if k.split("__")[0] in keys}
    )
    assert 0 < len(lost) < PAIRS and order[0] not in lost

    for mode in ("raise", "skip"):
        copy = Path(shutil.copytree(damaged, damaged.parent / f"{mode}-{table}"))
        ds = _dataset(copy, "lance", mode, fields=(field, "meta"))
        it = iter(ds)
        head = _ids([next(it)])  # the selection is made; now the file goes
        (copy / data_file.relative_to(damaged)).unlink()
        if mode == "raise":
            first_lost = min(lost, key=order.index)
            # a pair whose own row is gone is named by its row: the plan keeps no pair ids
            pair = r"\(row not read\)" if table == "pairs" else first_lost
            with pytest.raises(
                SampleError, match=rf"pairs.lance row \d+: pair {pair}: .*{data_file.name}"
            ):
                list(it)
            continue
        got = head + _ids(it)
        assert got == [k for k in order if k not in lost]
        assert ds.skipped == len(lost) and ds.state_dict()["skipped"] == len(lost)


def test_lance_data_file_gone_before_opening_names_it(damaged: Path) -> None:
    data_file, _ = _fragments(damaged, "pairs")[0]
    data_file.unlink()
    with pytest.raises((OSError, ValueError), match=data_file.name):
        list(_dataset(damaged, "lance", "raise"))


def test_lance_data_file_gone_before_opening_is_skipped(damaged: Path) -> None:
    data_file, keys = _fragments(damaged, "pairs")[0]
    data_file.unlink()
    ds = _dataset(damaged, "lance", "skip", fields=("meta",))
    assert set(_ids(ds)) == set(_order(damaged)) - set(keys)
    assert ds.unreadable == len(keys)


# -- media ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["lance", "tar"])
def test_media_that_does_not_decode(bad_media: tuple[Path, str], fmt: str) -> None:
    bad_media, bad = bad_media
    order = _order(bad_media)
    where = r"pairs.lance row \d+" if fmt == "lance" else r"pairs-r000-\d+\.tar bytes \d+-\d+"
    with pytest.raises(
        SampleError, match=rf"{where}: pair {bad}: synth_video: not a decodable video"
    ):
        list(_dataset(bad_media, fmt, "raise"))
    skipping = _dataset(bad_media, fmt, "skip")
    assert _ids(skipping) == [k for k in order if k != bad]
    assert skipping.skipped == 1 and skipping.state_dict()["skipped"] == 1
    # meta alone never touches the media: nothing to skip
    assert len(_ids(_dataset(bad_media, fmt, "raise", fields=("meta",)))) == PAIRS
