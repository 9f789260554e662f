"""Category filters read from the copy of ``pairs`` ordered by category.

A category filter's rows are scattered over the ``pairs`` table (sorted by difficulty,
verdict and score), and a read costs per run of adjacent rows: on the store bench's
1M-row table one category (2.45 % of the rows) took 0.45x a full scan. The builder keeps
a narrow copy of the filter columns sorted by category (:mod:`pvtt.schemas.category_copy`),
where the same rows are one run. :func:`read_by_category` answers a filter from it when
the copy mirrors the very ``pairs`` version being read and holds every column the filter
and the caller name; otherwise it returns None and the caller reads ``pairs`` itself.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import lance
import numpy as np
import pyarrow as pa

from pvtt.loaders.where_arrow import evaluate
from pvtt.loaders.where_tree import columns
from pvtt.schemas.category_copy import (
    COPY_COLUMNS,
    PAIRS_ORDER,
    RUNS_KEY,
    SOURCE_VERSION_KEY,
    copy_uri,
)

if TYPE_CHECKING:
    from pvtt.loaders.query import PairFilter

def category_copy(
    pairs: lance.LanceDataset, storage_options: Mapping[str, Any] | None = None
) -> lance.LanceDataset | None:
    """The copy beside ``pairs`` when it was made from this very version, else None (none
    written, an older copy, or one a crash left unreadable)."""
    try:
        copy = lance.dataset(copy_uri(pairs.uri), storage_options=dict(storage_options or {}))
    except (OSError, ValueError):
        return None
    made_from = (copy.schema.metadata or {}).get(SOURCE_VERSION_KEY.encode())
    return copy if made_from == str(pairs.version).encode() else None


def read_by_category(
    copy: lance.LanceDataset, flt: PairFilter, names: Sequence[str], limit: int | None = None
) -> pa.Table | None:
    """``names`` of the pairs ``flt`` selects, read from ``copy``; None when ``flt`` names
    no category or a column the copy lacks. Rows come in the ``pairs`` table's order
    (difficulty, verdict, score, pair id), each pair once.

    The copy is sorted by category, verdict, then the ``pairs`` order, and says where each
    (category, verdict) run lies: the runs the filter names are read by their offsets (no
    index lookup), the rest of the filter is evaluated on them (pvtt's Arrow evaluation,
    the one tar datasets use), and rows of several runs are put back in ``pairs`` order.
    """
    if flt.category is None or not set(names) <= COPY_COLUMNS:
        return None
    # a "true" run holds passed pairs only; a "false" run also those without a verdict
    rest = replace(flt, category=None, passed=None if flt.passed else flt.passed).predicate()
    if rest is not None and not columns(rest) <= COPY_COLUMNS:
        return None
    runs = json.loads((copy.schema.metadata or {}).get(RUNS_KEY.encode(), b"null"))
    if runs is None:
        return None
    verdicts = ("true", "false") if flt.passed is None else (str(flt.passed).lower(),)
    spans = sorted(
        tuple(runs[c][v]) for c in flt.category if c in runs for v in verdicts if v in runs[c]
    )
    several = len(spans) > 1
    wanted = list(dict.fromkeys([*names, *(columns(rest) if rest is not None else ()),
                                 *(PAIRS_ORDER if several else ())]))  # fmt: skip
    try:
        parts = [copy.to_table(columns=wanted, offset=a, limit=b - a) for a, b in spans]
    except OSError:  # a copy a crash left without its data files: read pairs instead
        return None
    own = {RUNS_KEY.encode(), SOURCE_VERSION_KEY.encode()}  # the copy's, not the pairs'
    metadata = {k: v for k, v in (copy.schema.metadata or {}).items() if k not in own}
    if not parts:
        return copy.schema.empty_table().select(list(names)).replace_schema_metadata(metadata)
    table = pa.concat_tables(parts).replace_schema_metadata(metadata)
    if rest is not None:
        table = table.filter(pa.array(evaluate(rest, table)))
    if several:  # a pair under two of the categories comes once, then pairs' order
        if len(flt.category) > 1:
            ids = table.column("pair_id").to_numpy(zero_copy_only=False)
            table = table.take(np.sort(np.unique(ids, return_index=True)[1]))
        table = table.sort_by([(key, "ascending") for key in PAIRS_ORDER])
    if limit is not None:
        table = table.slice(0, max(limit, 0))
    return table.select(list(names))
