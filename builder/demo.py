"""A synthetic catalog for ``pvtt demo``: no downloads, every difficulty present.

Each product is a drawn object (its own shape, colour and pattern) filmed in two
shots over textured backgrounds with camera motion, the object moving along a
smooth path; its photos show it on a plain background, as product photos do.
The catalog spans four categories so that easy, medium, hard and expert pairs
all occur.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from pvtt.builder.video import write_mp4

SIZE = (384, 216)
FPS = 24
SHOT_FRAMES = 60
PHOTO = 256


@dataclass(frozen=True)
class DemoProduct:
    id: str
    category: str
    subcategory: str
    shape: str
    colour: tuple[int, int, int]
    accent: tuple[int, int, int]
    aspect: float


PRODUCTS = (
    DemoProduct("neck-gold", "Jewelry", "necklace", "ring", (212, 170, 60), (250, 230, 140), 1.0),
    DemoProduct("neck-silver", "Jewelry", "necklace", "ring", (170, 175, 185), (235, 240, 250), 1.1),
    DemoProduct("ring-ruby", "Jewelry", "ring", "gem", (190, 30, 60), (255, 140, 160), 0.9),
    DemoProduct("key-fob", "Accessories", "keychain", "ring", (40, 110, 200), (150, 200, 255), 0.8),
    DemoProduct("mug-blue", "Home", "mug", "mug", (30, 70, 160), (230, 230, 240), 1.25),
    DemoProduct("bear-brown", "Toys", "stuffed animal", "bear", (130, 85, 45), (220, 180, 140), 0.85),
)


def draw_product(p: DemoProduct, size: int, angle: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The product on a transparent canvas: RGB ``size x size x 3`` and a bool mask."""
    img = np.zeros((size, size, 3), np.uint8)
    mask = np.zeros((size, size), np.uint8)
    c = size // 2
    w = int(size * 0.36 * min(1.0, p.aspect))
    h = int(size * 0.36 / max(1.0, p.aspect))
    if p.shape == "ring":
        cv2.ellipse(mask, (c, c), (w, h), angle, 0, 360, 255, thickness=max(6, size // 10))
        cv2.circle(mask, (c, c + h), size // 12, 255, -1)
    elif p.shape == "gem":
        cv2.ellipse(mask, (c, c + h // 3), (w, h // 2), angle, 0, 360, 255, thickness=max(5, size // 14))
        pts = np.array([[c - w // 2, c - h // 4], [c, c - h], [c + w // 2, c - h // 4], [c, c]], np.int32)
        cv2.fillPoly(mask, [pts], 255)
    elif p.shape == "mug":
        cv2.rectangle(mask, (c - w, c - h), (c + w // 2, c + h), 255, -1)
        cv2.ellipse(mask, (c + w // 2, c), (w // 2, h // 2), 0, -90, 90, 255, thickness=max(5, size // 16))
    else:  # bear
        cv2.circle(mask, (c, c + h // 4), int(h * 0.7), 255, -1)
        cv2.circle(mask, (c, c - h // 2), int(h * 0.45), 255, -1)
        for dx in (-1, 1):
            cv2.circle(mask, (c + dx * int(h * 0.35), c - int(h * 0.9)), int(h * 0.18), 255, -1)
    yy, xx = np.mgrid[0:size, 0:size]
    stripes = ((xx + yy) // max(4, size // 16)) % 2 == 0
    img[:] = p.colour
    img[stripes] = p.accent
    shade = 0.75 + 0.25 * (1 - yy / size)
    img = (img * shade[..., None]).astype(np.uint8)
    return img, mask > 0


def _texture(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    noise = rng.random((h // 8 + 1, w // 8 + 1, 3)).astype(np.float32)
    base = cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)
    fine = cv2.GaussianBlur(rng.random((h, w, 3)).astype(np.float32), (0, 0), 1.5)
    # a set under white light: patches of colour, none the whole frame shares (a shared
    # tint would be a coloured light that the products filmed in it do not get)
    patches = rng.uniform(0.3, 0.9, (3, 4, 3)).astype(np.float32)
    tint = cv2.resize(patches, (w, h), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:h, 0:w]
    tiles = (((xx // 24) + (yy // 24)) % 2).astype(np.float32)[..., None] * 0.12
    img = 0.55 * base * tint + 0.25 * fine + tiles + 0.1
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def render_shot(p: DemoProduct, rng: np.random.Generator, frames: int = SHOT_FRAMES) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """One shot: a panning textured background, the product moving on a smooth path.

    Returns the frames and the product's box on the first frame.
    """
    width, height = SIZE
    pad = 48
    bg = _texture(rng, (height + 2 * pad, width + 2 * pad))
    obj_size = int(height * rng.uniform(0.45, 0.6))
    sprite, mask = draw_product(p, obj_size, angle=float(rng.uniform(-15, 15)))
    ys, xs = np.nonzero(mask)
    pan = rng.uniform(-1, 1, 2) * pad * 0.8
    centre = np.array([width * rng.uniform(0.35, 0.65), height * rng.uniform(0.4, 0.6)])
    drift = rng.uniform(-1, 1, 2) * np.array([width * 0.15, height * 0.08])
    out = np.empty((frames, height, width, 3), np.uint8)
    first_box = (0.0, 0.0, 0.0, 0.0)
    for t in range(frames):
        s = t / max(frames - 1, 1)
        ox, oy = (pad + pan * (s - 0.5)).astype(int)
        frame = bg[oy : oy + height, ox : ox + width].copy()
        cx, cy = centre + drift * np.sin(np.pi * s) + np.array([np.sin(6 * s), np.cos(5 * s)]) * 3
        x0, y0 = int(cx - obj_size / 2), int(cy - obj_size / 2)
        x_lo, y_lo = max(0, x0), max(0, y0)
        x_hi, y_hi = min(width, x0 + obj_size), min(height, y0 + obj_size)
        sub = mask[y_lo - y0 : y_hi - y0, x_lo - x0 : x_hi - x0]
        region = frame[y_lo:y_hi, x_lo:x_hi]
        region[sub] = sprite[y_lo - y0 : y_hi - y0, x_lo - x0 : x_hi - x0][sub]
        out[t] = frame
        if t == 0:
            first_box = (float(x0 + xs.min()), float(y0 + ys.min()), float(x0 + xs.max() + 1), float(y0 + ys.max() + 1))
    return out, first_box


def render_photo(p: DemoProduct, rng: np.random.Generator) -> np.ndarray:
    """A product photo: the object on a plain, slightly graded light background."""
    bg_level = rng.uniform(225, 250)
    yy = np.linspace(0, 1, PHOTO)[:, None, None]
    photo = np.clip(bg_level - 12 * yy + np.zeros((PHOTO, PHOTO, 3)), 0, 255).astype(np.uint8)
    sprite, mask = draw_product(p, int(PHOTO * 0.8), angle=float(rng.uniform(-20, 20)))
    off = (PHOTO - sprite.shape[0]) // 2
    region = photo[off : off + sprite.shape[0], off : off + sprite.shape[1]]
    region[mask] = sprite[mask]
    return photo


def make_demo_catalog(
    root: str | Path,
    *,
    seed: int = 0,
    shot_frames: int = SHOT_FRAMES,
    products: Sequence[DemoProduct] = PRODUCTS,
) -> Path:
    """Write the synthetic catalog (videos, photos, products.csv) into ``root``."""
    root = Path(root)
    (root / "videos").mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for p in products:
        rng = np.random.default_rng([seed, PRODUCTS.index(p) if p in PRODUCTS else len(rows)])
        shots, first_box = [], None
        for _shot in range(2):
            frames, box = render_shot(p, rng, shot_frames)
            shots.append(frames)
            first_box = first_box or box
        write_mp4(root / "videos" / f"{p.id}.mp4", np.concatenate(shots), FPS)
        images = []
        for k in range(2):
            name = f"images/{p.id}-{k + 1}.png"
            Image.fromarray(render_photo(p, rng)).save(root / name)
            images.append(name)
        rows.append(
            {
                "id": p.id, "category": p.category, "subcategory": p.subcategory,
                "video": f"videos/{p.id}.mp4", "images": ";".join(images),
                "prompt": f"{p.subcategory}",
                "first_frame_box": ",".join(f"{v:.0f}" for v in first_box),
            }
        )
    with open(root / "products.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root
