"""The composite scorer merges members; later non-null scores win."""

from __future__ import annotations

import numpy as np
import pytest

from pvtt.builder.backends.composite_scorer import CompositeScorer, member_configs
from pvtt.builder.registry import create_backend
from pvtt.builder.stages.protocols import BackendInfo, ScoringInput
from pvtt.schemas.config import BackendConfig, ConfigError


class _Fixed:
    def __init__(self, name: str, scores: dict) -> None:
        self.info = BackendInfo(kind="scorer", name=name, version="1")
        self.scores = scores

    def score(self, sample: ScoringInput) -> dict:
        return dict(self.scores)


def test_later_members_win_unless_null() -> None:
    sample = ScoringInput(synth=np.zeros((2, 8, 8, 3), np.uint8), background=np.zeros((2, 8, 8, 3), np.uint8),
                          cutout=np.zeros((4, 4, 4), np.uint8), boxes=np.zeros((2, 4), np.float32))
    scorer = CompositeScorer([
        _Fixed("a", {"identity": 0.2, "temporal": 0.5, "lighting": 0.6, "overall": None}),
        _Fixed("b", {"identity": 0.9, "lighting": None, "overall": 0.4}),
    ])
    assert scorer.score(sample) == {"identity": 0.9, "temporal": 0.5, "lighting": 0.6, "overall": 0.4}
    assert [m["backend"] for m in scorer.info.params["members"]] == ["a", "b"]


def test_config_errors_name_the_member() -> None:
    with pytest.raises(ConfigError, match=r"members\[1\]"):
        member_configs(BackendConfig(backend="composite", params={"members": [{"backend": "cpu"}, {"model": "x"}]}))
    with pytest.raises(ConfigError, match="composite cannot contain"):
        member_configs(BackendConfig(backend="composite", params={"members": [{"backend": "composite"}]}))


def test_registry_builds_a_cpu_only_composite() -> None:
    scorer = create_backend("scorer", BackendConfig(backend="composite", params={"members": [{"backend": "cpu"}]}))
    assert scorer.info.name == "composite"
