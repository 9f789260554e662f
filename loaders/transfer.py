"""How samples cross from DataLoader workers to the main process: each shared storage
once, and back into the worker's hands when the main process has let go of it.

Two costs bound a worker's rate once its reads are fast, both measured on the 2-core box
with ~1.45 MB undecoded samples:

- **Hand-overs.** Pickled as plain tensors, every tensor of a sample sends the main
  process its own file descriptor, views of one storage included (torch's reduction
  hands each tensor's storage over separately), and each hand-over is a round trip to the
  worker (~1 ms with 2 workers). :func:`collate_samples` and :class:`SampleDict` send each
  distinct storage once with every tensor's place in it, and the main process rebuilds
  the same dicts, each tensor a view of the storage it received.
- **Fresh pages.** A new shared storage has no pages: making and filling 1.45 MB of them
  took 0.40 ms, reading the sample into it 0.26 ms more. A worker's :class:`BufferPool`
  keeps the storages it sent and writes the next samples into one the main process no
  longer holds: the main process watches each storage it received with a weak
  reference and clears the storage's flag in the pool's shared flag array once the last
  tensor on it is gone, so a buffer is never written while anything can read it. A
  storage that crossed some other way (a collate of the user's own) is simply never
  flagged free, and the pool allocates another.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.multiprocessing.reductions import StorageWeakRef

from pvtt.loaders.shared import POOLED, block, in_worker, worker_pool

ALIGN = 64
"""Byte alignment of each block an :class:`Arena` cuts (any dtype can view it)."""


class Arena:
    """Blocks for the samples of one DataLoader batch, cut one after another from pooled
    storages, so that a batch collated by :func:`collate_samples` crosses as one
    descriptor.

    A storage is sized for the samples left in the batch from the first one's size; a
    block that does not fit starts another. :meth:`sample_done` counts the batch's
    samples, and the last one closes the storage: a batch never shares a buffer with the
    next, so each buffer goes back to the pool as soon as its batch is dropped.
    Outside a worker blocks are ordinary memory, which nothing copies.
    """

    def __init__(self, batch_size: int) -> None:
        self.batch_size = max(1, int(batch_size))
        self._storage: torch.UntypedStorage | None = None
        self._fresh = False
        self._used = 0
        self._left = self.batch_size

    def sample_done(self) -> None:
        """One sample of the batch was handed out; after the batch's last, a new storage."""
        self._left -= 1
        if self._left <= 0:
            self._storage, self._used, self._left = None, 0, self.batch_size

    def alloc(self, nbytes: int) -> torch.Tensor:
        """A 1-D uint8 block of ``nbytes``: a pooled shared storage in a DataLoader worker,
        ordinary memory elsewhere."""
        nbytes = int(nbytes)
        if nbytes == 0 or not in_worker():
            return torch.empty((nbytes,), dtype=torch.uint8)
        start = -(-self._used // ALIGN) * ALIGN
        if self._storage is None or start + nbytes > self._storage.nbytes():
            size = nbytes + (self._left - 1) * (nbytes + nbytes // 4)
            self._storage, self._fresh = worker_pool().take(size)
            start = 0
        self._used = start + nbytes
        return block(self._storage, start, nbytes, self._fresh)


# -- packing (worker side) ---------------------------------------------------------------


class _Place(tuple):
    """Where a tensor lies: (storage number, offset in elements, shape, stride, dtype)."""

    def __new__(cls, *fields: Any) -> _Place:
        return super().__new__(cls, fields)

    def __reduce__(self) -> tuple[Any, ...]:
        return _Place, tuple(self)


def _pack(samples: Sequence[dict[str, Any]]) -> tuple[Any, ...]:
    storages: list[torch.Tensor] = []
    owners: list[tuple[str, int] | None] = []
    announce: dict[str, torch.Tensor] = {}
    numbers: dict[int, int] = {}
    packed = []
    for sample in samples:
        fields: dict[str, Any] = {}
        for name, value in sample.items():
            if isinstance(value, torch.Tensor) and value.device.type == "cpu":
                storage = value.untyped_storage()
                key = storage.data_ptr()
                if key not in numbers:
                    numbers[key] = len(storages)
                    storages.append(
                        torch.empty(0, dtype=torch.uint8).set_(storage, 0, (storage.nbytes(),))
                    )
                    pooled = POOLED.get(key)
                    owners.append((pooled[0].token, pooled[1]) if pooled else None)
                    if pooled and not pooled[0].announced:
                        pooled[0].announced = True
                        announce[pooled[0].token] = pooled[0].flags
                value = _Place(
                    numbers[key],
                    value.storage_offset(),
                    tuple(value.shape),
                    tuple(value.stride()),
                    value.dtype,
                )
            fields[name] = value
        packed.append(fields)
    return storages, owners, announce, packed


class SampleDict(dict):
    """A sample made in a worker: a dict that pickles as its storages plus each tensor's
    place, and arrives as a plain dict."""

    def __reduce__(self) -> tuple[Any, ...]:
        return _unpack_one, _pack([self])

    def __copy__(self) -> SampleDict:
        """A shallow copy of the same kind (DataLoader's ``default_convert`` copies samples;
        without this, ``copy.copy`` would go through :meth:`__reduce__`)."""
        return SampleDict(self)


class _SampleList(list):
    """A batch collated in a worker; arrives as a plain list of plain dicts."""

    def __reduce__(self) -> tuple[Any, ...]:
        return _unpack, _pack(self)

    def __copy__(self) -> _SampleList:
        return _SampleList(self)


def collate_samples(samples: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``collate_fn`` for a DataLoader of pvtt samples of unequal sizes (``decode=False``):
    the batch as a list of sample dicts, as ``collate_fn=list`` gives, sent from a worker
    as one descriptor per distinct storage (one per batch when the dataset's
    ``batch_size`` is the DataLoader's) and its buffers reused after the main process
    drops them. Outside a worker the list itself."""
    if not in_worker():
        return list(samples)
    return _SampleList(samples)


# -- unpacking (main side) ---------------------------------------------------------------

KEPT_POOLS = 256
"""Pools whose flags the main process keeps mapped (one a worker process); older idle ones
are dropped (a storage of a dropped pool is never flagged free again: its worker has
ended long since)."""
_pools: dict[str, np.ndarray] = {}
_watched: list[tuple[StorageWeakRef, str, int]] = []
_lock = threading.Lock()


def _release_expired() -> None:
    """Clear the pool flag of every received storage nothing here references any more."""
    keep = []
    for ref, token, slot in _watched:
        if ref.expired():
            flags = _pools.get(token)
            if flags is not None:
                flags[slot] = 0
        else:
            keep.append((ref, token, slot))
    _watched[:] = keep


def _forget_idle_pools() -> None:
    """Drop the oldest pools none of whose storages is watched, past :data:`KEPT_POOLS`
    (each worker process brings one; non-persistent workers, each epoch)."""
    if len(_pools) <= KEPT_POOLS:
        return
    watched = {token for _, token, _ in _watched}
    for token in [t for t in _pools if t not in watched][: len(_pools) - KEPT_POOLS]:
        del _pools[token]


def _unpack(
    storages: list[torch.Tensor],
    owners: list[tuple[str, int] | None],
    announce: dict[str, torch.Tensor],
    packed: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """The samples again, in the receiving process: each tensor a view of its storage."""
    with _lock:
        _release_expired()
        for token, flags in announce.items():
            _pools[token] = flags.numpy()  # the array's base keeps the tensor, so its mapping
            _forget_idle_pools()
        for base, owner in zip(storages, owners, strict=True):
            if owner is not None and owner[0] in _pools:
                _watched.append((StorageWeakRef(base.untyped_storage()), *owner))
    out = []
    for fields in packed:
        sample = {}
        for name, value in fields.items():
            if isinstance(value, _Place):
                number, offset, shape, stride, dtype = value
                storage = storages[number].untyped_storage()
                value = torch.empty(0, dtype=dtype).set_(storage, offset, shape, stride)
            sample[name] = value
        out.append(sample)
    return out


def _unpack_one(*packed: Any) -> dict[str, Any]:
    return _unpack(*packed)[0]
