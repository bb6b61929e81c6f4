"""Detection / segmentation data (`experiments.data.coco`) and metrics (`supernet.tasks.metrics`):
COCO128's known counts, letterbox round trips, one clear error per kind of bad file, mAP by
pycocotools on cases computed by hand, mIoU on a hand-computed example."""

import math
import os

import numpy as np
import pytest
from PIL import Image

from experiments.data.coco import (IGNORE, DataError, letterbox_params, load_coco_json, load_masks,
                                   load_yolo_detection)
from supernet.tasks import (coco_detections, coco_ground_truth, coco_map, confusion_matrix, iou_per_class,
                            mean_iou)


def test_coco128_person_counts_and_letterbox(data_dir):
    """The issue's counts: person has 254 boxes in 61 train images, 350 in 73 val images; masks for
    100 images of each split; boxes map back to the labels' pixels."""
    tr = load_yolo_detection(data_dir, "train2017", 160, classes=("person",))
    va = load_yolo_detection(data_dir, "val2017", 160, classes=("person",))
    assert (tr.num_boxes.sum(), (tr.num_boxes > 0).sum(), len(tr)) == (254, 61, 128)
    assert (va.num_boxes.sum(), (va.num_boxes > 0).sum(), len(va)) == (350, 73, 128)
    assert tr.class_names == ("person",) and tr.images.shape == (128, 160, 160, 3)
    assert (tr.labels[tr.labels >= 0] == 0).all() and (tr.boxes >= 0).all() and (tr.boxes <= 160).all()
    i = int(np.argmax(tr.num_boxes > 0))
    cid, rows = [], []
    for line in open(os.path.join(data_dir, "coco128", "labels", "train2017", tr.ids[i] + ".txt")):
        c, cx, cy, w, h = map(float, line.split())
        if c == 0:
            rows.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    ow, oh = tr.letterbox.orig_size[i]
    want = np.asarray(rows) * [ow, oh, ow, oh]
    np.testing.assert_allclose(tr.to_original(i, tr.boxes[i, :tr.num_boxes[i]]), want, atol=1e-3)
    seg = load_masks(data_dir, "val2017", 160, classes=("person",))
    assert len(seg) == 100 and seg.num_classes == 2 and set(np.unique(seg.masks)) == {0, 1, IGNORE}


def test_letterbox_params():
    assert letterbox_params(320, 240, 160) == (0.5, 160, 120, 0, 20)
    assert letterbox_params(100, 200, 64) == (0.32, 32, 64, 16, 0)


def _toy(tmp_path, labels: dict[str, str], masks: dict[str, np.ndarray] | None = None, size=(40, 30)):
    root = tmp_path / "toy"
    for sub in ("images/a", "labels/a", "masks/a"):
        (root / sub).mkdir(parents=True)
    (root / "detection_classes.yaml").write_text("names:\n  0: person\n  1: car\n")
    (root / "segmentation_classes.yaml").write_text("classes:\n  0: unlabeled\n  1: person\n  3: car\n")
    for stem in ("x", "y"):
        Image.fromarray(np.full((size[1], size[0], 3), 50, np.uint8)).save(root / "images/a" / f"{stem}.jpg")
    for stem, text in labels.items():
        (root / "labels/a" / f"{stem}.txt").write_text(text)
    for stem, m in (masks or {}).items():
        Image.fromarray(m).save(root / "masks/a" / f"{stem}.png")
    return str(tmp_path)


def test_toy_set_boxes_and_masks(tmp_path):
    m = np.full((30, 40), 3, np.uint8)  # car
    m[:, 20:] = 1  # person
    m[:5] = 0  # unlabeled
    d = _toy(tmp_path, {"x": "1 0.5 0.5 0.5 0.5\n0 0.25 0.5 0.5 1.0\n"}, {"x": m})
    ds = load_yolo_detection(d, "a", 80, name="toy")  # scale 2, pad_y 10
    assert ds.num_boxes.tolist() == [2, 0] and ds.labels[0].tolist() == [1, 0]
    np.testing.assert_allclose(ds.boxes[0], [[20, 25, 60, 55], [0, 10, 40, 70]])
    car = load_yolo_detection(d, "a", 80, classes=("car",), name="toy")
    assert car.num_boxes.tolist() == [1, 0] and car.labels[0, 0] == 0
    seg = load_masks(d, "a", 80, classes=("person",), name="toy")
    assert seg.ids == ("x",)  # the image without a mask is left out
    mk = seg.masks[0]
    assert (mk[:10] == IGNORE).all() and (mk[70:] == IGNORE).all()  # letterbox padding
    assert mk[40, 10] == 0 and mk[40, 70] == 1 and mk[12, 70] == IGNORE  # car -> 0, person, unlabeled
    unl = load_masks(d, "a", 80, classes=("person",), name="toy", unlabeled="background")
    assert unl.masks[0, 12, 70] == 0


@pytest.mark.parametrize("labels,masks,kw,match", [
    ({"x": "0 0.5 0.5 0.2\n"}, None, {}, r"x\.txt:1: expected `class cx cy w h`"),
    ({"x": "0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.2 0.2\n"}, None, {}, r"x\.txt:2: class id 7 is not in the class file"),
    ({"x": "0 0.9 0.5 0.4 0.2\n"}, None, {}, r"x\.txt:1: box .* lies outside the image"),
    ({"x": "0 0.5 0.5 0.2 0.2\n"}, None, {"require_labels": True}, r"y\.jpg: no label file"),
    ({}, {"x": np.zeros((10, 10), np.uint8)}, {"masks": True}, r"x\.png: mask is 10x10 but its image x\.jpg is 40x30"),
    ({}, {"x": np.full((30, 40), 2, np.uint8)}, {"masks": True}, r"x\.png: values \[2\] are not classes"),
])
def test_bad_files_stop_with_one_message_naming_the_file(tmp_path, labels, masks, kw, match):
    d = _toy(tmp_path, labels, masks)
    with pytest.raises(DataError, match=match):
        if kw.pop("masks", False):
            load_masks(d, "a", 64, name="toy")
        else:
            load_yolo_detection(d, "a", 64, name="toy", **kw)


def test_missing_set_and_split_and_unknown_class(tmp_path):
    with pytest.raises(FileNotFoundError, match="no coco128 data set"):
        load_yolo_detection(str(tmp_path), "train2017", 64)
    d = _toy(tmp_path, {})
    with pytest.raises(DataError, match="no such split; .* holds a"):
        load_yolo_detection(d, "b", 64, name="toy")
    with pytest.raises(DataError, match="no class named 'dog'"):
        load_yolo_detection(d, "a", 64, classes=("dog",), name="toy")


def test_coco_json_reads_as_the_yolo_labels(tmp_path):
    """The same boxes written as COCO JSON instances load to the same `DetectionSet`."""
    import json

    d = _toy(tmp_path, {"x": "1 0.5 0.5 0.5 0.5\n0 0.25 0.5 0.5 1.0\n"})
    ds = load_yolo_detection(d, "a", 80, name="toy")
    gt = coco_ground_truth([ds.to_original(i, ds.boxes[i, :ds.num_boxes[i]]) for i in range(2)],
                           [ds.labels[i, :ds.num_boxes[i]] for i in range(2)], ds.letterbox.orig_size, ds.class_names)
    for im, name in zip(gt["images"], ("x.jpg", "y.jpg")):
        im["file_name"] = name
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(gt))
    js = load_coco_json(path, tmp_path / "toy/images/a", 80)
    np.testing.assert_allclose(js.boxes, ds.boxes, atol=1e-4)
    assert js.labels.tolist() == ds.labels.tolist() and js.class_names == ds.class_names


def _gt():
    return coco_ground_truth([np.array([[10, 10, 60, 60]]), np.array([[0, 0, 40, 20], [50, 50, 90, 90]])],
                             [np.array([0]), np.array([0, 0])], [(100, 100), (100, 100)], ["person"])


def test_map_of_perfect_predictions_is_one():
    gt = _gt()
    boxes = [np.array([[10, 10, 60, 60]]), np.array([[0, 0, 40, 20], [50, 50, 90, 90]])]
    m = coco_map(gt, coco_detections(boxes, [np.array([0.9]), np.array([0.8, 0.7])], [np.array([0]), np.array([0, 0])]))
    assert m["map"] == pytest.approx(1.0) and m["ap50"] == pytest.approx(1.0) and m["ar100"] == pytest.approx(1.0)
    assert coco_map(gt, [])["map"] == 0.0


def test_map_of_a_known_perturbation():
    """One ground-truth box, one detection shifted to IoU 0.62: it matches at the IoU thresholds
    0.50, 0.55, 0.60 (AP 1) and not at 0.65..0.95 (AP 0), so AP@[.5:.95] = 3 / 10, AP50 = 1, AP75 = 0.
    A second, lower-scored false positive in another image does not lower AP at 0.50 (it ranks
    after the true positive): precision stays 1 up to recall 1."""
    gt = coco_ground_truth([np.array([[0, 0, 100, 50]]), np.zeros((0, 4))], [np.array([0]), np.zeros(0)],
                           [(200, 200), (200, 200)], ["person"])
    # shift in x by s: IoU = (100 - s) / (100 + s) = 0.62 -> s = 38 / 1.62
    s = 38 / 1.62
    det = coco_detections([np.array([[s, 0, 100 + s, 50]]), np.array([[0, 0, 30, 30]])],
                          [np.array([0.9]), np.array([0.5])], [np.array([0]), np.array([0])])
    m = coco_map(gt, det)
    assert m["map"] == pytest.approx(0.3) and m["ap50"] == pytest.approx(1.0) and m["ap75"] == 0.0
    assert math.isnan(m["ap_small"])  # no small ground truth: COCO's -1, reported as NaN


def test_miou_by_hand_with_ignore():
    target = np.array([[0, 0, 1, 1], [0, 2, 2, 255]])
    pred = np.array([[0, 1, 1, 1], [2, 2, 0, 1]])
    cm = confusion_matrix(pred, target, 3)
    # class 0: TP 1 (0,0); FN 2 ((0,1)->1, (1,0)->2); FP 1 ((1,2): 2->0) -> 1 / 4
    # class 1: TP 2; FP 1 ((0,1)); FN 0 -> 2 / 3;  class 2: TP 1 ((1,1)); FN 1; FP 1 -> 1 / 3
    np.testing.assert_allclose(iou_per_class(cm), [1 / 4, 2 / 3, 1 / 3])
    assert mean_iou(cm) == pytest.approx((1 / 4 + 2 / 3 + 1 / 3) / 3)
    assert cm.sum() == 7  # the ignored pixel is not counted
    assert np.isnan(iou_per_class(confusion_matrix(np.zeros(3), np.zeros(3), 2))[1])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        confusion_matrix(np.array([3]), np.array([0]), 3)


def test_trivial_predictors_on_coco128_person(data_dir, capsys):
    """The floors the dense pipelines must clear (docs/results/dense_tasks.md): all-background
    mIoU = background IoU / 2, a centre box of the mean size finds almost nothing."""
    from experiments import trivial

    out = trivial.main(["--size", "64", "--data-dir", data_dir])
    bg = out["all_background_test"]
    assert bg["iou"][1] == 0.0 and bg["miou"] == pytest.approx(bg["iou"][0] / 2) and 0.40 < bg["miou"] < 0.47
    assert out["centre_box_test"]["map"] < 0.01
