"""Person segmentation on COCO128 (issue 26): MobileNetV2 with a light FPN-style decoder on the
curated mobile space, trained and scored by mIoU; the start of the article's segmentation study
(candidates A-E come from evolution over this space).

Commands:
    python -m experiments.run --config experiments/configs/segmentation/person_fpn.py:baseline --workdir workdirs/seg/baseline
    python -m experiments.run --config experiments/configs/segmentation/person_fpn.py:baseline,smoke --workdir /tmp/seg
Arguments: `baseline` (MobileNetV2 all IBN k3 e6 at the standard widths, the default), `smoke`
(a tiny space, 2 steps).

CPU protocol: 160 px letterboxed inputs (`data.input_size`), ImageNet-style strides (stem 2,
stages (1, 2, 2, 2, 1, 2, 1): the last stage at 5 x 5), the decoder fuses it with stage 2 (20 x 20)
at 64 channels and upsamples 8x to the input; classes background / person, unlabelled pixels and
padding ignored. 100 train images with masks (COCO128 train2017), 100 test (val2017), 60 epochs
of batch 20 (SGD 0.05 cosine, weight decay 5e-4), random horizontal flips. Trivial predictor
(all background): see docs/results/segmentation.md.
"""

from experiments.configs.common import base, config_args, smoke

SIZE = 160


def get_config(arg: str | None = None):
    args = config_args(arg, ("baseline", "smoke"), default="baseline")
    c = base()
    c.task.name = "segmentation"
    c.space.name = "mobile-curated"
    c.space.kwargs = {"parallelism": 16, "input_size": SIZE, "stem_stride": 2,
                      "stage_strides": (1, 2, 2, 2, 1, 2, 1), "num_classes": 2, "head": "segmentation",
                      "head_channels": 64, "decoder_stage": 2}
    c.cost.accelerator = "npu"
    c.cost.form = "none"
    c.report.accelerators = ("npu", "npu-p32", "edgetpu", "mobile-cpu")
    c.data.name = "coco128-person-masks"
    c.data.input_size = SIZE
    c.stages = ["baseline", "retrain"]
    c.retrain.epochs = 60
    c.retrain.batch_size = 20
    c.retrain.optim.lr = 0.05
    if "smoke" in args:
        smoke(c)
        c.data.name = "coco128-person-masks"
        c.space.kwargs = {"parallelism": 4, "input_size": 32, "stem_stride": 2, "blocks_per_stage": (1, 2, 2),
                          "base_widths": (8, 16, 24), "stage_strides": (1, 2, 2), "stem_width": 8,
                          "num_classes": 2, "head": "segmentation", "head_channels": 16, "decoder_stage": 1}
        c.data.input_size = 32
        c.retrain.batch_size = 20
    return c
