"""Tests of hwmodel.memory: parameter bytes and peak activation bytes from tensor liveness."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hwmodel import memory
from hwmodel.accelerators import ACCELERATORS
from hwmodel.layers import ALIAS_OPS, LayerTable, OpKind, out_elems, stack

# Jitted entry points (eager dispatch is slow on CPU). bytes_per_element and temperature are static.
_peak_exact = jax.jit(lambda t: memory.peak_activation_bytes(t, 1))
_peak_smooth = jax.jit(lambda t, tau: memory.peak_activation_bytes(t, 1, tau))  # tau traced
last_use = jax.jit(memory.tensor_last_use)
live_elems = jax.jit(memory.live_elems)


def peak(table, bytes_per_element, temperature=None):
    # One compile per table shape: scale outside (the scale is exact for the integer sizes here).
    value = _peak_exact(table) if temperature is None else _peak_smooth(table, temperature)
    return value * bytes_per_element


def _residual_rows():
    # INPUT 3x8x8 -> conv 16 -> [1x1 expand 32, dw 3x3, 1x1 project 16, ADD block input] -> GAP -> LINEAR
    return [
        dict(op=OpKind.INPUT, c_out=3, h=8, w=8),                                          # 0: 192
        dict(op=OpKind.CONV, src=0, c_in=3, c_out=16, kernel=3, h=8, w=8),                 # 1: 1024
        dict(op=OpKind.CONV, src=1, c_in=16, c_out=32, h=8, w=8),                          # 2: 2048
        dict(op=OpKind.DWCONV, src=2, c_in=32, c_out=32, groups=32, kernel=3, h=8, w=8),   # 3: 2048
        dict(op=OpKind.CONV, src=3, c_in=32, c_out=16, h=8, w=8),                          # 4: 1024
        dict(op=OpKind.ADD, src=4, res=1, c_in=16, c_out=16, h=8, w=8),                    # 5: 1024
        dict(op=OpKind.GAP, src=5, c_in=16, c_out=16, h=8, w=8),                           # 6: 16
        dict(op=OpKind.LINEAR, src=6, c_in=16, c_out=10),                                  # 7: 10
    ]


def _residual_net() -> LayerTable:
    return LayerTable.from_rows(_residual_rows())


def _with_alternative(ibn_weight: float) -> LayerTable:
    """The residual net with a fused alternative (3x3 16->32, 1x1 32->16) merged by a MIX."""
    rows = _residual_rows()[:5]
    for r in rows[2:5]:
        r["weight"] = ibn_weight
    alt = 1.0 - ibn_weight
    rows += [
        dict(op=OpKind.CONV, src=1, c_in=16, c_out=32, kernel=3, h=8, w=8, weight=alt),    # 5
        dict(op=OpKind.CONV, src=5, c_in=32, c_out=16, h=8, w=8, weight=alt),              # 6
        dict(op=OpKind.MIX, src=4, res=6, c_in=16, c_out=16, h=8, w=8),                    # 7
        dict(op=OpKind.ADD, src=7, res=1, c_in=16, c_out=16, h=8, w=8),                    # 8
        dict(op=OpKind.GAP, src=8, c_in=16, c_out=16, h=8, w=8),                           # 9
        dict(op=OpKind.LINEAR, src=9, c_in=16, c_out=10),                                  # 10
    ]
    return LayerTable.from_rows(rows)


def _reference_live(table: LayerTable) -> np.ndarray:
    """Sequential reference of the arena semantics (the reverse-order definition)."""
    t = table.to_numpy()
    n = t.num_rows
    alias = np.isin(t.op, [int(k) for k in ALIAS_OPS])
    lu = np.arange(n)
    for j in range(n - 1, 0, -1):
        if t.weight[j] <= 0:
            continue
        cand = lu[j] if alias[j] else j
        for i in (t.src[j], t.res[j]):
            if i >= 0:
                lu[i] = max(lu[i], cand)
    s = t.weight * np.asarray(out_elems(table))
    return np.array([sum(s[i] for i in range(n) if i <= r <= lu[i]) for r in range(n)])


def test_peak_on_residual_net_by_hand():
    t = _residual_net()
    # Arena: the block input (row 1, 1024 elements) stays alive until the ADD (row 5).
    # live(0) = 192                 input image
    # live(1) = 192 + 1024          conv reads the input, writes 16x8x8
    # live(2) = 1024 + 2048         expand (row 1 kept for the residual)
    # live(3) = 1024 + 2048 + 2048  depthwise: its input and output, plus the residual
    # live(4) = 1024 + 2048 + 1024
    # live(5) = 1024 + 1024 + 1024  ADD reads rows 4 and 1, writes row 5
    # live(6) = 1024 + 16, live(7) = 16 + 10
    expect = [192, 1216, 3072, 5120, 4096, 3072, 1040, 26]
    np.testing.assert_array_equal(live_elems(t), expect)
    np.testing.assert_array_equal(last_use(t), [1, 5, 3, 4, 5, 6, 7, 7])
    assert float(peak(t, 1)) == 5120
    assert float(peak(t, 4)) == 4 * 5120
    assert float(memory.peak_activation_bytes(t, ACCELERATORS["mobile-cpu"])) == 4 * 5120
    np.testing.assert_array_equal(memory.activation_bytes_by_row(t, 2.0), 2 * np.asarray(expect))
    np.testing.assert_array_equal(live_elems(t), _reference_live(t))


def test_inactive_alternative_does_not_change_peak():
    t_ibn = _with_alternative(1.0)  # fused rows present in the table with weight 0
    assert float(peak(t_ibn, 1)) == 5120  # same as the plain residual net
    np.testing.assert_array_equal(live_elems(t_ibn), _reference_live(t_ibn))
    # The other choice: the fused block alone (INPUT, conv, 3x3 16->32, 1x1 32->16, ADD, GAP, LINEAR)
    t_fused = _with_alternative(0.0)
    fused_alone = LayerTable.from_rows([
        dict(op=OpKind.INPUT, c_out=3, h=8, w=8),
        dict(op=OpKind.CONV, src=0, c_in=3, c_out=16, kernel=3, h=8, w=8),
        dict(op=OpKind.CONV, src=1, c_in=16, c_out=32, kernel=3, h=8, w=8),
        dict(op=OpKind.CONV, src=2, c_in=32, c_out=16, h=8, w=8),
        dict(op=OpKind.ADD, src=3, res=1, c_in=16, c_out=16, h=8, w=8),
        dict(op=OpKind.GAP, src=4, c_in=16, c_out=16, h=8, w=8),
        dict(op=OpKind.LINEAR, src=5, c_in=16, c_out=10),
    ])
    assert float(peak(t_fused, 1)) == float(peak(fused_alone, 1)) == 1024 + 2048 + 1024
    # The weight-0 fused conv (row 5) reads row 1 after the IBN; it must not extend row 1 (the ADD
    # already does), nor may padding rows (src=0, weight 0) keep the input image alive.
    padded = stack([_residual_net(), t_ibn])[0]
    assert padded.num_rows == t_ibn.num_rows
    assert float(peak(padded, 1)) == 5120
    assert int(last_use(padded)[0]) == 1


def test_identity_alias_extends_lifetime():
    # conv(16) -> IDENTITY skip; 1x1 expand 64; 1x1 project 16; ADD(project, skip).
    t = LayerTable.from_rows([
        dict(op=OpKind.INPUT, c_out=3, h=8, w=8),                       # 0: 192
        dict(op=OpKind.CONV, src=0, c_in=3, c_out=16, kernel=3, h=8, w=8),  # 1: 1024
        dict(op=OpKind.IDENTITY, src=1, c_in=16, c_out=16, h=8, w=8),   # 2: alias of 1
        dict(op=OpKind.CONV, src=1, c_in=16, c_out=64, h=8, w=8),       # 3: 4096
        dict(op=OpKind.CONV, src=3, c_in=64, c_out=16, h=8, w=8),       # 4: 1024
        dict(op=OpKind.ADD, src=4, res=2, c_in=16, c_out=16, h=8, w=8),  # 5: 1024
    ])
    # Row 1's last direct reader is row 3, but the IDENTITY hands it to the ADD at row 5, so at
    # row 4 the arena holds rows 1, 3 and 4: 1024 + 4096 + 1024 (it would be 5120 without aliasing).
    np.testing.assert_array_equal(last_use(t), [1, 5, 5, 4, 5, 5])
    assert float(peak(t, 1)) == 6144
    # The same through a MIX of IDENTITY and an absent alternative.
    rows = [dict(op=OpKind.INPUT, c_out=3, h=8, w=8),
            dict(op=OpKind.CONV, src=0, c_in=3, c_out=16, kernel=3, h=8, w=8),
            dict(op=OpKind.IDENTITY, src=1, c_in=16, c_out=16, h=8, w=8),
            dict(op=OpKind.CONV, src=1, c_in=16, c_out=16, h=8, w=8, weight=0.0),
            dict(op=OpKind.MIX, src=2, res=3, c_in=16, c_out=16, h=8, w=8),
            dict(op=OpKind.CONV, src=1, c_in=16, c_out=64, h=8, w=8),
            dict(op=OpKind.CONV, src=5, c_in=64, c_out=16, h=8, w=8),
            dict(op=OpKind.ADD, src=6, res=4, c_in=16, c_out=16, h=8, w=8)]
    t2 = LayerTable.from_rows(rows)
    assert int(last_use(t2)[1]) == 7
    assert float(peak(t2, 1)) == 6144
    np.testing.assert_array_equal(live_elems(t2), _reference_live(t2))


def test_param_bytes_by_hand():
    t = _residual_net()
    # conv 3->16 k3: 9*3*16 + 16 = 448; 1x1 16->32: 512 + 32 = 544; dw 3x3 x32: 288 + 32 = 320;
    # 1x1 32->16: 512 + 16 = 528; linear 16->10: 160 + 10 = 170; total 2010.
    assert float(memory.param_bytes(1, t)) == 2010
    assert float(memory.param_bytes(ACCELERATORS["mobile-cpu"], t)) == 4 * 2010
    assert float(memory.param_bytes(ACCELERATORS["npu"], _with_alternative(1.0))) == 2010
    half = _with_alternative(0.5)  # expectation over the two alternatives
    fused = 9 * 16 * 32 + 32 + 32 * 16 + 16
    assert float(memory.param_bytes(1, half)) == pytest.approx(448 + 170 + 0.5 * (544 + 320 + 528) + 0.5 * fused)


def test_jit_and_vmap_over_stacked_tables():
    tables = [_residual_net(), _with_alternative(1.0), _with_alternative(0.0)]
    batch = stack(tables)
    single = np.array([float(peak(t, 1)) for t in tables])
    np.testing.assert_array_equal(peak(batch, 1), single)
    vmapped = jax.jit(jax.vmap(functools.partial(memory.peak_activation_bytes, bytes_per_element=1)))
    np.testing.assert_array_equal(vmapped(batch), single)
    both = jax.tree.map(lambda a: jnp.stack([a, a]), batch)  # two leading batch dims [2, 3, L]
    assert peak(both, 1).shape == (2, 3)
    np.testing.assert_array_equal(memory.param_bytes(1, batch), [float(memory.param_bytes(1, t)) for t in tables])


def test_smooth_peak_gradient_is_finite_and_tends_to_exact():
    t = _with_alternative(0.5)
    exact = float(peak(t, 1))
    for tau in (0.1, 0.01, 1e-4):
        smooth = float(peak(t, 1, tau))
        assert exact <= smooth <= exact * (1 + tau * np.log(t.num_rows)) + 1e-3
    g = jax.jit(jax.grad(lambda w: _peak_smooth(t.replace(weight=w), 0.1)))(t.weight)
    assert bool(jnp.all(jnp.isfinite(g)))
    assert float(jnp.max(jnp.abs(g))) > 0
    # Exact peak also differentiates (one-hot over the argmax row); absent rows get finite gradients.
    g0 = jax.jit(jax.grad(lambda w: memory.peak_activation_bytes(_with_alternative(1.0).replace(weight=w), 1)))(
        _with_alternative(1.0).weight)
    assert bool(jnp.all(jnp.isfinite(g0)))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        memory.peak_activation_bytes(t, 1, 0.0)


def test_liveness_matches_sequential_reference_on_random_graphs():
    rng = np.random.default_rng(0)
    n = 24
    live = live_elems
    kinds = [OpKind.CONV, OpKind.DWCONV, OpKind.ADD, OpKind.MIX, OpKind.IDENTITY, OpKind.NONE]
    for _ in range(5):
        rows = [dict(op=OpKind.INPUT, c_out=4, h=4, w=4)]
        for t in range(1, n):
            op = kinds[rng.integers(len(kinds))]
            two = op in (OpKind.ADD, OpKind.MIX)
            rows.append(dict(op=op, src=int(rng.integers(t)), res=int(rng.integers(t)) if two else -1,
                             c_in=4, c_out=float(rng.integers(1, 9)), h=4, w=4,
                             weight=float(rng.choice([0.0, 0.5, 1.0]))))
        table = LayerTable.from_rows(rows)
        np.testing.assert_allclose(live(table), _reference_live(table), rtol=1e-6)
