"""Read access to a built dataset exactly as its manifest commits it.

Every reader goes through :class:`BuiltDataset`: Lance tables are opened at the
versions the manifest names and only the shards it lists exist, so rows and
shards a killed writer left behind are never seen.
"""

from __future__ import annotations

import json
import os
from functools import cached_property
from pathlib import Path
from typing import Any

import lance

from pvtt.schemas.manifest import Manifest, ManifestError, ShardInfo, read_manifest
from pvtt.schemas.version import SCHEMA_VERSION_KEY, check_schema_version


class BuiltDataset:
    """A committed pvtt dataset folder."""

    def __init__(self, out: str | os.PathLike[str]) -> None:
        self.root = Path(out)
        self.manifest: Manifest = read_manifest(self.root)

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
        uri = self.root / info.path
        try:
            ds = lance.dataset(str(uri), version=info.version)
        except (OSError, ValueError) as exc:
            raise ManifestError(f"{uri}: cannot open version {info.version}: {exc}") from None
        check_schema_version((ds.schema.metadata or {}).get(SCHEMA_VERSION_KEY.encode()), str(uri))
        return ds

    @cached_property
    def pairs(self) -> lance.LanceDataset:
        return self.table("pairs")

    @property
    def shards(self) -> list[ShardInfo]:
        return list(self.manifest.shards)

    def shard_path(self, shard: ShardInfo) -> Path:
        return self.root / shard.path

    def shard_index(self, shard: ShardInfo) -> list[dict[str, Any]]:
        """The per-sample entries (key, byte range, filter columns) of one shard."""
        path = self.root / shard.index
        try:
            return json.loads(path.read_text(encoding="utf-8"))["samples"]
        except FileNotFoundError:
            raise ManifestError(f"{path}: shard index missing") from None
        except (json.JSONDecodeError, KeyError) as exc:
            raise ManifestError(f"{path}: unreadable shard index: {exc}") from None


def open_dataset(out: str | os.PathLike[str]) -> BuiltDataset:
    return BuiltDataset(out)


def read_blobs_by_key(
    table: lance.LanceDataset, column: str, key_column: str, keys: list[str]
) -> dict[str, bytes | None]:
    """Media bytes of ``column`` for the rows whose ``key_column`` is in ``keys``."""
    if not keys:
        return {}
    quoted = ", ".join("'" + k.replace("'", "''") + "'" for k in keys)
    rows = table.to_table(columns=[key_column], filter=f"{key_column} IN ({quoted})", with_row_id=True)
    ids = rows.column("_rowid").to_pylist()
    names = rows.column(key_column).to_pylist()
    blobs = table.read_blobs(column, ids=ids, preserve_order=True)
    return {name: data for name, (_addr, data) in zip(names, blobs, strict=True)}
