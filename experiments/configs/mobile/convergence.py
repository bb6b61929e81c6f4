"""Curation, the convergence half (issue 25 part 1): evolution on `mobile-raw` (every integer width)
vs `mobile-curated` (widths on multiples of P = 16) with the same latency target and budget.

Commands:
    python -m experiments.sweep --config experiments/configs/mobile/convergence.py --workdir workdirs/convergence
    python -m experiments.report workdirs/convergence --out docs/results/convergence_runs --group-by space.name
Arguments: `raw` or `curated` (one run), `descend` (the gradient search below instead of
evolution), `smoke` (a tiny space and budget).
The gradient half (`:descend`, seconds per run; same target, same root, so one report shows both):
    python -m experiments.sweep --config experiments/configs/mobile/convergence.py:descend --workdir workdirs/convergence

The search: regularized evolution (`evolve`, 3000 evaluations, seeds 0-4) for the most capacity
(`evolve.evaluator=capacity`: log10 FLOPs, a training-free proxy for accuracy; no network is trained
here, and the mobile supernet does not train at CPU scale) under a hard latency target of 0.6 ms on
the analytic `npu` (0.6 x MobileNetV2's 1.004 ms there). The report gives, per space, the
best feasible capacity per evaluation (the trajectories) and the evaluations until the target is met
at the capacity every run reaches.

`descend`: the single-shot architecture step alone (`supernet.capacity_descent`, stage `descend`):
Adam on the architecture logits, FBNet's straight-through Gumbel sample priced per step by the
differentiable analytic NPU latency (`cost.form=hinge`, weight 5, the same 0.6 ms target) against
the same capacity proxy; 3000 steps (one derived network per step, as evolution's 3000
evaluations), seeds 0-4. A single-shot search with a trained supernet (an accuracy in the loss)
does not learn on the mobile space at CPU scale (`docs/results/latency_cut.md`). Result (2026-12-07):
curated widths reach the common level in 243 ± 131 steps, raw ones in 878 ± 197 (85 s for the 10 runs).

Run time and result (2026-12-05, 2-core CPU): docs/results/convergence.md.
"""

from experiments.configs.common import base, config_args

SPACES = {"raw": "mobile-raw", "curated": "mobile-curated"}
OPTIONS = (*SPACES, "descend", "smoke")


def get_config(arg: str | None = None):
    from supernet.capacity_descent import DescentConfig
    from experiments.config import defaults_of

    args = config_args(arg, OPTIONS, default="curated")
    c = base()
    c.stages = ["descend"] if "descend" in args else ["evolve"]
    c.space.name = SPACES["raw" if "raw" in args else "curated"]
    c.space.kwargs = {"parallelism": 16}
    c.cost.accelerator = "npu"
    c.cost.form = "hinge"  # evolve: a hard latency constraint at the target
    c.cost.target_ms = 0.6
    c.evolve.evaluator = "capacity"
    c.evolve.budget_evals = 3000
    c.report.accelerators = ("npu", "npu-p32", "edgetpu", "mobile-cpu")
    c.data.name = "synthetic"  # nothing is trained
    c.descend = defaults_of(DescentConfig)
    c.descend.steps = 3000
    if "descend" in args:
        c.cost.weight = 5.0  # hinge penalty: 5 x the relative excess over the target
    if "smoke" in args:
        c.descend.steps = 60
        c.evolve.budget_evals = 60
        c.space.kwargs = {"parallelism": 16, "blocks_per_stage": (1, 2), "base_widths": (16, 32),
                          "stage_strides": (1, 2), "stem_width": 16, "head_width": 64}
        c.cost.target_ms = 0.05
    return c


def get_sweep(arg: str | None = None):
    prefix = "descend_" if "descend" in config_args(arg, OPTIONS, default="curated") else ""
    return [{"name": f"{prefix}{name}/seed={seed}", "space.name": space, "seed": seed}
            for name, space in SPACES.items() for seed in range(5)]
