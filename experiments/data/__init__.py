"""Dataset loaders: host arrays loaded once and cached, device-side augmentation.

`load_cifar10()` finds CIFAR-10 under `../shared/data` (or `$HWNAS_DATA_DIR`, or an argument),
`synthetic_cifar10()` stands in when it is absent (tests, smoke configs). `coco`: detection (YOLO
boxes, COCO JSON) and segmentation (PNG masks) sets letterboxed to a square input.
"""

from experiments.data.cifar10 import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CLASSES,
    Cifar10,
    DataError,
    Split,
    augment,
    batches,
    crop_flip,
    crop_flip_params,
    find_source,
    load_cifar10,
    normalize,
    random_crops,
    resolve_data_dir,
    split_train,
    synthetic_cifar10,
)

from experiments.data.coco import (DenseSplits, DetectionSet, SegmentationSet, load_coco_json, load_masks,
                                   load_yolo_detection, person_boxes, person_masks)
from experiments.data.scenes import NUM_TEST, NUM_TRAIN, cifar_scenes
from hwmodel.registry import Registry

#: The data sets a config's `data.name` may name: `(data config section) -> Cifar10` (host arrays;
#: `data.name = "auto"` is resolved to one of these before a run starts, `checks.resolve_data_source`).
DATASETS = Registry("data set", {
    "cifar10": lambda dc: load_cifar10(dc.dir or None),
    "synthetic": lambda dc: synthetic_cifar10(dc.num_train or 2000, dc.num_test or 500, seed=0),
    # segmentation: COCO128 person masks letterboxed to `data.input_size`
    "coco128-person-masks": lambda dc: person_masks(dc.dir or None, dc.input_size),
    # detection: COCO128 person boxes letterboxed to `data.input_size` (supernet.tasks.Detection's targets)
    "coco128-person-boxes": lambda dc: person_boxes(dc.dir or None, dc.input_size,
                                                    copy_paste=dc.get("copy_paste", 0)),
    # detection, the second benchmark: CIFAR-10 objects pasted on COCO128 scenes (10 classes)
    "cifar10-on-coco128": lambda dc: cifar_scenes(dc.dir or None, dc.input_size, dc.num_train or NUM_TRAIN,
                                                  dc.num_test or NUM_TEST),
})

__all__ = ["DATASETS", "DenseSplits", "cifar_scenes", "person_boxes", "person_masks", "DetectionSet", "SegmentationSet", "load_coco_json", "load_masks", "load_yolo_detection",
    "CIFAR10_MEAN", "CIFAR10_STD", "CLASSES", "Cifar10", "DataError", "Split", "augment", "batches", "crop_flip",
    "crop_flip_params", "find_source", "load_cifar10", "normalize", "random_crops", "resolve_data_dir",
    "split_train", "synthetic_cifar10",
]
