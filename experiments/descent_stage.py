"""The `descend` stage: the single-shot architecture step alone, with the capacity proxy as its task
term (`supernet.capacity_descent`): gradient descent on the architecture logits against the
differentiable latency of the configured cost form, nothing trained.

Config section `descend` (the fields of `supernet.capacity_descent.DescentConfig`; see
`experiments/configs/mobile/convergence.py:descend`). Every step's derived architecture is logged
to `metrics.jsonl` (`stage: descend`, its log10 FLOPs under `accuracy` and its target violation, as
`evolve` logs its candidates, so the convergence report reads both alike); the stage returns the
most capacity among the derived architectures that met the target. The search takes seconds, so a
killed run repeats it (same seed, same steps) and logs only the steps it had not logged.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import numpy as np

from experiments.config import ConfigError, from_section
from experiments.context import STAGES, Context, cost_config
from supernet.capacity_descent import DescentConfig, check_cost, descend
from supernet.objectives import CostConfig


def descent_config(cfg: Any, space) -> tuple[CostConfig, DescentConfig]:
    """The run's cost and `descend` options, checked (`checks.check_config` calls it before any work).

    Raises:
      ConfigError: no `descend` section, a bad option, or a cost form without a latency penalty.
    """
    if "descend" not in cfg:
        raise ConfigError("stage 'descend' needs a config section `descend` (the fields of "
                          "supernet.capacity_descent.DescentConfig), e.g. mobile/convergence.py:descend")
    cost = cost_config(cfg, space)
    try:
        dcfg = from_section(DescentConfig, cfg.descend)
        check_cost(cost)
    except ValueError as e:
        raise ConfigError(f"descend: {e.args[0] if e.args else e}") from None
    return cost, dcfg


@STAGES.register("descend")
def stage_descend(ctx: Context) -> dict[str, Any]:
    space, cfg = ctx.space, ctx.cfg
    cost, dcfg = descent_config(cfg, space)
    t0 = time.perf_counter()
    out = descend(space, cost, dcfg, jax.random.key(cfg.seed), mask=ctx.mask)
    seconds = time.perf_counter() - t0
    lat_name = f"latency_ms:{cost.accelerator}"
    logged = {m["index"] for m in ctx.wd.metrics() if m.get("stage") == "descend"}
    for i in range(dcfg.steps):
        if i not in logged:
            ctx.wd.log({"stage": "descend", "index": i, "arch": space.encode(out["arch"][i]),
                        "accuracy": float(out["capacity"][i]), "violation": float(out["violation"][i]),
                        lat_name: float(out["latency_ms"][i]), "loss": float(out["loss"][i])})
    feasible = out["violation"] <= 0
    if not feasible.any():
        raise ConfigError(f"descend: none of the {dcfg.steps} derived architectures met the latency target "
                          f"{cost.target_ms:.4g} ms ({lat_name}; the last: {out['latency_ms'][-1]:.4g} ms); "
                          "raise cost.weight, descend.steps or the target")
    best = int(np.argmax(np.where(feasible, out["capacity"], -np.inf)))
    ctx.arch = out["arch"][best]
    return {"arch": space.encode(ctx.arch), "search_seconds": seconds, "capacity_log10_flops": float(out["capacity"][best]),
            "steps": dcfg.steps, "best_step": best, "feasible_steps": int(feasible.sum()),
            "latency_objective": {lat_name: float(out["latency_ms"][best])}}
