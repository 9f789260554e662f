"""PairDataset: filters equal `pvtt query`, exact splits, resume, curriculum, errors, splits."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from records_factory import make_samples
from torch.utils.data import DataLoader

from pvtt.builder.writer import DatasetWriter
from pvtt.loaders import CurriculumSchedule, PairDataset, split
from pvtt.loaders.dataset import LoaderStateError, SampleError
from pvtt.loaders.frames import decode_rgba
from pvtt.loaders.query import PairFilter, select_pairs
from pvtt.loaders.store import open_dataset


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    out = tmp_path_factory.mktemp("ds") / "out"
    with DatasetWriter(out, max_samples=10, include_masks=True) as writer:
        for sample in make_samples(shared_data, 60):
            writer.write(sample)
    return out


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _ids(ds) -> list[str]:
    return [s["meta"]["pair_id"] for s in ds]


@pytest.mark.parametrize("fmt", ["lance", "tar"])
@pytest.mark.parametrize(
    "kwargs",
    [{}, {"passed": None}, {"difficulty": "hard,expert", "passed": None},
     {"min_score": 0.5, "max_score": 0.9, "passed": None}, {"category": "Home"},
     {"where": "shot_index = 1", "passed": None}],
)
def test_filtered_iteration_equals_query(built: Path, fmt: str, kwargs: dict) -> None:
    ds = PairDataset(built, format=fmt, fields=("meta",), shuffle=False, **kwargs)
    expected = select_pairs(open_dataset(built), PairFilter.make(**kwargs), columns=["pair_id"])
    got = _ids(ds)
    assert got == sorted(expected.column("pair_id").to_pylist())
    assert got, "every filter here selects something"


def test_fields_decode_aligned_and_unrequested_media_unread(built: Path) -> None:
    ds = PairDataset(built, fields=("synth_video", "source_video", "masks", "target_image", "meta"),
                     num_frames=4, frame_start="centre", passed=None)
    sample = next(iter(ds))
    video, masks = sample["synth_video"], sample["masks"]
    assert video.dtype == torch.uint8 and video.shape[:2] == (4, 3)
    assert masks.dtype == torch.bool and masks.shape == (4, *video.shape[2:])
    assert sample["source_video"].shape == video.shape
    assert sample["target_image"].shape[0] == 4
    meta_only = PairDataset(built, fields=("meta",), passed=None)
    assert len(_ids(meta_only)) == 60
    assert meta_only._ctx().reader.bytes_read == 0  # Lance: metadata never touches blobs


def test_cutouts_are_letterboxed_into_target_size(built: Path) -> None:
    """``target_size`` (default ``size``) fits the cut-out into one shape: aspect ratio kept,
    centred, transparent padding; before, ``size`` left the cut-out alone and batches of
    cut-outs of different sizes failed to collate."""
    opaque = np.zeros((20, 40, 4), dtype=np.uint8)
    opaque[..., 0] = opaque[..., 3] = 255
    boxed = decode_rgba(_png(opaque), size=(30, 30))
    assert boxed.shape == (4, 30, 30)
    alpha = boxed[3].numpy()
    assert (alpha[7:22] == 255).all() and (alpha[:7] == 0).all() and (alpha[22:] == 0).all()
    assert (boxed[0].numpy()[7:22] == 255).all() and (boxed[:, :7] == 0).all()  # red, not stretched

    def first(**kwargs) -> torch.Tensor:
        ds = PairDataset(built, fields=("target_image", "meta"), passed=None, shuffle=False, **kwargs)
        return next(iter(ds))["target_image"]

    native = first()
    height, width = native.shape[1:]
    assert first(size=(24, 40)).shape == first(target_size=(24, 40)).shape == (4, 24, 40)
    square = first(size=(24, 40), target_size=64)
    assert square.shape == (4, 64, 64)
    with pytest.raises(ValueError, match="size must be"):
        PairDataset(built, fields=("target_image",), target_size=0)
    long, short = max(height, width), min(height, width)
    assert round(short * 64 / long) < 64  # so the padding below exists
    pad = (64 - round(short * 64 / long)) // 2
    edge = square[3, :pad] if height < width else square[3, :, :pad]
    assert bool((edge == 0).all())


def test_tar_reads_only_requested_members(built: Path) -> None:
    ds = PairDataset(built, format="tar", fields=("target_image",), passed=None)
    list(ds)
    sel_entries = ds._ctx().selection.shard_entries
    assert sel_entries is not None
    png = sum(1 for _ in sel_entries)
    assert ds._ctx().reader.bytes_read < png * 200_000  # json + png, never the videos


@pytest.mark.filterwarnings("ignore:lance is not fork-safe")  # workers read tar only
@pytest.mark.parametrize("equal", [False, True])
def test_three_ranks_two_workers_disjoint_complete(built: Path, equal: bool) -> None:
    per_rank = []
    for rank in range(3):
        ds = PairDataset(built, format="tar", fields=("meta",), passed=None, rank=rank, world_size=3,
                         equal_per_rank=equal, seed=3)
        loader = DataLoader(ds, batch_size=None, num_workers=2)
        per_rank.append([s["meta"]["pair_id"] for s in loader])
    flat = [p for ids in per_rank for p in ids]
    if equal:
        assert len({len(ids) for ids in per_rank}) == 1
        assert set(flat) == set(_ids(PairDataset(built, fields=("meta",), passed=None)))
    else:
        assert sorted(flat) == sorted(set(flat)) and len(flat) == 60
    # the same plan from a fresh dataset object
    again = PairDataset(built, format="tar", fields=("meta",), passed=None, rank=1, world_size=3,
                        equal_per_rank=equal, seed=3)
    assert [s["meta"]["pair_id"] for s in DataLoader(again, batch_size=None, num_workers=2)] == per_rank[1]


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("k", [0, 1, 7, 19])
def test_resume_after_k_yields_exactly_the_rest(built: Path, shuffle: bool, k: int) -> None:
    ds = PairDataset(built, fields=("meta",), passed=None, shuffle=shuffle, seed=5)
    ds.set_epoch(2)
    full = _ids(ds)
    it = iter(ds)
    head = [next(it)["meta"]["pair_id"] for _ in range(k)]
    state = ds.state_dict()
    fresh = PairDataset(built, fields=("meta",), passed=None, shuffle=shuffle, seed=5)
    fresh.load_state_dict(state)
    assert head + _ids(fresh) == full


def test_resume_with_a_changed_world_size(built: Path) -> None:
    kwargs = dict(fields=("meta",), passed=None, shuffle=True, seed=9)
    ranks = [PairDataset(built, rank=r, world_size=3, **kwargs) for r in range(3)]
    seen = []
    for ds in ranks:
        it = iter(ds)
        seen += [next(it)["meta"]["pair_id"] for _ in range(5)]
    state = ranks[0].state_dict()
    rest = []
    for r in range(2):
        ds = PairDataset(built, rank=r, world_size=2, **kwargs)
        ds.load_state_dict(state)
        rest += _ids(ds)
    assert len(seen) + len(rest) == 60
    assert sorted(seen + rest) == sorted(_ids(PairDataset(built, **kwargs)))


def test_state_of_another_filter_is_refused(built: Path) -> None:
    state = PairDataset(built, fields=("meta",), passed=None).state_dict()
    with pytest.raises(LoaderStateError, match="another dataset version or filter"):
        PairDataset(built, fields=("meta",), difficulty="easy", passed=None).load_state_dict(state)


PATH = ({"medium": 1.0}, {"medium": 0.5, "expert": 0.5}, {"expert": 1.0})


def _schedule() -> CurriculumSchedule:
    return CurriculumSchedule(pacing="step", total_steps=120, stages=3, path=PATH)


def test_curriculum_moves_to_harder_pairs_and_resume_keeps_position(built: Path) -> None:
    # the factory's pairs are medium or expert; the path goes medium -> mixed -> expert
    kwargs = dict(fields=("meta",), passed=None, seed=1, epoch_length=120)
    ds = PairDataset(built, curriculum=_schedule(), **kwargs)
    levels = [s["meta"]["difficulty"] for s in ds]
    assert len(levels) == 120
    first, middle, last = Counter(levels[:40]), Counter(levels[40:80]), Counter(levels[80:])
    assert first["medium"] == 40 and last["expert"] == 40
    assert 8 <= middle["expert"] <= 32  # 50/50 within binomial error
    it = iter(ds)
    head = [next(it)["meta"]["pair_id"] for _ in range(50)]
    state = ds.state_dict()
    again = PairDataset(built, curriculum=_schedule(), **kwargs)
    again.load_state_dict(state)
    full = _ids(PairDataset(built, curriculum=_schedule(), **kwargs))
    assert head + _ids(again) == full


def test_decode_errors_raise_or_skip(built: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    ds = PairDataset(copy, format="tar", fields=("synth_video", "meta"), num_frames=2, shuffle=False, passed=None)
    path, entry = ds._ctx().selection.shard_entries[0]
    raw = bytearray((copy / path).read_bytes())
    start = int(entry["offset"]) + 2048  # inside the first sample's json/synth members
    raw[start : start + 4096] = b"\0" * 4096
    (copy / path).write_bytes(bytes(raw))
    with pytest.raises(SampleError, match=str(path).split("/")[-1]):
        list(PairDataset(copy, format="tar", fields=("synth_video", "meta"), num_frames=2, shuffle=False, passed=None))
    skipping = PairDataset(copy, format="tar", fields=("synth_video", "meta"), num_frames=2, shuffle=False,
                           passed=None, on_error="skip")
    assert len(list(skipping)) == 59 and skipping.skipped == 1
    assert skipping.state_dict()["skipped"] == 1


@pytest.mark.parametrize("by", ["source_id", "product"])
def test_group_safe_split(built: Path, by: str) -> None:
    parts = split(built, by=by, fractions={"train": 0.5, "val": 0.5}, seed=2)
    rows = {name: PairDataset(built, fields=("meta",), passed=None, where=where) for name, where in parts.items()}
    metas = {name: [s["meta"] for s in ds] for name, ds in rows.items()}
    train_src = {m["source_id"] for m in metas["train"]}
    val_src = {m["source_id"] for m in metas["val"]}
    assert train_src and val_src and not train_src & val_src
    if by == "product":
        train_all = train_src | {m["target_id"] for m in metas["train"]}
        val_all = val_src | {m["target_id"] for m in metas["val"]}
        assert not train_all & val_all


def test_lance_in_spawned_workers_with_batches(built: Path) -> None:
    """Lance opens inside each worker; batch-aligned chunks come back in plan order."""
    ds = PairDataset(built, fields=("synth_video", "meta"), num_frames=2, passed=None, seed=4,
                     batch_size=4)
    expected = _ids(PairDataset(built, fields=("meta",), passed=None, seed=4, batch_size=4))
    loader = DataLoader(ds, batch_size=4, num_workers=2, multiprocessing_context="spawn")
    got = []
    for batch in loader:
        assert batch["synth_video"].shape[:3] == (len(batch["meta"]["pair_id"]), 2, 3)
        got += batch["meta"]["pair_id"]
    assert got == expected


def test_same_plan_in_a_fresh_process(built: Path) -> None:
    import json
    import subprocess
    import sys

    code = (
        "import json, sys; from pvtt.loaders import PairDataset; "
        f"ds = PairDataset({str(built)!r}, fields=('meta',), passed=None, rank=1, world_size=3, seed=11); "
        "ds.set_epoch(3); print(json.dumps([s['meta']['pair_id'] for s in ds]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    here = PairDataset(built, fields=("meta",), passed=None, rank=1, world_size=3, seed=11)
    here.set_epoch(3)
    assert json.loads(out.stdout) == _ids(here)


def test_adaptive_curriculum_state_round_trips(built: Path) -> None:
    schedule = CurriculumSchedule(pacing="linear", total_steps=100, path=PATH, adaptive=True)
    ds = PairDataset(built, fields=("meta",), passed=None, curriculum=schedule, epoch_length=30)
    it = iter(ds)
    head = [next(it)["meta"]["pair_id"] for _ in range(10)]
    schedule.update({"medium": 0.1, "expert": 2.0})  # mid-epoch: must not change this epoch
    state = ds.state_dict()
    rest_here = [s["meta"]["pair_id"] for s in it]
    fresh_schedule = CurriculumSchedule(pacing="linear", total_steps=100, path=PATH, adaptive=True)
    fresh = PairDataset(built, fields=("meta",), passed=None, curriculum=fresh_schedule, epoch_length=30)
    fresh.load_state_dict(state)
    assert head + _ids(fresh) == head + rest_here
    assert fresh_schedule.state_dict() == schedule.state_dict()
