"""Gradient search over the relaxed architecture with a training-free task term.

The single-shot searches (DARTS, FBNet, ProxylessNAS) update the architecture logits by gradient
descent on `task loss + latency penalty`, the latency read off the expected layer table
(`SearchSpace.expected_layers`, the differentiable cost model of `supernet.objectives`). Here the
task loss is the capacity proxy the multishot searches use where nothing can be trained
(`supernet.evaluators.CapacityEvaluator`): the task term is `-log10 FLOPs` of the expected table,
so the architecture step runs alone, without supernet weights, in milliseconds. It isolates what
the reference article's curation figure is about: how the gradient search moves over the cost
landscape of a raw vs a curated space (`experiments/configs/mobile/convergence.py`). It is not a
substitute for single-shot training: capacity is not accuracy.

Each step records the derived architecture (the argmax of the allowed logits, as `relax.argmax_arch`
derives, computed inside the jitted loop) with
its exact cost: its log10 FLOPs, its exact analytic latency and whether it meets the target.

Example (a tiny curated space whose MobileNetV2 takes 0.112 ms: derived networks meet 0.05 ms):
    >>> from supernet.objectives import CostConfig
    >>> from supernet.spaces import make_space
    >>> space = make_space("mobile-curated", parallelism=16, blocks_per_stage=(1, 2), base_widths=(16, 32),
    ...                    stage_strides=(1, 2), stem_width=16, head_width=64)
    >>> cost = CostConfig(accelerator="npu", form="hinge", target_ms=0.05, weight=5.0)
    >>> steps = descend(space, cost, DescentConfig(steps=200), jax.random.key(0))
    >>> ok = steps["violation"] <= 0
    >>> bool(ok.any()), steps["arch"].shape
    (True, (200, 12))
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hwmodel import analytic
from hwmodel.accelerators import ACCELERATORS
from supernet.evaluators import log10_flops
from supernet.objectives import CostConfig, combine, make_cost_fn
from supernet.relax import relax
from supernet.space import SearchSpace, SpaceMask


@dataclasses.dataclass(frozen=True)
class DescentConfig:
    """Options of `descend`.

    Attributes:
      steps: architecture updates.
      lr: Adam's learning rate on the logits (FBNet and ProxylessNAS use Adam on the logits).
      init_scale: the logits start at `init_scale * N(0, 1)` (DARTS: 1e-3); the seed draws them, so
        runs differ only there (with `softmax`) or also in the sampled weights (`gumbel`).
      relaxation: `softmax` (DARTS's expected cost) or `gumbel` (FBNet's sampled one), `supernet.relax`.
      tau: the Gumbel temperature.
      hard: price one network per step, straight-through (GDAS, ProxylessNAS's binarised path):
        the forward is the argmax of the weights, the gradient the relaxation's. Without it the
        expected table is priced (DARTS), whose argmax can miss the target the table meets.
    """
    steps: int = 1000
    lr: float = 0.05
    init_scale: float = 1e-3
    relaxation: str = "gumbel"
    tau: float = 1.0
    hard: bool = True

    def __post_init__(self):
        if self.steps < 1 or not self.lr > 0 or self.init_scale < 0 or not self.tau > 0:
            raise ValueError(f"descend needs steps >= 1, lr > 0, init_scale >= 0 and tau > 0; got {self}")
        if self.relaxation not in ("softmax", "gumbel"):
            raise ValueError(f"unknown relaxation {self.relaxation!r} for descend; valid: softmax, gumbel")


def check_cost(cost: CostConfig) -> None:
    """Raises ValueError unless the cost form puts a latency penalty into the loss (the search's
    only counterweight to the capacity term: without one the widest network wins) and the latency
    model is the analytic one (the derived networks are costed exactly by it), without memory
    budgets (a derived network's feasibility is its latency alone)."""
    if cost.budgets:
        raise ValueError(f"descend searches under a latency target only; drop the memory budgets {sorted(cost.budgets)} "
                         "(evolve constrains both memories)")
    if cost.model != "analytic":
        raise ValueError(f"descend prices its derived networks with the analytic model; set cost.model='analytic' "
                         f"(got {cost.model!r})")
    if cost.form in ("none", "constraint") or (cost.form in ("hinge", "proxyless", "tunas") and not cost.weight > 0):
        raise ValueError(f"descend needs a latency penalty in the loss: cost.form hinge, proxyless, tunas or fbnet "
                         f"with cost.weight > 0 (got form={cost.form!r}, weight={cost.weight})")


def descend(space: SearchSpace, cost: CostConfig, cfg: DescentConfig, key: jax.Array,
            mask: SpaceMask | None = None) -> dict[str, np.ndarray]:
    """Runs `cfg.steps` Adam steps on `-log10 FLOPs + latency penalty` (`objectives.combine` of the
    cost form, e.g. `hinge`: `weight * relu(latency / target - 1)`) over the architecture logits.

    Returns per step (arrays of length `steps`, after each update): `arch` `[steps, D]` (the argmax),
    `capacity` (its log10 FLOPs), `latency_ms` (its exact analytic latency on `cost.accelerator`),
    `violation` (`latency / target - 1`, > 0 misses the target; -inf without one), `loss` (the
    relaxed objective).

    Raises:
      ValueError: a cost `check_cost` refuses.
    """
    check_cost(cost)
    allowed = np.asarray(space.check_mask(mask).allowed)
    cost_fn, spec = make_cost_fn(space, cost), ACCELERATORS[cost.accelerator]
    k_init, k_steps = jax.random.split(key)
    logits = cfg.init_scale * jax.random.normal(k_init, allowed.shape)
    tx = optax.adam(cfg.lr)

    def loss_fn(logits, k):
        # softmax: the weights are the probabilities (DARTS); gumbel: a sampled network is priced (FBNet)
        w, _ = relax(cfg.relaxation, logits, k, allowed=allowed, tau=cfg.tau, hard=cfg.hard)
        return combine(-log10_flops(space.expected_layers(w)), cost_fn(w), cost)

    def step(carry, k):
        logits, opt = carry
        loss, g = jax.value_and_grad(loss_fn)(logits, k)
        upd, opt = tx.update(g, opt, logits)
        logits = optax.apply_updates(logits, upd)
        arch = jnp.argmax(jnp.where(allowed, logits, -jnp.inf), -1).astype(jnp.int32)
        table = space.layers(arch)
        return (logits, opt), (arch, log10_flops(table), analytic.latency_ms(spec, table), loss)

    _, (archs, cap, lat, loss) = jax.jit(lambda c, ks: jax.lax.scan(step, c, ks))(
        (logits, tx.init(logits)), jax.random.split(k_steps, cfg.steps))
    lat = np.asarray(lat, float)
    violation = lat / cost.target_ms - 1.0 if cost.target_ms else np.full_like(lat, -np.inf)
    return {"arch": np.asarray(archs), "capacity": np.asarray(cap, float), "latency_ms": lat,
            "violation": violation, "loss": np.asarray(loss, float)}
