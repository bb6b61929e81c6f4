"""How rugged a search space's cost landscape is: walks, lines, greedy descent, 2-D slices.

The reference article ("Search space curation") argues that a FLOPs-based cost "changes
monotonically with factors such as sizes or channels: if you find a direction across the terrain in
which the cost is going down, you can be sure that continuing in that direction will not cause the
cost to go up", that accelerator-aware costs make the landscape "rocky" (more points where the cost
switches from going down to going up), and that curating the space (widths on multiples of the
parallelism factor P) gives "fewer, larger steps across a smoother terrain". This module measures
those three statements on any `SearchSpace` and any cost of its layer tables.

**The objective.** A NAS search does not minimise hardware cost alone (the empty network would
win); it trades the task against the cost. The landscape measured here is that trade-off,

    J(a) = HW(a) / HW(ref) - alpha * log(MACs(a) / MACs(ref)),

where the task term is a smooth capacity proxy (accuracy in the MobileNet family grows about
linearly in log MACs: MobileNetV2's width-multiplier table, Sandler et al. 2018) and `ref` is the
space's baseline. With `HW = FLOPs` both terms are smooth and `J` is unimodal along every width
axis. With an accelerator latency, which is a staircase in the channel count (a layer of `c`
channels costs `ceil(c / P)` passes of the MAC array), widening inside a step is free for the
hardware term and pays in the task term, so `J` falls along every step and jumps at its edge: one
local minimum per step, the "rocky" terrain. Widths on multiples of P are exactly the steps' right
edges, so the curated space keeps only the points where `J` is smooth again. `alpha = 0` gives the
hardware cost alone (`hardware_only`).

**The measures** (each on a seeded set of walks, lines or starts):

- `walk`: a random walk of single-decision moves (an ordered decision, i.e. one whose choices are
  numbers, moves to a neighbouring value; a categorical one to any other value). Its lag-1
  autocorrelation `rho(1)` and correlation length `-1 / ln |rho(1)|` (Weinberger 1990, the standard
  ruggedness measure of fitness landscapes: short = rugged), and the share of steps that are local
  minima along the walk (a move that lowers `J` followed by one that raises it).
- `lines`: sweeps of one ordered decision through all its values, the rest fixed at a random
  architecture: the number of strict local minima per line (plateaus collapsed; 1 = unimodal).
- `descend`: best-improvement descent with single-decision moves from random starts (what a local
  search meets): steps to converge, and the objective it converges to.

Example (a tiny raw space: latency on an accelerator gives more minima per line than FLOPs):
    >>> from hwmodel import ACCELERATORS
    >>> from supernet.spaces import make_space
    >>> space = make_space("mobile-raw", blocks_per_stage=(1, 1), base_widths=(16, 32),
    ...                    stage_strides=(1, 2), head_width=64)
    >>> flops = objective(space, "flops")
    >>> npu = objective(space, ACCELERATORS["npu"])
    >>> rng = np.random.default_rng(0)
    >>> starts = space.validate_batch(space.sample(jax.random.key(0), 20))
    >>> lines_flops = line_minima(space, flops, starts)
    >>> lines_npu = line_minima(space, npu, starts)
    >>> float(lines_flops.mean()) <= 1.0 < float(lines_npu.mean())
    True
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hwmodel import analytic
from hwmodel.accelerators import AcceleratorSpec
from hwmodel.layers import LayerTable, total_flops
from supernet.space import Decision, HasBaseline, SearchSpace

#: A vectorised objective: `[N, D]` int architectures -> `[N]` float64 values.
Objective = Callable[[np.ndarray], np.ndarray]

_CHUNK = 512  # architectures per jitted call (one compiled shape; the tail is padded)


def is_ordered(decision: Decision) -> bool:
    """Whether a decision's choices are numbers (widths, kernels, multipliers): moves go to a
    neighbouring value; otherwise (block types, operations) to any other value."""
    return all(isinstance(c, (int, float, np.integer, np.floating)) and not isinstance(c, bool)
               for c in decision.choices)


def reference_arch(space: SearchSpace) -> np.ndarray:
    """The architecture the objective is relative to: the space's baseline, else its first one."""
    return space.baseline_arch() if isinstance(space, HasBaseline) else np.zeros(space.num_decisions, np.int32)


def line_decisions(space: SearchSpace, contains: str = "") -> list[int]:
    """The decisions worth sweeping as lines: ordered, more than two choices, name containing `contains`."""
    return [d for d, dec in enumerate(space.decisions)
            if is_ordered(dec) and dec.num_choices > 2 and contains in dec.name]


def hardware_cost(cost: str | AcceleratorSpec) -> Callable[[LayerTable], jax.Array]:
    """`"flops"` or an accelerator preset (exact analytic latency, ms) as a function of a table."""
    if isinstance(cost, AcceleratorSpec):
        return lambda t: analytic.latency_ms(cost, t)
    if cost == "flops":
        return total_flops
    raise ValueError(f"unknown landscape cost {cost!r}; use 'flops' or an AcceleratorSpec "
                     "(hwmodel.ACCELERATORS[name])")


def objective(space: SearchSpace, cost: str | AcceleratorSpec | Objective, alpha: float = 1.0,
              reference: np.ndarray | None = None) -> Objective:
    """`J(a) = HW(a)/HW(ref) - alpha log(MACs(a)/MACs(ref))` (module docstring), vectorised.

    Args:
      space: the search space.
      cost: `"flops"`, an `AcceleratorSpec` (its exact analytic latency), or a function of `[N, D]`
        architectures giving their hardware cost (e.g. measured latencies).
      alpha: weight of the capacity (task) term; 0 measures the hardware cost alone.
      reference: the architecture both terms are relative to (default: the space's baseline, or
        its first architecture when it has none).
    """
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0 (the weight of the capacity term), got {alpha}")
    measured = callable(cost) and not isinstance(cost, AcceleratorSpec)
    hw = None if measured else hardware_cost(cost)
    if reference is None:
        reference = reference_arch(space)
    hw_and_flops = table_function(space, lambda t: jnp.stack(
        [(total_flops(t) if hw is None else hw(t)), total_flops(t)], -1))

    def evaluate(archs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        archs = np.asarray(archs, np.int32).reshape(-1, space.num_decisions)
        v = hw_and_flops(archs)
        return (np.asarray(cost(archs), np.float64) if measured else v[:, 0]), v[:, 1]

    hw_ref, f_ref = (float(v[0]) for v in evaluate(np.asarray(reference)[None]))

    def j(archs: np.ndarray) -> np.ndarray:
        h, f = evaluate(archs)
        return h / hw_ref - alpha * np.log(f / f_ref)

    return j


def neighbours(space: SearchSpace, arch: np.ndarray, decisions: Sequence[int] | None = None) -> np.ndarray:
    """Every architecture one move away (`[M, D]`): ordered decisions +-1, categorical any other;
    only moves of `decisions` (indices) when given."""
    arch = np.asarray(arch, np.int32)
    out = []
    for d in range(space.num_decisions) if decisions is None else decisions:
        dec = space.decisions[d]
        n = dec.num_choices
        targets = [arch[d] - 1, arch[d] + 1] if is_ordered(dec) else range(n)
        for c in targets:
            if 0 <= c < n and c != arch[d]:
                a = arch.copy()
                a[d] = c
                out.append(a)
    return np.stack(out)


def random_walk(space: SearchSpace, rng: np.random.Generator, start: np.ndarray, steps: int) -> np.ndarray:
    """`[steps + 1, D]`: uniformly random single-decision moves (a random neighbour) from `start`."""
    if steps < 1:
        raise ValueError(f"a walk needs at least one step, got {steps}")
    walk = [np.asarray(start, np.int32)]
    for _ in range(steps):
        nb = neighbours(space, walk[-1])
        walk.append(nb[rng.integers(len(nb))])
    return np.stack(walk)


def autocorrelation(values: np.ndarray, lag: int = 1) -> float:
    """Autocorrelation of a walk's values at `lag` (Weinberger 1990)."""
    v = np.asarray(values, np.float64)
    v = v - v.mean()
    den = float(np.dot(v, v))
    return float(np.dot(v[:-lag], v[lag:]) / den) if den > 0 else 1.0


def correlation_length(values: np.ndarray) -> float:
    """`-1 / ln |rho(1)|` in moves: how far apart two points of a walk stop being alike."""
    r = abs(autocorrelation(values, 1))
    return float("inf") if r >= 1 else float(-1.0 / np.log(max(r, 1e-12)))


def walk_minimum_share(values: np.ndarray) -> float:
    """Share of a walk's inner points where a move that lowered the value is followed by one that
    raises it (the issue's definition of a local minimum met along a walk)."""
    d = np.diff(np.asarray(values, np.float64))
    return float(np.mean((d[:-1] < 0) & (d[1:] > 0)))


def strict_minima(values: np.ndarray) -> int:
    """Number of strict local minima of a 1-D sequence, plateaus collapsed (a plateau lower than both
    neighbours counts once; an end counts when its neighbour is higher)."""
    v = np.asarray(values, np.float64)
    keep = np.concatenate([[True], np.abs(np.diff(v)) > 1e-12 * np.maximum(1.0, np.abs(v[1:]))])
    v = v[keep]
    if len(v) == 1:
        return 1
    padded = np.concatenate([[np.inf], v, [np.inf]])
    return int(np.sum((padded[1:-1] < padded[:-2]) & (padded[1:-1] < padded[2:])))


def line(space: SearchSpace, arch: np.ndarray, d: int) -> np.ndarray:
    """`[C_d, D]`: `arch` with decision `d` swept through all its choices."""
    a = np.repeat(np.asarray(arch, np.int32)[None], space.decisions[d].num_choices, 0)
    a[:, d] = np.arange(len(a))
    return a


def _lines(space: SearchSpace, j: Objective, starts: np.ndarray,
           decisions: Sequence[int] | None) -> list[np.ndarray]:
    if decisions is None:
        decisions = line_decisions(space)
    lines = [line(space, s, d) for s in np.asarray(starts) for d in decisions]
    values = j(np.concatenate(lines))
    return np.split(values, np.cumsum([len(ln) for ln in lines])[:-1])


def line_minima(space: SearchSpace, j: Objective, starts: np.ndarray,
                decisions: Sequence[int] | None = None) -> np.ndarray:
    """Strict local minima per line `[len(starts) * len(decisions)]`, over the ordered decisions with
    more than two choices (or those named), each swept through one start."""
    return np.asarray([strict_minima(v) for v in _lines(space, j, starts, decisions)])


def plateau_share(space: SearchSpace, j: Objective, starts: np.ndarray,
                  decisions: Sequence[int] | None = None) -> float:
    """Share of moves along lines (as `line_minima`) that leave the value unchanged: with the
    hardware cost alone (`alpha = 0`), choices the accelerator cannot tell apart (wasted lanes)."""
    d = np.concatenate([np.diff(v) for v in _lines(space, j, starts, decisions)])
    return float(np.mean(np.abs(d) <= 1e-9))


def table_function(space: SearchSpace, fn: Callable[[LayerTable], jax.Array]) -> Callable[[np.ndarray], np.ndarray]:
    """`fn` of one architecture's layer table as a function of `[N, D]` int architectures -> `[N, ...]`
    float64: vmapped and jitted over chunks of `_CHUNK` (one compiled shape; the tail is padded)."""
    run = jax.jit(jax.vmap(lambda a: fn(space.layers(a))))

    def evaluate(archs: np.ndarray) -> np.ndarray:
        archs = np.asarray(archs, np.int32).reshape(-1, space.num_decisions)
        out = []
        for i in range(0, len(archs), _CHUNK):
            part = archs[i:i + _CHUNK]
            pad = np.concatenate([part, np.repeat(part[:1], _CHUNK - len(part), 0)])
            out.append(np.asarray(run(jnp.asarray(pad)), np.float64)[:len(part)])
        return np.concatenate(out)

    return evaluate


@dataclasses.dataclass(frozen=True)
class Descent:
    """One best-improvement descent: the architectures it visited and their objective values."""

    path: np.ndarray
    values: np.ndarray

    @property
    def steps(self) -> int:
        return len(self.path) - 1


def descend(space: SearchSpace, j: Objective, start: np.ndarray, max_steps: int = 10_000,
            decisions: Sequence[int] | None = None) -> Descent:
    """Best-improvement local search with single-decision moves (of `decisions` only, when given)
    until no neighbour is lower."""
    a = np.asarray(start, np.int32)
    path, values = [a], [float(j(a[None])[0])]
    for _ in range(max_steps):
        nb = neighbours(space, a, decisions)
        v = j(nb)
        i = int(np.argmin(v))
        if v[i] >= values[-1]:
            break
        a = nb[i]
        path.append(a)
        values.append(float(v[i]))
    return Descent(np.stack(path), np.asarray(values))


def slice_2d(space: SearchSpace, j: Objective, arch: np.ndarray, d0: int, d1: int) -> np.ndarray:
    """`J` on the grid of decisions `d0` x `d1` through `arch` (`[C_d0, C_d1]`)."""
    n0, n1 = space.decisions[d0].num_choices, space.decisions[d1].num_choices
    a = np.repeat(np.asarray(arch, np.int32)[None], n0 * n1, 0)
    a[:, d0] = np.repeat(np.arange(n0), n1)
    a[:, d1] = np.tile(np.arange(n1), n0)
    return j(a).reshape(n0, n1)


def summarize(space: SearchSpace, j: Objective, seed: int = 0, walks: int = 4, walk_steps: int = 500,
              lines_through: int = 20, descents: int = 10, hardware_only: Objective | None = None,
              line_decisions: Sequence[int] | None = None) -> tuple[dict[str, float], np.ndarray]:
    """`(measures, best)`: the measures of the module docstring, seeded (walk ruggedness, minima per
    line, descent; with `hardware_only`, the same cost at `alpha = 0`, the plateau share of its
    lines; lines over `line_decisions`, default every ordered decision with more than two choices)
    and the lowest architecture the descents reached."""
    rng = np.random.default_rng(seed)
    draw = lambda n: rng.integers(0, [d.num_choices for d in space.decisions], size=(n, space.num_decisions))  # noqa: E731
    rho, length, share = [], [], []
    for start in draw(walks):
        v = j(random_walk(space, rng, start, walk_steps))
        rho.append(autocorrelation(v))
        length.append(correlation_length(v))
        share.append(walk_minimum_share(v))
    line_starts = space.validate_batch(draw(lines_through))
    minima = line_minima(space, j, line_starts, line_decisions)
    plateaus = {} if hardware_only is None else {
        "line_plateau_share": plateau_share(space, hardware_only, line_starts, line_decisions)}
    runs = [descend(space, j, s) for s in space.validate_batch(draw(descents))]
    finals = np.asarray([r.values[-1] for r in runs])
    measures = {"walk_rho1": float(np.mean(rho)), "walk_correlation_length": float(np.mean(length)),
            "walk_minimum_share": float(np.mean(share)),
            "line_minima_mean": float(minima.mean()), "line_unimodal_share": float(np.mean(minima <= 1)),
            "descent_steps_mean": float(np.mean([r.steps for r in runs])),
            "descent_final_mean": float(finals.mean()), "descent_final_best": float(finals.min()),
            "descent_final_spread": float(finals.max() - finals.min()),
            "space_size_log10": float(np.sum(np.log10([d.num_choices for d in space.decisions]))), **plateaus}
    return measures, runs[int(np.argmin(finals))].path[-1]
