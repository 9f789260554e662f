"""Identity by image embeddings: does the insert look like the target product to DINOv2 / CLIP?

The statistics scorer's identity compares colours and structure, which harmonisation
and a small, blurred insert disturb; a self-supervised (DINOv2) or contrastive (CLIP)
embedding tolerates both and still separates one product from another. The regions
compared are the same as the statistics scorer's: on each sampled frame the box is cut
back out of the clip with the inserter's own placement
(:func:`pvtt.builder.stages.cutout.placement_matrix`) onto the cut-out's grid at the
box's resolution, and both it and the cut-out are laid over a neutral grey through
the cut-out's alpha, so the scene around the product does not count.

Temporal and lighting scores come from :class:`StatisticsScorer` (composed, not
copied) unless ``with_statistics`` is off, so this scorer is complete on its own.
``transformers`` is imported only in :func:`create`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from pvtt.builder.backends.cpu_scorer import (
    StatisticsScorer,
    box_on_grid,
    cutout_on_grid,
    frames_to_score,
)
from pvtt.builder.batching import MicroBatcher
from pvtt.builder.stages.protocols import BackendInfo, ScoringInput, StageRejected
from pvtt.schemas.config import BackendConfig, ConfigError

DEFAULT_MODEL = "facebook/dinov2-small"
DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch32"

COSINE_RANGES: dict[str, tuple[float, float]] = {"dinov2": (0.2, 0.8), "clip": (0.5, 0.9)}
"""The cosine mapped to 0 and to 1, per model family (``{family}_range`` params).

Set from published image-image similarities, not measured here (no weights offline):
DreamBooth (Ruiz et al., CVPR 2023, Table 1) reports a mean cosine between *different
real photos of the same subject* of 0.774 for DINO ViT-S/16 CLS tokens and 0.885 for
CLIP ViT image embeddings; unrelated objects sit roughly at 0.1-0.3 (DINO) and 0.4-0.6
(CLIP, whose embeddings share a large common component; rough figures, not from that
paper); DINOv2 is assumed to behave like DINO (not verified). So ``hi`` is about what the
same product reaches through a change of view and light, and ``lo`` about an
unrelated one. Recalibrate with a few matched / mismatched pairs of your catalog."""

_DEFAULT_IDS = {"dinov2": DEFAULT_MODEL, "clip": DEFAULT_CLIP_MODEL}


def cosine_to_score(cosine: float, lo: float, hi: float) -> float:
    """``clip((cosine - lo) / (hi - lo), 0, 1)``: ``lo`` and below is 0, ``hi`` and above 1."""
    return float(np.clip((cosine - lo) / (hi - lo), 0.0, 1.0))


@dataclass(frozen=True)
class EncoderSpec:
    """Which embedding model scores identity, with what weight, and how its cosine maps.

    ``family`` ``"dinov2"`` takes the model's pooled output (the layer-normed CLS
    token of a ``Dinov2Model``); ``"clip"`` the ``image_embeds`` of a
    ``CLIPVisionModelWithProjection``. ``model_id`` None is the family's default
    checkpoint, ``cos_range`` None its :data:`COSINE_RANGES` entry. ``weight`` is its
    share of the identity when several encoders score together.
    """

    family: str
    model_id: str | None = None
    weight: float = 1.0
    cos_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.family not in COSINE_RANGES:
            raise ValueError(
                f"unknown encoder family {self.family!r}; known: {sorted(COSINE_RANGES)}"
            )
        if self.model_id is None:
            object.__setattr__(self, "model_id", _DEFAULT_IDS[self.family])
        cos_range = COSINE_RANGES[self.family] if self.cos_range is None else self.cos_range
        if len(cos_range) != 2 or not -1.0 <= cos_range[0] < cos_range[1] <= 1.0:
            raise ValueError(
                f"{self.family}_range must be [lo, hi] with -1 <= lo < hi <= 1, got {cos_range}"
            )
        object.__setattr__(self, "cos_range", (float(cos_range[0]), float(cos_range[1])))
        if not self.weight > 0:
            raise ValueError(f"the weight of {self.family} must be positive, got {self.weight}")


@dataclass
class ImageEncoder:
    """An embedding model with its image processor, as :class:`EncoderSpec` asks."""

    spec: EncoderSpec
    model: Any
    processor: Any

    @property
    def input_size(self) -> int:
        """The side of the square image the model is fed (its processor's crop or size)."""
        processor = self.processor
        size = (
            processor.crop_size if getattr(processor, "do_center_crop", False) else processor.size
        )
        side = size.get("height") or size.get("shortest_edge")
        if not side:
            raise ValueError(f"cannot tell the input size of {self.spec.model_id!r} from {size}")
        return int(side)

    @property
    def fill(self) -> np.ndarray:
        """The processor's mean colour: the grey that normalises to zero, the model's 'nothing'."""
        return np.asarray(self.processor.image_mean, np.float32) * 255.0

    def embed(self, images: list[np.ndarray], batch_size: int, autocast: bool) -> np.ndarray:
        """Unit-length embeddings ``N x D`` of square uint8 RGB images of ``input_size``."""
        device = next(self.model.parameters()).device
        out = []
        for start in range(0, len(images), batch_size):
            pixels = self.processor(
                images=images[start : start + batch_size],
                do_resize=False,
                do_center_crop=False,
                return_tensors="pt",
            )["pixel_values"].to(device)
            with (
                torch.inference_mode(),
                torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast),
            ):
                result = self.model(pixel_values=pixels)
            vectors = result.image_embeds if self.spec.family == "clip" else result.pooler_output
            out.append(torch.nn.functional.normalize(vectors.float(), dim=-1).cpu().numpy())
        return np.concatenate(out)


@dataclass(frozen=True)
class _Pair:
    """The insert and the cut-out on one frame, on the same grid (the box's size, capped)."""

    region: np.ndarray
    """The clip under the box, warped onto the cut-out's grid, ``h x w x 3`` float32 RGB."""
    target: np.ndarray
    """The cut-out's colours on that grid, ``h x w x 3`` float32 RGB (not premultiplied)."""
    alpha: np.ndarray
    """The cut-out's alpha on that grid, ``h x w`` float32 in [0, 1]."""


class EmbeddingScorer:
    """Identity from embedding cosines; temporal and lighting from the statistics scorer.

    On up to ``frames`` frames spread over those with boxes (the statistics scorer's
    choice), the insert and the cut-out are resampled onto a grid of the box's size
    (long side at most ``compare_size``), composited over the encoder's mean grey by
    the cut-out's alpha, padded to a square and embedded; per encoder::

        identity_e = clip((mean over frames of cos(insert, cut-out) - lo) / (hi - lo), 0, 1)
        identity   = sum(weight_e * identity_e) / sum(weight_e)

    with ``(lo, hi)`` the encoder's ``cos_range`` (see :data:`COSINE_RANGES`).
    ``precision`` ``"bf16"`` autocasts on CUDA.

    The build scores several pairs at once, one per thread; their crops meet in a
    :class:`~pvtt.builder.batching.MicroBatcher` per encoder, so one forward embeds the
    frames of every pair (of any clip) waiting at that moment, up to ``batch_size``
    images. The composition of a batch depends on timing; a model's output for one image
    does not, up to the kernels' rounding (bf16 on CUDA: about 1e-3 of a cosine). Set
    ``batch_across_pairs`` false for one forward per pair.
    """

    def __init__(
        self,
        encoders: Sequence[ImageEncoder],
        *,
        frames: int = 8,
        batch_size: int = 64,
        batch_across_pairs: bool = True,
        compare_size: int = 224,
        with_statistics: bool = True,
        device: str = "cpu",
        precision: str = "bf16",
    ) -> None:
        if not encoders:
            raise ValueError("the embedding scorer needs at least one encoder (params.models)")
        families = [e.spec.family for e in encoders]
        if len(set(families)) != len(families):
            raise ValueError(f"one encoder per family, got {families}")
        if min(frames, batch_size) < 1 or compare_size < 8:
            raise ValueError(
                f"frames and batch_size must be >= 1 and compare_size >= 8, "
                f"got {frames}, {batch_size}, {compare_size}"
            )
        if precision not in ("bf16", "fp32"):
            raise ValueError(f"precision must be 'bf16' or 'fp32', got {precision!r}")
        for encoder in encoders:
            encoder.model = encoder.model.to(device).eval()
        self.encoders = list(encoders)
        self.frames = frames
        self.batch_size = batch_size
        self.compare_size = compare_size
        self.device = device
        self.precision = precision
        self.statistics = StatisticsScorer(frames=frames) if with_statistics else None
        autocast = precision == "bf16" and device.startswith("cuda")
        self.batchers = [
            MicroBatcher(
                functools.partial(_embed_list, encoder, batch_size, autocast),
                batch_size if batch_across_pairs else 1,  # one request (one pair) a forward
            )
            for encoder in self.encoders
        ]
        params: dict[str, Any] = {
            "encoders": {
                e.spec.family: {
                    "model": e.spec.model_id,
                    "weight": e.spec.weight,
                    "range": list(e.spec.cos_range),
                }
                for e in self.encoders
            },
            "frames": frames,
            "compare_size": compare_size,
            "precision": precision,
        }
        if self.statistics is not None:
            params["statistics"] = self.statistics.info.as_dict()
        self.info = BackendInfo(
            kind="scorer",
            name="embedding",
            version="1",
            model="+".join(str(e.spec.model_id) for e in self.encoders),
            params=params,
        )

    def score(self, sample: ScoringInput) -> dict[str, float | None]:
        """``identity`` in [0, 1]; with statistics also ``temporal`` and ``lighting``.

        Raises :class:`StageRejected` when no frame has a box on the frame.
        """
        synth, boxes, _valid, picked, cutout = frames_to_score(sample, self.frames)
        pairs = [self._pair(synth[t], boxes[t], cutout) for t in picked]
        pairs = [p for p in pairs if p is not None]
        if not pairs:
            raise StageRejected(
                "nothing to score: every box of the synthesized clip is off the frame"
            )
        result: dict[str, float | None] = {"identity": self._identity(pairs)}
        if self.statistics is not None:
            stats = self.statistics.score(sample)
            result["temporal"] = stats["temporal"]
            result["lighting"] = stats["lighting"]
        return result

    def batch_stats(self) -> dict[str, dict[str, float]]:
        """How full each encoder's forwards were (see :class:`MicroBatcher`)."""
        return {
            str(e.spec.model_id): b.stats.as_dict()
            for e, b in zip(self.encoders, self.batchers, strict=True)
        }

    def _identity(self, pairs: Sequence[_Pair]) -> float:
        """The weighted mean over encoders of their mapped mean cosine."""
        total = sum(e.spec.weight for e in self.encoders)
        mapped = [
            cosine_to_score(float(np.mean(self._cosines(e, b, pairs))), *e.spec.cos_range)
            for e, b in zip(self.encoders, self.batchers, strict=True)
        ]
        return sum(e.spec.weight * m for e, m in zip(self.encoders, mapped, strict=True)) / total

    def _cosines(
        self, encoder: ImageEncoder, batcher: MicroBatcher, pairs: Sequence[_Pair]
    ) -> np.ndarray:
        """Per pair, the cosine of the insert's and the cut-out's embeddings."""
        size, fill = encoder.input_size, encoder.fill
        images = []
        for pair in pairs:
            for rgb in (pair.region, pair.target):
                images.append(_square(_over(rgb, pair.alpha, fill), size, fill))
        vectors = np.stack(batcher(images)).reshape(len(pairs), 2, -1)
        return np.sum(vectors[:, 0] * vectors[:, 1], axis=1)

    def _pair(self, frame: np.ndarray, box: np.ndarray, cutout: np.ndarray) -> _Pair | None:
        """The insert and the cut-out on the box's grid (None if the box is off the frame)."""
        h, w = frame.shape[:2]
        x0, y0, x1, y1 = box
        if x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
            return None
        bw, bh = x1 - x0, y1 - y0
        fit = min(1.0, self.compare_size / max(bw, bh))
        cw, ch = max(8, round(bw * fit)), max(8, round(bh * fit))
        shrink = max(bw / cw, bh / ch)
        # anti-alias a shrinking resample: blur the box's neighbourhood only
        pad = math.ceil(1.5 * shrink) + 2
        ex0, ey0 = max(0, math.floor(x0) - pad), max(0, math.floor(y0) - pad)
        ex1, ey1 = min(w, math.ceil(x1) + pad), min(h, math.ceil(y1) + pad)
        area = frame[ey0:ey1, ex0:ex1].astype(np.float32)
        region = box_on_grid(area, box, (ex0, ey0), (cw, ch))
        target, a = cutout_on_grid(cutout, (cw, ch))
        return _Pair(region=region, target=target, alpha=np.clip(a, 0.0, 1.0))


def _embed_list(
    encoder: ImageEncoder, batch_size: int, autocast: bool, images: list[np.ndarray]
) -> list[np.ndarray]:
    """One embedding per image, as the batcher hands results back one per input."""
    return list(encoder.embed(images, batch_size, autocast))


def _over(rgb: np.ndarray, alpha: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """``rgb`` composited over the flat colour ``fill`` by ``alpha``."""
    return rgb * alpha[..., None] + fill * (1.0 - alpha[..., None])


def _square(rgb: np.ndarray, size: int, fill: np.ndarray) -> np.ndarray:
    """``rgb`` centred on a ``fill`` square (no crop, no stretch), resized to ``size``, uint8."""
    h, w = rgb.shape[:2]
    side = max(h, w)
    canvas = np.empty((side, side, 3), np.float32)
    canvas[:] = fill
    top, left = (side - h) // 2, (side - w) // 2
    canvas[top : top + h, left : left + w] = rgb
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    square = cv2.resize(canvas, (size, size), interpolation=interp)
    return np.clip(np.rint(square), 0, 255).astype(np.uint8)


_SCORER_PARAMS = {
    "frames",
    "batch_size",
    "batch_across_pairs",
    "compare_size",
    "with_statistics",
    "precision",
}


def _resolve(config: BackendConfig) -> tuple[list[EncoderSpec], dict[str, Any]]:
    """The encoders a config section asks for, and the scorer's remaining params."""
    params = dict(config.params)
    models = params.pop("models", ["dinov2"])
    if isinstance(models, str):
        models = [models]
    families = dict(models) if isinstance(models, Mapping) else {name: 1.0 for name in models}
    if not families:
        raise ConfigError(f"scorer.params.models is empty; choose from {sorted(COSINE_RANGES)}")
    if config.model is not None and len(families) > 1:
        raise ConfigError(
            "scorer.model is ambiguous with several encoders; set params.dinov2_model and "
            "params.clip_model instead"
        )
    specs = []
    for family, weight in families.items():
        model_id = params.pop(f"{family}_model", None)
        if config.model is not None:
            if model_id is not None:
                raise ConfigError(f"scorer.model and scorer.params.{family}_model are both set")
            model_id = config.model
        try:
            specs.append(
                EncoderSpec(family, model_id, float(weight), params.pop(f"{family}_range", None))
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f'scorer.params.models: {exc} (a list such as ["dinov2"], or a table of '
                f"weights such as {{ dinov2 = 0.5, clip = 0.5 }})"
            ) from None
    known = _SCORER_PARAMS | {f"{f}_{k}" for f in families for k in ("model", "range")}
    if set(params) - known:
        raise ConfigError(
            f"scorer.params: unknown keys {sorted(set(params) - known)} for the embedding scorer "
            f"with models {sorted(families)}; known: models, {', '.join(sorted(known))}"
        )
    return specs, params


def _from_pretrained(load: Any, spec: EncoderSpec, what: str) -> Any:
    """``load(model_id)``, with a missing or unreadable checkpoint as a :class:`ConfigError`."""
    try:
        return load(spec.model_id)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"scorer: cannot load the {spec.family} {what} from {spec.model_id!r} ({exc}). "
            f"Weights are never downloaded during a build: put them in the Hugging Face cache "
            f"beforehand (huggingface-cli download {spec.model_id}) or set "
            f"scorer.params.{spec.family}_model to a local directory holding the checkpoint."
        ) from None


def create(config: BackendConfig, device: str) -> EmbeddingScorer:
    """The scorer of a ``[scorer] backend = "embedding"`` section."""
    specs, params = _resolve(config)
    from transformers import AutoImageProcessor, AutoModel, CLIPVisionModelWithProjection

    loaders = {
        "dinov2": AutoModel.from_pretrained,
        "clip": CLIPVisionModelWithProjection.from_pretrained,
    }
    encoders = [
        ImageEncoder(
            spec,
            _from_pretrained(loaders[spec.family], spec, "model"),
            _from_pretrained(AutoImageProcessor.from_pretrained, spec, "image processor"),
        )
        for spec in specs
    ]
    try:
        return EmbeddingScorer(encoders, device=device, **params)
    except ValueError as exc:
        raise ConfigError(f"scorer.params: {exc}") from None


def weights(config: BackendConfig) -> list[str]:
    """The checkpoints a build with this section needs (``pvtt models check``)."""
    return [str(spec.model_id) for spec in _resolve(config)[0]]
