"""The ZigZag backend: rows map to ZigZag layers with the right MACs, depthwise mapping, sums, no side effects."""

import logging
import os

import jax
import numpy as np
import pytest

from hwmodel import profile, simulator
from hwmodel.layers import LayerTable, OpKind, macs
from hwmodel.measure import make_backend, signature
from supernet import make_space


def _zigzag_macs(layer: dict) -> int:
    from zigzag.parser.workload_factory import WorkloadFactory
    from zigzag.parser.workload_validator import WorkloadValidator
    sim = simulator._Simulator("edge_tpu_like", 4)
    v = WorkloadValidator([layer])
    assert v.validate(), v.validator.errors
    node = next(iter(WorkloadFactory(v.normalized_data, sim.mapping).create().topological_sort()))
    return int(node.total_mac_count)


@pytest.mark.parametrize("row", [
    dict(op=OpKind.CONV, c_in=8, c_out=16, kernel=3, stride=2, h=9, w=9),
    dict(op=OpKind.CONV, c_in=8, c_out=16, kernel=3, stride=1, groups=4, h=8, w=8),
    dict(op=OpKind.DWCONV, c_in=16, c_out=16, kernel=5, stride=2, groups=16, h=8, w=8),
    dict(op=OpKind.LINEAR, c_in=32, c_out=10),
])
def test_zigzag_layer_has_the_tables_macs(row):
    t = LayerTable.from_rows([dict(op=OpKind.INPUT, c_out=row["c_in"], h=row.get("h", 1), w=row.get("w", 1)),
                              dict(src=0, **row)]).to_numpy()
    layer = simulator.layer_workload(profile.table_row(t, 1))
    assert _zigzag_macs(layer) == int(np.asarray(macs(t))[1])


def test_depthwise_mapping_uses_the_array_better_than_the_stock_one():
    sim = simulator._Simulator("edge_tpu_like", 4)
    t = LayerTable.from_rows([dict(op=OpKind.INPUT, c_out=64, h=16, w=16),
                              dict(op=OpKind.DWCONV, src=0, c_in=64, c_out=64, kernel=3, groups=64, h=16, w=16)])
    layer = simulator.layer_workload(profile.table_row(t.to_numpy(), 1))
    ours, _ = sim.cost(layer)
    stock, _ = sim.cost(layer | {"name": "conv"})  # the description's default mapping (K x C)
    assert ours < 0.5 * stock  # measured: 4,097 vs 67,586 cycles at 384 channels; ~4x fewer here


def test_backend_sums_its_rows_maps_them_and_leaves_no_trace(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    zlog = logging.getLogger("zigzag")
    level, handlers = zlog.level, list(logging.getLogger().handlers)
    space = make_space("nb201", channels=4, cells_per_stage=1)
    arch = space.decode("|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|none~2|")
    b = make_backend("zigzag:tesla_npu_like")
    m = b.measure(space.layers(arch))
    t = profile.concrete(space.layers(arch))
    executed = {r.index for r in b.executed_rows(t)}
    assert set(np.nonzero(m.layer_latency_ms)[0]) == executed
    assert set(np.nonzero(m.layer_energy_mj)[0]) == executed
    assert m.latency_ms == pytest.approx(m.layer_latency_ms.sum()) and m.spread_ms == 0
    assert m.energy_mj == pytest.approx(m.layer_energy_mj.sum()) and m.energy_mj > 0
    ops = {profile.table_row(t, i).op for i in executed}
    assert {OpKind.CONV, OpKind.AVGPOOL, OpKind.ADD, OpKind.GAP, OpKind.LINEAR} <= ops
    # a second network costs only its unseen layers; identical rows get identical numbers
    n = b.cache_size
    assert n == len({signature(profile.table_row(t, i)) for i in executed})
    b.measure(space.layers(arch))
    assert b.cache_size == n
    assert os.listdir(tmp_path) == []  # no output files, no visualisation
    assert zlog.level == level and logging.getLogger().handlers == handlers


def test_parallel_prefetch_equals_serial():
    space = make_space("nb201", channels=4, cells_per_stage=1)
    archs = np.asarray(space.sample(jax.random.key(3), 2))
    serial = make_backend("zigzag:edge_tpu_like")
    par = make_backend("zigzag:edge_tpu_like", workers=2)
    par.prefetch([space.layers(a) for a in archs])
    try:
        for a in archs:
            x, y = serial.measure(space.layers(a)), par.measure(space.layers(a))
            np.testing.assert_allclose(x.layer_latency_ms, y.layer_latency_ms)
            np.testing.assert_allclose(x.layer_energy_mj, y.layer_energy_mj)
    finally:
        par.close()


def test_unknown_descriptions_and_suffixes_are_named():
    with pytest.raises(KeyError, match="unknown ZigZag description 'edge_tpu'.*edge_tpu_like"):
        make_backend("zigzag:edge_tpu")
    with pytest.raises(KeyError, match="takes no ':x'"):
        make_backend("onnxruntime:x")
    with pytest.raises(ValueError, match="workers"):
        make_backend("zigzag:tpu_like", workers=0)


def test_doctests_of_the_simulator_and_the_calibration():
    import doctest

    from hwmodel import calibrate
    assert doctest.testmod(simulator).failed == 0
    assert doctest.testmod(calibrate).failed == 0


def test_analytic_spec_reads_the_array_off_the_description():
    s = simulator.analytic_spec("edge_tpu_like")
    assert (s.mac_rows, s.mac_cols, s.cores) == (8, 8, 16)  # C 8 x K 8 x OX 4 x OY 4
    assert s.sram_bytes == 0 and s.dram_bytes_per_s == 8e9  # layers stream from DRAM; 64 bit/cycle at 1 GHz


@pytest.mark.parametrize("description", sorted(simulator.DESCRIPTIONS))
def test_calibrated_preset_keeps_the_description_structure(description):
    """`ACCELERATORS["zigzag-<d>"]` (hard-coded fitted rates) has the array and buffer of the YAML files."""
    from hwmodel import ACCELERATORS
    raw, cal = simulator.analytic_spec(description), ACCELERATORS[f"zigzag-{description}"]
    for f in ("mac_rows", "mac_cols", "cores", "bytes_per_element"):
        assert getattr(cal, f) == getattr(raw, f), f
    assert 0.5 < cal.clock_hz / 1e9 < 2  # ZigZag's stock descriptions run at the 1 GHz we assume
    assert cal.sram_bytes == raw.sram_bytes == 0  # ZigZag streams every layer from DRAM


def test_energy_and_latency_surrogates_fitted_on_zigzag_layers_are_differentiable():
    """Per-layer ZigZag data -> surrogates for latency and energy -> gradients through expected_layers."""
    import jax.numpy as jnp

    from hwmodel.surrogate import fit, layer_features, predict
    space = make_space("nb201", channels=4, cells_per_stage=1)
    b = make_backend("zigzag:edge_tpu_like")
    feats, lat, en, whole = [], [], [], []
    archs = np.asarray(space.sample(jax.random.key(0), 4))
    for a in archs:
        m = b.measure(space.layers(a))
        t = profile.concrete(space.layers(a))
        idx = [r.index for r in b.executed_rows(t)]
        feats.append(np.asarray(layer_features(t))[idx])
        lat.append(m.layer_latency_ms[idx])
        en.append(m.layer_energy_mj[idx])
        whole.append((m.latency_ms, m.energy_mj))
    x = np.concatenate(feats)
    probs = space.uniform_probs()
    for k, y in enumerate((np.concatenate(lat), np.concatenate(en))):
        s = fit(x, y, per_layer=True, lambdas=(1e-8,))
        pred = float(predict(s, s.executed(space.layers(archs[0]))))
        assert pred == pytest.approx(whole[0][k], rel=0.1)  # the fit predicts the backend's sum
        g = jax.grad(lambda p: predict(s, space.expected_layers(p)))(probs)
        g = np.asarray(jnp.concatenate([jnp.ravel(v) for v in jax.tree.leaves(g)]))
        assert np.all(np.isfinite(g)) and np.abs(g).max() > 0
