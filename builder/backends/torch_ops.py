"""OpenCV's resampling, blur and warp, re-stated as batched torch ops.

The torch backends must give what the OpenCV (CPU) backends give, to a stated
tolerance, so each op here follows OpenCV's own definition rather than the nearest
torch built-in (``F.interpolate(mode="area")`` is an adaptive pool, not OpenCV's
area weights; ``grid_sample`` works in normalised coordinates whose rounding is not
``cv2.warpAffine``'s):

- resizing is a pair of weight matrices per item (:func:`resize_weights`), applied
  with one ``einsum``, so items of different sizes batch as zero-padded matrices;
- ``cv2.GaussianBlur`` is OpenCV's kernel with its BORDER_REFLECT_101, where each
  item of a padded batch reflects at its own edge (:func:`gaussian_blur`);
- ``cv2.warpAffine`` (bilinear, zero border) is a gather of four taps at OpenCV's
  coordinates (:func:`warp_affine`).

Host-side geometry is float64 NumPy; pixel work is float32 on the tensors' device.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch


def _area_shrink(src: int, dst: int) -> np.ndarray:
    """OpenCV's INTER_AREA weights for ``src >= dst`` (``computeResizeAreaTab``)."""
    scale = src / dst
    out = np.zeros((dst, src))
    for d in range(dst):
        fsx1 = d * scale
        fsx2 = fsx1 + scale
        cell = min(scale, src - fsx1)
        sx1, sx2 = math.ceil(fsx1), math.floor(fsx2)
        sx2 = min(sx2, src - 1)
        sx1 = min(sx1, sx2)
        if sx1 - fsx1 > 1e-3:
            out[d, sx1 - 1] += (sx1 - fsx1) / cell
        out[d, sx1:sx2] += 1.0 / cell
        if fsx2 - sx2 > 1e-3:
            out[d, sx2] += min(min(fsx2 - sx2, 1.0), cell) / cell
    return out


def _two_tap(src: int, dst: int, area: bool) -> np.ndarray:
    """OpenCV's two-tap weights: INTER_LINEAR, or INTER_AREA where it does not shrink."""
    scale, inv = src / dst, dst / src
    out = np.zeros((dst, src))
    for d in range(dst):
        if area:
            sx = math.floor(d * scale)
            fx = (d + 1) - (sx + 1) * inv
            fx = 0.0 if fx <= 0 else fx - math.floor(fx)
        else:
            fx = (d + 0.5) * scale - 0.5
            sx = math.floor(fx)
            fx -= sx
        if sx < 0:
            sx, fx = 0, 0.0
        if sx >= src - 1:
            sx, fx = src - 1, 0.0
        out[d, sx] += 1.0 - fx
        out[d, min(sx + 1, src - 1)] += fx
    return out


@lru_cache(maxsize=4096)
def resize_weights(
    src: tuple[int, int], dst: tuple[int, int], area: bool
) -> tuple[np.ndarray, np.ndarray]:
    """``(Wy, Wx)`` with ``cv2.resize(img, dst) == Wy @ img @ Wx.T`` per channel.

    ``src`` and ``dst`` are ``(width, height)`` as OpenCV takes them; ``area`` picks
    INTER_AREA (exact area weights when neither side grows, as OpenCV does; its two-tap
    variant otherwise), else INTER_LINEAR.
    """
    (sw, sh), (dw, dh) = src, dst
    if area and sw >= dw and sh >= dh:
        return _area_shrink(sh, dh), _area_shrink(sw, dw)
    return _two_tap(sh, dh, area), _two_tap(sw, dw, area)


def stack_weights(
    pairs: list[tuple[np.ndarray, np.ndarray]], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-item resize matrices zero-padded to one batch: ``N x Hmax x h``, ``N x Wmax x w``."""
    rows = max(wy.shape[0] for wy, _ in pairs)
    cols = max(wx.shape[0] for _, wx in pairs)
    wys = np.zeros((len(pairs), rows, pairs[0][0].shape[1]), np.float32)
    wxs = np.zeros((len(pairs), cols, pairs[0][1].shape[1]), np.float32)
    for i, (wy, wx) in enumerate(pairs):
        wys[i, : wy.shape[0]] = wy
        wxs[i, : wx.shape[0]] = wx
    return torch.from_numpy(wys).to(device), torch.from_numpy(wxs).to(device)


def resize_batch(image: torch.Tensor, wy: torch.Tensor, wx: torch.Tensor) -> torch.Tensor:
    """One ``C x h x w`` image resized once per item: ``N x C x Hmax x Wmax``."""
    rows = torch.einsum("nyh,chw->ncyw", wy, image)
    return torch.einsum("ncyw,nxw->ncyx", rows, wx)


def gaussian_kernel(sigma: float, dtype: type = np.float32) -> np.ndarray:
    """``cv2.getGaussianKernel`` of the size ``cv2.GaussianBlur`` picks for float images
    (its taps in the image's precision, float32 or float64, as OpenCV makes them)."""
    size = round(sigma * 4 * 2 + 1) | 1
    x = np.arange(size) - (size - 1) * 0.5
    taps = np.exp(-0.5 / (sigma * sigma) * x * x).astype(dtype)
    return (taps * (1.0 / float(taps.astype(np.float64).sum()))).astype(dtype)


def reflect_101(index: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """OpenCV's BORDER_REFLECT_101 (``gfedcb|abcdefgh|gfedcba``) of ``index`` into ``length``."""
    period = torch.clamp(2 * (length - 1), min=1)
    folded = torch.remainder(index, period)
    return torch.where(length > 1, torch.where(folded >= length, period - folded, folded), 0)


def _blur_last(x: torch.Tensor, taps: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Convolve the last axis of ``N x H x W``, each item reflected at its own ``lengths``."""
    radius = (len(taps) - 1) // 2
    n, _, w = x.shape
    index = torch.arange(-radius, w + radius, device=x.device).expand(n, -1)
    index = reflect_101(index, lengths[:, None])
    padded = torch.gather(x, 2, index[:, None, :].expand(-1, x.shape[1], -1))
    return padded.unfold(2, len(taps), 1) @ taps


def gaussian_blur(
    x: torch.Tensor, sigma: float, heights: torch.Tensor, widths: torch.Tensor
) -> torch.Tensor:
    """``cv2.GaussianBlur(x[i][:h, :w], (0, 0), sigma)`` for every item of ``N x H x W``.

    Items are zero-padded to one size; each one's border reflects at its own ``h, w``
    (the padding's values are undefined).
    """
    dtype = np.float64 if x.dtype == torch.float64 else np.float32
    taps = torch.from_numpy(gaussian_kernel(sigma, dtype)).to(x.device)
    rows = _blur_last(x, taps, widths)
    return _blur_last(rows.transpose(1, 2), taps, heights).transpose(1, 2)


def inverse_placement(matrices: np.ndarray) -> np.ndarray:
    """The inverse of scale-and-shift maps ``N x 2 x 3`` as ``cv2.warpAffine`` computes it."""
    m = np.asarray(matrices, np.float64)
    det = 1.0 / (m[:, 0, 0] * m[:, 1, 1])
    a11, a22 = m[:, 1, 1] * det, m[:, 0, 0] * det
    out = np.zeros_like(m)
    out[:, 0, 0], out[:, 1, 1] = a11, a22
    out[:, 0, 2] = -a11 * m[:, 0, 2]
    out[:, 1, 2] = -a22 * m[:, 1, 2]
    return out


def warp_affine(
    source: torch.Tensor,
    sizes: torch.Tensor,
    inverse: np.ndarray,
    out_h: int,
    out_w: int,
    replicate: bool = False,
) -> torch.Tensor:
    """``cv2.warpAffine(source[i][:, :h, :w], M_i, ...)`` (bilinear) per item, with a zero
    border, or BORDER_REPLICATE when ``replicate``.

    ``source`` is ``N x C x H x W`` with each item's own ``sizes[i] = (h, w)``;
    ``inverse`` the maps from output to source pixels (:func:`inverse_placement`, or
    the matrix itself for WARP_INVERSE_MAP; scale and shift only). Coordinates are exact, as OpenCV >= 4.11 takes them (older
    releases snap them to 1/32 px). Returns ``N x C x out_h x out_w``.
    """
    device = source.device
    inv = torch.from_numpy(np.asarray(inverse, np.float64)).to(device)
    fx = inv[:, 0, 0, None] * torch.arange(out_w, device=device) + inv[:, 0, 2, None]
    fy = inv[:, 1, 1, None] * torch.arange(out_h, device=device) + inv[:, 1, 2, None]
    ix, iy = torch.floor(fx), torch.floor(fy)
    wx1, wy1 = (fx - ix).to(torch.float32), (fy - iy).to(torch.float32)
    ix, iy = ix.long(), iy.long()
    n, c, h, w = source.shape
    flat = source.reshape(n, c, h * w)

    def tap(dy: int, dx: int) -> torch.Tensor:
        y = iy[:, :, None] + dy
        x = ix[:, None, :] + dx
        last_y, last_x = sizes[:, 0, None, None] - 1, sizes[:, 1, None, None] - 1
        if replicate:
            y = torch.minimum(y.clamp(min=0), last_y)
            x = torch.minimum(x.clamp(min=0), last_x)
        inside = (y >= 0) & (y <= last_y) & (x >= 0) & (x <= last_x)
        index = (y.clamp(0, h - 1) * w + x.clamp(0, w - 1)).reshape(n, 1, -1).expand(-1, c, -1)
        values = torch.gather(flat, 2, index).reshape(n, c, out_h, out_w)
        return values * inside[:, None]

    w00 = ((1 - wy1)[:, :, None] * (1 - wx1)[:, None, :])[:, None]
    w01 = ((1 - wy1)[:, :, None] * wx1[:, None, :])[:, None]
    w10 = (wy1[:, :, None] * (1 - wx1)[:, None, :])[:, None]
    w11 = (wy1[:, :, None] * wx1[:, None, :])[:, None]
    return tap(0, 0) * w00 + tap(0, 1) * w01 + tap(1, 0) * w10 + tap(1, 1) * w11
