"""Read access to a built dataset exactly as its manifest commits it.

Every reader goes through :class:`BuiltDataset`: Lance tables are opened at the
versions the manifest names and only the shards it lists exist, so rows and
shards a killed writer left behind are never seen. The dataset may be a local
folder or an ``s3://`` prefix (:mod:`pvtt.loaders.fs` maps ``storage_options``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

import lance

from pvtt.loaders.category_route import category_copy
from pvtt.loaders.fs import Storage
from pvtt.loaders.tar_reader import read_sample, read_sample_json
from pvtt.loaders.where_tree import sql_in
from pvtt.schemas.manifest import MANIFEST_NAME, Manifest, ManifestError, ShardInfo, parse_manifest
from pvtt.schemas.shards import overlaid_meta
from pvtt.schemas.version import SCHEMA_VERSION_KEY, check_schema_version


class BuiltDataset:
    """A committed pvtt dataset: a local folder or an ``s3://`` prefix."""

    def __init__(
        self, out: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None
    ) -> None:
        self.storage = Storage(out, storage_options)
        self.root: Path | str = self.storage.root
        where = str(self.storage.path(MANIFEST_NAME))
        try:
            raw = self.storage.read_bytes(MANIFEST_NAME)
        except FileNotFoundError:
            raise ManifestError(f"{where}: no manifest; is {out} a pvtt dataset?") from None
        self.manifest: Manifest = parse_manifest(raw, where)

    @property
    def formats(self) -> list[str]:
        return list(self.manifest.formats)

    @property
    def has_lance(self) -> bool:
        return "lance" in self.manifest.formats and "pairs" in self.manifest.tables

    @property
    def has_tar(self) -> bool:
        return "tar" in self.manifest.formats

    def table(self, name: str) -> lance.LanceDataset:
        """The Lance table ``name`` at its committed version."""
        info = self.manifest.tables.get(name)
        if info is None:
            raise ManifestError(f"{self.root}: the dataset has no Lance table {name!r}")
        uri = self.storage.lance_uri(info.path)
        try:
            ds = lance.dataset(
                uri, version=info.version, storage_options=self.storage.lance_options
            )
        except (OSError, ValueError) as exc:
            raise ManifestError(f"{uri}: cannot open version {info.version}: {exc}") from None
        check_schema_version((ds.schema.metadata or {}).get(SCHEMA_VERSION_KEY.encode()), str(uri))
        return ds

    @cached_property
    def pairs(self) -> lance.LanceDataset:
        return self.table("pairs")

    @cached_property
    def pairs_by_category(self) -> lance.LanceDataset | None:
        """The copy of the ``pairs`` filter columns ordered by category, when it mirrors
        :attr:`pairs` (:mod:`pvtt.loaders.category_route`); opened once, so its index is
        read once for all the queries of this dataset."""
        return category_copy(self.pairs, self.storage.lance_options)

    @property
    def shards(self) -> list[ShardInfo]:
        return list(self.manifest.shards)

    def shard_path(self, shard: ShardInfo) -> Path | str:
        """The shard's file: a Path locally, a URI on an object store."""
        return self.storage.path(shard.path)

    def shard_index(self, shard: ShardInfo) -> list[dict[str, Any]]:
        """The per-sample entries (key, byte range, filter columns) of one shard."""
        path = self.storage.path(shard.index)
        try:
            return json.loads(self.storage.read_bytes(shard.index))["samples"]
        except FileNotFoundError:
            raise ManifestError(f"{path}: shard index missing") from None
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError) as exc:
            raise ManifestError(f"{path}: unreadable shard index: {exc}") from None

    def read_sample(
        self, shard: str, entry: dict[str, Any], fields: set[str] | None = None
    ) -> dict[str, bytes]:
        """Members of one sample of shard ``shard`` (its manifest path), by byte range."""
        return read_sample(self.storage.path(shard), entry, fields, fs=self.storage.fs)

    def read_sample_json(self, shard: str, entry: dict[str, Any]) -> dict[str, Any]:
        """The scalar columns of one sample of shard ``shard`` as the dataset holds them now:
        its ``{key}.json`` under the index entry's columns and overlay (a rescore or
        ``calibrate --apply`` updates the index, never the tar)."""
        meta = read_sample_json(self.storage.path(shard), entry, fs=self.storage.fs)
        return overlaid_meta(meta, entry)


def open_dataset(
    out: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None
) -> BuiltDataset:
    """The committed dataset at ``out`` (a folder or ``s3://bucket/prefix``)."""
    return BuiltDataset(out, storage_options)


def read_blobs_by_key(
    table: lance.LanceDataset, column: str, key_column: str, keys: list[str]
) -> dict[str, bytes | None]:
    """Media bytes of ``column`` for the rows whose ``key_column`` is in ``keys``."""
    if not keys:
        return {}
    rows = table.to_table(columns=[key_column], filter=sql_in(key_column, keys), with_row_id=True)
    ids = rows.column("_rowid").to_pylist()
    names = rows.column(key_column).to_pylist()
    blobs = table.read_blobs(column, ids=ids, preserve_order=True)
    return {name: data for name, (_addr, data) in zip(names, blobs, strict=True)}
