"""What a build will cost before it runs: work per stage, hours, and bytes written.

``pvtt plan`` counts the clips, images and pairs a config yields with the build's own
shot step and pair planner, then prices them here. Time comes from per-stage rates:
those a real build measured (``OUT/report/rates.json``, written by every ``pvtt build``)
where that build ran the stage with the config's backend on the same kind of device,
else the defaults below. Each stage has one work unit, the one its cost grows with:

- ``frames``: detect with a model (it scans the clip's frames), segment, inpaint, insert,
  and the build's own cut, decode, encode and write, all of clip length;
- ``clips``: the CPU detector, which looks at a clip's first frame only;
- ``pairs``: score: every scorer samples a fixed number of frames per pair (``frames``,
  default 8), so its cost does not grow with the clip;
- ``images``: matte.

Frame stages on the CPU cost in proportion to the pixels, so their rates are scaled by
pixel count from the frame size they were measured at; model stages on a GPU resize to
their own input and are not scaled. Sizes come from encoded bits per pixel (H.264 at the
build's CRF, the masks codec, the cut-out PNG), measured by a build or taken from the
defaults below. The estimate is for a build from scratch: nothing cached, every
planned clip tracked and every cut-out made (a clip the detector or tracker rejects
takes its pairs with it, which no plan can know).

Stage hours add up the time each stage's calls took, one after another. A build runs
them at once (clip stages a clip ahead, pairs on several workers), so its wall time is
shorter: the rates file records how many priced stage-seconds the build got done per
second of wall time (``node.overlap``), with the pair pool and CPUs it had, and
:func:`node_plan` divides the stage hours by that overlap and by the ranks a node runs
(``pvtt plan --gpus N``) for the node's wall time.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from pvtt.builder.backends.composite_scorer import member_configs
from pvtt.builder.stages.shots import Shot
from pvtt.builder.video import VideoInfo, output_size, target_rate
from pvtt.schemas.config import BackendConfig, BuildConfig, ConfigError

RATES_NAME = "rates.json"
RATES_FORMAT = "pvtt-rates/1"

STAGES = (
    "cut",
    "detect",
    "segment",
    "inpaint",
    "decode",
    "matte",
    "insert",
    "score",
    "encode",
    "write",
)
"""The build's timed stages that ``pvtt plan`` prices, in pipeline order."""
STAGE_KIND = {
    "detect": "detector",
    "segment": "segmenter",
    "inpaint": "inpainter",
    "matte": "matter",
    "insert": "inserter",
    "score": "scorer",
}
"""Stage -> its backend section; the other stages are the build's own CPU work."""

CPU_FRAME_PIXELS = 716_446
"""Mean frame size (pixels) of the build the CPU defaults were measured on."""

CPU_DEFAULTS: dict[str, float] = {
    "cut": 143.3,
    "detect": 12.84,
    "segment": 28.61,
    "inpaint": 4.947,
    "decode": 231.5,
    "matte": 3.77,
    "insert": 47.52,
    "score": 2.0,
    "encode": 96.73,
    "write": 30080.0,
}
"""The CPU backends and the build's own work, in each stage's unit per second (frame
stages at :data:`CPU_FRAME_PIXELS`): ``pvtt build`` on 2 cores of this machine, default
config, of real footage at 720p and 1024x576 (``sam2/04_coffee.mp4`` and
``pyscenedetect/issue-195-aspect-ratio.mp4`` of the shared test media, 5 clips of 150
frames on average, 10 pairs). The demo's 384x216 clips scaled by pixel count predict
these within 0.4-2.5x per stage: the CPU backends' costs are not all linear in pixels,
so defaults are taken at the frame size real catalogs have."""

H200_DETECT_FPS = 22.6
"""Grounding DINO swin-T: frames scanned per second at 720p in batches of 8 (H200)."""
H200_SAM2_FPS = 53.8
"""pvtt's SAM2 hiera-t stage end to end at 720p (H200)."""
H200_CROPS_PER_S = {"dinov2": 1431.0, "clip": 1952.0}
"""Embedding crops per second: DINOv2-small, CLIP ViT-B/32 (H200)."""
H200_VLM_FPS = 6.3
"""A SmolVLM-256M-shaped judge: frames per second, 8 frames and 64 tokens a clip (H200)."""

DEFAULT_STORAGE = {
    "source_video_bits_per_pixel": 0.0556,
    "background_video_bits_per_pixel": 0.0529,
    "synth_video_bits_per_pixel": 0.0562,
    "masks_bits_per_pixel": 0.00309,
    "cutouts_bits_per_pixel": 5.15,
}
"""Encoded bits per frame pixel of each video (H.264, CRF 20) and of the masks, and per
photo pixel of the cut-out PNG, measured by the build behind :data:`CPU_DEFAULTS`."""

LANCE_ROW_BYTES = 2000
"""A Lance row's scalar columns plus its share of versions and indexes (demo: 2.0 KB a
pairs row at 60 frames, boxes included)."""
BOX_BYTES = 32
"""One frame's box in a Lance box track."""
SAMPLE_JSON_BYTES = 2230 + 420
"""A tar sample's ``.json`` member without its boxes, plus its shard-index entry (demo)."""
BOX_JSON_BYTES = 80
"""One frame's box in the sample JSON (demo: 79 bytes)."""
TAR_MEMBER_BYTES = 512 + 256
"""A tar header plus the mean padding to the next 512-byte block."""


class RatesError(ValueError):
    """A rates file that cannot be used; the message names the file."""


@dataclass(frozen=True)
class ClipSize:
    """One planned clip: its length and frame size after the cut."""

    clip_id: str
    frames: int
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.frames * self.width * self.height


@dataclass(frozen=True)
class ImageSize:
    """One target photo: its file size and pixel size."""

    image_id: str
    file_bytes: int
    width: int
    height: int


@dataclass(frozen=True)
class PairSize:
    clip_id: str
    image_id: str
    difficulty: str


@dataclass(frozen=True)
class Rate:
    """Work units per second of one stage, and where the figure comes from."""

    value: float
    unit: str
    source: str
    """``measured`` (a build's rates file) or ``default``."""
    note: str
    frame_pixels: float | None = None
    """The frame size the rate holds at, for stages scaled by pixel count; else None."""


@dataclass(frozen=True)
class StageCost:
    stage: str
    backend: str
    processor: str
    """``GPU`` or ``CPU``."""
    unit: str
    work: float
    rate: float | None
    """In ``unit`` per second at the frame size it was measured at."""
    source: str
    """``measured``, ``default`` or ``none``."""
    note: str
    hours: float | None
    rate_here: float | None = None
    """In ``unit`` per second at these clips' frame size: ``hours`` is ``work`` over it.
    Differs from ``rate`` for the stages scaled by pixel count (CPU frame stages)."""
    frame_pixels: float | None = None
    """The mean frame size ``rate`` holds at, for those stages; else None."""


@dataclass(frozen=True)
class Estimate:
    """Everything ``pvtt plan`` reports (``to_json`` is its ``--json`` object)."""

    clips: int
    clip_frames: int
    images: int
    pairs: int
    pair_frames: int
    difficulty: dict[str, int]
    stages: list[StageCost]
    gpu_hours: float
    cpu_hours: float
    unpriced: list[str]
    """Stages with work but no rate: the totals leave them out."""
    storage: dict[str, Any]
    bits_per_pixel: dict[str, float]
    bits_per_pixel_source: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# -- what a build measured ----------------------------------------------------------------
def stage_unit(stage: str, backend: str | None) -> str:
    """The unit a stage's cost grows with (see the module docstring)."""
    if stage == "matte":
        return "images"
    if stage == "score":
        return "pairs"
    if stage == "detect" and backend == "cpu":
        return "clips"
    return "frames"


def _pixel_bound(stage: str, backend: str | None) -> bool:
    """Whether the stage's time grows with the frame's pixels (frame stages on the CPU)."""
    return stage_unit(stage, backend) == "frames" and backend in (None, "cpu")


def measured_rates(stats: Mapping[str, Any], config: BuildConfig) -> dict[str, Any]:
    """The ``rates.json`` object of a build, from its ``statistics.json`` object and config.

    A stage's work is its calls (clips, pairs or images) or, for a frame stage, its calls
    times the mean clip length: every call of a frame stage handles one clip's frames.
    Stages that did not run (all cached) are left out.
    """
    counts = stats.get("counts", {})
    seconds = stats.get("time_per_stage_s", {})
    calls = stats.get("calls_per_stage", {})
    clips, frames = counts.get("clips.ok", 0), counts.get("frames.clips", 0)
    frames_per_clip = frames / clips if clips else None
    stages: dict[str, Any] = {}
    for stage in STAGES:
        spent, n = seconds.get(stage, 0.0), calls.get(stage, 0)
        section = _section(config, stage)
        unit = stage_unit(stage, section.backend if section else None)
        if spent <= 0 or n <= 0 or (unit == "frames" and frames_per_clip is None):
            continue
        work = n * frames_per_clip if unit == "frames" else float(n)
        entry: dict[str, Any] = {
            "unit": unit,
            "work": round(work, 1),
            "seconds": spent,
            "rate": round(work / spent, 4),
        }
        if section is not None:
            entry["backend"] = section.backend
            entry["model"] = section.model
        stages[stage] = entry
    storage: dict[str, float] = {}
    for what, area in (
        ("source_video", "clips"),
        ("background_video", "clips"),
        ("masks", "clips"),
        ("synth_video", "pairs"),
        ("cutouts", "images"),
    ):
        size, pixels = counts.get(f"bytes.{what}", 0), counts.get(f"pixels.{area}", 0)
        if size and pixels:
            storage[f"{what}_bits_per_pixel"] = round(8 * size / pixels, 6)
    return {
        "format": RATES_FORMAT,
        "device": config.device,
        "frames_per_clip": frames_per_clip,
        "frame_pixels": counts.get("pixels.clips", 0) / frames if frames else None,
        "stages": stages,
        "storage": storage,
        "node": _node_figures(stats, stages),
    }


def _node_figures(stats: Mapping[str, Any], stages: Mapping[str, Any]) -> dict[str, Any]:
    """How much the build overlapped its priced stages on its CPUs (see the module
    docstring), and with what pair pool; ``overlap`` None when it timed nothing."""
    pool = stats.get("pair_pool") or {}
    wall = stats.get("wall_s")
    priced = sum(float(entry["seconds"]) for entry in stages.values())
    return {
        "wall_s": wall,
        "stage_s": round(priced, 3),
        "overlap": round(priced / wall, 4) if wall and priced else None,
        "pair_pool": pool.get("kind"),
        "workers": pool.get("workers"),
        "cpus": pool.get("cpus"),
        "local_ranks": pool.get("local_ranks"),
    }


def load_rates(path: str | Path) -> dict[str, Any]:
    """A rates file written by ``pvtt build``; :class:`RatesError` names what is wrong."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RatesError(f"{path}: rates file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RatesError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != RATES_FORMAT:
        raise RatesError(f"{path}: not a pvtt rates file (format {RATES_FORMAT!r} expected)")
    stages = data.get("stages")
    if not isinstance(stages, dict):
        raise RatesError(f"{path}: 'stages' must be an object")
    for stage, entry in stages.items():
        if stage not in STAGES:
            raise RatesError(f"{path}: stages.{stage}: unknown stage; known: {list(STAGES)}")
        rate = entry.get("rate") if isinstance(entry, dict) else None
        if not isinstance(rate, int | float) or not rate > 0:
            raise RatesError(f"{path}: stages.{stage}.rate must be a positive number")
        if entry.get("unit") != stage_unit(stage, entry.get("backend")):
            raise RatesError(
                f"{path}: stages.{stage}.unit must be {stage_unit(stage, entry.get('backend'))!r}"
            )
    node = data.get("node", {})  # absent in rates files of builds before it was measured
    overlap = node.get("overlap") if isinstance(node, dict) else None
    if not isinstance(node, dict) or not (
        overlap is None or (isinstance(overlap, int | float) and overlap > 0)
    ):
        raise RatesError(f"{path}: node.overlap must be a positive number")
    return data


# -- pricing --------------------------------------------------------------------------------
def _section(config: BuildConfig, stage: str) -> BackendConfig | None:
    kind = STAGE_KIND.get(stage)
    return getattr(config, kind) if kind else None


def _scorer_seconds(section: BackendConfig, gpu: bool) -> float | None:
    """Seconds one pair takes in a scorer, from the CPU default and the H200 figures."""
    params = section.params
    if section.backend == "cpu":
        return 1.0 / CPU_DEFAULTS["score"]
    if not gpu:
        return None
    if section.backend == "vlm":
        return params.get("frames", 8) / H200_VLM_FPS
    if section.backend == "embedding":
        models = params.get("models", ["dinov2"])
        families = [models] if isinstance(models, str) else list(models)
        if any(f not in H200_CROPS_PER_S for f in families):
            return None
        crops = 2 * params.get("frames", 8)  # the insert and the cut-out on each sampled frame
        seconds = sum(crops / H200_CROPS_PER_S[f] for f in families)
        if params.get("with_statistics", True):
            seconds += 1.0 / CPU_DEFAULTS["score"]
        return seconds
    if section.backend == "composite":
        try:  # as built: the statistics scorer in one member only
            parts = [_scorer_seconds(m, gpu) for m in member_configs(section)]
        except ConfigError:  # the build will say what is wrong
            return None
        if not parts or None in parts:
            return None
        return sum(p for p in parts if p is not None)
    return None


def default_rate(stage: str, config: BuildConfig) -> Rate | None:
    """The documented default for ``stage`` under ``config``; None when there is none."""
    section = _section(config, stage)
    backend = section.backend if section else None
    unit = stage_unit(stage, backend)
    if backend in (None, "cpu"):
        pixels = CPU_FRAME_PIXELS if unit == "frames" else None
        return Rate(CPU_DEFAULTS[stage], unit, "default", "CPU, 2 cores, real footage", pixels)
    assert section is not None
    gpu = config.device.startswith("cuda")
    if stage == "detect" and backend == "grounding-dino" and gpu:
        stride = section.params.get("stride", 4)
        return Rate(
            H200_DETECT_FPS * stride,
            unit,
            "default",
            f"H200: {H200_DETECT_FPS} scanned frames/s, 1 in {stride} scanned; "
            "at most (the scan stops at the first confident frame)",
        )
    if stage == "segment" and backend == "sam2" and gpu:
        return Rate(H200_SAM2_FPS, unit, "default", "H200: SAM2 hiera-t, 720p, end to end")
    if stage == "score":
        seconds = _scorer_seconds(section, gpu)
        if seconds is not None:
            return Rate(
                1.0 / seconds,
                unit,
                "default",
                f"H200 figures for {backend}, CPU statistics scorer measured here",
            )
    return None


def stage_rate(stage: str, config: BuildConfig, measured: Mapping[str, Any] | None) -> Rate | None:
    """The rate file's figure when it ran ``stage`` with the config's backend (and model,
    when both name one) on the same kind of device; else the default; None if neither."""
    entry = (measured or {}).get("stages", {}).get(stage)
    if measured is not None and entry is not None:
        section = _section(config, stage)
        backend = section.backend if section else None
        same_device = str(measured.get("device", "cpu")).startswith("cuda") == (
            config.device.startswith("cuda")
        )
        same_backend = section is None or (
            entry.get("backend") == backend
            and (section.model is None or entry.get("model") in (None, section.model))
        )
        if same_device and same_backend:
            pixels = measured.get("frame_pixels") if _pixel_bound(stage, backend) else None
            return Rate(float(entry["rate"]), entry["unit"], "measured", "rates file", pixels)
    return default_rate(stage, config)


def _work(
    stage: str,
    unit: str,
    clips: Sequence[ClipSize],
    images: int,
    pairs: Sequence[PairSize],
    by_clip: Mapping[str, ClipSize],
) -> tuple[float, float]:
    """(work units, pixel-frames) of a stage: frame stages run once per clip (cut, detect,
    segment, inpaint), twice (decode source and background), once per pair (insert,
    write) or both (encode: source and background, then each synthesized clip)."""
    if unit == "images":
        return float(images), 0.0
    if unit == "pairs":
        return float(len(pairs)), 0.0
    if unit == "clips":
        return float(len(clips)), 0.0
    per_clip, per_pair = {
        "decode": (2, 0),
        "encode": (2, 1),
        "insert": (0, 1),
        "write": (0, 1),
    }.get(stage, (1, 0))
    frames = per_clip * sum(c.frames for c in clips)
    pixels = per_clip * sum(c.pixels for c in clips)
    if per_pair:
        frames += sum(by_clip[p.clip_id].frames for p in pairs)
        pixels += sum(by_clip[p.clip_id].pixels for p in pairs)
    return float(frames), float(pixels)


def price_stages(
    config: BuildConfig,
    clips: Sequence[ClipSize],
    images: int,
    pairs: Sequence[PairSize],
    measured: Mapping[str, Any] | None,
) -> list[StageCost]:
    """Hours of every stage (``hours`` None where no rate is known)."""
    by_clip = {c.clip_id: c for c in clips}
    used = {p.clip_id for p in pairs}
    worked = [c for c in clips if c.clip_id in used]  # a build prepares only clips with pairs
    gpu = config.device.startswith("cuda")
    out = []
    for stage in STAGES:
        section = _section(config, stage)
        backend = section.backend if section else None
        rate = stage_rate(stage, config, measured)
        unit = rate.unit if rate else stage_unit(stage, backend)
        work, pixel_frames = _work(stage, unit, worked, images, pairs, by_clip)
        hours = rate_here = None
        if rate is not None:
            scaled = pixel_frames / rate.frame_pixels if rate.frame_pixels else work
            hours = scaled / rate.value / 3600
            rate_here = rate.value * work / scaled if scaled else rate.value
        out.append(
            StageCost(
                stage=stage,
                backend=backend or "pvtt",
                processor="GPU" if gpu and backend not in (None, "cpu") else "CPU",
                unit=unit,
                work=work,
                rate=rate.value if rate else None,
                source=rate.source if rate else "none",
                note=rate.note
                if rate
                else "no default for this backend and device: "
                "pass --rates from a build that used it",
                hours=hours,
                rate_here=rate_here,
                frame_pixels=rate.frame_pixels if rate else None,
            )
        )
    return out


def bits_per_pixel(measured: Mapping[str, Any] | None) -> tuple[dict[str, float], dict[str, str]]:
    """The bits per pixel to size media with, and for each whether it is measured or default."""
    found = (measured or {}).get("storage", {})
    figures: dict[str, float] = {}
    sources: dict[str, str] = {}
    for name, default in DEFAULT_STORAGE.items():
        value = found.get(name)
        ok = isinstance(value, int | float) and value > 0
        figures[name] = float(value) if ok else default
        sources[name] = "measured" if ok else "default"
    return figures, sources


def estimate_storage(
    config: BuildConfig,
    clips: Sequence[ClipSize],
    images: Sequence[ImageSize],
    pairs: Sequence[PairSize],
    bpp: Mapping[str, float],
) -> dict[str, Any]:
    """Mean bytes per clip and per pair; totals of each Lance table, the shards, the cache.

    A clip is stored once (``clips`` table, cache) and its source video again in every tar
    sample; each product photo is stored once with its cut-out, the cut-out again in
    every sample that targets it.
    """
    by_clip = {c.clip_id: c for c in clips}
    used = {p.clip_id for p in pairs}

    def media(pixels: float, name: str) -> float:
        return pixels * bpp[f"{name}_bits_per_pixel"] / 8

    clip_media = {
        c.clip_id: (
            media(c.pixels, "source_video"),
            media(c.pixels, "background_video"),
            media(c.pixels, "masks"),
        )
        for c in clips
        if c.clip_id in used
    }
    cutouts = {i.image_id: media(i.width * i.height, "cutouts") for i in images}
    out = config.output
    members = 4 + int(out.tar_background) + int(out.tar_masks)  # json, synth, source, target
    synth_total = tar = lance_pairs = 0.0
    for p in pairs:
        clip = by_clip[p.clip_id]
        source, background, masks = clip_media[p.clip_id]
        synth = media(clip.pixels, "synth_video")
        synth_total += synth
        lance_pairs += synth + LANCE_ROW_BYTES + BOX_BYTES * clip.frames
        tar += (
            synth
            + source
            + cutouts[p.image_id]
            + SAMPLE_JSON_BYTES
            + BOX_JSON_BYTES * clip.frames
            + members * TAR_MEMBER_BYTES
            + background * out.tar_background
            + masks * out.tar_masks
        )
    lance_clips = sum(
        sum(m) + LANCE_ROW_BYTES + BOX_BYTES * by_clip[k].frames for k, m in clip_media.items()
    )
    lance_products = sum(i.file_bytes + cutouts[i.image_id] + LANCE_ROW_BYTES for i in images)
    lance = lance_pairs + lance_clips + lance_products
    n_clips, n_pairs = max(len(clip_media), 1), max(len(pairs), 1)
    return {
        "per_clip_bytes": {
            name: sum(m[i] for m in clip_media.values()) / n_clips
            for i, name in enumerate(("source_video", "background_video", "masks"))
        },
        "per_pair_bytes": {"synth_video": synth_total / n_pairs, "tar_sample": tar / n_pairs},
        "lance_bytes": {
            "pairs": lance_pairs,
            "clips": lance_clips,
            "products": lance_products,
            "total": lance,
        },
        "tar_bytes": tar,
        "dataset_bytes": lance * ("lance" in out.formats) + tar * ("tar" in out.formats),
        "cache_bytes": sum(sum(m) for m in clip_media.values()) + sum(cutouts.values()),
        "formats": sorted(out.formats),
    }


def clip_size(clip_id: str, shot: Shot, info: VideoInfo, config: BuildConfig) -> ClipSize:
    """The frames and frame size the build's cut gives ``shot`` (what ``read_frames``
    decodes for the range ``builder.clips`` cuts: at most ``shots.max_duration_s``)."""
    end = shot.end_frame
    if config.shots.max_duration_s:
        fps_guess = shot.frame_count / max(shot.duration_s, 1e-6)
        end = min(end, shot.start_frame + int(round(config.shots.max_duration_s * fps_guess)))
    rate = target_rate(info, config.clip.fps)
    frames = round(Fraction(end - shot.start_frame) / info.frame_rate * rate)
    width, height = output_size(info, (config.clip.max_width, config.clip.max_height))
    return ClipSize(clip_id, int(frames), width, height)


def estimate(
    config: BuildConfig,
    clips: Sequence[ClipSize],
    images: Sequence[ImageSize],
    pairs: Sequence[PairSize],
    measured: Mapping[str, Any] | None = None,
) -> Estimate:
    """Counts, difficulty mix, hours per stage and storage of the planned clips, images
    and pairs, priced with ``measured`` rates (a loaded rates file) where they apply."""
    stages = price_stages(config, clips, len(images), pairs, measured)
    bpp, sources = bits_per_pixel(measured)
    by_clip = {c.clip_id: c for c in clips}
    mix = Counter(p.difficulty for p in pairs)
    return Estimate(
        clips=len(clips),
        clip_frames=sum(c.frames for c in clips),
        images=len(images),
        pairs=len(pairs),
        pair_frames=sum(by_clip[p.clip_id].frames for p in pairs),
        difficulty={d: mix[d] for d in ("easy", "medium", "hard", "expert")},
        stages=stages,
        gpu_hours=sum(s.hours or 0.0 for s in stages if s.processor == "GPU"),
        cpu_hours=sum(s.hours or 0.0 for s in stages if s.processor == "CPU"),
        unpriced=[s.stage for s in stages if s.hours is None and s.work],
        storage=estimate_storage(config, clips, images, pairs, bpp),
        bits_per_pixel=bpp,
        bits_per_pixel_source=sources,
    )


@dataclass(frozen=True)
class NodePlan:
    """The wall time of a build on one node of ``ranks`` build processes (one per GPU)."""

    ranks: int
    cpus: int
    workers_per_rank: int
    overlap: float
    """Priced stage-seconds a rank gets done per wall second."""
    overlap_source: str
    """``measured`` (the rates file's build) or ``none`` (stages one after another)."""
    measured_with: dict[str, Any]
    """The pool, workers and CPUs of the build that measured ``overlap`` (empty if none)."""
    wall_hours: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def node_plan(
    est: Estimate, measured: Mapping[str, Any] | None, *, ranks: int, cpus: int, workers: int
) -> NodePlan:
    """Wall hours of ``est`` on a node of ``ranks`` ranks sharing ``cpus`` CPUs, each making
    pairs on ``workers``: the priced hours over the measured overlap (or none) and the
    ranks, which split the clips evenly. Unpriced stages are left out, as in the totals."""
    node = (measured or {}).get("node") or {}
    overlap = node.get("overlap")
    source = "measured" if overlap else "none"
    with_keys = ("pair_pool", "workers", "cpus", "local_ranks")
    return NodePlan(
        ranks=ranks,
        cpus=cpus,
        workers_per_rank=workers,
        overlap=float(overlap or 1.0),
        overlap_source=source,
        measured_with={k: node.get(k) for k in with_keys} if overlap else {},
        wall_hours=(est.gpu_hours + est.cpu_hours) / float(overlap or 1.0) / ranks,
    )


def human_bytes(n: float) -> str:
    """Decimal units, as ``du --si`` and disk vendors count."""
    units = ("B", "KB", "MB", "GB", "TB", "PB")
    step = 0
    while abs(n) >= 1000 and step < len(units) - 1:
        n /= 1000
        step += 1
    return f"{n:.0f} B" if step == 0 else f"{n:.1f} {units[step]}"


def human_hours(hours: float | None) -> str:
    if hours is None:
        return "?"
    if hours < 1 / 60:
        return f"{hours * 3600:.1f} s"
    if hours < 1:
        return f"{hours * 60:.1f} min"
    return f"{hours:,.1f} h" if math.isfinite(hours) else "inf"
