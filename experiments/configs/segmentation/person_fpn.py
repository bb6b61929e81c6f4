"""Person segmentation on COCO128 (issue 26): MobileNetV2 with a light FPN-style decoder on the
curated mobile space, trained and scored by mIoU, and the article's segmentation study: multishot
evolution over channels, fusion and input / output resolution for the NPU, then candidates A-E
picked from the merged Pareto front and retrained with the baseline's schedule.

Commands:
    python -m experiments.run --config experiments/configs/segmentation/person_fpn.py:baseline --workdir workdirs/seg/baseline
    python -m experiments.run --config experiments/configs/segmentation/person_fpn.py:baseline,smoke --workdir /tmp/seg
    python -m experiments.sweep --config experiments/configs/segmentation/person_fpn.py:study --workdir workdirs/seg_study
    python -m experiments.candidates workdirs/seg_study --config experiments/configs/segmentation/person_fpn.py \
        --fastest-at 160 --at-cut 0.5 --out docs/results/segmentation_candidates
    (then the retraining command it prints for each candidate, 3 seeds)
    python -m experiments.report workdirs/seg_study --out docs/results/segmentation_study --group-by stages,given.name
Arguments: `baseline` (MobileNetV2 all IBN k3 e6 at the standard widths, the default), `search` (one
search, at the config's input size and decoder stage), `given` (retrain `given.arch`), `study` (the
sweep: the baseline retrained, 3 seeds, and the searches at 3 input sizes x 3 output strides),
`pretrain` (the backbone on CIFAR-10 for `--config.retrain.init_from`, `common.cifar_pretrain`),
`smoke` (a tiny space, 2 steps).

CPU protocol: 160 px letterboxed inputs (`data.input_size`), ImageNet-style strides (stem 2,
stages (1, 2, 2, 2, 1, 2, 1): the last stage at 5 x 5), the decoder fuses it with stage 2 (20 x 20)
at 64 channels and upsamples 8x to the input; classes background / person, unlabelled pixels and
padding ignored. 100 train images with masks (COCO128 train2017), 100 test (val2017), 60 epochs
of batch 20 (SGD 0.05 cosine, weight decay 5e-4), random horizontal flips and zoom; about 20 min
per network on the 2-core CPU. The baseline is the CPU network: its latency is also measured with
ONNX Runtime on this CPU (`report.measured`).

The searches: NSGA-II, 2,000 candidates, log10 FLOPs (`evolve.evaluator='capacity'`, standing in for
mIoU) against the analytic NPU latency of the whole network (decoder included), no slower than the
baseline (`target_frac=1`); free decisions: each block's type (IBN or fused IBN; `skip` removed),
the stage widths and the width multiplier (kernels and expansions stay MobileNetV2's). Input and
output resolution are the sweep's grid: `space.kwargs.input_size` (and `data.input_size`) 128 / 160
/ 192 px and `space.kwargs.decoder_stage` 1 / 2 / 3 (the decoder and its output at stride 4 / 8 /
16, upsampled to the input). `experiments.candidates` merges the fronts, keeps the networks of no
less capacity than the baseline and picks five spread over latency (A the fastest), then at 160 px
per decoder stage the fastest of no less capacity (F-H) and the most capacity at >= 50 % lower
latency (I, J). mIoU is computed on each network's own letterboxed input size. Result (2026-12-07,
2-core CPU): baseline 51.27 +- 0.54 % mIoU; I (160 px, stride-8 decoder) 50.7 % lower NPU latency
at 54.22 +- 0.74 (3 seeds each); docs/results/segmentation_study.md.
"""

from experiments.configs.common import cifar_pretrain, coco128_person, config_args

ARMS = ("baseline", "search", "given")
OPTIONS = (*ARMS, "study", "pretrain", "smoke")
INPUT_SIZES, DECODER_STAGES = (128, 160, 192), (1, 2, 3)


def get_config(arg: str | None = None):
    args = config_args(arg, OPTIONS, default="baseline")
    arm = next((a for a in args if a in ARMS), "baseline")
    c = coco128_person("segmentation", "coco128-person-masks", num_classes=2, batch_size=20, smoke_run="smoke" in args)
    c.report.measured = () if "smoke" in args else ("zigzag:ascend_like", "onnxruntime")
    c.evolve.algorithm = "nsga2"
    c.evolve.budget_evals = 100 if "smoke" in args else 2000
    if "pretrain" in args:  # the backbone on CIFAR-10, for --config.retrain.init_from
        return cifar_pretrain(c, smoke_run="smoke" in args)
    if arm == "search":
        c.stages = ["evolve"]
        c.cost.form = "hinge"  # NSGA-II's latency objective; no slower than the baseline
        c.target_frac = 1.0
        c.space.free = (r"b\d+_type", r"s\d+_width", "width_multiplier")
        c.report.measured = ()
    elif arm == "given":
        c.stages = ["given", "retrain"]
    return c


def get_sweep(arg: str | None = None):
    """The study's sweep: the baseline (seeds 0-2) and one search per input size x decoder stage."""
    args = sorted(set(config_args(arg, OPTIONS, default="study")) - {"study"})
    runs = [{"name": f"0_baseline/seed={seed}", "seed": seed} for seed in range(3)]
    s = get_config(",".join(["search", *args]))
    sizes = [32] if "smoke" in args else INPUT_SIZES
    stages = [1] if "smoke" in args else DECODER_STAGES
    for size in sizes:
        for stage in stages:
            runs.append({"name": f"1_search/in{size}_dec{stage}", "stages": list(s.stages), "cost.form": s.cost.form,
                         "target_frac": s.target_frac, "space.free": tuple(s.space.free), "report.measured": (),
                         "space.kwargs.input_size": size, "data.input_size": size, "space.kwargs.decoder_stage": stage})
    return runs
