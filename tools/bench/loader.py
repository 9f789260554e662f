"""Benchmark ``PairDataset``: read rate, bytes read under a filter, decode rate, resume.

Run ``python -m pvtt.tools.bench.loader [--quick] [--json FILE]``. It builds, in a
temporary folder, a dataset of real media with ``DatasetWriter`` (Lance and tar): a
few 3-5 s 1280x720 H.264 clips re-encoded from ``sam2/04_coffee.mp4`` of the shared
test data (the mirrored clip, encoded again, stands in for the synthesized video),
real PNG cut-outs, and pairs with the default difficulty mix and scores that drop
with difficulty. Every figure is a ratio against a baseline measured in the same run:

1. **bytes-only samples/s**: ``PairDataset(decode=False)``, its undecoded mode (each
   media field a 1-D uint8 tensor of the stored bytes). Baseline: the same ``synth_video`` bytes, in the same order, read with
   ``open().read()`` from one file per pair, and from one file holding them all (the
   disk's sequential rate). Cold runs first drop every file of the dataset and the
   baselines from the page cache (``posix_fadvise DONTNEED``); warm runs follow at once.
2. **bytes read under a filter** (``difficulty="hard"``, about 30% of pairs), as a
   ratio of the selected pairs' ``synth_video`` bytes: the reader's own count and the
   process's ``rchar`` (every byte a read syscall returned, Lance's threads included)
   from ``/proc/self/io``, plus ``read_bytes`` (what came from the disk, cold cache,
   the kernel's readahead included: the device's ``read_ahead_kb`` is printed).
3. **decoded frames/s** of ``fields=("synth_video",)`` with 16 frames and with every
   frame, against plain PyAV decoding every frame of the same clips to rgb24 (bytes in
   memory, ``thread_type="AUTO"`` as the loader sets it); for every frame also with the
   frames kept in one array (what a loader has to return), for 16 frames also seeking to
   the keyframe at or before the same window and decoding exactly its frames
   (:func:`pvtt.tools.bench.seek.plain_window`; ``tools/bench/seek.py`` compares the
   keyframe intervals). Baselines run right after each sample the loader yields: the
   machine is shared. Clips are encoded as the builder encodes them (its default
   keyframe interval, index at the front).
4. **resume at 90% of an epoch**: time from a fresh ``PairDataset`` through
   ``load_state_dict`` to the first sample, against the time from a fresh one to its
   first sample (medians, warm cache, each after a full garbage collection), and a
   naive resume that iterates and discards 90% of the epoch.

5. **DataLoader workers**: bytes-only epochs (``decode=False``), Lance and tar, through a
   ``DataLoader(batch_size=None)`` with 0, 1, 2 and 4 workers (fork; warm cache), against
   a sequential read of the same ``synth_video`` bytes from one file, timed in the same
   loop. A worker's sample reaches the main process as one shared-memory buffer; the
   ``_b32`` runs take batches of 32 (``PairDataset(batch_size=32)``, ``DataLoader(
   batch_size=32, collate_fn=collate_samples)``), a batch as one buffer. Each run is
   two epochs on the same workers (``persistent_workers``): the first starts them and
   fills their buffer pools; the next, as every later epoch of a training run, does
   not. On a
   machine with fewer cores than workers the workers are oversubscribed; the report
   says so. Everything else runs in this process (``num_workers=0``).

6. **the plan at scale** (``--plan-rows``, default 2,000,000; ``--plan-only`` runs just
   this): a metadata-only ``pairs`` table (``tools/bench/store.py``'s) opened as
   ``PairDataset(fields=("meta",))``, unfiltered (the default ``passed=True``) and for hard
   pairs with score >= 0.9, each in a fresh process: seconds to the first sample, resident
   memory above the imports after it and at its peak, per selected row, and the plan's own
   arrays (selection plus the epoch's positions) per row; the RSS an extra selected row
   costs (unfiltered less filtered, so the Lance runtime's fixed cost cancels). Baseline, in the same run: the
   plan as it was before it was made compact (every scalar column of the selected rows
   held as Arrow, sorted by ``pair_id``, the ids as a Python list), which
   :func:`old_plan_first_sample` repeats step by step.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image
from torch.utils.data import DataLoader

from pvtt.builder.sinks.base import PairSample
from pvtt.builder.video import encode_mp4, read_frames
from pvtt.builder.writer import DatasetWriter
from pvtt.loaders import PairDataset, collate_samples
from pvtt.loaders.dataset import _plain_meta
from pvtt.loaders.plan import epoch_order
from pvtt.loaders.query import DIFFICULTIES, PairFilter, lance_table
from pvtt.loaders.selection import META_COLUMNS
from pvtt.loaders.store import open_dataset
from pvtt.schemas.keys import clip_id, image_id, pair_id
from pvtt.schemas.masks import DEFAULT_MASK_CODEC, encode_masks
from pvtt.schemas.records import ClipRecord, PairRecord, ProductRecord
from pvtt.schemas.taxonomy import Taxonomy
from pvtt.tools.bench.media import test_media_dir
from pvtt.tools.bench.seek import plain_window
from pvtt.tools.bench.store import (
    DIFFICULTY_MIX,
    SCORE_BETA,
    THRESHOLD,
    WEIGHTS,
    pairs_table,
    write_query_dataset,
)

MB = 1e6
SHARED_DATA = test_media_dir()
SEGMENTS = ((0, 135), (135, 150), (60, 105), (195, 90))
"""(first frame, frames) of ``04_coffee.mp4`` (287 frames at 29.97 fps): 3.0-5.0 s clips."""
CUTOUTS = (("car-2.jpg", "car-2.out.png"), ("car-3.jpg", "car-3.out.png"))
"""(photo, RGBA cut-out) pairs of the shared ``rembg`` folder."""
FILTER = {"difficulty": "hard", "passed": None}
"""About 30% of pairs under the default difficulty mix."""
BYTES_FIELDS = ("synth_video", "meta")
WORKERS = (0, 1, 2, 4)
WORKER_BATCH = 32
"""Samples per DataLoader batch in part 5's batched runs (``collate_samples``)."""
"""DataLoader worker counts of part 5."""
PLAN_FILTERS: dict[str, dict[str, Any]] = {
    "unfiltered": {},
    "hard>=0.9": {"difficulty": "hard", "min_score": 0.9},
}
"""Part 6's selections: the default (passed pairs) and hard pairs scored at least 0.9."""


# -- the dataset ------------------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    """One source clip's media, shared by every pair made on it."""

    frames: int
    fps: float
    width: int
    height: int
    source: bytes
    synth: bytes
    masks: bytes
    boxes: list[tuple[float, float, float, float]]


def make_clips(video: Path, segments: Sequence[tuple[int, int]]) -> list[Clip]:
    """Each segment re-encoded as a source clip, and mirrored as its "synthesized" clip.

    The mirror has the same frames count and content complexity but its own bytes, as a
    real synthesized clip has; the mask is a box moving across the frame.
    """
    clips = []
    for start, length in segments:
        frames, fps = read_frames(video, start, start + length)
        count, height, width = frames.shape[:3]
        masks = np.zeros((count, height, width), dtype=bool)
        boxes = []
        for t in range(count):
            x0, y0 = 200 + 4 * t, 150 + t
            masks[t, y0 : y0 + 300, x0 : x0 + 360] = True
            boxes.append((float(x0), float(y0), float(x0 + 360), float(y0 + 300)))
        clips.append(
            Clip(
                frames=count,
                fps=fps,
                width=width,
                height=height,
                source=encode_mp4(frames, fps),
                synth=encode_mp4(np.ascontiguousarray(frames[:, :, ::-1]), fps),
                masks=encode_masks(masks),
                boxes=boxes,
            )
        )
    return clips


def _relations(leaves: list[tuple[str, str, str]]) -> list[list[list[int]]]:
    """Per leaf, the target leaves of each difficulty (easy, medium, hard, expert)."""
    out = []
    for cat, sub, fam in leaves:
        out.append(
            [
                [i for i, (c, s, _) in enumerate(leaves) if c == cat and s == sub],
                [i for i, (c, s, _) in enumerate(leaves) if c == cat and s != sub],
                [i for i, (c, _, f) in enumerate(leaves) if c != cat and f == fam],
                [i for i, (c, _, f) in enumerate(leaves) if c != cat and f != fam],
            ]
        )
    return out


def make_samples(
    pairs: int,
    clips: Sequence[Clip],
    cutouts: Sequence[tuple[bytes, bytes, int, int, float]],
    *,
    seed: int,
    pairs_per_clip: int = 8,
) -> list[PairSample]:
    """``pairs`` valid samples: two shots per source product, targets drawn per difficulty.

    Each pair's difficulty is drawn from the build's default mix and a target leaf of the
    taxonomy picked to match it (expert when the taxonomy has no such neighbour); two
    target products per leaf, two images each; quality falls with difficulty.
    """
    rng = np.random.default_rng(seed)
    taxonomy = Taxonomy.default()
    mapping = taxonomy.to_mapping()["categories"]
    leaves = [(cat, sub, fam) for cat, subs in mapping.items() for sub, fam in subs.items()]
    relations = _relations(leaves)
    products: dict[tuple[int, int, int], ProductRecord] = {}

    def product(leaf: int, number: int, image: int) -> ProductRecord:
        if (leaf, number, image) not in products:
            cat, sub, _ = leaves[leaf]
            pid = f"T{leaf:03d}-{number}"
            photo, rgba, width, height, aspect = cutouts[(leaf + number + image) % len(cutouts)]
            products[leaf, number, image] = ProductRecord(
                image_id=image_id(pid, f"img{image}"),
                product_id=pid,
                image_path=f"images/{pid}_{image}.jpg",
                category=cat,
                subcategory=sub,
                width=width,
                height=height,
                aspect=aspect,
                image=photo,
                image_rgba=rgba,
                build_id="bench",
            )
        return products[leaf, number, image]

    samples: list[PairSample] = []
    for c in range(math.ceil(pairs / pairs_per_clip)):
        media = clips[c % len(clips)]
        source_leaf = int(rng.integers(len(leaves)))
        cat, sub, _ = leaves[source_leaf]
        source = f"S{c // 2:05d}"
        clip = ClipRecord(
            clip_id=clip_id(source, c % 2),
            source_id=source,
            shot_index=c % 2,
            source_path=f"videos/{source}.mp4",
            category=cat,
            subcategory=sub,
            start_frame=(c % 2) * media.frames,
            end_frame=(c % 2 + 1) * media.frames,
            frame_count=media.frames,
            width=media.width,
            height=media.height,
            fps=media.fps,
            duration_s=media.frames / media.fps,
            source_boxes=media.boxes,
            masks_codec=DEFAULT_MASK_CODEC,
            source_video=media.source,
            background_video=media.source,
            masks=media.masks,
            build_id="bench",
        )
        keys: set[str] = set()
        wanted = min(pairs_per_clip, pairs - len(samples))
        while len(keys) < wanted:
            level = int(rng.choice(4, p=DIFFICULTY_MIX))
            candidates = relations[source_leaf][level] or relations[source_leaf][3]
            target = product(
                int(rng.choice(candidates)), int(rng.integers(2)), int(rng.integers(2))
            )
            key = pair_id(clip.clip_id, target.product_id, target.image_id.split("__")[1])
            if key in keys:
                continue
            keys.add(key)
            diff = taxonomy.difficulty(cat, sub, target.category, target.subcategory)
            truth = rng.beta(*SCORE_BETA[diff.level])
            parts = [float(np.clip(truth + rng.normal(0, 0.05), 0, 1)) for _ in WEIGHTS]
            quality = sum(w * p for w, p in zip(WEIGHTS, parts, strict=True)) / sum(WEIGHTS)
            passed = quality >= THRESHOLD
            pair = PairRecord(
                pair_id=key,
                clip_id=clip.clip_id,
                source_id=source,
                shot_index=clip.shot_index,
                target_id=target.product_id,
                target_image=target.image_path,
                source_category=cat,
                source_subcategory=sub,
                target_category=target.category,
                target_subcategory=target.subcategory,
                difficulty=diff.value,
                difficulty_level=diff.level,
                score_identity=parts[0],
                score_temporal=parts[1],
                score_lighting=parts[2],
                quality_score=quality,
                passed=passed,
                reject_reason=None if passed else f"quality {quality:.2f} < {THRESHOLD:.2f}",
                frame_count=media.frames,
                width=media.width,
                height=media.height,
                fps=media.fps,
                duration_s=media.frames / media.fps,
                target_boxes=media.boxes,
                synth_video=media.synth,
                build_id="bench",
            )
            samples.append(PairSample(pair=pair, clip=clip, product=target))
    return samples


def load_cutouts(rembg: Path) -> list[tuple[bytes, bytes, int, int, float]]:
    """(photo bytes, cut-out PNG bytes, photo width, photo height, cut-out aspect)."""
    out = []
    for photo_name, png_name in CUTOUTS:
        photo, png = (rembg / photo_name).read_bytes(), (rembg / png_name).read_bytes()
        with Image.open(io.BytesIO(photo)) as img:
            width, height = img.size
        with Image.open(io.BytesIO(png)) as img:
            box = img.getchannel("A").getbbox() or (0, 0, *img.size)
        out.append((photo, png, width, height, (box[2] - box[0]) / (box[3] - box[1])))
    return out


def build(out: Path, samples: Sequence[PairSample], shard_samples: int) -> float:
    """Seconds to write ``samples`` as a Lance + tar dataset into ``out``."""
    start = time.perf_counter()
    with DatasetWriter(out, formats=("lance", "tar"), max_samples=shard_samples) as writer:
        for sample in samples:
            writer.write(sample)
    return time.perf_counter() - start


# -- measuring --------------------------------------------------------------------------


def _bytes_only(out: Path, fmt: str, **kwargs: Any) -> PairDataset:
    """The bytes-only dataset every part reads: ``synth_video`` and ``meta``, undecoded."""
    return PairDataset(out, format=fmt, fields=BYTES_FIELDS, decode=False, **kwargs)


def io_counters() -> dict[str, int]:
    """This process's I/O counters (all threads): ``rchar``, ``read_bytes``, ..."""
    with open("/proc/self/io", encoding="ascii") as fh:
        return {key: int(value) for key, value in (line.split(": ") for line in fh)}


def _io_delta(before: dict[str, int]) -> dict[str, int]:
    after = io_counters()
    return {key: after[key] - before[key] for key in ("rchar", "read_bytes", "syscr")}


def evict(*roots: Path) -> None:
    """Drop ``roots`` (files, or every file under a folder) from the page cache, so the
    next read hits the disk."""
    for root in roots:
        for path in [root] if root.is_file() else root.rglob("*"):
            if path.is_file():
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)  # dirty pages are not dropped
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)


def read_ahead_kb(path: Path) -> int | None:
    """The readahead window of the block device holding ``path`` (None when not found)."""
    dev = os.stat(path).st_dev
    block = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    for queue in (block / "queue", block / ".." / "queue"):  # a partition: its disk
        try:
            return int((queue / "read_ahead_kb").read_text())
        except (OSError, ValueError):
            continue
    return None


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def _epoch(ds: PairDataset) -> tuple[list[str], int]:
    """Pair ids and synth bytes of one whole epoch of a bytes-only dataset."""
    ids, total = [], 0
    for sample in ds:
        ids.append(sample["meta"]["pair_id"])
        total += len(sample["synth_video"])
    return ids, total


def _read_files(paths: Sequence[Path]) -> int:
    total = 0
    for path in paths:
        with open(path, "rb") as fh:
            total += len(fh.read())
    return total


def _read_one_file(path: Path, sizes: Sequence[int]) -> int:
    total = 0
    with open(path, "rb") as fh:
        for size in sizes:
            total += len(fh.read(size))
    return total


def write_one_file(path: Path, order: Sequence[str], synth: dict[str, bytes]) -> Path:
    """Every pair's ``synth_video`` bytes in ``order``, one after another: the sequential
    read parts 1 and 5 measure against."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        for key in order:
            fh.write(synth[key])
    return path


def measure_bytes_only(
    out: Path, root: Path, synth: dict[str, bytes], reps: int, seed: int
) -> dict[str, Any]:
    """Part 1: epochs of bytes-only samples/s, Lance and tar, against plain file reads."""
    datasets = {fmt: _bytes_only(out, fmt, passed=None, seed=seed) for fmt in ("lance", "tar")}
    orders = {fmt: _epoch(ds)[0] for fmt, ds in datasets.items()}  # also opens each in-process
    if orders["lance"] != orders["tar"]:
        raise AssertionError("Lance and tar yield different orders for the same plan")
    order = orders["lance"]
    files = root / "files"
    files.mkdir()
    paths = []
    for i, key in enumerate(order):
        paths.append(files / f"{i:06d}.mp4")
        paths[-1].write_bytes(synth[key])
    sizes = [len(synth[key]) for key in order]
    one = write_one_file(root / "one" / "all.bin", order, synth)
    payload = sum(sizes)
    readers: dict[str, Callable[[], int]] = {
        "lance": lambda: _epoch(datasets["lance"])[1],
        "tar": lambda: _epoch(datasets["tar"])[1],
        "files": lambda: _read_files(paths),
        "one_file": lambda: _read_one_file(one, sizes),
    }
    times: dict[str, dict[str, list[float]]] = {n: {"cold": [], "warm": []} for n in readers}
    disk: dict[str, list[int]] = {n: [] for n in readers}
    for _ in range(reps):
        for name, read in readers.items():
            evict(out, files, one.parent)
            before = io_counters()
            seconds, got = _timed(read)
            disk[name].append(_io_delta(before)["read_bytes"])
            times[name]["cold"].append(seconds)
            times[name]["warm"].append(_timed(read)[0])
            if got != payload:
                raise AssertionError(f"{name}: read {got} bytes, expected {payload}")
    rows = {}
    for name in readers:
        row: dict[str, Any] = {"disk_bytes_cold": statistics.median(disk[name])}
        for mode in ("cold", "warm"):
            median = statistics.median(times[name][mode])
            row[f"{mode}_s"] = median
            row[f"{mode}_s_all"] = times[name][mode]
            row[f"{mode}_samples_s"] = len(order) / median
            row[f"{mode}_mb_s"] = payload / median / MB
        rows[name] = row
    for fmt in ("lance", "tar"):
        for mode in ("cold", "warm"):
            for base in ("files", "one_file"):
                rows[fmt][f"{mode}_ratio_vs_{base}"] = (
                    rows[base][f"{mode}_s"] / rows[fmt][f"{mode}_s"]
                )
    return {"samples": len(order), "synth_bytes": payload, "rows": rows}


def measure_filter(out: Path, synth_selected: int, selected: int) -> dict[str, Any]:
    """Part 2: bytes read by one bytes-only epoch of ~30% of pairs, cold cache."""
    dataset = open_dataset(out)
    shard_bytes = sum(shard.bytes for shard in dataset.shards)
    rows: dict[str, Any] = {}
    for fmt in ("lance", "tar"):
        evict(out)
        before = io_counters()
        ds = _bytes_only(out, fmt, seed=0, **FILTER)
        ctx = ds._ctx()
        opened = _io_delta(before)
        before = io_counters()
        ids, got = _epoch(ds)
        read = _io_delta(before)
        if len(ids) != selected or got != synth_selected:
            raise AssertionError(
                f"{fmt}: {len(ids)} pairs / {got} bytes selected, expected {selected} / "
                f"{synth_selected}"
            )
        rows[fmt] = {
            "reader_bytes": ctx.reader.bytes_read,
            "reader_ratio": ctx.reader.bytes_read / synth_selected,
            "rchar": read["rchar"],
            "rchar_ratio": read["rchar"] / synth_selected,
            "read_bytes": read["read_bytes"],
            "read_bytes_ratio": read["read_bytes"] / synth_selected,
            "syscalls": read["syscr"],
            "open_rchar": opened["rchar"],
            "open_read_bytes": opened["read_bytes"],
        }
    return {
        "filter": dict(FILTER),
        "selected": selected,
        "selected_synth_bytes": synth_selected,
        "shard_bytes": shard_bytes,
        "shard_ratio": shard_bytes / synth_selected,
        "read_ahead_kb": read_ahead_kb(out),
        "rows": rows,
    }


def _decode_all(data: bytes, *, keep: bool = False) -> int:
    """Plain PyAV: every frame to rgb24; returns the frame count.

    ``keep`` writes the frames into one array sized from the container's frame count, the
    cheapest way to hold them all (a list and ``np.stack`` copies each frame twice).
    """
    count = 0
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        out = np.empty((stream.frames, stream.height, stream.width, 3), np.uint8) if keep else None
        for frame in container.decode(stream):
            image = frame.to_ndarray(format="rgb24")
            if out is not None:
                out[count] = image
            count += 1
    return count


def measure_decode(
    out: Path, synth: dict[str, bytes], counts: dict[str, int], seed: int
) -> dict[str, Any]:
    """Part 3: frames/s of the loader (Lance) against plain PyAV on the same clips.

    The baselines decode each sample's clip right after the loader yields it, so that a
    change in the machine's load weighs on both alike (the machine is shared).
    """
    rows = {}
    for name, num_frames in (("16", 16), ("all", None)):
        ds = PairDataset(
            out, fields=("synth_video", "meta"), num_frames=num_frames, passed=None, seed=seed
        )
        ds._ctx()
        it = iter(ds)
        baselines: dict[str, Callable[[bytes, np.ndarray], int]] = {
            "pyav_all": lambda data, _: _decode_all(data)
        }
        if num_frames is None:
            baselines["pyav_kept"] = lambda data, _: _decode_all(data, keep=True)
        else:
            baselines["pyav_window"] = plain_window
        seconds = {"loader": 0.0, **{b: 0.0 for b in baselines}}
        frames = {"loader": 0, **{b: 0 for b in baselines}}
        for _ in range(counts[name]):
            took, sample = _timed(lambda it=it: next(it))
            seconds["loader"] += took
            frames["loader"] += int(sample["synth_video"].shape[0])
            data, window = synth[sample["meta"]["pair_id"]], sample["frame_indices"].numpy()
            del sample
            for base, decode in baselines.items():
                took, count = _timed(lambda d=decode, data=data, w=window: d(data, w))
                seconds[base] += took
                frames[base] += count
        row: dict[str, Any] = {"samples": counts[name]}
        for what in seconds:
            row[f"{what}_s"] = seconds[what]
            row[f"{what}_frames"] = frames[what]
            row[f"{what}_fps"] = frames[what] / seconds[what]
            row[f"{what}_samples_s"] = counts[name] / seconds[what]
        for base in baselines:
            row[f"ratio_vs_{base}"] = row["loader_fps"] / row[f"{base}_fps"]
        rows[name] = row
    return rows


def measure_resume(out: Path, pairs: int, reps: int, seed: int) -> dict[str, Any]:
    """Part 4: time to the first sample, fresh start against a resume at 90%, and naive.

    Each timed call starts after a full garbage collection. Opening a selection can make
    enough Python objects (a tar selection keeps a dict per index entry) to set off a full
    collection; without the reset, alternating start and resume would charge
    every such pass to one of them.
    """
    kwargs = dict(
        fields=("synth_video", "meta"), num_frames=16, frame_start="first", passed=None, seed=seed
    )
    skip = int(0.9 * pairs)
    rows = {}
    for fmt in ("lance", "tar"):
        state = PairDataset(out, format=fmt, **kwargs).state_dict(samples_seen=skip)

        def start(fmt: str = fmt) -> str:
            return next(iter(PairDataset(out, format=fmt, **kwargs)))["meta"]["pair_id"]

        def resume(fmt: str = fmt, state: dict[str, Any] = state) -> str:
            ds = PairDataset(out, format=fmt, **kwargs)
            ds.load_state_dict(state)
            return next(iter(ds))["meta"]["pair_id"]

        def naive(fmt: str = fmt) -> str:
            it = iter(PairDataset(out, format=fmt, **kwargs))
            for _ in range(skip):
                next(it)
            return next(it)["meta"]["pair_id"]

        start(), resume()  # first opens in this process (Lance runtime, imports) not timed
        starts, resumes = [], []
        for _ in range(reps):
            for times, fn in ((starts, start), (resumes, resume)):
                gc.collect()  # the same heap for both: see measure_resume's docstring
                times.append(_timed(fn)[0])
        naive_s, naive_id = _timed(naive)
        if naive_id != resume():
            raise AssertionError(f"{fmt}: the resumed and the naive first sample differ")
        start_s, resume_s = statistics.median(starts), statistics.median(resumes)
        rows[fmt] = {
            "consumed": skip,
            "start_s": start_s,
            "start_s_all": starts,
            "resume_s": resume_s,
            "resume_s_all": resumes,
            "resume_ratio": resume_s / start_s,
            "naive_s": naive_s,
            "naive_ratio": naive_s / start_s,
        }
    return rows


Epoch = tuple[float, float, int, int]
"""(seconds for the epoch, seconds after its first sample, samples, synth bytes)."""


def _worker_epochs(ds: PairDataset, workers: int) -> tuple[Epoch, Epoch]:
    """Two epochs through one DataLoader (fork; workers kept between epochs): the first
    starts the workers and fills their buffer pools, the next finds both ready, as every
    epoch but the first of a training run does. One sample at a time when the dataset's
    ``batch_size`` is 1, else batches of it collated by :func:`collate_samples`."""
    batched = ds.batch_size > 1
    loader = DataLoader(
        ds,
        batch_size=ds.batch_size if batched else None,
        collate_fn=collate_samples if batched else None,
        num_workers=workers,
        persistent_workers=workers > 0,
        multiprocessing_context="fork" if workers else None,
    )

    def epoch() -> Epoch:
        start = time.perf_counter()
        first, count, payload = start, 0, 0
        for item in loader:
            if count == 0:
                first = time.perf_counter()
            for sample in item if batched else (item,):
                count += 1
                payload += len(sample["synth_video"])
        end = time.perf_counter()
        return end - start, end - first, count, payload

    first = epoch()
    return first, epoch()


def measure_workers(
    out: Path, one_file: Path, synth: dict[str, bytes], reps: int, seed: int
) -> dict[str, Any]:
    """Part 5: bytes-only epochs through a DataLoader with each of :data:`WORKERS`, Lance
    and tar, against reading the same bytes in the same order from ``one_file`` (part 1's),
    each repeat timing every run in turn (warm cache). "After the first sample" leaves out
    the workers' start; "next epoch" is a second epoch on the same workers."""
    datasets = {fmt: _bytes_only(out, fmt, passed=None, seed=seed) for fmt in ("lance", "tar")}
    order, _ = _epoch(datasets["lance"])
    datasets.update(
        {
            f"{fmt}_b{WORKER_BATCH}": _bytes_only(
                out, fmt, passed=None, seed=seed, batch_size=WORKER_BATCH
            )
            for fmt in ("lance", "tar")
        }
    )
    sizes = [len(synth[key]) for key in order]
    payload = sum(sizes)
    runs: dict[str, list[Epoch]] = {"one_file": []}
    nexts: dict[str, list[Epoch]] = {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="lance is not fork-safe")  # the plan is made
        warnings.filterwarnings("ignore", message="This DataLoader will create")  # 4 workers
        for _ in range(reps):
            seconds, got = _timed(lambda: _read_one_file(one_file, sizes))
            runs["one_file"].append((seconds, seconds, len(sizes), got))
            for fmt, ds in datasets.items():
                for workers in WORKERS:
                    first, following = _worker_epochs(ds, workers)
                    runs.setdefault(f"{fmt}_w{workers}", []).append(first)
                    nexts.setdefault(f"{fmt}_w{workers}", []).append(following)
    rows: dict[str, Any] = {}
    for name, got in runs.items():
        for epoch in (got, nexts.get(name, [])):
            if any(count != len(order) or nbytes != payload for _, _, count, nbytes in epoch):
                raise AssertionError(
                    f"{name}: {[(c, b) for *_, c, b in epoch]}, not {len(order)} / {payload}"
                )
        total = statistics.median(t for t, *_ in got)
        steady = statistics.median(t for _, t, *_ in got)
        following = statistics.median(t for t, *_ in nexts.get(name, got))
        rows[name] = {
            "total_s": total,
            "samples_s": len(order) / total,
            "steady_samples_s": (len(order) - 1) / steady,
            "next_epoch_samples_s": len(order) / following,
            "mb_s": payload / total / MB,
        }
    base = rows["one_file"]["samples_s"]
    for row in rows.values():
        row["ratio_vs_one_file"] = row["samples_s"] / base
        row["next_epoch_ratio_vs_one_file"] = row["next_epoch_samples_s"] / base
    return {"samples": len(order), "synth_bytes": payload, "cores": os.cpu_count(), "rows": rows}


def _print_workers(part: dict[str, Any], reps: int) -> None:
    over = [n for n in WORKERS if n > (part["cores"] or 0)]
    note = (
        f"; {', '.join(map(str, over))} workers oversubscribe the {part['cores']} cores"
        if over
        else ""
    )
    print(
        f"\n5. bytes-only (decode=False), synth_video + meta, {part['samples']} pairs, "
        f"DataLoader(fork; _b{WORKER_BATCH}: batches of {WORKER_BATCH}, collate_samples), "
        f"warm cache, median of {reps}{note}\n"
        "   x 1 file: samples/s / samples/s of the same bytes read in order from one file;\n"
        "   next epoch: a second epoch on the same (persistent) workers"
    )
    print(
        f"   {'run':<14}{'samples/s':>10}{'MB/s':>8}{'after 1st':>10}{'x 1 file':>9}"
        f"{'next epoch':>11}{'x 1 file':>9}"
    )
    for name, r in part["rows"].items():
        print(
            f"   {name:<14}{r['samples_s']:>10.0f}{r['mb_s']:>8.0f}"
            f"{r['steady_samples_s']:>10.0f}{r['ratio_vs_one_file']:>9.2f}"
            f"{r['next_epoch_samples_s']:>11.0f}{r['next_epoch_ratio_vs_one_file']:>9.2f}"
        )


# -- report -----------------------------------------------------------------------------


def _print_bytes_only(part: dict[str, Any]) -> None:
    rows = part["rows"]
    print(
        f"\n1. bytes-only, synth_video + meta, {part['samples']} pairs "
        f"({part['synth_bytes'] / MB:.0f} MB of synth_video), num_workers=0, median of runs\n"
        "   x files: samples/s / samples/s of the same bytes, same order, one plain file per "
        "pair\n   x 1 file: ... read in that order from one file (the disk's sequential rate)"
    )
    print(
        f"   {'reader':<10}{'cache':<6}{'samples/s':>10}{'MB/s':>8}{'x files':>9}{'x 1 file':>9}"
        f"{'disk MB':>9}"
    )
    for name in ("lance", "tar", "files", "one_file"):
        r = rows[name]
        for mode in ("cold", "warm"):
            ratios = (
                f"{r[f'{mode}_ratio_vs_files']:>9.2f}{r[f'{mode}_ratio_vs_one_file']:>9.2f}"
                if name in ("lance", "tar")
                else f"{'':>18}"
            )
            disk = f"{r['disk_bytes_cold'] / MB:>9.0f}" if mode == "cold" else ""
            print(
                f"   {name:<10}{mode:<6}{r[f'{mode}_samples_s']:>10.0f}{r[f'{mode}_mb_s']:>8.0f}"
                f"{ratios}{disk}"
            )


def _print_filter(part: dict[str, Any]) -> None:
    n = part["selected"]
    print(
        f"\n2. filter difficulty=hard (passed=None): {n} pairs, "
        f"{part['selected_synth_bytes'] / MB:.1f} MB of their synth_video; one epoch, cold cache"
        "\n   ratios are bytes / the selected synth_video bytes"
    )
    print(
        f"   {'format':<7}{'reader':>8}{'rchar':>8}{'disk':>8}{'read calls':>11}"
        f"{'open: rchar MB':>16}{'disk MB':>9}"
    )
    for fmt, r in part["rows"].items():
        print(
            f"   {fmt:<7}{r['reader_ratio']:>8.3f}{r['rchar_ratio']:>8.3f}"
            f"{r['read_bytes_ratio']:>8.3f}{r['syscalls']:>11}{r['open_rchar'] / MB:>16.2f}"
            f"{r['open_read_bytes'] / MB:>9.2f}"
        )
    print(
        f"   (a sequential pass over every shard would read {part['shard_bytes'] / MB:.0f} MB, "
        f"{part['shard_ratio']:.2f}x); disk counts the kernel's readahead: "
        f"read_ahead_kb={part['read_ahead_kb']} on this device"
    )


def _print_decode(part: dict[str, Any]) -> None:
    print(
        "\n3. decode, Lance, fields synth_video (+meta), num_workers=0, frames/s delivered\n"
        "   x PyAV: / frames/s of plain PyAV decoding every frame of the same clip to rgb24 "
        "(bytes in memory, thread_type AUTO, frames dropped)\n"
        "   x kept: ... with the frames kept in one array, as a loader must return them\n"
        "   x win:  ... seeking to the keyframe at or before the same 16-frame window and "
        "decoding exactly its frames"
    )
    print(
        f"   {'num_frames':<11}{'samples':>8}{'frames/s':>10}{'samples/s':>10}{'PyAV f/s':>10}"
        f"{'x PyAV':>8}{'x kept':>8}{'x win':>8}"
    )
    for name, r in part.items():
        kept = f"{r['ratio_vs_pyav_kept']:>8.2f}" if "ratio_vs_pyav_kept" in r else f"{'':>8}"
        win = f"{r['ratio_vs_pyav_window']:>8.2f}" if "ratio_vs_pyav_window" in r else f"{'':>8}"
        print(
            f"   {name:<11}{r['samples']:>8}{r['loader_fps']:>10.0f}{r['loader_samples_s']:>10.1f}"
            f"{r['pyav_all_fps']:>10.0f}{r['ratio_vs_pyav_all']:>8.2f}{kept}{win}"
        )


def _memory() -> tuple[int, int]:
    """(resident bytes now, peak resident bytes) of this process (Linux)."""
    found = {}
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0]) * 1024
    return found["VmRSS"], found["VmHWM"]


def old_plan_first_sample(out: Path, filter_kwargs: dict[str, Any], seed: int) -> tuple[int, int]:
    """The plan as it was before it was made compact, to its first sample's ``meta``.

    Every scalar column of the selected rows read as Arrow and sorted by ``pair_id``,
    the ids as a Python list, levels and scores as lists turned into arrays, then the
    epoch order and one row's dict. Returns (selected rows, bytes of the arrays, the
    table and the id strings).
    """
    flt = PairFilter.make(**filter_kwargs)
    table = lance_table(
        open_dataset(out).pairs, columns=list(META_COLUMNS), filter=flt.to_sql(), with_row_id=True
    ).sort_by("pair_id")
    pair_ids = table.column("pair_id").to_pylist()
    levels = np.array([DIFFICULTIES.index(d) for d in table.column("difficulty").to_pylist()])
    qualities = np.array(table.column("quality_score").to_pylist(), dtype=np.float32)
    row_ids = table.column("_rowid").to_numpy()
    meta = table.drop_columns(["_rowid"])
    order = epoch_order(len(pair_ids), seed=seed, epoch=0, shuffle=True)
    _plain_meta(meta.slice(int(order[0]), 1).to_pylist()[0])
    arrays = levels.astype(np.int8).nbytes + qualities.nbytes + row_ids.nbytes + order.nbytes
    ids = sys.getsizeof(pair_ids) + sum(sys.getsizeof(i) for i in pair_ids)
    return len(pair_ids), arrays + meta.nbytes + ids


def _plan_child(out: Path, impl: str, name: str, seed: int) -> dict[str, Any]:
    """One part 6 figure, measured in this (fresh) process."""
    import lance  # noqa: F401 - imported before the baseline, as PairDataset imports it

    gc.collect()
    base, _ = _memory()
    kwargs = PLAN_FILTERS[name]
    start = time.perf_counter()
    if impl == "old":
        rows, arrays = old_plan_first_sample(out, kwargs, seed)
    else:
        ds = PairDataset(out, fields=("meta",), seed=seed, **kwargs)
        next(iter(ds))
        sel = ds._ctx().selection
        rows, arrays = len(sel), sel.plan_bytes + 8 * len(sel)  # + the epoch's int64 positions
    first_s = time.perf_counter() - start
    rss, peak = _memory()
    figure = {
        "rows": rows,
        "first_s": first_s,
        "rss_bytes": rss - base,
        "peak_bytes": peak - base,
        "array_bytes": arrays,
    }
    if impl == "new":  # a resume at 90% of the epoch, in the same process, warm
        state = ds.state_dict(samples_seen=int(0.9 * rows))
        start = time.perf_counter()
        resumed = PairDataset(out, fields=("meta",), seed=seed, **kwargs)
        resumed.load_state_dict(state)
        next(iter(resumed))
        figure["resume_s"] = time.perf_counter() - start
        start = time.perf_counter()
        next(iter(PairDataset(out, fields=("meta",), seed=seed, **kwargs)))
        figure["warm_start_s"] = time.perf_counter() - start
    return figure


def measure_plan(root: Path, rows: int, seed: int) -> dict[str, Any]:
    """Part 6: the plan of a ``rows``-row ``pairs`` table, compact against the old, each
    figure in a fresh process (its memory is the process's own)."""
    out = root / "plan"
    written = write_query_dataset(out, pairs_table(rows, seed=seed), None)
    figures: dict[str, Any] = {"table_rows": rows, "fragments": written["fragments"]}
    for name in PLAN_FILTERS:
        for impl in ("old", "new"):
            command = [sys.executable, "-m", "pvtt.tools.bench.loader", "--plan-child",
                       str(out), impl, name, "--seed", str(seed)]  # fmt: skip
            done = subprocess.run(command, check=True, capture_output=True, text=True)
            figures[f"{name}/{impl}"] = json.loads(done.stdout.strip().splitlines()[-1])
        old, new = figures[f"{name}/old"], figures[f"{name}/new"]
        if old["rows"] != new["rows"]:
            raise AssertionError(
                f"{name}: the old plan selects {old['rows']}, the new {new['rows']}"
            )
        figures[f"{name}/ratios"] = {
            "first_s": new["first_s"] / old["first_s"],
            "rss_bytes": new["rss_bytes"] / max(old["rss_bytes"], 1),
            "peak_bytes": new["peak_bytes"] / max(old["peak_bytes"], 1),
            "resume_vs_start": new["resume_s"] / new["warm_start_s"],
        }
    for impl in ("old", "new"):  # the memory one more selected row costs, fixed costs aside
        big, small = (figures[f"{name}/{impl}"] for name in PLAN_FILTERS)
        extra = max(big["rows"] - small["rows"], 1)
        figures[f"marginal/{impl}"] = (big["rss_bytes"] - small["rss_bytes"]) / extra
    return figures


def _print_plan(part: dict[str, Any]) -> None:
    print(
        f"\n6. the plan of a {part['table_rows']:,}-row pairs table ({part['fragments']} "
        'fragments), PairDataset(fields=("meta",)), fresh process each; bytes per selected row'
    )
    print(
        f"   {'selection':<12}{'plan':<5}{'rows':>10}{'first s':>9}{'RSS B/row':>11}"
        f"{'peak B/row':>12}{'arrays B/row':>14}"
    )
    for name in PLAN_FILTERS:
        for impl in ("old", "new"):
            f = part[f"{name}/{impl}"]
            n = max(f["rows"], 1)
            print(
                f"   {name:<12}{impl:<5}{f['rows']:>10,}{f['first_s']:>9.2f}"
                f"{f['rss_bytes'] / n:>11.0f}{f['peak_bytes'] / n:>12.0f}"
                f"{f['array_bytes'] / n:>14.1f}"
            )
        r, new = part[f"{name}/ratios"], part[f"{name}/new"]
        print(
            f"   {name:<12}new/old: first sample x{r['first_s']:.2f}, RSS x{r['rss_bytes']:.2f}, "
            f"peak x{r['peak_bytes']:.2f}; resume@90% {new['resume_s']:.2f} s, "
            f"x{r['resume_vs_start']:.2f} of a warm start ({new['warm_start_s']:.2f} s)"
        )
    old, new = part["marginal/old"], part["marginal/new"]
    print(
        f"   RSS per extra selected row (unfiltered less hard>=0.9, which leaves the Lance "
        f"runtime's fixed cost out): old {old:.0f} B, new {new:.0f} B, x{new / old:.3f}; "
        "arrays: what the plan keeps per row"
    )


def _print_resume(part: dict[str, Any], reps: int) -> None:
    print(
        "\n4. time to the first sample (synth_video 16 frames from frame 0 + meta), warm cache, "
        f"median of {reps}"
    )
    print(
        f"   {'format':<7}{'start ms':>9}{'resume@90% ms':>15}{'ratio':>7}{'naive s':>9}"
        f"{'ratio':>8}"
    )
    for fmt, r in part.items():
        print(
            f"   {fmt:<7}{r['start_s'] * 1e3:>9.1f}{r['resume_s'] * 1e3:>15.1f}"
            f"{r['resume_ratio']:>7.2f}{r['naive_s']:>9.2f}{r['naive_ratio']:>8.1f}"
        )
    print("   naive: a fresh dataset iterated, 90% of the epoch decoded and discarded")


def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    results: dict[str, Any] = {
        "quick": args.quick,
        "argv": sys.argv[1:],
        "load_avg_start": os.getloadavg(),
    }
    video = args.data / "sam2" / "04_coffee.mp4"
    seconds, clips = _timed(lambda: make_clips(video, SEGMENTS[: args.clips]))
    samples = make_samples(args.pairs, clips, load_cutouts(args.data / "rembg"), seed=args.seed)
    out = root / "dataset"
    build_s = build(out, samples, args.shard_samples)
    synth = {s.pair.pair_id: s.pair.synth_video for s in samples}
    hard = [s.pair for s in samples if s.pair.difficulty == FILTER["difficulty"]]
    mix = {d: sum(s.pair.difficulty == d for s in samples) for d in DIFFICULTIES}
    disk = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    results["dataset"] = {
        "pairs": len(samples),
        "clips": [{"frames": c.frames, "synth_bytes": len(c.synth)} for c in clips],
        "difficulty": mix,
        "passed": sum(s.pair.passed for s in samples),
        "disk_bytes": disk,
        "shards": len(open_dataset(out).shards),
        "encode_s": seconds,
        "build_s": build_s,
    }
    d = results["dataset"]
    print(
        f"dataset: {d['pairs']} pairs over {len(clips)} clips of "
        f"{', '.join(str(c.frames) for c in clips)} frames 1280x720 H.264 "
        f"(synth {min(len(c.synth) for c in clips) / MB:.2f}-"
        f"{max(len(c.synth) for c in clips) / MB:.2f} MB); difficulty "
        + ", ".join(f"{k} {v}" for k, v in mix.items())
        + f"; {d['passed']} passed; {disk / MB:.0f} MB on disk, {d['shards']} tar shards; "
        f"encoded in {seconds:.0f} s, written in {build_s:.1f} s"
    )
    del samples

    parts = set(args.parts)
    one_file = root / "one" / "all.bin"
    if 1 in parts:
        results["bytes_only"] = measure_bytes_only(out, root, synth, args.reps, args.seed)
        _print_bytes_only(results["bytes_only"])
    else:
        order, _ = _epoch(_bytes_only(out, "lance", passed=None, seed=args.seed))
        write_one_file(one_file, order, synth)

    if 2 in parts:
        selected_bytes = sum(len(p.synth_video or b"") for p in hard)
        results["filter"] = measure_filter(out, selected_bytes, len(hard))
        _print_filter(results["filter"])

    if 3 in parts:
        counts = {"16": args.decode_16, "all": args.decode_all}
        results["decode"] = measure_decode(out, synth, counts, args.seed)
        _print_decode(results["decode"])

    if 4 in parts:
        results["resume"] = measure_resume(out, len(synth), args.reps, args.seed)
        _print_resume(results["resume"], args.reps)

    if 5 in parts:
        results["workers"] = measure_workers(out, one_file, synth, min(args.reps, 3), args.seed)
        _print_workers(results["workers"], min(args.reps, 3))

    if 6 in parts:
        results["plan"] = measure_plan(root, args.plan_rows, args.seed)
        _print_plan(results["plan"])
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer pairs, clips and repeats")
    parser.add_argument("--pairs", type=int, help="pairs in the dataset (default 400, quick 120)")
    parser.add_argument("--clips", type=int, help="distinct clips (default 4, quick 2)")
    parser.add_argument("--reps", type=int, help="repeats, median kept (default 7, quick 3)")
    parser.add_argument("--decode-16", type=int, help="samples decoded at 16 frames (64, 24)")
    parser.add_argument("--decode-all", type=int, help="samples decoded whole (32, 12)")
    parser.add_argument("--shard-samples", type=int, default=128, help="tar samples per shard")
    parser.add_argument(
        "--data",
        type=Path,
        default=SHARED_DATA,
        help="the test media (default: tests/data of the checkout)",
    )
    parser.add_argument("--dir", type=Path, help="where to write temporary data (a tempdir)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every figure here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--plan-rows", type=int, help="rows of part 6's table (2,000,000; quick 200,000)"
    )
    parser.add_argument("--plan-only", action="store_true", help="run part 6 only")
    parser.add_argument(
        "--parts",
        type=int,
        nargs="+",
        default=[1, 2, 3, 4, 5, 6],
        choices=range(1, 7),
        metavar="N",
        help="run only these parts (1-6; default all)",
    )
    parser.add_argument(
        "--plan-child", nargs=3, metavar=("OUT", "IMPL", "NAME"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.plan_child is not None:  # one part 6 figure, in the fresh process it needs
        out, impl, name = args.plan_child
        print(json.dumps(_plan_child(Path(out), impl, name, args.seed)))
        return
    quick = args.quick
    args.pairs = args.pairs or (120 if quick else 400)
    args.clips = args.clips or (2 if quick else len(SEGMENTS))
    args.reps = args.reps or (3 if quick else 7)
    args.decode_16 = args.decode_16 or (24 if quick else 64)
    args.decode_all = args.decode_all or (12 if quick else 32)
    args.plan_rows = args.plan_rows or (200_000 if quick else 2_000_000)
    video = args.data / "sam2" / "04_coffee.mp4"
    if not video.is_file():
        parser.error(
            f"{video}: missing; pass --data with the test media folder (tests/data of a checkout)"
        )
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pvtt-bench-", dir=args.dir) as tmp:
        if args.plan_only:
            results = {"argv": sys.argv[1:], "load_avg_start": os.getloadavg()}
            results["plan"] = measure_plan(Path(tmp), args.plan_rows, args.seed)
            _print_plan(results["plan"])
        else:
            results = run(args, Path(tmp))
    results["total_s"] = time.perf_counter() - start
    results["load_avg_end"] = os.getloadavg()
    print(
        f"\ntotal {results['total_s']:.0f} s; load average (1 min) "
        f"{results['load_avg_start'][0]:.1f} at the start, {results['load_avg_end'][0]:.1f} at "
        f"the end on {os.cpu_count()} cores (other jobs share this machine)"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
