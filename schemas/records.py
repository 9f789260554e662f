"""Record types of the three tables; each validates itself when made.

A record that passes validation can be written by any sink: the sinks never check
values again. Media fields hold encoded bytes (mp4, png, the mask codec), never
decoded arrays, so records are cheap to keep in a write buffer.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import Any

from pvtt.schemas.keys import check_id, image_id, split_pair_id
from pvtt.schemas.tables import KEYFRAME_COLUMNS, MEDIA_COLUMNS
from pvtt.schemas.taxonomy import Difficulty
from pvtt.schemas.version import SCHEMA_VERSION

Box = tuple[float, float, float, float]
_MEDIA = frozenset(c for cols in MEDIA_COLUMNS.values() for c in cols)
_KEYFRAMES = frozenset(c for cols in KEYFRAME_COLUMNS.values() for c in cols)


class RecordError(ValueError):
    """A record whose values break the data contract."""


def _check_score(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    if not (0.0 <= value <= 1.0):
        raise RecordError(f"{name} must be in [0, 1] or null, got {value}")
    return value


def _check_boxes(name: str, boxes: Sequence[Sequence[float]] | None, frames: int) -> list[Box] | None:
    if boxes is None:
        return None
    out: list[Box] = []
    for i, box in enumerate(boxes):
        if len(box) != 4:
            raise RecordError(f"{name}[{i}] must have 4 numbers, got {len(box)}")
        x0, y0, x1, y1 = (float(v) for v in box)
        if not any(math.isnan(v) for v in (x0, y0, x1, y1)) and (x1 < x0 or y1 < y0):
            raise RecordError(f"{name}[{i}] = {box} has x1 < x0 or y1 < y0")
        out.append((x0, y0, x1, y1))
    if frames and len(out) != frames:
        raise RecordError(f"{name} has {len(out)} boxes for {frames} frames")
    return out


def _check_keyframes(name: str, frames: Sequence[int] | None, count: int) -> list[int] | None:
    """A keyframe index: ascending distinct frame numbers of the video, starting at 0."""
    if frames is None:
        return None
    try:
        if any(isinstance(f, bool) for f in frames):
            raise TypeError("a bool is no frame number")
        out = [operator.index(f) for f in frames]
    except TypeError:
        raise RecordError(f"{name} must hold whole frame numbers, got {list(frames)[:8]}") from None
    if not out or out[0] != 0:
        raise RecordError(f"{name} must start at frame 0 (a video starts with a keyframe)")
    if any(b <= a for a, b in zip(out, out[1:], strict=False)) or out[-1] >= count:
        raise RecordError(f"{name} must be ascending frame numbers below {count}, got {out[:8]}")
    return out


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class _Provenance:
    build_id: str = ""
    backends: str = "{}"
    schema_version: int = SCHEMA_VERSION
    created_at: datetime = field(default_factory=_now)

    def _check_provenance(self) -> None:
        if not self.build_id:
            raise RecordError("build_id is empty")
        if self.schema_version != SCHEMA_VERSION:
            raise RecordError(f"schema_version {self.schema_version} != {SCHEMA_VERSION}")
        try:
            json.loads(self.backends)
        except json.JSONDecodeError as exc:
            raise RecordError(f"backends is not JSON: {exc}") from None


@dataclass
class ProductRecord(_Provenance):
    """One product image: the original photo and its RGBA cut-out."""

    image_id: str = ""
    product_id: str = ""
    image_path: str = ""
    category: str = ""
    subcategory: str = ""
    width: int = 0
    height: int = 0
    aspect: float = 0.0
    image: bytes | None = None
    image_rgba: bytes | None = None

    def __post_init__(self) -> None:
        check_id(self.product_id, "product_id")
        token = self.image_id.split("__", 1)[-1]
        if self.image_id != image_id(self.product_id, token):
            raise RecordError(f"image_id {self.image_id!r} is not '{{product_id}}__{{image}}'")
        if self.width <= 0 or self.height <= 0 or not self.aspect > 0:
            raise RecordError(f"{self.image_id}: width, height and aspect must be positive")
        self._check_provenance()

    @property
    def key(self) -> str:
        return self.image_id


@dataclass
class ClipRecord(_Provenance):
    """One source clip (a kept shot) with its background, masks and boxes."""

    clip_id: str = ""
    source_id: str = ""
    shot_index: int = 0
    source_path: str = ""
    category: str = ""
    subcategory: str = ""
    start_frame: int = 0
    end_frame: int = 0
    frame_count: int = 0
    width: int = 0
    height: int = 0
    fps: float = 0.0
    duration_s: float = 0.0
    source_boxes: list[Box] | None = None
    masks_codec: str = ""
    source_keyframes: list[int] | None = None
    """Keyframes of ``source_video`` (None: the sinks index the video when they write it)."""
    background_keyframes: list[int] | None = None
    source_video: bytes | None = None
    background_video: bytes | None = None
    masks: bytes | None = None

    def __post_init__(self) -> None:
        check_id(self.clip_id, "clip_id")
        check_id(self.source_id, "source_id")
        if self.end_frame <= self.start_frame:
            raise RecordError(f"{self.clip_id}: end_frame must be after start_frame")
        if self.frame_count <= 0 or self.width <= 0 or self.height <= 0 or not self.fps > 0:
            raise RecordError(f"{self.clip_id}: frame_count, size and fps must be positive")
        self.source_boxes = _check_boxes("source_boxes", self.source_boxes, self.frame_count)
        for name in ("source_keyframes", "background_keyframes"):
            setattr(self, name, _check_keyframes(name, getattr(self, name), self.frame_count))
        self._check_provenance()

    @property
    def key(self) -> str:
        return self.clip_id


@dataclass
class PairRecord(_Provenance):
    """One training pair: a source clip with a target product inserted."""

    pair_id: str = ""
    clip_id: str = ""
    source_id: str = ""
    shot_index: int = 0
    target_id: str = ""
    target_image: str = ""
    source_category: str = ""
    source_subcategory: str = ""
    target_category: str = ""
    target_subcategory: str = ""
    difficulty: str = ""
    difficulty_level: int = -1
    score_identity: float | None = None
    score_temporal: float | None = None
    score_lighting: float | None = None
    score_overall: float | None = None
    score_removal: float | None = None
    score_mask: float | None = None
    score_insert: float | None = None
    score_cutout: float | None = None
    quality_score: float | None = None
    passed: bool = False
    reject_reason: str | None = None
    frame_count: int = 0
    width: int = 0
    height: int = 0
    fps: float = 0.0
    duration_s: float = 0.0
    target_boxes: list[Box] | None = None
    synth_keyframes: list[int] | None = None
    """Keyframes of ``synth_video`` (None: the sinks index the video when they write it)."""
    synth_video: bytes | None = None

    def __post_init__(self) -> None:
        clip, target, _token = split_pair_id(self.pair_id)
        if clip != self.clip_id or target != self.target_id:
            raise RecordError(
                f"pair_id {self.pair_id!r} does not match clip_id {self.clip_id!r} "
                f"and target_id {self.target_id!r}"
            )
        if self.source_id == self.target_id:
            raise RecordError(f"{self.pair_id}: a product is never paired with itself")
        try:
            difficulty = Difficulty(self.difficulty)
        except ValueError:
            raise RecordError(
                f"{self.pair_id}: difficulty {self.difficulty!r} is not one of "
                f"{[d.value for d in Difficulty]}"
            ) from None
        self.difficulty, level = difficulty.value, difficulty.level
        if self.difficulty_level != level:
            raise RecordError(
                f"{self.pair_id}: difficulty_level {self.difficulty_level} does not match "
                f"difficulty {self.difficulty!r} (level {level})"
            )
        for name in ("score_identity", "score_temporal", "score_lighting", "score_overall",
                     "score_removal", "score_mask", "score_insert", "score_cutout"):
            setattr(self, name, _check_score(name, getattr(self, name)))
        self.quality_score = _check_score("quality_score", self.quality_score)
        if self.passed and self.reject_reason:
            raise RecordError(f"{self.pair_id}: a passed pair has no reject_reason")
        if not self.passed and not self.reject_reason:
            raise RecordError(f"{self.pair_id}: a rejected pair needs a reject_reason")
        if self.frame_count <= 0 or self.width <= 0 or self.height <= 0 or not self.fps > 0:
            raise RecordError(f"{self.pair_id}: frame_count, size and fps must be positive")
        self.target_boxes = _check_boxes("target_boxes", self.target_boxes, self.frame_count)
        self.synth_keyframes = _check_keyframes(
            "synth_keyframes", self.synth_keyframes, self.frame_count
        )
        self._check_provenance()

    @property
    def key(self) -> str:
        return self.pair_id


def to_row(record: ProductRecord | ClipRecord | PairRecord) -> dict[str, Any]:
    """The record as a dict keyed by column name (media bytes included).

    Shallow: ``dataclasses.asdict`` deep-copies every box list, which cost the Lance
    sink 1.6 ms a pair (152 ms per 96 pairs against 0.8 ms) for values nobody mutates.
    """
    return {f.name: getattr(record, f.name) for f in fields(record)}


def scalar_dict(record: ProductRecord | ClipRecord | PairRecord) -> dict[str, Any]:
    """The JSON-ready scalar columns of a record: the ``{key}.json`` of a tar sample.

    Keyframe indexes are left out: a tar shard's index carries them, beside the offsets.
    """
    out: dict[str, Any] = {}
    for f in fields(record):
        if f.name in _MEDIA or f.name in _KEYFRAMES:
            continue
        value = getattr(record, f.name)
        if isinstance(value, datetime):
            value = value.isoformat()
        elif f.name.endswith("_boxes") and value is not None:
            value = [[None if math.isnan(v) else v for v in box] for box in value]
        out[f.name] = value
    return out


def record_from_mapping(cls: type, row: Mapping[str, Any]) -> Any:
    """Build a record of ``cls`` from a row, ignoring unknown columns (schema widening)."""
    names = {f.name for f in fields(cls)}
    kwargs = {k: v for k, v in row.items() if k in names}
    for name in ("target_boxes", "source_boxes"):
        if kwargs.get(name) is not None:
            kwargs[name] = [tuple(float("nan") if v is None else v for v in b) for b in kwargs[name]]
    return cls(**kwargs)
