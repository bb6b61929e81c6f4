"""An external ONNX graph as a layer table, so any cost model can price a model we did not build.

nn-Meter's most asked-for use is "the latency of my own model on a device". `layer_table(model)`
turns an `onnx.ModelProto` (batch 1, NCHW, static shapes after ONNX shape inference; weights may be
external and absent: only their shapes are read) into the `hwmodel.layers` table that the analytic
model, the surrogate and the ZigZag backend read. `python -m experiments.cost --onnx F.onnx` is
the command line.

Node mapping (one row per node that does work; the rest alias their input):
- Conv: CONV with its `group`, or DWCONV when `group == c_in == c_out`; square kernels only.
- Gemm, and MatMul by a constant [K, N] matrix on a [1, K] vector: LINEAR.
- AveragePool, MaxPool: AVGPOOL (a KxK window on the vector unit; max and mean cost the same).
- GlobalAveragePool, GlobalMaxPool, ReduceMean over H, W: GAP.
- Add, Sum, Mul, Sub, Div of two activations: ADD (an elementwise op of two tensors). With a
  constant operand (a bias or a scale that inference would fold) they are free aliases.
- Resize/Upsample by one integer factor: UPSAMPLE; Concat of two NCHW tensors along channels:
  CONCAT. Any other resize or concatenation (e.g. along the last axis of an NHWC tensor): a SHUFFLE
  row of its output size (pure data movement, costed as elements written on the vector unit).
- Relu, Clip and Max / Min with a constant (ReLU6), activations, BatchNormalization (folded), Flatten, Reshape, Transpose,
  Squeeze, Unsqueeze, Identity, Dropout, Constant, Cast, Shape, Softmax: free (an alias of
  their first input; a following Relu/Clip marks the producing row `act=1`).
A node whose inputs are all constants (a weight transposed, cast or scaled by BatchNorm's
statistics in the exported graph) is folded into a constant. Any other op stops with a message
naming it and the node.

Tables built here are costed row by row (analytic, surrogate, ZigZag); they are not executable by
`hwmodel.profile` (a SHUFFLE row standing for a concatenation does not obey its shape rules).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import shape_inference

from hwmodel.layers import LayerTable, OpKind

_FREE = {"Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "LeakyRelu", "Elu", "Selu",
         "Gelu", "Swish", "Mish", "BatchNormalization", "Flatten", "Reshape", "Transpose", "Squeeze",
         "Unsqueeze", "Identity", "Dropout", "Cast", "Softmax", "LogSoftmax", "Max", "Min"}
#: (Max / Min with a constant: ReLU6 as jax2onnx writes `clip(x, 0, 6)`)
_ACTIVATIONS = {"Relu", "Clip", "Max"}
_ELEMENTWISE = {"Add", "Sum", "Mul", "Sub", "Div"}
_CONSTANT_OPS = {"Constant", "Shape", "ConstantOfShape"}


class OnnxCostError(ValueError):
    """An ONNX graph this module cannot turn into a layer table (names the op and node)."""


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _dims(t: onnx.ValueInfoProto) -> list[int]:
    return [d.dim_value if d.HasField("dim_value") else -1 for d in t.type.tensor_type.shape.dim]


def layer_table(model: onnx.ModelProto) -> LayerTable:
    """The layer table of an ONNX model (module docstring); OnnxCostError for what it cannot cost."""
    try:
        model = shape_inference.infer_shapes(model)
    except Exception as e:  # noqa: BLE001  (shape inference raises several types)
        raise OnnxCostError(f"ONNX shape inference failed: {e}") from None
    g = model.graph
    consts = {t.name: list(t.dims) for t in g.initializer}
    shapes = {v.name: _dims(v) for v in [*g.input, *g.value_info, *g.output]}
    for n in g.node:
        if n.op_type in _CONSTANT_OPS:
            consts.update({o: [] for o in n.output})
    inputs = [i for i in g.input if i.name not in consts]
    if len(inputs) != 1:
        raise OnnxCostError(f"need one image input, found {[i.name for i in inputs]}")
    x = _dims(inputs[0])
    if len(x) != 4 or min(x[1:]) <= 0:
        raise OnnxCostError(f"input {inputs[0].name!r} must be a static NCHW image, got shape {x}")
    rows: list[dict[str, Any]] = [dict(op=OpKind.INPUT, c_out=x[1], h=x[2], w=x[3])]
    where = {inputs[0].name: 0}  # tensor -> row that produced it (aliases point to their source)

    def shape(name: str, node: onnx.NodeProto) -> list[int]:
        s = shapes.get(name)
        if s is None or any(d <= 0 for d in s):
            raise OnnxCostError(f"node {node.name or node.op_type!r} ({node.op_type}): tensor {name!r} has no "
                                f"static shape after shape inference ({s}); export with fixed input sizes")
        return s

    def spatial(s: list[int]) -> tuple[int, int, int]:
        return (s[1], s[2], s[3]) if len(s) == 4 else (s[1] if len(s) > 1 else s[0], 1, 1)

    for node in g.node:
        op, name = node.op_type, node.name or node.op_type
        acts = [i for i in node.input if i and i not in consts]
        if op in _CONSTANT_OPS:
            continue
        if not acts:  # every input constant (weights being transposed, cast, BN-scaled): a constant
            consts.update({o: shapes.get(o) or [] for o in node.output})
            continue
        if op in _FREE or (op in _ELEMENTWISE and len(acts) < 2):
            src = where[acts[0]]
            if op in _ACTIVATIONS and src > 0:
                rows[src]["act"] = 1
            where.update({o: src for o in node.output})
            continue
        if any(a not in where for a in acts):
            raise OnnxCostError(f"node {name!r} ({op}) reads a tensor no earlier node produced: {acts}")
        src = where[acts[0]]
        out = shape(node.output[0], node)
        if op == "Conv":
            a = _attrs(node)
            wd = consts.get(node.input[1])
            if wd is None or len(wd) != 4:
                raise OnnxCostError(f"node {name!r} (Conv): only 2-D convolutions with constant weights")
            kh, kw = wd[2], wd[3]
            if kh != kw:
                raise OnnxCostError(f"node {name!r} (Conv): kernel {kh}x{kw}; the layer table has square kernels")
            c, h, w = spatial(shape(acts[0], node))
            grp = int(a.get("group", 1))
            stride = int(a.get("strides", [1, 1])[0])
            dw = grp == c == out[1] and grp > 1
            rows.append(dict(op=OpKind.DWCONV if dw else OpKind.CONV, src=src, c_in=c, c_out=out[1],
                             kernel=kh, stride=stride, groups=grp, h=h, w=w))
        elif op in ("Gemm", "MatMul"):
            wd = consts.get(node.input[1])
            if wd is None or len(wd) != 2:
                raise OnnxCostError(f"node {name!r} ({op}): only a vector times a constant matrix is costed")
            trans = op == "Gemm" and int(_attrs(node).get("transB", 0))
            c_in, c_out = (wd[1], wd[0]) if trans else (wd[0], wd[1])
            rows.append(dict(op=OpKind.LINEAR, src=src, c_in=c_in, c_out=c_out))
        elif op in ("AveragePool", "MaxPool"):
            a = _attrs(node)
            c, h, w = spatial(shape(acts[0], node))
            k = a["kernel_shape"]
            if k[0] != k[1]:
                raise OnnxCostError(f"node {name!r} ({op}): kernel {k}; the layer table has square windows")
            rows.append(dict(op=OpKind.AVGPOOL, src=src, c_in=c, c_out=c, kernel=k[0],
                             stride=int(a.get("strides", [1, 1])[0]), h=h, w=w))
        elif op in ("GlobalAveragePool", "GlobalMaxPool", "ReduceMean"):
            c, h, w = spatial(shape(acts[0], node))
            rows.append(dict(op=OpKind.GAP, src=src, c_in=c, c_out=c, h=h, w=w))
        elif op in _ELEMENTWISE:
            c, h, w = spatial(out)
            rows.append(dict(op=OpKind.ADD, src=src, res=where[acts[1]], c_in=c, c_out=c, h=h, w=w))
        elif op in ("Resize", "Upsample"):
            c, h, w = spatial(out)
            ci, hi, wi = spatial(shape(acts[0], node))
            if h % hi == 0 and h // hi == w // wi and w % wi == 0:  # integer upsampling
                rows.append(dict(op=OpKind.UPSAMPLE, src=src, c_in=ci, c_out=c, kernel=h // hi, h=hi, w=wi))
            else:  # another resize: data movement of its output
                rows.append(dict(op=OpKind.SHUFFLE, src=src, c_in=c, c_out=c, groups=1, h=h, w=w))
        elif op == "Concat":
            c, h, w = spatial(out)
            axis = int(_attrs(node).get("axis", 1))
            if len(acts) == 2 and axis in (1, -3) and len(out) == 4:  # channels of two NCHW tensors
                ci = spatial(shape(acts[0], node))[0]
                rows.append(dict(op=OpKind.CONCAT, src=src, res=where[acts[1]], c_in=ci, c_out=c, h=h, w=w))
            else:  # any other concatenation: data movement of its output
                rows.append(dict(op=OpKind.SHUFFLE, src=src, c_in=c, c_out=c, groups=1, h=h, w=w))
        else:
            raise OnnxCostError(f"node {name!r}: ONNX op {op!r} cannot be costed (supported: Conv, Gemm, "
                                "MatMul, AveragePool, MaxPool, GlobalAveragePool, ReduceMean, Add, Mul, Sub, "
                                "Div, Sum, Concat, Resize and free reshapes/activations)")
        where.update({o: len(rows) - 1 for o in node.output})
    return LayerTable.from_rows(rows)


def computing_rows(table: LayerTable) -> np.ndarray:
    """Indices of the rows that do work (every present non-alias row of an ONNX table)."""
    t = table.to_numpy()
    return np.flatnonzero((t.weight > 0) & ~np.isin(t.op, [OpKind.NONE, OpKind.INPUT, OpKind.MIX,
                                                            OpKind.IDENTITY]))
