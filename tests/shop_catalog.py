"""A two-product catalog that the CPU backends turn into pairs in seconds, ids chosen by the test.

``catalog_factory``'s own media (a gradient video, noise photos) have no product for the
CPU detector and matter to find, so the videos and photos here are the demo's renderings
(a product moving over a textured background, the product on a plain one), one short shot
per video; ``catalog_factory`` writes ``products.csv``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from catalog_factory import make_catalog
from PIL import Image

from pvtt.builder.demo import FPS, PRODUCTS, render_photo, render_shot
from pvtt.builder.video import write_mp4

FRAMES = 12
DEMO = (PRODUCTS[0], PRODUCTS[4])  # a necklace and a mug: both clips keep their product
CONFIG = """
[shots]
min_duration_s = 0.3
min_frames = 8
"""


def write_shop_catalog(root: Path, ids: tuple[str, str]) -> tuple[Path, Path]:
    """The catalog folder at ``root`` and a build config for its short shots, beside it."""
    (root / "videos").mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for pid, demo in zip(ids, DEMO, strict=True):
        rng = np.random.default_rng([0, PRODUCTS.index(demo)])
        frames, box = render_shot(demo, rng, FRAMES)
        write_mp4(root / "videos" / f"{pid}.mp4", frames, FPS)
        photo = f"images/{pid}-1.png"
        Image.fromarray(render_photo(demo, rng)).save(root / photo)
        rows.append(
            {
                "id": pid, "category": demo.category, "subcategory": demo.subcategory,
                "video": f"videos/{pid}.mp4", "images": [photo], "prompt": demo.subcategory,
                "first_frame_box": tuple(round(v) for v in box),
            }
        )  # fmt: skip
    make_catalog(root, rows)
    config = root.parent / "build.toml"
    config.write_text(CONFIG, encoding="utf-8")
    return root, config
