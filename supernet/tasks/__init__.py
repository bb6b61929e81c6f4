"""Tasks (`task`: classification, segmentation, detection; the `TASKS` registry) and their metrics (`metrics`:
COCO mAP through pycocotools, IoU from a confusion matrix)."""

from supernet.tasks.metrics import (COCO_STATS, coco_detections, coco_ground_truth, coco_map,
                                    confusion_matrix, iou_per_class, mean_iou)
from supernet.tasks.task import TASKS, Classification, Detection, Distillable, Segmentation, Task, make_task

__all__ = ["COCO_STATS", "TASKS", "Classification", "Detection", "Distillable", "Segmentation", "Task", "coco_detections",
           "coco_ground_truth", "coco_map", "confusion_matrix", "iou_per_class", "make_task", "mean_iou"]
