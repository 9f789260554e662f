"""The colour of the light: estimating it from pixels, and putting a product under it.

A pasted product whose light disagrees with the scene's is what a person notices first:
a daylight photo pasted into a tungsten-lit room stays blue-white while every white
in the room is orange. Statistics of the pixels cannot tell a product's colour from its
light on their own, but two comparisons can:

- the **light the inserter put on the product** is the per-channel gain from the photo's
  pixels to the insert's, in linear RGB (a von Kries transform; a photo pasted as is has
  gain 1, a perfectly relit one the scene's light);
- the **scene's light** is a colour-constancy estimate over the clean background:
  shades of grey (Finlayson and Trezzi 2004), the Minkowski ``p``-norm of each linear
  channel, which weighs bright surfaces (the ones that reflect the light's colour) over
  the scene's own colours.

Both are compared as directions in RGB (the *angular error* of colour-constancy
literature, in degrees) and as brightness, in stops.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

LUMA = np.array([0.2126, 0.7152, 0.0722])
"""Rec. 709 luminance weights of linear RGB."""


def srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    """sRGB in 0..255 (any dtype) to linear light in 0..1, float32."""
    c = np.asarray(rgb, np.float32) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(linear: np.ndarray) -> np.ndarray:
    """Linear light in 0..1 to sRGB in 0..255, float32 (clipped, not rounded)."""
    c = np.clip(np.asarray(linear, np.float32), 0.0, 1.0)
    srgb = np.where(c <= 0.0031308, c * 12.92, 1.055 * np.power(c, 1 / 2.4) - 0.055)
    return (srgb * 255.0).astype(np.float32)


def relight(rgb: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """``rgb`` (sRGB, 0..255) under a light of per-channel ``gains`` relative to its own:
    multiplied in linear light, clipped where it saturates; float32 0..255."""
    return linear_to_srgb(srgb_to_linear(rgb) * np.asarray(gains, np.float32))


def shades_of_grey(linear: np.ndarray, p: float = 6.0) -> np.ndarray:
    """The light's colour and level: each channel's Minkowski ``p``-norm over ``linear``
    pixels (``N x 3``); ``p = 1`` is grey-world, ``p -> inf`` white-patch."""
    pixels = np.asarray(linear, np.float64).reshape(-1, 3)
    if len(pixels) == 0:
        raise ValueError("no pixels to estimate a light from")
    return np.power(np.mean(np.power(pixels, p), axis=0), 1.0 / p)


def angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    """The angle between two RGB directions, in degrees: 0 for the same colour of light."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    if norm <= 0.0:
        return 0.0
    return math.degrees(math.acos(float(np.clip(np.dot(a, b) / norm, -1.0, 1.0))))


def luminance(rgb_linear: np.ndarray) -> np.ndarray:
    """Rec. 709 luminance of linear RGB (last axis)."""
    return np.asarray(rgb_linear, np.float64) @ LUMA


def light_gains(warmth: float, tint: float = 0.0, stops: float = 0.0) -> np.ndarray:
    """Per-channel gains of a light ``warmth`` toward orange (negative: toward blue),
    ``tint`` toward magenta (negative: toward green), at ``stops`` of exposure: the
    gains' luminance is ``2 ** stops``. ``warmth = 0.25`` is about 11 degrees of cast."""
    gains = np.array([math.exp(warmth), math.exp(-tint), math.exp(-warmth)])
    return gains * (2.0**stops / float(gains @ LUMA))


SATURATED = 0.95
"""Linear level above which a channel may have clipped: its ratio says nothing of light."""


CLIPPED_SHARE = 0.01
"""Share of clipped background pixels above which the scene's level is only a lower bound."""


def scene_light(
    frames: np.ndarray, grey_norm: float, long_side: int = 128
) -> tuple[np.ndarray, float]:
    """Shades of grey over ``frames`` (``T x H x W x 3`` uint8), each shrunk to
    ``long_side`` px first (the colour of light is a low-frequency fact), leaving out
    pixels with a clipped channel: a white wall clipped to 255 reads as white light.
    Also the share of pixels left out."""
    small = []
    for frame in frames:
        fit = min(1.0, long_side / max(frame.shape[:2]))
        size = (max(1, round(frame.shape[1] * fit)), max(1, round(frame.shape[0] * fit)))
        small.append(cv2.resize(frame, size, interpolation=cv2.INTER_AREA).reshape(-1, 3))
    pixels = srgb_to_linear(np.concatenate(small))
    unclipped = pixels[pixels.max(axis=1) < SATURATED]
    clipped = 1.0 - len(unclipped) / len(pixels)
    return shades_of_grey(unclipped if len(unclipped) >= 64 else pixels, grey_norm), clipped
