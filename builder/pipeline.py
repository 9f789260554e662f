"""The build: catalog -> clip artefacts -> pairs -> sinks, on the local engine.

Per-clip and per-image work is cached (see :mod:`pvtt.builder.cache`); per-pair
work streams into the :class:`~pvtt.builder.writer.DatasetWriter`. A re-run skips
every committed pair without touching its clip, and rebuilds only what the
config changed. Bad inputs are rejected with a reason and the build goes on.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import json
import logging
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pvtt.builder.cache import ArtifactCache, cache_key, file_digest
from pvtt.builder.card import write_card
from pvtt.builder.catalog import Catalog, Product
from pvtt.builder.clips import ClipArtefacts, ClipBackends, prepare_clip, relative
from pvtt.builder.device import device_stream_factory
from pvtt.builder.funnel import gate_reason
from pvtt.builder.launch import default_workers, local_ranks, node_cpus
from pvtt.builder.near_duplicates import duplicate_shot_indexes, pair_targets
from pvtt.builder.pair_pool import (
    EncodeStage,
    ProcessPairPool,
    ThreadPairPool,
    pair_seed,
)
from pvtt.builder.pairs import ImageRef, PairPlan, candidate_pairs, choose_images, sample_pairs
from pvtt.builder.products import ProductArtefacts, prepare_image
from pvtt.builder.registry import create_backend
from pvtt.builder.report import REPORT_DIR, BuildReport
from pvtt.builder.resources import RATES_NAME, measured_rates
from pvtt.builder.sinks.base import PairSample, SampleError
from pvtt.builder.stages.protocols import Backend, BatchReporting, StageRejected
from pvtt.builder.stages.shots import Shot, ShotConfig, detect_shots
from pvtt.builder.synthesis import SynthesizedPair, encode_pair, make_pair, synthesize_pair
from pvtt.builder.video import VideoError, h264_encoder
from pvtt.builder.writer import DatasetWriter
from pvtt.schemas.config import BuildConfig
from pvtt.schemas.keys import clip_id as make_clip_id
from pvtt.schemas.keys import image_id
from pvtt.schemas.manifest import atomic_write_bytes
from pvtt.schemas.masks import read_header
from pvtt.schemas.records import ClipRecord, PairRecord, ProductRecord

log = logging.getLogger(__name__)

MACHINE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
"""Errors of this machine, not of an input: the build stops instead of skipping the item."""


def machine_failure(exc: BaseException) -> bool:
    """A full disk, an exhausted quota or a read-only file system (not a bad input)."""
    return isinstance(exc, OSError) and exc.errno in MACHINE_ERRNOS


STAGE_KINDS = ("detector", "segmenter", "inpainter", "matter", "inserter", "scorer")


@dataclass
class BuildResult:
    out: Path
    written: int
    skipped_done: int
    report: BuildReport
    manifest_counts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ClipJob:
    """One clip a build makes: a kept shot of a product's video."""

    clip_id: str
    product: Product
    shot_index: int
    shot: Shot
    digest: str


def _progress(total: int | None, desc: str, unit: str, enabled: bool) -> tqdm:
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=True,
                leave=True)


def plan_clips(
    catalog: Catalog,
    config: BuildConfig,
    cache: ArtifactCache,
    report: BuildReport,
    *,
    progress: bool = False,
) -> list[ClipJob]:
    """The clips a build makes: every kept shot of every video (shots cached in ``cache``).

    ``pvtt plan`` calls this too, so its clip count is the build's and the shots it
    detects are cache hits for the build that follows.
    """
    cfg = config.shots
    shot_cfg = ShotConfig(detector=cfg.detector, threshold=cfg.threshold,
                          min_scene_len=cfg.min_scene_len, min_duration_s=cfg.min_duration_s,
                          min_frames=cfg.min_frames)
    jobs: list[ClipJob] = []
    bar = _progress(len(catalog), "shots", "video", progress)
    for product in catalog:
        bar.update()
        item = relative(product.video, catalog.root)
        try:
            digest = file_digest(product.video)
            shots = _cached_shots(product, digest, shot_cfg, cache, report)
        except (VideoError, OSError) as exc:
            if machine_failure(exc):
                raise
            report.reject("shots", item, str(exc))
            continue
        kept = [s for s in shots if s.kept]
        for shot in shots:
            if not shot.kept:
                report.reject("shots", f"{item}@{shot.start_frame}", shot.reason or "filtered")
        if not kept:
            report.reject("shots", item, "no usable shot")
        report.count("shots.kept", len(kept))
        try:
            copies = duplicate_shot_indexes(product.video, digest, kept, config, cache, report,
                                            item)
        except (VideoError, OSError) as exc:
            if machine_failure(exc):
                raise
            log.warning("%s: shots not compared for near-duplicates: %s", item, exc)
            copies = set()  # the clip stage reports frames that do not decode
        for index, shot in enumerate(kept):  # a copy left out keeps its index: ids stay
            if index not in copies:
                jobs.append(ClipJob(make_clip_id(product.id, index), product, index, shot, digest))
    bar.close()
    report.count("videos", len(catalog))
    report.count("clips.planned", len(jobs))
    return jobs


def plan_build_pairs(
    catalog: Catalog,
    jobs: list[ClipJob],
    products: dict[str, ProductArtefacts],
    config: BuildConfig,
    report: BuildReport,
) -> list[PairPlan]:
    """The pairs of ``jobs``' clips and the cut-outs made (``products``, in catalog order),
    the photos that copy another product's left out; counted for the funnel."""
    artefacts = list(products.values())
    targets = pair_targets([a.ref for a in artefacts], [a.fingerprint for a in artefacts],
                           config, report, catalog.root)
    report.count("images.targets", len(targets))
    with report.timed("plan"):
        candidates = candidate_pairs(catalog, [(j.clip_id, j.product) for j in jobs], targets,
                                     config.pairs)
        plans = sample_pairs(candidates, config.pairs)
    report.count("pairs.candidates", len(candidates))
    report.count("pairs.planned", len(plans))
    return plans


def _cached_shots(product: Product, digest: str, cfg: ShotConfig, cache: ArtifactCache,
                  report: BuildReport) -> list[Shot]:
    key = cache_key("shots", digest, cfg.__dict__)
    hit = cache.get(key)
    if hit is not None:
        return [Shot(**s) for s in hit[0]["shots"]]
    with report.timed("shots"):
        shots = detect_shots(product.video, cfg).shots
    cache.put(key, {"shots": [s.__dict__ for s in shots]}, {})
    return shots


class Build:
    """One build of ``catalog`` into ``out`` with ``config``."""

    def __init__(
        self,
        catalog: Catalog,
        out: str | Path,
        config: BuildConfig,
        *,
        rank: int = 0,
        world_size: int = 1,
        progress: bool = True,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self.catalog = catalog
        self.out = Path(out)
        self.config = config
        self.rank = rank
        self.world_size = world_size
        self.progress = progress
        self.on_commit = on_commit
        self.report = BuildReport()
        self.cache = ArtifactCache(config.cache_dir or self.out / "cache")
        self.backends: dict[str, Backend] = {
            kind: create_backend(kind, getattr(config, kind), config.device) for kind in STAGE_KINDS
        }
        self.backends_info = {k: b.info.as_dict() for k, b in self.backends.items()}
        self.backends_json = json.dumps(self.backends_info, sort_keys=True)

    # -- phases ---------------------------------------------------------------
    def _shots(self) -> list[ClipJob]:
        return plan_clips(self.catalog, self.config, self.cache, self.report, progress=self.progress)

    def _products(self) -> tuple[dict[str, ProductArtefacts], dict[str, ProductRecord]]:
        refs: list[ImageRef] = [r for p in self.catalog for r in choose_images(p, self.config.pairs)]
        self.report.count("images.chosen", len(refs))
        artefacts: dict[str, ProductArtefacts] = {}
        records: dict[str, ProductRecord] = {}
        bar = _progress(len(refs), "cut-outs", "image", self.progress)
        for ref in refs:
            bar.update()
            key = image_id(ref.product.id, ref.token)
            try:
                art = prepare_image(ref, self.backends["matter"], self.cache, self.report)
            except (StageRejected, OSError) as exc:
                if machine_failure(exc):
                    raise
                self.report.reject("matte", relative(ref.path, self.catalog.root), str(exc))
                continue
            artefacts[key] = art
            self.report.count_media("images", art.width * art.height,
                                    cutouts=len(art.cutout_png))
            records[key] = ProductRecord(
                image_id=key, product_id=ref.product.id,
                image_path=relative(ref.path, self.catalog.root), category=ref.product.category,
                subcategory=ref.product.subcategory, width=art.width, height=art.height,
                aspect=art.aspect, image=art.image_bytes, image_rgba=art.cutout_png,
                build_id=self.build_id,
                backends=json.dumps({"matter": self.backends_info["matter"]}),
            )
        bar.close()
        self.report.count("images.ok", len(artefacts))
        return artefacts, records

    def _clip_record(self, clip: ClipArtefacts) -> ClipRecord:
        frames, height, width = clip.frames.shape[:3]
        return ClipRecord(
            clip_id=clip.clip_id, source_id=clip.product.id, shot_index=clip.shot_index,
            source_path=relative(clip.product.video, self.catalog.root),
            category=clip.product.category, subcategory=clip.product.subcategory,
            start_frame=clip.shot.start_frame, end_frame=clip.shot.end_frame,
            frame_count=frames, width=width, height=height, fps=clip.fps,
            duration_s=frames / clip.fps,
            source_boxes=[tuple(float(v) for v in b) for b in clip.boxes],
            masks_codec=read_header(clip.masks_bytes)[0], source_video=clip.source_video,
            background_video=clip.background_video, masks=clip.masks_bytes,
            build_id=self.build_id,
            backends=json.dumps({
                **{k: self.backends_info[k] for k in ("detector", "segmenter", "inpainter")},
                "detection": clip.detection,
            }),
        )

    # -- the run --------------------------------------------------------------
    def run(self) -> BuildResult:
        self.out.mkdir(parents=True, exist_ok=True)
        with self.report.logging_to(self.report_dir):
            log.info("build of %s into %s (rank %d of %d)", self.catalog.root, self.out,
                     self.rank, self.world_size)
            result = self._run_logged()
            log.info("done: %d pairs written, %d already done", result.written, result.skipped_done)
        return result

    def _run_logged(self) -> BuildResult:
        started = time.perf_counter()
        self._timeline = {"started_at": round(time.time(), 3)}
        out_cfg = self.config.output
        writer = DatasetWriter(
            self.out, formats=out_cfg.formats, rank=self.rank, world_size=self.world_size,
            build_id=self._shared_build_id() if self.world_size > 1 else None,
            config=self.config.to_dict(),
            backends=self.backends_info, commit_interval_s=out_cfg.commit_interval_s,
            max_samples=out_cfg.shard_max_samples, max_bytes=out_cfg.shard_max_bytes,
            include_background=out_cfg.tar_background, include_masks=out_cfg.tar_masks,
            on_commit=self.on_commit,
        )
        done = writer.open()
        self.build_id = writer.build_id
        try:
            written = self._run(writer, done)
        except BaseException:
            writer.abort()
            self._write_report(started)
            raise
        manifest = writer.close()
        self._write_report(started)
        if self.world_size == 1:  # a multi-rank build gets its card from `pvtt merge`
            write_card(self.out, manifest, self.report.as_dict())
        return BuildResult(self.out, written, len(done), self.report, dict(manifest.counts))

    def _run(self, writer: DatasetWriter, done: set[str]) -> int:
        jobs = self._shots()
        products, product_records = self._products()
        if self.rank == 0:  # one writer of the products table, whatever the world size
            for record in product_records.values():
                writer.write_product(record)
        plans = plan_build_pairs(self.catalog, jobs, products, self.config, self.report)
        by_clip: dict[str, list[PairPlan]] = defaultdict(list)
        for plan in plans:
            by_clip[plan.clip_id].append(plan)
        # static partition: this rank's clips (no clip is processed twice)
        mine = [j for i, j in enumerate(jobs) if i % self.world_size == self.rank]
        pending = {j.clip_id: [p for p in by_clip[j.clip_id] if p.pair_id not in done] for j in mine}
        todo = [j for j in mine if pending[j.clip_id]]
        total = sum(len(v) for v in pending.values())
        assigned = sum(len(by_clip[j.clip_id]) for j in mine)
        self.report.count("pairs.assigned", assigned)
        self.report.count("pairs.already_done", assigned - total)
        self.report.count("clips.todo", len(todo))
        clip_bar = _progress(len(todo), "clips", "clip", self.progress)
        pair_bar = _progress(total, "pairs", "pair", self.progress)
        written = 0
        workers = self.config.workers or default_workers(self.config.pair_pool)
        clip_workers = self.config.clip_workers
        # Pairs of the next clips start while earlier ones are still being made, and are
        # written in plan order from a bounded window, so the output does not depend on
        # timing, the clip stages run ahead (up to `clip_workers` + 1 clips decoded), and
        # a slow writer holds everything back instead of filling memory.
        window: deque[tuple[PairPlan, ClipRecord, Future[PairRecord | StageRejected]]] = deque()
        with ThreadPoolExecutor(clip_workers, thread_name_prefix="pvtt-clip") as clip_pool, \
                self._pair_pool(workers, products, product_records) as pair_pool:
            for job, ready in self._clips_ahead(clip_pool, todo, clip_workers + 1):
                try:
                    clip = ready.result()
                except (StageRejected, VideoError, OSError) as exc:
                    if machine_failure(exc):
                        raise
                    self.report.reject("clip", f"{job.clip_id} ({relative(job.product.video, self.catalog.root)})", str(exc))
                    self.report.count("pairs.lost_with_clip", len(pending[job.clip_id]))
                    pair_bar.update(len(pending[job.clip_id]))
                    clip_bar.update()
                    continue
                clip_bar.update()
                clip_record = self._count_clip(clip)
                for plan in pending[job.clip_id]:
                    self._timeline.setdefault("pairs_from_s", self._since_start())
                    window.append((plan, clip_record, pair_pool.submit(plan, clip)))
                    while len(window) > 2 * workers:
                        written += self._write_next(window, product_records, writer, pair_bar)
                pair_pool.clip_submitted(job.clip_id)
            while window:
                written += self._write_next(window, product_records, writer, pair_bar)
        self._stage_postfix(pair_bar)
        clip_bar.close()
        pair_bar.close()
        return written

    def _pair_pool(self, workers: int, products: dict[str, ProductArtefacts],
                   records: dict[str, ProductRecord]) -> ThreadPairPool | ProcessPairPool:
        """The pool that makes this build's pairs (``config.pair_pool``), recorded in the report."""
        self.report.extra["pair_pool"] = {"kind": self.config.pair_pool, "workers": workers,
                                          "encode_workers": self.config.encode_workers,
                                          "cpus": node_cpus(), "local_ranks": local_ranks()}
        if self.config.pair_pool == "processes":
            return ProcessPairPool(
                workers, self.config, self.report, build_id=self.build_id,
                backends_json=self.backends_json, products=products,
                target_images={k: r.image_path for k, r in records.items()},
            )
        encoding = None
        if self.config.encode_workers:
            encoding = EncodeStage(
                self.config.encode_workers,
                synthesize=lambda plan, clip: self._synthesize(plan, clip, products, records),
                encode=lambda made: encode_pair(made, self.config, self.report),
            )
        return ThreadPairPool(workers, lambda plan, clip: self._make(plan, clip, products, records),
                              encoding)

    def _clips_ahead(self, pool: ThreadPoolExecutor, todo: list[ClipJob],
                     ahead: int) -> Iterator[tuple[ClipJob, Future[ClipArtefacts]]]:
        """``todo``'s clips in order, each already submitted ``ahead`` clips in advance."""
        clip_backends = ClipBackends(self.backends["detector"], self.backends["segmenter"],
                                     self.backends["inpainter"])
        stream = device_stream_factory(self.config.device)

        def prepare(job: ClipJob) -> ClipArtefacts:
            with stream():
                return prepare_clip(job.product, job.shot_index, job.shot, job.clip_id,
                                    job.digest, clip_backends, self.config, self.cache, self.report)

        queue: deque[tuple[ClipJob, Future[ClipArtefacts]]] = deque()
        upcoming = iter(todo)
        for job in itertools.islice(upcoming, ahead):
            queue.append((job, pool.submit(prepare, job)))
        while queue:
            job, ready = queue.popleft()
            for nxt in itertools.islice(upcoming, 1):
                queue.append((nxt, pool.submit(prepare, nxt)))
            yield job, ready

    def _count_clip(self, clip: ClipArtefacts) -> ClipRecord:
        self.report.count("clips.ok")
        frames, height, width = clip.frames.shape[:3]
        self.report.count("frames.clips", frames)
        self.report.count_media("clips", frames * height * width,
                                source_video=len(clip.source_video),
                                background_video=len(clip.background_video),
                                masks=len(clip.masks_bytes))
        return self._clip_record(clip)

    def _write_next(self, window: deque[tuple[PairPlan, ClipRecord, Future[PairRecord | StageRejected]]],
                    records: dict[str, ProductRecord], writer: DatasetWriter, bar: tqdm) -> int:
        plan, clip_record, made = window.popleft()
        written = self._write_pair(plan, made.result(), clip_record, records, writer)
        self._timeline["pairs_until_s"] = self._since_start()
        bar.update()
        if bar.n % 10 == 0:
            self._stage_postfix(bar)
        return written

    def _since_start(self) -> float:
        return round(time.time() - self._timeline["started_at"], 3)

    def _stage_postfix(self, bar: tqdm) -> None:
        """The three stages that took the most time so far, as shares, beside the pairs bar."""
        seconds = dict(self.report.seconds)
        total = sum(seconds.values()) or 1.0
        top = sorted(seconds.items(), key=lambda kv: -kv[1])[:3]
        bar.set_postfix_str(" ".join(f"{k} {v / total:.0%}" for k, v in top), refresh=False)

    def _make(self, plan: PairPlan, clip: ClipArtefacts, products: dict[str, ProductArtefacts],
              records: dict[str, ProductRecord]) -> PairRecord | StageRejected:
        """Insert, score and encode one pair (thread-safe: no shared mutable state but counters)."""
        return self._pair_stage(make_pair, plan, clip, products, records)

    def _synthesize(self, plan: PairPlan, clip: ClipArtefacts,
                    products: dict[str, ProductArtefacts],
                    records: dict[str, ProductRecord]) -> SynthesizedPair | StageRejected:
        """Insert and score one pair, leaving its encoding to the encode threads."""
        return self._pair_stage(synthesize_pair, plan, clip, products, records)

    def _pair_stage(self, stage: Callable[..., Any], plan: PairPlan, clip: ClipArtefacts,
                    products: dict[str, ProductArtefacts],
                    records: dict[str, ProductRecord]) -> Any:
        """``stage`` (:func:`make_pair` or :func:`synthesize_pair`) of one pair, a rejection
        returned as its value."""
        key = image_id(plan.target.product.id, plan.target.token)
        seed = pair_seed(plan.pair_id, self.config)
        try:
            return stage(plan, clip, products[key], self.backends["inserter"],
                         self.backends["scorer"], self.config, self.report,
                         build_id=self.build_id, backends_json=self.backends_json, seed=seed,
                         target_image=records[key].image_path)
        except StageRejected as exc:
            return exc

    def _write_pair(self, plan: PairPlan, pair: PairRecord | StageRejected,
                    clip_record: ClipRecord, records: dict[str, ProductRecord],
                    writer: DatasetWriter) -> int:
        if isinstance(pair, StageRejected):
            self.report.reject("pair", plan.pair_id, pair.reason)
            return 0
        key = image_id(plan.target.product.id, plan.target.token)
        if pair.passed:
            self.report.count("gate.passed")
        else:
            self.report.count(f"gate.failed.{gate_reason(pair.reject_reason or 'no reason')}")
        keep = pair.passed or not self.config.quality.drop_rejected
        if keep:
            self.report.count("pairs.to_write")
            try:
                with self.report.timed("write"):
                    writer.write(PairSample(pair=pair, clip=clip_record, product=records[key]))
            except SampleError as exc:  # data a sink cannot encode: nothing of it was written
                self.report.reject("write", plan.pair_id, exc.reason)
                return 0
        self.report.count(f"pairs.{'passed' if pair.passed else 'rejected'}")
        self.report.count_media("pairs", pair.frame_count * pair.width * pair.height,
                                synth_video=len(pair.synth_video))
        return int(keep)

    @property
    def report_dir(self) -> Path:
        folder = self.out / REPORT_DIR
        return folder if self.world_size == 1 else folder / f"r{self.rank:03d}"

    def _shared_build_id(self) -> str:
        """The same id on every rank of a multi-rank build, which all write one dataset."""
        blob = json.dumps([str(self.catalog.root), self.world_size, self.config.to_dict()],
                          sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def _write_report(self, started: float) -> None:
        self.report.extra["wall_s"] = round(time.perf_counter() - started, 3)
        # the pair phase (first pair submitted to last written) apart from the start-up and
        # the first clips' stages: the steady rate a long build runs at, and the window in
        # which a bench's GPU samples are read (epoch seconds, to line up with them)
        self.report.extra["timeline"] = dict(self._timeline)
        self.report.extra["cache"] = {"hits": self.cache.hits, "misses": self.cache.misses}
        self.report.extra["backends"] = self.backends_info
        self.report.extra["device"] = self.config.device
        self.report.extra["encoder"] = h264_encoder()  # of every clip the build encoded
        batching = {kind: b.batch_stats() for kind, b in self.backends.items()
                    if isinstance(b, BatchReporting)}
        if any(batching.values()):
            self.report.extra["batching"] = batching
        self.report.write(self.report_dir)
        rates = measured_rates(self.report.as_dict(), self.config)
        atomic_write_bytes(self.report_dir / RATES_NAME, json.dumps(rates, indent=2).encode())
