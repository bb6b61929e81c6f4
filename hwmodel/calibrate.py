"""Calibrating the analytic accelerator model to measurements: fit an `AcceleratorSpec`'s free numbers.

`hwmodel.analytic` prices a layer as `max(cycles / clock, bytes / bandwidth) + overhead`, with
integer array dimensions that decide the tiling staircase. Most presets' continuous numbers are
assumptions (see each preset's `source`); given measured whole-network latencies of some
architectures on a backend (ZigZag, ONNX Runtime, a phone), `calibrate` fits them:

- `clock_hz`: the effective compute rate of the MAC array (absorbs utilisation below peak);
- `dram_bytes_per_s`: the effective bandwidth of weight and spilled-activation traffic;
- `layer_overhead_s`: the fixed cost per layer (dispatch, pipeline fill), the term fusion saves;
- `vector_lanes`: the width of the unit that runs pooling and residual adds;
- `depthwise_efficiency`: how many more lanes than the array's diagonal a depthwise conv uses.

The integer array shape (`mac_rows`, `mac_cols`, `cores`) and the buffer size stay as given: they
come from the hardware description, and the fit only sets the rates. The objective is the mean
squared log ratio of predicted to measured latency (relative error, scale-free), minimised by
Nelder-Mead on the logarithms of the parameters (positive by construction), starting from `spec`.
The analytic model is evaluated eagerly on a stacked batch of tables (no recompilation per trial).

Example:
    >>> import numpy as np
    >>> from hwmodel.accelerators import ACCELERATORS
    >>> from hwmodel.layers import LayerTable, OpKind, stack
    >>> from hwmodel import analytic
    >>> tables = stack([LayerTable.from_rows([dict(op=OpKind.INPUT, c_out=16, h=32, w=32),
    ...     dict(op=OpKind.CONV, src=0, c_in=16, c_out=c, kernel=k, h=32, w=32)]) for c in (16, 64) for k in (1, 3)])
    >>> true = dataclasses.replace(ACCELERATORS["npu"], clock_hz=0.5e9, layer_overhead_s=5e-6)
    >>> y = np.asarray(analytic.latency_ms(true, tables))
    >>> fitted = calibrate(ACCELERATORS["npu"], tables, y, fields=("clock_hz", "layer_overhead_s"))
    >>> round(fitted.clock_hz / 1e9, 2), round(fitted.layer_overhead_s * 1e6, 2)
    (0.5, 5.0)
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from scipy import optimize

from hwmodel import analytic
from hwmodel.accelerators import AcceleratorSpec
from hwmodel.layers import LayerTable

#: The continuous `AcceleratorSpec` fields `calibrate` may fit.
FREE_FIELDS = ("clock_hz", "dram_bytes_per_s", "layer_overhead_s", "vector_lanes", "depthwise_efficiency")


def calibrate(spec: AcceleratorSpec, tables: LayerTable, latency_ms: np.ndarray,
              fields: Sequence[str] = FREE_FIELDS, name: str | None = None,
              source: str = "", max_iter: int = 2000) -> AcceleratorSpec:
    """`spec` with `fields` fitted to `latency_ms` of the stacked discrete `tables` (module docstring).

    Args:
      spec: the starting point; its integer array shape and buffer are kept.
      tables: `[N, L]` layer tables of the measured architectures (`hwmodel.layers.stack`).
      latency_ms: `[N]` measured whole-network latencies in milliseconds.
      fields: which of `FREE_FIELDS` to fit.
      name, source: the calibrated preset's name and where its numbers come from.
      max_iter: Nelder-Mead iterations.

    Returns:
      The calibrated spec.
    """
    bad = [f for f in fields if f not in FREE_FIELDS]
    if bad or not fields:
        raise ValueError(f"fields must be a non-empty subset of {FREE_FIELDS}, got {tuple(fields)}")
    y = np.asarray(latency_ms, np.float64)
    if y.ndim != 1 or y.shape[0] != tables.op.shape[0] or tables.op.ndim != 2:
        raise ValueError(f"need [N, L] tables with one latency each; got tables {tables.op.shape} "
                         f"and latencies {y.shape}")
    if y.size < len(fields) or not np.all(np.isfinite(y)) or np.any(y <= 0):
        raise ValueError(f"need at least {len(fields)} finite, positive latencies (ms), got {y.size}")
    x0 = np.log([max(float(getattr(spec, f)), 1e-9) for f in fields])

    def make(z: np.ndarray) -> AcceleratorSpec:
        vals = dict(zip(fields, np.exp(z).tolist()))
        return dataclasses.replace(spec, **vals)

    def loss(z: np.ndarray) -> float:
        pred = np.asarray(analytic.latency_ms(make(z), tables), np.float64)
        return float(np.mean(np.log(np.maximum(pred, 1e-12) / y) ** 2))

    res = optimize.minimize(loss, x0, method="Nelder-Mead",
                            options={"maxiter": max_iter, "xatol": 1e-4, "fatol": 1e-10})
    out = make(res.x)
    return dataclasses.replace(out, name=name or f"{spec.name}-calibrated",
                               source=source or f"{spec.name} with {', '.join(fields)} fitted to "
                                                f"{y.size} measured networks")
