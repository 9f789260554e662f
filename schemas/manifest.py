"""``manifest.json``: the one commit point of a built dataset.

Sinks write shards and table versions first; the manifest is written last, by an
atomic rename, and names exactly the shards and Lance table versions that belong
to the dataset. Readers trust only what the manifest names, so anything a killed
writer left behind is invisible to them, and the previous manifest stays valid.

A manifest may come from anywhere (a downloaded dataset, an object store), so parsing
checks every field's type and confines every path it names to the dataset folder: a
manifest that parses can be used without further checks, and one that does not
raises :class:`ManifestError` (or ``SchemaVersionError``) and nothing else.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
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
        """A manifest from parsed JSON, every field checked; unknown top-level keys are ignored."""
        if data.get("format") != FORMAT_NAME:
            raise ManifestError(f"{where}: not a pvtt manifest (format={data.get('format')!r})")
        check_schema_version(data.get("schema_version"), where)
        known = {k: v for k, v in data.items() if k in _MANIFEST_FIELDS}
        _check_fields(known, _MANIFEST_FIELDS, "", where)
        if "build_id" not in known:
            raise ManifestError(f"{where}: malformed manifest: no build_id")
        known["tables"] = {
            name: TableInfo(**_entry(info, _TABLE_FIELDS, 3, f"tables.{name}", where))
            for name, info in known.get("tables", {}).items()
        }
        known["shards"] = [
            ShardInfo(**_entry(shard, _SHARD_FIELDS, 5, f"shards[{i}]", where))
            for i, shard in enumerate(known.get("shards", []))
        ]
        return cls(**known)


# -- field checks ----------------------------------------------------------------

_Check = tuple[Callable[[Any], bool], str]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_relative_path(value: Any) -> bool:
    """A '/'-separated path that stays inside the dataset folder (no '..', root, drive or URL)."""
    if not isinstance(value, str) or not value or "\\" in value or "\x00" in value:
        return False
    parts = value.split("/")
    return ":" not in parts[0] and all(part not in ("", ".", "..") for part in parts)


def _map_of(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, dict) and all(check(x) for x in v.values())


def _list_of(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, list) and all(check(x) for x in v)


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


_OBJECT: _Check = (lambda v: isinstance(v, dict), "an object")
_STR: _Check = (_is_str, "a string")
_COUNT: _Check = (lambda v: _is_int(v) and v >= 0, "an int >= 0")
_PATH: _Check = (_is_relative_path, "a relative path inside the dataset folder")
_SCORE: _Check = (lambda v: v is None or _is_number(v), "a number or null")

_MANIFEST_FIELDS: dict[str, _Check] = {
    "build_id": _STR,
    "schema_version": (lambda v: True, "a schema version"),  # check_schema_version's job
    "format": _STR,
    "created_at": _STR,
    "updated_at": _STR,
    "complete": (lambda v: isinstance(v, bool), "true or false"),
    "formats": (_list_of(_is_str), "a list of strings"),
    "config": _OBJECT,
    "backends": _OBJECT,
    "tables": (_map_of(lambda v: isinstance(v, dict)), "an object of table objects"),
    "shards": (_list_of(lambda v: isinstance(v, dict)), "a list of shard objects"),
    "counts": _OBJECT,
    "rank": (lambda v: v is None or (_is_int(v) and v >= 0), "an int >= 0 or null"),
    "world_size": (lambda v: _is_int(v) and v >= 1, "an int >= 1"),
    "fragments": (_map_of(_list_of(_is_str)), "an object of string lists"),
    "keys": (_map_of(_list_of(_is_str)), "an object of string lists"),
    "merged": (_map_of(_is_str), "an object of strings"),
}
_TABLE_FIELDS: dict[str, _Check] = {"path": _PATH, "version": _COUNT, "rows": _COUNT}
_SHARD_FIELDS: dict[str, _Check] = {
    "path": _PATH,
    "index": _PATH,
    "rank": _COUNT,
    "samples": _COUNT,
    "bytes": _COUNT,
    "counts": (_map_of(lambda v: _is_int(v) and v >= 0), "an object of ints >= 0"),
    "passed": _COUNT,
    "score_min": _SCORE,
    "score_max": _SCORE,
}


def _check_fields(data: dict[str, Any], spec: dict[str, _Check], prefix: str, where: str) -> None:
    for name, value in data.items():
        check, expected = spec[name]
        if not check(value):
            shown = repr(value)
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            raise ManifestError(f"{where}: {prefix}{name} must be {expected}, got {shown}")


def _entry(
    data: dict[str, Any], spec: dict[str, _Check], required: int, what: str, where: str
) -> dict[str, Any]:
    """A table or shard entry, checked: the first ``required`` keys of ``spec`` present, no
    unknown keys, every value well typed."""
    unknown = sorted(set(data) - set(spec))
    missing = [name for name in list(spec)[:required] if name not in data]
    if unknown or missing:
        raise ManifestError(
            f"{where}: malformed manifest: {what} has unknown keys {unknown} or lacks {missing}"
        )
    _check_fields(data, spec, f"{what}.", where)
    return data


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
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
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
