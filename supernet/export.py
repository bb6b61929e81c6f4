"""Export a derived network to ONNX, with a graph explicit enough for downstream cost tools.

`to_onnx(module, input_shape)` converts any standalone network (a `Subnet` of any space, or any
NNX module mapping an NHWC batch to an output) with `jax2onnx`, BatchNorm in inference mode (the
module is cloned first, the caller's copy keeps its mode), and then `make_explicit` rewrites what
ONNX lets a graph leave implicit, because accelerator simulators, profilers and our own
`hwmodel` importer read the attributes rather than re-deriving them:

- every tensor has a static shape in `value_info` (shape inference with data propagation; a
  dynamic or unknown dimension is an error naming the tensor);
- every Conv / pooling node carries `kernel_shape` (from its weight, or its window) and explicit
  `pads`, `strides` and `dilations`; `auto_pad` (SAME_UPPER, SAME_LOWER, VALID) is replaced by the
  pads it means (ONNX operator spec: total = max((ceil(in / s) - 1) * s + (k - 1) * d + 1 - in, 0),
  the odd pixel at the end for SAME_UPPER, at the start for SAME_LOWER);
- the model passes `onnx.checker.check_model(full_check=True)`.

Example:
    >>> import jax, numpy as np
    >>> from flax import nnx
    >>> from supernet import make_space, make_supernet
    >>> space = make_space("nb201", channels=4, cells_per_stage=1)
    >>> net = make_supernet(space, rngs=nnx.Rngs(0))
    >>> sub = net.derive("|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|none~0|none~1|avg_pool_3x3~2|")
    >>> model = to_onnx(sub, (1, 32, 32, 3))
    >>> all(a.name != "auto_pad" for n in model.graph.node for a in n.attribute)
    True
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import onnx
from flax import nnx
from onnx import helper, shape_inference

from supernet import blocks

#: Ops whose window attributes `make_explicit` fills in (kernel from the weight for convolutions).
_WINDOWED = ("Conv", "MaxPool", "AveragePool", "LpPool")


def to_onnx(module: nnx.Module, input_shape: Sequence[int], *, opset: int = 23,
            model_name: str = "hwnas_subnet") -> onnx.ModelProto:
    """The ONNX model of `module` applied to one float32 input of `input_shape` (NHWC), explicit.

    Args:
      module: a standalone network (e.g. `Supernet.derive(arch)`); it is cloned and put in
        inference mode, so BatchNorm uses its running statistics.
      input_shape: static input shape, e.g. `(1, 32, 32, 3)`.
      opset: ONNX opset of the export.
      model_name: the graph's name.

    Returns:
      A checked `onnx.ModelProto` (see the module docstring for what is made explicit).
    """
    import jax2onnx  # local: importing it is slow and only export needs it

    shape = tuple(int(d) for d in input_shape)
    if not shape or any(d <= 0 for d in shape):
        raise ValueError(f"input_shape must be positive integers, got {tuple(input_shape)!r}")
    net = nnx.clone(module)
    net.eval()
    with blocks.library_convolutions():  # one Conv node per convolution, not the CPU tap sums
        model = jax2onnx.to_onnx(net, [shape], model_name=model_name, opset=opset, return_mode="proto")
    return make_explicit(model)


def _static_shape(info: onnx.ValueInfoProto) -> tuple[int, ...]:
    t = info.type.tensor_type
    if not t.HasField("shape") or any(not d.HasField("dim_value") for d in t.shape.dim):
        dims = [d.dim_param or "?" for d in t.shape.dim] if t.HasField("shape") else "unknown"
        raise ValueError(f"tensor {info.name!r} has no static shape ({dims}); export with a static "
                         "input shape")
    return tuple(int(d.dim_value) for d in t.shape.dim)


def _set(node: onnx.NodeProto, name: str, value: Any) -> None:
    for i, a in enumerate(node.attribute):
        if a.name == name:
            del node.attribute[i]
            break
    node.attribute.append(helper.make_attribute(name, value))


def _explicit_pads(auto_pad: str, size: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
                   dilations: Sequence[int]) -> list[int]:
    """ONNX `pads` ([begin..., end...]) equal to `auto_pad` on input spatial `size`."""
    if auto_pad == "VALID":
        return [0] * (2 * len(size))
    begin, end = [], []
    for n, k, s, d in zip(size, kernel, strides, dilations):
        total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
        small, large = total // 2, total - total // 2
        b, e = (small, large) if auto_pad == "SAME_UPPER" else (large, small)
        begin.append(b)
        end.append(e)
    return begin + end


def make_explicit(model: onnx.ModelProto) -> onnx.ModelProto:
    """Static shapes in `value_info`, explicit window attributes, checked (module docstring)."""
    model = shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    g = model.graph
    infos = {v.name: v for v in (*g.input, *g.value_info, *g.output)}
    inits = {t.name: t for t in g.initializer}
    for v in infos.values():
        _static_shape(v)
    for node in g.node:
        if node.op_type not in _WINDOWED:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        x_shape = _static_shape(infos[node.input[0]])
        spatial = x_shape[2:]
        if node.op_type == "Conv":
            w = inits.get(node.input[1])
            w_shape = tuple(w.dims) if w is not None else _static_shape(infos[node.input[1]])
            kernel = list(attrs.get("kernel_shape", w_shape[2:]))
            if tuple(kernel) != tuple(w_shape[2:]):
                raise ValueError(f"Conv {node.name!r}: kernel_shape {kernel} disagrees with its "
                                 f"weight {list(w_shape)}")
        else:
            kernel = list(attrs["kernel_shape"])  # required by the spec for pooling
        strides = list(attrs.get("strides", [1] * len(spatial)))
        dilations = list(attrs.get("dilations", [1] * len(spatial)))
        auto_pad = attrs.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        if auto_pad not in ("NOTSET", ""):
            pads = _explicit_pads(auto_pad, spatial, kernel, strides, dilations)
            node.attribute.remove(next(a for a in node.attribute if a.name == "auto_pad"))
        else:
            pads = list(attrs.get("pads", [0] * (2 * len(spatial))))
        _set(node, "kernel_shape", kernel)
        _set(node, "strides", strides)
        _set(node, "pads", pads)
        if node.op_type in ("Conv", "MaxPool") or "dilations" in attrs:
            _set(node, "dilations", dilations)
    onnx.checker.check_model(model, full_check=True)
    return model

