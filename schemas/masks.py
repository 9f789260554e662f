"""A lossless, compact, self-describing codec for mask sequences (bool ``T x H x W``).

The ``clips`` table stores each clip's product masks as one binary value; its codec is
named in the ``masks_codec`` column. ``tools/bench/masks_codec.py`` measures every codec
against 1-bit PNG per frame on real-like masks (tracked products at 720p, the test
suite's ground-truth clip, a synthetic moving outline). Measured there:

- ``xor-packbits-zlib`` (each frame's packed bits exclusive-or'ed with the previous
  frame's, deflated): 0.47-0.75x PNG's size, about as slow to decode. Bit packing cuts
  the thin moving band of the exclusive-or across byte boundaries, which deflate handles
  badly.
- ``rle-zlib`` (run lengths of the whole flattened sequence, deflated): 0.13-0.22x.
- ``rle-lzma`` (the same runs, xz): 0.08-0.13x PNG's size and 8-16x faster to decode;
  a still or slowly moving object repeats its runs row after row and frame after frame,
  which LZMA's long-range matching finds. It is the default.

Layout (little-endian)::

    8s  magic  b"PVTTMASK"
    B   format version (1)
    B   length n of the codec name
    ns  codec name, ASCII
    III T, H, W
    Q   payload length in bytes
    I   CRC-32 of the payload
    ... payload

Decoding validates every field, caps decompression at the size the header implies and
checks the CRC, so short, corrupt or hostile data raises :class:`ValueError`. Runs are
inflated and checked a chunk at a time (an empty run is only valid first), so a payload
that inflates to far more runs than the header's pixels fails early instead of claiming
memory; like Pillow's ``MAX_IMAGE_PIXELS``, a header claiming more than
:data:`MAX_MASK_PIXELS` is refused before anything is allocated. Nothing is ever
unpickled.
"""

from __future__ import annotations

import lzma
import struct
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

MAGIC = b"PVTTMASK"
FORMAT_VERSION = 1
MASKS_FILE_EXTENSION = "pvmask"
"""File extension (no dot) of an encoded mask sequence written on its own, e.g. in a tar sample."""

MAX_MASK_PIXELS = 1 << 33
"""Most pixels (frames x height x width) a header may claim: 8 GiB of bool masks, 4K video
at 60 fps for 17 s. A forged header cannot make the decoder allocate more."""

_RUN_CHUNK = 1 << 22
"""Bytes of runs inflated at a time."""

_PARTIAL_CHUNK = 1 << 16
"""Bytes of runs inflated at a time when only some frames are wanted: a 720p product
outline takes ~4 KB of runs a frame, so inflating stops within ~16 frames of the last
one wanted."""

_PREFIX = struct.Struct("<8sBB")
_DIMS = struct.Struct("<IIIQI")


def _xor_stream(masks: np.ndarray) -> np.ndarray:
    """Packed bits of each frame, exclusive-or'ed with the previous frame's (the first as is)."""
    count, height, width = masks.shape
    packed = np.packbits(masks.reshape(count, height * width), axis=1)
    if packed.shape[0] > 1:
        packed[1:] ^= packed[:-1].copy()
    return packed


def _from_xor_stream(raw: bytes, shape: tuple[int, int, int]) -> np.ndarray:
    count, height, width = shape
    per_frame = (height * width + 7) // 8
    if len(raw) != count * per_frame:
        raise ValueError(f"mask payload decodes to {len(raw)} bytes, expected {count * per_frame}")
    packed = np.frombuffer(raw, dtype=np.uint8).reshape(count, per_frame)
    packed = np.bitwise_xor.accumulate(packed, axis=0)
    bits = np.unpackbits(packed, axis=1, count=height * width)
    return bits.reshape(shape).view(bool)


def _encode_xor_zlib(masks: np.ndarray, changes: np.ndarray | None = None) -> bytes:
    del changes  # a bitmap codec: the runs play no part
    return zlib.compress(_xor_stream(masks).tobytes(), 9)


def _decode_xor_zlib(payload: bytes, shape: tuple[int, int, int]) -> np.ndarray:
    expected = shape[0] * ((shape[1] * shape[2] + 7) // 8)
    return _from_xor_stream(_inflate_zlib(payload, expected), shape)


def frame_changes(frame: np.ndarray) -> np.ndarray:
    """Flat indices ``i`` of one mask frame where pixel ``i + 1`` differs from pixel ``i``.

    The pass over every pixel that run-length coding needs, one frame at a time: a caller
    that makes masks frame by frame (the SAM2 segmenter) finds each frame's changes as it
    comes and hands them to :func:`encode_masks`, which then only joins them.
    """
    flat = frame.reshape(-1)
    return np.flatnonzero(flat[1:] != flat[:-1]).astype(np.int64, copy=False)


def _changes(masks: np.ndarray, per_frame: Sequence[np.ndarray] | None) -> np.ndarray:
    """Flat indices where the flattened sequence changes, from each frame's :func:`frame_changes`."""
    if per_frame is None:
        return frame_changes(masks)
    count, height, width = masks.shape
    if len(per_frame) != count:
        raise ValueError(f"changes of {len(per_frame)} frames given for {count} mask frames")
    pixels = height * width
    parts = []
    for t, inside in enumerate(per_frame):
        parts.append(np.asarray(inside, dtype=np.int64) + t * pixels)
        if pixels and t + 1 < count and masks[t, -1, -1] != masks[t + 1, 0, 0]:
            parts.append(np.array([(t + 1) * pixels - 1], dtype=np.int64))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _runs(masks: np.ndarray, changes: np.ndarray | None = None) -> bytes:
    """Run lengths (uint32) of the flattened sequence, alternating False/True from a False run."""
    flat = masks.reshape(-1)
    if changes is None:
        changes = frame_changes(flat)
    bounds = np.concatenate([[0], changes + 1, [flat.size]])
    runs = np.diff(bounds)
    if flat.size and flat[0]:
        runs = np.concatenate([[0], runs])
    return runs.astype("<u4").tobytes()


def _run_blocks(chunks: Iterable[bytes], total: int) -> Iterator[tuple[np.ndarray, int, int]]:
    """Checked blocks of run lengths streamed in ``chunks`` of any size.

    Yields ``(runs, first pixel, index of the first run)``. Every run but a leading one
    is non-empty and they may not cover more than ``total`` pixels, so a hostile stream
    fails within a chunk of the point where it goes wrong, whatever it would inflate to.
    """
    filled = number = 0
    carry = b""
    for chunk in chunks:
        raw = carry + chunk
        whole = len(raw) - len(raw) % 4
        carry = raw[whole:]
        runs = np.frombuffer(raw[:whole], dtype="<u4").astype(np.int64)
        if runs.size == 0:
            continue
        if not runs[1 if number == 0 else 0 :].all():
            raise ValueError("corrupt run-length mask payload: an empty run inside the sequence")
        end = filled + int(runs.sum())
        if end > total:
            raise ValueError(f"run-length mask payload covers more than the {total} pixels")
        yield runs, filled, number
        filled, number = end, number + runs.size
    if carry:
        raise ValueError("corrupt run-length mask payload: not a whole number of runs")


def _from_runs(chunks: Iterable[bytes], shape: tuple[int, int, int]) -> np.ndarray:
    """Masks from run lengths streamed in ``chunks`` (see :func:`_run_blocks`)."""
    total = shape[0] * shape[1] * shape[2]
    out = np.zeros(total, dtype=bool)
    end = 0
    for runs, filled, number in _run_blocks(chunks, total):
        end = filled + int(runs.sum())
        out[filled:end] = np.repeat((number + np.arange(runs.size)) % 2 == 1, runs)
    if end != total:
        raise ValueError(f"run-length mask payload covers {end} pixels, expected {total}")
    return out.reshape(shape)


def _encode_rle_zlib(masks: np.ndarray, changes: np.ndarray | None = None) -> bytes:
    return zlib.compress(_runs(masks, changes), 9)


def _zlib_chunks(payload: bytes, size: int = _RUN_CHUNK) -> Iterator[bytes]:
    inflater = zlib.decompressobj()
    data = payload
    while not inflater.eof:
        try:
            chunk = inflater.decompress(data, size)
        except zlib.error as err:
            raise ValueError(f"corrupt zlib mask payload: {err}") from err
        if not chunk and len(inflater.unconsumed_tail) >= len(data):
            raise ValueError("corrupt zlib mask payload: the stream ends before the masks do")
        data = inflater.unconsumed_tail
        yield chunk
    if inflater.unused_data:
        raise ValueError("corrupt zlib mask payload: the stream does not end where the masks do")


def _decode_rle_zlib(payload: bytes, shape: tuple[int, int, int]) -> np.ndarray:
    return _from_runs(_zlib_chunks(payload), shape)


def _encode_rle_lzma(masks: np.ndarray, changes: np.ndarray | None = None) -> bytes:
    return lzma.compress(_runs(masks, changes), format=lzma.FORMAT_XZ, preset=6)


def _lzma_chunks(payload: bytes, size: int = _RUN_CHUNK) -> Iterator[bytes]:
    inflater = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    data = payload
    while not inflater.eof:
        try:
            chunk = inflater.decompress(data, size)
        except lzma.LZMAError as err:
            raise ValueError(f"corrupt lzma mask payload: {err}") from err
        if not chunk and not inflater.eof:
            raise ValueError("corrupt lzma mask payload: the stream ends before the masks do")
        data = b""
        yield chunk
    if inflater.unused_data:
        raise ValueError("corrupt lzma mask payload: the stream does not end where the masks do")


def _decode_rle_lzma(payload: bytes, shape: tuple[int, int, int]) -> np.ndarray:
    return _from_runs(_lzma_chunks(payload), shape)


def _runs_at(
    chunks: Iterable[bytes], shape: tuple[int, int, int], frames: np.ndarray
) -> np.ndarray:
    """Frames ``frames`` (sorted, distinct) of the masks whose runs ``chunks`` streams.

    Only the wanted frames' pixels are expanded, and no chunk is read past the last of
    them (the payload's CRC has covered the rest). The checks are
    :func:`_run_blocks`' over the runs read.
    """
    count, height, width = shape
    area = height * width
    total = count * area
    out = np.zeros((frames.size, area), dtype=bool)
    if frames.size == 0 or area == 0:
        return out.reshape(frames.size, height, width)
    starts = frames.astype(np.int64) * area
    stop = int(starts[-1]) + area
    end = 0
    for runs, filled, number in _run_blocks(chunks, total):
        ends = filled + np.cumsum(runs)
        end = int(ends[-1])
        begins = ends - runs
        first = int(np.searchsorted(starts + area, filled, side="right"))
        for k in range(first, int(np.searchsorted(starts, end, side="left"))):
            lo, hi = max(int(starts[k]), filled), min(int(starts[k]) + area, end)
            i = int(np.searchsorted(ends, lo, side="right"))
            j = int(np.searchsorted(begins, hi, side="left"))
            lengths = np.minimum(ends[i:j], hi) - np.maximum(begins[i:j], lo)
            values = (number + np.arange(i, j)) % 2 == 1
            out[k, lo - starts[k] : hi - starts[k]] = np.repeat(values, lengths)
        if end >= stop:
            return out.reshape(frames.size, height, width)
    raise ValueError(
        f"run-length mask payload covers {end} pixels, frame {int(frames[-1])} needs {stop}"
    )


def _decode_rle_zlib_at(
    payload: bytes, shape: tuple[int, int, int], frames: np.ndarray
) -> np.ndarray:
    return _runs_at(_zlib_chunks(payload, _PARTIAL_CHUNK), shape, frames)


def _decode_rle_lzma_at(
    payload: bytes, shape: tuple[int, int, int], frames: np.ndarray
) -> np.ndarray:
    return _runs_at(_lzma_chunks(payload, _PARTIAL_CHUNK), shape, frames)


def _decode_xor_zlib_at(
    payload: bytes, shape: tuple[int, int, int], frames: np.ndarray
) -> np.ndarray:
    """Inflate up to the last wanted frame, accumulate the packed XOR, unpack the wanted."""
    count, height, width = shape
    per_frame = (height * width + 7) // 8
    if frames.size == 0 or per_frame == 0:
        return np.zeros((frames.size, height, width), dtype=bool)
    need = (int(frames[-1]) + 1) * per_frame
    try:
        raw = zlib.decompressobj().decompress(payload, need)
    except zlib.error as err:
        raise ValueError(f"corrupt zlib mask payload: {err}") from err
    if len(raw) != need:
        raise ValueError(
            f"mask payload decodes to {len(raw)} bytes, frame {frames[-1]} needs {need}"
        )
    packed = np.frombuffer(raw, dtype=np.uint8).reshape(-1, per_frame)
    packed = np.bitwise_xor.accumulate(packed, axis=0)[frames]
    bits = np.unpackbits(packed, axis=1, count=height * width)
    return bits.reshape(frames.size, height, width).view(bool)


def _inflate_zlib(payload: bytes, limit: int) -> bytes:
    """zlib-decompress at most ``limit`` bytes (a hostile payload cannot exhaust memory)."""
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(payload, min(limit + 1, sys.maxsize))
    except zlib.error as err:
        raise ValueError(f"corrupt zlib mask payload: {err}") from err
    if not inflater.eof or inflater.unused_data or len(raw) > limit:
        raise ValueError("corrupt zlib mask payload: the stream does not end where the masks do")
    return raw


_Codec = tuple[
    Callable[[np.ndarray, np.ndarray | None], bytes],
    Callable[[bytes, tuple[int, int, int]], np.ndarray],
]

MASK_CODECS: dict[str, _Codec] = {
    "xor-packbits-zlib": (_encode_xor_zlib, _decode_xor_zlib),
    "rle-zlib": (_encode_rle_zlib, _decode_rle_zlib),
    "rle-lzma": (_encode_rle_lzma, _decode_rle_lzma),
}
"""Codec name -> (encode, decode). The name is written into the data and the ``masks_codec`` column."""

_PARTIAL_DECODERS: dict[str, Callable[[bytes, tuple[int, int, int], np.ndarray], np.ndarray]] = {
    "xor-packbits-zlib": _decode_xor_zlib_at,
    "rle-zlib": _decode_rle_zlib_at,
    "rle-lzma": _decode_rle_lzma_at,
}
"""Codec name -> decoder of some frames (sorted, distinct): see :func:`decode_masks`."""

DEFAULT_MASK_CODEC = "rle-lzma"
AUTO = "auto"
"""Run-length coding for masks with few runs (tracked objects), the XOR bitmap otherwise.

Speckled masks (an untrained model's, noise) have up to one run per pixel: their runs
take 32x the bytes of a bitmap and lzma/zlib spend minutes on them (77 s for 60 frames
at 720p, measured), where the bitmap codec takes 0.2 s."""


def choose_codec(masks: np.ndarray, changes: np.ndarray | None = None) -> str:
    """The run-length codec unless the runs would outweigh a bitmap, then the XOR bitmap.

    ``changes``: where the flattened sequence changes, when the caller has them already.
    """
    flat = masks.reshape(-1)
    count = np.count_nonzero(flat[1:] != flat[:-1]) if changes is None else len(changes)
    runs = int(count) + 1
    # 4 bytes a run against 1 bit a pixel (small sequences: either is tiny, keep the runs)
    return DEFAULT_MASK_CODEC if runs * 4 <= flat.size // 8 + 1024 else "xor-packbits-zlib"


def encode_masks(
    masks: np.ndarray, codec: str = AUTO, *, changes: Sequence[np.ndarray] | None = None
) -> bytes:
    """Encode bool masks ``T x H x W`` losslessly into self-describing bytes.

    ``codec="auto"`` picks per sequence (see :data:`AUTO`); the codec used is written in
    the header (:func:`read_header`). ``changes``: each frame's :func:`frame_changes`, when
    the caller found them while making the masks; the bytes are the same, without a
    second pass over every pixel.
    """
    masks = np.asarray(masks)
    if masks.dtype != np.bool_ or masks.ndim != 3:
        raise ValueError(f"masks must be a bool T x H x W array, got {masks.dtype} {masks.shape}")
    if codec != AUTO and codec not in MASK_CODECS:
        raise ValueError(f"unknown mask codec {codec!r}; known: {', '.join(MASK_CODECS)}")
    if max(masks.shape) >= 2**32:
        raise ValueError(f"mask dimensions {masks.shape} do not fit the header's 32-bit fields")
    joined = None if changes is None else _changes(masks, changes)
    if codec == AUTO:
        codec = choose_codec(masks, joined)
    payload = MASK_CODECS[codec][0](np.ascontiguousarray(masks), joined)
    name = codec.encode("ascii")
    return b"".join(
        [
            _PREFIX.pack(MAGIC, FORMAT_VERSION, len(name)),
            name,
            _DIMS.pack(*masks.shape, len(payload), zlib.crc32(payload)),
            payload,
        ]
    )


def read_header(data: bytes) -> tuple[str, tuple[int, int, int]]:
    """The codec name and the ``(T, H, W)`` shape written in encoded masks, validated."""
    codec, shape, _ = _parse(memoryview(data))
    return codec, shape


def decode_masks(data: bytes, frames: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """Decode bytes from :func:`encode_masks` to bool ``T x H x W``; bad data raises ValueError.

    ``frames`` (indices, any order, repeats allowed) gives only those frames,
    ``len(frames) x H x W``: a loader that samples 16 of 287 frames at 720p need not
    expand 264 M pixels. Decompression stops after the last frame wanted, so what
    follows it is checked by the CRC only. An index outside the clip raises IndexError.
    """
    codec, shape, payload = _parse(memoryview(data))
    if frames is not None:
        wanted = _frame_indices(frames, shape[0])
        unique, inverse = np.unique(wanted, return_inverse=True)
        masks = _PARTIAL_DECODERS[codec](payload, shape, unique)
        if unique.size != wanted.size or not np.array_equal(unique, wanted):
            masks = masks[inverse.reshape(-1)]
        shape = (wanted.size, *shape[1:])
    else:
        masks = MASK_CODECS[codec][1](payload, shape)
    if masks.shape != shape or masks.dtype != np.bool_:
        raise ValueError(
            f"mask payload decodes to {masks.dtype} {masks.shape}, expected bool {shape}"
        )
    return masks


def _frame_indices(frames: Sequence[int] | np.ndarray, count: int) -> np.ndarray:
    wanted = np.asarray(frames)
    if wanted.ndim != 1 or (wanted.size and wanted.dtype.kind not in "iu"):
        raise ValueError(
            f"frames must be a 1-D sequence of ints, got {wanted.dtype} {wanted.shape}"
        )
    wanted = wanted.astype(np.int64)
    if wanted.size and (wanted.min() < 0 or wanted.max() >= count):
        bad = int(wanted.min()) if wanted.min() < 0 else int(wanted.max())
        raise IndexError(f"frame {bad} asked for, the masks have {count} frames")
    return wanted


def _parse(data: memoryview) -> tuple[str, tuple[int, int, int], bytes]:
    if len(data) < _PREFIX.size:
        raise ValueError(f"mask data too short for a header: {len(data)} bytes")
    magic, version, name_length = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise ValueError(f"not encoded masks: magic {bytes(magic)!r}, expected {MAGIC!r}")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"unsupported mask format version {version} (this reader knows {FORMAT_VERSION})"
        )
    offset = _PREFIX.size + name_length
    if len(data) < offset + _DIMS.size:
        raise ValueError(f"mask data truncated inside its header ({len(data)} bytes)")
    try:
        codec = bytes(data[_PREFIX.size : offset]).decode("ascii")
    except UnicodeDecodeError as err:
        raise ValueError("corrupt mask header: codec name is not ASCII") from err
    if codec not in MASK_CODECS:
        raise ValueError(f"unknown mask codec {codec!r} in header; known: {', '.join(MASK_CODECS)}")
    count, height, width, length, crc = _DIMS.unpack_from(data, offset)
    if count * height * width > MAX_MASK_PIXELS:
        raise ValueError(
            f"mask header covers {count} x {height} x {width} pixels; at most "
            f"MAX_MASK_PIXELS = {MAX_MASK_PIXELS} are expected"
        )
    start = offset + _DIMS.size
    if len(data) != start + length:
        raise ValueError(
            f"mask data holds {len(data) - start} payload bytes, the header says {length}"
        )
    payload = bytes(data[start:])
    if zlib.crc32(payload) != crc:
        raise ValueError("mask payload fails its CRC-32 check (corrupt data)")
    return codec, (count, height, width), payload
