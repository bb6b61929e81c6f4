"""The ZigZag accelerator simulator as a measurement backend: `zigzag:<description>`.

    python -m experiments.measure --space mobile-curated --backend zigzag:edge_tpu_like --num 300 \
        --out zz.csv --per-layer zz_layers.csv

ZigZag (Mei et al., "ZigZag: Enlarging Joint Architecture-Mapping Design Space Exploration for DNN
Accelerators", IEEE TC 2021; package `zigzag-dse`, MIT) searches the spatial and temporal mapping of
one layer on an accelerator description (a MAC array and its memory hierarchy) and reports the
cycles and energy of the best mapping found. It was written by others, so it is the independent
check of our analytic model (`hwmodel.analytic`) that the issue asks for.

What this backend does with it:
- Each layer-table row that computes becomes one ZigZag layer in ZigZag's own user format (the
  equations its ONNX parser writes): CONV (`groups` as ZigZag's G), DWCONV, LINEAR (Gemm),
  AVGPOOL and GAP (Pooling, weightless), ADD (elementwise, two activation operands). SHUFFLE,
  UPSAMPLE and CONCAT are pure data movement that ZigZag's layer format cannot express; they cost
  0 here (FBNet's grouped blocks; the decoders of detection and segmentation heads). 8-bit weights and activations, 16-bit partial sums (ZigZag's ONNX defaults).
- Depthwise convolutions get their own spatial mapping (`depthwise_mapping`): the array dimension
  that the description's default mapping unrolls over output channels K is unrolled over channel
  groups G instead, and the one over input channels C over the kernel width FX (a reduction, as C
  is). The stock mappings unroll K and C, both of size 1 in a depthwise layer, and leave the
  array about 1-3 % used.
- ZigZag evaluates layers one at a time (no inter-layer overlap in this mode), so a network's
  latency and energy are the sums over its rows; `spread_ms` is 0 (the simulator is exact).
- Only ZigZag's mapping-search and cost-model stages run (`_STAGES`), in memory: no parser files
  are read except the shipped description, no result files, no visualisation stage (which fails
  on some descriptions), and ZigZag's loggers are quietened only while it runs.
- The descriptions carry no clock: latency is cycles / `clock_mhz` (1 GHz by default for every
  description; rankings, Spearman and MAPE do not depend on it).
- Results are cached per distinct layer (`hwmodel.measure` signature); `prefetch(tables)` costs the
  unseen layers of many networks on `workers` processes, which is what makes 300 networks fast.

The LOMA temporal-mapping search enumerates orderings of each layer's loop prime factors;
`lpf_limit` (ZigZag's default 6) bounds how many; 4 gives the same cycles on the layers we checked
(1x1, 3x3 and depthwise convolutions of the mobile space) at a fraction of the time.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
from concurrent.futures import ProcessPoolExecutor
import multiprocessing
from typing import Any, Iterable, Sequence

import numpy as np

from hwmodel import profile
from hwmodel.layers import LayerTable, OpKind
from hwmodel.measure import BACKENDS, Backend, Measurement, signature

#: Shipped ZigZag descriptions this backend accepts: name -> (hardware yaml, mapping yaml).
DESCRIPTIONS: dict[str, tuple[str, str]] = {
    "edge_tpu_like": ("edge_tpu_like", "edge_tpu_like"),
    "tpu_like": ("tpu_like", "tpu_like"),
    "tesla_npu_like": ("tesla_npu_like", "tesla_npu_like"),
    "ascend_like": ("ascend_like", "ascend_like"),
    "eyeriss_like": ("eyeriss_like", "default"),  # ZigZag ships no eyeriss mapping: its default
    "meta_prototype": ("meta_prototype", "meta_prototype_like"),
}
_PRECISION = {"W": 8, "I": 8, "O": 16, "O_final": 8}
DEPTHWISE = "depthwise"  # the layer name that selects `depthwise_mapping`


def _inputs_dir() -> str:
    import zigzag
    return os.path.join(os.path.dirname(zigzag.__file__), "inputs")


def _check(description: str) -> None:
    if description not in DESCRIPTIONS:
        raise KeyError(f"unknown ZigZag description {description!r}; valid names: "
                       f"{', '.join(sorted(DESCRIPTIONS))} (write the backend as zigzag:<name>)")


def depthwise_mapping(default: dict[str, Any]) -> dict[str, Any]:
    """The `depthwise` mapping entry derived from a description's `default` entry (module docstring).

    Example:
        >>> m = depthwise_mapping({"name": "default", "spatial_mapping": {"D1": ["K, 8"], "D2": ["C, 8"],
        ...                        "D3": ["OX, 4"]}, "memory_operand_links": {"O": "O", "W": "I2", "I": "I1"}})
        >>> m["name"], m["spatial_mapping"]
        ('depthwise', {'D1': ['G, 8'], 'D2': ['FX, 8'], 'D3': ['OX, 4']})
    """
    out = copy.deepcopy(default)
    out["name"] = DEPTHWISE
    swap = {"K": "G", "C": "FX"}
    sm = {}
    for dim, unrolls in default["spatial_mapping"].items():
        sm[dim] = [f"{swap.get(u.split(',')[0].strip(), u.split(',')[0].strip())}, {u.split(',')[-1].strip()}"
                   for u in unrolls]
    if not any(u.startswith("G,") for us in sm.values() for u in us):
        first = next(iter(sm))
        sm[first] = [f"G, {sm[first][0].split(',')[-1].strip()}"]
    out["spatial_mapping"] = sm
    return out


def _same_pads(size: int, k: int, s: int) -> list[int]:
    """XLA/ONNX 'SAME' padding (before, after) of one spatial axis (`hwmodel.profile` executes SAME)."""
    o = math.ceil(size / s)
    total = max((o - 1) * s + k - size, 0)
    return [total // 2, total - total // 2]


def layer_workload(r: profile.Row, depthwise: bool = True) -> dict[str, Any] | None:
    """One row as a ZigZag layer (user format, id 0), or None for a row ZigZag cannot cost (data movement).

    `depthwise=False` leaves depthwise convolutions on the description's default mapping (as
    ZigZag's own ONNX flow does), for comparison with ZigZag's totals.

    Example:
        >>> from hwmodel.profile import Row
        >>> w = layer_workload(Row(1, OpKind.DWCONV, 0, -1, 1, 32, 32, 3, 2, 32, 16, 16))
        >>> w["name"], dict(zip(w["loop_dims"], w["loop_sizes"]))["G"], w["padding"]
        ('depthwise', 32, [[0, 1], [0, 1]])
    """
    base = {"id": 0, "operand_precision": dict(_PRECISION), "operand_source": {"I": 0}}
    if r.op in (OpKind.CONV, OpKind.DWCONV):
        g = r.c_in if r.op == OpKind.DWCONV else r.groups
        k, s = r.kernel, r.stride
        return base | {
            "name": DEPTHWISE if r.op == OpKind.DWCONV and depthwise else "conv", "operator_type": "Conv",
            "equation": "O[b][g][k][oy][ox]+=W[g][k][c][fy][fx]*I[b][g][c][iy][ix]",
            "dimension_relations": [f"ix={s}*ox+1*fx", f"iy={s}*oy+1*fy"],
            "loop_dims": ["B", "K", "G", "OX", "OY", "C", "FX", "FY"],
            "loop_sizes": [1, r.c_out // g, g, math.ceil(r.w / s), math.ceil(r.h / s), r.c_in // g, k, k],
            "pr_loop_dims": ["IX", "IY"], "pr_loop_sizes": [r.w, r.h],
            "padding": [_same_pads(r.w, k, s), _same_pads(r.h, k, s)]}
    if r.op in (OpKind.AVGPOOL, OpKind.GAP):
        gap = r.op == OpKind.GAP
        kx, ky, s = (r.w, r.h, 1) if gap else (r.kernel, r.kernel, r.stride)
        ox, oy = (1, 1) if gap else (math.ceil(r.w / s), math.ceil(r.h / s))
        layer = base | {
            "name": "pool", "operator_type": "Pooling",
            "equation": "O[b][g][oy][ox]+=W[fy][fx]*I[b][g][iy][ix]",
            "dimension_relations": [f"ix={s}*ox+1*fx", f"iy={s}*oy+1*fy"],
            "loop_dims": ["B", "G", "OX", "OY", "FX", "FY"], "loop_sizes": [1, r.c_in, ox, oy, kx, ky]}
        layer["operand_precision"] = _PRECISION | {"W": 0}  # the window's 1/K^2 is not a stored weight
        if not gap:
            layer |= {"pr_loop_dims": ["IX", "IY"], "pr_loop_sizes": [r.w, r.h],
                      "padding": [_same_pads(r.w, kx, s), _same_pads(r.h, ky, s)]}
        return layer
    if r.op == OpKind.ADD:
        return base | {
            "name": "add", "operator_type": "Add",
            "equation": "O[b][g][oy][ox]+=W[b][g][oy][ox]+I[b][g][oy][ox]",
            "loop_dims": ["B", "G", "OX", "OY"], "loop_sizes": [1, r.c_in, r.w, r.h],
            "operand_precision": _PRECISION | {"O": 8}}
    if r.op == OpKind.LINEAR:
        return base | {
            "name": "linear", "operator_type": "Gemm", "equation": "O[b][k]+=W[k][c]*I[b][c]",
            "loop_dims": ["B", "K", "C"], "loop_sizes": [1, r.c_out, r.c_in]}
    if r.op in (OpKind.SHUFFLE, OpKind.UPSAMPLE, OpKind.CONCAT):
        return None
    raise ValueError(f"{r.describe()}: no ZigZag layer for op {r.op.name}")


@contextlib.contextmanager
def _quiet_zigzag():
    """ZigZag's loggers at ERROR while it runs, restored after (the caller's logging is untouched)."""
    log = logging.getLogger("zigzag")
    level, log.level = log.level, logging.ERROR
    try:
        yield
    finally:
        log.setLevel(level)


class _Simulator:
    """The parsed accelerator and mappings of one description (built once per process)."""

    def __init__(self, description: str, lpf_limit: int):
        from zigzag.parser.mapping_validator import MappingValidator
        from zigzag.stages.parser.accelerator_parser import AcceleratorParserStage
        from zigzag.utils import open_yaml
        hw, mp = DESCRIPTIONS[description]
        d = _inputs_dir()
        with _quiet_zigzag():
            self.accelerator = AcceleratorParserStage.parse_accelerator(f"{d}/hardware/{hw}.yaml")
            mapping = [m for m in open_yaml(f"{d}/mapping/{mp}.yaml") if m["name"] != DEPTHWISE]
            mapping.append(depthwise_mapping(next(m for m in mapping if m["name"] == "default")))
            v = MappingValidator(mapping)
            self.mapping = v.normalized_data
            if not v.validate():
                raise ValueError(f"ZigZag rejected the mapping derived for {description!r}")
        self.description, self.lpf_limit = description, lpf_limit

    def cost(self, layer: dict[str, Any]) -> tuple[float, float]:
        """(cycles, energy in pJ) of ZigZag's minimal-latency mapping of one layer."""
        from zigzag.mapping.temporal_mapping import TemporalMappingType
        from zigzag.parser.workload_factory import WorkloadFactory
        from zigzag.parser.workload_validator import WorkloadValidator
        from zigzag.stages.evaluation.cost_model_evaluation import CostModelStage
        from zigzag.stages.main import MainStage
        from zigzag.stages.mapping.spatial_mapping_generation import SpatialMappingGeneratorStage
        from zigzag.stages.mapping.temporal_mapping_generator_stage import TemporalMappingGeneratorStage
        from zigzag.stages.results.reduce_stages import MinimalLatencyStage
        with _quiet_zigzag():
            v = WorkloadValidator([layer])
            data = v.normalized_data
            if not v.validate():
                raise ValueError(f"ZigZag rejected layer {layer}")
            node = next(iter(WorkloadFactory(data, self.mapping).create().topological_sort()))
            stages = [MinimalLatencyStage, SpatialMappingGeneratorStage, MinimalLatencyStage,
                      TemporalMappingGeneratorStage, CostModelStage]
            cmes = MainStage(stages, accelerator=self.accelerator, layer=node, loma_lpf_limit=self.lpf_limit,
                             loma_show_progress_bar=False, nb_mappings_generated=1,
                             access_same_data_considered_as_no_access=True,
                             temporal_mapping_type=TemporalMappingType.UNEVEN).run()
        cme = cmes[0][0]
        return float(cme.latency_total2), float(cme.energy_total)


_WORKER: _Simulator | None = None


def _worker_init(description: str, lpf_limit: int) -> None:
    global _WORKER
    _WORKER = _Simulator(description, lpf_limit)


def _worker_cost(layer: dict[str, Any]) -> tuple[float, float]:
    assert _WORKER is not None
    return _WORKER.cost(layer)


@BACKENDS.register("zigzag")
class ZigZagBackend(Backend):
    """ZigZag on one shipped description (module docstring); `make_backend("zigzag:edge_tpu_like")`."""

    name = "zigzag"
    has_energy = True

    def __init__(self, description: str = "edge_tpu_like", clock_mhz: float = 1000.0, lpf_limit: int = 4,
                 workers: int = 1, depthwise_mapping: bool = True):
        super().__init__()
        _check(description)
        if clock_mhz <= 0 or lpf_limit < 1 or workers < 1:
            raise ValueError(f"clock_mhz must be > 0, lpf_limit and workers >= 1; got {clock_mhz}, "
                             f"{lpf_limit}, {workers}")
        self.description, self.clock_mhz = description, clock_mhz
        self.lpf_limit, self.workers, self.depthwise_mapping = lpf_limit, workers, depthwise_mapping
        self._sim: _Simulator | None = None
        self._pool: ProcessPoolExecutor | None = None

    def close(self) -> None:
        """Stops the worker processes (if any)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def _simulator(self) -> _Simulator:
        if self._sim is None:
            self._sim = _Simulator(self.description, self.lpf_limit)
        return self._sim

    def _cost_rows(self, rows: Sequence[profile.Row]) -> None:
        """Cost the rows whose signature is not cached (in parallel when `workers` > 1)."""
        todo: dict[tuple, dict[str, Any] | None] = {}
        for r in rows:
            key = signature(r)
            if key not in self._cache and key not in todo:
                todo[key] = layer_workload(r, self.depthwise_mapping)
        jobs = [(k, w) for k, w in todo.items() if w is not None]
        for k, w in todo.items():
            if w is None:
                self._cache[k] = (0.0, 0.0)
        if self.workers > 1 and len(jobs) > 1:
            if self._pool is None:  # kept across calls: a worker's start (imports, parsing) costs seconds
                ctx = multiprocessing.get_context("spawn")  # the parent runs JAX: never fork it
                self._pool = ProcessPoolExecutor(self.workers, ctx, _worker_init,
                                                 (self.description, self.lpf_limit))
            for (k, _), res in zip(jobs, self._pool.map(_worker_cost, [w for _, w in jobs])):
                self._cache[k] = res
        else:
            for k, w in jobs:
                self._cache[k] = self._simulator().cost(w)

    def prefetch(self, tables: Iterable[LayerTable]) -> None:
        """Cost every unseen layer of these networks at once (`workers` processes)."""
        rows = [r for t in tables for r in self.executed_rows(profile.concrete(t))]
        self._cost_rows(rows)

    def measure(self, table: LayerTable, layers: bool = True) -> Measurement:
        """Sums of per-row cycles and energy (ZigZag runs layer by layer); `layers` is ignored."""
        t = profile.concrete(table)
        return self.measure_rows(t, [r.index for r in self.executed_rows(t)])

    def measure_rows(self, table: LayerTable, rows: Sequence[int]) -> Measurement:
        """Costs the given rows of one network's table, without executing its graph (for tables
        of external ONNX graphs, `hwmodel.onnx_graph`, whose Concat rows `profile` cannot run)."""
        t = table.to_numpy()
        rs = [profile.table_row(t, int(i)) for i in rows]
        self._cost_rows(rs)
        cycles, energy = np.zeros(t.num_rows), np.zeros(t.num_rows)
        for r in rs:
            cycles[r.index], energy[r.index] = self._cache[signature(r)]
        lat = cycles / (self.clock_mhz * 1e3)  # cycles / (MHz * 1e6) s, in ms
        e_mj = energy * 1e-9  # pJ -> mJ
        return Measurement(latency_ms=float(lat.sum()), spread_ms=0.0, layer_latency_ms=lat,
                           energy_mj=float(e_mj.sum()), layer_energy_mj=e_mj)


def analytic_spec(description: str, clock_mhz: float = 1000.0) -> "AcceleratorSpec":
    """An `AcceleratorSpec` read off a ZigZag description: the analytic model's view of that chip.

    Array shape from the description's default spatial mapping (`mac_rows` = the unrolling of input
    channels C, `mac_cols` = of output channels K, `cores` = of everything else, e.g. OX x OY),
    `sram_bytes` = 0 (ZigZag costs one layer at a time with its operands' top memory level, DRAM,
    holding the layer's inputs and outputs: every layer streams its activations through the DRAM
    port, nothing stays resident between layers; the largest on-chip buffer holding activations
    only bounds tiles inside a layer), `dram_bytes_per_s` = the DRAM
    port's bits per cycle at `clock_mhz`, `vector_lanes` = the unrolling of the `Add` mapping (else
    `mac_cols`), no per-layer overhead (ZigZag charges data on/off-loading per layer instead; a
    small start value for `hwmodel.calibrate`), int8. Before calibration this is what the
    analytic model alone would say about the description.
    """
    from zigzag.utils import open_yaml

    from hwmodel.accelerators import AcceleratorSpec
    _check(description)
    hw_name, mp_name = DESCRIPTIONS[description]
    d = _inputs_dir()
    hw = open_yaml(f"{d}/hardware/{hw_name}.yaml")
    mapping = open_yaml(f"{d}/mapping/{mp_name}.yaml")
    sizes = dict(zip(hw["operational_array"]["dimensions"], hw["operational_array"]["sizes"]))

    def unrolls(entry: dict) -> dict[str, int]:
        out: dict[str, int] = {}
        for dim, us in entry["spatial_mapping"].items():
            for u in us:
                name, n = u.split(",")[0].strip(), int(u.split(",")[-1])
                out[name] = out.get(name, 1) * min(n, sizes.get(dim, n))
        return out

    default = unrolls(next(m for m in mapping if m["name"] == "default"))
    add = next((m for m in mapping if m["name"] == "Add"), None)
    rows, cols = default.pop("C", 1), default.pop("K", 1)
    cores = int(np.prod(list(default.values()))) if default else 1
    mems = hw["memories"]
    dram = next(v for k, v in mems.items() if "dram" in k.lower())
    spec = AcceleratorSpec(
        name=f"zigzag-{description}-uncalibrated", mac_rows=rows, mac_cols=cols, cores=cores,
        clock_hz=clock_mhz * 1e6, sram_bytes=0.0,
        dram_bytes_per_s=max(p["bandwidth_max"] for p in dram["ports"]) / 8 * clock_mhz * 1e6,
        # analytic vector time is elements / (vector_lanes * cores): lanes per core, possibly < 1
        vector_lanes=(float(np.prod(list(unrolls(add).values()))) if add else float(cols * cores)) / cores,
        layer_overhead_s=1e-8, bytes_per_element=1,
        # `depthwise_mapping` puts channel groups where the default mapping has K: mac_cols lanes
        depthwise_efficiency=cols / (cols if rows == 1 else min(rows, cols)),
        description=f"ZigZag's {description} description read as an analytic accelerator",
        source=f"zigzag-dse inputs/hardware/{hw_name}.yaml and inputs/mapping/{mp_name}.yaml")
    return spec


def zigzag_onnx_totals(model: Any, description: str, lpf_limit: int = 4) -> tuple[float, float]:
    """(cycles, energy in pJ) of an ONNX model by ZigZag's own ONNX flow on the stock mapping.

    ZigZag's parser costs Conv, Gemm and MatMul nodes and skips the rest; this is the reference
    that `layer_workload` is checked against (test and `benchmarks/hardware_in_the_loop.py`):
    the same nodes through our translation with `depthwise_mapping=False` give the same totals.
    """
    from zigzag.mapping.temporal_mapping import TemporalMappingType
    from zigzag.stages.evaluation.cost_model_evaluation import CostModelStage
    from zigzag.stages.main import MainStage
    from zigzag.stages.mapping.spatial_mapping_generation import SpatialMappingGeneratorStage
    from zigzag.stages.mapping.temporal_mapping_generator_stage import TemporalMappingGeneratorStage
    from zigzag.stages.parser.accelerator_parser import AcceleratorParserStage
    from zigzag.stages.parser.onnx_model_parser import ONNXModelParserStage
    from zigzag.stages.results.reduce_stages import MinimalLatencyStage, SumStage
    from zigzag.stages.workload_iterator import WorkloadStage
    import onnx
    _check(description)
    model = onnx.shape_inference.infer_shapes(model)  # ZigZag's parser reads value_info shapes
    hw, mp = DESCRIPTIONS[description]
    d = _inputs_dir()
    stages = [ONNXModelParserStage, AcceleratorParserStage, SumStage, WorkloadStage, MinimalLatencyStage,
              SpatialMappingGeneratorStage, MinimalLatencyStage, TemporalMappingGeneratorStage, CostModelStage]
    with _quiet_zigzag():
        cmes = MainStage(stages, accelerator=f"{d}/hardware/{hw}.yaml", workload=model,
                         mapping=f"{d}/mapping/{mp}.yaml", loma_lpf_limit=lpf_limit,
                         loma_show_progress_bar=False, nb_mappings_generated=1,
                         access_same_data_considered_as_no_access=True,
                         temporal_mapping_type=TemporalMappingType.UNEVEN).run()
    cme = cmes[0][0]
    return float(cme.latency_total2), float(cme.energy_total)
