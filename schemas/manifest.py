"""``manifest.json``: the one commit point of a built dataset.

Sinks write shards and table versions first; the manifest is written last, by an
atomic rename, and names exactly the shards and Lance table versions that belong
to the dataset. Readers trust only what the manifest names, so anything a killed
writer left behind is invisible to them, and the previous manifest stays valid.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pvtt.schemas.version import SCHEMA_VERSION, check_schema_version

MANIFEST_NAME = "manifest.json"
FORMAT_NAME = "pvtt"


class ManifestError(ValueError):
    """A manifest that is missing, unreadable or inconsistent."""


@dataclass
class ShardInfo:
    """One committed tar shard and what it holds (for planning reads without opening it)."""

    path: str
    index: str
    rank: int
    samples: int
    bytes: int
    counts: dict[str, int] = field(default_factory=dict)
    passed: int = 0
    score_min: float | None = None
    score_max: float | None = None


@dataclass
class TableInfo:
    """A Lance table and the version of it that belongs to the dataset."""

    path: str
    version: int
    rows: int


@dataclass
class Manifest:
    build_id: str
    schema_version: int = SCHEMA_VERSION
    format: str = FORMAT_NAME
    created_at: str = ""
    updated_at: str = ""
    complete: bool = False
    formats: list[str] = field(default_factory=lambda: ["lance", "tar"])
    config: dict[str, Any] = field(default_factory=dict)
    backends: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, TableInfo] = field(default_factory=dict)
    shards: list[ShardInfo] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)
    rank: int | None = None
    """Set on a rank's own manifest (``ranks/r{rank:03d}.json``) in a multi-rank build."""
    world_size: int = 1
    fragments: dict[str, list[str]] = field(default_factory=dict)
    """Rank manifests: each table's written but uncommitted Lance fragments (JSON), which
    ``pvtt merge`` commits for all ranks at once."""
    keys: dict[str, list[str]] = field(default_factory=dict)
    """Rank manifests: the keys each table's committed fragments hold (for resume)."""
    merged: dict[str, str] = field(default_factory=dict)
    """The top manifest after ``pvtt merge``: rank -> digest of the rank manifest merged."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = MANIFEST_NAME) -> Manifest:
        if data.get("format") != FORMAT_NAME:
            raise ManifestError(f"{where}: not a pvtt manifest (format={data.get('format')!r})")
        check_schema_version(data.get("schema_version"), where)
        try:
            tables = {k: TableInfo(**v) for k, v in data.get("tables", {}).items()}
            shards = [ShardInfo(**s) for s in data.get("shards", [])]
            known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
            known.update(tables=tables, shards=shards)
            return cls(**known)
        except TypeError as exc:
            raise ManifestError(f"{where}: malformed manifest: {exc}") from None


RANKS_DIR = "ranks"


def rank_manifest_name(rank: int) -> str:
    return f"{RANKS_DIR}/r{rank:03d}.json"


def manifest_path(out: str | os.PathLike[str], name: str = MANIFEST_NAME) -> Path:
    return Path(out) / name


def read_manifest(out: str | os.PathLike[str], name: str = MANIFEST_NAME) -> Manifest:
    """The committed manifest of ``out``; raises :class:`ManifestError` when absent or bad."""
    path = manifest_path(out, name)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ManifestError(f"{path}: no manifest; is {out} a pvtt dataset?") from None
    return parse_manifest(raw, str(path))


def parse_manifest(raw: bytes, where: str) -> Manifest:
    """A manifest from its bytes, wherever they were read (a file, an object store)."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{where}: unreadable manifest: {exc}") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{where}: manifest is not a JSON object")
    return Manifest.from_dict(data, where)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` so that ``path`` holds either the old or the whole new content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, default_file_mode())  # mkstemp's 0600 would hide the dataset from others
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def default_file_mode() -> int:
    """The mode ``open()`` gives new files under the current umask (0644 for umask 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(
    out: str | os.PathLike[str], manifest: Manifest, name: str = MANIFEST_NAME
) -> None:
    now = datetime.now(timezone.utc).isoformat()
    manifest.created_at = manifest.created_at or now
    manifest.updated_at = now
    atomic_write_bytes(manifest_path(out, name), manifest.to_json().encode("utf-8"))
