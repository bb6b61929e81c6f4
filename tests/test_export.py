"""ONNX export: ONNX Runtime computes what JAX computes, and the graph is explicit."""

import doctest
import os

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from flax import nnx
from onnx import helper

import supernet.export as export
from supernet import make_space, make_supernet

SPACES = [("nb201", dict(channels=4, cells_per_stage=1), 32), ("fbnet-cifar100", {}, 32),
          ("mobile-curated", {}, 32)]


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("name,kwargs,hw", SPACES, ids=[s[0] for s in SPACES])
def test_onnxruntime_equals_jax_on_random_architectures(name, kwargs, hw):
    space = make_space(name, **kwargs)
    net = make_supernet(space, rngs=nnx.Rngs(0))
    x = np.asarray(jax.random.normal(jax.random.key(1), (2, hw, hw, 3)), np.float32)
    # one training step's worth of BN statistics, so inference mode differs from batch statistics
    net.train()
    archs = np.asarray(space.sample(jax.random.key(2), 12))
    for arch in archs[~space.is_constant(archs)][:2]:  # a cut-off cell's logits are all 0
        sub = net.derive(arch)
        sub.train()
        sub(jnp.asarray(x))  # updates running statistics away from (0, 1)
        model = export.to_onnx(sub, x.shape)
        assert sub.backbone is not None and _bn_modes(sub) == {False}  # the caller's mode is kept
        sub.eval()
        want = np.asarray(sub(jnp.asarray(x)))
        got = _run(model, x)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def _bn_modes(module) -> set[bool]:
    from supernet.blocks import BatchNorm
    return {m.use_running_average for _, m in nnx.iter_modules(module) if isinstance(m, BatchNorm)}


def test_graph_is_explicit():
    space = make_space("mobile-curated")
    sub = make_supernet(space, rngs=nnx.Rngs(0)).derive(np.asarray(space.sample(jax.random.key(0), 1))[0])
    model = export.to_onnx(sub, (1, 32, 32, 3))
    g = model.graph
    convs = [n for n in g.node if n.op_type == "Conv"]
    assert convs
    for n in convs:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        assert {"kernel_shape", "pads", "strides", "dilations"} <= set(attrs) and "auto_pad" not in attrs
        assert len(attrs["pads"]) == 2 * len(attrs["kernel_shape"])
    named = {v.name for v in (*g.input, *g.value_info, *g.output)}
    for n in g.node:  # every intermediate tensor has a static shape
        for t in n.output:
            assert t in named
    for v in (*g.input, *g.value_info, *g.output):
        assert all(d.HasField("dim_value") for d in v.type.tensor_type.shape.dim), v.name


def test_auto_pad_becomes_the_pads_it_means():
    """SAME_UPPER on 5 pixels, kernel 4, stride 2: total pad 3, one before and two after."""
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1, 5, 5])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    w = onnx.numpy_helper.from_array(np.ones((1, 1, 4, 4), np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], auto_pad="SAME_UPPER", strides=[2, 2])
    model = helper.make_model(helper.make_graph([node], "g", [x], [y], [w]),
                              opset_imports=[helper.make_opsetid("", 17)])
    inp = np.random.default_rng(0).normal(size=(1, 1, 5, 5)).astype(np.float32)
    before = _run(model, inp)
    out = export.make_explicit(model)
    attrs = {a.name: helper.get_attribute_value(a) for a in out.graph.node[0].attribute}
    assert attrs["pads"] == [1, 1, 2, 2] and attrs["kernel_shape"] == [4, 4] and "auto_pad" not in attrs
    np.testing.assert_allclose(_run(out, inp), before, rtol=1e-6)
    assert [d.dim_value for d in out.graph.output[0].type.tensor_type.shape.dim] == [1, 1, 3, 3]


def test_bad_input_shape_and_docstring():
    space = make_space("nb201", channels=4, cells_per_stage=1)
    sub = make_supernet(space, rngs=nnx.Rngs(0)).derive(np.zeros(6, np.int32) + 3)
    with pytest.raises(ValueError, match="input_shape"):
        export.to_onnx(sub, (1, 0, 32, 3))
    assert doctest.testmod(export).failed == 0


def test_retrained_network_is_saved_and_exported_from_its_workdir(tmp_path, data_dir, capsys):
    """`retrain` saves its weights (orbax); `experiments.export WORKDIR` writes exactly that network."""
    import json

    from experiments import export as export_cli
    from experiments.config import load_config
    from experiments.train_stages import load_subnet
    from experiments.run import main

    wd = str(tmp_path / "run")
    over = ["--config.stages=('single_shot', 'retrain')"]
    res = main(["--config", "experiments/configs/nb201/single_shot.py:smoke", "--workdir", wd, *over])
    assert res["stages"]["retrain"]["weights"] == "model" and os.path.isdir(os.path.join(wd, "model"))
    out = export_cli.main([wd])
    assert out == os.path.join(wd, "model.onnx") and "weights trained (retrain)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:  # never overwritten
        export_cli.main([wd])
    assert e.value.code == 2 and "exists" in capsys.readouterr().err

    cfg = load_config("experiments/configs/nb201/single_shot.py:smoke", over)
    space = make_space(cfg.space.name, **dict(cfg.space.kwargs))
    sub = load_subnet(cfg, space, space.decode(res["architecture"]), os.path.join(wd, "model"))
    fresh = make_supernet(space, rngs=nnx.Rngs(cfg.seed + 1)).derive(res["architecture"])
    sub.eval(), fresh.eval()
    x = np.asarray(jax.random.normal(jax.random.key(0), (1, space.input_size, space.input_size, 3)), np.float32)
    want = np.asarray(sub(jnp.asarray(x)))
    assert not np.allclose(want, np.asarray(fresh(jnp.asarray(x))))  # the weights are the trained ones
    np.testing.assert_allclose(_run(onnx.load(out), x), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    assert json.load(open(os.path.join(wd, "results.json")))["stages"]["retrain"]["weights"] == "model"


def test_export_cli_errors(tmp_path, capsys):
    from experiments import export as export_cli
    cases = [([], "either a WORKDIR"), ([str(tmp_path)], "not found"),
             (["--space", "nb201", "--arch", "|bad|", "--out", str(tmp_path / "a.onnx")], "error"),
             (["--space", "nb201", "--out", str(tmp_path / "a.onnx")], "--arch")]
    for argv, msg in cases:
        with pytest.raises(SystemExit) as e:
            export_cli.main(argv)
        assert e.value.code == 2 and msg in capsys.readouterr().err
    out = export_cli.main(["--space", "nb201", "--space-kwargs", '{"channels": 4, "cells_per_stage": 1}',
                           "--arch", "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|none~0|none~1|avg_pool_3x3~2|",
                           "--out", str(tmp_path / "cell.onnx")])
    onnx.checker.check_model(onnx.load(out), full_check=True)


def test_retrain_trains_the_proxy_space_and_export_rebuilds_it(tmp_path, capsys):
    """`retrain.space_kwargs`: the searched decisions are trained on half the widths (every layer
    exactly half its channels), results name both networks, export rebuilds the trained proxy; an
    override that changes the decisions stops with one message."""
    import json

    from experiments import export as export_cli
    from experiments.config import ConfigError, load_config
    from experiments.run import main
    from experiments.train_stages import proxy_space

    wd = str(tmp_path / "run")
    res = main(["--config", "experiments/configs/mobile/latency_cut.py:nas47,retrain,smoke", "--workdir", wd])
    cfg = load_config("experiments/configs/mobile/latency_cut.py:nas47,retrain,smoke")
    space = make_space(cfg.space.name, **dict(cfg.space.kwargs))
    proxy = proxy_space(cfg, space)
    arch = space.decode(res["architecture"])
    np.testing.assert_array_equal(2 * proxy.stage_widths(arch), space.stage_widths(arch))
    assert res["stages"]["retrain"]["trained_arch"] == proxy.encode(arch) != res["architecture"]
    out = export_cli.main([wd])
    assert proxy.encode(arch) in capsys.readouterr().out and os.path.exists(out)
    cfg.retrain.space_kwargs = {"blocks_per_stage": (1, 1)}
    with pytest.raises(ConfigError, match="change the space's decisions"):
        proxy_space(cfg, space)
    assert json.load(open(os.path.join(wd, "results.json")))["stages"]["retrain"]["weights"] == "model"


def test_single_shot_trains_the_proxy_supernet():
    """`single_shot.space_kwargs` (`latency_cut.py:single47`): the supernet is built on the half-width
    proxy with the same decisions, while costs stay those of the searched space; a proxy that
    changes the decisions stops with one message naming the section."""
    from experiments.config import ConfigError, load_config
    from experiments.train_stages import proxy_space

    cfg = load_config("experiments/configs/mobile/latency_cut.py:single47,smoke")
    assert cfg.cost.form == "constraint" and cfg.single_shot.estimator == "reinforce"
    space = make_space(cfg.space.name, **dict(cfg.space.kwargs))
    proxy = proxy_space(cfg, space, "single_shot")
    arch = space.baseline_arch()
    np.testing.assert_array_equal(2 * proxy.stage_widths(arch), space.stage_widths(arch))
    assert proxy_space(cfg, space) is space  # no retrain proxy without `retrain`
    cfg.single_shot.space_kwargs = {"blocks_per_stage": (1, 1)}
    with pytest.raises(ConfigError, match="single_shot.space_kwargs=.* change the space's decisions"):
        proxy_space(cfg, space, "single_shot")
