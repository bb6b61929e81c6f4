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
Optional memory penalty: + m * relu(M / budget - 1) with M the peak activation or parameter bytes.

`discrete=True` costs the most probable architecture instead of the expected layer table, with a
straight-through gradient (`one_hot(argmax p) + p - stop_gradient(p)`, Bengio et al. 2013): the
value is the latency of the architecture that will be derived, the gradient that of the expected
table at that point. TuNAS's reward likewise uses the latency of the sampled (discrete)
architecture. With a spread distribution the expected table's latency can be far from the derived
architecture's: on NAS-Bench-201 with a 10 ms pixel3 target the expected cost sat near the target
while the argmax cells took about 2 ms (docs/results/ablation.md).

Example:
    >>> cfg = CostConfig(form="proxyless", target_ms=1.0, weight=0.5)
    >>> float(combine(jnp.float32(2.0), jnp.float32(1.5), None, cfg))
    2.25
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from hwmodel import analytic, memory
from hwmodel.accelerators import ACCELERATORS
from hwmodel.surrogate import Surrogate, predict
from supernet.relax import straight_through
from supernet.space import ArchProbs, SearchSpace

LOSS_FORMS = ("none", "fbnet", "proxyless", "tunas", "hinge")
COST_MODELS = ("analytic", "surrogate")
MEMORY_KINDS = ("peak_activation", "params")


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
      memory: None, `peak_activation` or `params`; memory_budget_bytes and memory_weight go with it.
      discrete: cost the argmax architecture with a straight-through gradient (module docstring).
    """

    form: str = "none"
    target_ms: float | None = None
    weight: float = 0.0
    exponent: float = 0.6
    model: str = "analytic"
    accelerator: str = "npu"
    temperature: float = 0.05
    memory: str | None = None
    memory_budget_bytes: float | None = None
    memory_weight: float = 1.0
    discrete: bool = False

    def __post_init__(self):
        if self.form not in LOSS_FORMS:
            raise ValueError(f"unknown latency loss form {self.form!r}; valid forms: {', '.join(LOSS_FORMS)}")
        if self.model not in COST_MODELS:
            raise ValueError(f"unknown cost model {self.model!r}; valid models: {', '.join(COST_MODELS)}")
        if self.form in ("proxyless", "tunas", "hinge") and (self.target_ms is None or not self.target_ms > 0):
            raise ValueError(f"latency loss {self.form!r} needs a latency target target_ms > 0, "
                             f"got {self.target_ms!r}")
        if self.target_ms is not None and not self.target_ms > 0:
            raise ValueError(f"target_ms must be > 0, got {self.target_ms!r}")
        if self.weight < 0 or self.memory_weight < 0:
            raise ValueError("cost weights must be >= 0")
        if self.memory is not None:
            if self.memory not in MEMORY_KINDS:
                raise ValueError(f"unknown memory penalty {self.memory!r}; valid: {', '.join(MEMORY_KINDS)}")
            if self.memory_budget_bytes is None or not self.memory_budget_bytes > 0:
                raise ValueError(f"memory penalty {self.memory!r} needs memory_budget_bytes > 0")
        ACCELERATORS[self.accelerator]  # unknown name -> KeyError listing the presets

    @property
    def uses_latency(self) -> bool:
        return self.form != "none"


CostFn = Callable[[ArchProbs], dict[str, jax.Array]]


def make_cost_fn(space: SearchSpace, cfg: CostConfig, surrogate: Surrogate | None = None) -> CostFn:
    """`probs -> {"latency_ms", "memory_bytes"}` on the expected layer table; jittable, differentiable.

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
        if cfg.model == "surrogate" and surrogate is not None:
            # the rows the device runs, as in the fit: on a one-hot (straight-through) table this
            # removes dead ops, e.g. a cut-off NAS-Bench-201 cell costs ~0 ms, not its convs
            out["latency_ms"] = predict(surrogate, surrogate.executed(table))
        else:
            out["latency_ms"] = analytic.latency_smooth_ms(spec, table, cfg.temperature)
        if cfg.memory == "params":
            out["memory_bytes"] = memory.param_bytes(spec, table)
        elif cfg.memory == "peak_activation":
            out["memory_bytes"] = memory.peak_activation_bytes(table, spec, temperature=cfg.temperature)
        return out

    return cost


def combine(task_loss: jax.Array, latency_ms: jax.Array | None, memory_bytes: jax.Array | None,
            cfg: CostConfig) -> jax.Array:
    """The search loss of the configured form (see module docstring)."""
    loss = task_loss
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
    if cfg.memory is not None and memory_bytes is not None:
        loss = loss + cfg.memory_weight * jax.nn.relu(memory_bytes / cfg.memory_budget_bytes - 1.0)
    return loss
