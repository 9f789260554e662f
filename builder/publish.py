"""Building into object storage: a local staging folder mirrored after every commit.

The writer's commit protocol needs atomic renames and a lock file, which object
stores do not have, so a build writes into a local staging folder and, after each
commit, every new or changed file is uploaded, the manifests last. Shards, shard
indexes and Lance data, index and version files are immutable once committed, so a
reader of the remote prefix sees either the previous ``manifest.json`` or the new one,
and every file the manifest names is already there. A killed build leaves the remote
at its last published commit; running it again with the same staging folder resumes.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pvtt.schemas.manifest import MANIFEST_NAME, RANKS_DIR
from pvtt.schemas.storage import S3Options, s3_filesystem, scheme_of

SKIPPED_DIRS = ("cache",)
"""Stage artefacts stay local: they are this machine's cache, not the dataset."""


def is_remote(location: str | os.PathLike[str]) -> bool:
    return scheme_of(os.fspath(location)) is not None


def default_staging(remote: str) -> Path:
    """``~/.cache/pvtt/staging/<hash of the URI>``: the same folder for the same output."""
    digest = hashlib.sha256(remote.rstrip("/").encode()).hexdigest()[:16]
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "pvtt" / "staging" / digest


class Publisher:
    """Uploads what a local build folder committed to an ``s3://`` prefix."""

    def __init__(
        self, local: str | os.PathLike[str], remote: str, storage_options: Mapping[str, Any] | None = None
    ) -> None:
        if scheme_of(remote) != "s3":
            raise ValueError(f"{remote}: only s3:// outputs are supported")
        self.local = Path(local)
        self.remote = remote.rstrip("/")
        self.fs = s3_filesystem(S3Options.resolve(storage_options).fsspec_kwargs())
        self._sent: dict[str, tuple[int, int]] = {}
        self.uploaded_bytes = 0

    def _files(self) -> list[tuple[str, Path]]:
        out = []
        for path in self.local.rglob("*"):
            rel = path.relative_to(self.local)
            if not path.is_file() or rel.parts[0] in SKIPPED_DIRS:
                continue
            if any(part.startswith(".") for part in rel.parts):
                continue  # temporary files and the writer's lock
            out.append((rel.as_posix(), path))
        return out

    def publish(self) -> None:
        """Upload new and changed files; rank manifests, then ``manifest.json``, last."""

        def order(item: tuple[str, Path]) -> int:
            rel = item[0]
            return 2 if rel == MANIFEST_NAME else 1 if rel.startswith(f"{RANKS_DIR}/") else 0

        for rel, path in sorted(self._files(), key=order):
            stat = path.stat()
            stamp = (stat.st_size, stat.st_mtime_ns)
            if self._sent.get(rel) == stamp:
                continue
            self.fs.put_file(str(path), f"{self.remote}/{rel}")
            self._sent[rel] = stamp
            self.uploaded_bytes += stat.st_size
