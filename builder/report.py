"""What a build did: counts per stage, rejects with reasons, time per stage, the funnel.

Nothing disappears silently: every input a stage skips is recorded with the file
it came from and why, and ends in ``OUT/report/rejects.jsonl`` and
``OUT/report/statistics.json``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pvtt.builder.funnel import build_funnel
from pvtt.schemas.manifest import atomic_write_bytes

REPORT_DIR = "report"
"""``OUT/report``; each rank of a multi-rank build reports into ``OUT/report/r{rank:03d}``."""
LOG_NAME = "build.log"
DUPLICATES_NAME = "duplicates.jsonl"
log = logging.getLogger(__name__)


@dataclass
class Reject:
    stage: str
    item: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"stage": self.stage, "item": self.item, "reason": self.reason}


@dataclass
class BuildReport:
    counts: Counter[str] = field(default_factory=Counter)
    seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    calls: Counter[str] = field(default_factory=Counter)
    rejects: list[Reject] = field(default_factory=list)
    duplicates: list[Reject] = field(default_factory=list)
    """Near-duplicates found before pairing, left out or not (``pairs.near_duplicates``)."""
    extra: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    """Stages run in several threads (clip prefetch, pair workers) and share this report."""

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            with self._lock:
                self.seconds[stage] += elapsed
                self.calls[stage] += 1

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counts[name] += n

    def add(self, seconds: dict[str, float], calls: dict[str, int], counts: dict[str, int]) -> None:
        """Timings and counts taken elsewhere (a pair worker process's, one pair at a time)."""
        with self._lock:
            for stage, spent in seconds.items():
                self.seconds[stage] += spent
            self.calls.update(calls)
            self.counts.update(counts)

    def count_media(self, what: str, pixels: int, **sizes: int) -> None:
        """Pixels and encoded bytes of media the build made, for the bits per pixel that
        ``rates.json`` carries into ``pvtt plan``'s storage estimate."""
        with self._lock:
            self.counts[f"pixels.{what}"] += pixels
            for name, size in sizes.items():
                self.counts[f"bytes.{name}"] += size

    def reject(self, stage: str, item: str, reason: str) -> None:
        log.warning("%s: skipped %s: %s", stage, item, reason)
        with self._lock:
            self.rejects.append(Reject(stage, item, reason))
            self.counts[f"rejected.{stage}"] += 1

    def near_duplicate(self, stage: str, item: str, reason: str, *, dropped: bool) -> None:
        """A near-duplicate ``item``: listed in ``duplicates.jsonl`` and, if ``dropped``
        (left out of pairing), a reject of ``stage``."""
        with self._lock:
            self.duplicates.append(Reject(stage, item, reason))
            self.counts[f"duplicates.{stage}"] += 1
        if dropped:
            self.reject(stage, item, reason)
        else:
            log.info("%s: kept %s: %s", stage, item, reason)

    def as_dict(self) -> dict[str, Any]:
        total = sum(self.seconds.values()) or 1.0
        by_reason = Counter(f"{r.stage}: {_reason_kind(r.reason)}" for r in self.rejects)
        stats = {
            "counts": dict(sorted(self.counts.items())),
            "time_per_stage_s": {k: round(v, 3) for k, v in sorted(self.seconds.items())},
            "time_share": {k: round(v / total, 4) for k, v in sorted(self.seconds.items())},
            "calls_per_stage": dict(sorted(self.calls.items())),
            "rejects_by_reason": dict(by_reason.most_common()),
            "rejects": len(self.rejects),
            **self.extra,
        }
        stats["funnel"] = build_funnel(stats)
        return stats

    @contextmanager
    def logging_to(self, folder: Path) -> Iterator[None]:
        """Append pvtt's log records (INFO and up) to ``folder/build.log`` meanwhile."""
        folder.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(folder / LOG_NAME, encoding="utf-8")
        handler.setLevel(logging.INFO)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger("pvtt")
        previous = root.level
        root.addHandler(handler)
        if root.getEffectiveLevel() > logging.INFO:
            root.setLevel(logging.INFO)
        try:
            yield
        finally:
            root.removeHandler(handler)
            root.setLevel(previous)
            handler.close()

    def write(self, folder: Path) -> None:
        """``statistics.json``, ``rejects.jsonl`` and ``duplicates.jsonl`` into ``folder``
        (``OUT/report``)."""
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(folder / "statistics.json", json.dumps(self.as_dict(), indent=2).encode())
        for name, items in (("rejects.jsonl", self.rejects), (DUPLICATES_NAME, self.duplicates)):
            lines = "".join(json.dumps(r.as_dict()) + "\n" for r in items)
            atomic_write_bytes(folder / name, lines.encode())


def _reason_kind(reason: str) -> str:
    """The reason without its numbers and file names, for grouping."""
    head = reason.split(":")[0]
    return "".join(ch for ch in head if not ch.isdigit()).strip() or reason[:40]
