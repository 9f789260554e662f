"""Per-image work: the product cut-out (RGBA, trimmed to its alpha box), its completeness
check and the photo's near-duplicate fingerprint, cached: all depend on the photo alone,
not on the pairs using it."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pvtt.builder.cache import ArtifactCache, cache_key, file_digest
from pvtt.builder.pairs import ImageRef
from pvtt.builder.report import BuildReport
from pvtt.builder.stages.checks import cutout_completeness
from pvtt.builder.stages.cutout import cutout_aspect, trim_to_alpha
from pvtt.builder.stages.dedup import Fingerprint, fingerprint
from pvtt.builder.stages.protocols import Matter, StageRejected

MATTE_STAGE_VERSION = "1"


@dataclass
class ProductArtefacts:
    ref: ImageRef
    image_bytes: bytes
    width: int
    height: int
    cutout: np.ndarray
    cutout_png: bytes
    aspect: float
    completeness: float
    """The ``cutout`` hard check (:func:`~pvtt.builder.stages.checks.cutout_completeness`)."""
    fingerprint: Fingerprint
    """Of the photo, for near-duplicates across products (:mod:`pvtt.builder.stages.dedup`)."""


def load_rgb(data: bytes, name: str) -> np.ndarray:
    """Decode any photo PIL reads (CMYK, 16-bit, palette, EXIF-rotated) as upright RGB."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img = ImageOps.exif_transpose(img)
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(img, dtype=np.float64)
                img = Image.fromarray((arr / max(arr.max(), 1) * 255).astype(np.uint8))
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                img = Image.alpha_composite(white, rgba)
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise StageRejected(f"{name}: image does not decode ({exc})") from None


def encode_png(rgba: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA" if rgba.shape[2] == 4 else "RGB").save(buf, format="PNG")
    return buf.getvalue()


def prepare_image(
    ref: ImageRef, matter: Matter, cache: ArtifactCache, report: BuildReport
) -> ProductArtefacts:
    """The trimmed RGBA cut-out of one product photo; raises StageRejected."""
    data = ref.path.read_bytes()
    key = cache_key("matte", MATTE_STAGE_VERSION, file_digest(ref.path), matter.info.fingerprint())
    hit = cache.get(key)
    if hit is not None:
        meta, blobs = hit
        if meta.get("rejected"):
            raise StageRejected(meta["rejected"])
        png = blobs["cutout"]
        cutout = np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))
        completeness, prints = meta.get("completeness"), meta.get("fingerprint")
        if completeness is None or prints is None:  # cached before these were part of the stage
            image = load_rgb(data, str(ref.path))
            with report.timed("cutout-check"):
                completeness = cutout_completeness(image, cutout)
            with report.timed("dedup-photos"):
                prints = fingerprint(image).as_json()
        return ProductArtefacts(ref, data, meta["width"], meta["height"], cutout, png,
                                meta["aspect"], completeness, Fingerprint.from_json(prints))
    image = load_rgb(data, str(ref.path))
    try:
        with report.timed("matte"):
            cutout = trim_to_alpha(matter.matte(image))
    except StageRejected as exc:
        cache.put(key, {"rejected": f"{ref.path.name}: {exc.reason}"}, {})
        raise StageRejected(f"{ref.path.name}: {exc.reason}") from None
    png = encode_png(cutout)
    aspect = cutout_aspect(cutout)
    with report.timed("cutout-check"):
        completeness = cutout_completeness(image, cutout)
    with report.timed("dedup-photos"):
        prints = fingerprint(image)
    height, width = image.shape[:2]
    cache.put(key, {"width": width, "height": height, "aspect": aspect,
                    "completeness": completeness, "fingerprint": prints.as_json()},
              {"cutout": png})
    return ProductArtefacts(ref, data, width, height, cutout, png, aspect, completeness, prints)


def photo_fingerprint(ref: ImageRef) -> Fingerprint:
    """The fingerprint :func:`prepare_image` stores, without the cut-out (``pvtt plan``)."""
    return fingerprint(load_rgb(ref.path.read_bytes(), str(ref.path)))
