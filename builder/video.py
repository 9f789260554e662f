"""Video probing, normalised frame-accurate decoding and in-memory H.264 encoding (PyAV only).

Every stage of the builder sees a clip through :func:`read_frames`, so all of them agree on
the same frames: upright (display rotation applied), square pixels, at most 720p, even sizes,
RGB ``uint8`` ``T x H x W x 3``, constant frame rate. Frame numbers are the ones PySceneDetect
reports (the PTS of a frame times the stream's frame rate, which for constant-rate video is
the n-th decoded frame), so a shot's ``[start_frame, end_frame)`` decodes to exactly that shot.
No ffmpeg binary is needed: PyAV's bundled libraries do everything.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from itertools import pairwise
from pathlib import Path
from typing import Any, BinaryIO

import av
import cv2
import numpy as np

from pvtt.schemas.config import ClipConfig
from pvtt.schemas.manifest import default_file_mode

log = logging.getLogger(__name__)

Source = str | os.PathLike | BinaryIO
"""A video file path, or a seekable binary file object holding the whole file."""

MAX_SIZE_720P = (1280, 720)

# Rates that are not whole numbers but standard (NTSC); an average rate this close to one of
# them is that rate, anything else is rounded to whole frames per second.
_NTSC_RATES = tuple(Fraction(n * 1000, 1001) for n in (24, 30, 48, 60, 120))
_NTSC_TOLERANCE = Fraction(1, 2000)
# Demuxers that open still images as one-frame "videos".
_IMAGE_FORMATS = ("image2", "_pipe")


class VideoError(ValueError):
    """A file that cannot be used as a video; the message names the file and the problem."""

    def __init__(self, path: object, message: str) -> None:
        self.path = str(path)
        self.message = message
        super().__init__(f"{self.path}: {message}")


@dataclass(frozen=True)
class VideoInfo:
    """What a video is, read cheaply: header fields plus a demux (no full decode)."""

    path: str
    width: int
    """Stored (coded) width in pixels, before sample aspect ratio and rotation."""
    height: int
    sample_aspect_ratio: Fraction
    """Width of one stored pixel over its height (16/11 for anamorphic PAL DVD)."""
    rotation: int
    """Degrees counter-clockwise (0, 90, 180, 270) that turn stored frames upright, as in
    PyAV's ``VideoFrame.rotation``; a phone's portrait clip stored landscape has 270."""
    frame_rate: Fraction
    """The rate frame numbers are counted in: FFmpeg's guessed rate, the one PySceneDetect
    uses (equal to the average rate for constant-rate video)."""
    average_rate: Fraction
    frame_count: int
    """Video packets in the file (decodable frames), counted by demuxing."""
    duration_s: float
    """From the first frame's start to the last frame's end, from packet timestamps."""
    codec: str
    variable_frame_rate: bool = False
    """Frame intervals differ (phone footage, screen recordings)."""

    @property
    def fps(self) -> float:
        return float(self.average_rate)

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) as the video is shown: square pixels, rotation applied."""
        width = max(1, round(self.width * self.sample_aspect_ratio))
        if self.rotation in (90, 270):
            return self.height, width
        return width, self.height


def _name(source: Source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return getattr(source, "name", None) or "<in-memory video>"


def _open(source: Source) -> av.container.InputContainer:
    name = _name(source)
    if isinstance(source, (str, os.PathLike)):
        if not Path(source).is_file():
            raise VideoError(name, "no such file")
    else:
        source.seek(0)
    try:
        container = av.open(source, "r")
    except av.error.FFmpegError as exc:
        raise VideoError(name, f"not a video file ({exc.strerror or exc})") from exc
    fmt = container.format.name
    if fmt == _IMAGE_FORMATS[0] or fmt.endswith(_IMAGE_FORMATS[1]):
        container.close()
        raise VideoError(name, f"a still image ({fmt}), not a video")
    if not container.streams.video:
        container.close()
        raise VideoError(name, "no video stream")
    return container


def _normalise_rotation(degrees: float) -> int:
    return int(round(degrees / 90.0)) * 90 % 360


def _probe_container(container: av.container.InputContainer, name: str) -> VideoInfo:
    stream = container.streams.video[0]
    ctx = stream.codec_context
    sar = stream.sample_aspect_ratio or ctx.sample_aspect_ratio
    sar = Fraction(sar.numerator, sar.denominator) if sar else Fraction(1)
    try:
        first = next(container.decode(stream))
    except StopIteration:
        raise VideoError(name, "no decodable video frame") from None
    except av.error.FFmpegError as exc:
        raise VideoError(name, f"undecodable video stream ({exc})") from exc
    rotation = first.rotation
    if not rotation and "rotate" in stream.metadata:  # old files: clockwise degrees as a tag
        rotation = -float(stream.metadata["rotate"])
    width, height = first.width, first.height

    container.seek(0)
    count, stamps, end = 0, [], None
    for packet in container.demux(stream):
        if packet.size == 0 or packet.is_discard:
            continue
        count += 1
        if packet.pts is not None:
            stamps.append(packet.pts)
            stop = packet.pts + (packet.duration or 0)
            end = stop if end is None else max(end, stop)
    stamps.sort()
    steps = [b - a for a, b in pairwise(stamps)]
    # Constant rate allows one tick of rounding jitter (29.97 fps in a 1/1000 time base).
    variable = bool(steps) and max(steps) - min(steps) > 1
    begin = stamps[0] if stamps else None

    average = stream.average_rate or stream.guessed_rate
    if not average:
        raise VideoError(name, "video stream has no frame rate")
    average = Fraction(average.numerator, average.denominator)
    guessed = stream.guessed_rate
    frame_rate = Fraction(guessed.numerator, guessed.denominator) if guessed else average
    if begin is not None and end is not None and end > begin:
        duration = float((end - begin) * stream.time_base)
    else:
        duration = float(count / average)
    return VideoInfo(
        path=name,
        width=width,
        height=height,
        sample_aspect_ratio=sar,
        rotation=_normalise_rotation(rotation),
        frame_rate=frame_rate,
        average_rate=average,
        frame_count=count,
        duration_s=duration,
        codec=ctx.name,
        variable_frame_rate=variable,
    )


def probe(path: Source) -> VideoInfo:
    """Read a video's geometry, rates, length and codec; :class:`VideoError` if it is unusable."""
    name = _name(path)
    with _open(path) as container:
        return _probe_container(container, name)


def target_rate(info: VideoInfo, fps: float | Fraction | None = None) -> Fraction:
    """The constant output rate: ``fps`` if given, else the video's own.

    A constant-rate video keeps its exact rate (12.5 stays 12.5, frames map one to one); a
    variable-rate one gets its average made standard: 29.87 fps becomes 30, an average
    within 0.05 % of NTSC 29.97 becomes 30000/1001.
    """
    if fps is not None:
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        return Fraction(fps).limit_denominator(1001)
    if not info.variable_frame_rate:
        return info.frame_rate
    average = info.average_rate
    for rate in _NTSC_RATES:
        if abs(average - rate) <= rate * _NTSC_TOLERANCE:
            return rate
    return Fraction(max(1, round(average)))


def _even(value: float, limit: int | None) -> int:
    out = max(2, 2 * round(value / 2))
    if limit is not None and out > limit:
        out = max(2, limit - limit % 2)
    return out


def output_size(
    info: VideoInfo, max_size: tuple[int, int] | None = MAX_SIZE_720P
) -> tuple[int, int]:
    """(width, height) of normalised frames: display aspect, never upscaled, even sides.

    ``max_size`` is a landscape box; a portrait video is fitted in the same box turned
    (1280 x 720 allows 720 x 1280), so 720p means the short side for either orientation.
    """
    width = info.width * info.sample_aspect_ratio
    height = Fraction(info.height)
    if info.rotation in (90, 270):
        width, height = height, width
    if max_size is None:
        return _even(float(width), None), _even(float(height), None)
    box_w, box_h = max_size
    if height > width:
        box_w, box_h = min(max_size), max(max_size)
    scale = min(Fraction(1), Fraction(box_w) / width, Fraction(box_h) / height)
    return _even(float(width * scale), box_w), _even(float(height * scale), box_h)


class _SeekMissed(Exception):
    """The seek landed after the wanted frame; decode from the start instead."""


def _decode_cfr(
    container: av.container.InputContainer,
    info: VideoInfo,
    start_frame: int,
    end_frame: int | None,
    size: tuple[int, int],
    rate: Fraction,
    seek: bool,
) -> Iterator[np.ndarray]:
    """Yield normalised frames on the grid ``t_start + k / rate``.

    Each decoded frame goes to the slot nearest its PTS (so timestamp jitter neither repeats
    nor drops frames) and slot ``k`` shows the last frame that went to a slot ``<= k``:
    variable-rate input has frames repeated across gaps and dropped where they crowd, and
    constant-rate input at its own rate comes out frame for frame. Rounding is half to even,
    as PySceneDetect numbers frames, so a shot's first frame is slot 0 even on a tie.
    """
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    time_base = Fraction(stream.time_base.numerator, stream.time_base.denominator)
    origin = stream.start_time or 0
    t_start = Fraction(start_frame) / info.frame_rate
    end_slot = None
    if end_frame is not None:
        end_slot = round((Fraction(end_frame) / info.frame_rate - t_start) * rate)
    turns = info.rotation // 90
    scale_w, scale_h = size if turns % 2 == 0 else size[::-1]
    fallback_duration = 1 / info.average_rate

    def convert(frame: av.VideoFrame) -> np.ndarray:
        if (frame.width, frame.height) == (scale_w, scale_h):
            rgb = frame.reformat(format="rgb24")  # swscale's fast unscaled path
        else:  # AREA: anti-aliased and the fastest of swscale's good filters here
            rgb = frame.reformat(scale_w, scale_h, "rgb24", interpolation="AREA")
        image = rgb.to_ndarray()
        return np.rot90(image, turns) if turns else image

    if seek:
        # Land on the keyframe at or before the first wanted frame (half a frame early, so
        # rounding never skips it); the frames before it are decoded and dropped.
        target = t_start - Fraction(1, 2) / info.frame_rate
        container.seek(origin + int(target / time_base), stream=stream, backward=True)

    prev, prev_image = None, None
    next_slot = 0
    stream_end = t_start
    for frame in container.decode(stream):
        if frame.pts is None:
            continue
        t = (frame.pts - origin) * time_base
        stream_end = max(stream_end, t + ((frame.duration or 0) * time_base or fallback_duration))
        slot = round((t - t_start) * rate)
        if prev is None and slot > 0:
            if seek:
                raise _SeekMissed
            prev = frame  # the stream starts late: hold its first frame from the start
        while prev is not None and next_slot < slot and (end_slot is None or next_slot < end_slot):
            if prev_image is None:
                prev_image = convert(prev)
            yield prev_image
            next_slot += 1
        if frame is not prev:
            prev, prev_image = frame, None
        if end_slot is not None and next_slot >= end_slot:
            return
    last_slot = end_slot if end_slot is not None else round((stream_end - t_start) * rate)
    while prev is not None and next_slot < last_slot:
        if prev_image is None:
            prev_image = convert(prev)
        yield prev_image
        next_slot += 1


def _iter(
    source: Source,
    info: VideoInfo,
    start_frame: int,
    end_frame: int | None,
    size: tuple[int, int],
    rate: Fraction,
) -> Iterator[np.ndarray]:
    name = _name(source)
    if start_frame < 0 or (end_frame is not None and end_frame < start_frame):
        raise ValueError(f"{name}: bad frame range [{start_frame}, {end_frame})")
    seek = start_frame > 0
    while True:
        try:
            with _open(source) as container:
                yield from _decode_cfr(container, info, start_frame, end_frame, size, rate, seek)
            return
        except _SeekMissed:
            log.debug("%s: seek to frame %d overshot, decoding from the start", name, start_frame)
            seek = False
        except av.error.FFmpegError as exc:
            raise VideoError(name, f"decoding failed ({exc})") from exc


def iter_frames(
    path: Source,
    start_frame: int = 0,
    end_frame: int | None = None,
    *,
    max_size: tuple[int, int] | None = MAX_SIZE_720P,
    fps: float | Fraction | None = None,
) -> Iterator[np.ndarray]:
    """Like :func:`read_frames`, one frame at a time, for videos too long to hold in memory.

    The rate of the yielded frames is ``target_rate(probe(path), fps)``. A frame repeated by
    rate conversion is yielded as the same (read-only use) array object.
    """
    info = probe(path)
    return _iter(
        path, info, start_frame, end_frame, output_size(info, max_size), target_rate(info, fps)
    )


def read_frames(
    path: Source,
    start_frame: int = 0,
    end_frame: int | None = None,
    *,
    max_size: tuple[int, int] | None = MAX_SIZE_720P,
    fps: float | Fraction | None = None,
) -> tuple[np.ndarray, float]:
    """Decode frames ``[start_frame, end_frame)`` normalised; returns (frames, fps).

    Frames are RGB ``uint8`` ``T x H x W x 3``: upright, square pixels, fitted in
    ``max_size`` (``None``: full size), even sides, at a constant ``fps`` (default: the
    stream's average rate made standard). Frame numbers count in ``probe(path).frame_rate``.
    Decoding is frame accurate: it seeks to the keyframe before ``start_frame`` and decodes
    forward, never cutting at a keyframe.
    """
    info = probe(path)
    width, height = output_size(info, max_size)
    rate = target_rate(info, fps)
    t_start = start_frame / info.frame_rate
    t_end = end_frame / info.frame_rate if end_frame is not None else Fraction(info.duration_s)
    expected = round((t_end - t_start) * rate)  # exact for a range, an estimate for the tail
    frames = np.empty((max(expected, 0), height, width, 3), np.uint8)
    extra: list[np.ndarray] = []
    count = 0
    for image in _iter(path, info, start_frame, end_frame, (width, height), rate):
        if count < len(frames):
            frames[count] = image
        else:
            extra.append(image.copy())
        count += 1
    if extra:
        frames = np.concatenate([frames, np.stack(extra)])
    return frames[:count], float(rate)


@lru_cache(maxsize=1)
def h264_encoder() -> str:
    """``libx264`` when PyAV's FFmpeg has it, else ``mpeg4`` (said once in the log)."""
    try:
        av.Codec("libx264", "w")
    except av.codec.codec.UnknownCodecError:
        log.warning("libx264 is missing from PyAV's FFmpeg; encoding MPEG-4 Part 2 instead")
        return "mpeg4"
    return "libx264"


X264_THREADS = "2"
"""x264 encodes each clip on two frame threads, whatever the machine. Its thread count
by default follows the machine's cores, and the count is written into the stream, so the
same build gave different clips on a 2-core box and on a 16-core node; a fixed count
keeps the bytes the same everywhere. Frame threads, not PyAV's default slice threads:
slices split each frame, which costs bits and changes the picture (a 108p test clip's
mug was lost by the CPU tracker), while frame threads encode the frames one thread
encodes, at the same size. 720p, 120 frames, 2 cores: one thread 1.77 s wall and
1.83 CPU-s, two slice threads 1.42 s and 1.86 CPU-s, two frame threads 1.04 s and
1.68 CPU-s."""


X264_THREAD_TYPE = "FRAME"
"""How the :data:`X264_THREADS` share a clip (see there)."""


@lru_cache(maxsize=1)
def _x264_params() -> dict[str, str]:
    """x264 CPU features capped at AVX2 on CPUs with AVX-512.

    x264's AVX-512 MB-tree code reads uninitialised memory at some frame sizes (192x108,
    200x112, 426x240 measured; not 384x216 or 1280x720), so the same frames encode to
    different bytes from run to run, and a resumed build scores its pairs differently from
    an uninterrupted one. Capped at AVX2 the output is the same every run, at the same speed
    (720p measured).
    """
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return {}
    if " avx512f" not in cpuinfo:
        return {}
    return {"x264-params": "asm=AVX2,FMA3,BMI1,BMI2,LZCNT,Cache64"}


def _check_clip(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"need RGB uint8 frames T x H x W x 3, got {frames.dtype} {frames.shape}")
    if len(frames) == 0:
        raise ValueError("cannot encode an empty clip")
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(
            f"yuv420p needs even width and height, got {frames.shape[2]}x{frames.shape[1]}"
        )
    return frames


DEFAULT_KEYFRAME_INTERVAL = ClipConfig.keyframe_interval
"""Frames from one keyframe to the next unless the caller says (``clip.keyframe_interval``)."""


def encode_mp4(
    frames: np.ndarray,
    fps: float | Fraction,
    *,
    crf: int = 18,
    preset: str = "veryfast",
    keyframe_interval: int = DEFAULT_KEYFRAME_INTERVAL,
) -> bytes:
    """H.264 (yuv420p) in MP4, no audio, seekable: a keyframe every ``keyframe_interval``
    frames (closed GOPs, so decoding can start at any of them) and the index (``moov``)
    before the media (``faststart``), so a reader of a byte range finds it first.

    ``faststart`` moves the index in a second pass over a named file, so the clip is
    written to a temporary file and read back (a megabyte or two: milliseconds).
    """
    frames = _check_clip(frames)
    if isinstance(keyframe_interval, bool) or not isinstance(keyframe_interval, int):
        raise ValueError(f"keyframe_interval must be an int, got {keyframe_interval!r}")
    if keyframe_interval < 1:
        raise ValueError(f"keyframe_interval must be at least 1, got {keyframe_interval}")
    rate = Fraction(fps).limit_denominator(1001)
    codec = h264_encoder()
    if codec == "libx264":  # a fixed thread count: see X264_THREADS
        options = {"crf": str(crf), "preset": preset, "threads": X264_THREADS, **_x264_params()}
    else:  # fixed quantiser roughly as good as the crf asked for (FF_QP2LAMBDA = 118)
        options = {"flags": "+qscale", "global_quality": str(118 * max(2, crf // 6))}
    options["g"] = str(keyframe_interval)
    fd, name = tempfile.mkstemp(prefix="pvtt-", suffix=".mp4")
    os.close(fd)
    try:
        with av.open(name, "w", format="mp4", options={"movflags": "+faststart"}) as out:
            stream = out.add_stream(codec, rate=rate, options=options)
            if codec == "libx264":
                stream.codec_context.thread_type = X264_THREAD_TYPE
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv420p"
            mux_frames(out, stream, frames, rate)
        return Path(name).read_bytes()
    finally:
        Path(name).unlink(missing_ok=True)


@dataclass(frozen=True)
class KeyframeIndex:
    """Where a video can start decoding: its keyframes' frame numbers and byte offsets."""

    frames: list[int]
    """Display-order frame numbers of the keyframes (the indices a loader asks for)."""
    offsets: list[int]
    """Byte offset of each keyframe's data in the file: with the index at the front, a
    reader of ``[0, first offset)`` and ``[offset, next offset)`` has a decodable GOP."""


def keyframe_index(source: Source) -> KeyframeIndex:
    """The keyframes of a video, from its container's packets (demuxed, not decoded).

    Frame numbers are ranks among the packets' timestamps, as the loader counts frames;
    a stream without distinct timestamps is numbered in packet order.
    """
    name = _name(source)
    try:
        with _open(source) as container:
            stream = container.streams.video[0]
            packets = [
                (packet.pts, packet.is_keyframe, packet.pos)
                for packet in container.demux(stream)
                if packet.size
            ]
    except av.error.FFmpegError as exc:
        raise VideoError(name, f"demuxing failed ({exc})") from exc
    stamps = [pts for pts, _, _ in packets]
    if None in stamps or len(set(stamps)) != len(stamps):
        ranks = list(range(len(packets)))
    else:
        order = {pts: rank for rank, pts in enumerate(sorted(stamps))}
        ranks = [order[pts] for pts in stamps]
    keys = sorted((rank, pos) for rank, (_, key, pos) in zip(ranks, packets, strict=True) if key)
    return KeyframeIndex([rank for rank, _ in keys], [int(pos) for _, pos in keys])


_RECENT_INDEXES: OrderedDict[int, tuple[bytes, KeyframeIndex]] = OrderedDict()
_RECENT_LOCK = threading.Lock()
_RECENT_KEPT = 8
"""Indexes of the last videos indexed, by the identity of their bytes: every sink of a
build indexes the pair's synthesized video, and the tar sink its clip's source and
background videos again for every pair of the clip, all the same bytes objects."""


def mp4_keyframe_index(data: bytes) -> KeyframeIndex | None:
    """:func:`keyframe_index` of MP4 bytes; None for bytes that are no MP4 (no ``ftyp`` box
    first: the stand-in media of benchmarks and tests), so indexing costs them nothing.
    The same bytes object asked again soon is demuxed once (:data:`_RECENT_INDEXES`)."""
    if data[4:8] != b"ftyp":
        return None
    with _RECENT_LOCK:
        seen = _RECENT_INDEXES.get(id(data))
        if seen is not None and seen[0] is data:
            _RECENT_INDEXES.move_to_end(id(data))
            return seen[1]
    index = keyframe_index(io.BytesIO(data))
    with _RECENT_LOCK:
        _RECENT_INDEXES[id(data)] = (data, index)  # holding data keeps its id from reuse
        while len(_RECENT_INDEXES) > _RECENT_KEPT:
            _RECENT_INDEXES.popitem(last=False)
    return index


_LIMITED_CHROMA = np.clip(np.rint((np.arange(256) - 128) * 224 / 255 + 128), 0, 255).astype(np.uint8)
"""Full-range (JPEG) chroma to the limited range of video (16-240 around 128)."""


def yuv420p_frame(image: np.ndarray) -> av.VideoFrame:
    """An RGB image as a BT.601 limited-range ``yuv420p`` frame, as FFmpeg's swscale
    makes it (luma within one level; chroma the mean of each 2 x 2 block, which matches
    swscale's default filter to a level or two and keeps colour edges as sharp), in about
    a quarter of swscale's time: at 720p, 0.9 ms a frame against 3.7 ms, which was a
    quarter of encoding a synthesized clip.

    OpenCV's own ``RGB2YUV_I420`` gives the luma; its chroma is not a block mean (3 dB
    worse on textured frames), so chroma comes from the half-size image's YCrCb.
    """
    height, width = image.shape[:2]
    planes = cv2.cvtColor(image, cv2.COLOR_RGB2YUV_I420)  # Y, then U and V, flat rows
    half = cv2.resize(image, (width // 2, height // 2), interpolation=cv2.INTER_AREA)
    ycrcb = cv2.cvtColor(half, cv2.COLOR_RGB2YCrCb)
    flat = planes.reshape(-1)
    luma, quarter = height * width, height * width // 4
    for start, channel in ((luma, 2), (luma + quarter, 1)):  # U is Cb, V is Cr
        plane = flat[start : start + quarter].reshape(height // 2, width // 2)
        cv2.extractChannel(ycrcb, channel, dst=plane)
        cv2.LUT(plane, _LIMITED_CHROMA, dst=plane)
    if height % 4:  # PyAV reads the height of a buffer as rows // 6 * 4: 54 rows -> 52
        return av.VideoFrame.from_ndarray(planes, format="yuv420p")
    return av.VideoFrame.from_numpy_buffer(planes, format="yuv420p")  # no copy


def mux_frames(out: Any, stream: Any, frames: np.ndarray, rate: Fraction) -> None:
    """Encode RGB ``frames`` into ``stream`` of the open container ``out`` at one pts a
    frame, and flush the encoder: every writer of clips lays frames out alike. A
    ``yuv420p`` stream gets its frames from :func:`yuv420p_frame`."""
    convert = yuv420p_frame if stream.pix_fmt == "yuv420p" else _rgb24_frame
    for index, image in enumerate(frames):
        frame = convert(np.ascontiguousarray(image))
        frame.pts = index
        frame.time_base = 1 / rate
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def _rgb24_frame(image: np.ndarray) -> av.VideoFrame:
    return av.VideoFrame.from_ndarray(image, format="rgb24")


def decode_video_bytes(data: bytes) -> tuple[np.ndarray, float]:
    """Every frame of an in-memory video as RGB ``uint8`` ``T x H x W x 3``, and its fps."""
    return read_frames(io.BytesIO(data), max_size=None)


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: float | Fraction, **encode) -> None:
    """Encode with :func:`encode_mp4` and publish atomically: readers never see half a file."""
    path = Path(path)
    data = encode_mp4(frames, fps, **encode)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, default_file_mode())
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
