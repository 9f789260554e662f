"""Products for the rehearsal catalog: one drawing per form family, lit as a solid.

The rehearsal stands in for a real Etsy catalog, so its products must give the pipeline
what real ones do: shapes with holes (rings, mug handles, bag straps, key rings), thin
parts (chains, pens, watch hands), flat faces (boxes), round bodies (vases, bottles)
and surfaces that catch the light. Each form family of the bundled taxonomy has one
parametric drawing; a seeded :class:`Look` picks its proportions, colours, material and
pattern, and :func:`render_product` lights it from a given direction and view, so every
shot and photo of a product shows the same object, differently lit and turned.

The demo's silhouettes (:func:`pvtt.builder.demo.draw_product`) are reused for the
finger ring, the hoop, the mug and the teddy bear; the other families are drawn here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from pvtt.builder.demo import DemoProduct, draw_product

MATERIALS = ("metal", "glossy", "matte", "glass", "wood")
PATTERNS = ("plain", "stripes", "dots", "check")
SUPERSAMPLE = 2
"""Parts are drawn and lit at twice the asked size, then shrunk: soft, anti-aliased edges."""


@dataclass(frozen=True)
class Look:
    """How one product looks, whatever the view: its family's drawing and what it is made of."""

    family: str
    subcategory: str
    colour: tuple[int, int, int]
    accent: tuple[int, int, int]
    material: str
    pattern: str
    seed: int
    """Seeds the drawing's proportions, so every view draws the same object."""


@dataclass(frozen=True)
class Part:
    """One piece of a product: a filled mask (0/255), its colour, material and relief.

    ``relief`` says how the piece bulges towards the camera: ``round`` (a tube or a dome,
    from the distance to its edge), ``cylinder`` (a body of revolution, round across,
    straight up), ``flat`` (a thin plate with bevelled edges) or ``face`` (a flat face
    whose normal is ``normal``, for boxes).
    """

    mask: np.ndarray
    colour: tuple[int, int, int]
    material: str
    relief: str = "round"
    patterned: bool = False
    normal: tuple[float, float, float] = (0.0, 0.0, 1.0)


class _Pen:
    """Draws masks on a square canvas in units of 1/100 of its side."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.u = size / 100.0

    def blank(self) -> np.ndarray:
        return np.zeros((self.size, self.size), np.uint8)

    def p(self, x: float, y: float) -> tuple[int, int]:
        return round(x * self.u), round(y * self.u)

    def n(self, v: float) -> int:
        return max(1, round(v * self.u))

    def ellipse(
        self, cx: float, cy: float, ax: float, ay: float, *, angle: float = 0.0,
        start: float = 0.0, end: float = 360.0, thick: float | None = None,
    ) -> np.ndarray:
        m = self.blank()
        width = -1 if thick is None else self.n(thick)
        cv2.ellipse(m, self.p(cx, cy), (self.n(ax), self.n(ay)), angle, start, end, 255, width)
        return m

    def poly(self, points: list[tuple[float, float]]) -> np.ndarray:
        m = self.blank()
        cv2.fillPoly(m, [np.array([self.p(x, y) for x, y in points], np.int32)], 255)
        return m

    def lines(self, points: list[tuple[float, float]], thick: float, closed: bool = False) -> np.ndarray:
        m = self.blank()
        pts = np.array([self.p(x, y) for x, y in points], np.int32)
        cv2.polylines(m, [pts], closed, 255, self.n(thick))
        return m

    def rect(self, x0: float, y0: float, x1: float, y1: float, r: float = 0.0) -> np.ndarray:
        m = self.blank()
        r = min(r, (x1 - x0) / 2, (y1 - y0) / 2)
        if r <= 0:
            cv2.rectangle(m, self.p(x0, y0), self.p(x1, y1), 255, -1)
            return m
        cv2.rectangle(m, self.p(x0 + r, y0), self.p(x1 - r, y1), 255, -1)
        cv2.rectangle(m, self.p(x0, y0 + r), self.p(x1, y1 - r), 255, -1)
        for cx, cy in ((x0 + r, y0 + r), (x1 - r, y0 + r), (x0 + r, y1 - r), (x1 - r, y1 - r)):
            cv2.circle(m, self.p(cx, cy), self.n(r), 255, -1)
        return m

    def demo(self, shape: str, look: Look, aspect: float) -> np.ndarray:
        """The demo's silhouette of ``shape`` (ring, gem, mug, bear) on this canvas."""
        stand_in = DemoProduct("rehearsal", "", look.subcategory, shape, look.colour, look.accent, aspect)
        _, mask = draw_product(stand_in, self.size)
        return mask.astype(np.uint8) * 255


def _minus(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.where(b > 0, 0, a).astype(np.uint8)


def _curve(points: int, fn: Callable[[float], tuple[float, float]]) -> list[tuple[float, float]]:
    return [fn(i / (points - 1)) for i in range(points)]


def _links(pen: _Pen, path: list[tuple[float, float]], link: float) -> np.ndarray:
    """A chain along ``path``: open links (with holes) alternating with links seen edge-on."""
    m = pen.blank()
    step, carry, count = link * 1.6, 0.0, 0
    for (x0, y0), (x1, y1) in zip(path[:-1], path[1:], strict=True):
        seg = math.hypot(x1 - x0, y1 - y0)
        angle = math.degrees(math.atan2(y1 - y0, x1 - x0))
        d = carry
        while d < seg:
            t = d / seg
            cx, cy = x0 + t * (x1 - x0), y0 + t * (y1 - y0)
            if count % 2:
                m |= pen.ellipse(cx, cy, link, link * 0.28, angle=angle)
            else:
                m |= pen.ellipse(cx, cy, link, link * 0.62, angle=angle, thick=link * 0.35)
            d += step
            count += 1
        carry = d - seg
    return m


def _chain(pen: _Pen, look: Look, rng: np.random.Generator) -> list[Part]:
    link = rng.uniform(2.6, 3.4)  # chunky enough for a tracker to hold on to at 720p
    sub = look.subcategory
    if sub in ("bracelet", "anklet"):
        ax, ay = rng.uniform(30, 38), rng.uniform(22, 30)
        loop = _curve(60, lambda t: (50 + ax * math.cos(2 * math.pi * t), 50 + ay * math.sin(2 * math.pi * t)))
        chain = _links(pen, loop, link)
        clasp = pen.ellipse(50 + ax, 50, 3.5, 2.5, thick=1.6)
        return [Part(chain | clasp, look.colour, "metal"),
                Part(pen.ellipse(50, 50 + ay, 4, 4), look.accent, "glass")]
    if sub in ("keychain", "phone charm", "leash"):
        ring = pen.ellipse(50, 16, 10, 9, thick=2.4)
        length = rng.uniform(30, 45)
        chain = _links(pen, [(50, 25), (50, 25 + length)], link)
        fob_y = 25 + length
        if look.pattern in ("dots", "check"):
            fob = pen.ellipse(50, fob_y + 12, 12, 12)
        else:
            fob = pen.rect(40, fob_y, 60, fob_y + 26, r=5)
        hole = pen.ellipse(50, fob_y + 5, 1.8, 1.8)
        return [Part(ring | chain, (190, 190, 198), "metal"),
                Part(_minus(fob, hole), look.colour, look.material, "flat", patterned=True)]
    sag, top = rng.uniform(40, 52), rng.uniform(8, 14)
    necklace = _curve(40, lambda t: (12 + 76 * t, top + sag * (1 - (2 * t - 1) ** 2)))
    chain = _links(pen, necklace, link)
    bottom = top + sag
    bail = pen.ellipse(50, bottom + 3, 2.6, 3.0, thick=1.2)
    drop = pen.poly([(50, bottom + 5), (60, bottom + 15), (50, bottom + 30), (40, bottom + 15)])
    return [Part(chain | bail, look.colour, "metal"), Part(drop, look.accent, "glass")]


def _band(pen: _Pen, look: Look, rng: np.random.Generator) -> list[Part]:
    if look.subcategory in ("belt", "collar"):
        ax, ay = rng.uniform(32, 40), rng.uniform(18, 28)
        strap = pen.ellipse(50, 50, ax, ay, thick=rng.uniform(7, 10))
        buckle = pen.rect(50 + ax - 8, 50 - 8, 50 + ax + 6, 50 + 8, r=2)
        hole = pen.rect(50 + ax - 5, 50 - 5, 50 + ax + 3, 50 + 5)
        return [Part(strap, look.colour, look.material if look.material != "metal" else "matte",
                     "flat", patterned=True),
                Part(_minus(buckle, hole), (200, 195, 185), "metal", "flat")]
    width = rng.uniform(14, 20)
    strap = pen.rect(50 - width / 2, 4, 50 + width / 2, 96, r=width / 2)
    radius = rng.uniform(18, 23)
    case = pen.ellipse(50, 50, radius, radius)
    dial = pen.ellipse(50, 50, radius * 0.8, radius * 0.8)
    hands = pen.lines([(50, 50 - radius * 0.6), (50, 50), (50 + radius * 0.45, 50 + radius * 0.2)], 1.2)
    return [Part(strap, look.colour, "matte" if look.material == "metal" else look.material, "flat", patterned=True),
            Part(case, (205, 200, 190), "metal"),
            Part(dial, look.accent, "glossy", "flat"),
            Part(hands, (25, 25, 30), "glossy", "flat")]


def _rigid_small(pen: _Pen, look: Look, rng: np.random.Generator) -> list[Part]:
    sub = look.subcategory
    if sub == "ring":
        return [Part(pen.demo("gem", look, rng.uniform(0.8, 1.0)), look.colour, "metal")]
    if sub == "earrings":
        parts = []
        for cx in (30, 70):
            hoop = pen.ellipse(cx, 42, 13, 17, thick=2.4)
            hook = pen.ellipse(cx, 22, 3, 4, start=180, end=360, thick=1.2)
            parts.append(Part(hoop | hook, look.colour, "metal"))
            parts.append(Part(pen.ellipse(cx, 62, 4, 5), look.accent, "glass"))
        return parts
    if sub == "sunglasses":
        frame = pen.ellipse(30, 50, 17, 13, thick=2.5) | pen.ellipse(70, 50, 17, 13, thick=2.5)
        frame |= pen.ellipse(50, 47, 6, 4, start=180, end=360, thick=2.0)
        frame |= pen.lines([(13, 46), (4, 42)], 2.5) | pen.lines([(87, 46), (96, 42)], 2.5)
        lenses = pen.ellipse(30, 50, 15, 11) | pen.ellipse(70, 50, 15, 11)
        return [Part(lenses, (40, 45, 55), "glass"), Part(frame, look.colour, "glossy")]
    if sub == "beads":
        m = pen.blank()
        for _ in range(9):
            m |= pen.ellipse(rng.uniform(25, 75), rng.uniform(30, 70), 9, 9)
        return [Part(m, look.colour, "glossy", patterned=True)]
    if sub == "hair clip":
        clip = pen.rect(12, 40, 88, 60, r=10)
        slot = pen.rect(25, 47, 75, 53, r=3)
        return [Part(_minus(clip, slot), look.colour, look.material, "flat", patterned=True)]
    w, h = rng.uniform(30, 40), rng.uniform(18, 28)
    bar = pen.rect(50 - w, 50 - h, 50 + w, 50 + h, r=min(w, h) * 0.5)
    return [Part(bar, look.colour, look.material, "flat", patterned=True)]


def _rigid_large(pen: _Pen, look: Look, rng: np.random.Generator) -> list[Part]:
    if look.subcategory == "clock":
        r = rng.uniform(34, 40)
        rim = pen.ellipse(50, 48, r, r)
        face = pen.ellipse(50, 48, r * 0.85, r * 0.85)
        feet = pen.ellipse(50 - r * 0.6, 48 + r, 4, 4) | pen.ellipse(50 + r * 0.6, 48 + r, 4, 4)
        hands = pen.lines([(50, 48 - r * 0.65), (50, 48), (50 + r * 0.5, 48)], 2.0)
        ticks = pen.blank()
        for k in range(12):
            a = k * math.pi / 6
            ticks |= pen.lines([(50 + r * 0.7 * math.cos(a), 48 + r * 0.7 * math.sin(a)),
                                (50 + r * 0.8 * math.cos(a), 48 + r * 0.8 * math.sin(a))], 1.5)
        return [Part(rim | feet, look.colour, look.material), Part(face, (240, 236, 226), "matte", "flat"),
                Part(ticks | hands, (30, 30, 35), "glossy", "flat")]
    if look.subcategory == "lamp":
        shade_top, shade_bottom = rng.uniform(14, 20), rng.uniform(28, 34)
        shade = pen.poly([(50 - shade_top, 6), (50 + shade_top, 6), (50 + shade_bottom, 42), (50 - shade_bottom, 42)])
        stem = pen.rect(47.5, 40, 52.5, 84)
        base = pen.ellipse(50, 88, 20, 7) | pen.rect(30, 84, 70, 88)
        return [Part(stem | base, look.accent, "metal", "cylinder"),
                Part(shade, look.colour, "matte", "cylinder", patterned=True)]
    body = pen.rect(18, 30, 82, 78, r=8)
    wheels = pen.ellipse(32, 80, 9, 9) | pen.ellipse(68, 80, 9, 9)
    cab = pen.rect(26, 12, 60, 34, r=4)
    window = pen.rect(32, 17, 54, 30, r=2)
    return [Part(wheels, (45, 40, 38), "matte"), Part(body | _minus(cab, window), look.colour, "wood", "flat", patterned=True)]


def _profile(pen: _Pen, radii: list[tuple[float, float]]) -> np.ndarray:
    """A body of revolution from (y, radius) pairs, top to bottom."""
    left = [(50 - r, y) for y, r in radii]
    right = [(50 + r, y) for y, r in reversed(radii)]
    return pen.poly(left + right)


def _vessel(pen: _Pen, look: Look, rng: np.random.Generator) -> list[Part]:
    sub = look.subcategory
    if sub == "mug":
        return [Part(pen.demo("mug", look, rng.uniform(1.1, 1.4)), look.colour, "glossy", "cylinder", patterned=True)]
    if sub in ("bowl", "pet bowl"):
        w = rng.uniform(36, 44)
        body = pen.ellipse(50, 45, w, rng.uniform(26, 34), start=0, end=180) | pen.ellipse(50, 45, w, 7)
        inside = pen.ellipse(50, 45, w - 3, 5)
        return [Part(body, look.colour, "glossy", "cylinder", patterned=True), Part(inside, look.accent, "glossy", "flat")]
    if sub in ("candle", "cream jar"):
        w, top = rng.uniform(22, 32), rng.uniform(28, 40)
        jar = pen.rect(50 - w, top, 50 + w, 86, r=4)
        lid = pen.rect(50 - w - 1, top - 12, 50 + w + 1, top, r=2)
        label = pen.rect(50 - w * 0.7, top + 14, 50 + w * 0.7, top + 34)
        return [Part(jar, look.colour, "glass", "cylinder"), Part(lid, look.accent, "metal", "cylinder"),
                Part(label, (238, 232, 220), "matte", "cylinder", patterned=True)]
    neck, belly = rng.uniform(6, 11), rng.uniform(22, 32)
    radii = [(6, neck + 4), (10, neck), (24, neck + 2), (44, belly), (70, belly * 0.85), (92, belly * 0.55)]
    return [Part(_profile(pen, radii), look.colour, look.material if look.material != "metal" else "glossy",
                 "cylinder", patterned=True)]


def _bottle(pen: _Pen, look: Look, rng: np.random.Generator) -> list[Part]:
    w = rng.uniform(18, 28)
    shoulder = rng.uniform(36, 44)
    neck = rng.uniform(5, 8)
    body = _profile(pen, [(shoulder - 10, neck), (shoulder, w * 0.8), (shoulder + 6, w), (90, w), (94, w - 2)])
    liquid = pen.rect(50 - w + 2, shoulder + 18, 50 + w - 2, 91)
    cap = pen.rect(50 - neck - 2, shoulder - 26, 50 + neck + 2, shoulder - 9, r=2)
    label = pen.rect(50 - w + 3, shoulder + 20, 50 + w - 3, shoulder + 38)
    return [Part(body, look.colour, "glass", "cylinder"),
            Part(liquid, tuple(int(c * 0.7) for c in look.colour), "glass", "cylinder"),
            Part(cap, look.accent, "metal", "cylinder"),
            Part(label, (240, 236, 228), "matte", "cylinder", patterned=True)]


def _tube(pen: _Pen, look: Look, rng: np.random.Generator) -> list[Part]:
    if look.subcategory == "paint":
        tube = pen.poly([(40, 8), (60, 8), (64, 70), (36, 70)])
        crimp = pen.rect(38, 4, 62, 10)
        cap = pen.rect(43, 70, 57, 90, r=2)
        return [Part(tube | crimp, (215, 215, 220), "metal", "cylinder"),
                Part(pen.rect(39, 24, 61, 52), look.colour, "matte", "cylinder", patterned=True),
                Part(cap, look.accent, "glossy", "cylinder")]
    if look.subcategory == "pen":
        body = pen.rect(44, 8, 56, 80, r=5)
        tip = pen.poly([(44.5, 80), (55.5, 80), (50, 94)])
        clip_ = pen.rect(55, 12, 58, 38, r=1.5)
        return [Part(body, look.colour, "glossy", "cylinder", patterned=True),
                Part(tip | clip_, (200, 200, 205), "metal", "cylinder")]
    r = rng.uniform(9, 13)
    case = pen.rect(50 - r, 48, 50 + r, 94, r=2)
    ring = pen.rect(50 - r - 1, 44, 50 + r + 1, 50)
    bullet = pen.poly([(50 - r * 0.8, 46), (50 - r * 0.8, 20), (50 + r * 0.8, 10), (50 + r * 0.8, 46)])
    return [Part(bullet, look.colour, "glossy", "cylinder"), Part(case | ring, look.accent, "metal", "cylinder")]


def _textile(pen: _Pen, look: Look, rng: np.random.Generator) -> list[Part]:
    sub = look.subcategory
    if sub == "yarn":
        ball = pen.ellipse(50, 52, 34, 34)
        strands = pen.blank()
        for k in range(7):
            strands |= pen.ellipse(50, 52, 32, 8 + 4 * k, angle=25 * k, thick=0.8)
        return [Part(_minus(ball, strands), look.colour, "matte"), Part(strands & ball, look.accent, "matte")]
    if sub == "socks":
        sock = pen.poly([(34, 6), (56, 6), (56, 58), (82, 72), (82, 90), (60, 92), (34, 68)])
        cuff = pen.rect(34, 6, 56, 18)
        return [Part(sock, look.colour, "matte", patterned=True), Part(cuff, look.accent, "matte")]
    if sub in ("scarf", "blanket", "fabric", "pet bed", "cable organizer"):
        layers = []
        for k in range(rng.integers(3, 5)):
            y = 30 + k * 12
            layers.append(Part(pen.rect(12 + k, y, 88 - k, y + 18, r=7), look.colour if k % 2 == 0 else look.accent,
                               "matte", patterned=True))
        return layers
    inset = rng.uniform(4, 8)
    pillow = pen.poly([(10, 12), (50, 12 + inset), (90, 12), (90 - inset, 50), (90, 88), (50, 88 - inset),
                       (10, 88), (10 + inset, 50)])
    rounded = np.where(cv2.GaussianBlur(pillow, (0, 0), pen.u) > 127, 255, 0).astype(np.uint8)
    return [Part(rounded, look.colour, "matte", patterned=True)]


def _garment(pen: _Pen, look: Look, rng: np.random.Generator) -> list[Part]:
    sub = look.subcategory
    if sub == "hat":
        crown = pen.ellipse(50, 56, 26, 30, start=180, end=360) | pen.rect(24, 48, 76, 58)
        brim = pen.ellipse(50, 60, 44, 10)
        band = pen.rect(24, 48, 76, 55)
        return [Part(brim, look.colour, "matte"), Part(crown, look.colour, "matte", patterned=True),
                Part(band, look.accent, "matte", "cylinder")]
    if sub == "dress":
        flare = rng.uniform(36, 44)
        dress = pen.poly([(40, 8), (44, 8), (50, 14), (56, 8), (60, 8), (62, 40), (50 + flare, 94),
                          (50 - flare, 94), (38, 40)])
        return [Part(dress, look.colour, "matte", patterned=True), Part(pen.rect(38, 38, 62, 43), look.accent, "matte")]
    sleeve = rng.uniform(14, 20) if sub != "t-shirt" else rng.uniform(8, 12)
    shirt = pen.poly([(30, 12), (42, 8), (50, 14), (58, 8), (70, 12), (70 + sleeve, 24 + sleeve),
                      (70 + sleeve - 10, 30 + sleeve), (70, 28), (70, 92), (30, 92), (30, 28),
                      (30 - sleeve + 10, 30 + sleeve), (30 - sleeve, 24 + sleeve)])
    collar = pen.ellipse(50, 10, 9, 6, start=0, end=180, thick=2)
    parts = [Part(shirt, look.colour, "matte", patterned=True), Part(collar, look.accent, "matte")]
    if sub == "hoodie":
        parts.append(Part(pen.rect(38, 60, 62, 76, r=3), look.accent, "matte", "flat"))
    return parts


def _footwear(pen: _Pen, look: Look, rng: np.random.Generator) -> list[Part]:
    heel = rng.uniform(24, 34)
    upper = pen.poly([(12, 74), (12, 50), (18, heel), (38, heel), (44, 46), (70, 52), (88, 62), (90, 74)])
    sole = pen.rect(10, 72, 92, 80, r=4)
    laces = pen.blank()
    for k in range(4):
        laces |= pen.lines([(42 + 5 * k, 45 + 2 * k), (47 + 5 * k, 52 + 2 * k)], 1.4)
    opening = pen.ellipse(28, heel + 2, 10, 3)
    return [Part(_minus(upper, opening), look.colour, look.material, patterned=True),
            Part(sole, (236, 232, 224), "matte", "flat"), Part(laces, look.accent, "matte", "flat")]


def _plush(pen: _Pen, look: Look, rng: np.random.Generator) -> list[Part]:
    bear = pen.demo("bear", look, rng.uniform(0.8, 0.95))
    ys, xs = np.nonzero(bear)
    cx, top = xs.mean() / pen.u, ys.min() / pen.u
    muzzle = pen.ellipse(cx, top + 30, 7, 5)
    eyes = pen.ellipse(cx - 6, top + 22, 1.6, 1.6) | pen.ellipse(cx + 6, top + 22, 1.6, 1.6)
    return [Part(bear, look.colour, "matte"), Part(muzzle, look.accent, "matte"),
            Part(eyes, (20, 18, 18), "glossy")]


def _figure(pen: _Pen, look: Look, rng: np.random.Generator) -> list[Part]:
    if look.subcategory == "sculpture":
        m = pen.blank()
        y = 88.0
        for _ in range(rng.integers(3, 6)):
            w = rng.uniform(14, 30)
            h = rng.uniform(8, 14)
            m |= pen.ellipse(50 + rng.uniform(-8, 8), y - h, w, h, angle=rng.uniform(-20, 20))
            y -= h * 1.6
        return [Part(m, look.colour, look.material)]
    head = pen.ellipse(50, 16, 9, 10)
    torso = pen.rect(38, 26, 62, 58, r=5)
    arms = pen.rect(28, 28, 36, 56, r=4) | pen.rect(64, 28, 72, 56, r=4)
    legs = pen.rect(39, 58, 49, 92, r=3) | pen.rect(51, 58, 61, 92, r=3)
    return [Part(legs | arms, look.accent, "glossy"), Part(torso, look.colour, "glossy", patterned=True),
            Part(head, (226, 190, 160), "glossy")]


def _bag(pen: _Pen, look: Look, rng: np.random.Generator) -> list[Part]:
    sub = look.subcategory
    if sub == "backpack":
        body = pen.rect(24, 18, 76, 92, r=14)
        pocket = pen.rect(32, 58, 68, 86, r=6)
        handle = pen.ellipse(50, 18, 9, 8, start=180, end=360, thick=2.5)
        return [Part(body | handle, look.colour, "matte", patterned=True), Part(pocket, look.accent, "matte", "flat")]
    top, flare = rng.uniform(36, 44), rng.uniform(4, 10)
    body = pen.poly([(22, top), (78, top), (78 + flare, 92), (22 - flare, 92)])
    handle = pen.ellipse(50, top, rng.uniform(14, 20), rng.uniform(18, 26), start=180, end=360, thick=3.0)
    parts = [Part(handle, look.accent, "matte", "round"), Part(body, look.colour, look.material, "flat", patterned=True)]
    if sub in ("pouch", "makeup bag", "crossbody"):
        parts.append(Part(pen.lines([(24, top + 5), (76, top + 5)], 1.2), (200, 195, 185), "metal", "flat"))
    return parts


_BOX_FACES = ((0.0, -0.75, 0.66), (0.0, 0.0, 1.0), (0.75, 0.0, 0.66))


def _box(pen: _Pen, look: Look, rng: np.random.Generator) -> list[Part]:
    if look.subcategory == "phone case":
        case = pen.rect(28, 6, 72, 94, r=8)
        camera = pen.rect(34, 12, 50, 30, r=4)
        lenses = pen.ellipse(38, 17, 2.5, 2.5) | pen.ellipse(45, 24, 2.5, 2.5)
        return [Part(_minus(case, camera), look.colour, look.material, "flat", patterned=True),
                Part(_minus(camera, lenses) & pen.rect(35, 13, 49, 29, r=3), (30, 30, 34), "glossy", "flat")]
    w, h, d = rng.uniform(28, 38), rng.uniform(16, 28), rng.uniform(10, 18)
    x0, y0 = 50 - w - d * 0.3, 50 - h + d * 0.5
    front = pen.poly([(x0, y0), (x0 + 2 * w, y0), (x0 + 2 * w, y0 + 2 * h), (x0, y0 + 2 * h)])
    top = pen.poly([(x0, y0), (x0 + d, y0 - d), (x0 + 2 * w + d, y0 - d), (x0 + 2 * w, y0)])
    side = pen.poly([(x0 + 2 * w, y0), (x0 + 2 * w + d, y0 - d), (x0 + 2 * w + d, y0 + 2 * h - d), (x0 + 2 * w, y0 + 2 * h)])
    label = pen.rect(x0 + w * 0.4, y0 + h * 0.5, x0 + w * 1.6, y0 + h * 1.5, r=2)
    return [Part(top, look.colour, look.material, "face", normal=_BOX_FACES[0]),
            Part(front, look.colour, look.material, "face", patterned=True, normal=_BOX_FACES[1]),
            Part(side, look.colour, look.material, "face", normal=_BOX_FACES[2]),
            Part(label, look.accent, "matte", "face", normal=_BOX_FACES[1])]


def _flat(pen: _Pen, look: Look, rng: np.random.Generator) -> list[Part]:
    sub = look.subcategory
    if sub in ("notebook", "planner"):
        cover = pen.rect(24, 10, 80, 92, r=2)
        holes = pen.blank()
        for k in range(9):
            holes |= pen.ellipse(29, 16 + 9 * k, 1.6, 1.6)
        rings = pen.blank()
        for k in range(9):
            rings |= pen.ellipse(25, 16 + 9 * k, 4, 2, thick=1.0)
        return [Part(_minus(cover, holes), look.colour, "matte", "flat", patterned=True),
                Part(rings, (190, 190, 196), "metal")]
    if sub == "stickers":
        m = pen.blank()
        for k in range(5):
            m |= pen.ellipse(28 + 11 * k, 40 + 12 * (k % 2), 10, 10)
        return [Part(m, look.colour, "glossy", "flat", patterned=True)]
    w = rng.uniform(30, 40)
    h = w * rng.uniform(1.15, 1.4)
    frame = pen.rect(50 - w, 50 - h, 50 + w, 50 + h)
    mat = pen.rect(50 - w + 4, 50 - h + 4, 50 + w - 4, 50 + h - 4)
    art = pen.rect(50 - w + 9, 50 - h + 9, 50 + w - 9, 50 + h - 9)
    hill = pen.ellipse(50 - w * 0.3, 50 + h * 0.6, w * 0.9, h * 0.5) & art
    sun = pen.ellipse(50 + w * 0.35, 50 - h * 0.35, 5, 5)
    return [Part(frame, (110, 78, 50), "wood", "flat"), Part(mat, (240, 238, 232), "matte", "flat"),
            Part(art, look.colour, "matte", "flat", patterned=True), Part(hill, look.accent, "matte", "flat"),
            Part(sun, (250, 210, 120), "matte", "flat")]


def _device(pen: _Pen, look: Look, rng: np.random.Generator) -> list[Part]:
    sub = look.subcategory
    if sub == "headphones":
        band = pen.ellipse(50, 52, 34, 38, start=180, end=360, thick=5)
        cups = pen.rect(8, 46, 26, 80, r=8) | pen.rect(74, 46, 92, 80, r=8)
        pads = pen.rect(22, 50, 30, 76, r=3) | pen.rect(70, 50, 78, 76, r=3)
        return [Part(band, look.accent, "matte"), Part(pads, (40, 40, 44), "matte"),
                Part(cups, look.colour, look.material)]
    if sub == "charger":
        cube = pen.rect(30, 30, 70, 80, r=6)
        prongs = pen.rect(40, 14, 45, 30) | pen.rect(55, 14, 60, 30)
        port = pen.rect(44, 68, 56, 72)
        return [Part(prongs, (200, 200, 205), "metal", "flat"),
                Part(_minus(cube, port), look.colour, "glossy", "flat")]
    body = pen.rect(26, 10, 74, 92, r=12)
    grille = pen.ellipse(50, 58, 18, 18)
    dots = pen.blank()
    for gx in range(-3, 4):
        for gy in range(-3, 4):
            if gx * gx + gy * gy <= 10:
                dots |= pen.ellipse(50 + 4.5 * gx, 58 + 4.5 * gy, 1.2, 1.2)
    tweeter = pen.ellipse(50, 26, 7, 7)
    return [Part(body, look.colour, look.material, "flat", patterned=True),
            Part(_minus(grille, dots) | tweeter, (45, 45, 50), "matte")]


FAMILIES: dict[str, Callable[[_Pen, Look, np.random.Generator], list[Part]]] = {
    "chain": _chain, "band": _band, "rigid-small": _rigid_small, "rigid-large": _rigid_large,
    "vessel": _vessel, "bottle": _bottle, "tube": _tube, "textile": _textile, "garment": _garment,
    "footwear": _footwear, "plush": _plush, "figure": _figure, "bag": _bag, "box": _box,
    "flat": _flat, "device": _device,
}
"""Every form family of the bundled taxonomy, with its drawing."""


@dataclass(frozen=True)
class _Material:
    ambient: float
    diffuse: float
    specular: float
    shininess: float
    metallic: bool = False


_MATERIALS = {
    "metal": _Material(0.30, 0.55, 1.10, 28, metallic=True),
    "glossy": _Material(0.38, 0.70, 0.55, 60),
    "matte": _Material(0.42, 0.68, 0.05, 8),
    "glass": _Material(0.55, 0.45, 0.90, 90),
    "wood": _Material(0.40, 0.65, 0.12, 14),
}


def _heights(part: Part) -> np.ndarray:
    """The part's relief as a height field in pixels; its gradient gives the normals."""
    inside = (part.mask > 0).astype(np.uint8)
    dist = cv2.distanceTransform(inside, cv2.DIST_L2, 5)
    peak = float(dist.max()) or 1.0
    if part.relief == "round":
        t = dist / peak
        return np.sqrt(np.clip(1 - (1 - t) ** 2, 0, 1)) * peak
    bevel = min(peak, max(3.0, part.mask.shape[0] / 90))
    t = np.minimum(dist / bevel, 1.0)
    return np.sqrt(np.clip(1 - (1 - t) ** 2, 0, 1)) * bevel


def _across(inside: np.ndarray) -> np.ndarray:
    """For a body of revolution: -1 at a row's left edge, +1 at its right, by pixel runs."""
    idx = np.arange(inside.shape[1])[None, :]
    last_out = np.maximum.accumulate(np.where(inside, -1, idx), axis=1)
    flipped = inside[:, ::-1]
    next_out = np.maximum.accumulate(np.where(flipped, -1, idx), axis=1)[:, ::-1]
    left = idx - last_out
    right = (inside.shape[1] - 1 - idx) - next_out
    return np.where(inside, (left - right) / np.maximum(left + right, 1), 0.0).astype(np.float32)


def _normals(part: Part) -> np.ndarray:
    inside = part.mask > 0
    if part.relief == "face":
        n = np.broadcast_to(np.array(part.normal, np.float32), (*inside.shape, 3)).copy()
    elif part.relief == "cylinder":
        nx = _across(inside)
        h = _heights(Part(part.mask, part.colour, part.material, "flat"))
        ny = cv2.Sobel(h, cv2.CV_32F, 0, 1, ksize=3) / -8.0
        nz = np.sqrt(np.clip(1 - nx**2, 0.02, 1))
        n = np.dstack([nx, np.clip(ny, -0.8, 0.8), nz])
    else:
        h = _heights(part).astype(np.float32)
        gx = cv2.Sobel(h, cv2.CV_32F, 1, 0, ksize=3) / 8.0
        gy = cv2.Sobel(h, cv2.CV_32F, 0, 1, ksize=3) / 8.0
        n = np.dstack([-gx, -gy, np.ones_like(gx)])
    return n / np.linalg.norm(n, axis=2, keepdims=True)


def _pattern(look: Look, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Where the accent colour shows, 0..1: stripes, dots, a check or nothing."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32) / scale
    if look.pattern == "stripes":
        return (np.sin((xx + yy * 0.35) * 0.9) > 0.55).astype(np.float32)
    if look.pattern == "dots":
        return ((np.sin(xx * 0.8) * np.sin(yy * 0.8)) > 0.72).astype(np.float32)
    if look.pattern == "check":
        return (((xx // 6 + yy // 6) % 2) * 0.6).astype(np.float32)
    return np.zeros(shape, np.float32)


def _surface(material: str, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Fine structure of the material: the weave of fabric, the grain of wood; 1 elsewhere."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32) / scale
    if material == "matte":
        return 0.94 + 0.06 * np.sin(xx * 2.6) * np.sin(yy * 2.6)
    if material == "wood":
        return 0.88 + 0.12 * np.sin(yy * 0.9 + 2.5 * np.sin(xx * 0.05) + np.sin(xx * 0.31))
    return np.ones(shape, np.float32)


def _light(part: Part, look: Look, light: np.ndarray, scale: float) -> np.ndarray:
    """The part lit by a directional light (Blinn-Phong), RGB floats 0..255."""
    mat = _MATERIALS[part.material]
    n = _normals(part)
    diffuse = np.clip(n @ light, 0, 1)
    half = light + np.array([0, 0, 1], np.float32)
    half /= np.linalg.norm(half)
    spec = np.clip(n @ half, 0, 1) ** mat.shininess
    colour = np.empty((*part.mask.shape, 3), np.float32)
    colour[:] = part.colour
    if part.patterned:
        p = _pattern(look, part.mask.shape, scale)[..., None]
        colour = colour * (1 - p) + np.array(look.accent, np.float32) * p
    colour *= _surface(part.material, part.mask.shape, scale)[..., None]
    if mat.metallic:  # a blurred room reflected in the metal: bands that follow the surface
        colour *= (0.75 + 0.35 * np.sin(n[..., 1] * 5.0 + n[..., 0] * 2.0))[..., None]
        highlight = colour * 0.4 + 255 * 0.6
    else:
        highlight = np.full(3, 255, np.float32)
    shaded = colour * (mat.ambient + mat.diffuse * diffuse)[..., None] + mat.specular * spec[..., None] * highlight
    return np.clip(shaded, 0, 255)


def render_product(
    look: Look, size: int, *, light: tuple[float, float, float] = (-0.5, -0.6, 0.65),
    turn: float = 0.0, angle: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """The product on a transparent ``size x size`` canvas: RGB uint8 and alpha float32 0..1.

    ``turn`` in [-1, 1] narrows the drawing as if the product were turned about its
    vertical axis (``cos`` of up to 60 degrees), ``angle`` rotates it in the image plane
    (degrees) and ``light`` is the direction towards the light (x right, y down, z to the
    camera). The same ``look`` always draws the same object.
    """
    big = size * SUPERSAMPLE
    pen = _Pen(big)
    parts = FAMILIES[look.family](pen, look, np.random.default_rng(look.seed))
    direction = np.asarray(light, np.float32)
    direction /= np.linalg.norm(direction)
    scale = big / 200.0
    rgb = np.zeros((big, big, 3), np.float32)
    alpha = np.zeros((big, big), np.float32)
    for part in parts:
        inside = (part.mask > 0).astype(np.float32)
        rgb = rgb * (1 - inside[..., None]) + _light(part, look, direction, scale) * inside[..., None]
        alpha = np.maximum(alpha, inside)
    squeeze = math.cos(math.radians(60 * max(-1.0, min(1.0, turn))))
    matrix = cv2.getRotationMatrix2D((big / 2, big / 2), angle, 1.0)
    matrix[:, 0] *= squeeze  # squeeze x first, then rotate, about the centre
    matrix[:, 2] = big / 2 - matrix[:, :2] @ np.array([big / 2, big / 2])
    rgb = cv2.warpAffine(rgb, matrix, (big, big), flags=cv2.INTER_LINEAR)
    alpha = cv2.warpAffine(alpha, matrix, (big, big), flags=cv2.INTER_LINEAR)
    rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
    alpha = cv2.resize(alpha, (size, size), interpolation=cv2.INTER_AREA)
    return np.clip(rgb, 0, 255).astype(np.uint8), np.clip(alpha, 0, 1)
