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

from experiments.configs.common import coco128_person, config_args


def get_config(arg: str | None = None):
    args = config_args(arg, ("baseline", "smoke"), default="baseline")
    return coco128_person("segmentation", "coco128-person-masks", num_classes=2, batch_size=20, smoke_run="smoke" in args)
