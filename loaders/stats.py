"""Summary figures of a built dataset, from metadata columns only."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa

from pvtt.loaders.query import DIFFICULTIES, PairFilter, select_pairs
from pvtt.loaders.store import BuiltDataset

SCORE_COLUMNS = ("quality_score", "score_identity", "score_temporal", "score_lighting", "score_overall")
QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)


def dataset_stats(dataset: BuiltDataset) -> dict[str, Any]:
    """Counts by difficulty x category, score quantiles per difficulty, bytes per table."""
    columns = ["difficulty", "source_category", "target_category", "passed", *SCORE_COLUMNS]
    table: pa.Table = select_pairs(dataset, PairFilter(passed=None), columns=columns)
    rows = table.to_pylist()
    by_diff = Counter(r["difficulty"] for r in rows)
    by_cat: dict[str, Counter[str]] = {}
    for r in rows:
        by_cat.setdefault(r["source_category"], Counter())[r["difficulty"]] += 1
    scores: dict[str, dict[str, Any]] = {}
    for diff in DIFFICULTIES:
        per: dict[str, Any] = {}
        for col in SCORE_COLUMNS:
            values = np.array(
                [r[col] for r in rows if r["difficulty"] == diff and r[col] is not None], dtype=float
            )
            per[col] = (
                {f"q{int(q * 100):02d}": round(float(np.quantile(values, q)), 4) for q in QUANTILES}
                if values.size
                else None
            )
        scores[diff] = per
    storage: dict[str, int] = {}
    for name, info in dataset.manifest.tables.items():
        storage[f"lance/{name}"] = dataset.storage.tree_bytes(info.path)
    if dataset.has_tar:
        storage["tar"] = sum(s.bytes for s in dataset.shards)
    return {
        "build_id": dataset.manifest.build_id,
        "complete": dataset.manifest.complete,
        "pairs": len(rows),
        "passed": sum(1 for r in rows if r["passed"]),
        "by_difficulty": {d: by_diff.get(d, 0) for d in DIFFICULTIES},
        "by_source_category": {
            c: {d: cnt.get(d, 0) for d in DIFFICULTIES} for c, cnt in sorted(by_cat.items())
        },
        "scores": scores,
        "bytes": storage,
        "shards": len(dataset.shards),
    }
