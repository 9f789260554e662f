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
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from pvtt import __version__
from pvtt.builder.funnel import merge_funnels
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
from pvtt.tools.calibration_html import calibration_html

SCORERS = ("identity", "temporal", "lighting", "overall")
CHECKS = ("removal", "mask", "insert", "cutout")
"""The hard checks of :mod:`pvtt.builder.stages.checks` (not imported: it pulls in OpenCV)."""
QUALITY = "quality"
"""What a reject reason names when the weighted mean, not a hard check, rejected the pair."""
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
    *(f"score_{c}" for c in CHECKS),
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
_VERDICT = re.compile(r"^(-?[\d.]+) ([<>]) (-?[\d.]+)")
"""``value op limit`` at the start of a reject reason's part, after the check's name."""


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
    truth: dict[str, Any] | None = None
    """The fidelity benchmark's JSON (:func:`load_truth`), None without ``--truth``."""
    truth_source: str = ""
    calibration: str | None = None
    """The gate against human labels (``pvtt review``), when the dataset has any."""


# -- ground truth ---------------------------------------------------------------------------
TRUTH_COMMAND = "python -m pvtt.tools.bench.fidelity --json FILE"
GATE_KEYS = frozenset(
    {
        "pairs",
        "defective",
        "good",
        "rejected",
        "lost",
        "recall",
        "precision",
        "good_kept",
        "met",
        "by_check",
    }
)
GOAL_KEYS = frozenset({"goal", "target", "hits", "cases", "share", "met"})
CASE_KEYS = frozenset({"case", "family", "split", "defective", "reasons", "lost"})
"""What every case holds; ``passed`` and ``reject_reason`` only a case that made a pair."""


class TruthFileError(ValueError):
    """The ``--truth`` file is unreadable or not what the fidelity benchmark writes."""


def load_truth(path: Path) -> dict[str, Any]:
    """The fidelity benchmark's ``--json`` payload, checked for what the page reads.

    Read as plain JSON: the benchmark module itself pulls in every backend, and the page
    needs only its summary (per split: the gate against the labels and the goals) and its
    cases. Anything else is refused with the file named, before the slow gallery is drawn.
    """
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TruthFileError(f"{path}: cannot read the truth file: {exc.strerror or exc}") from exc
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise TruthFileError(f"{path}: not JSON ({exc}); {_truth_hint()}") from exc

    def refuse(what: str) -> TruthFileError:
        return TruthFileError(f"{path}: not a fidelity benchmark JSON: {what}; {_truth_hint()}")

    summary = payload.get("summary") if isinstance(payload, dict) else None
    if not isinstance(summary, dict) or not summary:
        raise refuse("no 'summary' object with a split in it")
    for split, part in summary.items():
        gate = part.get("gate") if isinstance(part, dict) else None
        if not isinstance(gate, dict) or not GATE_KEYS <= set(gate):
            raise refuse(f"summary[{split!r}]['gate'] lacks {sorted(GATE_KEYS - set(gate or {}))}")
        checks = gate["by_check"]
        if not isinstance(checks, dict) or not all(
            isinstance(c, dict) and {"rejected", "defective"} <= set(c) for c in checks.values()
        ):
            raise refuse(f"summary[{split!r}]['gate']['by_check'] is not check -> counts")
        goals = part.get("goals")
        if not isinstance(goals, list) or not all(
            isinstance(g, dict) and GOAL_KEYS <= set(g) for g in goals
        ):
            raise refuse(f"summary[{split!r}]['goals'] is not a list of goals")
    cases = payload.get("cases")
    if not isinstance(cases, list) or not all(
        isinstance(c, dict) and CASE_KEYS <= set(c) for c in cases
    ):
        raise refuse(f"'cases' is not a list of cases with {sorted(CASE_KEYS)}")
    return payload


def _truth_hint() -> str:
    return f"write one with `{TRUTH_COMMAND}`"


# -- gathering ------------------------------------------------------------------------------
def gather_report(
    dataset: BuiltDataset,
    *,
    per_difficulty: int = 3,
    thumb_height: int = THUMB_HEIGHT,
    progress: bool | None = None,
    truth: Path | None = None,
) -> ReportData:
    """Everything the page shows. ``progress=None`` shows a bar only on a terminal;
    ``truth``: a fidelity benchmark JSON whose gate figures the page shows."""
    if per_difficulty < 0 or thumb_height < 16:
        raise ValueError("--per-difficulty must be >= 0 and --thumb-height >= 16")
    truth_payload = None if truth is None else load_truth(truth)
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
        truth=truth_payload,
        truth_source=str(truth or ""),
    )
    data.missing += _missing_notes(dataset, data)
    data.calibration = calibration_html(dataset)
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
    funnels = [r["funnel"] for r in ranks if "funnel" in r]
    if funnels and len(funnels) == len(ranks):
        out["funnel"] = merge_funnels(funnels)
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


@dataclass(frozen=True)
class Failure:
    """One part of a reject reason: the check that failed and how."""

    check: str
    """A hard check (:data:`CHECKS`), ``quality`` (the weighted mean), or whatever
    word a reason from another writer starts with."""
    detail: str
    """The rest of the part, e.g. ``0.412 > 0.040``: the value, then its limit."""

    @property
    def limit(self) -> str | None:
        """``"> 0.040"``: the side of the limit the value crossed, or None if unparsed."""
        match = _VERDICT.match(self.detail)
        return f"{match.group(2)} {match.group(3)}" if match else None

    @property
    def margin(self) -> float:
        """How far the value lies past its limit (0 when unparsed): the worse, the larger."""
        match = _VERDICT.match(self.detail)
        if not match:
            return 0.0
        value, op, bound = float(match.group(1)), match.group(2), float(match.group(3))
        return value - bound if op == ">" else bound - value


def rejected_by(reason: str | None) -> list[Failure]:
    """The failures a reject reason names, in its order.

    The quality gate joins the failed hard checks with ``"; "``, each part starting
    with the check's name (``"removal 0.412 > 0.040; mask 0.611 < 0.850"``), and
    writes ``"quality 0.623 < 0.700 (lowest: ...)"`` when only the weighted mean failed.
    """
    out = []
    for part in (reason or "").split(";"):
        check, _, detail = part.strip().partition(" ")
        if check:
            out.append(Failure(check, detail.strip()))
    return out


def pick_best_worst(
    rows: Sequence[dict[str, Any]], difficulty: str, k: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The ``k`` best passed pairs of a difficulty, and ``k`` of its rejected pairs.

    Best: the highest quality scores among the pairs the gate kept, since a rejected pair
    can score high and still fail a hard check. Worst: the rejected pairs taken in turn
    from each check that rejected some (the check a reason names first, the most common
    check first), within a check the one furthest past its limit first, so a few cards
    show every way pairs fail rather than ``k`` examples of the commonest. Either way no
    clip is shown twice while another clip is left: pairs of one clip share its masks and
    plate, so a second one shows little new.
    """
    mine = [r for r in rows if r["difficulty"] == difficulty]
    kept = sorted(
        (r for r in mine if r["passed"]),
        key=lambda r: (r["quality_score"] is None, -(r["quality_score"] or 0.0), r["pair_id"]),
    )
    groups: dict[str, list[tuple[float, str, dict[str, Any]]]] = {}
    for r in mine:
        if not r["passed"]:
            first = (rejected_by(r["reject_reason"]) or [Failure("unknown", "")])[0]
            groups.setdefault(first.check, []).append((-first.margin, r["pair_id"], r))
    queues = [
        _clips_in_turn([item[2] for item in sorted(queue, key=lambda item: item[:2])])
        for _, queue in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    ]
    worst = [
        q[turn] for turn in range(max(map(len, queues), default=0)) for q in queues if turn < len(q)
    ]
    return _clips_in_turn(kept)[:k], worst[:k]


def _clips_in_turn(ranked: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``ranked`` reordered so that each clip's first pair comes before any clip's second."""
    seen: Counter[str] = Counter()
    turns = []
    for r in ranked:
        turns.append(seen[r["clip_id"]])
        seen[r["clip_id"]] += 1
    return [r for _, r in sorted(zip(turns, ranked, strict=True), key=lambda tr: tr[0])]


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
    checks = [f.check for f in rejected_by(reason)]
    if checks and all(c in CHECKS for c in checks):
        return f"hard check failed: {', '.join(checks)}"
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


def rejects_by_check(rows: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per check a reject reason names: the limits it names and the pairs per difficulty.

    A pair that failed several checks counts under each of them. Hard checks come first,
    in the gate's order, then ``quality``, then anything else a reason starts with.
    """
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["passed"]:
            continue
        for failure in rejected_by(r["reject_reason"]) or [Failure("unknown", "")]:
            entry = out.setdefault(
                failure.check, {"limits": set(), "pairs": Counter({d: 0 for d in DIFFICULTIES})}
            )
            entry["pairs"][r["difficulty"]] += 1
            if failure.limit:
                entry["limits"].add(failure.limit)
    order = {name: i for i, name in enumerate((*CHECKS, QUALITY))}
    return dict(sorted(out.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


# -- rendering ------------------------------------------------------------------------------
def render_html(data: ReportData) -> str:
    """The whole page; every image a data: URI, no script, nothing fetched."""
    from pvtt.tools import report_plots as plots  # matplotlib only when a page is drawn

    sections = [
        ("summary", "Summary", _summary(data)),
        ("funnel", "Survival funnel", _funnel(data)),
        ("counts", "Pairs by difficulty and category", _counts(data, plots)),
        ("scores", "Quality score by difficulty", _scores(data, plots)),
        ("scorers", "Scores per scorer", _scorers(data, plots)),
        ("pass-rate", "Pass rate against the threshold", _pass_rate(data, plots)),
        ("rejects", "Rejects by reason", _rejects(data, plots)),
        *([("truth", "Gate against ground truth", _truth(data))] if data.truth else []),
        *(
            [("calibration", "Gate against human labels", data.calibration)]
            if data.calibration
            else []
        ),
        ("time", "Time per stage", _time(data, plots)),
        ("storage", "Storage per table", _storage(data, plots)),
        ("gallery", "Best passed and rejected pairs per difficulty", _gallery(data)),
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
.column{display:flex;flex-direction:column;align-items:flex-start;gap:10px;flex:1 1 0;
 min-width:max-content}
h4{margin:.2em 0}
figure{margin:0;border:1px solid #ddd;border-radius:4px;padding:6px;background:#fafafa}
figure img{display:block}figcaption{font-size:12px;line-height:1.35;margin-top:4px}
.pass{color:#1e7a3f;font-weight:600}.fail{color:#b3261e;font-weight:600}
.why{display:inline-block;background:#fdecea;border-left:3px solid #b3261e;padding:1px 6px;
 margin:2px 0}.check{color:#b3261e}
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


FUNNEL_REASONS = 3
"""Reasons shown per funnel stage (the most frequent); the rest are summed."""


def _funnel_reasons(reasons: dict[str, int]) -> str:
    ranked = sorted(reasons.items(), key=lambda kv: -kv[1])
    shown = [f"{reason} ({n})" for reason, n in ranked[:FUNNEL_REASONS]]
    rest = sum(n for _, n in ranked[FUNNEL_REASONS:])
    return "; ".join(shown + ([f"{rest} more"] if rest else [])) or "-"


def _funnel(data: ReportData) -> str:
    funnel = (data.build or {}).get("funnel")
    if not funnel:
        return _note("no funnel in the build statistics (built by an older pvtt, or without them)")
    rows = []
    for row in funnel["stages"]:
        lost = row.get("pairs_lost")
        reasons = _funnel_reasons(row["reasons"])
        if lost:
            reasons += f"; their pairs: {lost}"
        per_pair = row["gpu_s_per_kept_pair"]
        rows.append(
            (
                row["stage"],
                row["unit"],
                row["in"],
                row["out"],
                "-" if "->" in row["unit"] else _pct(row["out"], row["in"]),
                reasons,
                f"{row['seconds']:.2f}",
                "-" if per_pair is None else f"{per_pair:.3f}",
            )
        )
    header = ("stage", "unit", "in", "out", "kept", "lost: top reasons", "seconds",
              "GPU-s / kept pair")  # fmt: skip
    per_pair = funnel["gpu_s_per_kept_pair"]
    total = (
        "total", "", "", funnel["kept_pairs"], "", "kept pairs (passed, written)",
        f"{sum(r['seconds'] for r in funnel['stages']):.2f}",
        "-" if per_pair is None else f"{per_pair:.3f}",
    )  # fmt: skip
    other = ", ".join(f"{k} {v:.2f} s" for k, v in funnel.get("other_seconds", {}).items())
    text = (
        "<p>Items in and out of every stage, in pipeline order, and why the others were "
        "lost. Where a stage's items are the next one's, its out is the next one's in. "
        "GPU-seconds count the model stages of a CUDA build"
        + ("" if funnel["on_gpu"] else " (this build ran on the CPU: none)")
        + (f"; seconds shared by several stages: {_e(other)}" if other else "")
        + ".</p>"
    )
    return "\n".join([text, _table(header, rows, "funnel-table", total=total, text_columns=2)])


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
    by_check = rejects_by_check(data.rows)
    if by_check:
        failed = sum(1 for r in data.rows if not r["passed"])
        table = [
            (
                check,
                ", ".join(sorted(entry["limits"])) or "-",
                *(entry["pairs"][d] for d in DIFFICULTIES),
                sum(entry["pairs"].values()),
                _pct(sum(entry["pairs"].values()), failed),
            )
            for check, entry in by_check.items()
        ]
        out += [
            "<h3>Rejected pairs by check</h3>",
            "<p>The checks the rejected pairs' reasons name, each with the limit it "
            "fails beyond (<code>&gt;</code>: fails above it, <code>&lt;</code>: below it); "
            "<code>quality</code> is the weighted score under the threshold. A pair that "
            f"failed several checks counts under each; {failed} pairs were rejected.</p>",
            _table(
                ("check", "fails", *DIFFICULTIES, "pairs", "of rejected"),
                table,
                "rejects-by-check",
                text_columns=2,
            ),
        ]
    return "\n".join(out)


def _fraction(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _truth(data: ReportData) -> str:
    assert data.truth is not None
    payload = data.truth
    parts = [
        "<p>The fidelity benchmark builds synthetic pairs whose true masks, clean plate and "
        "cut-out are known, labels each pair <b>defective</b> (a stage's output is measurably "
        "wrong against the truth) or <b>good</b>, and compares the gate's verdict "
        "(<code>passed</code>) with that label. Its figures are about the benchmark's cases, "
        "not this dataset's pairs: they say how far this dataset's <code>passed</code> column "
        f"can be trusted. From <code>{_e(data.truth_source)}</code> "
        f"(<code>{_e(TRUTH_COMMAND)}</code>).</p>"
    ]
    differ = _backend_differences(payload.get("backends"), data.manifest.backends)
    if differ:
        parts.append(
            _note(
                "the benchmark ran other backends than this build, so its figures may not hold "
                "here: " + "; ".join(differ)
            )
        )
    for split, part in payload["summary"].items():
        parts += [
            f'<h3 id="truth-{_e(split)}">{_e(split)} split</h3>',
            *_truth_split(split, part, [c for c in payload["cases"] if c["split"] == split]),
        ]
    return "\n".join(parts)


def _backend_differences(bench: Any, build: dict[str, Any]) -> list[str]:
    """``kind: bench backend vN, build backend vM`` where the two differ."""

    def name(info: Any) -> str:
        if not isinstance(info, dict):
            return "none"
        return f"{info.get('backend', '?')} v{info.get('version', '?')}"

    if not isinstance(bench, dict):
        return []
    return [
        f"{kind}: benchmark {name(bench.get(kind))}, build {name(build.get(kind))}"
        for kind in sorted(set(bench) | set(build))
        if name(bench.get(kind)) != name(build.get(kind))
    ]


def _truth_split(split: str, part: dict[str, Any], cases: list[dict[str, Any]]) -> list[str]:
    gate = part["gate"]
    caught = round((gate["recall"] or 0.0) * gate["defective"])
    kept = round((gate["good_kept"] or 0.0) * gate["good"])
    missed, wrong = gate["defective"] - caught, gate["rejected"] - caught
    figures = [
        ("precision", _fraction(gate["precision"]), "of the rejected pairs, the share defective"),
        ("recall", _fraction(gate["recall"]), "of the defective pairs, the share rejected"),
        ("good kept", _fraction(gate["good_kept"]), "of the good pairs, the share passed"),
        (
            "goal met",
            "yes" if gate["met"] else "no",
            "the benchmark's bar for recall and good kept",
        ),
    ]
    confusion = [
        ("defective", caught, missed, gate["defective"]),
        ("good", wrong, kept, gate["good"]),
    ]
    by_check = [
        (
            check,
            c["rejected"],
            c["defective"],
            c["rejected"] - c["defective"],
            _fraction(c["defective"] / c["rejected"] if c["rejected"] else None),
        )
        for check, c in gate["by_check"].items()
    ]
    goals = [
        (
            g["goal"],
            f">= {g['target']:.0%}",
            f"{g['share']:.0%} ({g['hits']}/{g['cases']})",
            "yes" if g["met"] else "no",
        )
        for g in part["goals"]
    ]
    tid = f"truth-{split}"
    out = [
        f"<p>{gate['pairs']} pairs made ({gate['defective']} defective, {gate['good']} good), "
        f"{gate['rejected']} rejected by the gate"
        + (
            f"; {gate['lost']} case{'' if gate['lost'] == 1 else 's'} made no pair "
            "(a stage rejected the clip or photo)"
            if gate["lost"]
            else ""
        )
        + ".</p>",
        _table(("figure", "value", "meaning"), figures, f"{tid}-gate", text_columns=3),
        _table(
            ("truth \\ gate", "rejected", "passed", "pairs"),
            confusion,
            f"{tid}-confusion",
            ("all", gate["rejected"], gate["pairs"] - gate["rejected"], gate["pairs"]),
        ),
        "<p>Per check, the pairs whose reject reason names it (a pair can name several; "
        "<code>quality</code>: the weighted score alone rejected it) and how many of those "
        "were defective.</p>",
        _table(("check", "rejected", "defective", "good", "precision"), by_check, f"{tid}-checks"),
        _table(("goal", "target", "measured", "met"), goals, f"{tid}-goals", text_columns=2),
    ]
    wrongly = [
        c for c in cases if c["lost"] is None and bool(c["defective"]) == bool(c.get("passed"))
    ]
    if wrongly:
        rows = [
            (
                c["case"],
                c["family"],
                "defective: " + "; ".join(c["reasons"]) if c["defective"] else "good",
                "passed" if c.get("passed") else f"rejected: {c.get('reject_reason') or '?'}",
            )
            for c in wrongly
        ]
        out += [
            f"<details><summary>{len(wrongly)} case{'' if len(wrongly) == 1 else 's'} the gate "
            "judged wrong</summary>",
            _table(("case", "family", "truth", "gate"), rows, f"{tid}-wrong", text_columns=4),
            "</details>",
        ]
    return out


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
    failures = rejected_by(r["reject_reason"]) if not r["passed"] else []
    failed = {f.check for f in failures}
    verdict = (
        '<span class="pass">passed</span>' if r["passed"] else '<span class="fail">rejected</span>'
    )
    scores = " · ".join(
        f"{s} {_num(r[f'score_{s}'], 2)}" for s in SCORERS if r[f"score_{s}"] is not None
    )
    checks = " · ".join(
        f'<span class="fail">{c} {_num(r[f"score_{c}"], 2)}</span>'
        if c in failed
        else f"{c} {_num(r[f'score_{c}'], 2)}"
        for c in CHECKS
        if r.get(f"score_{c}") is not None
    )
    if thumb.image is not None:
        media = f'<img src="{_data_uri(thumb.image, "image/webp")}" alt="{_e(r["pair_id"])}">'
    else:
        media = _note(thumb.error or "no thumbnail")
    lines = [
        f"<code>{_e(r['pair_id'])}</code>",
        f"{_e(r['source_category'])}/{_e(r['source_subcategory'])} → "
        f"{_e(r['target_category'])}/{_e(r['target_subcategory'])}",
        f"quality <b>{_num(r['quality_score'], 2)}</b> {verdict}",
    ]
    if failures:
        named = "; ".join(f'<b class="check">{_e(f.check)}</b> {_e(f.detail)}' for f in failures)
        lines.append(f'<span class="why">rejected by {named}</span>')
    elif not r["passed"]:
        lines.append('<span class="why">rejected, no reason recorded</span>')
    lines.append(_e(scores))
    if checks:
        lines.append(f"checks: {checks}")
    return f"<figure>{media}<figcaption>{'<br>'.join(lines)}</figcaption></figure>"


def _gallery(data: ReportData) -> str:
    if not data.gallery:
        return _note("no pairs to show")
    parts = [
        "<p>Each thumbnail loops a few frames spread over the clip: the source clip, the "
        "synthesized clip and the target product's cut-out. <b>Best</b>: the passed pairs "
        "with the highest quality score. <b>Rejected</b>: pairs the gate threw out, taken in "
        "turn from each check that rejected some, the one furthest past its limit first; "
        "each names the check(s) that rejected it, value against limit "
        '(counts in <a href="#rejects-by-check">rejected pairs by check</a>).</p>'
    ]
    if data.manifest.config.get("quality", {}).get("drop_rejected"):
        parts.append(_note("the build dropped rejected pairs: there are none to show"))
    for diff in DIFFICULTIES:
        if diff not in data.gallery:
            continue
        columns = []
        for name, empty, thumbs in zip(
            ("best", "rejected"),
            ("no passed pair", "no rejected pair"),
            data.gallery[diff],
            strict=True,
        ):
            cards = "".join(_card(t) for t in thumbs) or f"<p>{empty}</p>"
            columns.append(f'<div class="column"><h4>{name} {len(thumbs)}</h4>{cards}</div>')
        parts.append(f'<h3 id="gallery-{diff}">{diff}</h3>')
        parts.append('<div class="gallery">' + "".join(columns) + "</div>")
    return "\n".join(parts)
