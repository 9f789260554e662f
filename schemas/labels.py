"""The ``labels`` Lance table: human verdicts on pairs, written by ``pvtt review``.

Labels are a log, never edited in place: each review session appends its verdicts as
one new table version, named by the manifest like the other tables. A pair judged
twice keeps every verdict; the latest one (by ``time``) is the pair's label. The table
is optional: datasets built before it, or never reviewed, have none.
"""

from __future__ import annotations

import pyarrow as pa

from pvtt.schemas.version import SCHEMA_VERSION, SCHEMA_VERSION_KEY

LABELS_TABLE = "labels"
LABELS_PATH = "lance/labels.lance"
"""The table's folder inside the dataset, beside ``lance/pairs.lance``."""

ACCEPT = "accept"
REJECT = "reject"
LABELS = (ACCEPT, REJECT)

REASONS = ("mask", "residue", "insertion", "identity", "lighting", "temporal", "other")
"""Why a reviewer rejects a pair: the stage or property that went wrong. ``residue`` is
the source product left in the background; ``insertion`` a misplaced or broken insert."""

LABELS_SCHEMA = pa.schema(
    [
        pa.field("pair_id", pa.string(), nullable=False),
        pa.field("label", pa.string(), nullable=False),
        pa.field("reason", pa.string()),
        pa.field("reviewer", pa.string(), nullable=False),
        pa.field("time", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("build_id", pa.string(), nullable=False),
    ],
    metadata={SCHEMA_VERSION_KEY: str(SCHEMA_VERSION)},
)
"""One verdict: ``label`` is accept or reject; ``reason`` (one of :data:`REASONS`) is set
for a reject and null for an accept; ``build_id`` is the build whose pair was judged."""


def check_label(label: str, reason: str | None) -> None:
    """Raise ValueError unless ``(label, reason)`` is a verdict the table holds."""
    if label not in LABELS:
        raise ValueError(f"label must be one of {LABELS}, got {label!r}")
    if label == REJECT and reason not in REASONS:
        raise ValueError(f"a reject needs a reason from {REASONS}, got {reason!r}")
    if label == ACCEPT and reason is not None:
        raise ValueError(f"an accept takes no reason, got {reason!r}")
