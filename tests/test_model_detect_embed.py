"""Grounding DINO detector and embedding scorer, with tiny random models built offline.

Random weights say nothing about what is found or how alike two products are, so the
tests check the plumbing against the models' own raw outputs: which frame and box the
scan returns, where the thresholds and the batch boundaries fall, and that the insert
cut back out of the clip lines up with the cut-out to the sub-pixel (the same image
in, the same embedding out, whatever the network's weights).
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

from concurrent.futures import ThreadPoolExecutor

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

transformers = pytest.importorskip("transformers")

from pvtt.builder.backends import embedding_scorer, grounding_dino  # noqa: E402
from pvtt.builder.backends.cpu_inserter import AlphaCompositeInserter  # noqa: E402
from pvtt.builder.backends.embedding_scorer import (  # noqa: E402
    EmbeddingScorer,
    EncoderSpec,
    ImageEncoder,
    cosine_to_score,
)
from pvtt.builder.backends.grounding_dino import GroundingDinoDetector, normalise_prompt  # noqa: E402
from pvtt.builder.registry import create_backend  # noqa: E402
from pvtt.builder.stages.cutout import trim_to_alpha  # noqa: E402
from pvtt.builder.stages.protocols import (  # noqa: E402
    Detection,
    Detector,
    InsertionInput,
    Prompt,
    Scorer,
    ScoringInput,
    StageRejected,
)
from pvtt.schemas.config import BackendConfig, ConfigError  # noqa: E402

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "a", "coffee", "cup", "toy", "car"]
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def footage(shared_data) -> np.ndarray:
    """The first 16 frames of a real clip at 320 x 180."""
    from pvtt.builder.video import read_frames  # PyAV, which the CUDA tests do without

    frames, _ = read_frames(shared_data / "sam2" / "04_coffee.mp4", 0, 16, max_size=(320, 180))
    assert frames.shape == (16, 180, 320, 3)
    return frames


# --- Grounding DINO -------------------------------------------------------------------


def tiny_grounding_dino() -> tuple[object, object]:
    """A random 0.2M-parameter Grounding DINO and a processor built without any file."""
    torch.manual_seed(0)
    config = transformers.GroundingDinoConfig(
        backbone_config=transformers.SwinConfig(
            image_size=64,
            patch_size=4,
            embed_dim=8,
            depths=[1, 1, 1, 1],
            num_heads=[1, 1, 1, 1],
            window_size=4,
            out_indices=[2, 3, 4],
        ),
        text_config=transformers.BertConfig(
            vocab_size=len(VOCAB),
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=32,
        ),
        d_model=32,  # GroupNorm(32, d_model)
        encoder_layers=1,
        decoder_layers=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_n_points=2,
        decoder_n_points=2,
        num_queries=12,
        max_text_len=16,
    )
    model = transformers.GroundingDinoForObjectDetection(config).eval()
    with torch.no_grad():  # random logits of +-10 saturate every score at 1.0; shrink them
        model.model.decoder.layer_norm.weight.mul_(0.05)
    processor = transformers.GroundingDinoProcessor(
        image_processor=transformers.GroundingDinoImageProcessorPil(
            size={"shortest_edge": 64, "longest_edge": 112}
        ),
        tokenizer=transformers.BertTokenizer(vocab={w: i for i, w in enumerate(VOCAB)}),
    )
    return model, processor


@pytest.fixture(scope="module")
def dino() -> tuple[object, object]:
    return tiny_grounding_dino()


def raw_best(
    model, processor, frame: np.ndarray, text: str, bf16: bool = False
) -> tuple[float, tuple[float, ...]]:
    """The best query's score and its box in frame pixels, straight from the model's outputs."""
    device = next(model.parameters()).device
    inputs = processor(images=[frame], text=[text], return_tensors="pt").to(device)
    with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16, enabled=bf16):
        out = model(**inputs)
    scores = out.logits[0].float().sigmoid().amax(-1)
    q = int(scores.argmax())
    cx, cy, w, h = out.pred_boxes[0, q].float().tolist()
    height, width = frame.shape[:2]
    box = ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)
    clipped = tuple(min(max(v, 0.0), lim) for v, lim in zip(box, (width, height) * 2, strict=True))
    return float(scores[q]), clipped


def test_prompt_is_normalised() -> None:
    assert normalise_prompt("Coffee_Cup ") == "coffee cup."
    assert normalise_prompt("a  Toy Car.") == "a toy car."
    with pytest.raises(ValueError, match="empty"):
        normalise_prompt(" . ")


def test_detects_the_top_box_of_the_first_frame(dino, footage) -> None:
    model, processor = dino
    detector = GroundingDinoDetector(
        model, processor, box_threshold=0.0, text_threshold=0.0, stride=1, batch_size=4
    )
    assert isinstance(detector, Detector)
    assert next(detector.model.parameters()).device.type == "cpu"
    found = detector.detect(footage[:10], Prompt("Coffee_Cup"))
    assert isinstance(found, Detection)
    score, box = raw_best(model, processor, footage[0], "coffee cup.")
    assert found.frame_index == 0
    assert found.score == pytest.approx(score, abs=1e-5)
    assert found.box == pytest.approx(box, abs=1e-3)
    x0, y0, x1, y1 = found.box
    assert 0 <= x0 < x1 <= 320 and 0 <= y0 < y1 <= 180
    assert all(isinstance(v, float) for v in found.box)
    assert set(found.label.split()) <= {"coffee", "cup"} and found.label
    assert detector.info.model == grounding_dino.DEFAULT_MODEL
    assert detector.info.params["box_threshold"] == 0.0


@pytest.fixture(scope="module")
def ranked_clip(dino, footage) -> tuple[np.ndarray, list[float]]:
    """Eight real frames in rising order of their best score, each shown twice (T = 16)."""
    model, processor = dino
    pool = footage[::2]
    scores = [raw_best(model, processor, f, "coffee cup.")[0] for f in pool]
    order = np.argsort(scores)
    ranked = sorted(scores)
    assert ranked[-1] - ranked[-2] > 1e-4  # a clean gap for the threshold to fall in
    return np.repeat(pool[order], 2, axis=0), ranked


def test_scan_strides_across_batches_to_the_first_confident_frame(dino, ranked_clip) -> None:
    model, processor = dino
    clip, ranked = ranked_clip
    # frames 0, 2, ..., 14 are scanned in batches [0 2 4] [6 8 10] [12 14]; only the last
    # one beats a threshold set at the runner-up's score
    threshold = (ranked[-2] + ranked[-1]) / 2
    detector = GroundingDinoDetector(
        model, processor, box_threshold=threshold, text_threshold=0.0, stride=2, batch_size=3
    )
    found = detector.detect(clip, Prompt("coffee cup"))
    assert found.frame_index == 14
    assert found.score == pytest.approx(ranked[-1], abs=1e-5)
    # the same scan in one batch finds the same
    whole = GroundingDinoDetector(
        model, processor, box_threshold=threshold, text_threshold=0.0, stride=2, batch_size=16
    ).detect(clip, Prompt("coffee cup"))
    assert whole.frame_index == 14 and whole.box == pytest.approx(found.box, abs=1e-3)
    # max_frames stops the scan short of it
    short = GroundingDinoDetector(
        model, processor, box_threshold=threshold, stride=2, batch_size=3, max_frames=7
    )
    with pytest.raises(StageRejected, match=r"no 'coffee cup' found in 7 frames scanned") as err:
        short.detect(clip, Prompt("coffee cup"))
    assert f"best score {ranked[-2]:.3f} < threshold {threshold}" in err.value.reason


def test_nothing_confident_is_rejected(dino, footage) -> None:
    detector = GroundingDinoDetector(*dino, box_threshold=1.0, text_threshold=1.0, stride=4)
    with pytest.raises(StageRejected, match=r"no 'toy car' found in 3 frames scanned \(best score"):
        detector.detect(footage[:12], Prompt("Toy car."))


def test_catalog_box_wins(dino, footage) -> None:
    detector = GroundingDinoDetector(*dino)
    found = detector.detect(footage[:4], Prompt("coffee cup", box=(-5.0, 10.0, 100.5, 400.0)))
    assert found == Detection(0, (0.0, 10.0, 100.5, 180.0), 1.0, "coffee cup")


def test_bad_frames_and_params(dino) -> None:
    with pytest.raises(ValueError, match="uint8 T x H x W x 3"):
        GroundingDinoDetector(*dino).detect(np.zeros((2, 8, 8), np.uint8), Prompt("cup"))
    with pytest.raises(ValueError, match="stride"):
        GroundingDinoDetector(*dino, stride=0)
    with pytest.raises(ValueError, match="box_threshold"):
        GroundingDinoDetector(*dino, box_threshold=1.5)


def test_detector_loads_a_local_checkpoint(dino, tmp_path, footage) -> None:
    model, processor = dino
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    config = BackendConfig("grounding-dino", model=str(tmp_path), params={"box_threshold": 0.0})
    detector = create_backend("detector", config)
    assert isinstance(detector, GroundingDinoDetector)
    assert detector.info.model == str(tmp_path)
    direct = GroundingDinoDetector(model, processor, box_threshold=0.0)
    assert detector.detect(footage[:2], Prompt("cup")) == direct.detect(footage[:2], Prompt("cup"))


def test_detector_config_errors(tmp_path) -> None:
    missing = tmp_path / "no-such-checkpoint"
    with pytest.raises(ConfigError, match=r"no-such-checkpoint.*detector\.model"):
        create_backend("detector", BackendConfig("grounding-dino", model=str(missing)))
    with pytest.raises(ConfigError, match=r"unknown keys \['box_treshold'\]"):
        grounding_dino.create(BackendConfig("grounding-dino", params={"box_treshold": 0.3}), "cpu")
    with pytest.raises(ConfigError, match=r"unknown keys \['device'\]"):
        grounding_dino.create(BackendConfig("grounding-dino", params={"device": "cuda"}), "cpu")
    assert grounding_dino.weights(BackendConfig("grounding-dino")) == [
        "IDEA-Research/grounding-dino-tiny"
    ]
    assert grounding_dino.weights(BackendConfig("grounding-dino", model="/m/gd")) == ["/m/gd"]


# --- the embedding scorer -------------------------------------------------------------


def tiny_encoders(cos_range: tuple[float, float] | None = None) -> list[ImageEncoder]:
    """Random DINOv2 and CLIP vision models (32 px input) with processors built in code."""
    torch.manual_seed(0)
    layers = {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "patch_size": 8,
        "image_size": 32,
    }
    sizes = {"size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32}}
    dinov2 = transformers.Dinov2Model(transformers.Dinov2Config(**layers))
    clip = transformers.CLIPVisionModelWithProjection(
        transformers.CLIPVisionConfig(**layers, projection_dim=16)
    )
    return [
        ImageEncoder(
            EncoderSpec("dinov2", "tiny-dinov2", cos_range=cos_range),
            dinov2,
            transformers.BitImageProcessorPil(**sizes),
        ),
        ImageEncoder(
            EncoderSpec("clip", "tiny-clip", cos_range=cos_range),
            clip,
            transformers.CLIPImageProcessorPil(**sizes),
        ),
    ]


@pytest.fixture(scope="module")
def cutout(shared_data) -> np.ndarray:
    rgba = cv2.imread(str(shared_data / "rembg" / "car-3.out.png"), cv2.IMREAD_UNCHANGED)
    return cv2.cvtColor(rgba, cv2.COLOR_BGRA2RGBA)


@pytest.fixture(scope="module")
def composite(footage, cutout) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The car pasted as is, harmonised, and the footage with no car, with their boxes."""
    trimmed = trim_to_alpha(cutout)
    frames = footage[:8]
    t = np.arange(len(frames))
    width = 140.0
    height = width * trimmed.shape[0] / trimmed.shape[1]
    cx, cy = 110 + 3.3 * t, 120 + 2 * np.sin(t / 3)
    boxes = np.stack([cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2], 1)
    boxes = boxes.astype(np.float32)
    as_is = AlphaCompositeInserter(harmonize=0.0, feather_px=0.0)
    return {
        "as is": (as_is.insert(InsertionInput(frames, cutout, boxes)), boxes),
        "harmonised": (
            AlphaCompositeInserter().insert(InsertionInput(frames, cutout, boxes)),
            boxes,
        ),
        "no insert": (frames, boxes),
    }


def sample(composite, cutout, name: str) -> ScoringInput:
    synth, boxes = composite[name]
    return ScoringInput(synth, composite["no insert"][0], cutout, boxes, fps=30.0)


def test_embeddings_are_unit_vectors_of_each_model(cutout) -> None:
    dinov2, clip = tiny_encoders()
    images = [np.full((32, 32, 3), v, np.uint8) for v in (0, 128, 255)]
    images.append(cv2.resize(cutout[..., :3], (32, 32), interpolation=cv2.INTER_AREA))
    for encoder, dim in ((dinov2, 32), (clip, 16)):
        assert encoder.input_size == 32
        vectors = encoder.embed(images + images[:1], batch_size=2, autocast=False)
        assert vectors.shape == (5, dim) and vectors.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        assert float(vectors[0] @ vectors[4]) == pytest.approx(1.0, abs=1e-5)
        assert cosine_to_score(float(vectors[0] @ vectors[4]), *encoder.spec.cos_range) == 1.0
    assert cosine_to_score(0.5, 0.2, 0.8) == pytest.approx(0.5)
    assert cosine_to_score(0.1, 0.2, 0.8) == 0.0


def test_scores_are_complete_bounded_and_deterministic(composite, cutout) -> None:
    scorer = EmbeddingScorer(tiny_encoders(), frames=4, batch_size=3)
    assert isinstance(scorer, Scorer)
    job = sample(composite, cutout, "harmonised")
    first = scorer.score(job)
    assert set(first) == {"identity", "temporal", "lighting"}
    assert all(0.0 <= v <= 1.0 for v in first.values() if v is not None)
    assert first == scorer.score(job)
    alone = EmbeddingScorer(tiny_encoders(), frames=4, with_statistics=False).score(job)
    assert alone == {"identity": first["identity"]}
    assert scorer.info.name == "embedding"
    assert scorer.info.model == "tiny-dinov2+tiny-clip"
    assert scorer.info.params["statistics"]["backend"] == "cpu-statistics"


def test_batching_does_not_change_the_identity(composite, cutout) -> None:
    job = sample(composite, cutout, "harmonised")
    linear = (-1.0, 1.0)  # no clipping, so any difference would show
    one = EmbeddingScorer(tiny_encoders(linear), frames=5, batch_size=1, with_statistics=False)
    many = EmbeddingScorer(tiny_encoders(linear), frames=5, batch_size=64, with_statistics=False)
    assert one.score(job)["identity"] == pytest.approx(many.score(job)["identity"], abs=1e-6)


def test_pairs_scored_together_share_forwards_and_keep_their_scores(composite, cutout) -> None:
    jobs = [sample(composite, cutout, name) for name in ("as is", "harmonised") * 3]
    linear = (-1.0, 1.0)
    alone = EmbeddingScorer(tiny_encoders(linear), frames=4, with_statistics=False)
    expected = [alone.score(job)["identity"] for job in jobs]
    together = EmbeddingScorer(tiny_encoders(linear), frames=4, with_statistics=False)
    with ThreadPoolExecutor(len(jobs)) as pool:
        got = list(pool.map(lambda job: together.score(job)["identity"], jobs))
    assert got == pytest.approx(expected, abs=1e-5)
    stats = [b.stats for b in together.batchers]
    assert all(s.calls == len(jobs) and s.items == 8 * len(jobs) for s in stats)
    assert all(s.batches <= s.calls for s in stats)


def test_the_insert_is_cut_back_out_exactly(composite, cutout) -> None:
    """Pasted as is, the insert embeds like the cut-out itself; elsewhere it does not.

    Measured (tiny random models, mean cosine over 4 frames): as is 0.9999 (DINOv2) /
    0.9998 (CLIP); harmonised 0.997 / 0.995; no insert under the boxes 0.981 / 0.978.
    """

    def identity(name: str, encoder: int) -> float:
        scorer = EmbeddingScorer(
            [tiny_encoders((0.995, 1.0))[encoder]], frames=4, with_statistics=False
        )
        return scorer.score(sample(composite, cutout, name))["identity"]

    for encoder in (0, 1):
        as_is, harmonised, empty = (
            identity(n, encoder) for n in ("as is", "harmonised", "no insert")
        )
        assert as_is > 0.9
        assert as_is > harmonised > empty
        assert empty < 0.3


def test_weighted_encoders(composite, cutout) -> None:
    job = sample(composite, cutout, "harmonised")
    linear = (-1.0, 1.0)
    dinov2, clip = (
        EmbeddingScorer([e], frames=3, with_statistics=False).score(job)["identity"]
        for e in tiny_encoders(linear)
    )
    d, c = tiny_encoders(linear)
    d.spec = EncoderSpec("dinov2", "tiny-dinov2", weight=3.0, cos_range=linear)
    both = EmbeddingScorer([d, c], frames=3, with_statistics=False).score(job)["identity"]
    assert both == pytest.approx((3 * dinov2 + clip) / 4, abs=1e-6)


def test_nothing_to_score_is_rejected(composite, cutout) -> None:
    synth, boxes = composite["as is"]
    scorer = EmbeddingScorer(tiny_encoders(), with_statistics=False)
    nan = np.full_like(boxes, np.nan)
    with pytest.raises(StageRejected, match="no frame"):
        scorer.score(ScoringInput(synth, synth, cutout, nan))
    off = boxes + np.float32(1000.0)
    with pytest.raises(StageRejected, match="off the frame"):
        scorer.score(ScoringInput(synth, synth, cutout, off))


def test_scorer_loads_local_checkpoints(tmp_path, composite, cutout) -> None:
    for encoder in tiny_encoders():
        encoder.model.save_pretrained(tmp_path / encoder.spec.family)
        encoder.processor.save_pretrained(tmp_path / encoder.spec.family)
    params = {
        "models": {"dinov2": 1.0, "clip": 2.0},
        "dinov2_model": str(tmp_path / "dinov2"),
        "clip_model": str(tmp_path / "clip"),
        "frames": 3,
        "with_statistics": False,
    }
    scorer = create_backend("scorer", BackendConfig("embedding", params=params))
    assert isinstance(scorer, EmbeddingScorer)
    assert [type(e.model).__name__ for e in scorer.encoders] == [
        "Dinov2Model",
        "CLIPVisionModelWithProjection",
    ]
    assert scorer.info.params["encoders"]["clip"] == {
        "model": str(tmp_path / "clip"),
        "weight": 2.0,
        "range": [0.5, 0.9],
    }
    direct = EmbeddingScorer(
        [
            ImageEncoder(
                EncoderSpec(e.spec.family, e.spec.model_id, e.spec.weight), e.model, e.processor
            )
            for e in tiny_encoders()
        ],
        frames=3,
        with_statistics=False,
    )
    job = sample(composite, cutout, "harmonised")
    assert scorer.score(job)["identity"] == pytest.approx(direct.score(job)["identity"], abs=1e-6)


def test_embedding_config(tmp_path) -> None:
    cfg = BackendConfig("embedding")
    assert embedding_scorer.weights(cfg) == ["facebook/dinov2-small"]
    both = BackendConfig("embedding", params={"models": {"dinov2": 0.5, "clip": 0.5}})
    assert embedding_scorer.weights(both) == [
        "facebook/dinov2-small",
        "openai/clip-vit-base-patch32",
    ]
    clip = BackendConfig("embedding", model="/m/clip", params={"models": ["clip"]})
    assert embedding_scorer.weights(clip) == ["/m/clip"]
    with pytest.raises(ConfigError, match="ambiguous"):
        embedding_scorer.weights(BackendConfig("embedding", model="/m", params=both.params))
    with pytest.raises(ConfigError, match="unknown encoder family 'siglip'"):
        embedding_scorer.weights(BackendConfig("embedding", params={"models": ["siglip"]}))
    with pytest.raises(ConfigError, match=r"unknown keys \['clip_model'\]"):
        embedding_scorer.weights(BackendConfig("embedding", params={"clip_model": "/m"}))
    with pytest.raises(ConfigError, match="dinov2_range"):
        embedding_scorer.weights(BackendConfig("embedding", params={"dinov2_range": [0.9, 0.1]}))
    missing = tmp_path / "no-dinov2"
    with pytest.raises(ConfigError, match=r"no-dinov2.*params\.dinov2_model"):
        create_backend("scorer", BackendConfig("embedding", model=str(missing)))


# --- CUDA -----------------------------------------------------------------------------


def synthetic_clip(frames: int = 6) -> np.ndarray:
    rng = np.random.default_rng(0)
    clip = np.repeat(rng.integers(0, 255, (1, 90, 160, 3), np.uint8), frames, axis=0)
    clip[:, 30:60, 50:110] = (200, 40, 40)
    return clip


@pytest.mark.gpu
@gpu
def test_detector_on_cuda() -> None:
    """On CUDA the detector returns the model's own best box; near-tied random scores may
    pick another query than on CPU (TF32 convolutions, bf16), so only the score is compared."""
    model, processor = tiny_grounding_dino()
    clip = synthetic_clip()
    cpu_score = raw_best(model, processor, clip[0], "red car.")[0]
    for precision in ("fp32", "bf16"):
        detector = GroundingDinoDetector(
            model,
            processor,
            device="cuda",
            box_threshold=0.0,
            text_threshold=0.0,
            precision=precision,
        )
        assert next(detector.model.parameters()).device.type == "cuda"
        found = detector.detect(clip, Prompt("red car"))
        score, box = raw_best(detector.model, processor, clip[0], "red car.", precision == "bf16")
        assert found.frame_index == 0
        assert found.score == pytest.approx(score, abs=1e-4)
        assert found.box == pytest.approx(box, abs=1e-2)
        assert found.score == pytest.approx(cpu_score, abs=0.02)


@pytest.mark.gpu
@gpu
def test_embedding_scorer_on_cuda() -> None:
    clip = synthetic_clip()
    car = np.zeros((30, 60, 4), np.uint8)
    car[..., :3], car[..., 3] = (200, 40, 40), 255
    boxes = np.tile(np.float32([50, 30, 110, 60]), (len(clip), 1))
    job = ScoringInput(clip, clip, car, boxes)
    linear = (-1.0, 1.0)
    expected = EmbeddingScorer(tiny_encoders(linear), with_statistics=False).score(job)
    for precision in ("fp32", "bf16"):
        scorer = EmbeddingScorer(
            tiny_encoders(linear), device="cuda", precision=precision, with_statistics=False
        )
        got = scorer.score(job)
        assert got["identity"] == pytest.approx(expected["identity"], abs=0.02)
