"""Pairs whose every answer is known: the truth of the pair fidelity benchmark.

A case is a source clip and a target product photo, both composed from layers, so that
the benchmark can judge every stage of the build against the exact answer:

- the clip is real background (real footage, or a real photo filmed by a synthetic camera
  that pans, zooms or shakes) with a product pasted along a known path: its **true
  masks** are the pasted alpha, its **true clean plate** is the background alone;
- the photo is a product on a plain or near-plain studio background (gradient, texture,
  contact shadow): its **true alpha** is the pasted alpha, its **true cut-out** the
  product layer itself.

Products are real cut-outs with real alpha (``rembg/car-*.out.png``) or drawn ones with
exact alpha (drawn 4x larger and area-averaged): thin rings, chains of links, shapes with
holes, solid shapes; shaded, highlighted and lightly textured like real objects.

Every frame is ``round(layer + (1 - alpha) * plate)`` with the product layer premultiplied
(:func:`composite`), so compositing the truth reproduces the clip exactly. An occluder
passing in front of the product belongs to the plate (the scene without the product), and
the product layer is cut by it; motion blur is the average of sub-frame layers.

Families cover what breaks segmenters, inpainters and matters (:data:`FAMILIES`); each
case is drawn from ``(family, seed)`` alone. Seeds with ``seed % 5 == 0`` are the
**held-out split** (reported); the others are the **tuning split** (for calibrating
thresholds). Nothing here depends on the pipeline; ``tests/truth.py`` shares
:func:`premultiplied_rgba` and :func:`composite`.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from pvtt.builder.boxes import masks_to_boxes
from pvtt.builder.illuminant import light_gains, relight
from pvtt.builder.stages.cutout import placement_matrix, trim_to_alpha
from pvtt.builder.video import read_frames

SIZE = (384, 216)
"""Default clip size (width, height)."""
FRAMES = 40
"""Default clip length in frames."""
PHOTO_SIZE = 320
"""Default long side of a product photo, in pixels."""
PHOTO_FPS = 24.0
"""Frame rate of clips filmed from a still photo (footage keeps its own)."""
REF = 480
"""Long side, in pixels, at which products are drawn and stored before placement."""
SUPERSAMPLE = 4
"""Drawn shapes are rasterised this many times larger, then area-averaged: exact soft alpha."""
HELD_OUT_EVERY = 5
"""Seeds divisible by this are held out of tuning: ``seed % 5 == 0`` is the reported split."""
SPLITS = ("held-out", "tuning")

FAMILIES = (
    "baseline",
    "ring",
    "chain",
    "holed",
    "low-contrast",
    "textured",
    "light-on-light",
    "occlusion",
    "fast-motion",
    "scale-change",
    "frame-edge",
    "relit",
)
"""What each family stresses: ``baseline`` a solid product at moderate motion (control);
``ring``, ``chain`` thin products; ``holed`` shapes with holes (mug handle, key fob, bead,
frame); ``low-contrast`` a product coloured like the background under it (and a target
photographed on a similar colour); ``textured`` high-frequency backgrounds (shelves,
reflections, gravel); ``light-on-light`` a light product over the lightest band of a light
scene (and a light target on white); ``occlusion`` an arm or stick passing in front of the
product; ``fast-motion`` 20-30 px/frame with motion blur; ``scale-change`` 2-3x growth or
shrink; ``frame-edge`` a product cut by the frame's edge; ``relit`` a scene filmed under a coloured,
dimmed or brightened light (the product in it too), while the target photo stays under
the studio's white light: the lighting score's test."""


def split_of(seed: int) -> str:
    """``"held-out"`` for seeds divisible by :data:`HELD_OUT_EVERY`, else ``"tuning"``."""
    return "held-out" if seed % HELD_OUT_EVERY == 0 else "tuning"


@dataclass(frozen=True)
class CaseSpec:
    """One case: a family and a seed; everything else is drawn from them."""

    family: str
    seed: int

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"unknown case family {self.family!r}; known: {', '.join(FAMILIES)}")

    @property
    def case_id(self) -> str:
        return f"{self.family}-{self.seed:03d}"

    @property
    def split(self) -> str:
        return split_of(self.seed)

    def rng(self) -> np.random.Generator:
        return np.random.default_rng([zlib.crc32(self.family.encode()), self.seed])


def case_specs(
    seeds: int = 20, split: str = "held-out", families: tuple[str, ...] = FAMILIES
) -> list[CaseSpec]:
    """Every case of ``families`` with seeds ``0..seeds-1`` in ``split`` (or ``"all"``)."""
    if split not in (*SPLITS, "all"):
        raise ValueError(f"split must be one of {', '.join(SPLITS)} or all, not {split!r}")
    return [
        CaseSpec(family, seed)
        for seed in range(seeds)
        for family in families
        if split == "all" or split_of(seed) == split
    ]


# -- layers -------------------------------------------------------------------------------


def premultiplied_rgba(rgba: np.ndarray) -> np.ndarray:
    """Colour times alpha, and alpha, both in 0..255: the layer format that resamples cleanly.

    Resampling premultiplied colour keeps the arbitrary colour of transparent pixels from
    bleeding into the edge. ``rgba`` is straight (not premultiplied), uint8 or float.
    """
    colour = rgba[..., :3].astype(np.float32) * (rgba[..., 3:] / 255.0)
    return np.dstack([colour, rgba[..., 3:].astype(np.float32)])


def composite(plate: np.ndarray, layer: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``round(layer + (1 - alpha) * plate)`` as uint8, and alpha in [0, 1].

    ``layer`` is premultiplied RGBA in 0..255 (:func:`premultiplied_rgba`) at the plate's
    size; the arithmetic keeps the layer's float type.
    """
    alpha = layer[..., 3:] / 255.0
    blended = layer[..., :3] + plate.astype(np.float32) * (1.0 - alpha)
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8), alpha[..., 0]


def straight_rgba(layer: np.ndarray) -> np.ndarray:
    """The uint8 straight RGBA of a premultiplied layer (a cut-out, as a matter returns)."""
    alpha = layer[..., 3]
    colour = layer[..., :3] * (255.0 / np.maximum(alpha, 1e-6))[..., None]
    colour[alpha <= 0] = 0
    out = np.dstack([colour, alpha])
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def place(layer: np.ndarray, scale: float, angle: float, centre: tuple[float, float],
          size: tuple[int, int]) -> np.ndarray:
    """``layer`` scaled by ``scale``, rotated by ``angle`` degrees and centred on ``centre``,
    on a transparent ``size = (width, height)`` canvas.

    Shrinking is area-averaged first (a linear warp alone would break thin chains into
    dots), then the warp places it with sub-pixel accuracy.
    """
    h, w = layer.shape[:2]
    if scale < 1.0:
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        layer = cv2.resize(layer, (nw, nh), interpolation=cv2.INTER_AREA)
        sx, sy = scale * w / nw, scale * h / nh
    else:
        nw, nh, sx, sy = w, h, scale, scale
    theta = np.deg2rad(angle)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    linear = rot @ np.diag([sx, sy])
    src_centre = np.array([(nw - 1) / 2, (nh - 1) / 2])
    offset = np.asarray(centre, np.float64) - 0.5 - linear @ src_centre
    matrix = np.hstack([linear, offset[:, None]])
    return cv2.warpAffine(layer, matrix, size, flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


# -- the truth ------------------------------------------------------------------------


@dataclass(frozen=True)
class Product:
    """A product layer with what a catalog row would say about it."""

    name: str
    category: str
    subcategory: str
    prompt: str
    layer: np.ndarray
    """Premultiplied RGBA (0..255, float32) trimmed to the product, long side :data:`REF`."""
    light: bool = False
    origin: str | None = None
    """The photo a real cut-out was cut from (never used as its clip's background)."""


@dataclass(frozen=True)
class TruthClip:
    """A source clip and its exact answers."""

    frames: np.ndarray
    """The clip, ``T x H x W x 3`` uint8: ``composite(plate, layer)`` frame by frame."""
    plate: np.ndarray
    """The true clean plate ``T x H x W x 3`` uint8: the scene without the product."""
    layer: np.ndarray
    """The product as seen, premultiplied RGBA ``T x H x W x 4`` float32 (0..255)."""
    fps: float
    light: np.ndarray = field(default_factory=lambda: np.ones(3, np.float32))
    """The scene's light relative to the studio's (per-channel linear gains): what a
    perfect inserter puts on the target; ones except in the ``relit`` family."""

    @property
    def alpha(self) -> np.ndarray:
        """The product's true coverage per pixel, ``T x H x W`` in [0, 1]."""
        return self.layer[..., 3] / 255.0

    @property
    def masks(self) -> np.ndarray:
        """True masks, ``T x H x W`` bool: coverage >= 0.5."""
        return self.layer[..., 3] >= 127.5

    @property
    def boxes(self) -> np.ndarray:
        """True boxes, ``T x 4`` float32, tight around :attr:`masks` (``nan`` where empty)."""
        return masks_to_boxes(self.masks)


@dataclass(frozen=True)
class TruthPhoto:
    """A product photo and its exact answers."""

    image: np.ndarray
    """The photo, ``H x W x 3`` uint8: ``composite(background, layer)``."""
    background: np.ndarray
    """The studio background alone, ``H x W x 3`` float32 (contact shadow included)."""
    layer: np.ndarray
    """The product as placed, premultiplied RGBA ``H x W x 4`` float32 (0..255)."""
    alpha: np.ndarray
    """The product's true coverage, ``H x W`` float32 in [0, 1]."""
    cutout: np.ndarray
    """The true cut-out: straight RGBA uint8 trimmed to its alpha (what a perfect matter
    returns, trimmed as the build trims it)."""


@dataclass(frozen=True)
class TruthCase:
    spec: CaseSpec
    clip: TruthClip
    photo: TruthPhoto
    source: Product
    target: Product
    notes: dict[str, object] = field(default_factory=dict)
    """How the case was drawn (scene, camera, product kinds, motion), for reports."""


# -- drawn products -------------------------------------------------------------------

_METALS = ((212, 175, 75), (190, 192, 200), (200, 150, 130), (60, 60, 66), (150, 160, 180))
_LIGHT = ((238, 236, 230), (244, 244, 246), (232, 228, 220), (226, 232, 236))


def _canvas(aspect: float) -> tuple[np.ndarray, int, int]:
    """A blank supersampled mask canvas for a product ``aspect = w / h``; returns it and w, h."""
    if aspect >= 1:
        w, h = REF, max(8, round(REF / aspect))
    else:
        w, h = max(8, round(REF * aspect)), REF
    return np.zeros((h * SUPERSAMPLE, w * SUPERSAMPLE), np.uint8), w, h


def _pt(x: float, y: float) -> tuple[int, int]:
    """A supersampled point from fractions of the product's (super) canvas, in 1/16 px."""
    return (round(x * 16), round(y * 16))


def _alpha(mask: np.ndarray) -> np.ndarray:
    """The supersampled 0/255 mask area-averaged down: exact coverage in [0, 1]."""
    h, w = mask.shape[0] // SUPERSAMPLE, mask.shape[1] // SUPERSAMPLE
    return cv2.resize(mask.astype(np.float32) / 255.0, (w, h), interpolation=cv2.INTER_AREA)


def _paint(shape: tuple[int, int], rng: np.random.Generator, base: tuple[int, int, int],
           metal: bool, texture: float = 7.0, gradient: float = 0.18) -> np.ndarray:
    """Straight RGB float32 of a product surface: base colour, gradient, highlight, grain,
    and (not on metal) a print half the time: a label with text-like strokes, stripes or dots.

    Real products are shaded, catch the light and carry prints and logos; a flat colour
    would leave a tracker no corners (and real products seldom do). The grain is coarse
    enough (1 % of the product) to survive shrinking the product into a clip.
    """
    h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    nx, ny = 2 * x / max(w - 1, 1) - 1, 2 * y / max(h - 1, 1) - 1
    phi = rng.uniform(0, 2 * np.pi)
    shade = 1.0 + gradient * (nx * np.cos(phi) + ny * np.sin(phi))
    if metal:
        psi = rng.uniform(0, np.pi)
        cycles = rng.uniform(2.5, 5.0)
        shade = shade + 0.22 * np.sin(np.pi * cycles * (nx * np.cos(psi) + ny * np.sin(psi)))
    hx, hy = rng.uniform(-0.5, 0.5, 2)
    highlight = np.exp(-((nx - hx) ** 2 + (ny - hy) ** 2) / (2 * 0.25**2)) * (0.5 if metal else 0.3)
    colour = np.asarray(base, np.float32) * shade[..., None]
    if not metal and rng.random() < 0.5:
        _print(colour, rng, np.asarray(base, np.float32))
    colour = colour + highlight[..., None] * (255.0 - colour)
    grain = rng.normal(0, 1, (h, w)).astype(np.float32)
    grain = cv2.GaussianBlur(grain, (0, 0), 0.01 * max(h, w))
    grain *= texture / max(float(grain.std()), 1e-6)
    return np.clip(colour + grain[..., None], 0, 255)


def _print(colour: np.ndarray, rng: np.random.Generator, base: np.ndarray) -> None:
    """Draw a print on a product surface in place: a label, stripes or dots."""
    h, w = colour.shape[:2]
    ink = np.clip(base * rng.uniform(0.2, 0.5) if base.mean() > 110 else base + rng.uniform(90, 150),
                  0, 255)
    kind = ("label", "stripes", "dots")[rng.integers(3)]
    if kind == "label":
        top, bottom = sorted(rng.uniform(0.3, 0.7, 2) * h)
        bottom = max(bottom, top + 0.15 * h)
        paper = np.clip(base + rng.uniform(60, 120), 0, 255) if base.mean() < 150 else base * 0.75
        colour[int(top) : int(bottom)] = paper
        for _ in range(int(rng.integers(3, 8))):
            x0 = rng.uniform(0.1, 0.8) * w
            yy = rng.uniform(top + 0.2 * (bottom - top), bottom - 0.2 * (bottom - top))
            cv2.line(colour, (int(x0), int(yy)), (int(x0 + rng.uniform(0.05, 0.2) * w), int(yy)),
                     ink.tolist(), max(1, int(0.02 * h)))
    elif kind == "stripes":
        period = rng.uniform(0.08, 0.2) * max(h, w)
        angle = rng.uniform(0, np.pi)
        y, x = np.mgrid[0:h, 0:w]
        on = np.sin(2 * np.pi * (x * np.cos(angle) + y * np.sin(angle)) / period) > 0.3
        colour[on] = 0.6 * colour[on] + 0.4 * ink
    else:
        for _ in range(int(rng.integers(5, 13))):
            centre = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
            cv2.circle(colour, centre, int(rng.uniform(0.03, 0.08) * max(h, w)), ink.tolist(), -1)


def _finish(mask: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Premultiplied RGBA of a drawn product, trimmed to its coverage."""
    alpha = _alpha(mask)
    layer = np.dstack([colour * alpha[..., None], alpha * 255.0]).astype(np.float32)
    ys, xs = np.nonzero(alpha > 0)
    return np.ascontiguousarray(layer[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])


def _colour(rng: np.random.Generator, tone: str) -> tuple[tuple[int, int, int], bool]:
    """A product's base colour for ``tone`` (light, dark, metal, any) and whether it is light."""
    if tone == "light":
        return _LIGHT[rng.integers(len(_LIGHT))], True
    if tone == "metal":
        base = _METALS[rng.integers(len(_METALS))]
        return base, sum(base) > 540
    if tone == "dark":
        return tuple(int(v) for v in rng.integers(20, 70, 3)), False
    hsv = np.uint8([[[rng.integers(0, 180), rng.integers(120, 230), rng.integers(110, 230)]]])
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]
    return (int(rgb[0]), int(rgb[1]), int(rgb[2])), False


def draw_ring(rng: np.random.Generator, tone: str = "metal") -> Product:
    """A thin ring seen a little from the side, sometimes with a stone."""
    squash = rng.uniform(0.7, 1.0)
    mask, w, h = _canvas(1.0 / squash if squash < 1 else 1.0)
    s = SUPERSAMPLE
    thickness = rng.uniform(0.05, 0.11)
    cx, cy = mask.shape[1] / 2, mask.shape[0] / 2
    ax, ay = mask.shape[1] / 2 * (1 - thickness), mask.shape[0] / 2 * (1 - thickness)
    gem = rng.random() < 0.5
    if gem:
        ay *= 0.82
        cy += mask.shape[0] * 0.09
    cv2.ellipse(mask, _pt(cx, cy), _pt(ax, ay), 0, 0, 360, 255,
                max(1, round(thickness * REF * s)), cv2.LINE_8, 4)
    base, light = _colour(rng, tone)
    colour = _paint((h, w), rng, base, metal=True)
    if gem:
        gem_mask = np.zeros_like(mask)
        radius = thickness * REF * s * 1.5
        cv2.circle(gem_mask, _pt(cx, cy - ay), round(radius * 16), 255, -1, cv2.LINE_8, 4)
        gem_colour = _paint((h, w), rng, _colour(rng, "any")[0], metal=False, texture=5)
        g = _alpha(gem_mask)[..., None]
        colour = colour * (1 - g) + gem_colour * g
        mask = np.maximum(mask, gem_mask)
    return Product("ring", "Jewelry", "ring", "ring", _finish(mask, colour), light)


def draw_chain(rng: np.random.Generator, tone: str = "metal") -> Product:
    """A necklace: a hanging curve of interlocking links, with a pendant."""
    aspect = rng.uniform(0.8, 1.3)
    mask, w, h = _canvas(aspect)
    s = SUPERSAMPLE
    H, W = mask.shape
    link = rng.uniform(0.055, 0.075) * max(W, H)
    thick = max(s, round(link * rng.uniform(0.2, 0.28)))
    t = np.linspace(0, 1, 2000)
    sag = rng.uniform(0.55, 0.7)
    xs = W * (0.06 + 0.88 * t)
    ys = H * (0.06 + sag * (1 - (2 * t - 1) ** 2))
    seg = np.hypot(np.diff(xs), np.diff(ys))
    arc = np.concatenate([[0], np.cumsum(seg)])
    positions = np.arange(0, arc[-1], link * 0.8)
    for i, a in enumerate(positions):
        k = min(int(np.searchsorted(arc, a)), len(t) - 2)
        direction = np.degrees(np.arctan2(ys[k + 1] - ys[k], xs[k + 1] - xs[k]))
        centre = _pt(xs[k], ys[k])
        if i % 2 == 0:
            cv2.ellipse(mask, centre, _pt(link / 2, link / 3.2), direction, 0, 360, 255,
                        thick, cv2.LINE_8, 4)
        else:
            dx = np.cos(np.radians(direction)) * link * 0.45
            dy = np.sin(np.radians(direction)) * link * 0.45
            cv2.line(mask, _pt(xs[k] - dx, ys[k] - dy), _pt(xs[k] + dx, ys[k] + dy), 255,
                     thick, cv2.LINE_8, 4)
    bottom = _pt(xs[len(t) // 2], ys[len(t) // 2] + link * 1.2)
    cv2.circle(mask, bottom, round(link * rng.uniform(0.8, 1.3) * 16), 255, -1, cv2.LINE_8, 4)
    base, light = _colour(rng, tone)
    colour = _paint((h, w), rng, base, metal=True)
    return Product("chain", "Jewelry", "necklace", "necklace", _finish(mask, colour), light)


def draw_holed(rng: np.random.Generator, tone: str = "any") -> Product:
    """A shape with a hole: a mug (handle), a key fob, a bead or an empty frame."""
    kind = ("mug", "fob", "bead", "frame")[rng.integers(4)]
    if kind == "mug":
        mask, w, h = _canvas(1.3)
        H, W = mask.shape
        cv2.rectangle(mask, _pt(0.02 * W, 0.04 * H), _pt(0.72 * W, 0.96 * H), 255, -1, cv2.LINE_8, 4)
        cv2.ellipse(mask, _pt(0.74 * W, 0.48 * H), _pt(0.2 * W, 0.26 * H), 0, 0, 360, 255,
                    round(0.075 * W), cv2.LINE_8, 4)
        category, sub = "Home", "mug"
    elif kind == "fob":
        mask, w, h = _canvas(0.62)
        H, W = mask.shape
        cv2.circle(mask, _pt(0.5 * W, 0.25 * H), round(0.3 * W * 16), 255, round(0.1 * W), cv2.LINE_8, 4)
        body = np.zeros_like(mask)
        cv2.rectangle(body, _pt(0.1 * W, 0.36 * H), _pt(0.9 * W, 0.98 * H), 255, -1, cv2.LINE_8, 4)
        cv2.circle(body, _pt(0.5 * W, 0.36 * H), round(0.4 * W * 16), 255, -1, cv2.LINE_8, 4)
        cv2.circle(body, _pt(0.5 * W, 0.36 * H), round(0.14 * W * 16), 0, -1, cv2.LINE_8, 4)
        mask = np.maximum(mask, body)
        category, sub = "Accessories", "keychain"
    elif kind == "bead":
        mask, w, h = _canvas(rng.uniform(1.0, 1.25))
        H, W = mask.shape
        inner = rng.uniform(0.3, 0.5)
        ring = 0.5 * (1 - inner)
        cv2.ellipse(mask, _pt(W / 2, H / 2), _pt(W / 2 * (1 - ring), H / 2 * (1 - ring)), 0, 0,
                    360, 255, round(ring * H), cv2.LINE_8, 4)
        category, sub = "Craft Supplies", "beads"
    else:
        mask, w, h = _canvas(rng.uniform(0.75, 1.35))
        H, W = mask.shape
        border = rng.uniform(0.12, 0.2) * min(H, W)
        mask[:] = 255
        mask[round(border) : H - round(border), round(border) : W - round(border)] = 0
        category, sub = "Art", "print"
    base, light = _colour(rng, tone)
    colour = _paint((h, w), rng, base, metal=tone == "metal")
    return Product(kind, category, sub, sub, _finish(mask, colour), light)


def draw_solid(rng: np.random.Generator, tone: str = "any") -> Product:
    """A solid product: a bottle, a box, a jar or a gem."""
    kind = ("bottle", "box", "jar", "gem")[rng.integers(4)]
    if kind == "bottle":
        mask, w, h = _canvas(rng.uniform(0.4, 0.55))
        H, W = mask.shape
        cv2.rectangle(mask, _pt(0.02 * W, 0.34 * H), _pt(0.98 * W, 0.98 * H), 255, -1, cv2.LINE_8, 4)
        cv2.ellipse(mask, _pt(0.5 * W, 0.36 * H), _pt(0.48 * W, 0.1 * H), 0, 180, 360, 255, -1, cv2.LINE_8, 4)
        cv2.rectangle(mask, _pt(0.34 * W, 0.02 * H), _pt(0.66 * W, 0.3 * H), 255, -1, cv2.LINE_8, 4)
        category, sub = "Beauty", "perfume"
    elif kind == "box":
        mask, w, h = _canvas(rng.uniform(0.7, 1.5))
        mask[:] = 255
        category, sub = "Toys", "puzzle"
    elif kind == "jar":
        mask, w, h = _canvas(rng.uniform(0.9, 1.3))
        H, W = mask.shape
        cv2.ellipse(mask, _pt(W / 2, 0.55 * H), _pt(0.48 * W, 0.43 * H), 0, 0, 360, 255, -1, cv2.LINE_8, 4)
        cv2.rectangle(mask, _pt(0.1 * W, 0.02 * H), _pt(0.9 * W, 0.3 * H), 255, -1, cv2.LINE_8, 4)
        category, sub = "Beauty", "cream jar"
    else:
        mask, w, h = _canvas(rng.uniform(0.8, 1.2))
        H, W = mask.shape
        n = int(rng.integers(5, 9))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        pts = np.stack([W / 2 + 0.49 * W * np.cos(angles), H / 2 + 0.49 * H * np.sin(angles)], 1)
        cv2.fillPoly(mask, [np.round(pts * 16).astype(np.int32)], 255, cv2.LINE_8, 4)
        category, sub = "Jewelry", "brooch"
    base, light = _colour(rng, tone)
    colour = _paint((h, w), rng, base, metal=False)
    if kind == "box":  # a darker side face gives it depth and an inner edge
        colour[:, : w // 3] *= 0.72
    return Product(kind, category, sub, sub, _finish(mask, colour), light)


_CARS = (("rembg/car-2.out.png", 0.0, 1.0, True), ("rembg/car-3.out.png", 0.0, 0.5, False),
         ("rembg/car-3.out.png", 0.5, 1.0, True))
"""Real cut-outs: file, the horizontal span of the image that holds one car, light or not;
each was cut from the ``.jpg`` of the same name."""


def load_car(data_dir: Path, index: int) -> Product:
    """One of the real car cut-outs (real alpha), trimmed and scaled to :data:`REF`."""
    name, left, right, light = _CARS[index]
    path = data_dir / name
    bgra = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if bgra is None or bgra.ndim != 3 or bgra.shape[2] != 4:
        raise ValueError(f"{path}: not an RGBA image")
    rgba = cv2.cvtColor(bgra, cv2.COLOR_BGRA2RGBA)
    width = rgba.shape[1]
    rgba = trim_to_alpha(rgba[:, round(left * width) : round(right * width)])
    layer = premultiplied_rgba(rgba).astype(np.float32)
    scale = REF / max(layer.shape[:2])
    size = (max(1, round(layer.shape[1] * scale)), max(1, round(layer.shape[0] * scale)))
    layer = cv2.resize(layer, size, interpolation=cv2.INTER_AREA)
    origin = name.replace(".out.png", ".jpg")
    return Product(f"car-{index}", "Toys", "wooden toy", "toy car", layer, light, origin)


# -- scenes ---------------------------------------------------------------------------

_BBC = "pyscenedetect/issue-195-aspect-ratio.mp4"


@dataclass(frozen=True)
class Scene:
    """A real background: a shot of footage, or a photo a synthetic camera films."""

    name: str
    path: str
    footage: bool
    tags: frozenset[str]
    start: int = 0
    end: int = 0


SCENES = (
    Scene("coffee", "sam2/04_coffee.mp4", True, frozenset({"light"}), 0, 287),
    # shots of the BBC footage as `pvtt shots` finds them; "warm-lit": filmed under warm
    # light (shades of grey, p = 8, puts its light 10-22 degrees from white), so what
    # light a product should have in it is not known exactly
    Scene("bbc-hands", _BBC, True, frozenset({"dark", "warm-lit"}), 0, 70),
    Scene("bbc-bowl", _BBC, True, frozenset({"textured", "light"}), 70, 170),
    Scene("bbc-shelves", _BBC, True, frozenset({"textured", "warm-lit"}), 170, 301),
    Scene("bbc-cup", _BBC, True, frozenset({"textured", "warm-lit"}), 301, 421),
    Scene("bbc-desk", _BBC, True, frozenset({"light", "warm-lit"}), 421, 484),
    Scene("bbc-cube", _BBC, True, frozenset({"dark", "warm-lit"}), 484, 628),
    Scene("truck", "sam2/truck.jpg", False, frozenset({"textured"})),
    Scene("car-2", "rembg/car-2.jpg", False, frozenset({"textured"})),
    Scene("car-3", "rembg/car-3.jpg", False, frozenset({"light"})),
)
CAMERAS = ("pan", "zoom", "shake")
"""Synthetic camera motions over a photo."""


def _footage(data_dir: Path, scene: Scene, rng: np.random.Generator, frames: int,
             size: tuple[int, int]) -> tuple[np.ndarray, float, dict[str, object]]:
    """``frames`` frames of a shot, slightly zoomed in and cropped at a random place.

    A shot shorter than ``frames`` plays forwards then backwards (still real frames).
    """
    width, height = size
    zoom = rng.uniform(1.0, 1.3)
    length = scene.end - scene.start
    take = min(frames, length)
    first = scene.start + int(rng.integers(0, length - take + 1))
    decoded, fps = read_frames(data_dir / scene.path, first, first + take,
                               max_size=(round(width * zoom), round(height * zoom)))
    if len(decoded) < take:
        raise ValueError(f"{data_dir / scene.path}: frames {first}-{first + take} decode to {len(decoded)}")
    order = np.arange(frames) % (2 * take - 2 or 1)
    order = np.where(order < take, order, 2 * take - 2 - order)
    dh, dw = decoded.shape[1:3]
    if dh < height or dw < width:  # even-size rounding may fall a pixel short
        grow = max(width / dw, height / dh)
        decoded = np.stack([cv2.resize(f, (max(width, round(dw * grow)), max(height, round(dh * grow))),
                                       interpolation=cv2.INTER_LINEAR) for f in decoded])
        dh, dw = decoded.shape[1:3]
    x0 = int(rng.integers(0, dw - width + 1))
    y0 = int(rng.integers(0, dh - height + 1))
    plate = np.ascontiguousarray(decoded[order, y0 : y0 + height, x0 : x0 + width])
    return plate, fps, {"first_frame": first, "zoom": round(zoom, 3)}


def _filmed_photo(data_dir: Path, scene: Scene, rng: np.random.Generator, frames: int,
                  size: tuple[int, int]) -> tuple[np.ndarray, dict[str, object]]:
    """A photo filmed by a camera that pans, zooms or shakes (a crop window per frame)."""
    width, height = size
    path = data_dir / scene.path
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{path}: not a readable image")
    photo = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    ph, pw = photo.shape[:2]
    camera = CAMERAS[rng.integers(len(CAMERAS))]
    aspect = width / height
    w_fit = min(pw, ph * aspect)
    w0 = w_fit * rng.uniform(0.6, 0.8)
    u = np.linspace(0, 1, frames)
    ease = u * u * (3 - 2 * u)
    if camera == "zoom":
        w_t = w0 * (1 + (rng.uniform(0.7, 0.8) - 1) * (ease if rng.random() < 0.5 else 1 - ease))
    else:
        w_t = np.full(frames, w0)
    rot = np.zeros(frames)
    margin = 0.02 * w0
    cx_lo, cx_hi = w_t.max() / 2 + margin, pw - w_t.max() / 2 - margin
    cy_lo, cy_hi = w_t.max() / aspect / 2 + margin, ph - w_t.max() / aspect / 2 - margin
    start = np.array([rng.uniform(cx_lo, cx_hi), rng.uniform(cy_lo, cy_hi)])
    if camera == "pan":
        travel = rng.uniform(0.15, 0.3) * pw
        angle = rng.uniform(-0.4, 0.4) + (0 if rng.random() < 0.5 else np.pi)
        end = start + travel * np.array([np.cos(angle), np.sin(angle)])
        end = np.clip(end, [cx_lo, cy_lo], [cx_hi, cy_hi])
        centre = start[None] + (end - start)[None] * ease[:, None]
    else:
        centre = np.repeat(start[None], frames, axis=0)
    if camera == "shake":
        jitter = np.cumsum(rng.normal(0, 0.006 * w0, (frames, 2)), axis=0)
        jitter = _smooth(jitter, 1.5)
        centre = np.clip(centre + jitter, [cx_lo, cy_lo], [cx_hi, cy_hi])
        rot = np.degrees(np.cumsum(rng.normal(0, 0.004, frames)))
    shrink = min(1.0, 1.15 * width / w_t.min())
    small = cv2.resize(photo, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA)
    plate = np.empty((frames, height, width, 3), np.uint8)
    for t in range(frames):
        k = width / (w_t[t] * shrink)
        theta = np.radians(rot[t])
        linear = k * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        offset = np.array([width / 2, height / 2]) - 0.5 - linear @ (centre[t] * shrink - 0.5)
        matrix = np.hstack([linear, offset[:, None]])
        plate[t] = cv2.warpAffine(small, matrix, (width, height), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REFLECT101)
    return plate, {"camera": camera}


def _smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing of ``values`` along axis 0 (edges held)."""
    radius = max(1, int(3 * sigma))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(values, [(radius, radius)] + [(0, 0)] * (values.ndim - 1), mode="edge")
    return np.stack([np.convolve(padded[:, i], kernel, mode="valid")
                     for i in range(values.shape[1])], axis=1)


def render_scene(data_dir: Path, scene: Scene, rng: np.random.Generator, frames: int,
                 size: tuple[int, int]) -> tuple[np.ndarray, float, dict[str, object]]:
    """The plate of ``scene``: ``frames x H x W x 3`` uint8, its fps, and how it was made."""
    if scene.footage:
        plate, fps, notes = _footage(data_dir, scene, rng, frames, size)
    else:
        plate, notes = _filmed_photo(data_dir, scene, rng, frames, size)
        fps = PHOTO_FPS
    return plate, fps, {"scene": scene.name, **notes}


# -- motion ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Path2D:
    """Per frame: the product's centre (x, y), scale (frame px per layer px) and angle."""

    centre: np.ndarray
    scale: np.ndarray
    angle: np.ndarray
    blur: int = 1
    """Sub-frame samples averaged per frame (motion blur); 1 = a sharp frame."""


def _extent(layer: np.ndarray, scale: float, angle: float) -> tuple[float, float]:
    """Half width and half height of the placed layer's bounding box."""
    h, w = layer.shape[:2]
    c, s = abs(np.cos(np.radians(angle))), abs(np.sin(np.radians(angle)))
    return 0.5 * scale * (w * c + h * s), 0.5 * scale * (w * s + h * c)


def _fit_scale(layer: np.ndarray, size: tuple[int, int], long_frac: float) -> float:
    """The scale that gives the layer a long side of ``long_frac`` of the frame width, capped
    so that it fits in 45 % of the width and 60 % of the height."""
    h, w = layer.shape[:2]
    width, height = size
    return min(long_frac * width / max(h, w), 0.45 * width / w, 0.6 * height / h)


def _keep_inside(path: Path2D, layer: np.ndarray, size: tuple[int, int], margin: float = 2.0,
                 lo: tuple[float, float] | None = None,
                 hi: tuple[float, float] | None = None) -> Path2D:
    """Shift each frame's centre so that the whole product stays inside the frame (or inside
    the band ``lo..hi`` of centres when given)."""
    width, height = size
    centre = path.centre.copy()
    for t in range(len(centre)):
        ex, ey = _extent(layer, path.scale[t], path.angle[t])
        for axis, (extent, length) in enumerate(((ex, width), (ey, height))):
            low, high = extent + margin, length - extent - margin
            if lo is not None and hi is not None and max(low, lo[axis]) <= min(high, hi[axis]):
                low, high = max(low, lo[axis]), min(high, hi[axis])
            centre[t, axis] = np.clip(centre[t, axis], low, high) if low <= high else length / 2
    return Path2D(centre, path.scale, path.angle, path.blur)


def moderate_path(rng: np.random.Generator, layer: np.ndarray, frames: int,
                  size: tuple[int, int], long_frac: tuple[float, float] = (0.22, 0.36),
                  band: tuple[float, float] | None = None) -> Path2D:
    """A product sliding 15-45 % of the frame width, bobbing, growing or shrinking by up to
    20 % and turning a few degrees; vertically within ``band`` (centre rows) when given."""
    width, height = size
    u = np.linspace(0, 1, frames)
    ease = u * u * (3 - 2 * u)
    s0 = _fit_scale(layer, size, rng.uniform(*long_frac))
    scale = s0 * (1 + rng.uniform(-0.15, 0.2) * u)
    angle = rng.uniform(-6, 6) + rng.uniform(-8, 8) * u
    ex, ey = _extent(layer, scale.max(), 10)
    y_lo, y_hi = (ey, height - ey) if band is None else band
    start = np.array([rng.uniform(ex, max(ex, width - ex)), rng.uniform(y_lo, max(y_lo, y_hi))])
    travel = rng.uniform(0.15, 0.45) * width
    direction = rng.uniform(-0.5, 0.5) + (0 if start[0] < width / 2 else np.pi)
    end = start + travel * np.array([np.cos(direction), np.sin(direction) * 0.5])
    centre = start[None] + (end - start)[None] * ease[:, None]
    centre[:, 1] += rng.uniform(0.01, 0.04) * height * np.sin(2 * np.pi * u * rng.uniform(0.5, 1.5))
    path = Path2D(centre, scale, angle)
    if band is None:
        return _keep_inside(path, layer, size)
    return _keep_inside(path, layer, size, lo=(0, band[0]), hi=(width, band[1]))


def fast_path(rng: np.random.Generator, layer: np.ndarray, frames: int,
              size: tuple[int, int]) -> Path2D:
    """Back and forth across the frame, 1-1.5 cycles a clip: 20-30 px a frame at 384 px wide
    and 40 frames, blurred over a quarter of the frame interval."""
    width, height = size
    u = np.linspace(0, 1, frames)
    scale = np.full(frames, _fit_scale(layer, size, rng.uniform(0.2, 0.3)))
    ex, ey = _extent(layer, scale[0], 8)
    cycles = rng.uniform(1.0, 1.5) * frames / FRAMES
    phase = rng.uniform(0, 2 * np.pi)
    x = width / 2 + (width / 2 - ex - 2) * np.sin(2 * np.pi * cycles * u + phase)
    y = rng.uniform(ey, height - ey) + 0.08 * height * np.sin(2 * np.pi * cycles * 2 * u)
    angle = rng.uniform(-8, 8) * np.sin(2 * np.pi * cycles * u)
    return _keep_inside(Path2D(np.stack([x, y], 1), scale, angle, blur=5), layer, size)


def scale_path(rng: np.random.Generator, layer: np.ndarray, frames: int,
               size: tuple[int, int]) -> Path2D:
    """Growing (or shrinking) 2.2-3x about a slowly drifting centre."""
    width, height = size
    u = np.linspace(0, 1, frames)
    ratio = rng.uniform(2.2, 3.0)
    big = _fit_scale(layer, size, rng.uniform(0.36, 0.45))
    curve = big / ratio * ratio**u
    scale = curve if rng.random() < 0.5 else curve[::-1].copy()
    angle = rng.uniform(-5, 5) + rng.uniform(-5, 5) * u
    ex, ey = _extent(layer, big, 6)
    start = np.array([rng.uniform(ex, width - ex), rng.uniform(ey, max(ey, height - ey))])
    drift = rng.uniform(-0.08, 0.08, 2) * width
    centre = start[None] + drift[None] * u[:, None]
    return _keep_inside(Path2D(centre, scale, angle), layer, size)


def edge_path(rng: np.random.Generator, layer: np.ndarray, frames: int,
              size: tuple[int, int]) -> tuple[Path2D, str]:
    """Along one edge of the frame, cut by it: 10-70 % of the product outside at times, at
    least 30 % of it inside on every frame."""
    width, height = size
    u = np.linspace(0, 1, frames)
    scale = np.full(frames, _fit_scale(layer, size, rng.uniform(0.25, 0.36)))
    angle = np.full(frames, rng.uniform(-5, 5))
    ex, ey = _extent(layer, scale[0], angle[0])
    edge = ("left", "right", "top", "bottom")[rng.integers(4)]
    # how far the centre is inside the edge, in half-extents: -0.4 (70 % out) .. 0.8 (10 % out)
    a, b = rng.uniform(-0.4, 0.8, 2)
    depth = a + (b - a) * u
    along = rng.uniform(0.3, 0.7) + rng.uniform(-0.2, 0.2) * u
    if edge in ("left", "right"):
        x = ex * depth if edge == "left" else width - ex * depth
        y = np.clip(along * height, ey, height - ey)
    else:
        y = ey * depth if edge == "top" else height - ey * depth
        x = np.clip(along * width, ex, width - ex)
    centre = np.stack([np.broadcast_to(x, u.shape), np.broadcast_to(y, u.shape)], 1).astype(np.float64)
    return Path2D(centre, scale, angle), edge


def render_product(layer: np.ndarray, path: Path2D, size: tuple[int, int]) -> np.ndarray:
    """The product's premultiplied layer on every frame, ``T x H x W x 4`` float32.

    With ``path.blur > 1`` each frame averages that many placements spread over a quarter
    of the frame interval (shutter open 1/4 of the time), exactly a motion-blurred layer.
    """
    width, height = size
    frames = len(path.centre)
    out = np.zeros((frames, height, width, 4), np.float32)
    for t in range(frames):
        if path.blur == 1:
            out[t] = place(layer, path.scale[t], path.angle[t], tuple(path.centre[t]), size)
            continue
        for k in np.linspace(-0.125, 0.125, path.blur):
            tt = min(max(t + k, 0), frames - 1)
            lo, hi = int(np.floor(tt)), int(np.ceil(tt))
            f = tt - lo
            centre = (1 - f) * path.centre[lo] + f * path.centre[hi]
            angle = (1 - f) * path.angle[lo] + f * path.angle[hi]
            scale = (1 - f) * path.scale[lo] + f * path.scale[hi]
            out[t] += place(layer, scale, angle, tuple(centre), size) / path.blur
    return out


_OCCLUDERS = ((224, 172, 140), (198, 134, 100), (141, 85, 60), (150, 110, 70), (45, 45, 60))
"""Colours of what passes in front: three skin tones (a hand or arm), wood, a dark sleeve."""


def occluder_layer(rng: np.random.Generator, path: Path2D, layer: np.ndarray,
                   frames: int, size: tuple[int, int]) -> np.ndarray:
    """An arm- or stick-like bar, shaded and grained, sweeping across the product mid-clip,
    30-55 % of its width wide: premultiplied ``T x H x W x 4`` float32, part of the plate."""
    width, height = size
    mid = frames // 2
    ex, ey = _extent(layer, path.scale[mid], path.angle[mid])
    bar_w = 2 * ex * rng.uniform(0.3, 0.55)
    bar_h = max(2 * ey * 1.7, 0.5 * height)
    mask, w, h = _canvas(bar_w / bar_h)
    H, W = mask.shape
    cv2.rectangle(mask, _pt(0, W / 2), _pt(W, H - W / 2), 255, -1, cv2.LINE_8, 4)
    cv2.circle(mask, _pt(W / 2, W / 2), round(W / 2 * 16), 255, -1, cv2.LINE_8, 4)
    cv2.circle(mask, _pt(W / 2, H - W / 2), round(W / 2 * 16), 255, -1, cv2.LINE_8, 4)
    base = _OCCLUDERS[rng.integers(len(_OCCLUDERS))]
    colour = _paint((h, w), rng, base, metal=False, gradient=0.3)
    bar = _finish(mask, colour)
    scale = bar_h / bar.shape[0]
    u = np.linspace(-1, 1, frames)
    sweep = rng.uniform(1.6, 2.4) * (ex + bar_w / 2)
    direction = 1 if rng.random() < 0.5 else -1
    cx = path.centre[:, 0] + direction * sweep * u / 2
    cy = path.centre[:, 1] + rng.uniform(-0.2, 0.2) * ey
    tilt = rng.uniform(-15, 15)
    out = np.empty((frames, height, width, 4), np.float32)
    for t in range(frames):
        out[t] = place(bar, scale, tilt, (cx[t], cy[t]), size)
    return out


# -- photos ---------------------------------------------------------------------------

PHOTO_STYLES = ("white", "grey", "pastel", "dark", "similar")


def _photo_background(rng: np.random.Generator, style: str, shape: tuple[int, int],
                      product_colour: np.ndarray) -> np.ndarray:
    """A studio background: a graded sweep with paper texture, float32 RGB."""
    h, w = shape
    if style == "white":
        top, bottom = rng.uniform(240, 254), rng.uniform(222, 240)
        base = np.array([1.0, 1.0, 1.0])
    elif style == "grey":
        top, bottom = rng.uniform(190, 230), rng.uniform(170, 210)
        base = np.array([1.0, 1.0, 1.0])
    elif style == "dark":
        top, bottom = rng.uniform(25, 50), rng.uniform(15, 35)
        base = np.array([1.0, 1.0, 1.0])
    else:
        if style == "pastel":
            hsv = np.uint8([[[rng.integers(0, 180), rng.integers(30, 80), rng.integers(215, 245)]]])
            colour = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float64)
        else:  # similar: the product's own mean colour, moved a little
            offset = rng.normal(0, 1, 3)
            colour = np.clip(product_colour + offset / np.linalg.norm(offset) * rng.uniform(22, 32), 5, 250)
        top = bottom = float(colour.max())
        base = colour / max(colour.max(), 1.0)
        top, bottom = top * rng.uniform(1.0, 1.04), bottom * rng.uniform(0.9, 0.97)
    grade = np.linspace(top, bottom, h, dtype=np.float32)[:, None, None]
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    vignette = 1 - 0.06 * (((x - w / 2) / w) ** 2 + ((y - h / 2) / h) ** 2) * 4
    img = grade * base.astype(np.float32)[None, None] * vignette[..., None]
    paper = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 2.0) * 6
    noise = rng.normal(0, 1.2, (h, w, 3)).astype(np.float32)
    return np.clip(img + paper[..., None] + noise, 0, 255)


def compose_photo(rng: np.random.Generator, product: Product, style: str,
                  size: int = PHOTO_SIZE) -> tuple[TruthPhoto, dict[str, object]]:
    """``product`` photographed on a ``style`` background, with a soft contact shadow half the
    time (part of the background: the true alpha excludes it)."""
    aspect = (1.0, 4 / 3, 3 / 4)[rng.integers(3)]
    w, h = (size, round(size / aspect)) if aspect >= 1 else (round(size * aspect), size)
    layer = product.layer
    lh, lw = layer.shape[:2]
    scale = rng.uniform(0.55, 0.8) * min(w / lw, h / lh)
    centre = (w / 2 + rng.uniform(-0.05, 0.05) * w, h / 2 + rng.uniform(-0.05, 0.05) * h)
    angle = rng.uniform(-4, 4)
    placed = place(layer, scale, angle, centre, (w, h))
    alpha = placed[..., 3] / 255.0
    colour = placed[..., :3].sum(axis=(0, 1)) / max(alpha.sum(), 1e-6)
    background = _photo_background(rng, style, (h, w), colour)
    shadow = rng.random() < 0.5
    if shadow:
        ys = np.nonzero(alpha.max(axis=1) >= 0.5)[0]
        xs = np.nonzero(alpha.max(axis=0) >= 0.5)[0]
        canvas = np.zeros((h, w), np.float32)
        cv2.ellipse(canvas, (int(xs.mean()), int(ys.max())), (max(1, int(0.45 * len(xs))),
                    max(1, int(0.05 * len(ys)) + 1)), 0, 0, 360, 1.0, -1)
        canvas = cv2.GaussianBlur(canvas, (0, 0), max(1.0, 0.04 * len(ys)))
        background = background * (1 - rng.uniform(0.15, 0.35) * canvas[..., None])
    image, alpha = composite(background, placed)
    cutout = trim_to_alpha(straight_rgba(placed))
    photo = TruthPhoto(image=image, background=background.astype(np.float32), layer=placed,
                       alpha=alpha.astype(np.float32), cutout=cutout)
    return photo, {"photo_style": style, "photo_shadow": shadow, "photo_size": [w, h]}


# -- cases ----------------------------------------------------------------------------

_DRAWN: dict[str, Callable[[np.random.Generator, str], Product]] = {
    "ring": draw_ring, "chain": draw_chain, "holed": draw_holed, "solid": draw_solid,
}


def _product(data_dir: Path, rng: np.random.Generator, kinds: tuple[str, ...],
             tone: str = "any") -> Product:
    """A product of one of ``kinds`` (drawn kinds, or ``car``: a real cut-out)."""
    kind = kinds[rng.integers(len(kinds))]
    if kind == "car":
        cars = [i for i, car in enumerate(_CARS) if tone != "light" or car[3]]
        return load_car(data_dir, cars[rng.integers(len(cars))])
    if kind in ("ring", "chain") and tone not in ("light", "metal"):
        tone = "metal"
    return _DRAWN[kind](rng, tone)


def _lightest_band(plate: np.ndarray, half: float) -> tuple[float, float]:
    """The centre rows (lo, hi) around the lightest horizontal band ``2 * half`` rows high."""
    luma = plate.astype(np.float32).mean(axis=(0, 2, 3))
    k = max(1, int(2 * half))
    window = np.convolve(luma, np.ones(k) / k, mode="valid")
    top = int(np.argmax(window))
    centre = top + k / 2
    return (centre - 0.1 * k, centre + 0.1 * k)


def _tint_to(product: Product, target: np.ndarray, rng: np.random.Generator) -> Product:
    """``product`` recoloured to ``target`` (RGB) moved 14-22 levels, keeping its shading
    weak: low contrast against what lies under it."""
    layer = product.layer.copy()
    alpha = layer[..., 3:] / 255.0
    straight = layer[..., :3] / np.maximum(alpha, 1e-6)
    luma = straight.mean(axis=2, keepdims=True)
    mean = float((luma * alpha).sum() / max(alpha.sum(), 1e-6))
    offset = rng.normal(0, 1, 3)
    colour = np.clip(target + offset / np.linalg.norm(offset) * rng.uniform(14, 22), 0, 255)
    recoloured = colour[None, None].astype(np.float32) + 0.25 * (luma - mean)
    layer[..., :3] = np.clip(recoloured, 0, 255) * alpha
    return replace(product, layer=layer)


def draw_light(rng: np.random.Generator) -> np.ndarray:
    """A scene light unlike the studio's: 7-16 degrees of warm or cool cast and a little
    tint, at -1.3 to -0.4 stops (most) or +0.3 to +0.6 stops."""
    warmth = rng.choice([-1.0, 1.0]) * rng.uniform(0.15, 0.35)
    stops = rng.uniform(-1.3, -0.4) if rng.random() < 0.75 else rng.uniform(0.3, 0.6)
    return light_gains(warmth, rng.normal(0.0, 0.04), stops).astype(np.float32)


def relit_layer(layer: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """A premultiplied layer under ``gains``: its straight colour relit, alpha kept."""
    alpha = layer[..., 3:] / 255.0
    straight = layer[..., :3] / np.maximum(alpha, 1e-6)
    return np.dstack([relight(straight, gains) * alpha, layer[..., 3:]]).astype(np.float32)


def relit_cutout(cutout: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """A straight RGBA uint8 cut-out under ``gains`` (alpha kept): the target as it would
    look filmed in the scene."""
    if np.allclose(gains, 1.0):
        return cutout
    out = cutout.copy()
    out[..., :3] = np.clip(relight(cutout[..., :3], gains) + 0.5, 0, 255).astype(np.uint8)
    return out


def generate_case(spec: CaseSpec, data_dir: Path, size: tuple[int, int] = SIZE,
                  frames: int = FRAMES, photo_size: int = PHOTO_SIZE) -> TruthCase:
    """The case ``spec``, drawn from its seed alone: same spec, same arrays."""
    if size[0] % 2 or size[1] % 2 or min(size) < 32:
        raise ValueError(f"clip size must be even and at least 32 px, got {size}")
    if frames < 2:
        raise ValueError(f"a clip needs at least 2 frames, got {frames}")
    rng = spec.rng()
    family = spec.family
    notes: dict[str, object] = {"family": family}
    if family == "light-on-light":
        tone = "light"
    elif family in ("ring", "chain"):
        tone = "metal"
    else:
        tone = "any"
    if family in ("ring", "chain", "holed"):
        source_kinds: tuple[str, ...] = (family,)
    elif family == "low-contrast":
        source_kinds = ("solid", "holed")
    elif family == "light-on-light":
        source_kinds = ("car", "solid", "holed", "ring")
    elif family in ("baseline", "fast-motion", "relit"):
        source_kinds = ("solid", "car")
    else:
        source_kinds = ("solid", "holed", "car", "ring")
    source = _product(data_dir, rng, source_kinds, tone)
    if family == "textured":
        pool = [s for s in SCENES if "textured" in s.tags]
    elif family == "light-on-light":
        pool = [s for s in SCENES if "light" in s.tags]
    elif family == "relit":  # a known light on top of a white one
        pool = [s for s in SCENES if "warm-lit" not in s.tags]
    else:
        pool = list(SCENES)
    pool = [s for s in pool if s.path != source.origin]
    scene = pool[rng.integers(len(pool))]
    plate, fps, scene_notes = render_scene(data_dir, scene, rng, frames, size)
    notes.update(scene_notes, scene_light="warm" if "warm-lit" in scene.tags else "white")
    light = np.ones(3, np.float32)
    if family == "relit":
        light = draw_light(rng)
        plate = np.clip(relight(plate, light) + 0.5, 0, 255).astype(np.uint8)
        source = replace(source, layer=relit_layer(source.layer, light))
        notes["light"] = [round(float(g), 3) for g in light]

    if family == "fast-motion":
        path = fast_path(rng, source.layer, frames, size)
    elif family == "scale-change":
        path = scale_path(rng, source.layer, frames, size)
    elif family == "frame-edge":
        path, edge = edge_path(rng, source.layer, frames, size)
        notes["edge"] = edge
    elif family == "light-on-light":
        s = _fit_scale(source.layer, size, 0.3)
        band = _lightest_band(plate, _extent(source.layer, s * 1.2, 10)[1])
        path = moderate_path(rng, source.layer, frames, size, band=band)
    else:
        path = moderate_path(rng, source.layer, frames, size)
    if family == "low-contrast":
        under = render_product(source.layer, path, size)[..., 3] >= 127.5
        source = _tint_to(source, np.median(plate[under], axis=0), rng)
    layer = render_product(source.layer, path, size)
    if family == "occlusion":
        occluder = occluder_layer(rng, path, source.layer, frames, size)
        plate = np.stack([composite(plate[t], occluder[t])[0] for t in range(frames)])
        layer *= 1.0 - occluder[..., 3:] / 255.0
    clip_frames = np.stack([composite(plate[t], layer[t])[0] for t in range(frames)])
    if not (layer[..., 3] >= 127.5).any(axis=(1, 2))[0]:
        raise ValueError(f"{spec.case_id}: the product is not visible on the first frame")
    speed = np.hypot(*np.diff(path.centre, axis=0).T)
    notes.update(product=source.name, path_px_per_frame=round(float(speed.mean()), 2),
                 scale_ratio=round(float(path.scale.max() / path.scale.min()), 2))

    if family in ("ring", "chain"):
        target_kinds: tuple[str, ...] = ("ring", "chain")
        target_tone = "metal"
    elif family == "holed":
        target_kinds, target_tone = ("holed",), "any"
    elif family == "light-on-light":
        target_kinds, target_tone = ("car", "solid", "holed"), "light"
    else:
        target_kinds, target_tone = ("solid", "holed", "car", "ring", "chain"), "any"
    target = _product(data_dir, rng, target_kinds, target_tone)
    if family == "light-on-light":
        style = "white"
    elif family == "low-contrast":
        style = "similar"
    else:
        style = PHOTO_STYLES[rng.integers(4)]
    photo, photo_notes = compose_photo(rng, target, style, photo_size)
    notes.update(target=target.name, **photo_notes)
    clip = TruthClip(frames=clip_frames, plate=plate, layer=layer, fps=float(fps), light=light)
    return TruthCase(spec=spec, clip=clip, photo=photo, source=source, target=target, notes=notes)


def ideal_composite(plate: np.ndarray, cutout: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """The ideal pair: ``cutout`` (straight RGBA) pasted onto ``plate`` along ``boxes`` by
    plain alpha compositing, resized and placed as the inserters place it
    (:func:`~pvtt.builder.stages.cutout.placement_matrix`); frames without a box are
    the plate."""
    layer = premultiplied_rgba(cutout).astype(np.float32)
    height, width = plate.shape[1:3]
    out = plate.copy()
    for t, box in enumerate(np.asarray(boxes, np.float64)):
        if not np.isfinite(box).all() or box[2] <= box[0] or box[3] <= box[1]:
            continue
        size = (max(1, round(box[2] - box[0])), max(1, round(box[3] - box[1])))
        shrink = size[0] < layer.shape[1] or size[1] < layer.shape[0]
        resized = cv2.resize(layer, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        warped = cv2.warpAffine(resized, placement_matrix(size[0], size[1], box), (width, height),
                                flags=cv2.INTER_LINEAR)
        out[t] = composite(plate[t], warped)[0]
    return out
