"""Dataset loaders: host arrays loaded once and cached, device-side augmentation.

`load_cifar10()` finds CIFAR-10 under `../shared/data` (or `$HWNAS_DATA_DIR`, or an argument),
`synthetic_cifar10()` stands in when it is absent (tests, smoke configs).
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

__all__ = [
    "CIFAR10_MEAN", "CIFAR10_STD", "CLASSES", "Cifar10", "DataError", "Split", "augment", "batches", "crop_flip",
    "crop_flip_params", "find_source", "load_cifar10", "normalize", "random_crops", "resolve_data_dir",
    "split_train", "synthetic_cifar10",
]
