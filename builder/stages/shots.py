"""Stage 1: split a product video into shots and keep those long enough to make clips.

Cuts come from PySceneDetect's API run with its defaults (PyAV backend, automatic
downscale, the detector's own settings unless given), so a shot list here equals the scene
list PySceneDetect reports for the same detector and settings, variable frame rate
included: frame numbers and times are the ones it reports.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from scenedetect import AdaptiveDetector, ContentDetector, SceneManager
from scenedetect.backends.pyav import VideoStreamAv
from scenedetect.video_stream import VideoOpenFailure

from pvtt.builder.video import VideoError, probe

log = logging.getLogger(__name__)

DETECTORS = ("content", "adaptive")


@dataclass(frozen=True)
class Shot:
    """One shot, ``[start_frame, end_frame)``; ``kept`` and ``reason`` come from the filter."""

    start_frame: int
    end_frame: int
    start_time: float
    end_time: float
    kept: bool = True
    reason: str | None = None

    @property
    def frame_count(self) -> int:
        return self.end_frame - self.start_frame

    @property
    def duration_s(self) -> float:
        return self.end_time - self.start_time


@dataclass(frozen=True)
class ShotConfig:
    """How shots are cut and which are long enough to keep (seed plan: >= 2 s, >= 50 frames)."""

    detector: str = "content"
    threshold: float | None = None
    """The detector's threshold (``threshold`` of ContentDetector, ``adaptive_threshold`` of
    AdaptiveDetector); ``None`` keeps PySceneDetect's default."""
    min_scene_len: int = 15
    min_duration_s: float = 2.0
    min_frames: int = 50

    def __post_init__(self) -> None:
        if self.detector not in DETECTORS:
            raise ValueError(f"detector must be one of {DETECTORS}, got {self.detector!r}")
        if self.threshold is not None and self.threshold <= 0:
            raise ValueError(f"threshold must be positive, got {self.threshold}")
        if self.min_scene_len < 1:
            raise ValueError(f"min_scene_len must be at least 1, got {self.min_scene_len}")
        if self.min_duration_s < 0 or self.min_frames < 0:
            raise ValueError("min_duration_s and min_frames must not be negative")


@dataclass(frozen=True)
class ShotList:
    """Every detected shot of one video, before and after the filter (see ``kept``)."""

    video: str
    fps: float
    frame_count: int
    """End of the last shot: the frame count in the units shots are numbered in (for
    variable-rate video PySceneDetect numbers frames by time, not by decoded frame)."""
    shots: list[Shot] = field(default_factory=list)

    @property
    def kept(self) -> list[Shot]:
        return [shot for shot in self.shots if shot.kept]

    def to_json(self) -> dict[str, Any]:
        """The ``pvtt shots --json`` object of the data contract."""
        return {
            "video": self.video,
            "fps": self.fps,
            "frame_count": self.frame_count,
            "shots": [asdict(shot) for shot in self.shots],
        }


def _detector(config: ShotConfig) -> ContentDetector | AdaptiveDetector:
    if config.detector == "adaptive":
        if config.threshold is None:
            return AdaptiveDetector(min_scene_len=config.min_scene_len)
        return AdaptiveDetector(
            adaptive_threshold=config.threshold, min_scene_len=config.min_scene_len
        )
    if config.threshold is None:
        return ContentDetector(min_scene_len=config.min_scene_len)
    return ContentDetector(threshold=config.threshold, min_scene_len=config.min_scene_len)


def filter_shots(shots: list[Shot], config: ShotConfig) -> list[Shot]:
    """Mark shots too short to make a training clip ``kept=False``, saying why."""
    out = []
    for shot in shots:
        reasons = []
        if shot.duration_s < config.min_duration_s:
            reasons.append(
                f"shorter than {float(config.min_duration_s)} s ({round(shot.duration_s, 2)} s)"
            )
        if shot.frame_count < config.min_frames:
            reasons.append(f"fewer than {config.min_frames} frames ({shot.frame_count})")
        out.append(replace(shot, kept=not reasons, reason="; ".join(reasons) or None))
    return out


def detect_shots(path: str | os.PathLike, config: ShotConfig | None = None) -> ShotList:
    """Cut ``path`` into shots with PySceneDetect and mark the ones the filter drops.

    A video without a cut is one shot. Raises :class:`VideoError` naming the file when it is
    not a usable video.
    """
    config = config or ShotConfig()
    name = os.fspath(path)
    probe(name)  # a clear error for a bad file before PySceneDetect's generic one
    try:
        # What scenedetect.open_video(path, backend="pyav") builds, minus its silent fallback
        # to OpenCV and its global switch of FFmpeg's log output to stderr.
        video = VideoStreamAv(name, suppress_output=True)
    except VideoOpenFailure as exc:
        raise VideoError(name, f"PySceneDetect cannot open it ({exc})") from exc
    manager = SceneManager()
    manager.add_detector(_detector(config))
    manager.detect_scenes(video)
    scenes = manager.get_scene_list(start_in_scene=True)
    shots = [
        Shot(
            start_frame=start.frame_num,
            end_frame=end.frame_num,
            start_time=start.seconds,
            end_time=end.seconds,
        )
        for start, end in scenes
    ]
    if not shots:
        raise VideoError(name, "PySceneDetect decoded no frames")
    log.debug("%s: %d shots with %s", name, len(shots), config)
    return ShotList(
        video=name,
        fps=float(video.frame_rate),
        frame_count=shots[-1].end_frame,
        shots=filter_shots(shots, config),
    )
