"""Ablation of search categories on NAS-Bench-201 (CIFAR-10): every combination of zero-shot (prune),
single-shot (supernet) and multishot (evolution), with and without a pixel3 latency target, 5 seeds.

Commands:
    python -m experiments.sweep --config experiments/configs/nb201/ablation.py --workdir workdirs/ablation
    python -m experiments.report workdirs/ablation --out docs/results/ablation --group-by stages,cost.form --latency pixel3_latency_ms
Arguments (comma-separated): `quick`, `smoke`, `hinge` (the latency arm before 2026-12-07: the
hinge on the argmax cell's cost in the loss), `tunas` (the arm before that: TuNAS absolute
reward on the *expected* cost, which collapses, kept for comparison), `guided` (zero-shot scores
guide the mutations of `evolve`), typed `seeds=N` (seeds per combination). `:quick` is the CPU scale (the CPU protocol's narrow
1-cell-per-stage supernet, `single_shot.py:cpu`, shortened to 5 epochs on 4,000 CIFAR-10 images,
i.e. 5 x 31 steps of batch 64 on the 2,000 weight-training images; 50 cells scored zero-shot on 16 images; evolution over the benchmark table): about 1.5
hours on a 2-core CPU for 3 seeds (`--only 'seed=[012]$'`). `:smoke` runs in minutes (synthetic
data, 2 seeds).
The full protocol (default) uses the benchmark's network for the supernet (50 epochs) and
1,000 zero-shot cells, and belongs on a GPU.

Combinations (`stages`): zero, single, multi, zero->single, zero->multi, single->multi and
zero->single->multi. Zero-shot prunes the space to `zero_shot.target_fraction` and hands on its
best-scored cells; single-shot searches the pruned space and hands on its 10 most probable cells;
evolution (REA, `evolve.budget_evals` table queries; the multishot evaluator here is the benchmark
table, the usual NAS-Bench-201 protocol) starts from the handed-on cells. With the latency target,
every stage works against the same surrogate of `pixel3_latency_ms` fitted on 50 cells as a hard
limit (single-shot: CE alone in the loss, the returned cell is the most probable live cell whose
surrogate latency meets T tightened to the surrogate's 90 % conformal bound, `cost.form=constraint`
as in `single_shot.py:cpu,pixel3`; zero-shot and evolution: a filter). `results.json` reports the
found cell's table accuracy and measured pixel3 latency.
"""

import itertools

from experiments.configs.common import base, config_args, smoke

COMBOS = {
    "zero": ["zero_shot"],
    "single": ["single_shot"],
    "multi": ["evolve"],
    "zero+single": ["zero_shot", "single_shot"],
    "zero+multi": ["zero_shot", "evolve"],
    "single+multi": ["single_shot", "evolve"],
    "zero+single+multi": ["zero_shot", "single_shot", "evolve"],
}
#: The latency-targeted arm at 10 ms on the pixel3 surrogate: a hard limit on the cell single-shot
#: returns (`single_shot.py:cpu,pixel3`, supernet.derive); zero-shot and evolution filter by it.
LATENCY = {"cost.form": "constraint", "cost.weight": 0.0, "cost.target_ms": 10.0, "cost.model": "surrogate",
           "cost.confidence": 0.9}
#: `:hinge`: the arm before 2026-12-07 (`CE + 2 max(0, LAT/T - 1)` on the argmax cell's cost).
HINGE = {"cost.form": "hinge", "cost.weight": 2.0, "cost.target_ms": 10.0, "cost.model": "surrogate",
         "cost.discrete": True, "single_shot.arch_lr_min": 0.0}
#: `:tunas`: the earlier arm (TuNAS absolute reward on the expected cost; docs/results/ablation.md before 12/2026).
TUNAS = {"cost.form": "tunas", "cost.weight": 0.5, "cost.target_ms": 10.0, "cost.model": "surrogate",
         "cost.discrete": False, "single_shot.arch_lr_min": -1.0}
NO_LATENCY = {"cost.form": "none"}


WORDS = ("quick", "smoke", "hinge", "tunas", "guided")


def get_config(arg: str | None = None):
    args = config_args(arg, WORDS, seeds=0)  # typed `seeds=N`: seeds per combination
    c = base()
    c.space.name = "nb201"
    c.stages = ["zero_shot", "single_shot", "evolve"]
    c.table.csv = "{data}/nas-bench-201/nb201_cifar10.csv"
    c.table.column = "cifar10_valid_acc"
    c.table.latency_columns = ("pixel3_latency_ms", "eyeriss_latency_ms")
    c.single_shot.relaxation = "softmax"  # beta-DARTS
    c.single_shot.beta_decay = 2.0
    c.cost.surrogate.csv = "{data}/nas-bench-201/nb201_cifar10.csv"
    c.cost.surrogate.column = "pixel3_latency_ms"
    c.cost.surrogate.train_size = 50
    c.evolve.budget_evals = 100
    c.zero_shot.target_fraction = 0.2
    # the supernet's own init, as docs/results/ablation.md was measured (the launcher's default is now PyTorch's)
    c.zero_shot.init = "model"
    c.num_seeds = 5
    if "quick" in args or "smoke" in args:
        c.data.name = "auto"
        c.data.num_train = 4000
        c.data.num_test = 500
        c.single_shot.supernet = {}
        c.single_shot.epochs = 5  # the CPU protocol (single_shot.py:cpu) at 155 of its 3,000 steps
        c.single_shot.steps_per_epoch = 40
        c.single_shot.warmup_epochs = 0
        c.single_shot.batch_size = 64
        c.single_shot.arch_lr = 1e-3
        c.zero_shot.sample = 50
        c.zero_shot.batch_size = 16
        # scores and the supernet on a narrow 1-cell-per-stage network (table lookups use the cell)
        c.space.kwargs = {"channels": 8, "cells_per_stage": 1}
    if "guided" in args:  # the zero-shot scores guide evolution's mutations (supernet.multishot)
        c.evolve.guide = "zero_shot"
    if "smoke" in args:
        smoke(c)
        c.space.kwargs = {"channels": 4, "cells_per_stage": 1}
        c.zero_shot.sample = 20
        c.zero_shot.batch_size = 8
        c.evolve.budget_evals = 30
        c.num_seeds = 2
    if args.seeds:
        c.num_seeds = args.seeds
    return c


def get_sweep(arg: str | None = None):
    n = get_config(arg).num_seeds
    args = config_args(arg, WORDS, seeds=0)
    latency = TUNAS if "tunas" in args else HINGE if "hinge" in args else LATENCY
    runs = []
    for (combo, stages), (lat, over), seed in itertools.product(
            COMBOS.items(), (("none", NO_LATENCY), ("pixel3", latency)), range(n)):
        runs.append({"name": f"{combo}/{lat}/seed={seed}", "stages": stages, "seed": seed, **over})
    return runs
