"""Copy-paste composites (`experiments.data.copy_paste`): tight boxes, occlusion, determinism, and
the detection set they grow."""

import numpy as np
import pytest

from experiments.data.copy_paste import MAX_HIDDEN, Cutout, composites, cutouts


def test_cutouts_take_the_masked_pixels_of_each_box_and_skip_small_or_unmasked_boxes():
    img = np.arange(32 * 32 * 3, dtype=np.uint8).reshape(1, 32, 32, 3)
    mask = np.zeros((1, 32, 32), np.uint8)
    mask[0, 4:20, 6:14] = 1  # the object of box 0 fills its left half
    boxes = np.array([[[6, 4, 22, 20, 0], [0, 0, 4, 4, 0], [24, 24, 32, 32, 0], [0, 0, 0, 0, -1]]], np.float32)
    (c,) = cutouts(img, boxes, mask)  # box 1 is under 8 px, box 2 has no person pixels
    assert c.rgb.shape == (16, 16, 3) and (c.rgb == img[0, 4:20, 6:22]).all()
    assert c.alpha.sum() == 16 * 8 and c.alpha[:, :8].all() and not c.alpha[:, 8:].any()


def test_composites_paste_exact_pixels_with_tight_boxes_drop_hidden_boxes_and_are_deterministic():
    bg = np.zeros((1, 32, 32, 3), np.uint8)
    boxes = np.full((1, 3, 5), -1, np.float32)
    boxes[0, 0] = [10, 10, 14, 14, 0]  # a background person the paste will hide
    alpha = np.zeros((32, 32), bool)
    alpha[2:30, 4:28] = True
    piece = Cutout(np.full((32, 32, 3), 200, np.uint8), alpha)
    x, y = composites(bg, boxes, [piece], count=3, seed=0, per_image=(1, 1), scale=(1.0, 1.0))
    x2, y2 = composites(bg, boxes, [piece], count=3, seed=0, per_image=(1, 1), scale=(1.0, 1.0))
    assert (x == x2).all() and (y == y2).all()
    for img, rows in zip(x, y):
        real = rows[rows[:, 4] >= 0]
        assert len(real) == 1  # the pasted one; the hidden background box is dropped
        x1, y1, x2_, y2_ = real[0, :4].astype(int)
        pasted = np.argwhere(img[..., 0] == 200)
        assert (pasted.min(0) == [y1, x1]).all() and (pasted.max(0) + 1 == [y2_, x2_]).all()
    far = Cutout(np.full((4, 4, 3), 200, np.uint8), np.ones((4, 4), bool))
    _, y3 = composites(bg, boxes, [far], count=20, seed=1, per_image=(1, 1), scale=(1.0, 1.0))
    kept = [(rows[:, 4] >= 0).sum() for rows in y3]
    assert set(kept) <= {1, 2} and 2 in kept  # a 4 x 4 piece hides the 4 x 4 box only when on it
    assert MAX_HIDDEN < 1
    with pytest.raises(ValueError, match="at least one cutout"):
        composites(bg, boxes, [], count=1)


def test_person_boxes_grows_only_the_training_split(data_dir):
    from experiments.data.coco import person_boxes
    plain = person_boxes(data_dir, 64)
    grown = person_boxes(data_dir, 64, copy_paste=8)
    assert grown.x_train.shape == (len(plain.x_train) + 8, 64, 64, 3)
    assert (grown.x_train[: len(plain.x_train)] == plain.x_train).all() and (grown.x_test == plain.x_test).all()
    assert (grown.y_test == plain.y_test).all() and "8 copy-paste composites" in grown.source
    assert ((grown.y_train[len(plain.x_train):, :, 4] >= 0).sum(1) >= 1).all()  # every composite has a person


def test_pasted_boxes_carry_their_cutouts_class():
    bg = np.zeros((2, 32, 32, 3), np.uint8)
    pieces = [Cutout(np.full((8, 8, 3), 10 * k + 50, np.uint8), np.ones((8, 8), bool), label=k) for k in (3, 7)]
    x, y = composites(bg, np.full((2, 4, 5), -1, np.float32), pieces, count=6, seed=0, per_image=(1, 1),
                      scale=(1.0, 1.0))
    for img, rows in zip(x, y):
        x1, y1 = rows[0, :2].astype(int)
        assert rows[0, 4] == (img[y1, x1, 0] - 50) // 10  # the pixels say which piece it is


def test_cifar_scenes_box_each_pasted_cifar_image_with_its_class_and_keep_the_splits_apart(data_dir):
    from PIL import Image

    from experiments.data.cifar10 import load_cifar10
    from experiments.data.scenes import POOL, cifar_scenes, objects
    s = cifar_scenes(data_dir, 160, num_train=12, num_test=6)
    again = cifar_scenes(data_dir, 160, num_train=12, num_test=6)
    assert (s.x_train == again.x_train).all() and (s.y_test == again.y_test).all()
    assert s.x_train.shape == (12, 160, 160, 3) and s.y_test.shape == (6, 8, 5) and "CIFAR-10 test objects" in s.source
    cifar = load_cifar10(data_dir)
    for x, y, (imgs, labels), seed in ((s.x_train, s.y_train, cifar.train, 0), (s.x_test, s.y_test, cifar.test, 1)):
        pool = objects(imgs, labels, POOL, seed)
        ref = np.stack([p.rgb for p in pool]).astype(np.float32)
        checked = 0
        for img, rows in zip(x, y):
            real = rows[rows[:, 4] >= 0]
            assert len(real) >= 1 and (real[:, :4] >= 0).all() and (real[:, 2:4] <= 160).all()
            if len(real) != 1:  # a lone paste is unoccluded: its box is the whole CIFAR image
                continue
            x1, y1, x2, y2 = real[0, :4].astype(int)
            crop = np.asarray(Image.fromarray(img[y1:y2, x1:x2]).resize((32, 32), Image.BILINEAR), np.float32)
            nearest = int(np.argmin(((ref - crop) ** 2).mean((1, 2, 3))))
            assert pool[nearest].label == real[0, 4]
            checked += 1
        assert checked >= 1
