"""Samples leave DataLoader workers in shared memory, and ``decode=False`` yields stored bytes.

A tensor in ordinary memory is copied into shared memory by the worker's pickler before it
travels; one made in shared memory travels as it is. The probe below looks at a sample
inside the worker, before it is pickled, so it sees which of the two the loader made.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from records_factory import make_samples
from torch.utils.data import DataLoader, IterableDataset

from pvtt.builder.writer import DatasetWriter
from pvtt.loaders import PairDataset
from pvtt.schemas.masks import MASKS_FILE_EXTENSION

PAIRS = 24
FIELDS = ("synth_video", "source_video", "masks", "target_image", "meta")
MEDIA = FIELDS[:-1]
TAR_MEMBERS = {
    "synth_video": "synth.mp4",
    "source_video": "source.mp4",
    "masks": f"masks.{MASKS_FILE_EXTENSION}",
    "target_image": "target.png",
}

pytestmark = pytest.mark.filterwarnings("ignore:lance is not fork-safe")  # Lance's, at each fork


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    out = tmp_path_factory.mktemp("shared") / "out"
    with DatasetWriter(out, max_samples=8, include_masks=True) as writer:
        for sample in make_samples(shared_data, PAIRS):
            writer.write(sample)
    return out


@pytest.fixture(scope="module")
def stored(built: Path) -> dict[str, dict[str, bytes]]:
    """Every pair's media as the tar shards hold them, read with ``tarfile``."""
    out: dict[str, dict[str, bytes]] = {}
    for shard in sorted(built.rglob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                key, _, name = member.name.partition(".")
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                out.setdefault(key, {})[name] = data
    assert len(out) == PAIRS
    return out


class Probe(IterableDataset):
    """Yields each sample with, per tensor, whether it lies in shared memory where it was
    made (looked at before the worker pickles it)."""

    def __init__(self, dataset: PairDataset) -> None:
        super().__init__()
        self.dataset = dataset

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for sample in self.dataset:
            made = {k: v.is_shared() for k, v in sample.items() if isinstance(v, torch.Tensor)}
            storages = {
                k: v.untyped_storage().data_ptr()
                for k, v in sample.items()
                if isinstance(v, torch.Tensor)
            }
            yield {"sample": sample, "made_shared": made, "storages": storages}


def _run(dataset: PairDataset, workers: int) -> list[dict[str, Any]]:
    loader = DataLoader(
        Probe(dataset),
        batch_size=None,
        num_workers=workers,
        multiprocessing_context="fork" if workers else None,
    )
    return list(loader)


def _dataset(built: Path, fmt: str, **kwargs: Any) -> PairDataset:
    settings: dict[str, Any] = dict(fields=FIELDS, passed=None, shuffle=False, num_frames=4)
    return PairDataset(built, format=fmt, **{**settings, **kwargs})


@pytest.mark.parametrize("fmt", ["lance", "tar"])
def test_decoded_tensors_are_made_in_shared_memory_by_workers(built: Path, fmt: str) -> None:
    here = _run(_dataset(built, fmt, size=(48, 64), target_size=32), 0)
    workers = _run(_dataset(built, fmt, size=(48, 64), target_size=32), 2)
    assert len(here) == len(workers) == PAIRS
    for mine, theirs in zip(here, workers, strict=True):
        assert not any(mine["made_shared"].values()), "the main process allocates ordinarily"
        assert all(theirs["made_shared"].values()), theirs["made_shared"]
        assert set(theirs["made_shared"]) == {"frame_indices", *MEDIA}
        a, b = mine["sample"], theirs["sample"]
        assert a["meta"]["pair_id"] == b["meta"]["pair_id"]
        for name in ("frame_indices", *MEDIA):
            assert b[name].is_shared()
            assert b[name].dtype == a[name].dtype and torch.equal(a[name], b[name]), name


def test_decoded_tensors_unresized_are_made_in_shared_memory(built: Path) -> None:
    first = _run(_dataset(built, "lance"), 1)[0]
    assert all(first["made_shared"].values()), first["made_shared"]


@pytest.mark.parametrize("fmt", ["lance", "tar"])
@pytest.mark.parametrize("workers", [0, 2])
def test_undecoded_fields_are_the_stored_bytes(
    built: Path, stored: dict[str, dict[str, bytes]], fmt: str, workers: int
) -> None:
    decoded_indices = {
        s["meta"]["pair_id"]: s["frame_indices"]
        for s in _dataset(built, fmt, seed=3, frame_start="random")
    }
    got = _run(_dataset(built, fmt, seed=3, frame_start="random", decode=False), workers)
    assert [g["sample"]["meta"]["pair_id"] for g in got] == list(decoded_indices)
    for probe in got:
        sample = probe["sample"]
        key = sample["meta"]["pair_id"]
        for name in MEDIA:
            tensor = sample[name]
            assert tensor.dtype == torch.uint8 and tensor.ndim == 1
            assert tensor.numpy().tobytes() == stored[key][TAR_MEMBERS[name]], (key, name)
        assert torch.equal(sample["frame_indices"], decoded_indices[key])
        # one buffer a sample: every field is a view of the same storage
        assert len(set(probe["storages"].values())) == 1
        assert all(probe["made_shared"].values()) == (workers > 0)
        assert not workers or all(t.is_shared() for t in sample.values() if torch.is_tensor(t))


@pytest.mark.parametrize("fmt", ["lance", "tar"])
def test_undecoded_every_frame_one_field_and_meta_only(
    built: Path, stored: dict[str, dict[str, bytes]], fmt: str
) -> None:
    # one field: tar reads the member alone (not the sample's whole range) and copies it in
    every = PairDataset(
        built, format=fmt, fields=("masks", "meta"), passed=None, num_frames=None, decode=False
    )
    for sample in every:
        key, count = sample["meta"]["pair_id"], sample["meta"]["frame_count"]
        assert torch.equal(sample["frame_indices"], torch.arange(count))
        assert sample["masks"].numpy().tobytes() == stored[key][TAR_MEMBERS["masks"]]
    meta_only = list(PairDataset(built, format=fmt, fields=("meta",), passed=None, decode=False))
    assert len(meta_only) == PAIRS and set(meta_only[0]) == {"meta"}
    with pytest.raises(ValueError, match="decode=False"):
        PairDataset(built, fields=FIELDS, decode=False, size=(32, 32))


@pytest.mark.parametrize("fmt", ["lance", "tar"])
def test_undecoded_resume_after_k_yields_exactly_the_rest(built: Path, fmt: str) -> None:
    kwargs: dict[str, Any] = dict(seed=5, shuffle=True, decode=False)
    ds = _dataset(built, fmt, **kwargs)
    it = iter(ds)
    head = [next(it)["meta"]["pair_id"] for _ in range(7)]
    state = ds.state_dict()
    fresh = _dataset(built, fmt, **kwargs)
    fresh.load_state_dict(state)
    rest = [s["meta"]["pair_id"] for s in fresh]
    assert head + rest == [s["meta"]["pair_id"] for s in _dataset(built, fmt, **kwargs)]
    assert len(head + rest) == PAIRS


@pytest.mark.parametrize("fields", [FIELDS, ("synth_video", "meta")])
@pytest.mark.parametrize("workers", [0, 2])
def test_undecoded_truncated_sample_raises_or_is_skipped(
    built: Path, tmp_path: Path, workers: int, fields: tuple[str, ...]
) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    probe = _dataset(copy, "tar", decode=False)
    path, entry = probe._ctx().selection.shard_entries[7]  # the last sample of the first shard
    shard = copy / path
    with open(shard, "r+b") as fh:
        fh.truncate(int(entry["offset"]) + (int(entry["end"]) - int(entry["offset"])) // 2)
    with pytest.raises(Exception, match="truncated"):
        _run(_dataset(copy, "tar", decode=False, fields=fields), workers)
    skipping = _dataset(copy, "tar", decode=False, on_error="skip", fields=fields)
    got = _run(skipping, workers)
    assert len(got) == PAIRS - 1 and skipping.skipped == 1
    assert entry["key"] not in {g["sample"]["meta"]["pair_id"] for g in got}


def _batches(dataset: PairDataset, workers: int, collate: Any) -> list[list[dict[str, Any]]]:
    loader = DataLoader(
        dataset,
        batch_size=dataset.batch_size,
        num_workers=workers,
        collate_fn=collate,
        multiprocessing_context="fork" if workers else None,
    )
    return list(loader)


@pytest.mark.parametrize("fmt", ["lance", "tar"])
@pytest.mark.parametrize("workers", [0, 2])
def test_undecoded_batches_cross_as_one_buffer(
    built: Path, stored: dict[str, dict[str, bytes]], fmt: str, workers: int
) -> None:
    from pvtt.loaders import collate_samples

    kwargs: dict[str, Any] = dict(seed=3, decode=False, batch_size=5)
    expected = [s["meta"]["pair_id"] for s in _dataset(built, fmt, **kwargs)]
    batches = _batches(_dataset(built, fmt, **kwargs), workers, collate_samples)
    assert [len(b) for b in batches] == [5] * 4 + [4]
    got = [s for batch in batches for s in batch]
    assert [s["meta"]["pair_id"] for s in got] == expected  # plan order, workers or not
    for batch in batches:
        storages = {
            t.untyped_storage().data_ptr() for s in batch for t in s.values() if torch.is_tensor(t)
        }
        # one storage a batch when it crossed from a worker; a sample's own otherwise
        assert len(storages) == (1 if workers else len(batch)), storages
        for sample in batch:
            key = sample["meta"]["pair_id"]
            assert sample["frame_indices"].dtype == torch.int64
            assert len(sample["frame_indices"]) == 4
            for name in MEDIA:
                assert sample[name].numpy().tobytes() == stored[key][TAR_MEMBERS[name]]
                assert sample[name].is_shared() == (workers > 0)


def test_undecoded_batches_of_a_plain_list_collate_hold_the_same_bytes(
    built: Path, stored: dict[str, dict[str, bytes]]
) -> None:
    """Samples cut from one arena still pickle one by one when the collate is ``list``."""
    batches = _batches(_dataset(built, "lance", decode=False, batch_size=4), 2, list)
    got = [s for batch in batches for s in batch]
    assert len(got) == PAIRS
    for sample in got:
        key = sample["meta"]["pair_id"]
        assert sample["synth_video"].numpy().tobytes() == stored[key]["synth.mp4"]


def test_collate_samples_keeps_decoded_views_and_other_values() -> None:
    """Tensors of any dtype and stride and plain values come back as they went."""
    import pickle
    from multiprocessing.reduction import ForkingPickler

    import torch.multiprocessing  # noqa: F401 - registers torch's reductions with it

    from pvtt.loaders.transfer import _SampleList

    base = torch.arange(64, dtype=torch.uint8)
    samples = [
        {
            "a": base[8:16].view(torch.int64),
            "b": torch.arange(6.0).reshape(2, 3).t(),
            "m": {"pair_id": f"p{i}", "box": (1, 2)},
            "t": (3, 4),
        }
        for i in range(2)
    ]
    blob = ForkingPickler.dumps(_SampleList(samples))
    back = pickle.loads(blob)  # noqa: S301 - the bytes pickled just above
    assert type(back) is list and all(type(s) is dict for s in back)
    for mine, theirs in zip(samples, back, strict=True):
        assert theirs["m"] == mine["m"] and theirs["t"] == (3, 4)
        for name in ("a", "b"):
            assert theirs[name].dtype == mine[name].dtype
            assert theirs[name].stride() == mine[name].stride()
            assert torch.equal(theirs[name], mine[name])


class WorkerStorages(IterableDataset):
    """Yields each sample with the address of its storage in the worker that made it."""

    def __init__(self, dataset: PairDataset) -> None:
        super().__init__()
        self.dataset = dataset

    def __iter__(self) -> Iterator[dict[str, Any]]:
        import os

        for sample in self.dataset:
            ptr = sample["synth_video"].untyped_storage().data_ptr()
            yield {"sample": sample, "where": (os.getpid(), ptr)}


@pytest.mark.parametrize("hold", ["nothing", "a slice of each"])
def test_worker_buffers_are_reused_only_once_the_main_process_let_go(
    built: Path, stored: dict[str, dict[str, bytes]], hold: str
) -> None:
    ds = _dataset(built, "lance", decode=False, fields=("synth_video", "meta"))
    loader = DataLoader(
        WorkerStorages(ds), batch_size=None, num_workers=2, multiprocessing_context="fork"
    )
    kept: list[tuple[str, torch.Tensor]] = []
    places = []
    for item in loader:
        sample = item["sample"]
        key = sample["meta"]["pair_id"]
        assert sample["synth_video"].numpy().tobytes() == stored[key]["synth.mp4"]
        places.append(tuple(item["where"]))
        if hold != "nothing":
            kept.append((key, sample["synth_video"][:4096]))
        del item, sample
    assert len(places) == PAIRS
    if hold == "nothing":  # dropped samples' buffers come back: far fewer buffers than samples
        assert len(set(places)) < PAIRS // 2, places
    else:  # a slice keeps its whole buffer from reuse, and its bytes stay the pair's
        assert len(set(places)) == PAIRS
        for key, head in kept:
            assert head.numpy().tobytes() == stored[key]["synth.mp4"][:4096]


def test_buffer_pool_reuses_a_free_storage_of_about_the_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pvtt.loaders import shared

    pool = shared.BufferPool(slots=3)
    first, fresh = pool.take(1 << 20)
    assert fresh and pool.flags.tolist() == [1, 0, 0]
    second, fresh = pool.take(1 << 20)  # the first is held: another
    assert fresh and second.data_ptr() != first.data_ptr()
    pool.flags[0] = 0  # the main process let the first go
    again, fresh = pool.take(900 << 10)
    assert not fresh and again.data_ptr() == first.data_ptr()
    tiny, fresh = pool.take(128)  # no 1 MB storage for 128 bytes: a slot of its own
    assert fresh and tiny.nbytes() == 128 and pool.flags.tolist() == [1, 1, 1]
    alone, fresh = pool.take(64)  # every slot held: the caller's alone, never reused
    assert fresh and alone.data_ptr() not in shared.POOLED
    pool.flags[:] = 0
    monkeypatch.setattr(shared, "POOL_BYTES", 3 << 20)
    big, fresh = pool.take(4 << 20)  # past the pool's bytes: not kept
    assert fresh and big.data_ptr() not in shared.POOLED
    assert all(s is not None and s.nbytes() < (2 << 20) for s in pool.storages)


@pytest.mark.parametrize("fmt", ["lance", "tar"])
def test_the_reader_asks_the_kernel_for_the_next_pairs_bytes_ahead(
    built: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every pair's bytes are asked for (WILLNEED) before it is read, up to READ_AHEAD
    pairs ahead within the block of rows fetched; the samples are the same as without."""
    import os

    expected = [s["meta"]["pair_id"] for s in _dataset(built, fmt, decode=False)]
    asked: list[tuple[int, int]] = []
    real = os.posix_fadvise

    def record(fd: int, offset: int, length: int, advice: int) -> None:
        if advice == os.POSIX_FADV_WILLNEED:
            asked.append((offset, length))
        real(fd, offset, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", record)
    ds = _dataset(built, fmt, decode=False, fields=("synth_video", "meta"), batch_size=4)
    seen = []
    for sample in ds:
        seen.append(sample["meta"]["pair_id"])
        assert len(asked) >= len(seen)  # every pair handed out was asked for first
    assert seen == expected
    assert len(asked) == PAIRS  # each pair once
    if fmt == "lance":  # exactly each synth_video blob
        sizes = sorted(length for _, length in asked)
        stored = sorted(s["synth_video"].numel() for s in _dataset(built, fmt, decode=False))
        assert sizes == stored
