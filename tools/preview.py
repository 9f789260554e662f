"""Composition of pair previews: pure functions on RGB uint8 arrays, no I/O.

A preview puts the five things a pair is made of side by side (source | mask
overlay | background | synthesized | target cut-out) so a person can judge a
pair at a glance. Text is drawn with OpenCV's Hershey fonts, which need no font
files. Clips are ``T x H x W x 3`` uint8 arrays, images ``H x W x 3``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

PANEL_NAMES = ("source", "masks", "background", "synthesized", "target")
FONT = cv2.FONT_HERSHEY_SIMPLEX
MASK_COLOUR = (255, 40, 40)


def fit(image: np.ndarray, height: int, width: int, fill: int = 0) -> np.ndarray:
    """``image`` scaled to fit ``height x width`` without distortion, centred on ``fill``."""
    h, w = image.shape[:2]
    scale = min(height / h, width / w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = image if (nh, nw) == (h, w) else cv2.resize(image, (nw, nh), interpolation=interp)
    out = np.full((height, width, *image.shape[2:]), fill, dtype=image.dtype)
    top, left = (height - nh) // 2, (width - nw) // 2
    out[top : top + nh, left : left + nw] = resized
    return out


def fit_clip(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    if frames.shape[1:3] == (height, width):
        return frames
    return np.stack([fit(f, height, width) for f in frames])


def checkerboard(height: int, width: int, cell: int = 8) -> np.ndarray:
    """The usual grey checks that show where a cut-out is transparent."""
    ys, xs = np.indices((height, width))
    light = ((ys // cell + xs // cell) % 2).astype(bool)
    board = np.full((height, width, 3), 160, dtype=np.uint8)
    board[light] = 200
    return board


def cutout_panel(rgba: np.ndarray, height: int, width: int) -> np.ndarray:
    """An RGBA cut-out letterboxed and composited over a checkerboard."""
    if rgba.ndim != 3 or rgba.shape[2] != 4:
        raise ValueError(f"need an RGBA image H x W x 4, got {rgba.shape}")
    placed = fit(rgba, height, width)
    alpha = placed[..., 3:4].astype(np.float32) / 255.0
    mixed = placed[..., :3] * alpha + checkerboard(height, width) * (1.0 - alpha)
    return mixed.round().astype(np.uint8)


def mask_overlay(frames: np.ndarray, masks: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Frames tinted where the mask is set, with the mask's outline drawn over them."""
    if masks.shape != frames.shape[:3]:
        raise ValueError(f"masks {masks.shape} do not match frames {frames.shape[:3]}")
    out = frames.copy()
    colour = np.array(MASK_COLOUR, dtype=np.float32)
    for frame, mask in zip(out, masks, strict=True):
        frame[mask] = (frame[mask] * (1.0 - alpha) + colour * alpha).round().astype(np.uint8)
        contours, _ = cv2.findContours(
            mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
        )
        cv2.drawContours(frame, contours, -1, MASK_COLOUR, 1)
    return out


def unavailable(count: int, height: int, width: int) -> np.ndarray:
    """A grey ``n/a`` panel for media the dataset does not hold."""
    panel = np.full((height, width, 3), 64, dtype=np.uint8)
    scale = _font_scale(height)
    (tw, th), _ = cv2.getTextSize("n/a", FONT, scale, 1)
    org = ((width - tw) // 2, (height + th) // 2)
    cv2.putText(panel, "n/a", org, FONT, scale, (220, 220, 220), 1, cv2.LINE_AA)
    return np.broadcast_to(panel, (count, height, width, 3)).copy()


def label(frames: np.ndarray, text: str) -> np.ndarray:
    """``frames`` with ``text`` in white on a dark box in the top-left corner."""
    out = np.ascontiguousarray(frames).copy()
    height, width = out.shape[1:3]
    scale = _fit_scale(text, _font_scale(height), width - 4)
    (tw, th), base = cv2.getTextSize(text, FONT, scale, 1)
    for frame in out:
        cv2.rectangle(frame, (0, 0), (tw + 6, th + base + 6), (0, 0, 0), cv2.FILLED)
        cv2.putText(frame, text, (3, th + 3), FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def panels(
    source: np.ndarray | None,
    synthesized: np.ndarray,
    *,
    masks: np.ndarray | None = None,
    background: np.ndarray | None = None,
    target: np.ndarray | None = None,
) -> np.ndarray:
    """The five labelled panels side by side, ``T x H x 5W x 3``, ``T = len(synthesized)``.

    Every panel takes the synthesized clip's size; a clip shorter than it holds its
    last frame. ``masks`` (bool ``T x H x W``) are drawn over the source; ``target`` is
    the RGBA cut-out. Missing media (None) becomes an ``n/a`` panel.
    """
    count, height, width = synthesized.shape[:3]

    def timed(clip: np.ndarray) -> np.ndarray:
        return clip[np.minimum(np.arange(count), len(clip) - 1)]

    src = (
        unavailable(count, height, width)
        if source is None
        else fit_clip(timed(source), height, width)
    )
    if masks is None:
        overlay = unavailable(count, height, width)
    else:
        sized = timed(masks)
        if sized.shape[1:] != (height, width):
            sized = np.stack([fit(m.astype(np.uint8), height, width) > 0 for m in sized])
        overlay = mask_overlay(src, sized)
    bg = (
        unavailable(count, height, width)
        if background is None
        else fit_clip(timed(background), height, width)
    )
    cut = (
        unavailable(count, height, width)
        if target is None
        else np.broadcast_to(cutout_panel(target, height, width), (count, height, width, 3))
    )
    columns = [src, overlay, bg, synthesized, cut]
    labelled = [label(c, name) for c, name in zip(columns, PANEL_NAMES, strict=True)]
    return np.concatenate(labelled, axis=2)


def caption_lines(row: Mapping[str, Any]) -> list[str]:
    """The pair's id, difficulty, categories and scores, as the caption shows them."""

    def score(name: str) -> str:
        value = row.get(name)
        return "n/a" if value is None or value != value else f"{value:.2f}"

    verdict = "passed" if row.get("passed") else "rejected"
    return [
        str(row.get("pair_id", "")),
        f"{row.get('difficulty', '?')}: {row.get('source_category', '?')}/"
        f"{row.get('source_subcategory', '?')} -> {row.get('target_category', '?')}/"
        f"{row.get('target_subcategory', '?')}   quality {score('quality_score')} ({verdict})",
        f"identity {score('score_identity')}  temporal {score('score_temporal')}  "
        f"lighting {score('score_lighting')}  overall {score('score_overall')}",
    ]


def caption_strip(width: int, lines: Sequence[str], line_height: int = 18) -> np.ndarray:
    """A black strip ``width`` wide with one line of white text per entry."""
    strip = np.zeros((line_height * len(lines) + 6, width, 3), dtype=np.uint8)
    base_scale = line_height / 36
    for i, text in enumerate(lines):
        scale = _fit_scale(text, base_scale, width - 8)
        y = (i + 1) * line_height
        cv2.putText(strip, text, (4, y), FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return strip


def with_caption(frames: np.ndarray, lines: Sequence[str]) -> np.ndarray:
    """``frames`` with a caption strip below each of them."""
    strip = caption_strip(frames.shape[2], lines)
    under = np.broadcast_to(strip, (len(frames), *strip.shape))
    return np.concatenate([frames, under], axis=1)


def sample_indices(total: int, count: int) -> np.ndarray:
    """``count`` frame indices spread evenly over ``total`` frames, first and last included."""
    if total < 1 or count < 1:
        raise ValueError(f"cannot sample {count} of {total} frames")
    return np.unique(np.linspace(0, total - 1, min(count, total)).round().astype(np.int64))


def contact_sheet(frames: np.ndarray, count: int) -> np.ndarray:
    """``count`` evenly sampled frames of a preview clip stacked as rows of one image."""
    return np.concatenate(list(frames[sample_indices(len(frames), count)]), axis=0)


def grid(clips: Sequence[np.ndarray], columns: int = 1, gap: int = 4) -> np.ndarray:
    """Several preview clips tiled ``columns`` across, rows top to bottom.

    Cells take the largest clip's size (smaller ones are centred on black) and the
    longest clip's length (shorter ones hold their last frame).
    """
    if not clips or columns < 1:
        raise ValueError(f"need at least one clip and one column, got {len(clips)}, {columns}")
    count = max(len(c) for c in clips)
    height = max(c.shape[1] for c in clips)
    width = max(c.shape[2] for c in clips)
    rows = -(-len(clips) // columns)
    out = np.zeros(
        (count, rows * height + (rows - 1) * gap, columns * width + (columns - 1) * gap, 3),
        dtype=np.uint8,
    )
    for n, clip in enumerate(clips):
        top, left = (n // columns) * (height + gap), (n % columns) * (width + gap)
        timed = clip[np.minimum(np.arange(count), len(clip) - 1)]
        out[:, top : top + height, left : left + width] = fit_clip(timed, height, width)
    return out


def pad_even(frames: np.ndarray) -> np.ndarray:
    """Frames padded with black to even height and width, as yuv420p needs."""
    h, w = frames.shape[1:3]
    return np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))


def _font_scale(height: int) -> float:
    return float(np.clip(height / 480, 0.3, 0.8))


def _fit_scale(text: str, scale: float, width: int) -> float:
    """The largest scale up to ``scale`` at which ``text`` fits into ``width`` pixels."""
    text_width = cv2.getTextSize(text, FONT, scale, 1)[0][0]
    return scale if text_width <= width else max(0.2, scale * width / text_width)
