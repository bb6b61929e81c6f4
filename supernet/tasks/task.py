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
- `Detection`: CenterNet (Zhou et al. 2019, "Objects as Points"): maps `[B, h, w, K + 4]` at stride
  `s` (K class heatmaps, box width and height in cells, centre offset), boxes `[B, M, 5]` (`x1 y1 x2
  y2 class` in input pixels, class -1 on padding rows). Loss: the penalty-reduced focal loss on
  Gaussian heatmaps (alpha 2, beta 4; TTFNet's elliptical Gaussian, sigma = 0.54 w / 6 per axis),
  L1 on size (weight 0.1) and offset (weight 1) at the centres. Decoding: a 3x3 max-pool keeps the
  peaks (CenterNet's non-maximum suppression), the top `max_detections` become boxes. Held-out
  metric: COCO mAP by pycocotools (`coco_map`) in input pixels; a letterbox is a scale and shift
  per image, so IoUs and thus AP, AP50, AP75 equal those in original pixels (the small / medium /
  large split does not). The augmentation flips images and boxes together.

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
import inspect
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Bool, Float, Int

from hwmodel.registry import Registry
from supernet.tasks.metrics import coco_detections, coco_ground_truth, coco_map, iou_per_class, mean_iou

ImageFn = Callable[[jax.Array, jax.Array], jax.Array]
"""`(key, uint8 images) -> float32 network input` (`supernet.training.AugmentFn`)."""


def zoom_params(key: jax.Array, batch: int, size: int, max_zoom: float) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-image zoom `z ~ U[1, max_zoom]` and the top-left corner `(ox, oy)` of the `size / z`
    window it keeps (uniform over the image): a random scale-and-crop back to `size`."""
    kz, kx, ky = jax.random.split(key, 3)
    z = jax.random.uniform(kz, (batch,), minval=1.0, maxval=max_zoom)
    room = size - size / z
    return z, jax.random.uniform(kx, (batch,)) * room, jax.random.uniform(ky, (batch,)) * room


def zoom(x: Float[Array, "b s s ..."], z: Array, ox: Array, oy: Array, order: int) -> jax.Array:
    """`x` resampled so that output pixel `(i, j)` shows input point `(oy + (i + .5) / z - .5,
    ox + (j + .5) / z - .5)`: bilinear (`order=1`, images) or nearest (`order=0`, masks)."""
    s = x.shape[1]
    grid = (jnp.arange(s, dtype=jnp.float32) + 0.5)

    def one(img, z, ox, oy):
        rows = oy + grid / z - 0.5
        cols = ox + grid / z - 0.5
        rr, cc = jnp.meshgrid(rows, cols, indexing="ij")
        warp = lambda ch: jax.scipy.ndimage.map_coordinates(ch, [rr, cc], order=order, mode="nearest")  # noqa: E731
        if img.ndim == 2:
            return warp(img)
        return jnp.stack([warp(img[..., c]) for c in range(img.shape[-1])], -1)

    return jax.vmap(one)(x.astype(jnp.float32), z, ox, oy)


def random_flip(key: jax.Array, x: Array) -> tuple[jax.Array, jax.Array]:
    """`(flip [B] bool, x with the flipped images mirrored left-right)`; dense targets follow `flip`."""
    flip = jax.random.bernoulli(jax.random.fold_in(key, 7), 0.5, (x.shape[0],))
    return flip, jnp.where(flip[:, None, None, None], x[:, :, ::-1], x)


class Task(abc.ABC):
    """What the network predicts and how it is trained and scored (module docstring)."""

    #: The key of `summary` a search or report ranks by.
    main_metric: str = "accuracy"

    @classmethod
    def space_args(cls, space: Any) -> dict[str, Any]:
        """The constructor's arguments without a default, read off a network's `space` (its
        classes, the stride of its maps, its input size)."""
        del space
        return {}

    @classmethod
    def options(cls) -> list[str]:
        """The constructor's arguments with a default: what a config sets (`task.kwargs`), e.g. `max_zoom`."""
        named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        return [p.name for p in inspect.signature(cls.__init__).parameters.values()
                if p.kind in named and p.default is not inspect.Parameter.empty]

    @classmethod
    def for_space(cls, space: Any, **options: Any) -> "Task":
        """The task for a network of `space` with `options` (`options()` names them).

        Raises:
            ValueError: an option this task does not take (the message lists those it takes).
        """
        bad = sorted(set(options) - set(cls.options()))
        if bad:
            raise ValueError(f"{cls.__name__} takes no option {', '.join(map(repr, bad))}; "
                             f"its options: {', '.join(cls.options()) or 'none'}")
        return cls(**cls.space_args(space), **options)

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

    def combine(self, acc: Any, stats: Any) -> Any:
        """Statistics of two held-out parts together (default: their sum)."""
        return jax.tree.map(lambda a, b: a + b, acc, stats)

    @abc.abstractmethod
    def summary(self, stats: Any) -> dict[str, float]:
        """The metrics of the combined statistics, `main_metric` first."""


class Distillable(abc.ABC):
    """A task whose outputs can learn from a teacher network's outputs (in-place distillation of a
    supernet's sampled paths from its anchor: `single_shot.SearchConfig.distill`)."""

    @abc.abstractmethod
    def distill_loss(self, out: Array, teacher: Array) -> jax.Array:
        """Mean loss of `out` against the (gradient-stopped) `teacher` outputs of the same batch."""


class Classification(Task, Distillable):
    """Image classification: logits `[B, K]`, labels `[B]`. Distillation: cross-entropy against the
    teacher's softmax (Hinton et al. 2015 at temperature 1, BigNAS's in-place distillation).

    >>> t = Classification()
    >>> out = jnp.log(jnp.array([[0.7, 0.2, 0.1]]))
    >>> round(float(t.distill_loss(out, out)), 4)  # the teacher's own entropy: its minimum
    0.8018
    """

    main_metric = "accuracy"

    def loss(self, out, y, label_smoothing=0.0):
        logits = out.astype(jnp.float32)
        if label_smoothing:
            return optax.softmax_cross_entropy(
                logits, optax.smooth_labels(jax.nn.one_hot(y, logits.shape[-1]), label_smoothing)).mean()
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def train_metric(self, out, y):
        return jnp.mean(jnp.argmax(out, -1) == y)

    def distill_loss(self, out, teacher):
        return optax.softmax_cross_entropy(out.astype(jnp.float32),
                                           jax.nn.softmax(teacher.astype(jnp.float32))).mean()

    def held_out_stats(self, out, y, valid):
        return {"correct": jnp.sum((jnp.argmax(out, -1) == y) & valid), "n": jnp.sum(valid)}

    def summary(self, stats):
        return {"accuracy": float(stats["correct"]) / max(int(stats["n"]), 1)}


class Segmentation(Task):
    """Semantic segmentation: logits `[B, H, W, K]`, masks `[B, H, W]` (`ignore` = no class)."""

    main_metric = "miou"

    @classmethod
    def space_args(cls, space):
        return {"num_classes": space.num_classes}

    def __init__(self, num_classes: int, ignore: int = 255, max_zoom: float = 1.5):
        if num_classes < 2:
            raise ValueError(f"segmentation needs at least 2 classes (background included), got {num_classes}")
        self.num_classes, self.ignore, self.max_zoom = int(num_classes), int(ignore), float(max_zoom)

    def loss(self, out, y, label_smoothing=0.0):
        del label_smoothing  # not used for dense targets
        keep = y != self.ignore
        ce = optax.softmax_cross_entropy_with_integer_labels(out.astype(jnp.float32), jnp.where(keep, y, 0))
        return jnp.sum(ce * keep) / jnp.maximum(jnp.sum(keep), 1)

    def train_metric(self, out, y):
        keep = y != self.ignore
        return jnp.sum((jnp.argmax(out, -1) == y) & keep) / jnp.maximum(jnp.sum(keep), 1)

    def augment(self, key, x, y, images):
        """Random horizontal flip and random scale-and-crop (`zoom`, up to `max_zoom`) of image and
        mask together (bilinear / nearest), then `images` without its own geometry (callers pass
        the normalisation only)."""
        flip, x = random_flip(key, x)
        y = jnp.where(flip[:, None, None], y[:, :, ::-1], y)
        if self.max_zoom > 1:
            z, ox, oy = zoom_params(jax.random.fold_in(key, 8), x.shape[0], x.shape[1], self.max_zoom)
            x, y = zoom(x, z, ox, oy, 1), zoom(y, z, ox, oy, 0).astype(y.dtype)
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


class Detection(Task):
    """Single-stage anchor-free detection, CenterNet (module docstring)."""

    main_metric = "map"

    @classmethod
    def space_args(cls, space):
        """The head's classes, the stride of its maps (`decoder_factors[1]`) and the input size."""
        return {"num_classes": space.num_classes, "stride": space.decoder_factors[1], "input_size": space.input_size}

    def __init__(self, num_classes: int, stride: int, input_size: int, max_detections: int = 100,
                 size_weight: float = 0.1, offset_weight: float = 1.0, max_zoom: float = 1.5):
        if num_classes < 1 or stride < 1 or input_size < stride:
            raise ValueError(f"detection needs classes >= 1 and 1 <= stride <= input_size, got "
                             f"{num_classes}, {stride}, {input_size}")
        self.num_classes, self.stride, self.input_size = int(num_classes), int(stride), int(input_size)
        self.max_detections, self.size_weight, self.offset_weight = max_detections, size_weight, offset_weight
        self.max_zoom = float(max_zoom)

    def centres(self, y: Float[Array, "b m 5"], h: int, w: int):
        """`(centre cells [B, M, 2] (ints), size [B, M, 2], offset [B, M, 2], valid [B, M])` of the
        boxes in cells of the `h x w` output grid."""
        s = float(self.stride)
        x1, y1, x2, y2 = (y[..., i] / s for i in range(4))
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        px = jnp.clip(jnp.floor(cx), 0, w - 1)
        py = jnp.clip(jnp.floor(cy), 0, h - 1)
        size = jnp.stack([jnp.maximum(x2 - x1, 1e-3), jnp.maximum(y2 - y1, 1e-3)], -1)
        return (jnp.stack([py, px], -1).astype(jnp.int32), size, jnp.stack([cx - px, cy - py], -1),
                y[..., 4] >= 0)

    def targets(self, y: Float[Array, "b m 5"], h: int, w: int):
        """`(heatmap [B, h, w, K],) + centres(y, h, w)` in cells of the output grid."""
        k = self.num_classes
        cells, size, offset, valid = self.centres(y, h, w)
        py, px = (cells[..., i].astype(jnp.float32) for i in range(2))
        bw, bh = size[..., 0], size[..., 1]
        sx, sy = jnp.maximum(0.54 * bw / 6, 0.3), jnp.maximum(0.54 * bh / 6, 0.3)  # TTFNet's alpha = 0.54
        gx, gy = jnp.arange(w, dtype=jnp.float32), jnp.arange(h, dtype=jnp.float32)
        g = jnp.exp(-((gx[None, None, None, :] - px[..., None, None]) ** 2 / (2 * sx[..., None, None] ** 2)
                      + (gy[None, None, :, None] - py[..., None, None]) ** 2 / (2 * sy[..., None, None] ** 2)))
        onehot = jax.nn.one_hot(jnp.where(valid, y[..., 4], -1).astype(jnp.int32), k)  # [B, M, K]
        heat = jnp.max(g[..., None] * onehot[:, :, None, None, :] * valid[..., None, None, None], axis=1)
        return heat, cells, size, offset, valid

    def loss(self, out, y, label_smoothing=0.0):
        del label_smoothing
        out = out.astype(jnp.float32)
        k = self.num_classes
        heat, cells, size, offset, valid = self.targets(y, out.shape[1], out.shape[2])
        logit = out[..., :k]
        p = jax.nn.sigmoid(logit)
        pos = heat >= 1.0 - 1e-4  # the centre cells (the Gaussian is 1 there)
        log_p, log_1p = jax.nn.log_sigmoid(logit), jax.nn.log_sigmoid(-logit)
        focal = jnp.where(pos, (1 - p) ** 2 * log_p, (1 - heat) ** 4 * p ** 2 * log_1p)
        n = jnp.maximum(jnp.sum(valid), 1)
        at = jax.vmap(lambda o, c: o[c[:, 0], c[:, 1]])(out, cells)  # [B, M, K + 4] at the centres
        l1 = lambda a, b: jnp.sum(jnp.abs(a - b).sum(-1) * valid) / n  # noqa: E731
        return (-jnp.sum(focal) / n + self.size_weight * l1(at[..., k:k + 2], size)
                + self.offset_weight * l1(at[..., k + 2:k + 4], offset))

    def train_metric(self, out, y):
        """Share of boxes whose centre cell scores above 0.5 for their class (a training signal)."""
        k = self.num_classes
        cells, _, _, valid = self.centres(y, out.shape[1], out.shape[2])
        at = jax.vmap(lambda o, c: o[c[:, 0], c[:, 1]])(out[..., :k], cells)
        cls = jnp.clip(y[..., 4], 0, k - 1).astype(jnp.int32)
        hit = jnp.take_along_axis(at, cls[..., None], -1)[..., 0] > 0.0
        return jnp.sum(hit & valid) / jnp.maximum(jnp.sum(valid), 1)

    def augment(self, key, x, y, images):
        """Random horizontal flip and scale-and-crop (`zoom`) of images and boxes together (a box
        keeps its clipped part; one that keeps under a quarter of its zoomed area, or under a
        pixel, becomes padding), then `images` (normalisation)."""
        flip, x = random_flip(key, x)
        w = float(x.shape[2])
        real = y[..., 4] >= 0
        flipped = jnp.stack([w - y[..., 2], y[..., 1], w - y[..., 0], y[..., 3], y[..., 4]], -1)
        y = jnp.where((flip[:, None] & real)[..., None], flipped, y)
        if self.max_zoom > 1:
            z, ox, oy = zoom_params(jax.random.fold_in(key, 8), x.shape[0], x.shape[1], self.max_zoom)
            x = zoom(x, z, ox, oy, 1)
            zz = z[:, None]
            b = jnp.stack([(y[..., 0] - ox[:, None]) * zz, (y[..., 1] - oy[:, None]) * zz,
                           (y[..., 2] - ox[:, None]) * zz, (y[..., 3] - oy[:, None]) * zz], -1)
            clipped = jnp.clip(b, 0, w)
            area = lambda v: jnp.maximum(v[..., 2] - v[..., 0], 0) * jnp.maximum(v[..., 3] - v[..., 1], 0)  # noqa: E731
            keep = real & (area(clipped) >= 0.25 * area(b)) & (clipped[..., 2] - clipped[..., 0] >= 1) \
                & (clipped[..., 3] - clipped[..., 1] >= 1)
            y = jnp.concatenate([clipped, jnp.where(keep, y[..., 4], -1.0)[..., None]], -1)
        return images(key, x), y

    def decode(self, out: Float[Array, "b h w c"]) -> tuple[Array, Array, Array]:
        """`(boxes [B, D, 4] x1 y1 x2 y2 in input pixels, scores [B, D], classes [B, D])`."""
        k, s = self.num_classes, float(self.stride)
        heat = jax.nn.sigmoid(out[..., :k].astype(jnp.float32))
        peak = heat == jax.lax.reduce_window(heat, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 1, 1, 1), "SAME")
        b, h, w = heat.shape[:3]
        d = min(self.max_detections, h * w * k)
        scores, idx = jax.lax.top_k((heat * peak).reshape(b, -1), d)
        cell, cls = idx // k, idx % k
        cy, cx = cell // w, cell % w
        flat = out.reshape(b, h * w, -1).astype(jnp.float32)
        at = jnp.take_along_axis(flat, cell[..., None], 1)  # [B, D, K + 4]
        bw, bh, ox, oy = (at[..., k + i] for i in range(4))
        x0, y0 = (cx + ox) * s, (cy + oy) * s
        half_w, half_h = jnp.maximum(bw, 0) * s / 2, jnp.maximum(bh, 0) * s / 2
        boxes = jnp.stack([x0 - half_w, y0 - half_h, x0 + half_w, y0 + half_h], -1)
        return jnp.clip(boxes, 0, self.input_size), scores, cls

    def held_out_stats(self, out, y, valid):
        boxes, scores, cls = self.decode(out)
        return {"boxes": boxes, "scores": scores, "classes": cls, "truth": y, "valid": valid}

    def combine(self, acc, stats):
        return jax.tree.map(lambda a, b: np.concatenate([np.asarray(a), np.asarray(b)]), acc, stats)

    def summary(self, stats):
        v = np.asarray(stats["valid"], bool)
        truth = np.asarray(stats["truth"])[v]
        keep = [t[:, 4] >= 0 for t in truth]
        size = (self.input_size, self.input_size)
        gt = coco_ground_truth([t[m, :4] for t, m in zip(truth, keep)], [t[m, 4].astype(int) for t, m in zip(truth, keep)],
                               [size] * len(truth), [str(c) for c in range(self.num_classes)])
        dt = coco_detections(np.asarray(stats["boxes"])[v], np.asarray(stats["scores"])[v],
                             np.asarray(stats["classes"])[v])
        return {k: x for k, x in coco_map(gt, dt).items() if np.isfinite(x)}  # NaN: no truth of that size


#: Tasks by config name; `make_task(name, space, **options)` builds one for a network of `space`.
TASKS: Registry = Registry("task", {"classification": Classification, "segmentation": Segmentation,
                                    "detection": Detection})


def make_task(name: str, space: Any, **options: Any) -> Task:
    """The task `name` (`TASKS`) for a network of `space`, with `options` (config `task.kwargs`).

    Example:
        >>> from supernet.spaces import make_space
        >>> space = make_space("mobile-curated", blocks_per_stage=(1, 1), base_widths=(16, 32),
        ...                    stage_strides=(2, 2), head_width=32, head="segmentation", num_classes=2,
        ...                    input_size=32, decoder_stage=0)
        >>> make_task("segmentation", space, max_zoom=1.0).max_zoom
        1.0
        >>> make_task("segmentation", space, zoom=2)
        Traceback (most recent call last):
        ...
        ValueError: Segmentation takes no option 'zoom'; its options: ignore, max_zoom
    """
    return TASKS[name].for_space(space, **options)
