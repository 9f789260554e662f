"""Reading the human labels of a dataset (the ``labels`` table ``pvtt review`` writes)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from pvtt.loaders.store import BuiltDataset
from pvtt.schemas.labels import LABELS_SCHEMA, LABELS_TABLE


def has_labels(dataset: BuiltDataset) -> bool:
    """True when the manifest names a labels table (a dataset never reviewed has none)."""
    return LABELS_TABLE in dataset.manifest.tables


def read_labels(dataset: BuiltDataset) -> pa.Table:
    """Every verdict at the committed version, oldest first; empty when there are none."""
    if not has_labels(dataset):
        return LABELS_SCHEMA.empty_table()
    table = dataset.table(LABELS_TABLE).to_table(columns=LABELS_SCHEMA.names)
    return table.take(pc.sort_indices(table, [("time", "ascending")]))


def latest_labels(dataset: BuiltDataset) -> dict[str, dict[str, object]]:
    """Each labelled pair's latest verdict (whoever gave it): pair_id -> the row."""
    return {row["pair_id"]: row for row in read_labels(dataset).to_pylist()}
