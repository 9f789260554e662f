"""Benchmark the sinks' write speed and ``pvtt query`` latency on a million pairs.

Run ``python -m pvtt.tools.bench.store [--quick] [--json FILE]``. Two parts, each
measured against a baseline taken in the same run, on the same disk:

- **write**: ``DatasetWriter`` with ``tar``, ``lance`` and both, fed synthetic pairs of
  realistic sizes (random bytes stand in for mp4/png: sinks never decode). Each
  format's rate is divided by the rate of writing the same media bytes as plain files
  (``open().write()``, then one fsync per file at the end) and as one appended file
  (the disk's sequential rate), so the figure says what a sink costs over the disk
  itself rather than how fast this disk is. pylance does not fsync what it writes, so
  a second figure adds an fsync of every file the writer left.
- **query**: a ``pairs`` table of a million rows (metadata only, media null) with
  realistic difficulty, category and score distributions, wrapped as a dataset with a
  manifest, in several layouts (:data:`LAYOUTS`): finished by the Lance sink's own code
  (:func:`optimise_table`: rows sorted, compacted, indexed), as written before rows
  were sorted, and the sorted layout with other index choices. Each filter is read by
  every route of :data:`ROUTES` on the same table, interleaved: :func:`select_pairs`
  (what ``pvtt query`` does), Lance with its scalar indexes, Lance's filtered scan
  (``use_scalar_index=False``: the old baseline) and a full scan (every row read, then
  filtered); ratios are ``select`` over the scans. A sweep of scattered selections
  (:func:`measure_crossover`) gives where the index stops paying, and the run ends with
  the sorted layout against the old one; ``pvtt query`` is timed end to end on the
  sorted layout. ``--query-only`` skips the write part. The full run also measures the
  old layout in 512-row fragments.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lance
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pvtt.builder.sinks.base import PairSample
from pvtt.builder.sinks.lance import SCALAR_INDEXES, optimise_table
from pvtt.builder.writer import DatasetWriter
from pvtt.loaders.query import DIFFICULTIES, PairFilter, select_pairs
from pvtt.loaders.query_route import SCAN_OPTIONS, SCATTERED_INDEX_FRACTION, read_options
from pvtt.loaders.store import open_dataset
from pvtt.loaders.where_tree import sql_literal
from pvtt.schemas.keys import clip_id, image_id, pair_id
from pvtt.schemas.manifest import Manifest, TableInfo, fsync_dir, write_manifest
from pvtt.schemas.masks import DEFAULT_MASK_CODEC
from pvtt.schemas.records import ClipRecord, PairRecord, ProductRecord
from pvtt.schemas.tables import PAIRS_SCHEMA, TABLE_SCHEMAS
from pvtt.schemas.taxonomy import Taxonomy
from pvtt.tools.commands.query import DEFAULT_COLUMNS

MB = 1e6
THRESHOLD = 0.7
DIFFICULTY_MIX = (0.1, 0.3, 0.3, 0.3)
"""easy, medium, hard, expert: the default ``pairs.difficulty_mix`` of a build."""
SCORE_BETA = ((8.0, 2.0), (7.0, 2.5), (6.0, 3.0), (5.0, 3.5))
"""Per-difficulty Beta(a, b) of a pair's true quality: harder swaps score lower."""
WEIGHTS = (0.3, 0.2, 0.2)
"""identity, temporal, lighting weights of the quality gate (no VLM score: overall null)."""
COLUMNS = DEFAULT_COLUMNS.split(",")
WRITE_FORMATS: tuple[tuple[str, ...], ...] = (("tar",), ("lance",), ("lance", "tar"))


@dataclass(frozen=True)
class Sizes:
    """Media sizes in bytes, drawn uniformly from each range."""

    synth: tuple[int, int] = (1_000_000, 3_000_000)
    source: tuple[int, int] = (1_000_000, 3_000_000)
    background: tuple[int, int] = (1_000_000, 3_000_000)
    masks: tuple[int, int] = (50_000, 200_000)
    image: tuple[int, int] = (150_000, 500_000)
    rgba: tuple[int, int] = (100_000, 400_000)


# -- write part -------------------------------------------------------------------------


def _leaves(taxonomy: Taxonomy) -> list[tuple[str, str, str]]:
    """Every (category, subcategory, form family) of the taxonomy, in file order."""
    mapping = taxonomy.to_mapping()["categories"]
    return [(cat, sub, fam) for cat, subs in mapping.items() for sub, fam in subs.items()]


def synthetic_samples(
    pairs: int, *, pairs_per_clip: int = 4, seed: int = 0, sizes: Sizes = Sizes()
) -> list[PairSample]:
    """``pairs`` valid samples over two shots per source product, random media bytes.

    Each clip's and product image's bytes are shared by all its pairs, as in a build.
    """
    rng = np.random.default_rng(seed)
    taxonomy = Taxonomy.default()
    leaves = _leaves(taxonomy)

    def blob(kind: str) -> bytes:
        low, high = getattr(sizes, kind)
        return rng.bytes(int(rng.integers(low, high + 1)))

    n_clips = -(-pairs // pairs_per_clip)
    n_products = max(-(-n_clips // 2), pairs_per_clip + 1)
    products: list[list[ProductRecord]] = []
    for p in range(n_products):
        cat, sub, _ = leaves[int(rng.integers(len(leaves)))]
        pid = f"P{p:05d}"
        products.append(
            [
                ProductRecord(
                    image_id=image_id(pid, f"img{k}"),
                    product_id=pid,
                    image_path=f"images/{pid}_{k}.jpg",
                    category=cat,
                    subcategory=sub,
                    width=1200,
                    height=1200,
                    aspect=0.8,
                    image=blob("image"),
                    image_rgba=blob("rgba"),
                    build_id="bench",
                )
                for k in range(2)
            ]
        )
    frames, fps = 150, 30.0
    boxes = [(400.0, 200.0, 800.0, 600.0)] * frames
    samples: list[PairSample] = []
    for c in range(n_clips):
        source = products[c // 2][0]
        clip = ClipRecord(
            clip_id=clip_id(source.product_id, c % 2),
            source_id=source.product_id,
            shot_index=c % 2,
            source_path=f"videos/{source.product_id}.mp4",
            category=source.category,
            subcategory=source.subcategory,
            start_frame=(c % 2) * frames,
            end_frame=(c % 2 + 1) * frames,
            frame_count=frames,
            width=1280,
            height=720,
            fps=fps,
            duration_s=frames / fps,
            source_boxes=boxes,
            masks_codec=DEFAULT_MASK_CODEC,
            source_video=blob("source"),
            background_video=blob("background"),
            masks=blob("masks"),
            build_id="bench",
        )
        others = [p for p in range(n_products) if p != c // 2]
        for t in rng.choice(others, size=min(pairs_per_clip, pairs - len(samples)), replace=False):
            target = products[int(t)][int(rng.integers(2))]
            diff = taxonomy.difficulty(
                clip.category, clip.subcategory, target.category, target.subcategory
            )
            score = float(rng.beta(*SCORE_BETA[diff.level]))
            passed = score >= THRESHOLD
            pair = PairRecord(
                pair_id=pair_id(clip.clip_id, target.product_id, target.image_id.split("__")[1]),
                clip_id=clip.clip_id,
                source_id=clip.source_id,
                shot_index=clip.shot_index,
                target_id=target.product_id,
                target_image=target.image_path,
                source_category=clip.category,
                source_subcategory=clip.subcategory,
                target_category=target.category,
                target_subcategory=target.subcategory,
                difficulty=diff.value,
                difficulty_level=diff.level,
                score_identity=score,
                score_temporal=score,
                score_lighting=score,
                quality_score=score,
                passed=passed,
                reject_reason=None if passed else f"quality {score:.2f} < {THRESHOLD:.2f}",
                frame_count=frames,
                width=1280,
                height=720,
                fps=fps,
                duration_s=frames / fps,
                target_boxes=boxes,
                synth_video=blob("synth"),
                build_id="bench",
            )
            samples.append(PairSample(pair=pair, clip=clip, product=target))
    return samples


def media_payload(samples: Sequence[PairSample], fmt: str) -> list[bytes]:
    """The media blobs a sink stores: per pair for tar, each clip and image once for Lance."""
    if fmt == "tar":  # TarSink's default members (no background, no masks)
        return [
            b
            for s in samples
            for b in (s.pair.synth_video, s.clip.source_video, s.product.image_rgba)
            if b
        ]
    clips = {s.clip.clip_id: s.clip for s in samples}
    products = {s.product.image_id: s.product for s in samples}
    blobs = [s.pair.synth_video for s in samples]
    blobs += [b for c in clips.values() for b in (c.source_video, c.background_video, c.masks)]
    blobs += [b for p in products.values() for b in (p.image, p.image_rgba)]
    return [b for b in blobs if b]


def _fsync_paths(paths: Sequence[Path]) -> None:
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_plain_files(folder: Path, blobs: Sequence[bytes]) -> float:
    """Seconds to write each blob to its own file and fsync them all at the end."""
    folder.mkdir(parents=True)
    start = time.perf_counter()
    paths = []
    for i, data in enumerate(blobs):
        path = folder / f"{i:06d}.bin"
        with open(path, "wb") as fh:
            fh.write(data)
        paths.append(path)
    _fsync_paths(paths)
    fsync_dir(folder)
    return time.perf_counter() - start


def write_one_file(folder: Path, blobs: Sequence[bytes]) -> float:
    """Seconds to append every blob to one file and fsync it: the disk's sequential rate."""
    folder.mkdir(parents=True)
    start = time.perf_counter()
    with open(folder / "all.bin", "wb") as fh:
        for data in blobs:
            fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    fsync_dir(folder)
    return time.perf_counter() - start


def write_with_sinks(
    out: Path, samples: Sequence[PairSample], formats: Sequence[str]
) -> tuple[float, float]:
    """Seconds for a whole ``DatasetWriter`` run (open, write, commit, indexes, manifest),
    and the same plus an fsync of every file it left.

    The second figure is the durable rate: pylance 14.0.2 does not fsync the files it
    writes on a local disk, so its own figure counts data still in the page cache.
    """
    start = time.perf_counter()
    with DatasetWriter(out, formats=formats) as writer:
        for sample in samples:
            writer.write(sample)
    written = time.perf_counter()
    _fsync_paths([p for p in out.rglob("*") if p.is_file()])
    return written - start, time.perf_counter() - start


def _disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


BASELINES: dict[str, Callable[[Path, Sequence[bytes]], float]] = {
    "files": write_plain_files,
    "one_file": write_one_file,
}


def measure_writes(root: Path, samples: Sequence[PairSample], reps: int) -> list[dict[str, Any]]:
    """Median write rates of each format and of its baselines, interleaved repeat by repeat."""
    payloads = {"tar": media_payload(samples, "tar"), "lance": media_payload(samples, "lance")}
    kinds = ("sink", "sink_fsynced", *BASELINES)
    times = {"+".join(f): {k: [] for k in kinds} for f in WRITE_FORMATS}
    disk: dict[str, int] = {}
    for rep in range(reps):
        for formats in WRITE_FORMATS:
            name = "+".join(formats)
            blobs = [b for f in formats for b in payloads[f]]
            for baseline, write in BASELINES.items():
                folder = root / f"{baseline}-{name}-{rep}"
                times[name][baseline].append(write(folder, blobs))
                shutil.rmtree(folder)
            out = root / f"out-{name}-{rep}"
            sink_s, fsynced_s = write_with_sinks(out, samples, formats)
            times[name]["sink"].append(sink_s)
            times[name]["sink_fsynced"].append(fsynced_s)
            disk[name] = _disk_bytes(out)
            shutil.rmtree(out)
    rows = []
    for formats in WRITE_FORMATS:
        name = "+".join(formats)
        payload = sum(len(b) for f in formats for b in payloads[f])
        row: dict[str, Any] = {
            "formats": name,
            "pairs": len(samples),
            "media_bytes": payload,
            "disk_bytes": disk[name],
        }
        for kind in kinds:
            median = statistics.median(times[name][kind])
            row[f"{kind}_s"] = median
            row[f"{kind}_mb_s"] = payload / median / MB
            row[f"{kind}_s_all"] = times[name][kind]
        for baseline in BASELINES:
            row[f"ratio_vs_{baseline}"] = row[f"{baseline}_s"] / row["sink_s"]
            row[f"fsynced_ratio_vs_{baseline}"] = row[f"{baseline}_s"] / row["sink_fsynced_s"]
        rows.append(row)
    return rows


# -- query part -------------------------------------------------------------------------


def pairs_table(rows: int, *, seed: int = 0, per_clip: int = 50) -> pa.Table:
    """A ``pairs`` table of ``rows`` metadata rows; media and boxes are null.

    Categories are Zipf-popular in taxonomy order, two shots per source product,
    ``per_clip`` targets per clip, difficulty drawn from the build's default mix
    and a target picked to match it, scores lower for harder swaps.
    """
    rng = np.random.default_rng(seed)
    leaves = _leaves(Taxonomy.default())
    cats = list(dict.fromkeys(cat for cat, _, _ in leaves))
    cat_weight = 1.0 / np.arange(1, len(cats) + 1)
    per_cat = {c: sum(1 for cat, _, _ in leaves if cat == c) for c in cats}
    leaf_p = np.array([cat_weight[cats.index(cat)] / per_cat[cat] for cat, _, _ in leaves])
    leaf_p /= leaf_p.sum()

    n_clips = -(-rows // per_clip)
    n_products = max(-(-n_clips // 2), 4 * len(leaves))
    product_leaf = np.concatenate(  # every leaf has at least two products
        [
            np.repeat(np.arange(len(leaves)), 2),
            rng.choice(len(leaves), n_products - 2 * len(leaves), p=leaf_p),
        ]
    )
    rng.shuffle(product_leaf)
    by_leaf = [np.flatnonzero(product_leaf == i) for i in range(len(leaves))]

    clip = np.arange(rows) // per_clip
    src = clip // 2 % n_products
    src_leaf = product_leaf[src]
    level = rng.choice(4, size=rows, p=DIFFICULTY_MIX)
    tgt_leaf = np.empty(rows, dtype=np.int64)
    for s, (s_cat, s_sub, s_fam) in enumerate(leaves):
        same = [i for i, (c, b, _) in enumerate(leaves) if c == s_cat and b == s_sub]
        medium = [i for i, (c, b, _) in enumerate(leaves) if c == s_cat and b != s_sub]
        hard = [i for i, (c, _, f) in enumerate(leaves) if c != s_cat and f == s_fam]
        expert = [i for i, (c, _, f) in enumerate(leaves) if c != s_cat and f != s_fam]
        mine = src_leaf == s
        for lvl, candidates in enumerate((same, medium, hard, expert)):
            sel = mine & (level == lvl)
            if not candidates:  # no such neighbour in the taxonomy: the pair is expert
                level[sel] = 3
                sel, candidates = mine & (level == 3), expert
            tgt_leaf[sel] = rng.choice(candidates, size=int(sel.sum()))
    tgt = np.empty(rows, dtype=np.int64)
    for leaf, pool in enumerate(by_leaf):
        sel = np.flatnonzero(tgt_leaf == leaf)
        pick = rng.integers(len(pool), size=len(sel))
        clash = pool[pick] == src[sel]  # never pair a product with itself
        pick[clash] = (pick[clash] + 1) % len(pool)
        tgt[sel] = pool[pick]

    a, b = np.array(SCORE_BETA).T
    truth = rng.beta(a[level], b[level])
    parts = [np.clip(truth + rng.normal(0, 0.05, rows), 0, 1).astype(np.float32) for _ in WEIGHTS]
    quality = (sum(w * p for w, p in zip(WEIGHTS, parts, strict=True)) / sum(WEIGHTS)).astype(
        np.float32
    )
    passed = quality >= THRESHOLD

    product_ids = pa.array([f"P{p:07d}" for p in range(n_products)])
    clip_ids = pa.array([f"P{c // 2 % n_products:07d}_s{c % 2:03d}" for c in range(n_clips)])
    tokens = pa.array([f"img{j}" for j in range(per_clip)])
    leaf_cat = pa.array([c for c, _, _ in leaves])
    leaf_sub = pa.array([s for _, s, _ in leaves])
    clip_col = clip_ids.take(pa.array(clip))
    target_col = product_ids.take(pa.array(tgt))
    token_col = tokens.take(pa.array(np.arange(rows) % per_clip))
    reasons = np.array(
        [f"quality {q:.2f} < {THRESHOLD:.2f}" for q in np.round(quality, 2)[~passed]]
    )
    reject = np.full(rows, None, dtype=object)
    reject[~passed] = reasons
    frame_count = rng.integers(50, 301, size=n_clips)[clip].astype(np.int32)
    fps = rng.choice(np.array([24.0, 25.0, 30.0], dtype=np.float32), size=n_clips)[clip]
    created = np.full(rows, np.datetime64(datetime.now(timezone.utc).replace(tzinfo=None), "us"))
    columns = {
        "pair_id": pc.binary_join_element_wise(clip_col, target_col, token_col, "__"),
        "clip_id": clip_col,
        "source_id": product_ids.take(pa.array(src)),
        "shot_index": pa.array(clip % 2, type=pa.int32()),
        "target_id": target_col,
        "target_image": pc.binary_join_element_wise(
            "images/", target_col, "_", token_col, ".jpg", ""
        ),
        "source_category": leaf_cat.take(pa.array(src_leaf)),
        "source_subcategory": leaf_sub.take(pa.array(src_leaf)),
        "target_category": leaf_cat.take(pa.array(tgt_leaf)),
        "target_subcategory": leaf_sub.take(pa.array(tgt_leaf)),
        "difficulty": pa.array(np.array(DIFFICULTIES)[level]),
        "difficulty_level": pa.array(level, type=pa.int8()),
        "score_identity": pa.array(parts[0]),
        "score_temporal": pa.array(parts[1]),
        "score_lighting": pa.array(parts[2]),
        "score_overall": pa.nulls(rows, pa.float32()),
        "quality_score": pa.array(quality),
        "passed": pa.array(passed),
        "reject_reason": pa.array(reject, type=pa.string()),
        "frame_count": pa.array(frame_count),
        "width": pa.array(np.full(rows, 1280, dtype=np.int32)),
        "height": pa.array(np.full(rows, 720, dtype=np.int32)),
        "fps": pa.array(fps),
        "duration_s": pa.array((frame_count / fps).astype(np.float32)),
        "target_boxes": None,
        "synth_video": None,
        "backends": pa.array(np.full(rows, '{"inserter": "cpu"}')),
        "build_id": pa.array(np.full(rows, "bench")),
        "schema_version": pa.array(np.ones(rows, dtype=np.int32)),
        "created_at": pa.array(created).cast(PAIRS_SCHEMA.field("created_at").type),
    }
    arrays = [
        columns[f.name] if columns.get(f.name) is not None else pa.nulls(rows, f.type)
        for f in PAIRS_SCHEMA
    ]
    return pa.Table.from_arrays(arrays, schema=PAIRS_SCHEMA)


LAYOUTS: dict[str, tuple[str, int | None, tuple[tuple[str, str], ...]]] = {
    "sink": ("sink", None, ()),
    "old": ("insertion", None, ()),
    "sink, score ZONEMAP": ("sink", None, (("quality_score", "ZONEMAP"),)),
    "sink, no score index": ("sink", None, (("quality_score", ""),)),
}
"""Layouts the query part measures: (row order, fragment rows, index changes).

``sink`` is what a build commits now (:func:`optimise_table`: rows sorted, compacted,
the sink's indexes); ``old`` is a table written before rows were sorted, with the same
indexes. The last two change one index of the sink's layout (kind ``""``: none)."""
CROSSOVER_SHARES = (0.005, 0.01, 0.02, 0.04, 0.08)
"""Shares of the table selected as scattered rows in :func:`measure_crossover`."""
FULL_LAYOUTS = {"old, 512-row fragments": ("insertion", 512, ())}
"""Also measured without ``--quick``: the layout a build with 512-sample tar shards
committed before compaction."""


def write_query_dataset(
    out: Path,
    table: pa.Table,
    fragment_rows: int | None,
    *,
    order: str = "insertion",
    index_changes: Sequence[tuple[str, str]] = (),
) -> dict[str, Any]:
    """``table`` as the pairs of a Lance-only dataset with the scalar indexes the sink builds.

    ``order="sink"`` finishes the table the way the Lance sink does
    (:func:`optimise_table`: rows sorted, fragments compacted, indexes built);
    ``"insertion"`` keeps the rows in ``table``'s order, as tables written before the
    sink sorted them are. ``index_changes`` then replaces the index of a column by
    another kind (``""``: drops it). Returns seconds to write the table and to finish it.
    """
    lance_dir = out / "lance"
    lance_dir.mkdir(parents=True)
    tables: dict[str, TableInfo] = {}
    for name, schema in TABLE_SCHEMAS.items():
        if name != "pairs":
            ds = lance.write_dataset(
                schema.empty_table(), str(lance_dir / f"{name}.lance"), schema=schema
            )
            tables[name] = TableInfo(path=f"lance/{name}.lance", version=ds.version, rows=0)
    uri = str(lance_dir / "pairs.lance")
    start = time.perf_counter()
    options = {"max_rows_per_file": fragment_rows} if fragment_rows else {}
    ds = lance.write_dataset(table, uri, schema=PAIRS_SCHEMA, **options)
    written = time.perf_counter()
    if order == "sink":
        optimise_table(Path(uri), "pairs")
    else:
        for column, kind in SCALAR_INDEXES["pairs"]:
            ds.create_scalar_index(column, index_type=kind)
    ds = lance.dataset(uri)
    for column, kind in index_changes:
        ds.drop_index(f"{column}_idx")
        if kind:
            ds.create_scalar_index(column, index_type=kind)
    indexed = time.perf_counter()
    ds = lance.dataset(uri)
    tables["pairs"] = TableInfo(path="lance/pairs.lance", version=ds.version, rows=ds.count_rows())
    passed = int(pc.sum(table.column("passed")).as_py())
    by_difficulty = pc.value_counts(table.column("difficulty")).to_pylist()
    counts = {
        "pairs": table.num_rows,
        "passed": passed,
        "by_difficulty": {d["values"]: d["counts"] for d in by_difficulty},
    }
    manifest = Manifest(
        build_id="bench", formats=["lance"], complete=True, tables=tables, counts=counts
    )
    write_manifest(out, manifest)
    return {
        "write_s": written - start,
        "index_s": indexed - written,
        "fragments": len(ds.get_fragments()),
        "indexes": {i["fields"][0]: i["type"] for i in ds.list_indices()},
    }


def query_filters(table: pa.Table) -> list[tuple[str, PairFilter]]:
    """Selective queries a curator runs (0.2-2.5 % of the rows, and one key), then broad ones."""
    cats = pc.value_counts(table.column("source_category")).to_pylist()
    rarest = min(cats, key=lambda c: c["counts"])["values"]
    commonest = max(cats, key=lambda c: c["counts"])["values"]
    key = table.column("pair_id")[table.num_rows // 3].as_py()
    return [
        ("difficulty=easy, score>=0.95", PairFilter.make(difficulty="easy", min_score=0.95)),
        (
            "hard, score in [0.8, 0.82]",
            PairFilter.make(difficulty="hard", min_score=0.8, max_score=0.82),
        ),
        (
            "score in [0.800, 0.801], all",
            PairFilter.make(min_score=0.8, max_score=0.801, passed=None),
        ),
        (f"category={rarest}", PairFilter.make(category=rarest)),
        ("pair_id = one key", PairFilter.make(passed=None, where=f"pair_id = {sql_literal(key)}")),
        ("difficulty=expert, rejected", PairFilter.make(difficulty="expert", passed=False)),
        ("passed (the default)", PairFilter.make()),
        (f"category={commonest}", PairFilter.make(category=commonest)),
    ]


ROUTES = ("select", "index", "lance_scan", "full_scan")
"""``select``: :func:`select_pairs` (what ``pvtt query`` does); ``index``: Lance with its
scalar indexes; ``lance_scan``: no index, Lance's late materialization (the old
baseline); ``full_scan``: every row of the columns read, then filtered."""


def _routes(dataset: Any, flt: PairFilter) -> dict[str, Callable[[], pa.Table]]:
    sql, table = flt.to_sql(), dataset.pairs
    return {
        "select": lambda: select_pairs(dataset, flt, columns=COLUMNS),
        "index": lambda: table.to_table(columns=COLUMNS, filter=sql),
        "lance_scan": lambda: table.to_table(columns=COLUMNS, filter=sql, use_scalar_index=False),
        "full_scan": lambda: table.to_table(columns=COLUMNS, filter=sql, **SCAN_OPTIONS),
    }


def _interleaved(fns: dict[str, Callable[[], pa.Table]], reps: int) -> dict[str, float]:
    """Median seconds of each call, run in turn ``reps`` times after one warm-up round, so
    that load from other work on a shared machine falls on every route alike; the order
    is shuffled each round, so no route always follows the same one (a route run right
    after a full scan finds the caches cold: ~1 ms on a 4 ms query)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()
    rng = np.random.default_rng(0)
    for _ in range(reps):
        for name in rng.permutation(list(fns)):
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _ids(table: pa.Table) -> list[str]:
    return sorted(table.column("pair_id").to_pylist())


def measure_queries(
    out: Path, filters: Sequence[tuple[str, PairFilter]], reps: int
) -> list[dict[str, Any]]:
    """Latency of each filter by every route of :data:`ROUTES` on one table; every route
    must return the same pairs."""
    dataset = open_dataset(out)
    rows = []
    for name, flt in filters:
        routes = _routes(dataset, flt)
        expected = _ids(routes["full_scan"]())
        for route, fn in routes.items():
            if _ids(fn()) != expected:
                raise AssertionError(f"{name}: route {route} and a full scan disagree")
        sql = flt.to_sql()
        plan = dataset.pairs.scanner(columns=COLUMNS, filter=sql).explain_plan()
        scan_plan = dataset.pairs.scanner(
            columns=COLUMNS, filter=sql, **SCAN_OPTIONS
        ).explain_plan()
        if "ScalarIndexQuery" in scan_plan:
            raise AssertionError(f"{name}: the scan baseline still uses an index:\n{scan_plan}")
        ms = {k: v * 1e3 for k, v in _interleaved(routes, reps).items()}
        options = read_options(dataset.pairs, flt.predicate(), sql)
        rows.append(
            {
                "query": name,
                "sql": sql,
                "matched": len(expected),
                "share": len(expected) / dataset.pairs.count_rows(),
                "index_used": "ScalarIndexQuery" in plan,
                "select_route": "scan" if options else "index",
                **{f"{route}_ms": ms[route] for route in ROUTES},
                "ratio_vs_full_scan": ms["select"] / ms["full_scan"],
                "ratio_vs_lance_scan": ms["select"] / ms["lance_scan"],
            }
        )
    return rows


def measure_crossover(out: Path, reps: int, shares: Sequence[float]) -> list[dict[str, Any]]:
    """Index against full scan for scattered rows: score windows (any difficulty, either
    verdict) of an insertion-ordered table, each holding ``share`` of the rows. Where
    the ratio passes 1 is what :data:`SCATTERED_INDEX_FRACTION` stands for."""
    dataset = open_dataset(out)
    scores = dataset.pairs.to_table(columns=["quality_score"]).column(0).to_numpy()
    rows = []
    for share in shares:
        low, high = (float(q) for q in np.quantile(scores, [0.5, 0.5 + share]))
        flt = PairFilter.make(min_score=low, max_score=high, passed=None)
        routes = _routes(dataset, flt)
        ms = {
            k: v * 1e3
            for k, v in _interleaved(
                {"index": routes["index"], "full_scan": routes["full_scan"]}, reps
            ).items()
        }
        rows.append({"share": share, **{f"{k}_ms": v for k, v in ms.items()}})
        rows[-1]["index_vs_full_scan"] = ms["index"] / ms["full_scan"]
    return rows


def time_cli(out: Path) -> dict[str, Any]:
    """Wall time of one ``pvtt query`` process, and of one that only starts (``--version``)."""
    base = [sys.executable, "-m", "pvtt.tools.cli"]
    args = ["query", str(out), "--difficulty", "easy", "--min-score", "0.95", "--format", "csv"]
    timings = {}
    for name, cmd in (("startup_s", [*base, "--version"]), ("query_s", [*base, *args])):
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        timings[name] = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-500:]}")
        if name == "query_s":
            timings["rows_printed"] = max(len(proc.stdout.splitlines()) - 1, 0)
    timings["command"] = "pvtt " + " ".join(args).replace(str(out), "OUT")
    return timings


# -- report -----------------------------------------------------------------------------


def _print_writes(rows: list[dict[str, Any]]) -> None:
    print(
        f"\nwrite, {rows[0]['pairs']} pairs; MB/s = media bytes / wall time, median\n"
        "  x files:  sink rate / rate of the same bytes as plain files (one per blob, fsynced)\n"
        "  x 1 file: sink rate / rate of appending them to one file (the disk's sequential rate)\n"
        "  +fsync:   the sink run followed by an fsync of every file it wrote"
    )
    print(
        f"{'formats':<10}{'media MB':>9}{'disk MB':>8}{'sink':>7}{'x files':>8}{'x 1 file':>9}"
        f"{'+fsync':>8}{'x files':>8}{'files':>7}{'1 file':>7}"
    )
    for r in rows:
        print(
            f"{r['formats']:<10}{r['media_bytes'] / MB:>9.0f}{r['disk_bytes'] / MB:>8.0f}"
            f"{r['sink_mb_s']:>7.0f}{r['ratio_vs_files']:>8.2f}{r['ratio_vs_one_file']:>9.2f}"
            f"{r['sink_fsynced_mb_s']:>8.0f}{r['fsynced_ratio_vs_files']:>8.2f}"
            f"{r['files_mb_s']:>7.0f}{r['one_file_mb_s']:>7.0f}"
        )


def _print_queries(layout: str, info: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    indexes = ", ".join(f"{c} {k}" for c, k in info["indexes"].items())
    print(
        f"\nquery, {info['rows']:,} pairs, layout {layout!r} ({info['fragments']} fragments; "
        f"write {info['write_s']:.1f} s, finish {info['index_s']:.1f} s; indexes: {indexes})\n"
        "  median ms; x full = select / full scan, x lance = select / Lance's filtered scan"
    )
    print(
        f"{'query':<30}{'matched':>9}{'share':>7}{'route':>6}{'select':>8}{'index':>8}"
        f"{'lance':>8}{'full':>8}{'x full':>8}{'x lance':>8}"
    )
    for r in rows:
        mark = "" if r["index_used"] else " (no index in plan)"
        print(
            f"{r['query']:<30}{r['matched']:>9,}{r['share']:>7.2%}{r['select_route']:>6}"
            f"{r['select_ms']:>8.1f}{r['index_ms']:>8.1f}{r['lance_scan_ms']:>8.1f}"
            f"{r['full_scan_ms']:>8.1f}{r['ratio_vs_full_scan']:>8.3f}"
            f"{r['ratio_vs_lance_scan']:>8.3f}{mark}"
        )


def _print_against_old(results: list[dict[str, Any]]) -> None:
    """The sink layout's ``select`` against the old layout's routes, query by query."""
    by_layout = {r["layout"]: {q["query"]: q for q in r["queries"]} for r in results}
    new, old = by_layout.get("sink"), by_layout.get("old")
    if not new or not old:
        return
    print(
        "\nsink layout against a table written before it (same run): select ms, and its "
        "ratio to the old table's select and full scan"
    )
    print(
        f"{'query':<30}{'share':>7}{'sink':>8}{'old':>8}{'old full':>9}{'x old':>8}{'x old full':>11}"
    )
    for name, q in new.items():
        o = old[name]
        print(
            f"{name:<30}{q['share']:>7.2%}{q['select_ms']:>8.1f}{o['select_ms']:>8.1f}"
            f"{o['full_scan_ms']:>9.1f}{q['select_ms'] / o['select_ms']:>8.3f}"
            f"{q['select_ms'] / o['full_scan_ms']:>11.3f}"
        )


def _print_crossover(rows: list[dict[str, Any]]) -> None:
    print(
        "\nscattered rows (score windows of the old layout): index against a full scan, "
        f"median ms; select_pairs scans above {SCATTERED_INDEX_FRACTION:.0%}"
    )
    print(f"{'share':>7}{'index':>9}{'full':>9}{'ratio':>8}")
    for r in rows:
        print(
            f"{r['share']:>7.1%}{r['index_ms']:>9.1f}{r['full_scan_ms']:>9.1f}"
            f"{r['index_vs_full_scan']:>8.2f}"
        )


def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    results: dict[str, Any] = {"quick": args.quick, "argv": sys.argv[1:]}
    if not args.query_only:
        samples = synthetic_samples(args.pairs, seed=args.seed)
        results["write"] = measure_writes(root / "write", samples, args.reps)
        del samples
        _print_writes(results["write"])

    table = pairs_table(args.rows, seed=args.seed)
    filters = query_filters(table)
    layouts = dict(LAYOUTS) if args.quick else {**LAYOUTS, **FULL_LAYOUTS}
    results["query"] = []
    for i, (layout, (order, fragment_rows, changes)) in enumerate(layouts.items()):
        out = root / f"query-{i}"
        written = write_query_dataset(out, table, fragment_rows, order=order, index_changes=changes)
        info = {"layout": layout, "rows": table.num_rows, **written}
        rows = measure_queries(out, filters, args.query_reps)
        results["query"].append({**info, "queries": rows})
        _print_queries(layout, info, rows)
        if layout == "sink":
            results["cli"] = time_cli(out)
            cli = results["cli"]
            print(
                f"\n`{cli['command']}` end to end: {cli['query_s']:.2f} s "
                f"({cli['rows_printed']:,} rows; `pvtt --version` alone {cli['startup_s']:.2f} s)"
            )
        if layout == "old":
            results["crossover"] = measure_crossover(out, args.query_reps, CROSSOVER_SHARES)
            _print_crossover(results["crossover"])
        shutil.rmtree(out)
    _print_against_old(results["query"])
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="~100 MB of writes, fewer repeats")
    parser.add_argument("--query-only", action="store_true", help="skip the write part")
    parser.add_argument("--pairs", type=int, help="pairs to write (default 100, quick 24)")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the query table")
    parser.add_argument("--reps", type=int, help="write repeats (median kept; default 7, quick 5)")
    parser.add_argument("--query-reps", type=int, help="query repeats (default 15, quick 7)")
    parser.add_argument(
        "--dir", type=Path, help="where to write temporary data (default: a tempdir)"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every figure here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.pairs = args.pairs or (24 if args.quick else 100)
    args.reps = args.reps or (5 if args.quick else 7)
    args.query_reps = args.query_reps or (7 if args.quick else 15)
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pvtt-bench-", dir=args.dir) as tmp:
        results = run(args, Path(tmp))
    results["total_s"] = time.perf_counter() - start
    print(f"\ntotal {results['total_s']:.0f} s")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
