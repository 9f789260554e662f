"""An inserter that composites, then lets a diffusion model settle the product into the scene.

A plain composite (:class:`~pvtt.builder.backends.cpu_inserter.AlphaCompositeInserter`)
keeps the product's identity exactly but looks pasted: its light, grain and edges are
the photo's. A low-strength inpainting pass over the composite (``strength`` 0.2-0.4:
only the last fifth to two fifths of the denoising schedule run) redraws light, edges
and contact with the surface while keeping the product's shape and colours.

Each frame's product region (its box grown by ``dilate``) is cut out in a window of one
fixed size for the whole clip, centred on the box and kept inside the frame, scaled to
a working resolution whose long side is ``size``. Every frame starts from the same
noise (see :mod:`pvtt.builder.backends.diffusers_inpainter`), and the window moves with
the product, so the product's noise stays the same from frame to frame. The result is
pasted back inside the grown box only, fading in across the margin: pixels outside it
are exactly the composite's. Frames without a box are the background, untouched.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pvtt.builder.backends.cpu_inserter import AlphaCompositeInserter
from pvtt.builder.backends.diffusers_inpainter import (
    DEFAULT_MODEL,
    InpaintRunner,
    check_params,
    crop_scaled,
    load_pipeline,
    mask_scaled,
    paste,
    working_size,
)
from pvtt.builder.boxes import box_to_mask
from pvtt.builder.stages.protocols import BackendInfo, InsertionInput
from pvtt.schemas.config import BackendConfig, ConfigError


class DiffusersRefiner:
    """Composite the cut-out along its boxes, then refine each box with low-strength inpainting.

    ``pipeline`` is a diffusers inpainting pipeline on its device; ``model`` names it in
    the backend's identity. ``composite`` holds the compositor's settings
    (:class:`AlphaCompositeInserter`'s arguments). ``dilate`` grows each box by that
    fraction of its geometric-mean side (the refined region); ``context`` sets the window
    around it (a margin of that fraction of the largest grown box on each side);
    ``size`` is the working resolution's long side. The noise seed of a clip is
    ``seed`` mixed with the pair's own seed (:attr:`InsertionInput.seed`).
    """

    def __init__(
        self,
        pipeline: Any,
        *,
        model: str | None = None,
        prompt: str = "a product in a real scene, natural lighting, realistic shadows, sharp",
        negative_prompt: str = "blurry, distorted, deformed, cartoon, low quality, artifacts",
        steps: int = 30,
        guidance: float = 5.0,
        strength: float = 0.3,
        seed: int = 0,
        batch_size: int = 4,
        size: int = 512,
        dilate: float = 0.1,
        context: float = 0.5,
        composite: dict[str, Any] | None = None,
    ) -> None:
        if size < 64 or size % 8:
            raise ValueError(f"size must be a multiple of 8 and at least 64, got {size}")
        if dilate < 0 or context < 0:
            raise ValueError("dilate and context must be >= 0")
        self.compositor = AlphaCompositeInserter(**(composite or {}))
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
        self.info = BackendInfo(
            kind="inserter",
            name="diffusers-refine",
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
                "composite": self.compositor.info.params,
                "dtype": self.runner.dtype,
            },
        )

    def insert(self, job: InsertionInput) -> np.ndarray:
        composite = self.compositor.insert(job)
        boxes = np.asarray(job.boxes, np.float64)
        valid = (
            np.isfinite(boxes).all(axis=1)
            & (boxes[:, 2] > boxes[:, 0])
            & (boxes[:, 3] > boxes[:, 1])
        )
        todo = np.flatnonzero(valid)
        if len(todo) == 0:
            return composite
        height, width = composite.shape[1:3]
        sides = np.sqrt((boxes[todo, 2] - boxes[todo, 0]) * (boxes[todo, 3] - boxes[todo, 1]))
        pads = self.dilate * sides
        grown = boxes[todo] + np.stack([-pads, -pads, pads, pads], axis=1)
        regions = box_to_mask(grown, height, width)
        win_w, win_h = self._window_size(grown, width, height)
        windows = [_centred(box, win_w, win_h, width, height) for box in grown]
        size = working_size(win_w, win_h, self.size)
        crops = np.stack(
            [crop_scaled(composite[t], w, size) for t, w in zip(todo, windows, strict=True)]
        )
        masks = np.stack([mask_scaled(r, w, size) for r, w in zip(regions, windows, strict=True)])
        seed = (self.seed ^ job.seed) & 0xFFFF_FFFF_FFFF
        results = self.runner(crops, masks, seed)
        out = composite.copy()
        for i, t in enumerate(todo):
            paste(out[t], results[i], windows[i], regions[i], pads[i], composite[t])
        return out

    def _window_size(self, grown: np.ndarray, width: int, height: int) -> tuple[int, int]:
        """One window size for the clip: the largest grown box plus ``context`` margins."""
        box_w = float((grown[:, 2] - grown[:, 0]).max())
        box_h = float((grown[:, 3] - grown[:, 1]).max())
        margin = 2 * self.context * max(box_w, box_h)
        return min(width, math.ceil(box_w + margin)), min(height, math.ceil(box_h + margin))


def _centred(
    box: np.ndarray, win_w: int, win_h: int, width: int, height: int
) -> tuple[int, int, int, int]:
    """A ``win_w x win_h`` window centred on ``box``, shifted to lie inside the frame."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    x0 = min(max(0, round(cx - win_w / 2)), width - win_w)
    y0 = min(max(0, round(cy - win_h / 2)), height - win_h)
    return x0, y0, x0 + win_w, y0 + win_h


def create(config: BackendConfig, device: str) -> DiffusersRefiner:
    """The registry's factory: load ``config.model`` (default: the inpainter's default model)."""
    params = dict(config.params)
    check_params(DiffusersRefiner, params, "inserter", "diffusers-refine")
    model = config.model or DEFAULT_MODEL
    pipeline = load_pipeline(model, device, params.pop("dtype", "auto"), section="inserter")
    try:
        return DiffusersRefiner(pipeline, model=model, **params)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"inserter.params: {exc}") from None


def weights(config: BackendConfig) -> list[str]:
    """The pipeline a build with this section needs (``pvtt models check``)."""
    return [config.model or DEFAULT_MODEL]
