"""The diffusion inpainter and refining inserter, with a tiny random pipeline on real footage.

Random weights paint noise, so these tests judge what the backends promise whatever the
model: pixels outside the (grown) region stay exact, every frame gets the same noise
(identical frames come out identical, however they are batched), the temporal band
keeps the real background along the hole's edge, and ``create`` loads a pipeline from a
local folder and names a missing one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
import torch
from truth import TruthClip, make_truth_clip

from pvtt.builder.backends.cpu_inpainter import TemporalFillInpainter
from pvtt.builder.backends.cpu_inserter import AlphaCompositeInserter
from pvtt.builder.backends.diffusers_inpainter import (
    DEFAULT_MODEL,
    DiffusersInpainter,
    dilate,
    weights,
    working_size,
)
from pvtt.builder.backends.diffusers_refiner import DiffusersRefiner
from pvtt.builder.boxes import box_to_mask
from pvtt.builder.registry import create_backend
from pvtt.builder.stages.protocols import Inpainter, Inserter, InsertionInput
from pvtt.schemas.config import BackendConfig, ConfigError

FAST = {"steps": 2, "size": 64, "batch_size": 4}


def tiny_pipeline(folder: Path):
    """A random ``StableDiffusionInpaintPipeline`` (9-channel UNet) small enough for the CPU."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionInpaintPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in "abcdefghijklmnopqrstuvwxyz,.":
        vocab[char] = len(vocab)
        vocab[char + "</w>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77
    )
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=32,
        in_channels=9,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=8,
        attention_head_dim=4,
    )
    vae = AutoencoderKL(
        block_out_channels=[32, 64],
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=4,
        norm_num_groups=8,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=len(vocab),
            projection_dim=32,
        )
    )
    pipeline = StableDiffusionInpaintPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=DDIMScheduler(steps_offset=1),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory):
    return tiny_pipeline(tmp_path_factory.mktemp("tiny-sd"))


@pytest.fixture(scope="module")
def saved_pipeline(pipeline, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("saved") / "tiny sd inpaint"
    pipeline.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def truth(shared_data: Path) -> TruthClip:
    return make_truth_clip(shared_data, num_frames=6, size=(128, 72), product_width=40.0)


def test_working_size_is_a_multiple_of_8_with_the_aspect_kept() -> None:
    assert working_size(1280, 720, 512) == (512, 288)
    assert working_size(100, 300, 512) == (168, 512)
    assert working_size(10, 1000, 64) == (8, 64)


def test_inpainter_changes_only_the_dilated_hole(pipeline, truth: TruthClip) -> None:
    backend = DiffusersInpainter(pipeline, model="tiny", **FAST)
    assert isinstance(backend, Inpainter)
    out = backend.inpaint(np.array(truth.frames), np.array(truth.masks))
    assert out.shape == truth.frames.shape and out.dtype == np.uint8
    holes = dilate(truth.masks, round(0.02 * 128))
    assert np.array_equal(out[~holes], truth.frames[~holes])
    changed = np.abs(out.astype(int) - truth.frames)[truth.masks].mean()
    assert changed > 10, changed  # random weights repaint the product's pixels
    assert backend.info.model == "tiny" and backend.info.params["dtype"] == "float32"


def test_every_frame_gets_the_same_noise_however_batched(pipeline, truth: TruthClip) -> None:
    frames = np.repeat(truth.frames[2:3], 5, axis=0)
    masks = np.repeat(truth.masks[2:3], 5, axis=0)
    batched = DiffusersInpainter(pipeline, **FAST).inpaint(frames, masks)
    single = DiffusersInpainter(pipeline, **{**FAST, "batch_size": 1}).inpaint(frames, masks)
    for t in range(1, 5):
        assert np.abs(batched[t].astype(int) - batched[0]).max() <= 1  # float rounding in batched convs
    assert np.abs(single.astype(int) - batched).max() <= 1
    reseeded = DiffusersInpainter(pipeline, **{**FAST, "seed": 7}).inpaint(frames, masks)
    assert np.abs(reseeded.astype(int) - batched)[masks].mean() > 1  # the seed matters


def test_temporal_band_keeps_real_background_at_the_hole_edge(pipeline, truth: TruthClip) -> None:
    frames, masks = np.array(truth.frames), np.array(truth.masks)
    plain = DiffusersInpainter(pipeline, **FAST).inpaint(frames, masks)
    band = 0.04  # of 128 px: 5.1 px
    banded = DiffusersInpainter(pipeline, **FAST, temporal_band=band).inpaint(frames, masks)
    holes = dilate(masks, round(0.02 * 128))
    fill = TemporalFillInpainter(dilate=0.0).inpaint(frames, holes)
    import cv2

    depth = np.stack([cv2.distanceTransform(h.view(np.uint8), cv2.DIST_L2, 3) for h in holes])
    deep = depth >= band * 128
    edge = holes & (depth <= 1.5)
    assert deep.sum() > 100 and edge.sum() > 100
    assert np.array_equal(banded[deep], plain[deep])  # diffusion alone in the interior
    to_fill_banded = np.abs(banded.astype(int) - fill)[edge].mean()
    to_fill_plain = np.abs(plain.astype(int) - fill)[edge].mean()
    assert to_fill_banded < 0.5 * to_fill_plain, (to_fill_banded, to_fill_plain)
    # against the true background, the band beats random diffusion inside the hole
    err_banded = np.abs(banded.astype(int) - truth.background)[holes].mean()
    err_plain = np.abs(plain.astype(int) - truth.background)[holes].mean()
    assert err_banded < err_plain, (err_banded, err_plain)


def test_inpainter_returns_a_copy_when_there_is_no_hole(pipeline, truth: TruthClip) -> None:
    empty = np.zeros_like(truth.masks)
    out = DiffusersInpainter(pipeline, **FAST).inpaint(np.array(truth.frames), empty)
    assert np.array_equal(out, truth.frames)


def _job(truth: TruthClip, lost: tuple[int, ...] = (1,)) -> InsertionInput:
    boxes = np.array(truth.boxes, dtype=np.float32)
    boxes[list(lost)] = np.nan
    return InsertionInput(
        background=np.array(truth.background), cutout=np.array(truth.cutout), boxes=boxes, seed=3
    )


def _grown(boxes: np.ndarray, dilate_frac: float) -> np.ndarray:
    sides = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    pad = (dilate_frac * sides)[:, None]
    return boxes + np.hstack([-pad, -pad, pad, pad])


def test_refiner_touches_only_the_grown_boxes(pipeline, truth: TruthClip) -> None:
    job = _job(truth)
    backend = DiffusersRefiner(pipeline, **{**FAST, "steps": 4})
    assert isinstance(backend, Inserter)
    out = backend.insert(job)
    composite = AlphaCompositeInserter().insert(job)
    regions = box_to_mask(_grown(job.boxes.astype(np.float64), 0.1), 72, 128)
    assert not regions[1].any()
    assert np.array_equal(out[1], job.background[1])  # no box: the background, untouched
    assert np.array_equal(out[~regions], composite[~regions])
    inside = box_to_mask(job.boxes, 72, 128)
    assert np.abs(out.astype(int) - composite)[inside].mean() > 5
    assert backend.info.params["composite"] == AlphaCompositeInserter().info.params


def test_refiner_shares_noise_across_frames(pipeline, truth: TruthClip) -> None:
    t = 3
    job = InsertionInput(
        background=np.repeat(truth.background[t : t + 1], 4, axis=0),
        cutout=np.array(truth.cutout),
        boxes=np.repeat(truth.boxes[t : t + 1], 4, axis=0),
        seed=11,
    )
    out = DiffusersRefiner(pipeline, **{**FAST, "steps": 4, "batch_size": 3}).insert(job)
    for i in range(1, 4):
        assert np.array_equal(out[i], out[0])


def test_refiner_needs_at_least_one_denoising_step(pipeline) -> None:
    with pytest.raises(ValueError, match="steps \\* strength"):
        DiffusersRefiner(pipeline, steps=3, strength=0.3)


def test_create_loads_a_local_folder(saved_pipeline: Path, truth: TruthClip) -> None:
    config = BackendConfig(backend="diffusers", model=str(saved_pipeline), params=FAST)
    backend = create_backend("inpainter", config, "cpu")
    assert backend.info.model == str(saved_pipeline)
    out = backend.inpaint(np.array(truth.frames[:2]), np.array(truth.masks[:2]))
    assert out.shape == truth.frames[:2].shape
    refine = BackendConfig(
        backend="diffusers-refine", model=str(saved_pipeline), params={**FAST, "steps": 4}
    )
    assert isinstance(create_backend("inserter", refine, "cpu"), DiffusersRefiner)


def test_create_names_a_missing_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ConfigError, match="inpainter.model.*no-such/pipeline.*local folder"):
        create_backend("inpainter", BackendConfig(backend="diffusers", model="no-such/pipeline"))
    with pytest.raises(ConfigError, match="inserter.model.*does/not/exist"):
        create_backend(
            "inserter", BackendConfig(backend="diffusers-refine", model="/does/not/exist")
        )


def test_create_rejects_unknown_params_before_loading() -> None:
    config = BackendConfig(backend="diffusers", model="/never/loaded", params={"stpes": 3})
    with pytest.raises(ConfigError, match="unknown keys \\['stpes'\\]"):
        create_backend("inpainter", config)


def test_weights_name_the_default_model() -> None:
    assert weights(BackendConfig(backend="diffusers")) == [DEFAULT_MODEL]
    assert weights(BackendConfig(backend="diffusers", model="/m")) == ["/m"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bfloat16_on_cuda_keeps_outside_pixels_and_shared_noise(pipeline) -> None:
    ys, xs = np.mgrid[0:72, 0:128]
    frames = np.repeat(np.dstack([xs * 2, ys * 3, xs + ys]).astype(np.uint8)[None], 3, axis=0)
    masks = np.zeros((3, 72, 128), bool)
    masks[:, 20:50, 40:90] = True
    on_gpu = pipeline.to("cuda", torch.bfloat16)
    try:
        backend = DiffusersInpainter(on_gpu, **FAST)
        assert backend.info.params["dtype"] == "bfloat16"
        out = backend.inpaint(frames, masks)
        holes = dilate(masks, round(0.02 * 128))
        assert np.array_equal(out[~holes], frames[~holes])
        assert np.array_equal(out[1], out[0]) and np.array_equal(out[2], out[0])
    finally:
        pipeline.to("cpu", torch.float32)
