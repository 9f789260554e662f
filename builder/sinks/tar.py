"""WebDataset tar shards, written under a temporary name and renamed when complete.

A shard's index (``{shard}.index.json``) lists each sample's byte range and filter columns
under ``samples``, and under ``keyframes`` each sample's video keyframes:
``{key: {"synth.mp4": {"frames": [0, 16, ...], "offsets": [48, 91210, ...]}, ...}}``,
frame numbers in display order and byte offsets into the member's mp4 (whose index
sits at its front), so a reader can seek a window, or fetch only the GOPs it needs.
They sit beside ``samples``, not in its entries, which loaders keep for a whole epoch.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pvtt.builder.sinks.base import PairSample, SampleError
from pvtt.builder.video import VideoError, mp4_keyframe_index
from pvtt.schemas.manifest import Manifest, ShardInfo, atomic_write_bytes, fsync_dir
from pvtt.schemas.masks import MASKS_FILE_EXTENSION
from pvtt.schemas.records import scalar_dict
from pvtt.schemas.shards import (
    FILTER_COLUMNS,
    INDEX_SUFFIX,
    TAR_DIR,
    index_name,
    parse_shard_name,
    shard_name,
)

log = logging.getLogger(__name__)
_RANK_OF = re.compile(r"^pairs-r(\d{3,})-")


@dataclass
class _OpenShard:
    """A shard being written: a plain file, tar framing written by hand.

    ``tarfile.addfile`` copies a member through a 16 KiB loop (a ``BytesIO`` read and a
    write call per chunk, ~170 calls a 2.6 MB sample); one header, one write of the
    bytes and the padding give the same archive, byte for byte.
    """

    number: int
    tmp_path: Path
    fh: io.BufferedWriter
    offset: int = 0
    entries: list[dict] = field(default_factory=list)
    keyframes: dict[str, dict[str, dict[str, list[int]]]] = field(default_factory=dict)

    def add(self, header: bytes, data: bytes) -> None:
        self.fh.write(header)
        self.fh.write(data)
        padding = -len(data) % tarfile.BLOCKSIZE
        if padding:
            self.fh.write(bytes(padding))
        self.offset += len(header) + len(data) + padding

    def end(self) -> None:
        """The two zero blocks that end an archive, padded to a whole record (as tarfile)."""
        self.offset += 2 * tarfile.BLOCKSIZE
        self.fh.write(bytes(2 * tarfile.BLOCKSIZE + -self.offset % tarfile.RECORDSIZE))


class TarSink:
    """Writes one WebDataset sample per pair into rolling shards of this rank.

    A shard is closed (fsynced, then renamed from ``.{name}.tmp``) when it reaches
    ``max_samples`` or ``max_bytes``, or at a commit; only shards named by the
    manifest are part of the dataset.
    """

    name = "tar"

    def __init__(
        self,
        *,
        max_samples: int = 512,
        max_bytes: int = 1 << 30,
        include_background: bool = False,
        include_masks: bool = False,
    ) -> None:
        if max_samples < 1 or max_bytes < 1:
            raise ValueError("max_samples and max_bytes must be positive")
        self.max_samples = max_samples
        self.max_bytes = max_bytes
        self.include_background = include_background
        self.include_masks = include_masks
        self._dir: Path | None = None
        self._rank = 0
        self._next_number = 0
        self._open: _OpenShard | None = None
        self._closed: list[ShardInfo] = []
        self._mtime = int(time.time())

    # -- recovery ---------------------------------------------------------------
    def recover(self, out: Path, manifest: Manifest, rank: int) -> set[str]:
        self._dir = out / TAR_DIR
        self._dir.mkdir(parents=True, exist_ok=True)
        self._rank = rank
        committed = {Path(s.path).name for s in manifest.shards}
        numbers = [-1]
        for path in self._dir.iterdir():
            name = path.name
            m = _RANK_OF.match(name.lstrip("."))
            if m is None or int(m.group(1)) != rank:
                continue  # not ours: another rank's output or a foreign file
            if name.startswith("."):
                path.unlink(missing_ok=True)  # a file a killed writer was still writing
                continue
            shard = (
                name.removesuffix(INDEX_SUFFIX) + ".tar" if name.endswith(INDEX_SUFFIX) else name
            )
            parsed = parse_shard_name(shard)
            if parsed is None:
                continue
            if shard not in committed:
                path.unlink(missing_ok=True)  # complete but never committed: redo its pairs
            else:
                numbers.append(parsed[1])
        self._next_number = max(numbers) + 1
        keys: set[str] = set()
        for shard in manifest.shards:
            index = json.loads((out / shard.index).read_text(encoding="utf-8"))
            keys.update(entry["key"] for entry in index["samples"])
        return keys

    # -- writing ----------------------------------------------------------------
    def prepare(self, sample: PairSample) -> Callable[[], None]:
        """Encode the sample (json, member headers) and return what appends it to a shard.

        Everything that depends on the sample's data happens here, before a byte is
        written, so a sample that cannot be encoded raises :class:`SampleError` and leaves
        the shard as it was; the returned call only writes (its errors are the machine's).
        """
        pair = sample.pair
        key = pair.pair_id
        try:
            meta = scalar_dict(pair)
            payload = json.dumps(meta, allow_nan=False).encode("utf-8")
        except (ValueError, TypeError) as exc:
            raise SampleError(f"its columns cannot be written as JSON: {exc}", key) from None
        members: list[tuple[str, bytes]] = [
            ("json", payload),
            ("synth.mp4", _need(pair.synth_video, key, "synth_video")),
            ("source.mp4", _need(sample.clip.source_video, key, "source_video")),
            ("target.png", _need(sample.product.image_rgba, key, "image_rgba")),
        ]
        if self.include_background:
            members.append(
                ("background.mp4", _need(sample.clip.background_video, key, "background_video"))
            )
        if self.include_masks:
            members.append(
                (f"masks.{MASKS_FILE_EXTENSION}", _need(sample.clip.masks, key, "masks"))
            )
        encoded = [(self._header(f"{key}.{suffix}", len(data)), data) for suffix, data in members]
        keyframes = _keyframes(members, key)
        return lambda: self._append(key, meta, encoded, keyframes)

    def write(self, sample: PairSample) -> None:
        self.prepare(sample)()

    def _header(self, name: str, size: int) -> bytes:
        """A member's header: USTAR when the name fits its 100 bytes, else PAX.

        USTAR keeps shards of ordinary keys byte for byte as they always were; a longer
        name (a pair id of three long catalog ids) gets a PAX extended header before its
        USTAR header, which tarfile, GNU tar and webdataset read as the member's name.
        """
        info = tarfile.TarInfo(name)
        info.size = size
        info.mtime = self._mtime
        info.mode = 0o444
        info.uname = info.gname = "pvtt"
        try:
            return info.tobuf(tarfile.USTAR_FORMAT, tarfile.ENCODING, "surrogateescape")
        except ValueError:  # name over 100 bytes, or a member of 8 GiB or more
            pass
        try:
            return info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")
        except ValueError as exc:
            raise SampleError(f"no tar header can hold member {name!r}: {exc}") from None

    def _append(
        self,
        key: str,
        meta: dict[str, Any],
        members: list[tuple[bytes, bytes]],
        keyframes: dict[str, dict[str, list[int]]],
    ) -> None:
        shard = self._open or self._start_shard()
        start = shard.offset
        for header, data in members:
            shard.add(header, data)
        entry = {"key": key, "offset": start, "end": shard.offset}
        entry.update({c: meta[c] for c in FILTER_COLUMNS})
        shard.entries.append(entry)
        if keyframes:
            shard.keyframes[key] = keyframes
        if len(shard.entries) >= self.max_samples or shard.offset >= self.max_bytes:
            self._close_shard()

    def wants_commit(self) -> bool:
        return bool(self._closed)

    def flush(self, manifest: Manifest) -> None:
        if self._open is not None:
            self._close_shard()
        manifest.shards.extend(self._closed)
        self._closed = []

    def finalize(self, manifest: Manifest) -> None:
        """Nothing to do: shards are final when closed."""

    def abort(self) -> None:
        """Drop the shard being written (used when a build stops on an error)."""
        if self._open is not None:
            self._open.fh.close()
            self._open.tmp_path.unlink(missing_ok=True)
            self._open = None

    # -- shards -----------------------------------------------------------------
    def _start_shard(self) -> _OpenShard:
        assert self._dir is not None, "recover() must be called before write()"
        number = self._next_number
        self._next_number += 1
        tmp = self._dir / f".{shard_name(self._rank, number)}.tmp"
        fh = open(tmp, "wb")  # noqa: SIM115 - closed in _close_shard/abort
        self._open = _OpenShard(number, tmp, fh)
        return self._open

    def _close_shard(self) -> None:
        shard = self._open
        assert shard is not None and self._dir is not None
        self._open = None
        shard.end()
        shard.fh.flush()
        os.fsync(shard.fh.fileno())
        size = shard.fh.tell()
        shard.fh.close()
        name = shard_name(self._rank, shard.number)
        idx = index_name(name)
        index = {"shard": name, "samples": shard.entries, "keyframes": shard.keyframes}
        atomic_write_bytes(self._dir / idx, json.dumps(index).encode("utf-8"))
        os.replace(shard.tmp_path, self._dir / name)
        fsync_dir(self._dir)
        self._closed.append(_shard_info(name, idx, self._rank, size, shard.entries))


def _keyframes(members: list[tuple[str, bytes]], key: str) -> dict[str, dict[str, list[int]]]:
    """The keyframe index of each mp4 member (members that are no mp4 have none)."""
    out = {}
    for suffix, data in members:
        if not suffix.endswith(".mp4"):
            continue
        try:
            index = mp4_keyframe_index(data)
        except VideoError as exc:
            raise SampleError(f"{suffix} cannot be indexed: {exc.message}", key) from None
        if index is not None:
            out[suffix] = {"frames": index.frames, "offsets": index.offsets}
    return out


def _need(data: bytes | None, key: str, what: str) -> bytes:
    if not data:
        raise SampleError(f"{what} is empty; a tar sample needs it", key)
    return data


def _shard_info(name: str, index: str, rank: int, size: int, entries: list[dict]) -> ShardInfo:
    counts: dict[str, int] = {}
    scores = [e["quality_score"] for e in entries if e["quality_score"] is not None]
    for e in entries:
        counts[e["difficulty"]] = counts.get(e["difficulty"], 0) + 1
    return ShardInfo(
        path=f"{TAR_DIR}/{name}",
        index=f"{TAR_DIR}/{index}",
        rank=rank,
        samples=len(entries),
        bytes=size,
        counts=counts,
        passed=sum(1 for e in entries if e["passed"]),
        score_min=min(scores) if scores else None,
        score_max=max(scores) if scores else None,
    )
