"""Tasks: what a network's output means, how it is trained and how it is scored.

A `Task` bundles the loss, the training-batch metric, the joint augmentation of images and targets,
and the held-out statistics with their summary, so that training code (`supernet.training.Trainer`)
is written once for every task. `TASKS` names them for configs.

- `Classification`: logits `[B, K]`, integer labels `[B]`; softmax cross-entropy (optionally with
  label smoothing), top-1 accuracy. The numbers are those the trainer computed before tasks existed.
- `Segmentation`: per-pixel logits `[B, H, W, K]`, masks `[B, H, W]` of class indices or `ignore`;
  pixel cross-entropy averaged over the labelled pixels, pixel accuracy, and on held-out data the
  confusion matrix, whence per-class IoU and mIoU (`supernet.tasks.metrics`). Its augmentation
  flips image and mask together (random horizontal flip).

Example:
    >>> seg = Segmentation(2)
    >>> out = jnp.zeros((1, 2, 2, 2)).at[..., 1].set(1.0)  # predicts class 1 everywhere
    >>> y = jnp.array([[[1, 0], [255, 1]]])
    >>> stats = seg.held_out_stats(out, y, jnp.ones(1, bool))
    >>> {k: round(v, 4) for k, v in seg.summary(stats).items()}
    {'miou': 0.3333, 'pixel_accuracy': 0.6667, 'iou_0': 0.0, 'iou_1': 0.6667}
"""

from __future__ import annotations

import abc
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Bool, Float, Int

from hwmodel.registry import Registry
from supernet.tasks.metrics import iou_per_class, mean_iou

ImageFn = Callable[[jax.Array, jax.Array], jax.Array]
"""`(key, uint8 images) -> float32 network input` (`supernet.training.AugmentFn`)."""


class Task(abc.ABC):
    """What the network predicts and how it is trained and scored (module docstring)."""

    #: The key of `summary` a search or report ranks by.
    main_metric: str = "accuracy"

    @abc.abstractmethod
    def loss(self, out: Array, y: Array, label_smoothing: float = 0.0) -> jax.Array:
        """Mean training loss of a batch (float32)."""

    @abc.abstractmethod
    def train_metric(self, out: Array, y: Array) -> jax.Array:
        """The per-batch metric logged during training (accuracy, pixel accuracy)."""

    def augment(self, key: jax.Array, x: Array, y: Array, images: ImageFn) -> tuple[jax.Array, jax.Array]:
        """Training input and target of a batch: `images(key, x)` (which may crop and flip), `y` as is."""
        return images(key, x), y

    @abc.abstractmethod
    def held_out_stats(self, out: Array, y: Array, valid: Bool[Array, " b"]) -> Any:
        """Additive statistics of a held-out batch (`valid` masks the repeats of a padded batch)."""

    @abc.abstractmethod
    def summary(self, stats: Any) -> dict[str, float]:
        """The metrics of the summed statistics, `main_metric` first."""


class Classification(Task):
    """Image classification: logits `[B, K]`, labels `[B]`."""

    main_metric = "accuracy"

    def loss(self, out, y, label_smoothing=0.0):
        logits = out.astype(jnp.float32)
        if label_smoothing:
            return optax.softmax_cross_entropy(
                logits, optax.smooth_labels(jax.nn.one_hot(y, logits.shape[-1]), label_smoothing)).mean()
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def train_metric(self, out, y):
        return jnp.mean(jnp.argmax(out, -1) == y)

    def held_out_stats(self, out, y, valid):
        return {"correct": jnp.sum((jnp.argmax(out, -1) == y) & valid), "n": jnp.sum(valid)}

    def summary(self, stats):
        return {"accuracy": float(stats["correct"]) / max(int(stats["n"]), 1)}


class Segmentation(Task):
    """Semantic segmentation: logits `[B, H, W, K]`, masks `[B, H, W]` (`ignore` = no class)."""

    main_metric = "miou"

    def __init__(self, num_classes: int, ignore: int = 255):
        if num_classes < 2:
            raise ValueError(f"segmentation needs at least 2 classes (background included), got {num_classes}")
        self.num_classes, self.ignore = int(num_classes), int(ignore)

    def loss(self, out, y, label_smoothing=0.0):
        del label_smoothing  # not used for dense targets
        keep = y != self.ignore
        ce = optax.softmax_cross_entropy_with_integer_labels(out.astype(jnp.float32), jnp.where(keep, y, 0))
        return jnp.sum(ce * keep) / jnp.maximum(jnp.sum(keep), 1)

    def train_metric(self, out, y):
        keep = y != self.ignore
        return jnp.sum((jnp.argmax(out, -1) == y) & keep) / jnp.maximum(jnp.sum(keep), 1)

    def augment(self, key, x, y, images):
        """Random horizontal flip of image and mask together, then `images` without its own
        geometry (callers pass the normalisation only)."""
        flip = jax.random.bernoulli(jax.random.fold_in(key, 7), 0.5, (x.shape[0],))
        x = jnp.where(flip[:, None, None, None], x[:, :, ::-1], x)
        y = jnp.where(flip[:, None, None], y[:, :, ::-1], y)
        return images(key, x), y

    def held_out_stats(self, out, y, valid):
        k = self.num_classes
        keep = (y != self.ignore) & valid[:, None, None]
        pred = jnp.argmax(out, -1)
        idx = jnp.where(keep, jnp.clip(y, 0, k - 1) * k + pred, k * k)  # k * k: a dropped bin
        return jnp.bincount(idx.reshape(-1), length=k * k + 1)[:-1].reshape(k, k)

    def summary(self, stats):
        cm = np.asarray(stats)
        iou = iou_per_class(cm)
        out = {"miou": mean_iou(cm), "pixel_accuracy": float(np.trace(cm) / max(cm.sum(), 1))}
        out.update({f"iou_{c}": float(v) for c, v in enumerate(iou)})
        return out


#: Tasks by config name: `(num_classes) -> Task`.
TASKS: Registry = Registry("task", {
    "classification": lambda num_classes: Classification(),
    "segmentation": lambda num_classes: Segmentation(num_classes),
})
