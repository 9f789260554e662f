"""Diffusion inpainting of the product's region, frame by frame yet steady over time.

An image inpainting model run on each frame alone flickers: every frame draws its own
noise, so the filled region changes texture from one frame to the next. Three things
hold it steady here:

- every frame starts from the same noise: one generator per frame, all seeded alike,
  which also makes the result independent of how frames are batched. (Passing the
  same ``latents`` to every frame would do the same at ``strength`` 1, but diffusers
  takes given latents as pure noise and silently drops ``strength`` < 1 then.)
- all frames are cut from one fixed window of the frame (the union of the clip's
  holes plus ``context``), so the shared noise sits at the same place in the scene;
- optionally (``temporal_band``), the weight-free temporal fill is kept along the
  hole's edge and faded into the diffusion result over that band: near its edge a
  hole is most often uncovered in another frame, so the temporal fill there is real,
  steady background; deep inside, where no frame shows the background and the
  temporal fill can only smear it, diffusion invents it.

The window is scaled to a working resolution whose long side is ``size`` (sides are
multiples of 8, as the VAE needs) and the result scaled back. Only pixels inside the
dilated mask change: the result is pasted with a weight that rises from the hole's
edge inwards and is zero outside it, so every other pixel stays exact.

:class:`InpaintRunner` and the window helpers are shared with the refining inserter
(:mod:`pvtt.builder.backends.diffusers_refiner`). ``diffusers`` is imported only in
:func:`load_pipeline`, so a CPU build never loads it.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import cv2
import numpy as np
import torch

from pvtt.builder.backends.cpu_inpainter import TemporalFillInpainter
from pvtt.builder.stages.protocols import BackendInfo, check_frames_and_masks
from pvtt.schemas.config import BackendConfig, ConfigError

DEFAULT_MODEL = "stabilityai/stable-diffusion-2-inpainting"

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def load_pipeline(model: str, device: str, dtype: str = "auto", *, section: str) -> Any:
    """``AutoPipelineForInpainting`` from a hub id or local folder, on ``device``.

    ``dtype`` ``"auto"`` is bfloat16 on CUDA (fp16 VAEs overflow to NaN on some
    checkpoints; bf16 has fp32's range) and float32 on the CPU. Nothing is downloaded
    (``local_files_only``), even where there is network: a checkpoint that is not on
    this machine is a :class:`ConfigError` naming ``section`` and the fix.
    """
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    if dtype not in _DTYPES:
        raise ConfigError(f"{section}.params.dtype must be auto or one of {sorted(_DTYPES)}")
    from diffusers import AutoPipelineForInpainting

    try:
        pipeline = AutoPipelineForInpainting.from_pretrained(
            model, torch_dtype=_DTYPES[dtype], local_files_only=True
        )
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{section}.model: cannot load the diffusers inpainting pipeline {model!r} ({exc}). "
            f"Weights are never downloaded during a build: put them in the Hugging Face cache "
            f"beforehand (hf download {model}) or set {section}.model to a local folder "
            f"holding the pipeline (model_index.json and its parts)."
        ) from None
    if getattr(pipeline, "safety_checker", None) is not None:
        pipeline.safety_checker = None  # it blacks out whole frames on false alarms
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(device)


class InpaintRunner:
    """Runs an inpainting pipeline over same-size crops, in batches, with shared noise.

    ``pipeline`` is any diffusers inpainting pipeline (``StableDiffusionInpaintPipeline``,
    the SDXL one, ...), already on its device. ``steps`` is the schedule's length;
    with ``strength`` < 1 only its last ``int(steps * strength)`` steps run.
    """

    def __init__(
        self,
        pipeline: Any,
        *,
        prompt: str,
        negative_prompt: str,
        steps: int,
        guidance: float,
        strength: float,
        batch_size: int,
    ) -> None:
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        if steps < 1 or int(steps * strength) < 1:
            raise ValueError(
                f"steps * strength must be at least 1 (steps={steps}, strength={strength}): "
                f"diffusion runs only the last int(steps * strength) steps"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.pipeline = pipeline
        self.prompt = prompt
        self.negative_prompt = negative_prompt
        self.steps = steps
        self.guidance = guidance
        self.strength = strength
        self.batch_size = batch_size

    @property
    def dtype(self) -> str:
        return str(self.pipeline.dtype).removeprefix("torch.")

    def __call__(self, images: np.ndarray, masks: np.ndarray, seed: int) -> np.ndarray:
        """Inpaint ``images`` (``N x h x w x 3`` uint8) where ``masks`` (``N x h x w``) are set.

        ``h`` and ``w`` must be multiples of 8. Every image gets the noise of ``seed``.
        """
        from PIL import Image

        count, height, width = masks.shape
        out = np.empty_like(images)
        for start in range(0, count, self.batch_size):
            stop = min(count, start + self.batch_size)
            n = stop - start
            generators = [torch.Generator("cpu").manual_seed(seed) for _ in range(n)]
            with torch.inference_mode():
                result = self.pipeline(
                    prompt=[self.prompt] * n,
                    negative_prompt=[self.negative_prompt] * n if self.negative_prompt else None,
                    image=[Image.fromarray(image) for image in images[start:stop]],
                    mask_image=[
                        Image.fromarray(m.astype(np.uint8) * 255) for m in masks[start:stop]
                    ],
                    height=height,
                    width=width,
                    strength=self.strength,
                    num_inference_steps=self.steps,
                    guidance_scale=self.guidance,
                    generator=generators,
                    output_type="np",
                )
            out[start:stop] = np.clip(np.asarray(result.images) * 255.0 + 0.5, 0, 255).astype(
                np.uint8
            )
        if self.pipeline.device.type == "cuda":
            torch.cuda.empty_cache()
        return out


def working_size(width: int, height: int, size: int) -> tuple[int, int]:
    """``(w, h)`` with the long side ``size`` and the aspect kept, both multiples of 8."""
    scale = size / max(width, height)
    return (
        max(8, round(width * scale / 8) * 8),
        max(8, round(height * scale / 8) * 8),
    )


def dilate(masks: np.ndarray, radius: int) -> np.ndarray:
    """``masks`` grown by an elliptic ``radius`` (px); a copy when ``radius`` < 1."""
    if radius < 1:
        return masks.copy()
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return np.stack([cv2.dilate(m.view(np.uint8), kernel).view(bool) for m in masks])


def crop_scaled(
    image: np.ndarray, window: tuple[int, int, int, int], size: tuple[int, int]
) -> np.ndarray:
    """The ``(x0, y0, x1, y1)`` window of ``image`` resized to ``size`` (w, h)."""
    x0, y0, x1, y1 = window
    crop = image[y0:y1, x0:x1]
    shrink = size[0] < x1 - x0
    return cv2.resize(crop, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


def mask_scaled(
    mask: np.ndarray, window: tuple[int, int, int, int], size: tuple[int, int]
) -> np.ndarray:
    """The window of a bool mask at ``size``: a working pixel is set if any pixel under it is."""
    x0, y0, x1, y1 = window
    area = cv2.resize(mask[y0:y1, x0:x1].astype(np.float32), size, interpolation=cv2.INTER_AREA)
    return area > 0


def paste(
    frame: np.ndarray,
    result: np.ndarray,
    window: tuple[int, int, int, int],
    hole: np.ndarray,
    ramp_px: float,
    base: np.ndarray | None = None,
) -> None:
    """Blend the working-size ``result`` into ``frame``'s window, in place, inside ``hole`` only.

    The weight of ``result`` rises from the hole's edge to 1 at ``ramp_px`` pixels in;
    elsewhere it is the weight of ``base`` (default: the frame itself). Outside the
    hole nothing is written.
    """
    x0, y0, x1, y1 = window
    inside = hole[y0:y1, x0:x1]
    if not inside.any():
        return
    scaled = cv2.resize(result, (x1 - x0, y1 - y0), interpolation=cv2.INTER_CUBIC)
    distance = cv2.distanceTransform(inside.view(np.uint8), cv2.DIST_L2, 3)
    weight = np.clip(distance / max(ramp_px, 1.0), 0.0, 1.0)[..., None]
    region = frame[y0:y1, x0:x1]
    under = (base if base is not None else frame)[y0:y1, x0:x1].astype(np.float32)
    blended = under + weight * (scaled.astype(np.float32) - under)
    region[inside] = np.clip(blended[inside] + 0.5, 0, 255).astype(np.uint8)


class DiffusersInpainter:
    """The clip with the (dilated) masked product inpainted by a diffusion model.

    ``pipeline`` is a diffusers inpainting pipeline on its device (see
    :func:`load_pipeline`; tests inject a tiny random one); ``model`` names it in the
    backend's identity. ``dilate`` is the mask's growth as a fraction of the frame's long
    side (products' edges, shadows and reflections sit just outside the mask);
    ``context`` the margin of the working window around the union of the holes, as a
    fraction of that union's long side; ``size`` the working resolution's long side.
    ``temporal_band`` > 0 (fraction of the frame's long side) keeps the weight-free
    temporal fill (``temporal_params`` are its settings) along the hole's edge and fades
    into the diffusion result over that band.
    """

    def __init__(
        self,
        pipeline: Any,
        *,
        model: str | None = None,
        prompt: str = "empty background, no product",
        negative_prompt: str = "product, object, item, hand, person, text, watermark, blurry",
        steps: int = 25,
        guidance: float = 7.5,
        strength: float = 1.0,
        seed: int = 0,
        batch_size: int = 4,
        size: int = 512,
        dilate: float = 0.02,
        context: float = 0.5,
        temporal_band: float = 0.0,
        temporal_params: dict[str, Any] | None = None,
    ) -> None:
        if size < 64 or size % 8:
            raise ValueError(f"size must be a multiple of 8 and at least 64, got {size}")
        if dilate < 0 or context < 0 or temporal_band < 0:
            raise ValueError("dilate, context and temporal_band must be >= 0")
        self.runner = InpaintRunner(
            pipeline,
            prompt=prompt,
            negative_prompt=negative_prompt,
            steps=steps,
            guidance=guidance,
            strength=strength,
            batch_size=batch_size,
        )
        self.seed = seed
        self.size = size
        self.dilate = dilate
        self.context = context
        self.temporal_band = temporal_band
        self.temporal = (
            TemporalFillInpainter(**{**(temporal_params or {}), "dilate": 0.0})
            if temporal_band > 0
            else None
        )
        self.info = BackendInfo(
            kind="inpainter",
            name="diffusers",
            version="1",
            model=model,
            params={
                "prompt": prompt,
                "negative_prompt": negative_prompt,
                "steps": steps,
                "guidance": guidance,
                "strength": strength,
                "seed": seed,
                "size": size,
                "dilate": dilate,
                "context": context,
                "temporal_band": temporal_band,
                "temporal": self.temporal.info.params if self.temporal else None,
                "dtype": self.runner.dtype,
            },
        )

    def inpaint(self, frames: np.ndarray, masks: np.ndarray) -> np.ndarray:
        check_frames_and_masks(frames, masks)
        height, width = masks.shape[1:]
        radius = round(self.dilate * max(height, width))
        holes = dilate(masks, radius)
        todo = np.flatnonzero(holes.any(axis=(1, 2)))
        out = frames.copy()
        if len(todo) == 0:
            return out
        window = self._window(holes[todo])
        size = working_size(window[2] - window[0], window[3] - window[1], self.size)
        crops = np.stack([crop_scaled(frames[t], window, size) for t in todo])
        crop_masks = np.stack([mask_scaled(holes[t], window, size) for t in todo])
        results = self.runner(crops, crop_masks, self.seed)
        if self.temporal is not None:
            base = self.temporal.inpaint(frames, holes)
            ramp = self.temporal_band * max(height, width)
        else:
            base = frames
            ramp = radius / 2
        for result, t in zip(results, todo, strict=True):
            paste(out[t], result, window, holes[t], ramp, base[t])
        return out

    def _window(self, holes: np.ndarray) -> tuple[int, int, int, int]:
        """The union of ``holes``' boxes grown by ``context``, clipped to the frame."""
        height, width = holes.shape[1:]
        union = holes.any(axis=0)
        ys = np.flatnonzero(union.any(axis=1))
        xs = np.flatnonzero(union.any(axis=0))
        x0, y0, x1, y1 = xs[0], ys[0], xs[-1] + 1, ys[-1] + 1
        margin = self.context * max(x1 - x0, y1 - y0)
        return (
            max(0, math.floor(x0 - margin)),
            max(0, math.floor(y0 - margin)),
            min(width, math.ceil(x1 + margin)),
            min(height, math.ceil(y1 + margin)),
        )


_INJECTED = {"pipeline", "model"}


def check_params(cls: type, params: dict[str, Any], section: str, name: str) -> None:
    """Unknown keys of ``params`` for ``cls`` as a :class:`ConfigError` listing the known ones."""
    known = set(inspect.signature(cls).parameters) - _INJECTED
    unknown = set(params) - known - {"dtype"}
    if unknown:
        raise ConfigError(
            f"{section}.params: unknown keys {sorted(unknown)} for {name}; "
            f"known: {sorted(known | {'dtype'})}"
        )


def create(config: BackendConfig, device: str) -> DiffusersInpainter:
    """The registry's factory: load ``config.model`` (default :data:`DEFAULT_MODEL`)."""
    params = dict(config.params)
    check_params(DiffusersInpainter, params, "inpainter", "diffusers")
    model = config.model or DEFAULT_MODEL
    pipeline = load_pipeline(model, device, params.pop("dtype", "auto"), section="inpainter")
    try:
        return DiffusersInpainter(pipeline, model=model, **params)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"inpainter.params: {exc}") from None


def weights(config: BackendConfig) -> list[str]:
    """The pipeline a build with this section needs (``pvtt models check``)."""
    return [config.model or DEFAULT_MODEL]
