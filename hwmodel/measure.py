"""Measurement backends: real per-layer and whole-network latency of a layer table, by name.

    python -m experiments.measure --space mobile-curated --backend onnxruntime --num 300 --seed 0 \
        --out ort.csv --per-layer ort_layers.csv

A backend turns the table of one discrete architecture into a `Measurement`: the whole network's
latency (median of repeats, with the spread), and one latency per layer-table row (0 for rows that
do not execute: absent, dead, aliases, the input), so every measured layer maps back to its row.
Backends (`BACKENDS`, `make_backend(name)`):

- `jax`: `hwmodel.profile` on the current JAX device (XLA-compiled; the network jitted whole, each
  row jitted alone).
- `onnxruntime`: the same executor (`hwmodel.profile.build_network` / `layer_fn`, random weights,
  BatchNorm folded) exported with `jax2onnx` and run by ONNX Runtime on its CPU execution provider
  (or `providers=` of a GPU build), pinned to `threads` intra-op threads (1 by default, batch 1),
  `warmup` untimed runs, median of `repeats`. Graph optimisations are ONNX Runtime's default
  (`ORT_ENABLE_ALL`). Per-row times (`per_layer="profiler"`, the default) come from ORT's profiler
  on the whole-network session: jax2onnx names nodes by primitive (`node_Conv_8`), not by row, so
  `node_rows` walks the graph and the plan together (each row emits the op types it emits when
  exported alone), and `profiled_row_seconds` gives every kernel to its node's row. What ORT fuses
  on this CPU (measured, tests/test_measure.py): Conv + bias Add + Relu into one Conv kernel, the
  residual Add into the Conv before it (the ADD row then costs 0 and its time is the conv row's),
  the Transposes jax2onnx wraps NHWC convolutions in into NCHWc layout reorders (counted for the
  row they sit in). `per_layer="alone"` times each row as its own one-op session instead (no
  fusion, dispatch per row; sums 1.1-1.3x the whole network on mobile-curated, the profiler's rows
  1.02-1.07x, the rest being the profiler's own per-kernel overhead).

Per-layer results of rows timed alone (`jax`, `onnxruntime` with `per_layer="alone"`) are cached by the row's signature (op, channels, kernel, stride, groups,
spatial size, activation): a new network costs only its unseen layers; whole networks are not
cached (their latency is the measurement).

No file I/O here beyond the temporary directory ORT's profiler must write its JSON to:
`python -m experiments.measure` writes the CSVs, appending so a killed run resumes where it stopped.
"""

from __future__ import annotations

import abc
import dataclasses
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np

from hwmodel import profile
from hwmodel.layers import LayerTable, OpKind
from hwmodel.registry import Registry


@dataclasses.dataclass(frozen=True)
class Measurement:
    """One network's measurement.

    Attributes:
      latency_ms: whole-network latency (median over repeats).
      spread_ms: interquartile range of the whole-network repeats.
      layer_latency_ms: `[num_rows]` latency of each row run alone (0 where it does not execute).
      energy_mj: whole-network energy where the backend has it, else None.
      layer_energy_mj: per-row energy where the backend has it, else None.
    """

    latency_ms: float
    spread_ms: float
    layer_latency_ms: np.ndarray
    energy_mj: float | None = None
    layer_energy_mj: np.ndarray | None = None


def signature(r: profile.Row) -> tuple:
    """What makes two rows cost the same: op, channels, kernel, stride, groups, input size, activation."""
    return (int(r.op), r.c_in, r.c_out, r.kernel, r.stride, r.groups, r.h, r.w, r.act)


class Backend(abc.ABC):
    """A measurement backend: `measure(table)` of one discrete architecture, cached per distinct layer.

    Attributes:
      has_energy: whether `Measurement.energy_mj` is filled.
    """

    name: str = "backend"
    has_energy: bool = False

    def __init__(self) -> None:
        self._cache: dict[tuple, Any] = {}

    @property
    def cache_size(self) -> int:
        """Distinct layers measured so far."""
        return len(self._cache)

    @staticmethod
    def executed_rows(t: LayerTable) -> list[profile.Row]:
        """The rows of a concrete table that execute and compute (`hwmodel.profile.plan`)."""
        return [r for r, _ in profile.plan(t).steps if r.op not in profile.NO_COMPUTE_OPS]

    def prefetch(self, tables: Sequence[LayerTable]) -> None:
        """Measure the unseen layers of several networks ahead (batched backends); a no-op by default."""

    def close(self) -> None:
        """Releases what the backend holds (worker processes); a no-op by default."""

    @abc.abstractmethod
    def measure(self, table: LayerTable, layers: bool = True) -> Measurement:
        """Whole-network and (with `layers`) per-row results of one discrete architecture's table."""


class TimedBackend(Backend):
    """A backend that times real execution: the whole network, and each row run alone."""

    def __init__(self, warmup: int = 5, repeats: int = 30):
        super().__init__()
        if repeats < 1 or warmup < 0:
            raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}")
        self.warmup, self.repeats = warmup, repeats

    @abc.abstractmethod
    def _network_samples_s(self, table: LayerTable) -> np.ndarray:
        """Seconds of each repeat of the whole network."""

    @abc.abstractmethod
    def _layer_s(self, table: LayerTable, row: int) -> float:
        """Median seconds of one row run alone."""

    def measure(self, table: LayerTable, layers: bool = True) -> Measurement:
        t = profile.concrete(table)
        s = self._network_samples_s(t)
        q1, med, q3 = np.percentile(s, [25, 50, 75])
        per_row = np.zeros(t.num_rows)
        if layers:
            for r in self.executed_rows(t):
                key = signature(r)
                if key not in self._cache:
                    self._cache[key] = self._layer_s(t, r.index)
                per_row[r.index] = self._cache[key]
        return Measurement(latency_ms=1e3 * float(med), spread_ms=1e3 * float(q3 - q1),
                           layer_latency_ms=1e3 * per_row)


BACKENDS = Registry("measurement backend")


@BACKENDS.register("jax")
class JaxBackend(TimedBackend):
    """`hwmodel.profile` on the current JAX device."""

    name = "jax"

    def _network_samples_s(self, table: LayerTable) -> np.ndarray:
        r = profile.profile_network(table, warmup=self.warmup, repeats=self.repeats)
        return np.asarray(r.samples)

    def _layer_s(self, table: LayerTable, row: int) -> float:
        params, fn, shape = profile.layer_fn(table, row)
        x = profile.normal(jax.random.key(0), profile.INPUT_STREAM, shape)
        return profile.time_fn(fn, params, x, warmup=self.warmup, repeats=self.repeats,
                               min_time=1e-3).median_s


#: Layer kinds whose computation an ONNX Runtime kernel of each op type can be (a fused kernel keeps
#: its anchor's type: "Conv" for Conv + bias Add + Relu, also with the residual Add after it).
_ANCHOR_KINDS = {"Conv": (OpKind.CONV, OpKind.DWCONV, OpKind.AVGPOOL), "FusedConv": (OpKind.CONV, OpKind.DWCONV),
                 "Einsum": (OpKind.LINEAR,), "MatMul": (OpKind.LINEAR,), "Gemm": (OpKind.LINEAR,),
                 "ReduceMean": (OpKind.GAP,)}


class ProfileMappingError(RuntimeError):
    """The exported network's nodes could not be matched to its layer-table rows."""


#: ONNX op types that only move data between layouts; jax2onnx cancels pairs of them between
#: consecutive rows, so the alignment skips them (each goes to the row of the next other node).
_LAYOUT_OPS = frozenset({"Transpose"})


def node_rows(model_ops: Sequence[str], steps: Sequence[tuple[profile.Row, Sequence[int]]],
              row_ops: Callable[[profile.Row], Sequence[str]]) -> np.ndarray:
    """The layer-table row of every node of a whole-network graph, walking both in order.

    `model_ops` are the op types of the exported network's nodes in graph order (jax2onnx emits
    them in program order, row after row), `steps` the executor's plan (`profile.plan(t).steps`),
    `row_ops(r)` the op types row `r` emits when exported alone. A merge of several inputs (the
    node sums of NAS-Bench-201, a MIX or IDENTITY row) emits one Add per extra input and its Relu.
    Layout nodes (`_LAYOUT_OPS`) are skipped in the comparison and belong to the row of the next
    other node; nodes after the last row (the output flatten) belong to the last row.

    Raises:
      ProfileMappingError: the sequences do not line up (names the row and the nodes).
    """
    rows = np.full(len(model_ops), -1, np.int64)
    p, pending = 0, []
    for r, ins in steps:
        if r.op in (OpKind.MIX, OpKind.IDENTITY):
            want = ["Add"] * (len(ins) - 1) + (["Relu"] if r.act == 1 and len(ins) > 1 else [])
        else:
            want = [o for o in row_ops(r) if o not in _LAYOUT_OPS]
        for k, op in enumerate(want):
            while p < len(model_ops) and model_ops[p] in _LAYOUT_OPS:
                pending.append(p)
                p += 1
            if p >= len(model_ops) or model_ops[p] != op:
                raise ProfileMappingError(
                    f"{r.describe()}: expected ONNX nodes {want} (layout ops aside), node {k} is "
                    f"{model_ops[p] if p < len(model_ops) else 'past the end'} at graph node {p}")
            rows[pending + [p]] = r.index
            pending, p = [], p + 1
    rows[rows < 0] = steps[-1][0].index if steps else 0
    return rows


def profiled_row_seconds(events: Sequence[dict], node_ops: Sequence[str], node_row: np.ndarray,
                         row_kind: Sequence[int], skip: int = 0) -> np.ndarray:
    """Seconds per layer-table row, the mean over profiled runs, from ORT profiler events.

    Runs are delimited by the profiler's `model_run` events; the first `skip` (warm-up) are
    dropped. Each `Node` kernel-time event goes to a row:
    - named after an original node (`node_<Op>_<n>`; a fused kernel carries the name of its last
      fused node, `node_Relu_5_nchwc`): that node's row, moved back to the nearest earlier node
      whose row is of a kind the kernel's op type runs (`_ANCHOR_KINDS`: a Conv fused with the
      residual Add after it is the conv's time, not the Add's);
    - renamed by ORT (a layout-transformed node, `ReduceMean_0`): the next original node of its op
      type after the previous event's, else the previous event's row (ORT's own reorder kernels).
    Every microsecond the profiler reports for a kept run lands in exactly one row.
    """
    import re
    kinds = np.asarray(row_kind)
    total = np.zeros(len(kinds))
    starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    if len(starts) <= skip:
        raise ProfileMappingError(f"the profile holds {len(starts)} runs, none after the {skip} skipped")
    pos, run = -1, 0
    for e in sorted(events, key=lambda e: e.get("ts", 0)):
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        while run + 1 < len(starts) and e["ts"] >= starts[run + 1]:  # the next run starts over
            run, pos = run + 1, -1
        name, op = e["name"], e.get("args", {}).get("op_name", "")
        m = re.match(r"node_[A-Za-z]+_(\d+)", name)
        n = int(m.group(1)) if m and int(m.group(1)) < len(node_row) else \
            next((j for j in range(pos + 1, len(node_ops)) if node_ops[j] == op), None)
        if n is not None:
            allowed = _ANCHOR_KINDS.get(op)
            while allowed and n > 0 and kinds[node_row[n]] not in allowed:
                n -= 1
            pos = n
        if run >= skip:
            total[node_row[max(pos, 0)]] += float(e["dur"]) * 1e-6
    return total / (len(starts) - skip)


@BACKENDS.register("onnxruntime")
class OnnxRuntimeBackend(TimedBackend):
    """ONNX Runtime on exported graphs of the table executor (module docstring)."""

    name = "onnxruntime"

    #: How per-row times are obtained: "profiler" (ORT's profiler on the whole-network session,
    #: kernels mapped to rows; fused kernels count for their anchor row) or "alone" (each row its
    #: own one-op session; sees no fusion and pays dispatch per row).
    PER_LAYER_MODES = ("profiler", "alone")

    def __init__(self, warmup: int = 5, repeats: int = 30, threads: int = 1,
                 providers: Sequence[str] = ("CPUExecutionProvider",), per_layer: str = "profiler",
                 profiled_runs: int = 10):
        super().__init__(warmup, repeats)
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        if per_layer not in self.PER_LAYER_MODES:
            raise ValueError(f"per_layer must be one of {self.PER_LAYER_MODES}, got {per_layer!r}")
        if profiled_runs < 1:
            raise ValueError(f"profiled_runs must be >= 1, got {profiled_runs}")
        self.threads, self.providers = threads, tuple(providers)
        self.per_layer, self.profiled_runs = per_layer, profiled_runs
        self._row_ops: dict[tuple, list[str]] = {}

    @staticmethod
    def _export(fn: Callable, shape: tuple[int, ...]):
        import jax2onnx
        return jax2onnx.to_onnx(fn, [shape], return_mode="proto")

    def _session(self, fn: Callable | None, shape: tuple[int, ...], model=None, profile_dir: str | None = None):
        import onnxruntime as ort
        model = self._export(fn, shape) if model is None else model
        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = self.threads
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if profile_dir is not None:
            import os
            so.enable_profiling = True
            so.profile_file_prefix = os.path.join(profile_dir, "ort")
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=list(self.providers))
        x = np.asarray(profile.normal(jax.random.key(0), profile.INPUT_STREAM, shape))
        feed = {sess.get_inputs()[0].name: x}
        return sess, feed

    def _ops_alone(self, t: LayerTable, r: profile.Row) -> list[str]:
        """ONNX op types of row `r` exported alone (cached per signature)."""
        key = signature(r)
        if key not in self._row_ops:
            params, fn, shape = profile.layer_fn(t, r.index)
            self._row_ops[key] = [n.op_type for n in self._export(lambda x: fn(params, x), shape).graph.node]
        return self._row_ops[key]

    def measure(self, table: LayerTable, layers: bool = True) -> Measurement:
        if self.per_layer == "alone":
            return super().measure(table, layers)
        import json
        import tempfile
        t = profile.concrete(table)
        pl = profile.plan(t)
        params, apply = profile.build_network(t)
        shape = (1, *pl.in_shape)
        model = self._export(lambda x: apply(params, x), shape)
        sess, feed = self._session(None, shape, model)
        s = self._samples(sess, feed)
        q1, med, q3 = np.percentile(s, [25, 50, 75])
        per_row = np.zeros(t.num_rows)
        if layers:
            ops = [n.op_type for n in model.graph.node]
            rows = node_rows(ops, pl.steps, lambda r: self._ops_alone(t, r))
            with tempfile.TemporaryDirectory() as d:  # ORT writes its profile as a JSON file
                psess, pfeed = self._session(None, shape, model, profile_dir=d)
                for _ in range(self.warmup + self.profiled_runs):
                    psess.run(None, pfeed)
                with open(psess.end_profiling()) as f:
                    events = json.load(f)
            kinds = [int(t.op[i]) for i in range(t.num_rows)]
            per_row = profiled_row_seconds(events, ops, rows, kinds, skip=self.warmup)
        return Measurement(latency_ms=1e3 * float(med), spread_ms=1e3 * float(q3 - q1),
                           layer_latency_ms=1e3 * per_row)

    def _samples(self, sess, feed, number: int = 1) -> np.ndarray:
        for _ in range(self.warmup):
            sess.run(None, feed)
        out = []
        for _ in range(self.repeats):
            t0 = time.perf_counter()
            for _ in range(number):
                sess.run(None, feed)
            out.append((time.perf_counter() - t0) / number)
        return np.asarray(out)

    def _network_samples_s(self, table: LayerTable) -> np.ndarray:
        params, apply = profile.build_network(table)
        shape = (1, *profile.plan(table).in_shape)
        sess, feed = self._session(lambda x: apply(params, x), shape)
        return self._samples(sess, feed)

    def _layer_s(self, table: LayerTable, row: int) -> float:
        params, fn, shape = profile.layer_fn(table, row)
        sess, feed = self._session(lambda x: fn(params, x), shape)
        t0 = time.perf_counter()
        sess.run(None, feed)
        once = time.perf_counter() - t0
        number = max(1, int(1e-3 / max(once, 1e-7)))  # samples of >= ~1 ms: above timer noise
        return float(np.median(self._samples(sess, feed, number)))


def make_backend(name: str, **kwargs: Any) -> Backend:
    """The backend registered as `name`; `zigzag:<description>` picks a ZigZag description.

    Unknown names (and unknown ZigZag descriptions) list the valid ones.
    """
    base, _, arg = name.partition(":")
    if base == "zigzag":
        return BACKENDS[base](description=arg or "edge_tpu_like", **kwargs)
    if arg:
        raise KeyError(f"backend {base!r} takes no ':{arg}' (only zigzag:<description> does)")
    return BACKENDS[name](**kwargs)
