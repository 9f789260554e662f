"""``pvtt build --engine ray``: the build's stages on Ray Data, written as ranks, merged once.

The shape, and why:

- **Plan first.** Pairs join clips with the cut-outs that succeeded, so the per-product work
  comes first: shot detection (CPU tasks, which Ray Data fuses into the matting actors when
  these take no GPU) and matting (an actor pool: the matter may be a model), one product at
  a time; the driver then plans the pairs with the local engine's planner.
- **Then one streaming pipeline** over the clips: the clip stages (detect, segment, inpaint;
  an actor pool with ``num_gpus``) -> the pair stages (insert, score; an actor pool) -> write
  tasks. Ray Data's streaming executor bounds the blocks in flight between operators, so a
  slow stage holds back the ones before it (back-pressure). A clip travels between stages as
  its encoded artefacts (mp4, masks codec: a few MB), not as decoded frames.
- **Writes are ranks.** ``W`` writer actors each hold one :class:`DatasetWriter` rank (its
  own tar shards, its Lance fragments written but not committed, its rank manifest). Clip
  ``i`` of the plan goes to rank ``i % W``, as with ``pvtt build --rank/--world-size``, so a
  clip's row lives in one rank across re-runs, and :func:`pvtt.builder.merge.merge`
  publishes all ranks at the end. A re-run keeps the folder's ``W`` and skips every
  committed pair.
- **The local engine's code.** The stages run ``prepare_clip`` and the local engine's own
  per-item methods (``Build._products``, ``_clip_record``, ``_make``, ``_write_pair``) on a
  Build that holds only its stage's backends, so both engines make the same pairs with the
  same scores.

Retries: Ray Data retries a task lost with its worker or node and restarts a dead stage
actor; a stage task that raised is run again up to ``RayOptions.max_retries`` times (a CUDA
out-of-memory on a shared card, a file system hiccup). A writer actor is never restarted
(its uncommitted rows would be lost silently), so its loss fails the build, and the re-run
resumes from its last commit.
The catalog, ``OUT`` and the cache must be on a filesystem every node sees, and pvtt
installed on every node. Ray is imported only inside this module's functions.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pvtt.builder.cache import ArtifactCache
from pvtt.builder.catalog import Catalog, Problem, Product
from pvtt.builder.clips import ClipArtefacts, ClipBackends, prepare_clip, relative
from pvtt.builder.merge import merge
from pvtt.builder.pairs import PairPlan
from pvtt.builder.pipeline import (
    STAGE_KINDS,
    Build,
    BuildResult,
    ClipJob,
    plan_build_pairs,
    plan_clips,
)
from pvtt.builder.products import ProductArtefacts
from pvtt.builder.registry import create_backend
from pvtt.builder.report import REPORT_DIR, BuildReport
from pvtt.builder.resources import RATES_NAME, measured_rates
from pvtt.builder.sinks.base import PairSample, SampleError
from pvtt.builder.stages.protocols import StageRejected
from pvtt.builder.video import VideoError, decode_video_bytes
from pvtt.builder.writer import DatasetWriter
from pvtt.schemas.config import BuildConfig, ConfigError
from pvtt.schemas.manifest import (
    RANKS_DIR,
    ManifestError,
    atomic_write_bytes,
    manifest_path,
    read_manifest,
)
from pvtt.schemas.masks import decode_masks
from pvtt.schemas.records import ProductRecord

log = logging.getLogger(__name__)

INSTALL_HINT = "--engine ray needs Ray: pip install 'pvtt[ray]' (ray[data]>=2.30)"

STAGES: dict[str, tuple[str, ...]] = {
    "matte": ("matter",),
    "clip": ("detector", "segmenter", "inpainter"),
    "pair": ("inserter", "scorer"),
}
"""The engine's actor stages and the backends each one holds."""

DEFAULT_GPUS: dict[str, float] = {"matte": 0.25, "clip": 1.0, "pair": 0.5}
"""GPUs per actor of a stage with a model backend on a CUDA build: a matting model is small
(rembg's u2netp), Grounding DINO + SAM2 peak near 16 GiB, and the embedding or VLM scorers
and a diffusers refiner fit twice on one card."""

MAX_INPUT_BLOCKS = 2000
"""Blocks of the input lists: one item each up to this many, so actors share small items."""


@dataclass(frozen=True)
class RayOptions:
    """How the Ray engine spreads a build (the config says what is built, this says where)."""

    writers: int = 2
    """Write ranks of a new output folder; a re-run keeps the folder's. At least 2: a Ray
    build is a multi-rank build, published by ``merge``."""
    gpus_per_actor: dict[str, float] = field(default_factory=dict)
    """GPUs per actor by stage (``matte``, ``clip``, ``pair``), over :data:`DEFAULT_GPUS`.
    Only a CUDA build's stages with a model backend take GPUs; all-``cpu`` stages take none."""
    max_actors: int | None = None
    """Most actors per stage (default: as many as the cluster's CPUs or GPUs hold)."""
    max_retries: int = 3
    """Runs again of a stage task that raised (Ray Data's ``max_map_retries``)."""

    def __post_init__(self) -> None:
        if self.writers < 2:
            raise ConfigError(f"ray engine: writers must be >= 2, not {self.writers}")
        unknown = sorted(set(self.gpus_per_actor) - set(STAGES))
        if unknown:
            raise ConfigError(
                f"ray engine: gpus_per_actor has unknown stages {unknown}; known: {sorted(STAGES)}"
            )
        if any(g < 0 for g in self.gpus_per_actor.values()):
            raise ConfigError(f"ray engine: gpus_per_actor must be >= 0: {self.gpus_per_actor}")
        if self.max_actors is not None and self.max_actors < 1:
            raise ConfigError(f"ray engine: max_actors must be >= 1, not {self.max_actors}")


def stage_gpus(config: BuildConfig, options: RayOptions) -> dict[str, float]:
    """GPUs per actor of each stage: none on a CPU build or for a stage of ``cpu`` backends."""
    gpus = {**DEFAULT_GPUS, **options.gpus_per_actor}
    return {
        stage: gpus[stage]
        if config.device != "cpu" and any(getattr(config, k).backend != "cpu" for k in kinds)
        else 0.0
        for stage, kinds in STAGES.items()
    }


def run_ray_build(
    catalog: Catalog,
    out: str | Path,
    config: BuildConfig,
    *,
    address: str | None = None,
    options: RayOptions | None = None,
    problems: Sequence[Problem] = (),
    progress: bool = True,
) -> BuildResult:
    """Build ``catalog`` into ``out`` on Ray: the cluster at ``address`` (or ``RAY_ADDRESS``),
    the Ray already initialised in this process, or else a local one on this machine.

    ``problems`` are the catalog's bad rows, listed in the report as the local engine does.
    """
    try:
        import ray
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False)
    try:
        driver = _Driver(catalog, Path(out), config, options or RayOptions(), progress)
        for problem in problems:
            driver.report.reject("catalog", f"{problem.file}:{problem.row}", problem.message)
        return driver.run()
    finally:
        if started:
            ray.shutdown()


# -- the stages (run in Ray workers) -----------------------------------------------


class _StageBuild(Build):
    """A :class:`Build` that holds only the backends of one Ray stage.

    The stages call the local engine's per-item methods on it, so both engines make the
    same records; the other stages' backends appear only by their identities, which the
    records carry.
    """

    def __init__(
        self,
        catalog: Catalog,
        out: Path,
        config: BuildConfig,
        *,
        kinds: Sequence[str],
        backends_info: dict[str, Any],
        build_id: str,
    ) -> None:  # no super(): no other backends
        self.catalog = catalog
        self.out = out
        self.config = config
        self.rank, self.world_size, self.progress = 0, 1, False
        self.report = BuildReport()
        self.cache = ArtifactCache(config.cache_dir or out / "cache")
        self.backends = {k: create_backend(k, getattr(config, k), config.device) for k in kinds}
        self.backends_info = backends_info
        self.backends_json = json.dumps(backends_info, sort_keys=True)
        self.build_id = build_id

    def take_report(self) -> dict[str, Any]:
        """What the stage did since the last call, cache hits included, to send downstream."""
        report, self.report = self.report, BuildReport()
        return _part(report, self.cache)


def _part(report: BuildReport, cache: ArtifactCache | None = None) -> dict[str, Any]:
    """A report as plain data, to travel between workers (a BuildReport holds a lock),
    with the cache hits it counted and those of ``cache`` since the last call."""
    hits = dict(report.extra.get("cache", {"hits": 0, "misses": 0}))
    if cache is not None:
        hits["hits"] += cache.hits
        hits["misses"] += cache.misses
        cache.hits = cache.misses = 0
    return {
        "counts": dict(report.counts),
        "seconds": dict(report.seconds),
        "calls": dict(report.calls),
        "rejects": list(report.rejects),
        "duplicates": list(report.duplicates),
        "cache": hits,
    }


def _absorb(into: BuildReport, parts: Sequence[dict[str, Any]]) -> None:
    """Add the stages' reports (see :func:`_part`) to ``into``."""
    total = into.extra.setdefault("cache", {"hits": 0, "misses": 0})
    for part in parts:
        into.counts.update(part["counts"])
        for stage, seconds in part["seconds"].items():
            into.seconds[stage] += seconds
        into.calls.update(part["calls"])
        into.rejects.extend(part["rejects"])
        into.duplicates.extend(part["duplicates"])
        for key in ("hits", "misses"):
            total[key] += part["cache"][key]


# Every Ray row is one opaque object in a column ``row``: Arrow would turn lists of dicts
# into structs (filling the keys one row lacks with nulls) and empty lists into nulls.


@dataclass
class _ProductRow:
    index: int
    product: Product
    jobs: list[ClipJob] = field(default_factory=list)
    cutouts: dict[str, ProductArtefacts] = field(default_factory=dict)
    records: dict[str, ProductRecord] = field(default_factory=dict)
    reports: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _ClipRow:
    rank: int
    job: ClipJob
    plans: list[PairPlan]
    clip: ClipArtefacts | None = None
    """Without its decoded arrays (its mp4s and masks carry them); None if rejected."""
    samples: list[PairSample] = field(default_factory=list)
    reports: list[dict[str, Any]] = field(default_factory=list)


def _rows(rows: Sequence[Any]) -> dict[str, np.ndarray]:
    column = np.empty(len(rows), dtype=object)  # np.array would look inside the objects
    for i, row in enumerate(rows):
        column[i] = row
    return {"row": column}


def _shots(
    batch: dict[str, np.ndarray], catalog: Catalog, config: BuildConfig, out: Path
) -> dict[str, np.ndarray]:
    """CPU task: each product's clips (its kept shots), planned as the local engine plans them."""
    cache = ArtifactCache(config.cache_dir or out / "cache")
    rows: list[_ProductRow] = list(batch["row"])
    for row in rows:
        report = BuildReport()
        one = dataclasses.replace(catalog, products=(row.product,))
        row.jobs = plan_clips(one, config, cache, report)
        row.reports.append(_part(report, cache))
    return _rows(rows)


class _StageActor:
    """An actor of one Ray stage: a :class:`_StageBuild` with only that stage's backends."""

    stage: str

    def __init__(
        self,
        catalog: Catalog,
        out: Path,
        config: BuildConfig,
        backends_info: dict[str, Any],
        build_id: str,
    ) -> None:
        self.host = _StageBuild(
            catalog,
            out,
            config,
            kinds=STAGES[self.stage],
            backends_info=backends_info,
            build_id=build_id,
        )


class _MatteStage(_StageActor):
    """Actor: each product's cut-outs and product rows (``Build._products``)."""

    stage = "matte"

    def __init__(self, **stage: Any) -> None:
        super().__init__(**stage)
        self.catalog = stage["catalog"]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows: list[_ProductRow] = list(batch["row"])
        for row in rows:
            self.host.catalog = dataclasses.replace(self.catalog, products=(row.product,))
            row.cutouts, row.records = self.host._products()
            row.reports.append(self.host.take_report())
        return _rows(rows)


_NO_FRAMES = np.empty(0, np.uint8)


class _ClipStage(_StageActor):
    """Actor: detect, segment and inpaint one clip (``prepare_clip``, cached)."""

    stage = "clip"

    def __init__(self, **stage: Any) -> None:
        super().__init__(**stage)
        b = self.host.backends
        self.backends = ClipBackends(b["detector"], b["segmenter"], b["inpainter"])

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows: list[_ClipRow] = list(batch["row"])
        for row in rows:
            row.clip = self._clip(row.job, len(row.plans))
            row.reports.append(self.host.take_report())
        return _rows(rows)

    def _clip(self, job: ClipJob, pending: int) -> ClipArtefacts | None:
        host = self.host
        try:
            clip = prepare_clip(
                job.product,
                job.shot_index,
                job.shot,
                job.clip_id,
                job.digest,
                self.backends,
                host.config,
                host.cache,
                host.report,
            )
        except (StageRejected, VideoError, OSError) as exc:
            host.report.reject(
                "clip",
                f"{job.clip_id} ({relative(job.product.video, host.catalog.root)})",
                str(exc),
            )
            host.report.count("pairs.lost_with_clip", pending)
            return None
        host.report.count("clips.ok")
        frames, height, width = clip.frames.shape[:3]
        host.report.count("frames.clips", frames)
        host.report.count_media(
            "clips",
            frames * height * width,
            source_video=len(clip.source_video),
            background_video=len(clip.background_video),
            masks=len(clip.masks_bytes),
        )
        return dataclasses.replace(clip, frames=_NO_FRAMES, masks=_NO_FRAMES, background=_NO_FRAMES)


class _Samples:
    """Stands in for the writer in ``Build._write_pair``: keeps the samples for the writers."""

    def __init__(self) -> None:
        self.samples: list[PairSample] = []

    def write(self, sample: PairSample) -> None:
        self.samples.append(sample)


class _PairStage(_StageActor):
    """Actor: insert, score and judge every pending pair of a clip (``Build._make``), one at a
    time: the stage scales by actors, each on its own CPU or GPU share."""

    stage = "pair"

    def __init__(self, products: Any, **stage: Any) -> None:
        import ray

        super().__init__(**stage)
        self.products, self.records = ray.get(products)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows: list[_ClipRow] = list(batch["row"])
        host = self.host
        for row in rows:
            if row.clip is not None:
                clip = self._decoded(row.clip)
                record = host._clip_record(clip)
                made = _Samples()
                for plan in row.plans:
                    pair = host._make(plan, clip, self.products, self.records)
                    host._write_pair(plan, pair, record, self.records, made)  # type: ignore[arg-type]
                row.samples, row.clip = made.samples, None
            part = host.take_report()
            # _write_pair timed handing each sample to ``made``; the writers time the writes
            part["seconds"].pop("write", None)
            part["calls"].pop("write", None)
            row.reports.append(part)
        return _rows(rows)

    def _decoded(self, clip: ClipArtefacts) -> ClipArtefacts:
        """The arrays ``prepare_clip`` returned, decoded again from the clip's bytes."""
        with self.host.report.timed("decode"):
            frames, _ = decode_video_bytes(clip.source_video)
        with self.host.report.timed("decode"):
            background, _ = decode_video_bytes(clip.background_video)
        return dataclasses.replace(
            clip, frames=frames, background=background, masks=decode_masks(clip.masks_bytes)
        )


def _write(batch: dict[str, np.ndarray], writers: Sequence[Any]) -> dict[str, np.ndarray]:
    """Task: hand each clip's pairs to the writer of its rank, and wait until it has them."""
    import ray

    calls = [
        writers[row.rank].write.remote(row.job.clip_id, row.samples, row.reports)
        for row in batch["row"]
    ]
    return {"written": np.asarray(ray.get(calls), dtype=np.int64)}


class _RankWriter:
    """Actor: one rank of the dataset (:class:`DatasetWriter` with ``rank``/``world_size``)."""

    def __init__(
        self,
        out: Path,
        config: BuildConfig,
        rank: int,
        world_size: int,
        build_id: str,
        backends_info: dict[str, Any],
    ) -> None:
        out_cfg = config.output
        self.writer = DatasetWriter(
            out,
            formats=out_cfg.formats,
            rank=rank,
            world_size=world_size,
            build_id=build_id,
            config=config.to_dict(),
            backends=backends_info,
            commit_interval_s=out_cfg.commit_interval_s,
            max_samples=out_cfg.shard_max_samples,
            max_bytes=out_cfg.shard_max_bytes,
            include_background=out_cfg.tar_background,
            include_masks=out_cfg.tar_masks,
        )
        self.report = BuildReport()
        self.clips: set[str] = set()
        self.written = 0

    def open(self) -> tuple[str, set[str]]:
        """Roll the rank back to its last commit; its build id and committed pair ids."""
        done = self.writer.open()
        return self.writer.build_id, done

    def write_products(self, records: dict[str, ProductRecord]) -> None:
        for record in records.values():
            self.writer.write_product(record)

    def write(self, clip_id: str, samples: list[PairSample], reports: list[dict[str, Any]]) -> int:
        """Write a clip's pairs; the number written (a pair a sink cannot hold is rejected)."""
        if clip_id in self.clips:  # a write task retried after this call went through
            return 0
        self.clips.add(clip_id)
        _absorb(self.report, reports)
        written = 0
        for sample in samples:
            try:
                with self.report.timed("write"):
                    self.writer.write(sample)
            except SampleError as exc:  # data a sink cannot encode: nothing of it was written
                self._refused(sample, exc.reason)
                continue
            written += 1
        self.written += written
        return written

    def _refused(self, sample: PairSample, reason: str) -> None:
        """Reject a pair the sinks refused, as the local engine's ``Build._write_pair`` does.

        The pair stage counted the pair as made when it handed it on; the local engine
        counts a refused pair nowhere but in the rejects, so that count is taken back.
        """
        pair = sample.pair
        self.report.reject("write", pair.pair_id, reason)
        self.report.count(f"pairs.{'passed' if pair.passed else 'rejected'}", -1)
        self.report.count_media(
            "pairs",
            -pair.frame_count * pair.width * pair.height,
            synth_video=-len(pair.synth_video),
        )

    def close(self) -> tuple[dict[str, Any], int]:
        self.writer.close()
        return _part(self.report), self.written


# -- the driver ---------------------------------------------------------------------


class _Driver:
    def __init__(
        self, catalog: Catalog, out: Path, config: BuildConfig, options: RayOptions, progress: bool
    ) -> None:
        import ray
        import ray.data

        self.ray = ray
        self.catalog = catalog
        self.out = out
        self.config = config
        self.options = options
        self.report = BuildReport()
        self.gpus = stage_gpus(config, options)
        self.backends_info: dict[str, Any] = {}
        self.build_id = ""
        self.resources = ray.cluster_resources()
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = progress
        context.retried_map_errors = True
        context.max_map_retries = options.max_retries
        context.enable_fallback_to_arrow_object_ext_type = True  # rows hold pickled records

    def run(self) -> BuildResult:
        self.out.mkdir(parents=True, exist_ok=True)
        with self.report.logging_to(self.out / REPORT_DIR):
            started = time.perf_counter()
            world, build_id = self._ranks()
            log.info(
                "ray build of %s into %s: %d write ranks, GPUs per actor %s, cluster %s",
                self.catalog.root,
                self.out,
                world,
                self.gpus,
                self.resources,
            )
            self.backends_info = self._identities()
            writers = [
                self.ray.remote(num_cpus=0, max_restarts=0)(_RankWriter).remote(
                    self.out, self.config, rank, world, build_id, self.backends_info
                )
                for rank in range(world)
            ]
            try:
                opened = self.ray.get([w.open.remote() for w in writers])
                self.build_id = opened[0][0]
                done = set().union(*(keys for _, keys in opened))
                jobs, products, records = self._per_product()
                self.ray.get(writers[0].write_products.remote(records))
                todo = self._plan(jobs, products, done, world)
                written = self._per_clip(todo, products, records, writers)
                closed = self.ray.get([w.close.remote() for w in writers])
            except BaseException as exc:
                for w in writers:  # uncommitted rows are rolled back by the next open
                    self.ray.kill(w)
                self._write_report(started)
                machine = machine_cause(exc)
                if machine is not None:
                    raise machine from exc  # `pvtt build` says it in one line, as locally
                raise
            _absorb(self.report, [part for part, _ in closed])
            manifest = merge(self.out)
            self._write_report(started)
            log.info("done: %d pairs written, %d already done", written, len(done))
        return BuildResult(self.out, written, len(done), self.report, dict(manifest.counts))

    # -- phases ---------------------------------------------------------------
    def _ranks(self) -> tuple[int, str]:
        """The number of write ranks (the folder's, if a build began there) and a build id."""
        folder = self.out / RANKS_DIR
        ranks = sorted(folder.glob("r*.json")) if folder.is_dir() else []
        if ranks:
            first = read_manifest(self.out, f"{RANKS_DIR}/{ranks[0].name}")
            return first.world_size, first.build_id
        if manifest_path(self.out).exists():
            raise ManifestError(
                f"{self.out}: was built by one process (the local engine), which a Ray build "
                "cannot extend; use another output folder"
            )
        return self.options.writers, uuid.uuid4().hex[:16]

    def _identities(self) -> dict[str, Any]:
        """Every backend's identity (for the records and the manifest), from one task that
        builds them all where the stages will run, so the driver needs no GPU or weights."""
        probe = self.ray.remote(num_cpus=1, num_gpus=max(self.gpus.values()))(_identities)
        return self.ray.get(probe.remote(self.config))

    def _per_product(
        self,
    ) -> tuple[list[ClipJob], dict[str, ProductArtefacts], dict[str, ProductRecord]]:
        """Shots (CPU tasks) and cut-outs (matting actors) of every product, in catalog order."""
        rows = [_ProductRow(i, p) for i, p in enumerate(self.catalog)]
        ds = self._input(rows)
        ds = ds.map_batches(
            _shots,
            batch_size=1,
            batch_format="numpy",
            num_cpus=1,
            fn_kwargs={"catalog": self.catalog, "config": self.config, "out": self.out},
        )
        ds = ds.map_batches(
            _MatteStage,
            batch_size=1,
            batch_format="numpy",
            fn_constructor_kwargs=self._stage_kwargs(),
            **self._pool("matte"),
        )
        jobs: list[ClipJob] = []
        products: dict[str, ProductArtefacts] = {}
        records: dict[str, ProductRecord] = {}
        done: list[_ProductRow] = [r["row"] for r in ds.take_all()]
        for row in sorted(done, key=lambda r: r.index):
            jobs.extend(row.jobs)
            products.update(row.cutouts)
            records.update(row.records)
            _absorb(self.report, row.reports)
        return jobs, products, records

    def _plan(
        self, jobs: list[ClipJob], products: dict[str, ProductArtefacts], done: set[str], world: int
    ) -> list[_ClipRow]:
        """The clips with pending pairs, each with its pairs and rank (``Build._run``'s plan)."""
        plans = plan_build_pairs(self.catalog, jobs, products, self.config, self.report)
        by_clip: dict[str, list[PairPlan]] = defaultdict(list)
        for plan in plans:
            by_clip[plan.clip_id].append(plan)
        todo = []
        for i, job in enumerate(jobs):  # clip i goes to rank i % world, as with --rank
            pending = [p for p in by_clip[job.clip_id] if p.pair_id not in done]
            if pending:
                todo.append(_ClipRow(i % world, job, pending))
        self.report.count("pairs.assigned", len(plans))
        self.report.count("pairs.already_done", len(plans) - sum(len(t.plans) for t in todo))
        self.report.count("clips.todo", len(todo))
        return todo

    def _per_clip(
        self,
        todo: list[_ClipRow],
        products: dict[str, ProductArtefacts],
        records: dict[str, ProductRecord],
        writers: list[Any],
    ) -> int:
        """The streaming pipeline: clip actors -> pair actors -> write tasks."""
        import ray.data

        if not todo:
            return 0
        shared = self.ray.put((products, records))
        ds = self._input(todo)
        ds = ds.map_batches(
            _ClipStage,
            batch_size=1,
            batch_format="numpy",
            fn_constructor_kwargs=self._stage_kwargs(),
            **self._pool("clip"),
        )
        ds = ds.map_batches(
            _PairStage,
            batch_size=1,
            batch_format="numpy",
            fn_constructor_kwargs={**self._stage_kwargs(), "products": shared},
            **self._pool("pair"),
        )
        ds = ds.map_batches(
            _write,
            batch_size=1,
            batch_format="numpy",
            num_cpus=0,  # they wait on the writers; no CPU taken from the stages
            compute=ray.data.TaskPoolStrategy(size=2 * len(writers)),
            fn_kwargs={"writers": writers},
        )
        return sum(int(row["written"]) for row in ds.iter_rows())

    # -- helpers --------------------------------------------------------------
    def _input(self, rows: Sequence[Any]) -> Any:
        """A dataset of ``rows``, one per block up to MAX_INPUT_BLOCKS (small work items
        spread over the actors)."""
        import ray.data

        return ray.data.from_items(
            [{"row": r} for r in rows], override_num_blocks=max(1, min(len(rows), MAX_INPUT_BLOCKS))
        )

    def _stage_kwargs(self) -> dict[str, Any]:
        return {
            "catalog": self.catalog,
            "out": self.out,
            "config": self.config,
            "backends_info": self.backends_info,
            "build_id": self.build_id,
        }

    def _pool(self, stage: str) -> dict[str, Any]:
        """``map_batches`` arguments of an actor stage: pool size and resources."""
        import ray.data

        gpus = self.gpus[stage]
        if gpus:
            size = int(self.resources.get("GPU", 0) // gpus)
            if size < 1:
                raise ConfigError(
                    f"ray engine: stage {stage} needs {gpus} GPU per actor and the cluster has "
                    f"{self.resources.get('GPU', 0)}; set device = 'cpu' or add GPU nodes"
                )
        else:
            size = max(1, int(self.resources.get("CPU", 1)))
        if self.options.max_actors is not None:
            size = min(size, self.options.max_actors)
        return {
            "compute": ray.data.ActorPoolStrategy(min_size=1, max_size=size),
            "num_cpus": 1,
            "num_gpus": gpus,
        }

    def _write_report(self, started: float) -> None:
        folder = self.out / REPORT_DIR
        self.report.extra["wall_s"] = round(time.perf_counter() - started, 3)
        self.report.extra["backends"] = self.backends_info
        self.report.extra["device"] = self.config.device
        self.report.extra["engine"] = {"name": "ray", "gpus_per_actor": self.gpus}
        self.report.write(folder)
        rates = measured_rates(self.report.as_dict(), self.config)
        atomic_write_bytes(folder / RATES_NAME, json.dumps(rates, indent=2).encode())


def _identities(config: BuildConfig) -> dict[str, Any]:
    return {
        kind: create_backend(kind, getattr(config, kind), config.device).info.as_dict()
        for kind in STAGE_KINDS
    }


def machine_cause(exc: BaseException) -> OSError | None:
    """The ``OSError`` (a full disk, a quota, a lost mount) a Ray task or actor died of.

    Ray wraps a remote exception in ``RayTaskError``; unwrapped, the machine's fault
    reaches the command line as the local engine's does, one line and no traceback.
    """
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, OSError) else None
