"""Curriculum over pair difficulty: which mix of easy..expert pairs to train on at each step.

A :class:`CurriculumSchedule` maps a training step to per-difficulty weights. A
pacing function turns the step into progress ``p`` in [0, 1]; the weights follow
a path of mixes spaced evenly over ``p``, interpolated linearly between them. The
default path opens one harder level at a time (easy; + medium; + hard; + expert)
and ends at the seed plan's target mix 10/30/30/30. An adaptive schedule
also scales those weights by how far each difficulty's recent loss sits above
the others (see :meth:`CurriculumSchedule.update`).

:func:`curriculum_order` turns a schedule into an epoch's sample order. It is a
pure function, so a resumed or fresh process that rebuilds it with the same
arguments gets the same order and only has to skip the consumed positions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from pvtt.schemas.taxonomy import Difficulty

DIFFICULTIES: tuple[str, ...] = tuple(d.value for d in Difficulty)
PACINGS: tuple[str, ...] = ("step", "linear", "root", "exponential")
DEFAULT_PATH: tuple[dict[str, float], ...] = (
    {"easy": 1.0},
    {"easy": 0.5, "medium": 0.5},
    {"easy": 0.2, "medium": 0.4, "hard": 0.4},
    {"easy": 0.1, "medium": 0.3, "hard": 0.3, "expert": 0.3},
)

# Mixed into seeds so curriculum draws never share a random stream with the shuffle.
DRAW_STREAM = 0x4355
POOL_STREAM = 0x504F

# state_dict keys
STATE_VERSION = "version"
STATE_PACING = "pacing"
STATE_TOTAL_STEPS = "total_steps"
STATE_ADAPTIVE = "adaptive"
STATE_EMA_LOSS = "ema_loss"
STATE_UPDATES = "updates"
_STATE_FORMAT = 1

# Rows of position -> level lookups done at once, to bound memory on long epochs.
_CHUNK = 1 << 20

Pacing = str | Callable[[float], float]


def _number(value: object, what: str) -> float:
    """``value`` as a float, or ValueError naming ``what`` (a schedule may come from a config)."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a number, got {value!r}")
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {value!r}") from None


def _mix(name: str, mix: Mapping[str, float]) -> np.ndarray:
    """A difficulty -> share mapping as a normalised vector in easy..expert order."""
    if not isinstance(mix, Mapping):
        raise ValueError(f"curriculum {name}: expected {{difficulty: share}}, got {mix!r}")
    out = np.zeros(len(DIFFICULTIES))
    for key, share in mix.items():
        try:
            level = Difficulty(key).level
        except ValueError:
            raise ValueError(
                f"curriculum {name}: unknown difficulty {key!r}; choose from {DIFFICULTIES}"
            ) from None
        share = _number(share, f"curriculum {name}: share of {key!r}")
        if not math.isfinite(share) or share < 0:
            raise ValueError(f"curriculum {name}: share of {key!r} must be >= 0, got {share}")
        out[level] = share
    if out.sum() <= 0:
        raise ValueError(f"curriculum {name}: needs a positive share, got {dict(mix)}")
    return out / out.sum()


def _quality_breakpoints(
    min_quality: float | Sequence[tuple[float, float]] | None,
) -> tuple[tuple[float, float], ...]:
    if min_quality is None:
        return ()
    if isinstance(min_quality, (int, float)):
        min_quality = [(0.0, float(min_quality))]
    what = "curriculum min_quality"
    try:
        pairs = [tuple(point) for point in min_quality]
    except TypeError:
        raise ValueError(f"{what}: expected a floor or (progress, floor) pairs") from None
    if any(len(point) != 2 for point in pairs):
        raise ValueError(f"{what}: each breakpoint is a (progress, floor) pair, got {pairs}")
    points = sorted((_number(p, f"{what} progress"), _number(q, f"{what} floor")) for p, q in pairs)
    for p, q in points:
        if not (0.0 <= p <= 1.0 and 0.0 <= q <= 1.0):
            raise ValueError(
                f"curriculum min_quality: breakpoint (progress {p}, quality {q}) must have "
                "both in [0, 1]"
            )
    if len({p for p, _ in points}) != len(points):
        raise ValueError("curriculum min_quality: two breakpoints at the same progress")
    return tuple(points)


class CurriculumSchedule:
    """Per-difficulty weights as a function of the training step.

    ``pacing`` maps ``t = step / total_steps`` (clamped to [0, 1]) to progress:
    ``"linear"`` ``p = t``; ``"root"`` ``p = sqrt(t)`` (fast start);
    ``"exponential"`` ``p = (exp(rate t) - 1) / (exp(rate) - 1)`` (slow start);
    ``"step"`` ``p`` jumps through ``stages`` equal levels ``0, 1/(stages-1), .., 1``
    at ``t = 1/stages, 2/stages, ..``; a callable ``t -> p`` (clamped to [0, 1])
    for anything else. ``path`` is two or more mixes ``{difficulty: share}``
    (missing difficulties 0, normalised) placed at progress ``0, 1/(n-1), .., 1``;
    with ``"step"`` pacing and ``stages == len(path)`` each stage is one mix.
    ``min_quality`` is a floor on ``quality_score``: one value,
    or ``(progress, floor)`` breakpoints, constant until the next breakpoint and
    none before the first.
    """

    def __init__(
        self,
        pacing: Pacing = "linear",
        total_steps: int = 10_000,
        *,
        path: Sequence[Mapping[str, float]] | None = None,
        stages: int = 4,
        rate: float = 5.0,
        min_quality: float | Sequence[tuple[float, float]] | None = None,
        adaptive: bool = False,
        ema: float = 0.9,
        strength: float = 1.0,
        max_factor: float = 4.0,
    ) -> None:
        if callable(pacing):
            self.pacing_name = "custom"
        elif pacing in PACINGS:
            self.pacing_name = pacing
        else:
            raise ValueError(f"curriculum pacing {pacing!r} is not one of {PACINGS} or a callable")
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(f"curriculum total_steps must be an int >= 1, got {total_steps!r}")
        if isinstance(stages, bool) or not isinstance(stages, int) or stages < 2:
            raise ValueError(f"curriculum stages must be an int >= 2, got {stages!r}")
        if not 0 < rate < math.inf:
            raise ValueError(f"curriculum rate must be > 0 and finite, got {rate}")
        if not 0.0 <= ema < 1.0:
            raise ValueError(f"curriculum ema must be in [0, 1), got {ema}")
        if not strength >= 0:
            raise ValueError(f"curriculum strength must be >= 0, got {strength}")
        if not max_factor >= 1:
            raise ValueError(f"curriculum max_factor must be >= 1, got {max_factor}")
        self.pacing = pacing
        self.total_steps = total_steps
        path = DEFAULT_PATH if path is None else path
        if isinstance(path, (str, Mapping)) or not isinstance(path, Sequence) or len(path) < 2:
            raise ValueError(f"curriculum path needs a list of at least 2 mixes, got {path!r}")
        self.path = np.stack([_mix(f"path[{i}]", mix) for i, mix in enumerate(path)])
        self.stages = stages
        self.rate = float(rate)
        self.quality_breakpoints = _quality_breakpoints(min_quality)
        self.adaptive = adaptive
        self.ema = float(ema)
        self.strength = float(strength)
        self.max_factor = float(max_factor)
        self._ema_loss: list[float | None] = [None] * len(DIFFICULTIES)
        self._updates = 0

    # -- pacing ---------------------------------------------------------------

    def progress(self, step: int | np.ndarray) -> float | np.ndarray:
        """Progress in [0, 1] at ``step`` (an int or an array of steps)."""
        t = np.clip(np.asarray(step, dtype=np.float64) / self.total_steps, 0.0, 1.0)
        if self.pacing_name == "linear":
            p = t
        elif self.pacing_name == "root":
            p = np.sqrt(t)
        elif self.pacing_name == "exponential":
            # (e^{rt} - 1) / (e^r - 1), written so that no term overflows for a large rate
            p = np.exp(self.rate * (t - 1.0)) * -np.expm1(-self.rate * t) / -math.expm1(-self.rate)
        elif self.pacing_name == "step":
            p = np.minimum(np.floor(t * self.stages), self.stages - 1) / (self.stages - 1)
        else:
            p = np.array([float(self.pacing(float(x))) for x in np.ravel(t)]).reshape(t.shape)
            if not np.all(np.isfinite(p)):
                raise ValueError(f"curriculum pacing {self.pacing!r} returned a non-finite value")
        p = np.clip(p, 0.0, 1.0)
        return float(p) if p.ndim == 0 else p

    def weights_table(self, steps: np.ndarray) -> np.ndarray:
        """Weights for many steps at once: shape ``(len(steps), 4)``, rows sum to 1."""
        x = np.atleast_1d(self.progress(np.asarray(steps))) * (len(self.path) - 1)
        left = np.minimum(np.floor(x).astype(np.int64), len(self.path) - 2)
        frac = (x - left)[:, None]
        table = (1.0 - frac) * self.path[left] + frac * self.path[left + 1]
        table = table * self._adaptive_factors()
        return table / table.sum(axis=1, keepdims=True)

    def weights(self, step: int) -> dict[str, float]:
        """``{"easy": w0, "medium": w1, "hard": w2, "expert": w3}`` at ``step``; sums to 1."""
        row = self.weights_table(np.array([step]))[0]
        return {name: float(w) for name, w in zip(DIFFICULTIES, row, strict=True)}

    def min_quality(self, step: int) -> float | None:
        """The ``quality_score`` floor at ``step``, or None when there is none."""
        segment = int(self.quality_segments(np.array([step]))[0])
        return None if segment < 0 else self.quality_breakpoints[segment][1]

    def quality_segments(self, steps: np.ndarray) -> np.ndarray:
        """Index into ``quality_breakpoints`` in force at each step; -1 where none is."""
        if not self.quality_breakpoints:
            return np.full(np.shape(steps), -1, dtype=np.int64)
        cuts = np.array([p for p, _ in self.quality_breakpoints])
        p = np.atleast_1d(self.progress(np.asarray(steps)))
        return np.searchsorted(cuts, p, side="right").astype(np.int64) - 1

    # -- adaptive -------------------------------------------------------------

    def update(self, losses: Mapping[str, float]) -> None:
        """Feed recent per-difficulty training losses (adaptive schedules only).

        Each difficulty keeps an exponential moving average of its loss (the first
        value seeds it). Its paced weight is then multiplied by
        ``(ema / mean ema of the difficulties seen) ** strength``, clamped to
        ``[1 / max_factor, max_factor]``: a difficulty whose loss stays above the
        others is still being learned and gets more weight; one learned below the
        others gets less. Difficulties the pacing gives no weight stay at zero, and
        difficulties with no loss yet keep factor 1.
        """
        if not self.adaptive:
            raise ValueError("curriculum update(): this schedule was made with adaptive=False")
        if not isinstance(losses, Mapping):
            raise ValueError(f"curriculum update(): expected {{difficulty: loss}}, got {losses!r}")
        for key, loss in losses.items():
            try:
                level = Difficulty(key).level
            except ValueError:
                raise ValueError(
                    f"curriculum update(): unknown difficulty {key!r}; choose from {DIFFICULTIES}"
                ) from None
            loss = _number(loss, f"curriculum update(): loss of {key!r}")
            if not math.isfinite(loss) or loss < 0:
                raise ValueError(f"curriculum update(): loss of {key!r} must be finite, >= 0")
            old = self._ema_loss[level]
            self._ema_loss[level] = loss if old is None else self.ema * old + (1 - self.ema) * loss
        self._updates += 1

    def _adaptive_factors(self) -> np.ndarray:
        factors = np.ones(len(DIFFICULTIES))
        seen = [i for i, v in enumerate(self._ema_loss) if v is not None]
        if not self.adaptive or not seen:
            return factors
        mean = sum(self._ema_loss[i] for i in seen) / len(seen)
        if mean <= 0:
            return factors
        for i in seen:
            ratio = (self._ema_loss[i] / mean) ** self.strength
            factors[i] = min(max(ratio, 1.0 / self.max_factor), self.max_factor)
        return factors

    # -- state ----------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The mutable part (adaptive losses) plus what identifies the schedule; JSON-able."""
        return {
            STATE_VERSION: _STATE_FORMAT,
            STATE_PACING: self.pacing_name,
            STATE_TOTAL_STEPS: self.total_steps,
            STATE_ADAPTIVE: self.adaptive,
            STATE_EMA_LOSS: dict(zip(DIFFICULTIES, self._ema_loss, strict=True)),
            STATE_UPDATES: self._updates,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; refuses a state saved by a differently made schedule."""
        if state.get(STATE_VERSION) != _STATE_FORMAT:
            raise ValueError(
                f"curriculum state: format {state.get(STATE_VERSION)!r} is not {_STATE_FORMAT}"
            )
        mine = self.state_dict()
        for key in (STATE_PACING, STATE_TOTAL_STEPS, STATE_ADAPTIVE):
            if state.get(key) != mine[key]:
                raise ValueError(
                    f"curriculum state: saved {key}={state.get(key)!r} but this schedule has "
                    f"{key}={mine[key]!r}"
                )
        ema = state.get(STATE_EMA_LOSS, {})
        if set(ema) != set(DIFFICULTIES):
            raise ValueError(f"curriculum state: ema_loss keys {sorted(ema)} != {DIFFICULTIES}")
        self._ema_loss = [None if ema[d] is None else float(ema[d]) for d in DIFFICULTIES]
        self._updates = int(state.get(STATE_UPDATES, 0))


def curriculum_order(
    levels: np.ndarray,
    schedule: CurriculumSchedule,
    *,
    seed: int,
    epoch: int,
    num_positions: int,
    samples_per_step: int,
    start_position: int = 0,
    qualities: np.ndarray | None = None,
) -> np.ndarray:
    """An epoch's order of sample indices whose difficulty mix follows ``schedule``.

    ``levels[i]`` is the ``difficulty_level`` (0..3) of selected sample ``i``.
    Position ``g`` of the epoch is training step
    ``(start_position + g) // samples_per_step``; pass ``start_position`` = the
    positions of earlier epochs so the curriculum runs on across epochs, and
    ``samples_per_step`` = the global batch (per-rank batch x world size). Each
    position draws its difficulty from the step's weights (one uniform per
    position, seeded by ``(seed, epoch)``), then takes the next sample of that
    difficulty from a seeded permutation, a fresh permutation each time the
    difficulty runs out. With ``qualities``, samples below the step's
    ``min_quality`` are left out, and each floor has its own permutations.
    Difficulties with no eligible sample get their weight spread over the rest.

    The result for ``num_positions = m`` is a prefix of the one for any larger
    count. Adaptive weights are read once, when this is called: rebuild a resumed
    epoch from the schedule state saved when the epoch's order was made.
    """
    for name, value, minimum in (
        ("seed", seed, 0),
        ("epoch", epoch, 0),
        ("num_positions", num_positions, 0),
        ("samples_per_step", samples_per_step, 1),
        ("start_position", start_position, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(f"curriculum order: {name} must be an int >= {minimum}, got {value!r}")
    levels = np.asarray(levels)
    if levels.ndim != 1 or (levels.size and not np.issubdtype(levels.dtype, np.integer)):
        raise ValueError(f"curriculum order: levels must be a 1-D int array, got {levels.dtype}")
    if levels.size and (levels.min() < 0 or levels.max() >= len(DIFFICULTIES)):
        raise ValueError(f"curriculum order: levels must be in 0..{len(DIFFICULTIES) - 1}")
    if qualities is not None:
        qualities = np.asarray(qualities, dtype=np.float64)
        if qualities.shape != levels.shape:
            raise ValueError(
                f"curriculum order: {len(qualities)} qualities for {len(levels)} samples"
            )
    out = np.empty(num_positions, dtype=np.int64)
    if num_positions == 0:
        return out
    if levels.size == 0:
        raise ValueError("curriculum order: the selection is empty; nothing to draw from")

    first_step = start_position // samples_per_step
    last_step = (start_position + num_positions - 1) // samples_per_step
    steps = np.arange(first_step, last_step + 1)
    table = schedule.weights_table(steps)
    step_segment = schedule.quality_segments(steps)

    # pools[segment] = sample indices per level meeting that segment's floor (-1: no floor)
    pools: dict[int, list[np.ndarray]] = {}
    for segment in np.unique(step_segment).tolist():
        keep = np.ones(levels.shape, dtype=bool)
        if qualities is not None and segment >= 0:
            keep = qualities >= schedule.quality_breakpoints[segment][1]
        pools[segment] = [np.flatnonzero(keep & (levels == lv)) for lv in range(len(DIFFICULTIES))]
    available = np.array([[len(p) > 0 for p in pools[s]] for s in step_segment.tolist()])
    table = np.where(available, table, 0.0)
    empty = np.flatnonzero(table.sum(axis=1) <= 0)
    if empty.size:
        step = int(steps[empty[0]])
        present = [DIFFICULTIES[lv] for lv in range(len(DIFFICULTIES)) if available[empty[0], lv]]
        raise ValueError(
            f"curriculum order: at step {step} the schedule weights {schedule.weights(step)} "
            f"(min_quality {schedule.min_quality(step)}) put nothing on the difficulties "
            f"this selection has eligible samples of: {present}"
        )
    table = table / table.sum(axis=1, keepdims=True)
    cumulative = np.cumsum(table, axis=1)[:, :-1]
    top_level = len(DIFFICULTIES) - 1 - np.argmax(table[:, ::-1] > 0, axis=1)

    draws = np.random.default_rng([int(seed), int(epoch), DRAW_STREAM]).random(num_positions)
    row = (start_position + np.arange(num_positions)) // samples_per_step - first_step
    level = np.empty(num_positions, dtype=np.int64)
    for lo in range(0, num_positions, _CHUNK):
        r = row[lo : lo + _CHUNK]
        picked = (draws[lo : lo + _CHUNK, None] >= cumulative[r]).sum(axis=1)
        # Rounding can put a draw past the last weighted level's cumulative share.
        level[lo : lo + _CHUNK] = np.minimum(picked, top_level[r])

    position_segment = step_segment[row]
    for segment, per_level in pools.items():
        in_segment = position_segment == segment
        for lv, pool in enumerate(per_level):
            where = np.flatnonzero(in_segment & (level == lv))
            if where.size == 0:
                continue
            cycles = -(-where.size // pool.size)
            stream = np.concatenate(
                [
                    pool[
                        np.random.default_rng(
                            [int(seed), int(epoch), POOL_STREAM, segment + 1, lv, cycle]
                        ).permutation(pool.size)
                    ]
                    for cycle in range(cycles)
                ]
            )
            out[where] = stream[: where.size]
    return out
