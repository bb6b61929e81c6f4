"""The segmentation head on the mobile space (`MobileSpace(head="segmentation")`,
`supernet.heads.DenseHead`): the supernet at a one-hot architecture equals the derived
subnet, the layer table holds exactly the derived network's weights and executes to the same
output shape, a pixel loss reaches every architecture logit, bad settings stop with one message."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from hwmodel import profile
from hwmodel.layers import OpKind, is_op, total_params, weight_elems
from supernet import make_space, make_supernet
from supernet.blocks import BatchNorm, SharedConv
from supernet.heads import DenseHead

SEG = dict(blocks_per_stage=(1, 2, 2), base_widths=(8, 16, 24), stage_strides=(1, 2, 2), stem_width=8,
           head_width=32, parallelism=4, input_size=32, stem_stride=2, head="segmentation", head_channels=16,
           decoder_stage=1, num_classes=2)


@pytest.fixture(scope="module")
def seg():
    space = make_space("mobile-curated", **SEG)
    net = make_supernet(space, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    archs = [np.asarray(space.sample(jax.random.key(i))) for i in range(4)] + [space.baseline_arch()]
    return space, net, x, archs


def test_one_hot_supernet_equals_the_derived_subnet(seg):
    space, net, x, archs = seg
    net.eval()
    for a in archs:
        sub = net.derive(a)
        sub.eval()
        y, want = net(x, space.one_hot(a)), sub(x)
        assert y.shape == (2, 32, 32, 2) and isinstance(sub.head, DenseHead)
        np.testing.assert_allclose(y, want, atol=1e-5, rtol=1e-5, err_msg=space.encode(a))
    net.train()


def test_the_layer_table_holds_the_derived_network(seg):
    """Conv kernels + one folded BN bias per conv + the classifier's bias == the table's params; the
    table (head rows included) executes to per-pixel logits at the input's size."""
    space, net, x, archs = seg
    assert [n for n in space.row_names if n.startswith("dec.")] == [
        "dec.deep", "dec.up", "dec.lateral", "dec.add", "dec.fuse", "dec.output", "dec.upsample"]
    for a in archs:
        t = space.layers(a)
        sub = net.derive(a)
        convs = [m for _, m in nnx.iter_graph(sub) if isinstance(m, SharedConv)]
        bns = [m for _, m in nnx.iter_graph(sub) if isinstance(m, BatchNorm)]
        rows = np.asarray(is_op(t, OpKind.CONV, OpKind.DWCONV) & (t.weight > 0))
        assert len(convs) == rows.sum() == len(bns) + 1  # the classifier has a bias, no BN
        n = sum(c.kernel.size for c in convs) + sum(b.scale.size for b in bns) + sub.head.classifier.bias.size
        assert n == int(round(float(total_params(t)))), space.encode(a)
        assert float(np.asarray(weight_elems(t))[rows].sum()) == n
        params, apply = profile.build_network(t)
        assert apply(params, x).shape == (2, 32, 32, 2)


def test_a_pixel_loss_reaches_every_architecture_logit(seg):
    space, net, x, _ = seg
    y = jax.random.randint(jax.random.key(1), (2, 32, 32), 0, 2)
    logits = jax.random.normal(jax.random.key(2), space.choice_valid.shape) * space.choice_valid

    def loss(lg):
        probs = jax.nn.softmax(jnp.where(space.choice_valid, lg, -1e9), -1)
        out = net(x, probs)
        return optax.softmax_cross_entropy_with_integer_labels(out, y).mean()

    net.eval()  # running BN statistics: nothing is written inside the trace
    g = np.asarray(jax.grad(loss)(logits))
    net.train()
    valid = np.asarray(space.choice_valid)
    multi = valid.sum(-1) > 1
    assert np.all(np.abs(g[multi]).max(-1) > 0), "a decision's logits get no gradient"


def test_bad_head_settings():
    with pytest.raises(ValueError, match="unknown head 'keypoints'"):
        make_space("mobile-curated", **{**SEG, "head": "keypoints"})
    with pytest.raises(ValueError, match=r"decoder_stage must name a stage before the last \(0..1\)"):
        make_space("mobile-curated", **{**SEG, "decoder_stage": 2})
    with pytest.raises(ValueError, match="upsamples by integer factors"):
        make_space("mobile-curated", **{**SEG, "input_size": 36})


@pytest.mark.parametrize("head", ["segmentation", "detection",
                                  pytest.param("classification", marks=pytest.mark.slow)])
def test_the_onnx_export_costs_what_the_layer_table_costs(head):
    """The derived network (head included) exported with jax2onnx and read back by
    `hwmodel.onnx_graph` has the table's FLOPs and parameters and the same analytic NPU latency."""
    from hwmodel import analytic
    from hwmodel.accelerators import ACCELERATORS
    from hwmodel.layers import total_flops
    from hwmodel.onnx_graph import layer_table
    from supernet.export import to_onnx

    space = make_space("mobile-curated", **{**SEG, "head": head})
    net = make_supernet(space, rngs=nnx.Rngs(0))
    a = np.asarray(space.sample(jax.random.key(3)))
    onnx_table, table = layer_table(to_onnx(net.derive(a), (1, 32, 32, 3))), space.layers(a)
    assert float(total_flops(onnx_table)) == float(total_flops(table)) > 0
    assert float(total_params(onnx_table)) == float(total_params(table))
    spec = ACCELERATORS["npu"]
    assert float(analytic.latency_ms(spec, onnx_table)) == pytest.approx(float(analytic.latency_ms(spec, table)), rel=1e-5)


def test_supernet_evaluator_scores_a_candidate_by_the_derived_subnets_miou(seg):
    """`SupernetEvaluator(task=Segmentation)` with running statistics: each candidate's value is the
    mIoU `evaluate_task` gives its derived subnet (the one-hot supernet is that subnet), computed
    with one compilation for every candidate."""
    from supernet.evaluators import make_evaluator
    from supernet.tasks import Segmentation
    from supernet.training import DeviceData, evaluate_task, make_mesh
    space, net, _, archs = seg
    mesh = make_mesh(1)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(12, 32, 32, 3)).astype(np.float32)
    y = (x[..., 0] > 0).astype(np.int32)
    data = DeviceData.put(x, y, mesh)
    task = Segmentation(2)
    ev = make_evaluator("supernet", space, net=net, data=data, batch_size=5, mesh=mesh, task=task)
    got = ev(np.stack(archs[:3]))["accuracy"]
    for a, g in zip(archs[:3], got):
        want = evaluate_task(net.derive(a), data, lambda k, v: v, task, batch_size=5, mesh=mesh)["miou"]
        assert g == pytest.approx(want, abs=1e-6), space.encode(a)
    assert ev.traces == 1 and len(set(np.round(got, 6))) > 1
