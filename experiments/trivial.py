"""The trivial predictors the dense tasks must beat, on COCO128 person (issue 26's sanity check).

- segmentation: every pixel background (mIoU = background IoU / 2, the person IoU is 0);
- detection: one box of the training boxes' mean size at the image centre for each class, score 1
  (COCO mAP by pycocotools, as `supernet.tasks.Detection` scores a network).

`--scenes`: the detection predictor on the second benchmark instead (`experiments.data.scenes`, the
config's 2,000 train and 500 test scenes; no masks there).

Prints one JSON object. Example:
    python -m experiments.trivial --size 160
    python -m experiments.trivial --size 160 --scenes
"""

from __future__ import annotations

import argparse
import json
from typing import Sequence

import numpy as np

from experiments.data.cifar10 import CLASSES
from experiments.data.coco import person_boxes, person_masks
from experiments.data.scenes import NUM_TEST, NUM_TRAIN, cifar_scenes
from supernet.tasks import coco_detections, coco_ground_truth, coco_map, confusion_matrix, iou_per_class, mean_iou


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=160, help="letterboxed input side (px)")
    p.add_argument("--data-dir", default=None, help="folder holding coco128/ (default ../shared/data)")
    p.add_argument("--scenes", action="store_true", help="CIFAR-10 objects on COCO128 scenes (detection only)")
    args = p.parse_args(argv)
    out: dict = {"size": args.size}
    if args.scenes:
        boxes, names = cifar_scenes(args.data_dir, args.size, NUM_TRAIN, NUM_TEST), list(CLASSES)
    else:
        masks = person_masks(args.data_dir, args.size)
        for split, m in (("train", masks.y_train), ("test", masks.y_test)):
            cm = confusion_matrix(np.zeros_like(m), m, 2)
            out[f"all_background_{split}"] = {"miou": mean_iou(cm), "iou": iou_per_class(cm).tolist()}
        boxes, names = person_boxes(args.data_dir, args.size), ["person"]
    n_cls = len(names)
    tr = boxes.y_train[boxes.y_train[..., 4] >= 0]
    w, h = float(np.mean(tr[:, 2] - tr[:, 0])), float(np.mean(tr[:, 3] - tr[:, 1]))
    c = args.size / 2
    centre = np.asarray([[c - w / 2, c - h / 2, c + w / 2, c + h / 2]])
    for split, y in (("train", boxes.y_train), ("test", boxes.y_test)):
        keep = [t[:, 4] >= 0 for t in y]
        gt = coco_ground_truth([t[k, :4] for t, k in zip(y, keep)], [t[k, 4].astype(int) for t, k in zip(y, keep)],
                               [(args.size, args.size)] * len(y), names)
        dt = coco_detections([np.repeat(centre, n_cls, 0)] * len(y), [np.ones(n_cls)] * len(y),
                             [np.arange(n_cls)] * len(y))
        out[f"centre_box_{split}"] = {k: v for k, v in coco_map(gt, dt).items() if k in ("map", "ap50", "ap75")}
    out["mean_box_wh"] = [w, h]
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
