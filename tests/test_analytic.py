"""Tests of hwmodel.accelerators and hwmodel.analytic (exact and smooth latency)."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hwmodel import analytic
from hwmodel.accelerators import ACCELERATORS, AcceleratorSpec, make_npu
from hwmodel.layers import LayerTable, OpKind, stack, total_flops

NPU = ACCELERATORS["npu"]

# Jitted entry points (eager op-by-op dispatch is slow on CPU); the spec and temperature are static.
latency = jax.jit(analytic.latency, static_argnums=0)
layer_latency = jax.jit(analytic.layer_latency, static_argnums=0)
breakdown = jax.jit(analytic.breakdown, static_argnums=0)
latency_smooth = jax.jit(analytic.latency_smooth, static_argnums=0)  # temperature traced: no retrace
layer_latency_smooth = jax.jit(analytic.layer_latency_smooth, static_argnums=0)


def _conv_net(c_out: float, c_in: float = 32, hw: int = 56) -> LayerTable:
    return LayerTable.from_rows([
        dict(op=OpKind.INPUT, c_out=c_in, h=hw, w=hw),
        dict(op=OpKind.CONV, src=0, c_in=c_in, c_out=c_out, kernel=3, h=hw, w=hw),
    ])


def _ibn_block(c: int, e: int, k: int, hw: int, fused: bool) -> LayerTable:
    """INPUT(c, hw) -> IBN (1x1 expand, KxK depthwise, 1x1 project) or fused IBN (KxK, 1x1)."""
    mid = c * e
    rows = [dict(op=OpKind.INPUT, c_out=c, h=hw, w=hw)]
    if fused:
        rows += [dict(op=OpKind.CONV, src=0, c_in=c, c_out=mid, kernel=k, h=hw, w=hw),
                 dict(op=OpKind.CONV, src=1, c_in=mid, c_out=c, h=hw, w=hw)]
    else:
        rows += [dict(op=OpKind.CONV, src=0, c_in=c, c_out=mid, h=hw, w=hw),
                 dict(op=OpKind.DWCONV, src=1, c_in=mid, c_out=mid, groups=mid, kernel=k, h=hw, w=hw),
                 dict(op=OpKind.CONV, src=2, c_in=mid, c_out=c, h=hw, w=hw)]
    rows.append(dict(op=OpKind.ADD, src=len(rows) - 1, res=0, c_in=c, c_out=c, h=hw, w=hw))
    return LayerTable.from_rows(rows)


def _mixed_net(weights=None) -> LayerTable:
    """A small net touching every op kind, with channels on and off multiples of 16."""
    rows = [
        dict(op=OpKind.INPUT, c_out=3, h=32, w=32),
        dict(op=OpKind.CONV, src=0, c_in=3, c_out=16, kernel=3, stride=2, h=32, w=32),
        dict(op=OpKind.CONV, src=1, c_in=16, c_out=40, h=16, w=16),
        dict(op=OpKind.DWCONV, src=2, c_in=40, c_out=40, groups=40, kernel=5, h=16, w=16),
        dict(op=OpKind.CONV, src=3, c_in=40, c_out=48, groups=2, h=16, w=16),
        dict(op=OpKind.SHUFFLE, src=4, c_in=48, c_out=48, h=16, w=16),
        dict(op=OpKind.CONV, src=1, c_in=16, c_out=48, kernel=3, h=16, w=16),
        dict(op=OpKind.MIX, src=5, res=6, c_in=48, c_out=48, h=16, w=16),
        dict(op=OpKind.IDENTITY, src=7, c_in=48, c_out=48, h=16, w=16),
        dict(op=OpKind.CONV, src=8, c_in=48, c_out=48, h=16, w=16),
        dict(op=OpKind.ADD, src=9, res=8, c_in=48, c_out=48, h=16, w=16),
        dict(op=OpKind.AVGPOOL, src=10, c_in=48, c_out=48, kernel=3, h=16, w=16),
        dict(op=OpKind.CONV, src=11, c_in=48, c_out=160, kernel=3, stride=2, h=16, w=16),
        dict(op=OpKind.GAP, src=12, c_in=160, c_out=160, h=8, w=8),
        dict(op=OpKind.LINEAR, src=13, c_in=160, c_out=10),
        dict(op=OpKind.NONE, src=0),
    ]
    if weights is not None:
        for r, w in zip(rows, weights):
            r["weight"] = w
    return LayerTable.from_rows(rows)


def _as_f64(table: LayerTable) -> LayerTable:
    return jax.tree.map(lambda a: a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a, table)


# ------------------------------------------------------------------------------------------------
# Accelerators
# ------------------------------------------------------------------------------------------------


def test_registry_typo_lists_valid_names():
    with pytest.raises(KeyError, match="valid names: .*edgetpu.*mobile-cpu.*npu"):
        ACCELERATORS["typo"]
    assert {"npu", "npu-p16", "npu-p32", "npu-p64", "edgetpu", "mobile-cpu"} <= set(ACCELERATORS)


def test_make_npu_and_presets():
    assert make_npu(32).parallelism == 32
    assert make_npu(32) == ACCELERATORS["npu-p32"]
    assert ACCELERATORS["npu"].parallelism == 16
    assert make_npu(8, sram_bytes=1024.0).sram_bytes == 1024.0
    assert ACCELERATORS["edgetpu"].peak_tops == pytest.approx(4.0, rel=0.05)  # Coral: 4 TOPS int8
    cpu = ACCELERATORS["mobile-cpu"]
    assert (cpu.mac_rows, cpu.mac_cols, cpu.cores, cpu.bytes_per_element) == (1, 8, 4, 4)
    with pytest.raises(TypeError, match="unknown AcceleratorSpec fields"):
        make_npu(16, parallelism_factor=3)
    with pytest.raises(ValueError, match="mac_cols must be > 0"):
        make_npu(16, mac_cols=0)
    for spec in ACCELERATORS.values():
        assert isinstance(spec, AcceleratorSpec) and spec.source and spec.description
        hash(spec)  # usable as a static jit argument


# ------------------------------------------------------------------------------------------------
# Exact model
# ------------------------------------------------------------------------------------------------


def test_staircase_on_parallelism_factor():
    lat = {c: float(latency(NPU, _conv_net(c))) for c in (32, 40, 48)}
    assert not bool(breakdown(NPU, _conv_net(40))["memory_bound"][1])  # compute-bound
    assert lat[40] == lat[48]
    assert lat[40] > lat[32]
    # 56*56*9 * ceil(32/16) * ceil(40/16) cycles at 1 GHz + 2 us overhead.
    assert lat[40] == pytest.approx(56 * 56 * 9 * 2 * 3 / 1e9 + 2e-6, rel=1e-6)


def test_depthwise_uses_the_diagonal_on_npu_but_all_lanes_on_cpu():
    t = LayerTable.from_rows([
        dict(op=OpKind.INPUT, c_out=64, h=16, w=16),
        dict(op=OpKind.DWCONV, src=0, c_in=64, c_out=64, groups=64, kernel=3, h=16, w=16),
    ])
    assert float(breakdown(NPU, t)["utilization"][1]) == pytest.approx(1 / 16)
    assert float(breakdown(ACCELERATORS["mobile-cpu"], t)["utilization"][1]) == pytest.approx(1.0)


def test_spill_to_dram_when_working_set_exceeds_sram():
    t = _conv_net(64, c_in=64, hw=112)  # in + out = 2 * 64*112*112 B = 1.5 MiB > 1 MiB
    small, large = NPU, make_npu(16, sram_bytes=4.0 * 2**20)
    b_small, b_large = breakdown(small, t), breakdown(large, t)
    assert bool(b_small["spill"][1]) and not bool(b_large["spill"][1])
    act = 2 * 64 * 112 * 112
    assert float(b_small["bytes"][1] - b_large["bytes"][1]) == pytest.approx(act)
    assert float(latency(small, t)) >= float(latency(large, t))


def test_no_residency_streams_every_layer_and_stays_differentiable():
    """`sram_bytes=0` (ZigZag's per-layer model): activations always cross the DRAM port, even tiny ones."""
    t = _conv_net(16, c_in=16, hw=8)  # 2 KiB of activations: resident on any buffer
    stream = make_npu(16, sram_bytes=0.0)
    b, b_res = breakdown(stream, t), breakdown(NPU, t)
    assert bool(b["spill"][1]) and not bool(b_res["spill"][1])
    assert float(b["bytes"][1] - b_res["bytes"][1]) == pytest.approx(2 * 16 * 8 * 8)
    g = jax.grad(lambda w: analytic.latency_smooth(stream, dataclasses.replace(t, weight=w), 0.1).sum())(t.weight)
    assert np.all(np.isfinite(np.asarray(g))) and float(g[1]) > 0
    with pytest.raises(ValueError, match="sram_bytes must be >= 0"):
        make_npu(16, sram_bytes=-1.0)


def test_fused_ibn_wins_early_but_not_late_on_npu():
    def flops_and_latency(spec, **kw):
        return [(float(total_flops(t)), float(latency(spec, t)))
                for t in (_ibn_block(fused=True, **kw), _ibn_block(fused=False, **kw))]

    for hw in (32, 56):  # early: high resolution, few channels
        (f_fused, l_fused), (f_ibn, l_ibn) = flops_and_latency(NPU, c=16, e=6, k=3, hw=hw)
        assert f_fused > f_ibn and l_fused < l_ibn, (hw, l_fused, l_ibn)
    (f_fused, l_fused), (f_ibn, l_ibn) = flops_and_latency(NPU, c=160, e=6, k=3, hw=7)  # late stage
    assert f_fused > f_ibn and l_fused > l_ibn
    # On a CPU a depthwise conv is efficient, so the unfused IBN wins even early: the point is the
    # hardware, not the block.
    (_, l_fused), (_, l_ibn) = flops_and_latency(ACCELERATORS["mobile-cpu"], c=16, e=6, k=3, hw=56)
    assert l_ibn < l_fused


def test_absent_rows_cost_nothing_and_latency_is_linear_in_weights():
    n = _mixed_net().num_rows
    w1 = np.ones(n, np.float32)
    w1[6] = 0.0  # the second alternative of the MIX is absent
    t1 = _mixed_net(w1)
    per_row = layer_latency(NPU, t1)
    assert float(latency(NPU, t1)) == pytest.approx(float(jnp.sum(per_row) - per_row[6]), rel=1e-6)
    assert float(per_row[0]) == 0.0 and float(per_row[7]) == 0.0 and float(per_row[-1]) == 0.0
    w2 = np.ones(n, np.float32)
    w2[5] = w2[4] = w2[3] = w2[2] = 0.0
    t2 = _mixed_net(w2)
    for a in (0.0, 0.25, 0.7):
        mixed = t1.replace(weight=a * t1.weight + (1 - a) * t2.weight)
        for fn in (latency, lambda spec, t: latency_smooth(spec, t, 0.2)):
            expect = a * float(fn(NPU, t1)) + (1 - a) * float(fn(NPU, t2))
            assert float(fn(NPU, mixed)) == pytest.approx(expect, rel=1e-5)


def test_jit_and_vmap_over_stacked_tables():
    tables = [_mixed_net(), _conv_net(40), _ibn_block(16, 6, 3, 32, fused=False)]
    batch = stack(tables)  # padded to the longest with NONE rows
    assert batch.op.shape == (3, _mixed_net().num_rows)
    assert float(latency(NPU, tables[1])) == pytest.approx(float(latency(NPU, batch[1])), rel=1e-6)
    for spec in (NPU, ACCELERATORS["mobile-cpu"]):
        single = np.array([float(latency(spec, batch[i])) for i in range(3)])
        vmapped = jax.jit(jax.vmap(functools.partial(analytic.latency, spec)))
        np.testing.assert_allclose(vmapped(batch), single, rtol=1e-6)
        np.testing.assert_allclose(latency(spec, batch), single, rtol=1e-6)  # leading batch dims
        single_s = np.array([float(latency_smooth(spec, batch[i], 0.1)) for i in range(3)])
        np.testing.assert_allclose(latency_smooth(spec, batch, 0.1), single_s, rtol=1e-5)
    assert breakdown(NPU, batch)["latency_s"].shape == batch.op.shape


# ------------------------------------------------------------------------------------------------
# Smooth model
# ------------------------------------------------------------------------------------------------


def test_soft_ceil_exact_at_integers_and_between():
    x = jnp.asarray([0.0, 0.5, 1.0, 2.0, 2.5, 3.0, 9.99, 10.0, 16.0, 100.0])
    np.testing.assert_allclose(analytic.soft_ceil(x, 1e-4), jnp.ceil(x), atol=1e-6)
    g = jax.vmap(jax.grad(lambda v: analytic.soft_ceil(v, 0.2)))(x)
    assert bool(jnp.all(jnp.isfinite(g))) and bool(jnp.all(g[1:] > 0))


@pytest.mark.parametrize("name", sorted(ACCELERATORS))  # every registered preset (conformance)
def test_smooth_tends_to_exact(name):
    spec = ACCELERATORS[name]
    # Integer channels on multiples of P (16, 48, 96, 960) and off them (3, 40, 10).
    nets = stack([_mixed_net(), _conv_net(48), _conv_net(40), _ibn_block(16, 6, 3, 56, fused=True),
                  _ibn_block(160, 6, 3, 7, fused=False)])
    exact = layer_latency(spec, nets)
    errs = [float(jnp.max(jnp.abs(layer_latency_smooth(spec, nets, tau) - exact) / (exact + 1e-12)))
            for tau in (1e-1, 1e-2, 1e-4)]
    assert errs[-1] < 1e-3, (name, errs)
    assert errs[-1] <= errs[0]
    np.testing.assert_allclose(latency_smooth(spec, nets, 1e-4), latency(spec, nets), rtol=1e-3)


def test_smooth_gradient_matches_finite_differences():
    # Non-integer channel counts, fractional kernels and weights; an SRAM that the biggest layers
    # straddle so the soft spill is exercised too.
    spec = make_npu(16, sram_bytes=40_000.0, layer_overhead_s=1e-6)
    with jax.enable_x64(True):
        base = _as_f64(_mixed_net())
        rng = np.random.default_rng(0)
        n = base.num_rows
        c_in = base.c_in + rng.uniform(0.1, 0.9, n) * 7.0
        c_out = base.c_out + rng.uniform(0.1, 0.9, n) * 7.0
        kernel = base.kernel + rng.uniform(0.1, 0.4, n)
        weight = jnp.clip(base.weight * rng.uniform(0.3, 1.0, n), 0.0, 1.0)

        def f(x):  # x = [c_in, c_out, kernel, weight] stacked, [4, L]
            t = base.replace(c_in=x[0], c_out=x[1], kernel=x[2], weight=x[3])
            return analytic.latency_smooth(spec, t, 0.3) * 1e3  # ms, O(1) values

        x = jnp.stack([c_in, c_out, kernel, weight])
        grads = jax.jit(jax.grad(f))(x)
        assert bool(jnp.all(jnp.isfinite(grads)))
        # Central differences for every entry at once: vmap over the 4*L perturbation directions.
        eps = 1e-5
        basis = jnp.eye(x.size, dtype=x.dtype).reshape((-1,) + x.shape) * eps
        fd = jax.jit(jax.vmap(lambda d: (f(x + d) - f(x - d)) / (2 * eps)))(basis).reshape(x.shape)
        np.testing.assert_allclose(grads, fd, rtol=1e-4, atol=1e-8)
        # Some gradient must be nonzero for each quantity (the test is not vacuous).
        assert bool(jnp.all(jnp.max(jnp.abs(grads), axis=1) > 0))


def test_smooth_gradient_exists_on_the_grid():
    # At an exact multiple of P the exact model is flat-then-jumps; the smooth one has a finite
    # positive slope (the optimizer sees that more channels cost more).
    def f(c):
        return analytic.latency_smooth(NPU, _conv_net(48.0).replace(c_out=jnp.stack([32.0, c])), 0.1)

    g = jax.jit(jax.grad(f))(48.0)
    assert bool(jnp.isfinite(g)) and float(g) > 0
    with pytest.raises(ValueError, match="temperature must be > 0"):
        analytic.latency_smooth(NPU, _conv_net(48), 0.0)


def test_exact_spec_dataclass_replace_changes_latency():
    t = _conv_net(48)
    slow = dataclasses.replace(NPU, clock_hz=NPU.clock_hz / 2)
    assert float(latency(slow, t)) > float(latency(NPU, t))
    assert float(analytic.latency_ms(NPU, t)) == pytest.approx(1e3 * float(latency(NPU, t)))
