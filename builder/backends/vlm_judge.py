"""A vision-language model as the quality judge: the seed's four questions, 1 to 5 each.

The seed asks a VLM, about the synthesized clip: is the product clearly recognisable,
is the motion natural and smooth, is the lighting consistent, is it realistic overall
(1-5 each), and weighs the last two into the quality score. The model sees ``frames``
frames sampled evenly over the clip, in order, as images of one chat message (every
image-text-to-text chat model of transformers takes several images; a grid would
shrink each frame), and is asked for one JSON object. Its answer is checked, not
trusted: a reply without such an object, or with a score outside 1..5, is asked once
more with a stricter prompt; a second failure yields ``None`` scores and a reason in
:attr:`VlmJudge.last_failure`, never a made-up number. Decoding is greedy, so the same
clip gets the same answer.

The model call sits behind a small callable, ``generate(images, prompt,
max_new_tokens) -> str``, so the judging logic does not depend on transformers
(:class:`TransformersGenerator` is the transformers one).
"""

from __future__ import annotations

import json
import logging
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image

from pvtt.builder.stages.protocols import BackendInfo, ScoringInput
from pvtt.schemas.config import BackendConfig, ConfigError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "HuggingFaceTB/SmolVLM-256M-Instruct"
JUDGE_VERSION = "1"
"""Bump when the prompts or the parsing change: the answers change with them."""

QUESTIONS = ("product", "motion", "lighting", "overall")
SCORED = ("lighting", "overall")
"""The answers that become scores (the seed weighs these; the composite merges them)."""

_SHAPE = '{{"product": n, "motion": n, "lighting": n, "overall": n}}'  # braces for format()
PROMPT = (
    "These {count} images are frames of a short product video, in order. "
    "Rate the video from 1 (very poor) to 5 (excellent) on four questions:\n"
    "product: is the product clearly recognisable?\n"
    "motion: is the motion natural and smooth?\n"
    "lighting: is the lighting consistent?\n"
    "overall: is it realistic overall?\n"
    "Answer with one JSON object, " + _SHAPE + ", where each n is an integer from 1 to 5."
)
STRICT_PROMPT = (
    "These {count} images are frames of a product video. Reply with exactly one line of "
    "JSON and nothing else: " + _SHAPE + ", replacing each n by a whole number from 1 to 5 "
    "(product: is the product recognisable; motion: is the motion smooth; lighting: is "
    "the lighting consistent; overall: is it realistic)."
)

Generate = Callable[[Sequence[Image.Image], str, int], str]
"""``(frames, prompt, max_new_tokens) -> the model's reply``, decoded greedily."""


def parse_answer(text: str) -> dict[str, int]:
    """The four 1..5 scores from the first JSON object in ``text``.

    Accepts prose or code fences around the object, keys in any case, and numbers
    written as ``4``, ``4.0`` or ``"4"``; raises ``ValueError`` with the reason for
    anything else (no object, a missing question, a score that is not a whole number
    from 1 to 5).
    """
    answer = _first_object(text)
    if answer is None:
        raise ValueError("no JSON object in the answer")
    keyed = {str(key).strip().lower(): value for key, value in answer.items()}
    missing = [q for q in QUESTIONS if q not in keyed]
    if missing:
        raise ValueError(f"the JSON object lacks {', '.join(missing)}")
    return {q: _grade(q, keyed[q]) for q in QUESTIONS}


def _first_object(text: str) -> dict[str, Any] | None:
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            value, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            return value
        start = text.find("{", start + 1)
    return None


def _grade(question: str, value: Any) -> int:
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ValueError(f"{question} = {value!r} is not a number") from None
    whole = (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value == round(value)
    )
    if not whole:
        raise ValueError(f"{question} = {value!r} is not a whole number")
    if not 1 <= value <= 5:
        raise ValueError(f"{question} = {value!r} is outside 1..5")
    return int(value)


def to_unit(grade: int) -> float:
    """A 1..5 grade on the [0, 1] scale of every score: 1 -> 0, 3 -> 0.5, 5 -> 1."""
    return (grade - 1) / 4


def sample_indices(frame_count: int, frames: int) -> list[int]:
    """``frames`` indices spread evenly from the first frame to the last (fewer if short)."""
    if frame_count <= 0:
        return []
    picks = np.linspace(0, frame_count - 1, min(frames, frame_count))
    return sorted({int(i) for i in np.round(picks)})


class VlmJudge:
    """Scores ``lighting`` and ``overall`` of a synthesized clip with a VLM's judgement.

    ``generate`` runs the model (:class:`TransformersGenerator`, or any callable of the
    :data:`Generate` shape); ``model`` names it for the ``backends`` column; ``frames``
    frames are sampled per clip; ``max_new_tokens`` bounds each reply (the JSON object
    needs about 30 tokens). After every :meth:`score`, :attr:`last_failure` holds why
    the scores are ``None``, or ``None`` when they are not.
    """

    def __init__(
        self,
        generate: Generate,
        model: str = DEFAULT_MODEL,
        frames: int = 8,
        max_new_tokens: int = 64,
        params: dict[str, Any] | None = None,
    ) -> None:
        if int(frames) < 1 or int(max_new_tokens) < 1:
            raise ConfigError(
                f"vlm scorer: frames ({frames}) and max_new_tokens ({max_new_tokens}) must be >= 1"
            )
        self.generate = generate
        self.frames = int(frames)
        self.max_new_tokens = int(max_new_tokens)
        self.last_failure: str | None = None
        self.info = BackendInfo(
            kind="scorer",
            name="vlm",
            version=JUDGE_VERSION,
            model=model,
            params={"frames": self.frames, "max_new_tokens": self.max_new_tokens, **(params or {})},
        )

    def score(self, sample: ScoringInput) -> dict[str, float | None]:
        """``{"lighting": ..., "overall": ...}`` in [0, 1], or both ``None`` with a reason."""
        indices = sample_indices(len(sample.synth), self.frames)
        if not indices:
            return self._fail("the clip has no frames")
        images = [Image.fromarray(sample.synth[i]) for i in indices]
        reasons = []
        for prompt in (PROMPT, STRICT_PROMPT):
            reply = self.generate(images, prompt.format(count=len(images)), self.max_new_tokens)
            try:
                grades = parse_answer(reply)
            except ValueError as exc:
                reasons.append(f"{exc} (reply {_excerpt(reply)})")
                continue
            self.last_failure = None
            return {name: to_unit(grades[name]) for name in SCORED}
        return self._fail("no usable answer in two tries: " + "; then ".join(reasons))

    def _fail(self, reason: str) -> dict[str, float | None]:
        self.last_failure = reason
        log.warning("vlm scorer (%s): %s", self.info.model, reason)
        return dict.fromkeys(SCORED)


def _excerpt(text: str, limit: int = 120) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


class TransformersGenerator:
    """Greedy replies of a transformers image-text-to-text model and its processor.

    The frames go as images of one user message, through the processor's own chat
    template (which places each model's image tokens); ``processor_kwargs`` are passed
    to the processor (e.g. ``{"do_image_splitting": False}`` gives SmolVLM one tile per
    frame instead of up to 17). On CUDA the model runs under bfloat16 autocast and the
    cache is released after each clip, so the judge does not hold memory the other
    stages need.
    """

    def __init__(
        self, model: Any, processor: Any, processor_kwargs: dict[str, Any] | None = None
    ) -> None:
        self.model = model.eval()
        self.processor = processor
        self.processor_kwargs = dict(processor_kwargs or {})

    def __call__(self, images: Sequence[Image.Image], prompt: str, max_new_tokens: int) -> str:
        import torch

        content = [{"type": "image", "image": image} for image in images]
        content.append({"type": "text", "text": prompt})
        inputs = self.processor.apply_chat_template(
            [{"role": "user", "content": content}],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            **self.processor_kwargs,
        ).to(self.model.device, dtype=self.model.dtype)
        on_cuda = self.model.device.type == "cuda"
        with (
            torch.inference_mode(),
            torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_cuda),
        ):
            output = self.model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens)
        reply = output[:, inputs["input_ids"].shape[1] :]
        text = self.processor.batch_decode(reply, skip_special_tokens=True)[0]
        if on_cuda:
            torch.cuda.empty_cache()
        return text


def create(config: BackendConfig, device: str) -> VlmJudge:
    """The judge a ``{ backend = "vlm", model = ..., params = {...} }`` section describes.

    ``config.model`` is a hub id (already in the local cache) or a local folder;
    ``config.params``: ``frames``, ``max_new_tokens``, ``processor_kwargs``.
    """
    params = dict(config.params)
    processor_kwargs = params.pop("processor_kwargs", {})
    unknown = set(params) - {"frames", "max_new_tokens"}
    if unknown or not isinstance(processor_kwargs, dict):
        raise ConfigError(
            f"vlm scorer params {config.params}: known keys are frames, max_new_tokens and "
            "processor_kwargs (a table)"
        )
    model_id = config.model or DEFAULT_MODEL
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        processor = AutoProcessor.from_pretrained(model_id)
        model = AutoModelForImageTextToText.from_pretrained(model_id, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"vlm scorer: cannot load model {model_id!r}: {exc} Make it available first"
            f" (`hf download {model_id}` where the hub is reachable, or HF_HOME pointing at a"
            " cache that holds it), or give the vlm scorer's model as a local folder with the"
            " model's files."
        ) from None
    generator = TransformersGenerator(model.to(device), processor, processor_kwargs)
    extra = {"processor_kwargs": processor_kwargs} if processor_kwargs else {}
    return VlmJudge(generator, model=model_id, params=extra, **params)


def weights(config: BackendConfig) -> list[str]:
    """The hub id or folder a build would load."""
    return [config.model or DEFAULT_MODEL]
