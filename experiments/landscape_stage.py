"""The `landscape` stage: how rugged the search objective is on this run's space and cost
(`supernet.landscape`, the reference article's curation figure), and the architecture its local
search reaches.

Config section `landscape` (see `experiments/configs/mobile/curation.py`): `cost` (`flops` or an
accelerator preset of `hwmodel.ACCELERATORS`), `alpha` (weight of the capacity term), `walks`,
`walk_steps`, `lines`, `line_decisions` (the lines sweep the ordered decisions with more than two
choices whose name contains it), `descents` and `slice` (two ordered decisions). The stage
file holds the measures, the 2-D slice of the objective through the space's baseline and the
descent inside that slice from its smallest corner (`experiments.report` draws them); `results.json`
shows the measures and the lowest architecture the descents reached.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from hwmodel.accelerators import ACCELERATORS
from hwmodel.measure import make_backend
from supernet import landscape
from experiments.context import STAGES, Context

#: Landscape costs besides the accelerator presets.
COSTS = ("flops",)


def landscape_cost(name: str):
    """`"flops"` or the preset named `name` (the caller checks the name: `check_config`)."""
    return name if name in COSTS else ACCELERATORS[name]


@STAGES.register("landscape")
def stage_landscape(ctx: Context) -> dict[str, Any]:
    lc, space = ctx.cfg.landscape, ctx.space
    t0 = time.time()
    cost = landscape_cost(lc.cost)
    j = landscape.objective(space, cost, lc.alpha)
    measures, best = landscape.summarize(space, j, seed=ctx.cfg.seed, walks=lc.walks, walk_steps=lc.walk_steps,
                                         lines_through=lc.lines, descents=lc.descents,
                                         hardware_only=landscape.objective(space, cost, 0.0),
                                         line_decisions=landscape.line_decisions(space, lc.line_decisions))
    d0, d1 = (space.decision_index(n) for n in lc.slice)
    ref = landscape.reference_arch(space)
    grid = landscape.slice_2d(space, j, ref, d0, d1)
    start = ref.copy()
    start[[d0, d1]] = 0
    path = landscape.descend(space, j, start, decisions=(d0, d1))
    measured = {name: measured_line(space, name, lc.alpha, ref, d0, j, lc.workers) for name in lc.measured}
    ctx.arch = best
    print(f"landscape ({space.name}, {lc.cost}): {measures['line_minima_mean']:.2f} minima per line, "
          f"descent {measures['descent_steps_mean']:.0f} steps")
    return {"arch": space.encode(best), "cost": lc.cost, "alpha": lc.alpha, "measures": measures,
            "search_seconds": time.time() - t0, "measured": measured,
            "slice": {"decisions": list(lc.slice),
                      "choices": [list(map(float, space.decisions[d].choices)) for d in (d0, d1)],
                      "objective": grid.tolist(), "descent": path.path[:, [d0, d1]].tolist()}}


def measured_line(space, backend_name: str, alpha: float, ref: np.ndarray, d: int, analytic_j,
                  workers: int = 1) -> dict[str, Any]:
    """The objective along decision `d` through `ref` with the hardware term measured by a backend
    (`hwmodel.measure`, e.g. `zigzag:ascend_like`), next to the analytic one on the same line: is
    the staircase real, and does the real cost add minima of its own?"""
    kw = {"workers": workers} if backend_name.startswith("zigzag") else {}
    backend = make_backend(backend_name, **kw)
    seen: dict[bytes, float] = {}

    def latency(archs: np.ndarray) -> np.ndarray:
        fresh = {a.tobytes(): space.layers(a) for a in archs if a.tobytes() not in seen}
        backend.prefetch(list(fresh.values()))
        seen.update({k: backend.measure(t, layers=False).latency_ms for k, t in fresh.items()})
        return np.asarray([seen[a.tobytes()] for a in archs])

    try:
        ln = landscape.line(space, ref, d)
        values = landscape.objective(space, latency, alpha, ref)(ln)
        hw = latency(ln)
    finally:
        backend.close()
    base = analytic_j(ln)
    return {"decision": space.decisions[d].name, "choices": list(map(float, space.decisions[d].choices)),
            "objective": values.tolist(), "latency_ms": hw.tolist(), "analytic_objective": base.tolist(),
            "minima": landscape.strict_minima(values), "latency_minima": landscape.strict_minima(hw),
            "analytic_minima": landscape.strict_minima(base)}
