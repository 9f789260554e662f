"""Per-pair work: adapt the box track to the target, insert it, score it, judge it, encode it.

Encoding is a step of its own (:func:`encode_pair`) so that a build can hand it to other
threads than those that insert and score (``encode_workers``) and go on feeding the GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from pvtt.builder.boxes import adapt_box_to_aspect, interpolate_missing, smooth_boxes
from pvtt.builder.clips import ClipArtefacts
from pvtt.builder.pairs import PairPlan
from pvtt.builder.products import ProductArtefacts
from pvtt.builder.report import BuildReport
from pvtt.builder.stages.checks import clip_checks, insert_visibility
from pvtt.builder.stages.protocols import Inserter, InsertionInput, Scorer, ScoringInput
from pvtt.builder.stages.quality import judge
from pvtt.builder.video import encode_mp4
from pvtt.schemas.config import BuildConfig
from pvtt.schemas.records import PairRecord


def target_boxes(clip: ClipArtefacts, aspect: float, smoothing: int) -> np.ndarray:
    """The source track reshaped to the target's aspect (centre and area kept), smoothed."""
    height, width = clip.frames.shape[1:3]
    return track_to_target(clip.boxes, (width, height), aspect, smoothing)


def track_to_target(track: np.ndarray, frame_size: tuple[int, int], aspect: float,
                    smoothing: int) -> np.ndarray:
    """:func:`target_boxes` of a bare track on frames of ``frame_size = (width, height)``."""
    width, height = frame_size
    boxes = interpolate_missing(track)
    boxes = adapt_box_to_aspect(boxes, aspect, (width, height))
    if smoothing > 1:
        boxes = smooth_boxes(boxes, smoothing)
        boxes = adapt_box_to_aspect(boxes, aspect, (width, height))  # re-clamp after smoothing
    return boxes


def run_checks(clip: ClipArtefacts, product: ProductArtefacts, synth: np.ndarray,
               boxes: np.ndarray) -> dict[str, float]:
    """The hard checks of :mod:`pvtt.builder.stages.checks` on one pair's artefacts: the
    clip's own come with the clip and the cut-out's with the product (each made once), the
    insert's is the pair's."""
    if clip.checks is None:
        clip.checks = clip_checks(clip.frames, clip.masks, clip.background, clip.detection)
    return {
        **clip.checks,
        "insert": insert_visibility(synth, clip.background, product.cutout, boxes),
        "cutout": product.completeness,
    }


@dataclass(frozen=True)
class SynthesizedPair:
    """A pair inserted, scored and judged but not encoded: its record, whose
    ``synth_video`` is still None, and the synthesized frames."""

    record: PairRecord
    synth: np.ndarray


def make_pair(
    plan: PairPlan,
    clip: ClipArtefacts,
    product: ProductArtefacts,
    inserter: Inserter,
    scorer: Scorer,
    config: BuildConfig,
    report: BuildReport,
    *,
    build_id: str,
    backends_json: str,
    seed: int,
    target_image: str,
) -> PairRecord:
    """One pair from start to end: :func:`synthesize_pair`, then :func:`encode_pair`."""
    made = synthesize_pair(
        plan, clip, product, inserter, scorer, config, report,
        build_id=build_id, backends_json=backends_json, seed=seed, target_image=target_image,
    )  # fmt: skip
    return encode_pair(made, config, report)


def encode_pair(made: SynthesizedPair, config: BuildConfig, report: BuildReport) -> PairRecord:
    """The record with its synthesized clip encoded (H.264 at the clip settings)."""
    with report.timed("encode"):
        video = encode_mp4(made.synth, made.record.fps, crf=config.clip.crf,
                           preset=config.clip.preset,
                           keyframe_interval=config.clip.keyframe_interval)  # fmt: skip
    return replace(made.record, synth_video=video)


def synthesize_pair(
    plan: PairPlan,
    clip: ClipArtefacts,
    product: ProductArtefacts,
    inserter: Inserter,
    scorer: Scorer,
    config: BuildConfig,
    report: BuildReport,
    *,
    build_id: str,
    backends_json: str,
    seed: int,
    target_image: str,
) -> SynthesizedPair:
    """Insert, score, check and judge one pair; the clip is left to :func:`encode_pair`."""
    boxes = target_boxes(clip, product.aspect, config.pairs.box_smoothing)
    job = InsertionInput(
        background=clip.background, cutout=product.cutout, boxes=boxes,
        source_frames=clip.frames, source_masks=clip.masks, fps=clip.fps, seed=seed,
    )
    with report.timed("insert"):
        synth = inserter.insert(job)
    with report.timed("score"):
        scores = scorer.score(
            ScoringInput(synth=synth, background=clip.background, cutout=product.cutout,
                         boxes=boxes, fps=clip.fps)
        )
    with report.timed("check"):
        checks = run_checks(clip, product, synth, boxes)
    verdict = judge(scores, config.quality.threshold, config.quality.weights, checks)
    frames, height, width = synth.shape[:3]
    source = plan.source
    target = plan.target.product
    record = PairRecord(
        pair_id=plan.pair_id, clip_id=clip.clip_id, source_id=source.id,
        shot_index=clip.shot_index, target_id=target.id,
        target_image=target_image, source_category=source.category,
        source_subcategory=source.subcategory, target_category=target.category,
        target_subcategory=target.subcategory, difficulty=plan.difficulty.value,
        difficulty_level=plan.difficulty.level,
        score_identity=scores.get("identity"), score_temporal=scores.get("temporal"),
        score_lighting=scores.get("lighting"), score_overall=scores.get("overall"),
        score_removal=checks["removal"], score_mask=checks["mask"],
        score_insert=checks["insert"], score_cutout=checks["cutout"],
        quality_score=verdict.quality_score, passed=verdict.passed,
        reject_reason=verdict.reject_reason, frame_count=frames, width=width, height=height,
        fps=clip.fps, duration_s=frames / clip.fps,
        target_boxes=[tuple(float(v) for v in b) for b in boxes], synth_video=None,
        build_id=build_id, backends=backends_json,
    )
    return SynthesizedPair(record, synth)
