"""The epoch plan is compact arrays, and a sample's scalar columns are read per batch.

A metadata-only ``pairs`` table (``tools/bench/store.py``'s, media null) stands in for a
large dataset: planning must keep a few bytes a pair, never the string columns, and the
rows a sample yields must still be its own, in the canonical (``pair_id``) order.
"""

from __future__ import annotations

import pickle
from multiprocessing.reduction import ForkingPickler
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from torch.utils.data import DataLoader

from pvtt.loaders import PairDataset
from pvtt.loaders import selection as selection_module
from pvtt.loaders.dataset import META_BATCH_MAX
from pvtt.loaders.query import DIFFICULTIES
from pvtt.tools.bench.store import pairs_table, write_query_dataset

ROWS = 300


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return pairs_table(ROWS, seed=3, per_clip=20)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, table: pa.Table) -> Path:
    out = tmp_path_factory.mktemp("compact") / "dataset"
    write_query_dataset(out, table, fragment_rows=100)  # three fragments
    return out


def _expected(table: pa.Table, mask: np.ndarray) -> list[dict]:
    rows = table.filter(pa.array(mask)).sort_by("pair_id")
    return rows.select(["pair_id", "clip_id", "difficulty", "quality_score"]).to_pylist()


def test_a_lance_selection_keeps_thirteen_bytes_a_pair_and_no_strings(built: Path) -> None:
    ds = PairDataset(built, fields=("meta",), passed=None)
    sel = ds._ctx().selection
    assert len(sel) == ROWS and sel.pair_ids is None and sel.shard_entries is None
    assert (sel.row_ids.dtype, sel.levels.dtype, sel.qualities.dtype) == (
        np.uint64, np.int8, np.float32,
    )  # fmt: skip
    assert sel.plan_bytes == 13 * ROWS
    assert sel.rows is not None and sel.rows.held is None  # nothing read per row yet


def test_rows_come_in_pair_id_order_with_their_own_columns(built: Path, table: pa.Table) -> None:
    ds = PairDataset(built, fields=("meta",), passed=None, shuffle=False)
    got = [s["meta"] for s in ds]
    want = _expected(table, np.ones(ROWS, bool))
    assert [g["pair_id"] for g in got] == [w["pair_id"] for w in want]
    for g, w in zip(got, want, strict=True):
        assert g["clip_id"] == w["clip_id"] and g["difficulty"] == w["difficulty"]
        assert g["quality_score"] == pytest.approx(w["quality_score"])


def test_levels_and_scores_match_the_filtered_rows(built: Path, table: pa.Table) -> None:
    ds = PairDataset(built, fields=("meta",), passed=None, difficulty="hard,expert")
    sel = ds._ctx().selection
    mask = np.isin(table.column("difficulty").to_numpy(zero_copy_only=False), ["hard", "expert"])
    want = _expected(table, mask)
    assert len(sel) == len(want) > 0
    assert [DIFFICULTIES[code] for code in sel.levels] == [w["difficulty"] for w in want]
    np.testing.assert_allclose(sel.qualities, [w["quality_score"] for w in want], rtol=1e-6)


def test_scalar_columns_are_read_in_growing_batches(
    built: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    takes: list[int] = []
    take = selection_module.LanceRows._take

    def counted(self: selection_module.LanceRows, indices: np.ndarray) -> pa.Table:
        takes.append(len(indices))
        return take(self, indices)

    monkeypatch.setattr(selection_module.LanceRows, "_take", counted)
    samples = list(PairDataset(built, fields=("meta",), passed=None, batch_size=3))
    assert len(samples) == ROWS
    assert takes == [3, 6, 12, 24, 48, 96, 111]  # doubling from the batch size
    assert META_BATCH_MAX >= 1024


def test_without_meta_only_the_columns_reading_needs_are_read(built: Path) -> None:
    ds = PairDataset(built, fields=("meta",), passed=None)
    assert "quality_score" in ds._ctx().selection.rows.columns
    sel = PairDataset(built, fields=("synth_video",), passed=None)._open().selection
    assert sel.rows.columns == list(selection_module.READ_COLUMNS)


def test_difficulty_names_become_codes_when_a_table_lacks_levels() -> None:
    names = pa.chunked_array([["hard", "easy"], ["expert", "medium"]])
    assert selection_module._level_codes(names).tolist() == [2, 0, 3, 1]
    with pytest.raises(ValueError, match="difficulty outside"):
        selection_module._level_codes(pa.chunked_array([["hard", "impossible"]]))


def _no_take_at_all(self: selection_module.LanceRows, indices: np.ndarray) -> pa.Table:
    raise AssertionError("rows were read by take")


def _no_take(_worker: int) -> None:
    """In a forked worker: reading rows through Lance fails the test."""

    selection_module.LanceRows._take = _no_take_at_all  # type: ignore[method-assign]


def test_a_fork_after_lance_ran_shares_rows_read_before_it(built: Path) -> None:
    ds = PairDataset(built, fields=("meta",), passed=None, shuffle=False)
    assert len(ds) == ROWS  # the main process ran Lance: workers must not
    loader = DataLoader(ds, batch_size=None, num_workers=2, worker_init_fn=_no_take)
    got = [b["meta"]["pair_id"] for b in loader]
    sel = ds._ctx().selection
    assert sel.rows is not None and sel.rows.held is not None and sel.rows.held.num_rows == ROWS
    assert got == [
        s["meta"]["pair_id"]
        for s in PairDataset(built, fields=("meta",), passed=None, shuffle=False)
    ]


def test_a_row_that_cannot_be_read_is_skipped_alone(
    built: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    take = selection_module.LanceRows._take
    bad = 5

    def failing(self: selection_module.LanceRows, indices: np.ndarray) -> pa.Table:
        if bad in indices.tolist():
            raise OSError("data file gone")
        return take(self, indices)

    monkeypatch.setattr(selection_module.LanceRows, "_take", failing)
    ds = PairDataset(built, fields=("meta",), passed=None, shuffle=False, on_error="skip")
    got = [s["meta"]["pair_id"] for s in ds]
    assert len(got) == ROWS - 1 and ds.skipped == 1


@pytest.mark.parametrize("difficulty", [None, "expert"])
def test_rows_held_for_a_fork_are_the_selected_rows_in_order(
    built: Path, table: pa.Table, difficulty: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = PairDataset(built, fields=("meta",), passed=None, difficulty=difficulty, shuffle=False)
    rows = ds._ctx().selection.rows
    assert rows is not None
    monkeypatch.setattr(selection_module.LanceRows, "_take", _no_take_at_all)  # one scan
    rows.hold()
    assert rows.held is not None
    mask = (
        np.ones(ROWS, bool)
        if difficulty is None
        else (table.column("difficulty").to_numpy(zero_copy_only=False) == difficulty)
    )
    want = _expected(table, mask)
    assert rows.held.column("pair_id").to_pylist() == [w["pair_id"] for w in want]
    assert rows.held.column_names == rows.columns


def test_an_empty_selection_holds_no_rows(built: Path) -> None:
    ds = PairDataset(built, fields=("meta",), passed=None, where="frame_count < 0")
    rows = ds._ctx().selection.rows
    assert rows is not None and len(ds) == 0
    rows.hold()
    assert rows.held is not None and rows.held.num_rows == 0


def test_a_pickled_dataset_takes_the_plan_in_shared_memory(
    built: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = PairDataset(built, fields=("meta",), passed=None, difficulty="easy", shuffle=False)
    want = [s["meta"]["pair_id"] for s in ds]
    blob = ForkingPickler.dumps(ds)  # as a DataLoader pickles it for a spawned worker

    def no_scan(*args: object) -> None:
        raise AssertionError("the worker scanned the table again")

    monkeypatch.setattr(selection_module, "_select_lance", no_scan)
    worker = pickle.loads(blob)  # noqa: S301 - our own bytes
    assert worker._shared_plan is not None
    assert all(t.is_shared() for t in worker._shared_plan.arrays)
    assert [s["meta"]["pair_id"] for s in worker] == want
    assert worker._ctx().selection.row_ids.dtype == np.uint64


def test_spawned_workers_yield_what_the_main_process_does(built: Path) -> None:
    ds = PairDataset(built, fields=("meta",), passed=None, difficulty="hard", shuffle=False)
    want = [s["meta"]["pair_id"] for s in ds]
    loader = DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context="spawn")
    assert [b["meta"]["pair_id"] for b in loader] == want
