"""Tests of the FBNet supernet (supernet/nets/fbnet.py).

The default tests use a *narrow* FBNet space: the real 22 layers x 9 ops, but 16 channels in every
stage (from an 8-channel stem), a stride of 2 only in the first layer, a 16x16 input and a
16-channel head. `FBNetSpace` takes no channel argument, so the fixture patches the module's
`STAGE_CHANNELS` while the space is built (the supernet reads its layout from the layer table).
Layer 0 (8 -> 16, stride 2) has no residual and a 1x1-conv skip, the other 21 layers are residual.
Only two distinct layer shapes keep the run short: most of its time is XLA compiling (each new
shape in eager mode; the forward and the gradient under jit), not computing. The real layout is
checked by a `slow` test.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import supernet.spaces.fbnet as fbnet_space
from hwmodel.layers import OpKind, weight_elems
from supernet.blocks import SharedConv
from supernet.model import SUPERNETS
from supernet.nets.fbnet import IBN, FBNetSupernet, Skip, channel_shuffle
from supernet.spaces.fbnet import OPS

N_LAYERS = 22
SHIFTS = [np.asarray([(i + s) % 9 for i in range(N_LAYERS)], np.int32) for s in range(9)]  # each has every op
# compiling, not running, dominates on a CPU: XLA's cheapest backend optimisation level
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def _rel_err(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


@pytest.fixture(scope="module")
def env():
    """A narrow space and its supernet after one train-mode step; `apply` is the jitted eval forward."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fbnet_space, "STAGE_CHANNELS", (16,) * 7)
        space = fbnet_space.FBNetSpace(input_size=16, stem_channels=8, strides=(2, 1, 1, 1, 1, 1, 1),
                                       head_channels=16, num_classes=5, name="fbnet-narrow")
    net = FBNetSupernet(space, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (4, 16, 16, 3))
    arch0 = SHIFTS[0]
    sub0 = net.derive(arch0)  # derived *before* the train step: both then take the same step
    # One train-mode step (batch statistics; running statistics updated), eagerly: tracing the whole
    # train-mode network under jit is quadratic in its size on JAX 0.10 (each BatchNorm update
    # probes `tracer.sharding`, whose error message walks the trace; jax-ml/jax#40041).
    y_train = net(x, space.one_hot(arch0))
    z_train = sub0(x)
    net.eval()
    sub0.eval()
    graphdef, state = nnx.split(net)

    @functools.partial(jax.jit, compiler_options=FAST_COMPILE)
    @chex.assert_max_traces(n=1)  # shared by every test here: any retrace fails
    def apply(state, x, w):
        return nnx.merge(graphdef, state)(x, w)

    return dict(space=space, net=net, x=x, arch0=arch0, sub0=sub0, y_train=y_train, z_train=z_train,
                graphdef=graphdef, state=state, apply=apply)


def test_registered():
    assert SUPERNETS["fbnet"] is FBNetSupernet


def test_channel_shuffle_by_hand():
    x = jnp.arange(6.0).reshape(1, 1, 1, 6)  # group a = [0, 1, 2], group b = [3, 4, 5]
    np.testing.assert_array_equal(channel_shuffle(x, 2)[0, 0, 0], [0, 3, 1, 4, 2, 5])
    np.testing.assert_array_equal(channel_shuffle(x, 3)[0, 0, 0], [0, 2, 4, 1, 3, 5])


def test_train_mode_and_running_stats_match_derived(env):
    """One-hot train step: same outputs (batch statistics) and afterwards the same running statistics."""
    assert _rel_err(env["y_train"], env["z_train"]) < 1e-4  # small batch at 2x2: BN amplifies rounding
    y = env["apply"](env["state"], env["x"], env["space"].one_hot(env["arch0"]))
    assert _rel_err(y, env["sub0"](env["x"])) < 1e-5


def test_one_hot_equals_derived_in_eval_mode(env):
    space, net, x = env["space"], env["net"], env["x"]
    # layer 0 (no residual, conv skip) takes op 1 (k3_e1_g2) and 5 (k5_e1_g2) in the shifted ones
    for arch in [SHIFTS[1], SHIFTS[5], np.asarray(space.sample(jax.random.key(7)))]:
        y = env["apply"](env["state"], x, space.one_hot(arch))
        z = net.derive(arch)(x)
        assert z.shape == (4, 5)
        assert _rel_err(y, z) < 1e-5, space.encode(arch)


def _conv_kernel_elems(module: nnx.Module) -> int:
    return sum(int(m.kernel[...].size) for _, m in nnx.iter_graph(module) if isinstance(m, SharedConv))


def test_derived_weights_match_layer_table(env):
    """Derived conv kernels + classifier == the table's parameters minus one folded bias per conv."""
    space, net = env["space"], env["net"]
    for arch in [SHIFTS[0], np.full(N_LAYERS, 8, np.int32)]:
        t = space.layers(arch)
        on = t.weight > 0
        convs = on & ((t.op == OpKind.CONV) | (t.op == OpKind.DWCONV))
        expected = float(jnp.sum(jnp.where(on, weight_elems(t), 0.0)) - jnp.sum(jnp.where(convs, t.c_out, 0.0)))
        sub = env["sub0"] if arch is SHIFTS[0] else net.derive(arch)
        fc = sub.head.fc
        got = _conv_kernel_elems(sub.backbone) + fc.kernel[...].size + fc.bias[...].size
        assert got == expected, space.encode(arch)


def test_derived_layers_are_plain_ops(env):
    """g2 ops derive to real grouped convs (half the 1x1 weights); skip to identity or a 1x1 conv."""
    net, layers = env["net"], env["sub0"].backbone.layers
    for d, op in enumerate(env["arch0"]):
        layer = layers[d]
        if OPS[op] == "skip":
            assert isinstance(layer, Skip)
            assert (layer.conv is None) == net.net.layers[d].residual
            continue
        assert isinstance(layer, IBN)
        g = 2 if OPS[op].endswith("g2") else 1
        c_in = net.net.layers[d].c_in
        assert layer.groups == layer.expand.groups == layer.project.groups == g
        assert layer.expand.kernel[...].shape == (1, 1, c_in // g, int(OPS[op][4]) * c_in)
        assert layer.dw.kernel[...].shape[:2] == (int(OPS[op][1]),) * 2


def test_no_retrace_across_architectures(env):
    space, x, apply, state = env["space"], env["x"], env["apply"], env["state"]
    outs = [apply(state, x, space.one_hot(a)) for a in SHIFTS[:3]]
    outs.append(apply(state, x, space.uniform_probs()))
    assert all(o.shape == (4, 5) for o in outs)
    assert not np.allclose(outs[0], outs[1])


def test_arch_gradient_finite_and_nonzero(env):
    space, x, graphdef, state = env["space"], env["x"], env["graphdef"], env["state"]
    labels = jnp.arange(4) % 5

    def loss(w):
        logits = nnx.merge(graphdef, state)(x, w)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))

    g = jax.jit(jax.grad(loss), compiler_options=FAST_COMPILE)(space.uniform_probs())
    assert g.shape == (N_LAYERS, len(OPS))
    assert bool(jnp.all(jnp.isfinite(g)))
    assert bool(jnp.all(jnp.abs(g).sum(-1) > 0))  # every one of the 22 decisions gets a signal


@pytest.mark.slow
def test_full_cifar100_space_one_hot_equals_derived():
    """The real layout (16..352 channels, 1504 head, 32x32): eval-mode equivalence and weights."""
    space = fbnet_space.FBNetSpace.cifar100()
    net = FBNetSupernet(space, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    net(x, space.uniform_probs())  # train-mode step: non-trivial running statistics
    net.eval()
    arch = SHIFTS[3]
    sub = net.derive(arch)
    assert _rel_err(nnx.jit(lambda n, x, w: n(x, w))(net, x, space.one_hot(arch)), sub(x)) < 1e-5
    t = space.layers(arch)
    on = t.weight > 0
    convs = on & ((t.op == OpKind.CONV) | (t.op == OpKind.DWCONV))
    expected = float(jnp.sum(jnp.where(on, weight_elems(t), 0.0)) - jnp.sum(jnp.where(convs, t.c_out, 0.0)))
    fc = sub.head.fc
    assert _conv_kernel_elems(sub.backbone) + fc.kernel[...].size + fc.bias[...].size == expected
