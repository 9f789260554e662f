"""The build configuration: a TOML file whose sections mirror the pipeline stages.

Every field has a default that works on a laptop (CPU backends, no weights).
Unknown keys are errors, so a typo in ``build.toml`` is caught before hours of
GPU work. Each backend section takes ``backend`` (a registered name), optional
``model`` (a local path or hub id) and backend-specific ``params``.
"""

from __future__ import annotations

import types
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import tomllib


class ConfigError(ValueError):
    """A build configuration that cannot be used; the message names the key."""


@dataclass
class BackendConfig:
    backend: str = "cpu"
    model: str | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class ShotsConfig:
    detector: str = "content"
    threshold: float | None = None
    min_scene_len: int = 15
    min_duration_s: float = 2.0
    min_frames: int = 50
    max_duration_s: float | None = 10.0
    """Longer shots are cut to this length (the seed's 3-10 s clips); None keeps them whole."""


MAX_KEYFRAME_INTERVAL = 1000
"""A longer interval only makes windows slower to reach (x264 would accept more)."""


@dataclass
class ClipConfig:
    max_width: int = 1280
    max_height: int = 720
    fps: float | None = None
    """Constant output frame rate; None keeps the source's average rate."""
    crf: int = 20
    preset: str = "veryfast"
    """x264's speed preset for every clip the build encodes: the trade of CPU for bytes.
    At 720p (a 172-frame rehearsal clip, crf 18, one thread, 2 cores): ``veryfast`` 3.15
    CPU-s and 2.52 MB; ``superfast`` 1.63 CPU-s (0.52x) and 1.44x the bytes; ``ultrafast``
    1.21 CPU-s and 3.3x the bytes; all three at the same PSNR within 1.3 dB and decoded at
    the same speed. A GPU build whose pair workers are bound by encoding makes more pairs
    an hour with ``superfast``, at the cost of that storage."""
    keyframe_interval: int = 16
    """Frames from one keyframe to the next in the source, background and synthesized clips.

    A training window decodes from the keyframe at or before it, so shorter means fewer
    frames decoded and thrown away, longer means fewer (costly) keyframes stored.
    ``python -m pvtt.tools.bench.seek`` measures the trade (720p, crf 20, 16-frame random
    windows, 2 cores, against 250, x264's default): 32 stores 1.31x the bytes for 1.60x the
    window rate, 16 1.64x for 1.75x, 8 2.20x for 1.76x, 4 3.15x for 1.70x. 16 is the
    fastest for its size; 32 is the choice where storage counts more than decoding.
    """


X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                "slower", "veryslow")
NEAR_DUPLICATE_MODES = ("drop", "report", "off")
PAIR_POOLS = ("threads", "processes")


@dataclass
class PairsConfig:
    strategy: str = "sampled"
    """``single`` (main image), ``all`` images, or ``sampled`` (``images_per_product``)."""
    images_per_product: int = 2
    same_category: bool = False
    difficulty_mix: dict[str, float] | None = None
    """Target share per difficulty, e.g. ``{easy=0.1, medium=0.3, hard=0.3, expert=0.3}``."""
    limit: int | None = None
    seed: int = 0
    box_smoothing: int = 5
    near_duplicates: str = "report"
    """Near-identical shots of one video, and photos that repeat across products, found by
    perceptual hash (``pvtt.builder.stages.dedup``) before pairing: ``drop`` leaves all but
    one of each group out of pairing and lists them among the rejects (stages
    ``dedup-shots`` and ``dedup-photos``), ``report`` only lists them, ``off`` does not
    look. Both list them in ``report/duplicates.jsonl``; ``pvtt plan`` shows them. The
    default only reports, so that a new pvtt does not change the pairs of a dataset that
    a resumed build extends."""
    near_duplicate_bits: int = 6
    """Bits (of 64) in which the perceptual hashes of two copies may differ: a re-encoded or
    resized photo differs in 0-2; the demo catalog's distinct products in 8 and more."""


@dataclass
class QualityConfig:
    threshold: float = 0.7
    weights: dict[str, float] = field(
        default_factory=lambda: {"identity": 0.3, "temporal": 0.2, "lighting": 0.2, "overall": 0.3}
    )
    drop_rejected: bool = False


@dataclass
class OutputConfig:
    formats: list[str] = field(default_factory=lambda: ["lance", "tar"])
    shard_max_samples: int = 512
    shard_max_bytes: int = 1 << 30
    tar_background: bool = False
    tar_masks: bool = False
    commit_interval_s: float = 300.0


@dataclass
class EngineConfig:
    """How the Ray engine spreads a build (``--engine ray``); the local engine ignores it."""

    writers: int = 2
    gpus_per_actor: dict[str, float] = field(default_factory=dict)
    """GPUs per actor by stage (``matte``, ``clip``, ``pair``); fractions share a GPU."""
    max_actors: int | None = None
    max_retries: int = 3


@dataclass
class BuildConfig:
    shots: ShotsConfig = field(default_factory=ShotsConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    detector: BackendConfig = field(default_factory=BackendConfig)
    segmenter: BackendConfig = field(default_factory=BackendConfig)
    inpainter: BackendConfig = field(default_factory=BackendConfig)
    matter: BackendConfig = field(default_factory=BackendConfig)
    inserter: BackendConfig = field(default_factory=BackendConfig)
    scorer: BackendConfig = field(default_factory=BackendConfig)
    pairs: PairsConfig = field(default_factory=PairsConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    device: str = "cpu"
    workers: int | None = None
    """Threads or processes (``pair_pool``) that make pairs (insert, score, encode) at once;
    None: this rank's share of the node's CPUs (CPUs / ranks on the node), threads at most 8."""
    pair_pool: str = "threads"
    """Where ``workers`` make pairs: ``threads`` of the build's process, or ``processes``
    (:mod:`pvtt.builder.pair_pool`: backends built once per process, clip arrays in shared
    memory, the same output). Threads are the default: on 2 shared cores processes made
    0.79-1.15x the threads' pairs per minute round by round, no reliable gain
    (``python -m pvtt.tools.bench.pair_pool``, 2026-12-03; not measured on more cores)."""
    encode_workers: int = 0
    """Threads that encode the synthesized clips apart from the pair ``workers`` (threads
    pool only), so that those go on inserting and scoring, which with the torch backends
    keeps a GPU fed; 0: each pair worker encodes its own pair. Same bytes either way."""
    clip_workers: int = 1
    """Clips whose stages (cut, detect, track, inpaint) run at once, each in its own thread
    and, on CUDA, its own stream; 2 keeps a GPU busy while one clip waits on the CPU."""
    cache_dir: str | None = None
    """Stage artefact cache; default ``OUT/cache``."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "config") -> BuildConfig:
        return _build(cls, data, where)

    def validate(self) -> BuildConfig:
        if self.pairs.strategy not in ("single", "all", "sampled"):
            raise ConfigError(f"pairs.strategy must be single, all or sampled, not {self.pairs.strategy!r}")
        if self.pairs.images_per_product < 1:
            raise ConfigError("pairs.images_per_product must be >= 1")
        if self.pairs.near_duplicates not in NEAR_DUPLICATE_MODES:
            raise ConfigError(
                f"pairs.near_duplicates must be drop, report or off, not {self.pairs.near_duplicates!r}"
            )
        if not 0 <= self.pairs.near_duplicate_bits <= 64:
            raise ConfigError(
                f"pairs.near_duplicate_bits must be 0..64, not {self.pairs.near_duplicate_bits}"
            )
        if self.shots.detector not in ("content", "adaptive"):
            raise ConfigError(f"shots.detector must be content or adaptive, not {self.shots.detector!r}")
        if not 0.0 <= self.quality.threshold <= 1.0:
            raise ConfigError("quality.threshold must be in [0, 1]")
        if self.pairs.difficulty_mix is not None:
            unknown = set(self.pairs.difficulty_mix) - {"easy", "medium", "hard", "expert"}
            if unknown or any(v < 0 for v in self.pairs.difficulty_mix.values()):
                raise ConfigError(f"pairs.difficulty_mix: bad entries {sorted(unknown) or 'negative share'}")
            if sum(self.pairs.difficulty_mix.values()) <= 0:
                raise ConfigError("pairs.difficulty_mix must have a positive share")
        if not set(self.output.formats) <= {"lance", "tar"} or not self.output.formats:
            raise ConfigError(f"output.formats must be a subset of lance, tar: {self.output.formats}")
        if self.clip.preset not in X264_PRESETS:
            raise ConfigError(f"clip.preset must be one of {', '.join(X264_PRESETS)}, not {self.clip.preset!r}")
        if not 1 <= self.clip.keyframe_interval <= MAX_KEYFRAME_INTERVAL:
            raise ConfigError(
                f"clip.keyframe_interval must be 1..{MAX_KEYFRAME_INTERVAL} frames, "
                f"not {self.clip.keyframe_interval}"
            )
        if self.clip_workers < 1 or (self.workers is not None and self.workers < 1):
            raise ConfigError("workers and clip_workers must be >= 1")
        if self.encode_workers < 0:
            raise ConfigError(f"encode_workers must be >= 0, not {self.encode_workers}")
        if self.encode_workers and self.pair_pool == "processes":
            raise ConfigError(
                "encode_workers is for pair_pool = 'threads' (pair processes encode their own)"
            )
        if self.pair_pool not in PAIR_POOLS:
            raise ConfigError(
                f"pair_pool must be {', '.join(PAIR_POOLS)}, not {self.pair_pool!r}"
            )
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(f"device must be cpu, cuda or cuda:N, not {self.device!r}")
        return self


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a table, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; known: {sorted(known)}")
    kwargs: dict[str, Any] = {}
    defaults = cls()
    hints = typing.get_type_hints(cls)
    for name, value in data.items():
        current = getattr(defaults, name)
        if is_dataclass(current):
            kwargs[name] = _build(type(current), value, f"{where}.{name}")
            continue
        if not _has_type(value, hints[name]):
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
            raise ConfigError(f"{where}.{name}: expected {_type_name(hints[name])}, got {shown}")
        kwargs[name] = value
    return cls(**kwargs)


def _has_type(value: Any, hint: Any) -> bool:
    """Whether a TOML value fits a field's annotation (an int is a float; a bool is no number)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_has_type(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is list:
        return isinstance(value, list) and all(_has_type(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(
            _has_type(k, args[0]) and _has_type(v, args[1]) for k, v in value.items()
        )
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return "nothing (leave the key out)"
    return getattr(hint, "__name__", str(hint)) if typing.get_origin(hint) is None else str(hint)


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> BuildConfig:
    """The config in ``path`` (or the defaults), with dotted ``overrides`` applied."""
    data: dict[str, Any] = {}
    where = "defaults"
    if path is not None:
        where = str(path)
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return BuildConfig.from_dict(data, where).validate()
