"""Tasks (`supernet.tasks.task`): the segmentation loss and metrics ignore unlabelled pixels, the
joint flip keeps image and mask aligned, a segmenter trained with `Trainer` learns a synthetic
task far above the all-background predictor, classification keeps its numbers, and the launcher
runs person segmentation on COCO128 at smoke scale (bad configs stop with one message)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from supernet import make_space, make_supernet
from supernet.tasks import TASKS, Classification, Segmentation
from supernet.training import DeviceData, OptimConfig, TrainConfig, Trainer, evaluate_task, make_mesh


def test_segmentation_loss_ignores_unlabelled_pixels():
    seg = Segmentation(2)
    out = jnp.asarray(np.random.default_rng(0).standard_normal((1, 2, 2, 2)), jnp.float32)
    y = jnp.array([[[1, 0], [255, 1]]])
    keep = np.array([[True, True], [False, True]])
    ce = optax.softmax_cross_entropy_with_integer_labels(out, jnp.where(y == 255, 0, y))
    assert float(seg.loss(out, y)) == pytest.approx(float(ce[0][keep].mean()), rel=1e-6)
    assert float(seg.train_metric(out, y)) == pytest.approx(float((np.argmax(out, -1)[0] == y[0])[keep].mean()))
    with pytest.raises(ValueError, match="at least 2 classes"):
        Segmentation(1)
    with pytest.raises(KeyError, match="unknown task 'detect'"):
        TASKS["detect"]


def test_make_task_takes_the_space_args_from_the_space_and_options_from_the_config():
    from supernet.spaces import make_space
    from supernet.tasks import Detection, make_task
    space = make_space("mobile-curated", blocks_per_stage=(1, 1, 1), base_widths=(16, 24, 32), stage_strides=(2, 2, 2),
                       head_width=32, head="detection", num_classes=3, input_size=64, decoder_stage=1)
    det = make_task("detection", space, max_zoom=1.0, size_weight=0.5)
    assert isinstance(det, Detection) and (det.num_classes, det.stride, det.input_size) == (3, space.decoder_factors[1], 64) == (3, 4, 64)
    assert (det.max_zoom, det.size_weight, det.offset_weight) == (1.0, 0.5, 1.0)
    assert Detection.options() == ["max_detections", "size_weight", "offset_weight", "max_zoom"]
    with pytest.raises(ValueError, match="takes no option 'stride'"):  # the space fixes it
        make_task("detection", space, stride=4)


def test_joint_flip_keeps_image_and_mask_aligned():
    x = jnp.arange(2 * 4 * 4 * 3, dtype=jnp.float32).reshape(2, 4, 4, 3)
    y = (x[..., 0] % 7).astype(jnp.int32)  # a mask that is a function of the pixel
    flips = 0
    for k in range(8):
        xa, ya = Segmentation(2, max_zoom=1.0).augment(jax.random.key(k), x, y, lambda key, v: v)
        np.testing.assert_array_equal((xa[..., 0] % 7).astype(jnp.int32), ya)
        flips += int(not np.array_equal(xa, x))
    assert 0 < flips < 8


def test_zoom_keeps_image_and_mask_aligned():
    """Blocks of 0 / 255 in the image and their mask: after the joint scale-and-crop, wherever the
    image is still exactly 0 or 255 (away from blended edges) the mask says the same."""
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 2, (2, 4, 4)).repeat(8, 1).repeat(8, 2)
    x = jnp.asarray(np.repeat((mask * 255)[..., None], 3, -1).astype(np.uint8))
    for k in range(4):
        xa, ya = Segmentation(2).augment(jax.random.key(k), x, jnp.asarray(mask, jnp.int32), lambda key, v: v)
        img = np.asarray(xa[..., 0])
        sure = (img < 0.5) | (img > 254.5)
        np.testing.assert_array_equal((img[sure] > 127).astype(int), np.asarray(ya)[sure])
        assert sure.mean() > 0.5


def test_classification_task_is_the_old_loss():
    logits = jnp.asarray(np.random.default_rng(1).standard_normal((4, 10)), jnp.float32)
    y = jnp.array([1, 2, 3, 4])
    c = Classification()
    assert float(c.loss(logits, y)) == pytest.approx(
        float(optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()))
    smooth = optax.softmax_cross_entropy(logits, optax.smooth_labels(jax.nn.one_hot(y, 10), 0.1)).mean()
    assert float(c.loss(logits, y, 0.1)) == pytest.approx(float(smooth))


def test_a_segmenter_learns_a_synthetic_task():
    """Masks = the pixels brighter than the image's mean: after 40 steps the trained network's
    training-set mIoU is far above the all-background predictor's (about 0.25 here)."""
    space = make_space("mobile-curated", blocks_per_stage=(1, 1, 1), base_widths=(8, 16, 16), stage_strides=(1, 2, 2),
                       stem_width=8, parallelism=4, input_size=16, stem_stride=1, head="segmentation",
                       head_channels=8, decoder_stage=1, num_classes=2)
    sub = make_supernet(space, rngs=nnx.Rngs(0)).derive(space.baseline_arch())
    rng = np.random.default_rng(0)
    blobs = rng.uniform(0, 1, (64, 4, 4)).repeat(4, 1).repeat(4, 2)  # 4x4-pixel blocks
    x = np.repeat((blobs * 255)[..., None], 3, -1).astype(np.uint8)
    y = (blobs > 0.5).astype(np.int32)
    y[:, 0, :] = 255  # an ignored row
    mesh = make_mesh()
    data = DeviceData.put(x, y, mesh)
    norm = lambda k, v: v.astype(jnp.float32) / 255.0 - 0.5  # noqa: E731
    task = Segmentation(2)
    before = evaluate_task(sub, data, norm, task, mesh=mesh)
    cfg = TrainConfig(epochs=10, batch_size=16, optim=OptimConfig(lr=0.1, weight_decay=0.0))
    hist = Trainer(sub, cfg, augment=norm, mesh=mesh, eval_input=norm, task=task).fit(data, data)
    after = hist[-1]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert after["test_miou"] > 0.8 > before["miou"] and after["test_miou"] > max(before["miou"], 0.3)
    assert set(after) >= {"test_miou", "test_pixel_accuracy", "test_iou_0", "test_iou_1"}


def test_person_segmentation_runs_through_the_launcher(tmp_path, data_dir):
    from experiments.run import main

    res = main(["--config", "experiments/configs/segmentation/person_fpn.py:baseline,smoke", "--workdir",
                str(tmp_path / "seg")])
    r = res["stages"]["retrain"]
    assert res["accuracy_pct"] == r["test_miou_pct"] and "mIoU" in res["accuracy_source"]
    assert 0 <= r["test_miou_pct"] <= 100 and "train_miou_pct" in r and "test_iou_1" in r


def test_a_task_without_its_head_or_data_stops(tmp_path, capsys):
    from experiments.run import main

    for i, (over, match) in enumerate((("--config.space.kwargs.head=classification", "needs a space with that head"),
                                       ("--config.data.input_size=64", "letterboxed to the space's input_size"))):
        with pytest.raises(SystemExit) as e:
            main(["--config", "experiments/configs/segmentation/person_fpn.py:baseline,smoke", "--workdir",
                  str(tmp_path / str(i)), over])
        assert e.value.code == 2 and match in capsys.readouterr().err


@pytest.mark.slow  # ~1 min of compilation on 2 cores; the default suite must stay under 15 min
def test_single_shot_searches_a_segmenter_and_reports_its_inherited_miou(tmp_path, data_dir):
    from experiments.run import main

    res = main(["--config", "experiments/configs/segmentation/person_fpn.py:baseline,smoke", "--workdir",
                str(tmp_path / "ss"), "--config.stages=('single_shot',)"])
    ss = res["stages"]["single_shot"]
    assert 0 <= ss["inherited_val_miou_pct"] <= 100 and "inherited_val_iou_1" in ss


def test_zero_shot_scores_declare_their_tasks(tmp_path, capsys):
    from experiments.run import main
    from zero_shot.registry import supported_tasks

    assert supported_tasks("snip") == ("classification",) and "detection" in supported_tasks("synflow")
    with pytest.raises(SystemExit):
        main(["--config", "experiments/configs/segmentation/person_fpn.py:baseline,smoke", "--workdir",
              str(tmp_path / "z"), "--config.stages=('zero_shot', 'retrain')", "--config.zero_shot.proxies=('grasp',)"])
    err = capsys.readouterr().err
    assert "zero-shot score 'grasp' supports classification only" in err and len(err.strip().splitlines()) == 1
