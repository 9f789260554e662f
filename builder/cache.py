"""A content-addressed store of stage artefacts (per clip, per product image).

An artefact's key hashes the content of its inputs with the identity of the
stage that made it (backend, version, params), so changing one stage's backend
reruns that stage and those after it, and nothing before. Entries are written
into a temporary folder and renamed into place: a killed build never leaves a
half-written entry, and a re-run reuses every finished one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

CACHE_FORMAT = 1


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_digest(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes (the identity of a catalog input)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def cache_key(*parts: Any) -> str:
    """A stable key from JSON-serialisable parts (digests, fingerprints, settings)."""
    blob = json.dumps([CACHE_FORMAT, *parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class ArtifactCache:
    """Named byte blobs plus a JSON ``meta`` per key, under ``root``.

    Safe to share between threads: a put lands by one rename, and the hit and miss
    counters are counted under a lock (several clips are prepared at once).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()

    def _dir(self, key: str) -> Path:
        return self.root / key[:2] / key

    def get(self, key: str) -> tuple[dict[str, Any], dict[str, bytes]] | None:
        folder = self._dir(key)
        try:
            meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
            blobs = {name: (folder / f"{name}.bin").read_bytes() for name in meta.pop("_blobs")}
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            with self._lock:
                self.misses += 1
            return None
        with self._lock:
            self.hits += 1
        return meta, blobs

    def put(self, key: str, meta: dict[str, Any], blobs: dict[str, bytes]) -> None:
        folder = self._dir(key)
        if folder.exists():
            return
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key[:8]}-", dir=folder.parent))
        tmp.chmod(0o777 & ~_umask())  # mkdtemp's 0700 would hide a shared cache
        try:
            for name, data in blobs.items():
                (tmp / f"{name}.bin").write_bytes(data)
            (tmp / "meta.json").write_text(json.dumps({**meta, "_blobs": sorted(blobs)}))
            os.replace(tmp, folder)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not folder.exists():
                raise
