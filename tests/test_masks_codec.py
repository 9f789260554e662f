"""The mask-sequence codec: exact round trips, strict validation, and smaller than PNG."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image
from truth import make_truth_clip

from pvtt.schemas import masks as masks_module
from pvtt.schemas.masks import (
    DEFAULT_MASK_CODEC,
    MAGIC,
    MASK_CODECS,
    MASKS_FILE_EXTENSION,
    decode_masks,
    encode_masks,
    read_header,
)
from pvtt.tools.bench.masks_codec import blob_masks, measure

CODECS = sorted(MASK_CODECS)

shapes = st.tuples(st.integers(1, 4), st.integers(0, 13), st.integers(0, 13))


@st.composite
def mask_sequences(draw: st.DrawFn) -> np.ndarray:
    """Noise or moving rectangles: random bits, and the long runs real masks have."""
    shape = draw(shapes)
    if draw(st.booleans()):
        return draw(arrays(np.bool_, shape))
    masks = np.zeros(shape, dtype=bool)
    for t in range(shape[0]):
        y0, x0 = draw(st.integers(0, shape[1])), draw(st.integers(0, shape[2]))
        masks[t, y0 : y0 + draw(st.integers(0, 6)), x0 : x0 + draw(st.integers(0, 6))] = True
    return masks


@settings(max_examples=150, deadline=None)
@given(masks=mask_sequences(), codec=st.sampled_from(CODECS))
def test_round_trip_is_exact(masks: np.ndarray, codec: str) -> None:
    data = encode_masks(masks, codec)
    decoded = decode_masks(data)
    assert decoded.dtype == np.bool_
    np.testing.assert_array_equal(decoded, masks)
    assert read_header(data) == (codec, masks.shape)


@settings(max_examples=150, deadline=None)
@given(masks=mask_sequences(), codec=st.sampled_from(CODECS), data=st.data())
def test_partial_decode_equals_full_decode(masks: np.ndarray, codec: str, data) -> None:
    encoded = encode_masks(masks, codec)
    frames = data.draw(st.lists(st.integers(0, masks.shape[0] - 1), max_size=6))
    got = decode_masks(encoded, frames=frames)
    assert got.dtype == np.bool_ and got.shape == (len(frames), *masks.shape[1:])
    np.testing.assert_array_equal(got, decode_masks(encoded)[frames])


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("chunk", [4, 7, 1 << 16])
def test_partial_decode_across_chunks(codec: str, chunk: int, monkeypatch) -> None:
    """Runs of one frame split over many inflated chunks, frames asked in any order."""
    monkeypatch.setattr(masks_module, "_PARTIAL_CHUNK", chunk)
    rng = np.random.default_rng(1)
    masks = rng.random((9, 20, 30)) > 0.7
    masks[4] = True  # one run over a whole frame
    masks[5] = False
    encoded = encode_masks(masks, codec)
    for frames in ([0], [8], [3, 1, 3], [5, 4, 6], list(range(9))[::-1], []):
        np.testing.assert_array_equal(decode_masks(encoded, frames=frames), masks[frames])


@pytest.mark.parametrize("codec", ["rle-zlib", "rle-lzma"])
def test_partial_decode_stops_after_the_last_frame_wanted(codec: str, monkeypatch) -> None:
    """A stream whose tail is bad (under a valid CRC): frame 0 still decodes, all fails."""
    monkeypatch.setattr(masks_module, "_PARTIAL_CHUNK", 64)
    runs = np.array([5, 3] * 40 + [0, 7], dtype="<u4")  # frame 0 = 320 px; then an empty run
    compress = zlib.compress if codec == "rle-zlib" else masks_module.lzma.compress
    data = _with_header(codec.encode(), (2, 16, 20), compress(runs.tobytes()))
    expected = np.tile([False] * 5 + [True] * 3, 40).reshape(16, 20)
    np.testing.assert_array_equal(decode_masks(data, frames=[0])[0], expected)
    with pytest.raises(ValueError, match="empty run"):
        decode_masks(data)
    with pytest.raises(ValueError, match="empty run"):
        decode_masks(data, frames=[1])


def test_partial_decode_rejects_bad_frames() -> None:
    data = encode_masks(np.zeros((3, 4, 4), dtype=bool))
    with pytest.raises(IndexError, match="frame 3 asked for, the masks have 3 frames"):
        decode_masks(data, frames=[0, 3])
    with pytest.raises(IndexError, match="frame -1"):
        decode_masks(data, frames=[-1])
    with pytest.raises(ValueError, match="1-D sequence of ints"):
        decode_masks(data, frames=[[0]])
    with pytest.raises(ValueError, match="1-D sequence of ints"):
        decode_masks(data, frames=[0.5])


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize(
    "masks",
    [
        np.zeros((3, 7, 5), dtype=bool),
        np.ones((3, 7, 5), dtype=bool),
        np.ones((1, 1, 1), dtype=bool),
        np.zeros((1, 33, 17), dtype=bool),
        np.eye(9, dtype=bool)[None].repeat(2, axis=0),
        np.zeros((2, 0, 5), dtype=bool),
        np.zeros((0, 4, 4), dtype=bool),
    ],
    ids=["empty", "full", "one-pixel", "T1-odd", "diagonal", "zero-height", "zero-frames"],
)
def test_edge_cases_round_trip(masks: np.ndarray, codec: str) -> None:
    np.testing.assert_array_equal(decode_masks(encode_masks(masks, codec)), masks)


def test_default_codec_and_extension() -> None:
    assert DEFAULT_MASK_CODEC in MASK_CODECS
    assert read_header(encode_masks(np.zeros((1, 2, 2), dtype=bool)))[0] == DEFAULT_MASK_CODEC
    assert MASKS_FILE_EXTENSION and "." not in MASKS_FILE_EXTENSION


def test_encode_rejects_non_bool_masks() -> None:
    with pytest.raises(ValueError, match="bool"):
        encode_masks(np.zeros((2, 3, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="T x H x W"):
        encode_masks(np.zeros((3, 3), dtype=bool))
    with pytest.raises(ValueError, match="unknown mask codec"):
        encode_masks(np.zeros((1, 3, 3), dtype=bool), "pickle")


@pytest.mark.parametrize("codec", CODECS)
def test_every_truncation_raises(codec: str) -> None:
    masks = blob_masks(frames=3, size=(24, 16))
    data = encode_masks(masks, codec)
    for cut in range(len(data)):
        with pytest.raises(ValueError):
            decode_masks(data[:cut])
    with pytest.raises(ValueError, match="payload bytes"):
        decode_masks(data + b"\0")


@pytest.mark.parametrize("codec", CODECS)
def test_corruption_raises(codec: str) -> None:
    masks = blob_masks(frames=3, size=(24, 16))
    data = bytearray(encode_masks(masks, codec))
    for position in range(0, len(data), 3):
        corrupt = bytearray(data)
        corrupt[position] ^= 0x41
        with pytest.raises(ValueError):
            decode_masks(bytes(corrupt))


def _with_header(
    codec: bytes, shape: tuple[int, int, int], payload: bytes, version: int = 1
) -> bytes:
    head = struct.pack("<8sBB", MAGIC, version, len(codec)) + codec
    return head + struct.pack("<IIIQI", *shape, len(payload), zlib.crc32(payload)) + payload


def test_header_validation_messages() -> None:
    good = encode_masks(np.ones((2, 3, 3), dtype=bool), "rle-zlib")
    payload = zlib.compress(np.array([0, 18], dtype="<u4").tobytes())
    np.testing.assert_array_equal(decode_masks(_with_header(b"rle-zlib", (2, 3, 3), payload)), True)
    with pytest.raises(ValueError, match="magic"):
        decode_masks(b"NOTMASKS" + good[8:])
    with pytest.raises(ValueError, match="version"):
        decode_masks(_with_header(b"rle-zlib", (2, 3, 3), payload, version=9))
    with pytest.raises(ValueError, match="unknown mask codec"):
        decode_masks(_with_header(b"pickle", (2, 3, 3), payload))
    with pytest.raises(ValueError, match="too short"):
        decode_masks(b"PVT")
    hostile = _with_header(b"rle-zlib", (2**31, 2**31, 2**31), zlib.compress(b"\0" * 64))
    with pytest.raises(ValueError, match="covers"):
        decode_masks(hostile)
    hostile = _with_header(b"xor-packbits-zlib", (2**31, 2**31, 2**31), zlib.compress(b"\0" * 64))
    with pytest.raises(ValueError, match="expected"):
        decode_masks(hostile)


def _png_bytes(masks: np.ndarray) -> int:
    total = 0
    for frame in masks:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="PNG")
        total += len(buffer.getvalue())
    return total


def test_default_codec_beats_png_on_true_masks(shared_data: Path) -> None:
    masks = np.asarray(make_truth_clip(shared_data).masks)
    png = _png_bytes(masks)
    sizes = {codec: len(encode_masks(masks, codec)) for codec in CODECS}
    print(
        "\nmask bytes / PNG per frame on the truth clip:",
        {k: round(v / png, 3) for k, v in sizes.items()},
    )
    assert sizes[DEFAULT_MASK_CODEC] == min(sizes.values())
    assert sizes[DEFAULT_MASK_CODEC] < 0.3 * png


def test_benchmark_measures_every_codec() -> None:
    rows = measure(blob_masks(frames=4, size=(64, 48)), repeat=1)
    assert [r["codec"] for r in rows] == ["png-per-frame", *MASK_CODECS]
    assert all(r["bytes"] > 0 and r["decode_ms"] > 0 for r in rows)


def test_auto_codec_takes_the_bitmap_for_speckle_and_runs_for_objects() -> None:
    rng = np.random.default_rng(0)
    speckle = rng.random((4, 90, 160)) > 0.5
    blob = np.zeros((4, 90, 160), dtype=bool)
    blob[:, 20:60, 30:90] = True
    assert read_header(encode_masks(speckle))[0] == "xor-packbits-zlib"
    assert read_header(encode_masks(blob))[0] == DEFAULT_MASK_CODEC
    for masks in (speckle, blob):
        assert np.array_equal(decode_masks(encode_masks(masks)), masks)
