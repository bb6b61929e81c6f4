"""Tests of the curated mobile space (supernet/spaces/mobile.py)."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hwmodel.layers import FIELDS_FLOAT, FIELDS_INT, OpKind, is_op, total_flops, total_params
from supernet.spaces import make_space
from supernet.spaces.mobile import MobileSpace

TOY = dict(blocks_per_stage=(1, 2), base_widths=(16, 24), stage_strides=(1, 2), head_width=64,
           input_size=8)


def toy(grid: str = "raw", **kw) -> MobileSpace:
    return MobileSpace(grid=grid, **(TOY | kw))


def random_archs(space: MobileSpace, n: int, seed: int = 0) -> np.ndarray:
    """Uniform architectures drawn with NumPy (cheaper on CPU than compiling `space.sample`)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, space.num_choices, size=(n, space.num_decisions)).astype(np.int32)


def assert_tables_equal(a, b, atol=1e-4):
    for f in FIELDS_INT:
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)
    for f in FIELDS_FLOAT:
        np.testing.assert_allclose(getattr(a, f), getattr(b, f), rtol=1e-6, atol=atol, err_msg=f)


def test_unknown_grid_lists_both():
    with pytest.raises(ValueError, match="curated, raw"):
        MobileSpace(grid="rocky")


def test_registry_passes_kwargs():
    space = make_space("mobile-curated", parallelism=8, **TOY)
    assert space.grid == "curated" and space.parallelism == 8 and space.name == "mobile-curated"
    assert make_space("mobile-raw", **TOY).grid == "raw"


@pytest.mark.parametrize("p", [8, 16, 32])
def test_curated_grid_multiples_of_p_and_a_handful(p):
    space = MobileSpace(parallelism=p)
    for g, w in zip(space.width_grids, space.width_tables):
        assert 1 <= len(g) <= 5 and np.all(g % p == 0) and np.all(g >= p)
        assert np.all(w % p == 0) and np.all(w >= p)  # scaled by the multiplier and re-aligned
    assert space.stem_width % p == 0 and space.head_width % p == 0
    assert space.width_grids[1].tolist() == ([16, 32] if p == 16 else space.width_grids[1].tolist())


def test_raw_grid_is_every_integer_of_the_range():
    space = MobileSpace(grid="raw")
    for g, b in zip(space.width_grids, space.base_widths):
        assert g.tolist() == list(range(round(0.5 * b), round(1.5 * b) + 1))
    assert space.width_tables[0][0, :3].tolist() == [4, 5, 5]  # 8, 9, 10 x 0.5 rounded, ties up


def test_decision_order_and_no_skip_on_first_blocks():
    space = MobileSpace()
    names = [d.name for d in space.decisions]
    assert names[:3] == ["b0_type", "b0_kernel", "b0_expansion"]
    assert names[51:] == [f"s{s}_width" for s in range(7)] + ["width_multiplier"]
    firsts = np.cumsum((0,) + space.blocks_per_stage[:-1])
    for b in range(17):
        types = space.decisions[space.decision_index(f"b{b}_type")].choices
        assert types == (("ibn", "fused") if b in firsts else ("ibn", "fused", "skip"))


@pytest.mark.parametrize("grid", ["curated", "raw"])
def test_expected_layers_of_one_hot_equals_layers(grid):
    space = MobileSpace(grid=grid)
    archs = jnp.concatenate([random_archs(space, 6), space.baseline_arch()[None]])
    expected = jax.jit(jax.vmap(lambda a: space.expected_layers(space.one_hot(a))))(archs)
    discrete = jax.jit(jax.vmap(space.layers))(archs)
    assert_tables_equal(expected, discrete)


def test_discrete_table_has_exactly_one_alternative_per_block():
    space = toy(blocks_per_stage=(1, 3))
    a = space.decode("mult=1.0|w=16-24|fused:k5:e1,ibn:k3:e6,skip:k3:e6,ibn:k5:e1")
    t = jax.jit(space.layers)(a)
    w = dict(zip(space.row_names, np.asarray(t.weight).tolist()))
    assert w["b0.fused.conv"] == 1 and w["b0.ibn.dw"] == 0 and "b0.skip" not in w
    assert w["b1.ibn.dw"] == 1 and "b1.ibn.residual" not in w  # first block: no residual
    assert w["b2.skip"] == 1 and w["b2.ibn.dw"] == 0 and w["b2.fused.conv"] == 0
    # e == 1: MobileNetV2 has no expansion conv; the depthwise conv reads the block input.
    assert w["b3.ibn.expand"] == 0 and w["b3.ibn.no_expand"] == 1 and w["b3.ibn.residual"] == 1
    row = space.row_names.index("b3.ibn.dw")
    assert float(t.kernel[row]) == 5 and float(t.c_in[row]) == 24 and float(t.groups[row]) == 24
    row = space.row_names.index("b0.fused.conv")  # fused with e == 1 keeps a c_in -> c_in KxK conv
    assert (float(t.c_in[row]), float(t.c_out[row]), float(t.kernel[row])) == (32, 32, 5)


@pytest.mark.parametrize("grid", ["curated", "raw"])
def test_string_round_trip(grid):
    space = MobileSpace(grid=grid)
    for a in random_archs(space, 20, seed=1):
        text = space.encode(a)
        assert space.decode(text).tolist() == np.asarray(a).tolist()
    assert space.encode(space.baseline_arch()).startswith("mult=1.0|w=")


@pytest.mark.parametrize("text,match", [
    ("garbage", "must look like"),
    ("mult=2.0|w=16-24|ibn:k3:e1,ibn:k3:e6,ibn:k3:e6", "no choice '2.0'"),
    ("mult=x|w=16-24|ibn:k3:e1,ibn:k3:e6,ibn:k3:e6", "not a valid float"),
    ("mult=1.0|w=16|ibn:k3:e1,ibn:k3:e6,ibn:k3:e6", "expected 2 stage widths"),
    ("mult=1.0|w=16-99|ibn:k3:e1,ibn:k3:e6,ibn:k3:e6", "s1_width"),
    ("mult=1.0|w=16-24|ibn:k3:e1,ibn:k3:e6", "expected 3 blocks"),
    ("mult=1.0|w=16-24|ibn:k3:e1,ibn:k3,ibn:k3:e6", "block 1: expected 'type:kK:eE'"),
    ("mult=1.0|w=16-24|ibn:k3:e1,conv:k3:e6,ibn:k3:e6", "b1_type"),
    ("mult=1.0|w=16-24|ibn:k3:e1,ibn:k7:e6,ibn:k3:e6", "b1_kernel"),
    ("mult=1.0|w=16-24|ibn:k3:e1,ibn:k3:e6,ibn:k3:e4", "b2_expansion"),
    ("mult=1.0|w=16-24|skip:k3:e1,ibn:k3:e6,ibn:k3:e6", "first block of its stage"),
])
def test_malformed_strings_raise(text, match):
    with pytest.raises(ValueError, match=match):
        toy().decode(text)


def test_baseline_toy_params_by_hand():
    space = toy()
    a = space.baseline_arch()
    assert space.stage_widths(a).tolist() == [16, 24]
    conv = lambda k, ci, co: k * k * ci * co + co  # noqa: E731  (BN folded into a bias)
    dw = lambda k, c: k * k * c + c  # noqa: E731
    expected = (conv(3, 3, 32)  # stem
                + dw(3, 32) + conv(1, 32, 16)  # block 0, e=1: no expansion conv
                + conv(1, 16, 96) + dw(3, 96) + conv(1, 96, 24)  # block 1, e=6, stride 2
                + conv(1, 24, 144) + dw(3, 144) + conv(1, 144, 24)  # block 2, e=6, residual
                + conv(1, 24, 64) + 64 * 10 + 10)  # head conv, classifier
    assert expected == 17434
    assert float(jax.jit(lambda a: total_params(space.layers(a)))(a)) == expected


def _bn_convention_params(space: MobileSpace) -> float:
    """Parameters counted as torchvision does: BatchNorm (2 per channel) instead of a folded bias."""
    t = jax.jit(space.layers)(space.baseline_arch())
    conv_out = jnp.where(is_op(t, OpKind.CONV, OpKind.DWCONV), t.c_out * t.weight, 0.0).sum()
    return float(total_params(t) + conv_out)


def test_baseline_raw_is_mobilenetv2():
    space = MobileSpace(grid="raw")
    assert space.stage_widths(space.baseline_arch()).tolist() == [16, 24, 32, 64, 96, 160, 320]
    # torchvision mobilenet_v2: 3,504,872 parameters; with a 10-class head 3,504,872 - 1281*990.
    assert _bn_convention_params(space) == 3_504_872 - 1281 * 990
    imagenet = MobileSpace(grid="raw", input_size=224, stem_stride=2, num_classes=1000,
                           stage_strides=(1, 2, 2, 2, 1, 2, 1))
    assert _bn_convention_params(imagenet) == 3_504_872
    macs = float(jax.jit(lambda a: total_flops(imagenet.layers(a)))(imagenet.baseline_arch())) / 2
    assert 299e6 < macs < 302e6  # "300M multiply-adds" (Sandler et al. 2018, Table 4)


def test_curated_baseline_aligns_to_p():
    space = MobileSpace(parallelism=16)
    assert space.stage_widths(space.baseline_arch()).tolist() == [16, 32, 32, 64, 96, 160, 320]


def test_layers_jits_once_and_vmaps():
    space = toy()
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def build(a):
        return space.layers(a)

    archs = jnp.asarray(random_archs(space, 4, seed=2))
    singles = [build(a) for a in archs]
    batched = jax.jit(jax.vmap(space.layers))(archs)
    for i, t in enumerate(singles):
        assert_tables_equal(batched[i], t)
    assert_tables_equal(jax.jit(space.layers)(archs), batched)  # leading batch dims work too


@pytest.mark.parametrize("grid", ["curated", "raw"])
def test_expected_flops_gradient_is_finite(grid):
    space = toy(grid)
    probs = space.uniform_probs()
    g = jax.jit(jax.grad(lambda p: total_flops(space.expected_layers(p))))(probs)
    assert np.all(np.isfinite(g)) and np.any(np.asarray(g) != 0)


@pytest.mark.parametrize("grid,s,choices,expected", [
    ("raw", 0, {16: 0.25, 24: 0.75}, 18.15),  # W = [[8, 12], [12, 18], [16, 24]]
    ("curated", 1, {16: 0.25, 32: 0.75}, 25.6),  # W = [[16, 16], [16, 32], [16, 32]]
])
def test_expected_width_is_bilinear(grid, s, choices, expected):
    space = toy(grid)
    p = np.array(space.uniform_probs())
    p[space.mult_id, :3] = [0.2, 0.3, 0.5]  # multipliers 0.5, 0.75, 1.0
    d = space.width_ids[s]
    p[d] = 0.0
    for width, prob in choices.items():
        p[d, space.width_grids[s].tolist().index(width)] = prob
    width = jax.jit(space.expected_scalars)(p)["width"][s]
    np.testing.assert_allclose(width, expected, rtol=1e-6)
    t = jax.jit(space.expected_layers)(p)
    row = space.row_names.index(f"b{sum(space.blocks_per_stage[:s])}.ibn.project")
    np.testing.assert_allclose(t.c_out[row], expected, rtol=1e-6)
