"""Regenerate selected pairs of a built dataset (another inserter, seed or gate) as a new version.

``pvtt resynth OUT --where SQL`` makes the selected pairs again with the config's
inserter and scorer, from the clip and product artefacts the dataset stores (the
source clip, its masks, track and clean background, the target cut-out): detection,
segmentation, inpainting and matting are not run again, and no catalog is needed. The
pair ids stay (they are content keys of clip and product image), so each new row
replaces the old one:

1. the new pairs are written by the build's own writer into a staging dataset,
   ``OUT/resynth/{run}/``, committed as they go; a killed run, started again with the
   same selection and config, skips the pairs already there (like ``pvtt build``);
2. publishing replaces the rows in the Lance ``pairs`` table with one
   ``merge_insert`` (a new version: the old rows stay in Lance's history), links the
   staged tar shards into ``OUT/tar`` as new shards, and gives every old shard that
   held a replaced sample a new index version without it;
3. the manifest, rewritten last, names the new version and index files: every reader
   sees exactly one row per pair id. A crash before it leaves the previous dataset as
   it was; running again publishes the staged pairs again (versions no manifest named
   are rolled back first).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import zlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import lance
import numpy as np
import pyarrow as pa
from tqdm import tqdm

from pvtt.builder.catalog import Product
from pvtt.builder.clips import ClipArtefacts
from pvtt.builder.pairs import ImageRef, PairPlan
from pvtt.builder.products import ProductArtefacts, load_rgb
from pvtt.builder.registry import create_backend
from pvtt.builder.report import BuildReport
from pvtt.builder.sinks.base import PairSample
from pvtt.builder.sinks.category_copy import write_category_copy
from pvtt.builder.sinks.lance import SCALAR_INDEXES, DurableTree
from pvtt.builder.stages.checks import cutout_completeness
from pvtt.builder.stages.dedup import fingerprint
from pvtt.builder.stages.protocols import StageRejected
from pvtt.builder.stages.shots import Shot
from pvtt.builder.synthesis import make_pair
from pvtt.builder.writer import DatasetWriter
from pvtt.loaders.decode import decode_image, decode_video
from pvtt.loaders.query import PairFilter, select_pairs
from pvtt.loaders.store import BuiltDataset, open_dataset
from pvtt.loaders.where_tree import sql_in
from pvtt.schemas.config import BuildConfig
from pvtt.schemas.manifest import (
    Manifest,
    ManifestError,
    ShardInfo,
    atomic_write_bytes,
    fsync_dir,
    read_manifest,
    write_manifest,
)
from pvtt.schemas.masks import decode_masks
from pvtt.schemas.records import ClipRecord, ProductRecord
from pvtt.schemas.shards import TAR_DIR, index_name, parse_shard_name, shard_name
from pvtt.schemas.tables import MEDIA_COLUMNS, TABLE_SCHEMAS
from pvtt.schemas.taxonomy import Difficulty
from pvtt.tools.dataset_edit import (
    committed_table,
    edit_lock,
    local_root,
    read_shard_index,
    write_shard_index,
)
from pvtt.tools.rescore import dataset_config

STAGING_DIR = "resynth"


@dataclass
class ResynthResult:
    """What a resynth replaced."""

    selected: int
    made: int
    """Pairs made in this run (the rest were staged by a killed run)."""
    replaced: int
    failed: dict[str, str]
    """Pairs that could not be made again, with the reason; their old rows stay."""
    passed_before: int
    passed_after: int
    version: int
    seconds: float

    def summary(self) -> str:
        kept = (
            f"; {len(self.failed)} could not be made and keep their old rows" if self.failed else ""
        )
        return (
            f"{self.replaced} of {self.selected} selected pairs replaced ({self.made} made now), "
            f"passed {self.passed_before} -> {self.passed_after}{kept}; "
            f"pairs table version {self.version}; {self.seconds:.1f} s"
        )


def resynth(
    out: str | os.PathLike[str],
    where: str,
    config: BuildConfig | None = None,
    *,
    progress: bool = True,
) -> ResynthResult:
    """Make the pairs ``where`` selects again with ``config`` (default: the dataset's own)
    and publish them in place of the old rows."""
    started = time.perf_counter()
    root = local_root(out)
    with edit_lock(root):
        dataset = open_dataset(root)
        if not dataset.has_lance:
            raise ManifestError(
                f"{root}: resynth reads clip artefacts from the Lance tables; this dataset has none"
            )
        config = config or dataset_config(dataset.manifest)
        rows = select_pairs(dataset, PairFilter.make(passed=None, where=where)).to_pylist()
        if not rows:
            raise ValueError(f"--where {where!r} selects no pair of {root}")
        staging = root / STAGING_DIR / _run_key(dataset.manifest, rows, config)
        made, failed = _stage(dataset, rows, config, staging, progress)
        staged = open_dataset(staging)
        replaced = staged.manifest.tables["pairs"].rows
        passed_after = staged.pairs.count_rows(filter="passed = true") + sum(
            bool(r["passed"]) for r in rows if r["pair_id"] in failed
        )
        version = _publish(root, staged)
        shutil.rmtree(staging)
        if not any(staging.parent.iterdir()):
            staging.parent.rmdir()
    return ResynthResult(
        selected=len(rows),
        made=made,
        replaced=replaced,
        failed=failed,
        passed_before=sum(bool(r["passed"]) for r in rows),
        passed_after=passed_after,
        version=version,
        seconds=time.perf_counter() - started,
    )


def _run_key(manifest: Manifest, rows: list[dict[str, Any]], config: BuildConfig) -> str:
    """Names a run by what it makes: the dataset version, the pairs and the config."""
    ids = sorted(r["pair_id"] for r in rows)
    blob = json.dumps(
        [manifest.build_id, manifest.tables["pairs"].version, ids, config.to_dict()],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# -- staging: the build's writer, the build's per-pair stage ----------------------


def _stage(
    dataset: BuiltDataset,
    rows: list[dict[str, Any]],
    config: BuildConfig,
    staging: Path,
    progress: bool,
) -> tuple[int, dict[str, str]]:
    """Write the selected pairs, made again, into the staging dataset (resumable)."""
    out_cfg = dataset.manifest.config.get("output") or {}
    inserter = create_backend("inserter", config.inserter, config.device)
    scorer = create_backend("scorer", config.scorer, config.device)
    backends = {**dataset.manifest.backends}
    backends.update({"inserter": inserter.info.as_dict(), "scorer": scorer.info.as_dict()})
    writer = DatasetWriter(
        staging,
        formats=dataset.manifest.formats,
        config=config.to_dict(),
        backends=backends,
        commit_interval_s=config.output.commit_interval_s,
        max_samples=config.output.shard_max_samples,
        max_bytes=config.output.shard_max_bytes,
        include_background=bool(out_cfg.get("tar_background", False)),
        include_masks=bool(out_cfg.get("tar_masks", False)),
    )
    done = writer.open()
    todo = sorted(
        (r for r in rows if r["pair_id"] not in done), key=lambda r: (r["clip_id"], r["pair_id"])
    )
    report = BuildReport()
    failed: dict[str, str] = {}
    made = 0
    bar = tqdm(
        total=len(rows),
        initial=len(rows) - len(todo),
        desc="resynth",
        unit="pair",
        disable=not progress,
    )
    workers = config.workers or min(8, os.cpu_count() or 1)
    window: deque[tuple[dict[str, Any], ClipRecord, ProductRecord, Future[Any]]] = deque()

    def make(row: dict[str, Any], clip: ClipArtefacts, product: ProductArtefacts) -> Any:
        """The pair made again, or the :class:`StageRejected` that stopped it (thread-safe,
        as the build's pair stage)."""
        plan = PairPlan(
            pair_id=row["pair_id"],
            clip_id=row["clip_id"],
            source=clip.product,
            target=product.ref,
            difficulty=Difficulty(row["difficulty"]),
        )
        try:
            return make_pair(
                plan,
                clip,
                product,
                inserter,
                scorer,
                config,
                report,
                build_id=writer.build_id,
                backends_json=_pair_backends(row["backends"], backends),
                seed=zlib.crc32(row["pair_id"].encode()) ^ config.pairs.seed,
                target_image=row["target_image"],
            )
        except StageRejected as exc:
            return exc

    def write_next() -> int:
        row, clip_record, product_record, future = window.popleft()
        pair = future.result()
        bar.update()
        if isinstance(pair, StageRejected):
            failed[row["pair_id"]] = pair.reason
            return 0
        writer.write(PairSample(pair=pair, clip=clip_record, product=product_record))
        return 1

    try:
        products: dict[str, tuple[ProductArtefacts, ProductRecord]] = {}
        with ThreadPoolExecutor(workers, thread_name_prefix="pvtt-resynth") as pool:
            for row, clip, clip_record in _with_clips(dataset, todo):
                image_key = _image_key(row)
                if image_key not in products:
                    products[image_key] = _product(dataset, row)
                product, product_record = products[image_key]
                future = pool.submit(make, row, clip, product)
                window.append((row, clip_record, product_record, future))
                while len(window) > 2 * workers:
                    made += write_next()
            while window:
                made += write_next()
    except BaseException:
        writer.abort()
        raise
    writer.close()
    bar.close()
    return made, failed


def _pair_backends(stored: str | None, now: dict[str, Any]) -> str:
    """The pair's ``backends`` JSON with the stages that made it this time."""
    try:
        data = json.loads(stored) if stored else {}
    except json.JSONDecodeError:
        data = {}
    data = data if isinstance(data, dict) else {}
    data.update({k: now[k] for k in ("inserter", "scorer")})
    return json.dumps(data, sort_keys=True)


def _table_row(dataset: BuiltDataset, table: str, key: str, value: str) -> dict[str, Any]:
    """One row of a Lance table with its media bytes."""
    ds = dataset.table(table)
    media = MEDIA_COLUMNS[table]
    names = [f.name for f in TABLE_SCHEMAS[table] if f.name not in media]
    found = ds.to_table(columns=names, filter=sql_in(key, [value]), with_row_id=True)
    if found.num_rows != 1:
        raise ManifestError(
            f"{dataset.root}: lance/{table} has {found.num_rows} rows {key}={value}"
        )
    row = found.to_pylist()[0]
    rid = row.pop("_rowid")
    for column in media:
        row[column] = next(iter(ds.read_blobs(column, ids=[rid])))[1]
    return row


def _record(cls: type, row: dict[str, Any]) -> Any:
    return cls(**{f.name: row[f.name] for f in fields(cls) if f.name in row})


def _with_clips(
    dataset: BuiltDataset, rows: list[dict[str, Any]]
) -> Iterator[tuple[dict[str, Any], ClipArtefacts, ClipRecord]]:
    """Each row with its clip's artefacts, decoded once per clip (rows sorted by clip)."""
    current: tuple[str, ClipArtefacts, ClipRecord] | None = None
    for row in rows:
        if current is None or current[0] != row["clip_id"]:
            clip_row = _table_row(dataset, "clips", "clip_id", row["clip_id"])
            current = (row["clip_id"], _clip(clip_row, row), _record(ClipRecord, clip_row))
        yield row, current[1], current[2]


def _clip(clip: dict[str, Any], pair: dict[str, Any]) -> ClipArtefacts:
    """The clip artefacts the pair stage needs, from the stored clip media."""
    what = f"clip {clip['clip_id']}"
    frames = decode_video(clip["source_video"], what=f"{what} source_video")
    background = decode_video(clip["background_video"], what=f"{what} background_video")
    detection = (json.loads(clip["backends"] or "{}") or {}).get("detection") or {}
    product = Product(
        id=clip["source_id"],
        category=pair["source_category"],
        subcategory=pair["source_subcategory"],
        video=Path(clip["source_path"]),
        images=(),
        prompt=None,
        first_frame_box=None,
        row=0,
    )
    fps = float(clip["fps"])
    return ClipArtefacts(
        clip_id=clip["clip_id"],
        product=product,
        shot_index=int(clip["shot_index"]),
        shot=Shot(
            clip["start_frame"],
            clip["end_frame"],
            clip["start_frame"] / fps,
            clip["end_frame"] / fps,
        ),
        frames=frames,
        fps=fps,
        masks=decode_masks(clip["masks"]),
        boxes=np.asarray(clip["source_boxes"], dtype=np.float64).reshape(-1, 4),
        background=background,
        source_video=clip["source_video"],
        background_video=clip["background_video"],
        masks_bytes=clip["masks"],
        detection=detection,
    )


def _image_key(pair: dict[str, Any]) -> str:
    """The ``products`` key of the pair's target image (the pair id's last part)."""
    return f"{pair['target_id']}__{pair['pair_id'].split('__', 2)[2]}"


def _product(dataset: BuiltDataset, pair: dict[str, Any]) -> tuple[ProductArtefacts, ProductRecord]:
    """The target image's artefacts (its stored cut-out) and its record."""
    image_key = _image_key(pair)
    row = _table_row(dataset, "products", "image_id", image_key)
    image = load_rgb(row["image"], row["image_path"])
    target = Product(
        id=row["product_id"],
        category=row["category"],
        subcategory=row["subcategory"],
        video=Path(),
        images=(Path(row["image_path"]),),
        prompt=None,
        first_frame_box=None,
        row=0,
    )
    cutout = decode_image(row["image_rgba"], mode="RGBA", what=f"{image_key} image_rgba")
    artefacts = ProductArtefacts(
        ref=ImageRef(target, Path(row["image_path"]), image_key.split("__", 1)[1], 0),
        image_bytes=row["image"],
        width=row["width"],
        height=row["height"],
        cutout=cutout,
        cutout_png=row["image_rgba"],
        aspect=float(row["aspect"]),
        completeness=(
            cutout_completeness(image, cutout)
            if pair["score_cutout"] is None
            else float(pair["score_cutout"])
        ),
        fingerprint=fingerprint(image),
    )
    return artefacts, _record(ProductRecord, row)


# -- publishing ----------------------------------------------------------------------


def _publish(root: Path, staged: BuiltDataset) -> int:
    """Replace the staged pairs' rows and samples in ``root``; returns the pairs version."""
    manifest = read_manifest(root)
    info = manifest.tables["pairs"]
    uri = root / info.path
    ds = committed_table(uri, info)
    new_rows = _rows_with_media(staged.table("pairs"))
    keys = set(new_rows.column("pair_id").to_pylist())
    if new_rows.num_rows:
        ds.merge_insert("pair_id").when_matched_update_all().execute(new_rows)
        ds = lance.dataset(str(uri))
        if SCALAR_INDEXES["pairs"]:
            ds.optimize.optimize_indices()  # the new fragment is not indexed yet
            ds = lance.dataset(str(uri))
    DurableTree(uri, durable=False).sync()
    write_category_copy(ds)  # for the version published below: category filters stay one run
    if manifest.shards:
        _retire_samples(root, manifest, keys, ds.version)
        manifest.shards.extend(_link_shards(root, manifest, staged))
    manifest.tables["pairs"].version = ds.version
    manifest.tables["pairs"].rows = ds.count_rows()
    counts = manifest.counts
    if "passed" in counts:
        counts["passed"] = ds.count_rows(filter="passed = true")
    write_manifest(root, manifest)
    return ds.version


def _rows_with_media(table: lance.LanceDataset) -> pa.Table:
    """Every row of a staged pairs table, media bytes included, in the pairs schema."""
    schema = TABLE_SCHEMAS["pairs"]
    media = MEDIA_COLUMNS["pairs"]
    rows = table.to_table(columns=[f.name for f in schema if f.name not in media], with_row_id=True)
    ids = rows.column("_rowid").to_pylist()
    rows = rows.drop_columns(["_rowid"])
    for column in media:
        blobs = [data for _, data in table.read_blobs(column, ids=ids, preserve_order=True)]
        rows = rows.append_column(column, pa.array(blobs, pa.large_binary()))
    return rows.select([f.name for f in schema]).cast(schema)


def _retire_samples(root: Path, manifest: Manifest, keys: set[str], version: int) -> None:
    """New index versions of the shards that held replaced samples, without them."""
    for shard in manifest.shards:
        index = read_shard_index(root, shard)
        kept = [e for e in index["samples"] if e["key"] not in keys]
        if len(kept) != len(index["samples"]):
            index["samples"] = kept
            write_shard_index(root, shard, index, version)


def _link_shards(root: Path, manifest: Manifest, staged: BuiltDataset) -> list[ShardInfo]:
    """The staged shards as new shards of ``root`` (hard links: no byte is copied)."""
    numbers = [parse_shard_name(Path(s.path).name) for s in manifest.shards]
    rank = 0
    number = max((n for r, n in filter(None, numbers) if r == rank), default=-1) + 1
    tar_dir = root / TAR_DIR
    out: list[ShardInfo] = []
    for shard in staged.shards:
        name = shard_name(rank, number)
        number += 1
        target = tar_dir / name
        tmp = tar_dir / f".{name}.link"
        tmp.unlink(missing_ok=True)
        os.link(staged.shard_path(shard), tmp)
        os.replace(tmp, target)  # a leftover of a crashed publish is replaced, never reused
        fsync_dir(tar_dir)
        index = read_shard_index(Path(staged.root), shard)
        index["shard"] = name
        idx = index_name(name)
        atomic_write_bytes(tar_dir / idx, json.dumps(index).encode("utf-8"))
        out.append(
            ShardInfo(
                path=f"{TAR_DIR}/{name}",
                index=f"{TAR_DIR}/{idx}",
                rank=rank,
                samples=shard.samples,
                bytes=shard.bytes,
                counts=dict(shard.counts),
                passed=shard.passed,
                score_min=shard.score_min,
                score_max=shard.score_max,
            )
        )
    return out
