"""Sets, camera moves and photos for the rehearsal catalog.

A shot of an Etsy product video is a product on a textured set (a wooden table,
marble, linen, tiles, a blurred room) filmed by a moving camera (a pan, a tilt, a
push in or pull out, an arc, a hand-held drift) while the product turns a little.
Consecutive shots change set, light and colour grade at once, so they meet in a
hard cut that shot detection finds. Everything is drawn once per shot at the set's
resolution and each frame is one camera warp plus the product's own warp, so 720p
frames stream to the encoder at a few milliseconds each and a whole video never sits
in memory.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from pvtt.builder.rehearsal_shapes import Look, render_product
from pvtt.builder.video import h264_encoder

SETS = ("wood", "marble", "linen", "tiles", "bokeh", "concrete")
MOVES = ("pan", "tilt", "push", "pull", "arc", "handheld")
MARGIN = 1.4
"""The set is this much larger than the frame, so the camera has room to move."""


def _noise(rng: np.random.Generator, shape: tuple[int, int], cell: float, channels: int = 1) -> np.ndarray:
    """Smooth value noise in 0..1 with features about ``cell`` pixels wide."""
    h, w = shape
    grid = rng.random((max(2, int(h / cell) + 2), max(2, int(w / cell) + 2), channels)).astype(np.float32)
    out = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(out.reshape(h, w, channels), 0, 1)


def _fractal(rng: np.random.Generator, shape: tuple[int, int], cell: float, octaves: int = 4) -> np.ndarray:
    total = np.zeros((*shape, 1), np.float32)
    weight = 0.0
    for k in range(octaves):
        amp = 0.5**k
        total += amp * _noise(rng, shape, max(2.0, cell / 2**k))
        weight += amp
    return total / weight


def _tint(rng: np.random.Generator, lo: int, hi: int, saturation: float) -> np.ndarray:
    hue = rng.uniform(0, 180)
    hsv = np.uint8([[[hue, saturation * 255, rng.uniform(lo, hi)]]])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def make_set(kind: str, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A textured set of ``kind`` (one of :data:`SETS`), RGB uint8 of ``shape`` (h, w)."""
    h, w = shape
    unit = h / 720.0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == "wood":
        tone = np.array([rng.uniform(120, 190), rng.uniform(80, 120), rng.uniform(45, 75)], np.float32)
        plank = max(8, int(rng.uniform(90, 150) * unit))
        row = (yy // plank).astype(np.int32)
        shade = np.asarray(rng.uniform(0.8, 1.1, row.max() + 1), np.float32)[row]
        warp = _fractal(rng, shape, 120 * unit)[..., 0] * 18
        grain = 0.85 + 0.15 * np.sin((yy + warp * 6) / (3.2 * unit) + xx / (400 * unit))
        seam = np.where((yy % plank) < max(1, 2 * unit), 0.55, 1.0)
        img = tone * (shade * grain * seam)[..., None]
    elif kind == "marble":
        base = _tint(rng, 200, 240, 0.08)
        turb = _fractal(rng, shape, 220 * unit, 5)[..., 0]
        veins = np.abs(np.sin((xx * 0.7 + yy) / (90 * unit) + turb * 9))
        img = base * (0.72 + 0.28 * veins ** 0.35)[..., None]
    elif kind == "linen":
        base = _tint(rng, 150, 220, 0.25)
        weave = 0.93 + 0.07 * np.sin(xx / (1.3 * unit)) * np.sin(yy / (1.3 * unit))
        fibres = cv2.GaussianBlur(rng.random(shape).astype(np.float32), (0, 0), sigmaX=6 * unit, sigmaY=0.6)
        mottle = _noise(rng, shape, 160 * unit)[..., 0]
        img = base * (weave * (0.85 + 0.6 * (fibres - 0.5)) * (0.9 + 0.2 * mottle))[..., None]
    elif kind == "tiles":
        base = _tint(rng, 160, 235, 0.35)
        size = max(8, int(rng.uniform(90, 160) * unit))
        cells = (yy // size) * 1000 + (xx // size)
        jitter = np.asarray(rng.uniform(0.88, 1.08, int(cells.max()) + 1), np.float32)[cells.astype(np.int32)]
        grout = np.where(((yy % size) < 4 * unit) | ((xx % size) < 4 * unit), 0.6, 1.0)
        img = base * (jitter * grout * (0.92 + 0.16 * _noise(rng, shape, 30 * unit)[..., 0]))[..., None]
    elif kind == "bokeh":
        img = (_noise(rng, shape, 260 * unit, 3) * 110 + 20) * np.array([1.0, 0.9, 0.8], np.float32)
        lights = np.zeros((h, w, 3), np.float32)
        for _ in range(int(60 * rng.uniform(0.6, 1.4))):
            c = _tint(rng, 200, 255, 0.5)
            r = int(rng.uniform(12, 45) * unit) + 1
            cv2.circle(lights, (int(rng.uniform(0, w)), int(rng.uniform(0, h))), r, c.tolist(), -1)
        img = img + 0.45 * cv2.GaussianBlur(lights, (0, 0), 6 * unit + 0.5)
    elif kind == "concrete":
        base = _tint(rng, 120, 190, 0.05)
        grit = _fractal(rng, shape, 80 * unit, 5)[..., 0]
        specks = (rng.random(shape) > 0.995).astype(np.float32)
        img = base * (0.75 + 0.45 * grit - 0.3 * specks)[..., None]
    else:
        raise ValueError(f"unknown set {kind!r}; expected one of {', '.join(SETS)}")
    light = 0.85 + 0.25 * _noise(rng, shape, 500 * unit)  # uneven studio light across the set
    return np.clip(img * light, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Camera:
    """Where the camera looks on the set: centre (set pixels), zoom (>= 1), roll (degrees)."""

    x: float
    y: float
    zoom: float
    roll: float

    def matrix(self, frame: tuple[int, int]) -> np.ndarray:
        """The 2x3 affine map from set pixels to frame pixels."""
        w, h = frame
        m = cv2.getRotationMatrix2D((self.x, self.y), self.roll, self.zoom)
        m[:, 2] += (w / 2 - self.x, h / 2 - self.y)
        return m


def _move(kind: str, rng: np.random.Generator, set_size: tuple[int, int], frame: tuple[int, int]) -> tuple[Camera, Camera]:
    """The camera at the start and the end of a shot making move ``kind``."""
    sw, sh = set_size
    fw, fh = frame
    cx, cy = sw / 2, sh / 2
    room_x, room_y = (sw - fw) / 2 * 0.7, (sh - fh) / 2 * 0.7
    z = rng.uniform(1.05, 1.15)
    if kind == "pan":
        d = rng.choice((-1, 1)) * room_x * rng.uniform(0.6, 1.0)
        return Camera(cx - d, cy, z, 0), Camera(cx + d, cy, z, 0)
    if kind == "tilt":
        d = rng.choice((-1, 1)) * room_y * rng.uniform(0.6, 1.0)
        return Camera(cx, cy - d, z, 0), Camera(cx, cy + d, z, 0)
    if kind == "push":
        return Camera(cx, cy, 1.02, 0), Camera(cx, cy, rng.uniform(1.25, 1.35), 0)
    if kind == "pull":
        return Camera(cx, cy, rng.uniform(1.25, 1.35), 0), Camera(cx, cy, 1.02, 0)
    if kind == "arc":
        d = rng.choice((-1, 1))
        return Camera(cx - d * room_x * 0.5, cy, z + 0.05, -3 * d), Camera(cx + d * room_x * 0.5, cy, z + 0.05, 3 * d)
    return Camera(cx, cy, z + 0.05, 0), Camera(cx + room_x * 0.15, cy + room_y * 0.1, z + 0.08, 1)


@dataclass(frozen=True)
class Grade:
    """One shot's light: direction onto the product, colour balance and exposure."""

    light: tuple[float, float, float]
    balance: tuple[float, float, float]
    vignette: float

    @classmethod
    def random(cls, rng: np.random.Generator) -> Grade:
        light = (rng.uniform(-0.8, 0.8), rng.uniform(-0.9, -0.2), rng.uniform(0.5, 0.8))
        warmth = rng.uniform(-0.07, 0.07)
        exposure = rng.uniform(0.92, 1.08)
        balance = (exposure * (1 + warmth), exposure, exposure * (1 - warmth))
        return cls(light, balance, rng.uniform(0.15, 0.35))

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        return np.clip(rgb.astype(np.float32) * np.array(self.balance, np.float32), 0, 255).astype(np.uint8)


def _vignette(frame: tuple[int, int], strength: float) -> np.ndarray:
    w, h = frame
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2
    v = np.clip(1 - strength * 0.5 * r2, 0, 1)
    return np.repeat((v * 255).astype(np.uint8)[..., None], 3, axis=2)


def _cast_shadow(backdrop: np.ndarray, alpha: np.ndarray, x: int, y: int, light: tuple[float, float, float]) -> None:
    """Darken float ``backdrop`` in place with the soft shadow of a sprite placed at (x, y).

    The shadow falls away from the light and is drawn on a padded canvas, so its blur
    is not cut off at the sprite's edge.
    """
    size = alpha.shape[0]
    pad = size // 4
    shift = np.float32([[1, 0, pad - light[0] * size * 0.06], [0, 0.96, pad + size * 0.06 - light[1] * size * 0.03]])
    shadow = cv2.GaussianBlur(cv2.warpAffine(alpha, shift, (size + 2 * pad, size + 2 * pad)), (0, 0), size * 0.035 + 1)
    h, w = backdrop.shape[:2]
    x0, y0 = x - pad, y - pad
    sx0, sy0 = max(0, -x0), max(0, -y0)
    x0, y0 = max(0, x0), max(0, y0)
    x1, y1 = min(w, x - pad + shadow.shape[1]), min(h, y - pad + shadow.shape[0])
    if x1 > x0 and y1 > y0:
        backdrop[y0:y1, x0:x1] *= 1 - 0.55 * shadow[sy0 : sy0 + y1 - y0, sx0 : sx0 + x1 - x0, None]


def _paste(frame: np.ndarray, rgb: np.ndarray, alpha: np.ndarray, m: np.ndarray) -> tuple[int, int, int, int] | None:
    """Warp a sprite by ``m`` onto ``frame`` in place; its box where alpha > 0.5, if visible."""
    h, w = frame.shape[:2]
    s = rgb.shape[0]
    corners = np.array([[0, 0, 1], [s, 0, 1], [0, s, 1], [s, s, 1]], np.float32) @ m.T
    x0, y0 = np.floor(corners.min(axis=0)).astype(int)
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 <= x0 or y1 <= y0:
        return None
    local = m.copy()
    local[:, 2] -= (x0, y0)
    size = (x1 - x0, y1 - y0)
    fg = cv2.warpAffine(rgb, local, size, flags=cv2.INTER_LINEAR)
    a = cv2.warpAffine(alpha, local, size, flags=cv2.INTER_LINEAR)[..., None]
    roi = frame[y0:y1, x0:x1]
    roi[:] = (roi * (1 - a) + fg * a).astype(np.uint8)
    ys, xs = np.nonzero(a[..., 0] > 0.5)
    if not len(xs):
        return None
    return x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1


@dataclass(frozen=True)
class ShotPlan:
    """One shot of a product video: how long, on which set, with which move and view."""

    frames: int
    set_kind: str
    move: str
    turn: float
    size: float
    """The product's height as a share of the frame height."""
    seed: int


def render_shot(look: Look, plan: ShotPlan, frame: tuple[int, int]) -> Iterator[tuple[np.ndarray, tuple[int, int, int, int] | None]]:
    """The shot's frames (RGB uint8, ``frame`` = (w, h)) with the product's box on each."""
    rng = np.random.default_rng(plan.seed)
    fw, fh = frame
    set_size = (int(fw * MARGIN) // 2 * 2, int(fh * MARGIN) // 2 * 2)
    grade = Grade.random(rng)
    backdrop = make_set(plan.set_kind, rng, (set_size[1], set_size[0])).astype(np.float32)
    start, end = _move(plan.move, rng, set_size, frame)
    sprite_size = max(16, int(plan.size * fh / min(start.zoom, end.zoom)))
    rgb, alpha = render_product(look, sprite_size, light=grade.light, turn=plan.turn, angle=float(rng.uniform(-8, 8)))
    # the product sits where the camera looks halfway through, a little off centre
    px = (start.x + end.x) / 2 + rng.uniform(-0.08, 0.08) * fw - sprite_size / 2
    py = (start.y + end.y) / 2 + rng.uniform(-0.04, 0.04) * fh - sprite_size / 2
    _cast_shadow(backdrop, alpha, int(px), int(py), grade.light)
    backdrop = grade.apply(backdrop)
    rgb = grade.apply(rgb)
    vignette = _vignette(frame, grade.vignette)
    spin, sway = rng.uniform(-6, 6), rng.uniform(0, 2 * math.pi)
    shake = rng.uniform(0.5, 1.5) * fh / 720.0 * (3 if plan.move == "handheld" else 1)
    for t in range(plan.frames):
        s = t / max(plan.frames - 1, 1)
        e = s * s * (3 - 2 * s)  # ease in and out
        cam = Camera(
            start.x + (end.x - start.x) * e + shake * math.sin(2.1 * t / 24 + sway),
            start.y + (end.y - start.y) * e + shake * math.cos(1.7 * t / 24),
            start.zoom + (end.zoom - start.zoom) * e,
            start.roll + (end.roll - start.roll) * e,
        )
        m = cam.matrix(frame)
        out = cv2.warpAffine(backdrop, m, frame, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        c = sprite_size / 2
        obj = cv2.getRotationMatrix2D((c, c), spin * math.sin(math.pi * s), 1.0)
        obj[:, 2] += (px, py + 0.01 * fh * math.sin(2 * math.pi * s + sway))
        m3 = np.vstack([m, [0, 0, 1]]) @ np.vstack([obj, [0, 0, 1]])
        box = _paste(out, rgb, alpha, m3[:2])
        yield cv2.multiply(out, vignette, scale=1 / 255), box


def render_photo(look: Look, rng: np.random.Generator, size: tuple[int, int], kind: str) -> np.ndarray:
    """A product photo, RGB uint8 of ``size`` (w, h).

    ``kind``: ``plain`` (the main listing photo: light seamless backdrop), ``colour``
    (a pastel backdrop), ``detail`` (a close crop, other angle) or ``lifestyle`` (the
    product on a textured set, as sellers also photograph it).
    """
    w, h = size
    if kind == "lifestyle":
        backdrop = make_set(str(rng.choice(SETS[:4])), rng, (h, w)).astype(np.float32)
    else:
        top = _tint(rng, 235, 252, 0.04 if kind != "colour" else 0.22)
        ramp = np.linspace(1.0, 0.9, h, dtype=np.float32)[:, None, None]
        backdrop = np.broadcast_to(top * ramp, (h, w, 3)).copy()
    share = {"plain": 0.78, "colour": 0.7, "detail": 0.95, "lifestyle": 0.6}[kind]
    sprite_size = int(min(w, h) * share)
    light = (rng.uniform(-0.6, 0.6), rng.uniform(-0.8, -0.3), 0.7)
    rgb, alpha = render_product(look, sprite_size, light=light, turn=float(rng.uniform(-0.6, 0.6)), angle=float(rng.uniform(-12, 12)))
    x0 = (w - sprite_size) // 2 + int(rng.uniform(-0.05, 0.05) * w)
    y0 = (h - sprite_size) // 2 + int(rng.uniform(-0.03, 0.03) * h)
    _cast_shadow(backdrop, alpha, x0, y0, light)
    m = np.float32([[1, 0, x0], [0, 1, y0]])
    photo = np.clip(backdrop, 0, 255).astype(np.uint8)
    _paste(photo, rgb, alpha, m)
    return photo


@contextmanager
def mp4_writer(path: str | os.PathLike, frame: tuple[int, int], fps: float, crf: int = 20) -> Iterator:
    """A ``write(rgb)`` callable encoding H.264 frame by frame; the file appears when done.

    :func:`pvtt.builder.video.write_mp4` takes a whole clip as one array; a multi-shot
    720p video would need gigabytes that way, so the rehearsal streams instead.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    rate = Fraction(fps).limit_denominator(1001)
    codec = h264_encoder()
    options = {"crf": str(crf), "preset": "veryfast"} if codec == "libx264" else {}
    try:
        with av.open(tmp, "w", format="mp4") as out:
            stream = out.add_stream(codec, rate=rate, options=options)
            stream.width, stream.height = frame
            stream.pix_fmt = "yuv420p"
            count = 0

            def write(rgb: np.ndarray) -> None:
                nonlocal count
                image = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
                image.pts, image.time_base = count, 1 / rate
                count += 1
                out.mux(stream.encode(image))

            yield write
            out.mux(stream.encode(None))
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
