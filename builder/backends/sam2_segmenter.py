"""SAM2 video segmenter: the detection's box on one frame, the product's masks on every frame.

Install with one torch. SAM2's own requirements would pull a second torch (a multi-GB CUDA
build) and torchvision, and its CUDA extension is optional, so install its two real
dependencies first and SAM2 itself without dependencies::

    pip install hydra-core iopath
    SAM2_BUILD_CUDA=0 pip install --no-deps --no-build-isolation sam2==1.1.0

Frames stay in memory. ``SAM2VideoPredictor.init_state`` only reads a JPEG folder or an MP4
path, but the pipeline already holds the clip decoded; a JPEG round trip would cost time and
change the pixels. :func:`~pvtt.builder.backends.sam2_state.init_state_from_frames` builds
the same inference state from the frames array instead, making SAM2's normalised images
from it a window at a time when they are encoded (see :mod:`.sam2_state`). The masks come
back through a :class:`~pvtt.builder.backends.mask_collector.MaskCollector`, which boxes
and encodes each frame on a background thread while the tracking goes on, so the track
carries its encoded masks (``Track.masks_bytes``).

Weights: ``config.model`` is the path of a SAM2 checkpoint (Meta's ``sam2.1_hiera_tiny.pt``
and the like, or a bare state dict), read with ``torch.load(weights_only=True)`` only, and
``params.config`` must name the Hydra config it belongs to. Nothing is downloaded.
``random_weights = true`` builds an untrained model, for tests and benchmarks only.

Hole filling: SAM2's default post-processing fills small holes in the masks with its CUDA
extension (``sam2._C``), which the install above does not build; without it SAM2 warns on
every frame and fills nothing. ``fill_hole_area`` is therefore 0 unless set, and setting it
requires the extension.

Speed: SAM2 runs its image encoder on one frame per tracking step, which leaves a GPU
waiting on kernel launches. :class:`~pvtt.builder.backends.sam2_state.FeatureChunks`
encodes ``encoder_batch`` coming frames at once instead. Measured on an H200 (``python -m
pvtt.tools.bench.sam2_speed``, 240 frames of 1280x720 at image size 1024, random weights),
before the state was made lazily and the masks encoded alongside, pvtt's whole step from
MP4 bytes (decode, state, tracking, masks to the host, encoding) ran at 0.97-1.00x the rate
of SAM2's bare propagation with hiera-t and 1.37-1.55x with hiera-l; with the encoder at
batch 1 it was 0.77x and 0.96x.

Products SAM2 loses (its object score says absent, so the mask is empty) give frames with a
``nan`` box; more than ``max_lost_share`` of such frames rejects the clip, like the CPU
segmenter's loss checks.

SAM2 draws a tqdm progress bar on stderr for each direction of each clip; set
``TQDM_DISABLE=1`` in the environment of a build to silence them.
"""

from __future__ import annotations

import importlib.util
import pickle
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pvtt.builder.backends.mask_collector import MaskCollector
from pvtt.builder.backends.sam2_state import init_state_from_frames
from pvtt.builder.stages.protocols import BackendInfo, Detection, StageRejected, Track
from pvtt.schemas.config import BackendConfig, ConfigError

if TYPE_CHECKING:
    import torch
    from sam2.sam2_video_predictor import SAM2VideoPredictor

DEFAULT_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
DEFAULT_MODEL: str | None = None
"""No default: ``config.model`` must be a local checkpoint (SAM2 weights are never fetched)."""

OBJ_ID = 1
"""SAM2's object id of the product: one product instance per clip."""

DEFAULT_ENCODER_BATCH = 8
"""Frames per image-encoder call (see :class:`~pvtt.builder.backends.sam2_state.FeatureChunks`)."""

_PARAMS = {
    "config",
    "image_size",
    "random_weights",
    "fill_hole_area",
    "max_lost_share",
    "encoder_batch",
    "offload_state_to_cpu",
    "offload_after_frames",
}


class Sam2Segmenter:
    """Masks of the product on every frame, tracked forwards and backwards by SAM2.

    Built from a ready ``SAM2VideoPredictor`` (see :func:`build_predictor`), so tests can
    pass an untrained one. ``offload_state_to_cpu`` ``None`` offloads SAM2's per-frame
    memories of clips longer than ``offload_after_frames`` to CPU memory. The clip itself
    never goes to the device whole (its images are made a window at a time). Offloading
    does not change the masks, so it is not part of the backend's identity;
    ``encoder_batch`` is, since batched sums may round differently in bf16.
    """

    def __init__(
        self,
        predictor: SAM2VideoPredictor,
        *,
        model: str | None = None,
        config: str = DEFAULT_CONFIG,
        max_lost_share: float = 0.1,
        encoder_batch: int = DEFAULT_ENCODER_BATCH,
        offload_state_to_cpu: bool | None = None,
        offload_after_frames: int = 300,
    ) -> None:
        if not 0.0 <= max_lost_share <= 1.0:
            raise ConfigError(
                f"segmenter sam2: max_lost_share must be in [0, 1], got {max_lost_share}"
            )
        if encoder_batch < 1:
            raise ConfigError(
                f"segmenter sam2: encoder_batch must be at least 1, got {encoder_batch}"
            )
        self.predictor = predictor
        self.max_lost_share = max_lost_share
        self.encoder_batch = encoder_batch
        self.offload_state_to_cpu = offload_state_to_cpu
        self.offload_after_frames = offload_after_frames
        params: dict[str, Any] = {
            "config": config,
            "image_size": int(predictor.image_size),
            "fill_hole_area": int(predictor.fill_hole_area),
            "max_lost_share": max_lost_share,
            "encoder_batch": encoder_batch,
        }
        if model is None:
            params["random_weights"] = True
        self.info = BackendInfo(
            kind="segmenter",
            name="sam2",
            version=f"1+sam2-{version('sam2')}",
            model=model,
            params=params,
        )

    def offloads_state(self, count: int) -> bool:
        """Whether SAM2's memories of a clip of ``count`` frames are kept in CPU memory."""
        if self.offload_state_to_cpu is None:
            return count > self.offload_after_frames
        return self.offload_state_to_cpu

    def segment(self, frames: np.ndarray, detection: Detection) -> Track:
        import torch

        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(
                f"frames must be uint8 T x H x W x 3, got {frames.dtype} {frames.shape}"
            )
        count, height, width = frames.shape[:3]
        start = detection.frame_index
        if not 0 <= start < count:
            raise ValueError(f"detection frame {start} is outside the clip of {count} frames")
        box = np.clip(np.asarray(detection.box, dtype=np.float64), 0, [width, height] * 2)
        if not np.isfinite(box).all() or box[2] - box[0] < 1 or box[3] - box[1] < 1:
            raise StageRejected(
                f"detection box {detection.box} is empty inside a {width}x{height} frame"
            )
        state = init_state_from_frames(
            self.predictor,
            frames,
            offload_state_to_cpu=self.offloads_state(count),
            encoder_batch=self.encoder_batch,
        )
        try:
            with torch.inference_mode(), autocast(self.predictor.device):
                _, _, logits = self.predictor.add_new_points_or_box(
                    state, frame_idx=start, obj_id=OBJ_ID, box=box.astype(np.float32)
                )
                if not bool((logits[0, 0] > 0).any()):
                    raise StageRejected(
                        f"product not found inside its box {box.round(1).tolist()} at frame {start}"
                    )
                masks, boxes, blob = self._propagate(state, start)
        finally:
            state["images"].close()
            # the state holds SAM2's memories of every frame; an exception's traceback would
            # otherwise keep them (gigabytes of device memory) alive until it is discarded
            state.clear()
        lost = np.flatnonzero(np.isnan(boxes[:, 0]))
        if lost.size > self.max_lost_share * count:
            raise StageRejected(
                f"product lost on {lost.size} of {count} frames (first at frame {lost[0]}), "
                f"more than max_lost_share={self.max_lost_share}"
            )
        return Track(masks=masks, boxes=boxes, masks_bytes=blob)

    def _propagate(self, state: dict[str, Any], start: int) -> tuple[np.ndarray, np.ndarray, bytes]:
        """Masks of every frame (forwards from ``start`` to the end, then back to 0), their
        boxes and their encoding, gathered by a :class:`MaskCollector` without waiting."""
        count, height, width = state["num_frames"], state["video_height"], state["video_width"]
        with MaskCollector(count, height, width, state["device"]) as collector:
            for reverse in (False, True):
                if reverse and start == 0:
                    continue  # nothing before the detection frame
                for t, _, logits in self.predictor.propagate_in_video(
                    state, start_frame_idx=start, reverse=reverse
                ):
                    collector.put(t, logits[0, 0])
            return collector.finish()


def autocast(device: torch.device) -> AbstractContextManager[Any]:
    """bf16 autocast on CUDA (as SAM2's own demos run), nothing elsewhere."""
    import torch

    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def build_predictor(
    model: str | None,
    *,
    config: str = DEFAULT_CONFIG,
    image_size: int | None = None,
    device: str = "cpu",
    random_weights: bool = False,
    fill_hole_area: int = 0,
) -> SAM2VideoPredictor:
    """A SAM2 video predictor from a Hydra config name and a local checkpoint.

    ``image_size`` (a multiple of 32) overrides the config's input size (1024): smaller is
    faster and coarser. Random weights are seeded, so two builds are the same model.
    """
    _check_weights(model, random_weights)
    if image_size is not None and (image_size < 32 or image_size % 32):
        raise ConfigError(
            f"segmenter sam2: image_size must be a positive multiple of 32, got {image_size}"
        )
    if fill_hole_area and importlib.util.find_spec("sam2._C") is None:
        raise ConfigError(
            f"segmenter sam2: fill_hole_area = {fill_hole_area} needs SAM2's CUDA extension "
            "(sam2._C), which this install lacks; set it to 0 or build sam2 with CUDA"
        )
    import torch
    from hydra.errors import HydraException, MissingConfigException
    from sam2.build_sam import build_sam2_video_predictor

    overrides = [] if image_size is None else [f"++model.image_size={image_size}"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        try:
            predictor = build_sam2_video_predictor(
                config, None, device=device, hydra_overrides_extra=overrides
            )
        except MissingConfigException:
            raise ConfigError(
                f"segmenter sam2: no config {config!r}; the configs SAM2 ships are "
                f"{', '.join(_bundled_configs())}"
            ) from None
        except HydraException as exc:  # instantiation failed: the cause says why
            raise ConfigError(
                f"segmenter sam2: building {config} failed: {exc.__cause__ or exc!r}"
            ) from exc
    predictor.fill_hole_area = fill_hole_area
    if model is not None:
        _load_weights(predictor, Path(model), config)
    return predictor


def _check_weights(model: str | None, random_weights: bool) -> None:
    if model is None and not random_weights:
        raise ConfigError(
            "segmenter sam2: model must be the path of a SAM2 checkpoint (for example "
            "sam2.1_hiera_tiny.pt from https://github.com/facebookresearch/sam2), with "
            "params.config naming its Hydra config; random_weights = true is for tests only"
        )
    if model is not None and random_weights:
        raise ConfigError(
            f"segmenter sam2: random_weights = true contradicts model = {model!r}; drop one"
        )


def _bundled_configs() -> list[str]:
    import sam2

    root = Path(sam2.__file__).parent
    return sorted(str(p.relative_to(root)) for p in (root / "configs").glob("sam2*/*.yaml"))


def _load_weights(predictor: SAM2VideoPredictor, path: Path, config: str) -> None:
    """Load a checkpoint (``{"model": state_dict}`` as Meta ships them, or a bare state dict).

    ``weights_only=True``: a checkpoint is data, and unpickling arbitrary objects would run
    code from the file. sam2 1.1.0's own loader passes it too, but raises a bare
    ``RuntimeError`` on a mismatch; this one names the file and the keys.
    """
    import torch

    if not path.is_file():
        raise ConfigError(
            f"segmenter sam2: checkpoint {path} not found (model must be a local .pt file)"
        )
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ConfigError(
            f"{path}: not a plain weights file; torch.load(weights_only=True) refused it ({exc})"
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise ConfigError(f"{path}: unreadable checkpoint ({exc})") from None
    state = loaded.get("model", loaded) if isinstance(loaded, Mapping) else None
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise ConfigError(f"{path}: not a SAM2 checkpoint (no state dict of tensors in it)")
    try:
        missing, unexpected = predictor.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shapes that differ
        raise ConfigError(
            f"{path} does not fit config {config}: {exc}{_hint(path, config)}"
        ) from None
    if missing or unexpected:
        raise ConfigError(
            f"{path} does not fit config {config}: {len(missing)} missing keys "
            f"{missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}{_hint(path, config)}"
        )


def _hint(path: Path, config: str) -> str:
    from sam2.build_sam import HF_MODEL_ID_TO_FILENAMES

    for config_name, checkpoint_name in HF_MODEL_ID_TO_FILENAMES.values():
        if path.name == checkpoint_name and config_name != config:
            return f"; {checkpoint_name} is Meta's release for config {config_name}"
    return "; params.config must be the checkpoint's own config"


def _params(config: BackendConfig) -> dict[str, Any]:
    if "offload_video_to_cpu" in config.params:
        raise ConfigError(
            "segmenter sam2: offload_video_to_cpu is gone: the clip stays in host memory and "
            "its images are made a window at a time; drop the setting"
        )
    unknown = set(config.params) - _PARAMS
    if unknown:
        raise ConfigError(
            f"segmenter sam2: unknown params {sorted(unknown)}; known: {sorted(_PARAMS)}"
        )
    return dict(config.params)


def weights(config: BackendConfig) -> list[str]:
    """The checkpoint a build would load (none for random weights)."""
    _check_weights(config.model, bool(_params(config).get("random_weights", False)))
    return [config.model] if config.model is not None else []


def create(config: BackendConfig, device: str) -> Sam2Segmenter:
    """The registry's factory: build the predictor on ``device`` and wrap it."""
    params = _params(config)
    predictor_args = {
        k: params.pop(k)
        for k in ("config", "image_size", "random_weights", "fill_hole_area")
        if k in params
    }
    predictor = build_predictor(config.model, device=device, **predictor_args)
    return Sam2Segmenter(
        predictor,
        model=config.model,
        config=predictor_args.get("config", DEFAULT_CONFIG),
        **params,
    )
