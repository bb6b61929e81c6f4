"""Curated mobile space on CIFAR-10 for the NPU preset: MobileNetV2 baseline vs the single-shot result.

Commands (each arg selects one arm; all retrain with the same fixed schedule):
    python -m experiments.run --config experiments/configs/mobile/npu.py:baseline --workdir workdirs/mobile/baseline
    python -m experiments.run --config experiments/configs/mobile/npu.py:search --workdir workdirs/mobile/search
    python -m experiments.run --config experiments/configs/mobile/npu.py:expert --workdir workdirs/mobile/expert
`:expert` is the expert-in-the-loop arm (`supernet.expert`, no search): the baseline with the IBN
blocks fused where the NPU model says it pays and the widths on multiples of P; add
`--config.expert.mine_from=workdirs/mobile/search` to carry over the rules mined from the search's
result instead (its fused stages, width factors and multiplier).
`,smoke` runs either in about a minute on a CPU (a reduced space, synthetic data, a few steps).

The search uses TuNAS's absolute-reward latency loss on the smooth analytic NPU model, with the
target at `target_frac` of the baseline's analytic NPU latency (issue 3 target: >= 40% lower NPU
latency at <= 1 point accuracy loss). Results: accuracy, analytic and surrogate latency, parameter
and peak-activation bytes in `results.json`.
"""

from experiments.configs.common import base, config_args, smoke




def get_config(arg: str | None = None):
    args = config_args(arg, ("search", "baseline", "expert", "smoke"), default="search")
    c = base()
    c.space.name = "mobile-curated"
    c.space.kwargs = {"parallelism": 16}
    c.cost.accelerator = "npu"
    c.report.accelerators = ("npu", "npu-p32", "edgetpu", "mobile-cpu")
    s = c.single_shot
    s.epochs = 30
    s.batch_size = 128
    s.relaxation = "gumbel"
    s.tau = (5.0, 0.5)
    s.warmup_epochs = 5
    s.arch_lr = 1e-3
    s.arch_weight_decay = 0.0
    c.cost.form = "tunas"
    c.cost.weight = 0.5
    # the target: target_frac of the baseline's analytic latency, unless --config.cost.target_ms
    # names one (an explicit value wins; results.json records the target used and its source)
    c.target_frac = 0.6
    c.retrain.epochs = 60
    c.retrain.batch_size = 128
    c.retrain.label_smoothing = 0.1
    c.expert.rules = ("fuse_where_it_pays(accelerator='npu')", "align_widths")
    if "baseline" in args or "expert" in args:
        c.stages = ["expert" if "expert" in args else "baseline", "retrain"]
        c.cost.form = "none"
    else:
        c.stages = ["single_shot", "retrain"]
    if "smoke" in args:
        smoke(c)
        c.space.kwargs = {"parallelism": 4, "blocks_per_stage": (1, 2), "base_widths": (8, 16),
                          "stage_strides": (1, 2), "stem_width": 8, "head_width": 32}
        c.single_shot.warmup_epochs = 1
    return c
