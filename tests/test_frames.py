"""Frame sampling and decoding into tensors, checked against clips whose frames say who they are.

Every frame of the test clips is one flat grey level, ``_level(i)``, 8 apart from its
neighbours, so the mean of a decoded frame tells which frame came back despite lossy coding.
"""

from __future__ import annotations

import importlib.util
import io

import av
import numpy as np
import pytest
import torch
from PIL import Image

from pvtt.loaders.decode import MediaDecodeError, decode_video
from pvtt.loaders.frames import (
    FrameSampler,
    decode_frames,
    decode_masks_at,
    decode_rgba,
    frame_count,
)
from pvtt.schemas.masks import encode_masks

FRAMES, HEIGHT, WIDTH = 30, 48, 64


def _level(index: int) -> int:
    return 8 * index + 4


def _encode(container_format: str, count: int = FRAMES) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container_format) as out:
        stream = out.add_stream("libx264", rate=30, options={"crf": "10", "preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.codec_context.options["bf"] = "2"  # B-frames: decode order is not display order
        for index in range(count):
            image = np.full((HEIGHT, WIDTH, 3), _level(index), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def clip() -> bytes:
    return _encode("mp4")


@pytest.fixture(scope="module")
def mkv_clip() -> bytes:
    return _encode("matroska")


@pytest.fixture(scope="module")
def textured_clip() -> bytes:
    """Moving noise, x264's usual B-frame pyramid: a reference frame decoded wrong would show."""
    rng = np.random.default_rng(5)
    texture = rng.integers(0, 256, size=(HEIGHT, WIDTH * 2, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=30, options={"crf": "23", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for index in range(FRAMES):
            image = np.ascontiguousarray(texture[:, index : index + WIDTH])
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buffer.getvalue()


def _which(frames: torch.Tensor) -> list[int]:
    """The frame each decoded frame shows, read from its grey level."""
    means = frames.float().mean(dim=(1, 2, 3)).numpy()
    assert np.all(np.abs(means - np.round((means - 4) / 8) * 8 - 4) < 2.5), means
    return np.round((means - 4) / 8).astype(int).tolist()


def test_first_and_centre_windows() -> None:
    first = FrameSampler(num_frames=4, frame_stride=3, start="first").indices(30)
    centre = FrameSampler(num_frames=4, frame_stride=3, start="centre").indices(30)
    assert first.tolist() == [0, 3, 6, 9]
    assert centre.tolist() == [10, 13, 16, 19]  # starts 0..20 possible, the middle one is 10
    assert first.dtype == np.int64


def test_random_window_is_seeded_and_covers_every_start() -> None:
    sampler = FrameSampler(num_frames=5, frame_stride=2, start="random")
    draws = [sampler.indices(20, np.random.default_rng(seed)) for seed in range(400)]
    again = [sampler.indices(20, np.random.default_rng(seed)) for seed in range(400)]
    assert all(np.array_equal(a, b) for a, b in zip(draws, again, strict=True))
    assert {int(d[0]) for d in draws} == set(range(12))  # span 9 leaves starts 0..11
    assert all(np.all(np.diff(d) == 2) for d in draws)
    with pytest.raises(ValueError, match="rng"):
        sampler.indices(20)


def test_short_clip_pads_with_its_last_index() -> None:
    for start in ("random", "first", "centre"):
        got = FrameSampler(num_frames=6, frame_stride=2, start=start).indices(
            7, np.random.default_rng(0)
        )
        assert got.tolist() == [0, 2, 4, 6, 6, 6]


def test_every_frame_and_bad_settings() -> None:
    assert FrameSampler().indices(5).tolist() == [0, 1, 2, 3, 4]
    assert FrameSampler(frame_stride=2).indices(5).tolist() == [0, 2, 4]
    for bad in ({"num_frames": 0}, {"frame_stride": 0}, {"start": "middle"}):
        with pytest.raises(ValueError):
            FrameSampler(**bad)
    with pytest.raises(ValueError, match="0 frames"):
        FrameSampler(num_frames=2).indices(0)


def test_frame_count_reads_container_or_counts_packets(clip: bytes, mkv_clip: bytes) -> None:
    assert frame_count(clip) == FRAMES
    with av.open(io.BytesIO(mkv_clip)) as container:
        assert container.streams.video[0].frames == 0  # Matroska keeps no count: packets counted
    assert frame_count(mkv_clip) == FRAMES
    assert frame_count(b"not a video", known=12) == 12  # metadata known: nothing probed
    with pytest.raises(MediaDecodeError, match="synth_video"):
        frame_count(b"not a video", what="synth_video")


def test_decode_frames_returns_exactly_the_frames_asked_for(clip: bytes) -> None:
    indices = np.array([3, 4, 5, 17, 17, 29, 29])
    frames = decode_frames(clip, indices)
    assert frames.dtype == torch.uint8 and frames.shape == (7, 3, HEIGHT, WIDTH)
    assert _which(frames) == indices.tolist()
    everything = decode_frames(clip, np.arange(FRAMES))
    assert _which(everything) == list(range(FRAMES))
    unordered = decode_frames(clip, np.array([12, 2, 7]))
    assert _which(unordered) == [12, 2, 7]


def test_decode_frames_from_sampler_and_matroska(mkv_clip: bytes) -> None:
    sampler = FrameSampler(num_frames=8, frame_stride=3, start="random")
    indices = sampler.indices(frame_count(mkv_clip), np.random.default_rng(7))
    assert _which(decode_frames(mkv_clip, indices)) == indices.tolist()


def test_skipping_frames_before_the_window_changes_no_pixel(textured_clip: bytes) -> None:
    whole = decode_video(textured_clip)
    with av.open(io.BytesIO(textured_clip)) as container:
        kinds = {frame.pict_type for frame in container.decode(video=0)}
    assert av.video.frame.PictureType.B in kinds
    for indices in ([0, 1], [7, 8, 9, 10], [13, 13, 20], [29], [25, 5, 17]):
        got = decode_frames(textured_clip, np.array(indices)).permute(0, 2, 3, 1).numpy()
        assert np.array_equal(got, whole[indices]), indices


def test_stream_without_timestamps_is_counted(clip: bytes) -> None:
    """Raw H.264 (Annex B) has no packet timestamps: frames are counted, none skipped."""
    buffer = io.BytesIO()
    with av.open(io.BytesIO(clip)) as source, av.open(buffer, "w", format="h264") as out:
        stream = out.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.size:
                packet.stream = stream
                out.mux(packet)
    raw = buffer.getvalue()
    assert frame_count(raw) == FRAMES
    assert _which(decode_frames(raw, np.array([4, 18, 18, 29]))) == [4, 18, 18, 29]
    with pytest.raises(MediaDecodeError, match="frame 30 asked for, the video has 30"):
        decode_frames(raw, np.array([2, 30]))


def test_decode_frames_resizes(clip: bytes) -> None:
    indices = np.array([0, 9, 9])
    frames = decode_frames(clip, indices, size=(24, 40))
    assert frames.shape == (3, 3, 24, 40)
    assert _which(frames) == [0, 9, 9]


def test_decode_frames_errors(clip: bytes) -> None:
    with pytest.raises(MediaDecodeError, match="synth_video: not a decodable video"):
        decode_frames(b"\x00" * 1000, np.array([0]), what="synth_video")
    with pytest.raises(MediaDecodeError, match="frame 30 asked for, the video has 30 frames"):
        decode_frames(clip, np.array([1, 30]))
    with pytest.raises(ValueError, match="negative"):
        decode_frames(clip, np.array([-1]))
    with pytest.raises(ValueError, match="non-empty"):
        decode_frames(clip, np.array([], dtype=np.int64))
    with pytest.raises(ValueError, match="unknown backend"):
        decode_frames(clip, np.array([0]), backend="opencv")


@pytest.mark.skipif(importlib.util.find_spec("decord") is None, reason="decord not installed")
def test_decord_backend_agrees_with_pyav(clip: bytes) -> None:
    indices = np.array([2, 11, 11, 28])
    frames = decode_frames(clip, indices, backend="decord")
    assert frames.shape == (4, 3, HEIGHT, WIDTH)
    assert _which(frames) == indices.tolist()
    assert decode_frames(clip, indices, size=(24, 32), backend="decord").shape == (4, 3, 24, 32)


def test_missing_backend_is_named(clip: bytes) -> None:
    for name in ("decord", "torchcodec"):
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - absent or unloadable are both "not usable here"
            with pytest.raises(ImportError, match=f"{name}"):
                decode_frames(clip, np.array([0]), backend=name)


def _numbered_masks() -> np.ndarray:
    """Mask frame ``i`` is true on its first ``i + 1`` rows and in column ``i`` below them."""
    masks = np.zeros((FRAMES, 24, 32), dtype=bool)
    for index in range(FRAMES):
        masks[index, : index % 24 + 1] = True
        masks[index, :, index] = True
    return masks


def test_masks_follow_the_same_indices() -> None:
    masks = _numbered_masks()
    data = encode_masks(masks)
    indices = FrameSampler(num_frames=6, frame_stride=4, start="centre").indices(FRAMES)
    got = decode_masks_at(data, indices)
    assert got.dtype == torch.bool and got.shape == (6, 24, 32)
    assert np.array_equal(got.numpy(), masks[indices])
    padded = np.array([27, 29, 29])
    assert np.array_equal(decode_masks_at(data, padded).numpy(), masks[padded])


def test_masks_resize_by_nearest_neighbour() -> None:
    masks = _numbered_masks()
    data = encode_masks(masks)
    indices = np.array([1, 5, 20])
    up = decode_masks_at(data, indices, size=(48, 64)).numpy()
    assert np.array_equal(up, masks[indices].repeat(2, axis=1).repeat(2, axis=2))
    down = decode_masks_at(data, indices, size=(12, 16)).numpy()
    assert np.array_equal(down, masks[indices][:, 1::2, 1::2])


def test_masks_errors() -> None:
    data = encode_masks(_numbered_masks())
    with pytest.raises(MediaDecodeError, match="frame 30 asked for, the masks have 30 frames"):
        decode_masks_at(data, np.array([30]))
    with pytest.raises(MediaDecodeError, match="pair 7 masks: not decodable masks"):
        decode_masks_at(b"garbage", np.array([0]), what="pair 7 masks")


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def test_rgba_keeps_alpha_and_resizes() -> None:
    rng = np.random.default_rng(3)
    rgba = rng.integers(0, 256, size=(20, 30, 4), dtype=np.uint8)
    got = decode_rgba(_png(rgba))
    assert got.dtype == torch.uint8 and got.shape == (4, 20, 30)
    assert np.array_equal(got.permute(1, 2, 0).numpy(), rgba)
    assert decode_rgba(_png(rgba), size=(10, 15)).shape == (4, 10, 15)
    opaque = decode_rgba(_png(rgba[..., :3]))
    assert np.array_equal(opaque[:3].permute(1, 2, 0).numpy(), rgba[..., :3])
    assert bool((opaque[3] == 255).all())
    with pytest.raises(MediaDecodeError, match="target_image: not a decodable image"):
        decode_rgba(b"garbage", what="target_image")
