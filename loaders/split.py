"""Group-safe train/validation splits: no source video or product crosses splits.

Products are assigned to splits by a seeded hash, so the assignment of one
product never depends on which others exist. With ``by="source_id"`` a pair
goes where its source product goes (validation videos never appear in
training); with ``by="product"`` a pair is kept only when its source and its
target product fall in the same split, so no product is seen on both sides.
The result is a ``where`` clause per split, usable by ``PairDataset`` and
``pvtt query``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping

from pvtt.loaders.query import PairFilter, select_pairs
from pvtt.loaders.store import open_dataset
from pvtt.loaders.where_tree import sql_in

GROUPINGS = ("source_id", "product")


def assign(product_id: str, fractions: Mapping[str, float], seed: int) -> str:
    """The split a product belongs to: a stable, seeded function of its id alone."""
    digest = hashlib.sha256(f"{seed}:{product_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    total = sum(fractions.values())
    edge = 0.0
    for name, share in fractions.items():
        edge += share / total
        if u < edge:
            return name
    return next(reversed(list(fractions)))


def split(
    out: str | os.PathLike[str],
    *,
    by: str = "source_id",
    fractions: Mapping[str, float] | None = None,
    seed: int = 0,
) -> dict[str, str]:
    """``{split name: where clause}`` over the dataset's products."""
    fractions = dict(fractions or {"train": 0.9, "val": 0.1})
    if by not in GROUPINGS:
        raise ValueError(f"by must be one of {GROUPINGS}, got {by!r}")
    if not fractions or any(v < 0 for v in fractions.values()) or sum(fractions.values()) <= 0:
        raise ValueError(f"fractions must be non-negative with a positive sum: {fractions}")
    table = select_pairs(open_dataset(out), PairFilter(passed=None), columns=["source_id", "target_id"])
    products = set(table.column("source_id").to_pylist()) | set(table.column("target_id").to_pylist())
    groups: dict[str, list[str]] = {name: [] for name in fractions}
    for product in products:
        groups[assign(product, fractions, seed)].append(product)
    clauses: dict[str, str] = {}
    for name, members in groups.items():
        if by == "source_id":
            clauses[name] = sql_in("source_id", sorted(members))
        else:
            both = (sql_in(c, sorted(members)) for c in ("source_id", "target_id"))
            clauses[name] = " AND ".join(f"({clause})" for clause in both)
    return clauses
