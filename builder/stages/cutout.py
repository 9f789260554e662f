"""Geometry of a product cut-out: its tight crop, its shape, and where it lands in a box.

The matter returns an untrimmed RGBA image; boxes, aspect ratios and the inserter all
speak about the product itself, so everything downstream works on the trimmed cut-out.
:func:`placement_matrix` is the single definition of how a cut-out is stretched over a
box, shared by the inserter (to paste) and the scorer (to find what was pasted), so the
two agree to the sub-pixel.
"""

from __future__ import annotations

import numpy as np

from pvtt.builder.stages.protocols import StageRejected


def _check_rgba(rgba: np.ndarray) -> None:
    if rgba.dtype != np.uint8 or rgba.ndim != 3 or rgba.shape[2] != 4:
        raise ValueError(
            f"cut-out must be an RGBA H x W x 4 uint8 array, got {rgba.dtype} {rgba.shape}"
        )


def trim_to_alpha(rgba: np.ndarray, threshold: int = 8) -> np.ndarray:
    """Crop ``rgba`` to the bounding box of the pixels whose alpha exceeds ``threshold``.

    The threshold ignores the faint haze a matting model leaves over the background,
    which would otherwise stretch the box to the whole photo.
    Raises :class:`StageRejected` when no pixel is that opaque (nothing was cut out).
    """
    _check_rgba(rgba)
    opaque = rgba[..., 3] > threshold
    rows = np.flatnonzero(opaque.any(axis=1))
    if rows.size == 0:
        h, w = rgba.shape[:2]
        raise StageRejected(f"empty cut-out: no pixel of the {w}x{h} image has alpha > {threshold}")
    cols = np.flatnonzero(opaque.any(axis=0))
    return np.ascontiguousarray(rgba[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])


def cutout_aspect(rgba: np.ndarray) -> float:
    """Width over height of the trimmed cut-out: the shape boxes are adapted to."""
    trimmed = trim_to_alpha(rgba)
    return trimmed.shape[1] / trimmed.shape[0]


def placement_matrix(
    src_w: int, src_h: int, box: np.ndarray, origin: tuple[float, float] = (0.0, 0.0)
) -> np.ndarray:
    """The 2 x 3 affine map from pixels of a ``src_w x src_h`` image to frame pixels.

    The image is stretched so that its outer edges lie on the box ``[x0, y0, x1, y1]``
    (continuous coordinates: pixel ``i`` covers ``[i, i + 1)``), so a box with fractional
    corners places the image with sub-pixel accuracy. ``origin`` is subtracted, to map
    into a region of interest whose top-left frame pixel is ``origin``.
    Pass it to ``cv2.warpAffine`` to paste, or with ``WARP_INVERSE_MAP`` to cut back out.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    sx, sy = (x1 - x0) / src_w, (y1 - y0) / src_h
    return np.array(
        [
            [sx, 0.0, x0 + 0.5 * sx - 0.5 - origin[0]],
            [0.0, sy, y0 + 0.5 * sy - 0.5 - origin[1]],
        ],
        dtype=np.float64,
    )
