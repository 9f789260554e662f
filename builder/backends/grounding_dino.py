"""Open-vocabulary detector: Grounding DINO finds the product the catalog names.

The catalog's ``first_frame_box`` stays the most reliable seed and wins when given
(handled exactly as the CPU detector does). Otherwise the clip is scanned from its
first frame forward, every ``stride``-th frame, in batches, and the first frame with a
box scoring above ``box_threshold`` seeds the track: the segmenter propagates both
ways, so the earliest confident frame is as good as any and ends the scan soonest.
The prompt is normalised to what Grounding DINO was trained on: lowercase phrases,
each ended by a period.

``transformers`` is imported only in :func:`create`, so a CPU build never loads it.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import torch

from pvtt.builder.backends.cpu_detector import FirstFrameOrSaliencyDetector
from pvtt.builder.stages.protocols import BackendInfo, Detection, Prompt, StageRejected
from pvtt.schemas.config import BackendConfig, ConfigError

DEFAULT_MODEL = "IDEA-Research/grounding-dino-tiny"


def normalise_prompt(text: str) -> str:
    """``"Coffee_Mug "`` -> ``"coffee mug."``: lowercase words, one period at the end."""
    words = " ".join(text.replace("_", " ").lower().split()).strip(" .")
    if not words:
        raise ValueError(f"the detector prompt is empty (got {text!r}); give the product a prompt")
    return words + "."


class GroundingDinoDetector:
    """The first confident Grounding DINO box on the clip, scanning forward.

    ``model`` is a ``GroundingDinoForObjectDetection`` and ``processor`` its
    ``GroundingDinoProcessor`` (tokenizer and image processor), already built, so tests
    can pass tiny random ones. ``box_threshold`` is the score (sigmoid of the best
    token logit) a box must exceed; ``text_threshold`` the score a prompt token needs to
    name the box (the detection's label). ``stride`` and ``max_frames`` bound the scan:
    frames ``0, stride, 2 * stride, ...``, at most ``max_frames`` of them.
    ``precision`` ``"bf16"`` autocasts on CUDA; ``"fp32"`` never does.
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        model_id: str = DEFAULT_MODEL,
        device: str = "cpu",
        box_threshold: float = 0.35,
        text_threshold: float = 0.25,
        stride: int = 4,
        max_frames: int = 64,
        batch_size: int = 8,
        precision: str = "bf16",
    ) -> None:
        if not (0.0 <= box_threshold <= 1.0 and 0.0 <= text_threshold <= 1.0):
            raise ValueError(
                f"box_threshold and text_threshold must be in [0, 1], "
                f"got {box_threshold}, {text_threshold}"
            )
        if min(stride, max_frames, batch_size) < 1:
            raise ValueError(
                f"stride, max_frames and batch_size must be >= 1, "
                f"got {stride}, {max_frames}, {batch_size}"
            )
        if precision not in ("bf16", "fp32"):
            raise ValueError(f"precision must be 'bf16' or 'fp32', got {precision!r}")
        self.model = model.to(device).eval()
        self.processor = processor
        self.device = device
        self.box_threshold = box_threshold
        self.text_threshold = text_threshold
        self.stride = stride
        self.max_frames = max_frames
        self.batch_size = batch_size
        self.precision = precision
        self._catalog_box = FirstFrameOrSaliencyDetector()
        self.info = BackendInfo(
            kind="detector",
            name="grounding-dino",
            version="1",
            model=model_id,
            params={
                "box_threshold": box_threshold,
                "text_threshold": text_threshold,
                "stride": stride,
                "max_frames": max_frames,
                "precision": precision,
            },
        )

    def detect(self, frames: np.ndarray, prompt: Prompt) -> Detection:
        """The highest-scoring box on the first scanned frame that has a confident one.

        A confident box scores above ``box_threshold`` and covers a pixel of the frame.

        Raises :class:`StageRejected` when no scanned frame has a box above
        ``box_threshold``; the reason gives the best score seen.
        """
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or not len(frames):
            raise ValueError(
                f"frames must be uint8 T x H x W x 3 with T >= 1, got {frames.dtype} {frames.shape}"
            )
        if prompt.box is not None:
            return self._catalog_box.detect(frames, prompt)
        query = normalise_prompt(prompt.text)
        height, width = frames.shape[1:3]
        indices = list(range(0, len(frames), self.stride))[: self.max_frames]
        best = 0.0
        try:
            for start in range(0, len(indices), self.batch_size):
                batch = indices[start : start + self.batch_size]
                found, batch_best = self._scan(frames, batch, query, height, width)
                best = max(best, batch_best)
                if found is not None:
                    return found
        finally:
            if self.device.startswith("cuda"):
                torch.cuda.empty_cache()
        why = (
            f"best score {best:.3f} < threshold {self.box_threshold}"
            if best <= self.box_threshold
            else "every confident box lies off the frame"
        )
        raise StageRejected(f"no '{query[:-1]}' found in {len(indices)} frames scanned ({why})")

    def _scan(
        self, frames: np.ndarray, batch: list[int], query: str, height: int, width: int
    ) -> tuple[Detection | None, float]:
        """The first detection among ``batch`` (or None) and the batch's best box score."""
        inputs = self.processor(
            images=[frames[i] for i in batch], text=[query] * len(batch), return_tensors="pt"
        ).to(self.device)
        autocast = self.precision == "bf16" and self.device.startswith("cuda")
        with (
            torch.inference_mode(),
            torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast),
        ):
            outputs = self.model(**inputs)
        outputs.logits = outputs.logits.float()
        outputs.pred_boxes = outputs.pred_boxes.float()
        results = self.processor.post_process_grounded_object_detection(
            outputs,
            inputs["input_ids"],
            threshold=self.box_threshold,
            text_threshold=self.text_threshold,
            target_sizes=[(height, width)] * len(batch),
        )
        best = float(outputs.logits.sigmoid().amax()) if outputs.logits.numel() else 0.0
        for index, result in zip(batch, results, strict=True):
            for top in result["scores"].argsort(descending=True).tolist():
                box = _inside(result["boxes"][top].tolist(), width, height)
                if box is not None:
                    label = self._label(result["text_labels"][top]) or query[:-1]
                    return Detection(index, box, float(result["scores"][top]), label), best
        return None, best

    def _label(self, phrase: str) -> str:
        """The decoded phrase without the tokenizer's special tokens and the periods."""
        special = set(self.processor.tokenizer.all_special_tokens)
        return " ".join(w for w in phrase.split() if w not in special).strip(" .")


def _inside(box: list[float], width: int, height: int) -> tuple[float, float, float, float] | None:
    """``box`` clipped to the frame, or None when less than a pixel of it is inside."""
    x0, x1 = (min(max(v, 0.0), float(width)) for v in (box[0], box[2]))
    y0, y1 = (min(max(v, 0.0), float(height)) for v in (box[1], box[3]))
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    return (x0, y0, x1, y1)


def _from_pretrained(load: Any, model_id: str, what: str) -> Any:
    """``load(model_id)``, with a missing or unreadable checkpoint as a :class:`ConfigError`."""
    try:
        return load(model_id)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"detector.model: cannot load the Grounding DINO {what} from {model_id!r} ({exc}). "
            f"Weights are never downloaded during a build: put them in the Hugging Face cache "
            f"beforehand (huggingface-cli download {model_id}) or set detector.model to a local "
            f"directory holding the checkpoint."
        ) from None


_INJECTED = {"model", "processor", "model_id", "device"}
"""Constructor arguments that come from the config's other fields, not from ``params``."""


def create(config: BackendConfig, device: str) -> GroundingDinoDetector:
    """The detector of a ``[detector] backend = "grounding-dino"`` section."""
    params = dict(config.params)
    known = set(inspect.signature(GroundingDinoDetector).parameters) - _INJECTED
    if set(params) - known:
        raise ConfigError(
            f"detector.params: unknown keys {sorted(set(params) - known)} for grounding-dino; "
            f"known: {sorted(known)}"
        )
    from transformers import AutoProcessor, GroundingDinoForObjectDetection

    model_id = config.model or DEFAULT_MODEL
    model = _from_pretrained(GroundingDinoForObjectDetection.from_pretrained, model_id, "model")
    processor = _from_pretrained(AutoProcessor.from_pretrained, model_id, "processor")
    try:
        return GroundingDinoDetector(model, processor, model_id=model_id, device=device, **params)
    except ValueError as exc:
        raise ConfigError(f"detector.params: {exc}") from None


def weights(config: BackendConfig) -> list[str]:
    """The checkpoint a build with this section needs (``pvtt models check``)."""
    return [config.model or DEFAULT_MODEL]
