"""External ONNX graphs as layer tables: MACs and params of known models, ZigZag's own totals, bad input."""

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from experiments import cost as cost_cli
from hwmodel import simulator
from hwmodel.layers import OpKind, macs, total_params
from hwmodel.measure import make_backend
from hwmodel.onnx_graph import OnnxCostError, computing_rows, layer_table


def _zigzag_model(name: str) -> onnx.ModelProto:
    import zigzag
    return onnx.load(os.path.join(os.path.dirname(zigzag.__file__), "inputs", "workload", f"{name}.onnx"),
                     load_external_data=False)


def _tiny(extra_op: str | None = None) -> onnx.ModelProto:
    """Conv 3->8 (3x3, stride 2) -> Relu -> depthwise 3x3 -> Add(skip) -> GAP -> Flatten -> Gemm 8->10."""
    init = [helper.make_tensor("w1", TensorProto.FLOAT, [8, 3, 3, 3], np.zeros(216).tolist()),
            helper.make_tensor("w2", TensorProto.FLOAT, [8, 1, 3, 3], np.zeros(72).tolist()),
            helper.make_tensor("wf", TensorProto.FLOAT, [10, 8], np.zeros(80).tolist())]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], name="c1", kernel_shape=[3, 3], strides=[2, 2],
                              pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["b"], name="r1"),
             helper.make_node("Conv", ["b", "w2"], ["c"], name="dw", kernel_shape=[3, 3], group=8,
                              pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c", "b"], ["d"], name="add"),
             helper.make_node("GlobalAveragePool", ["d"], ["e"], name="gap"),
             helper.make_node("Flatten", ["e"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "wf"], ["y"], name="fc", transB=1)]
    if extra_op:
        nodes.insert(2, helper.make_node(extra_op, ["b"], ["b2"], name="odd"))
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], init)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])


@pytest.mark.parametrize("name,mmacs,mparams", [("resnet18", 1816.657, 11.685), ("mobilenetv2", 301.053, 3.488)])
def test_shipped_models_have_their_known_size(name, mmacs, mparams):
    t = layer_table(_zigzag_model(name))  # ResNet-18: 1.8 GMACs, 11.7 M params; MobileNetV2: 300 M, 3.5 M
    assert float(np.sum(np.asarray(macs(t)))) / 1e6 == pytest.approx(mmacs, abs=1e-3)
    assert float(total_params(t)) / 1e6 == pytest.approx(mparams, abs=1e-3)


def test_tiny_graph_rows_and_zigzag_equals_zigzags_own_onnx_flow():
    model = _tiny()
    t = layer_table(model)
    ops = [OpKind(int(o)) for o in np.asarray(t.op)]
    assert ops == [OpKind.INPUT, OpKind.CONV, OpKind.DWCONV, OpKind.ADD, OpKind.GAP, OpKind.LINEAR]
    assert int(t.act[1]) == 1 and int(t.stride[1]) == 2 and int(t.h[2]) == 8  # Relu folded; 16 -> 8
    b = make_backend("zigzag:edge_tpu_like", depthwise_mapping=False)
    m = b.measure_rows(t, computing_rows(t))
    mask = np.isin(np.asarray(t.op), [OpKind.CONV, OpKind.DWCONV, OpKind.LINEAR])
    cycles, energy = simulator.zigzag_onnx_totals(model, "edge_tpu_like")
    assert m.layer_latency_ms[mask].sum() * 1e6 == pytest.approx(cycles)  # 1 GHz: ms * 1e6 = cycles
    assert m.layer_energy_mj[mask].sum() * 1e9 == pytest.approx(energy)


def test_unknown_op_and_bad_files_stop_with_one_message(tmp_path, capsys):
    with pytest.raises(OnnxCostError, match="node 'odd'.*'LRN' cannot be costed"):
        layer_table(_tiny("LRN"))
    bad = tmp_path / "m.onnx"
    onnx.save(_tiny("LRN"), str(bad))
    for argv, msg in [(["--onnx", str(bad)], "'LRN' cannot be costed"),
                      (["--onnx", str(tmp_path / "none.onnx")], "not found"),
                      (["--onnx", str(bad), "--backend", "zigzag"], "unknown backend")]:
        with pytest.raises(SystemExit) as e:
            cost_cli.main(argv)
        assert e.value.code == 2 and msg in capsys.readouterr().err
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf at all \x00\x01")
    with pytest.raises(SystemExit):
        cost_cli.main(["--onnx", str(junk)])
    assert "not a readable ONNX model" in capsys.readouterr().err


def test_cli_prints_macs_params_and_latency(tmp_path, capsys):
    path = tmp_path / "tiny.onnx"
    onnx.save(_tiny(), str(path))
    res = cost_cli.main(["--onnx", str(path), "--backend", "analytic:npu", "--json"])
    assert {"macs", "params", "latency_ms", "rows"} <= set(res) and res["rows"] == 5
    assert res["params"] == 216 + 72 + 80 + 10 + 8 + 8  # weights + biases counted by the table
