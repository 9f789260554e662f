"""The sample plan of an epoch: which selected pair each rank and DataLoader worker yields.

The plan is a pure function of its fields, so a fresh process, a resumed run and
every rank compute the same thing without talking to each other. It does no IO:
the dataset sorts its selection canonically (by ``pair_id``) and hands over the
count; the plan answers with indices into that selection.

Consumption model (written down because resume depends on it):

* The epoch has one global order (:func:`epoch_order`, or a curriculum order).
* ``consumed`` global positions are already done. The remaining positions
  ``order[consumed:]`` are dealt round-robin: remaining position ``i`` goes to rank
  ``i % world_size``. Under lockstep DDP every rank yields the same count, so after
  each rank yielded ``k`` samples exactly the first ``k * world_size`` remaining
  positions are done: ``consumed += k * world_size`` (:meth:`SamplePlan.advanced`).
  Restoring with another world size deals the same remaining positions again, so
  nothing repeats and nothing is lost.
* ``equal_per_rank=True`` pads the remaining positions to a multiple of
  ``world_size`` by repeating positions from the start of the epoch order (as
  ``DistributedSampler`` does), so every rank yields the same count and DDP never
  waits on a rank that ran dry. At most ``world_size - 1`` samples repeat.
* Within a rank, the rank's list is cut into chunks of ``batch_size`` and chunk
  ``c`` goes to worker ``c % num_workers``. A ``DataLoader`` over an
  ``IterableDataset`` asks workers for batches round-robin and returns them in
  order, so its output is exactly the rank's list, and what a rank has yielded is
  always a prefix of it. Only the last chunk can be short, and every worker runs
  dry only after all chunks were asked for, so the tail keeps that order too.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np

# Mixed into every seed so the shuffle never shares a random stream with the
# curriculum draws made from the same (seed, epoch).
SHUFFLE_STREAM = 0x5348

_FINGERPRINT_VERSION = 1


def _check_count(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"sample plan: {name} must be an int >= {minimum}, got {value!r}")


def epoch_order(num_samples: int, *, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """The global order of one epoch: a permutation of ``range(num_samples)``.

    Seeded by ``(seed, epoch)`` only, so every epoch has its own order and any
    process recomputes it without state.
    """
    _check_count("num_samples", num_samples, 0)
    _check_count("seed", seed, 0)
    _check_count("epoch", epoch, 0)
    if not shuffle:
        return np.arange(num_samples, dtype=np.int64)
    rng = np.random.default_rng([int(seed), int(epoch), SHUFFLE_STREAM])
    return rng.permutation(num_samples).astype(np.int64, copy=False)


@dataclass(frozen=True, eq=False)
class SamplePlan:
    """One rank's view of one epoch, after ``consumed`` global positions.

    ``order`` replaces the shuffled order (a curriculum order from
    :func:`pvtt.loaders.curriculum.curriculum_order`); it may be any length and
    may repeat indices, all in ``range(num_samples)``. ``num_workers=0`` (the
    DataLoader's main process) is the same as one worker. ``batch_size`` must be
    the DataLoader's ``batch_size`` (1 when it is ``None``).
    """

    num_samples: int
    seed: int = 0
    epoch: int = 0
    shuffle: bool = False
    world_size: int = 1
    rank: int = 0
    num_workers: int = 1
    batch_size: int = 1
    equal_per_rank: bool = False
    consumed: int = 0
    order: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        _check_count("num_samples", self.num_samples, 0)
        _check_count("seed", self.seed, 0)
        _check_count("epoch", self.epoch, 0)
        _check_count("world_size", self.world_size, 1)
        _check_count("rank", self.rank, 0)
        _check_count("num_workers", self.num_workers, 0)
        _check_count("batch_size", self.batch_size, 1)
        _check_count("consumed", self.consumed, 0)
        if self.rank >= self.world_size:
            raise ValueError(
                f"sample plan: rank {self.rank} is outside world_size {self.world_size}"
            )
        if self.order is not None:
            order = np.asarray(self.order)
            if order.ndim != 1 or not (order.size == 0 or np.issubdtype(order.dtype, np.integer)):
                raise ValueError(
                    f"sample plan: order must be a 1-D integer array, got {order.dtype} "
                    f"with shape {order.shape}"
                )
            if order.size and (order.min() < 0 or order.max() >= self.num_samples):
                raise ValueError(
                    f"sample plan: order holds indices outside range({self.num_samples})"
                )
            order = order.astype(np.int64, copy=True)
            order.flags.writeable = False
            object.__setattr__(self, "order", order)
        if self.consumed > len(self.global_order):
            raise ValueError(
                f"sample plan: consumed {self.consumed} is past the end of the epoch "
                f"({len(self.global_order)} positions)"
            )

    @cached_property
    def global_order(self) -> np.ndarray:
        """The whole epoch's order, consumed positions included."""
        if self.order is not None:
            return self.order
        order = epoch_order(
            self.num_samples, seed=self.seed, epoch=self.epoch, shuffle=self.shuffle
        )
        order.flags.writeable = False
        return order

    @cached_property
    def remaining(self) -> np.ndarray:
        """Positions not yet consumed, padded for ``equal_per_rank``, before dealing to ranks."""
        order = self.global_order
        rest = order[self.consumed :]
        if not self.equal_per_rank or len(order) == 0:
            return rest
        pad = -len(rest) % self.world_size
        return np.concatenate([rest, order[np.arange(pad) % len(order)]])

    def rank_positions(self) -> np.ndarray:
        """Sample indices this rank yields from ``consumed`` on, in DataLoader output order."""
        return self.remaining[self.rank :: self.world_size]

    def worker_positions(self, worker: int) -> np.ndarray:
        """Sample indices DataLoader worker ``worker`` yields, in its own order."""
        workers = max(self.num_workers, 1)
        if isinstance(worker, bool) or not isinstance(worker, (int, np.integer)):
            raise ValueError(f"sample plan: worker must be an int, got {worker!r}")
        if not 0 <= worker < workers:
            raise ValueError(f"sample plan: worker {worker} is outside num_workers {workers}")
        mine = self.rank_positions()
        chunk = np.arange(len(mine)) // self.batch_size
        return mine[chunk % workers == worker]

    def advanced(self, yielded: int) -> SamplePlan:
        """The plan after this rank yielded ``yielded`` more samples.

        Exact when every rank yielded the same count (lockstep DDP, or
        ``equal_per_rank``). Without padding, the last round is short on the higher
        ranks: take the state from rank 0, which yields the most.
        """
        _check_count("yielded", yielded, 0)
        have = len(self.rank_positions())
        if yielded > have:
            raise ValueError(
                f"sample plan: rank {self.rank} yielded {yielded} samples but had only {have} left"
            )
        consumed = min(self.consumed + yielded * self.world_size, len(self.global_order))
        return replace(self, consumed=consumed)

    def fingerprint(self) -> str:
        """Hex digest of what fixes the epoch's order; equal across ranks, workers and resumes.

        World size, rank, workers, batch size and ``consumed`` are left out on
        purpose: a resume may change them. The dataset should hash its own version
        and filter together with this.
        """
        head = {
            "v": _FINGERPRINT_VERSION,
            "num_samples": int(self.num_samples),
            "seed": int(self.seed),
            "epoch": int(self.epoch),
            "shuffle": bool(self.shuffle) if self.order is None else None,
        }
        digest = hashlib.sha256(json.dumps(head, sort_keys=True).encode())
        if self.order is not None:
            digest.update(self.order.astype("<i8").tobytes())
        return digest.hexdigest()
