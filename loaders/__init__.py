"""Read side of pvtt: query, stream and resume training pairs (no builder code needed).

The names below are imported on first use (PEP 562), so a command that only reads a
manifest or queries Lance does not pay for torch's import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pvtt.loaders.curriculum import CurriculumSchedule
    from pvtt.loaders.dataset import PairDataset
    from pvtt.loaders.forking import LanceForkError
    from pvtt.loaders.query import PairFilter
    from pvtt.loaders.split import split
    from pvtt.loaders.transfer import collate_samples

_EXPORTS = {
    "collate_samples": "pvtt.loaders.transfer",
    "CurriculumSchedule": "pvtt.loaders.curriculum",
    "LanceForkError": "pvtt.loaders.forking",
    "PairDataset": "pvtt.loaders.dataset",
    "PairFilter": "pvtt.loaders.query",
    "split": "pvtt.loaders.split",
}

__all__ = [
    "CurriculumSchedule",
    "collate_samples",
    "LanceForkError",
    "PairDataset",
    "PairFilter",
    "split",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pvtt.loaders' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
