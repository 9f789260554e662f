"""Decoding of stored media into the tensors a training loop takes.

A loader that asks for 16 frames of a clip should pay for 16 RGB conversions, not for the
whole clip: :func:`decode_frames` starts decoding at the keyframe at or before the first
frame it needs (clips are built with one every ``clip.keyframe_interval`` frames), stops
at the last, skips the pictures nothing refers to before the first one, and converts
(and resizes, inside swscale) only the frames asked for, writing each once into one
preallocated array.
Frame ``i`` is the ``i``-th frame in presentation order, the order every decoder yields
them in, so an index means the same frame in the video and in its masks.

Sampling is separate (:class:`FrameSampler`) so that the dataset can draw indices from a
generator it seeds per (seed, epoch, pair), and the same indices can select both the video
frames and the mask frames.
"""

from __future__ import annotations

import importlib
import io
from dataclasses import dataclass
from typing import Literal

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter
from PIL import Image

from pvtt.loaders import shared
from pvtt.loaders.decode import MediaDecodeError, decode_image
from pvtt.schemas.masks import decode_masks

Start = Literal["random", "first", "centre"]
Backend = Literal["pyav", "decord", "torchcodec"]

_STARTS = ("random", "first", "centre")
_BACKENDS = ("pyav", "decord", "torchcodec")


@dataclass(frozen=True)
class FrameSampler:
    """Which frames of a clip to take: ``num_frames`` frames ``frame_stride`` apart.

    ``num_frames=None`` takes every ``frame_stride``-th frame of the whole clip from frame 0
    (``start`` is then moot). Otherwise the window starts at frame 0 (``"first"``), in the
    middle of the possible starts (``"centre"``), or at a start drawn uniformly from the
    generator (``"random"``). A clip too short for the window gives what it has at the
    stride from frame 0, then repeats its last index, so a batch always holds
    ``num_frames`` frames per sample and decoding still converts each frame once.
    """

    num_frames: int | None = None
    frame_stride: int = 1
    start: Start = "random"

    def __post_init__(self) -> None:
        if self.num_frames is not None and (
            not isinstance(self.num_frames, int) or self.num_frames < 1
        ):
            raise ValueError(f"num_frames must be a positive int or None, got {self.num_frames!r}")
        if not isinstance(self.frame_stride, int) or self.frame_stride < 1:
            raise ValueError(f"frame_stride must be a positive int, got {self.frame_stride!r}")
        if self.start not in _STARTS:
            raise ValueError(f"start must be one of {', '.join(_STARTS)}, got {self.start!r}")

    def indices(self, total_frames: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """Frame indices (int64, ascending, maybe repeating the last) into a clip of ``total_frames``.

        ``rng`` is needed only for ``start="random"``; the same generator state gives the
        same indices.
        """
        if total_frames < 1:
            raise ValueError(f"cannot sample frames from a clip of {total_frames} frames")
        stride = self.frame_stride
        if self.num_frames is None:
            return np.arange(0, total_frames, stride, dtype=np.int64)
        span = (self.num_frames - 1) * stride + 1
        if span > total_frames:
            taken = np.arange(0, total_frames, stride, dtype=np.int64)
            return np.concatenate([taken, np.full(self.num_frames - taken.size, taken[-1])])
        last_start = total_frames - span
        if self.start == "first":
            first = 0
        elif self.start == "centre":
            first = last_start // 2
        else:
            if rng is None:
                raise ValueError('start="random" needs an rng (numpy Generator)')
            first = int(rng.integers(0, last_start + 1))
        return first + np.arange(self.num_frames, dtype=np.int64) * stride


def frame_count(data: bytes, known: int | None = None, *, what: str = "video") -> int:
    """Number of frames of a video: ``known`` when the caller has it (metadata), else probed.

    The probe reads the container's count and, where the container keeps none (e.g.
    Matroska), counts the stream's packets; neither decodes a frame.
    """
    if known is not None and known > 0:
        return int(known)
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                raise MediaDecodeError(f"{what}: no video stream")
            stream = container.streams.video[0]
            if stream.frames > 0:
                return int(stream.frames)
            count = sum(1 for packet in container.demux(stream) if packet.size)
    except av.error.FFmpegError as exc:
        raise MediaDecodeError(f"{what}: not a readable video: {exc}") from None
    if count == 0:
        raise MediaDecodeError(f"{what}: video has no frames")
    return count


def decode_frames(
    data: bytes,
    indices: np.ndarray,
    *,
    size: tuple[int, int] | None = None,
    backend: Backend = "pyav",
    what: str = "video",
) -> torch.Tensor:
    """The frames at ``indices`` as uint8 RGB ``T x C x H x W`` (``T == len(indices)``).

    ``size=(height, width)`` resizes (bilinear, aspect ratio not kept). The tensor is a
    channels-last view of one contiguous ``T x H x W x C`` array: no copy is made to
    reorder it, and ``torch.stack`` in a collate function yields a contiguous batch.
    ``backend`` picks PyAV (default, always installed), decord or torchcodec (imported
    only when asked for). PyAV's frames are written straight into the output, which a
    DataLoader worker allocates in shared memory (:mod:`pvtt.loaders.shared`): it reaches
    the main process without a copy. decord's and torchcodec's come in their own tensors,
    which the worker's pickler copies once.
    """
    wanted = _check_indices(indices)
    size = check_size(size)
    if backend not in _BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; known: {', '.join(_BACKENDS)}")
    if backend == "pyav":
        return _pyav_frames(data, wanted, size, what).permute(0, 3, 1, 2)
    unique, inverse = np.unique(wanted, return_inverse=True)
    if backend == "decord":
        frames = _decord_frames(data, unique, size, what)
    else:
        frames = _torchcodec_frames(data, unique, size, what)
    if unique.size != wanted.size or not np.array_equal(unique, wanted):
        frames = frames[torch.from_numpy(inverse.reshape(-1))]
    return frames.permute(0, 3, 1, 2)


def decode_masks_at(
    data: bytes,
    indices: np.ndarray,
    *,
    size: tuple[int, int] | None = None,
    what: str = "masks",
) -> torch.Tensor:
    """The mask frames at ``indices`` as bool ``T x H x W``, resized by nearest neighbour.

    ``size=(height, width)``; each output pixel takes the source pixel under its centre, the
    alignment swscale's resize of the video frames also uses.
    """
    wanted = _check_indices(indices)
    size = check_size(size)
    try:
        picked = decode_masks(data, frames=wanted)  # expands only the frames asked for
    except IndexError as exc:
        raise MediaDecodeError(f"{what}: {exc}") from None
    except ValueError as exc:
        raise MediaDecodeError(f"{what}: not decodable masks: {exc}") from None
    if size is not None and size != picked.shape[1:]:
        rows = _nearest(picked.shape[1], size[0])
        cols = _nearest(picked.shape[2], size[1])
        out = shared.empty((picked.shape[0], *size), torch.bool)
        np.take(np.take(picked, rows, axis=1), cols, axis=2, out=out.numpy())
        return out
    return shared.output(picked)


def decode_rgba(
    data: bytes, *, size: tuple[int, int] | None = None, what: str = "image"
) -> torch.Tensor:
    """An encoded image as uint8 RGBA ``4 x H x W`` (opaque alpha when it has none).

    ``size=(height, width)`` letterboxes it (:func:`letterbox`): every image comes out in
    that shape, so cut-outs batch, and none is stretched.
    """
    size = check_size(size)
    rgba = decode_image(data, mode="RGBA", what=what)
    if size is not None and size != rgba.shape[:2]:
        return letterbox(rgba, size).permute(2, 0, 1)
    return shared.output(rgba).permute(2, 0, 1)


def letterbox(rgba: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """RGBA ``H x W x 4`` scaled to fit ``size=(height, width)``, centred on transparent padding
    (a ``height x width x 4`` tensor, in shared memory inside a DataLoader worker).

    The image keeps its aspect ratio and is scaled up or down until it touches two sides of
    the box (bilinear; Pillow premultiplies alpha while it resamples, so transparent pixels
    do not bleed their colour into the edges). The padding is RGBA 0: alpha still tells
    the product from what is not the product.
    """
    height, width = rgba.shape[:2]
    scale = min(size[0] / height, size[1] / width)
    fit_height = min(size[0], max(1, round(height * scale)))
    fit_width = min(size[1], max(1, round(width * scale)))
    resized = Image.fromarray(rgba).resize((fit_width, fit_height), Image.Resampling.BILINEAR)
    out = shared.empty((*size, 4), torch.uint8).zero_()
    top, left = (size[0] - fit_height) // 2, (size[1] - fit_width) // 2
    out.numpy()[top : top + fit_height, left : left + fit_width] = np.asarray(resized)
    return out


def _check_indices(indices: np.ndarray) -> np.ndarray:
    wanted = np.asarray(indices)
    if wanted.ndim != 1 or wanted.size == 0:
        raise ValueError(f"indices must be a non-empty 1-D array, got shape {wanted.shape}")
    if not np.issubdtype(wanted.dtype, np.integer):
        raise ValueError(f"indices must be integers, got {wanted.dtype}")
    if wanted.min() < 0:
        raise ValueError(f"indices must not be negative, got {int(wanted.min())}")
    return wanted.astype(np.int64, copy=False)


def check_size(size: tuple[int, int] | None) -> tuple[int, int] | None:
    """``size`` as ``(height, width)`` of positive ints, or None; a ValueError otherwise."""
    if size is None:
        return None
    height, width = size
    if int(height) < 1 or int(width) < 1:
        raise ValueError(f"size must be (height, width) of positive ints, got {size!r}")
    return int(height), int(width)


def _nearest(source: int, target: int) -> np.ndarray:
    """Source index under the centre of each of ``target`` output pixels."""
    return np.minimum((np.arange(target) * 2 + 1) * source // (2 * target), source - 1)


_PROBE_KEYFRAMES = {"skip_frame": "nonkey"}
"""Options of the decoder FFmpeg opens to probe the stream (``avformat_find_stream_info``),
not of the one that decodes: the probe decodes no more than keyframes. By default it
decodes the first frames (up to seven, for H.264 with B-frames) on every open: about 5 ms
of CPU for a 720p clip, where a 16-frame window takes 60-80 ms to decode."""


def _pyav_frames(
    data: bytes, wanted: np.ndarray, size: tuple[int, int] | None, what: str
) -> torch.Tensor:
    """Frames at ``wanted`` (any order, repeats allowed) as ``T x H x W x 3``, allocated by
    :func:`pvtt.loaders.shared.empty`: each decoded frame is converted once and written
    into every slot that asks for it.

    Decoding starts at the last keyframe at or before the first wanted frame (the demuxed
    packets carry the container's sync-sample flags, so no index has to be passed in) and
    stops at the last wanted frame: a window of a clip encoded with a short keyframe
    interval costs about its own frames. Between that keyframe and the first wanted frame
    the decoder skips non-reference pictures (``skip_frame="NONREF"``), which saves about
    a third of the time spent on them (x264's B-frames). Skipped pictures leave gaps in
    the decoder's output, so frames are identified by their rank among the packets'
    timestamps; a stream without distinct timestamps is decoded whole from its start and
    its frames are counted instead.
    """
    unique = np.unique(wanted)
    slots: dict[int, list[int]] = {}
    for slot, index in enumerate(wanted.tolist()):
        slots.setdefault(index, []).append(slot)
    resize = {} if size is None else {"height": size[0], "width": size[1]}
    out: torch.Tensor | None = None
    array: np.ndarray | None = None
    pending = set(slots)
    decoded = 0
    reformatter = VideoReformatter()  # one swscale context for the clip, not one a frame
    try:
        with av.open(io.BytesIO(data), mode="r", options=_PROBE_KEYFRAMES) as container:
            if not container.streams.video:
                raise MediaDecodeError(f"{what}: no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            packets = [packet for packet in container.demux(stream) if packet.size]
            ranks = _display_ranks(packets)
            if ranks is not None and unique[-1] >= len(ranks):
                raise MediaDecodeError(
                    f"{what}: frame {int(unique[-1])} asked for, the video has {len(ranks)} frames"
                )
            begin, skip_until, end = 0, 0, len(packets)
            if ranks is not None:
                begin, skip_until, end = _decode_span(
                    packets, ranks, int(unique[0]), int(unique[-1])
                )
            codec = stream.codec_context
            codec.skip_frame = "NONREF" if skip_until > begin else "DEFAULT"
            # None drains the decoder: the frames it holds come out without more packets.
            for position, packet in enumerate([*packets[begin:end], None], start=begin):
                if position == skip_until and skip_until > begin:
                    codec.skip_frame = "DEFAULT"
                for frame in codec.decode(packet):
                    index = decoded if ranks is None else ranks.get(frame.pts, -1)
                    decoded += 1
                    taken = slots.get(index)
                    if taken is None:
                        continue
                    image = reformatter.reformat(frame, format="rgb24", **resize).to_ndarray()
                    if out is None:
                        out = shared.empty((wanted.size, *image.shape), torch.uint8)
                        array = out.numpy()
                    for slot in taken:
                        array[slot] = image  # type: ignore[index]
                    pending.discard(index)
                    if not pending:
                        return out
    except MediaDecodeError:
        raise
    except (av.error.FFmpegError, ValueError) as exc:
        raise MediaDecodeError(f"{what}: not a decodable video: {exc}") from None
    raise MediaDecodeError(
        f"{what}: frame {min(pending)} asked for, the video has {decoded} decodable frames"
    )


def _decode_span(
    packets: list[av.Packet], ranks: dict[int, int], first: int, last: int
) -> tuple[int, int, int]:
    """Which packets (decode order) show frames ``first`` to ``last``: ``(begin, skip_until,
    end)``.

    ``begin`` is the last keyframe shown at or before ``first``: a sync sample, from which
    every later packet decodes without the ones before it (a stream whose first packet is
    not flagged starts at its first packet). ``skip_until`` is the first packet showing
    ``first`` or later. ``end`` is one past the last packet showing ``last`` or earlier:
    every frame up to ``last`` refers only to packets before it in decode order, so the
    decoder is drained there instead of decoding the packets its reordering and frame
    threads would otherwise take in first.
    """
    begin, skip_until, end = 0, len(packets), 0
    for at, packet in enumerate(packets):
        rank = ranks[packet.pts]
        if at < skip_until:
            if packet.is_keyframe and rank <= first:
                begin = at
            if rank >= first:
                skip_until = at
        if rank <= last:
            end = at + 1
    return begin, skip_until, end


def _display_ranks(packets: list[av.Packet]) -> dict[int, int] | None:
    """Each packet's timestamp -> its frame's index in display order; None when not distinct."""
    stamps = [packet.pts for packet in packets]
    if None in stamps or len(set(stamps)) != len(stamps):
        return None
    return {stamp: rank for rank, stamp in enumerate(sorted(stamps))}


def _import_backend(name: str, module: str | None = None) -> object:
    """``module`` (default: ``name``) of optional package ``name``, or an ImportError naming it."""
    try:
        return importlib.import_module(module or name)
    except ImportError as exc:
        raise ImportError(
            f'backend="{name}" needs the {name} package, which does not import here ({exc}); '
            f'install {name} or use backend="pyav"'
        ) from exc
    except (OSError, RuntimeError) as exc:  # installed, but its native libraries do not load
        raise ImportError(
            f'backend="{name}": the {name} package is installed but does not load ({exc}); '
            f'use backend="pyav"'
        ) from exc


def _decord_frames(
    data: bytes, unique: np.ndarray, size: tuple[int, int] | None, what: str
) -> torch.Tensor:
    decord = _import_backend("decord")
    resize = {} if size is None else {"height": size[0], "width": size[1]}
    try:
        reader = decord.VideoReader(io.BytesIO(data), ctx=decord.cpu(0), **resize)
        total = len(reader)
        if unique[-1] >= total:
            raise MediaDecodeError(
                f"{what}: frame {int(unique[-1])} asked for, the video has {total} frames"
            )
        batch = reader.get_batch(unique.tolist())
    except (decord.DECORDError, RuntimeError, AssertionError, IndexError) as exc:
        raise MediaDecodeError(f"{what}: decord cannot decode the video: {exc}") from None
    # decord returns torch tensors when a caller has set its bridge to torch.
    return batch if isinstance(batch, torch.Tensor) else torch.from_numpy(batch.asnumpy())


def _torchcodec_frames(
    data: bytes, unique: np.ndarray, size: tuple[int, int] | None, what: str
) -> torch.Tensor:
    decoders = _import_backend("torchcodec", "torchcodec.decoders")
    try:
        decoder = decoders.VideoDecoder(data, dimension_order="NCHW", num_ffmpeg_threads=0)
        total = decoder.metadata.num_frames
        batch = None if unique[-1] >= total else decoder.get_frames_at(unique.tolist()).data
    except (RuntimeError, ValueError, IndexError) as exc:
        raise MediaDecodeError(f"{what}: torchcodec cannot decode the video: {exc}") from None
    if batch is None:
        raise MediaDecodeError(
            f"{what}: frame {int(unique[-1])} asked for, the video has {total} frames"
        )
    if size is not None and tuple(batch.shape[2:]) != size:
        resized = torch.nn.functional.interpolate(
            batch.float(), size=size, mode="bilinear", align_corners=False, antialias=True
        )
        batch = resized.round_().clamp_(0, 255).to(torch.uint8)
    return batch.permute(0, 2, 3, 1)
