"""Tests of the mobile supernet (supernet/nets/mobile.py) on tiny spaces (curated and raw grids)."""

from __future__ import annotations

import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hwmodel.layers import OpKind, is_op, total_params, weight_elems
from supernet import make_space, make_supernet
from supernet.blocks import BatchNorm, SharedConv
from supernet.nets.mobile import MobileSupernet
from supernet.spaces.mobile import MobileSpace

TINY = dict(blocks_per_stage=(1, 2), base_widths=(8, 16), stage_strides=(1, 2), stem_width=8,
            head_width=32, parallelism=4, input_size=16)
# Valid in both grids; together they cover skip, e == 1 (IBN with and without a residual, fused),
# both kernels, all three multipliers, IBN and fused on first and non-first blocks.
ARCH_STRINGS = ("mult=0.5|w=4-8|ibn:k3:e1,ibn:k5:e3,ibn:k3:e1",
                "mult=1.0|w=12-24|fused:k5:e6,fused:k3:e1,ibn:k5:e3",
                "mult=0.75|w=8-16|ibn:k5:e6,fused:k5:e3,skip:k5:e1",
                "mult=1.0|w=8-12|fused:k3:e1,ibn:k3:e6,fused:k3:e6")


def archs_of(space: MobileSpace) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    random = rng.integers(0, space.num_choices, size=(1, space.num_decisions)).astype(np.int32)
    return [space.decode(s) for s in ARCH_STRINGS] + list(random)


def functional(net: nnx.Module, fn):
    """`fn(module, x, arch_weights)` as a pure function of `(state, x, arch_weights)` (split/merge)."""
    graphdef, state = nnx.split(net)
    return lambda st, x, aw: fn(nnx.merge(graphdef, st), x, aw), state


def forward(m: MobileSupernet, x: jax.Array, aw: jax.Array):
    feats = m.backbone(x, aw)
    return m.head(feats), feats


@pytest.fixture(scope="module", params=["curated", "raw"])
def setup(request):
    """A tiny supernet with non-trivial BN statistics (one train-mode step), then in eval mode."""
    space = MobileSpace(grid=request.param, **TINY)
    # Eager init compiles one random-normal program per weight shape; threefry's take ~0.3 s each
    # on a CPU, the "rbg" generator's ~3x less (test speed only; the values do not matter here).
    with jax.default_prng_impl("rbg"):
        net = make_supernet(space, rngs=nnx.Rngs(0))
    assert isinstance(net, MobileSupernet)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 16, 16, 3)), jnp.float32)  # no compile
    net.train()
    nnx.jit(lambda m, x, aw: m(x, aw))(net, x, space.uniform_probs())  # updates the BN statistics
    net.eval()
    fn, state = functional(net, forward)
    # One compiled forward for every architecture of this space (tests 1 and 3); chex counts traces
    # per source footprint, which both grids share, hence the reset.
    chex.clear_trace_counter()
    apply = jax.jit(chex.assert_max_traces(fn, n=1))
    subnets = {}  # (subnet, logits, features) once per architecture, shared by the tests

    def derive(arch: np.ndarray):
        key = space.encode(arch)
        if key not in subnets:  # one compile for deriving and running the subnet
            subnets[key] = nnx.jit(lambda n, x: (s := n.derive(arch), s(x), s.backbone(x)))(net, x)
        return subnets[key]

    return space, net, x, apply, state, derive


def test_one_hot_supernet_equals_derived_subnet(setup):
    space, net, x, apply, state, derive = setup
    for arch in archs_of(space):
        logits, feats = apply(state, x, space.one_hot(arch))
        sub, sub_logits, sub_feats = derive(arch)
        assert sub.arch == space.encode(arch)
        widths = [int(w) for w in space.stage_widths(arch)] + [space.head_width]
        assert [f.shape[-1] for f in sub_feats] == widths, space.encode(arch)
        for f, g, w in zip(feats, sub_feats, widths):
            assert f.shape[:3] == g.shape[:3]
            np.testing.assert_allclose(f[..., :w], g, atol=1e-5, rtol=1e-5, err_msg=space.encode(arch))
            assert not np.any(f[..., w:]), "masked channels must be exactly zero"
        np.testing.assert_allclose(logits, sub_logits, atol=1e-5, rtol=1e-5)


def test_derived_weights_match_the_layer_table(setup):
    """Conv kernels + one BN per conv (the folded bias) + classifier == the cost model's params."""
    space, _, _, _, _, derive = setup

    @jax.jit  # one compile instead of one per eager op
    def table_counts(arch):
        t = space.layers(arch)
        return is_op(t, OpKind.CONV, OpKind.DWCONV) & (t.weight > 0), t.c_out, weight_elems(t), total_params(t)

    for arch in archs_of(space):
        sub = derive(arch)[0]
        convs = [m for _, m in nnx.iter_graph(sub.backbone) if isinstance(m, SharedConv)]
        bns = [m for _, m in nnx.iter_graph(sub.backbone) if isinstance(m, BatchNorm)]
        rows, c_out, elems, params = map(np.asarray, table_counts(arch))
        c_out, elems = c_out[rows], elems[rows]
        msg = space.encode(arch)
        assert len(convs) == len(bns) == rows.sum(), msg
        assert sum(c.kernel.size for c in convs) == int(round((elems - c_out).sum())), msg
        assert sum(b.scale.size for b in bns) == int(round(c_out.sum())), msg
        fc = sub.head.fc
        n = sum(c.kernel.size for c in convs) + sum(b.scale.size for b in bns)
        n += fc.kernel.size + fc.bias.size
        assert n == int(round(float(params))), msg


def test_changing_the_architecture_never_retraces(setup):
    """The fixture's `apply` is `chex.assert_max_traces(n=1)`: one trace for all these calls."""
    space, _, x, apply, state, _ = setup
    for arch in archs_of(space)[:3]:
        apply(state, x, space.one_hot(arch))
    probs = np.random.default_rng(2).uniform(size=space.choice_valid.shape) * space.choice_valid
    out, _ = apply(state, x, jnp.asarray(probs / probs.sum(-1, keepdims=True), jnp.float32))
    assert out.shape == (x.shape[0], space.num_classes) and bool(jnp.all(jnp.isfinite(out)))


def test_arch_gradient_is_finite_and_nonzero_for_every_decision(setup):
    space, net, x, _, state, _ = setup
    fn, _ = functional(net, lambda m, x, aw: m(x, aw))
    r = np.random.default_rng(3).normal(size=(x.shape[0], space.num_classes)).astype(np.float32)
    g = np.asarray(jax.jit(jax.grad(lambda aw: jnp.sum(fn(state, x, aw) * r)))(space.uniform_probs()))
    assert np.all(np.isfinite(g))
    for d, dec in enumerate(space.decisions):
        row = g[d, : dec.num_choices]
        # the choices change the output differently, so the softmax (logit) gradient is non-zero too
        assert np.abs(row).max() > 0 and np.ptp(row) > 0, dec.name
        assert not np.any(g[d, dec.num_choices:]), f"{dec.name}: padding must get no gradient"


def test_default_space_traces_with_the_right_shapes():
    """The full default space builds and traces (abstractly: no compile, fast)."""
    space = make_space("mobile-curated")
    net = nnx.eval_shape(lambda: make_supernet(space, rngs=nnx.Rngs(0)))
    # eval mode: tracing train-mode BN updates is quadratic in this flax/jax (Variable.set_value
    # probes `tracer.sharding`, whose error message walks the whole trace; jax-ml/jax#40041)
    net.eval()
    fn, state = functional(net, lambda m, x, aw: (m(x, aw), m.backbone(x, aw)))
    logits, feats = jax.eval_shape(fn, state, jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32),
                                   space.uniform_probs())
    assert logits.shape == (2, space.num_classes)
    assert [f.shape[1] for f in feats] == [32, 32, 16, 8, 8, 4, 4, 4]
    assert [f.shape[-1] for f in feats] == [int(t.max()) for t in space.width_tables] + [space.head_width]


@pytest.mark.slow
def test_default_space_forward_pass():
    """The full default space on a real batch (2-core CPU: ~30-45 s to build, because eager init
    compiles one threefry program per weight shape, and ~15-25 s to trace, compile and run)."""
    space = make_space("mobile-curated")
    t0 = time.perf_counter()
    net = make_supernet(space, rngs=nnx.Rngs(0))
    t1 = time.perf_counter()
    out = jax.jit(functional(net, lambda m, x, aw: m(x, aw))[0])(
        nnx.state(net), jnp.ones((2, 32, 32, 3)), space.uniform_probs())
    out.block_until_ready()
    print(f"build {t1 - t0:.1f} s, compile + forward {time.perf_counter() - t1:.1f} s")
    assert out.shape == (2, space.num_classes) and bool(jnp.all(jnp.isfinite(out)))
