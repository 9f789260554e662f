"""A synthetic catalog shaped like the seed's Etsy catalog, for end-to-end rehearsals.

The seed plan's catalog is 53 Etsy products in 11 categories, each with one multi-shot
showcase video (3-5 shots of 3-10 s, 720p) and 3-8 photos. ``pvtt demo`` draws a small
toy catalog; this one draws a catalog of any size with the real one's shape, so a build
can be rehearsed (and timed) before the real data arrives:

- ids like Etsy listing slugs, ``etsy-1234567890-handmade-sterling-silver-necklace``,
  so pair ids (three ids joined) are as long as real ones;
- categories cycle over the bundled taxonomy's first 11; the first products are chosen
  so that even a small catalog has rings, chains, mugs, vases, bottles, boxes and bags,
  and easy, medium, hard and expert pairs;
- photos named like Etsy's (``il_fullxfull.<number>_<code>.jpg``): a plain main photo,
  then other views, colour backdrops, close crops and lifestyle shots;
- each video is 3-5 shots on different textured sets with camera moves and hard cuts.

``scale`` shrinks frames and photos (and ``fps``/``shot_seconds`` can shorten videos)
for tests; the PoC size is ``make_rehearsal_catalog(root, products=10)``.
"""

from __future__ import annotations

import colorsys
import csv
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pvtt.builder.rehearsal_scenes import (
    MOVES,
    SETS,
    ShotPlan,
    mp4_writer,
    render_photo,
    render_shot,
)
from pvtt.builder.rehearsal_shapes import PATTERNS, Look
from pvtt.schemas.taxonomy import Taxonomy

CATEGORIES = 11
"""The seed's catalog spans 11 categories; the bundled taxonomy's first 11 are used."""
FRAME = (1280, 720)
PHOTO = 1000
HEAD = (
    ("Jewelry", "necklace"), ("Home", "mug"), ("Jewelry", "ring"), ("Beauty", "perfume"),
    ("Home", "vase"), ("Toys", "board game"), ("Accessories", "keychain"), ("Bags", "tote"),
    ("Jewelry", "necklace"), ("Clothing", "t-shirt"), ("Art", "ceramic"), ("Craft Supplies", "yarn"),
    ("Pet Supplies", "leash"), ("Electronics Accessories", "headphones"), ("Toys", "stuffed animal"),
    ("Beauty", "lipstick"), ("Clothing", "shoes"), ("Accessories", "sunglasses"), ("Home", "candle"),
    ("Jewelry", "watch"),
)
"""The first products: every shape the brief names, and all four difficulties from 4 on."""

_MATERIAL_BY_FAMILY = {
    "chain": "metal", "band": "matte", "rigid-small": "metal", "rigid-large": "wood",
    "vessel": "glossy", "bottle": "glass", "tube": "glossy", "textile": "matte",
    "garment": "matte", "footwear": "matte", "plush": "matte", "figure": "glossy",
    "bag": "matte", "box": "matte", "flat": "matte", "device": "glossy",
}
_WORDS = {
    "metal": ("sterling-silver", "gold-filled", "rose-gold", "brass", "stainless-steel"),
    "glossy": ("ceramic", "glazed-stoneware", "porcelain", "resin", "enamel"),
    "matte": ("cotton", "linen", "felt", "wool", "leather", "kraft"),
    "glass": ("glass", "amber-glass", "frosted-glass", "crystal"),
    "wood": ("wooden", "oak", "walnut", "bamboo"),
}
_ADJECTIVES = (
    "handmade", "personalized", "minimalist", "vintage", "dainty", "rustic", "boho", "custom",
    "modern", "handcrafted", "unique", "cute", "organic", "artisan",
)
_TAILS = ("", "", "", "gift-for-her", "gift-for-him", "birthday-gift", "set-of-2", "christmas-gift")
_METALS = ((212, 175, 55), (192, 192, 200), (183, 110, 121), (181, 166, 66), (170, 170, 178))
_PHOTO_KINDS = ("colour", "detail", "plain", "lifestyle")


@dataclass(frozen=True)
class RehearsalProduct:
    """One product of the catalog and how it is filmed and photographed."""

    id: str
    category: str
    subcategory: str
    look: Look
    prompt: str
    shots: tuple[ShotPlan, ...]
    photos: tuple[str, ...]
    """The kind of each photo (see :func:`pvtt.builder.rehearsal_scenes.render_photo`)."""


@dataclass(frozen=True)
class RehearsalCatalog:
    """What :func:`make_rehearsal_catalog` wrote: the folder and the sizes a build will see."""

    root: Path
    products: tuple[RehearsalProduct, ...]
    frame: tuple[int, int]
    fps: float

    @property
    def shots(self) -> int:
        return sum(len(p.shots) for p in self.products)

    @property
    def images(self) -> int:
        return sum(len(p.photos) for p in self.products)

    @property
    def frames(self) -> int:
        return sum(s.frames for p in self.products for s in p.shots)

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(sorted({p.category for p in self.products}))


def _colour(rng: np.random.Generator, material: str) -> tuple[int, int, int]:
    if material == "metal":
        return _METALS[int(rng.integers(len(_METALS)))]
    r, g, b = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.35, 0.8), rng.uniform(0.45, 0.9))
    return int(r * 255), int(g * 255), int(b * 255)


def _name(rng: np.random.Generator, material: str, subcategory: str) -> tuple[str, str]:
    """A listing slug (``handmade-sterling-silver-necklace``) and the prompt it implies."""
    made_of = str(rng.choice(_WORDS[material]))
    noun = subcategory.replace(" ", "-")
    tail = str(rng.choice(_TAILS))
    slug = "-".join([str(rng.choice(_ADJECTIVES)), made_of, noun] + ([tail] if tail else []))
    return slug, f"{made_of.replace('-', ' ')} {subcategory}"


def _pick(index: int, rng: np.random.Generator, taxonomy: Taxonomy, categories: Sequence[str]) -> tuple[str, str]:
    if index < len(HEAD) and HEAD[index][0] in categories:
        return HEAD[index]
    category = categories[index % len(categories)]
    subs = taxonomy.subcategories(category)
    return category, subs[int(rng.integers(len(subs)))]


def _shots(rng: np.random.Generator, fps: float, count: int, seconds: tuple[float, float]) -> tuple[ShotPlan, ...]:
    sets = [str(s) for s in rng.permutation(SETS)]
    plans = []
    for k in range(count):
        plans.append(
            ShotPlan(
                frames=max(1, round(rng.uniform(*seconds) * fps)),
                set_kind=sets[k % len(sets)],  # never the same set twice in a row: a hard cut
                move=str(rng.choice(MOVES)),
                turn=float(rng.uniform(-0.6, 0.6)),
                size=float(rng.uniform(0.4, 0.62)),
                seed=int(rng.integers(1 << 62)),
            )
        )
    return tuple(plans)


def plan_rehearsal_catalog(
    products: int = 10,
    *,
    seed: int = 0,
    fps: float = 24.0,
    shots: tuple[int, int] = (3, 5),
    shot_seconds: tuple[float, float] = (3.0, 10.0),
    photos: tuple[int, int] = (3, 8),
    taxonomy: Taxonomy | None = None,
) -> tuple[RehearsalProduct, ...]:
    """The products of a rehearsal catalog (nothing written): a pure function of the arguments.

    ``shots`` and ``photos`` are inclusive ranges per product; ``shot_seconds`` the range
    of a shot's length.
    """
    if products < 1:
        raise ValueError(f"products must be at least 1, got {products}")
    taxonomy = taxonomy or Taxonomy.default()
    categories = taxonomy.categories[:CATEGORIES]
    rng = np.random.default_rng(seed)
    listings = rng.choice(np.arange(1_000_000_000, 1_999_999_999, 7919), size=products, replace=False)
    out = []
    for i in range(products):
        category, sub = _pick(i, rng, taxonomy, categories)
        family = taxonomy.form_family(category, sub)
        material = _MATERIAL_BY_FAMILY.get(family, "matte")
        look = Look(
            family=family, subcategory=sub, colour=_colour(rng, material), accent=_colour(rng, "glossy"),
            material=material, pattern=str(rng.choice(PATTERNS)), seed=int(rng.integers(1 << 62)),
        )
        slug, prompt = _name(rng, material, sub)
        n_photos = int(rng.integers(photos[0], photos[1] + 1))
        kinds = ("plain",) + tuple(_PHOTO_KINDS[k % len(_PHOTO_KINDS)] for k in range(n_photos - 1))
        out.append(
            RehearsalProduct(
                id=f"etsy-{int(listings[i])}-{slug}",
                category=category,
                subcategory=sub,
                look=look,
                prompt=prompt,
                shots=_shots(rng, fps, int(rng.integers(shots[0], shots[1] + 1)), shot_seconds),
                photos=kinds,
            )
        )
    return tuple(out)


def _even(value: float) -> int:
    return max(2, int(round(value / 2)) * 2)


def _photo_name(rng: np.random.Generator) -> str:
    code = "".join(rng.choice(list(string.ascii_lowercase + string.digits), 4))
    return f"il_fullxfull.{int(rng.integers(1_000_000_000, 6_999_999_999))}_{code}.jpg"


def make_rehearsal_catalog(
    root: str | Path,
    products: int = 10,
    *,
    seed: int = 0,
    scale: float = 1.0,
    fps: float = 24.0,
    shots: tuple[int, int] = (3, 5),
    shot_seconds: tuple[float, float] = (3.0, 10.0),
    photos: tuple[int, int] = (3, 8),
) -> RehearsalCatalog:
    """Write a rehearsal catalog (``products.csv``, ``videos/``, ``images/``) into ``root``.

    Frames are ``1280x720 * scale`` and photos ``1000 px * scale`` on their long side;
    the catalog passes ``pvtt catalog check``. Frames stream to the encoder, so memory
    stays flat whatever the size.
    """
    root = Path(root)
    plan = plan_rehearsal_catalog(
        products, seed=seed, fps=fps, shots=shots, shot_seconds=shot_seconds, photos=photos
    )
    frame = (_even(FRAME[0] * scale), _even(FRAME[1] * scale))
    photo_side = _even(PHOTO * scale)
    (root / "videos").mkdir(parents=True, exist_ok=True)
    rows = []
    for index, product in enumerate(plan):
        rng = np.random.default_rng([seed, index])
        first_box = None
        with mp4_writer(root / "videos" / f"{product.id}.mp4", frame, fps) as write:
            for shot in product.shots:
                for image, box in render_shot(product.look, shot, frame):
                    write(image)
                    if first_box is None:
                        first_box = box
        folder = root / "images" / product.id
        folder.mkdir(parents=True, exist_ok=True)
        images = []
        for k, kind in enumerate(product.photos):
            size = (photo_side, photo_side) if k % 2 == 0 else (photo_side, _even(photo_side * 0.75))
            name = f"images/{product.id}/{_photo_name(rng)}"
            Image.fromarray(render_photo(product.look, rng, size, kind)).save(root / name, quality=90)
            images.append(name)
        rows.append(
            {
                "id": product.id, "category": product.category, "subcategory": product.subcategory,
                "video": f"videos/{product.id}.mp4", "images": ";".join(images), "prompt": product.prompt,
                "first_frame_box": "" if first_box is None else ",".join(str(int(v)) for v in first_box),
            }
        )
    with open(root / "products.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return RehearsalCatalog(root, plan, frame, fps)
