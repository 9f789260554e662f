"""Several scorers as one: e.g. CPU statistics + DINOv2/CLIP identity + a VLM judge.

Members run in order; a later member's score replaces an earlier one's for the
same name unless it is ``None`` (a VLM that could not answer does not erase the
statistics scorer's lighting score). Configured as::

    [scorer]
    backend = "composite"
    params = { members = [ { backend = "cpu" },
                           { backend = "embedding", model = "facebook/dinov2-small" },
                           { backend = "vlm", model = "HuggingFaceTB/SmolVLM-256M-Instruct" } ] }
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pvtt.builder.stages.protocols import BackendInfo, BatchReporting, Scorer, ScoringInput
from pvtt.schemas.config import BackendConfig, ConfigError


class CompositeScorer:
    """Runs ``members`` and merges their scores, later members first."""

    def __init__(self, members: Sequence[Scorer]) -> None:
        if not members:
            raise ConfigError("scorer.params.members: a composite scorer needs at least one member")
        self.members = list(members)
        self.info = BackendInfo(
            kind="scorer",
            name="composite",
            version="1",
            params={"members": [m.info.as_dict() for m in self.members]},
        )

    def batch_stats(self) -> dict[str, dict[str, float]]:
        """The batching figures of the members that batch."""
        out: dict[str, dict[str, float]] = {}
        for member in self.members:
            if isinstance(member, BatchReporting):
                out.update(member.batch_stats())
        return out

    def score(self, sample: ScoringInput) -> dict[str, float | None]:
        merged: dict[str, float | None] = {}
        for member in self.members:
            for name, value in member.score(sample).items():
                if value is not None or name not in merged:
                    merged[name] = value
        return merged


def _member_config(raw: Any, index: int) -> BackendConfig:
    if not isinstance(raw, dict) or "backend" not in raw:
        raise ConfigError(f"scorer.params.members[{index}] needs a table with a 'backend' key")
    unknown = set(raw) - {"backend", "model", "params"}
    if unknown:
        raise ConfigError(f"scorer.params.members[{index}]: unknown keys {sorted(unknown)}")
    if raw["backend"] == "composite":
        raise ConfigError(f"scorer.params.members[{index}]: a composite cannot contain a composite")
    return BackendConfig(backend=raw["backend"], model=raw.get("model"), params=dict(raw.get("params", {})))


def member_configs(config: BackendConfig) -> list[BackendConfig]:
    """The members' own configs (``pvtt models check`` lists their weights)."""
    members = config.params.get("members", [{"backend": "cpu"}])
    extra = set(config.params) - {"members"}
    if extra:
        raise ConfigError(f"scorer.params: unknown keys {sorted(extra)} for the composite scorer")
    return [_member_config(raw, i) for i, raw in enumerate(members)]


def create(config: BackendConfig, device: str) -> CompositeScorer:
    from pvtt.builder.registry import create_backend

    return CompositeScorer([create_backend("scorer", m, device) for m in member_configs(config)])


def weights(config: BackendConfig) -> list[str]:
    """Weights of every member that names its own (see each backend's ``weights``)."""
    from pvtt.builder.registry import backend_weights

    return [w for m in member_configs(config) for w in backend_weights("scorer", m)]
