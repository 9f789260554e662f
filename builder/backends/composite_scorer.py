"""Several scorers as one: e.g. CPU statistics + DINOv2/CLIP identity + a VLM judge.

Members run in order; a later member's score replaces an earlier one's for the
same name unless it is ``None`` (a VLM that could not answer does not erase the
statistics scorer's lighting score). The statistics scorer (temporal and lighting)
runs in one member only: the embedding scorer includes it by default, so beside a
``cpu`` member an ``embedding`` member leaves it out (see :func:`member_configs`).
Configured as::

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
    """The members' own configs, as they are built (``pvtt models check`` lists their
    weights, ``pvtt plan`` prices them)."""
    members = config.params.get("members", [{"backend": "cpu"}])
    extra = set(config.params) - {"members"}
    if extra:
        raise ConfigError(f"scorer.params: unknown keys {sorted(extra)} for the composite scorer")
    if not isinstance(members, list):
        raise ConfigError(f"scorer.params.members must be a list of backend tables, got {members!r}")
    return _statistics_once([_member_config(raw, i) for i, raw in enumerate(members)])


STATISTICS_BACKENDS = ("cpu", "torch")
"""Scorer backends that always compute the statistics scores (temporal, lighting)."""


def _statistics_once(members: list[BackendConfig]) -> list[BackendConfig]:
    """Members with the statistics scorer in one of them only.

    The ``cpu`` scorer, its torch twin ``torch``, and, unless ``with_statistics`` is false,
    the ``embedding`` scorer compute the statistics; together they computed them twice per
    pair, and the embedding member's Farneback temporal score replaced a cpu member's RAFT
    one. So an embedding member's ``with_statistics`` defaults to false beside a cpu or
    torch member, and to true only in the first embedding member when there is none.
    Asking for the statistics in two members is an error.
    """
    owners = [i for i, m in enumerate(members) if m.backend in STATISTICS_BACKENDS]
    out = []
    for i, member in enumerate(members):
        if member.backend == "embedding":
            params = dict(member.params)
            params.setdefault("with_statistics", not owners)
            if params["with_statistics"]:
                owners.append(i)
            member = BackendConfig(backend=member.backend, model=member.model, params=params)
        out.append(member)
    if len(owners) > 1:
        listed = ", ".join(f"members[{i}] ({members[i].backend})" for i in sorted(owners))
        raise ConfigError(
            f"scorer.params: {listed} would each compute the statistics scores (temporal, "
            "lighting) for every pair; keep one (with_statistics = false in an embedding "
            "member's params leaves them to the others)"
        )
    return out


def create(config: BackendConfig, device: str) -> CompositeScorer:
    from pvtt.builder.registry import create_backend

    return CompositeScorer([create_backend("scorer", m, device) for m in member_configs(config)])


def weights(config: BackendConfig) -> list[str]:
    """Weights of every member that names its own (see each backend's ``weights``)."""
    from pvtt.builder.registry import backend_weights

    return [w for m in member_configs(config) for w in backend_weights("scorer", m)]
