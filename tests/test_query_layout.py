"""Sorted ``pairs`` rows and routed queries: faster reads, never other rows.

The Lance sink sorts ``pairs`` by difficulty, verdict and score when it finishes a table
(``pvtt.builder.sinks.lance_layout``), and :func:`select_pairs` reads a filter's rows
through the indexes or by a full scan (``pvtt.loaders.query_route``). Both change only
how rows are read: every filter must give exactly the rows of a full scan, on sorted
tables and on tables written before sorting existed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import lance
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pvtt.builder.sinks.category_copy import write_category_copy
from pvtt.builder.sinks.lance import optimise_table
from pvtt.builder.sinks.lance_layout import CLUSTER_CONFIG_KEY as BUILDER_KEY
from pvtt.builder.sinks.lance_layout import CLUSTER_KEYS
from pvtt.builder.writer import DatasetWriter
from pvtt.loaders.category_route import category_copy, read_by_category
from pvtt.loaders.query import PairFilter, select_pairs
from pvtt.loaders.query_route import (
    CLUSTER_CONFIG_KEY,
    MAX_IN_VALUES,
    SCAN_OPTIONS,
    clustered_columns,
)
from pvtt.loaders.store import open_dataset
from pvtt.loaders.where_arrow import evaluate
from pvtt.loaders.where_tree import sql_literal
from pvtt.schemas.manifest import TableInfo, read_manifest, write_manifest
from pvtt.schemas.tables import scalar_columns
from pvtt.tools.bench import store as store_bench
from pvtt.tools.bench.store import Sizes, pairs_table, synthetic_samples, write_query_dataset

ROWS = 2_000
SORT_KEYS = [*CLUSTER_KEYS["pairs"], "pair_id"]
ALL = list(scalar_columns("pairs"))


@pytest.fixture(scope="module")
def table() -> pa.Table:
    """The bench's metadata-only table, some scores null (a scorer that did not run)."""
    t = pairs_table(ROWS, seed=5, per_clip=20)
    nulls = np.arange(ROWS) % 97 == 0
    quality = pa.array(np.where(nulls, np.nan, t.column("quality_score").to_numpy()))
    quality = pc.if_else(pa.array(nulls), pa.scalar(None, pa.float32()), quality.cast(pa.float32()))
    passed = pc.and_(t.column("passed"), pc.invert(pa.array(nulls)))
    t = t.set_column(t.schema.get_field_index("quality_score"), "quality_score", quality)
    return t.set_column(t.schema.get_field_index("passed"), "passed", passed)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, table: pa.Table) -> dict[str, Path]:
    """The same rows as the sink finishes them now, and as written before (three
    fragments in insertion order, the sink's indexes)."""
    root = tmp_path_factory.mktemp("layout")
    write_query_dataset(root / "sink", table, 700, order="sink")
    write_query_dataset(root / "old", table, 700)
    return {"sink": root / "sink", "old": root / "old"}


def _filters(table: pa.Table) -> list[PairFilter]:
    ids = table.column("pair_id").to_pylist()
    score = table.column("quality_score")[3].as_py()
    many = ", ".join(sql_literal(i) for i in ids[: MAX_IN_VALUES + 5])
    return [
        PairFilter.make(passed=None),  # no filter at all
        PairFilter.make(),  # the default: passed only
        PairFilter.make(difficulty="easy", min_score=0.95),
        PairFilter.make(difficulty="hard,expert", passed=False),
        PairFilter.make(min_score=0.8, max_score=0.81, passed=None),
        PairFilter.make(min_score=score, max_score=score, passed=None),  # a bound that is a value
        PairFilter.make(difficulty="easy", min_score=1.0),  # nothing
        PairFilter.make(category="Jewelry"),
        PairFilter.make(category="Jewelry", difficulty="medium"),
        PairFilter.make(passed=None, where="quality_score IS NULL"),
        PairFilter.make(passed=None, where="NOT (quality_score >= 0.5) OR difficulty = 'easy'"),
        PairFilter.make(passed=None, where="quality_score * 2 > 1.5"),
        PairFilter.make(passed=None, where=f"pair_id = {sql_literal(ids[ROWS // 2])}"),
        PairFilter.make(where=f"pair_id IN ({many})"),
        PairFilter.make(passed=None, where="pair_id = 'no such pair'"),
    ]


def _scan(path: Path, flt: PairFilter) -> pa.Table:
    """Every row of the table read and filtered, no index: the reference."""
    return open_dataset(path).pairs.to_table(columns=ALL, filter=flt.to_sql(), **SCAN_OPTIONS)


def _by_id(t: pa.Table) -> list[dict[str, Any]]:
    return t.sort_by("pair_id").to_pylist()


@pytest.mark.parametrize("layout", ["sink", "old"])
def test_every_filter_gives_the_rows_of_a_full_scan(
    built: dict[str, Path], table: pa.Table, layout: str
) -> None:
    dataset = open_dataset(built[layout])
    for flt in _filters(table):
        want = _scan(built[layout], flt)
        got = select_pairs(dataset, flt, columns=ALL)
        assert got.schema == want.schema, flt
        assert _by_id(got) == _by_id(want), flt.to_sql()
        node = flt.predicate()  # and pvtt's own Arrow evaluation agrees with both
        mask = np.ones(ROWS, bool) if node is None else evaluate(node, table)
        assert sorted(got.column("pair_id").to_pylist()) == sorted(
            table.filter(pa.array(mask)).column("pair_id").to_pylist()
        ), flt.to_sql()
        limited = select_pairs(dataset, flt, columns=["pair_id"], limit=7)
        assert limited.num_rows == min(7, want.num_rows)
        assert set(limited.column("pair_id").to_pylist()) <= set(want.column("pair_id").to_pylist())


def test_both_layouts_hold_the_same_pairs(built: dict[str, Path], table: pa.Table) -> None:
    sink, old = (open_dataset(built[k]).pairs.to_table(columns=ALL) for k in ("sink", "old"))
    assert _by_id(sink) == _by_id(old) == _by_id(table.select(ALL))


def test_the_sink_layout_is_sorted_and_says_so(built: dict[str, Path]) -> None:
    pairs = open_dataset(built["sink"]).pairs
    t = pairs.to_table(columns=SORT_KEYS)
    order = pc.sort_indices(t, sort_keys=[(k, "ascending", "at_end") for k in SORT_KEYS])
    assert order.to_pylist() == list(range(ROWS))
    assert pairs.config()[CLUSTER_CONFIG_KEY] == ",".join(CLUSTER_KEYS["pairs"])
    assert {"difficulty", "passed", "quality_score"} <= clustered_columns(pairs)
    old = open_dataset(built["old"]).pairs
    assert CLUSTER_CONFIG_KEY not in old.config() and not clustered_columns(old)


def test_builder_and_loaders_name_the_same_config_key() -> None:
    assert BUILDER_KEY == CLUSTER_CONFIG_KEY


def test_a_build_sorts_its_pairs_and_each_keeps_its_own_media(tmp_path: Path) -> None:
    tiny = Sizes(
        synth=(100, 300), source=(100, 300), background=(100, 300),
        masks=(10, 50), image=(50, 100), rgba=(50, 100),
    )  # fmt: skip
    samples = synthetic_samples(24, seed=2, sizes=tiny)
    with DatasetWriter(tmp_path / "out", formats=["lance"]) as writer:
        for sample in samples:
            writer.write(sample)
    pairs = open_dataset(tmp_path / "out").pairs
    keys = pairs.to_table(columns=SORT_KEYS).to_pylist()
    assert keys == sorted(keys, key=lambda r: tuple(r[k] for k in SORT_KEYS))
    assert pairs.config().get(CLUSTER_CONFIG_KEY)
    ids = pairs.to_table(columns=["pair_id"]).column(0).to_pylist()
    videos = pairs.read_blobs("synth_video", indices=list(range(len(ids))), preserve_order=True)
    want = {s.pair.pair_id: s.pair.synth_video for s in samples}
    assert {pid: blob for pid, (_, blob) in zip(ids, videos, strict=True)} == want
    scores = dict(
        zip(ids, pairs.to_table(columns=["quality_score"]).column(0).to_pylist(), strict=True)
    )
    assert scores == pytest.approx({s.pair.pair_id: s.pair.quality_score for s in samples})


def test_a_table_written_before_sorting_keeps_its_rows_and_gets_new_ones_sorted(
    built: dict[str, Path], table: pa.Table, tmp_path: Path
) -> None:
    """Finishing an old table again moves none of its indexed rows; appended rows are
    sorted among themselves, and the table never claims to be sorted."""
    out = tmp_path / "old"
    shutil.copytree(built["old"], out)
    uri = out / "lance" / "pairs.lance"
    before = lance.dataset(str(uri)).to_table(columns=["pair_id"]).column(0).to_pylist()
    optimise_table(uri, "pairs")
    assert lance.dataset(str(uri)).to_table(columns=["pair_id"]).column(0).to_pylist() == before
    extra = pairs_table(300, seed=9, per_clip=20)
    extra = extra.set_column(
        0, "pair_id", pc.binary_join_element_wise(extra.column("pair_id"), "x", "")
    )
    lance.write_dataset(extra, str(uri), mode="append", max_rows_per_file=100)
    ds = optimise_table(uri, "pairs")
    ids = ds.to_table(columns=["pair_id"]).column(0).to_pylist()
    assert ids[:ROWS] == before
    added = ds.to_table(columns=SORT_KEYS).slice(ROWS)
    order = pc.sort_indices(added, sort_keys=[(k, "ascending", "at_end") for k in SORT_KEYS])
    assert order.to_pylist() == list(range(300))
    assert CLUSTER_CONFIG_KEY not in ds.config()
    rows = ds.to_table(columns=ALL)
    want = table.select(ALL).to_pylist() + extra.select(ALL).to_pylist()
    assert _by_id(rows) == sorted(want, key=lambda r: r["pair_id"])


class _Recording:
    """A Lance table that records the options of every ``to_table``."""

    def __init__(self, table: lance.LanceDataset) -> None:
        self._table = table
        self.calls: list[dict[str, Any]] = []

    def to_table(self, **kwargs: Any) -> pa.Table:
        self.calls.append(kwargs)
        return self._table.to_table(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._table, name)


def _read_with(path: Path, flt: PairFilter) -> dict[str, Any]:
    """The options :func:`select_pairs` read ``flt``'s rows with."""
    dataset = open_dataset(path)
    recording = _Recording(dataset.pairs)
    dataset.__dict__["pairs"] = recording  # the cached property's value
    select_pairs(dataset, flt, columns=["pair_id"])
    (call,) = recording.calls
    return {k: call[k] for k in SCAN_OPTIONS if k in call}


def test_broad_scattered_filters_are_read_by_a_full_scan(
    built: dict[str, Path], table: pa.Table
) -> None:
    key = table.column("pair_id")[17].as_py()
    lookup = PairFilter.make(where=f"pair_id = {sql_literal(key)}")
    assert _read_with(built["old"], PairFilter.make()) == SCAN_OPTIONS  # ~half the rows
    assert _read_with(built["old"], lookup) == {}
    assert _read_with(built["sink"], lookup) == {}
    # sorted: a difficulty and verdict filter is a few runs, however many rows
    assert _read_with(built["sink"], PairFilter.make(difficulty="hard,expert")) == {}
    # a category is scattered in pairs: scanned, or read from the copy ordered by category
    assert _read_with(built["old"], PairFilter.make(category="Jewelry")) == SCAN_OPTIONS
    dataset = open_dataset(built["sink"])
    recording = _Recording(dataset.pairs)
    dataset.__dict__["pairs"] = recording
    assert select_pairs(dataset, PairFilter.make(category="Jewelry"), columns=["pair_id"]).num_rows
    assert recording.calls == []


def test_a_column_update_drops_the_sorted_claim(built: dict[str, Path], tmp_path: Path) -> None:
    """``pvtt rescore`` rewrites scores in place: rows are no longer known to be in score
    order, so a broad score filter goes back to being counted (and scanned)."""
    out = tmp_path / "sink"
    shutil.copytree(built["sink"], out)
    uri = str(out / "lance" / "pairs.lance")
    ds = lance.dataset(uri)
    ids = ds.to_table(columns=["pair_id"]).column(0)
    rng = np.random.default_rng(0)
    updates = pa.table(
        {"pair_id": ids, "quality_score": pa.array(rng.random(len(ids)), pa.float32())}
    )
    fragments, fields = [], set()
    for fragment in ds.get_fragments():
        meta, modified = fragment.update_columns(updates, left_on="pair_id", right_on="pair_id")
        fragments.append(meta)
        fields.update(modified)
    op = lance.LanceOperation.Update(updated_fragments=fragments, fields_modified=sorted(fields))
    ds = lance.LanceDataset.commit(uri, op, read_version=ds.version)
    assert CLUSTER_CONFIG_KEY in ds.config() and not clustered_columns(ds)
    manifest = read_manifest(out)
    manifest.tables["pairs"] = TableInfo(path="lance/pairs.lance", version=ds.version, rows=ROWS)
    write_manifest(out, manifest)
    flt = PairFilter.make(min_score=0.2, passed=None)
    assert _read_with(out, flt) == SCAN_OPTIONS
    got = select_pairs(open_dataset(out), flt, columns=ALL)
    assert _by_id(got) == _by_id(_scan(out, flt))


def test_the_store_bench_query_part_measures_every_layout_and_route(tmp_path: Path) -> None:
    """Smoke test of ``tools/bench/store.py --query-only`` on a small table."""
    figures = tmp_path / "figures.json"
    store_bench.main(
        ["--query-only", "--quick", "--rows", "3000", "--query-reps", "1", "--dir", str(tmp_path),
         "--json", str(figures)]
    )  # fmt: skip
    results = json.loads(figures.read_text(encoding="utf-8"))
    assert [r["layout"] for r in results["query"]] == list(store_bench.LAYOUTS)
    for layout in results["query"]:
        assert len(layout["queries"]) == len(store_bench.query_filters(pairs_table(3000)))
        for q in layout["queries"]:
            assert q["select_route"] in {"index", "scan"}
            assert all(q[f"{route}_ms"] > 0 for route in store_bench.ROUTES)
    assert len(results["crossover"]) == len(store_bench.CROSSOVER_SHARES)
    assert results["cli"]["rows_printed"] > 0


QUERY = ["pair_id", "difficulty", "source_category", "target_category", "quality_score", "passed"]


def test_category_filters_are_read_from_the_copy_by_category_in_pairs_order(
    built: dict[str, Path], table: pa.Table
) -> None:
    dataset = open_dataset(built["sink"])
    copy = category_copy(dataset.pairs)
    assert copy is not None and copy.count_rows() == ROWS + pc.sum(
        pc.not_equal(table.column("source_category"), table.column("target_category"))
    ).as_py()
    cats = sorted(set(table.column("source_category").to_pylist()))
    filters = [
        PairFilter.make(category=cats[0]),
        PairFilter.make(category=f"{cats[1]},{cats[2]}", passed=None),  # pairs under both
        PairFilter.make(category=cats[0], difficulty="medium,hard", min_score=0.3),
        PairFilter.make(category=cats[1], where="target_subcategory IS NOT NULL"),
        PairFilter.make(category=cats[2], passed=False),  # the rejected run, null scores in it
        PairFilter.make(category=f"{cats[0]},no such category", where="quality_score IS NULL"),
        PairFilter.make(category="no such category"),
    ]
    for flt in filters:
        want = _scan(built["sink"], flt).select(QUERY)  # a sorted table: scan order is pairs order
        assert read_by_category(copy, flt, QUERY) is not None, flt
        got = select_pairs(dataset, flt, columns=QUERY)
        assert got.to_pylist() == want.to_pylist(), flt
        assert got.schema.equals(want.schema, check_metadata=True)  # no metadata of the copy
        assert select_pairs(dataset, flt, columns=QUERY, limit=5).to_pylist() == want.slice(0, 5).to_pylist()
    other = PairFilter.make(category=cats[0], where="score_identity > 0.5")
    assert read_by_category(copy, other, QUERY) is None  # a column the copy lacks
    assert read_by_category(copy, filters[0], ALL) is None
    assert _by_id(select_pairs(dataset, other, columns=ALL)) == _by_id(_scan(built["sink"], other))
    assert category_copy(open_dataset(built["old"]).pairs) is None  # written before the copy


def test_a_copy_made_from_another_pairs_version_is_not_used(built: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "sink"
    shutil.copytree(built["sink"], out)
    ds = lance.dataset(str(out / "lance" / "pairs.lance"))
    ds.delete("pair_id = 'no such pair'")  # a new version, rows as they were
    ds = lance.dataset(str(out / "lance" / "pairs.lance"))
    manifest = read_manifest(out)
    manifest.tables["pairs"] = TableInfo(path="lance/pairs.lance", version=ds.version, rows=ROWS)
    write_manifest(out, manifest)
    dataset = open_dataset(out)
    assert category_copy(dataset.pairs) is None
    flt = PairFilter.make(category="Jewelry")
    assert _by_id(select_pairs(dataset, flt, columns=QUERY)) == _by_id(_scan(out, flt).select(QUERY))
    write_category_copy(dataset.pairs)
    assert category_copy(open_dataset(out).pairs) is not None


def test_the_copys_order_is_the_sinks_cluster_order() -> None:
    from pvtt.schemas.category_copy import PAIRS_ORDER

    assert PAIRS_ORDER == (*CLUSTER_KEYS["pairs"], "pair_id")
