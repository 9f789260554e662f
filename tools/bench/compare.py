"""Benchmark pvtt against the data stacks users would pick instead, on the same pairs.

Run ``python -m pvtt.tools.bench.compare [--quick] [--json FILE] [--markdown FILE]
[--plot FILE.png]``. In a temporary folder it makes N pairs of realistic media: 720p
H.264 clips of 3-10 s re-encoded from ``sam2/04_coffee.mp4`` of the test media (tests/data)
(its mirror image stands in for the synthesized clip; ``loader.make_clips``), product
masks with a moving irregular outline in pvtt's mask codec, real PNG cut-outs, and the
pairs, difficulties and scores of ``loader.make_samples`` (each pair's synthesized clip
made byte-distinct, as in a build). It writes them with pvtt's ``DatasetWriter`` (Lance
alone, tar alone with masks) and in each alternative's format (``compare_formats``:
webdataset, MosaicML Streaming MDS, Hugging Face ``datasets`` parquet, a flat Lance
table for ``lance.torch``, a LanceDB table read by LanceDB's ``StreamingDataset``
(``compare_lancedb``); MDS through a stand-in for ``streaming``'s torchvision
imports, see there), then measures, every tool reading in its stored order (pvtt with
``shuffle=False``, no shuffle buffers):

1. **streaming**: samples/s of one epoch through a ``DataLoader`` with 1, 2 and 4
   workers (``--workers``; more workers than cores oversubscribe them, and the report
   says so), bytes only (the four media fields and the scalar columns; the alternatives'
   workers send them to the main process pickled, as any IterableDataset of bytes does;
   pvtt's come from ``PairDataset(decode=False)``, one shared-memory buffer a batch),
   in DataLoader batches of :data:`BYTES_BATCH` (``collate_fn=list``; pvtt's
   ``collate_samples`` with the dataset's ``batch_size`` set alike), and
   decoded (16 frames from frame 0 of both clips, the masks at those frames, the RGBA
   cut-out; every tool decodes with ``PairDataset``'s functions, so the rows compare data
   stacks, not decoders; the first ``--decode-samples`` samples: starting at frame 0
   keeps the cost of a pair from depending on where a window falls, though a longer
   clip still costs more, as its masks decode whole), and decoded at **random windows**:
   the same, with each pair's 16-frame window starting at a frame drawn from a generator
   seeded per pair (``PairDataset``'s seeding, so every tool decodes the same frames).
2. **filtered streaming** of ~10% and ~30% of pairs (a set of difficulties and a
   minimum quality score): selected samples/s of one in-process epoch, with each
   tool's own way: pvtt, lance.torch and LanceDB push the filter down, the others read and
   drop; and for those, a filtered copy written with the tool's own writer and then
   read (the rewrite counted).
3. **resume at 90%** of an epoch: seconds from a fresh dataset object through restoring
   the tool's state to the first sample (median of ``--resume-reps``).
4. **write**: MB/s of each writer (pvtt's sinks and the alternatives') on the same
   pairs, every file fsynced at the end, as the plain-file baseline is.
5. **storage**: bytes on disk per pair.

Every figure is reported with its ratio to pvtt (its Lance format) and to the machine's
raw limit, measured in the same run: a sequential read of the same bytes from one file
(bytes-only, filters: only the selected pairs' bytes; resume: one pair's bytes), the
same read plus the same decoding in as many processes as workers (random windows: plain
PyAV seeking to the keyframe at or before each window and decoding exactly its frames,
:func:`pvtt.tools.bench.seek.plain_window`, with the masks and cut-out decoded as every
tool decodes them), the same bytes written to plain files, and the bytes themselves for
storage. Reads are cold: every file
of the tool is dropped from the page cache first (``posix_fadvise DONTNEED``); on a
virtual machine the host may still cache them, which the raw sequential rate shows.

Each read repeat runs in a fresh process (``--job``) that measures every tool, in an
order rotated from repeat to repeat: first every DataLoader run (workers are forked, and
Lance, which is not fork-safe, must not have started in that process yet), then the
in-process figures. Medians over repeats are reported.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import multiprocessing
import os
import platform
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import warnings
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from pvtt.builder.sinks.base import PairSample
from pvtt.builder.writer import DatasetWriter
from pvtt.loaders import PairDataset, collate_samples
from pvtt.loaders.frames import FrameSampler, decode_masks_at, decode_rgba
from pvtt.schemas.masks import encode_masks
from pvtt.tools.bench.compare_formats import (
    ALTERNATIVES,
    MEDIA,
    Row,
    Samples,
    Selector,
    bytes_sample,
    decode_row,
    rows_of,
)
from pvtt.tools.bench.compare_report import markdown_table, plot, print_table
from pvtt.tools.bench.loader import (
    SHARED_DATA,
    Clip,
    evict,
    load_cutouts,
    make_clips,
    make_samples,
    read_ahead_kb,
)
from pvtt.tools.bench.seek import plain_window
from pvtt.tools.bench.store import write_plain_files

MB = 1e6
PVTT = ("pvtt-lance", "pvtt-tar")
TOOLS = (*PVTT, *ALTERNATIVES)
RAW = "raw"
SEGMENTS = ((0, 287), (195, 90), (0, 135), (60, 210))
"""(first frame, frames) of ``04_coffee.mp4`` (287 frames, 29.97 fps): 9.6, 3.0, 4.5, 7.0 s."""
NUM_FRAMES = 16
SAMPLER = FrameSampler(NUM_FRAMES, 1, "first")
WINDOW_SAMPLER = FrameSampler(NUM_FRAMES, 1, "random")
WORKERS = (1, 2, 4)
MODES = ("bytes", "decode", "window")
BYTES_BATCH = 32
"""Samples per DataLoader batch when streaming bytes only (decoded samples come one by one)."""
"""DataLoader runs: bytes only, decoded from frame 0, decoded at random windows."""
FIELDS = (*MEDIA, "meta")
COPY_TOOLS = ("webdataset", "mds", "hf-datasets")
"""Tools without a filter pushdown, which can rewrite a filtered copy instead."""


@dataclass(frozen=True)
class Metric:
    """One row of the report."""

    name: str
    label: str
    unit: str
    higher_is_better: bool
    tools: tuple[str, ...] = TOOLS
    pvtt_metric: str | None = None
    """pvtt's figure to compare with when pvtt has no figure of its own (copies)."""


def _stream_metrics(workers: Sequence[int]) -> tuple[Metric, ...]:
    labels = {
        "bytes": "bytes only",
        "decode": "decoded",
        "window": "decoded, random 16-frame windows",
    }
    return tuple(
        Metric(
            f"stream_{mode}_w{n}", f"{labels[mode]}, {n} worker{'s' * (n > 1)}", "samples/s", True
        )
        for mode in MODES
        for n in workers
    )


OTHER_METRICS = (
    Metric("filter10", "filter ~10%, one epoch", "selected/s", True),
    Metric("filter30", "filter ~30%, one epoch", "selected/s", True),
    Metric(
        "filter10_copy", "filter ~10%, filtered copy", "selected/s", True, COPY_TOOLS, "filter10"
    ),
    Metric(
        "filter30_copy", "filter ~30%, filtered copy", "selected/s", True, COPY_TOOLS, "filter30"
    ),
    Metric("resume90", "resume at 90%, to first sample", "s", False),
    Metric("write", "write, fsynced", "MB/s", True),
    Metric("storage", "disk per pair", "MB/pair", False),
)


def metrics(workers: Sequence[int] = WORKERS) -> tuple[Metric, ...]:
    """The report's rows for runs with these worker counts."""
    return (*_stream_metrics(workers), *OTHER_METRICS)


METRICS = metrics()


# -- the pairs --------------------------------------------------------------------------


def outline_masks(frames: int, height: int, width: int) -> tuple[bytes, list[tuple[float, ...]]]:
    """A product-like mask sequence: an irregular outline that moves, turns and wobbles.

    A box (``make_clips``' mask) compresses to a few hundred bytes for a whole clip; a
    real tracked outline costs ~0.4 KB a frame in the codec, as this one does.
    """
    size = 520
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) - size / 2
    angle, radius = np.arctan2(yy, xx), np.hypot(xx / 1.3, yy)
    masks = np.zeros((frames, height, width), dtype=bool)
    boxes = []
    for t in range(frames):
        edge = 180 * (1 + 0.12 * np.sin(5 * angle + t / 7) + 0.05 * np.sin(13 * angle - t / 5))
        blob = radius < edge
        x0 = int((width - size) * (0.1 + 0.8 * t / max(frames - 1, 1)))
        y0 = int((height - size) / 2 + 40 * math.sin(t / 20))
        masks[t, y0 : y0 + size, x0 : x0 + size] = blob
        ys, xs = np.nonzero(blob)
        boxes.append(
            (
                float(x0 + xs.min()),
                float(y0 + ys.min()),
                float(x0 + xs.max() + 1),
                float(y0 + ys.max() + 1),
            )
        )
    return encode_masks(masks), boxes


def make_pairs(
    data: Path, pairs: int, clips: int, max_frames: int | None, seed: int
) -> tuple[list[PairSample], list[Clip]]:
    segments = [(start, min(n, max_frames or n)) for start, n in SEGMENTS[:clips]]
    made = []
    for clip in make_clips(data / "sam2" / "04_coffee.mp4", segments):
        masks, boxes = outline_masks(clip.frames, clip.height, clip.width)
        made.append(replace(clip, masks=masks, boxes=boxes))
    samples = make_samples(pairs, made, load_cutouts(data / "rembg"), seed=seed)
    for sample in samples:
        sample.pair.synth_video = distinct(sample.pair.synth_video, sample.pair.pair_id)
    return samples, made


def distinct(mp4: bytes, tag: str) -> bytes:
    """The clip with a top-level ``free`` box naming ``tag`` appended: the same frames,
    other bytes.

    ``make_samples`` gives every pair of a clip the same synthesized bytes, where a build
    has one clip per pair; parquet's dictionary encoding would store them once.
    """
    payload = tag.encode("utf-8")
    return mp4 + struct.pack(">I4s", 8 + len(payload), b"free") + payload


def selectors(rows: Sequence[Row]) -> dict[str, tuple[Selector, list[str]]]:
    """~10%: hard or expert pairs above a score; ~30%: medium, hard or expert above another.

    Each threshold sits halfway in a gap of at least 1e-4 between two stored scores
    (float32 in Lance, float64 in json), so every tool selects the same pairs.
    """
    out = {}
    for name, share, difficulties in (
        ("filter10", 0.1, frozenset({"hard", "expert"})),
        ("filter30", 0.3, frozenset({"medium", "hard", "expert"})),
    ):
        scores = sorted(
            (float(np.float32(r.quality_score)) for r in rows if r.difficulty in difficulties),
            reverse=True,
        )
        target = max(1, round(share * len(rows)))
        for k in sorted(range(1, len(scores)), key=lambda k: abs(k - target)):
            if scores[k - 1] - scores[k] > 1e-4:
                threshold = round((scores[k - 1] + scores[k]) / 2, 6)
                break
        else:
            raise ValueError(f"{name}: no gap between scores to put a threshold in")
        select = Selector(difficulties, threshold)
        out[name] = (select, [r.key for r in rows if select(r.difficulty, r.quality_score)])
    return out


# -- writing (main process) -------------------------------------------------------------


def _fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def write_tool(tool: str, folder: Path, samples: Sequence[PairSample], shard: int) -> float:
    """Seconds for one tool to write every pair into ``folder``, every file fsynced."""
    start = time.perf_counter()
    if tool in PVTT:
        fmt = tool.removeprefix("pvtt-")
        with DatasetWriter(folder, formats=(fmt,), max_samples=shard, include_masks=True) as w:
            for sample in samples:
                w.write(sample)
    else:
        ALTERNATIVES[tool].write(folder, rows_of(samples), shard)
    _fsync_tree(folder)
    return time.perf_counter() - start


def write_raw(root: Path, rows: Sequence[Row], selected: dict[str, list[str]]) -> dict[str, Any]:
    """One file of every pair's bytes in stored order, and one per filter of the selected
    pairs: what the raw limits read. Returns their paths and layouts (sizes per field)."""
    root.mkdir()
    layout = [[r.key, len(r.meta), [len(r.media[m]) for m in MEDIA]] for r in rows]

    def dump(path: Path, chosen: Iterable[Row]) -> None:
        with open(path, "wb") as fh:
            for r in chosen:
                fh.write(r.meta)
                for m in MEDIA:
                    fh.write(r.media[m])
            fh.flush()
            os.fsync(fh.fileno())

    dump(root / "all.bin", rows)
    out: dict[str, Any] = {"all": str(root / "all.bin"), "layout": layout, "selected": {}}
    for name, keys in selected.items():
        wanted = set(keys)
        path = root / f"{name}.bin"
        dump(path, (r for r in rows if r.key in wanted))
        out["selected"][name] = {
            "path": str(path),
            "layout": [x for x in layout if x[0] in wanted],
        }
    return out


def measure_writes(
    root: Path,
    samples: Sequence[PairSample],
    rows: Sequence[Row],
    shard: int,
    reps: int,
    tools: Sequence[str],
) -> tuple[dict[str, list[float]], dict[str, Path]]:
    """Write seconds per tool and rep (raw: the same bytes as plain files); the last rep's
    folders stay as the datasets the reads measure."""
    blobs = [b for r in rows for b in (r.meta, *(r.media[m] for m in MEDIA))]
    seconds: dict[str, list[float]] = {t: [] for t in (RAW, *tools)}
    folders = {t: root / t for t in tools}
    for rep in range(reps):
        plain = root / "plain"
        seconds[RAW].append(write_plain_files(plain, blobs))
        shutil.rmtree(plain)
        for tool in tools:
            if folders[tool].exists():
                shutil.rmtree(folders[tool])
            seconds[tool].append(write_tool(tool, folders[tool], samples, shard))
            print(f"  write rep {rep + 1}/{reps}: {tool} {seconds[tool][-1]:.1f} s", flush=True)
    return seconds, folders


# -- reading (a fresh process per repeat) -----------------------------------------------


class Runner:
    """One tool's datasets as a training loop uses them, and its resume."""

    def __init__(self, tool: str, folder: Path, seed: int) -> None:
        self.tool, self.folder, self.seed = tool, folder, seed
        self.alt = ALTERNATIVES.get(tool)

    def _pvtt(self, mode: str, select: Selector | None, batch: int = 1) -> PairDataset:
        kwargs: dict[str, Any] = dict(
            format=self.tool.removeprefix("pvtt-"),
            fields=FIELDS,
            passed=None,
            shuffle=False,
            seed=self.seed,
            batch_size=batch,
        )
        if select is not None:
            kwargs.update(difficulty=set(select.difficulties), min_score=select.min_score)
        if mode == "bytes":
            return PairDataset(self.folder, decode=False, **kwargs)
        start = "random" if mode == "window" else "first"
        return PairDataset(self.folder, num_frames=NUM_FRAMES, frame_start=start, **kwargs)

    def dataset(self, mode: str, select: Selector | None = None, batch: int = 1) -> IterableDataset:
        """The tool's dataset for ``mode``; ``batch``: the DataLoader batch it will be read
        in (pvtt plans and cuts buffers by it)."""
        if self.alt is None:
            return self._pvtt(mode, select, batch)
        transform = {"bytes": bytes_sample, "decode": _decode_first, "window": self._window}
        return Samples(self.alt.rows(self.folder, select), transform[mode])

    def _window(self, row: Row) -> dict[str, Any]:
        return decode_row(row, WINDOW_SAMPLER, self.seed)

    def resume_state(self, skip: int) -> Any:
        if self.alt is None:
            return self._pvtt("bytes", None).state_dict(samples_seen=skip)
        return self.alt.resume_state(self.folder, skip)

    def resume(self, state: Any) -> str:
        if self.alt is None:
            ds = self._pvtt("bytes", None)
            ds.load_state_dict(state)
            return next(iter(ds))["meta"]["pair_id"]
        return self.alt.resume(self.folder, state).key


def _decode_first(row: Row) -> dict[str, Any]:
    return decode_row(row, SAMPLER)


def loader_epoch(
    ds: IterableDataset, workers: int, limit: int | None = None, batch: int | None = None
) -> dict[str, Any]:
    """One pass through a ``DataLoader`` (fork), stopped after ``limit`` samples if given;
    ``batch``: samples per DataLoader batch, collated as a list (pvtt's
    :func:`collate_samples`), else one sample at a time."""
    loader = DataLoader(
        ds,
        batch_size=batch,
        collate_fn=None if batch is None else _list_collate(ds),
        num_workers=workers,
        multiprocessing_context="fork" if workers else None,
    )
    keys: list[str] = []
    media = 0
    start = time.perf_counter()
    it = iter(loader)
    for item in it:
        for sample in (item,) if batch is None else item:
            keys.append(sample["meta"]["pair_id"])
            media += sum(_stored_bytes(sample[m]) for m in MEDIA)
        if limit is not None and len(keys) >= limit:
            break
    seconds = time.perf_counter() - start
    del it, loader  # stops the workers
    return {"seconds": seconds, "samples": len(keys), "media_bytes": media, "keys": keys}


def _list_collate(ds: IterableDataset) -> Any:
    return collate_samples if isinstance(ds, PairDataset) else list


def _stored_bytes(value: Any) -> int:
    """Bytes of an undecoded field: bytes, or ``PairDataset(decode=False)``'s 1-D uint8
    tensor; 0 for a decoded one."""
    if isinstance(value, bytes):
        return len(value)
    if isinstance(value, torch.Tensor) and value.dtype == torch.uint8 and value.ndim == 1:
        return value.numel()
    return 0


def _check(tool: str, what: str, got: Any, expected: Any) -> None:
    if got != expected:
        raise AssertionError(f"{tool} {what}: got {got!r}, expected {expected!r}")


def measure_streams(runner: Runner, job: dict[str, Any]) -> dict[str, Any]:
    """Part 1: epochs through a forked DataLoader, bytes only (whole) and decoded (first k,
    from frame 0 and at random windows)."""
    tool, pairs = runner.tool, job["pairs"]
    out: dict[str, Any] = {}
    for mode in MODES:
        for workers in job["workers"]:
            evict(runner.folder)
            if mode == "bytes":
                ds, limit, batch = runner.dataset(mode, batch=BYTES_BATCH), None, BYTES_BATCH
            else:
                ds, limit, batch = runner.dataset(mode), job["decode_samples"], None
            got = loader_epoch(ds, workers, limit, batch)
            _check(tool, f"{mode} w{workers} samples", got["samples"], limit or pairs)
            _check(tool, f"{mode} w{workers} distinct", len(set(got["keys"])), got["samples"])
            if mode == "bytes":
                _check(
                    tool, f"bytes w{workers} media bytes", got["media_bytes"], job["media_bytes"]
                )
            out[f"stream_{mode}_w{workers}"] = {
                "value": got["samples"] / got["seconds"],
                "seconds": got["seconds"],
                "samples": got["samples"],
            }
    return out


def measure_in_process(runner: Runner, job: dict[str, Any]) -> dict[str, Any]:
    """Parts 2 and 3 in this process: filtered epochs (and copies), resume at 90%."""
    tool = runner.tool
    evict(runner.folder)
    order = loader_epoch(runner.dataset("bytes"), 0)
    out: dict[str, Any] = {
        "in_process_bytes": {"value": job["pairs"] / order["seconds"], "seconds": order["seconds"]}
    }
    for name, spec in job["filters"].items():
        select = Selector(frozenset(spec["difficulties"]), spec["min_score"])
        evict(runner.folder)
        got = loader_epoch(runner.dataset("bytes", select), 0)
        _check(tool, f"{name} keys", sorted(got["keys"]), sorted(spec["keys"]))
        out[name] = {
            "value": got["samples"] / got["seconds"],
            "seconds": got["seconds"],
            "samples": got["samples"],
        }
        if tool in COPY_TOOLS:
            out[f"{name}_copy"] = _filtered_copy(job, runner, select, spec["keys"], name)
    skip = job["skip"]
    state = runner.resume_state(skip)
    times = []
    for _ in range(job["resume_reps"]):
        evict(runner.folder)
        gc.collect()
        start = time.perf_counter()
        key = runner.resume(state)
        times.append(time.perf_counter() - start)
        _check(tool, "first sample after resume", key, order["keys"][skip])
    out["resume90"] = {"value": statistics.median(times), "all": times, "skip": skip}
    return out


def _filtered_copy(
    job: dict[str, Any], runner: Runner, select: Selector, keys: list[str], name: str
) -> dict[str, Any]:
    """Read everything, write the selected pairs with the tool's own writer, read the copy."""
    alt = runner.alt
    assert alt is not None
    copy = Path(job["scratch"]) / f"{runner.tool}-{name}"
    evict(runner.folder)
    start = time.perf_counter()
    alt.write(copy, alt.rows(runner.folder, select), job["shard_samples"])
    _fsync_tree(copy)
    written = time.perf_counter() - start
    got = loader_epoch(Samples(alt.rows(copy), bytes_sample), 0)
    seconds = time.perf_counter() - start
    _check(runner.tool, f"{name} copy keys", sorted(got["keys"]), sorted(keys))
    shutil.rmtree(copy)
    return {"value": len(keys) / seconds, "seconds": seconds, "rewrite_s": written}


@dataclass(frozen=True)
class RawFile:
    """Pairs' bytes laid end to end in one file: (key, json size, media sizes) per pair."""

    path: Path
    layout: list[tuple[str, int, list[int]]]

    def rows(self, first: int = 0, stop: int | None = None) -> Iterable[Row]:
        """Rows ``first:stop``, read sequentially."""
        sizes = [meta + sum(media) for _, meta, media in self.layout]
        with open(self.path, "rb") as fh:
            fh.seek(sum(sizes[:first]))
            for key, meta_size, media_sizes in self.layout[first:stop]:
                meta = fh.read(meta_size)
                media = {m: fh.read(n) for m, n in zip(MEDIA, media_sizes, strict=True)}
                parsed = json.loads(meta)
                yield Row(key, meta, parsed["difficulty"], parsed["quality_score"], media)


def _decode_raw(args: tuple[RawFile, int, int, str, int]) -> int:
    """Decode rows ``first:stop``: from frame 0 as every tool does (``decode``), or at each
    pair's random window with plain PyAV seeking (``window``); returns how many."""
    raw, first, stop, mode, seed = args
    count = 0
    for row in raw.rows(first, stop):
        if mode == "decode":
            decode_row(row, SAMPLER)
        else:
            meta = json.loads(row.meta)
            rng = np.random.default_rng([seed, 0, zlib.crc32(row.key.encode())])
            frames = WINDOW_SAMPLER.indices(int(meta["frame_count"]), rng)
            distinct = np.unique(frames).size  # a clip shorter than the window repeats its last
            for name in ("synth_video", "source_video"):
                if plain_window(row.media[name], frames, keep=True) != distinct:
                    raise AssertionError(f"raw window of {row.key} {name}: frames missing")
            decode_masks_at(row.media["masks"], frames)
            decode_rgba(row.media["target_image"], what="target_image")
        count += 1
    return count


def raw_streams(job: dict[str, Any]) -> dict[str, Any]:
    """The limits of part 1: one sequential read of every pair's bytes; the first k pairs
    read and decoded in as many forked processes as workers, each its own run of pairs."""
    raw = RawFile(Path(job["raw"]["all"]), job["raw"]["layout"])
    total = sum(meta + sum(media) for _, meta, media in raw.layout)
    out: dict[str, Any] = {}
    for workers in job["workers"]:
        evict(raw.path)
        start = time.perf_counter()
        got = sum(row.nbytes for row in raw.rows())
        seconds = time.perf_counter() - start
        _check(RAW, "bytes", got, total)
        out[f"stream_bytes_w{workers}"] = {
            "value": len(raw.layout) / seconds,
            "seconds": seconds,
            "mb_s": total / seconds / MB,
        }
    k = job["decode_samples"]
    for mode in ("decode", "window"):
        for workers in job["workers"]:
            evict(raw.path)
            per = math.ceil(k / workers)
            parts = [
                (raw, first, min(first + per, k), mode, job["seed"]) for first in range(0, k, per)
            ]
            start = time.perf_counter()
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                decoded = sum(pool.map(_decode_raw, parts))
            seconds = time.perf_counter() - start
            _check(RAW, f"{mode} decoded", decoded, k)
            out[f"stream_{mode}_w{workers}"] = {"value": k / seconds, "seconds": seconds}
    return out


def raw_in_process(job: dict[str, Any]) -> dict[str, Any]:
    """The limits of parts 2 and 3: the selected pairs' bytes alone; one pair's bytes."""
    out: dict[str, Any] = {}
    for name, sel in job["raw"]["selected"].items():
        raw = RawFile(Path(sel["path"]), sel["layout"])
        evict(raw.path)
        start = time.perf_counter()
        count = sum(1 for _ in raw.rows())
        seconds = time.perf_counter() - start
        out[name] = out[f"{name}_copy"] = {"value": count / seconds, "seconds": seconds}
    raw = RawFile(Path(job["raw"]["all"]), job["raw"]["layout"])
    skip = job["skip"]
    times = []
    for _ in range(job["resume_reps"]):
        evict(raw.path)
        start = time.perf_counter()
        row = next(iter(raw.rows(skip, skip + 1)))
        times.append(time.perf_counter() - start)
        _check(RAW, "resumed pair", row.key, raw.layout[skip][0])
    out["resume90"] = {"value": statistics.median(times), "all": times}
    return out


def measure_rep(job: dict[str, Any]) -> dict[str, Any]:
    """Every read figure of every tool, in ``job["order"]``, and the seconds each took.

    All DataLoader runs come first: their workers are forked, and nothing may have
    started Lance's runtime in this process by then (it is not fork-safe). Lance is
    imported (it registers a warning at every fork) but not started.
    """
    warnings.filterwarnings("ignore", message="lance is not fork-safe")
    runners = {t: Runner(t, Path(f), job["seed"]) for t, f in job["folders"].items()}
    out: dict[str, dict[str, Any]] = {t: {} for t in job["order"]}
    took: dict[str, dict[str, float]] = {t: {} for t in job["order"]}
    for phase, measures in (
        ("streams", (raw_streams, measure_streams)),
        ("in_process", (raw_in_process, measure_in_process)),
    ):
        for tool in job["order"]:
            start = time.perf_counter()
            if tool == RAW:
                out[tool].update(measures[0](job))
            else:
                out[tool].update(measures[1](runners[tool], job))
            took[tool][phase] = time.perf_counter() - start
    return {"figures": out, "seconds": took}


def spawn_rep(job: dict[str, Any], root: Path, env: dict[str, str]) -> dict[str, Any]:
    """:func:`measure_rep` in a fresh interpreter (``--job``); its figures."""
    job_file, result_file = root / "job.json", root / "result.json"
    job_file.write_text(json.dumps(job), encoding="utf-8")
    cmd = [
        sys.executable,
        "-m",
        "pvtt.tools.bench.compare",
        "--job",
        str(job_file),
        "--job-result",
        str(result_file),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"measuring rep {job['rep']} failed:\n{done.stderr[-6000:]}")
    return json.loads(result_file.read_text(encoding="utf-8"))


# -- the run ----------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    versions = {}
    for dist in (
        "torch",
        "pylance",
        "pyarrow",
        "av",
        "webdataset",
        "mosaicml-streaming",
        "datasets",
        "lancedb",
    ):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(mem / 1e9, 1),
        "python": platform.python_version(),
        "os": platform.platform(),
        "versions": versions,
    }


def records(
    figures: dict[str, dict[str, list[float]]],
    missing: dict[str, str],
    workers: Sequence[int] = WORKERS,
) -> list[dict[str, Any]]:
    """Median of every (tool, metric), with its ratios to pvtt (Lance) and to the raw limit."""

    def median(tool: str, metric: str) -> float | None:
        values = figures.get(tool, {}).get(metric)
        return statistics.median(values) if values else None

    out = []
    for metric in metrics(workers):
        raw = median(RAW, metric.name)
        pvtt = median("pvtt-lance", metric.pvtt_metric or metric.name)
        pvtt_tar = median("pvtt-tar", metric.pvtt_metric or metric.name)
        for tool in (RAW, *TOOLS):
            applies = tool == RAW or tool in metric.tools
            value = median(tool, metric.name) if applies else None
            note = None
            if not applies:
                note = "not applicable"
            elif tool in missing:
                note = missing[tool]
            out.append(
                {
                    "tool": tool,
                    "metric": metric.name,
                    "label": metric.label,
                    "unit": metric.unit,
                    "higher_is_better": metric.higher_is_better,
                    "value": value,
                    "ratio_to_pvtt": _ratio(value, pvtt),
                    "ratio_to_pvtt_tar": _ratio(value, pvtt_tar),
                    "ratio_to_raw": _ratio(value, raw),
                    "reps": len(figures.get(tool, {}).get(metric.name, [])),
                    "note": note,
                }
            )
    return out


def _ratio(value: float | None, ref: float | None) -> float | None:
    return None if value is None or not ref else value / ref


def behind(recs: Sequence[dict[str, Any]]) -> list[str]:
    """Rows where an alternative beats both pvtt formats."""
    lines = []
    for metric in METRICS:
        rows = {r["tool"]: r["value"] for r in recs if r["metric"] == metric.name}
        sign = 1 if metric.higher_is_better else -1
        ref = {
            r["tool"]: r["value"]
            for r in recs
            if r["metric"] == (metric.pvtt_metric or metric.name)
        }
        mine = [ref[t] for t in PVTT if ref.get(t) is not None]
        if not mine:
            continue
        best = max(mine, key=lambda v: sign * v)
        for tool in ALTERNATIVES:
            value = rows.get(tool)
            if value is not None and sign * value > sign * best:
                lines.append(f"{metric.name}: {tool} {value:.4g} {metric.unit} vs pvtt {best:.4g}")
    return lines


def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    results: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "argv": sys.argv[1:],
        "quick": args.quick,
        "load_avg_start": os.getloadavg(),
        "settings": {
            k: getattr(args, k)
            for k in (
                "pairs",
                "clips",
                "reps",
                "write_reps",
                "resume_reps",
                "decode_samples",
                "shard_samples",
                "max_frames",
                "seed",
                "workers",
            )
        },
    }
    print(
        f"pvtt vs data stacks: {args.pairs} pairs, {args.clips} clips, {args.reps} reps", flush=True
    )
    start = time.perf_counter()
    samples, clips = make_pairs(args.data, args.pairs, args.clips, args.max_frames, args.seed)
    rows = list(rows_of(samples))
    made_s = time.perf_counter() - start
    filters = selectors(rows)
    media_total = sum(r.nbytes - len(r.meta) for r in rows)
    payload = sum(r.nbytes for r in rows)
    results["dataset"] = {
        "pairs": len(rows),
        "shard_samples": args.shard_samples,
        "clips": [
            {
                "frames": c.frames,
                "seconds": c.frames / c.fps,
                "width": c.width,
                "height": c.height,
                "synth_bytes": len(c.synth),
                "source_bytes": len(c.source),
                "mask_bytes": len(c.masks),
            }
            for c in clips
        ],
        "payload_bytes": payload,
        "media_bytes": media_total,
        "filters": {
            n: {
                "difficulties": sorted(s.difficulties),
                "min_score": s.min_score,
                "selected": len(k),
            }
            for n, (s, k) in filters.items()
        },
        "make_s": made_s,
    }
    print(
        f"  {len(rows)} pairs, {payload / MB:.0f} MB of per-pair payload; clips "
        + ", ".join(f"{c.frames / c.fps:.1f} s" for c in clips)
        + f"; filters select {', '.join(str(len(k)) for _, k in filters.values())} pairs "
        f"(made in {made_s:.0f} s)",
        flush=True,
    )
    missing = {t: why for t in ALTERNATIVES if (why := ALTERNATIVES[t].missing()) is not None}
    tools = [t for t in TOOLS if t not in missing]
    for tool, why in missing.items():
        print(f"  {tool}: n/a ({why})")

    write_s, folders = measure_writes(
        root / "data", samples, rows, args.shard_samples, args.write_reps, tools
    )
    del samples
    figures: dict[str, dict[str, list[float]]] = {t: {} for t in (RAW, *tools)}
    for tool, times in write_s.items():
        figures[tool]["write"] = [payload / s / MB for s in times]
    figures[RAW]["storage"] = [payload / len(rows) / MB]
    for tool in tools:
        figures[tool]["storage"] = [disk_bytes(folders[tool]) / len(rows) / MB]

    raw = write_raw(root / "raw", rows, {n: k for n, (_, k) in filters.items()})
    job_base = {
        "pairs": len(rows),
        "media_bytes": media_total,
        "workers": list(args.workers),
        "decode_samples": min(args.decode_samples, len(rows)),
        "skip": int(0.9 * len(rows)),
        "seed": args.seed,
        "resume_reps": args.resume_reps,
        "shard_samples": args.shard_samples,
        "scratch": str(root / "scratch"),
        "raw": raw,
        "filters": {
            n: {"difficulties": sorted(s.difficulties), "min_score": s.min_score, "keys": k}
            for n, (s, k) in filters.items()
        },
    }
    (root / "scratch").mkdir()
    env = {
        **os.environ,
        "HF_HOME": str(root / "hf-home"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    details: dict[str, list[dict[str, Any]]] = {t: [] for t in (RAW, *tools)}
    order = [RAW, *tools]
    for rep in range(args.reps):
        began = time.perf_counter()
        turn = order[rep % len(order) :] + order[: rep % len(order)]
        job = {
            **job_base,
            "rep": rep,
            "order": turn,
            "folders": {t: str(folders[t]) for t in tools},
        }
        got = spawn_rep(job, root, env)
        for tool, figs in got["figures"].items():
            details[tool].append({**figs, "seconds": got["seconds"][tool]})
            for metric, fig in figs.items():
                figures[tool].setdefault(metric, []).append(fig["value"])
        took = ", ".join(f"{t} {sum(v.values()):.0f}" for t, v in got["seconds"].items())
        print(
            f"  read rep {rep + 1}/{args.reps}: {time.perf_counter() - began:.0f} s ({took} s)",
            flush=True,
        )
    results["figures"] = figures
    results["details"] = details
    results["records"] = records(figures, missing, args.workers)
    results["behind"] = behind(results["records"])
    results["read_ahead_kb"] = read_ahead_kb(root)
    results["load_avg_end"] = os.getloadavg()
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer pairs and repeats (<10 min)")
    parser.add_argument("--pairs", type=int, help="pairs (default 400, quick 96)")
    parser.add_argument("--clips", type=int, help="distinct clips, 1-4 (default 4, quick 2)")
    parser.add_argument("--reps", type=int, help="read repeats, median kept (default 3, quick 1)")
    parser.add_argument("--write-reps", type=int, help="write repeats (default 3, quick 1)")
    parser.add_argument("--resume-reps", type=int, default=3, help="resumes timed per rep")
    parser.add_argument("--decode-samples", type=int, help="samples per decoded run (48, quick 12)")
    parser.add_argument("--shard-samples", type=int, help="pairs per shard/file (default pairs/8)")
    parser.add_argument("--max-frames", type=int, help="cut every clip to this many frames")
    parser.add_argument(
        "--data",
        type=Path,
        default=SHARED_DATA,
        help="the test media (default: tests/data of the checkout)",
    )
    parser.add_argument("--dir", type=Path, help="where the temporary folder goes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--workers", type=int, nargs="+", default=list(WORKERS), help="DataLoader workers (1 2 4)"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="write every figure here")
    parser.add_argument("--markdown", type=Path, metavar="FILE", help="write the table here")
    parser.add_argument("--plot", type=Path, metavar="FILE.png", help="draw the figures here")
    parser.add_argument("--job", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--job-result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.job is not None:
        job = json.loads(args.job.read_text(encoding="utf-8"))
        args.job_result.write_text(json.dumps(measure_rep(job)), encoding="utf-8")
        return
    quick = args.quick
    args.pairs = args.pairs or (96 if quick else 400)
    args.clips = min(max(args.clips or (2 if quick else 4), 1), len(SEGMENTS))
    args.reps = args.reps or (1 if quick else 3)
    args.write_reps = args.write_reps or (1 if quick else 3)
    args.decode_samples = args.decode_samples or (12 if quick else 48)
    args.shard_samples = args.shard_samples or max(1, math.ceil(args.pairs / 8))
    video = args.data / "sam2" / "04_coffee.mp4"
    if not video.is_file():
        parser.error(
            f"{video}: missing; pass --data with the test media folder (tests/data of a checkout)"
        )
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pvtt-compare-", dir=args.dir) as tmp:
        results = run(args, Path(tmp))
    results["total_s"] = time.perf_counter() - start
    print()
    print_table(results)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
        print(f"figures written to {args.json}")
    if args.markdown is not None:
        args.markdown.write_text(markdown_table(results), encoding="utf-8")
        print(f"table written to {args.markdown}")
    if args.plot is not None:
        plot(results, args.plot)
        print(f"plot written to {args.plot}")


if __name__ == "__main__":
    main()
