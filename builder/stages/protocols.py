"""The small protocols every model stage is written against.

The pipeline only knows these protocols: a weight-free CPU backend and a model
backend (Grounding DINO, SAM2, rembg, diffusers, ...) are interchangeable as long
as they take and return the types below. Frames are always RGB ``uint8`` arrays
``T x H x W x 3``; masks are ``bool`` arrays ``T x H x W``; boxes are ``float32``
arrays ``T x 4`` of ``[x0, y0, x1, y1]`` in pixels, ``nan`` where a frame has no box.

Every backend carries an identity (:class:`BackendInfo`): its name, version and the
parameters that change its output. The identity goes into the cache key of the
stage's artefacts and into the ``backends`` column of every pair, so a change of
backend or setting reruns exactly the stages it affects.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class BackendInfo:
    """Who produced an artefact: enough to reproduce it and to key its cache."""

    kind: str
    name: str
    version: str
    model: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"backend": self.name, "version": self.version}
        if self.model is not None:
            out["model"] = self.model
        if self.params:
            out["params"] = self.params
        return out

    def fingerprint(self) -> str:
        """A short stable hash of the identity, for cache keys."""
        blob = json.dumps({"kind": self.kind, **self.as_dict()}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Prompt:
    """What the detector should look for in a clip."""

    text: str
    box: tuple[float, float, float, float] | None = None
    """A user-given box on the clip's first frame (``first_frame_box`` in the catalog)."""


@dataclass(frozen=True)
class Detection:
    """A box of the product on one frame of the clip, the seed of the track."""

    frame_index: int
    box: tuple[float, float, float, float]
    score: float
    label: str = ""


@dataclass(frozen=True)
class Track:
    """The product's masks and boxes over every frame of a clip.

    ``masks_bytes``: the masks as :func:`pvtt.schemas.masks.encode_masks` encodes them, when
    the segmenter encoded them while tracking (None: the caller encodes them).
    """

    masks: np.ndarray
    boxes: np.ndarray
    masks_bytes: bytes | None = None

    def __post_init__(self) -> None:
        if self.masks.dtype != np.bool_ or self.masks.ndim != 3:
            raise ValueError(
                f"masks must be bool T x H x W, got {self.masks.dtype} {self.masks.shape}"
            )
        if self.boxes.shape != (self.masks.shape[0], 4):
            raise ValueError(
                f"boxes must be T x 4 for T={self.masks.shape[0]}, got {self.boxes.shape}"
            )


class StageRejected(Exception):
    """A stage decided this input cannot yield usable data (not a crash).

    The reason becomes a row of the build report; the build goes on.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@runtime_checkable
class Backend(Protocol):
    """What every backend has: its identity."""

    info: BackendInfo


@runtime_checkable
class Detector(Backend, Protocol):
    def detect(self, frames: np.ndarray, prompt: Prompt) -> Detection:
        """The product's box on one frame; raises :class:`StageRejected` when not found."""
        ...


@runtime_checkable
class Segmenter(Backend, Protocol):
    def segment(self, frames: np.ndarray, detection: Detection) -> Track:
        """Masks and boxes on every frame, propagated both ways from ``detection``.

        Raises :class:`StageRejected` when the product is lost.
        """
        ...


def check_frames_and_masks(frames: np.ndarray, masks: np.ndarray) -> None:
    """Raise ValueError unless ``frames`` is uint8 T x H x W x 3 and ``masks`` bool T x H x W."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 T x H x W x 3, got {frames.dtype} {frames.shape}")
    if masks.dtype != np.bool_ or masks.shape != frames.shape[:3]:
        raise ValueError(f"masks must be bool {frames.shape[:3]}, got {masks.dtype} {masks.shape}")


@runtime_checkable
class Inpainter(Backend, Protocol):
    def inpaint(self, frames: np.ndarray, masks: np.ndarray) -> np.ndarray:
        """The clip with the masked product removed (same shape and dtype as ``frames``)."""
        ...


@runtime_checkable
class Matter(Backend, Protocol):
    def matte(self, image: np.ndarray) -> np.ndarray:
        """An RGBA ``H x W x 4`` uint8 cut-out of the product in an RGB image (not trimmed)."""
        ...


@dataclass(frozen=True)
class InsertionInput:
    """Everything an inserter may use; a simple compositor needs only the first three."""

    background: np.ndarray
    cutout: np.ndarray
    boxes: np.ndarray
    source_frames: np.ndarray | None = None
    source_masks: np.ndarray | None = None
    fps: float = 30.0
    seed: int = 0


@runtime_checkable
class Inserter(Backend, Protocol):
    def insert(self, job: InsertionInput) -> np.ndarray:
        """The synthesized clip, ``T x H x W x 3`` uint8, with the cut-out along ``boxes``."""
        ...


@dataclass(frozen=True)
class ScoringInput:
    """A synthesized clip and what it was made from."""

    synth: np.ndarray
    background: np.ndarray
    cutout: np.ndarray
    boxes: np.ndarray
    fps: float = 30.0


SCORE_NAMES = ("identity", "temporal", "lighting", "overall")


@runtime_checkable
class Scorer(Backend, Protocol):
    def score(self, sample: ScoringInput) -> dict[str, float | None]:
        """Scores in [0, 1] keyed by names of :data:`SCORE_NAMES`; missing ones are not run."""
        ...


@runtime_checkable
class BatchReporting(Protocol):
    """A backend that batches work across calls says how full its batches were.

    Optional: the build report carries these figures (``batching`` in
    ``statistics.json``) so a user can tell whether cross-pair batching pays.
    """

    def batch_stats(self) -> dict[str, dict[str, float]]:
        """Per batched model: calls, batches, items, largest and mean batch."""
        ...
