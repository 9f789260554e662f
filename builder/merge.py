"""``pvtt merge``: publish every rank of a multi-rank build as one dataset.

Each rank committed its own manifest (``ranks/r{rank:03d}.json``): its tar shards and
its Lance fragments, written but not committed. Merging checks that every rank of the
world finished and that no key appears twice, commits all fragments of each table in
one Lance transaction (an overwrite with exactly the union, so merging again after a
rank was re-run gives the same tables), compacts and indexes them, and writes the top
manifest last. Merging an unchanged set of ranks again does nothing. The ranks'
fragment files are kept beside the compacted table (about twice the table's bytes):
merging again after a rank was re-run commits them anew.

An ``s3://`` output (ranks on many nodes, each publishing its commits there) merges
the same way: the rank manifests are fetched into a temporary folder, the tables are
committed in place on the object store, and the dataset card, then ``manifest.json``,
are uploaded last, so readers see the merged dataset all at once or not at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from pvtt.builder.card import CARD_NAME, write_card
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
from pvtt.schemas.storage import S3Options, s3_filesystem, scheme_of
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


def _commit_tables(
    root: Path | str, manifests: list[Manifest], storage_options: dict[str, str] | None = None
) -> dict[str, TableInfo]:
    """Commit every rank's fragments; ``root`` is the output folder or its s3:// URI."""
    import lance
    from lance.fragment import FragmentMetadata

    from pvtt.builder.sinks.lance import LANCE_DIR, optimise_table

    tables: dict[str, TableInfo] = {}
    for name, schema in TABLE_SCHEMAS.items():
        uri: Path | str = (
            root / LANCE_DIR / f"{name}.lance"
            if isinstance(root, Path)
            else f"{root}/{LANCE_DIR}/{name}.lance"
        )
        raw = [json.loads(j) for m in manifests for j in m.fragments.get(name, [])]
        for i, frag in enumerate(raw):  # each rank numbered its own fragments from 0
            frag["id"] = i
        fragments = [FragmentMetadata.from_json(json.dumps(f)) for f in raw]
        # Overwrite with exactly the union (also after a rank was re-run), under the field
        # ids a fresh table of this schema gets: the ids the ranks wrote their fragments with
        read_version = _version(uri, storage_options)
        lance.LanceDataset.commit(
            str(uri), lance.LanceOperation.Overwrite(_fresh_schema(schema), fragments),
            read_version=read_version, storage_options=storage_options,
        )
        ds = optimise_table(uri, name, storage_options=storage_options) or lance.dataset(
            str(uri), storage_options=storage_options
        )
        tables[name] = TableInfo(path=f"{LANCE_DIR}/{name}.lance", version=ds.version, rows=ds.count_rows())
    return tables


def _version(uri: Path | str, storage_options: dict[str, str] | None) -> int | None:
    """The table's current version, None where no version was committed yet."""
    import lance

    if isinstance(uri, Path):
        return lance.dataset(str(uri)).version if (uri / "_versions").is_dir() else None
    try:
        return lance.dataset(uri, storage_options=storage_options).version
    except (ValueError, FileNotFoundError, OSError):  # lance: "Dataset at path ... was not found"
        return None


def _fresh_schema(schema: Any) -> Any:
    """The Lance schema (with field ids) that a new table of ``schema`` gets."""
    import lance

    with tempfile.TemporaryDirectory(prefix="pvtt-schema-") as tmp:
        return lance.write_dataset(schema.empty_table(), f"{tmp}/t.lance", schema=schema).lance_schema


def merge(
    out: str | os.PathLike[str], storage_options: dict[str, Any] | None = None
) -> Manifest:
    """Publish all ranks of ``out`` (a folder or an ``s3://`` URI) as one dataset."""
    if scheme_of(os.fspath(out)) is not None:
        return _merge_remote(os.fspath(out).rstrip("/"), storage_options)
    out = Path(out)
    manifests, digests = _rank_manifests(out)
    if manifest_path(out).exists():
        top = read_manifest(out)
        if top.merged == digests:
            return top  # already merged exactly these ranks
    top = _top_manifest(manifests, digests, out, None)
    write_manifest(out, top, MANIFEST_NAME)
    write_card(out, top)
    return top


def _top_manifest(
    manifests: list[Manifest],
    digests: dict[str, str],
    tables_root: Path | str,
    storage_options: dict[str, str] | None,
) -> Manifest:
    _check_unique(manifests)
    first = manifests[0]
    top = Manifest(build_id=first.build_id, formats=first.formats, config=first.config,
                   backends=first.backends, world_size=first.world_size)
    if "lance" in first.formats:
        top.tables = _commit_tables(tables_root, manifests, storage_options)
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
    return top


def _merge_remote(remote: str, storage_options: dict[str, Any] | None) -> Manifest:
    """Merge the ranks under an ``s3://`` prefix: manifests via a temporary folder."""
    options = S3Options.resolve(storage_options)
    fs = s3_filesystem(options.fsspec_kwargs())
    with tempfile.TemporaryDirectory(prefix="pvtt-merge-") as tmp:
        local = Path(tmp)
        (local / RANKS_DIR).mkdir()
        for key in fs.glob(f"{remote}/{RANKS_DIR}/r*.json"):
            fs.get_file(key, str(local / RANKS_DIR / key.rsplit("/", 1)[-1]))
        if fs.exists(f"{remote}/{MANIFEST_NAME}"):
            fs.get_file(f"{remote}/{MANIFEST_NAME}", str(manifest_path(local)))
        manifests, digests = _rank_manifests(local)
        if manifest_path(local).exists():
            top = read_manifest(local)
            if top.merged == digests:
                return top
        top = _top_manifest(manifests, digests, remote, options.lance_options())
        write_manifest(local, top, MANIFEST_NAME)
        write_card(local, top)
        fs.put_file(str(local / CARD_NAME), f"{remote}/{CARD_NAME}")
        fs.put_file(str(manifest_path(local)), f"{remote}/{MANIFEST_NAME}")  # the commit point
    return top
