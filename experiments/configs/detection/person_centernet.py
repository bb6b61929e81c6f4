"""Person detection on COCO128 (issue 26): MobileNetV2 with a CenterNet head on the FPN-style
decoder, on the curated mobile space, trained and scored by COCO mAP (pycocotools); the base of
the article's detection study (V1 multiplier search, V2 fused-IBN search, V3 both).

Commands:
    python -m experiments.run --config experiments/configs/detection/person_centernet.py:baseline --workdir workdirs/det/baseline
    python -m experiments.run --config experiments/configs/detection/person_centernet.py:baseline,smoke --workdir /tmp/det
Arguments: `baseline` (MobileNetV2 all IBN k3 e6 at the standard widths, the default), `smoke`
(a tiny space, 2 steps).

CPU protocol: 160 px letterboxed inputs, ImageNet-style strides (stem 2, stages (1, 2, 2, 2, 1, 2,
1)); the decoder fuses the last stage (5 x 5) with stage 2 (20 x 20, stride 8) at 64 channels,
where CenterNet predicts a person heatmap, box size and centre offset. 128 train images (61 with
persons, 254 boxes; COCO128 train2017), 128 test (73 with persons, 350 boxes; val2017), 60
epochs of batch 16 (SGD 0.05 cosine, weight decay 5e-4), random horizontal flips.
"""

from experiments.configs.common import base, config_args, smoke

SIZE = 160


def get_config(arg: str | None = None):
    args = config_args(arg, ("baseline", "smoke"), default="baseline")
    c = base()
    c.task.name = "detection"
    c.space.name = "mobile-curated"
    c.space.kwargs = {"parallelism": 16, "input_size": SIZE, "stem_stride": 2,
                      "stage_strides": (1, 2, 2, 2, 1, 2, 1), "num_classes": 1, "head": "detection",
                      "head_channels": 64, "decoder_stage": 2}
    c.cost.accelerator = "npu"
    c.cost.form = "none"
    c.report.accelerators = ("npu", "npu-p32", "edgetpu", "mobile-cpu")
    c.data.name = "coco128-person-boxes"
    c.data.input_size = SIZE
    c.stages = ["baseline", "retrain"]
    c.retrain.epochs = 60
    c.retrain.batch_size = 16
    c.retrain.optim.lr = 0.05
    if "smoke" in args:
        smoke(c)
        c.data.name = "coco128-person-boxes"
        c.space.kwargs = {"parallelism": 4, "input_size": 32, "stem_stride": 2, "blocks_per_stage": (1, 2, 2),
                          "base_widths": (8, 16, 24), "stage_strides": (1, 2, 2), "stem_width": 8,
                          "num_classes": 1, "head": "detection", "head_channels": 16, "decoder_stage": 1}
        c.data.input_size = 32
        c.retrain.batch_size = 16
    return c
