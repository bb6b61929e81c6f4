"""Copy-paste composites: a larger detection training set built reproducibly from COCO128's own
person masks (issue 26: "a larger detection set built reproducibly from images we have").

Ghiasi et al., "Simple Copy-Paste is a Strong Data Augmentation Method for Instance Segmentation"
(CVPR 2021): pasting objects cut out by their masks onto other images, at random scale and place,
with hard edges, is a strong augmentation for detectors trained on little data. Here the cutouts
are COCO128 train persons (a person box's pixels that the train split's person mask labels person;
masks are per class, so overlapping persons come out together) and the backgrounds are the train
images themselves; the test split is never touched. Each composite keeps its background's boxes
except those the pasted persons hide for the most part, and adds each pasted person's tight box.

The composites are a pure function of the train split and `seed` (default 0, the same for every run
of a study, so that a study's seeds vary the training and not the data).

Example:
    >>> rng = np.random.default_rng(0)
    >>> img = np.zeros((1, 32, 32, 3), np.uint8)
    >>> cut = Cutout(np.full((8, 4, 3), 200, np.uint8), np.ones((8, 4), bool))
    >>> x, y = composites(img, np.full((1, 4, 5), -1, np.float32), [cut], count=2, seed=0)
    >>> x.shape, y.shape, int((y[..., 4] >= 0).sum(1).min()) >= 1
    ((2, 32, 32, 3), (2, 4, 5), True)
"""

from __future__ import annotations

import dataclasses

import numpy as np

#: A background box the pasted persons cover by more than this share of its area is dropped.
MAX_HIDDEN = 0.7


@dataclasses.dataclass(frozen=True)
class Cutout:
    """One object to paste: its pixels and which of them belong to it."""

    rgb: np.ndarray  # [h, w, 3] uint8
    alpha: np.ndarray  # [h, w] bool
    label: int = 0  # the class of its box


def cutouts(images: np.ndarray, boxes: np.ndarray, masks: np.ndarray, *, label: int = 1,
            min_side: int = 8, min_fill: float = 0.2) -> list[Cutout]:
    """The objects of the letterboxed `images` [n, s, s, 3]: for each box row `x1 y1 x2 y2 class`
    of `boxes` [n, m, 5] (class >= 0), its crop and the pixels of `masks` [n, s, s] equal to
    `label` inside it; boxes under `min_side` pixels or with under `min_fill` of them labelled are
    skipped (a box whose person the mask misses). Images and masks must be the same letterbox."""
    if images.shape[:3] != masks.shape:
        raise ValueError(f"images {images.shape[:3]} and masks {masks.shape} are not the same letterbox")
    out = []
    for img, rows, mask in zip(images, boxes, masks):
        for x1, y1, x2, y2, c in rows:
            if c < 0:
                continue
            a, b = int(np.floor(y1)), int(np.ceil(y2))
            l, r = int(np.floor(x1)), int(np.ceil(x2))
            if min(b - a, r - l) < min_side:
                continue
            alpha = mask[a:b, l:r] == label
            if alpha.mean() < min_fill:
                continue
            out.append(Cutout(img[a:b, l:r].copy(), alpha))
    return out


def _resize(c: Cutout, scale: float) -> Cutout:
    from PIL import Image
    h, w = c.alpha.shape
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    rgb = np.asarray(Image.fromarray(c.rgb).resize(size, Image.BILINEAR))
    alpha = np.asarray(Image.fromarray(c.alpha.astype(np.uint8) * 255).resize(size, Image.NEAREST)) > 127
    return Cutout(rgb, alpha, c.label)


def composites(images: np.ndarray, boxes: np.ndarray, pieces: list[Cutout], count: int, seed: int = 0,
               per_image: tuple[int, int] = (1, 3), scale: tuple[float, float] = (0.5, 1.5)
               ) -> tuple[np.ndarray, np.ndarray]:
    """`count` composites `(images [count, s, s, 3], boxes [count, m, 5])`: each a random background
    of `images` (with its `boxes`, rows `x1 y1 x2 y2 class`, class -1 padding) with 1-3 random
    `pieces` pasted at a random scale in `scale` (clipped to fit) and place; a background box
    hidden by more than `MAX_HIDDEN` is dropped, each pasted piece adds the tight box of its visible
    pixels (class `Cutout.label`); at most `m` boxes per image (the pasted ones first)."""
    if count < 0 or not pieces:
        raise ValueError(f"copy-paste needs count >= 0 and at least one cutout (got {count}, {len(pieces)})")
    rng = np.random.default_rng(seed)
    n, s = images.shape[0], images.shape[1]
    m = boxes.shape[1]
    out_x = np.empty((count, s, s, 3), np.uint8)
    out_y = np.full((count, m, 5), -1, np.float32)
    for i in range(count):
        j = int(rng.integers(n))
        img = images[j].copy()
        covered = np.zeros((s, s), bool)
        placed, sizes, labels = [], [], []  # each pasted piece's visible pixels (later ones hide earlier ones), size, class
        for _ in range(int(rng.integers(per_image[0], per_image[1] + 1))):
            p = pieces[int(rng.integers(len(pieces)))]
            p = _resize(p, min(float(rng.uniform(*scale)), (s - 1) / max(p.alpha.shape)))  # fits the image
            h, w = p.alpha.shape
            top, left = int(rng.integers(0, s - h + 1)), int(rng.integers(0, s - w + 1))
            img[top:top + h, left:left + w][p.alpha] = p.rgb[p.alpha]
            here = np.zeros((s, s), bool)
            here[top:top + h, left:left + w] = p.alpha
            placed = [q & ~here for q in placed] + [here]
            sizes.append(int(p.alpha.sum()))
            labels.append(float(p.label))
            covered |= here
        rows = []
        for q, pixels, label in zip(placed, sizes, labels):
            if q.sum() > (1 - MAX_HIDDEN) * pixels:  # (a piece the later ones hide is dropped too)
                r, c = np.nonzero(q)
                rows.append([c.min(), r.min(), c.max() + 1, r.max() + 1, label])
        for x1, y1, x2, y2, c in boxes[j]:
            if c < 0:
                continue
            a, b, l, r = int(np.floor(y1)), int(np.ceil(y2)), int(np.floor(x1)), int(np.ceil(x2))
            if covered[a:b, l:r].sum() <= MAX_HIDDEN * max((b - a) * (r - l), 1):
                rows.append([x1, y1, x2, y2, c])
        out_x[i] = img
        rows = rows[:m]  # the pasted ones first
        if rows:
            out_y[i, :len(rows)] = np.asarray(rows, np.float32)
    return out_x, out_y
