"""OpenCV's dense Farneback flow, as pvtt's temporal score calls it, re-stated in torch.

Why: the temporal score runs ``cv2.calcOpticalFlowFarneback(next, prev, None, 0.5, 3,
9, 3, 5, 1.2, 0)`` on ~150 small greyscale windows per clip; on a GPU build that CPU
flow is one of the two things bounding throughput. :func:`farneback_flow_torch` is the
same algorithm on any torch device, batched over windows of one size, so the GPU path
can compute the flow where its frames already are, and scores stay comparable with
the CPU backend's.

What is matched, step by step, from OpenCV's ``optflowgf.cpp`` (CPU path):

- levels: as many halvings (at most 3) as keep both sides >= 32 px, so a 128 x 128
  window gets levels 2, 1, 0 and a 128 x 57 one only level 0;
- each level's image is the full-resolution frame blurred by ``cv2.GaussianBlur`` with
  sigma ``(1/scale - 1)/2`` and size ``cvRound(5 sigma) | 1`` (at least 3; at level 0
  that is the fixed [1, 2, 1]/4 kernel, BORDER_REFLECT_101), then resized INTER_LINEAR
  to ``cvRound(size * scale)``;
- the polynomial expansion: OpenCV's normalised float32 Gaussian (n = 5, sigma 1.2),
  its separable moments with replicated borders and only the four inverse-G
  coefficients OpenCV keeps (ig11, ig03, ig33, ig55; ig34 is dropped there, and here);
- the matrix update: bilinear taps of the second expansion where the displaced pixel's
  2 x 2 cell lies inside the image, OpenCV's fallback outside it (including the last
  row and column at zero flow), and its border weights (0.14, 0.14, 0.4472, ...),
  with its unsigned-compare quirk on sides under 10 px;
- the 9 x 9 box average with replicated borders, the regularised 2 x 2 solve
  (``+ 1e-3`` on the determinant), 3 iterations (matrices refreshed after the first
  two), and the flow carried up a level by INTER_LINEAR resize times 2.

How close (cv2 5.1.0 vs torch 2.13 on CPU; ``tests/test_torch_flow.py``, and 160
windows cut from the two clips in ``tests/data``), in px of flow:

- blurred-texture windows with a small affine motion, 128 x 128, 128 x 57, 57 x 128,
  40 x 96: mean |diff| 4e-7, 99th percentile 2e-6, max 2.3e-5; 8 x 8: 1.3e-5, 1.5e-4,
  2.5e-4. Pure translations come out the same to 6e-6. This is float rounding: pixel
  ops are float32 here where OpenCV sums some in double, and in other orders.
- identical frames (OpenCV's edge fallback alone makes up to 0.57 px): within 1.3e-5.
- real video windows: mean 9e-6, 99th percentile 2e-5; at >= 8 px from the edge, max
  4.5e-3. The one known mismatch is at the edge: where frames are locally identical
  the flow here is exactly 0, while OpenCV's running box sums (double, over float
  differences) leave 1e-18 to 1e-10 px; on the first row and column, OpenCV's in/out
  test (``floor(x + dx) >= 0``) flips on that residue's sign, and its flow within
  ~5 px of that edge moves by up to 0.18 px (8 of 160 windows, 0.03 % of pixels).
  Matching it would take OpenCV's arithmetic bit for bit.

On CPU it is slower than cv2 (one thread: 3-4x for one 128 x 128 pair, 2.5-3x for a batch
of 16); it is meant for the GPU path.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

PYR_SCALE = 0.5
LEVELS = 3
WINSIZE = 9
ITERATIONS = 3
POLY_N = 5
POLY_SIGMA = 1.2
MIN_SIZE = 32  # OpenCV stops halving before a side would fall under this
BORDER_WEIGHTS = (0.14, 0.14, 0.4472, 0.4472, 0.4472)


def _level_count(height: int, width: int) -> int:
    """How many halvings OpenCV keeps: each must leave both sides >= ``MIN_SIZE``."""
    scale = 1.0
    for k in range(LEVELS):
        scale *= PYR_SCALE
        if width * scale < MIN_SIZE or height * scale < MIN_SIZE:
            return k
    return LEVELS


def _level_size(height: int, width: int, level: int) -> tuple[int, int]:
    """A pyramid level's ``(h, w)``: ``cvRound(side * scale)``, halves rounded to even."""
    scale = PYR_SCALE**level
    return round(height * scale), round(width * scale)


@functools.lru_cache(maxsize=8)
def _smoothing_taps(level: int) -> np.ndarray:
    """The float32 ``cv2.GaussianBlur`` taps OpenCV pre-blurs pyramid ``level`` with.

    sigma is 0 at level 0, where OpenCV's ``getGaussianKernel`` takes its fixed 3-tap
    table instead of sampling a Gaussian.
    """
    sigma = (1.0 / PYR_SCALE**level - 1) * 0.5
    size = max(round(sigma * 5) | 1, 3)  # round() halves to even, as cvRound does
    if sigma <= 0:
        return np.array([0.25, 0.5, 0.25], np.float32)
    x = np.arange(size) - (size - 1) / 2
    taps = np.exp(-0.5 / (sigma * sigma) * x * x)
    return (taps * (1.0 / taps.sum())).astype(np.float32)


@functools.lru_cache(maxsize=1)
def _poly_basis() -> tuple[np.ndarray, float, float, float, float]:
    """``FarnebackPrepareGaussian``: taps ``g, x g, x^2 g`` (3 x 11, float32, as OpenCV
    rounds them) and the inverse-G coefficients ``ig11, ig03, ig33, ig55``."""
    n, sigma = POLY_N, POLY_SIGMA
    x = np.arange(-n, n + 1)
    g = np.exp(-(x * x) / (2 * sigma * sigma)).astype(np.float32)
    g = (g * (1.0 / g.astype(np.float64).sum())).astype(np.float32)
    xg, xxg = (x * g).astype(np.float32), (x * x * g).astype(np.float32)
    # G's sums: float products of the float taps (as OpenCV's loop forms them), in double
    gx, gy = np.meshgrid(x.astype(np.float32), x.astype(np.float32))
    gg = np.outer(g, g)

    def moment(term: np.ndarray) -> float:
        return float(term.astype(np.float64).sum())

    big_g = np.zeros((6, 6))
    big_g[0, 0] = moment(gg)
    big_g[1, 1] = big_g[2, 2] = moment(gg * gx * gx)
    big_g[0, 3] = big_g[0, 4] = big_g[3, 0] = big_g[4, 0] = big_g[1, 1]
    big_g[3, 3] = big_g[4, 4] = moment(gg * gx * gx * gx * gx)
    big_g[3, 4] = big_g[4, 3] = big_g[5, 5] = moment(gg * gx * gx * gy * gy)
    inv = np.linalg.inv(big_g)
    return np.stack([g, xg, xxg]), inv[1, 1], inv[0, 3], inv[3, 3], inv[5, 5]


@functools.lru_cache(maxsize=256)
def _reflect_101_index(length: int, pad: int, device: torch.device) -> torch.Tensor:
    """``cv2.borderInterpolate(i, length, BORDER_REFLECT_101)``, ``-pad <= i < length + pad``."""
    index = np.arange(-pad, length + pad)
    if length > 1:
        period = 2 * length - 2
        index = np.remainder(index, period)
        index = np.where(index >= length, period - index, index)
    else:
        index[:] = 0
    return torch.from_numpy(index).to(device)


def _correlate(x: torch.Tensor, taps: np.ndarray, dim: int) -> torch.Tensor:
    """``sum_k taps[k] * x[.., i + k, ..]`` along ``dim``, over the 'valid' span only.

    Shifted slices rather than ``conv2d``: for these 1-channel, 3- to 11-tap filters
    they are ~4x faster on CPU (one thread) than ``conv2d``.
    """
    size = x.shape[dim] - len(taps) + 1
    out = x.narrow(dim, 0, size) * float(taps[0])
    for k in range(1, len(taps)):
        if taps[k] != 0:
            out.add_(x.narrow(dim, k, size), alpha=float(taps[k]))
    return out


def _pyramid_level(images: torch.Tensor, level: int, height: int, width: int) -> torch.Tensor:
    """``N x H x W`` frames Gaussian-blurred for ``level``, resized to ``N x height x width``."""
    taps = _smoothing_taps(level)
    pad = (len(taps) - 1) // 2
    rows = _reflect_101_index(images.shape[1], pad, images.device)
    cols = _reflect_101_index(images.shape[2], pad, images.device)
    padded = images.index_select(1, rows).index_select(2, cols)
    blurred = _correlate(_correlate(padded, taps, 1), taps, 2)
    if (height, width) == blurred.shape[1:]:
        return blurred
    return F.interpolate(
        blurred[:, None], size=(height, width), mode="bilinear", align_corners=False
    )[:, 0]


def _poly_expansion(images: torch.Tensor) -> torch.Tensor:
    """``FarnebackPolyExp``: ``N x h x w`` -> ``N x 5 x h x w`` with OpenCV's channel
    order ``(b_y, b_x, A_yy, A_xx, A_xy)`` (replicated borders)."""
    (g, xg, xxg), ig11, ig03, ig33, ig55 = _poly_basis()
    padded = F.pad(images[:, None], (POLY_N,) * 4, mode="replicate")[:, 0]
    # moments 1, y, y^2 down each column, then 1, x, x^2 along the rows
    col1, col_y, col_yy = (_correlate(padded, taps, 1) for taps in (g, xg, xxg))
    b1, b2, b4 = (_correlate(col1, taps, 2) for taps in (g, xg, xxg))
    b3, b6, b5 = _correlate(col_y, g, 2), _correlate(col_y, xg, 2), _correlate(col_yy, g, 2)
    return torch.stack(
        [b3 * ig11, b2 * ig11, b1 * ig03 + b5 * ig33, b1 * ig03 + b4 * ig33, b6 * ig55], 1
    )


@functools.lru_cache(maxsize=256)
def _border_scale(height: int, width: int, device: torch.device) -> torch.Tensor:
    """OpenCV's down-weighting of the matrices within 5 px of the edge (``h x w``).

    OpenCV tests "near the edge" with an unsigned compare that misfires on sides under
    10 px; it is reproduced, since it changes 8 x 8 windows. The four factors are
    multiplied in float32 in OpenCV's order.
    """
    span = len(BORDER_WEIGHTS)
    weights = np.array(BORDER_WEIGHTS, np.float32)

    def side(length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        i = np.arange(length)
        near = (i - span) % 2**32 >= (length - 2 * span) % 2**32
        low = np.where(i < span, weights[np.minimum(i, span - 1)], np.float32(1))
        high = np.where(
            i >= length - span, weights[np.clip(length - i - 1, 0, span - 1)], np.float32(1)
        )
        return near, low, high

    near_x, low_x, high_x = side(width)
    near_y, low_y, high_y = side(height)
    scale = (low_x * high_x)[None, :] * low_y[:, None] * high_y[:, None]
    scale = np.where(near_x[None, :] | near_y[:, None], scale, np.float32(1))
    return torch.from_numpy(scale).to(device)


def _update_matrices(
    r0: torch.Tensor, r1: torch.Tensor, flow: torch.Tensor, border: torch.Tensor
) -> torch.Tensor:
    """``FarnebackUpdateMatrices``: ``N x 5 x h x w`` (G11, G12, G22, h1, h2) for ``flow``."""
    n, _, h, w = r0.shape
    dx, dy = flow[:, 0], flow[:, 1]
    fx = torch.arange(w, device=flow.device, dtype=flow.dtype) + dx
    fy = torch.arange(h, device=flow.device, dtype=flow.dtype)[:, None] + dy
    x1, y1 = torch.floor(fx), torch.floor(fy)
    ax, ay = (fx - x1)[:, None], (fy - y1)[:, None]
    inside = (x1 >= 0) & (x1 < w - 1) & (y1 >= 0) & (y1 < h - 1)
    # Bilinear taps of the second expansion: four gathers blended by lerp (OpenCV's
    # weights up to rounding), so that at an integer position they are R1 exactly.
    # grid_sample, 2x faster on CPU, is not: its [-1, 1] coordinates leave ~1e-6 px of
    # flow where OpenCV's is exactly 0, and on the first row and column the sign of
    # that noise flips OpenCV's in/out test (0.3 px off on identical frames).
    xi = torch.nan_to_num(x1).clamp(0, max(w - 2, 0)).long()
    yi = torch.nan_to_num(y1).clamp(0, max(h - 2, 0)).long()
    base = yi * w + xi
    flat = r1.reshape(n, 5, h * w)

    def tap(offset: int) -> torch.Tensor:  # the clamp only bites on 1 px sides
        index = (base + offset).clamp(max=h * w - 1).reshape(n, 1, h * w).expand(-1, 5, -1)
        return torch.gather(flat, 2, index).reshape(n, 5, h, w)

    taps = torch.lerp(torch.lerp(tap(0), tap(1), ax), torch.lerp(tap(w), tap(w + 1), ax), ay)
    # OpenCV's fallback where the 2 x 2 cell leaves the image: no b from it, A its own,
    # i.e. taps of (0, 0, A0)
    fallback = torch.cat([torch.zeros_like(r0[:, :2]), r0[:, 2:]], 1)
    taps = torch.where(inside[:, None], taps, fallback)
    (q2, q3, q4, q5, q6), (s2, s3, s4, s5, s6) = r0.unbind(1), taps.unbind(1)
    r2, r3 = (q2 - s2) * 0.5, (q3 - s3) * 0.5
    r4, r5, r6 = (q4 + s4) * 0.5, (q5 + s5) * 0.5, (q6 + s6) * 0.25
    r2 = (r2 + (r4 * dy + r6 * dx)) * border
    r3 = (r3 + (r6 * dy + r5 * dx)) * border
    r4, r5, r6 = r4 * border, r5 * border, r6 * border
    return torch.stack(
        [
            r4 * r4 + r6 * r6,
            (r4 + r5) * r6,
            r5 * r5 + r6 * r6,
            r4 * r2 + r6 * r3,
            r6 * r2 + r5 * r3,
        ],
        1,
    )


def _solve_flow(matrices: torch.Tensor) -> torch.Tensor:
    """Box-average the matrices (``WINSIZE``, replicated borders) and solve each pixel's
    regularised 2 x 2 system: ``N x 2 x h x w`` flow ``(dx, dy)``."""
    h, w = matrices.shape[2:]
    padded = F.pad(matrices, (WINSIZE // 2,) * 4, mode="replicate")
    # shifted-slice sums: several times faster on CPU than avg_pool2d
    rows = padded[:, :, :h].clone()
    for k in range(1, WINSIZE):
        rows.add_(padded[:, :, k : k + h])
    summed = rows[..., :w].clone()
    for k in range(1, WINSIZE):
        summed.add_(rows[..., k : k + w])
    summed.mul_(1.0 / WINSIZE**2)
    g11, g12, g22, h1, h2 = summed.unbind(1)
    idet = 1.0 / (g11 * g22 - g12 * g12 + 1e-3)
    return torch.stack([(g11 * h2 - g12 * h1) * idet, (g22 * h1 - g12 * h2) * idet], 1)


def farneback_flow_torch(next_grey: torch.Tensor, prev_grey: torch.Tensor) -> torch.Tensor:
    """``cv2.calcOpticalFlowFarneback(next, prev, None, 0.5, 3, 9, 3, 5, 1.2, 0)`` per item.

    ``next_grey`` and ``prev_grey``: ``N x H x W`` greyscale (uint8 or float, values
    as OpenCV would see them) on one device; argument order and meaning as pvtt's
    ``farneback_flow(gray_next, gray_prev)``. Returns ``N x H x W x 2`` float32 flow
    ``(dx, dy)`` on that device.
    """
    if next_grey.shape != prev_grey.shape or next_grey.dim() != 3:
        raise ValueError(
            f"need two N x H x W batches of one shape, got {tuple(next_grey.shape)} "
            f"and {tuple(prev_grey.shape)}"
        )
    n, height, width = next_grey.shape
    # both frames go through the pyramid and the expansion as one batch
    frames = torch.cat([next_grey, prev_grey]).to(torch.float32)
    levels = _level_count(height, width)
    flow = frames.new_zeros(n, 2, *_level_size(height, width, levels))
    for level in range(levels, -1, -1):
        h, w = _level_size(height, width, level)
        if level < levels:  # the coarser level's flow, carried up
            flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
            flow = flow * (1.0 / PYR_SCALE)
        r0, r1 = _poly_expansion(_pyramid_level(frames, level, h, w)).split(n)
        border = _border_scale(h, w, frames.device)
        matrices = _update_matrices(r0, r1, flow, border)
        for i in range(ITERATIONS):
            flow = _solve_flow(matrices)
            if i < ITERATIONS - 1:
                matrices = _update_matrices(r0, r1, flow, border)
    return flow.permute(0, 2, 3, 1).contiguous()
