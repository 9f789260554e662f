"""Score a built dataset's pairs again, and publish the new scores as a new version.

``pvtt rescore`` runs the config's scorer (a new one too: a VLM judge added after the
build fills ``score_overall``) on every stored pair and judges it again with the
builder's own gate (:func:`pvtt.builder.stages.quality.judge`). The scorer sees the
pair's stored media, decoded: the synthesized clip as training reads it (the encoded
mp4, not the build's raw frames), the clip's background and the target cut-out. The
hard checks (``score_removal`` ... ``score_cutout``) measure media that a rescore does
not change, so their stored values are judged again, not recomputed.

The scores, ``quality_score``, ``passed``, ``reject_reason`` and the ``backends``
provenance become one column-only Lance update (no media file is rewritten) and new
shard index files whose overlay carries the same values for tar readers
(:func:`pvtt.tools.dataset_edit.replace_pair_columns`); the manifest is rewritten last,
so a crash at any point leaves the previous dataset as it was.

Scoring is the slow part, so it is checkpointed: each pair's scores are appended to a
progress file under ``OUT/report/`` named after the pairs version and the scorer's
config, and a re-run after a crash scores only the pairs it lacks.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from pvtt.builder.registry import create_backend
from pvtt.builder.stages.checks import CHECK_NAMES, DEFAULT_LIMITS
from pvtt.builder.stages.protocols import SCORE_NAMES, Scorer, ScoringInput, StageRejected
from pvtt.builder.stages.quality import judge
from pvtt.loaders.decode import decode_image, decode_video
from pvtt.loaders.pair_media import LancePairMedia
from pvtt.loaders.query import PairFilter, select_pairs
from pvtt.loaders.store import BuiltDataset, open_dataset
from pvtt.schemas.config import BuildConfig, ConfigError
from pvtt.schemas.manifest import Manifest, ManifestError, TableInfo
from pvtt.tools.dataset_edit import local_root, replace_pair_columns

SCORE_COLUMNS = tuple(f"score_{n}" for n in SCORE_NAMES)
"""The columns a scorer fills (the hard checks' ``score_*`` columns are not rescored)."""
UPDATED_COLUMNS = (*SCORE_COLUMNS, "quality_score", "passed", "reject_reason", "backends")
_READ_COLUMNS = (
    "pair_id",
    "clip_id",
    "target_id",
    "fps",
    "target_boxes",
    "backends",
    "passed",
    "quality_score",
    *SCORE_COLUMNS,
    *(f"score_{n}" for n in CHECK_NAMES),
)
PROGRESS_DIR = "report"
UPDATE_SCHEMA = pa.schema(
    [
        pa.field("pair_id", pa.string()),
        *(pa.field(c, pa.float32()) for c in SCORE_COLUMNS),
        pa.field("quality_score", pa.float32()),
        pa.field("passed", pa.bool_()),
        pa.field("reject_reason", pa.string()),
        pa.field("backends", pa.string()),
    ]
)


@dataclass
class RescoreResult:
    """What a rescore did (or, with ``dry_run``, would do)."""

    pairs: int
    scored: int
    """Pairs scored in this run (the rest came from a killed run's progress file)."""
    to_pass: int
    """Rejected pairs that pass now."""
    to_fail: int
    """Passed pairs that are rejected now."""
    passed: int
    changed_scores: int
    """Pairs with at least one score column changed."""
    info: TableInfo | None
    """The published pairs version; None on a dry run."""
    seconds: float

    def summary(self) -> str:
        where = (
            "dry run: nothing written"
            if self.info is None
            else f"pairs table version {self.info.version}"
        )
        return (
            f"{self.pairs} pairs rescored ({self.scored} scored now): {self.passed} pass, "
            f"{self.to_pass} newly pass, {self.to_fail} newly rejected, "
            f"{self.changed_scores} with changed scores; {where}; {self.seconds:.1f} s"
        )


def dataset_config(manifest: Manifest) -> BuildConfig:
    """The build config the dataset was built with (its manifest's copy)."""
    try:
        return BuildConfig.from_dict(dict(manifest.config), "manifest.json config").validate()
    except ConfigError as exc:
        raise ConfigError(f"{exc}; give the config with --config") from None


def rescore(
    out: str | os.PathLike[str],
    config: BuildConfig | None = None,
    *,
    scorer: Scorer | None = None,
    device: str | None = None,
    dry_run: bool = False,
    progress: bool = True,
) -> RescoreResult:
    """Score every pair of ``out`` with ``config``'s scorer (or ``scorer``) and judge it
    with ``config``'s quality gate; publish the result unless ``dry_run``.

    ``config`` defaults to the dataset's own build config, ``device`` to its device.
    ``scorer``, when given, replaces the config's (a backend object, e.g. one a test or
    a notebook built).
    """
    started = time.perf_counter()
    root = local_root(out)
    dataset = open_dataset(root)
    if not dataset.has_lance:
        raise ManifestError(
            f"{root}: rescore needs the Lance tables (the tar shards of a tar-only build hold "
            "no background video unless built with output.tar_background)"
        )
    config = config or dataset_config(dataset.manifest)
    if device is not None:
        config.device = device
    if scorer is None:
        scorer = create_backend("scorer", config.scorer, config.device)
    info = scorer.info.as_dict()
    rows = select_pairs(dataset, PairFilter.make(passed=None), columns=list(_READ_COLUMNS))
    rows = sorted(rows.to_pylist(), key=lambda r: (r["clip_id"], r["pair_id"]))
    checkpoint = _Progress(root, dataset, info)
    done = checkpoint.load()
    scored = 0
    bar = tqdm(total=len(rows), desc="rescore", unit="pair", disable=not progress)
    bar.update(sum(1 for r in rows if r["pair_id"] in done))
    with checkpoint:
        workers = config.workers or min(8, os.cpu_count() or 1)
        for row, result in _score_missing(dataset, rows, done, scorer, workers):
            checkpoint.add(row["pair_id"], result)
            done[row["pair_id"]] = result
            scored += 1
            bar.update()
    bar.close()
    updates, stats = _updates(rows, done, config, info)
    result = RescoreResult(
        pairs=len(rows),
        scored=scored,
        info=None,
        seconds=0.0,
        **stats,
    )
    if not dry_run:
        result.info = replace_pair_columns(
            root, updates, lambda m: _edit_manifest(m, config, info, stats["passed"])
        )
        checkpoint.remove()
    result.seconds = time.perf_counter() - started
    return result


def _score_missing(
    dataset: BuiltDataset,
    rows: list[dict[str, Any]],
    done: dict[str, Any],
    scorer: Scorer,
    workers: int,
) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Each row not in ``done``, in order, with its scores (or why the scorer refused it).

    Lance is read here, in order (each clip's background once); decoding and scoring,
    which release the GIL (PyAV, OpenCV) and take nearly all the time, run on
    ``workers`` threads, as the build's pair stage does, a bounded window ahead.
    """
    media = LancePairMedia(dataset)
    backgrounds: dict[str, Future[np.ndarray]] = {}
    window: deque[tuple[dict[str, Any], Future[dict[str, Any]]]] = deque()
    with ThreadPoolExecutor(workers, thread_name_prefix="pvtt-rescore") as pool:
        for row in rows:
            if row["pair_id"] in done:
                continue
            clip = row["clip_id"]
            if clip not in backgrounds:
                backgrounds.clear()  # rows come clip by clip: earlier clips are done with
                data = media.background(row)
                if data is None:
                    raise ManifestError(f"{dataset.root}: clip {clip} has no background")
                backgrounds[clip] = pool.submit(decode_video, data, what=f"{clip} background")
            job = (media.synth(row), media.target_rgba(row), backgrounds[clip])
            window.append((row, pool.submit(_score_one, scorer, row, *job)))
            while len(window) > 2 * workers:
                done_row, future = window.popleft()
                yield done_row, future.result()
        while window:
            done_row, future = window.popleft()
            yield done_row, future.result()


def _score_one(
    scorer: Scorer, row: dict[str, Any], synth: bytes, rgba: bytes, background: Future[np.ndarray]
) -> dict[str, Any]:
    """One pair's scores from its stored media (decoded here, on a worker thread)."""
    what = row["pair_id"]
    sample = ScoringInput(
        synth=decode_video(synth, what=f"{what} synth_video"),
        background=background.result(),
        cutout=decode_image(rgba, mode="RGBA", what=f"{what} cut-out"),
        boxes=np.asarray(row["target_boxes"], dtype=np.float64).reshape(-1, 4),
        fps=float(row["fps"]),
    )
    try:
        scores = scorer.score(sample)
    except StageRejected as exc:
        return {"rejected": exc.reason}
    return {"scores": {n: _plain(scores.get(n)) for n in SCORE_NAMES}}


def _plain(value: float | None) -> float | None:
    """A score as a JSON number (backends may return numpy scalars)."""
    return None if value is None else float(value)


def _updates(
    rows: list[dict[str, Any]],
    results: dict[str, dict[str, Any]],
    config: BuildConfig,
    scorer_info: dict[str, Any],
) -> tuple[pa.Table, dict[str, int]]:
    """The update table (one row per pair, :data:`UPDATE_SCHEMA`) and what it changes."""
    out: dict[str, list[Any]] = {f.name: [] for f in UPDATE_SCHEMA}
    to_pass = to_fail = passed = changed = 0
    for row in rows:
        result = results[row["pair_id"]]
        scores = result.get("scores") or dict.fromkeys(SCORE_NAMES)
        checks = {n: row[f"score_{n}"] for n in CHECK_NAMES}
        if "rejected" in result:
            quality, ok, reason = None, False, f"scorer: {result['rejected']}"
        else:
            try:
                verdict = judge(
                    scores, config.quality.threshold, config.quality.weights, checks, DEFAULT_LIMITS
                )
                quality, ok, reason = verdict.quality_score, verdict.passed, verdict.reject_reason
            except ValueError as exc:  # no weighted score ran: nothing for the gate to pass
                quality, ok, reason = None, False, str(exc)
        out["pair_id"].append(row["pair_id"])
        for name in SCORE_NAMES:
            out[f"score_{name}"].append(scores.get(name))
        out["quality_score"].append(quality)
        out["passed"].append(ok)
        out["reject_reason"].append(reason)
        out["backends"].append(_with_scorer(row["backends"], scorer_info))
        to_pass += ok and not row["passed"]
        to_fail += row["passed"] and not ok
        passed += ok
        changed += any(not _same(row[f"score_{n}"], scores.get(n)) for n in SCORE_NAMES)
    stats = {"to_pass": to_pass, "to_fail": to_fail, "passed": passed, "changed_scores": changed}
    return pa.table(out, schema=UPDATE_SCHEMA), stats


def _same(old: float | None, new: float | None) -> bool:
    """Equal as stored (float32), null only equal to null."""
    if old is None or new is None:
        return old is None and new is None
    return bool(np.float32(old) == np.float32(new)) or (math.isnan(old) and math.isnan(new))


def _with_scorer(backends: str | None, info: dict[str, Any]) -> str:
    """The pair's ``backends`` JSON with the scorer that made its scores now."""
    try:
        data = json.loads(backends) if backends else {}
    except json.JSONDecodeError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    data["scorer"] = info
    return json.dumps(data, sort_keys=True)


def _edit_manifest(
    manifest: Manifest, config: BuildConfig, scorer_info: dict[str, Any], passed: int
) -> None:
    """The manifest names the scorer and gate the stored verdicts come from."""
    data = config.to_dict()
    manifest.config = {**manifest.config, "scorer": data["scorer"], "quality": data["quality"]}
    manifest.backends = {**manifest.backends, "scorer": scorer_info}
    if "passed" in manifest.counts:
        manifest.counts["passed"] = passed


class _Progress:
    """Scores of a rescore in progress, one JSON line a pair, kept across a crash.

    The file is named after the pairs version scored and the scorer's identity, so a
    re-run with another scorer, or after the dataset changed, starts afresh.
    """

    def __init__(self, root: Path, dataset: BuiltDataset, scorer_info: dict[str, Any]) -> None:
        pairs = dataset.manifest.tables["pairs"]
        key = json.dumps([dataset.manifest.build_id, pairs.version, scorer_info], sort_keys=True)
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        self.path = root / PROGRESS_DIR / f"rescore-{digest}.jsonl"
        self._fh: Any = None

    def load(self) -> dict[str, dict[str, Any]]:
        """The results a killed run saved (a torn last line is scored again)."""
        done: dict[str, dict[str, Any]] = {}
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return done
        for line in lines:
            try:
                item = json.loads(line)
                done[item["pair_id"]] = item["result"]
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
        return done

    def __enter__(self) -> _Progress:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in __exit__
        return self

    def add(self, pair_id: str, result: dict[str, Any]) -> None:
        self._fh.write(json.dumps({"pair_id": pair_id, "result": result}) + "\n")
        self._fh.flush()

    def __exit__(self, *exc: object) -> None:
        self._fh.close()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
