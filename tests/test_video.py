"""pvtt.builder.video against real media, an independent decoder (OpenCV) and known timings."""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from pvtt.builder import video
from pvtt.builder.video import (
    VideoError,
    VideoInfo,
    decode_video_bytes,
    encode_mp4,
    output_size,
    probe,
    read_frames,
    target_rate,
    write_mp4,
)

SMALL = (64, 36)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def write_clip(
    path: Path,
    images: list[np.ndarray],
    pts_ms: list[int] | None = None,
    rotation: int | None = None,
    rate: int = 25,
) -> Path:
    """A small H.264 mp4; ``pts_ms`` gives each frame its own timestamp (variable rate)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=rate, options={"crf": "10"})
        stream.height, stream.width = images[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        if pts_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for index, image in enumerate(images):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[index], Fraction(1, 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def smooth_clip(frames: int = 12, height: int = 96, width: int = 128) -> np.ndarray:
    """Moving colour gradients: easy for a codec, so a round trip must be near lossless."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    clip = []
    for t in range(frames):
        r = 128 + 100 * np.sin((x + 3 * t) / 23.0)
        g = 128 + 100 * np.cos((y - 2 * t) / 17.0)
        b = 128 + 60 * np.sin((x + y + 4 * t) / 31.0)
        clip.append(np.stack([r, g, b], -1))
    return np.clip(np.stack(clip), 0, 255).astype(np.uint8)


# --- probe ------------------------------------------------------------------------------


def test_probe_matches_provenance(shared_data: Path) -> None:
    info = probe(shared_data / "pyscenedetect/issue-195-aspect-ratio.mp4")
    assert (info.width, info.height) == (704, 576)
    assert info.sample_aspect_ratio == Fraction(16, 11)
    assert info.display_size == (1024, 576)
    assert (info.frame_rate, info.frame_count, info.codec) == (25, 628, "h264")
    assert info.duration_s == pytest.approx(25.12)
    coffee = probe(shared_data / "sam2/04_coffee.mp4")
    assert coffee.average_rate == Fraction(30000, 1001)
    assert coffee.frame_count == 287 and coffee.duration_s == pytest.approx(9.576, abs=1e-3)
    assert target_rate(coffee) == Fraction(30000, 1001)
    counter = probe(shared_data / "pyscenedetect/counter.mp4")
    assert (counter.display_size, counter.fps, counter.frame_count) == ((1920, 1080), 10.0, 30)
    assert not (counter.variable_frame_rate or coffee.variable_frame_rate)


def test_bad_files_name_the_file_and_problem(tmp_path: Path, shared_data: Path) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n" * 50)
    audio = tmp_path / "tone.m4a"
    with av.open(str(audio), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        samples = np.zeros((1, 1024), np.float32)
        for index in range(4):
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, index * 1024
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    cases = {
        text: "not a video file",
        audio: "no video stream",
        tmp_path / "missing.mp4": "no such file",
        shared_data / "sam2/truck.jpg": "still image",
    }
    for path, problem in cases.items():
        with pytest.raises(VideoError, match=problem) as caught:
            probe(path)
        assert str(path) in str(caught.value)
        assert isinstance(caught.value, ValueError)


# --- normalised decoding ----------------------------------------------------------------


def test_counter_frames_are_frame_accurate(shared_data: Path) -> None:
    """counter.mp4 is grey for frames 0-9, red for 10-19, green for 20-29 (0-based)."""
    path = shared_data / "pyscenedetect/counter.mp4"
    frames, fps = read_frames(path, max_size=SMALL)
    assert frames.shape == (30, 36, 64, 3) and frames.dtype == np.uint8 and fps == 10.0
    r, g, b = (frames.reshape(30, -1, 3).mean(1).T).astype(int)
    assert all(r[10:20] > g[10:20] + 30) and all(g[20:] > r[20:] + 30)
    assert all(abs(r[:10] - g[:10]) < 15)  # grey
    # Seeking lands on the exact frame, across the red -> green change and at the end.
    middle, _ = read_frames(path, 18, 23, max_size=SMALL)
    np.testing.assert_array_equal(middle, frames[18:23])
    tail, _ = read_frames(path, 25, max_size=SMALL)
    np.testing.assert_array_equal(tail, frames[25:])
    assert read_frames(path, 7, 7, max_size=SMALL)[0].shape == (0, 36, 64, 3)
    with pytest.raises(ValueError, match="bad frame range"):
        read_frames(path, 5, 3)


def test_default_size_fits_720p_with_even_sides(shared_data: Path) -> None:
    frames, _ = read_frames(shared_data / "pyscenedetect/counter.mp4", 0, 2)
    assert frames.shape == (2, 720, 1280, 3)
    info = probe(shared_data / "pyscenedetect/counter.mp4")
    assert output_size(info, (101, 99)) == (100, 56)  # never odd, never over the box


def test_anamorphic_video_comes_out_square_pixel(shared_data: Path) -> None:
    path = shared_data / "pyscenedetect/issue-195-aspect-ratio.mp4"
    frames, fps = read_frames(path, 100, 102)
    assert frames.shape == (2, 576, 1024, 3) and fps == 25.0
    # Same picture as the stored frame stretched to 1024 wide by an independent resampler.
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index == 100:
                stored = frame.to_ndarray(format="rgb24")
                break
    assert stored.shape == (576, 704, 3)
    stretched = cv2.resize(stored, (1024, 576), interpolation=cv2.INTER_CUBIC)
    assert psnr(frames[0], stretched) > 30
    squeezed = cv2.resize(stored, (704, 576))  # what ignoring the SAR would look like
    assert psnr(cv2.resize(frames[0], (704, 576)), squeezed) > psnr(frames[0][:, :704], squeezed)


def test_seek_is_frame_accurate_across_a_real_cut(shared_data: Path) -> None:
    """issue-195 has a hard cut at frame 301: an off-by-one would swap pictures."""
    path = shared_data / "pyscenedetect/issue-195-aspect-ratio.mp4"
    decoded, _ = read_frames(path, 0, 303, max_size=(128, 72))
    seeked, _ = read_frames(path, 299, 303, max_size=(128, 72))
    assert seeked.shape == (4, 72, 128, 3)
    np.testing.assert_array_equal(seeked, decoded[299:303])
    assert psnr(seeked[0], seeked[1]) > psnr(seeked[1], seeked[2]) + 10  # the cut is there


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotation_matches_opencv_autorotate(tmp_path: Path, rotation: int) -> None:
    image = np.full((48, 64, 3), 40, np.uint8)
    image[:16, :16] = (250, 30, 30)  # a red marker in the stored top-left corner
    path = write_clip(tmp_path / "rotated.mp4", [image] * 3, rotation=rotation, rate=10)
    info = probe(path)
    assert info.rotation == rotation % 360
    assert info.display_size == ((48, 64) if rotation % 180 else (64, 48))
    frames, _ = read_frames(path)
    capture = cv2.VideoCapture(str(path))  # OpenCV applies the display matrix itself
    ok, upright = capture.read()
    capture.release()
    assert ok and frames.shape[1:] == upright.shape
    assert psnr(frames[0], cv2.cvtColor(upright, cv2.COLOR_BGR2RGB)) > 30


def test_portrait_video_fits_720p_turned() -> None:
    info = VideoInfo(
        path="phone.mp4",
        width=1920,
        height=1080,
        sample_aspect_ratio=Fraction(1),
        rotation=270,
        frame_rate=Fraction(30),
        average_rate=Fraction(30),
        frame_count=1,
        duration_s=0.0,
        codec="h264",
    )
    assert info.display_size == (1080, 1920)
    assert output_size(info) == (720, 1280)
    assert output_size(info, None) == (1080, 1920)


def test_variable_frame_rate_becomes_constant(tmp_path: Path) -> None:
    pts = [0, 40, 80, 200, 240, 400, 440, 480, 720, 760]  # ms: gaps of 3, 4 and 6 slots at 25 fps
    shades = [10 + 24 * i for i in range(len(pts))]
    images = [np.full((48, 64, 3), shade, np.uint8) for shade in shades]
    path = write_clip(tmp_path / "vfr.mp4", images, pts_ms=pts)
    info = probe(path)
    assert info.frame_count == 10 and info.duration_s == pytest.approx(0.8)
    assert info.variable_frame_rate
    frames, fps = read_frames(path, fps=25)
    assert fps == 25.0 and len(frames) == 20  # 0.8 s at 25 fps
    # Slot k shows the frame on screen at k * 40 ms: repeated across gaps, never reordered.
    expected = [shades[max(i for i, p in enumerate(pts) if p <= 40 * k)] for k in range(20)]
    np.testing.assert_allclose(frames[:, 24, 32, 0], expected, atol=4)
    # Dropping frames at 10 fps: each frame goes to its nearest 100 ms slot (robust to
    # timestamp jitter) and a slot shows the last frame that went to it or before it.
    slow, fps = read_frames(path, fps=10)
    assert fps == 10.0 and len(slow) == 8
    nearest = [shades[i] for i in (1, 2, 4, 4, 6, 7, 7, 8)]  # pts 40, 80, 240, 240, 440, ...
    np.testing.assert_allclose(slow[:, 24, 32, 0], nearest, atol=4)
    default, fps = read_frames(path)
    assert fps == float(target_rate(info)) and float(fps).is_integer()
    assert len(default) == round(0.8 * fps)


# --- encoding ---------------------------------------------------------------------------


def test_encode_decode_round_trip(tmp_path: Path) -> None:
    clip = smooth_clip()
    data = encode_mp4(clip, 25)
    assert data[4:8] == b"ftyp"
    info = probe(io.BytesIO(data))
    assert (info.codec, info.frame_count, info.frame_rate) == ("h264", 12, 25)
    frames, fps = decode_video_bytes(data)
    assert frames.shape == clip.shape and fps == 25.0
    assert psnr(frames, clip) > 35
    ntsc, fps = decode_video_bytes(encode_mp4(clip[:3], 30000 / 1001))
    assert len(ntsc) == 3 and fps == pytest.approx(29.97003)
    odd_rate, fps = decode_video_bytes(encode_mp4(clip, 12.5))  # kept exact, not rounded
    assert fps == 12.5 and len(odd_rate) == len(clip)
    target = tmp_path / "clip.mp4"
    write_mp4(target, clip, 25)
    assert target.read_bytes()[4:8] == b"ftyp"
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]  # no temp file left
    with pytest.raises(ValueError, match="even width and height"):
        encode_mp4(clip[:, :, :127], 25)
    with pytest.raises(ValueError, match="RGB uint8"):
        encode_mp4(clip.astype(np.float32), 25)


def test_mpeg4_fallback_without_libx264(monkeypatch: pytest.MonkeyPatch) -> None:
    real_codec = av.Codec

    def no_x264(name: str, mode: str = "r") -> av.Codec:
        if name == "libx264":
            raise av.codec.codec.UnknownCodecError(name)
        return real_codec(name, mode)

    video.h264_encoder.cache_clear()
    monkeypatch.setattr(video.av, "Codec", no_x264)
    try:
        data = encode_mp4(smooth_clip(4), 25)
    finally:
        video.h264_encoder.cache_clear()
    assert probe(io.BytesIO(data)).codec == "mpeg4"
    frames, _ = decode_video_bytes(data)
    assert psnr(frames, smooth_clip(4)) > 30


def test_encoding_is_the_same_every_run() -> None:
    """The same frames give the same bytes whatever the heap held before (x264's AVX-512
    MB-tree code read uninitialised memory at 192x108, so resumed builds scored differently)."""
    from pvtt.builder.demo import PRODUCTS, render_shot

    frames, _ = render_shot(PRODUCTS[0], np.random.default_rng(0), 30)
    frames = np.stack([cv2.resize(f, (192, 108), interpolation=cv2.INTER_AREA) for f in frames])
    rng = np.random.default_rng(1)
    outputs = set()
    for _ in range(12):
        garbage = [rng.bytes(int(n)) for n in rng.integers(1_000, 400_000, 100)]
        del garbage  # freed blocks full of noise, which the encoder's allocations reuse
        outputs.add(encode_mp4(frames, 24, crf=20))
    assert len(outputs) == 1


@pytest.mark.parametrize("size", [(54, 96), (108, 192), (112, 200), (240, 426), (720, 1280)])
def test_yuv420p_frames_are_swscales_within_a_level_or_two(size: tuple[int, int]) -> None:
    """The encoder's RGB -> yuv420p conversion against FFmpeg's own, at sizes whose half
    height is odd (54, 108 rows: PyAV misreads such buffers) and even: the planes differ
    by rounding only, and the decoded colours are as close to the RGB as swscale's."""
    from pvtt.builder.video import yuv420p_frame

    height, width = size
    rng = np.random.default_rng(height)
    coarse = rng.integers(0, 256, (height // 6 + 1, width // 6 + 1, 3), dtype=np.uint8)
    image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    image[: height // 3, : width // 3] = (230, 40, 40)  # a saturated block
    ours = yuv420p_frame(image)
    theirs = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
    assert (ours.width, ours.height) == (width, height)
    planes = np.abs(ours.to_ndarray().astype(int) - theirs.to_ndarray())
    assert planes[:height].max() <= 1 and planes.mean() < 0.5, (planes.max(), planes.mean())

    def error(frame: av.VideoFrame) -> float:
        return float(np.abs(frame.to_ndarray(format="rgb24").astype(int) - image).mean())

    assert error(ours) <= error(theirs) + 0.5
