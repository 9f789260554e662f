"""``pvtt report``: the page parses, its images decode, its numbers match the tables,
and headless Chromium draws it without a single request leaving the page."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import socketserver
import subprocess
import sys
import threading
from collections import Counter
from dataclasses import replace
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import lance
import numpy as np
import pytest
from PIL import Image
from records_factory import make_samples

from pvtt.builder.report import BuildReport
from pvtt.builder.sinks.base import PairSample
from pvtt.builder.stages.checks import CHECK_NAMES
from pvtt.builder.writer import DatasetWriter
from pvtt.loaders.query import DIFFICULTIES
from pvtt.tools.bench import fidelity
from pvtt.tools.cli import main
from pvtt.tools.html_report import (
    CHECKS,
    Failure,
    pick_best_worst,
    rejected_by,
    sum_rank_statistics,
)

pytest.importorskip("matplotlib")

SECTIONS = (
    "summary",
    "funnel",
    "counts",
    "scores",
    "scorers",
    "pass-rate",
    "rejects",
    "time",
    "storage",
    "gallery",
)
PER_DIFFICULTY = 2
CONFIG = {"quality": {"threshold": 0.7, "drop_rejected": False}}
STAGE_SECONDS = {"insert": 2.5, "score": 1.25, "inpaint": 4.0}


class Page(HTMLParser):
    """What the tests look at: images, links, tables (by id) and section texts."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.images: list[dict[str, str]] = []
        self.urls: list[str] = []
        self.tags: Counter[str] = Counter()
        self.meta: list[dict[str, str]] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.sections: dict[str, str] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._section: str | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags[tag] += 1
        self.urls += [v for k, v in a.items() if k in ("src", "href", "srcset", "action")]
        if tag == "img":
            self.images.append(a)
        elif tag == "meta":
            self.meta.append(a)
        elif tag == "section":
            self._section = a["id"]
            self.sections[self._section] = ""
        elif tag == "table":
            self._table = a["id"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None
        elif tag == "section":
            self._section = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._section:
            self.sections[self._section] += data

    def rows(self, table: str) -> dict[str, list[str]]:
        """Body rows of a table keyed by their first cell (the header row left out)."""
        return {r[0]: r[1:] for r in self.tables[table][1:]}


GOOD_CHECKS = {"score_removal": 0.01, "score_mask": 0.95, "score_insert": 0.9, "score_cutout": 0.8}
CHECK_FAILURES = (
    ("removal 0.412 > 0.040", {"score_removal": 0.412}),
    ("mask 0.611 < 0.850; insert 0.500 < 0.650", {"score_mask": 0.611, "score_insert": 0.5}),
    (None, {}),  # left to the threshold: "quality 0.52 < 0.70"
)
TOP_FAILURE = ("cutout 0.100 < 0.300", {"score_cutout": 0.1})


def _fail_checks(samples: list[PairSample]) -> list[PairSample]:
    """The gate's hard checks on the factory's pairs: the best-scored pair of each difficulty
    fails one (a high score does not save it), the pairs under the threshold fail removal,
    mask and insert, or the threshold alone, in turn."""
    top: dict[str, PairSample] = {}
    for s in samples:
        best = top.get(s.pair.difficulty)
        if s.pair.passed and (best is None or s.pair.quality_score > best.pair.quality_score):
            top[s.pair.difficulty] = s
    out, rejected = [], 0
    for s in samples:
        reason, scores = None, {}
        if s is top.get(s.pair.difficulty):
            reason, scores = TOP_FAILURE
        elif not s.pair.passed:
            reason, scores = CHECK_FAILURES[rejected % len(CHECK_FAILURES)]
            rejected += 1
        pair = replace(s.pair, **{**GOOD_CHECKS, **scores})
        if reason:
            pair = replace(pair, passed=False, reject_reason=reason)
        out.append(replace(s, pair=pair))
    return out


def _write_samples(out: Path, shared: Path, count: int, **kwargs) -> None:
    with DatasetWriter(out, max_samples=10, config=CONFIG, **kwargs) as writer:
        for sample in _fail_checks(make_samples(shared, count)):
            writer.write(sample)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """24 pairs in Lance and tar, with the build statistics a real build writes beside them."""
    out = tmp_path_factory.mktemp("report") / "out"
    _write_samples(out, shared_data, 24, include_masks=True)
    report = BuildReport()
    for stage, seconds in STAGE_SECONDS.items():
        report.seconds[stage] = seconds
        report.calls[stage] = 4
    report.reject("clip", "a_s000 (videos/a.mp4)", "no product found on the first frame: flat")
    report.reject("clip", "b_s001 (videos/b.mp4)", "no product found on the first frame: dark")
    report.reject("image", "c (images/c.jpg)", "cut-out empty")
    report.count("pairs.lost_with_clip", 7)
    report.extra["wall_s"] = 6.0
    report.write(out / "report")
    return out


@pytest.fixture(scope="module")
def tar_only(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    out = tmp_path_factory.mktemp("report-tar") / "out"
    _write_samples(out, shared_data, 8, formats=("tar",))
    return out


@pytest.fixture(scope="module")
def report_file(built: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("report-html") / "report.html"
    args = ["report", str(built), "-o", str(target), "--per-difficulty", str(PER_DIFFICULTY)]
    assert main(args) == 0
    return target


@pytest.fixture(scope="module")
def page(report_file: Path) -> Page:
    return Page(report_file.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def pairs(built: Path) -> list[dict]:
    columns = [
        "pair_id",
        "clip_id",
        "difficulty",
        "source_category",
        "quality_score",
        "passed",
        "reject_reason",
    ]
    return lance.dataset(built / "lance" / "pairs.lance").to_table(columns=columns).to_pylist()


def _decode(src: str) -> tuple[str, Image.Image]:
    head, _, payload = src.partition(",")
    assert head.startswith("data:image/") and head.endswith(";base64"), head[:40]
    image = Image.open(io.BytesIO(base64.b64decode(payload, validate=True)))
    image.load()
    return head.removeprefix("data:").removesuffix(";base64"), image


def test_page_has_every_section_and_no_fetchable_reference(page: Page) -> None:
    assert list(page.sections) == list(SECTIONS)
    assert page.tags["script"] == 0 and page.tags["link"] == 0 and page.tags["iframe"] == 0
    remote = [u for u in page.urls if u.lower().startswith(("http:", "https:", "//"))]
    assert remote == []
    assert all(u.startswith(("data:image/", "#")) for u in page.urls)
    csp = [m["content"] for m in page.meta if m.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0] and "img-src data:" in csp[0]


def test_every_image_is_an_inline_image_that_decodes(page: Page, pairs: list[dict]) -> None:
    kinds = Counter()
    for img in page.images:
        mime, image = _decode(img["src"])
        kinds[mime] += 1
        if mime == "image/webp":  # gallery thumbnails move
            assert getattr(image, "n_frames", 1) > 1
            assert image.size[1] == 120
        else:
            assert mime == "image/png" and image.size[0] >= 600
            pixels = np.asarray(image.convert("L"))
            assert pixels.std() > 10  # a drawn figure, not a blank canvas
    kept = Counter(p["difficulty"] for p in pairs if p["passed"])
    thrown = Counter(p["difficulty"] for p in pairs if not p["passed"])
    expected = sum(
        min(PER_DIFFICULTY, kept[d]) + min(PER_DIFFICULTY, thrown[d]) for d in DIFFICULTIES
    )
    assert kinds["image/webp"] == expected
    assert kinds["image/png"] == 7  # counts, scores, scorers, pass rate, rejects, time, storage


def test_counts_and_pass_rates_match_the_lance_table(page: Page, pairs: list[dict]) -> None:
    counts = page.rows("counts-source")
    cats = sorted({p["source_category"] for p in pairs})
    assert sorted(counts) == [*cats, "all"]
    for cat in cats:
        mine = [p for p in pairs if p["source_category"] == cat]
        by_diff = Counter(p["difficulty"] for p in mine)
        passed = sum(p["passed"] for p in mine)
        assert counts[cat] == [str(by_diff[d]) for d in DIFFICULTIES] + [
            str(len(mine)),
            str(passed),
        ]
    assert counts["all"][-2:] == [str(len(pairs)), str(sum(p["passed"] for p in pairs))]
    rates = page.rows("pass-table")
    for diff in DIFFICULTIES:
        mine = [p for p in pairs if p["difficulty"] == diff]
        assert rates[diff][:2] == [str(len(mine)), str(sum(p["passed"] for p in mine))]
    scores = page.rows("scores-table")
    for diff in DIFFICULTIES:
        values = [p["quality_score"] for p in pairs if p["difficulty"] == diff]
        if values:
            assert float(scores[diff][3]) == pytest.approx(np.median(values), abs=6e-4)
    summary = page.rows("summary-table")
    assert summary["pairs"] == [str(len(pairs))]
    assert summary["quality threshold"] == ["0.7"]


def test_scorers_rejects_time_and_storage(page: Page, pairs: list[dict], built: Path) -> None:
    scorers = page.rows("scorers-table")
    assert scorers["identity"][0] == str(len(pairs)) and scorers["overall"][0] == "0"
    assert "score_overall is null in every pair" in page.sections["summary"]
    rejects = {(row[0], row[1]): int(row[2]) for row in page.tables["rejects-table"][1:]}
    assert rejects[("build: clip", "no product found on the first frame")] == 2
    assert rejects[("build: image", "cut-out empty")] == 1
    assert rejects[("build: pair", "not made: its source clip was rejected")] == 7
    reasons = Counter(p["reject_reason"] for p in pairs if not p["passed"])
    quality = sum(n for r, n in reasons.items() if r.startswith("quality"))
    assert quality and rejects[("pairs table", "quality below threshold")] == quality
    assert rejects[("pairs table", "hard check failed: removal")] == reasons[CHECK_FAILURES[0][0]]
    assert (
        rejects[("pairs table", "hard check failed: mask, insert")] == reasons[CHECK_FAILURES[1][0]]
    )
    by_check = page.rows("rejects-by-check")
    assert list(by_check) == ["removal", "mask", "insert", "cutout", "quality"]
    assert by_check["removal"][0] == "> 0.040" and by_check["mask"][0] == "< 0.850"
    assert by_check["mask"][-2] == by_check["insert"][-2] == str(reasons[CHECK_FAILURES[1][0]])
    assert by_check["quality"][-2] == str(quality)
    assert by_check["cutout"][-2] == str(reasons[TOP_FAILURE[0]]) != "0"
    time = page.rows("time-table")
    assert list(time) == sorted(STAGE_SECONDS, key=lambda s: -STAGE_SECONDS[s])
    for stage, seconds in STAGE_SECONDS.items():
        assert float(time[stage][0]) == pytest.approx(seconds)
        assert time[stage][2] == "4"
    storage = page.rows("storage-table")
    tar_bytes = sum(f.stat().st_size for f in (built / "tar").glob("*.tar"))
    assert float(storage["tar"][0]) == pytest.approx(tar_bytes / 1e6, abs=0.006)
    assert {"lance/pairs", "lance/clips", "lance/products"} <= set(storage)


def _gallery_columns(text: str) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """(difficulty, best|rejected) -> [(pair id, why it was rejected or "")] in page order."""
    start = text.index('<section id="gallery">')
    gallery = text[start : text.index("</section>", start)]
    out = {}
    for block in gallery.split('<h3 id="gallery-')[1:]:
        diff = block[: block.index('"')]
        for column in block.split('<div class="column"><h4>')[1:]:
            cards = []
            for card in column.split("<figure>")[1:]:
                why = re.search(r'<span class="why">(.*?)</span>', card)
                plain = unescape(re.sub(r"<[^>]+>", "", why.group(1))) if why else ""
                cards.append((re.search(r"<code>([^<]+)</code>", card).group(1), plain))
            out[diff, column.split(" ", 1)[0]] = cards
    return out


def test_gallery_shows_best_passed_and_rejected_pairs_with_their_checks(
    report_file: Path, pairs: list[dict]
) -> None:
    columns = _gallery_columns(report_file.read_text(encoding="utf-8"))
    by_id = {p["pair_id"]: p for p in pairs}
    for diff in DIFFICULTIES:
        mine = [p for p in pairs if p["difficulty"] == diff]
        if not mine:
            assert (diff, "best") not in columns
            continue
        kept = sorted((p for p in mine if p["passed"]), key=lambda p: -p["quality_score"])
        best = [by_id[pid] for pid, _ in columns[diff, "best"]]
        assert len(best) == min(PER_DIFFICULTY, len(kept))
        if best:  # the best pair first, then the best of the other clips
            others = [p for p in kept if p["clip_id"] != kept[0]["clip_id"]] or kept[1:]
            assert best[: len(others) + 1] == [kept[0], *others][: len(best)]
        rejected = columns[diff, "rejected"]
        assert len(rejected) == min(PER_DIFFICULTY, sum(not p["passed"] for p in mine))
        for pid, why in rejected:
            reason = by_id[pid]["reject_reason"]
            assert not by_id[pid]["passed"]
            assert why == "rejected by " + reason  # every check, its value and limit
        # the first rejected card is the commonest check's worst pair
        groups = Counter(
            reason.split()[0] for p in mine if not p["passed"] for reason in [p["reject_reason"]]
        )
        if rejected:
            assert rejected[0][1].split()[2] == sorted(groups, key=lambda c: (-groups[c], c))[0]
    # the best pair of each difficulty failed a check: it is shown as rejected, never as best
    shown_best = {pid for (_, name), cards in columns.items() if name == "best" for pid, _ in cards}
    assert all(by_id[pid]["passed"] for pid in shown_best)
    cutouts = [pid for pid, p in by_id.items() if p["reject_reason"] == TOP_FAILURE[0]]
    assert cutouts and not set(cutouts) & shown_best


def _row(
    pid: str, score: float, reason: str | None = None, difficulty: str = "easy", clip: str = ""
) -> dict:
    return {
        "pair_id": pid,
        "clip_id": clip or pid,
        "difficulty": difficulty,
        "quality_score": score,
        "passed": reason is None,
        "reject_reason": reason,
    }


def test_rejected_pairs_are_spread_over_the_checks_worst_first() -> None:
    rows = [
        _row("keep-low", 0.71),
        _row("keep-high", 0.9),
        _row("high-but-removal", 0.95, "removal 0.050 > 0.040"),
        _row("removal-far", 0.8, "removal 0.400 > 0.040; mask 0.100 < 0.850"),
        _row("removal-near", 0.8, "removal 0.041 > 0.040"),
        _row("mask", 0.8, "mask 0.500 < 0.850"),
        _row("quality", 0.3, "quality 0.300 < 0.700 (lowest: identity 0.100)"),
        _row("other-difficulty", 0.99, difficulty="hard"),
        _row("keep-high-same-clip", 0.85, clip="keep-high"),
        _row("removal-far-same-clip", 0.8, "removal 0.300 > 0.040", clip="removal-far"),
    ]
    best, worst = pick_best_worst(rows, "easy", 4)
    # a second pair of a clip only once every clip has shown one
    assert [r["pair_id"] for r in best] == ["keep-high", "keep-low", "keep-high-same-clip"]
    assert [r["pair_id"] for r in pick_best_worst(rows[:3], "easy", 1)[0]] == ["keep-high"]
    # removal rejected most (4), then mask and quality (1 each, by name); within removal,
    # the value furthest past its limit first
    assert [r["pair_id"] for r in worst] == ["removal-far", "mask", "quality", "high-but-removal"]
    every = [r["pair_id"] for r in pick_best_worst(rows, "easy", 9)[1]]
    assert every[3:] == ["high-but-removal", "removal-near", "removal-far-same-clip"]
    assert pick_best_worst(rows, "medium", 4) == ([], [])
    assert pick_best_worst(rows, "easy", 0) == ([], [])


def test_reject_reasons_parse_into_checks() -> None:
    assert CHECKS == CHECK_NAMES  # the report names the gate's checks without importing it
    parts = rejected_by("removal 0.412 > 0.040; mask 0.611 < 0.850")
    assert parts == [Failure("removal", "0.412 > 0.040"), Failure("mask", "0.611 < 0.850")]
    assert [p.limit for p in parts] == ["> 0.040", "< 0.850"]
    assert [p.margin for p in parts] == pytest.approx([0.372, 0.239])
    quality = rejected_by("quality 0.623 < 0.700 (lowest: temporal 0.412, identity 0.669)")
    assert quality[0].check == "quality" and quality[0].limit == "< 0.700"
    odd = rejected_by("made up by hand")
    assert odd == [Failure("made", "up by hand")] and odd[0].limit is None and odd[0].margin == 0
    assert rejected_by(None) == rejected_by("") == []


def _case(
    name: str,
    split: str,
    defective: bool,
    passed: bool | None,
    reason: str | None = None,
    lost: str | None = None,
) -> dict:
    """One benchmark case as ``fidelity.run_case`` returns it (metrics: the goals' only)."""
    case = {
        "case": name,
        "family": name.split("-")[0],
        "seed": int(name.split("-")[1]),
        "split": split,
        "notes": {},
        "defective": defective,
        "lost": lost,
        "reasons": ["mask_iou 0.4 < 0.7"] if defective else [],
        "metrics": {
            "mask_iou": 0.4 if defective else 0.95,
            "plate_psnr": 31.0,
            "residue": 0.01,
            "alpha_iou": 0.95,
        },
    }
    if lost is None:  # a lost case has no verdict
        case.update(passed=passed, reject_reason=reason, quality_score=0.8)
    return case


TRUTH_CASES = [
    _case("baseline-000", "held-out", False, True),
    _case("ring-000", "held-out", True, False, "mask 0.400 < 0.850"),
    _case("ring-005", "held-out", True, False, "removal 0.079 > 0.040; mask 0.611 < 0.850"),
    _case("ring-010", "held-out", True, True),  # missed
    _case("baseline-005", "held-out", False, False, "insert 0.476 < 0.650"),  # wrongly rejected
    _case("shadow-000", "held-out", True, None, lost="clip: no product found"),
    _case("baseline-001", "tuning", False, True),
    _case("ring-001", "tuning", True, False, "quality 0.500 < 0.700 (lowest: identity 0.200)"),
]


@pytest.fixture
def truth_file(tmp_path: Path) -> Path:
    """A fidelity benchmark JSON in small, its gate and goals computed by the benchmark's own
    functions, so a change in what the benchmark writes breaks the report's tests."""
    summary = {}
    for split in ("held-out", "tuning"):
        cases = [c for c in TRUTH_CASES if c["split"] == split]
        summary[split] = {"goals": fidelity.goals(cases), "gate": fidelity.gate(cases)}
    backends = {"segmenter": {"backend": "cpu-tracker-grabcut", "version": "2", "params": {}}}
    payload = {"backends": backends, "summary": summary, "cases": TRUTH_CASES}
    path = tmp_path / "fidelity.json"
    path.write_text(json.dumps(payload), encoding="utf-8")
    return path


def test_truth_section_shows_the_gate_against_ground_truth(
    built: Path, truth_file: Path, tmp_path: Path
) -> None:
    target = tmp_path / "truth.html"
    args = ["report", str(built), "-o", str(target), "--per-difficulty", "0"]
    assert main([*args, "--truth", str(truth_file)]) == 0
    page = Page(target.read_text(encoding="utf-8"))
    assert list(page.sections) == [*SECTIONS[:7], "truth", *SECTIONS[7:]]
    gate = page.rows("truth-held-out-gate")
    # made 5: 3 defective (2 rejected, 1 missed), 2 good (1 kept, 1 rejected)
    assert gate["precision"][0] == "0.67" and gate["recall"][0] == "0.67"
    assert gate["good kept"][0] == "0.50" and gate["goal met"][0] == "no"
    confusion = page.rows("truth-held-out-confusion")
    assert confusion == {
        "defective": ["2", "1", "3"],
        "good": ["1", "1", "2"],
        "all": ["3", "2", "5"],
    }
    checks = page.rows("truth-held-out-checks")
    assert checks["mask"] == ["2", "2", "0", "1.00"] and checks["insert"] == ["1", "0", "1", "0.00"]
    assert checks["removal"][:2] == ["1", "1"] and checks["quality"] == ["0", "0", "0", "-"]
    goals = page.rows("truth-held-out-goals")
    assert goals["mask IoU >= 0.85"] == [">= 90%", "33% (2/6)", "no"]  # lost cases count
    assert "1 case made no pair" in page.sections["truth"]
    wrong = page.rows("truth-held-out-wrong")
    assert set(wrong) == {"ring-010", "baseline-005"}
    assert wrong["baseline-005"][1:] == ["good", "rejected: insert 0.476 < 0.650"]
    assert page.rows("truth-tuning-confusion")["all"] == ["1", "1", "2"]
    assert "truth-tuning-wrong" not in page.tables  # the gate was right on every tuning case
    assert "benchmark ran other backends" in page.sections["truth"]
    assert "segmenter: benchmark cpu-tracker-grabcut v2, build none" in page.sections["truth"]
    # without --truth, no such section
    assert main(args) == 0
    assert "truth" not in Page(target.read_text(encoding="utf-8")).sections


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        ("{not json", "not JSON"),
        ('{"size": [192, 108]}', "no 'summary' object"),
        (
            '{"summary": {"held-out": {"gate": {"pairs": 2}, "goals": []}}, "cases": []}',
            "['held-out']['gate'] lacks ['by_check', 'defective'",
        ),
        (None, "cannot read the truth file"),
    ],
)
def test_a_truth_file_that_is_not_a_benchmark_json_is_a_clear_error(
    built: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str | None,
    complaint: str,
) -> None:
    truth = tmp_path / "truth.json"
    if content is not None:
        truth.write_text(content, encoding="utf-8")
    target = tmp_path / "r.html"
    assert main(["report", str(built), "-o", str(target), "--truth", str(truth)]) == 1
    err = capsys.readouterr().err
    assert str(truth) in err and complaint in err, err
    assert not target.exists()


def test_tar_only_dataset_gets_a_report_that_says_what_is_missing(tar_only: Path) -> None:
    assert main(["report", str(tar_only)]) == 0  # default: OUT/report/report.html
    page = Page((tar_only / "report" / "report.html").read_text(encoding="utf-8"))
    notes = page.sections["summary"]
    assert "no Lance tables" in notes and "statistics.json not found" in notes
    assert page.rows("counts-source")["all"][-2] == "8"
    assert set(page.rows("storage-table")) == {"tar", "all"}
    thumbs = [_decode(i["src"]) for i in page.images if i["src"].startswith("data:image/webp")]
    assert thumbs and all(img.n_frames > 1 for _, img in thumbs)


def test_rank_statistics_add_up() -> None:
    a, b = BuildReport(), BuildReport()
    a.seconds["insert"], b.seconds["insert"] = 1.0, 2.0
    a.calls["insert"], b.calls["insert"] = 3, 4
    a.reject("clip", "x", "product lost at frame 3: gone")
    b.reject("clip", "y", "product lost at frame 9: gone")
    a.extra["wall_s"], b.extra["wall_s"] = 5.0, 7.0
    total = sum_rank_statistics([a.as_dict(), b.as_dict()])
    assert total["time_per_stage_s"] == {"insert": 3.0}
    assert total["calls_per_stage"] == {"insert": 7}
    assert total["rejects_by_reason"] == {"clip: product lost at frame": 2}
    assert total["wall_s"] == 7.0 and total["rejects"] == 2


def test_help_does_not_import_matplotlib() -> None:
    code = (
        "import sys; from pvtt.tools.cli import build_parser; "
        "p = build_parser(); assert 'report' in p._subparsers._group_actions[0].choices; "
        "print('matplotlib' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_missing_dataset_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(tmp_path / "nope"), "-o", str(tmp_path / "r.html")]) == 1
    assert "no manifest" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


# -- headless Chromium -----------------------------------------------------------------------
BROWSER_SERVICES = frozenset(
    {"update.googleapis.com", "accounts.google.com", "clients2.google.com"}
)
"""Hosts Chromium itself calls on start whatever page it shows (component updates of the
optimization guide's model manifest, sign-in, network time), which no flag or policy turns
off in Debian's Chromium 156. Requests to them are the browser's, never the page's: the page
names no URL at all (see test_page_has_every_section_and_no_fetchable_reference)."""


def _host(request_line: str) -> str:
    """The host of a proxy request line: ``CONNECT host:443 ...`` or ``GET http://host/...``."""
    target = request_line.split()[1]
    return urlsplit(target if "//" in target else f"//{target}").hostname or ""


class _RecordingProxy(socketserver.ThreadingTCPServer):
    """An HTTP proxy on loopback that answers 403 to everything and remembers what was asked."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.requests: list[str] = []


class _ProxyHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        line = self.rfile.readline(8192).decode("latin-1").strip()
        if line:
            self.server.requests.append(line)
        self.wfile.write(
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )


def _screenshot(html: Path, shot: Path, profile: Path) -> list[str]:
    """Render ``html`` in headless Chromium behind the recording proxy; the requests it saw."""
    proxy = _RecordingProxy()
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        subprocess.run(
            [
                "chromium",
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                f"--user-data-dir={profile}",
                f"--proxy-server=http://127.0.0.1:{proxy.server_address[1]}",
                "--proxy-bypass-list=<-loopback>",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--disable-default-apps",
                "--virtual-time-budget=5000",
                f"--screenshot={shot}",
                "--window-size=1280,2000",
                html.resolve().as_uri(),
            ],
            capture_output=True,
            timeout=180,
            check=True,
        )
    finally:
        proxy.shutdown()
        proxy.server_close()
    return list(proxy.requests)


@pytest.mark.skipif(
    shutil.which("chromium") is None,
    reason="Debian's chromium is not installed (as root: make system-deps)",
)
def test_chromium_draws_the_report_without_any_request(report_file: Path, tmp_path: Path) -> None:
    # control: the same page without its policy and with one remote image must be caught
    leaky = tmp_path / "leaky.html"
    text = report_file.read_text(encoding="utf-8")
    text = text.replace('http-equiv="Content-Security-Policy"', 'name="no-policy"', 1)
    leaky.write_text(text.replace("<body>", '<body><img src="http://pvtt-leak.test/x.png">', 1))
    seen = _screenshot(leaky, tmp_path / "leaky.png", tmp_path / "profile-a")
    assert "pvtt-leak.test" in {_host(r) for r in seen}, seen

    shot = tmp_path / "report.png"
    seen = _screenshot(report_file, shot, tmp_path / "profile-b")
    assert [r for r in seen if _host(r) not in BROWSER_SERVICES] == []
    image = np.asarray(Image.open(shot).convert("RGB"))
    assert image.shape == (2000, 1280, 3)
    assert image.std() > 20
    colours = np.unique(image.reshape(-1, 3)[::7], axis=0)
    assert len(colours) > 200  # text, tables, coloured plots
    top = image[:600].astype(int)
    assert (top.min(axis=2) < 100).mean() > 0.005  # dark text on the top of the page
