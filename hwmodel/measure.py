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
  (`ORT_ENABLE_ALL`): it folds constants and fuses Conv + Add(bias) + Relu, so the per-row
  numbers are of rows run alone (each a one-op graph) and their sum differs from the whole network
  by dispatch overhead and the fusions of consecutive rows (measured and reported, not hidden).

Per-layer results are cached by the row's signature (op, channels, kernel, stride, groups,
spatial size, activation): a new network costs only its unseen layers; whole networks are not
cached (their latency is the measurement).

No file I/O here: `python -m experiments.measure` writes the CSVs, appending so a killed run
resumes where it stopped.
"""

from __future__ import annotations

import abc
import dataclasses
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np

from hwmodel import profile
from hwmodel.layers import LayerTable
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


@BACKENDS.register("onnxruntime")
class OnnxRuntimeBackend(TimedBackend):
    """ONNX Runtime on exported graphs of the table executor (module docstring)."""

    name = "onnxruntime"

    def __init__(self, warmup: int = 5, repeats: int = 30, threads: int = 1,
                 providers: Sequence[str] = ("CPUExecutionProvider",)):
        super().__init__(warmup, repeats)
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.threads, self.providers = threads, tuple(providers)

    def _session(self, fn: Callable, shape: tuple[int, ...]):
        import jax2onnx
        import onnxruntime as ort
        model = jax2onnx.to_onnx(fn, [shape], return_mode="proto")
        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = self.threads
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=list(self.providers))
        x = np.asarray(profile.normal(jax.random.key(0), profile.INPUT_STREAM, shape))
        feed = {sess.get_inputs()[0].name: x}
        return sess, feed

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
