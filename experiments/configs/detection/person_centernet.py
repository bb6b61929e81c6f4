"""Person detection on COCO128 (issue 26): MobileNetV2 with a CenterNet head on the FPN-style
decoder, on the curated mobile space, trained and scored by COCO mAP (pycocotools), and the
article's detection study: V1 multiplier search, V2 fused-IBN search, V3 both, and the rules mined
from the classification search applied without a search (expert transfer), each retrained with the
baseline's schedule.

Commands:
    python -m experiments.run --config experiments/configs/detection/person_centernet.py:baseline --workdir workdirs/det/baseline
    python -m experiments.run --config experiments/configs/detection/person_centernet.py:baseline,smoke --workdir /tmp/det
    python -m experiments.sweep --config experiments/configs/detection/person_centernet.py:study --workdir workdirs/det_study
    python -m experiments.report workdirs/det_study --out docs/results/detection_study --group-by stages,space.free
Arguments: `baseline` (MobileNetV2 all IBN k3 e6 at the standard widths, the default), `v1` / `v2` /
`v3` (the searches), `transfer` (the mined rules, no search), `transfer_fuse` (the mined widths and
multiplier, fused where the detector's NPU cost model says fusion pays: `EXPERT`), `study` (the
sweep of all six, 3 seeds), `search` (an arm's search alone, no retraining, its network costed on
every model including ZigZag and ONNX Runtime on this CPU: `:study,search` is the hardware side of
the study, minutes),
`pretrain` (MobileNetV2's backbone trained on CIFAR-10 at 32 px, `common.cifar_pretrain`: its
workdir is what `--config.retrain.init_from` takes), `copypaste` (the training split grown by 512
copy-paste composites, `experiments.data.copy_paste`, and trained 15 epochs of its 640 images:
600 steps against the plain protocol's 480; the test split is the same; measured 2026-12-07 on
MobileNetV2 seed 0: val mAP 0.20 %, no gain, docs/results/detection_study.md), `scenes` (the second
benchmark, `experiments.data.scenes`: 10 CIFAR-10 classes pasted on COCO128 scenes, 2,000 train
scenes for 4 epochs of batch 16, i.e. 500 steps as the plain protocol's 480, tested on 500 scenes of
CIFAR-10 test objects on val2017; 6-16 min per network on the 2-core CPU shared by two runs;
measured 2026-12-07, test mAP over seeds 0-2: MobileNetV2 2.76 ± 0.52 %, V2 2.46 ± 0.46 %, V3
2.01 ± 0.60 %, transfer 2.97 ± 0.46 %; with `--config.retrain.epochs=12` (1,500 steps, 16-45 min
per network), seeds 0-2: MobileNetV2 10.04 ± 0.64 %, V3 6.05 ± 0.29 %, transfer 13.58 ± 0.96 %,
transfer_fuse 11.18 ± 0.10 % (seeds 0-1) at a 41.6 % NPU cut: docs/results/detection_study.md),
`smoke` (a tiny space, 2 steps).
    python -m experiments.sweep --config experiments/configs/detection/person_centernet.py:study,copypaste --workdir workdirs/det_study_cp --only '0_baseline|3_v3'
    python -m experiments.sweep --config experiments/configs/detection/person_centernet.py:study,scenes --workdir workdirs/det_scenes


CPU protocol: 160 px letterboxed inputs, ImageNet-style strides (stem 2, stages (1, 2, 2, 2, 1, 2,
1)); the decoder fuses the last stage (5 x 5) with stage 2 (20 x 20, stride 8) at 64 channels,
where CenterNet predicts a person heatmap, box size and centre offset. 128 train images (61 with
persons, 254 boxes; COCO128 train2017), 128 test (73 with persons, 350 boxes; val2017), 60
epochs of batch 16 (SGD 0.05 cosine, weight decay 5e-4), random horizontal flips and zoom; about
17 min per network on the 2-core CPU.

The searches (the article's "X % lower latency at the baseline's mAP"): regularized evolution,
1,000 candidates, for the lowest analytic NPU latency of the whole network (head included) among
networks of no less capacity than MobileNetV2 (`evolve.goal='latency'`, `evolve.evaluator='capacity'`,
log10 FLOPs standing in for mAP, which a candidate cannot be trained for on this CPU); `space.free`
holds every other decision at MobileNetV2's: V1 the width multiplier (the space's global
multiplier, 0.5 / 0.75 / 1.0; the article's "depth multiplier"), V2 each block's type (IBN or
fused IBN; `skip` removed), V3 both. Whether the found network keeps the baseline's mAP is then
measured by retraining it (3 seeds). The V1 search returns MobileNetV2 itself (a lower multiplier
has fewer FLOPs), so the sweep does not retrain V1: its mAP is the baseline's.

Expert transfer (`transfer`): the rules `supernet.expert.mine` reads off the classification search
for the NPU (`mobile/latency_cut.py:nas47,retrain`, seed 0: CIFAR-10, 32 px, 0.47 x MobileNetV2's
latency), written out below so that the arm needs no other run; they are what
`--config.expert.mine_from=<that run's workdir> "--config.expert.rules=()"` applies.
"""

from experiments.configs.common import cifar_pretrain, coco128_person, config_args, overrides

ARMS = ("baseline", "v1", "v2", "v3", "transfer", "transfer_fuse")
FREE = {"v1": ("width_multiplier",), "v2": (r"b\d+_type",), "v3": (r"b\d+_type", "width_multiplier")}
#: `expert.describe(expert.mine(...))` of `latency_cut.py:nas47,retrain` seed 0's network
#: (`mult=0.5|w=16-16-48-48-96-80-400|fused:k5:e1,fused:k5:e1,skip:k5:e1,fused:k5:e6,...`)
MINED = ("fuse(stages=(0, 2, 3, 4, 6))", "stage_widths(factors=(1.0, 0.6667, 1.5, 0.75, 1.0, 0.5, 1.25))",
         "multiplier(value=0.5)")
#: The expert arms' rules (no search). `transfer`: the mined rules as mined; `transfer_fuse`: the
#: mined widths and multiplier, then the fusion the detector's own NPU cost model pays for
#: (`fuse_where_it_pays`, decided on the final widths at 160 px) in place of the stages fused at
#: 32 px: blocks 1-3 and 6, a 41.6 % NPU cut (41.9 % on npu-p32)
EXPERT = {"transfer": MINED, "transfer_fuse": (*MINED[1:], "fuse_where_it_pays(accelerator='npu')")}
OPTIONS = (*ARMS, "study", "search", "pretrain", "copypaste", "scenes", "smoke")


def get_config(arg: str | None = None):
    args = config_args(arg, OPTIONS, default="baseline")
    arm = next((a for a in args if a in ARMS), "baseline")
    scenes = "scenes" in args
    c = coco128_person("detection", "cifar10-on-coco128" if scenes else "coco128-person-boxes",
                       num_classes=10 if scenes else 1, batch_size=16, smoke_run="smoke" in args)
    c.evolve.goal = "latency"
    c.evolve.budget_evals = 60 if "smoke" in args else 1000
    if arm in FREE:
        c.stages = ["evolve", "retrain"]
        c.cost.form = "hinge"  # the latency model; the target (no slower than MobileNetV2) never binds
        c.target_frac = 1.0
        c.space.free = FREE[arm]
    elif arm in EXPERT:
        c.stages = ["expert", "retrain"]
        c.expert.rules = EXPERT[arm]
    if "copypaste" in args:  # the larger training set: 512 copy-paste composites, 15 epochs of 640 images
        c.data.copy_paste = 16 if "smoke" in args else 512
        c.retrain.epochs = c.retrain.epochs if "smoke" in args else 15
    if scenes:  # the second benchmark: 2,000 train scenes for 4 epochs (500 steps; COCO128: 480), 500 test
        c.data.num_train, c.data.num_test = (16, 8) if "smoke" in args else (2000, 500)
        c.retrain.epochs = c.retrain.epochs if "smoke" in args else 4
    if "pretrain" in args:  # the backbone on CIFAR-10, for --config.retrain.init_from
        return cifar_pretrain(c, smoke_run="smoke" in args)
    if "search" in args:  # the hardware side: every cost model, the measured ones included
        c.stages = [s for s in c.stages if s != "retrain"] or ["baseline"]
        c.report.measured = () if "smoke" in args else ("zigzag:ascend_like", "onnxruntime")
    return c


def get_sweep(arg: str | None = None):
    """The study: the six arms, seeds 0-2 (the seed seeds the search and the retraining); V1 is
    not retrained (its search returns MobileNetV2: module docstring)."""
    args = set(config_args(arg, OPTIONS, default="study")) - {"study"}
    runs = []
    for i, arm in enumerate(ARMS):
        c = get_config(",".join([arm, *sorted(args)]))
        stages = [s for s in c.stages if not (arm == "v1" and s == "retrain")]
        for seed in range(3):
            runs.append(overrides(c, "space.free", "cost.form", "target_frac", "expert.rules",
                                  name=f"{i}_{arm}/seed={seed}", stages=stages, seed=seed))
    return runs
