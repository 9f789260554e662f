"""Per-clip work: cut the shot, find and track the product, estimate the background.

Each artefact is cached under a key that chains its inputs: the clip key hashes
the video's bytes and the cut settings; the track key adds the detector and
segmenter identities; the background key adds the inpainter's. Downstream stages
always use the frames decoded from the stored clip, so a cached run and a fresh
run produce the same pairs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pvtt.builder.boxes import masks_to_boxes
from pvtt.builder.cache import ArtifactCache, cache_key
from pvtt.builder.catalog import Product
from pvtt.builder.report import BuildReport
from pvtt.builder.stages.checks import clip_checks
from pvtt.builder.stages.protocols import Detector, Inpainter, Prompt, Segmenter, StageRejected
from pvtt.builder.stages.shots import Shot
from pvtt.builder.video import decode_video_bytes, encode_mp4, probe, read_frames
from pvtt.schemas.config import BuildConfig
from pvtt.schemas.masks import FORMAT_VERSION as MASKS_FORMAT
from pvtt.schemas.masks import decode_masks, encode_masks

CLIP_STAGE_VERSION = "1"


@dataclass
class ClipArtefacts:
    """Everything the pair stages need from one clip, decoded."""

    clip_id: str
    product: Product
    shot_index: int
    shot: Shot
    frames: np.ndarray
    fps: float
    masks: np.ndarray
    boxes: np.ndarray
    background: np.ndarray
    source_video: bytes
    background_video: bytes
    masks_bytes: bytes
    detection: dict
    """The prompt the track started from: frame, box, score, label (recorded per clip)."""
    checks: dict[str, float] | None = None
    """The hard checks of the clip alone (:func:`~pvtt.builder.stages.checks.clip_checks`),
    made once when the clip is prepared; None: each pair makes them."""


@dataclass(frozen=True)
class ClipBackends:
    detector: Detector
    segmenter: Segmenter
    inpainter: Inpainter


def clip_end(shot: Shot, config: BuildConfig) -> int:
    """The frame after the last one of the clip cut from ``shot``: long shots are cut to
    ``shots.max_duration_s``. Near-duplicate detection samples the same frames."""
    if not config.shots.max_duration_s:
        return shot.end_frame
    fps_guess = shot.frame_count / max(shot.duration_s, 1e-6)
    return min(shot.end_frame, shot.start_frame + int(round(config.shots.max_duration_s * fps_guess)))


def _cut(video_digest: str, product: Product, shot: Shot, config: BuildConfig,
         cache: ArtifactCache, report: BuildReport) -> tuple[str, bytes, float, tuple[int, int]]:
    """The clip's cache key, the normalised clip (mp4 bytes), its fps, and the display
    size of the source it was scaled from (to map a catalog box onto the clip)."""
    c = config.clip
    end = clip_end(shot, config)
    key = cache_key("clip", CLIP_STAGE_VERSION, video_digest, shot.start_frame, end,
                    c.max_width, c.max_height, c.fps, c.crf, c.preset, c.keyframe_interval)
    hit = cache.get(key)
    if hit is not None:
        meta, blobs = hit
        return key, blobs["video"], meta["fps"], tuple(meta["scale_from"])
    with report.timed("cut"):
        frames, fps = read_frames(product.video, shot.start_frame, end,
                                  max_size=(c.max_width, c.max_height), fps=c.fps)
    if len(frames) < 2:
        raise StageRejected(f"shot {shot.start_frame}-{shot.end_frame} decodes to {len(frames)} frames")
    with report.timed("encode"):
        data = encode_mp4(frames, fps, crf=c.crf, preset=c.preset, keyframe_interval=c.keyframe_interval)
    scale_from = list(probe(product.video).display_size)
    cache.put(key, {"fps": float(fps), "scale_from": scale_from}, {"video": data})
    return key, data, float(fps), tuple(scale_from)


def prepare_clip(
    product: Product,
    shot_index: int,
    shot: Shot,
    clip_id: str,
    video_digest: str,
    backends: ClipBackends,
    config: BuildConfig,
    cache: ArtifactCache,
    report: BuildReport,
) -> ClipArtefacts:
    """Run (or fetch from the cache) the per-clip stages; raises StageRejected."""
    clip_key, video, fps, scale_from = _cut(video_digest, product, shot, config, cache, report)
    with report.timed("decode"):
        frames, _ = decode_video_bytes(video)
    height, width = frames.shape[1:3]
    box = None
    if product.first_frame_box is not None and shot.start_frame == 0:
        sx, sy = width / scale_from[0], height / scale_from[1]
        x0, y0, x1, y1 = product.first_frame_box
        box = (x0 * sx, y0 * sy, x1 * sx, y1 * sy)
    prompt = Prompt(text=product.prompt or product.subcategory, box=box)

    track_key = cache_key("track", clip_key, prompt.text, prompt.box, MASKS_FORMAT,
                          backends.detector.info.fingerprint(), backends.segmenter.info.fingerprint())
    hit = cache.get(track_key)
    if hit is not None:
        meta, blobs = hit
        if meta.get("rejected"):
            raise StageRejected(meta["rejected"])
        masks = decode_masks(blobs["masks"])
        masks_bytes = blobs["masks"]
        detection_info = json.loads(meta["detection"])
    else:
        try:
            with report.timed("detect"):
                detection = backends.detector.detect(frames, prompt)
            with report.timed("segment"):
                track = backends.segmenter.segment(frames, detection)
        except StageRejected as exc:
            cache.put(track_key, {"rejected": exc.reason}, {})
            raise
        masks = track.masks
        masks_bytes = track.masks_bytes if track.masks_bytes is not None else encode_masks(masks)
        detection_info = {
            "frame_index": detection.frame_index, "box": [float(v) for v in detection.box],
            "score": float(detection.score), "label": detection.label,
        }
        cache.put(track_key, {"detection": json.dumps(detection_info)}, {"masks": masks_bytes})
    boxes = masks_to_boxes(masks)

    bg_key = cache_key("background", track_key, backends.inpainter.info.fingerprint(),
                       config.clip.crf, config.clip.preset, config.clip.keyframe_interval)
    hit = cache.get(bg_key)
    if hit is not None:
        background_video = hit[1]["video"]
    else:
        with report.timed("inpaint"):
            background = backends.inpainter.inpaint(frames, masks)
        with report.timed("encode"):
            background_video = encode_mp4(background, fps, crf=config.clip.crf,
                                          preset=config.clip.preset,
                                          keyframe_interval=config.clip.keyframe_interval)
        cache.put(bg_key, {}, {"video": background_video})
    with report.timed("decode"):
        background, _ = decode_video_bytes(background_video)
    with report.timed("clip-check"):  # "check" counts the pairs' own
        checks = clip_checks(frames, masks, background, detection_info)
    return ClipArtefacts(
        clip_id=clip_id, product=product, shot_index=shot_index, shot=shot, frames=frames,
        fps=fps, masks=masks, boxes=boxes, background=background, source_video=video,
        background_video=background_video, masks_bytes=masks_bytes, detection=detection_info,
        checks=checks,
    )


def relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
