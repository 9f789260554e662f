"""LanceDB's loader in the comparison bench: it stores pairs and gives them back, filtered
and resumed, through ``StreamingDataset`` (skipped where ``lancedb`` is not installed)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from pvtt.tools.bench.compare_base import MEDIA, Row, Selector
from pvtt.tools.bench.compare_formats import ALTERNATIVES
from pvtt.tools.bench.compare_lancedb import LanceDBTool

DIFFICULTIES = ("easy", "medium", "hard", "expert")


def make_rows(count: int) -> list[Row]:
    """Rows with distinct media bytes (zero bytes included) and mixed difficulty/score."""
    rows = []
    for i in range(count):
        difficulty = DIFFICULTIES[i % len(DIFFICULTIES)]
        score = round(0.05 + 0.9 * ((i * 7) % count) / count, 3)
        meta = json.dumps({"pair_id": f"p{i:03d}", "difficulty": difficulty}).encode()
        media = {name: bytes([i, k, 0, 255]) * (100 + 37 * i + k) for k, name in enumerate(MEDIA)}
        rows.append(Row(f"p{i:03d}", meta, difficulty, score, media))
    return rows


@pytest.fixture
def stored(tmp_path: Path) -> tuple[LanceDBTool, Path, list[Row]]:
    pytest.importorskip("lancedb.streaming")
    tool = ALTERNATIVES["lancedb"]
    assert isinstance(tool, LanceDBTool)
    assert tool.missing() is None
    rows = make_rows(13)
    folder = tmp_path / "lancedb"
    tool.write(folder, iter(rows), shard_samples=4)
    return tool, folder, rows


def test_rows_come_back_in_stored_order_with_their_bytes(stored):
    tool, folder, rows = stored
    assert list(tool.rows(folder)) == rows


def test_filter_selects_exactly_the_matching_rows(stored):
    tool, folder, rows = stored
    select = Selector(frozenset({"hard", "expert"}), 0.4)
    expected = [r for r in rows if select(r.difficulty, r.quality_score)]
    assert 0 < len(expected) < len(rows) // 2
    assert list(tool.rows(folder, select)) == expected


def test_resume_gives_the_row_after_the_saved_position(stored):
    tool, folder, rows = stored
    for skip in (0, 5, len(rows) - 1):
        state = tool.resume_state(folder, skip)
        assert tool.resume(folder, state) == rows[skip]


def test_missing_lancedb_is_reported(monkeypatch):
    monkeypatch.setitem(sys.modules, "lancedb", None)
    monkeypatch.setitem(sys.modules, "lancedb.streaming", None)
    why = ALTERNATIVES["lancedb"].missing()
    assert why is not None and why.startswith("lancedb does not import: ModuleNotFoundError")
