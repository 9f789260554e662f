"""Read side of pvtt: query, stream and resume training pairs (no builder code needed)."""

from pvtt.loaders.curriculum import CurriculumSchedule
from pvtt.loaders.dataset import PairDataset
from pvtt.loaders.query import PairFilter
from pvtt.loaders.split import split

__all__ = ["CurriculumSchedule", "PairDataset", "PairFilter", "split"]
