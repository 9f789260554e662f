"""Where the copy of the ``pairs`` filter columns ordered by category lives, and its columns.

The ``pairs`` table is stored in (difficulty, verdict, score) order, so a filter on those
reads a few runs of adjacent rows; a category filter (``source_category`` or
``target_category``) reads rows scattered over the whole table, and a read costs per run.
The copy holds only the shard-index columns (:data:`~pvtt.schemas.shards.FILTER_COLUMNS`,
no media, tens of bytes a row), each pair once under its source category and once more
under its target category when that differs, sorted by that ``category``: a category
filter reads one run of it. Builds and edits write it (``pvtt.builder.sinks.category_copy``);
the loaders read it (``pvtt.loaders.category_route``) only when it mirrors the very
``pairs`` version they read: a stale copy is never used, its queries only go slower.
"""

from __future__ import annotations

from pvtt.schemas.shards import FILTER_COLUMNS

COPY_TABLE = "pairs_by_category"
"""The copy's folder name beside ``pairs.lance`` (``lance/pairs_by_category.lance``)."""
CATEGORY = "category"
"""The copy's sort key: the source category of a row, or its target category."""
COPY_COLUMNS = frozenset(FILTER_COLUMNS)
"""Columns of ``pairs`` the copy holds (besides :data:`CATEGORY`)."""
SOURCE_VERSION_KEY = "pvtt.source_version"
"""Schema metadata key: the ``pairs`` table version the copy was made from."""
PAIRS_ORDER = ("difficulty_level", "passed", "quality_score", "pair_id")
"""The ``pairs`` table's row order once the Lance sink has sorted it (its cluster keys,
then its key): the order within a run of the copy, and of what readers return."""
RUNS_KEY = "pvtt.runs"
"""Schema metadata key: JSON ``{category: {"true": [start, stop], "false": [...]}}``, the
rows of each category and verdict (``false`` also holds rows without a verdict)."""


def copy_uri(pairs_uri: str) -> str:
    """The copy's URI, beside the ``pairs`` table's (a folder or an object-store URI)."""
    base = pairs_uri.rstrip("/")
    head, _, _ = base.rpartition("/")
    return f"{head}/{COPY_TABLE}.lance"
