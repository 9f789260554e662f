"""The VLM judge: the seed's four questions, answers checked, never a made-up number.

The judging logic (prompt, parsing, retry, mapping, ``None`` on failure) is tested with
scripted replies; the transformers path with a tiny random Idefics3 (SmolVLM's class)
and a word-level tokenizer built here, offline. One copy has its text model's final norm
zeroed, so every logit is 0 and greedy decoding always picks token 0, which is made the
text of a valid answer: a real ``generate`` through the real processor that answers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pvtt.builder.backends.vlm_judge import (
    DEFAULT_MODEL,
    PROMPT,
    STRICT_PROMPT,
    TransformersGenerator,
    VlmJudge,
    create,
    parse_answer,
    sample_indices,
    weights,
)
from pvtt.builder.stages.protocols import Scorer, ScoringInput
from pvtt.schemas.config import BackendConfig, ConfigError

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # read when huggingface_hub is first imported

ANSWER = '{"product": 4, "motion": 2, "lighting": 5, "overall": 3}'


class Scripted:
    """A generator that replies from a script and records what it was asked."""

    def __init__(self, *replies: str) -> None:
        self.replies = list(replies)
        self.calls: list[tuple[list[Image.Image], str, int]] = []

    def __call__(self, images: Sequence[Image.Image], prompt: str, max_new_tokens: int) -> str:
        self.calls.append((list(images), prompt, max_new_tokens))
        return self.replies.pop(0)


def _clip(frames: int = 10) -> ScoringInput:
    """A clip whose frames can be told apart: frame i is filled with the value 20 * i."""
    synth = (
        np.full((frames, 24, 32, 3), 20, np.uint8)
        * np.arange(frames, dtype=np.uint8)[:, None, None, None]
    )
    return ScoringInput(
        synth=synth,
        background=synth,
        cutout=np.zeros((4, 4, 4), np.uint8),
        boxes=np.zeros((frames, 4), np.float32),
    )


# -- parsing ---------------------------------------------------------------


def test_parse_plain_json() -> None:
    assert parse_answer(ANSWER) == {"product": 4, "motion": 2, "lighting": 5, "overall": 3}


def test_parse_json_in_prose() -> None:
    text = (
        "Sure! Here is my rating:\n```json\n"
        '{"Product": "4", "motion": 2.0, "LIGHTING": 5, "overall": 3}\n```\n'
        'I hope this helps {"product": 1}.'
    )
    assert parse_answer(text) == {"product": 4, "motion": 2, "lighting": 5, "overall": 3}
    assert parse_answer('{not json} then {"product":1,"motion":1,"lighting":1,"overall":5}') == {
        "product": 1,
        "motion": 1,
        "lighting": 1,
        "overall": 5,
    }


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (
            '{"product": 4, "motion": 2, "lighting": 7, "overall": 3}',
            "lighting = 7 is outside 1..5",
        ),
        ('{"product": 4, "motion": 0, "lighting": 5, "overall": 3}', "motion = 0 is outside 1..5"),
        ('{"product": 4, "motion": 2, "lighting": 3.5, "overall": 3}', "not a whole number"),
        ('{"product": 4, "motion": 2, "lighting": true, "overall": 3}', "not a whole number"),
        ('{"product": 4, "motion": 2, "lighting": NaN, "overall": 3}', "not a whole number"),
        ('{"product": 4, "motion": 2, "lighting": "good", "overall": 3}', "not a number"),
        ('{"product": 4, "lighting": 5}', "lacks motion, overall"),
        ("The lighting is 4/5 and overall 3/5.", "no JSON object"),
        ("", "no JSON object"),
    ],
)
def test_parse_rejects(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_answer(text)


def test_sample_indices_span_the_clip() -> None:
    assert sample_indices(10, 4) == [0, 3, 6, 9]
    assert sample_indices(3, 8) == [0, 1, 2]
    assert sample_indices(1, 8) == [0]
    assert sample_indices(0, 8) == []


# -- judging ---------------------------------------------------------------


def test_valid_answer_maps_to_unit_scores() -> None:
    generate = Scripted(ANSWER)
    judge = VlmJudge(generate, model="fake", frames=4, max_new_tokens=40)
    assert isinstance(judge, Scorer)
    assert judge.score(_clip()) == {"lighting": 1.0, "overall": 0.5}
    assert judge.last_failure is None
    [(images, prompt, max_new_tokens)] = generate.calls
    assert prompt == PROMPT.format(count=4) and max_new_tokens == 40
    assert [np.asarray(im)[0, 0, 0] for im in images] == [0, 60, 120, 180]  # frames 0, 3, 6, 9
    for question in (
        "clearly recognisable",
        "natural and smooth",
        "lighting consistent",
        "realistic overall",
    ):
        assert question in prompt
    assert judge.info.model == "fake" and judge.info.name == "vlm" and judge.info.kind == "scorer"
    assert judge.info.params == {"frames": 4, "max_new_tokens": 40}


def test_garbage_then_valid_retries_strictly() -> None:
    generate = Scripted(
        "I would rate it quite highly.", '{"product":1,"motion":1,"lighting":1,"overall":5}'
    )
    judge = VlmJudge(generate, frames=2)
    assert judge.score(_clip()) == {"lighting": 0.0, "overall": 1.0}
    assert [call[1] for call in generate.calls] == [
        PROMPT.format(count=2),
        STRICT_PROMPT.format(count=2),
    ]
    assert judge.last_failure is None


def test_garbage_twice_gives_none_and_the_reason() -> None:
    generate = Scripted("Nice video!", '{"product": 4, "motion": 2, "lighting": 9, "overall": 3}')
    judge = VlmJudge(generate)
    assert judge.score(_clip()) == {"lighting": None, "overall": None}
    assert len(generate.calls) == 2
    reason = judge.last_failure
    assert reason is not None
    assert "no JSON object" in reason and "'Nice video!'" in reason
    assert "lighting = 9 is outside 1..5" in reason
    generate.replies.append(ANSWER)  # the next clip is judged afresh
    assert judge.score(_clip()) == {"lighting": 1.0, "overall": 0.5}
    assert judge.last_failure is None


def test_empty_clip_is_not_judged() -> None:
    generate = Scripted()
    judge = VlmJudge(generate)
    assert judge.score(_clip(0)) == {"lighting": None, "overall": None}
    assert judge.last_failure == "the clip has no frames" and generate.calls == []


def test_bad_settings() -> None:
    with pytest.raises(ConfigError, match="frames"):
        VlmJudge(Scripted(), frames=0)
    with pytest.raises(ConfigError, match="known keys"):
        create(BackendConfig(backend="vlm", params={"temperature": 0.7}), "cpu")
    assert weights(BackendConfig(backend="vlm")) == [DEFAULT_MODEL]
    assert weights(BackendConfig(backend="vlm", model="/models/vlm")) == ["/models/vlm"]


# -- the transformers path -------------------------------------------------


def _tiny_idefics3(answering: bool):
    """A random Idefics3 with a word-level tokenizer; ``answering``: always says ANSWER."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3Processor,
        PreTrainedTokenizerFast,
    )
    from transformers.models.idefics3.image_processing_pil_idefics3 import (
        Idefics3ImageProcessorPil,
    )

    special = ["<unk>", "<pad>", "<end_of_utterance>", "<fake_token_around_image>", "<image>"]
    special += ["<global-img>"] + [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
    words = ["User", "Assistant", ":", "{", "}", '"', ",", "1", "2", "3", "4", "5"]
    words += ["product", "motion", "lighting", "overall", "video", "frames", "is", "the"]
    vocab = {token: i for i, token in enumerate([ANSWER, *special, *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        pad_token="<pad>",
        eos_token="<end_of_utterance>",
        additional_special_tokens=special[3:],
    )
    template = (
        "{% for m in messages %}{{ m['role'] | capitalize }}:{% for c in m['content'] %}"
        "{% if c['type'] == 'image' %}<image>{% else %} {{ c['text'] }}{% endif %}{% endfor %}"
        "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
    )
    images = Idefics3ImageProcessorPil(
        size={"longest_edge": 32}, max_image_size={"longest_edge": 32}, do_image_splitting=False
    )
    processor = Idefics3Processor(images, tokenizer, image_seq_len=4, chat_template=template)
    config = Idefics3Config(
        text_config={
            "model_type": "llama",
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 1024,
            "pad_token_id": vocab["<pad>"],
            "eos_token_id": vocab["<end_of_utterance>"],
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
            "image_size": 32,
            "patch_size": 8,
        },
        scale_factor=2,
        image_token_id=vocab["<image>"],
        pad_token_id=vocab["<pad>"],
    )
    torch.manual_seed(0)
    model = Idefics3ForConditionalGeneration(config).eval()
    if answering:
        with torch.no_grad():
            model.model.text_model.norm.weight.zero_()  # every logit 0: greedy picks token 0
    return model, processor


@pytest.fixture(scope="module")
def answering_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The answering tiny model and its processor, saved as a local model folder."""
    model, processor = _tiny_idefics3(answering=True)
    folder = tmp_path_factory.mktemp("tiny-vlm")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_create_loads_a_local_folder_and_judges(answering_folder: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = BackendConfig(
        backend="vlm", model=str(answering_folder), params={"frames": 3, "max_new_tokens": 6}
    )
    judge = create(config, "cpu")
    assert isinstance(judge.generate, TransformersGenerator)
    assert judge.info.model == str(answering_folder)
    assert judge.score(_clip()) == {"lighting": 1.0, "overall": 0.5}
    assert judge.last_failure is None
    reply = judge.generate([Image.new("RGB", (40, 30))] * 2, PROMPT.format(count=2), 2)
    assert reply.startswith(ANSWER)


def test_generator_sends_every_frame_to_the_model(monkeypatch) -> None:
    model, processor = _tiny_idefics3(answering=False)
    seen = {}
    generate = model.generate

    def spy(**inputs):
        seen.update(inputs)
        return generate(**inputs)

    monkeypatch.setattr(model, "generate", spy)
    judge = VlmJudge(TransformersGenerator(model, processor), model="tiny", frames=5)
    first = judge.score(_clip())
    assert seen["pixel_values"].shape[:2] == (1, 5)  # one sample, five frames
    assert (seen["input_ids"] == processor.image_token_id).sum() == 5 * processor.image_seq_len
    assert seen["do_sample"] is False
    # a random model cannot answer: no number is made up, and the reason is kept
    assert first == {"lighting": None, "overall": None}
    assert judge.last_failure.startswith("no usable answer in two tries")
    assert judge.score(_clip()) == first  # greedy: the same clip, the same verdict


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_judge_runs_in_bfloat16_on_cuda(answering_folder: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = BackendConfig(
        backend="vlm", model=str(answering_folder), params={"frames": 3, "max_new_tokens": 6}
    )
    judge = create(config, "cuda")
    model = judge.generate.model
    assert model.device.type == "cuda" and model.dtype == torch.bfloat16
    assert judge.score(_clip()) == {"lighting": 1.0, "overall": 0.5}


def test_missing_model_is_a_config_error(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError) as err:
        create(BackendConfig(backend="vlm", model="nobody/no-such-vlm"), "cpu")
    assert "nobody/no-such-vlm" in str(err.value) and "local folder" in str(err.value)
