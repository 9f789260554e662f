"""``pvtt merge``: publish every rank of a multi-rank build as one dataset.

Each rank committed its own manifest (``ranks/r{rank:03d}.json``): its tar shards and
its Lance fragments, written but not committed. Merging checks that every rank of the
world finished and that no key appears twice, commits all fragments of each table in
one Lance transaction (an overwrite with exactly the union, so merging again after a
rank was re-run gives the same tables), compacts and indexes them, and writes the top
manifest last. Merging an unchanged set of ranks again does nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from pvtt.builder.card import write_card
from pvtt.schemas.manifest import (
    MANIFEST_NAME,
    RANKS_DIR,
    Manifest,
    ManifestError,
    TableInfo,
    manifest_path,
    rank_manifest_name,
    read_manifest,
    write_manifest,
)
from pvtt.schemas.tables import TABLE_SCHEMAS


def _rank_manifests(out: Path) -> tuple[list[Manifest], dict[str, str]]:
    folder = out / RANKS_DIR
    files = sorted(folder.glob("r*.json")) if folder.is_dir() else []
    if not files:
        raise ManifestError(f"{out}: no rank manifests under {RANKS_DIR}/; nothing to merge")
    manifests = [read_manifest(out, f"{RANKS_DIR}/{f.name}") for f in files]
    world = manifests[0].world_size
    ranks = {m.rank for m in manifests}
    missing = sorted(set(range(world)) - ranks)
    if missing:
        raise ManifestError(f"{out}: ranks {missing} of {world} have not started; run them")
    odd = [m.rank for m in manifests if m.world_size != world or m.build_id != manifests[0].build_id]
    if odd:
        raise ManifestError(f"{out}: ranks {odd} belong to another build or world size")
    unfinished = sorted(m.rank for m in manifests if not m.complete)  # type: ignore[type-var]
    if unfinished:
        raise ManifestError(f"{out}: ranks {unfinished} did not finish; re-run them, then merge")
    digests = {
        str(m.rank): hashlib.sha256(manifest_path(out, rank_manifest_name(m.rank)).read_bytes()).hexdigest()[:16]  # type: ignore[arg-type]
        for m in manifests
    }
    return sorted(manifests, key=lambda m: m.rank or 0), digests


def _check_unique(manifests: list[Manifest]) -> None:
    for table in TABLE_SCHEMAS:
        counts = Counter(k for m in manifests for k in m.keys.get(table, []))
        twice = sorted(k for k, n in counts.items() if n > 1)
        if twice:
            raise ManifestError(f"{table}: {len(twice)} keys written by more than one rank, e.g. {twice[:3]}")


def _commit_tables(out: Path, manifests: list[Manifest]) -> dict[str, TableInfo]:
    import lance
    from lance.fragment import FragmentMetadata

    from pvtt.builder.sinks.lance import LANCE_DIR, optimise_table

    tables: dict[str, TableInfo] = {}
    for name, schema in TABLE_SCHEMAS.items():
        uri = out / LANCE_DIR / f"{name}.lance"
        raw = [json.loads(j) for m in manifests for j in m.fragments.get(name, [])]
        for i, frag in enumerate(raw):  # each rank numbered its own fragments from 0
            frag["id"] = i
        fragments = [FragmentMetadata.from_json(json.dumps(f)) for f in raw]
        # Overwrite with exactly the union (also after a rank was re-run), under the field
        # ids a fresh table of this schema gets: the ids the ranks wrote their fragments with
        read_version = lance.dataset(str(uri)).version if (uri / "_versions").is_dir() else None
        lance.LanceDataset.commit(
            str(uri), lance.LanceOperation.Overwrite(_fresh_schema(schema), fragments),
            read_version=read_version,
        )
        ds = optimise_table(uri, name) or lance.dataset(str(uri))
        tables[name] = TableInfo(path=f"{LANCE_DIR}/{name}.lance", version=ds.version, rows=ds.count_rows())
    return tables


def _fresh_schema(schema: Any) -> Any:
    """The Lance schema (with field ids) that a new table of ``schema`` gets."""
    import lance

    with tempfile.TemporaryDirectory(prefix="pvtt-schema-") as tmp:
        return lance.write_dataset(schema.empty_table(), f"{tmp}/t.lance", schema=schema).lance_schema


def merge(out: str | os.PathLike[str]) -> Manifest:
    """Publish all ranks of ``out`` as one dataset; returns the top manifest."""
    out = Path(out)
    manifests, digests = _rank_manifests(out)
    if manifest_path(out).exists():
        top = read_manifest(out)
        if top.merged == digests:
            return top  # already merged exactly these ranks
    _check_unique(manifests)
    first = manifests[0]
    top = Manifest(build_id=first.build_id, formats=first.formats, config=first.config,
                   backends=first.backends, world_size=first.world_size)
    if "lance" in first.formats:
        top.tables = _commit_tables(out, manifests)
    top.shards = sorted((s for m in manifests for s in m.shards), key=lambda s: s.path)
    by_difficulty: Counter[str] = Counter()
    for m in manifests:
        by_difficulty.update(m.counts.get("by_difficulty", {}))
    top.counts = {
        "by_difficulty": dict(sorted(by_difficulty.items())),
        "pairs": sum(by_difficulty.values()),
        "passed": sum(m.counts.get("passed", 0) for m in manifests),
    }
    top.merged = digests
    top.complete = True
    write_manifest(out, top, MANIFEST_NAME)
    write_card(out, top)
    return top
