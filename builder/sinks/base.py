"""The one protocol every sink speaks, and the unit of data it receives.

The dataset writer feeds every sink the same stream of :class:`PairSample` and
drives the two-phase commit: ``flush`` makes a sink's pending data durable but
invisible, then the manifest names it. On open, ``recover`` throws away whatever
a killed writer left that the manifest does not name.

A pair reaches every sink or none. A sink that can fail on a sample's data offers
``prepare(sample)``: it encodes the sample without writing anything (raising
:class:`SampleError` when the data cannot be encoded) and returns the call that
writes it. The writer prepares the sample in every such sink before any sink
writes, so a sample one sink cannot hold is rejected with nothing written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from pvtt.schemas.manifest import Manifest
from pvtt.schemas.records import ClipRecord, PairRecord, ProductRecord


class SampleError(ValueError):
    """A sample whose own data a sink cannot write (not a fault of the machine).

    Raised by ``prepare``, or by ``write`` before it changed anything: the sink holds
    nothing of the sample, and the build rejects the pair with ``reason``.
    """

    def __init__(self, reason: str, key: str | None = None) -> None:
        super().__init__(reason if key is None else f"pair {key}: {reason}")
        self.reason = reason
        self.key = key


PrepareWrite = Callable[["PairSample"], Callable[[], None]]
"""The optional ``prepare`` of a sink: encode a sample, return the call that writes it."""


@dataclass(frozen=True)
class PairSample:
    """A pair with the clip and product image it references (media shared, not copied)."""

    pair: PairRecord
    clip: ClipRecord
    product: ProductRecord


@runtime_checkable
class Sink(Protocol):
    """A writer of one output format under ``OUT``."""

    name: str

    def recover(self, out: Path, manifest: Manifest, rank: int) -> set[str]:
        """Drop this rank's uncommitted output; return the pair ids the manifest commits."""
        ...

    def write(self, sample: PairSample) -> None:
        """Buffer or write one sample; nothing becomes visible before the next commit.

        Data the sink cannot encode raises :class:`SampleError` with nothing written.
        """
        ...

    def wants_commit(self) -> bool:
        """True when the sink has reached a natural boundary (a full shard)."""
        ...

    def flush(self, manifest: Manifest) -> None:
        """Make pending data durable and record it in ``manifest`` (not yet written)."""
        ...

    def finalize(self, manifest: Manifest) -> None:
        """Work done once at the end of a build (indexes); records its result in ``manifest``."""
        ...
