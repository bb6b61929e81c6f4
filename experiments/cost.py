"""Cost an external ONNX model: MACs, parameters, latency (and energy) on a cost model.

    python -m experiments.cost --onnx model.onnx --backend analytic:npu --json
    python -m experiments.cost --onnx model.onnx --backend zigzag:edge_tpu_like --json
    python -m experiments.cost --onnx model.onnx --backend surrogate:fitted.json --json

The graph becomes a layer table (`hwmodel.onnx_graph.layer_table`: batch 1, static shapes;
weights may be stored externally and absent, only their shapes are read). Backends:
`analytic:<preset>` (`hwmodel.ACCELERATORS`), `surrogate:<file>` (a surrogate saved by
`python -m experiments.fit_surrogate --save`) and `zigzag:<description>` (the simulator, which
also gives energy). Prints `macs`, `params`, `rows`, `latency_ms` and, where the backend has
it, `energy_mj`.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

import numpy as np
import onnx

from experiments.config import cli_errors
from hwmodel import ACCELERATORS, analytic
from hwmodel.layers import macs, total_params
from hwmodel.onnx_graph import OnnxCostError, computing_rows, layer_table
from hwmodel.surrogate import predict

BACKEND_KINDS = ("analytic", "surrogate", "zigzag")


def cost(model: onnx.ModelProto, backend: str) -> dict:
    """The cost summary of one ONNX model on one backend (see the module docstring)."""
    kind, _, arg = backend.partition(":")
    if kind not in BACKEND_KINDS or not arg:
        raise ValueError(f"unknown backend {backend!r}; write analytic:<preset>, surrogate:<file.json> or "
                         "zigzag:<description>")
    table = layer_table(model)
    out = {"rows": int(len(computing_rows(table))), "macs": float(np.sum(np.asarray(macs(table)) *
                                                                       np.asarray(table.weight))),
           "params": float(total_params(table)), "backend": backend}
    if kind == "analytic":
        out["latency_ms"] = float(analytic.latency_ms(ACCELERATORS[arg], table))
    elif kind == "surrogate":
        from experiments.fit_surrogate import load_surrogate
        out["latency_ms"] = float(predict(load_surrogate(arg), table))
    else:
        from hwmodel.measure import make_backend
        m = make_backend(f"zigzag:{arg}").measure_rows(table, computing_rows(table))
        out |= {"latency_ms": m.latency_ms, "energy_mj": m.energy_mj}
    return out


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m experiments.cost", description=__doc__.split("\n\n")[0])
    p.add_argument("--onnx", required=True, help="the ONNX model file")
    p.add_argument("--backend", default="analytic:npu",
                   help="analytic:<preset>, surrogate:<file.json> or zigzag:<description>")
    p.add_argument("--json", action="store_true", help="print one JSON object (default: readable)")
    args = p.parse_args(argv)
    if not os.path.isfile(args.onnx):
        p.exit(2, f"error: ONNX file {args.onnx!r} not found\n")
    try:
        model = onnx.load(args.onnx, load_external_data=False)
    except Exception as e:  # noqa: BLE001  (protobuf decode errors have several types)
        p.exit(2, f"error: {args.onnx} is not a readable ONNX model ({type(e).__name__}: {e})\n")
    with cli_errors(p, also=(OnnxCostError, ValueError)):
        res = {"model": args.onnx} | cost(model, args.backend)
    from experiments.fit_surrogate import print_result
    print_result(res, args.json)
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
