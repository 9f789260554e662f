"""Forked processes and Lance: plan before the fork, so that children never need Lance.

Once a process has started Lance's runtime, a child forked from it must not run Lance
(:mod:`pvtt.loaders.lance_blobs` says what happens). DataLoader workers are such
children under the default ``fork`` start method, and training scripts commonly touch
Lance in the main process first (``len(ds)``, a look at the first sample, a query).

So, just before any fork of a process that has started Lance, every registered object
prepares itself (a :class:`~pvtt.loaders.dataset.PairDataset` plans its reads, which needs
Lance, here in the parent): the child inherits the plan and reads with plain file reads.
Whether the parent had started Lance is kept for the child, which then refuses, with an
error naming the fix, to open Lance itself.
"""

from __future__ import annotations

import os
import weakref
from typing import Protocol

LANCE_THREAD_PREFIX = "lance"
"""Lance's runtime threads are named ``lance_background`` (pylance 14)."""


class LanceForkError(RuntimeError):
    """Lance would be needed in a process forked from one that had started Lance."""


class ForkPreparer(Protocol):
    def prepare_for_fork(self) -> None:
        """Do now, in the parent, what a forked child could not do; must not raise."""


_preparers: weakref.WeakSet[ForkPreparer] = weakref.WeakSet()
_used_in: int | None = None
_lance_at_fork = False
_forked_from_lance = False


def note_lance_used() -> None:
    """Record that this process is about to start (or has started) Lance."""
    global _used_in
    _used_in = os.getpid()


def lance_running() -> bool:
    """Whether this process has started Lance: through pvtt (:func:`note_lance_used`), or
    by any code, seen as Lance's runtime threads (Linux; elsewhere pvtt's use only)."""
    if _used_in == os.getpid():
        return True
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return False
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/comm") as comm:
                if comm.read().startswith(LANCE_THREAD_PREFIX):
                    return True
        except OSError:
            continue  # the thread ended meanwhile
    return False


def forked_from_lance() -> bool:
    """Whether this process descends by fork from one that had started Lance."""
    return _forked_from_lance


def prepare_before_fork(obj: ForkPreparer) -> None:
    """Call ``obj.prepare_for_fork()`` before each fork of a process running Lance, while
    ``obj`` lives."""
    _preparers.add(obj)


def _before_fork() -> None:
    global _lance_at_fork
    _lance_at_fork = _forked_from_lance or lance_running()
    if _lance_at_fork:
        for obj in list(_preparers):
            obj.prepare_for_fork()


def _in_child() -> None:
    global _forked_from_lance
    _forked_from_lance = _lance_at_fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_child=_in_child)
