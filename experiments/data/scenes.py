"""CIFAR-10 objects on COCO128 scenes: a larger detection benchmark built reproducibly from images
this project has (issue 26: "a larger detection set built reproducibly from images we have is
welcome as a second benchmark").

COCO128's 61 training images with persons do not train a detector from scratch on this CPU (val
mAP under 1 % with a seed spread as large as the mean, `docs/results/detection_study.md`), so the
study's "mAP at the baseline's within noise" cannot tell networks apart there. Here each image is
a COCO128 scene (letterboxed, its own objects unlabelled background) with 1-3 CIFAR-10 images
pasted whole at 1-3x (32-96 px at 160 px input), each a box of its CIFAR-10 class (10 classes).
Locating a pasted square is easy; naming its class is CIFAR-10 classification inside a detector,
so the mAP follows the backbone's capacity, which is what the V1-V3 study needs to compare.

Train scenes: CIFAR-10 train objects on COCO128 `train2017` scenes (seed 0); test scenes: CIFAR-10
test objects on `val2017` scenes (seed 1), so neither an object nor a background of the test split
is seen in training. Both are pure functions of the two data sets and the counts.

Example:
    >>> s = cifar_scenes(None, 160, num_train=8, num_test=4)  # doctest: +SKIP
    >>> s.x_train.shape, s.y_train.shape[-1], int(s.y_train[..., 4].max()) <= 9  # doctest: +SKIP
    ((8, 160, 160, 3), 5, True)
"""

from __future__ import annotations

import os

import numpy as np

from experiments.data.cifar10 import CLASSES, load_cifar10
from experiments.data.coco import DenseSplits, load_yolo_detection
from experiments.data.copy_paste import Cutout, composites

#: CIFAR-10 objects drawn per split to paste from (a class-mixed random subset; enough for the counts used).
POOL = 6000
#: Paste scale of a 32 px CIFAR-10 image (so 32-96 px) and objects per scene.
SCALE, PER_IMAGE = (1.0, 3.0), (1, 3)
#: The benchmark's train and test scenes (`data.num_train` / `data.num_test` when unset).
NUM_TRAIN, NUM_TEST = 2000, 500


def objects(images: np.ndarray, labels: np.ndarray, count: int, seed: int) -> list[Cutout]:
    """`count` random CIFAR-10 images (of `images` [n, 32, 32, 3], classes `labels`) as whole
    square cutouts, each labelled with its class."""
    idx = np.random.default_rng(seed).choice(len(images), size=min(count, len(images)), replace=False)
    return [Cutout(images[i], np.ones(images.shape[1:3], bool), int(labels[i])) for i in idx]


def cifar_scenes(data_dir: str | os.PathLike | None, size: int, num_train: int, num_test: int,
                 max_boxes: int = 8) -> DenseSplits:
    """`num_train` train and `num_test` test scenes at `size` px (module docstring) in the
    detection task's form: targets `[n, max_boxes, 5]` rows `x1 y1 x2 y2 class`, class -1 padding."""
    if num_train < 1 or num_test < 1:
        raise ValueError(f"cifar10-on-coco128 needs data.num_train and data.num_test >= 1, got {num_train}, {num_test}")
    cifar = load_cifar10(data_dir)
    out, sources = [], []
    for split, part, (x, y), count, seed in (("train2017", "train", cifar.train, num_train, 0),
                                             ("val2017", "test", cifar.test, num_test, 1)):
        scenes = load_yolo_detection(data_dir, split, size, classes=("person",), max_boxes=max_boxes)
        unlabelled = np.full((len(scenes), max_boxes, 5), -1, np.float32)  # the scenes' own objects: background
        out += composites(scenes.images, unlabelled, objects(x, y, POOL, seed), count, seed=seed,
                          per_image=PER_IMAGE, scale=SCALE)
        sources.append(f"{count} scenes: CIFAR-10 {part} objects on {scenes.source} (seed {seed})")
    return DenseSplits(*out, source="; ".join(sources) + f"; classes {', '.join(CLASSES)}")
