"""One ``pvtt review`` session: the pairs to judge, the verdicts given, and saving them.

The session holds the queue (the pairs the filters select, in the order asked for) and
the verdicts given since the last save. Undo takes back the latest unsaved verdict.
Saving appends the verdicts to the ``labels`` table as one new version
(:func:`pvtt.tools.dataset_edit.append_labels`); the pairs and their media are only
read. The HTTP layer (:mod:`pvtt.tools.review_server`) is a thin shell around this.
"""

from __future__ import annotations

import getpass
import math
import os
import threading
from datetime import datetime, timezone
from typing import Any

from pvtt.loaders.labels import latest_labels
from pvtt.loaders.query import PairFilter, select_pairs
from pvtt.loaders.store import open_dataset
from pvtt.schemas.labels import REASONS, REJECT, check_label
from pvtt.schemas.manifest import TableInfo
from pvtt.schemas.tables import scalar_columns
from pvtt.tools.calibration import gate_threshold
from pvtt.tools.dataset_edit import append_labels, local_root
from pvtt.tools.review_media import ReviewMedia

ORDERS = ("uncertain", "score", "score-desc", "pair_id")
"""``uncertain``: quality score nearest the gate's threshold first (the verdicts a
human most likely overturns); ``score``/``score-desc``: by quality score; ``pair_id``:
as listed, which groups a clip's pairs."""

SCORE_COLUMNS = tuple(c for c in scalar_columns("pairs") if c.startswith("score_"))
ROW_COLUMNS = (
    "pair_id",
    "clip_id",
    "source_id",
    "target_id",
    "target_image",
    "difficulty",
    "source_category",
    "source_subcategory",
    "target_category",
    "target_subcategory",
    *SCORE_COLUMNS,
    "quality_score",
    "passed",
    "reject_reason",
    "frame_count",
    "width",
    "height",
    "fps",
    "build_id",
)
"""What the page shows of a pair, and what the media readers need to find its media."""


def default_reviewer() -> str:
    """The login name, which labels carry unless ``--reviewer`` says otherwise."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return os.environ.get("USER") or "reviewer"


def order_rows(rows: list[dict[str, Any]], order: str, threshold: float) -> list[dict[str, Any]]:
    """``rows`` in review order; pairs without a quality score come last in every order."""

    def score(row: dict[str, Any]) -> float | None:
        value = row.get("quality_score")
        return None if value is None or math.isnan(value) else float(value)

    if order == "pair_id":
        return sorted(rows, key=lambda r: r["pair_id"])
    keys = {
        "uncertain": lambda s: abs(s - threshold),
        "score": lambda s: s,
        "score-desc": lambda s: -s,
    }
    if order not in keys:
        raise ValueError(f"unknown order {order!r}; choose from {', '.join(ORDERS)}")
    rank = keys[order]
    scored = [r for r in rows if score(r) is not None]
    unscored = [r for r in rows if score(r) is None]
    return sorted(scored, key=lambda r: (rank(score(r)), r["pair_id"])) + unscored


class ReviewSession:
    """The queue of pairs to judge and the verdicts not saved yet."""

    def __init__(
        self,
        out: str | os.PathLike[str],
        flt: PairFilter,
        *,
        order: str = "uncertain",
        reviewer: str | None = None,
        relabel: bool = False,
        limit: int | None = None,
    ) -> None:
        """``relabel``: also queue pairs that already have a label (shown with it)."""
        self.out = local_root(out)
        self.dataset = open_dataset(self.out)
        self.threshold = gate_threshold(self.dataset.manifest)
        self.reviewer = reviewer or default_reviewer()
        rows = select_pairs(self.dataset, flt, columns=list(ROW_COLUMNS)).to_pylist()
        self.previous = latest_labels(self.dataset)
        if not relabel:
            rows = [r for r in rows if r["pair_id"] not in self.previous]
        self.rows = order_rows(rows, order, self.threshold)[:limit]
        self.by_id = {r["pair_id"]: r for r in self.rows}
        self.media = ReviewMedia(self.dataset)
        self.pending: list[dict[str, Any]] = []
        self.saved: TableInfo | None = self.dataset.manifest.tables.get("labels")
        self._lock = threading.Lock()

    def queue(self) -> dict[str, Any]:
        """What the page needs: the pairs in order, the threshold, the reasons, the state."""
        pairs = []
        for row in self.rows:
            shown = {k: _plain(v) for k, v in row.items()}
            before = self.previous.get(row["pair_id"])
            shown["previous"] = (
                None if before is None else {"label": before["label"], "reason": before["reason"]}
            )
            pairs.append(shown)
        return {
            "pairs": pairs,
            "threshold": self.threshold,
            "reasons": list(REASONS),
            "reviewer": self.reviewer,
            **self.state(),
        }

    def state(self) -> dict[str, Any]:
        return {
            "pending": len(self.pending),
            "version": None if self.saved is None else self.saved.version,
        }

    def row(self, pair_id: str) -> dict[str, Any]:
        row = self.by_id.get(pair_id)
        if row is None:
            raise KeyError(f"pair {pair_id!r} is not in this review's queue")
        return row

    def label(self, pair_id: str, label: str, reason: str | None = None) -> dict[str, Any]:
        """Record a verdict on a queued pair (kept in memory until :meth:`save`)."""
        check_label(label, reason)
        row = self.row(pair_id)
        verdict = {
            "pair_id": pair_id,
            "label": label,
            "reason": reason if label == REJECT else None,
            "reviewer": self.reviewer,
            "time": datetime.now(timezone.utc),
            "build_id": row["build_id"],
        }
        with self._lock:
            self.pending.append(verdict)
            return self.state()

    def undo(self) -> dict[str, Any]:
        """Take back the latest unsaved verdict; its pair is ``undone`` in the answer."""
        with self._lock:
            if not self.pending:
                raise LookupError("nothing to undo: every verdict of this session is saved")
            taken = self.pending.pop()
            return {**self.state(), "undone": taken["pair_id"]}

    def save(self) -> dict[str, Any]:
        """Append the unsaved verdicts to the labels table as one new version."""
        with self._lock:
            if self.pending:
                self.saved = append_labels(self.out, self.pending)
                self.pending = []
            return self.state()


def _plain(value: Any) -> Any:
    """A cell as JSON holds it (NaN as null)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
