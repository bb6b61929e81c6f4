"""Detection and segmentation sets in the COCO / YOLO layouts, letterboxed to a square input.

Layout (COCO128 in `../shared/data/coco128`, any set laid out the same way):

    <root>/images/<split>/<id>.jpg          RGB images (any size)
    <root>/labels/<split>/<id>.txt          YOLO boxes: one `class cx cy w h` per line, normalised to
                                            [0, 1]; no file = no objects (an unlabelled image)
    <root>/masks/<split>/<id>.png           class index per pixel (8-bit), the image's size
    <root>/detection_classes.yaml           `names:` id -> name of the box classes
    <root>/segmentation_classes.yaml        `classes:` id -> name of the mask values (0 = unlabeled)

COCO JSON instances (`load_coco_json`) are read with `pycocotools` into the same `DetectionSet`.

Every image is letterboxed to `size x size` (`letterbox`): resized so its longer side is `size`
(bilinear; masks nearest-neighbour), centred, padded with grey 114 (YOLOv5's value) and, in masks,
with `IGNORE`. Boxes are mapped with the same scale and offset, so `(x - pad_x) / scale` returns
a box to the original image (`DetectionSet.to_original`), which is where COCO mAP is computed.

`classes` picks the classes a study uses (e.g. `("person",)`, the article's human-presence
detector) and renumbers them 0..K-1; boxes of other classes are dropped. For masks the picked
classes become 1..K, every other labelled pixel 0 (background) and unlabelled pixels `IGNORE`
(or background with `unlabeled="background"`).

A missing, empty or inconsistent set stops with a `DataError` naming the file: a class id out of
range, a box outside its image, a line that is not five numbers, a mask of another size than its
image or with values the class file does not list, an image without a label file where
`require_labels=True`.

Example:
    >>> ds = load_yolo_detection(None, "train2017", size=160, classes=("person",))  # doctest: +SKIP
    >>> ds.images.shape, ds.boxes.shape[-1]  # doctest: +SKIP
    ((128, 160, 160, 3), 4)
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from jaxtyping import Float, Int, UInt8

from experiments.data.cifar10 import DataError, resolve_data_dir

#: Mask value of pixels that count in no class (letterbox padding, unlabelled pixels).
IGNORE = 255
#: Grey of the letterbox padding (YOLOv5's `letterbox`).
PAD_VALUE = 114
#: Tolerance on normalised box coordinates (YOLO labels are rounded to 6 decimals).
_BOX_TOL = 1e-3
_IMAGE_EXT = (".jpg", ".jpeg", ".png")


@dataclasses.dataclass(frozen=True)
class Letterbox:
    """How images were mapped to the square input: `x_in = x_orig * scale + pad_x` (per image)."""
    scale: Float[np.ndarray, " n"]
    pad: Float[np.ndarray, "n 2"]  # (pad_x, pad_y) in input pixels
    orig_size: Int[np.ndarray, "n 2"]  # (width, height) of the original image


@dataclasses.dataclass(frozen=True, kw_only=True)
class LetterboxedSet:
    """What every dense-task set holds: letterboxed images (`images[i]` square, uint8), their ids,
    the class names, how each image was letterboxed, and where it came from."""
    images: UInt8[np.ndarray, "n s s 3"]
    ids: tuple[str, ...]
    class_names: tuple[str, ...]
    letterbox: Letterbox
    source: str

    def __len__(self) -> int:
        return len(self.ids)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DetectionSet(LetterboxedSet):
    """Letterboxed images with padded per-image boxes.

    `boxes[i, j]` is `(x1, y1, x2, y2)` in input pixels for `j < num_boxes[i]`; `labels[i, j]` the
    class index in `class_names` (-1 on padding rows).
    """
    boxes: Float[np.ndarray, "n m 4"]
    labels: Int[np.ndarray, "n m"]
    num_boxes: Int[np.ndarray, " n"]

    def to_original(self, i: int, boxes: Float[np.ndarray, "k 4"]) -> Float[np.ndarray, "k 4"]:
        """Boxes of image `i` from input pixels back to its original pixels (clipped to it)."""
        lb = self.letterbox
        b = (np.asarray(boxes, np.float64) - np.tile(lb.pad[i], 2)) / lb.scale[i]
        w, h = lb.orig_size[i]
        return np.clip(b, 0, [w, h, w, h])


@dataclasses.dataclass(frozen=True, kw_only=True)
class SegmentationSet(LetterboxedSet):
    """Letterboxed images and masks: `masks[i]` holds 0..K (0 = background, k = `class_names[k-1]`)
    or `IGNORE`."""
    masks: UInt8[np.ndarray, "n s s"]

    @property
    def num_classes(self) -> int:
        """Classes of the masks, background included."""
        return len(self.class_names) + 1


@dataclasses.dataclass(frozen=True)
class DenseSplits:
    """Train and test arrays of a dense-target set in the launcher's host-array form (the fields of
    `Cifar10`): images uint8 `[n, s, s, 3]`, targets `[n, s, s]` (masks)."""
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str = ""


def person_masks(data_dir: str | os.PathLike | None, size: int) -> DenseSplits:
    """COCO128's person masks (`train2017` to train, `val2017` to test), letterboxed to `size`:
    0 background, 1 person, `IGNORE` unlabelled pixels and padding."""
    tr = load_masks(data_dir, "train2017", size, classes=("person",))
    te = load_masks(data_dir, "val2017", size, classes=("person",))
    return DenseSplits(tr.images, tr.masks, te.images, te.masks, f"{tr.source}; {te.source}")


def person_boxes(data_dir: str | os.PathLike | None, size: int, max_boxes: int = 32,
                 copy_paste: int = 0) -> DenseSplits:
    """COCO128's person boxes (`train2017` to train, `val2017` to test), letterboxed to `size`:
    targets `[n, max_boxes, 5]` float32 rows `x1 y1 x2 y2 class` in input pixels, class -1 on
    padding rows (`supernet.tasks.Detection`'s form; an image with more boxes keeps its first).
    `copy_paste > 0` appends that many composites to the training split: train persons cut out by
    the train masks pasted onto train images (`experiments.data.copy_paste`, seed 0)."""
    def pack(ds: DetectionSet) -> np.ndarray:
        y = np.concatenate([ds.boxes, ds.labels[..., None].astype(np.float32)], -1)
        return y.astype(np.float32)

    tr = load_yolo_detection(data_dir, "train2017", size, classes=("person",), max_boxes=max_boxes)
    te = load_yolo_detection(data_dir, "val2017", size, classes=("person",), max_boxes=max_boxes)
    x, y, source = tr.images, pack(tr), tr.source
    if copy_paste:
        from experiments.data.copy_paste import composites, cutouts
        seg = load_masks(data_dir, "train2017", size, classes=("person",))
        rows = [tr.ids.index(i) for i in seg.ids]
        if not np.array_equal(tr.images[rows], seg.images):
            raise DataError(f"{source}: the train masks' images are not the detection set's (letterbox differs)")
        pieces = cutouts(seg.images, y[rows], seg.masks)
        cx, cy = composites(x, y, pieces, copy_paste, seed=0)
        x, y = np.concatenate([x, cx]), np.concatenate([y, cy])
        source += f" + {copy_paste} copy-paste composites of {len(pieces)} person cutouts (seed 0)"
    return DenseSplits(x, y, te.images, pack(te), f"{source}; {te.source}")


def letterbox_params(width: int, height: int, size: int) -> tuple[float, int, int, int, int]:
    """`(scale, new_w, new_h, pad_x, pad_y)` that fit a `width x height` image into `size x size`.

    >>> letterbox_params(320, 240, 160)
    (0.5, 160, 120, 0, 20)
    """
    scale = size / max(width, height)
    nw, nh = max(1, round(width * scale)), max(1, round(height * scale))
    return scale, nw, nh, (size - nw) // 2, (size - nh) // 2


def letterbox(img: np.ndarray, size: int, *, nearest: bool = False, fill: int = PAD_VALUE) -> np.ndarray:
    """`img` (HxW or HxWxC uint8) resized to fit `size x size` and centred on `fill`."""
    from PIL import Image

    h, w = img.shape[:2]
    _, nw, nh, px, py = letterbox_params(w, h, size)
    resized = np.asarray(Image.fromarray(img).resize((nw, nh), Image.NEAREST if nearest else Image.BILINEAR))
    out = np.full((size, size, *img.shape[2:]), fill, np.uint8)
    out[py:py + nh, px:px + nw] = resized
    return out


def read_class_names(path: Path, key: str) -> dict[int, str]:
    """`id -> name` under `key:` of a YOLO-style class file (`  0: person` lines)."""
    if not path.is_file():
        raise DataError(f"{path}: class file not found")
    out, inside = {}, False
    for n, line in enumerate(path.read_text().splitlines(), 1):
        text = line.split("#", 1)[0].rstrip()
        if not text:
            continue
        if not text.startswith((" ", "\t")):
            inside = text.strip() == f"{key}:"
            continue
        if inside:
            k, sep, name = text.strip().partition(":")
            if not sep or not k.strip().isdigit():
                raise DataError(f"{path}:{n}: expected `<id>: <name>` under {key}:, got {line.strip()!r}")
            out[int(k)] = name.strip().strip("'\"")
    if not out:
        raise DataError(f"{path}: no classes under {key}:")
    return out


def _pick(names: dict[int, str], classes: Sequence[str] | None, path: Path) -> dict[int, int]:
    """Source id -> new index (0..K-1) of the picked classes (all, in id order, when None)."""
    if classes is None:
        return {k: i for i, k in enumerate(sorted(names))}
    by_name = {v: k for k, v in names.items()}
    unknown = [c for c in classes if c not in by_name]
    if unknown:
        raise DataError(f"{path}: no class named {', '.join(map(repr, unknown))}; it lists "
                        f"{', '.join(list(by_name)[:10])}, ...")
    return {by_name[c]: i for i, c in enumerate(classes)}


def _root(data_dir: str | os.PathLike | None, name: str) -> Path:
    base = resolve_data_dir(data_dir)
    root = base / name if (base / name).is_dir() else base
    if not (root / "images").is_dir():
        raise FileNotFoundError(f"no {name} data set at {root} (no images/ folder); pass the folder "
                                f"holding {name}/ (or the set itself) or set HWNAS_DATA_DIR")
    return root


def _images(root: Path, split: str) -> list[Path]:
    d = root / "images" / split
    if not d.is_dir():
        splits = sorted(p.name for p in (root / "images").iterdir() if p.is_dir())
        raise DataError(f"{d}: no such split; {root / 'images'} holds {', '.join(splits) or 'nothing'}")
    files = sorted(p for p in d.iterdir() if p.suffix.lower() in _IMAGE_EXT)
    if not files:
        raise DataError(f"{d}: no images ({', '.join(_IMAGE_EXT)})")
    return files


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{path}: not a readable image ({e})") from None


def parse_yolo_labels(path: Path, num_ids: int | None = None, valid_ids: set[int] | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """`(class ids [k], boxes [k, 4] as normalised cx, cy, w, h)` of one YOLO label file, checked."""
    ids, boxes = [], []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            if len(parts) != 5:
                raise ValueError
            c, vals = int(parts[0]), [float(v) for v in parts[1:]]
        except ValueError:
            raise DataError(f"{path}:{n}: expected `class cx cy w h`, got {line.strip()!r}") from None
        if c < 0 or (valid_ids is not None and c not in valid_ids):
            raise DataError(f"{path}:{n}: class id {c} is not in the class file "
                            f"({num_ids if num_ids is not None else len(valid_ids or ())} classes)")
        cx, cy, w, h = vals
        if not (w > 0 and h > 0 and cx - w / 2 >= -_BOX_TOL and cy - h / 2 >= -_BOX_TOL
                and cx + w / 2 <= 1 + _BOX_TOL and cy + h / 2 <= 1 + _BOX_TOL):
            raise DataError(f"{path}:{n}: box {vals} lies outside the image (normalised cx cy w h "
                            "must keep the box inside [0, 1] with w, h > 0)")
        ids.append(c)
        boxes.append(vals)
    return np.asarray(ids, np.int64), np.asarray(boxes, np.float64).reshape(-1, 4)


def load_yolo_detection(data_dir: str | os.PathLike | None, split: str, size: int,
                        classes: Sequence[str] | None = None, *, name: str = "coco128",
                        require_labels: bool = False, max_boxes: int | None = None) -> DetectionSet:
    """A YOLO-layout detection split (module docstring), letterboxed to `size`.

    Args:
      data_dir: folder holding `<name>/` (or the set's own folder); default `$HWNAS_DATA_DIR`,
        else `../shared/data`.
      split: the folder under `images/`, e.g. `"train2017"`.
      size: side of the square input.
      classes: class names to keep, renumbered in this order (default: all of the class file).
      require_labels: an image without a label file is an error (default: it has no objects).
      max_boxes: rows of the padded box arrays (default: the most boxes of any image).
    """
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    root = _root(data_dir, name)
    cls_file = root / "detection_classes.yaml"
    names = read_class_names(cls_file, "names")
    keep = _pick(names, classes, cls_file)
    images, all_boxes, all_labels, ids, scales, pads, sizes = [], [], [], [], [], [], []
    for f in _images(root, split):
        img = _read_rgb(f)
        h, w = img.shape[:2]
        label = root / "labels" / split / f"{f.stem}.txt"
        if label.is_file():
            cid, cxcywh = parse_yolo_labels(label, len(names), set(names))
        elif require_labels:
            raise DataError(f"{f}: no label file {label} (require_labels=True)")
        else:
            cid, cxcywh = np.zeros(0, np.int64), np.zeros((0, 4))
        s, _, _, px, py = letterbox_params(w, h, size)
        sel = np.asarray([c in keep for c in cid], bool)
        cx, cy, bw, bh = cxcywh[sel].T
        corners = np.clip(np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1), 0, 1)  # rounding
        xyxy = corners * [w, h, w, h] * s + [px, py, px, py]
        images.append(letterbox(img, size))
        all_boxes.append(xyxy)
        all_labels.append(np.asarray([keep[c] for c in cid[sel]], np.int32))
        ids.append(f.stem)
        scales.append(s)
        pads.append((px, py))
        sizes.append((w, h))
    return _pack(images, all_boxes, all_labels, ids, keep, names, scales, pads, sizes, max_boxes,
                 f"{root} ({split}, YOLO labels)")


def _pack(images, all_boxes, all_labels, ids, keep, names, scales, pads, sizes, max_boxes, source) -> DetectionSet:
    m = max([len(b) for b in all_boxes] + [1]) if max_boxes is None else max_boxes
    n = len(images)
    boxes = np.zeros((n, m, 4), np.float32)
    labels = np.full((n, m), -1, np.int32)
    counts = np.zeros(n, np.int32)
    for i, (b, lab) in enumerate(zip(all_boxes, all_labels)):
        k = min(len(b), m)
        boxes[i, :k], labels[i, :k], counts[i] = b[:k], lab[:k], k
    inv = {v: k for k, v in keep.items()}
    return DetectionSet(images=np.stack(images), boxes=boxes, labels=labels, num_boxes=counts, ids=tuple(ids),
                        class_names=tuple(names[inv[i]] for i in range(len(keep))),
                        letterbox=Letterbox(np.asarray(scales, np.float64), np.asarray(pads, np.float64),
                                            np.asarray(sizes, np.int64)), source=source)


def load_coco_json(annotations: str | os.PathLike, image_dir: str | os.PathLike, size: int,
                   classes: Sequence[str] | None = None, max_boxes: int | None = None) -> DetectionSet:
    """COCO JSON instances (read by `pycocotools.coco.COCO`) as a `DetectionSet` letterboxed to
    `size`; crowd annotations are left out (COCO's evaluation ignores them too)."""
    from pycocotools.coco import COCO

    ann_path, img_dir = Path(annotations), Path(image_dir)
    if not ann_path.is_file():
        raise DataError(f"{ann_path}: annotation file not found")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(ann_path))
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{ann_path}: not COCO instances JSON ({e})") from None
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    keep = _pick(names, classes, ann_path)
    images, all_boxes, all_labels, ids, scales, pads, sizes = [], [], [], [], [], [], []
    for info in coco.loadImgs(sorted(coco.getImgIds())):
        f = img_dir / info["file_name"]
        if not f.is_file():
            raise DataError(f"{ann_path}: image {info['file_name']!r} not found in {img_dir}")
        img = _read_rgb(f)
        h, w = img.shape[:2]
        s, _, _, px, py = letterbox_params(w, h, size)
        anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=info["id"], iscrowd=False))
                if a["category_id"] in keep]
        xywh = np.asarray([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
        if len(xywh) and ((xywh[:, 2:] <= 0).any() or (xywh[:, :2] < -1).any()
                          or (xywh[:, 0] + xywh[:, 2] > w + 1).any() or (xywh[:, 1] + xywh[:, 3] > h + 1).any()):
            raise DataError(f"{ann_path}: a box of image {info['file_name']!r} lies outside its {w}x{h} pixels")
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1) * s + [px, py, px, py]
        images.append(letterbox(img, size))
        all_boxes.append(xyxy)
        all_labels.append(np.asarray([keep[a["category_id"]] for a in anns], np.int32))
        ids.append(Path(info["file_name"]).stem)
        scales.append(s)
        pads.append((px, py))
        sizes.append((w, h))
    if not images:
        raise DataError(f"{ann_path}: no images")
    return _pack(images, all_boxes, all_labels, ids, keep, names, scales, pads, sizes, max_boxes,
                 f"{ann_path} (COCO JSON)")


def load_masks(data_dir: str | os.PathLike | None, split: str, size: int,
               classes: Sequence[str] | None = None, *, name: str = "coco128",
               unlabeled: str = "ignore") -> SegmentationSet:
    """The images of `split` that have a mask, letterboxed to `size` with their masks.

    `classes` (names of `segmentation_classes.yaml`, default all but `unlabeled`) become 1..K;
    other labelled pixels 0; pixels labelled `unlabeled` (value 0) become `IGNORE`, or 0 with
    `unlabeled="background"`.
    """
    if unlabeled not in ("ignore", "background"):
        raise ValueError(f"unlabeled must be 'ignore' or 'background', got {unlabeled!r}")
    root = _root(data_dir, name)
    cls_file = root / "segmentation_classes.yaml"
    names = read_class_names(cls_file, "classes")
    void = next((k for k, v in names.items() if v == "unlabeled"), None)
    picked = classes if classes is not None else [v for k, v in sorted(names.items()) if k != void]
    keep = _pick(names, picked, cls_file)
    lut = np.zeros(256, np.uint8)  # mask value -> new class (1..K), 0 for other classes
    for k, i in keep.items():
        lut[k] = i + 1
    if void is not None:
        lut[void] = IGNORE if unlabeled == "ignore" else 0
    valid = np.zeros(256, bool)
    valid[list(names)] = True
    mask_dir = root / "masks" / split
    if not mask_dir.is_dir():
        raise DataError(f"{mask_dir}: no masks for split {split!r}")
    images, masks, ids, scales, pads, sizes = [], [], [], [], [], []
    from PIL import Image

    for f in _images(root, split):
        mf = mask_dir / f"{f.stem}.png"
        if not mf.is_file():
            continue  # an image without a mask is not part of the segmentation set
        img = _read_rgb(f)
        try:
            with Image.open(mf) as im:
                m = np.asarray(im)
        except OSError as e:
            raise DataError(f"{mf}: not a readable PNG mask ({e})") from None
        if m.ndim != 2 or m.dtype != np.uint8:
            raise DataError(f"{mf}: a mask must be one 8-bit channel of class indices, got shape "
                            f"{m.shape} {m.dtype}")
        if m.shape != img.shape[:2]:
            raise DataError(f"{mf}: mask is {m.shape[1]}x{m.shape[0]} but its image {f.name} is "
                            f"{img.shape[1]}x{img.shape[0]}")
        bad = np.unique(m[~valid[m]])
        if bad.size:
            raise DataError(f"{mf}: values {bad.tolist()[:10]} are not classes of {cls_file.name}")
        h, w = m.shape
        s, _, _, px, py = letterbox_params(w, h, size)
        images.append(letterbox(img, size))
        masks.append(letterbox(lut[m], size, nearest=True, fill=IGNORE))
        ids.append(f.stem)
        scales.append(s)
        pads.append((px, py))
        sizes.append((w, h))
    if not images:
        raise DataError(f"{mask_dir}: no image of {root / 'images' / split} has a mask")
    inv = {v: k for k, v in keep.items()}
    return SegmentationSet(images=np.stack(images), masks=np.stack(masks), ids=tuple(ids),
                           class_names=tuple(names[inv[i]] for i in range(len(keep))),
                           letterbox=Letterbox(np.asarray(scales, np.float64), np.asarray(pads, np.float64),
                                               np.asarray(sizes, np.int64)), source=f"{root} ({split}, PNG masks)")
