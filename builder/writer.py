"""The dataset writer: one record stream, several sinks, one commit point.

``DatasetWriter`` opens ``OUT``, rolls every sink back to what the manifest
commits (so a killed run leaves nothing half-visible), tells the caller which
pairs are already done, and commits sinks + manifest together: at natural sink
boundaries (a full shard), every ``commit_interval_s`` seconds, and at close.

A pair reaches every sink or none: each sink that can encode a sample up front
(``prepare``) does so before any sink writes, so a pair a sink cannot hold is
refused with :class:`~pvtt.builder.sinks.base.SampleError` and nothing written. A
failure while the sinks write (a full disk) may leave a pair half-written; the
writer then refuses to commit, and the next ``open`` discards the uncommitted rest.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from pvtt.builder.sinks.base import PairSample, PrepareWrite, SampleError, Sink
from pvtt.builder.sinks.tar import TarSink
from pvtt.schemas.manifest import (
    MANIFEST_NAME,
    Manifest,
    ManifestError,
    manifest_path,
    rank_manifest_name,
    read_manifest,
    write_manifest,
)
from pvtt.schemas.records import ProductRecord

log = logging.getLogger(__name__)

FORMATS = ("lance", "tar")


class WriterLockedError(RuntimeError):
    """Another writer holds this output folder (and rank)."""


ENCODE_ERRORS = (ValueError, TypeError, OverflowError)
"""What encoding a value can raise (json, Arrow, tar headers): in ``prepare``, a bad sample."""


def make_sinks(formats: Sequence[str], *, commit_lance: bool = True, **tar_options: Any) -> list[Sink]:
    unknown = set(formats) - set(FORMATS)
    if unknown or not formats:
        raise ValueError(f"formats must be a non-empty subset of {FORMATS}, got {list(formats)}")
    sinks: list[Sink] = []
    if "lance" in formats:
        from pvtt.builder.sinks.lance import LanceSink  # pylance only when Lance is written

        sinks.append(LanceSink(commit=commit_lance))
    if "tar" in formats:
        sinks.append(TarSink(**tar_options))
    return sinks


class DatasetWriter:
    """Writes pairs into ``out`` through every sink, committing them together.

    With ``world_size > 1`` the writer is one rank of a multi-rank build: its commit
    point is its own manifest ``ranks/r{rank:03d}.json`` (its shards, and its Lance
    fragments written but not committed), and ``pvtt merge`` publishes all ranks at
    once. Ranks never touch each other's files, so a dead rank is re-run alone.
    """

    def __init__(
        self,
        out: str | os.PathLike[str],
        *,
        formats: Sequence[str] = FORMATS,
        rank: int = 0,
        world_size: int = 1,
        build_id: str | None = None,
        config: dict[str, Any] | None = None,
        backends: dict[str, Any] | None = None,
        commit_interval_s: float = 300.0,
        sinks: Sequence[Sink] | None = None,
        on_commit: Callable[[], None] | None = None,
        **tar_options: Any,
    ) -> None:
        self.out = Path(out)
        self.formats = list(formats)
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} must be in [0, world_size {world_size})")
        self.rank = rank
        self.world_size = world_size
        self.manifest_name = MANIFEST_NAME if world_size == 1 else rank_manifest_name(rank)
        self._build_id = build_id
        self._on_commit = on_commit
        """Called after every manifest write (e.g. to publish the commit to object storage)."""
        self.commit_interval_s = commit_interval_s
        self.sinks = (
            list(sinks)
            if sinks is not None
            else make_sinks(formats, commit_lance=world_size == 1, **tar_options)
        )
        self._config = config or {}
        self._backends = backends or {}
        self._manifest: Manifest | None = None
        self._done: set[str] = set()
        self._pending: Counter[str] = Counter()
        self._pending_passed = 0
        self._last_commit = time.monotonic()
        self._lock_fh: Any = None
        self._broken: str | None = None
        """Why a write failed part-way: nothing may be committed after it."""

    # -- lifecycle --------------------------------------------------------------
    def open(self) -> set[str]:
        """Roll back uncommitted output and return the pair ids already committed."""
        self.out.mkdir(parents=True, exist_ok=True)
        self._lock()
        if manifest_path(self.out, self.manifest_name).exists():
            manifest = read_manifest(self.out, self.manifest_name)
            if sorted(manifest.formats) != sorted(self.formats):
                raise ManifestError(
                    f"{self.out}: was built with formats {manifest.formats}, "
                    f"not {self.formats}; use another output folder"
                )
        else:
            manifest = Manifest(
                build_id=self._build_id or uuid.uuid4().hex[:16], formats=self.formats,
                rank=None if self.world_size == 1 else self.rank, world_size=self.world_size,
            )
        if manifest.world_size != self.world_size:
            raise ManifestError(
                f"{self.out}: was built with world size {manifest.world_size}, not "
                f"{self.world_size}; use the same --world-size or another output folder"
            )
        manifest.complete = False
        manifest.config = self._config or manifest.config
        manifest.backends = self._backends or manifest.backends
        done: set[str] | None = None
        for sink in self.sinks:
            keys = sink.recover(self.out, manifest, self.rank)
            if done is not None and keys != done:
                raise ManifestError(
                    f"{self.out}: sinks disagree on committed pairs "
                    f"({len(keys ^ done)} differ); run `pvtt verify {self.out}`"
                )
            done = keys
        self._done = done or set()
        self._manifest = manifest
        self._write_manifest()
        return set(self._done)

    def __enter__(self) -> DatasetWriter:
        self.open()
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    @property
    def build_id(self) -> str:
        return self.manifest.build_id

    @property
    def manifest(self) -> Manifest:
        if self._manifest is None:
            raise RuntimeError("DatasetWriter.open() was not called")
        return self._manifest

    def has(self, pair_id: str) -> bool:
        return pair_id in self._done

    # -- writing ----------------------------------------------------------------
    def write_product(self, record: ProductRecord) -> None:
        """A product image row for sinks that keep a products table, committed with the pairs."""
        for sink in self.sinks:
            write_product = getattr(sink, "write_product", None)
            if write_product is not None:
                write_product(record)

    def write(self, sample: PairSample) -> None:
        """Write one pair to every sink, or to none.

        Raises :class:`SampleError` when a sink cannot encode the pair: no sink holds any
        of it and the writer goes on. Any other error while the sinks write leaves the
        writer unable to commit (:meth:`abort`, then open again).
        """
        key = sample.pair.pair_id
        if key in self._done:
            raise ValueError(f"pair {key} was already written to {self.out}")
        self._check_usable()
        prepared: list[tuple[Sink, Callable[[], None]]] = []
        unprepared: list[tuple[Sink, Callable[[], None]]] = []
        for sink in self.sinks:
            prepare: PrepareWrite | None = getattr(sink, "prepare", None)
            if prepare is None:
                unprepared.append((sink, partial(sink.write, sample)))
                continue
            try:
                prepared.append((sink, prepare(sample)))
            except ENCODE_ERRORS as exc:
                reason = exc.reason if isinstance(exc, SampleError) else str(exc)
                raise SampleError(f"the {sink.name} sink cannot write it: {reason}", key) from exc
        # sinks that could not check the sample first: a refusal by the first one that
        # writes still leaves every sink without the pair
        written: list[str] = []
        for sink, write in unprepared + prepared:
            try:
                write()
            except SampleError as exc:
                if written:
                    done = ", ".join(written)
                    self._broken = f"the {sink.name} sink refused pair {key} that {done} wrote"
                    raise self._broken_error() from exc
                reason = f"the {sink.name} sink cannot write it: {exc.reason}"
                raise SampleError(reason, key) from exc
            except BaseException as exc:
                self._broken = f"writing pair {key} to the {sink.name} sink failed: {exc!r}"
                raise
            written.append(sink.name)
        self._done.add(key)
        self._pending[sample.pair.difficulty] += 1
        self._pending_passed += int(sample.pair.passed)
        due = time.monotonic() - self._last_commit >= self.commit_interval_s
        if due or any(sink.wants_commit() for sink in self.sinks):
            self.commit()

    def _check_usable(self) -> None:
        if self._broken is not None:
            raise self._broken_error()

    def _broken_error(self) -> RuntimeError:
        return RuntimeError(
            f"{self.out}: {self._broken}; that pair may be half-written, so nothing more is "
            "committed (abort this writer; opening the folder again discards the rest)"
        )

    def commit(self) -> None:
        """Make everything written so far durable and visible, atomically."""
        self._check_usable()
        manifest = self.manifest
        for sink in self.sinks:
            sink.flush(manifest)
        counts = manifest.counts
        by_difficulty = Counter(counts.get("by_difficulty", {}))
        by_difficulty.update(self._pending)
        counts["by_difficulty"] = dict(sorted(by_difficulty.items()))
        counts["pairs"] = sum(by_difficulty.values())
        counts["passed"] = counts.get("passed", 0) + self._pending_passed
        self._pending.clear()
        self._pending_passed = 0
        self._write_manifest()
        self._last_commit = time.monotonic()

    def close(self, *, complete: bool = True) -> Manifest:
        """Commit, build indexes and mark the dataset complete."""
        self.commit()
        manifest = self.manifest
        if complete:
            for sink in self.sinks:
                sink.finalize(manifest)
            manifest.complete = True
            self._write_manifest()
            for sink in self.sinks:
                prune = getattr(sink, "prune", None)
                if prune is not None:
                    prune()
        self._unlock()
        return manifest

    def _write_manifest(self) -> None:
        write_manifest(self.out, self.manifest, self.manifest_name)
        if self._on_commit is not None:
            self._on_commit()

    def abort(self) -> None:
        """Stop without committing what is pending (the next open discards it)."""
        for sink in self.sinks:
            abort = getattr(sink, "abort", None)
            if abort is not None:
                abort()
        self._unlock()

    # -- locking ----------------------------------------------------------------
    def _lock(self) -> None:
        path = self.out / f".lock-r{self.rank:03d}"
        fh = open(path, "a+")  # noqa: SIM115 - held until _unlock
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise WriterLockedError(
                f"{self.out}: another pvtt build (rank {self.rank}) is writing here"
            ) from None
        self._lock_fh = fh

    def _unlock(self) -> None:
        if self._lock_fh is not None:
            fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None
