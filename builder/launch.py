"""One build process per GPU on a node (``pvtt build --gpus all``), then one merge.

Each process is an ordinary rank of a multi-rank build: it sees one GPU
(``CUDA_VISIBLE_DEVICES``), takes the clips ``i % world == rank``, and commits its own
manifest; when all have finished the parent merges them. A failed rank is reported
with its exit code and can be re-run alone; the merge is refused until it finishes.

The ranks of one node share its CPUs: each is told how many ranks the node runs
(``LOCAL_WORLD_SIZE``, as torchrun tells its own), and a rank whose config names no
``workers`` makes pairs on its share of the CPUs (:func:`default_workers`), so N ranks
do not each start a pool sized to the whole node.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence


def visible_gpus(spec: str) -> list[str]:
    """GPU ids for ``all`` or a count ``N`` (of the GPUs this process may see)."""
    import torch

    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [v.strip() for v in visible.split(",") if v.strip()] if visible else [str(i) for i in range(available)]
    if spec == "all":
        wanted = len(ids)
    else:
        try:
            wanted = int(spec)
        except ValueError:
            raise ValueError(f"--gpus takes 'all' or a number, not {spec!r}") from None
    if wanted < 1 or wanted > len(ids):
        raise ValueError(f"--gpus {spec}: {len(ids)} GPU(s) visible here")
    return ids[:wanted]


def local_device(device: str) -> str:
    """``cuda`` as this rank's own GPU under torchrun (``LOCAL_RANK``); else unchanged."""
    local = os.environ.get("LOCAL_RANK")
    if device == "cuda" and local is not None and "CUDA_VISIBLE_DEVICES" not in os.environ:
        return f"cuda:{int(local)}"
    return device


THREAD_WORKERS_MAX = 8
"""Pair threads of one process at most: past this the GIL, not the cores, bounds them."""


def node_cpus() -> int:
    """CPUs this process may run on (its affinity, which a container or taskset narrows)."""
    return len(os.sched_getaffinity(0))


def local_ranks() -> int:
    """Build processes on this node: ``LOCAL_WORLD_SIZE`` (torchrun, ``pvtt build --gpus``)
    or a plain ``SLURM_NTASKS_PER_NODE``; else 1."""
    for name in ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE"):
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


def rank_workers(pair_pool: str, cpus: int, ranks: int) -> int:
    """Pair workers of one of ``ranks`` ranks sharing ``cpus``: its share of them (at most
    :data:`THREAD_WORKERS_MAX` threads; processes take the whole share)."""
    share = max(1, cpus // max(1, ranks))
    return share if pair_pool == "processes" else min(THREAD_WORKERS_MAX, share)


def default_workers(pair_pool: str) -> int:
    """Pair workers of a rank whose config names none: :func:`rank_workers` of this node."""
    return rank_workers(pair_pool, node_cpus(), local_ranks())


def launch_per_gpu(build_args: Sequence[str], gpus: list[str]) -> list[int]:
    """Run ``pvtt build *build_args`` once per GPU as ranks; return their exit codes."""
    world = len(gpus)
    procs = []
    for rank, gpu in enumerate(gpus):
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu, "RANK": str(rank),
               "WORLD_SIZE": str(world), "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": str(world)}
        cmd = [sys.executable, "-m", "pvtt.tools.cli", "build", *build_args, "--device", "cuda",
               "--rank", str(rank), "--world-size", str(world)]
        procs.append(subprocess.Popen(cmd, env=env))
    return [p.wait() for p in procs]
