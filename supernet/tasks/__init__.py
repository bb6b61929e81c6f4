"""Tasks beyond classification: detection and segmentation (issue 26). `metrics`: COCO mAP through
pycocotools and IoU from a confusion matrix."""

from supernet.tasks.metrics import (COCO_STATS, coco_detections, coco_ground_truth, coco_map,
                                    confusion_matrix, iou_per_class, mean_iou)

__all__ = ["COCO_STATS", "coco_detections", "coco_ground_truth", "coco_map", "confusion_matrix",
           "iou_per_class", "mean_iou"]
