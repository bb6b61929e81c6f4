"""Design-phase accelerator sweep (issue 25 part 5): search the mobile space for each of a family of
accelerators, then run every found network on every accelerator (the searched-for x run-on matrix).

Commands:
    python -m experiments.sweep --config experiments/configs/mobile/accelerators.py --workdir workdirs/accelerators
    python -m experiments.report workdirs/accelerators --out docs/results/accelerators --group-by cost.accelerator
One run: `python -m experiments.run --config experiments/configs/mobile/accelerators.py:npu-p32 --workdir w`
(the argument names the accelerator searched for; `smoke` shrinks the budget and the space).

The accelerators: the analytic NPU at parallelism P = 8 / 16 / 32 / 64 (`npu-p8` exists only in
this config, `hardware.presets`; `make_npu` gives the larger arrays 2 and 4 MiB of SRAM), the P = 16
NPU with 128 KiB / 256 KiB / 4 MiB of SRAM instead of 1 MiB, and the analytic models calibrated to
four ZigZag descriptions (`zigzag-<description>`, hwmodel.calibrate). Each found network is also
simulated by ZigZag itself (`report.measured`) and run by ONNX Runtime on this CPU.

The search: regularized evolution (`evolve`, 3000 evaluations) on `mobile-raw` (every integer width,
so the hardware, not the grid, decides where widths land; the same MobileNetV2 baseline on every
chip) for the most capacity (`evolve.evaluator=capacity`: log10 FLOPs, a training-free proxy) under
a latency target of `target_frac` = 0.6 x the baseline's latency on the searched-for accelerator.
No network is trained: the sweep asks what the chip wants, which a chip in its design phase must
be asked before any accuracy can be had.

Run time (2026-12-05, 2-core CPU): see docs/results/accelerators.md.
"""


from experiments.configs.common import base, config_args

#: name -> `hardware.presets` definition (None: a built-in preset).
ACCELERATORS = {
    "npu-p8": {"base": "npu", "parallelism": 8},
    "npu": None,
    "npu-p32": None,
    "npu-p64": None,
    "npu-sram128k": {"base": "npu", "sram_bytes": 128 * 1024},
    "npu-sram256k": {"base": "npu", "sram_bytes": 256 * 1024},
    "npu-sram4m": {"base": "npu", "sram_bytes": 4 * 1024 * 1024},
    "zigzag-edge_tpu_like": None,
    "zigzag-ascend_like": None,
    "zigzag-tpu_like": None,
    "zigzag-tesla_npu_like": None,
}
#: Measured on every found network: two ZigZag descriptions (P = 8 and 16) and this CPU.
MEASURED = ("zigzag:edge_tpu_like", "zigzag:ascend_like", "onnxruntime")


def get_config(arg: str | None = None):
    args = config_args(arg, (*ACCELERATORS, "smoke"), default="npu")
    name = next((a for a in args if a in ACCELERATORS), "npu")
    c = base()
    c.stages = ["evolve"]
    c.space.name = "mobile-raw"
    c.space.kwargs = {}
    c.hardware.presets = {k: v for k, v in ACCELERATORS.items() if v is not None}
    c.cost.accelerator = name
    c.cost.form = "hinge"  # evolve: a hard latency constraint at the target
    c.target_frac = 0.6
    c.evolve.evaluator = "capacity"
    c.evolve.budget_evals = 3000
    c.report.accelerators = tuple(ACCELERATORS)
    c.report.measured = MEASURED
    c.data.name = "synthetic"  # nothing is trained
    if "smoke" in args:
        c.evolve.budget_evals = 60
        c.space.kwargs = {"blocks_per_stage": (1, 2), "base_widths": (16, 32), "stage_strides": (1, 2),
                          "stem_width": 16, "head_width": 64}
        c.report.measured = ("zigzag:ascend_like",)
    return c


def get_sweep(arg: str | None = None):
    return [{"name": f"{i:02d}_{name}", "cost.accelerator": name} for i, name in enumerate(ACCELERATORS)]
