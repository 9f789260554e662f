"""Masks gathered frame by frame with their boxes and encoding worked out on a thread.

The collector must give exactly what the plain way gives (stack the masks, then
``masks_to_boxes`` and ``encode_masks``), whatever order the frames come in, and a failure
on its thread must reach the caller instead of vanishing with the thread.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pvtt.builder.backends import mask_collector  # noqa: E402
from pvtt.builder.backends.mask_collector import MaskCollector  # noqa: E402
from pvtt.builder.boxes import masks_to_boxes  # noqa: E402
from pvtt.schemas.masks import (  # noqa: E402
    MASK_CODECS,
    decode_masks,
    encode_masks,
    frame_changes,
    read_header,
)


def _blob(count: int = 6, height: int = 20, width: int = 30) -> np.ndarray:
    """A disc moving across the frame, empty on frame 2 (if there is one)."""
    ys, xs = np.mgrid[0:height, 0:width]
    masks = np.stack([(xs - 5 - 3 * t) ** 2 + (ys - 10) ** 2 <= 25 for t in range(count)])
    masks[2:3] = False
    return masks


def _cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    edges = np.zeros((4, 3, 5), dtype=bool)
    edges[0, -1, -1] = True  # a run crossing from frame 0 into frame 1
    edges[1, 0, 0] = True
    edges[3, 0, 0] = True  # a change exactly at the start of frame 3
    return {
        "blob": _blob(),
        "speckle": rng.random((5, 16, 16)) < 0.5,
        "all true": np.ones((3, 4, 4), dtype=bool),
        "all false": np.zeros((3, 4, 4), dtype=bool),
        "edges": edges,
        "one frame": _blob(1),
        "one pixel": np.ones((2, 1, 1), dtype=bool),
    }


@pytest.mark.parametrize("name", list(_cases()))
@pytest.mark.parametrize("codec", ["auto", *MASK_CODECS])
def test_frame_changes_give_the_same_bytes(name: str, codec: str) -> None:
    masks = _cases()[name]
    changes = [frame_changes(frame) for frame in masks]
    data = encode_masks(masks, codec, changes=changes)
    assert data == encode_masks(masks, codec)
    np.testing.assert_array_equal(decode_masks(data), masks)


def test_frame_changes_must_cover_every_frame() -> None:
    masks = _blob()
    with pytest.raises(ValueError, match="changes of 5 frames given for 6 mask frames"):
        encode_masks(masks, changes=[frame_changes(f) for f in masks[:5]])


def _logits(masks: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.where(masks, 4.0, -4.0).astype(np.float32))


def _collect(masks: np.ndarray, order: list[int]) -> tuple[np.ndarray, np.ndarray, bytes]:
    logits = _logits(masks)
    with MaskCollector(*masks.shape, torch.device("cpu")) as collector:
        for t in order:
            collector.put(t, logits[t])
        return collector.finish()


def test_any_order_gives_what_the_plain_way_gives() -> None:
    masks = _blob()
    # SAM2's order from a prompt on frame 3: forwards, then backwards from 3 again
    got, boxes, data = _collect(masks, [3, 4, 5, 3, 2, 1, 0])
    np.testing.assert_array_equal(got, masks)
    np.testing.assert_array_equal(boxes, masks_to_boxes(masks))
    assert np.isnan(boxes[2]).all()
    assert data == encode_masks(masks)


def test_speckle_stops_gathering_changes_and_still_encodes_the_same() -> None:
    masks = np.random.default_rng(1).random((4, 32, 32)) < 0.5
    logits = _logits(masks)
    with MaskCollector(*masks.shape, torch.device("cpu")) as collector:
        for t in range(4):
            collector.put(t, logits[t])
        got, _, data = collector.finish()
        assert collector.changes is None  # past the point where the runs would pay
    np.testing.assert_array_equal(got, masks)
    assert data == encode_masks(masks) and read_header(data)[0] == "xor-packbits-zlib"


def test_a_skipped_frame_is_an_error() -> None:
    with pytest.raises(RuntimeError, match=r"skipped frames \[1\]"):
        _collect(_blob(3), [0, 2])


def _threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "pvtt-masks"]


def test_an_error_on_the_thread_reaches_the_caller(monkeypatch) -> None:
    calls = []

    def failing(frame: np.ndarray) -> np.ndarray:
        calls.append(1)
        if len(calls) == 2:
            raise MemoryError("no room for the runs")
        return frame_changes(frame)

    monkeypatch.setattr(mask_collector, "frame_changes", failing)
    with pytest.raises(MemoryError, match="no room for the runs"):
        _collect(_blob(), list(range(6)))
    assert _threads() == []
