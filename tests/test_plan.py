"""The epoch sample plan: exact splits over ranks and workers, resume, and purity."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pvtt.loaders.plan import SamplePlan, epoch_order


def dataloader_order(worker_lists: list[np.ndarray], batch_size: int) -> list[int]:
    """What an in-order DataLoader over an IterableDataset returns, given each worker's items.

    Mirrors ``_MultiProcessingDataLoaderIter``: each task goes to the next active
    worker in a fixed cycle; a worker answers with its next ``batch_size`` items or,
    when it has none, stops and leaves the cycle; results come back in task order.
    """
    batches = [
        [list(items[i : i + batch_size]) for i in range(0, len(items), batch_size)]
        for items in worker_lists
    ]
    taken = [0] * len(batches)
    active = [True] * len(batches)
    cycle = itertools.cycle(range(len(batches)))
    out: list[int] = []
    while any(active):
        worker = next(w for w in cycle if active[w])
        if taken[worker] < len(batches[worker]):
            out.extend(batches[worker][taken[worker]])
            taken[worker] += 1
        else:
            active[worker] = False
    return out


def rank_plans(plan: SamplePlan) -> list[SamplePlan]:
    return [dataclasses.replace(plan, rank=r) for r in range(plan.world_size)]


plans = st.builds(
    SamplePlan,
    num_samples=st.integers(0, 80),
    seed=st.integers(0, 2**32),
    epoch=st.integers(0, 5),
    shuffle=st.booleans(),
    world_size=st.integers(1, 5),
    num_workers=st.integers(0, 4),
    batch_size=st.integers(1, 4),
    equal_per_rank=st.booleans(),
)


def test_epoch_order_is_a_seeded_permutation() -> None:
    assert epoch_order(7, seed=3, epoch=1, shuffle=False).tolist() == list(range(7))
    a = epoch_order(50, seed=3, epoch=1, shuffle=True)
    assert sorted(a.tolist()) == list(range(50))
    assert a.dtype == np.int64
    assert np.array_equal(a, epoch_order(50, seed=3, epoch=1, shuffle=True))
    assert not np.array_equal(a, epoch_order(50, seed=3, epoch=2, shuffle=True))
    assert not np.array_equal(a, epoch_order(50, seed=4, epoch=1, shuffle=True))
    assert epoch_order(0, seed=0, epoch=0, shuffle=True).size == 0


@settings(max_examples=300, deadline=None)
@given(plan=plans)
def test_ranks_and_workers_split_the_epoch_exactly(plan: SamplePlan) -> None:
    n, world = plan.num_samples, plan.world_size
    order = plan.global_order
    per_rank = []
    for rank_plan in rank_plans(plan):
        workers = [rank_plan.worker_positions(w) for w in range(max(plan.num_workers, 1))]
        # The DataLoader hands the workers' batches back in exactly the rank's order.
        assert dataloader_order(workers, plan.batch_size) == rank_plan.rank_positions().tolist()
        per_rank.append(rank_plan.rank_positions())
    counts = [len(p) for p in per_rank]
    everything = Counter(np.concatenate(per_rank).tolist())
    if plan.equal_per_rank:
        expected = -(-n // world) if n else 0
        assert counts == [expected] * world
        pad = expected * world - n
        assert everything == Counter(order.tolist() + [order[i % n] for i in range(pad)])
    else:
        assert everything == Counter(range(n))
        assert max(counts) - min(counts) <= 1
        assert counts == sorted(counts, reverse=True)


@settings(max_examples=300, deadline=None)
@given(
    plan=plans,
    new_world=st.integers(1, 5),
    first=st.floats(0, 1),
    second=st.floats(0, 1),
)
def test_resume_with_any_world_size_yields_exactly_the_rest(
    plan: SamplePlan, new_world: int, first: float, second: float
) -> None:
    """Stop after k samples per rank, resume on another world size, stop again, finish."""
    yielded: list[int] = []
    current = plan
    for fraction, world in ((first, plan.world_size), (second, new_world), (1.0, 3)):
        current = dataclasses.replace(current, world_size=world, rank=0)
        ranks = rank_plans(current)
        counts = [len(r.rank_positions()) for r in ranks]
        if current.equal_per_rank:
            assert len(set(counts)) == 1
        # Lockstep: every rank yields the same k; the last round may be short.
        k = min(counts) if fraction < 1 else counts[0]
        k = round(fraction * k) if fraction < 1 else k
        for r in ranks:
            yielded += r.rank_positions()[:k].tolist()
            if fraction < 1:  # every rank in lockstep agrees on the new state
                assert r.advanced(k).consumed == ranks[0].advanced(k).consumed
        current = ranks[0].advanced(k)
    n = plan.num_samples
    assert current.consumed == len(plan.global_order)
    assert current.rank_positions().size == 0
    if plan.equal_per_rank:
        assert set(yielded) == set(range(n))
        assert len(yielded) - n <= (plan.world_size - 1) + (new_world - 1) + 2
    else:
        assert Counter(yielded) == Counter(range(n))


def test_three_ranks_two_workers_resume_yields_the_rest() -> None:
    """The issue's case: 3 ranks x 2 workers, several k, with and without shuffle."""
    for shuffle, equal, k in itertools.product((False, True), (False, True), (0, 1, 4, 6, 7)):
        plan = SamplePlan(
            20,
            seed=11,
            epoch=2,
            shuffle=shuffle,
            world_size=3,
            num_workers=2,
            batch_size=2,
            equal_per_rank=equal,
        )
        ranks = rank_plans(plan)
        seen = [r.rank_positions()[:k].tolist() for r in ranks]
        resumed = rank_plans(ranks[0].advanced(k))
        rest = [r.rank_positions().tolist() for r in resumed]
        for before, after, full in zip(seen, rest, ranks, strict=True):
            assert before + after == full.rank_positions().tolist()


def test_advanced_and_constructor_refuse_impossible_states() -> None:
    plan = SamplePlan(10, world_size=3, rank=2)
    assert len(plan.rank_positions()) == 3
    with pytest.raises(ValueError, match="yielded 4 samples but had only 3"):
        plan.advanced(4)
    with pytest.raises(ValueError, match="rank 3 is outside world_size 3"):
        SamplePlan(10, world_size=3, rank=3)
    with pytest.raises(ValueError, match="consumed 11 is past the end"):
        SamplePlan(10, consumed=11)
    with pytest.raises(ValueError, match="outside range"):
        SamplePlan(3, order=np.array([0, 3]))
    with pytest.raises(ValueError, match="1-D integer"):
        SamplePlan(3, order=np.array([0.5]))
    with pytest.raises(ValueError, match="worker 2 is outside num_workers 2"):
        SamplePlan(3, num_workers=2).worker_positions(2)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        SamplePlan(3, batch_size=0)


def test_given_order_replaces_the_shuffle_and_may_repeat() -> None:
    order = np.array([2, 2, 0, 1, 2])
    plan = SamplePlan(3, world_size=2, rank=1, order=order, shuffle=True)
    assert plan.rank_positions().tolist() == [2, 1]
    assert plan.advanced(1).consumed == 2
    order[0] = 1  # the plan keeps its own copy
    assert plan.global_order[0] == 2


def test_fingerprint_names_the_epoch_not_the_layout() -> None:
    base = SamplePlan(30, seed=1, epoch=1, shuffle=True)
    same = {
        dataclasses.replace(base, world_size=4, rank=3, num_workers=2, batch_size=3).fingerprint(),
        dataclasses.replace(base, consumed=7, equal_per_rank=True).fingerprint(),
        base.fingerprint(),
    }
    assert len(same) == 1
    others = [
        dataclasses.replace(base, seed=2),
        dataclasses.replace(base, epoch=2),
        dataclasses.replace(base, shuffle=False),
        dataclasses.replace(base, num_samples=31),
        dataclasses.replace(base, order=base.global_order),
        dataclasses.replace(base, order=base.global_order[::-1].copy()),
    ]
    prints = [p.fingerprint() for p in others]
    assert len(set(prints) | same) == len(prints) + 1


FRESH_PROCESS = """
import hashlib, json, sys
from pvtt.loaders.plan import SamplePlan
out = {}
for args in json.loads(sys.argv[1]):
    plan = SamplePlan(**args)
    out[json.dumps(args, sort_keys=True)] = [
        plan.fingerprint(),
        hashlib.sha256(plan.worker_positions(1).tobytes()).hexdigest(),
    ]
print(json.dumps(out))
"""


def test_a_fresh_process_makes_the_same_plan() -> None:
    cases = [
        dict(
            num_samples=1000,
            seed=5,
            epoch=3,
            shuffle=True,
            world_size=3,
            rank=r,
            num_workers=2,
            batch_size=4,
            equal_per_rank=True,
            consumed=300,
        )
        for r in range(3)
    ]
    here = {
        json.dumps(args, sort_keys=True): [
            SamplePlan(**args).fingerprint(),
            hashlib.sha256(SamplePlan(**args).worker_positions(1).tobytes()).hexdigest(),
        ]
        for args in cases
    }
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    result = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, json.dumps(cases)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=120,
    )
    assert json.loads(result.stdout) == here


class PlannedRange(IterableDataset):
    """Yields the plan's sample indices; worker 0 is slow so the others run dry first."""

    def __init__(self, plan: SamplePlan, slow_worker: bool) -> None:
        self.plan = plan
        self.slow_worker = slow_worker

    def __iter__(self):
        info = get_worker_info()
        worker = 0 if info is None else info.id
        plan = dataclasses.replace(self.plan, num_workers=1 if info is None else info.num_workers)
        for index in plan.worker_positions(worker).tolist():
            if self.slow_worker and worker == 0:
                time.sleep(0.002)
            yield index


@pytest.mark.parametrize(
    ("num_samples", "num_workers", "batch_size", "slow_worker"),
    [
        (0, 2, 1, False),
        (1, 2, 1, True),
        (23, 2, 1, True),
        (23, 2, 3, True),
        (17, 2, 2, False),
        (13, 2, 4, True),
    ],
)
def test_a_real_dataloader_returns_the_rank_order(
    num_samples: int, num_workers: int, batch_size: int, slow_worker: bool
) -> None:
    plan = SamplePlan(
        num_samples,
        seed=2,
        shuffle=True,
        world_size=2,
        rank=1,
        batch_size=batch_size,
        consumed=min(num_samples, 4),
    )
    loader = DataLoader(
        PlannedRange(plan, slow_worker),
        batch_size=batch_size,
        num_workers=num_workers,
        multiprocessing_context="fork",
    )
    got = [int(x) for batch in loader for x in torch.as_tensor(batch).reshape(-1)]
    assert got == plan.rank_positions().tolist()
    in_process = DataLoader(PlannedRange(plan, False), batch_size=batch_size, num_workers=0)
    assert [int(x) for batch in in_process for x in batch] == got
