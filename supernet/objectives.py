"""Hardware-aware search objectives: task loss combined with a differentiable latency (and memory) cost.

The latency comes from `hwmodel` on `space.expected_layers(probs)`, the layer table of the current
architecture distribution (presence probabilities, expected channel counts), so its gradient reaches
the architecture logits. Cost models: `analytic` (the smooth tiling/roofline model of an
`AcceleratorSpec`) or `surrogate` (a fitted `hwmodel.Surrogate`).

Loss forms (`LOSS_FORMS`), with CE the task loss, LAT the expected latency in ms, T the target:
- `none`: CE (accuracy-only search).
- `fbnet`: CE * a * log(LAT)^b, FBNet (Wu et al., CVPR 2019, Eq. 2) with a = 0.2, b = 0.6 and
  LAT in microseconds as in the paper (so log(LAT) > 0 for any real network; clamped at 1 us).
- `proxyless`: CE + l * (LAT - T) / T, ProxylessNAS's additive latency regulariser (Cai et al.,
  ICLR 2019, Eq. 6: CE + l * E[LAT]) normalised by the target so that l is unit-free.
- `tunas`: CE + b * |LAT / T - 1|, TuNAS's absolute reward (Bender et al., CVPR 2020, Eq. 4) as a
  loss (their b = -0.07 in reward terms): penalises being slower *and* faster than the target.
- `hinge`: CE + b * max(0, LAT / T - 1): only being slower than the target costs, a soft form of
  MnasNet's hard constraint (Tan et al., CVPR 2019, Eq. 2 with alpha = 0 below T); the search then
  looks for the most accurate architecture that meets the target, not for one at the target.
- `constraint`: CE alone in the loss; T is a hard limit on the architecture the search returns, the
  most probable one whose predicted latency meets it (`supernet.derive`, a projection as in
  HardCoRe-NAS, Nayman et al. 2021). The cost that is constrained is then by definition the
  returned architecture's, and one trained supernet serves any target.
Memory budgets (the article's classification case fits parameter *and* peak activation bytes at
once): + m * sum_k relu(M_k / B_k - 1) over the budgets set, `params_budget_bytes` on
`hwmodel.memory.param_bytes` and `activation_budget_bytes` on its (smooth) peak activation bytes.
Zero inside the budget, so the search is free there; above it, each term's gradient is that of
M_k / B_k (relative, so the two budgets weigh alike whatever their size). `memory_floor` gives the
smallest memories an architecture of the space reaches, so an impossible budget stops before the
search starts (`check_budgets`).

`discrete=True` costs the most probable architecture instead of the expected layer table, with a
straight-through gradient (`one_hot(argmax p) + p - stop_gradient(p)`, Bengio et al. 2013): the
value is the latency of the architecture that will be derived, the gradient that of the expected
table at that point. TuNAS's reward likewise uses the latency of the sampled (discrete)
architecture. With a spread distribution the expected table's latency can be far from the derived
architecture's: on NAS-Bench-201 with a 10 ms pixel3 target the expected cost sat near the target
while the argmax cells took about 2 ms (docs/results/ablation.md).

Example:
    >>> cfg = CostConfig(form="proxyless", target_ms=1.0, weight=0.5)
    >>> float(combine(jnp.float32(2.0), {"latency_ms": jnp.float32(1.5)}, cfg))
    2.25
    >>> mem = CostConfig(params_budget_bytes=100.0, activation_budget_bytes=50.0)
    >>> float(combine(jnp.float32(2.0), {"params_bytes": 150.0, "peak_activation_bytes": 40.0}, mem))
    2.5
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from hwmodel import analytic, memory
from hwmodel.accelerators import ACCELERATORS
from hwmodel.surrogate import Surrogate, predict
from supernet import landscape
from supernet.relax import straight_through
from supernet.space import ArchProbs, SearchSpace

LOSS_FORMS = ("none", "fbnet", "proxyless", "tunas", "hinge", "constraint")
COST_MODELS = ("analytic", "surrogate")
#: Memory budgets: the CostConfig field -> the cost key (and evaluator column) it bounds.
MEMORY_BUDGETS = {"params_budget_bytes": "params_bytes", "activation_budget_bytes": "peak_activation_bytes"}


@dataclasses.dataclass(frozen=True)
class CostConfig:
    """How the hardware cost enters the loss (see module docstring).

    Attributes:
      form: one of `LOSS_FORMS`.
      target_ms: latency target T (needed by proxyless and tunas; > 0).
      weight: l (proxyless), |b| (tunas) or a (fbnet, default 0.2 there when left at 0).
      exponent: b of the fbnet form (0.6 in FBNet).
      model: `analytic` or `surrogate`.
      accelerator: name of an `hwmodel.ACCELERATORS` preset (analytic model; memory bytes).
      temperature: temperature of the smooth analytic model (relative; small is close to exact).
      params_budget_bytes: parameter-memory budget in bytes (None: unbounded).
      activation_budget_bytes: peak-activation-memory budget in bytes (None: unbounded).
      memory_weight: m, the weight of each budget's penalty.
      discrete: cost the argmax architecture with a straight-through gradient (module docstring).
      confidence: with a latency target, the probability with which the returned architecture is
        to meet it on the device given the surrogate's held-out errors on its training cells:
        single-shot then limits the predicted latency to `T / r_q`, r_q the conformal quantile of
        their measured / predicted ratios (`supernet.derive.model_limit`; the analytic model counts
        as exact). None: `T` itself.
    """

    form: str = "none"
    target_ms: float | None = None
    weight: float = 0.0
    exponent: float = 0.6
    model: str = "analytic"
    accelerator: str = "npu"
    temperature: float = 0.05
    params_budget_bytes: float | None = None
    activation_budget_bytes: float | None = None
    memory_weight: float = 1.0
    discrete: bool = False
    confidence: float | None = None

    def __post_init__(self):
        if self.form not in LOSS_FORMS:
            raise ValueError(f"unknown latency loss form {self.form!r}; valid forms: {', '.join(LOSS_FORMS)}")
        if self.model not in COST_MODELS:
            raise ValueError(f"unknown cost model {self.model!r}; valid models: {', '.join(COST_MODELS)}")
        if self.form in ("proxyless", "tunas", "hinge", "constraint") and (self.target_ms is None or not self.target_ms > 0):
            raise ValueError(f"latency loss {self.form!r} needs a latency target target_ms > 0, "
                             f"got {self.target_ms!r}")
        if self.target_ms is not None and not self.target_ms > 0:
            raise ValueError(f"target_ms must be > 0, got {self.target_ms!r}")
        if self.weight < 0 or self.memory_weight < 0:
            raise ValueError("cost weights must be >= 0")
        for name in MEMORY_BUDGETS:
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be a memory in bytes > 0 (or None), got {value!r}")
        if self.confidence is not None and not 0.5 <= self.confidence < 1.0:
            raise ValueError(f"confidence must be a probability in [0.5, 1) (or None), got {self.confidence!r}")
        ACCELERATORS[self.accelerator]  # unknown name -> KeyError listing the presets

    @property
    def uses_latency(self) -> bool:
        return self.form != "none"

    @property
    def budgets(self) -> dict[str, float]:
        """The memory budgets set, by cost key (`params_bytes`, `peak_activation_bytes`)."""
        return {key: getattr(self, f) for f, key in MEMORY_BUDGETS.items() if getattr(self, f) is not None}

    @property
    def in_loss(self) -> bool:
        """Whether the architecture loss has a hardware term (the `constraint` form and the
        targets of the other forms also bound what single-shot returns, `supernet.derive`)."""
        return hardware_in_loss(self.form, bool(self.budgets))

    @property
    def uses_cost(self) -> bool:
        """Whether the loss has any hardware term (latency or a memory budget): needs a cost function."""
        return self.uses_latency or bool(self.budgets)


CostFn = Callable[[ArchProbs], dict[str, jax.Array]]


def hardware_in_loss(form: str, has_budget: bool) -> bool:
    """Whether a loss of latency form `form`, with or without a memory budget, has a hardware term
    (`CostConfig.in_loss`; also for forms read back from a stored config)."""
    return form not in ("none", "constraint") or has_budget


def make_cost_fn(space: SearchSpace, cfg: CostConfig, surrogate: Surrogate | None = None) -> CostFn:
    """`probs -> {"latency_ms", "params_bytes", "peak_activation_bytes"}` on the expected layer
    table (latency with a latency form, each memory with its budget); jittable, differentiable.

    Raises:
      ValueError: the surrogate model is asked for without a fitted surrogate.
    """
    if cfg.model == "surrogate" and surrogate is None and cfg.uses_latency:
        raise ValueError("cost model 'surrogate' needs a fitted hwmodel.Surrogate (see `python -m "
                         "experiments.fit_surrogate --save`); or use model='analytic'")
    spec = ACCELERATORS[cfg.accelerator]

    def cost(probs: ArchProbs) -> dict[str, jax.Array]:
        if cfg.discrete:
            probs = straight_through(probs)  # masked choices (probability 0) are never the argmax
        table = space.expected_layers(probs)
        out = {}
        if not cfg.uses_latency:
            pass
        elif cfg.model == "surrogate" and surrogate is not None:
            # the rows the device runs, as in the fit: on a one-hot (straight-through) table this
            # removes dead ops, e.g. a cut-off NAS-Bench-201 cell costs ~0 ms, not its convs
            out["latency_ms"] = predict(surrogate, surrogate.executed(table))
        else:
            out["latency_ms"] = analytic.latency_smooth_ms(spec, table, cfg.temperature)
        if "params_bytes" in cfg.budgets:
            out["params_bytes"] = memory.param_bytes(spec, table)
        if "peak_activation_bytes" in cfg.budgets:
            out["peak_activation_bytes"] = memory.peak_activation_bytes(table, spec, temperature=cfg.temperature)
        return out

    return cost


def combine(task_loss: jax.Array, cost: Mapping[str, jax.Array], cfg: CostConfig) -> jax.Array:
    """The search loss of the configured form (see module docstring) from the costs of `make_cost_fn`."""
    loss, latency_ms = task_loss, cost.get("latency_ms")
    if cfg.form == "fbnet":
        a = cfg.weight or 0.2
        lat_us = jnp.maximum(latency_ms * 1e3, 1.0 + 1e-6)
        loss = task_loss * a * jnp.log(lat_us) ** cfg.exponent
    elif cfg.form == "proxyless":
        loss = task_loss + cfg.weight * (latency_ms - cfg.target_ms) / cfg.target_ms
    elif cfg.form == "tunas":
        loss = task_loss + cfg.weight * jnp.abs(latency_ms / cfg.target_ms - 1.0)
    elif cfg.form == "hinge":
        loss = task_loss + cfg.weight * jax.nn.relu(latency_ms / cfg.target_ms - 1.0)
    for key, budget in cfg.budgets.items():
        loss = loss + cfg.memory_weight * jax.nn.relu(cost[key] / budget - 1.0)
    return loss


def _memories(spec, table, temperature) -> jax.Array:
    """`[..., 2]`: parameter and (smooth, or exact with temperature None) peak activation bytes, in
    the order of `MEMORY_BUDGETS`."""
    return jnp.stack([memory.param_bytes(spec, table),
                      memory.peak_activation_bytes(table, spec, temperature=temperature)], -1)


def _first_archs(space: SearchSpace) -> np.ndarray:
    """The space's first architecture (its smallest choices, in the spaces here) and its baseline."""
    return np.stack([np.zeros(space.num_decisions, np.int32), landscape.reference_arch(space)])


def memory_floor(space: SearchSpace, cfg: CostConfig, starts: int = 4, seed: int = 0
                 ) -> tuple[dict[str, float], np.ndarray, dict[str, float]]:
    """The smallest memories of `cfg`'s budgets that the space reaches, and the architecture closest
    to meeting all of them at once.

    Best-improvement descent (`supernet.landscape.descend`) with single-decision moves from the
    space's first architecture, its baseline and `starts` random ones: per memory alone, then on
    `max_k M_k / B_k` (the budgets are met together iff it is <= 1). The descents minimise the smooth
    peak (`cfg.temperature`), which breaks the ties of an exact max (two rows holding the same peak:
    shrinking either alone would not lower it); the values returned are exact (`hwmodel.memory`).

    Returns:
      `(floors, closest, closest_bytes)`: the smallest bytes found per budget key, the architecture
      with the lowest worst-budget ratio and its bytes per key.
    """
    spec, keys = ACCELERATORS[cfg.accelerator], list(cfg.budgets)
    if not keys:
        raise ValueError("memory_floor needs at least one memory budget in the CostConfig")

    col = {key: i for i, key in enumerate(MEMORY_BUDGETS.values())}
    smooth = landscape.table_function(space, lambda t: _memories(spec, t, cfg.temperature))
    exact = landscape.table_function(space, lambda t: _memories(spec, t, None))
    draw = np.random.default_rng(seed).integers(0, [d.num_choices for d in space.decisions],
                                                size=(starts, space.num_decisions))
    start_archs = space.validate_batch(np.concatenate([_first_archs(space), draw]))
    budget = np.asarray([cfg.budgets[k] for k in keys])
    idx = [col[k] for k in keys]

    def lowest(j) -> np.ndarray:
        ends = np.stack([landscape.descend(space, j, a).path[-1] for a in start_archs])
        return ends[int(np.argmin(j(ends)))]

    floors = {k: float(exact(lowest(lambda a, c=col[k]: smooth(a)[:, c]))[0, col[k]]) for k in keys}
    closest = lowest(lambda a: np.max(smooth(a)[:, idx] / budget, -1))
    got = exact(closest)[0]
    return floors, closest, {k: float(got[col[k]]) for k in keys}


def check_budgets(space: SearchSpace, cfg: CostConfig, **kwargs) -> None:
    """Stops (ValueError) on memory budgets that no architecture of the space meets, saying the
    smallest reachable (`memory_floor`); nothing without budgets."""
    if not cfg.budgets:
        return
    # the common case first: the space's first architecture (its smallest choices) or its baseline
    # meets the budgets, and the descents are not needed
    spec = ACCELERATORS[cfg.accelerator]
    for arch in space.validate_batch(_first_archs(space)):
        got = dict(zip(MEMORY_BUDGETS.values(), np.asarray(_memories(spec, space.layers(arch), None))))
        if all(float(got[k]) <= v for k, v in cfg.budgets.items()):
            return
    floors, closest, got = memory_floor(space, cfg, **kwargs)
    field = {v: k for k, v in MEMORY_BUDGETS.items()}
    low = [f"{field[k]}={cfg.budgets[k]:.0f} is below the smallest {k} reachable in {space.name}, "
           f"{floors[k]:.0f}" for k in cfg.budgets if floors[k] > cfg.budgets[k]]
    if not low and any(got[k] > cfg.budgets[k] for k in cfg.budgets):
        low = ["no architecture found meets the budgets together; the closest, "
               f"{space.encode(closest)}, has " + ", ".join(f"{k}={v:.0f}" for k, v in got.items())]
    if low:
        raise ValueError("impossible memory budget (bytes on accelerator "
                         f"{cfg.accelerator!r}): " + "; ".join(low) + ". Raise the budget")
