"""Where a built dataset lives: a local folder or an object-store prefix (``s3://``).

Local folders are read with plain files, so the common path pays nothing for
object-store support. An ``s3://`` prefix is read with fsspec/s3fs (manifest,
shard indexes, tar byte ranges) and by Lance's own object store (tables); one
options dict configures both (:mod:`pvtt.schemas.storage`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

from pvtt.schemas.storage import S3Options, s3_filesystem, scheme_of

READ_BLOCK = 8 << 20
"""Readahead of sequential object-store reads (``pvtt verify`` walks whole shards)."""


class Storage:
    """The files of one dataset root, local or on S3, addressed by relative path.

    ``fs`` is None for a local folder (plain files) and the s3fs filesystem for
    ``s3://``; ``lance_options`` is what ``lance.dataset(storage_options=...)`` needs.
    """

    def __init__(
        self, root: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None
    ) -> None:
        text = os.fspath(root)
        scheme = scheme_of(text)
        self.root: Path | str
        self.fs: Any = None
        self.lance_options: dict[str, str] | None = None
        if scheme is None:
            if storage_options:
                raise ValueError(
                    f"{text}: storage options apply to s3:// URIs, not to local folders"
                )
            self.root = Path(text)
        elif scheme == "s3":
            options = S3Options.resolve(storage_options)
            self.root = text.rstrip("/")
            self.fs = s3_filesystem(options.fsspec_kwargs())
            self.lance_options = options.lance_options()
        else:
            raise ValueError(f"{text}: unsupported scheme {scheme}://; use a local folder or s3://")

    @property
    def local(self) -> bool:
        return self.fs is None

    def path(self, rel: str) -> Path | str:
        """``rel`` under the root: a Path locally, a URI on S3."""
        if isinstance(self.root, Path):
            return self.root / rel
        return f"{self.root}/{rel}"

    def read_bytes(self, rel: str) -> bytes:
        """The whole file; raises FileNotFoundError when absent (locally and on S3)."""
        path = self.path(rel)
        if self.fs is None:
            return Path(path).read_bytes()
        return self.fs.cat_file(path)

    def open(self, rel: str) -> BinaryIO:
        """A seekable reader for sequential passes, with readahead on S3."""
        path = self.path(rel)
        if self.fs is None:
            return open(path, "rb")
        return self.fs.open(path, "rb", cache_type="readahead", block_size=READ_BLOCK)

    def size(self, rel: str) -> int | None:
        """Bytes of a file, None when it does not exist."""
        path = self.path(rel)
        if self.fs is None:
            return Path(path).stat().st_size if Path(path).is_file() else None
        try:
            info = self.fs.info(path)
        except FileNotFoundError:
            return None
        return int(info["size"]) if info.get("type") == "file" else None

    def tree_bytes(self, rel: str) -> int:
        """Bytes of every file under ``rel`` (a Lance table folder)."""
        path = self.path(rel)
        if self.fs is not None:
            return int(self.fs.du(path))
        total = 0
        for root, _dirs, files in os.walk(path):
            for name in files:
                try:
                    total += os.path.getsize(os.path.join(root, name))
                except OSError:
                    continue
        return total

    def lance_uri(self, rel: str) -> str:
        return str(self.path(rel))
