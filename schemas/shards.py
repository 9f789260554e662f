"""Names and index format of the tar shards (shared by the writer and the readers).

Every shard ``tar/pairs-r{rank:03d}-{n:06d}.tar`` has a sidecar index
``...index.json`` listing each sample's key, its byte range in the tar and the
columns a loader filters on. A reader plans which shards and byte ranges hold the
selected samples from the indexes alone, without opening the tars.

A sample's byte range runs from its first header to the end of its last member's
data. Member headers are USTAR; a member name over USTAR's 100 bytes (a pair id of
long catalog ids) gets a PAX extended header just before its USTAR header, inside
the sample's range, so offsets in the index stay exact.
"""

from __future__ import annotations

import re
from typing import Any

from pvtt.schemas.masks import MASKS_FILE_EXTENSION

TAR_DIR = "tar"
SHARD_PATTERN = re.compile(r"^pairs-r(\d{3,})-(\d{6,})\.tar$")
INDEX_SUFFIX = ".index.json"

FILTER_COLUMNS = (
    "pair_id",
    "clip_id",
    "target_id",
    "source_category",
    "source_subcategory",
    "target_category",
    "target_subcategory",
    "difficulty",
    "difficulty_level",
    "quality_score",
    "passed",
)
"""Columns copied into a shard index for each sample."""

PAIR_MEMBERS = ("json", "synth.mp4", "source.mp4", "target.png")
"""Fields every tar sample carries; ``background.mp4`` and ``masks.*`` are optional."""
OPTIONAL_MEMBERS = ("background.mp4", f"masks.{MASKS_FILE_EXTENSION}")

FILE_NAME_MAX = 255
"""Bytes in a file name on common file systems (ext4, XFS, APFS, NTFS)."""
MAX_KEY_LENGTH = FILE_NAME_MAX - 1 - max(map(len, PAIR_MEMBERS + OPTIONAL_MEMBERS))
"""The longest sample key (pair id) whose members, ``{key}.{field}``, all extract as
files (240); the tar format itself has no limit."""


def shard_name(rank: int, number: int) -> str:
    return f"pairs-r{rank:03d}-{number:06d}.tar"


def index_name(shard: str) -> str:
    return shard[: -len(".tar")] + INDEX_SUFFIX


def parse_shard_name(name: str) -> tuple[int, int] | None:
    """``(rank, number)`` of a shard file name, or None for anything else."""
    m = SHARD_PATTERN.match(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


OVERLAY_KEY = "overlay"
"""An index entry's scalar columns that changed after the shard was written (``pvtt
rescore``, ``pvtt calibrate --apply``): they supersede the sample's own json, which a
column update never rewrites. Indexes written by a build have none."""


IDENTITY_COLUMNS = frozenset({"pair_id", "clip_id", "target_id"})
"""Filter columns that name the sample: never taken from the index over its json."""


def overlaid_meta(meta: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """A sample's scalar columns as the dataset holds them now: its json (``meta``) with
    the index entry's filter columns and overlay on top."""
    # Ids stay the json's own: a json that names another pair must still read as such.
    current = {c: entry[c] for c in FILTER_COLUMNS if c in entry and c not in IDENTITY_COLUMNS}
    overlay = entry.get(OVERLAY_KEY)
    return {**meta, **current, **(overlay if isinstance(overlay, dict) else {})}
