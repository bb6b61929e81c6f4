"""Task metrics: COCO box mAP through `pycocotools` (not re-implemented), IoU from a confusion matrix.

- `coco_ground_truth` / `coco_detections` put boxes into COCO's JSON form (in memory);
  `coco_map` runs `pycocotools.cocoeval.COCOeval` on them (bbox, 101-point interpolated AP over IoU
  0.50:0.05:0.95, up to 100 detections per image, COCO's area ranges) and returns its 12 summary
  numbers by name: `map` = AP@[.5:.95], `ap50`, `ap75`, ... as `COCOeval.summarize` prints them.
- `confusion_matrix` counts (target, prediction) pixel pairs, skipping `ignore`;
  `iou_per_class` = TP / (TP + FP + FN) per class (NaN for a class absent from both), `mean_iou`
  their mean over the classes that occur (the usual mIoU of semantic segmentation, e.g. the
  Cityscapes and PASCAL VOC evaluation scripts).

Example:
    >>> cm = confusion_matrix(np.array([[0, 1], [1, 1]]), np.array([[0, 1], [0, 1]]), 2)
    >>> cm.tolist()  # rows: target class, columns: predicted class
    [[1, 1], [0, 2]]
    >>> iou_per_class(cm).round(4).tolist(), round(mean_iou(cm), 4)
    ([0.5, 0.6667], 0.5833)
"""

from __future__ import annotations

import contextlib
import io
from typing import Sequence

import numpy as np
from jaxtyping import Float, Int

#: Names of `COCOeval.stats`, in its order.
COCO_STATS = ("map", "ap50", "ap75", "ap_small", "ap_medium", "ap_large",
              "ar1", "ar10", "ar100", "ar_small", "ar_medium", "ar_large")


def _xywh(boxes: Float[np.ndarray, "k 4"]) -> np.ndarray:
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], 1)


def coco_ground_truth(boxes: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                      sizes: Sequence[tuple[int, int]], class_names: Sequence[str]) -> dict:
    """COCO instances JSON (a dict) of per-image `(x1, y1, x2, y2)` boxes, labels 0..K-1 and
    `(width, height)` sizes; image ids are the positions, category ids the labels + 1."""
    images, anns = [], []
    for i, (b, lab, (w, h)) in enumerate(zip(boxes, labels, sizes)):
        images.append({"id": i, "width": int(w), "height": int(h)})
        for box, c in zip(_xywh(b), np.asarray(lab).reshape(-1)):
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(c) + 1, "bbox": box.tolist(),
                         "area": float(box[2] * box[3]), "iscrowd": 0})
    cats = [{"id": k + 1, "name": n} for k, n in enumerate(class_names)]
    return {"images": images, "annotations": anns, "categories": cats}


def coco_detections(boxes: Sequence[np.ndarray], scores: Sequence[np.ndarray],
                    labels: Sequence[np.ndarray]) -> list[dict]:
    """COCO results JSON (a list) of per-image detections, image ids the positions."""
    out = []
    for i, (b, s, lab) in enumerate(zip(boxes, scores, labels)):
        for box, sc, c in zip(_xywh(b), np.asarray(s).reshape(-1), np.asarray(lab).reshape(-1)):
            out.append({"image_id": i, "category_id": int(c) + 1, "bbox": box.tolist(), "score": float(sc)})
    return out


def coco_map(ground_truth: dict, detections: list[dict]) -> dict[str, float]:
    """COCO bbox metrics (`COCO_STATS`) of `detections` against `ground_truth`, by `pycocotools`.

    No detections at all scores 0 (pycocotools refuses an empty result list).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not detections:
        return dict.fromkeys(COCO_STATS, 0.0)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and summary
        gt = COCO()
        gt.dataset = ground_truth
        gt.createIndex()
        dt = gt.loadRes(detections)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    # -1 marks "no ground truth in this area range": reported as NaN, not as a score
    return {k: (float(v) if v >= 0 else float("nan")) for k, v in zip(COCO_STATS, ev.stats)}


def confusion_matrix(pred: Int[np.ndarray, "..."], target: Int[np.ndarray, "..."], num_classes: int,
                     ignore: int = 255) -> Int[np.ndarray, "k k"]:
    """`cm[t, p]` = pixels of target class `t` predicted `p`; pixels whose target is `ignore` skip.

    Raises:
      ValueError: shapes differ, or a label outside `[0, num_classes)` that is not `ignore`.
    """
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {pred.shape} != target shape {target.shape}")
    keep = target != ignore
    t, p = target[keep].astype(np.int64), pred[keep].astype(np.int64)
    for name, v in (("target", t), ("prediction", p)):
        if v.size and (v.min() < 0 or v.max() >= num_classes):
            raise ValueError(f"{name} labels must lie in [0, {num_classes}) or be {ignore}; "
                             f"got {v.min()}..{v.max()}")
    return np.bincount(t * num_classes + p, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def iou_per_class(cm: Int[np.ndarray, "k k"]) -> Float[np.ndarray, " k"]:
    """TP / (TP + FP + FN) per class; NaN where the class is neither in the targets nor predicted."""
    cm = np.asarray(cm, np.float64)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def mean_iou(cm: Int[np.ndarray, "k k"]) -> float:
    """Mean of `iou_per_class` over the classes that occur (NaN if none does)."""
    iou = iou_per_class(cm)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")
