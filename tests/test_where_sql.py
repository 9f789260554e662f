"""The ``where`` language: parsed by a real SQL parser, allowlisted, printed for Lance.

Before, a user's text was checked by a character scanner and pasted into pvtt's SQL;
texts that scanner misread (backtick identifiers, dollar-quoted strings) closed pvtt's
parentheses. Now the text is parsed into one checked tree, and Lance receives SQL
printed from that tree; the same tree evaluates on Arrow with Lance's typing rules.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import lance
import pyarrow as pa
import pytest

from pvtt.loaders.query import PairFilter
from pvtt.loaders.where import (
    WhereError,
    evaluate,
    parse_where,
    sql_in,
    sql_literal,
    to_sql,
    typed_table,
)

ISSUE_ATTACKS = [
    "`c'` = 'a' ) OR true OR ( `'` = 'x'",  # backtick identifiers
    "$$a'$$ ) OR true OR ( c = $$'$$",  # dollar-quoted strings (Lance's planner panicked)
]
STRINGS = ["a", "it's", "b\\", "50%_off", "--x", "/*y*/", "$$", "`t`", "ünï", 'say "hi"', ""]
COLUMNS = ["pair_id", "shot_index", "difficulty", "difficulty_level", "quality_score",
           "score_overall", "passed", "source_id", "created_at", "reject_reason"]  # fmt: skip


def _rows() -> list[dict]:
    rows = []
    for i, text in enumerate(STRINGS):
        rows.append({
            "pair_id": f"p{i:02d}", "shot_index": i % 3, "difficulty": ("easy", "hard")[i % 2],
            "difficulty_level": (0, 2)[i % 2], "quality_score": (None, 0.6, 0.7, 0.25)[i % 4],
            "score_overall": None, "passed": i % 3 != 0, "source_id": text,
            "created_at": datetime(2026, 1, 1 + i, tzinfo=timezone.utc),
            "reject_reason": None if i % 3 else "low",
        })  # fmt: skip
    return rows


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> tuple[pa.Table, lance.LanceDataset]:
    arrow = typed_table(_rows(), COLUMNS)
    ds = lance.write_dataset(arrow, tmp_path_factory.mktemp("where") / "t.lance")
    return arrow, ds


def _on_lance(ds: lance.LanceDataset, sql: str) -> list[str]:
    return sorted(ds.to_table(columns=["pair_id"], filter=sql).column("pair_id").to_pylist())


def _on_arrow(arrow: pa.Table, node) -> list[str]:
    return sorted(arrow.filter(pa.array(evaluate(node, arrow))).column("pair_id").to_pylist())


@pytest.mark.parametrize("text", ISSUE_ATTACKS)
def test_the_issues_attack_strings_are_refused(text: str) -> None:
    with pytest.raises(WhereError, match="not a valid SQL expression"):
        PairFilter.make(passed=True, where=text)


@pytest.mark.parametrize(
    ("text", "part"),
    [
        ("passed = true -- ) OR (true", "comments are not supported"),
        ("passed = true /* ) OR (true */", "comments are not supported"),
        ("1=1; DROP TABLE pairs", "one expression only"),
        ("true) OR (true", "not a valid SQL expression"),
        ('source_id = "a"', "unexpected '\"'; write strings in 'single quotes'"),
        ("source_id = $$a$$", "unknown column '$$a$$'"),
        ("pair_id IN (SELECT pair_id FROM pairs)", "subqueries are not supported"),
        ("read_file('/etc/passwd') IS NULL", "READ_FILE('/etc/passwd'): function not supported"),
        ("pairs.pair_id = 'a'", "without a table"),
        ("no_such = 1", "unknown column 'no_such'"),
        ("target_boxes IS NULL", "target_boxes is a list or media column"),
        ("shot_index = 1.5", "column shot_index holds integer values"),
        ("difficulty_level = 300", "300 does not fit column difficulty_level"),
        ("pair_id = 1", "column pair_id holds string values"),
        ("shot_index IN (1, NULL)", "use IS NULL"),
        ("passed IS TRUE", "only IS NULL and IS NOT NULL"),
        ("shot_index", "not a true/false condition"),
        ("pair_id || 'x' = 'y'", "not supported in a where"),
        ("(shot_index > 1) = passed", "combine conditions with AND, OR and NOT"),
        ("(quality_score = 0.6) IS NULL", "combine conditions with AND, OR and NOT"),
        ("NOT shot_index", "NOT needs a true/false condition"),
        ("shot_index = 1 / 2.0", "shot_index holds integer values"),
        ("quality_score > 1e39", "does not fit column quality_score"),
        ("(" * 3000 + "passed" + ")" * 3000, "nested too deeply"),
    ],
)
def test_refusals_name_the_part(text: str, part: str) -> None:
    with pytest.raises(WhereError) as err:
        parse_where(text)
    assert part in str(err.value)


def test_user_text_cannot_undo_the_structured_filters(table) -> None:
    arrow, ds = table
    flt = PairFilter.make(difficulty="easy", passed=True, where="passed = false OR true")
    sql = flt.to_sql()
    assert sql == (
        "(`difficulty` IN ('easy')) AND (`passed` = TRUE) AND ((`passed` = FALSE) OR TRUE)"
    )
    picked = _on_lance(ds, sql)
    expected = [r["pair_id"] for r in _rows() if r["difficulty"] == "easy" and r["passed"]]
    assert picked == sorted(expected) and picked
    assert _on_arrow(arrow, flt.predicate()) == picked


def test_lance_receives_sql_printed_from_the_checked_tree(
    table, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What Lance parses is what pvtt checked: the printed SQL parses back to the same tree."""
    _, ds = table
    seen: list[str | None] = []
    original = lance.LanceDataset.to_table

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("filter"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(lance.LanceDataset, "to_table", spy)
    where = "SHOT_INDEX = 1 AND `source_id` LIKE '%''%' OR NOT quality_score >= -0.5"
    flt = PairFilter.make(where=where)
    from pvtt.loaders.query import lance_table

    lance_table(ds, columns=["pair_id"], filter=flt.to_sql())
    assert seen == [
        "(`passed` = TRUE) AND (((`shot_index` = 1) AND (`source_id` LIKE '%''%'))"
        " OR (`quality_score` < -0.5))"
    ]
    tree = parse_where(where)
    assert parse_where(to_sql(tree)) == tree


VALID = [
    ("shot_index = 1", lambda r: r["shot_index"] == 1),
    ("shot_index <> 1 AND passed", lambda r: r["shot_index"] != 1 and r["passed"]),
    ("NOT passed OR difficulty = 'hard'", lambda r: not r["passed"] or r["difficulty"] == "hard"),
    ("quality_score > 0.6", lambda r: (r["quality_score"] or 0) > 0.6),
    ("quality_score = 0.6", lambda r: r["quality_score"] == 0.6),  # float32 vs literal
    ("quality_score BETWEEN 0.25 AND 0.6", lambda r: r["quality_score"] in (0.25, 0.6)),
    ("quality_score NOT BETWEEN 0.25 AND 0.6", lambda r: r["quality_score"] == 0.7),
    ("quality_score IS NULL", lambda r: r["quality_score"] is None),
    ("score_overall > 0.6", lambda r: False),  # null in every row
    ("score_overall IS NULL AND shot_index = 2", lambda r: r["shot_index"] == 2),
    ("difficulty IN ('easy', 'expert')", lambda r: r["difficulty"] == "easy"),
    ("difficulty NOT IN ('easy')", lambda r: r["difficulty"] != "easy"),
    ("NOT (quality_score IN (0.6))", lambda r: r["quality_score"] not in (None, 0.6)),
    ("source_id = 'it''s'", lambda r: r["source_id"] == "it's"),
    ("source_id = 'b\\'", lambda r: r["source_id"] == "b\\"),
    ("source_id LIKE '50\\%%'", lambda r: r["source_id"] == "50%_off"),
    ("source_id LIKE '%--%'", lambda r: r["source_id"] == "--x"),
    ("source_id ILIKE 'ÜNÏ'", lambda r: r["source_id"] == "ünï"),
    ("source_id NOT LIKE '%''%'", lambda r: "'" not in r["source_id"]),  # a flag, not a node
    ("NOT source_id NOT ILIKE 'A'", lambda r: r["source_id"] == "a"),
    ("lower(difficulty) = 'hard' AND length(source_id) = 2", lambda r: r["difficulty"] == "hard" and len(r["source_id"]) == 2),
    ("upper(source_id) = 'A'", lambda r: r["source_id"] == "a"),
    ("shot_index * 2 + 1 >= 5", lambda r: r["shot_index"] * 2 + 1 >= 5),
    ("-shot_index < -1", lambda r: -r["shot_index"] < -1),
    ("shot_index / 2 = 1", lambda r: r["shot_index"] // 2 == 1),
    ("abs(quality_score - 0.5) < 0.15", lambda r: r["quality_score"] in (0.6,)),
    ("difficulty_level > shot_index", lambda r: r["difficulty_level"] > r["shot_index"]),
    ("created_at >= TIMESTAMP '2026-01-05 00:00:00'", lambda r: r["created_at"].day >= 5),
    ("created_at < TIMESTAMP '2026-01-03T01:00:00+02:00'", lambda r: r["created_at"].day < 3),
    ("`passed` = TRUE AND PASSED", lambda r: r["passed"]),
    ("pair_id == 'p03'", lambda r: r["pair_id"] == "p03"),
    ("1 = 1", lambda r: True),
    ("passed = NULL", lambda r: False),
    # Lance types a literal facing a column only in a top-level comparison: NOT (f = 0.6)
    # compared in float64 and kept the row f = 0.6 selects; pvtt pushes NOT down
    ("NOT (quality_score = 0.6)", lambda r: r["quality_score"] not in (None, 0.6)),
    ("NOT (NOT (quality_score = 0.6) AND passed)", lambda r: r["quality_score"] == 0.6 or not r["passed"]),
    ("quality_score = 1 / 2.5 + 0.2", lambda r: r["quality_score"] == 0.6),  # folded
    ("shot_index = 4 / 2", lambda r: r["shot_index"] == 2),
    ("shot_index / 0 IS NULL AND quality_score / (shot_index - shot_index) IS NULL", lambda r: True),
    ("shot_index / (shot_index - 1) = 0", lambda r: r["shot_index"] == 0),  # 1/0 is NULL
    # DataFusion widens the column (float64, int64); Arrow alone would narrow the literal
    ("quality_score * 1.0 = 0.6", lambda r: False),
    ("shot_index * 4294967296 > 0", lambda r: r["shot_index"] > 0),
    # DataFusion turns this into TRUE, NULL rows included; pvtt sends <> per value
    ("reject_reason NOT IN ('a') OR reject_reason NOT IN ('b')", lambda r: r["reject_reason"] is not None),
    ("NOT (reject_reason IN ('low', 'b') AND reject_reason IN ('b'))", lambda r: r["reject_reason"] is not None),
]  # fmt: skip


@pytest.mark.parametrize(("text", "oracle"), VALID, ids=[t for t, _ in VALID])
def test_valid_filters_select_the_same_rows_on_lance_and_arrow(table, text: str, oracle) -> None:
    arrow, ds = table
    node = parse_where(text)
    expected = sorted(r["pair_id"] for r in _rows() if oracle(r))
    assert _on_lance(ds, to_sql(node)) == expected
    assert _on_arrow(arrow, node) == expected


@pytest.mark.parametrize("value", STRINGS)
def test_sql_literal_round_trips_through_lance(table, value: str) -> None:
    _, ds = table
    expected = sorted(r["pair_id"] for r in _rows() if r["source_id"] == value)
    assert _on_lance(ds, f"source_id = {sql_literal(value)}") == expected
    assert _on_lance(ds, sql_in("source_id", [value, "nothing"])) == expected
    assert parse_where(f"source_id = {sql_literal(value)}") == parse_where(
        to_sql(parse_where(f"source_id = {sql_literal(value)}"))
    )


def test_sql_literal_of_other_values() -> None:
    assert sql_literal(None) == "NULL"
    assert sql_literal(True) == "TRUE" and sql_literal(1) == "1" and sql_literal(0.5) == "0.5"
    stamp = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert sql_literal(stamp) == "TIMESTAMP '2026-01-02 03:04:05.000000'"
    assert sql_in("source_id", []) == "FALSE"
    with pytest.raises(WhereError, match="not finite"):
        sql_literal(float("nan"))


def test_split_clauses_parse_as_where(tmp_path: Path) -> None:
    """split() writes its clauses with the same quoting; they are valid where texts."""
    clause = sql_in("source_id", ["it's", "b\\"]) + " AND " + sql_in("target_id", ["x"])
    assert to_sql(parse_where(clause)) == (
        "(`source_id` IN ('it''s', 'b\\')) AND (`target_id` IN ('x'))"
    )


def test_float_zero_signs_compare_as_lance_does(tmp_path: Path) -> None:
    """Lance compares two computed float arrays in totalOrder (-0.0 < 0.0) but an array
    with a literal by IEEE (-0.0 = 0.0); the tar path follows both rules."""
    rows = [
        {"pair_id": f"p{i}", "quality_score": q, "shot_index": 0}
        for i, q in enumerate([0.0, -0.0, 0.2, None])
    ]
    arrow = typed_table(rows, ["pair_id", "quality_score", "shot_index"])
    ds = lance.write_dataset(arrow, tmp_path / "z.lance")
    texts = {
        "quality_score * -1 < quality_score": ["p0", "p2"],
        "quality_score * -1 < 0": ["p2"],
        "quality_score = 0": ["p0", "p1"],
        "quality_score IN (0.0, 0.5)": ["p0", "p1"],
        "quality_score < shot_index": ["p1"],
        "-(quality_score * shot_index) = shot_index": ["p1"],
        "NOT (quality_score >= shot_index)": ["p1"],
    }
    for text, expected in texts.items():
        node = parse_where(text)
        assert _on_lance(ds, to_sql(node)) == expected, text
        assert _on_arrow(arrow, node) == expected, text


def test_difficulty_names_are_case_blind() -> None:
    assert PairFilter.make(difficulty="Expert,HARD").difficulty == frozenset({"expert", "hard"})
    assert PairFilter.make(difficulty={"Easy"}).difficulty == frozenset({"easy"})
