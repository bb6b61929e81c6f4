"""UPSAMPLE and CONCAT rows (the decoders of detection and segmentation heads) in every cost model:
shapes and elements, execution (`hwmodel.profile`), dead-code semantics, the memory model, the
analytic model's vector unit, ONNX graphs, ZigZag, and surrogates saved before the ops existed."""

import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from onnx import TensorProto, helper

from hwmodel import analytic, memory, profile
from hwmodel.accelerators import ACCELERATORS
from hwmodel.layers import LayerTable, OpKind, in_elems, macs, out_elems, prune_dead
from hwmodel.onnx_graph import layer_table
from hwmodel.surrogate import FeatureConfig, Surrogate


def _decoder() -> LayerTable:
    """16x16x3 -> conv s2 (8x8x8) -> conv s2 (4x4x16) -> x2 up (8x8x16) -> concat skip (8x8x24) -> 1x1 (8x8x2)."""
    return LayerTable.from_rows([
        dict(op=OpKind.INPUT, c_out=3, h=16, w=16),
        dict(op=OpKind.CONV, src=0, c_in=3, c_out=8, kernel=3, stride=2, h=16, w=16, act=1),
        dict(op=OpKind.CONV, src=1, c_in=8, c_out=16, kernel=3, stride=2, h=8, w=8, act=1),
        dict(op=OpKind.UPSAMPLE, src=2, c_in=16, c_out=16, kernel=2, h=4, w=4),
        dict(op=OpKind.CONCAT, src=3, res=1, c_in=16, c_out=24, h=8, w=8),
        dict(op=OpKind.CONV, src=4, c_in=24, c_out=2, kernel=1, h=8, w=8),
    ])


def test_elements_and_no_arithmetic():
    t = _decoder()
    np.testing.assert_array_equal(out_elems(t), [768, 512, 256, 1024, 1536, 128])
    np.testing.assert_array_equal(in_elems(t)[3:5], [256, 1536])  # concat reads both inputs: 1024 + 512
    assert float(macs(t)[3]) == float(macs(t)[4]) == 0.0


def test_execution_equals_the_hand_written_network():
    t = _decoder()
    params, apply = profile.build_network(t)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 16, 16, 3)), jnp.float32)

    def conv(p, v, s):
        return lax.conv_general_dilated(v, p["w"], (s, s), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")) + p["b"]

    a = jnp.maximum(conv(params["row1"], x, 2), 0)
    b = jnp.maximum(conv(params["row2"], a, 2), 0)
    up = jnp.repeat(jnp.repeat(b, 2, 1), 2, 2)
    want = conv(params["row5"], jnp.concatenate([up, a], -1), 1)
    np.testing.assert_allclose(apply(params, x), want, rtol=1e-5, atol=1e-5)
    _, fn, shape = profile.layer_fn(t, 4)
    assert fn(profile.layer_fn(t, 4)[0], jnp.ones(shape)).shape == (1, 8, 8, 24)


def test_concat_needs_both_inputs_and_checks_channels():
    t = _decoder()
    t2 = t.replace(weight=t.weight.at[1].set(0.0))  # the skip's producer is absent
    assert float(prune_dead(t2).weight[4]) == 0.0
    bad = t.replace(c_out=t.c_out.at[4].set(20.0))
    with pytest.raises(ValueError, match="channels add up to c_out=20"):
        profile.build_network(bad)


def test_memory_keeps_the_skip_alive_until_the_concat():
    # live at the concat: the skip (512), the upsampled map (1024) and the concat's output (1536)
    assert float(memory.peak_activation_bytes(_decoder(), bytes_per_element=1)) == 512 + 1024 + 1536


def test_analytic_moves_the_output_elements_on_the_vector_unit():
    spec = ACCELERATORS["npu"]
    t = _decoder()
    cycles = analytic._compute_cycles(spec, t, jnp.ceil)
    np.testing.assert_allclose(cycles[3:5], np.asarray([1024, 1536]) / spec.vector_lanes / spec.cores)


def test_onnx_resize_and_concat_map_to_the_new_rows():
    init = [helper.make_tensor("w1", TensorProto.FLOAT, [8, 3, 3, 3], np.zeros(216).tolist()),
            helper.make_tensor("w2", TensorProto.FLOAT, [16, 8, 3, 3], np.zeros(1152).tolist()),
            helper.make_tensor("sc", TensorProto.FLOAT, [4], [1, 1, 2, 2])]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4),
             helper.make_node("Conv", ["a", "w2"], ["b"], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4),
             helper.make_node("Resize", ["b", "", "sc"], ["u"], mode="nearest"),
             helper.make_node("Concat", ["u", "a"], ["y"], axis=1)]
    g = helper.make_graph(nodes, "dec", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 24, 8, 8])], init)
    t = layer_table(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]))
    want = _decoder()
    assert np.asarray(t.op).tolist() == np.asarray(want.op)[:5].tolist()
    for f in ("c_in", "c_out", "kernel", "h", "w", "src", "res"):
        np.testing.assert_array_equal(getattr(t, f), getattr(want, f)[:5], err_msg=f)


def test_zigzag_prices_data_movement_at_zero():
    from hwmodel import simulator

    r = profile.table_row(profile.concrete(_decoder()), 4)
    assert simulator.layer_workload(r, True) is None


def test_a_surrogate_saved_without_the_decoder_features_still_loads():
    cfg = FeatureConfig()
    names = [n for n in cfg.names if not n.startswith("resample.")]
    d = {"coef": list(range(len(names))), "intercept": 0.5, "feature_names": names,
         "quantities": list(cfg.quantities), "accelerators": [], "temperature": cfg.temperature}
    s = Surrogate.from_dict(d)
    coef = dict(zip(cfg.names, np.asarray(s.coef).tolist()))
    assert coef["resample.count"] == 0.0 and coef[names[3]] == 3.0
    with pytest.raises(ValueError, match="refit it"):
        Surrogate.from_dict({**d, "feature_names": names[:-1], "coef": d["coef"][:-1]})
