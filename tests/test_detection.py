"""Detection (`supernet.tasks.Detection`, CenterNet, on `MobileSpace(head="detection")`): maps built
from the targets decode to the true boxes (COCO mAP 1 by pycocotools), the loss is smallest there,
the flip keeps boxes on the image, the loss reaches every architecture logit, the launcher runs
person detection on COCO128 at smoke scale, and the layer table holds the detector."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hwmodel.layers import total_params
from supernet import make_space, make_supernet
from supernet.tasks import Detection, make_task

DET = dict(blocks_per_stage=(1, 2, 2), base_widths=(8, 16, 24), stage_strides=(1, 2, 2), stem_width=8,
           parallelism=4, input_size=32, stem_stride=2, head="detection", head_channels=16,
           decoder_stage=1, num_classes=2)


def _truth():
    # image 0: two boxes of classes 0 and 1; image 1: one box; padding rows have class -1
    y = np.full((2, 3, 5), -1.0, np.float32)
    y[0, 0] = [2, 3, 14, 11, 0]
    y[0, 1] = [16, 18, 30, 31, 1]
    y[1, 0] = [5, 5, 25, 20, 1]
    return jnp.asarray(y)


def _perfect_maps(task: Detection, y, h=8, w=8):
    heat, cells, size, offset, valid = task.targets(y, h, w)
    k = task.num_classes
    out = jnp.concatenate([jnp.where(heat >= 1 - 1e-4, 12.0, -12.0), jnp.zeros((*heat.shape[:3], 4))], -1)
    for b in range(y.shape[0]):
        for m in range(y.shape[1]):
            if bool(valid[b, m]):
                r, c = (int(v) for v in cells[b, m])
                out = out.at[b, r, c, k:].set(jnp.concatenate([size[b, m], offset[b, m]]))
    return out


def test_true_maps_decode_to_the_true_boxes():
    task = Detection(2, stride=4, input_size=32)
    y = _truth()
    out = _perfect_maps(task, y)
    boxes, scores, cls = task.decode(out)
    np.testing.assert_allclose(boxes[0, :2][np.argsort(-np.asarray(boxes[0, :2, 0]))[::-1]],
                               np.asarray(y[0, :2, :4]), atol=1e-4)
    stats = task.held_out_stats(out, y, jnp.ones(2, bool))
    m = task.summary(jax.device_get(stats))
    assert m["map"] == pytest.approx(1.0) and m["ap50"] == pytest.approx(1.0)
    assert float(task.train_metric(out, y)) == 1.0
    worse = out.at[..., 2:4].multiply(0.5)  # boxes half as wide and tall: IoU 1/4 < 0.5
    assert task.summary(jax.device_get(task.held_out_stats(worse, y, jnp.ones(2, bool))))["map"] == 0.0
    assert float(task.loss(out, y)) < float(task.loss(worse, y))


def test_flip_keeps_boxes_on_the_image_and_twice_is_identity():
    task = Detection(2, stride=4, input_size=32, max_zoom=1.0)
    x, y = jnp.zeros((2, 32, 32, 3), jnp.uint8), _truth()
    for k in range(4):
        _, y1 = task.augment(jax.random.key(k), x, y, lambda key, v: v)
        _, y2 = task.augment(jax.random.key(k), x, y1, lambda key, v: v)
        np.testing.assert_allclose(y2, y)  # the same key flips the same images back
        real = np.asarray(y1[..., 4] >= 0)
        assert (np.asarray(y1[..., 0] < y1[..., 2])[real]).all() and (np.asarray(y1)[real][:, :4] >= 0).all()


def test_detection_loss_reaches_every_architecture_logit_and_the_table_holds_the_head():
    space = make_space("mobile-curated", **DET)
    net = make_supernet(space, rngs=nnx.Rngs(0))
    task = make_task("detection", space)
    assert (task.stride, task.num_classes) == (4, 2)
    x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    y = _truth()
    logits = jax.random.normal(jax.random.key(2), space.choice_valid.shape) * space.choice_valid
    net.eval()
    g = np.asarray(jax.grad(lambda lg: task.loss(net(x, jax.nn.softmax(jnp.where(space.choice_valid, lg, -1e9), -1)), y))(logits))
    net.train()
    multi = np.asarray(space.choice_valid).sum(-1) > 1
    assert np.all(np.abs(g[multi]).max(-1) > 0)
    a = space.baseline_arch()
    sub = net.derive(a)
    assert sub(x).shape == (2, 8, 8, 6)
    n = sum(v.size for v in jax.tree.leaves(nnx.state(sub, nnx.Param)))  # BN scale + shift = folded bias
    bn = sum(v.size for p, v in nnx.to_flat_state(nnx.state(sub, nnx.Param)) if p[-1] == "scale")
    assert n - bn == int(round(float(total_params(space.layers(a)))))


@pytest.mark.parametrize("data", ["", ",scenes"])
def test_person_detection_runs_through_the_launcher(tmp_path, data_dir, data):
    """COCO128 person and the second benchmark (`scenes`: 10 CIFAR-10 classes on COCO128 scenes)."""
    from experiments.run import main

    res = main(["--config", f"experiments/configs/detection/person_centernet.py:baseline,smoke{data}",
                "--workdir", str(tmp_path / "d")])
    r = res["stages"]["retrain"]
    assert res["accuracy_pct"] == r["test_map_pct"] and "mAP" in res["accuracy_source"]
    assert {"test_ap50_pct", "train_map_pct", "test_ar100"} <= set(r)


def test_zoom_moves_boxes_with_the_image():
    """A white box drawn in the image ends where the augmented box says (within a pixel), or the box
    is dropped when the crop cuts most of it away."""
    task = Detection(1, stride=4, input_size=32)
    img = np.zeros((1, 32, 32, 3), np.uint8)
    img[0, 8:20, 4:12] = 255
    y = jnp.asarray([[[4, 8, 12, 20, 0]]], jnp.float32)
    for k in range(8):
        xa, ya = task.augment(jax.random.key(k), jnp.asarray(img), y, lambda key, v: v)
        m = np.asarray(xa[0, ..., 0]) > 127
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        if float(ya[0, 0, 4]) >= 0:
            np.testing.assert_allclose(np.asarray(ya[0, 0, :4]), [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1],
                                       atol=1.0)


def test_retrain_init_from_copies_the_pretrained_backbone_and_keeps_the_new_head(tmp_path, capsys):
    """`retrain.init_from` (`train_stages.warm_start`): every array of the CIFAR-10 pretraining
    (`:pretrain`) that sits at the same place with the same shape in the detector is copied, the
    detection head keeps its fresh weights; a workdir without a retrain stops with one message."""
    from flax import nnx
    from experiments.config import load_config
    from experiments.run import main
    from experiments.train_stages import build_subnet, subnet_of_workdir, warm_start
    from supernet.spaces import make_space

    spec = "experiments/configs/detection/person_centernet.py"
    main(["--config", f"{spec}:pretrain,smoke", "--workdir", str(tmp_path / "pre")])
    src, _, how = subnet_of_workdir(str(tmp_path / "pre"))
    assert how.startswith("trained")
    cfg = load_config(f"{spec}:baseline,smoke")
    space = make_space(cfg.space.name, **dict(cfg.space.kwargs))
    sub = build_subnet(cfg, space, space.baseline_arch())
    fresh = nnx.to_pure_dict(nnx.state(sub))
    info = warm_start(sub, str(tmp_path / "pre"))
    got, pre = nnx.to_pure_dict(nnx.state(sub)), nnx.to_pure_dict(nnx.state(src))
    assert 0 < info["init_arrays"] < info["init_of_arrays"]
    flat = lambda d: {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_flatten_with_path(d)[0]}
    g, p, f = flat(got), flat(pre), flat(fresh)
    copied = [k for k in g if k in p and np.shape(p[k]) == np.shape(g[k])]
    assert len(copied) == info["init_arrays"] and any("stem" in k for k in copied)
    for k in g:
        np.testing.assert_array_equal(g[k], p[k] if k in copied else f[k], err_msg=k)
    assert any("head" in k for k in g if k not in copied)  # the detection head stays fresh
    with pytest.raises(SystemExit):
        main(["--config", f"{spec}:baseline,smoke", "--workdir", str(tmp_path / "bad"),
              f"--config.retrain.init_from={tmp_path / 'nowhere'}"])
    assert "is not a finished run's workdir" in capsys.readouterr().err
    res = main(["--config", f"{spec}:baseline,smoke", "--workdir", str(tmp_path / "det"),
                f"--config.retrain.init_from={tmp_path / 'pre'}"])
    assert res["stages"]["retrain"]["init_arrays"] == info["init_arrays"]
    assert "from retrain.init_from's weights" in res["accuracy_source"]  # not "from scratch"


def test_trivial_centre_boxes_score_near_zero_on_both_benchmarks(data_dir):
    """The floor the sanity check compares with: one mean-size box per class at the centre."""
    from experiments.trivial import main
    person = main(["--size", "64", "--data-dir", data_dir])
    scenes = main(["--size", "160", "--data-dir", data_dir, "--scenes"])  # the benchmark's size (at 64 px
    # the pasted images fill most of the scene and a centre box scores 5.7 %)
    assert 0.0 <= person["centre_box_test"]["map"] < 0.01 and 0.0 <= scenes["centre_box_test"]["map"] < 0.01
    assert person["all_background_test"]["iou"][1] == 0.0 and "all_background_test" not in scenes
    assert 32 <= scenes["mean_box_wh"][0] <= 96  # CIFAR-10 images pasted at 1-3x (what the occlusion leaves)


def test_transfer_fuse_arm_is_the_mined_widths_with_the_npu_fusion_at_a_40_percent_cut():
    """`person_centernet.py:transfer_fuse`: the rules mined from the CIFAR-10 search keep their
    widths and multiplier, and fusion is decided by the detector's own NPU cost model, which fuses
    blocks 1-3 and 6 (not the stages fused at 32 px) and cuts the NPU latency by 41.6 %, 41.9 % on
    npu-p32 (the analytic model; docs/results/detection_study.md)."""
    from experiments.config import load_config
    from hwmodel import ACCELERATORS, analytic
    from supernet.expert import apply_rules, block_costs

    cfg = load_config("experiments/configs/detection/person_centernet.py:transfer_fuse,scenes")
    assert cfg.stages == ["expert", "retrain"]
    space = make_space(cfg.space.name, **dict(cfg.space.kwargs))
    base = np.asarray(space.baseline_arch())
    arch = apply_rules(space, base, cfg.expert.rules).arch
    assert [c["block"] for c in block_costs(space, arch) if c["type"] == "fused"] == [1, 2, 3, 6]
    cut = {a: 1 - float(analytic.latency_ms(ACCELERATORS[a], space.layers(arch)))
           / float(analytic.latency_ms(ACCELERATORS[a], space.layers(base))) for a in ("npu", "npu-p32")}
    assert cut["npu"] == pytest.approx(0.416, abs=1e-3) and cut["npu-p32"] == pytest.approx(0.419, abs=1e-3)
