"""Pair fidelity benchmark: every stage of a build judged against pairs whose truth is known.

Run (from a checkout; the media are ``tests/data``)::

    python -m pvtt.tools.bench.fidelity [--split held-out|tuning|all] [--quick] [--json FILE]

Each case of :mod:`pvtt.tools.bench.fidelity_truth` (a clip with true masks and a true
clean plate, and a product photo with a true alpha) goes through the build's own per-clip,
per-image and per-pair functions (:func:`~pvtt.builder.clips.prepare_clip`,
:func:`~pvtt.builder.products.prepare_image`, :func:`~pvtt.builder.synthesis.make_pair`),
with the backends a build config names (the CPU backends by default; ``--config`` or
``--set segmenter.backend=sam2`` pick any registered backend). The clip is handed to the
build as a lossless file, so the stages see what a build sees: its H.264 re-encode.

Metrics, per case (definitions in the functions below):

- **segmentation**: mask IoU per frame (mean and 5th percentile), boundary F-measure
  (DAVIS: boundaries matched within 0.8 % of the diagonal), missed and extra area;
- **background**: PSNR and SSIM against the true plate inside the removed region (the
  true mask dilated by 1 % of the frame width), and **residue** (:func:`residue`);
- **cut-out**: alpha IoU against the true alpha (alpha >= 0.5 both), missed and extra area;
- **insertion**: the synthesized clip against the ideal pair (the true cut-out pasted onto
  the true plate along the boxes the build derives from the true masks), PSNR and SSIM
  in the union of the ideal and the built boxes, and the IoU of those boxes (in the
  ``relit`` family the ideal pair's cut-out is under the scene's light);
- **lighting**: the scorer's lighting score of a matched and a mismatched insert
  (:mod:`pvtt.tools.bench.fidelity_lighting`), and the AUC between them.

Stages are also judged alone (``*_oracle`` metrics, unless ``--no-oracle``): the inpainter
on the true masks, and the inserter on the true plate, cut-out and boxes, so that a weak
stage is told apart from one fed bad input.

Each pair is labelled **defective** when any ``DEFECT_*`` threshold is crossed, else
**good**; the gate (the build's ``passed``) is measured against those labels. The goals of
issue 14 are the ``GOAL_*`` constants. A clip or photo the build rejects yields no pair:
it fails the goals of its stages and is counted apart from the gate's figures.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import tempfile
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from pvtt.builder.boxes import iou as mask_ious
from pvtt.builder.cache import ArtifactCache, file_digest
from pvtt.builder.catalog import Product
from pvtt.builder.clips import ClipArtefacts, ClipBackends, prepare_clip
from pvtt.builder.pairs import ImageRef, PairPlan
from pvtt.builder.products import load_rgb, prepare_image
from pvtt.builder.registry import create_backend
from pvtt.builder.report import BuildReport
from pvtt.builder.stages.checks import CHECK_NAMES
from pvtt.builder.stages.cutout import cutout_aspect
from pvtt.builder.stages.protocols import Backend, InsertionInput, StageRejected
from pvtt.builder.stages.shots import Shot
from pvtt.builder.synthesis import make_pair, target_boxes
from pvtt.builder.video import decode_video_bytes, encode_mp4, mux_frames
from pvtt.schemas.config import BuildConfig, ConfigError, load_config
from pvtt.schemas.keys import clip_id as make_clip_id
from pvtt.schemas.keys import pair_id as make_pair_id
from pvtt.schemas.taxonomy import Taxonomy
from pvtt.tools.bench.fidelity_lighting import lighting_line, lighting_probe, separation
from pvtt.tools.bench.fidelity_truth import (
    FAMILIES,
    FRAMES,
    HELD_OUT_EVERY,
    PHOTO_SIZE,
    SIZE,
    CaseSpec,
    TruthCase,
    case_specs,
    generate_case,
    ideal_composite,
    relit_cutout,
)
from pvtt.tools.bench.media import test_media_dir

# -- thresholds -----------------------------------------------------------------------

GOAL_MASK_IOU, GOAL_MASK_SHARE = 0.85, 0.90
"""Issue 14: mask IoU (clip mean) >= 0.85 on >= 90 % of clips."""
GOAL_PLATE_PSNR, GOAL_PLATE_SHARE = 30.0, 0.80
"""Clean-plate PSNR inside the removed region >= 30 dB on >= 80 % of clips."""
RESIDUE_MAX, GOAL_RESIDUE_SHARE = 0.05, 0.90
"""Residue below 5 % on >= 90 % of clips."""
GOAL_ALPHA_IOU, GOAL_ALPHA_SHARE = 0.90, 0.90
"""Cut-out alpha IoU >= 0.9 on >= 90 % of photos."""
GOAL_GATE_RECALL, GOAL_GATE_KEEP = 0.95, 0.80
"""The gate rejects >= 95 % of defective pairs and keeps >= 80 % of good ones."""

DEFECT_MASK_IOU = 0.70
"""A pair is defective when its clip's mean mask IoU is below this: the wrong region
(part of the product, or a slab of background) is what the build removes and replaces."""
DEFECT_RESIDUE = 0.15
"""... or more than this share of the source product's visible pixels stays in the plate."""
DEFECT_PLATE_PSNR = 22.0
"""... or the plate inside the removed region is below this (smears and ghosts)."""
DEFECT_ALPHA_IOU = 0.80
"""... or the cut-out's alpha IoU is below this (lost parts, or background kept)."""
DEFECT_BOX_IOU = 0.60
"""... or the target is inserted off place or size: box IoU with the ideal boxes below this."""
DEFECT_INSERT_SSIM = 0.50
"""... or the inserted region's SSIM against the ideal pair is below this."""

RESIDUE_CONTRAST = 30.0
"""RGB distance (0..441) between the source clip and the true plate from which a product
pixel counts as visible; fainter product pixels cannot be told from the plate."""
REGION_DILATE = 0.01
"""The removed region is the true mask dilated by this fraction of the frame width (>= 2 px)."""
BOUNDARY_TOLERANCE = 0.008
"""Boundary F-measure tolerance, as a fraction of the frame diagonal (as DAVIS)."""
INSERT_MARGIN_PX = 2
"""Pixels around the union of ideal and built boxes that the insertion metrics include."""
PSNR_CAP = 100.0
"""PSNR of identical images (infinite) is reported as this."""
QUICK = {"size": (192, 108), "frames": 12, "photo_size": 160, "seeds": 1}
"""``--quick``: tiny clips, one seed per family (seed 0, held out)."""


# -- metrics --------------------------------------------------------------------------


def frame_ious(estimate: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """IoU of two ``T x H x W`` bool mask stacks per frame (1.0 where both are empty)."""
    return np.atleast_1d(mask_ious(estimate, truth))


def _boundary(mask: np.ndarray) -> np.ndarray:
    """The mask's inner boundary pixels (the frame's border is not a boundary)."""
    m = mask.astype(np.uint8)
    eroded = cv2.erode(m, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE)
    return (m - eroded).astype(bool)


def boundary_f(estimate: np.ndarray, truth: np.ndarray, tolerance: float) -> float:
    """Boundary F-measure of two ``H x W`` masks: boundary pixels of each within
    ``tolerance`` px of the other's (precision, recall), harmonic mean; 1 for two empty
    masks, 0 when one is empty."""
    be, bt = _boundary(estimate), _boundary(truth)
    if not be.any() and not bt.any():
        return 1.0
    if not be.any() or not bt.any():
        return 0.0
    to_truth = cv2.distanceTransform((~bt).astype(np.uint8), cv2.DIST_L2, 3)
    to_estimate = cv2.distanceTransform((~be).astype(np.uint8), cv2.DIST_L2, 3)
    precision = float((to_truth[be] <= tolerance).mean())
    recall = float((to_estimate[bt] <= tolerance).mean())
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def psnr(estimate: np.ndarray, truth: np.ndarray, region: np.ndarray | None = None) -> float:
    """PSNR in dB of uint8 images over ``region`` (bool, the images' leading shape), pooled
    over every pixel and channel; :data:`PSNR_CAP` when identical, ``nan`` for no pixel."""
    a, b = estimate.astype(np.float64), truth.astype(np.float64)
    if region is not None:
        a, b = a[region], b[region]
    if a.size == 0:
        return math.nan
    mse = float(np.mean((a - b) ** 2))
    return PSNR_CAP if mse == 0 else min(PSNR_CAP, 10 * math.log10(255.0**2 / mse))


def ssim_map(estimate: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-pixel SSIM (Wang et al. 2004: Gaussian window sigma 1.5, K = 0.01, 0.03) of two
    ``H x W x 3`` uint8 images, averaged over the channels."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    a, b = estimate.astype(np.float64), truth.astype(np.float64)

    def blur(x: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(x, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return (num / den).mean(axis=-1)


def ssim(estimate: np.ndarray, truth: np.ndarray, region: np.ndarray | None = None) -> float:
    """Mean SSIM of ``T x H x W x 3`` clips over ``region`` (``T x H x W``; every pixel when
    None), windows taken on whole frames; ``nan`` for an empty region."""
    values = []
    for t in range(len(truth)):
        if region is not None and not region[t].any():
            continue
        frame = ssim_map(estimate[t], truth[t])
        values.append(frame[region[t]] if region is not None else frame.ravel())
    return float(np.concatenate(values).mean()) if values else math.nan


def removed_region(masks: np.ndarray) -> np.ndarray:
    """The true masks dilated by :data:`REGION_DILATE` of the frame width (at least 2 px):
    where the product was, with the edge an inpainter must blend."""
    radius = max(2, round(REGION_DILATE * masks.shape[2]))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return np.stack([cv2.dilate(m.astype(np.uint8), kernel).astype(bool) for m in masks])


def residue(estimate: np.ndarray, source: np.ndarray, plate: np.ndarray,
            masks: np.ndarray) -> float:
    """How much of the source product is still in ``estimate`` (the built clean plate).

    Over the product's visible pixels (true mask, and the source differs from the true
    plate by more than :data:`RESIDUE_CONTRAST` in RGB), the share whose estimate is closer
    to the source clip (the product's appearance) than to the true plate. The source clip
    itself scores 1, the true plate 0; a product indistinguishable from its background
    everywhere scores 0 (nothing of it can be seen).
    """
    s, p, e = (x.astype(np.float32) for x in (source, plate, estimate))
    visible = masks & (np.linalg.norm(s - p, axis=-1) > RESIDUE_CONTRAST)
    if not visible.any():
        return 0.0
    to_source = np.linalg.norm(e[visible] - s[visible], axis=-1)
    to_plate = np.linalg.norm(e[visible] - p[visible], axis=-1)
    return float((to_source < to_plate).mean())


def coverage_errors(estimate: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Missed (share of the true area not covered) and extra (share of the estimated area
    outside the truth), pooled over all pixels."""
    true_area, est_area = int(truth.sum()), int(estimate.sum())
    missed = float((truth & ~estimate).sum() / true_area) if true_area else 0.0
    extra = float((estimate & ~truth).sum() / est_area) if est_area else 0.0
    return missed, extra


def box_ious(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of two ``T x 4`` box tracks per frame; 1 where both are ``nan``, 0 where one is."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    fa, fb = np.isfinite(a).all(axis=1), np.isfinite(b).all(axis=1)
    x0, y0 = np.maximum(a[:, 0], b[:, 0]), np.maximum(a[:, 1], b[:, 1])
    x1, y1 = np.minimum(a[:, 2], b[:, 2]), np.minimum(a[:, 3], b[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda z: (z[:, 2] - z[:, 0]) * (z[:, 3] - z[:, 1])  # noqa: E731
    with np.errstate(invalid="ignore", divide="ignore"):
        out = inter / (area(a) + area(b) - inter)
    out = np.where(fa & fb, np.nan_to_num(out), 0.0)
    return np.where(~fa & ~fb, 1.0, out)


def boxes_region(boxes: Sequence[np.ndarray], shape: tuple[int, int, int],
                 margin: int = INSERT_MARGIN_PX) -> np.ndarray:
    """``T x H x W`` bool: the union of each frame's boxes (from several tracks), grown by
    ``margin`` px and clipped to the frame."""
    count, height, width = shape
    region = np.zeros(shape, bool)
    for track in boxes:
        for t in range(count):
            box = track[t]
            if not np.isfinite(box).all():
                continue
            x0, y0 = max(0, math.floor(box[0]) - margin), max(0, math.floor(box[1]) - margin)
            x1, y1 = min(width, math.ceil(box[2]) + margin), min(height, math.ceil(box[3]) + margin)
            region[t, y0:y1, x0:x1] = True
    return region


# -- running the build's stages -------------------------------------------------------

STAGE_KINDS = ("detector", "segmenter", "inpainter", "matter", "inserter", "scorer")
ORACLE_METRICS = ("plate_psnr_oracle", "plate_ssim_oracle", "residue_oracle",
                  "insert_psnr_oracle", "insert_ssim_oracle")
"""Stages alone on true inputs: the inpainter given the true masks, the inserter given the
true plate, cut-out and boxes."""


@dataclass
class Stages:
    """The backends and settings of one build config, made as a build makes them."""

    config: BuildConfig
    backends: dict[str, Backend]

    @classmethod
    def from_config(cls, config: BuildConfig) -> Stages:
        backends = {kind: create_backend(kind, getattr(config, kind), config.device)
                    for kind in STAGE_KINDS}
        return cls(config, backends)

    def describe(self) -> dict[str, dict[str, Any]]:
        return {kind: backend.info.as_dict() for kind, backend in self.backends.items()}


@dataclass
class BuiltPair:
    """What the build made of one case (``None`` past the stage that rejected it)."""

    alpha: np.ndarray
    """The matter's alpha on the whole photo, uint8 ``H x W``."""
    clip: ClipArtefacts | None = None
    synth: np.ndarray | None = None
    boxes: np.ndarray | None = None
    verdict: dict[str, Any] = field(default_factory=dict)
    lost: str | None = None
    """``"clip: reason"``, ``"matte: reason"`` or ``"pair: reason"`` when no pair came out."""
    seconds: dict[str, float] = field(default_factory=dict)
    oracle_plate: np.ndarray | None = None
    """The inpainter's plate from the true masks (encoded and decoded as a build stores it)."""
    oracle_synth: np.ndarray | None = None
    """The inserter's clip from the true plate, cut-out and boxes (encoded and decoded)."""


def write_lossless(path: Path, frames: np.ndarray, fps: float) -> None:
    """The clip as FFV1 in Matroska: the build's decoder reads it back bit-exact."""
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream("ffv1", rate=rate)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "bgr0"
        mux_frames(out, stream, frames, rate)


def _png(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("PNG encoding failed")
    return data.tobytes()


def build_pair(case: TruthCase, stages: Stages, workdir: Path, cache: ArtifactCache,
               prompt_box: bool = True) -> BuiltPair:
    """Run the build's clip, image and pair functions on ``case``, as a build runs them.

    The source product gets the true first-frame box as its catalog ``first_frame_box``
    when ``prompt_box`` (as the demo catalog gives one), else only its text prompt.
    """
    config, backends = stages.config, stages.backends
    report = BuildReport()
    cid = case.spec.case_id
    video = workdir / f"{cid}.mkv"
    photo_path = workdir / f"{cid}-photo.png"
    write_lossless(video, case.clip.frames, case.clip.fps)
    photo_path.write_bytes(_png(case.photo.image))
    first_box = tuple(float(v) for v in case.clip.boxes[0]) if prompt_box else None
    source = Product(id=f"{cid}-src", category=case.source.category,
                     subcategory=case.source.subcategory, video=video, images=(photo_path,),
                     prompt=case.source.prompt, first_frame_box=first_box, row=1)
    target = Product(id=f"{cid}-tgt", category=case.target.category,
                     subcategory=case.target.subcategory, video=video, images=(photo_path,),
                     prompt=case.target.prompt, first_frame_box=None, row=2)
    alpha = backends["matter"].matte(load_rgb(photo_path.read_bytes(), str(photo_path)))[..., 3]
    built = BuiltPair(alpha=alpha)
    count = len(case.clip.frames)
    shot = Shot(0, count, 0.0, count / case.clip.fps)
    clip_key = make_clip_id(source.id, 0)
    try:
        built.clip = prepare_clip(source, 0, shot, clip_key, file_digest(video),
                                  ClipBackends(backends["detector"], backends["segmenter"],
                                               backends["inpainter"]),
                                  config, cache, report)
    except StageRejected as exc:
        built.lost = f"clip: {exc.reason}"
    ref = ImageRef(target, photo_path, "photo", 0)
    try:
        product = prepare_image(ref, backends["matter"], cache, report)
    except StageRejected as exc:
        built.lost = built.lost or f"matte: {exc.reason}"
        product = None
    if built.clip is not None and product is not None:
        pair_key = make_pair_id(clip_key, target.id, ref.token)
        difficulty = Taxonomy.default().difficulty(source.category, source.subcategory,
                                                   target.category, target.subcategory)
        plan = PairPlan(pair_key, clip_key, source, ref, difficulty)
        try:
            record = make_pair(plan, built.clip, product, backends["inserter"], backends["scorer"],
                               config, report, build_id="fidelity", backends_json="{}",
                               seed=zlib.crc32(pair_key.encode()) ^ config.pairs.seed,
                               target_image=photo_path.name)
        except StageRejected as exc:
            built.lost = f"pair: {exc.reason}"
        else:
            built.synth = decode_video_bytes(record.synth_video)[0]
            built.boxes = np.asarray(record.target_boxes, np.float32)
            built.verdict = {
                "passed": bool(record.passed), "quality_score": float(record.quality_score),
                "reject_reason": record.reject_reason,
                "scores": {f.name.removeprefix("score_"): getattr(record, f.name)
                           for f in fields(record) if f.name.startswith("score_")},
            }
    built.seconds = {k: round(v, 3) for k, v in report.seconds.items()}
    return built


def run_oracles(case: TruthCase, built: BuiltPair, stages: Stages) -> None:
    """Each stage alone on true inputs: the inpainter on the true masks (of the frames the
    build decoded), the inserter on the true plate, cut-out and ideal boxes."""
    clip, config = built.clip, stages.config
    if clip is None:
        return
    crf = config.clip.crf
    started = time.perf_counter()
    plate = stages.backends["inpainter"].inpaint(clip.frames, case.clip.masks)
    every = config.clip.keyframe_interval
    built.oracle_plate = decode_video_bytes(
        encode_mp4(plate, clip.fps, crf=crf, keyframe_interval=every))[0]
    job = InsertionInput(
        background=case.clip.plate, cutout=case.photo.cutout,
        boxes=ideal_boxes(case, clip, config.pairs.box_smoothing),
        source_frames=case.clip.frames, source_masks=case.clip.masks, fps=clip.fps, seed=0,
    )
    synth = stages.backends["inserter"].insert(job)
    built.oracle_synth = decode_video_bytes(
        encode_mp4(synth, clip.fps, crf=crf, keyframe_interval=every))[0]
    built.seconds["oracles"] = round(time.perf_counter() - started, 3)


# -- judging --------------------------------------------------------------------------


def ideal_boxes(case: TruthCase, clip: ClipArtefacts, smoothing: int) -> np.ndarray:
    """The boxes the build would derive from the true masks for the true cut-out."""
    truth = replace(clip, boxes=case.clip.boxes)
    return target_boxes(truth, cutout_aspect(case.photo.cutout), smoothing)


def ideal_pair(case: TruthCase, boxes: np.ndarray) -> np.ndarray:
    """The perfect synthesized clip: the true cut-out, under the scene's light, on the true
    plate along ``boxes``."""
    cutout = relit_cutout(case.photo.cutout, case.clip.light)
    return ideal_composite(case.clip.plate, cutout, boxes)


def measure(case: TruthCase, built: BuiltPair, config: BuildConfig) -> dict[str, Any]:
    """Every metric of one case; a stage that did not run leaves its metrics ``None``."""
    truth = case.clip
    metrics: dict[str, Any] = {}
    true_alpha = case.photo.alpha >= 0.5
    est_alpha = built.alpha >= 128
    metrics["alpha_iou"] = float(mask_ious(est_alpha, true_alpha))
    metrics["alpha_missed"], metrics["alpha_extra"] = coverage_errors(est_alpha, true_alpha)
    clip = built.clip
    for key in ("mask_iou", "mask_iou_p5", "boundary_f", "mask_missed", "mask_extra",
                "plate_psnr", "plate_ssim", "residue", "insert_psnr", "insert_ssim", "box_iou",
                *ORACLE_METRICS):
        metrics[key] = None
    metrics["frame_iou"] = None
    if clip is None:
        return metrics
    if clip.masks.shape != truth.masks.shape:
        raise ValueError(
            f"{case.spec.case_id}: the build's clip has masks {clip.masks.shape}, "
            f"the truth {truth.masks.shape}"
        )
    masks = truth.masks
    ious = frame_ious(clip.masks, masks)
    height, width = masks.shape[1:]
    tolerance = BOUNDARY_TOLERANCE * math.hypot(width, height)
    metrics["frame_iou"] = [round(float(v), 4) for v in ious]
    metrics["mask_iou"] = float(ious.mean())
    metrics["mask_iou_p5"] = float(np.percentile(ious, 5))
    metrics["boundary_f"] = float(np.mean([boundary_f(e, t, tolerance)
                                           for e, t in zip(clip.masks, masks, strict=True)]))
    metrics["mask_missed"], metrics["mask_extra"] = coverage_errors(clip.masks, masks)
    region = removed_region(masks)
    metrics["plate_psnr"] = psnr(clip.background, truth.plate, region)
    metrics["plate_ssim"] = ssim(clip.background, truth.plate, region)
    metrics["residue"] = residue(clip.background, truth.frames, truth.plate, masks)
    if built.oracle_plate is not None:
        metrics["plate_psnr_oracle"] = psnr(built.oracle_plate, truth.plate, region)
        metrics["plate_ssim_oracle"] = ssim(built.oracle_plate, truth.plate, region)
        metrics["residue_oracle"] = residue(built.oracle_plate, truth.frames, truth.plate, masks)
    ideal_track = ideal_boxes(case, clip, config.pairs.box_smoothing)
    ideal = ideal_pair(case, ideal_track)
    if built.oracle_synth is not None:
        where = boxes_region([ideal_track], masks.shape)
        metrics["insert_psnr_oracle"] = psnr(built.oracle_synth, ideal, where)
        metrics["insert_ssim_oracle"] = ssim(built.oracle_synth, ideal, where)
    if built.synth is not None and built.boxes is not None:
        where = boxes_region([ideal_track, built.boxes], masks.shape)
        metrics["insert_psnr"] = psnr(built.synth, ideal, where)
        metrics["insert_ssim"] = ssim(built.synth, ideal, where)
        metrics["box_iou"] = float(box_ious(built.boxes, ideal_track).mean())
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in metrics.items()}


DEFECTS: tuple[tuple[str, str, float], ...] = (
    ("mask_iou", "<", DEFECT_MASK_IOU),
    ("residue", ">", DEFECT_RESIDUE),
    ("plate_psnr", "<", DEFECT_PLATE_PSNR),
    ("alpha_iou", "<", DEFECT_ALPHA_IOU),
    ("box_iou", "<", DEFECT_BOX_IOU),
    ("insert_ssim", "<", DEFECT_INSERT_SSIM),
)
"""The label's checks: metric, direction, threshold."""


def label(metrics: dict[str, Any], lost: str | None = None) -> tuple[bool, list[str]]:
    """``(defective, reasons)``: every ``DEFECTS`` check the pair fails, or that it was lost."""
    reasons = [f"no pair ({lost})"] if lost else []
    for name, sense, threshold in DEFECTS:
        value = metrics.get(name)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if (value < threshold) if sense == "<" else (value > threshold):
            reasons.append(f"{name} {value:.3g} {sense} {threshold:g}")
    return bool(reasons), reasons


def run_case(spec: CaseSpec, stages: Stages, workdir: Path, cache: ArtifactCache,
             data_dir: Path, size: tuple[int, int] = SIZE, frames: int = FRAMES,
             photo_size: int = PHOTO_SIZE, prompt_box: bool = True,
             sheets: Path | None = None, oracle: bool = True) -> dict[str, Any]:
    """Generate, build, measure and label one case: its JSON-ready result."""
    started = time.perf_counter()
    case = generate_case(spec, data_dir, size, frames, photo_size)
    generated = time.perf_counter() - started
    try:
        built = build_pair(case, stages, workdir, cache, prompt_box)
    finally:  # the lossless clip is large; the build's cache keeps what it made of it
        for name in (f"{spec.case_id}.mkv", f"{spec.case_id}-photo.png"):
            (workdir / name).unlink(missing_ok=True)
    if oracle:
        run_oracles(case, built, stages)
    metrics = measure(case, built, stages.config)
    metrics.update(lighting_probe(case, stages.backends["scorer"], stages.config.pairs.box_smoothing))
    defective, reasons = label(metrics, built.lost)
    if sheets is not None:
        sheets.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(sheets / f"{spec.case_id}.png"),
                    cv2.cvtColor(contact_sheet(case, built, stages.config), cv2.COLOR_RGB2BGR))
    return {
        "case": spec.case_id, "family": spec.family, "seed": spec.seed, "split": spec.split,
        "notes": case.notes, "metrics": metrics, "defective": defective, "reasons": reasons,
        "lost": built.lost, **built.verdict,
        "seconds": {"generate": round(generated, 3), **built.seconds,
                    "total": round(time.perf_counter() - started, 3)},
    }


def contact_sheet(case: TruthCase, built: BuiltPair, config: BuildConfig) -> np.ndarray:
    """One picture of a case: per row (middle frame, worst-IoU frame) source, true plate,
    built plate, masks (green truth, red built, yellow both), ideal pair, built pair; then
    the photo, its true and built alpha."""
    truth = case.clip
    count, height, width = truth.masks.shape
    blank = np.zeros((height, width, 3), np.uint8)
    clip = built.clip
    picks = [count // 2]
    if clip is not None:
        picks.append(int(np.argmin(frame_ious(clip.masks, truth.masks))))
    ideal = None
    if clip is not None and built.synth is not None:
        ideal = ideal_pair(case, ideal_boxes(case, clip, config.pairs.box_smoothing))
    rows = []
    for t in picks:
        overlay = blank.copy()
        overlay[truth.masks[t], 1] = 255
        if clip is not None:
            overlay[clip.masks[t], 0] = 255
        tiles = [truth.frames[t], truth.plate[t],
                 clip.background[t] if clip is not None else blank, overlay,
                 ideal[t] if ideal is not None else blank,
                 built.synth[t] if built.synth is not None else blank]
        rows.append(np.hstack(tiles))
    ph, pw = case.photo.image.shape[:2]
    scale = height / ph
    size = (max(1, round(pw * scale)), height)

    def fit(img: np.ndarray) -> np.ndarray:
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        return img if img.ndim == 3 else cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)

    photo_row = np.hstack([fit(case.photo.image), fit((case.photo.alpha * 255).astype(np.uint8)),
                           fit(built.alpha)])
    full = rows[0].shape[1]
    photo_row = np.pad(photo_row[:, :full], ((0, 0), (0, max(0, full - photo_row.shape[1])), (0, 0)))
    sheet = np.vstack([*rows, photo_row])
    cv2.putText(sheet, case.spec.case_id, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 0), 1)
    return sheet


# -- summaries ------------------------------------------------------------------------

TABLE_METRICS = (
    ("mask IoU", "mask_iou"), ("IoU p5", "mask_iou_p5"), ("boundary F", "boundary_f"),
    ("plate PSNR", "plate_psnr"), ("plate SSIM", "plate_ssim"), ("residue", "residue"),
    ("alpha IoU", "alpha_iou"), ("insert PSNR", "insert_psnr"), ("insert SSIM", "insert_ssim"),
    ("box IoU", "box_iou"),
)
ORACLE_TABLE = (
    ("plate PSNR", "plate_psnr_oracle"), ("plate SSIM", "plate_ssim_oracle"),
    ("residue", "residue_oracle"), ("insert PSNR", "insert_psnr_oracle"),
    ("insert SSIM", "insert_ssim_oracle"),
)


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(values)) if values else None


def family_row(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Figures of a group of cases: frame IoU pooled over every frame (mean, 5th
    percentile), other metrics averaged over the cases that have them."""
    frames = [v for r in results for v in (r["metrics"]["frame_iou"] or [])]
    row: dict[str, Any] = {"cases": len(results)}
    for _, key in (*TABLE_METRICS, *ORACLE_TABLE):
        row[key] = _mean([r["metrics"].get(key) for r in results])
    row["mask_iou"] = float(np.mean(frames)) if frames else None
    row["mask_iou_p5"] = float(np.percentile(frames, 5)) if frames else None
    row["defective"] = sum(r["defective"] for r in results)
    row["passed"] = sum(bool(r.get("passed")) for r in results)
    row["lost"] = sum(r["lost"] is not None for r in results)
    row["seconds"] = _mean([r["seconds"]["total"] for r in results])
    return row


def _share(results: list[dict[str, Any]], ok: Any) -> tuple[int, int]:
    return sum(bool(ok(r["metrics"])) for r in results), len(results)


def goals(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 14's goals: the share of cases that reach each bar (a lost stage fails it)."""
    def at_least(key: str, bar: float) -> Any:
        return lambda m: m[key] is not None and m[key] >= bar

    rows = []
    for name, (hits, total), need in (
        (f"mask IoU >= {GOAL_MASK_IOU}", _share(results, at_least("mask_iou", GOAL_MASK_IOU)),
         GOAL_MASK_SHARE),
        (f"plate PSNR >= {GOAL_PLATE_PSNR:g} dB",
         _share(results, at_least("plate_psnr", GOAL_PLATE_PSNR)), GOAL_PLATE_SHARE),
        (f"residue < {RESIDUE_MAX}",
         _share(results, lambda m: m["residue"] is not None and m["residue"] < RESIDUE_MAX),
         GOAL_RESIDUE_SHARE),
        (f"alpha IoU >= {GOAL_ALPHA_IOU}", _share(results, at_least("alpha_iou", GOAL_ALPHA_IOU)),
         GOAL_ALPHA_SHARE),
    ):
        share = hits / total if total else 0.0
        rows.append({"goal": name, "target": need, "hits": hits, "cases": total,
                     "share": share, "met": share >= need})
    return rows


def gate(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The build's ``passed`` against the labels, over the pairs the build made: recall and
    precision of its rejections for defective pairs, and the share of good pairs it keeps;
    ``by_check``: per hard check, the pairs whose reject reason names it, and how many of
    those are defective (``quality``: the pairs the weighted mean alone rejected)."""
    made = [r for r in results if r["lost"] is None]
    bad = [r for r in made if r["defective"]]
    good = [r for r in made if not r["defective"]]
    rejected = [r for r in made if not r["passed"]]
    caught = sum(not r["passed"] for r in bad)
    kept_good = sum(bool(r["passed"]) for r in good)
    by_check = {}
    for name in (*CHECK_NAMES, "quality"):
        named = [r for r in rejected if _named(r["reject_reason"] or "", name)]
        by_check[name] = {"rejected": len(named), "defective": sum(r["defective"] for r in named)}
    return {
        "pairs": len(made), "defective": len(bad), "good": len(good), "rejected": len(rejected),
        "lost": len(results) - len(made),
        "recall": caught / len(bad) if bad else None,
        "precision": caught / len(rejected) if rejected else None,
        "good_kept": kept_good / len(good) if good else None,
        "met": bool(bad) and bool(good) and caught / len(bad) >= GOAL_GATE_RECALL
        and kept_good / len(good) >= GOAL_GATE_KEEP,
        "by_check": by_check,
    }


def _named(reason: str, check: str) -> bool:
    """Whether a reject reason (``"removal 0.412 > 0.300; mask ..."``) names ``check``."""
    return any(part.strip().startswith(f"{check} ") for part in reason.split(";"))


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per split: a row per family and overall, the goals and the gate."""
    out: dict[str, Any] = {}
    for split in ("held-out", "tuning"):
        chosen = [r for r in results if r["split"] == split]
        if not chosen:
            continue
        families = {f: [r for r in chosen if r["family"] == f] for f in FAMILIES}
        out[split] = {
            "families": {f: family_row(rs) for f, rs in families.items() if rs},
            "all": family_row(chosen),
            "goals": goals(chosen),
            "gate": gate(chosen),
            "lighting": separation(chosen),
        }
    return out


def _fmt(value: Any, key: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}" if "psnr" in key else f"{value:.2f}"
    return str(value)


def markdown(summary: dict[str, Any], backends: dict[str, dict[str, Any]]) -> str:
    """The summary as markdown: per split, the family table, the goals and the gate."""
    names = ", ".join(f"{kind} `{info['backend']}`" for kind, info in backends.items())
    lines = [f"Backends: {names}.", ""]
    for split, part in summary.items():
        seeds = f"seed % {HELD_OUT_EVERY} {'==' if split == 'held-out' else '!='} 0"
        lines += [f"**{split} split** ({part['all']['cases']} cases, {seeds})", ""]
        head = ["family", "cases", *(title for title, _ in TABLE_METRICS), "defective", "passed"]
        lines += ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
        for name, row in [*part["families"].items(), ("**all**", part["all"])]:
            cells = [name, str(row["cases"]), *(_fmt(row[key], key) for _, key in TABLE_METRICS),
                     str(row["defective"]), str(row["passed"])]
            lines.append("| " + " | ".join(cells) + " |")
        if any(part["all"][key] is not None for _, key in ORACLE_TABLE):
            lines += ["", "Stages alone on true inputs (inpainter: true masks; inserter: true "
                      "plate, cut-out and boxes):", ""]
            head = ["family", *(title for title, _ in ORACLE_TABLE)]
            lines += ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
            for name, row in [*part["families"].items(), ("**all**", part["all"])]:
                cells = [name, *(_fmt(row[key], key) for _, key in ORACLE_TABLE)]
                lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "| goal | on | measured | met |", "|---|---:|---:|---|"]
        for g in part["goals"]:
            lines.append(f"| {g['goal']} | >= {g['target']:.0%} of cases | {g['share']:.0%} "
                         f"({g['hits']}/{g['cases']}) | {'yes' if g['met'] else 'no'} |")
        gt = part["gate"]
        lines.append(f"| gate recall of defective >= {GOAL_GATE_RECALL}, good kept >= "
                     f"{GOAL_GATE_KEEP} | {gt['pairs']} pairs ({gt['defective']} defective) | "
                     f"recall {_fmt(gt['recall'])}, good kept {_fmt(gt['good_kept'])}, "
                     f"precision {_fmt(gt['precision'])} | {'yes' if gt['met'] else 'no'} |")
        caught = ", ".join(f"{name} {c['rejected']} ({c['defective']} defective)"
                           for name, c in gt["by_check"].items())
        lines.append(f"\nRejected by: {caught}.")
        if gt["lost"]:
            lines.append(f"\n{gt['lost']} case(s) made no pair (a stage rejected the clip or photo).")
        lines += ["", lighting_line(part["lighting"])]
        lines.append("")
    return "\n".join(lines)


# -- command line ---------------------------------------------------------------------


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, got {text!r}") from None
    return width, height


def _overrides(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set takes KEY=VALUE (e.g. segmenter.backend=sam2), got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("held-out", "tuning", "all"), default="held-out")
    parser.add_argument("--seeds", type=int, help="seeds per family, 0..N-1 (default 20, quick 1)")
    parser.add_argument("--families", help=f"comma list of: {', '.join(FAMILIES)}")
    parser.add_argument("--size", type=_size, help=f"clip WxH (default {SIZE[0]}x{SIZE[1]})")
    parser.add_argument("--frames", type=int, help=f"frames per clip (default {FRAMES})")
    parser.add_argument("--photo-size", type=int, help=f"photo long side (default {PHOTO_SIZE})")
    parser.add_argument("--quick", action="store_true", help="192x108 clips of 12 frames, seed 0")
    parser.add_argument("--config", type=Path, help="build.toml naming the backends")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, e.g. segmenter.backend=sam2 (repeatable)")
    parser.add_argument("--prompt", choices=("box", "text"), default="box",
                        help="give the true first-frame box as the catalog prompt, or text only")
    parser.add_argument("--no-oracle", action="store_true",
                        help="skip the stages alone on true inputs (one more inpaint per case)")
    parser.add_argument("--data", type=Path, default=test_media_dir(), help="the test media")
    parser.add_argument("--cache", type=Path, help="stage cache to reuse (default: temporary)")
    parser.add_argument("--sheets", type=Path, metavar="DIR", help="write a contact sheet per case")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write every figure here")
    parser.add_argument("--markdown", type=Path, metavar="FILE", help="write the tables here")
    args = parser.parse_args(argv)

    quick = QUICK if args.quick else {"size": SIZE, "frames": FRAMES, "photo_size": PHOTO_SIZE,
                                      "seeds": 20}
    size = args.size or quick["size"]
    frames = args.frames or quick["frames"]
    photo_size = args.photo_size or quick["photo_size"]
    seeds = args.seeds or quick["seeds"]
    families = tuple(f.strip() for f in args.families.split(",")) if args.families else FAMILIES
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        parser.error(f"unknown families {unknown}; known: {', '.join(FAMILIES)}")
    try:
        config = load_config(args.config, _overrides(args.set))
        stages = Stages.from_config(config)
    except ConfigError as exc:
        parser.error(str(exc))
    specs = case_specs(seeds, args.split, families)
    if not specs:
        parser.error(f"no case: split {args.split} has no seed below {seeds}")
    results = []
    with tempfile.TemporaryDirectory(prefix="pvtt-fidelity-") as tmp:
        workdir = Path(tmp)
        cache = ArtifactCache(args.cache or workdir / "cache")
        for number, spec in enumerate(specs, 1):
            result = run_case(spec, stages, workdir, cache, args.data, size, frames, photo_size,
                              args.prompt == "box", args.sheets, not args.no_oracle)
            results.append(result)
            m = result["metrics"]
            print(f"[{number}/{len(specs)}] {spec.case_id}: IoU {_fmt(m['mask_iou'])} "
                  f"PSNR {_fmt(m['plate_psnr'], 'psnr')} residue {_fmt(m['residue'])} "
                  f"alpha {_fmt(m['alpha_iou'])} box {_fmt(m['box_iou'])} -> "
                  f"{'defective' if result['defective'] else 'good'}, "
                  f"{'passed' if result.get('passed') else 'rejected'} "
                  f"({result['seconds']['total']:.1f} s)", file=sys.stderr, flush=True)
    summary = summarise(results)
    backends = stages.describe()
    text = markdown(summary, backends)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n", encoding="utf-8")
    if args.json:
        payload = {
            "size": list(size), "frames": frames, "photo_size": photo_size, "seeds": seeds,
            "prompt": args.prompt, "backends": backends, "config": config.to_dict(),
            "thresholds": {"defects": [list(d) for d in DEFECTS], "residue_max": RESIDUE_MAX,
                           "residue_contrast": RESIDUE_CONTRAST},
            "summary": summary, "cases": results,
        }
        buffer = io.StringIO()
        json.dump(payload, buffer, indent=1, default=float)
        args.json.write_text(buffer.getvalue(), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
