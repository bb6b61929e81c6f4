"""The memory budget (issue 25 part 4, the article's classification case): fit MobileNetV2's task
under a budget on parameter bytes *and* peak activation bytes at once, each 53 % of MobileNetV2's
(a 47 % cut of both, the article's figure), on the int8 `npu` (1 byte per element).

Commands:
    python -m experiments.sweep --config experiments/configs/mobile/memory.py --workdir workdirs/memory
    python -m experiments.report workdirs/memory --out docs/results/memory --group-by stages
Arguments (one arm each): `baseline` (MobileNetV2 on `mobile-curated`, P = 16), `rules` (the expert
rule that meets the budget: the 0.5 width multiplier), `nas` (evolution for the most capacity
under both budgets), `rules_nas` (the expert fixes the multiplier at 0.5, `expert.hold=True`, and
the same search decides every other decision under both budgets, its population seeded with the
rules' network); `smoke` shrinks the space and the budget. (Until 2026-12-07 `rules_nas` only
seeded the population, and every seed ended at NAS's networks: `--config.expert.hold=False`.)

Budgets: MobileNetV2 here holds 2,231,066 parameter bytes and a 425,984-byte activation peak
(`hwmodel.memory`, exact); the budgets are 1,182,000 and 225,700 bytes. The searches maximise
capacity (`evolve.evaluator=capacity`, log10 FLOPs, a training-free proxy: on this CPU the mobile
networks cannot be trained in the session's time, so no arm reports an accuracy) and
the report checks each arm's memories against the budgets with the exact memory model.

Run time and result (2026-12-05, 2-core CPU): docs/results/memory.md.
"""

from experiments.configs.common import base, config_args, mobile_retrain, overrides

ARMS = ("baseline", "rules", "nas", "rules_nas")
#: 53 % of MobileNetV2's parameter and peak-activation bytes on mobile-curated (P = 16, int8).
BUDGETS = {"params_budget_bytes": 1_182_000.0, "activation_budget_bytes": 225_700.0}


def get_config(arg: str | None = None):
    args = config_args(arg, (*ARMS, "retrain", "smoke"), default="nas")
    arm = next((a for a in args if a in ARMS), "nas")
    c = base()
    c.space.name = "mobile-curated"
    c.space.kwargs = {"parallelism": 16}
    c.cost.accelerator = "npu"
    c.cost.update(BUDGETS)
    c.evolve.evaluator = "capacity"
    c.evolve.budget_evals = 3000
    c.report.accelerators = ("npu", "npu-p32", "edgetpu", "mobile-cpu")
    c.expert.rules = ("multiplier(value=0.5)",)
    c.data.name = "synthetic"  # nothing is trained
    c.stages = {"baseline": ["baseline"], "rules": ["expert"], "nas": ["evolve"],
                "rules_nas": ["expert", "evolve"]}[arm]
    c.expert.hold = arm == "rules_nas"
    if "smoke" in args:
        c.evolve.budget_evals = 60
        c.space.kwargs = {"parallelism": 16, "blocks_per_stage": (1, 2), "base_widths": (16, 32),
                          "stage_strides": (1, 2), "stem_width": 16, "head_width": 64}
        c.cost.update({"params_budget_bytes": 14000.0, "activation_budget_bytes": 65000.0})
    if "retrain" in args:  # accuracy: the found network trained on CIFAR-10 (the mobile CPU protocol)
        mobile_retrain(c, smoke_space="smoke" in args)
    return c


def get_sweep(arg: str | None = None):
    def run(name: str, arm: str, *extra: str, **kw) -> dict:
        return overrides(get_config(",".join((arm, *extra))), "stages", "expert.hold", name=name, **kw)

    if "retrain" in config_args(arg, (*ARMS, "retrain", "smoke"), default="nas"):
        # accuracy arms (MobileNetV2's is latency_cut.py:retrain's 0_baseline, the same runs)
        return [run(f"{i}_{arm}/seed={seed}", arm, "retrain", seed=seed)
                for i, arm in ((1, "rules"), (2, "nas"), (3, "rules_nas")) for seed in range(3)]
    fixed = [run(f"{i}_{arm}", arm) for i, arm in enumerate(ARMS[:2])]
    return fixed + [run(f"{i + 2}_{arm}/seed={seed}", arm, seed=seed) for i, arm in enumerate(ARMS[2:]) for seed in range(3)]
