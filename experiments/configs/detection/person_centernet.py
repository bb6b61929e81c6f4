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

from experiments.configs.common import coco128_person, config_args


def get_config(arg: str | None = None):
    args = config_args(arg, ("baseline", "smoke"), default="baseline")
    return coco128_person("detection", "coco128-person-boxes", num_classes=1, batch_size=16, smoke_run="smoke" in args)
