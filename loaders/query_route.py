"""Whether a filter on the ``pairs`` table is read through its scalar indexes or by a scan.

An indexed query finds its rows in about a millisecond, then takes them from the data
files; a take costs per *run* of adjacent rows. A full scan reads every row of the
columns asked for and costs the same whatever it keeps. So the index pays when the
selected rows lie in few runs, and loses when they are many and scattered: on the store
bench's 1M-row table (``tools/bench/store.py``), 220k scattered rows took 200-600 ms by
index against ~100-150 ms for a full scan.

The decision uses what is known before reading:

- The Lance sink sorts ``pairs`` by difficulty level, ``passed`` and quality score
  (``pvtt.builder.sinks.lance_layout``) and says so in the table's config under
  :data:`CLUSTER_CONFIG_KEY`. A filter made only of comparisons of those columns with
  constants selects a few runs per (difficulty, passed) block, so the index is used
  whatever its size.
- So does a lookup of ``pair_id`` values (a unique key: one row a value).
- Any other filter is counted first through the indexes (``count_rows``, ~1 ms); when
  it selects more than :data:`SCATTERED_INDEX_FRACTION` of the rows, the rows are read
  by a full scan. The fraction is where the bench measured an indexed read of scattered
  rows to cost as much as a full scan.

Either way the same rows come back: the route changes only how Lance reads them.
"""

from __future__ import annotations

from typing import Any

import lance

from pvtt.loaders.where_tree import Column, Compare, In, IsNull, Literal, Logic, Node

CLUSTER_CONFIG_KEY = "pvtt.cluster_keys"
"""Table config key the Lance sink sets on a ``pairs`` table whose rows are sorted by
the comma-separated columns it names (the builder's ``lance_layout`` writes the same key)."""
SCATTERED_INDEX_FRACTION = 0.03
"""Above this share of the table, a filter's rows (assumed scattered) are read by a full
scan. Measured with the store bench's 1M-row table in insertion order, default
``pvtt query`` columns, three runs on a shared 2-core machine (2026-12-03): scattered
rows by index cost 0.35-0.51x a full scan at 0.5-1 %, 0.63-1.23x at 2 %, 0.92-1.20x at
4 %, 1.56-2.17x at 8 %. Near the crossover both routes cost about the same."""
UNIQUE_KEY = "pair_id"
"""The ``pairs`` key: unique, so a lookup of it selects at most one row a value."""
MAX_IN_VALUES = 64
"""An IN list longer than this is not counted as a few runs of a sorted column."""
SCAN_OPTIONS: dict[str, Any] = {"use_scalar_index": False, "late_materialization": False}
"""A full scan: every row of the columns asked for, filtered as it is read (Lance's late
materialization would instead take the kept rows one by one, as an index does)."""


def clustered_columns(table: lance.LanceDataset) -> frozenset[str]:
    """The columns ``table`` is sorted by, or none when its order cannot be relied on.

    A column update (``pvtt rescore``) writes new values beside each fragment's data
    file without moving rows, so a fragment with more than one data file is no longer
    known to be in order. ``difficulty`` counts as sorted with ``difficulty_level``:
    one names the other.
    """
    keys = table.config().get(CLUSTER_CONFIG_KEY)
    if not keys:
        return frozenset()
    if any(len(f.data_files()) != 1 for f in table.get_fragments()):
        return frozenset()
    names = {k for k in keys.split(",") if k}
    if "difficulty_level" in names:
        names.add("difficulty")
    return frozenset(names)


def few_runs(node: Node, sorted_by: frozenset[str]) -> bool:
    """True when ``node`` selects a bounded number of runs of a table sorted by
    ``sorted_by``: ANDs and ORs of comparisons, short IN lists and null tests of those
    columns against constants (each selects a contiguous range per block), and any AND
    holding a lookup of the unique ``pair_id`` (a few rows, wherever they are)."""
    if isinstance(node, Logic):
        if node.op == "AND" and any(_key_lookup(item) for item in node.items):
            return True
        return all(few_runs(item, sorted_by) for item in node.items)
    if _key_lookup(node):
        return True
    if isinstance(node, Compare):
        sides = (node.left, node.right)
        col = [s for s in sides if isinstance(s, Column)]
        lit = [s for s in sides if isinstance(s, Literal)]
        return len(col) == 1 and len(lit) == 1 and col[0].name in sorted_by
    if isinstance(node, In):
        return (
            isinstance(node.operand, Column)
            and node.operand.name in sorted_by
            and len(node.values) <= MAX_IN_VALUES
        )
    if isinstance(node, IsNull):
        return isinstance(node.operand, Column) and node.operand.name in sorted_by
    return False


def _key_lookup(node: Node) -> bool:
    """``pair_id = constant`` or ``pair_id IN`` a short list: at most that many rows."""
    if isinstance(node, Compare) and node.op == "=":
        sides = {type(node.left), type(node.right)}
        column = node.left if isinstance(node.left, Column) else node.right
        return sides == {Column, Literal} and column.name == UNIQUE_KEY
    if isinstance(node, In):
        return (
            isinstance(node.operand, Column)
            and node.operand.name == UNIQUE_KEY
            and len(node.values) <= MAX_IN_VALUES
        )
    return False


def use_index(table: lance.LanceDataset, node: Node | None, sql: str | None) -> bool:
    """Whether reading the rows of ``node`` (printed as ``sql``) through the scalar
    indexes is expected to beat a full scan of ``table``; see the module docstring."""
    if node is None or sql is None:
        return True  # no filter: both read every row the same way
    if few_runs(node, clustered_columns(table)):
        return True
    total = table.count_rows()
    try:
        selected = table.count_rows(filter=sql)
    except RuntimeError as exc:  # a panic inside Lance; the read would fail the same way
        raise ValueError(f"Lance could not evaluate the filter {sql!r}: {exc}") from exc
    return selected <= SCATTERED_INDEX_FRACTION * total


def read_options(table: lance.LanceDataset, node: Node | None, sql: str | None) -> dict[str, Any]:
    """Scanner options for reading ``sql``'s rows of ``table``: none (Lance's default,
    indexes used) or :data:`SCAN_OPTIONS`."""
    return {} if use_index(table, node, sql) else dict(SCAN_OPTIONS)
