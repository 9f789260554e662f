"""Rehearse the whole job on a catalog shaped like the seed's, and see how it grows.

Run ``python -m pvtt.tools.bench.rehearsal [--products 10] [--sizes 1,2,4] [--json FILE]
[--markdown FILE]``. For each size (a multiple of ``--products``) it writes a rehearsal
catalog (:mod:`pvtt.builder.rehearsal_catalog`: Etsy-style long ids, 11 categories,
3-8 photos a product, 3-5 shots of 3-10 s at 720p a video) and runs every step a user
would, each as its own process, exactly as typed on a command line:

``catalog`` (write it), ``check`` (``pvtt catalog check``), ``build`` (``pvtt build
--rank R --world-size 2`` for R = 0 and 1 at once), ``merge``, ``verify``, ``stats``,
``query`` (hard and expert pairs scoring at least 0.5), ``stream`` (``PairDataset`` +
``DataLoader`` with 2 workers over every pair), ``export-pairs`` and ``report``.

Each step's wall time, CPU time and peak resident memory come from ``os.wait4`` on its
process (the peak of its largest process, DataLoader workers included); the build's
own stage seconds come from each rank's ``report/r00R/statistics.json``, summed over
the ranks. The rehearsal fails on the first step that fails, and checks that the
pairs counted, streamed and exported agree.

The growth table divides each figure at the largest size by its figure at the
smallest, beside the growth of the work it scales with (video frames for the clip
stages, photos for matting, pairs for the rest): a time that grows faster than its
work is marked. Pairs grow linearly with the catalog because the build is capped at
``--pairs-per-clip`` pairs per shot (``--limit-pairs``), not all clip x photo pairs,
which would grow with the square of the catalog.

``--scale`` shrinks frames and photos (the test suite rehearses a tiny catalog at
``scale=0.25``); the PoC size is the default, 10 products and about 40 clips.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from pvtt.builder.rehearsal_catalog import make_rehearsal_catalog, plan_rehearsal_catalog

WORLD_SIZE = 2
STAGE_WORK = {
    "shots": "frames", "cut": "clip_frames", "decode": "clip_frames", "detect": "clips_built",
    "segment": "clip_frames", "inpaint": "clip_frames", "clip-check": "clip_frames",
    "matte": "products",
}
"""The work each build stage scales with; stages not named here scale with pairs. Every rank
detects the shots of every video (``frames``: all the catalog's video frames); the clip
stages see only the frames of the shots the filter kept (``clip_frames``, counted by the
build); matting sees the photos the pair strategy picks (two a product by default)."""
STEP_WORK = {"catalog": "frames", "check": "frames", "build": "frames"}
"""The same for whole steps; the steps after the build read pairs."""
SUPERLINEAR = 1.25
"""A time growing by more than this many times its work's growth is marked."""


class RehearsalError(RuntimeError):
    """A step of the rehearsal failed or its outputs disagree."""


@dataclass(frozen=True)
class Size:
    """One rehearsal's catalog and build settings."""

    products: int = 10
    scale: float = 1.0
    fps: float = 24.0
    shots: tuple[int, int] = (3, 5)
    shot_seconds: tuple[float, float] = (3.0, 10.0)
    photos: tuple[int, int] = (3, 8)
    pairs_per_clip: int = 2
    formats: str = "lance,tar"
    workers: int = 1
    """Pair threads per rank: two ranks on two cores already fill them."""
    frames_streamed: int = 8
    seed: int = 0


TINY = Size(products=3, scale=0.25, shots=(2, 2), shot_seconds=(2.2, 2.5), photos=(3, 3),
            pairs_per_clip=1, frames_streamed=4)
"""The smallest rehearsal that still has multi-shot videos the shot filter keeps (>= 2 s,
>= 50 frames), three products (medium and expert pairs) and two ranks: the test suite's."""


@dataclass
class Step:
    """One process the rehearsal ran: what, how long, how much memory."""

    name: str
    argv: list[str]
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    returncode: int
    load: float | None
    """The machine's 1-minute load average when the step ended (None: not recorded): the
    machine is shared, and wall and stage seconds stretch with it, CPU seconds much less."""
    output: str = field(repr=False)
    """What it printed on standard output (standard error goes to its log only)."""


@dataclass
class Rehearsal:
    """Everything one size's rehearsal measured."""

    size: Size
    work: dict[str, int]
    """The catalog's products, clips (its shots), frames (of its videos) and images (photos);
    the build's clips_built, clip_frames (frames of the clips it made) and pairs."""
    steps: dict[str, list[Step]]
    stages_s: dict[str, float]
    streamed: int
    exported: int
    queried: int

    def step_wall(self, name: str) -> float:
        return max(s.wall_s for s in self.steps[name])

    def step_cpu(self, name: str) -> float:
        return sum(s.cpu_s for s in self.steps[name])

    def step_peak(self, name: str) -> float:
        return max(s.peak_rss_mb for s in self.steps[name])


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "pvtt.tools.cli", *args]


def _start(argv: list[str], log: Path) -> tuple[subprocess.Popen, float]:
    with open(log.with_suffix(".out"), "wb") as out, open(log.with_suffix(".err"), "wb") as err:
        return subprocess.Popen(argv, stdout=out, stderr=err), time.perf_counter()


def _finish(name: str, argv: list[str], started: tuple[subprocess.Popen, float], log: Path) -> Step:
    """Wait for one process with ``wait4``, which gives its own rusage (not a running max)."""
    proc, t0 = started
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    output = log.with_suffix(".out").read_text(encoding="utf-8", errors="replace")
    # ru_maxrss is in KiB on Linux: the largest of the process and its waited-for children
    return Step(name, argv, round(wall, 3), round(usage.ru_utime + usage.ru_stime, 3),
                round(usage.ru_maxrss / 1024, 1), proc.returncode, round(os.getloadavg()[0], 2), output)


def run_steps(name: str, argvs: Sequence[list[str]], logs: Path) -> list[Step]:
    """Run ``argvs`` at once (one process each) and measure each; raise if any failed."""
    logs.mkdir(parents=True, exist_ok=True)
    paths = [logs / f"{name}-{i}" for i in range(len(argvs))]
    started = [_start(argv, path) for argv, path in zip(argvs, paths, strict=True)]
    steps = [_finish(name, argv, s, p) for argv, s, p in zip(argvs, started, paths, strict=True)]
    for step, path in zip(steps, paths, strict=True):
        if step.returncode != 0:
            errors = path.with_suffix(".err").read_text(encoding="utf-8", errors="replace")
            raise RehearsalError(
                f"step {name} failed with exit code {step.returncode}: {' '.join(step.argv)}\n"
                f"(logs: {path}.out, {path}.err)\n{step.output[-1500:]}{errors[-3000:]}"
            )
    return steps


def rank_statistics(out: Path) -> tuple[dict[str, float], dict[str, int]]:
    """Stage seconds and counts of every rank's ``statistics.json``, summed over the ranks."""
    seconds: dict[str, float] = {}
    counts: dict[str, int] = {}
    for rank in range(WORLD_SIZE):
        path = out / "report" / f"r{rank:03d}" / "statistics.json"
        try:
            stats = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RehearsalError(f"{path}: cannot read the rank's statistics: {exc}") from exc
        for stage, value in stats["time_per_stage_s"].items():
            seconds[stage] = round(seconds.get(stage, 0.0) + float(value), 3)
        for name, value in stats["counts"].items():
            counts[name] = counts.get(name, 0) + int(value)
    return dict(sorted(seconds.items())), counts


def _json(step: Step) -> Any:
    try:
        return json.loads(step.output)
    except ValueError as exc:
        raise RehearsalError(f"step {step.name} did not print JSON: {step.output[-500:]!r}") from exc


def rehearse(work: str | os.PathLike, size: Size) -> Rehearsal:
    """Write a catalog of ``size`` into ``work`` and run every step on it; the figures."""
    work = Path(work)
    catalog, out, logs = work / "catalog", work / "out", work / "logs"
    plan = plan_rehearsal_catalog(
        size.products, seed=size.seed, fps=size.fps, shots=size.shots,
        shot_seconds=size.shot_seconds, photos=size.photos,
    )
    shots = sum(len(p.shots) for p in plan)
    steps: dict[str, list[Step]] = {}
    me = [sys.executable, "-m", "pvtt.tools.bench.rehearsal"]
    steps["catalog"] = run_steps("catalog", [[*me, "--step", "catalog", str(catalog), "--size", json.dumps(asdict(size))]], logs)
    steps["check"] = run_steps("check", [_cli("catalog", "check", str(catalog))], logs)
    build = [
        _cli("build", str(catalog), str(out), "--rank", str(rank), "--world-size", str(WORLD_SIZE),
             "--formats", size.formats, "--limit-pairs", str(size.pairs_per_clip * shots),
             "--workers", str(size.workers), "--no-progress")
        for rank in range(WORLD_SIZE)
    ]
    steps["build"] = run_steps("build", build, logs)
    steps["merge"] = run_steps("merge", [_cli("merge", str(out))], logs)
    steps["verify"] = run_steps("verify", [_cli("verify", str(out))], logs)
    steps["stats"] = run_steps("stats", [_cli("stats", str(out), "--json")], logs)
    pairs = int(_json(steps["stats"][0])["pairs"])
    steps["query"] = run_steps("query", [_cli(
        "query", str(out), "--difficulty", "hard,expert", "--min-score", "0.5", "--all",
        "--columns", "pair_id,difficulty,quality_score", "--format", "json",
    )], logs)
    queried = len(_json(steps["query"][0]))
    height = max(2, round(720 * size.scale / 4) * 2)
    steps["stream"] = run_steps("stream", [[*me, "--step", "stream", str(out), "--size", json.dumps(asdict(size)),
                                            "--height", str(height)]], logs)
    streamed = int(_json(steps["stream"][0])["samples"])
    export = work / "export"
    steps["export-pairs"] = run_steps("export-pairs", [_cli("export-pairs", str(out), str(export), "--all")], logs)
    exported = int(json.loads((export / "annotations" / "pairs.json").read_text(encoding="utf-8"))["total_pairs"])
    steps["report"] = run_steps("report", [_cli("report", str(out), "-o", str(work / "report.html"))], logs)
    if not pairs or streamed != pairs or exported != pairs:
        raise RehearsalError(
            f"{out}: {pairs} pairs in the dataset, {streamed} streamed, {exported} exported: "
            "every pair must be built, streamed and exported once"
        )
    seconds, built = rank_statistics(out)
    counts = {
        "products": len(plan), "clips": shots, "frames": sum(s.frames for p in plan for s in p.shots),
        "images": sum(len(p.photos) for p in plan), "clips_built": built.get("clips.ok", 0),
        "clip_frames": built.get("frames.clips", 0), "pairs": pairs,
    }
    return Rehearsal(size, counts, steps, seconds, streamed, exported, queried)


def stream(out: Path, size: Size, height: int) -> dict[str, int]:
    """Every pair of ``out`` through ``PairDataset`` and a 2-worker ``DataLoader``, as a trainer would."""
    from torch.utils.data import DataLoader

    from pvtt.loaders import PairDataset

    width = height * 16 // 9 // 2 * 2
    ds = PairDataset(
        out, passed=None, fields=("synth_video", "source_video", "masks", "target_image", "meta"),
        num_frames=size.frames_streamed, size=(height, width), shuffle=True, seed=size.seed, batch_size=4,
    )
    loader = DataLoader(ds, batch_size=4, num_workers=2, multiprocessing_context="spawn")
    samples = batches = frames = 0
    for batch in loader:
        batches += 1
        samples += len(batch["meta"]["pair_id"])
        frames += int(batch["synth_video"].shape[0] * batch["synth_video"].shape[1])
    return {"samples": samples, "batches": batches, "frames": frames}


def _ratio(new: float, old: float) -> float | None:
    return round(new / old, 2) if old > 0 else None


def growth(runs: Sequence[Rehearsal]) -> dict[str, Any]:
    """Each step's and stage's figure at the largest size over the smallest, beside its work's."""
    first, last = runs[0], runs[-1]
    work = {k: _ratio(last.work[k], first.work[k]) for k in first.work}

    def row(name: str, unit: str, old: float, new: float) -> dict[str, Any]:
        time_growth, work_growth = _ratio(new, old), work[unit]
        per_unit = _ratio(time_growth or 0.0, work_growth or 0.0) if time_growth and work_growth else None
        return {"name": name, "unit": unit, "growth": time_growth, "work_growth": work_growth,
                "per_unit": per_unit, "superlinear": bool(per_unit and per_unit > SUPERLINEAR)}

    steps = [
        {**row(name, STEP_WORK.get(name, "pairs"), first.step_cpu(name), last.step_cpu(name)),
         "wall_growth": _ratio(last.step_wall(name), first.step_wall(name)),
         "peak_growth": _ratio(last.step_peak(name), first.step_peak(name))}
        for name in first.steps
    ]
    stages = [
        row(stage, STAGE_WORK.get(stage, "pairs"), first.stages_s.get(stage, 0.0), last.stages_s.get(stage, 0.0))
        for stage in first.stages_s
    ]
    return {"work": work, "steps": steps, "stages": stages}


def _fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def markdown(runs: Sequence[Rehearsal]) -> str:
    """The figures of every size and their growth as markdown tables."""
    g = growth(runs)
    labels = [f"{r.size.products // runs[0].size.products}x" for r in runs]
    lines = ["| size | products | photos | shots | video frames | clips built | clip frames | pairs | load during build |",
             "|---|" + "---:|" * 8]
    for label, r in zip(labels, runs, strict=True):
        w = r.work
        loads = [s.load for s in r.steps["build"] if s.load is not None]
        load = sum(loads) / len(loads) if loads else None
        lines.append(f"| {label} | {w['products']} | {w['images']} | {w['clips']} | {w['frames']:,} "
                     f"| {w['clips_built']} | {w['clip_frames']:,} | {w['pairs']} | {_fmt(load)} |")
    span = f"{labels[-1]}/{labels[0]}"
    lines += ["", f"| step | {' | '.join(f'{x} wall s' for x in labels)} | {' | '.join(f'{x} CPU s' for x in labels)} "
              f"| {' | '.join(f'{x} peak MB' for x in labels)} | CPU {span} | work {span} | peak {span} |",
              "|---|" + "---:|" * (3 * len(runs) + 3)]
    for row in g["steps"]:
        name = row["name"]
        walls = " | ".join(_fmt(r.step_wall(name)) for r in runs)
        cpus = " | ".join(_fmt(r.step_cpu(name)) for r in runs)
        peaks = " | ".join(_fmt(r.step_peak(name), 0) for r in runs)
        mark = " **faster than work**" if row["superlinear"] else ""
        lines.append(f"| {name} | {walls} | {cpus} | {peaks} | {_fmt(row['growth'], 2)}{mark} "
                     f"| {_fmt(row['work_growth'], 2)} ({row['unit']}) | {_fmt(row['peak_growth'], 2)} |")
    lines += ["", f"| build stage (s, both ranks) | {' | '.join(labels)} | {span} | work {span} | per unit of work |",
              "|---|" + "---:|" * (len(runs) + 3)]
    for row in g["stages"]:
        name = row["name"]
        seconds = " | ".join(_fmt(r.stages_s.get(name)) for r in runs)
        mark = " **faster than work**" if row["superlinear"] else ""
        lines.append(f"| {name} | {seconds} | {_fmt(row['growth'], 2)} | {_fmt(row['work_growth'], 2)} ({row['unit']}) "
                     f"| {_fmt(row['per_unit'], 2)}{mark} |")
    return "\n".join(lines) + "\n"


def to_json(runs: Sequence[Rehearsal]) -> dict[str, Any]:
    """Every figure of ``runs`` (what ``--json`` writes; :func:`from_json` reads it back)."""
    return {
        "sizes": [
            {"size": asdict(r.size), "work": r.work, "stages_s": r.stages_s,
             "steps": {k: [{**asdict(s), "output": None} for s in v] for k, v in r.steps.items()},
             "streamed": r.streamed, "exported": r.exported, "queried": r.queried}
            for r in runs
        ],
        "growth": growth(runs),
    }


def _size(data: dict[str, Any]) -> Size:
    return Size(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def from_json(data: dict[str, Any]) -> list[Rehearsal]:
    """The runs a ``--json`` file holds, to print their tables again."""
    return [
        Rehearsal(_size(r["size"]), r["work"],
                  {k: [Step(**{"load": None, **s, "output": ""}) for s in v] for k, v in r["steps"].items()},
                  r["stages_s"], r["streamed"], r["exported"], r["queried"])
        for r in data["sizes"]
    ]


def _pair(text: str, kind: type) -> tuple:
    lo, _, hi = text.partition(",")
    return kind(lo), kind(hi or lo)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=10, help="products at 1x (default 10: about 40 clips)")
    parser.add_argument("--sizes", default="1,2,4", help="multiples of --products to rehearse (default 1,2,4)")
    parser.add_argument("--scale", type=float, default=1.0, help="frame and photo scale (1: 720p)")
    parser.add_argument("--fps", type=float, default=24.0)
    parser.add_argument("--shot-seconds", default="3,10", help="range of a shot's length (default 3,10)")
    parser.add_argument("--pairs-per-clip", type=int, default=2, help="pairs built per shot (default 2)")
    parser.add_argument("--formats", default="lance,tar")
    parser.add_argument("--tiny", action="store_true", help="the test suite's tiny size (3 products, 320x180)")
    parser.add_argument("--from-json", type=Path, metavar="FILE", help="print the tables of a saved --json run")
    parser.add_argument("--dir", type=Path, help="work folder (kept); default a temporary one (removed)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write every figure here")
    parser.add_argument("--markdown", type=Path, metavar="FILE", help="write the tables here")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--size", help=argparse.SUPPRESS)
    parser.add_argument("--height", type=int, help=argparse.SUPPRESS)
    parser.add_argument("target", nargs="?", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step == "catalog":  # one step of a rehearsal, in its own process to be measured
        s = _size(json.loads(args.size))
        make_rehearsal_catalog(args.target, s.products, seed=s.seed, scale=s.scale, fps=s.fps,
                               shots=s.shots, shot_seconds=s.shot_seconds, photos=s.photos)
        return
    if args.step == "stream":
        print(json.dumps(stream(args.target, _size(json.loads(args.size)), args.height)))
        return
    if args.from_json:
        print(markdown(from_json(json.loads(args.from_json.read_text(encoding="utf-8")))))
        return
    if args.tiny:
        base = replace(TINY, formats=args.formats)
        args.products = TINY.products
    else:
        base = Size(scale=args.scale, fps=args.fps, shot_seconds=_pair(args.shot_seconds, float),
                    pairs_per_clip=args.pairs_per_clip, formats=args.formats)
    multiples = [int(m) for m in args.sizes.split(",")]
    with contextlib.ExitStack() as stack:
        root = args.dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pvtt-rehearsal-")))
        runs = []
        for m in multiples:
            size = replace(base, products=args.products * m)
            print(f"rehearsing {m}x: {size.products} products ...", flush=True)
            run = rehearse(root / f"{m}x", size)
            runs.append(run)
            peak = max(s.peak_rss_mb for v in run.steps.values() for s in v)
            print(f"  {run.work} in {sum(run.step_wall(k) for k in run.steps):.0f} s wall, "
                  f"peak {peak:.0f} MB", flush=True)
            if args.json:  # after every size: a long run leaves its figures behind
                args.json.write_text(json.dumps(to_json(runs), indent=2), encoding="utf-8")
        table = markdown(runs)
    print()
    print(table)
    if args.markdown:
        args.markdown.write_text(table, encoding="utf-8")


if __name__ == "__main__":
    main()
