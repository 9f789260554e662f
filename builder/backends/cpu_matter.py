"""A weight-free matter for product photos shot on a plain (or gently graded) background.

Catalogue photos mostly show the product on a studio sweep: whatever touches the photo's
border is background. So the background's colours are learnt from the border, every
pixel is judged by its distance to them, and GrabCut turns that rough guess into a
coherent segmentation. GrabCut runs at a reduced resolution (its cost grows with the
pixel count, and a product silhouette needs no more); the mask is upsampled smoothly
and given a feathered edge at full resolution, where the edge is what shows.
"""

from __future__ import annotations

import cv2
import numpy as np

from pvtt.builder.stages.protocols import BackendInfo

_CLEAR_BACKGROUND = 1.0
"""Distance (robust std units) under which a pixel is background whatever GrabCut says.

GrabCut's smoothness term closes gaps a few pixels wide, such as a chain's links."""


class BorderColourMatter:
    """Cut the product out of a photo by modelling its border colours as the background.

    ``work_size`` is the long side GrabCut works at; ``border_frac`` the width of the
    border strip (as a fraction of the short side) that the background is learnt from;
    ``clusters`` how many background colours are allowed (a sweep with a gradient or
    a floor line needs more than one); ``threshold`` the distance, in robust standard
    deviations of the nearest background colour, beyond which a pixel is first taken
    for product; ``min_component_frac`` keeps every component at least that fraction of
    the largest (a pair of shoes is two components); ``link_frac`` (of the working long
    side) is how wide a gap between pieces of one product may be (dashes of a striped
    ring whose light stripes match the sweep); ``max_hole_frac`` fills enclosed
    holes up to that fraction of the product's area whatever they show (specks), while
    larger ones stay open where they show the background (a mug's handle, a chain's
    links) and are filled where they do not (a label); ``feather_px`` is the
    half-width of the alpha ramp across the edge, in full-resolution pixels.
    """

    def __init__(
        self,
        work_size: int = 320,
        border_frac: float = 0.04,
        clusters: int = 3,
        threshold: float = 4.0,
        grabcut_iters: int = 4,
        min_component_frac: float = 0.15,
        link_frac: float = 0.025,
        max_hole_frac: float = 0.002,
        feather_px: float = 1.5,
    ) -> None:
        self.work_size = work_size
        self.border_frac = border_frac
        self.clusters = clusters
        self.threshold = threshold
        self.grabcut_iters = grabcut_iters
        self.min_component_frac = min_component_frac
        self.link_frac = link_frac
        self.max_hole_frac = max_hole_frac
        self.feather_px = feather_px
        self.info = BackendInfo(
            kind="matter",
            name="cpu-border-grabcut",
            version="3",
            params={
                "work_size": work_size,
                "border_frac": border_frac,
                "clusters": clusters,
                "threshold": threshold,
                "grabcut_iters": grabcut_iters,
                "min_component_frac": min_component_frac,
                "link_frac": link_frac,
                "max_hole_frac": max_hole_frac,
                "feather_px": feather_px,
            },
        )

    def matte(self, image: np.ndarray) -> np.ndarray:
        """An RGBA ``H x W x 4`` uint8 cut-out of the product (alpha 0 everywhere if none)."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image must be RGB H x W x 3 uint8, got {image.dtype} {image.shape}")
        h, w = image.shape[:2]
        scale = min(1.0, self.work_size / max(h, w))
        small = cv2.resize(
            image,
            (max(1, round(w * scale)), max(1, round(h * scale))),
            interpolation=cv2.INTER_AREA,
        )
        mask = self._segment(small)
        alpha = _feathered_alpha(mask, (w, h), self.feather_px)
        return np.dstack([image, alpha])

    def _segment(self, small: np.ndarray) -> np.ndarray:
        """The product's mask at working resolution."""
        h, w = small.shape[:2]
        lab = cv2.cvtColor(small.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
        strip = max(2, round(self.border_frac * min(h, w)))
        border = np.ones((h, w), bool)
        border[strip:-strip, strip:-strip] = False
        colour, surface = _background_distance(lab, border, self.clusters)
        distance = np.maximum(colour, _texture_distance(lab[..., 0], border))
        product = distance > self.threshold
        if not product[~border].any():
            return np.zeros((h, w), bool)
        seed = np.full((h, w), cv2.GC_PR_BGD, np.uint8)
        seed[product] = cv2.GC_PR_FGD
        seed[border & ~product] = cv2.GC_BGD
        core = cv2.erode(
            (colour > 2 * self.threshold).astype(np.uint8), np.ones((5, 5), np.uint8)
        )
        seed[(core > 0) & ~border] = cv2.GC_FGD
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        cv2.setRNGSeed(0)  # GrabCut seeds its colour models by k-means on OpenCV's global RNG
        cv2.grabCut(small, seed, None, bgd, fgd, self.grabcut_iters, cv2.GC_INIT_WITH_MASK)
        mask = (seed == cv2.GC_FGD) | (seed == cv2.GC_PR_FGD)
        mask &= distance >= _CLEAR_BACKGROUND
        link = max(2, round(self.link_frac * max(h, w)))
        mask = _linked_product(mask, colour >= self.threshold / 2, link, self.min_component_frac)
        return _fill_holes(mask, surface, self.max_hole_frac, self.threshold / 2)


def _background_distance(
    lab: np.ndarray, border: np.ndarray, clusters: int
) -> tuple[np.ndarray, np.ndarray]:
    """Distance of every pixel to the background expected there, in robust std units.

    Returns the distance to either model (a pixel is background if either explains it)
    and the distance to the surface alone (what a see-through hole must match). The two
    models of the border: a smooth surface (a quadratic in x and y per Lab channel) for
    a sweep lit with a gradient, and a few colour clusters for a border of several flat
    colours. Both are fitted robustly (trimmed least squares, medians), so a product
    touching the edge does not drag them, and their spread is the median absolute
    residual, kept within 1.5 to 6 Lab units so a busy border does not swallow
    everything and a clean one does not flag sensor noise.
    """
    h, w = border.shape
    ys, xs = np.mgrid[0:h, 0:w]
    u, v = (2 * xs / max(w - 1, 1) - 1).ravel(), (2 * ys / max(h - 1, 1) - 1).ravel()
    basis = np.stack([np.ones_like(u), u, v, u * u, u * v, v * v], axis=1).astype(np.float32)
    flat = lab.reshape(-1, 3)
    on_border = border.ravel()
    samples, sample_basis = flat[on_border], basis[on_border]
    keep = np.ones(len(samples), bool)
    for _ in range(3):
        coef = np.linalg.lstsq(sample_basis[keep], samples[keep], rcond=None)[0]
        residual = np.linalg.norm(samples - sample_basis @ coef, axis=1)
        spread = float(np.clip(1.4826 * np.median(residual[keep]), 1.5, 6.0))
        keep = residual < 2.5 * spread
    surface = np.linalg.norm(flat - basis @ coef, axis=1) / spread
    either = np.minimum(surface, _cluster_distance(flat, samples, clusters))
    return either.reshape(h, w), surface.reshape(h, w)


def _texture_distance(lightness: np.ndarray, border: np.ndarray, window: int = 5) -> np.ndarray:
    """How much rougher each pixel's neighbourhood is than the border's, in robust std
    units of the border's local roughness (its local standard deviation of L).

    A white product on a white sweep differs little in colour, but its surface has grain,
    print and shading edges where the sweep is smooth; colour alone loses it in parts.
    """
    mean = cv2.blur(lightness, (window, window))
    sq = cv2.blur(lightness * lightness, (window, window))
    rough = np.sqrt(np.maximum(sq - mean * mean, 0.0))
    level = float(np.median(rough[border]))
    spread = max(1.4826 * float(np.median(np.abs(rough[border] - level))), 0.25)
    # a window straddling any edge is rough: only a pixel whose whole window is rough
    # counts, so the outline does not grow a halo of background
    rough = cv2.erode(rough, np.ones((window, window), np.uint8))
    return (rough - level) / spread


def _cluster_distance(flat: np.ndarray, samples: np.ndarray, clusters: int) -> np.ndarray:
    """Distance to the nearest border colour cluster (deterministic k-means on medians).

    Seeded by the median and then the farthest points; clusters holding under 5 % of the
    border are dropped as the product touching the edge.
    """
    centres = [np.median(samples, axis=0)]
    for _ in range(1, clusters):
        gaps = np.min([np.linalg.norm(samples - c, axis=1) for c in centres], axis=0)
        centres.append(samples[int(np.argmax(gaps))])
    centres_arr = np.array(centres, np.float32)
    for _ in range(8):
        labels = np.argmin(np.linalg.norm(samples[:, None, :] - centres_arr[None], axis=2), axis=1)
        centres_arr = np.array(
            [
                np.median(samples[labels == k], axis=0) if np.any(labels == k) else centre
                for k, centre in enumerate(centres_arr)
            ],
            np.float32,
        )
    best = np.full(len(flat), np.inf, np.float32)
    for k, centre in enumerate(centres_arr):
        members = samples[labels == k]
        if len(members) < 0.05 * len(samples):
            continue
        spread = np.clip(1.4826 * np.median(np.linalg.norm(members - centre, axis=1)), 1.5, 6.0)
        best = np.minimum(best, np.linalg.norm(flat - centre, axis=1) / spread)
    return best


def _linked_product(mask: np.ndarray, faint: np.ndarray, link: int, min_frac: float) -> np.ndarray:
    """The product's pieces, linked across gaps narrower than ``2 * link`` px.

    A striped silver ring on a light grey sweep reaches the mask as dashes: its light
    stripes differ from the sweep by a few Lab units, under the threshold. Closing the
    mask joins the dashes into one piece, so none is dropped as a speck; within that
    piece, the gaps are filled where they differ at all from the background (``faint``),
    not where they show it (a ring's hole, the sweep between two shoes). Pieces of the
    closed mask smaller than ``min_frac`` of the largest are dropped (specks, dust).
    """
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * link + 1, 2 * link + 1))
    closed = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, kernel) > 0
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        closed.astype(np.uint8), connectivity=8
    )
    if count <= 1:
        return mask
    areas = stats[1:, cv2.CC_STAT_AREA]
    kept = np.isin(labels, np.flatnonzero(areas >= min_frac * areas.max()) + 1)
    return kept & (mask | faint)


def _fill_holes(
    mask: np.ndarray, surface: np.ndarray, max_frac: float, see_through: float
) -> np.ndarray:
    """Fill the regions enclosed by the product, except those that show the background.

    A hole is kept when it is larger than ``max_frac`` of the product's area and its
    pixels match the background surface expected at that place (median distance under
    ``see_through``): a mug's handle, the links of a chain (a few dozen pixels each, so
    ``max_frac`` is kept to specks). Anything else enclosed (a white label on a white
    product photographed on white, a specular speck) is product.
    """
    _, labels, stats, _ = cv2.connectedComponentsWithStats((~mask).astype(np.uint8), connectivity=4)
    h, w = mask.shape
    x, y = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    enclosed = (
        (x > 0)
        & (y > 0)
        & (x + stats[:, cv2.CC_STAT_WIDTH] < w)
        & (y + stats[:, cv2.CC_STAT_HEIGHT] < h)
    )
    enclosed[0] = False
    small = enclosed & (stats[:, cv2.CC_STAT_AREA] <= max_frac * mask.sum())
    filled = mask | np.isin(labels, np.flatnonzero(small))
    for label in np.flatnonzero(enclosed & ~small):
        hole = labels == label
        if np.median(surface[hole]) >= see_through:
            filled |= hole
    return filled


def _feathered_alpha(mask: np.ndarray, size: tuple[int, int], feather_px: float) -> np.ndarray:
    """Upsample ``mask`` to ``size`` and give it a linear alpha ramp across the edge.

    The mask is blurred before upsampling so the full-resolution edge is smooth rather
    than staircased; the ramp comes from the signed distance to that edge, so it is
    ``2 * feather_px`` wide wherever the edge is, whatever the working scale was.
    """
    soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 0.8)
    full = cv2.resize(soft, size, interpolation=cv2.INTER_LINEAR) >= 0.5
    if feather_px <= 0:
        return full.astype(np.uint8) * 255
    inside = cv2.distanceTransform(full.astype(np.uint8), cv2.DIST_L2, 5)
    outside = cv2.distanceTransform((~full).astype(np.uint8), cv2.DIST_L2, 5)
    signed = np.where(full, inside - 0.5, 0.5 - outside)
    alpha = np.clip(0.5 + signed / (2.0 * feather_px), 0.0, 1.0)
    return np.round(alpha * 255).astype(np.uint8)
