"""``PairDataset``: filtered pairs of a built dataset as a resumable torch IterableDataset.

What an epoch yields is fixed by a :class:`~pvtt.loaders.plan.SamplePlan`, a pure
function of (dataset version, filter, seed, epoch, world size): ranks take
global positions ``g % world_size``, DataLoader workers take batch-sized chunks
of their rank's list, so the loader's output order is the rank's list order and
"samples seen" is always a prefix of it. Resuming skips the consumed positions
without reading them; a different world size continues the same epoch.

The plan is compact (:mod:`pvtt.loaders.selection`): row ids, difficulty codes and
scores as arrays, ~21 bytes a selected pair with the epoch's positions; the scalar
columns of a sample (``meta``, and the ids reading needs) are read from Lance per batch
of selected rows (growing to :data:`META_BATCH_MAX`).

Lance is not fork-safe once its runtime has started, so a forked process never runs it:
the selection and where each blob lies (:mod:`pvtt.loaders.lance_blobs`) are made in the
first process that needs them, and inherited by DataLoader workers forked after that,
which read with plain file reads. A process that has started Lance plans every live
dataset just before it forks (:mod:`pvtt.loaders.forking`) and then also reads every
selected row's scalar columns, which its forked workers share (copy-on-write pages that
nothing writes): ``len(ds)`` or a look at a sample in the main process is fine with the
default ``fork`` start method, but costs that read (3 s and ~270 bytes of Arrow a pair
for ``meta`` at a million pairs). Workers forked from a process that never started
Lance, and spawned workers, run Lance themselves; a spawned worker takes a plan its
parent made in shared memory instead of planning again.

``on_error="skip"`` skips a pair that cannot be read or decoded (a truncated or
deleted shard, a missing Lance data file, media that does not decode), logs it and
counts it in ``skipped``; the count lives in shared memory, so the pairs DataLoader
workers skip are counted too. A skipped pair still uses up its plan position: with
no workers ``state_dict()`` resumes exactly after it; inside workers the positions a
skip used are not visible, so a resume may repeat up to that many pairs (it never
loses one).
"""

from __future__ import annotations

import copy
import ctypes
import logging
import math
import os
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import IterableDataset, get_worker_info

from pvtt.loaders import shared, transfer
from pvtt.loaders.curriculum import CurriculumSchedule, curriculum_order
from pvtt.loaders.decode import MediaDecodeError
from pvtt.loaders.forking import (
    LanceForkError,
    forked_from_lance,
    note_lance_used,
    prepare_before_fork,
)
from pvtt.loaders.frames import (
    FrameSampler,
    check_size,
    decode_frames,
    decode_masks_at,
    decode_rgba,
)
from pvtt.loaders.plan import SamplePlan
from pvtt.loaders.query import PairFilter
from pvtt.loaders.readers import FIELDS, LanceReader, MissingFieldError, TarReader
from pvtt.loaders.selection import (
    META_COLUMNS,
    READ_COLUMNS,
    Selection,
    fingerprint,
    lance_selection,
    select,
)
from pvtt.loaders.store import BuiltDataset
from pvtt.loaders.tar_reader import ShardFormatError

log = logging.getLogger(__name__)

STATE_VERSION = 1
VIDEO_FIELDS = ("synth_video", "source_video", "background_video")
META_BATCH_MAX = 4096
"""The most selected pairs whose scalar columns one Lance take reads. Takes start at the
DataLoader's batch size, for a quick first sample, and double up to this: a take's cost
per row falls ~20x from 64 rows to 4,096 (:class:`~pvtt.loaders.selection.LanceRows`)."""
READ_AHEAD = 8
"""Pairs ahead of the one being read whose bytes the kernel is asked to start reading
(``POSIX_FADV_WILLNEED``): cold 1 MB reads at random places ran at 1.3 GB/s one by one
and 2.1-2.4 GB/s with 4-64 asked for ahead on this box's virtual disk."""
SKIP_SLOTS = 257
"""Shared skip counters: slot 0 for the main process, ``1 + worker id`` (mod 256) for each
DataLoader worker, so every slot has one writer and no update is lost."""


class LoaderStateError(ValueError):
    """A saved loader state that does not belong to this dataset and filter."""


class SampleError(RuntimeError):
    """A selected sample that could not be read or decoded; names the pair and where it lives."""


@dataclass
class _Context:
    """The plan (selection, where the media lie) and a reader, made in process ``pid``."""

    pid: int
    selection: Selection
    reader: LanceReader | TarReader
    shared: SharedPlan | None = None

    def forked(self, dataset: BuiltDataset) -> _Context:
        """The same plan for this process, forked from ``pid``: no Lance, its own files."""
        return _Context(os.getpid(), self.selection, self.reader.forked(dataset), self.shared)

    def share(self) -> SharedPlan | None:
        """A Lance plan's arrays moved into shared memory (once), for spawned workers: a
        tensor pickled for a DataLoader worker travels as a handle to the same pages."""
        sel = self.selection
        if sel.row_ids is None or sel.rows is None:
            return None
        if self.shared is None:
            row_ids, levels, qualities = (
                torch.from_numpy(np.ascontiguousarray(a)).share_memory_()
                for a in (sel.row_ids.view(np.int64), sel.levels, sel.qualities)
            )
            sel.row_ids = sel.rows.row_ids = row_ids.numpy().view(np.uint64)
            sel.levels, sel.qualities = levels.numpy(), qualities.numpy()
            self.shared = SharedPlan((row_ids, levels, qualities), sel.rows.columns, sel.unreadable)
        return self.shared


@dataclass
class SharedPlan:
    """What a spawned worker needs to use its parent's Lance plan instead of scanning."""

    arrays: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    """Row ids (as int64), difficulty codes and quality scores, in shared memory."""
    columns: list[str]
    unreadable: list[tuple[str, int]]

    def selection(self, dataset: BuiltDataset, flt: PairFilter) -> Selection:
        row_ids, levels, qualities = (t.numpy() for t in self.arrays)
        arrays = (row_ids.view(np.uint64), levels, qualities)
        return lance_selection(dataset, flt, arrays, self.columns, self.unreadable)


def _release_freed_memory() -> None:
    """Give the memory the planning scan freed back to the system.

    The scan reads ``pair_id`` of every selected row to sort them; Arrow's pool and the C
    heap keep those freed pages, ~95 B a pair at a million pairs, about 4x the plan itself
    (``tools/bench/loader.py`` part 6). glibc's ``malloc_trim`` returns the heap's; other
    C libraries keep theirs.
    """
    pa.default_memory_pool().release_unused()
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim(0)


def _distributed(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is not None and world_size is not None:
        return rank, world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    env_rank = int(os.environ.get("RANK", 0))
    env_world = int(os.environ.get("WORLD_SIZE", 1))
    return (rank if rank is not None else env_rank), (world_size if world_size is not None else env_world)


def _plain_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """Scalar columns that ``default_collate`` can batch: no None, no lists, no datetimes."""
    out: dict[str, Any] = {}
    for key, value in meta.items():
        if key == "target_boxes":
            continue
        if isinstance(value, datetime):
            value = value.isoformat()
        elif value is None:
            value = "" if key == "reject_reason" else math.nan
        out[key] = value
    return out


def _check_meta(meta: Any, pair_id: str | None) -> None:
    """The scalar columns read with a sample must be that pair's (a tar json is data too);
    ``pair_id`` None: the id is not known apart from them (a Lance row read by its id)."""
    if not isinstance(meta, dict) or not isinstance(meta.get("pair_id"), str):
        raise ValueError(f"its row has no pair id ({type(meta).__name__})")
    if pair_id is not None and meta["pair_id"] != pair_id:
        raise ValueError(f"its json belongs to {meta['pair_id']!r}, not to this pair")
    count = meta.get("frame_count")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"its frame_count {count!r} is not a frame count")


class PairDataset(IterableDataset):
    """Pairs of a built dataset, filtered, planned across ranks and workers, decoded.

    Filters: ``difficulty``, ``min_score``/``max_score``, ``category``, ``passed``
    (default True; None keeps rejected pairs) and ``where`` (SQL, Lance's parser).
    ``fields`` picks what is read and decoded: ``synth_video``, ``source_video``,
    ``background_video``, ``masks``, ``target_image``, ``meta``; other media are
    never read. Videos come as uint8 ``T x C x H x W``, masks as bool ``T x H x W``
    on the same frames, the target cut-out as uint8 RGBA ``4 x H x W``.

    ``size=(height, width)`` resizes video frames and masks (stretching). The cut-out is
    letterboxed into ``target_size`` (an int for a square; default ``size``): scaled to
    fit, aspect ratio kept, centred on transparent padding (RGBA 0), so a batch of
    cut-outs has one shape; with neither set it comes at its own size, which batches
    only when every cut-out has the same.

    ``batch_size`` must equal the DataLoader's (1 when it batches nothing) so that
    workers' chunks come back in plan order; ``state_dict(samples_seen=k)`` then
    resumes after the ``k`` samples this rank took from the loader.

    Inside a DataLoader worker every tensor of a sample is made in shared memory
    (:mod:`pvtt.loaders.shared`): frames are decoded straight into it, so DataLoader's
    pickler sends the main process a file descriptor and copies nothing.

    ``decode=False`` yields the media undecoded, for a training loop that decodes
    elsewhere (on the GPU in the main process, say): each media field is a 1-D uint8
    tensor of its stored bytes (an MP4, the masks codec's bytes, a PNG), with
    ``frame_indices`` (the frames decoding would take, when a video or the masks are
    asked for) and ``meta`` as usual. A sample's tensors are views of one buffer the
    bytes are read straight into (in shared memory inside a worker): one descriptor a
    sample crosses to the main process, where pickled bytes would be copied four times
    on the way. ``size`` and ``target_size`` must be left unset (``decoder`` is not
    used); batch with :func:`pvtt.loaders.collate_samples`, which keeps a list (the
    sizes differ): with ``batch_size`` set to the DataLoader's, a worker cuts a batch's
    samples from one shared buffer and the batch crosses as one descriptor. A view keeps
    its batch's whole buffer alive. Clip media and cut-outs
    cached across the pairs of a clip are copied into each sample's buffer (the tensors
    are writable; the cache must not be): with no workers, an all-fields epoch of
    ~2.5 MB samples read 490 samples/s warm where bytes objects shared with the cache
    read 780; with 2 workers it read 284 where pickled bytes read 127.

    ``out`` may be an ``s3://bucket/prefix``; ``storage_options`` (endpoint,
    credentials, region: see :mod:`pvtt.loaders.fs`) reach both the tar reads and
    Lance, and travel to DataLoader workers with the dataset.
    """

    def __init__(
        self,
        out: str | os.PathLike[str],
        *,
        difficulty: Iterable[str] | str | None = None,
        min_score: float | None = None,
        max_score: float | None = None,
        category: Iterable[str] | str | None = None,
        passed: bool | None = True,
        where: str | None = None,
        fields: Iterable[str] = ("synth_video", "meta"),
        num_frames: int | None = 16,
        frame_stride: int = 1,
        frame_start: Literal["random", "first", "centre"] = "random",
        size: tuple[int, int] | None = None,
        target_size: int | tuple[int, int] | None = None,
        decoder: Literal["pyav", "decord", "torchcodec"] = "pyav",
        decode: bool = True,
        shuffle: bool = True,
        seed: int = 0,
        format: Literal["lance", "tar"] | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        equal_per_rank: bool = False,
        batch_size: int = 1,
        curriculum: CurriculumSchedule | None = None,
        epoch_length: int | None = None,
        on_error: Literal["raise", "skip"] = "raise",
        cache_bytes: int = 256 << 20,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.out = os.fspath(out)
        self.storage_options = dict(storage_options) if storage_options else None
        self.filter = PairFilter.make(difficulty, min_score, max_score, category, passed, where)
        self.fields = tuple(dict.fromkeys(fields))
        unknown = set(self.fields) - set(FIELDS)
        if unknown or not self.fields:
            raise ValueError(f"unknown fields {sorted(unknown)}; choose from {FIELDS}")
        self.sampler = FrameSampler(num_frames, frame_stride, frame_start)
        self.size = check_size(size)
        if isinstance(target_size, int):
            target_size = (target_size, target_size)
        self.target_size = check_size(target_size) or self.size
        self.decoder = decoder
        if not decode and (self.size is not None or self.target_size is not None):
            raise ValueError("size and target_size resize decoded media; decode=False has none")
        self.decode = decode
        self.shuffle = shuffle
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.equal_per_rank = equal_per_rank
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.batch_size = batch_size
        self.curriculum = curriculum
        self.epoch_length = epoch_length
        if on_error not in ("raise", "skip"):
            raise ValueError("on_error must be 'raise' or 'skip'")
        self.on_error = on_error
        self.cache_bytes = cache_bytes
        built = BuiltDataset(self.out, self.storage_options)  # the manifest only: no Lance yet
        self.format = format or ("lance" if built.has_lance else "tar")
        if self.format == "lance" and not built.has_lance:
            raise ValueError(f"{self.out}: has no Lance tables; use format='tar'")
        if self.format == "tar" and not built.has_tar:
            raise ValueError(f"{self.out}: has no tar shards; use format='lance'")
        self.fingerprint = fingerprint(built, self.filter, self.format)
        self.epoch = 0
        self._consumed = 0
        self._curriculum_state = curriculum.state_dict() if curriculum is not None else None
        self._yielded = 0
        self._done = 0
        self._skips = torch.zeros(SKIP_SLOTS, dtype=torch.int64).share_memory_()
        self._context: _Context | None = None
        self._fork_error: Exception | None = None
        self._shared_plan: SharedPlan | None = None
        prepare_before_fork(self)

    @property
    def skipped(self) -> int:
        """Pairs skipped so far (``on_error="skip"``), in this process and its DataLoader workers."""
        return int(self._skips.sum())

    @skipped.setter
    def skipped(self, value: int) -> None:
        self._skips.zero_()
        self._skips[0] = int(value)

    # -- the plan and this process's reader ----------------------------------
    def _ctx(self) -> _Context:
        ctx = self._context
        if ctx is not None and ctx.pid == os.getpid():
            return ctx
        if ctx is not None:  # planned in the process this one was forked from
            self._context = ctx.forked(BuiltDataset(self.out, self.storage_options))
        elif self._plans_with_lance and forked_from_lance():
            why = (
                f"opening it there failed: {self._fork_error}"
                if self._fork_error
                else "it was made after the fork"
            )
            raise LanceForkError(
                f"{self.out}: this process was forked from one that had started Lance, which "
                f"is not fork-safe, and the dataset was not opened before the fork ({why}). "
                "Open it in the parent first (e.g. len(ds)), or give the DataLoader "
                "multiprocessing_context='spawn' (with an `if __name__ == \"__main__\":` guard)"
            ) from self._fork_error
        else:
            self._context = self._open()
        return self._context

    @property
    def _plans_with_lance(self) -> bool:
        return self.format == "lance" or self.filter.where is not None

    def _open(self) -> _Context:
        if self._plans_with_lance:
            note_lance_used()
        dataset = BuiltDataset(self.out, self.storage_options)
        selection = (
            self._shared_plan.selection(dataset, self.filter)
            if self._shared_plan is not None and self.format == "lance"
            else self._select(dataset)
        )
        _release_freed_memory()
        for what, count in selection.unreadable:
            log.warning("left out %d pairs that cannot be read: %s", count, what)
        if selection.fingerprint != self.fingerprint:
            raise LoaderStateError(f"{self.out}: the dataset changed since this loader was made")
        reader: LanceReader | TarReader = (
            LanceReader(dataset, selection, self.cache_bytes, self.fields)
            if self.format == "lance"
            else TarReader(dataset, selection)
        )
        return _Context(os.getpid(), selection, reader)

    def _select(self, dataset: BuiltDataset) -> Selection:
        return select(
            dataset, self.filter, self.format, skip_unreadable=self.on_error == "skip",
            columns=META_COLUMNS if "meta" in self.fields else READ_COLUMNS,
        )

    def prepare_for_fork(self) -> None:
        """Plan here, before this process (which has started Lance) forks, if planning needs
        Lance: the child then reads without Lance. A Lance plan also reads its selected rows'
        scalar columns now (:meth:`~pvtt.loaders.selection.LanceRows.hold`), which the child
        could not. An error is kept for the child to report: Python ignores errors raised
        while forking."""
        if not self._plans_with_lance:
            return
        try:
            if self._context is None:
                self._context = self._open()
            rows = self._context.selection.rows
            if rows is not None and self._context.pid == os.getpid():
                rows.hold()
        except Exception as exc:  # noqa: BLE001 - reported by the child that needs the plan
            self._fork_error = exc

    def __getstate__(self) -> dict[str, Any]:
        """Pickled for a spawned worker without the plan's reader. A Lance plan made here
        travels as its arrays in shared memory (:class:`SharedPlan`), so the worker scans
        nothing and every worker reads the same pages; otherwise the worker plans again."""
        state = self.__dict__.copy()
        ctx = self._context
        if ctx is not None and ctx.pid == os.getpid():
            state["_shared_plan"] = ctx.share() or self._shared_plan
        state["_context"] = state["_fork_error"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        prepare_before_fork(self)

    def __len__(self) -> int:
        """Samples this rank yields in a full epoch (opens the dataset in this process)."""
        rank, world = _distributed(self.rank, self.world_size)
        return len(self._plan(self._ctx().selection, rank, world, 1, consumed=0).rank_positions())

    @property
    def unreadable(self) -> int:
        """Pairs left out when selecting (``on_error="skip"``): a Lance fragment or a shard
        index that cannot be read, counted before the filter (opens the dataset)."""
        return sum(count for _, count in self._ctx().selection.unreadable)

    @property
    def num_selected(self) -> int:
        return len(self._ctx().selection)

    # -- planning -------------------------------------------------------------
    def _positions(self, selection: Selection) -> int:
        return self.epoch_length if self.epoch_length is not None else len(selection)

    def _order(self, selection: Selection, world: int) -> np.ndarray | None:
        if self.curriculum is None:
            return None
        # the epoch's order comes from the schedule as it was when the epoch began; the live
        # schedule keeps the adaptive updates made since
        schedule = copy.deepcopy(self.curriculum)
        if self._curriculum_state is not None:
            schedule.load_state_dict(self._curriculum_state)
        positions = self._positions(selection)
        return curriculum_order(
            selection.levels, schedule, seed=self.seed, epoch=self.epoch,
            num_positions=positions, samples_per_step=self.batch_size * world,
            start_position=self.epoch * positions, qualities=selection.qualities,
        )

    def _plan(self, selection: Selection, rank: int, world: int, workers: int, *, consumed: int) -> SamplePlan:
        order = self._order(selection, world)
        return SamplePlan(
            num_samples=len(selection),
            seed=self.seed, epoch=self.epoch, shuffle=self.shuffle and order is None,
            world_size=world, rank=rank, num_workers=workers, batch_size=self.batch_size,
            equal_per_rank=self.equal_per_rank, consumed=consumed, order=order,
        )

    # -- iteration ------------------------------------------------------------
    def __iter__(self) -> Iterator[dict[str, Any]]:
        rank, world = _distributed(self.rank, self.world_size)
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        ctx = self._ctx()
        plan = self._plan(ctx.selection, rank, world, workers, consumed=self._consumed)
        self._yielded = self._done = 0  # now, not at the first next(): state_dict() is right at once
        slot = 0 if info is None else 1 + info.id % (SKIP_SLOTS - 1)
        return self._iterate(ctx, plan.worker_positions(worker), slot)

    def _iterate(self, ctx: _Context, positions: np.ndarray, slot: int) -> Iterator[dict[str, Any]]:
        arena = transfer.Arena(self.batch_size)
        # a worker's sample pickles each storage once (transfer.SampleDict), not each tensor
        wrap = transfer.SampleDict if shared.in_worker() else None
        media = tuple(f for f in self.fields if f != "meta")
        start, step = 0, self.batch_size
        while start < len(positions):
            block = positions[start : start + step]
            start += len(block)
            step = max(min(2 * step, META_BATCH_MAX), self.batch_size)
            try:
                ctx.selection.fetch(block)
            except (OSError, ValueError):
                pass  # each pair's row is read alone then, and fails (or is skipped) alone
            for at, index in enumerate(block):
                if media:
                    self._advise(ctx, block, at, media)
                sample = self._sample(ctx, int(index), slot, arena)
                self._done += 1  # plan positions used, skipped ones included
                if sample is None:
                    continue
                self._yielded += 1
                arena.sample_done()
                yield sample if wrap is None else wrap(sample)

    def _advise(self, ctx: _Context, block: np.ndarray, at: int, media: tuple[str, ...]) -> None:
        """Before the block's pair ``at`` is read, have the kernel start reading the pair
        :data:`READ_AHEAD` places on (the first time, every pair up to it): a cold epoch
        reads its scattered values in parallel instead of one after another. A pair whose
        row or place cannot be found now is simply read without it."""
        first = 0 if at == 0 else at + READ_AHEAD
        for ahead in block[first : at + READ_AHEAD + 1]:
            try:
                ctx.reader.advise(int(ahead), media)
            except (OSError, ValueError, KeyError):
                return

    def _sample(
        self, ctx: _Context, index: int, slot: int, arena: transfer.Arena
    ) -> dict[str, Any] | None:
        try:
            return self._decode(ctx, index, arena)
        except (MediaDecodeError, ShardFormatError, MissingFieldError, OSError, ValueError) as exc:
            pair_id = ctx.selection.pair_id(index)
            where = self._where(ctx, index)
            if self.on_error == "raise":
                raise SampleError(f"{where}: pair {pair_id or '(row not read)'}: {exc}") from exc
            self._skips[slot] += 1
            log.warning("skipped pair %s (%s): %s", pair_id or "(row not read)", where, exc)
            return None

    def _where(self, ctx: _Context, index: int) -> str:
        sel = ctx.selection
        if sel.shard_entries is not None:
            path, entry = sel.shard_entries[index]
            return f"{os.path.join(self.out, path)} bytes {entry['offset']}-{entry['end']}"
        return f"{self.out}/lance/pairs.lance row {int(sel.row_ids[index])}"  # type: ignore[index]

    def _frame_indices(self, meta: dict[str, Any]) -> np.ndarray | None:
        """The frames of pair ``meta`` this epoch takes; None when no field has frames."""
        if not any(f in self.fields for f in (*VIDEO_FIELDS, "masks")):
            return None
        key = zlib.crc32(meta["pair_id"].encode())
        rng = np.random.default_rng([self.seed, self.epoch, key])
        return self.sampler.indices(meta["frame_count"], rng)

    def _decode(self, ctx: _Context, index: int, arena: transfer.Arena) -> dict[str, Any]:
        if not self.decode:
            return self._undecoded(ctx, index, arena)
        media, meta = ctx.reader.read(index, self.fields)
        _check_meta(meta, ctx.selection.pair_id(index))
        out: dict[str, Any] = {}
        frame_idx = self._frame_indices(meta)
        if frame_idx is not None:
            out["frame_indices"] = shared.output(frame_idx)
        for name in self.fields:
            if name in VIDEO_FIELDS:
                out[name] = decode_frames(media[name], frame_idx, size=self.size,
                                          backend=self.decoder, what=name)
            elif name == "masks":
                out[name] = decode_masks_at(media[name], frame_idx, size=self.size)
            elif name == "target_image":
                out[name] = decode_rgba(media[name], size=self.target_size, what=name)
            elif name == "meta":
                out[name] = _plain_meta(meta)
        return out

    def _undecoded(self, ctx: _Context, index: int, arena: transfer.Arena) -> dict[str, Any]:
        """The sample of ``decode=False``: the media's stored bytes read into one buffer,
        with room for the frame indices in front when their count is known beforehand."""
        media_fields = tuple(f for f in self.fields if f != "meta")
        framed = any(f in media_fields for f in (*VIDEO_FIELDS, "masks"))
        count = self.sampler.num_frames if framed else 0
        front = 8 * (count or 0)  # int64 indices; the buffer's start is page-aligned
        block = torch.empty(0, dtype=torch.uint8)

        def alloc(size: int) -> np.ndarray:
            nonlocal block
            block = arena.alloc(front + size)
            return block.numpy()[front:]

        spans, meta = ctx.reader.read_into(index, media_fields, alloc)
        _check_meta(meta, ctx.selection.pair_id(index))
        out: dict[str, Any] = {}
        frame_idx = self._frame_indices(meta)
        if frame_idx is not None:
            if front:
                out["frame_indices"] = block[:front].view(torch.int64)
                out["frame_indices"].copy_(torch.from_numpy(frame_idx))
            else:  # every frame of the clip: the count was not known before the read
                out["frame_indices"] = shared.output(frame_idx)
        for name in self.fields:
            if name == "meta":
                out[name] = _plain_meta(meta)
            else:
                span = spans[name]
                out[name] = block[front + span.start : front + span.stop]
        return out

    # -- epochs and resume -----------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` from its beginning (another shuffle and curriculum draw)."""
        self.epoch = int(epoch)
        self._consumed = 0
        self._yielded = self._done = 0
        if self.curriculum is not None:
            self._curriculum_state = self.curriculum.state_dict()

    def state_dict(self, samples_seen: int | None = None) -> dict[str, Any]:
        """Where this rank stands in the epoch.

        ``samples_seen``: samples this rank took from the loader since iteration began
        (or since ``load_state_dict``); default what this process itself yielded, exact
        when the DataLoader has no workers. When it equals what this process yielded,
        the positions of the pairs this process skipped count as consumed too.
        """
        _, world = _distributed(self.rank, self.world_size)
        seen = (
            self._done
            if samples_seen is None or int(samples_seen) == self._yielded
            else int(samples_seen)
        )
        return {
            "version": STATE_VERSION,
            "fingerprint": self.fingerprint,
            "seed": self.seed,
            "epoch": self.epoch,
            "consumed": self._consumed + seen * world,
            "curriculum_epoch_start": self._curriculum_state,
            "curriculum": self.curriculum.state_dict() if self.curriculum is not None else None,
            "skipped": self.skipped,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise LoaderStateError(f"loader state version {state.get('version')} is not {STATE_VERSION}")
        if state["fingerprint"] != self.fingerprint:
            raise LoaderStateError(
                "the saved state belongs to another dataset version or filter "
                f"({state['fingerprint']} != {self.fingerprint})"
            )
        if state["seed"] != self.seed:
            raise LoaderStateError(f"the saved state used seed {state['seed']}, not {self.seed}")
        self.epoch = int(state["epoch"])
        self._consumed = int(state["consumed"])
        self._yielded = self._done = 0
        self.skipped = int(state.get("skipped", 0))
        self._curriculum_state = state.get("curriculum_epoch_start")
        if self.curriculum is not None and state.get("curriculum") is not None:
            self.curriculum.load_state_dict(state["curriculum"])
