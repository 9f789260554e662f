"""Which backend class serves each stage, by name.

Built-in backends are listed here; third-party packages add theirs through the
``pvtt.backends`` entry-point group, with names ``"{kind}:{name}"`` pointing at a
factory ``(config: BackendConfig, device: str) -> backend``. Model backends import
their heavy packages only when built, so a CPU build never imports transformers.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from pvtt.builder.stages.protocols import (
    Backend,
    Detector,
    Inpainter,
    Inserter,
    Matter,
    Scorer,
    Segmenter,
)
from pvtt.schemas.config import BackendConfig, ConfigError

KINDS: dict[str, type] = {
    "detector": Detector,
    "segmenter": Segmenter,
    "inpainter": Inpainter,
    "matter": Matter,
    "inserter": Inserter,
    "scorer": Scorer,
}

BUILTIN: dict[tuple[str, str], str] = {
    ("detector", "cpu"): "pvtt.builder.backends.cpu_detector:FirstFrameOrSaliencyDetector",
    ("segmenter", "cpu"): "pvtt.builder.backends.cpu_segmenter:TrackerGrabCutSegmenter",
    ("inpainter", "cpu"): "pvtt.builder.backends.cpu_inpainter:TemporalFillInpainter",
    ("matter", "cpu"): "pvtt.builder.backends.cpu_matter:BorderColourMatter",
    ("inserter", "cpu"): "pvtt.builder.backends.cpu_inserter:AlphaCompositeInserter",
    ("scorer", "cpu"): "pvtt.builder.backends.cpu_scorer:StatisticsScorer",
    # the CPU compositor and statistics scorer as batched torch ops on the build's device
    ("inserter", "torch"): "pvtt.builder.backends.torch_inserter:create",
    ("scorer", "torch"): "pvtt.builder.backends.torch_scorer:create",
    # model backends: ``create(config, device)`` loads weights from config.model (a local
    # path or a hub id); their heavy imports happen only then
    ("detector", "grounding-dino"): "pvtt.builder.backends.grounding_dino:create",
    ("segmenter", "sam2"): "pvtt.builder.backends.sam2_segmenter:create",
    ("matter", "rembg"): "pvtt.builder.backends.rembg_matter:create",
    ("scorer", "embedding"): "pvtt.builder.backends.embedding_scorer:create",
    ("scorer", "vlm"): "pvtt.builder.backends.vlm_judge:create",
    ("scorer", "composite"): "pvtt.builder.backends.composite_scorer:create",
    ("inpainter", "diffusers"): "pvtt.builder.backends.diffusers_inpainter:create",
    ("inserter", "diffusers-refine"): "pvtt.builder.backends.diffusers_refiner:create",
    ("inpainter", "command"): "pvtt.builder.backends.command_adapter:create_inpainter",
    ("inserter", "command"): "pvtt.builder.backends.command_adapter:create_inserter",
}
"""``(kind, name) -> "module:attr"``: a class (built with ``**params``; the CPU backends,
which need no weights) or a factory ``(config, device) -> backend``."""

ENTRY_POINT_GROUP = "pvtt.backends"

Factory = Callable[[BackendConfig, str], Backend]


def _load(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def _cpu_factory(cls: type) -> Factory:
    def build(config: BackendConfig, device: str) -> Backend:
        try:
            return cls(**config.params)
        except TypeError as exc:
            raise ConfigError(f"{cls.__name__}: bad params {config.params}: {exc}") from None

    return build


def available(kind: str) -> list[str]:
    """Names a config may give for ``kind``: built-in and installed plug-ins."""
    names = {name for k, name in BUILTIN if k == kind}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        k, _, name = ep.name.partition(":")
        if k == kind:
            names.add(name)
    return sorted(names)


def create_backend(kind: str, config: BackendConfig, device: str = "cpu") -> Backend:
    """Build the backend a config section names, checked against its stage protocol."""
    if kind not in KINDS:
        raise ConfigError(f"unknown stage kind {kind!r}; known: {sorted(KINDS)}")
    target = BUILTIN.get((kind, config.backend))
    factory: Factory
    if target is not None:
        obj = _load(target)
        factory = _cpu_factory(obj) if isinstance(obj, type) else obj
    else:
        eps = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == f"{kind}:{config.backend}"]
        if not eps:
            raise ConfigError(
                f"{kind}.backend = {config.backend!r} is not available; choose from {available(kind)}"
            )
        factory = eps[0].load()
    backend = factory(config, device)
    if not isinstance(backend, KINDS[kind]):
        raise ConfigError(f"{kind} backend {config.backend!r} does not implement the {kind} protocol")
    return backend


def backend_weights(kind: str, config: BackendConfig) -> list[str]:
    """Model files or hub ids a backend needs (empty for weight-free backends).

    Model backends expose ``weights(config)`` beside their ``create`` factory.
    """
    target = BUILTIN.get((kind, config.backend))
    if target is None:
        return [config.model] if config.model else []
    module, _, attr = target.partition(":")
    fn = getattr(importlib.import_module(module), "weights", None)
    if fn is not None:  # a CPU backend may need some too (the statistics scorer's RAFT)
        return list(fn(config))
    return [config.model] if config.model and attr.startswith("create") else []
