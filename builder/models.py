"""Which weights a build would load, and whether each is on this machine.

A GPU build that dies on a missing checkpoint after its first clips wastes the node;
builds run offline, so nothing missing will be fetched either. :func:`check_weights`
answers up front, for every stage, without importing any model package or going to
the network: each backend module names what it needs through ``weights(config)``
(hub ids or local paths), and this module looks for each one, on disk or in the
Hugging Face cache. ``pvtt models check`` prints it; ``pvtt build`` calls it before
starting.
"""

from __future__ import annotations

import importlib
import os
import re
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from pvtt.builder.registry import BUILTIN, ENTRY_POINT_GROUP, KINDS, available
from pvtt.schemas.config import BackendConfig, BuildConfig, ConfigError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_FILE_SUFFIXES = {".pt", ".pth", ".ckpt", ".bin", ".safetensors", ".onnx", ".pkl", ".yaml"}


@dataclass(frozen=True)
class WeightStatus:
    """One weight a stage needs, or the stage's reason for needing none or being unknown."""

    stage: str
    backend: str
    weight: str | None
    """The hub id or local path; None when the backend needs none or did not say."""
    source: str
    """``none`` (no weights), ``path``, ``hub``, ``unknown`` or ``unavailable`` (bad backend)."""
    present: bool | None
    """Found (True), not found (False) or cannot tell (None)."""
    detail: str
    """Where it was found, or why it is a problem and how to provide it."""

    @property
    def missing(self) -> bool:
        """A build with this config would fail on this stage."""
        return self.present is False


@dataclass(frozen=True)
class DeviceStatus:
    requested: str
    cuda_available: bool
    detail: str

    @property
    def ok(self) -> bool:
        return not self.requested.startswith("cuda") or self.cuda_available


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, resolved as ``huggingface_hub`` does, at call time."""
    env = os.environ
    explicit = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def in_hub_cache(repo_id: str, cache: Path) -> Path | None:
    """The cached snapshot folder of model ``repo_id``, if a download completed.

    Snapshot folders hold links to finished files only, so a snapshot with any file in
    it means a completed download (of that revision, maybe not of every file).
    """
    snapshots = cache / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    if not snapshots.is_dir():
        return None
    for snapshot in sorted(snapshots.iterdir()):
        if snapshot.is_dir() and any(snapshot.iterdir()):
            return snapshot
    return None


def _looks_like_path(name: str) -> bool:
    return (
        name.startswith(("/", "~", "./", "../", "\\"))
        or name.count("/") > 1
        or Path(name).suffix.lower() in _FILE_SUFFIXES
        or not _HUB_ID.match(name)
    )


def _where_to_set(stage: str, section: BackendConfig, name: str, example: str) -> str:
    """The build.toml key that names ``name``: a param holding it (also inside a
    composite's members, ``members[1].params.flow_weights``), else ``model``."""
    key = _key_holding(section.params, name)
    if key is not None:
        return f"set [{stage}.params] {key} to where it is"
    return f'set [{stage}] model = "{example}" in build.toml'


def _key_holding(params: Any, name: str, prefix: str = "") -> str | None:
    """The dotted key under which ``params`` (nested tables and lists) holds ``name``."""
    if isinstance(params, dict):
        items = [(f"{prefix}.{k}" if prefix else str(k), v) for k, v in params.items()]
    elif isinstance(params, list):
        items = [(f"{prefix}[{i}]", v) for i, v in enumerate(params)]
    else:
        return prefix if params == name and prefix else None
    for key, value in items:
        found = _key_holding(value, name, key)
        if found is not None:
            return found
    return None


def locate(stage: str, section: BackendConfig, name: str) -> WeightStatus:
    """Where ``name`` (a local path or a hub id) is on this machine, if anywhere."""
    backend = section.backend
    path = Path(name).expanduser()
    if path.exists():
        return WeightStatus(stage, backend, name, "path", True, str(path.resolve()))
    if _looks_like_path(name):
        fix = _where_to_set(stage, section, name, "/path/to/weights")
        return WeightStatus(
            stage, backend, name, "path", False, f"{name} does not exist; put it there, or {fix}"
        )
    cache = hub_cache_dir()
    snapshot = in_hub_cache(name, cache)
    if snapshot is not None:
        return WeightStatus(stage, backend, name, "hub", True, f"cached in {snapshot}")
    fix = _where_to_set(stage, section, name, "/path/to/local/copy")
    return WeightStatus(
        stage, backend, name, "hub", False,
        f"{name} is not in the Hugging Face cache {cache} (builds never download): run "
        f"`hf download {name}` where there is network and bring the cache (or set "
        f"HF_HUB_CACHE), or {fix}",
    )  # fmt: skip


def _module_of(stage: str, backend: str) -> tuple[str, str] | None:
    """``(module, attr)`` serving ``backend`` for ``stage``: built-in or plug-in."""
    target = BUILTIN.get((stage, backend))
    if target is None:
        eps = [
            ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == f"{stage}:{backend}"
        ]
        if not eps:
            return None
        target = eps[0].value
    module, _, attr = target.partition(":")
    return module, attr


def stage_weights(stage: str, section: BackendConfig) -> list[WeightStatus]:
    """The weights one config section needs, each located."""
    backend = section.backend

    def status(source: str, present: bool | None, detail: str) -> list[WeightStatus]:
        return [WeightStatus(stage, backend, None, source, present, detail)]

    served = _module_of(stage, backend)
    if served is None:
        return status(
            "unavailable", False, f"no {stage} backend {backend!r}; choose from {available(stage)}"
        )
    module_name, attr = served
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        return status("unknown", None, f"cannot import {module_name} ({exc})")
    weights = getattr(module, "weights", None)
    if weights is None:
        if isinstance(getattr(module, attr, None), type):  # built from params: weight-free
            return status("none", True, "no weights needed")
        return status("unknown", None, f"{module_name} does not say what it needs (no weights())")
    try:
        names: list[Any] = list(weights(section))
    except (ConfigError, ValueError, TypeError) as exc:
        return status("unavailable", False, f"[{stage}] section: {exc}")
    if not names:
        return status("none", True, "no weights needed")
    return [locate(stage, section, str(name)) for name in names]


def check_weights(config: BuildConfig) -> list[WeightStatus]:
    """Every weight of every stage a build with ``config`` would load, each located."""
    return [status for stage in KINDS for status in stage_weights(stage, getattr(config, stage))]


def check_device(device: str) -> DeviceStatus:
    """Whether ``device`` (``cpu``, ``cuda``, ``cuda:N``) can be used here."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count:
        names = sorted({torch.cuda.get_device_name(i) for i in range(count)})
        detail = f"CUDA: {count} device(s), {', '.join(names)}"
    else:
        detail = f"CUDA: not available (torch {torch.__version__})"
    usable = count > 0
    if device.startswith("cuda:"):
        index = device.partition(":")[2]
        usable = index.isdigit() and int(index) < count
        if count and not usable:
            detail += f"; {device} does not exist"
    return DeviceStatus(device, usable, detail)
