"""Fuzz targets for what pvtt reads from outside, and a runner that counts the cases.

Each :class:`Target` is a hypothesis strategy and a property. The properties say what
must hold for *any* input, not only for the ones a test author thought of: a parser
returns a well-formed value or raises its one documented error (never a
``TypeError``, ``RecursionError``, ``MemoryError`` or a hang); a codec round-trips
what it accepts; a sample plan deals every position exactly once however the epoch is
split and resumed. ``tests/test_fuzz.py`` runs every target with a few hundred cases;
this runner runs them with as many as asked::

    python -m pvtt.tools.fuzz --examples 20000 [--targets manifest,tar] [--seed 1]

and prints the cases each target ran. Every case runs under an alarm
(:data:`CASE_TIMEOUT_S`), so a parser that loops fails the run instead of hanging it.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import io
import json
import lzma
import math
import re
import signal
import struct
import sys
import tarfile
import tempfile
import threading
import time
import tracemalloc
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from pvtt.builder.catalog import CSV_NAME, TAXONOMY_NAME, check_catalog
from pvtt.builder.sinks.base import PairSample
from pvtt.builder.writer import DatasetWriter
from pvtt.loaders.curriculum import DEFAULT_PATH, DIFFICULTIES, CurriculumSchedule, curriculum_order
from pvtt.loaders.plan import SamplePlan
from pvtt.loaders.query import PairFilter, select_pairs
from pvtt.loaders.store import BuiltDataset, open_dataset
from pvtt.loaders.tar_reader import ShardFormatError, read_sample, read_sample_json
from pvtt.loaders.where import WhereError, evaluate, parse_where, to_sql
from pvtt.schemas.config import BuildConfig, ConfigError, load_config
from pvtt.schemas.keys import clip_id, image_id, pair_id
from pvtt.schemas.manifest import Manifest, ManifestError, ShardInfo, TableInfo, parse_manifest
from pvtt.schemas.masks import MAGIC, MASK_CODECS, decode_masks, encode_masks
from pvtt.schemas.records import ClipRecord, PairRecord, ProductRecord
from pvtt.schemas.tables import scalar_columns
from pvtt.schemas.version import SchemaVersionError

CASE_TIMEOUT_S = 10.0
"""Longest one case may take before it counts as a hang."""


@dataclass(frozen=True)
class Target:
    """A property checked on values drawn from ``strategy``; ``examples`` always run first."""

    name: str
    about: str
    strategy: st.SearchStrategy[Any]
    check: Callable[[Any], None]
    examples: tuple[Any, ...] = ()


class Hang(AssertionError):
    """A case ran past :data:`CASE_TIMEOUT_S`."""


@contextlib.contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    """Turn a case that runs too long into a :class:`Hang` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def fire(signum: int, frame: object) -> None:
        raise Hang(f"the case ran for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run(
    target: Target, examples: int, *, seed: int | None = None, tally: Counter[str] | None = None
) -> int:
    """Check ``target`` on ``examples`` drawn cases (plus its fixed ones); the cases run.

    A failing case is shrunk and its exception re-raised, as hypothesis does; ``tally``
    counts the cases under the target's name either way.
    """
    tally = Counter() if tally is None else tally

    def case(value: Any) -> None:
        tally[target.name] += 1
        with _alarm(CASE_TIMEOUT_S):
            target.check(value)

    test = given(target.strategy)(case)
    for value in reversed(target.examples):
        test = example(value)(test)
    test = settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )(test)
    if seed is not None:
        test = hypothesis_seed(seed)(test)
    test()
    return tally[target.name]


# -- shared strategies -----------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# -- manifest ------------------------------------------------------------------------------

_PATH_PARTS = st.sampled_from(["tar", "lance", "pairs.lance", "pairs-r000-000000.tar", "x.json"])
safe_paths = st.lists(_PATH_PARTS, min_size=1, max_size=3).map("/".join)
hostile_paths = st.sampled_from(
    ["../x.tar", "/etc/passwd", "tar/../../x", "C:/x", "s3://bucket/x", "tar\\..\\x", "",
     "tar//x", "./x", "tar/\x00x", ".."]
)  # fmt: skip
counts = st.integers(0, 2**40)
scores = st.none() | st.floats(0, 1)


@st.composite
def valid_manifests(draw: st.DrawFn) -> Manifest:
    tables = draw(
        st.dictionaries(
            st.sampled_from(["pairs", "clips", "products"]),
            st.builds(TableInfo, path=safe_paths, version=counts, rows=counts),
            max_size=3,
        )
    )
    shards = draw(
        st.lists(
            st.builds(
                ShardInfo, path=safe_paths, index=safe_paths, rank=counts, samples=counts,
                bytes=counts, counts=st.dictionaries(st.sampled_from(DIFFICULTIES), counts),
                passed=counts, score_min=scores, score_max=scores,
            ),
            max_size=3,
        )
    )  # fmt: skip
    return Manifest(
        build_id=draw(st.text(max_size=16)),
        complete=draw(st.booleans()),
        formats=draw(st.lists(st.sampled_from(["lance", "tar"]), max_size=2)),
        config=draw(st.dictionaries(st.text(max_size=6), json_values, max_size=3)),
        tables=tables,
        shards=shards,
        rank=draw(st.none() | st.integers(0, 64)),
        world_size=draw(st.integers(1, 64)),
        keys=draw(st.dictionaries(st.text(max_size=6), st.lists(st.text(max_size=6), max_size=3))),
    )


def _locations(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key path inside nested JSON containers."""
    yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _locations(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _locations(value, (*path, i))


def _mutate(doc: Any, where: int, how: str, value: Any) -> Any:
    """``doc`` with the value at its ``where``-th location replaced, deleted or nested."""
    places = list(_locations(doc))
    path = places[where % len(places)]
    if not path:
        return value if how == "replace" else [doc]
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if how == "delete":
        del parent[last]
    elif how == "nest":
        parent[last] = [parent[last]]
    else:
        parent[last] = value
    return doc


mutations = st.tuples(
    st.integers(0, 10_000),
    st.sampled_from(["replace", "delete", "nest"]),
    json_values | hostile_paths,
)


@st.composite
def manifest_bytes(draw: st.DrawFn) -> tuple[bytes, bool]:
    """``(raw, valid)``: a valid manifest, a mutated one, random JSON or random bytes."""
    kind = draw(st.sampled_from(["valid", "mutated", "mutated", "json", "bytes", "nested"]))
    if kind in ("valid", "mutated"):
        doc = json.loads(draw(valid_manifests()).to_json())
        if kind == "valid":
            return json.dumps(doc).encode(), True
        for where, how, value in draw(st.lists(mutations, min_size=1, max_size=4)):
            doc = _mutate(doc, where, how, value)
        raw = json.dumps(doc).encode()
        if draw(st.booleans()):
            cut = draw(st.integers(0, len(raw)))
            raw = raw[:cut] + draw(st.binary(max_size=4)) + raw[cut + 1 :]
        return raw, False
    if kind == "json":
        return json.dumps(draw(json_values)).encode(), False
    if kind == "nested":
        return _nested(draw(st.integers(500, 100_000))), False
    return draw(st.binary(max_size=200)), False


def _inside(path: str) -> bool:
    pure = PurePosixPath(path)
    return bool(path) and not pure.is_absolute() and ".." not in pure.parts and "\\" not in path


def check_manifest(case: tuple[bytes, bool]) -> None:
    raw, valid = case
    try:
        manifest = parse_manifest(raw, "fuzz/manifest.json")
    except (ManifestError, SchemaVersionError) as exc:
        assert not valid, f"a valid manifest was refused: {exc}"
        assert "fuzz/manifest.json" in str(exc), f"the error does not name the file: {exc}"
        return
    # what parses is usable as typed: paths inside the dataset, counts as ints
    assert isinstance(manifest.build_id, str) and manifest.world_size >= 1
    for info in manifest.tables.values():
        assert _inside(info.path) and isinstance(info.version, int) and isinstance(info.rows, int)
    for shard in manifest.shards:
        assert _inside(shard.path) and _inside(shard.index)
        assert all(isinstance(v, int) for v in (shard.samples, shard.bytes, shard.rank))
    again = parse_manifest(manifest.to_json().encode(), "again")
    assert again.to_json() == manifest.to_json(), "a parsed manifest does not round-trip"


# -- build config ----------------------------------------------------------------------------

config_words = st.sampled_from(
    ["cpu", "cuda", "cuda:1", "content", "adaptive", "single", "all", "sampled", "lance", "tar"]
)
config_leaves = (
    st.none()
    | st.booleans()
    | st.integers(-5, 10**6)
    | st.floats(-2, 2)
    | st.just(math.nan)
    | config_words
    | st.lists(config_words, max_size=3)
    | st.dictionaries(st.sampled_from(DIFFICULTIES + ("junk",)), st.floats(-1, 2), max_size=4)
)


@st.composite
def config_tables(draw: st.DrawFn, cls: type = BuildConfig) -> dict[str, Any]:
    """A table with some of ``cls``'s keys (sections recursively), an unknown key at times."""
    out: dict[str, Any] = {}
    defaults = cls()
    for f in dataclasses.fields(cls):
        if not draw(st.integers(0, 3)) == 0:
            continue
        current = getattr(defaults, f.name)
        if dataclasses.is_dataclass(current) and draw(st.integers(0, 5)):
            out[f.name] = draw(config_tables(type(current)))
        else:
            out[f.name] = draw(config_leaves)
    if draw(st.integers(0, 9)) == 0:
        out[draw(st.text(max_size=6))] = draw(config_leaves)
    return out


def check_config(data: dict[str, Any]) -> None:
    try:
        config = BuildConfig.from_dict(data).validate()
    except ConfigError:
        return
    again = BuildConfig.from_dict(config.to_dict()).validate()
    assert again == config, "an accepted config does not round-trip through to_dict()"


toml_text = st.lists(
    st.sampled_from(list("[]=.\"'# \n{},abcdx019-_") + ["pairs", "limit", "true", "\\u0000"]),
    max_size=40,
).map("".join)


def check_config_text(text: str) -> None:
    with tempfile.TemporaryDirectory(prefix="pvtt-fuzz-") as tmp:
        path = Path(tmp) / "build.toml"
        path.write_text(text, encoding="utf-8")
        try:
            load_config(path)
        except ConfigError as exc:
            assert str(path) in str(exc), f"the error does not name the file: {exc}"


# -- catalog -----------------------------------------------------------------------------------


@cache
def _catalog_root() -> Path:
    """A catalog folder with real files inside, a file outside and links leading out."""
    base = Path(tempfile.mkdtemp(prefix="pvtt-fuzz-catalog-"))
    root, outside = base / "cat", base / "outside"
    for folder in (root / "videos", root / "images", outside):
        folder.mkdir(parents=True)
    for folder in (root / "videos", root / "images", outside):
        (folder / "v.mp4").write_bytes(b"\0" * 16)
        (folder / "p.png").write_bytes(b"\0" * 16)
    (root / "videos" / "out.mp4").symlink_to(outside / "v.mp4")
    (root / "shared").symlink_to(outside, target_is_directory=True)
    (root / "videos" / "up.mp4").symlink_to(Path("..") / "images" / "p.png")
    return root


_segments = st.sampled_from(
    ["videos", "images", "v.mp4", "p.png", "out.mp4", "up.mp4", "shared", "outside", "..", ".",
     "", "~", "C:", "\\..", "%2e%2e", "\x00", "cat", " v.mp4"]
)  # fmt: skip
catalog_paths = st.one_of(
    st.lists(_segments, max_size=5).map("/".join),
    st.sampled_from(["/etc/passwd", "C:\\x.mp4", "\\\\server\\share\\v.mp4"]),
    st.lists(_segments, min_size=1, max_size=4).map(lambda p: "/" + "/".join(p)),
)
CATALOG_COLUMNS = ["id", "category", "subcategory", "video", "images", "first_frame_box"]
catalog_rows = st.lists(
    st.fixed_dictionaries(
        {
            "id": st.sampled_from(["a1", "b-2", "a1", "x.y", "_z", "c__d", ""]),
            "category": st.sampled_from(["Home", "Jewelry", "home", "Nope", ""]),
            "subcategory": st.sampled_from(["mug", "vase", "necklace", "ring", "nope", ""]),
            "video": catalog_paths,
            "images": st.lists(catalog_paths, max_size=3).map(";".join),
            "first_frame_box": st.sampled_from(["", "0,0,4,4", "4,4,0,0", "a,b,c,d", "1e9,0,1,1"]),
        }
    ),
    max_size=5,
)
taxonomy_texts = st.none() | st.lists(
    st.sampled_from(list("{}[]:,- \n\t'\"&*!") + ["categories", "Home", "mug", "vessel", "a"]),
    max_size=40,
).map("".join)


def check_catalog_case(case: tuple[list[dict[str, str]], str | None]) -> None:
    rows, taxonomy = case
    root = _catalog_root()
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CATALOG_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    (root / CSV_NAME).write_text(buffer.getvalue(), encoding="utf-8")
    if taxonomy is None:
        (root / TAXONOMY_NAME).unlink(missing_ok=True)
    else:
        (root / TAXONOMY_NAME).write_text(taxonomy, encoding="utf-8")
    catalog, problems = check_catalog(root, check_media=False)
    resolved = root.resolve()
    for product in catalog:
        for path in (product.video, *product.images):
            assert path.resolve().is_relative_to(resolved), f"{path} lies outside the catalog"
    bad_lines = {p.row for p in problems}
    assert all(product.row not in bad_lines for product in catalog)
    assert all(p.file in (CSV_NAME, TAXONOMY_NAME) or p.file == str(resolved) for p in problems)


# -- sample plan ---------------------------------------------------------------------------


@st.composite
def plans(draw: st.DrawFn) -> SamplePlan:
    """Any valid plan: shuffled or a given order with repeats, any layout and resume point."""
    n = draw(st.integers(0, 60) | st.integers(0, 5000))
    order = None
    if n and draw(st.booleans()):
        length = draw(st.integers(0, 3 * n) | st.integers(0, 200))
        order = np.random.default_rng(draw(st.integers(0, 2**32))).integers(0, n, length)
    world = draw(st.integers(1, 9))
    positions = len(order) if order is not None else n
    return SamplePlan(
        num_samples=n,
        seed=draw(st.integers(0, 2**64)),
        epoch=draw(st.integers(0, 10**6)),
        shuffle=draw(st.booleans()),
        world_size=world,
        rank=draw(st.integers(0, world - 1)),
        num_workers=draw(st.integers(0, 7)),
        batch_size=draw(st.integers(1, 9)),
        equal_per_rank=draw(st.booleans()),
        consumed=draw(st.integers(0, positions)),
        order=order,
    )


def _dataloader(plan: SamplePlan) -> list[int]:
    """The rank's output of an in-order DataLoader: workers' batches, round robin, until dry."""
    batches = []
    for worker in range(max(plan.num_workers, 1)):
        items = plan.worker_positions(worker).tolist()
        batches.append(
            [items[i : i + plan.batch_size] for i in range(0, len(items), plan.batch_size)]
        )
    out: list[int] = []
    active = list(range(len(batches)))
    taken = Counter[int]()
    while active:
        for worker in list(active):
            if taken[worker] < len(batches[worker]):
                out.extend(batches[worker][taken[worker]])
                taken[worker] += 1
            else:
                active.remove(worker)
    return out


def check_plan(case: tuple[SamplePlan, int, int]) -> None:
    plan, new_world, fraction = case
    world = plan.world_size
    ranks = [dataclasses.replace(plan, rank=r) for r in range(world)]
    lists = [r.rank_positions() for r in ranks]
    rest = plan.global_order[plan.consumed :].tolist()
    dealt = Counter(np.concatenate(lists).tolist()) if lists else Counter()
    counts = [len(x) for x in lists]
    if plan.equal_per_rank and len(plan.global_order):
        assert len(set(counts)) == 1, f"equal_per_rank ranks got {counts}"
        pad = counts[0] * world - len(rest)
        assert 0 <= pad < world
        assert dealt == Counter(
            rest + plan.global_order[np.arange(pad) % len(plan.global_order)].tolist()
        )
    else:
        assert dealt == Counter(rest), "ranks do not deal the remaining positions exactly once"
        assert counts == sorted(counts, reverse=True) and counts[0] - counts[-1] <= 1
    for rank_plan, positions in zip(ranks, lists, strict=True):
        assert _dataloader(rank_plan) == positions.tolist(), "workers' batches leave rank order"
        assert rank_plan.fingerprint() == plan.fingerprint()
    # every rank yields k in lockstep, then the epoch resumes on another world size
    k = min(counts) * fraction // 100
    after = ranks[0].advanced(k)
    assert all(r.advanced(k).consumed == after.consumed for r in ranks)
    resumed = dataclasses.replace(after, world_size=new_world, rank=0, equal_per_rank=False)
    seen = Counter(np.concatenate([x[:k] for x in lists]).tolist()) if k else Counter()
    left = Counter(
        np.concatenate(
            [dataclasses.replace(resumed, rank=r).rank_positions() for r in range(new_world)]
        ).tolist()
    )
    if not plan.equal_per_rank:
        assert seen + left == Counter(rest), "a resumed epoch does not yield exactly the rest"


plan_cases = st.tuples(plans(), st.integers(1, 9), st.integers(0, 100))

loose_values = (
    st.integers(-3, 40)
    | st.integers(-(2**70), 2**70)
    | st.booleans()
    | st.none()
    | st.floats(allow_nan=True)
    | st.text(max_size=3)
    | st.just(np.int64(3))
)
loose_orders = st.none() | st.lists(st.integers(-2, 12) | st.floats(0, 5) | st.none(), max_size=8) | (
    st.lists(st.integers(-(2**70), 2**70), max_size=3)
) | st.just([[1, 2]]) | st.just("abc")  # fmt: skip


def check_plan_arguments(case: tuple[dict[str, Any], Any, Any]) -> None:
    kwargs, worker, yielded = case
    try:
        plan = SamplePlan(**kwargs)
    except ValueError:
        return
    plan.rank_positions()
    for call, arg in ((plan.worker_positions, worker), (plan.advanced, yielded)):
        try:
            call(arg)
        except ValueError:
            pass


plan_argument_cases = st.tuples(
    st.fixed_dictionaries(
        {"num_samples": loose_values.filter(lambda v: not isinstance(v, int) or v < 10**6)},
        optional={
            name: loose_values
            for name in (
                "seed",
                "epoch",
                "world_size",
                "rank",
                "num_workers",
                "batch_size",
                "consumed",
            )
        }
        | {"order": loose_orders, "shuffle": st.booleans(), "equal_per_rank": st.booleans()},
    ),
    loose_values,
    loose_values,
)


# -- curriculum ------------------------------------------------------------------------------

shares = (
    st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(-1, 5)
    | st.none()
    | st.text(max_size=2)
)
mixes = st.dictionaries(st.sampled_from(DIFFICULTIES + ("junk",)), shares, max_size=5)
pacing_names = st.sampled_from(["step", "linear", "root", "exponential", "quadratic"])
steps = st.lists(st.integers(-(2**62), 2**62) | st.integers(-5, 100_000), min_size=1, max_size=20)


@st.composite
def schedule_args(draw: st.DrawFn) -> dict[str, Any]:
    args: dict[str, Any] = {
        "pacing": draw(pacing_names | st.sampled_from([lambda t: t * t, lambda t: 2.0 - t])),
        "total_steps": draw(st.integers(-2, 10**9) | st.just(2**62)),
    }
    optional = {
        "path": st.none() | st.lists(mixes, max_size=5),
        "stages": st.integers(-1, 12),
        "rate": st.floats(allow_nan=True, allow_infinity=True) | st.floats(0.001, 2000),
        "min_quality": st.none() | st.floats(-1, 2) | st.lists(st.tuples(st.floats(-1, 2), st.floats(-1, 2)), max_size=4),
        "adaptive": st.booleans(),
        "ema": st.floats(-1, 2),
        "strength": st.floats(-1, 5),
        "max_factor": st.floats(0, 10),
    }  # fmt: skip
    for name, strategy in optional.items():
        if draw(st.booleans()):
            args[name] = draw(strategy)
    return args


def check_schedule(case: tuple[dict[str, Any], list[int], list[dict[str, Any]]]) -> None:
    args, step_list, losses = case
    try:
        schedule = CurriculumSchedule(**args)
    except ValueError:
        return
    for loss in losses:
        try:
            schedule.update(loss)
        except ValueError:
            pass
    try:
        table = schedule.weights_table(np.array(step_list))
    except ValueError as exc:  # only a custom pacing may give a non-finite progress
        assert schedule.pacing_name == "custom", exc
        return
    assert table.shape == (len(step_list), len(DIFFICULTIES))
    assert np.isfinite(table).all() and (table >= 0).all()
    assert np.allclose(table.sum(axis=1), 1.0)
    one = schedule.weights(step_list[0])
    assert list(one) == list(DIFFICULTIES)
    assert np.allclose(list(one.values()), table[0])
    ordered = np.sort(np.array(step_list))
    progress = np.atleast_1d(schedule.progress(ordered))
    assert ((progress >= 0) & (progress <= 1)).all()
    if schedule.pacing_name != "custom":
        assert (np.diff(progress) >= 0).all(), "progress goes backwards as steps grow"
    if schedule.quality_breakpoints:
        floors = {q for _, q in schedule.quality_breakpoints} | {None}
        assert {schedule.min_quality(s) for s in step_list} <= floors
    if not schedule.adaptive and "path" not in args and schedule.pacing_name != "custom":
        # the default path moves to harder pairs: the mean level never drops
        levels = schedule.weights_table(ordered) @ np.arange(len(DIFFICULTIES))
        assert (np.diff(levels) >= -1e-12).all(), "the default curriculum gets easier"
        assert np.allclose(
            schedule.weights_table(np.array([0]))[0],
            list(DEFAULT_PATH[0].get(d, 0) for d in DIFFICULTIES),
        )


schedule_cases = st.tuples(
    schedule_args(),
    steps,
    st.lists(st.dictionaries(st.sampled_from(DIFFICULTIES + ("x",)), shares), max_size=3),
)


@st.composite
def order_cases(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(1, 120))
    levels = np.array(draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)), dtype=np.int8)
    qualities = None
    if draw(st.booleans()):
        qualities = np.array(
            draw(st.lists(st.floats(0, 1) | st.just(math.nan), min_size=n, max_size=n))
        )
    floor = draw(st.none() | st.floats(0, 1) | st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), max_size=3, unique_by=lambda x: x[0]))  # fmt: skip
    schedule = CurriculumSchedule(
        draw(pacing_names.filter(lambda p: p != "quadratic")),
        draw(st.integers(1, 5000)),
        min_quality=floor,
    )
    return {
        "levels": levels,
        "schedule": schedule,
        "seed": draw(st.integers(0, 2**32)),
        "epoch": draw(st.integers(0, 100)),
        "num_positions": draw(st.integers(0, 600)),
        "samples_per_step": draw(st.integers(1, 64)),
        "start_position": draw(st.integers(0, 10**6)),
        "qualities": qualities,
    }


def check_order(case: dict[str, Any]) -> None:
    schedule: CurriculumSchedule = case["schedule"]
    try:
        order = curriculum_order(**case)
    except ValueError as exc:
        assert "puts nothing" in str(exc) or "put nothing" in str(exc), exc
        return
    levels, qualities = case["levels"], case["qualities"]
    assert order.dtype == np.int64 and len(order) == case["num_positions"]
    assert ((order >= 0) & (order < len(levels))).all()
    step = (case["start_position"] + np.arange(len(order))) // case["samples_per_step"]
    for g, index in enumerate(order.tolist()):
        weights = schedule.weights(int(step[g]))
        assert weights[DIFFICULTIES[levels[index]]] > 0, "drew a difficulty the step weights 0"
        floor = schedule.min_quality(int(step[g]))
        if floor is not None and qualities is not None:
            assert qualities[index] >= floor, "drew a pair below the quality floor in force"


# -- masks ---------------------------------------------------------------------------------


def _masks_blob(codec: bytes, shape: tuple[int, int, int], payload: bytes) -> bytes:
    head = struct.pack("<8sBB", MAGIC, 1, len(codec)) + codec
    return head + struct.pack("<IIIQI", *shape, len(payload), zlib.crc32(payload)) + payload


@st.composite
def mask_blobs(draw: st.DrawFn) -> bytes:
    """Encoded masks with forged shapes and payloads whose CRC is right, so the codec runs."""
    codec = draw(st.sampled_from(sorted(MASK_CODECS)))
    kind = draw(st.sampled_from(["runs", "runs", "bitmap", "mutated", "bytes", "huge"]))
    dims = st.integers(0, 70)  # forged shapes the decoder may fill: small enough to allocate
    shape = (draw(dims), draw(dims), draw(dims))
    if kind == "huge":  # past MAX_MASK_PIXELS: refused before anything is allocated
        side = draw(st.integers(1 << 16, (1 << 32) - 1))
        return _masks_blob(codec.encode(), (side, side, draw(st.integers(2, 9))), b"")
    if kind == "bytes":
        return draw(st.binary(max_size=120))
    if kind == "mutated":
        masks = np.random.default_rng(draw(st.integers(0, 99))).random(shape) < 0.3
        blob = bytearray(encode_masks(masks, codec))
        for _ in range(draw(st.integers(1, 3))):
            blob[draw(st.integers(0, len(blob) - 1))] = draw(st.integers(0, 255))
        cut = len(_masks_blob(codec.encode(), shape, b""))
        if len(blob) >= cut:  # payload only: make the CRC and length agree again
            return _masks_blob(codec.encode(), shape, bytes(blob[cut:]))
        return bytes(blob)
    total = shape[0] * shape[1] * shape[2]
    if kind == "runs":
        runs = draw(
            st.lists(st.integers(0, 2 * total + 2) | st.integers(0, 2**32 - 1), max_size=40)
        )
        if draw(st.booleans()) and runs:  # runs that cover the shape exactly
            runs[-1] = max(0, total - sum(runs[:-1])) if sum(runs[:-1]) <= total else runs[-1]
        raw = np.array(runs, dtype="<u4").tobytes()
    else:
        raw = draw(st.binary(max_size=shape[0] * ((shape[1] * shape[2] + 7) // 8) + 2))
    if codec == "rle-lzma":
        payload = lzma.compress(raw, format=lzma.FORMAT_XZ)
    else:
        payload = zlib.compress(raw)
    if draw(st.booleans()):
        payload = payload[: draw(st.integers(0, len(payload)))] + draw(st.binary(max_size=3))
    return _masks_blob(codec.encode(), shape, payload)


_DECODE_OVERHEAD = 64 << 20
"""Memory a decode may take beyond its output and a copy of it (inflate buffers)."""


@contextlib.contextmanager
def _peak_memory() -> Iterator[list[int]]:
    """The peak of traced allocations (numpy's included) inside the block, in bytes."""
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    peak = [0]
    try:
        yield peak
    finally:
        peak[0] = tracemalloc.get_traced_memory()[1] - base
        if started:
            tracemalloc.stop()


def check_masks(blob: bytes) -> None:
    with _peak_memory() as peak:
        try:
            masks = decode_masks(blob)
        except ValueError:
            masks = None
    dims_at = 10 + blob[9] if len(blob) > 9 else len(blob)
    pixels = (
        math.prod(struct.unpack_from("<III", blob, dims_at)) if len(blob) >= dims_at + 12 else 0
    )
    allowed = 2 * pixels + 4 * len(blob) + _DECODE_OVERHEAD
    assert peak[0] <= allowed, f"decoding took {peak[0]} bytes for {pixels} pixels"
    if masks is None:
        return
    assert masks.dtype == np.bool_ and masks.shape == struct.unpack_from("<III", blob, dims_at)
    codec = blob[10 : 10 + blob[9]].decode("ascii")
    np.testing.assert_array_equal(decode_masks(encode_masks(masks, codec)), masks)


def _zero_runs_bomb() -> bytes:
    """64 MB of empty runs in 10 KB of xz for 16 M pixels: the old decoder inflated them all."""
    return _masks_blob(
        b"rle-lzma",
        (16, 1024, 1024),
        lzma.compress(bytes(64 << 20), format=lzma.FORMAT_XZ, preset=0),
    )


# -- tar samples ---------------------------------------------------------------------------

_FIELD_NAME = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)*$")
_LONG_KEY = "etsy-1234567890-handmade-sterling-silver-necklace-s000__" + "etsy-9876543210-hand-thrown-ceramic-coffee-mug-blue__mug-3"
"""Over USTAR's 100-byte names: the tar sink writes it with a PAX header."""
_KEYS = st.sampled_from(["P000_s000__P001__img0", "a", "k-1", "x_y", _LONG_KEY])
_FIELDS = st.sampled_from(["synth.mp4", "source.mp4", "target.png", "masks.pvmask", "cls", "a.b.c"])
_NAMES = st.sampled_from(
    ["../{k}.json", "/{k}.json", "{k}/../x.json", "{k}.JSON", "{k}.", "{k}.a..b", "other.json",
     "{k}.json", "{k}.synth.mp4", "{k}\\..\\x", "{k}.json/", "", "{k}.json\x00.exe"]
)  # fmt: skip
_TYPES = st.sampled_from([b"0", b"\0", b"1", b"2", b"5", b"x", b"g", b"L", b"K", b"S", b"7"])
_SIZES = st.sampled_from([-1, -512, -(2**40), 2**33, 2**63, 8**11 - 1, 0, 1, 511, 513]) | st.integers(-(2**90), 2**90)  # fmt: skip


def _shard(
    samples: list[tuple[str, list[tuple[str, bytes]]]], fmt: int
) -> tuple[bytes, list[dict[str, Any]]]:
    buffer = io.BytesIO()
    entries: list[dict[str, Any]] = []
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
        for key, members in samples:
            start = buffer.tell()
            for field, data in members:
                info = tarfile.TarInfo(f"{key}.{field}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            entries.append({"key": key, "offset": start, "end": buffer.tell()})
    return buffer.getvalue(), entries


def _set_header(raw: bytearray, offset: int, what: str, value: Any) -> None:
    """Rewrite one header field and fix the checksum, so the header still parses."""
    head = offset
    if head + 512 > len(raw):
        return
    if what == "size":
        field = (b"\x80" if value >= 0 else b"\xff") + (value % 256**11).to_bytes(11, "big")
        raw[head + 124 : head + 136] = field
    elif what in ("name", "prefix"):
        start, size = (0, 100) if what == "name" else (345, 155)
        data = value.encode("utf-8", "surrogateescape")[:size]
        raw[head + start : head + start + size] = data.ljust(size, b"\0")
    else:
        raw[head + 156 : head + 157] = value
    raw[head + 148 : head + 156] = b" " * 8
    raw[head + 148 : head + 156] = b"%06o\0 " % sum(raw[head : head + 512])


@st.composite
def tar_cases(
    draw: st.DrawFn,
) -> tuple[bytes, list[Any], list[dict[str, bytes]], bool, set[str] | None]:
    """``(shard, index entries, original members, intact, fields wanted)``."""
    samples = []
    for key in draw(st.lists(_KEYS, min_size=1, max_size=3, unique=True)):
        fields = draw(st.lists(_FIELDS, max_size=3, unique=True))
        members = [("json", json.dumps({"pair_id": key}).encode())]
        members += [(f, draw(st.binary(max_size=700))) for f in fields]
        samples.append((key, members))
    fmt = draw(st.sampled_from([tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT, tarfile.PAX_FORMAT]))
    if any(len(key) > 90 for key, _ in samples):
        fmt = tarfile.PAX_FORMAT  # the only long-name header pvtt writes (and reads)
    shard, entries = _shard(samples, fmt)
    originals = [dict(members) for _, members in samples]
    raw = bytearray(shard)
    entries_out: list[Any] = [dict(e) for e in entries]
    intact = True
    for _ in range(draw(st.integers(0, 3))):
        intact = False
        op = draw(st.sampled_from(["flip", "cut", "header", "header", "entry", "entry"]))
        if op == "flip" and raw:
            raw[draw(st.integers(0, len(raw) - 1))] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del raw[draw(st.integers(0, len(raw))) :]
        elif op == "header":
            at = draw(st.sampled_from([e["offset"] for e in entries]) | st.integers(0, len(raw) // 512).map(lambda b: b * 512))  # fmt: skip
            what = draw(st.sampled_from(["size", "name", "prefix", "type"]))
            key = samples[0][0]
            value = {"size": _SIZES, "name": _NAMES, "prefix": _NAMES, "type": _TYPES}[what]
            value = draw(value)
            _set_header(raw, at, what, value.format(k=key) if isinstance(value, str) else value)
        else:
            i = draw(st.integers(0, len(entries_out) - 1))
            junk = st.integers(-(2**65), 2**65) | st.integers(-1024, 4096) | json_scalars
            if draw(st.integers(0, 5)) == 0:
                entries_out[i] = draw(json_values)
            elif isinstance(entries_out[i], dict):
                name = draw(st.sampled_from(["key", "offset", "end"]))
                if draw(st.integers(0, 4)) == 0:
                    entries_out[i].pop(name, None)
                else:
                    entries_out[i][name] = draw(junk | _KEYS)
    want = draw(st.none() | st.sets(st.sampled_from(["json", "synth.mp4", "cls", "a.b.c"])))
    return bytes(raw), entries_out, originals, intact, want


class _RangeFS:
    """The one fsspec call the reader makes on an object store, served from bytes."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def cat_file(self, path: str, start: int, end: int) -> bytes:
        return self.data[start:end]


def _outcome(read: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return read(*args, **kwargs)
    except ShardFormatError as exc:
        assert "fuzz.tar" in str(exc), f"the error does not name the shard: {exc}"
        return ShardFormatError


def check_tar(case: tuple[bytes, list[Any], list[dict[str, bytes]], bool, set[str] | None]) -> None:
    shard, entries, originals, intact, want = case
    with tempfile.TemporaryDirectory(prefix="pvtt-fuzz-") as tmp:
        path = Path(tmp) / "fuzz.tar"
        path.write_bytes(shard)
        remote = _RangeFS(shard)
        for entry, original in zip(entries, originals, strict=True):
            local = _outcome(read_sample, path, entry, want)
            ranged = _outcome(read_sample, path, entry, want, fs=remote)
            assert local == ranged, "a local read and a ranged GET disagree"
            meta = _outcome(read_sample_json, path, entry)
            assert meta == _outcome(read_sample_json, path, entry, fs=remote)
            if intact:
                assert local == {k: v for k, v in original.items() if want is None or k in want}
                assert meta == json.loads(original["json"])
            if local is not ShardFormatError:
                assert all(_FIELD_NAME.match(f) for f in local), f"unsafe field in {list(local)}"
                assert want is None or set(local) <= want
            if meta is not ShardFormatError:
                assert isinstance(meta, dict)


def _negative_size_shard() -> tuple[bytes, list[Any], list[dict[str, bytes]], bool, set[str]]:
    """A header whose base-256 size is -512: the old reader looped on it for ever."""
    shard, entries = _shard([("k", [("json", b"{}"), ("cls", b"1")])], tarfile.GNU_FORMAT)
    raw = bytearray(shard)
    _set_header(raw, 0, "size", -512)
    return bytes(raw), entries, [{"json": b"{}", "cls": b"1"}], False, {"cls"}


# -- where ---------------------------------------------------------------------------------

_WHERE_TOKENS = st.sampled_from(
    ["passed", "difficulty", "quality_score", "pair_id", "shot_index", "=", "<>", ">=", "AND",
     "OR", "NOT", "(", ")", "'easy'", "'hard'", "''", "'", "\"", "true", "false", "1", "0.5",
     "NULL", "IS", "IN", ";", "--", "/*", "*/", "SELECT", "FROM", "pairs", "UNION", "DROP",
     "TABLE", "regexp_match(pair_id, 'a')", "read_file('/etc/passwd')", "\\", "%", ",", "LIKE",
     # backtick identifiers, dollar quotes, comments, double quotes: the dialect's corners
     "`", "`passed`", "`c'`", "`'`", "$$", "$$a'$$", "$$'$$", "#", "\n", "'it''s'", "'\\'",
     "\"easy\"", "E'x'", "x'00'", "::", "==", "!=", "||",
     # the rest of the language, so that accepted texts are varied too
     "score_overall", "score_identity", "difficulty_level", "created_at", "BETWEEN", "ILIKE",
     "-", "+", "*", "/", "-1", "2.5", "1e-3", "300", "'%a%'", "'_'", "lower(pair_id)",
     "length(pair_id)", "abs(quality_score)", "TIMESTAMP '2026-01-01 00:00:00'"]
)  # fmt: skip
_NUMBER_COLUMNS = st.sampled_from(
    ["quality_score", "score_overall", "score_identity", "shot_index", "difficulty_level",
     "QUALITY_SCORE", "`shot_index`", "fps", "frame_count"]
)  # fmt: skip
_STRING_COLUMNS = st.sampled_from(["pair_id", "difficulty", "`target_id`", "reject_reason"])
_NUMBERS = st.sampled_from(["0", "1", "-1", "2", "0.5", "0.1", "-0.25", "1e-3", "300", "2.5"])
_STRINGS = st.sampled_from(
    ["'easy'", "'hard'", "''", "'it''s'", "'\\'", "'%'", "'t%'", "'%0__%'", "'--'", "'/*'"]
)
_numbers = st.recursive(
    _NUMBER_COLUMNS | _NUMBERS,
    lambda inner: st.tuples(inner, st.sampled_from(["+", "-", "*", "/"]), inner).map(" ".join)
    | inner.map(lambda x: f"-({x})")
    | inner.map(lambda x: f"abs({x})"),
    max_leaves=4,
)
_strings = _STRING_COLUMNS | _STRINGS | _STRING_COLUMNS.map(lambda c: f"lower({c})")
_compare = st.sampled_from(["=", "<>", "<", "<=", ">", ">=", "!="])
_predicates = st.recursive(
    st.sampled_from(["passed", "NOT passed", "true", "false", "passed = NULL"])
    | st.tuples(_numbers, _compare, _numbers).map(" ".join)
    | st.tuples(_strings, _compare, _strings).map(" ".join)
    | st.tuples(_numbers, st.sampled_from(["IS NULL", "IS NOT NULL"])).map(" ".join)
    | st.tuples(_strings, st.sampled_from(["LIKE", "NOT LIKE", "ILIKE"]), _STRINGS).map(" ".join)
    | st.tuples(_STRING_COLUMNS, st.lists(_STRINGS, min_size=1, max_size=3)).map(
        lambda t: f"{t[0]} IN ({', '.join(t[1])})"
    )
    | st.tuples(_numbers, _numbers, _numbers).map(lambda t: f"{t[0]} BETWEEN {t[1]} AND {t[2]}"),
    lambda inner: st.tuples(inner, st.sampled_from(["AND", "OR"]), inner).map(" ".join)
    | inner.map(lambda p: f"NOT ({p})")
    | inner.map(lambda p: f"({p})"),
    max_leaves=5,
)
"""Well-formed predicates over the language: most are accepted, so the properties about
accepted text (printed SQL, Lance = Arrow) get exercised, not only the refusals."""
_spliced = st.tuples(_predicates, _WHERE_TOKENS, st.integers(0, 1000)).map(
    lambda t: " ".join(t[0].split(" ")[: t[2] % (t[0].count(" ") + 2)] + [t[1]])
    + " "
    + " ".join(t[0].split(" ")[t[2] % (t[0].count(" ") + 2) :])
)
where_texts = (
    st.lists(_WHERE_TOKENS, min_size=1, max_size=10).map(" ".join)
    | st.text(max_size=20)
    | _predicates
    | _spliced
)


@cache
def _where_dataset() -> BuiltDataset:
    """A Lance-only dataset of 10 pairs written by pvtt's writer; media bytes are stand-ins."""
    out = Path(tempfile.mkdtemp(prefix="pvtt-fuzz-where-")) / "out"
    common = {"build_id": "fuzz", "width": 4, "height": 4}
    clip = ClipRecord(
        clip_id=clip_id("src", 0), source_id="src", source_path="v.mp4", category="Home",
        subcategory="mug", start_frame=0, end_frame=2, frame_count=2, fps=1.0, duration_s=2.0,
        source_boxes=[(0, 0, 1, 1)] * 2, masks_codec="rle-lzma", source_video=b"v",
        background_video=b"v", masks=b"m", **common,
    )  # fmt: skip
    with DatasetWriter(out, formats=["lance"], build_id="fuzz") as writer:
        for i in range(10):
            target = f"t{i}"
            difficulty = ("easy", "medium")[i % 3 == 0]
            passed = i % 2 == 0
            product = ProductRecord(
                image_id=image_id(target, "img0"), product_id=target, image_path="p.png",
                category="Home", subcategory="vase", aspect=1.0, image=b"i", image_rgba=b"r",
                **common,
            )  # fmt: skip
            pair = PairRecord(
                pair_id=pair_id(clip.clip_id, target, "img0"), clip_id=clip.clip_id,
                source_id="src", target_id=target, target_image="p.png",
                source_category="Home", source_subcategory="mug", target_category="Home",
                target_subcategory="vase", difficulty=difficulty,
                difficulty_level=("easy", "medium").index(difficulty), quality_score=i / 10,
                passed=passed, reject_reason=None if passed else "low", frame_count=2, fps=1.0,
                duration_s=2.0, target_boxes=[(0.0, 0.0, 1.0, 1.0)] * 2, synth_video=b"s",
                **common,
            )  # fmt: skip
            writer.write(PairSample(pair=pair, clip=clip, product=product))
    return open_dataset(out)


@cache
def _where_table() -> pa.Table:
    """Every scalar column of the fuzz dataset, as Lance stores them (typed by the schema)."""
    names = [c for c in scalar_columns("pairs") if c != "target_boxes"]
    return select_pairs(_where_dataset(), PairFilter(passed=None), columns=names)


def check_where(text: str) -> None:
    """A ``where`` is refused by pvtt's parser, or it is one checked expression that
    cannot undo the structured filters, that Lance receives as printed from the checked
    tree (which parses back to itself), and that selects the same rows on Arrow (the tar
    path) as on Lance."""
    try:
        flt = PairFilter.make(difficulty="easy", passed=True, where=text)
    except WhereError:
        return
    if flt.where is not None:  # "" means no where
        tree = parse_where(flt.where)
        assert parse_where(to_sql(tree)) == tree, f"{to_sql(tree)!r} does not parse back"
    predicate = flt.predicate()
    assert predicate is not None
    try:
        table = select_pairs(_where_dataset(), flt, columns=["pair_id", "passed", "difficulty"])
    except ValueError as exc:  # Lance failed while evaluating (a division by zero)
        with contextlib.suppress(ValueError):
            evaluate(predicate, _where_table())
            raise AssertionError(f"Lance refused {flt.to_sql()!r} ({exc}); Arrow did not") from exc
        return
    rows = table.to_pylist()
    assert all(r["passed"] and r["difficulty"] == "easy" for r in rows), (
        f"where {text!r} escaped the other filters: {flt.to_sql()}"
    )
    arrow = _where_table().filter(pa.array(evaluate(predicate, _where_table())))
    on_arrow = sorted(arrow.column("pair_id").to_pylist())
    assert on_arrow == sorted(r["pair_id"] for r in rows), (
        f"{flt.to_sql()!r}: Lance and Arrow disagree"
    )


# -- the targets ---------------------------------------------------------------------------

TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target(
            "manifest",
            "manifest.json bytes: valid, mutated, random JSON, deep nesting",
            manifest_bytes(),
            check_manifest,
            examples=((_nested(100_000), False),),
        ),
        Target(
            "config",
            "build config tables: right keys with wrong values, unknown keys",
            config_tables(),
            check_config,
        ),
        Target("config_text", "build.toml text", toml_text, check_config_text),
        Target(
            "catalog",
            "products.csv rows with hostile paths, random taxonomy.yaml",
            st.tuples(catalog_rows, taxonomy_texts),
            check_catalog_case,
        ),
        Target(
            "plan",
            "sample plans: splits over ranks x workers, resume on any world size",
            plan_cases,
            check_plan,
        ),
        Target(
            "plan_arguments",
            "SamplePlan with arbitrary arguments",
            plan_argument_cases,
            check_plan_arguments,
        ),
        Target(
            "curriculum",
            "schedules with arbitrary arguments, steps and losses",
            schedule_cases,
            check_schedule,
            examples=(
                ({"pacing": "exponential", "total_steps": 100, "rate": 2000.0}, [50], []),
                ({"pacing": "linear", "total_steps": 10, "path": [{"easy": None}, {}]}, [1], []),
            ),
        ),
        Target("curriculum_order", "epoch orders under quality floors", order_cases(), check_order),
        Target(
            "masks",
            "encoded masks with forged shapes and CRC-valid payloads",
            mask_blobs(),
            check_masks,
            examples=(_zero_runs_bomb(),),
        ),
        Target(
            "tar",
            "tar shards and index entries: flipped, cut, forged headers",
            tar_cases(),
            check_tar,
            examples=(_negative_size_shard(),),
        ),
        Target(
            "where",
            "--where text: refused, or checked, printed for Lance, and equal on Lance and Arrow",
            where_texts,
            check_where,
            examples=(
                "true) OR (true",
                "`c'` = 'a' ) OR true OR ( `'` = 'x'",
                "$$a'$$ ) OR true OR ( c = $$'$$",
                "passed = false OR true",
            ),
        ),
    )  # fmt: skip
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pvtt.tools.fuzz", description="Run pvtt's fuzz targets and count cases."
    )
    parser.add_argument("--examples", type=int, default=2000, help="cases per target")
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated names")
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed (default random)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.targets.split(",") if n.strip()]
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        parser.error(f"unknown targets {unknown}; known: {list(TARGETS)}")
    failed = []
    tally: Counter[str] = Counter()
    for name in names:
        start = time.perf_counter()
        try:
            run(TARGETS[name], args.examples, seed=args.seed, tally=tally)
            result = "ok"
        except Exception as exc:  # noqa: BLE001 - a failing property is reported, not raised
            result = "FAILED"
            failed.append(name)
            for error in getattr(exc, "exceptions", [exc]):
                first = (str(error).splitlines() or [""])[0][:200]
                print(f"{name}: {type(error).__name__}: {first}", file=sys.stderr)
                for note in getattr(error, "__notes__", []):
                    note = note.strip()
                    print(f"  {note if len(note) < 800 else note[:800] + ' ...'}", file=sys.stderr)
        took = time.perf_counter() - start
        print(f"{name:18s} {tally[name]:>9d} cases {took:8.1f} s  {result}", flush=True)
    print(f"{'total':18s} {sum(tally.values()):>9d} cases; {len(failed)} target(s) failed {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
