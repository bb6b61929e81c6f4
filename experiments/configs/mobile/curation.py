"""Curation (the reference article's three-panel figure): how rugged the search objective is under
FLOPs and under the accelerator latency on the raw mobile space, and under the latency on the
curated one (`supernet.landscape`).

Commands (one workdir per panel, then one report that draws the figure and the table):
    python -m experiments.sweep --config experiments/configs/mobile/curation.py --workdir workdirs/curation
    python -m experiments.report workdirs/curation --out docs/results/curation --group-by space.name,landscape.cost
Arguments: `flops` (panel 1: FLOPs on `mobile-raw`), `npu` (panel 2: the analytic NPU's latency
on `mobile-raw`), `curated` (panel 3: the same latency on `mobile-curated`); `smoke` shrinks the
measures to seconds. The sweep runs the three panels for seeds 0-2: 7 minutes in all on the 2-core
CPU (the raw NPU panel's seed 0, with its ZigZag-simulated width line: 4.4 min; every other run
7-36 s).

The objective is `J = HW / HW(MobileNetV2) - log(MACs / MACs(MobileNetV2))` (a NAS search trades
the task, here its capacity proxy log MACs, against the hardware cost). Result (2026-12-04, 3
seeds, docs/results/curation.md): minima per width line 1.00 under FLOPs on raw widths (unimodal),
5.17 under the NPU latency on raw widths (the staircase `ceil(c / P)`: widening inside a step is
free), 1.01 on the curated grid; best-improvement descent 119 steps on raw widths vs 22 curated.
ZigZag (`ascend_like`) on one raw width line: 14 minima (analytic: 7), curated: 1.
"""

import ml_collections

from experiments.configs.common import base, config_args

PANELS = {"flops": ("mobile-raw", "flops"), "npu": ("mobile-raw", "npu"), "curated": ("mobile-curated", "npu")}
#: Seed 0 of the latency panels also measures the first slice decision's line on ZigZag's 16x16x4
#: `ascend_like` array (P = 16 like the preset), next to the analytic model (about 4 min on raw widths).
MEASURED = ("zigzag:ascend_like",)
#: Sweep folders in the figure's panel order (the report takes runs in folder order).
ORDER = {"flops": "1_flops", "npu": "2_npu", "curated": "3_curated"}


def get_config(arg: str | None = None):
    args = config_args(arg, (*PANELS, "smoke"), default="npu")
    panel = next((p for p in PANELS if p in args), "npu")
    c = base()
    c.stages = ["landscape"]
    c.space.name, cost = PANELS[panel]
    c.space.kwargs = {"parallelism": 16}
    c.report.accelerators = ("npu", "npu-p32", "edgetpu", "mobile-cpu")
    c.landscape = ml_collections.ConfigDict(dict(
        cost=cost, alpha=1.0, walks=4, walk_steps=500, lines=20, line_decisions="_width", descents=10,
        slice=("s4_width", "s5_width"), measured=(), workers=2))
    if "smoke" in args:
        c.landscape.update(walks=1, walk_steps=20, lines=2, descents=1)
        c.space.kwargs = {"parallelism": 16, "blocks_per_stage": (1, 2), "base_widths": (16, 32),
                          "stage_strides": (1, 2), "stem_width": 16, "head_width": 64}
        c.landscape.slice = ("s0_width", "s1_width")
    return c


def get_sweep(arg: str | None = None):
    return [{"name": f"{ORDER[panel]}/seed={seed}", "space.name": space, "landscape.cost": cost, "seed": seed,
             **({"landscape.measured": MEASURED} if seed == 0 and cost != "flops" else {})}
            for panel, (space, cost) in PANELS.items() for seed in range(3)]
