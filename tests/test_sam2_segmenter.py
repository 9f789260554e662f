"""The SAM2 segmenter on real frames with an untrained model: plumbing, not mask quality.

Random weights give meaningless masks, so the tests check what the backend itself does:
the inference state it builds from memory equals SAM2's own (same masks as SAM2's
``init_state`` path), the batched image encoder runs ahead both ways and agrees with it,
propagation covers every frame both ways, nothing touches the disk, losses are rejected,
and checkpoints load through ``weights_only`` only.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from fractions import Fraction

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")

from PIL import Image  # noqa: E402

from pvtt.builder.backends import mask_collector  # noqa: E402
from pvtt.builder.backends.sam2_segmenter import (  # noqa: E402
    OBJ_ID,
    Sam2Segmenter,
    build_predictor,
    create,
    weights,
)
from pvtt.builder.backends.sam2_state import (  # noqa: E402
    IMG_MEAN,
    IMG_STD,
    FrameImages,
    init_state_from_frames,
    materialized_state,
)
from pvtt.builder.boxes import masks_to_boxes  # noqa: E402
from pvtt.builder.registry import backend_weights, create_backend  # noqa: E402
from pvtt.builder.stages.protocols import Detection, Segmenter, StageRejected  # noqa: E402
from pvtt.builder.video import read_frames  # noqa: E402
from pvtt.schemas.config import BackendConfig, ConfigError  # noqa: E402
from pvtt.schemas.masks import encode_masks  # noqa: E402

SIZE = 128
"""Model input size for tests: SAM2 takes any multiple of 32; 1024 is its trained size."""
MUG = (200.0, 103.75, 246.25, 153.75)
"""The blue mug of ``sam2/04_coffee.mp4`` at 320x180 (``(800, 415, 985, 615)`` at 720p)."""
START = 3
"""Detection frame in the middle of the 8 test frames, so both directions have work."""


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on the tiny test inputs more threads only wait for each other (and
    for whatever else shares the cores); measured 0.9 s vs 3.9 s per clip on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def frames(shared_data) -> np.ndarray:
    clip, _ = read_frames(shared_data / "sam2" / "04_coffee.mp4", 0, 8, max_size=(320, 180))
    assert clip.shape == (8, 180, 320, 3)
    return clip


@pytest.fixture(scope="module")
def predictor():
    return build_predictor(None, image_size=SIZE, random_weights=True)


@pytest.fixture
def detection() -> Detection:
    return Detection(frame_index=START, box=MUG, score=1.0)


def _sam2_reference_masks(predictor, images: torch.Tensor, height: int, width: int, monkeypatch):
    """Masks from SAM2's own ``init_state`` path, fed the same images (no files involved)."""
    import sam2.sam2_video_predictor as svp

    monkeypatch.setattr(svp, "load_video_frames", lambda **_: (images.clone(), height, width))
    state = predictor.init_state("in-memory")
    predictor.add_new_points_or_box(state, frame_idx=START, obj_id=1, box=np.float32(MUG))
    masks = np.zeros((len(images), height, width), dtype=bool)
    for reverse in (False, True):
        for t, _, logits in predictor.propagate_in_video(state, START, reverse=reverse):
            masks[t] = (logits[0, 0] > 0).numpy()
    return state, masks


def test_state_from_memory_equals_sam2_init_state(predictor, frames, detection, monkeypatch):
    """Both of pvtt's states (images made lazily, and SAM2's layout) against SAM2's own."""
    full = materialized_state(predictor, frames)
    theirs, reference = _sam2_reference_masks(predictor, full["images"], 180, 320, monkeypatch)
    lazy = init_state_from_frames(predictor, frames)
    for ours in (full, lazy):
        assert ours.keys() == theirs.keys()
        for key in ("num_frames", "video_height", "video_width", "device", "storage_device"):
            assert ours[key] == theirs[key], key
    lazy["images"].close()
    assert full["images"].shape == (8, 3, SIZE, SIZE) and full["images"].dtype == torch.float32
    track = Sam2Segmenter(predictor, max_lost_share=1.0, encoder_batch=1).segment(frames, detection)
    np.testing.assert_array_equal(track.masks, reference)


def test_batched_encoder_runs_ahead_both_ways(predictor, frames, detection, monkeypatch):
    """Encoder batches of 4: frames 3-6 (prompt, forwards), 7, then 2-0 (backwards; SAM2
    does not encode the prompted frame again)."""
    sizes = []
    real = predictor.forward_image

    def spy(images):
        sizes.append(len(images))
        return real(images)

    monkeypatch.setattr(predictor, "forward_image", spy)
    batched = Sam2Segmenter(predictor, max_lost_share=1.0, encoder_batch=4)
    masks = batched.segment(frames, detection).masks
    assert sizes == [4, 1, 3]
    sizes.clear()
    single = Sam2Segmenter(predictor, max_lost_share=1.0, encoder_batch=1)
    reference = single.segment(frames, detection).masks
    assert sizes == [1] * 8  # every frame once, as SAM2's own cache does
    assert (masks == reference).mean() > 0.999  # batched float sums may round differently


def test_overlapped_masks_equal_a_plain_loop(predictor, frames, detection):
    """The collector's masks (copied, boxed and encoded on a thread) against thresholding
    each frame's logits in the loop, on the same state."""
    state = init_state_from_frames(predictor, frames, encoder_batch=4)
    plain = np.zeros((8, 180, 320), dtype=bool)
    with torch.inference_mode():
        predictor.add_new_points_or_box(state, frame_idx=START, obj_id=OBJ_ID, box=np.float32(MUG))
        for reverse in (False, True):
            for t, _, logits in predictor.propagate_in_video(state, START, reverse=reverse):
                plain[t] = (logits[0, 0] > 0).numpy()
    state["images"].close()
    track = Sam2Segmenter(predictor, max_lost_share=1.0, encoder_batch=4).segment(frames, detection)
    np.testing.assert_array_equal(track.masks, plain)
    assert track.masks_bytes == encode_masks(plain)


def test_an_error_on_the_mask_thread_reaches_segment(predictor, frames, detection, monkeypatch):
    def failing(frame):
        raise OSError("disk full while encoding")

    monkeypatch.setattr(mask_collector, "frame_changes", failing)
    with pytest.raises(OSError, match="disk full while encoding"):
        Sam2Segmenter(predictor, max_lost_share=1.0).segment(frames, detection)
    assert not [
        t for t in threading.enumerate() if t.name.startswith(("pvtt-masks", "pvtt-frames"))
    ]


@pytest.mark.parametrize("stage", [False, True])
def test_images_made_by_window_equal_all_at_once(predictor, frames, monkeypatch, stage):
    """The ranges the encoder asks for at batch 2 from frame 3 (forwards, then backwards) give
    SAM2's images; staged (as on CUDA), the windows after the first of each direction are
    copied on the staging thread, and each copy is used."""
    monkeypatch.setattr("pvtt.builder.backends.sam2_state.WINDOW", 3)  # not a multiple of 2
    full = materialized_state(predictor, frames)["images"]
    images = FrameImages(frames, SIZE, predictor.device, stage=stage)
    staged: list[tuple[int, int, str]] = []
    made: list[tuple[int, int]] = []
    pinned, resized = images._pinned, images._images

    def spy_pinned(first, end):
        staged.append((first, end, threading.current_thread().name))
        return pinned(first, end)

    def spy_images(first, end):
        made.append((first, end))
        return resized(first, end)

    monkeypatch.setattr(images, "_pinned", spy_pinned)
    monkeypatch.setattr(images, "_images", spy_images)
    try:
        for first, end, backwards in [(3, 5, 0), (5, 7, 0), (7, 8, 0), (1, 3, 1), (0, 1, 1)]:
            torch.testing.assert_close(
                images.get(first, end, bool(backwards)), full[first:end], rtol=0, atol=0
            )
    finally:
        images.close()
    assert made == [(3, 5), (5, 7), (7, 8), (1, 3), (0, 1)]
    if stage:
        assert [(a, b) for a, b, _ in staged] == [(5, 7), (7, 8), (0, 1)]
        assert all(name.startswith("pvtt-frames") for *_, name in staged)
    else:
        assert staged == []


def test_images_match_sam2_jpeg_loader_pixels(predictor, frames):
    """SAM2's loader: PIL bicubic resize to a square, /255, mean/std. Ours must agree."""
    images = materialized_state(predictor, frames)["images"].numpy()
    resized = [np.asarray(Image.fromarray(f).resize((SIZE, SIZE)), np.float32) for f in frames]
    reference = np.stack(resized).transpose(0, 3, 1, 2) / 255.0
    mean = np.array(IMG_MEAN, np.float32)[:, None, None]
    std = np.array(IMG_STD, np.float32)[:, None, None]
    diff = np.abs(images - (reference - mean) / std)
    assert diff.mean() < 0.01  # 0.004 measured: PIL rounds to uint8, we stay in float
    assert diff.max() < 0.05  # about 3 grey levels


def test_segment_runs_both_ways_in_memory(predictor, frames, detection, monkeypatch, tmp_path):
    import sam2.sam2_video_predictor as svp

    def no_files(*_, **__):
        raise AssertionError("SAM2's file loader must not be used")

    monkeypatch.setattr(svp, "load_video_frames", no_files)
    monkeypatch.setattr(Image.Image, "save", no_files)
    scratch, cwd = tmp_path / "tmp", tmp_path / "cwd"
    scratch.mkdir()
    cwd.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.chdir(cwd)

    calls: list[tuple[int, bool, list[int]]] = []
    real = predictor.propagate_in_video

    def spy(state, start_frame_idx=None, reverse=False, **kw) -> Iterator:
        seen: list[int] = []
        calls.append((start_frame_idx, reverse, seen))
        for item in real(state, start_frame_idx=start_frame_idx, reverse=reverse, **kw):
            seen.append(item[0])
            yield item

    monkeypatch.setattr(predictor, "propagate_in_video", spy)
    track = Sam2Segmenter(predictor, max_lost_share=1.0).segment(frames, detection)

    assert calls == [(START, False, [3, 4, 5, 6, 7]), (START, True, [3, 2, 1, 0])]
    assert track.masks.shape == (8, 180, 320) and track.masks.dtype == np.bool_
    assert track.boxes.shape == (8, 4) and track.boxes.dtype == np.float32
    np.testing.assert_array_equal(track.boxes, masks_to_boxes(track.masks))
    assert track.masks_bytes == encode_masks(track.masks)  # encoded alongside, same bytes
    assert track.masks.any(axis=(1, 2)).all()  # random weights still mark something everywhere
    assert list(scratch.iterdir()) == [] and list(cwd.iterdir()) == []


def test_detection_on_first_frame_propagates_forward_only(predictor, frames, monkeypatch):
    calls = []
    real = predictor.propagate_in_video

    def spy(state, start_frame_idx=None, reverse=False):
        calls.append(reverse)
        return real(state, start_frame_idx=start_frame_idx, reverse=reverse)

    monkeypatch.setattr(predictor, "propagate_in_video", spy)
    track = Sam2Segmenter(predictor, max_lost_share=1.0).segment(frames[:4], Detection(0, MUG, 1.0))
    assert calls == [False] and track.masks.shape == (4, 180, 320)


def _fake_propagation(lost: set[int]):
    """Propagation yielding the mug's box as the mask, and nothing on the ``lost`` frames."""

    def propagate(state, start_frame_idx=None, reverse=False):
        count = state["num_frames"]
        order = range(start_frame_idx, -1, -1) if reverse else range(start_frame_idx, count)
        for t in order:
            logits = torch.full((1, 1, 180, 320), -5.0)
            if t not in lost:
                logits[..., 104:154, 200:246] = 5.0
            yield t, [1], logits

    return propagate


def test_loss_over_the_share_is_rejected(predictor, frames, detection, monkeypatch):
    monkeypatch.setattr(predictor, "propagate_in_video", _fake_propagation({0, 1}))
    with pytest.raises(StageRejected, match=r"product lost on 2 of 8 frames \(first at frame 0\)"):
        Sam2Segmenter(predictor, max_lost_share=0.2).segment(frames, detection)
    track = Sam2Segmenter(predictor, max_lost_share=0.25).segment(frames, detection)
    assert np.isnan(track.boxes[:2]).all()
    np.testing.assert_array_equal(track.boxes[2:], np.tile([200, 104, 246, 154], (6, 1)))


def test_nothing_in_the_box_is_rejected_before_propagating(
    predictor, frames, detection, monkeypatch
):
    monkeypatch.setattr(
        predictor,
        "add_new_points_or_box",
        lambda state, **kw: (kw["frame_idx"], [1], torch.full((1, 1, 180, 320), -1.0)),
    )
    monkeypatch.setattr(
        predictor, "propagate_in_video", lambda *_, **__: pytest.fail("propagated an empty prompt")
    )
    with pytest.raises(StageRejected, match="product not found inside its box .* at frame 3"):
        Sam2Segmenter(predictor).segment(frames, detection)


def test_bad_detections(predictor, frames):
    segmenter = Sam2Segmenter(predictor)
    with pytest.raises(StageRejected, match="empty inside a 320x180 frame"):
        segmenter.segment(frames, Detection(0, (400.0, 10.0, 500.0, 50.0), 1.0))
    with pytest.raises(ValueError, match="outside the clip of 8 frames"):
        segmenter.segment(frames, Detection(8, MUG, 1.0))


def test_checkpoint_round_trip_with_weights_only(predictor, tmp_path, monkeypatch):
    shifted = {
        k: v + 0.25 if v.is_floating_point() else v for k, v in predictor.state_dict().items()
    }
    wrapped, bare = tmp_path / "sam2_wrapped.pt", tmp_path / "sam2_bare.pt"
    torch.save({"model": shifted}, wrapped)  # Meta's layout
    torch.save(shifted, bare)
    loads = []
    real_load = torch.load

    def spy_load(*args, **kwargs):
        loads.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy_load)
    for path in (wrapped, bare):
        config = BackendConfig("sam2", str(path), {"image_size": SIZE})
        loaded = create(config, "cpu")
        for key, value in loaded.predictor.state_dict().items():
            torch.testing.assert_close(value, shifted[key], rtol=0, atol=0, msg=key)
        assert loaded.info.model == str(path) and "random_weights" not in loaded.info.params
        assert weights(config) == [str(path)]
    assert loads == [True, True]


def test_unusable_checkpoints_are_config_errors(predictor, tmp_path):
    refused = tmp_path / "objects.pt"
    torch.save({"model": Fraction(1, 3)}, refused)  # weights_only refuses any class not allowed
    partial = tmp_path / "sam2.1_hiera_large.pt"  # Meta's name for another config
    state = dict(predictor.state_dict())
    state.pop("no_obj_ptr")
    torch.save({"model": state}, partial)

    def build(path):
        create(BackendConfig("sam2", str(path), {"image_size": SIZE}), "cpu")

    with pytest.raises(ConfigError, match="weights_only=True"):
        build(refused)
    with pytest.raises(ConfigError, match=r"1 missing keys \['no_obj_ptr'\].*sam2.1_hiera_l.yaml"):
        build(partial)
    with pytest.raises(ConfigError, match="not found"):
        build(tmp_path / "absent.pt")


@pytest.mark.parametrize(
    ("model", "params", "message"),
    [
        (None, {}, "model must be the path of a SAM2 checkpoint"),
        ("x.pt", {"random_weights": True}, "contradicts"),
        (None, {"random_weights": True, "image_size": 200}, "multiple of 32"),
        (None, {"random_weights": True, "colour": 1}, r"unknown params \['colour'\]"),
        (None, {"random_weights": True, "config": "nope.yaml"}, "sam2.1/sam2.1_hiera_t.yaml"),
        (None, {"random_weights": True, "offload_video_to_cpu": True}, "stays in host memory"),
        (
            None,
            {"random_weights": True, "max_lost_share": 2},
            r"max_lost_share must be in \[0, 1\]",
        ),
    ],
)
def test_config_errors(model, params, message):
    with pytest.raises(ConfigError, match=message):
        create(BackendConfig("sam2", model, {"image_size": SIZE, **params}), "cpu")


def test_fill_holes_needs_the_cuda_extension():
    import importlib.util

    if importlib.util.find_spec("sam2._C") is not None:
        pytest.skip("this sam2 has its CUDA extension")
    with pytest.raises(ConfigError, match="sam2._C"):
        build_predictor(None, random_weights=True, image_size=SIZE, fill_hole_area=8)


def test_registry_builds_it():
    config = BackendConfig("sam2", None, {"random_weights": True, "image_size": 64})
    backend = create_backend("segmenter", config, "cpu")
    assert isinstance(backend, Segmenter)
    assert backend.info.as_dict()["params"] == {
        "config": "configs/sam2.1/sam2.1_hiera_t.yaml",
        "image_size": 64,
        "fill_hole_area": 0,
        "max_lost_share": 0.1,
        "encoder_batch": 8,
        "random_weights": True,
    }
    assert backend_weights("segmenter", config) == []
    with pytest.raises(ConfigError, match="model must be"):
        backend_weights("segmenter", BackendConfig("sam2"))


def test_module_import_is_light():
    code = (
        "import sys, pvtt.builder.backends.sam2_segmenter; "
        "print(sorted({'torch', 'sam2', 'hydra'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_with_and_without_offloading():
    rng = np.random.default_rng(0)
    clip = rng.integers(0, 60, (8, 180, 320, 3), dtype=np.uint8)
    clip[:, 100:150, 200:250] = (220, 40, 40)  # a red square on dark noise
    detection = Detection(START, (200.0, 100.0, 250.0, 150.0), 1.0)
    model = build_predictor(None, image_size=256, random_weights=True, device="cuda")
    kept = Sam2Segmenter(model, max_lost_share=1.0, offload_after_frames=100).segment(
        clip, detection
    )
    offloaded = Sam2Segmenter(model, max_lost_share=1.0, offload_state_to_cpu=True).segment(
        clip, detection
    )
    assert kept.masks.shape == (8, 180, 320) and kept.masks.dtype == np.bool_
    np.testing.assert_array_equal(kept.boxes, masks_to_boxes(kept.masks))
    assert (kept.masks == offloaded.masks).mean() > 0.99


def test_speed_bench_smoke(tmp_path, capsys):
    """``sam2_speed --quick`` runs end to end on a CPU and reports both encoder batches;
    with random weights the segmenter encodes the ellipse stand-in, not SAM2's speckle."""
    from pvtt.tools.bench.sam2_speed import ellipse_masks, main

    out = tmp_path / "sam2.json"
    main(["--quick", "--device", "cpu", "--json", str(out)])
    result = json.loads(out.read_text())
    assert result["frames"] == 8 and result["image_size"] == 128
    assert sorted(result["end_to_end"]) == ["1", "8"]
    for row in result["end_to_end"].values():
        assert row["stage_ratio"] > 0 and row["with_decode_ratio"] <= row["stage_ratio"]
    assert result["masks_bytes"] == len(encode_masks(ellipse_masks(8, (320, 180))))
    printed = capsys.readouterr().out
    assert "encoder batch 1: stage" in printed and "encoder batch 8: stage" in printed
