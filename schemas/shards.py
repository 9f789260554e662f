"""Names and index format of the tar shards (shared by the writer and the readers).

Every shard ``tar/pairs-r{rank:03d}-{n:06d}.tar`` has a sidecar index
``...index.json`` listing each sample's key, its byte range in the tar and the
columns a loader filters on. A reader plans which shards and byte ranges hold the
selected samples from the indexes alone, without opening the tars.
"""

from __future__ import annotations

import re

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


def shard_name(rank: int, number: int) -> str:
    return f"pairs-r{rank:03d}-{number:06d}.tar"


def index_name(shard: str) -> str:
    return shard[: -len(".tar")] + INDEX_SUFFIX


def parse_shard_name(name: str) -> tuple[int, int] | None:
    """``(rank, number)`` of a shard file name, or None for anything else."""
    m = SHARD_PATTERN.match(name)
    return (int(m.group(1)), int(m.group(2))) if m else None
