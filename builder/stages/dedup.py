"""Near-duplicate shots and product photos, found before pairing.

A video that repeats a shot, or a photo that several products share (a reseller's copy,
the same picture re-encoded or resized), multiplies one look across many pairs, so one
product dominates the dataset. Each shot and photo gets a :class:`Fingerprint`: a 64-bit
perceptual hash (pHash) of its grey image and a 4x4 colour thumbnail. Two images are
near-identical when their hashes differ in at most ``max_bits`` bits *and* their
thumbnails differ by at most :data:`COLOUR_TOLERANCE` levels on average: the hash sees
structure, not colour, and colour variants of one model (a red and a blue mug, photographed
alike) are different products, not copies.

The pHash is the classic one (imagehash's ``phash``: a 32x32 grey thumbnail, its 2-D DCT,
the 8x8 lowest frequencies against their median), computed with OpenCV, a dependency
already: the imagehash package would add SciPy and PyWavelets to every install, the
loader's included.

Which copy is kept is deterministic: of near-identical shots of one video, the longest
(then the first); of near-identical photos, the first in catalog order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import cv2
import numpy as np

HASH_SIDE = 8
"""The pHash keeps the ``HASH_SIDE x HASH_SIDE`` lowest DCT frequencies: 64 bits."""
DCT_SIDE = 32
COLOUR_SIDE = 4
COLOUR_TOLERANCE = 8.0
"""Mean absolute difference (0..255 levels) of two colour thumbnails still called identical:
re-encoding or resizing a photo moves them by a few levels, a colour variant by far more."""
SHOT_SAMPLES = 3
"""Frames fingerprinted per shot: its first, middle and last."""
DEDUP_VERSION = "1"
"""Part of the cache key of stored fingerprints; bump it when the fingerprint changes."""

_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)

T = TypeVar("T")


@dataclass(frozen=True)
class Fingerprint:
    """What near-duplicate detection compares of one image."""

    phash: int
    """64 bits, the DCT coefficient at row-major position i > median sets bit 63 - i."""
    colour: tuple[int, ...]
    """The ``COLOUR_SIDE x COLOUR_SIDE`` RGB thumbnail, row-major, 48 levels."""

    def as_json(self) -> dict[str, object]:
        return {"phash": f"{self.phash:016x}", "colour": list(self.colour)}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Fingerprint:
        return cls(int(str(data["phash"]), 16), tuple(int(v) for v in data["colour"]))  # type: ignore[attr-defined]


def fingerprint(rgb: np.ndarray) -> Fingerprint:
    """The fingerprint of an RGB ``uint8`` image ``H x W x 3``."""
    grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    small = cv2.resize(grey, (DCT_SIDE, DCT_SIDE), interpolation=cv2.INTER_AREA)
    low = cv2.dct(small.astype(np.float32))[:HASH_SIDE, :HASH_SIDE].ravel()
    bits = low > np.median(low)
    phash = int.from_bytes(np.packbits(bits).tobytes(), "big")
    colour = cv2.resize(rgb, (COLOUR_SIDE, COLOUR_SIDE), interpolation=cv2.INTER_AREA)
    return Fingerprint(phash, tuple(int(v) for v in colour.ravel()))


def hash_distance(a: Fingerprint, b: Fingerprint) -> int:
    """The number of pHash bits in which ``a`` and ``b`` differ (0..64)."""
    return (a.phash ^ b.phash).bit_count()


def colour_distance(a: Fingerprint, b: Fingerprint) -> float:
    """Mean absolute difference of the colour thumbnails, in levels (0..255)."""
    return float(np.mean(np.abs(np.subtract(a.colour, b.colour, dtype=np.int32))))


def near_identical(a: Fingerprint, b: Fingerprint, max_bits: int) -> bool:
    """Whether two images are copies of one another (see the module docstring)."""
    return hash_distance(a, b) <= max_bits and colour_distance(a, b) <= COLOUR_TOLERANCE


def shots_near_identical(a: Sequence[Fingerprint], b: Sequence[Fingerprint], max_bits: int) -> bool:
    """Whether every sampled frame of each shot has a near-identical frame in the other:
    a repeated shot, even when the cuts fall a few frames apart."""
    return all(any(near_identical(x, y, max_bits) for y in b) for x in a) and all(
        any(near_identical(y, x, max_bits) for x in a) for y in b
    )


@dataclass(frozen=True)
class Duplicate(Generic[T]):
    """An item left out (or, in ``report`` mode, only named) as a copy of ``kept``."""

    item: T
    kept: T
    bits: int
    """pHash bits that differ (for shots: the most over the sampled frames' best matches)."""


def duplicate_shots(
    shots: Sequence[T], prints: Sequence[Sequence[Fingerprint]], max_bits: int
) -> list[Duplicate[T]]:
    """The shots that repeat an earlier one of ``shots`` (put the one to keep first).

    Each shot is compared with the shots kept so far only, so a chain of small changes
    (a ~ b ~ c, a not ~ c) keeps a and c: every kept shot is distinct from every other.
    """
    kept: list[int] = []
    found: list[Duplicate[T]] = []
    for i, shot in enumerate(shots):
        match = next(
            (k for k in kept if shots_near_identical(prints[i], prints[k], max_bits)), None
        )
        if match is None:
            kept.append(i)
            continue
        bits = max(min(hash_distance(x, y) for y in prints[match]) for x in prints[i])
        found.append(Duplicate(shot, shots[match], bits))
    return found


def duplicate_photos(
    photos: Sequence[T], owners: Sequence[str], prints: Sequence[Fingerprint], max_bits: int
) -> list[Duplicate[T]]:
    """The photos that copy an earlier photo of another product (the first one is kept).

    ``owners`` names each photo's product. Photos of one product are its views and may
    look alike (one product shot from a few angles); only a photo that repeats across
    products is a copy. As in :func:`duplicate_shots`, each photo is compared with the
    kept ones only; the comparison is vectorised, since a catalog holds thousands of photos.
    """
    hashes = np.array([p.phash for p in prints], dtype=np.uint64)
    colours = np.array([p.colour for p in prints], dtype=np.int16).reshape(len(prints), -1)
    _, owner = np.unique(np.asarray(owners, dtype=object).astype(str), return_inverse=True)
    kept = np.zeros(len(prints), dtype=np.intp)
    n_kept = 0
    found: list[Duplicate[T]] = []
    for i, photo in enumerate(photos):
        ref = kept[:n_kept]
        xor = (hashes[ref] ^ hashes[i]).reshape(-1, 1).view(np.uint8)
        bits = _POPCOUNT[xor].sum(axis=1, dtype=np.int64)
        near = np.abs(colours[ref] - colours[i]).mean(axis=1) <= COLOUR_TOLERANCE
        hits = np.flatnonzero((bits <= max_bits) & near & (owner[ref] != owner[i]))
        if hits.size:
            first = int(hits[0])
            found.append(Duplicate(photo, photos[int(ref[first])], int(bits[first])))
            continue
        kept[n_kept] = i
        n_kept += 1
    return found
