"""New versions of a built dataset's tables, published through its manifest.

``pvtt review`` appends labels and ``pvtt calibrate --apply`` rewrites the gate's
verdict columns. Both follow the build's commit rule: Lance writes a new table version
first, its files are made durable, and only then does an atomic manifest rewrite name
that version; a process killed in between leaves the previous manifest, and readers,
untouched. Media columns are never rewritten: labels live in their own table, and a
verdict update writes new data files for the updated columns only.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lance
import pyarrow as pa

from pvtt.builder.sinks.category_copy import write_category_copy
from pvtt.builder.sinks.lance import SCALAR_INDEXES, DurableTree
from pvtt.schemas.labels import LABELS_PATH, LABELS_SCHEMA, LABELS_TABLE
from pvtt.schemas.manifest import (
    Manifest,
    ManifestError,
    ShardInfo,
    TableInfo,
    atomic_write_bytes,
    read_manifest,
    write_manifest,
)
from pvtt.schemas.shards import FILTER_COLUMNS, OVERLAY_KEY
from pvtt.schemas.tables import MEDIA_COLUMNS, TABLE_KEYS

EDIT_LOCK = ".lock-r000"
"""The lock file of rank 0's :class:`~pvtt.builder.writer.DatasetWriter`."""
_VERSIONED = re.compile(r"(\.v\d+)?\.json$")
"""A shard index name's ending, with the pairs version an earlier update gave it."""


def local_root(out: str | os.PathLike[str]) -> Path:
    """``out`` as a local folder; editing a dataset on an object store is refused."""
    if "://" in os.fspath(out):
        raise ValueError(f"{out}: only a local dataset folder can be edited (labels, --apply)")
    return Path(out)


def append_labels(out: str | os.PathLike[str], rows: list[dict[str, object]]) -> TableInfo:
    """Append ``rows`` (:data:`LABELS_SCHEMA` dicts) as one new version of the labels table.

    Unlike the build's tables, labels are never rolled back to the manifest's version:
    rows the manifest does not name yet (a session killed between its Lance commit and
    its manifest, or a manifest rewritten without the table by an older tool) are human
    verdicts, so they are kept and published with this session's.
    """
    root = local_root(out)
    manifest = read_manifest(root)
    uri = root / LABELS_PATH
    data = pa.Table.from_pylist(rows, schema=LABELS_SCHEMA)
    mode = "append" if uri.exists() else "create"
    ds = lance.write_dataset(data, str(uri), schema=LABELS_SCHEMA, mode=mode)
    return _publish(root, manifest, LABELS_TABLE, LABELS_PATH, ds)


def replace_pair_columns(
    out: str | os.PathLike[str],
    updates: pa.Table,
    edit_manifest: Callable[[Manifest], None] | None = None,
) -> TableInfo:
    """Set the columns of ``updates`` (``pair_id`` plus the columns to replace) in ``pairs``.

    Each fragment gets new data files for those columns only (Lance's column update),
    so media blobs are neither read nor copied; the scalar indexes are brought up to
    date. ``edit_manifest``, when given, changes the manifest that publishes the new
    version (e.g. the threshold and counts the new verdicts come with).
    """
    root = local_root(out)
    with edit_lock(root):
        return _replace_pair_columns(root, updates, edit_manifest)


def _replace_pair_columns(
    root: Path, updates: pa.Table, edit_manifest: Callable[[Manifest], None] | None
) -> TableInfo:
    manifest = read_manifest(root)
    info = manifest.tables.get("pairs")
    if info is None:
        raise ManifestError(f"{root}: the dataset has no Lance pairs table to update")
    key = TABLE_KEYS["pairs"]
    touched = [c for c in updates.column_names if c != key]
    bad = [c for c in touched if c in MEDIA_COLUMNS["pairs"]]
    if key not in updates.column_names or not touched or bad:
        raise ValueError(
            f"updates need {key!r} and scalar columns to set, got {updates.column_names}"
        )
    uri = root / info.path
    latest = committed_table(uri, info)
    fragments, fields = [], set()
    for fragment in latest.get_fragments():
        meta, modified = fragment.update_columns(updates, left_on=key, right_on=key)
        fragments.append(meta)
        fields.update(modified)
    op = lance.LanceOperation.Update(updated_fragments=fragments, fields_modified=sorted(fields))
    ds = lance.LanceDataset.commit(str(uri), op, read_version=latest.version)
    indexed = {c for c, _ in SCALAR_INDEXES["pairs"]}
    if indexed & set(touched):
        ds.optimize.optimize_indices()  # the update left the changed fragments unindexed
        ds = lance.dataset(str(uri))
    if edit_manifest is not None:
        edit_manifest(manifest)
    if manifest.shards:
        _rewrite_shard_indexes(root, manifest, updates, touched, ds.version)
    write_category_copy(ds)  # for the version published next: category filters stay one run
    return _publish(root, manifest, "pairs", info.path, ds)


def committed_table(uri: Path, info: TableInfo) -> lance.LanceDataset:
    """The table at the manifest's version, made its latest again.

    Versions past the manifest's are an edit or a build killed before its manifest
    named them: readers never saw them, and (as a build resuming does) they are rolled
    back, so an edit killed at any point can simply be run again. The caller holds
    :func:`edit_lock`, so no build is writing them now.
    """
    latest = lance.dataset(str(uri))
    if latest.version != info.version:
        latest.checkout_version(info.version).restore()
        latest = lance.dataset(str(uri))
    return latest


@contextmanager
def edit_lock(root: Path) -> Iterator[None]:
    """Hold the dataset's writer lock (the one rank 0 of ``pvtt build`` holds) while an
    edit runs: no build, and no other edit, writes the dataset meanwhile."""
    path = root / EDIT_LOCK
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ManifestError(
                f"{root}: a pvtt build or another edit is writing this dataset ({path} is locked)"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _rewrite_shard_indexes(
    root: Path, manifest: Manifest, updates: pa.Table, columns: list[str], version: int
) -> None:
    """Give the tar shards new indexes carrying the updated columns.

    A shard's index holds the filter columns its readers select samples by, so it must
    agree with the table; every updated column also goes into the entry's overlay
    (:data:`~pvtt.schemas.shards.OVERLAY_KEY`), which supersedes the sample's own json.
    The tar members (and each sample's json) are left as built: the new index files,
    named after the pairs version, are written beside the old ones and the manifest
    (written by the caller) names them.
    """
    key = TABLE_KEYS["pairs"]
    values = {row[key]: row for row in updates.select([key, *columns]).to_pylist()}
    for shard in manifest.shards:
        index = read_shard_index(root, shard)
        for entry in index["samples"]:
            new = values.get(entry["key"])
            if new is not None:
                entry.update({c: new[c] for c in columns if c in FILTER_COLUMNS})
                overlay = entry.setdefault(OVERLAY_KEY, {})
                overlay.update({c: new[c] for c in columns})
        write_shard_index(root, shard, index, version)


def read_shard_index(root: Path, shard: ShardInfo) -> dict[str, Any]:
    """The whole index file of ``shard`` (its ``samples`` and keyframe tables)."""
    path = root / shard.index
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path}: unreadable shard index: {exc}") from None
    if not isinstance(index, dict) or not isinstance(index.get("samples"), list):
        raise ManifestError(f"{path}: shard index has no samples list")
    return index


def write_shard_index(root: Path, shard: ShardInfo, index: dict[str, Any], version: int) -> None:
    """Write ``index`` as the shard's index for pairs ``version`` and point ``shard`` at it
    (the manifest that names it is written later); its counts follow the entries."""
    name = f"{_VERSIONED.sub('', shard.index)}.v{version}.json"
    atomic_write_bytes(root / name, json.dumps(index).encode("utf-8"))
    samples = index["samples"]
    shard.index = name
    shard.samples = len(samples)
    shard.passed = sum(1 for entry in samples if entry.get("passed"))
    counts: dict[str, int] = {}
    for entry in samples:
        counts[entry["difficulty"]] = counts.get(entry["difficulty"], 0) + 1
    shard.counts = counts
    scores = [e["quality_score"] for e in samples if e.get("quality_score") is not None]
    shard.score_min = min(scores) if scores else None
    shard.score_max = max(scores) if scores else None


def _publish(
    root: Path, manifest: Manifest, name: str, path: str, ds: lance.LanceDataset
) -> TableInfo:
    """Make the table's files durable, then name its new version in the manifest."""
    DurableTree(root / path, durable=False).sync()
    info = TableInfo(path=path, version=ds.version, rows=ds.count_rows())
    manifest.tables[name] = info
    write_manifest(root, manifest)
    return info
