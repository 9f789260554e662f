"""Crash campaign: ``pvtt build`` killed at random moments must resume to the same dataset.

A build promises that a SIGKILL at any moment leaves only committed, valid output, and
that running the same command again finishes the work without duplicates. This tool
tests the promise the way a cluster breaks it: it builds a small demo catalog once
without interruption (the reference), then again and again in fresh folders, killing
the build (and sometimes its resume) at a moment drawn from the reference's duration,
and resumes to completion. Every kill is followed by a check of the committed state,
every trial by a comparison with the reference: ``pvtt verify`` passes, the same pair
ids (none missing, none twice), clips and product images, and exactly the same scores.

``--ranks W`` runs the multi-rank path the same way (W rank processes, one killed, only
that rank re-run, then ``pvtt merge``). ``--disk-full`` puts the output (then only the
stage cache) on a small tmpfs that is nearly full: the build must stop with a one-line
error naming the problem, leave its last commit valid, blame no input for the full disk,
and resume to the reference once space is freed.

    python -m pvtt.tools.chaos --kills 50 --ranks 2 --disk-full --json chaos.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pvtt.builder.demo import PRODUCTS, make_demo_catalog
from pvtt.loaders.store import open_dataset
from pvtt.loaders.verify import verify_dataset
from pvtt.schemas.manifest import manifest_path

# Short shots and small clips keep one build at a few seconds; a commit after every pair
# and three pairs a shard give a kill many commit points to land between.
SMALL_CONFIG = """\
[shots]
min_frames = 20
min_duration_s = 1.0
[clip]
max_width = 192
max_height = 108
[output]
shard_max_samples = 3
commit_interval_s = 0.0
"""
SHOT_FRAMES = 30
BUILD_FLAGS = ("--strategy", "single", "--no-progress")
SCORE_COLUMNS = (
    "quality_score",
    "score_identity",
    "score_temporal",
    "score_lighting",
    "score_overall",
    "passed",
    "reject_reason",
    "frame_count",
)
NO_SPACE = "no space left on device"
DISK_FULL_FREE = (0.1, 0.5, 0.9)
"""Space left free for the output, as fractions of the reference output's size."""


@dataclass(frozen=True)
class Workload:
    """The catalog every build of the campaign reads, and its build config."""

    catalog: Path
    config: Path

    def command(self, out: Path, *extra: str) -> list[str]:
        """``pvtt build`` of the catalog into ``out``, as a fresh Python process."""
        build = ["build", str(self.catalog), str(out), "--config", str(self.config)]
        return [sys.executable, "-m", "pvtt.tools.cli", *build, *BUILD_FLAGS, *extra]


def make_workload(work: Path, products: int = 4) -> Workload:
    """The demo catalog cut to ``products`` products (all four difficulties at 4) + config."""
    catalog = work / "catalog"
    if not (catalog / "products.csv").exists():
        make_demo_catalog(catalog, products=PRODUCTS[:products], shot_frames=SHOT_FRAMES)
    config = work / "chaos.toml"
    config.write_text(SMALL_CONFIG)
    return Workload(catalog, config)


# --- what a dataset holds, and how it differs from the reference -------------------------


@dataclass
class Fingerprint:
    """Pair ids with their scores, and the clip and image ids, of a built dataset."""

    pairs: dict[str, tuple]
    clips: set[str]
    products: set[str]
    duplicates: list[str]


def fingerprint(out: Path) -> Fingerprint:
    dataset = open_dataset(out)
    table = dataset.pairs.to_table(columns=["pair_id", *SCORE_COLUMNS])
    ids = table.column("pair_id").to_pylist()
    rows = zip(*(table.column(c).to_pylist() for c in SCORE_COLUMNS), strict=True)
    tar_ids = [entry["key"] for shard in dataset.shards for entry in dataset.shard_index(shard)]
    twice = (Counter(ids) - Counter(set(ids))) + (Counter(tar_ids) - Counter(set(tar_ids)))
    key_of = {"clips": "clip_id", "products": "image_id"}
    others = {
        name: set(dataset.table(name).to_table(columns=[key]).column(key).to_pylist())
        for name, key in key_of.items()
    }
    return Fingerprint(
        dict(zip(ids, rows, strict=True)), others["clips"], others["products"], sorted(twice)
    )


def differences(reference: Fingerprint, got: Fingerprint, limit: int = 5) -> list[str]:
    """What ``got`` lacks, adds or scores differently from ``reference`` (scores exactly)."""
    problems = []
    if got.duplicates:
        problems.append(f"{len(got.duplicates)} pair ids twice: {got.duplicates[:limit]}")
    for what, ref, new in (
        ("pairs", set(reference.pairs), set(got.pairs)),
        ("clips", reference.clips, got.clips),
        ("product images", reference.products, got.products),
    ):
        if ref - new:
            problems.append(f"{len(ref - new)} {what} missing: {sorted(ref - new)[:limit]}")
        if new - ref:
            problems.append(
                f"{len(new - ref)} {what} not in the reference: {sorted(new - ref)[:limit]}"
            )
    changed = [
        k for k in set(reference.pairs) & set(got.pairs) if reference.pairs[k] != got.pairs[k]
    ]
    for key in sorted(changed)[:limit]:
        diff = {
            c: (a, b)
            for c, a, b in zip(SCORE_COLUMNS, reference.pairs[key], got.pairs[key], strict=True)
            if a != b
        }
        problems.append(f"{key}: scores differ from the reference {diff}")
    if len(changed) > limit:
        problems.append(f"... {len(changed) - limit} more pairs with other scores")
    return problems


def committed_state_problems(out: Path, *, media: bool) -> list[str]:
    """Problems of what ``out`` has committed (nothing committed yet is no problem)."""
    if not manifest_path(out).exists():
        return []
    try:
        report = verify_dataset(open_dataset(out), media=media)
    except (ValueError, OSError) as exc:
        return [f"committed state does not open: {exc}"]
    return [f"verify: {p}" for p in report.problems]


def stray_files(out: Path) -> list[str]:
    """Files under ``out/tar`` that the manifest does not name (left by a killed run)."""
    folder = out / "tar"
    if not folder.is_dir() or not manifest_path(out).exists():
        return []
    dataset = open_dataset(out)
    named = {Path(p).name for s in dataset.shards for p in (s.path, s.index)}
    return sorted(p.name for p in folder.iterdir() if p.name not in named)


def final_problems(out: Path, reference: Fingerprint) -> list[str]:
    problems = committed_state_problems(out, media=True)
    if not manifest_path(out).exists():
        return [*problems, "no manifest after the resume"]
    if not open_dataset(out).manifest.complete:
        problems.append("manifest not marked complete after the resume")
    stray = stray_files(out)
    if stray:
        problems.append(f"files under tar/ that no commit names: {stray[:5]}")
    return problems + differences(reference, fingerprint(out))


# --- running builds ----------------------------------------------------------------------


@dataclass
class Run:
    """One process of the campaign: its exit, whether the planned kill landed."""

    returncode: int
    killed: bool
    seconds: float
    log: Path

    @property
    def stderr(self) -> str:
        return self.log.with_suffix(".err").read_text(errors="replace")


def run(
    cmd: Sequence[str], log: Path, *, kill_at: float | None = None, timeout: float = 600
) -> Run:
    """Run ``cmd``; with ``kill_at``, SIGKILL it that many seconds in if still running."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(log, "wb") as out, open(log.with_suffix(".err"), "wb") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        sent = False
        if kill_at is not None:
            try:
                proc.wait(timeout=kill_at)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                sent = True
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    # a kill sent as the process was exiting by itself did not land
    killed = sent and proc.returncode == -signal.SIGKILL
    return Run(proc.returncode, killed, time.monotonic() - started, log)


def failed_run_problem(what: str, result: Run) -> str:
    tail = result.stderr.strip().splitlines()[-3:]
    return f"{what} exited {result.returncode} (log {result.log}): {' | '.join(tail)}"


# --- the campaign ------------------------------------------------------------------------


@dataclass
class Trial:
    name: str
    kills: int
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems


Callback = Callable[[Trial], None]
"""Told of each trial as it ends (the progress lines)."""


@dataclass
class Tally:
    """Kills delivered (a kill planned after the process ended is missed, not tried)."""

    tried: int = 0
    survived: int = 0
    missed: int = 0
    trials: list[Trial] = field(default_factory=list)

    def add(self, trial: Trial) -> None:
        self.trials.append(trial)
        self.tried += trial.kills
        self.survived += trial.kills if trial.ok else 0

    def as_dict(self) -> dict:
        failed = [asdict(t) for t in self.trials if not t.ok]
        return {
            "kills_tried": self.tried,
            "kills_survived": self.survived,
            "kills_missed": self.missed,
            "trials": len(self.trials),
            "failed": failed,
        }


@dataclass
class Campaign:
    """The reference build, and the trials run against it."""

    workload: Workload
    work: Path
    reference: Fingerprint
    reference_s: float
    reference_bytes: int
    rng: random.Random
    log: Callback = lambda trial: None
    resume_kill_p: float = 0.3
    """How often a resume is killed too (at most ``max_kills_per_trial`` kills a trial)."""
    max_kills_per_trial: int = 3

    @classmethod
    def prepare(
        cls, work: Path, *, products: int = 4, seed: int = 0, log: Callback | None = None
    ) -> Campaign:
        """Write the catalog into ``work`` and build the reference, uninterrupted."""
        work.mkdir(parents=True, exist_ok=True)
        workload = make_workload(work, products)
        out = work / "reference"
        shutil.rmtree(out, ignore_errors=True)
        result = run(workload.command(out), work / "logs" / "reference.log")
        if result.returncode != 0:
            raise RuntimeError(failed_run_problem("the reference build", result))
        problems = committed_state_problems(out, media=True)
        if problems:
            raise RuntimeError(f"the reference build does not verify: {problems[:3]}")
        return cls(
            workload,
            work,
            fingerprint(out),
            result.seconds,
            tree_bytes(out),
            random.Random(seed),
            log or (lambda trial: None),
        )

    def kill_time(self) -> float:
        return self.rng.uniform(0.0, self.reference_s)

    def _trials(self, kills: int, make: Callable[[int, Tally], Trial]) -> Tally:
        """Trials until ``kills`` kills landed (or four times as many trials as kills)."""
        tally = Tally()
        index = 0
        while tally.tried < kills and index < 4 * kills + 4:
            trial = make(index, tally)
            index += 1
            tally.add(trial)
            self.log(trial)
        return tally

    def _done(self, trial: Trial, out: Path, started: float) -> Trial:
        trial.seconds = round(time.monotonic() - started, 2)
        if trial.ok:
            shutil.rmtree(out, ignore_errors=True)  # failed runs stay for inspection
        return trial

    # -- one process ----------------------------------------------------------------------
    def single_process(self, kills: int) -> Tally:
        """Each trial builds into a fresh folder, killed, resumed until it finishes."""
        return self._trials(kills, lambda i, tally: self._single_trial(f"single-{i:03d}", tally))

    def _single_trial(self, name: str, tally: Tally) -> Trial:
        started = time.monotonic()
        out = self.work / "runs" / name
        cmd = self.workload.command(out)
        trial = Trial(name, 0)
        for attempt in itertools.count():
            planned = attempt == 0 or (
                trial.kills < self.max_kills_per_trial and self.rng.random() < self.resume_kill_p
            )
            kill_at = self.kill_time() if planned else None
            result = run(cmd, self.work / "logs" / f"{name}-{attempt}.log", kill_at=kill_at)
            if result.killed:
                trial.kills += 1
                trial.problems += [
                    f"after kill {trial.kills}: {p}"
                    for p in committed_state_problems(out, media=False)
                ]
                continue
            tally.missed += int(planned)
            if result.returncode != 0:
                trial.problems.append(failed_run_problem("resume", result))
            break
        if trial.kills and trial.ok:
            trial.problems += final_problems(out, self.reference)
        return self._done(trial, out, started)

    # -- several ranks --------------------------------------------------------------------
    def multi_rank(self, world: int, kills: int) -> Tally:
        """Each trial runs ``world`` ranks at once and kills one; only that one is re-run."""
        return self._trials(
            kills, lambda i, tally: self._rank_trial(f"ranks{world}-{i:03d}", world, tally)
        )

    def _rank_trial(self, name: str, world: int, tally: Tally) -> Trial:
        started = time.monotonic()
        out = self.work / "runs" / name
        logs = self.work / "logs"
        victim = self.rng.randrange(world)
        kill_at = self.kill_time()
        trial = Trial(f"{name} (rank {victim} killed)", 0)
        commands = [
            self.workload.command(out, "--rank", str(rank), "--world-size", str(world))
            for rank in range(world)
        ]
        procs = [_Background(cmd, logs / f"{name}-r{r}.log") for r, cmd in enumerate(commands)]
        killed = procs[victim].kill_after(kill_at)
        for rank, proc in enumerate(procs):
            result = proc.finish()
            if rank != victim and result.returncode != 0:
                trial.problems.append(failed_run_problem(f"rank {rank}", result))
        if not killed:
            tally.missed += 1
            return self._done(trial, out, started)
        trial.kills = 1
        merge = [sys.executable, "-m", "pvtt.tools.cli", "merge", str(out)]
        own = out / "ranks" / f"r{victim:03d}.json"
        finished = own.exists() and json.loads(own.read_text()).get("complete")
        merged_early = run(merge, logs / f"{name}-merge-early.log").returncode == 0
        if merged_early and not finished:  # a kill after its last commit leaves it complete
            trial.problems.append(f"pvtt merge accepted a world whose rank {victim} was killed")
        rerun = run(commands[victim], logs / f"{name}-r{victim}-rerun.log")
        if rerun.returncode != 0:
            trial.problems.append(failed_run_problem(f"re-run of rank {victim}", rerun))
        merged = run(merge, logs / f"{name}-merge.log")
        if merged.returncode != 0:
            trial.problems.append(failed_run_problem("pvtt merge", merged))
        if trial.ok:
            trial.problems += final_problems(out, self.reference)
        return self._done(trial, out, started)

    # -- a full disk ----------------------------------------------------------------------
    def disk_full(
        self, fractions: Sequence[float] = DISK_FULL_FREE, *, cache: bool = True
    ) -> tuple[list[Trial], str | None]:
        """The output with ``fractions`` of its size free, then (``cache``) the stage cache
        alone on a full disk; each resumed once the space is freed.

        Returns the cases, and why they were skipped when no tmpfs can be mounted here.
        """
        size = 2 * self.reference_bytes + (4 << 20)
        cases = [
            (f"disk-full-out-{f:.2f}", int(f * self.reference_bytes), False) for f in fractions
        ]
        if cache:
            cases.append(("disk-full-cache", self.reference_bytes // 20, True))
        trials: list[Trial] = []
        for name, free, on_cache in cases:
            try:
                with tmpfs(self.work / "mnt" / name, size) as mount:
                    trial = self._disk_full_trial(name, mount, free, on_cache=on_cache)
            except MountUnavailable as exc:
                return trials, str(exc)
            trials.append(trial)
            self.log(trial)
        return trials, None

    def _disk_full_trial(self, name: str, mount: Path, free: int, *, on_cache: bool) -> Trial:
        started = time.monotonic()
        filler = fill(mount, free)
        if on_cache:
            out = self.work / "runs" / name
            cmd = self.workload.command(out, "--cache-dir", str(mount / "cache"))
        else:
            out = mount / "out"
            cmd = self.workload.command(out)
        where = "stage cache" if on_cache else "output"
        trial = Trial(f"{name} ({where} on a full disk, {free} bytes free)", 0)
        logs = self.work / "logs"
        trial.problems += disk_full_problems(run(cmd, logs / f"{name}-full.log"))
        trial.problems += [
            f"after the full disk: {p}" for p in committed_state_problems(out, media=False)
        ]
        filler.unlink()
        resumed = run(cmd, logs / f"{name}-resume.log")
        if resumed.returncode != 0:
            trial.problems.append(failed_run_problem("resume after freeing space", resumed))
        else:
            trial.problems += final_problems(out, self.reference)
        return self._done(trial, out, started)


def disk_full_problems(result: Run) -> list[str]:
    """How a build that ran out of space failed to say so clearly."""
    problems = []
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if result.returncode == 0:
        problems.append(f"build exited 0 on a full disk (log {result.log})")
    if "Traceback" in result.stderr:
        problems.append(f"traceback on a full disk (log {result.log})")
    last = lines[-1] if lines else ""
    if result.returncode != 0 and not (
        last.startswith("pvtt: error:") and NO_SPACE in last.lower()
    ):
        problems.append(f"last line does not say the disk is full: {last!r}")
    blamed = [line for line in lines if "skipped" in line and NO_SPACE in line.lower()]
    if blamed:
        problems.append(f"{len(blamed)} inputs skipped as bad for a full disk, e.g. {blamed[0]!r}")
    return problems


class _Background:
    """A build running beside others, with a kill planned on it."""

    def __init__(self, cmd: Sequence[str], log: Path) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log = log
        self.started = time.monotonic()
        self._out = open(log, "wb")  # closed in finish()
        self._err = open(log.with_suffix(".err"), "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._out, stderr=self._err)
        self.killed = False

    def kill_after(self, seconds: float) -> bool:
        try:
            self.proc.wait(timeout=max(0.0, seconds - (time.monotonic() - self.started)))
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.killed = self.proc.returncode == -signal.SIGKILL
        return self.killed

    def finish(self, timeout: float = 600) -> Run:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._out.close()
        self._err.close()
        return Run(self.proc.returncode, self.killed, time.monotonic() - self.started, self.log)


# --- a full disk -------------------------------------------------------------------------


class MountUnavailable(RuntimeError):
    """A size-limited tmpfs cannot be mounted here (not root, no mount permission)."""


@contextmanager
def tmpfs(path: Path, size: int) -> Iterator[Path]:
    """A tmpfs of ``size`` bytes mounted at ``path`` meanwhile."""
    path.mkdir(parents=True, exist_ok=True)
    mount = shutil.which("mount")
    if mount is None:
        raise MountUnavailable("disk-full: skipped: no `mount` command on this machine")
    done = subprocess.run(
        [mount, "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        why = done.stderr.strip() or f"exit {done.returncode}"
        raise MountUnavailable(
            f"disk-full: skipped: cannot mount a tmpfs at {path} ({why}); "
            "run as root or in a container allowed to mount"
        )
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(mount: Path, free: int) -> Path:
    """A file taking all of ``mount``'s space but ``free`` bytes."""
    stat = os.statvfs(mount)
    size = max(0, stat.f_bavail * stat.f_frsize - free)
    path = mount / "filler"
    with open(path, "wb") as fh:
        chunk = b"\0" * (1 << 20)
        while size > 0:
            size -= fh.write(chunk[: min(size, len(chunk))])
    return path


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# --- the command line --------------------------------------------------------------------


def campaign(
    work: Path,
    *,
    kills: int,
    ranks: int = 0,
    rank_kills: int = 0,
    disk_full: bool = False,
    seed: int = 0,
    products: int = 4,
    echo: bool = True,
) -> dict:
    """Run the campaign in ``work``; returns the figures (what ``--json`` writes)."""
    started = time.monotonic()

    def log(trial: Trial) -> None:
        if echo:
            state = "ok" if trial.ok else "FAILED: " + "; ".join(trial.problems)
            print(
                f"{trial.name}: {trial.kills} kill(s), {trial.seconds:.1f} s, {state}", flush=True
            )

    runner = Campaign.prepare(work, products=products, seed=seed, log=log)
    reference = {
        "pairs": len(runner.reference.pairs),
        "seconds": round(runner.reference_s, 2),
        "bytes": runner.reference_bytes,
    }
    if echo:
        print(f"reference: {reference['pairs']} pairs in {reference['seconds']} s", flush=True)
    figures: dict = {"reference": reference, "seed": seed}
    ok = True
    if kills:
        tally = runner.single_process(kills)
        figures["single"] = tally.as_dict()
        ok &= tally.tried >= kills and tally.survived == tally.tried
    if ranks > 1 and rank_kills:
        tally = runner.multi_rank(ranks, rank_kills)
        figures["ranks"] = {"world_size": ranks, **tally.as_dict()}
        ok &= tally.tried >= rank_kills and tally.survived == tally.tried
    if disk_full:
        trials, skipped = runner.disk_full()
        figures["disk_full"] = {
            "cases": len(trials),
            "handled": sum(t.ok for t in trials),
            "skipped": skipped,
            "failed": [asdict(t) for t in trials if not t.ok],
        }
        ok &= all(t.ok for t in trials)
    figures["seconds"] = round(time.monotonic() - started, 1)
    figures["ok"] = bool(ok)
    return figures


def summary(figures: dict) -> str:
    lines = []
    for key, label in (("single", "single process"), ("ranks", "one rank of several")):
        part = figures.get(key)
        if part:
            lines.append(
                f"{label}: kills survived {part['kills_survived']}/{part['kills_tried']} "
                f"in {part['trials']} trials ({part['kills_missed']} kills missed: the "
                "build had already ended)"
            )
    disk = figures.get("disk_full")
    if disk:
        lines.append(
            disk["skipped"] or f"disk full: {disk['handled']}/{disk['cases']} cases handled"
        )
    for part in (figures.get(k) or {} for k in ("single", "ranks", "disk_full")):
        for trial in part.get("failed", []):
            lines.append(f"  FAILED {trial['name']}: " + "; ".join(trial["problems"]))
    lines.append(f"{'OK' if figures['ok'] else 'FAILED'} in {figures['seconds']:.0f} s")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pvtt.tools.chaos",
        description="Kill `pvtt build` at random moments, resume, and check that nothing "
        "is lost, duplicated or changed (see the module docstring).",
    )
    parser.add_argument("--kills", type=int, default=10, help="kills of a single-process build")
    parser.add_argument(
        "--ranks",
        type=int,
        default=0,
        metavar="W",
        help="also kill one of W rank processes, re-run it alone, merge",
    )
    parser.add_argument(
        "--rank-kills",
        type=int,
        default=3,
        metavar="N",
        help="multi-rank trials with a kill (with --ranks)",
    )
    parser.add_argument(
        "--disk-full", action="store_true", help="also build onto a nearly full tmpfs (needs root)"
    )
    parser.add_argument("--products", type=int, default=4, help="demo products in the catalog")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the figures here")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="pvtt-chaos-"))
    figures = campaign(
        work,
        kills=args.kills,
        ranks=args.ranks,
        rank_kills=args.rank_kills,
        disk_full=args.disk_full,
        seed=args.seed,
        products=args.products,
    )
    print(summary(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    if args.work is None:
        if figures["ok"]:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"logs and failed runs kept in {work}")
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
