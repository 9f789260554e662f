"""``pvtt report``: one self-contained HTML page about a built dataset.

Whoever decides whether a dataset is fit to train on wants the counts, the score
distributions, what was thrown away and why, where the time and the bytes went,
and a look at the best and worst pairs, in one file they can mail or archive.
Every figure and thumbnail is inlined as a ``data:`` URI and a
Content-Security-Policy forbids any fetch, so the page looks the same offline and
years later. What the dataset does not hold (no Lance tables, no build statistics,
a scorer that never ran) is said on the page, not silently left out.

:func:`gather_report` reads; :func:`render_html` writes the page (and only then
imports matplotlib, through :mod:`pvtt.tools.report_plots`).
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from pvtt import __version__
from pvtt.builder.report import REPORT_DIR
from pvtt.builder.resources import RATES_NAME
from pvtt.loaders.decode import MediaDecodeError
from pvtt.loaders.frames import decode_frames, decode_rgba, frame_count
from pvtt.loaders.pair_media import LancePairMedia, TarPairMedia, pair_media
from pvtt.loaders.query import DIFFICULTIES, PairFilter, select_pairs
from pvtt.loaders.stats import dataset_stats
from pvtt.loaders.store import BuiltDataset
from pvtt.loaders.tar_reader import ShardFormatError
from pvtt.schemas.manifest import Manifest
from pvtt.tools import preview

SCORERS = ("identity", "temporal", "lighting", "overall")
ROW_COLUMNS = (
    "pair_id",
    "clip_id",
    "source_id",
    "target_id",
    "source_category",
    "source_subcategory",
    "target_category",
    "target_subcategory",
    "difficulty",
    "quality_score",
    *(f"score_{s}" for s in SCORERS),
    "passed",
    "reject_reason",
    "frame_count",
    "width",
    "height",
    "fps",
    "duration_s",
)
THUMB_FRAMES = 10
THUMB_HEIGHT = 120
"""Three panels at 120 px make a card ~550 px wide: best and worst sit side by side."""
THUMB_QUALITY = 50
CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'"
)
"""Nothing may be fetched: images only from data: URIs, styles only inline, no scripts."""
_QUALITY = re.compile(r"^quality [\d.]+ < [\d.]+(?: \(lowest: ([a-z_]+))?")


@dataclass
class Thumb:
    """One gallery entry: the pair's row and its animated WebP, or why there is none."""

    row: dict[str, Any]
    image: bytes | None = None
    error: str | None = None


@dataclass
class ReportData:
    """What the page shows, gathered before any of it is drawn."""

    where: str
    manifest: Manifest
    rows: list[dict[str, Any]]
    """Scalar columns of every pair in the dataset, passed and rejected."""
    stats: dict[str, Any]
    """:func:`pvtt.loaders.stats.dataset_stats` (what ``pvtt stats`` prints)."""
    threshold: float | None
    build: dict[str, Any] | None
    """``statistics.json`` of the build (summed over ranks), None when absent."""
    build_source: str
    rates: dict[str, Any] | None
    gallery: dict[str, tuple[list[Thumb], list[Thumb]]] = field(default_factory=dict)
    """difficulty -> (best pairs, worst pairs)."""
    missing: list[str] = field(default_factory=list)


# -- gathering ------------------------------------------------------------------------------
def gather_report(
    dataset: BuiltDataset,
    *,
    per_difficulty: int = 3,
    thumb_height: int = THUMB_HEIGHT,
    progress: bool | None = None,
) -> ReportData:
    """Everything the page shows. ``progress=None`` shows a bar only on a terminal."""
    if per_difficulty < 0 or thumb_height < 16:
        raise ValueError("--per-difficulty must be >= 0 and --thumb-height >= 16")
    manifest = dataset.manifest
    rows = select_pairs(dataset, PairFilter(passed=None), columns=ROW_COLUMNS).to_pylist()
    build, build_source, notes = load_build_statistics(dataset)
    rates, problem = _read_json(dataset, f"{REPORT_DIR}/{RATES_NAME}")
    notes += [problem] if problem else []
    data = ReportData(
        where=str(dataset.root),
        manifest=manifest,
        rows=rows,
        stats=dataset_stats(dataset),
        threshold=manifest.config.get("quality", {}).get("threshold"),
        build=build,
        build_source=build_source,
        rates=rates,
        missing=notes,
    )
    data.missing += _missing_notes(dataset, data)
    picks = {d: pick_best_worst(rows, d, per_difficulty) for d in DIFFICULTIES}
    total = sum(len(b) + len(w) for b, w in picks.values())
    if total:
        media = pair_media(dataset)
        disable = None if progress is None else not progress  # None: only on a terminal
        with tqdm(total=total, desc="gallery", unit="pair", disable=disable) as bar:
            for diff, (best, worst) in picks.items():
                if best or worst:
                    data.gallery[diff] = (
                        [_thumb(media, r, thumb_height, bar.update) for r in best],
                        [_thumb(media, r, thumb_height, bar.update) for r in worst],
                    )
    return data


def load_build_statistics(dataset: BuiltDataset) -> tuple[dict[str, Any] | None, str, list[str]]:
    """The build's ``statistics.json``: the dataset's own, or every rank's summed.

    A multi-rank build writes ``report/r{rank:03d}/statistics.json`` per rank and no
    top-level file; counts, seconds, calls and rejects add up, the wall time is the
    slowest rank's.
    """
    top = f"{REPORT_DIR}/statistics.json"
    stats, problem = _read_json(dataset, top)
    if stats is not None or problem:
        return stats, top, [problem] if problem else []
    world = max(1, dataset.manifest.world_size)
    ranks, notes = [], []
    for rank in range(world):
        found, problem = _read_json(dataset, f"{REPORT_DIR}/r{rank:03d}/statistics.json")
        if found is not None:
            ranks.append(found)
        elif problem:
            notes.append(problem)
    if not ranks:
        notes.append(
            f"{top} not found: time per stage and the build's rejects are unknown "
            "(the dataset was written without `pvtt build`, or its report folder was removed)"
        )
        return None, top, notes
    if len(ranks) < world:
        notes.append(
            f"build statistics of {len(ranks)} of {world} ranks found; figures are partial"
        )
    return (
        sum_rank_statistics(ranks),
        f"{REPORT_DIR}/r*/statistics.json ({len(ranks)} ranks)",
        notes,
    )


def sum_rank_statistics(ranks: Sequence[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"rejects": sum(r.get("rejects", 0) for r in ranks)}
    for key in ("counts", "time_per_stage_s", "calls_per_stage", "rejects_by_reason"):
        total: Counter[str] = Counter()
        for r in ranks:
            total.update(r.get(key, {}))
        out[key] = dict(total)
    walls = [r["wall_s"] for r in ranks if "wall_s" in r]
    if walls:
        out["wall_s"] = max(walls)
    return out


def _read_json(dataset: BuiltDataset, rel: str) -> tuple[dict[str, Any] | None, str | None]:
    """``(object, None)``, ``(None, None)`` when absent, ``(None, problem)`` when unreadable."""
    try:
        raw = dataset.storage.read_bytes(rel)
    except FileNotFoundError:
        return None, None
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return None, f"{dataset.storage.path(rel)}: unreadable, left out of the report: {exc}"
    if not isinstance(data, dict):
        return None, f"{dataset.storage.path(rel)}: not a JSON object, left out of the report"
    return data, None


def _missing_notes(dataset: BuiltDataset, data: ReportData) -> list[str]:
    notes = []
    if not data.manifest.complete:
        notes.append("the manifest says the build is incomplete (still running, or killed)")
    if not dataset.has_lance:
        notes.append(
            "no Lance tables (a tar-only dataset): counts and scores come from the tar "
            "samples' json, storage shows the shards only"
        )
    if not dataset.has_tar:
        notes.append("no tar shards (a Lance-only dataset)")
    if data.threshold is None:
        notes.append("the manifest's config names no quality threshold; pass rates use `passed`")
    for scorer in SCORERS:
        if data.rows and all(r[f"score_{scorer}"] is None for r in data.rows):
            notes.append(f"score_{scorer} is null in every pair: that scorer did not run")
    if data.manifest.config.get("quality", {}).get("drop_rejected"):
        notes.append(
            "the build dropped rejected pairs (quality.drop_rejected): the tables hold passed "
            "pairs only; the build statistics count the rejected ones"
        )
    return notes


def pick_best_worst(
    rows: Sequence[dict[str, Any]], difficulty: str, k: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The ``k`` highest and ``k`` lowest scored pairs of a difficulty, worst first, disjoint."""
    scored = [r for r in rows if r["difficulty"] == difficulty and r["quality_score"] is not None]
    scored.sort(key=lambda r: (-r["quality_score"], r["pair_id"]))
    best = scored[:k]
    worst = scored[max(k, len(scored) - k) :][::-1]
    return best, worst


def _thumb(
    media: LancePairMedia | TarPairMedia,
    row: dict[str, Any],
    height: int,
    done: Callable[[int], Any],
) -> Thumb:
    try:
        return Thumb(row, image=thumbnail(media, row, height))
    except (MediaDecodeError, ShardFormatError, KeyError) as exc:
        return Thumb(row, error=f"no thumbnail: {exc}")
    finally:
        done(1)


def thumbnail(media: LancePairMedia | TarPairMedia, row: dict[str, Any], height: int) -> bytes:
    """source | synthesized | target cut-out, a few frames spread over the clip, animated WebP."""
    pid = row["pair_id"]
    synth = media.synth(row)
    total = frame_count(synth, row.get("frame_count"), what=f"{pid}: synth_video")
    indices = preview.sample_indices(total, THUMB_FRAMES)
    width = max(2, 2 * round(height * row["width"] / row["height"] / 2))

    def clip(data: bytes, what: str) -> np.ndarray:
        n = frame_count(data, what=f"{pid}: {what}")
        picked = np.minimum(indices, n - 1)
        frames = decode_frames(data, picked, size=(height, width), what=f"{pid}: {what}")
        return frames.permute(0, 2, 3, 1).numpy()

    synth_frames = clip(synth, "synth_video")
    source_bytes = media.source_video(row)
    source = clip(source_bytes, "source_video") if source_bytes else None
    rgba = decode_rgba(media.target_rgba(row), what=f"{pid}: target").permute(1, 2, 0).numpy()
    count = len(synth_frames)
    cut = np.broadcast_to(preview.cutout_panel(rgba, height, height), (count, height, height, 3))
    columns = [
        preview.unavailable(count, height, width) if source is None else source,
        synth_frames,
        cut,
    ]
    names = ("source", "synthesized", "target")
    frames = np.concatenate(
        [preview.label(c, n) for c, n in zip(columns, names, strict=True)], axis=2
    )
    seconds = float(row.get("duration_s") or total / float(row.get("fps") or 24.0))
    duration = int(np.clip(1000 * seconds / count, 120, 600))
    images = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    images[0].save(
        buf,
        format="WEBP",
        save_all=True,
        append_images=images[1:],
        duration=duration,
        loop=0,
        quality=THUMB_QUALITY,
        method=4,
    )
    return buf.getvalue()


# -- tables of numbers ----------------------------------------------------------------------
def counts_by(rows: Iterable[dict[str, Any]], column: str) -> dict[str, dict[str, int]]:
    """Pairs per value of ``column`` and difficulty."""
    out: dict[str, Counter[str]] = {}
    for r in rows:
        out.setdefault(r[column], Counter())[r["difficulty"]] += 1
    return {k: {d: v.get(d, 0) for d in DIFFICULTIES} for k, v in sorted(out.items())}


def scores_by_difficulty(rows: Iterable[dict[str, Any]], column: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {d: [] for d in DIFFICULTIES}
    for r in rows:
        if r[column] is not None and r["difficulty"] in out:
            out[r["difficulty"]].append(float(r[column]))
    return out


def reject_group(reason: str) -> str:
    """A reason without its numbers: the quality verdict keeps the weakest scorer's name."""
    match = _QUALITY.match(reason)
    if match:
        weakest = f", weakest score: {match.group(1)}" if match.group(1) else ""
        return f"quality below threshold{weakest}"
    head = reason.split(":")[0]
    return re.sub(r"\d+(\.\d+)?", "N", head).strip() or reason[:60]


def reject_rows(data: ReportData) -> list[tuple[str, str, int]]:
    """``(where, reason, count)``: the build's stage rejects, then the pairs that did not pass."""
    out: list[tuple[str, str, int]] = []
    if data.build:
        for reason, n in data.build.get("rejects_by_reason", {}).items():
            stage, _, text = reason.partition(": ")
            out.append((f"build: {stage}", text or reason, int(n)))
        lost = data.build.get("counts", {}).get("pairs.lost_with_clip", 0)
        if lost:
            out.append(("build: pair", "not made: its source clip was rejected", int(lost)))
    groups = Counter(
        reject_group(r["reject_reason"] or "no reason given") for r in data.rows if not r["passed"]
    )
    out += [("pairs table", reason, n) for reason, n in groups.most_common()]
    return out


# -- rendering ------------------------------------------------------------------------------
def render_html(data: ReportData) -> str:
    """The whole page; every image a data: URI, no script, nothing fetched."""
    from pvtt.tools import report_plots as plots  # matplotlib only when a page is drawn

    sections = [
        ("summary", "Summary", _summary(data)),
        ("counts", "Pairs by difficulty and category", _counts(data, plots)),
        ("scores", "Quality score by difficulty", _scores(data, plots)),
        ("scorers", "Scores per scorer", _scorers(data, plots)),
        ("pass-rate", "Pass rate against the threshold", _pass_rate(data, plots)),
        ("rejects", "Rejects by reason", _rejects(data, plots)),
        ("time", "Time per stage", _time(data, plots)),
        ("storage", "Storage per table", _storage(data, plots)),
        ("gallery", "Best and worst pairs per difficulty", _gallery(data)),
    ]
    nav = " · ".join(f'<a href="#{sid}">{_e(title)}</a>' for sid, title, _ in sections)
    body = "\n".join(
        f'<section id="{sid}">\n<h2>{_e(title)}</h2>\n{content}\n</section>'
        for sid, title, content in sections
    )
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>pvtt report: {_e(data.manifest.build_id)}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>pvtt dataset report</h1>
<p class="sub">{_e(data.where)} · build <code>{_e(data.manifest.build_id)}</code></p>
<nav>{nav}</nav>
{body}
<footer>written by pvtt {_e(__version__)} on {stamp}</footer>
</body>
</html>
"""


STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;
 max-width:1240px;margin:0 auto;padding:8px 20px 40px;background:#fff}
h1{margin:.4em 0 0}h2{border-bottom:2px solid #e4e4e4;padding-bottom:3px;margin-top:1.8em}
h3{margin:1.2em 0 .4em}.sub{color:#666;margin:.2em 0 .8em}
nav{background:#f5f6f8;padding:6px 10px;border-radius:4px}nav a{color:#2b5ea8}
table{border-collapse:collapse;margin:8px 0 12px}
th,td{padding:3px 10px;border-bottom:1px solid #eee;text-align:right;vertical-align:top}
th{background:#fafafa}td.l,th.l{text-align:left}tr.total td,tr.total th{font-weight:600;
 border-top:1px solid #bbb}
img.plot{display:block;max-width:100%;height:auto;margin:6px 0}
.note{background:#fff6dd;border-left:4px solid #e0a800;padding:6px 10px;margin:6px 0}
.gallery{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
.column{display:flex;flex-direction:column;gap:10px}h4{margin:.2em 0}
figure{margin:0;border:1px solid #ddd;border-radius:4px;padding:6px;background:#fafafa}
figure img{display:block}figcaption{font-size:12px;line-height:1.35;margin-top:4px}
.pass{color:#1e7a3f;font-weight:600}.fail{color:#b3261e;font-weight:600}
code{font-size:12px}footer{color:#888;margin-top:3em;font-size:12px}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _plot(png: bytes, alt: str) -> str:
    return f'<img class="plot" src="{_data_uri(png, "image/png")}" alt="{_e(alt)}">'


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _table(
    header: Sequence[str] | None,
    rows: Sequence[Sequence[Any]],
    table_id: str,
    total: Sequence[Any] | None = None,
    text_columns: int = 1,
) -> str:
    """A table whose first column heads its rows; the first ``text_columns`` align left,
    the numbers after them right."""

    def cls(i: int) -> str:
        return ' class="l"' if i < text_columns else ""

    def line(cells: Sequence[Any], row_cls: str = "") -> str:
        head, *rest = cells
        attr = f' class="{row_cls}"' if row_cls else ""
        tds = "".join(f"<td{cls(i)}>{_e(c)}</td>" for i, c in enumerate(rest, 1))
        return f'<tr{attr}><th class="l" scope="row">{_e(head)}</th>{tds}</tr>'

    thead = ""
    if header is not None:
        ths = "".join(f'<th{cls(i)} scope="col">{_e(h)}</th>' for i, h in enumerate(header))
        thead = f"<thead><tr>{ths}</tr></thead>\n"
    body = "\n".join(line(r) for r in rows)
    if total is not None:
        body += "\n" + line(total, "total")
    return f'<table id="{table_id}">\n{thead}<tbody>\n{body}\n</tbody>\n</table>'


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _summary(data: ReportData) -> str:
    m = data.manifest
    passed = sum(1 for r in data.rows if r["passed"])
    tables = ", ".join(f"{n} ({t.rows} rows, v{t.version})" for n, t in m.tables.items())
    items: list[tuple[str, Any]] = [
        ("dataset", data.where),
        ("build id", m.build_id),
        ("state", "complete" if m.complete else "INCOMPLETE"),
        ("schema version", m.schema_version),
        ("created / updated", f"{m.created_at} / {m.updated_at}"),
        ("formats", ", ".join(m.formats)),
        ("Lance tables", tables or "none"),
        ("tar shards", f"{len(m.shards)} ({sum(s.samples for s in m.shards)} samples)"),
        ("pairs", len(data.rows)),
        ("passed", f"{passed} ({_pct(passed, len(data.rows))})"),
        ("quality threshold", "unknown" if data.threshold is None else data.threshold),
        ("score weights", json.dumps(m.config.get("quality", {}).get("weights", "unknown"))),
        ("source categories", len({r["source_category"] for r in data.rows})),
        ("target products", len({r["target_id"] for r in data.rows})),
        ("source clips", len({r["clip_id"] for r in data.rows})),
    ]
    if data.build:
        counts = data.build.get("counts", {})
        made = counts.get("pairs.passed", 0) + counts.get("pairs.rejected", 0)
        items += [
            ("build wall time", f"{data.build.get('wall_s', 0):.1f} s"),
            (
                "clips kept / planned",
                f"{counts.get('clips.ok', 0)} / {counts.get('clips.planned', 0)}",
            ),
            ("pairs made / planned", f"{made} / {counts.get('pairs.planned', 0)}"),
            ("build rejects", data.build.get("rejects", 0)),
        ]
    backends = sorted(
        f"{k}: {v.get('backend', '?')}" for k, v in m.backends.items() if isinstance(v, dict)
    )
    if backends:
        items.append(("backends", ", ".join(backends)))
    out = _table(None, items, "summary-table", text_columns=2)
    if data.missing:
        out += "\n<h3>Not in this dataset</h3>\n" + "\n".join(_note(n) for n in data.missing)
    return out


def _counts(data: ReportData, plots: Any) -> str:
    if not data.rows:
        return _note("the dataset holds no pairs")
    by_source = counts_by(data.rows, "source_category")
    by_target = counts_by(data.rows, "target_category")
    passed = Counter(r["source_category"] for r in data.rows if r["passed"])
    header = ("source category", *DIFFICULTIES, "total", "passed")
    rows = [
        (cat, *(c[d] for d in DIFFICULTIES), sum(c.values()), passed.get(cat, 0))
        for cat, c in by_source.items()
    ]
    totals = Counter(r["difficulty"] for r in data.rows)
    total = ("all", *(totals.get(d, 0) for d in DIFFICULTIES), len(data.rows), sum(passed.values()))
    target_rows = [
        (cat, *(c[d] for d in DIFFICULTIES), sum(c.values())) for cat, c in by_target.items()
    ]
    return "\n".join(
        [
            _table(header, rows, "counts-source", total),
            _plot(
                plots.counts_by_category(by_source, by_target), "pairs by category and difficulty"
            ),
            "<details><summary>by target category</summary>",
            _table(("target category", *DIFFICULTIES, "total"), target_rows, "counts-target"),
            "</details>",
        ]
    )


def _quantile_cells(values: Sequence[float]) -> tuple[str, ...]:
    if not values:
        return ("-",) * 4
    a = np.asarray(values, dtype=float)
    q10, q50, q90 = np.quantile(a, [0.1, 0.5, 0.9])
    return _num(q10), _num(q50), _num(q90), _num(float(a.mean()))


def _scores(data: ReportData, plots: Any) -> str:
    values = scores_by_difficulty(data.rows, "quality_score")
    rows = [
        (
            d,
            sum(1 for r in data.rows if r["difficulty"] == d),
            len(values[d]),
            *_quantile_cells(values[d]),
        )
        for d in DIFFICULTIES
    ]
    header = ("difficulty", "pairs", "scored", "q10", "median", "q90", "mean")
    return "\n".join(
        [
            _table(header, rows, "scores-table"),
            _plot(plots.quality_histograms(values, data.threshold), "quality_score histograms"),
        ]
    )


def _scorers(data: ReportData, plots: Any) -> str:
    per = {s: scores_by_difficulty(data.rows, f"score_{s}") for s in SCORERS}
    rows = []
    for s in SCORERS:
        every = [v for vs in per[s].values() for v in vs]
        rows.append((s, len(every), *_quantile_cells(every)))
    header = ("scorer", "pairs scored", "q10", "median", "q90", "mean")
    return "\n".join(
        [
            _table(header, rows, "scorers-table"),
            _plot(plots.scorer_boxplots(per, data.threshold), "scores per scorer and difficulty"),
        ]
    )


def _pass_rate(data: ReportData, plots: Any) -> str:
    rows = []
    for d in [*DIFFICULTIES, None]:
        sel = [r for r in data.rows if d is None or r["difficulty"] == d]
        passed = sum(1 for r in sel if r["passed"])
        rows.append((d or "all", len(sel), passed, _pct(passed, len(sel))))
    *per, total = rows
    where = f"quality_score >= {data.threshold}" if data.threshold is not None else "`passed`"
    return "\n".join(
        [
            f"<p>A pair passes when {_e(where)}. The curve shows how many would pass at "
            "other thresholds.</p>",
            _table(("difficulty", "pairs", "passed", "pass rate"), per, "pass-table", total),
            _plot(
                plots.pass_rate_curve(
                    scores_by_difficulty(data.rows, "quality_score"), data.threshold
                ),
                "pass rate against the threshold",
            ),
        ]
    )


def _rejects(data: ReportData, plots: Any) -> str:
    rows = reject_rows(data)
    out = []
    if data.build is None:
        out.append(_note("no build statistics: only the pairs table's rejects are shown"))
    if not rows:
        return "\n".join([*out, "<p>Nothing was rejected.</p>"])
    out.append(_table(("where", "reason", "count"), rows, "rejects-table", text_columns=2))
    labels = [f"{reason} [{where}]" for where, reason, _ in rows]
    out.append(_plot(plots.bar_chart(labels, [n for *_, n in rows], "count"), "rejects"))
    return "\n".join(out)


def _time(data: ReportData, plots: Any) -> str:
    if data.build is None or not data.build.get("time_per_stage_s"):
        return _note("no build statistics: time per stage unknown")
    seconds: dict[str, float] = data.build["time_per_stage_s"]
    calls = data.build.get("calls_per_stage", {})
    rates = (data.rates or {}).get("stages", {})
    total = sum(seconds.values())
    rows = []
    for stage, spent in sorted(seconds.items(), key=lambda kv: -kv[1]):
        n = calls.get(stage, 0)
        rate = rates.get(stage)
        speed = f"{rate['rate']:.1f} {rate['unit']}/s" if rate else "-"
        rows.append(
            (stage, f"{spent:.2f}", _pct(spent, total), n, f"{spent / n:.3f}" if n else "-", speed)
        )
    header = ("stage", "seconds", "share", "calls", "s / call", "throughput")
    wall = data.build.get("wall_s")
    text = (
        f"<p>Measured by the build ({_e(data.build_source)}). Stages overlap in threads, so "
        f"their sum ({total:.1f} s) can exceed the wall time"
        + (f" ({wall:.1f} s)" if wall is not None else "")
        + ".</p>"
    )
    chart = plots.bar_chart(list(seconds), list(seconds.values()), "seconds", "{:.1f} s")
    return "\n".join([text, _table(header, rows, "time-table"), _plot(chart, "time per stage")])


def _storage(data: ReportData, plots: Any) -> str:
    sizes: dict[str, int] = data.stats["bytes"]
    if not sizes:
        return _note("no storage figures")
    total = sum(sizes.values())
    pairs = len(data.rows)
    per_pair = {name: f"{size / pairs / 1e3:.1f}" if pairs else "-" for name, size in sizes.items()}
    rows = [(n, f"{s / 1e6:.2f}", _pct(s, total), per_pair[n]) for n, s in sizes.items()]
    header = ("table", "MB", "share", "kB per pair")
    chart = plots.bar_chart(list(sizes), [s / 1e6 for s in sizes.values()], "MB", "{:.2f} MB")
    parts = [
        _table(header, rows, "storage-table", ("all", f"{total / 1e6:.2f}", "100%", "")),
        _plot(chart, "storage per table"),
    ]
    if "tar" in sizes and any(k.startswith("lance/") for k in sizes):
        parts.insert(
            0,
            "<p>Tar shards and Lance tables each hold the pairs in full: a "
            "dataset written in both formats stores them twice.</p>",
        )
    return "\n".join(parts)


def _card(thumb: Thumb) -> str:
    r = thumb.row
    verdict = (
        '<span class="pass">passed</span>' if r["passed"] else '<span class="fail">rejected</span>'
    )
    scores = " · ".join(
        f"{s} {_num(r[f'score_{s}'], 2)}" for s in SCORERS if r[f"score_{s}"] is not None
    )
    if thumb.image is not None:
        media = f'<img src="{_data_uri(thumb.image, "image/webp")}" alt="{_e(r["pair_id"])}">'
    else:
        media = _note(thumb.error or "no thumbnail")
    reason = f"<br>{_e(r['reject_reason'])}" if r["reject_reason"] else ""
    return (
        f"<figure>{media}<figcaption><code>{_e(r['pair_id'])}</code><br>"
        f"{_e(r['source_category'])}/{_e(r['source_subcategory'])} → "
        f"{_e(r['target_category'])}/{_e(r['target_subcategory'])}<br>"
        f"quality <b>{_num(r['quality_score'], 3)}</b> {verdict}<br>{_e(scores)}{reason}"
        "</figcaption></figure>"
    )


def _gallery(data: ReportData) -> str:
    if not data.gallery:
        return _note("no scored pairs to show")
    parts = [
        "<p>Each thumbnail loops a few frames spread over the clip: the source clip, the "
        "synthesized clip and the target product's cut-out.</p>"
    ]
    for diff in DIFFICULTIES:
        if diff not in data.gallery:
            continue
        columns = []
        for name, thumbs in zip(("best", "worst"), data.gallery[diff], strict=True):
            if thumbs:
                cards = "".join(_card(t) for t in thumbs)
                columns.append(f'<div class="column"><h4>{name} {len(thumbs)}</h4>{cards}</div>')
        parts.append(f'<h3 id="gallery-{diff}">{diff}</h3>')
        parts.append('<div class="gallery">' + "".join(columns) + "</div>")
    return "\n".join(parts)
