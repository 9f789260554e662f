"""The one protocol every sink speaks, and the unit of data it receives.

The dataset writer feeds every sink the same stream of :class:`PairSample` and
drives the two-phase commit: ``flush`` makes a sink's pending data durable but
invisible, then the manifest names it. On open, ``recover`` throws away whatever
a killed writer left that the manifest does not name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from pvtt.schemas.manifest import Manifest
from pvtt.schemas.records import ClipRecord, PairRecord, ProductRecord


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
        """Buffer or write one sample; nothing becomes visible before the next commit."""
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
