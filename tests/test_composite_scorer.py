"""The composite scorer merges members; later non-null scores win."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pvtt.builder.backends.composite_scorer import CompositeScorer, member_configs
from pvtt.builder.backends.cpu_scorer import StatisticsScorer
from pvtt.builder.registry import create_backend
from pvtt.builder.resources import default_rate
from pvtt.builder.stages.protocols import BackendInfo, ScoringInput
from pvtt.schemas.config import BackendConfig, BuildConfig, ConfigError, load_config


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


# -- the statistics scorer runs once per pair --------------------------------------------------
def _readme_scorer(tmp_path: Path) -> BackendConfig:
    """The [scorer] section of the README's model-backends build.toml, loaded as a build
    loads it."""
    text = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    section = text.split("## Model backends", 1)[1]
    (tmp_path / "build.toml").write_text(section.split("```toml\n", 1)[1].split("```", 1)[0])
    return load_config(tmp_path / "build.toml").scorer


def _members(*members: dict) -> list[BackendConfig]:
    return member_configs(BackendConfig(backend="composite", params={"members": list(members)}))


def test_only_one_member_computes_the_statistics() -> None:
    cpu, emb = {"backend": "cpu"}, {"backend": "embedding"}
    stats = [m.params.get("with_statistics") for m in _members(cpu, emb)]
    assert stats == [None, False]  # the cpu member computes them
    torch_first = [m.params.get("with_statistics") for m in _members({"backend": "torch"}, emb)]
    assert torch_first == [None, False]  # and so does its torch twin
    assert [m.params["with_statistics"] for m in _members(emb)] == [True]  # complete alone
    two = _members(emb, {"backend": "embedding", "params": {"models": ["clip"]}})
    assert [m.params["with_statistics"] for m in two] == [True, False]
    mine = _members(cpu, {"backend": "embedding", "params": {"with_statistics": False}})
    assert mine[1].params == {"with_statistics": False}
    with pytest.raises(ConfigError, match=r"members\[0\] \(cpu\), members\[1\] \(embedding\)"):
        _members(cpu, {"backend": "embedding", "params": {"with_statistics": True}})
    with pytest.raises(ConfigError, match="must be a list"):
        member_configs(BackendConfig(backend="composite", params={"members": 3}))


def test_the_readme_composite_runs_the_statistics_scorer_once_per_pair(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    transformers = pytest.importorskip("transformers")
    section = _readme_scorer(tmp_path)
    assert section.backend == "composite"
    dinov2 = transformers.Dinov2Model(transformers.Dinov2Config(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        patch_size=8, image_size=32,
    ))
    dinov2.save_pretrained(tmp_path / "dinov2")
    transformers.BitImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(tmp_path / "dinov2")
    members = [
        {**m, "model": str(tmp_path / "dinov2")} if m.get("model") else m
        for m in section.params["members"]
    ]
    scorer = create_backend("scorer", BackendConfig("composite", params={"members": members}))

    calls = []
    score = StatisticsScorer.score
    monkeypatch.setattr(
        StatisticsScorer, "score", lambda self, sample: calls.append(self) or score(self, sample)
    )
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (6, 96, 128, 3), dtype=np.uint8)
    cutout = np.full((24, 24, 4), 255, np.uint8)
    cutout[..., :3] = rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)
    boxes = np.array([[40 + t, 30, 64 + t, 54] for t in range(6)], np.float32)
    result = scorer.score(ScoringInput(frames, frames, cutout, boxes, fps=24.0))
    assert len(calls) == 1  # one pair, one statistics pass
    assert set(result) >= {"identity", "temporal", "lighting"}


def test_plan_prices_the_statistics_once(tmp_path: Path) -> None:
    """`pvtt plan` prices the composite as built: the cpu member's statistics plus the
    embedding's crops, as much as the embedding scorer alone (which includes them)."""
    def seconds(scorer: BackendConfig) -> float:
        config = BuildConfig(device="cuda")
        config.scorer = scorer
        rate = default_rate("score", config)
        assert rate is not None
        return 1.0 / rate.value

    embedding = BackendConfig("embedding", model="/models/dinov2-small")
    assert seconds(_readme_scorer(tmp_path)) == pytest.approx(seconds(embedding))
