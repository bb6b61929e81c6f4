"""Accelerator descriptions for the analytic latency and memory models.

An `AcceleratorSpec` is a handful of numbers that decide how a layer table runs on a chip: the shape
of the MAC array (whose output-channel width is the *parallelism factor* P of the article: channel
counts that are not a multiple of P waste lanes), the clock, the on-chip buffer, the DRAM bandwidth,
the vector unit for elementwise ops, a fixed per-layer cost and the element width. `hwmodel.analytic`
turns them into a tiling/roofline latency; `hwmodel.memory` uses `bytes_per_element`.

Presets live in the registry `ACCELERATORS` (pick them by name in configs; a typo lists the valid
names). Numbers come from public documents where they exist; the rest are marked *assumption* in the
preset's `source` and are meant to be overridden (`dataclasses.replace` or `make_npu(P, **kw)`)
once a real chip's figures are known.

Example:
    >>> spec = ACCELERATORS["npu-p32"]
    >>> spec.parallelism, spec.peak_macs_per_s
    (32, 1024000000000.0)
    >>> make_npu(48).mac_rows
    48
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hwmodel.registry import Registry

MiB = 1 << 20


@dataclasses.dataclass(frozen=True)
class AcceleratorSpec:
    """Static description of one accelerator (hashable, so it can be a static jit argument).

    Attributes:
      name: registry name of the preset.
      mac_rows: input-channel lanes of the MAC array (the reduction width): a conv consumes
        `mac_rows` input channels per cycle and pads the last tile (`ceil(c_in / mac_rows)`).
        1 for a SIMD CPU, whose FMA broadcasts one input value to all lanes.
      mac_cols: output-channel lanes of the MAC array: `mac_cols` output channels are produced in
        parallel and the last tile is padded (`ceil(c_out / mac_cols)`). This is the article's
        *parallelism factor* P.
      cores: independent MAC arrays (or CPU cores) that split a layer's spatial work evenly.
      clock_hz: clock frequency in Hz (cycles per second) of the MAC arrays and vector unit.
      sram_bytes: on-chip buffer in bytes (scratchpad, or L2+L3 cache for a CPU). A layer whose
        working set (input + output + weights) exceeds it spills its activations to DRAM. 0: no
        activation stays on chip between layers, every layer reads its inputs from and writes its
        output to DRAM (the model of a single-layer simulator such as ZigZag, and of a chip whose
        scheduler does not keep feature maps resident).
      dram_bytes_per_s: off-chip bandwidth in bytes per second (weights stream from it once per
        inference; spilled activations are read and written through it).
      vector_lanes: elements per cycle per core of the vector unit that runs pooling, residual adds
        and channel shuffles.
      layer_overhead_s: fixed cost in seconds of every layer that does work (command dispatch, DMA
        descriptor setup, synchronisation); it is why fusing two layers into one pays off.
      bytes_per_element: bytes of one activation or weight element (1 for int8 NPUs, 4 for fp32).
      depthwise_efficiency: multiplier on `depthwise_lanes` (1: the diagonal of the array; larger
        when the chip maps depthwise channel groups onto more of it, as ZigZag's depthwise
        mapping does; fitted by `hwmodel.calibrate`).
      description: one line saying what the preset models.
      source: where the numbers come from (documents, or "assumption").
    """

    name: str
    mac_rows: int
    mac_cols: int
    cores: int
    clock_hz: float
    sram_bytes: float
    dram_bytes_per_s: float
    vector_lanes: float
    layer_overhead_s: float
    bytes_per_element: int
    depthwise_efficiency: float = 1.0
    description: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        if not self.sram_bytes >= 0:
            raise ValueError(f"AcceleratorSpec {self.name!r}: sram_bytes must be >= 0, got {self.sram_bytes!r}")
        for field in ("mac_rows", "mac_cols", "cores", "clock_hz", "dram_bytes_per_s",
                      "vector_lanes", "bytes_per_element", "depthwise_efficiency"):
            if not getattr(self, field) > 0:
                raise ValueError(f"AcceleratorSpec {self.name!r}: {field} must be > 0, "
                                 f"got {getattr(self, field)!r}")
        if self.layer_overhead_s < 0:
            raise ValueError(f"AcceleratorSpec {self.name!r}: layer_overhead_s must be >= 0")

    @property
    def parallelism(self) -> int:
        """The parallelism factor P: output channels computed in parallel (= `mac_cols`)."""
        return self.mac_cols

    @property
    def depthwise_lanes(self) -> float:
        """MAC lanes a depthwise conv can use per cycle.

        A depthwise filter reads one input channel per output channel. On a 2-D array whose rows
        broadcast one input channel to all columns, only the diagonal does useful work:
        `min(mac_rows, mac_cols)` of `mac_rows * mac_cols` lanes (1/P efficiency on a PxP NPU, the
        article's reason to replace depthwise convs on the Neural Engine). A SIMD CPU
        (`mac_rows == 1`) loads a different input channel into every lane (elementwise FMA), so all
        `mac_cols` lanes are busy.
        """
        lanes = self.mac_cols if self.mac_rows == 1 else min(self.mac_rows, self.mac_cols)
        return lanes * self.depthwise_efficiency

    @property
    def peak_macs_per_s(self) -> float:
        """Peak multiply-accumulates per second (`rows * cols * cores * clock`)."""
        return float(self.mac_rows * self.mac_cols * self.cores * self.clock_hz)

    @property
    def peak_tops(self) -> float:
        """Peak tera-operations per second, counting a MAC as 2 ops (the vendors' convention)."""
        return 2.0 * self.peak_macs_per_s / 1e12


ACCELERATORS: Registry = Registry("accelerator")

# NPU defaults. The article gives no Neural Engine figures beyond "parallelism factor", so these are
# assumptions typical of a small mobile int8 NPU (e.g. Arm Ethos-U/N class, Amazon AZ1/AZ2 class):
# a PxP int8 MAC array at 1 GHz, 1 MiB SRAM per 16 output lanes (1-4 MiB), one LPDDR4-3200 x16
# channel (3200 MT/s * 2 B = 6.4 GB/s), a vector unit as wide as the array, 2 us per layer.
_NPU_CLOCK_HZ = 1.0e9
_NPU_DRAM_BYTES_PER_S = 6.4e9
_NPU_LAYER_OVERHEAD_S = 2.0e-6


def make_npu(parallelism: int, **overrides: Any) -> AcceleratorSpec:
    """A Neural-Engine-like int8 NPU with a `parallelism x parallelism` MAC array.

    Args:
      parallelism: P, the number of input and output channel lanes of the MAC array.
      **overrides: any `AcceleratorSpec` field to change (e.g. `sram_bytes=512 * 1024`).

    Returns:
      The spec, named `npu-p{P}` unless `name` is overridden.

    Example:
        >>> make_npu(64).peak_tops  # 64*64 MACs * 2 ops * 1 GHz
        8.192
    """
    p = int(parallelism)
    if p < 1:
        raise ValueError(f"parallelism must be a positive integer, got {parallelism!r}")
    fields = dict(
        name=f"npu-p{p}",
        mac_rows=p,
        mac_cols=p,
        cores=1,
        clock_hz=_NPU_CLOCK_HZ,
        sram_bytes=float(min(max(p / 16, 1.0), 4.0) * MiB),  # 1 MiB at P<=16 .. 4 MiB at P>=64
        dram_bytes_per_s=_NPU_DRAM_BYTES_PER_S,
        vector_lanes=p,
        layer_overhead_s=_NPU_LAYER_OVERHEAD_S,
        bytes_per_element=1,
        depthwise_efficiency=1.0,
        description=f"Neural-Engine-like int8 NPU, {p}x{p} MAC array at 1 GHz",
        source=("Parallelism factor as in the Amazon Science article 'Optimizing neural networks "
                "for special-purpose hardware' (2023); clock, SRAM (1 MiB per 16 lanes, 1-4 MiB), "
                "LPDDR4-3200 x16 bandwidth (6.4 GB/s), vector width and 2 us/layer overhead are "
                "assumptions for a small mobile NPU."),
    )
    unknown = set(overrides) - set(fields)
    if unknown:
        raise TypeError(f"unknown AcceleratorSpec fields {sorted(unknown)}; valid: {sorted(fields)}")
    fields.update(overrides)
    return AcceleratorSpec(**fields)


def derive(base: AcceleratorSpec, name: str, parallelism: int | None = None, **changes: Any) -> AcceleratorSpec:
    """A new accelerator that differs from `base` in the given fields: the design-phase sweep of a
    chip that does not exist yet (the article: "test accelerators in the design phase").

    Args:
      base: the preset to start from.
      name: the new preset's name.
      parallelism: shortcut for a P x P array with a P-wide vector unit (`mac_rows`, `mac_cols` and
        `vector_lanes` set to P), as `make_npu` builds them.
      **changes: any other `AcceleratorSpec` field (e.g. `sram_bytes=512 * 1024`).

    Example:
        >>> derive(ACCELERATORS["npu"], "npu-p32-2m", parallelism=32, sram_bytes=2 * MiB).peak_tops
        2.048
    """
    fields = {f.name for f in dataclasses.fields(AcceleratorSpec)}
    unknown = set(changes) - fields
    if unknown:
        raise TypeError(f"unknown AcceleratorSpec fields {sorted(unknown)}; valid: parallelism, {', '.join(sorted(fields - {'name'}))}")
    if parallelism is not None:
        if int(parallelism) < 1:
            raise ValueError(f"parallelism must be a positive integer, got {parallelism!r}")
        changes = {"mac_rows": int(parallelism), "mac_cols": int(parallelism), "vector_lanes": int(parallelism)} | changes
    desc = ", ".join(f"{k}={v}" for k, v in sorted(changes.items()))
    return dataclasses.replace(base, name=name, description=f"{base.name} with {desc}",
                               source=f"derived from {base.name}: {base.source}", **changes)


ACCELERATORS["npu"] = make_npu(16, name="npu")
for _p in (16, 32, 64):
    ACCELERATORS[f"npu-p{_p}"] = make_npu(_p)

# Edge TPU (Coral). Verified: 4 TOPS int8 peak, 2 TOPS/W (Coral FAQ https://coral.ai/docs/edgetpu/faq
# and USB Accelerator datasheet v1.4); a small on-chip RAM caches the parameters, so a second model
# or one too large for it swaps parameters in from off-chip memory (coral.ai/docs/edgetpu/compiler,
# "parameter data caching"). Microarchitecture (systolic PE array with per-PE memories, parameters
# and activations staged on chip) from Yazdanbakhsh, Seshadri, Akin, Laudon, Narayanaswami, "An
# Evaluation of Edge TPU Accelerators for Convolutional Neural Networks", arXiv:2102.10423 (2021).
# Google publishes neither the array shape nor the clock: 64x64 MACs at 480 MHz is the commonly
# reported configuration and matches the datasheet: 64*64*2*480e6 = 3.93e12 ~ 4 TOPS. The 8 MiB
# SRAM is likewise the commonly reported figure, not a datasheet number.
ACCELERATORS["edgetpu"] = AcceleratorSpec(
    name="edgetpu",
    mac_rows=64,
    mac_cols=64,
    cores=1,
    clock_hz=480e6,
    sram_bytes=8.0 * MiB,
    # Assumption: the chip's links are PCIe Gen2 x1 (~0.5 GB/s) or USB 3.0, but parameters of a model
    # that fits the on-chip cache stay resident between inferences; we charge weight traffic at an
    # effective 4 GB/s so that weight-heavy (late, wide) layers still cost more than compute-bound
    # ones, without the link speed dominating every network. With the 5 us per-layer overhead below
    # this puts MobileNetV2-1.0-224 (65 rows, 300M MACs, 3.5M params) at 2.46 ms, against "almost
    # 400 FPS" (2.5 ms) in the Coral FAQ: a calibration, not a measurement.
    dram_bytes_per_s=4.0e9,
    vector_lanes=64,  # assumption: one vector lane per array column
    layer_overhead_s=5.0e-6,  # assumption (calibrated as above): instruction dispatch + DMA setup
    bytes_per_element=1,
    description="Google Edge TPU (Coral): 64x64 int8 systolic array at 480 MHz, ~4 TOPS",
    source=("Coral FAQ and USB Accelerator datasheet (4 TOPS int8, 2 TOPS/W, on-chip parameter "
            "cache); Yazdanbakhsh et al., 'An Evaluation of Edge TPU Accelerators for Convolutional "
            "Neural Networks', arXiv:2102.10423, 2021 (microarchitecture). Array shape, clock and "
            "8 MiB SRAM: commonly reported, consistent with 4 TOPS; bandwidth, vector width and "
            "per-layer overhead: assumptions."),
)

# Big-core mobile CPU, e.g. 4x Cortex-A76 (Raspberry Pi 5: BCM2712, 4x A76 at 2.4 GHz, 512 KiB L2
# per core + 2 MiB shared L3, LPDDR4X-4267 on a 32-bit bus = 17 GB/s peak). The Arm Cortex-A76
# Software Optimization Guide lists two ASIMD pipelines (V0, V1), each issuing one 128-bit FMLA per
# cycle: 2 pipes x 4 fp32 lanes = 8 fp32 MACs per cycle per core. A GEMM micro-kernel broadcasts one
# input value into all lanes (FMLA by element), so mac_rows = 1 and mac_cols = 8.
ACCELERATORS["mobile-cpu"] = AcceleratorSpec(
    name="mobile-cpu",
    mac_rows=1,
    mac_cols=8,
    cores=4,
    clock_hz=2.4e9,
    sram_bytes=4.0 * MiB,  # 4 x 512 KiB L2 + 2 MiB L3 treated as one buffer (assumption)
    dram_bytes_per_s=15e9,  # assumption: ~88% of the 17 GB/s LPDDR4X peak is sustainable
    vector_lanes=8,  # 2 ASIMD pipes x 4 fp32 lanes for adds and pooling
    layer_overhead_s=10e-6,  # assumption: interpreter op dispatch + thread-pool fork/join
    bytes_per_element=4,
    description="Mobile CPU, 4x Arm Cortex-A76 class at 2.4 GHz, fp32 NEON",
    source=("Arm Cortex-A76 Software Optimization Guide (two 128-bit ASIMD FMLA pipelines); "
            "Raspberry Pi 5 product brief (4x A76 at 2.4 GHz, LPDDR4X-4267). Sustained bandwidth, "
            "cache-as-buffer and per-layer overhead: assumptions."),
)

# The analytic model calibrated on each ZigZag accelerator description (hwmodel.simulator): array
# shape read off its YAML files (`simulator.analytic_spec`,
# checked equal by tests/test_simulator.py), the rates fitted by `hwmodel.calibrate` to ZigZag's
# whole-network latency of 50 mobile-curated networks (seed-0 split of 300 sampled with seed 0, at
# 1 GHz, depthwise mapping over channel groups). Made by
#     python benchmarks/hardware_in_the_loop.py --sections zigzag --networks 300 --train 50
# (benchmarks/results/hardware_in_the_loop_zigzag_cpu.json, "analytic.from_description.calibrated";
# test Spearman / MAPE on the other 250 networks in docs/results/hardware_in_the_loop.md). A
# `vector_lanes` below 1 means ZigZag charges pooling and adds more than one cycle per element and
# core (its Add mapping on that array moves both operands through the memory hierarchy); a large
# one (tpu_like, eyeriss_like) that pooling and adds are nearly free next to the convolutions.
# name: (mac_rows, mac_cols, cores, clock_hz, dram_bytes_per_s, layer_overhead_s, vector_lanes,
#        depthwise_efficiency); sram_bytes = 0: ZigZag streams every layer's activations from DRAM.
_ZIGZAG_CALIBRATED = {
    "edge_tpu_like": (8, 8, 16, 9.5014e8, 8.1435e9, 7.1146e-14, 0.70297, 1.0011),
    "tpu_like": (32, 32, 1, 1.5429e9, 8.4200e9, 4.5816e-7, 55.452, 1.0017),
    "tesla_npu_like": (1, 32, 32, 1.3117e9, 7.7144e9, 6.0636e-7, 1.0007, 0.99995),
    "ascend_like": (16, 16, 4, 1.1106e9, 8.2329e9, 2.8460e-7, 4.1433, 1.0001),
    "eyeriss_like": (12, 14, 1, 1.0447e9, 5.5561e10, 1.9141e-8, 67.473, 1.1707),
    "meta_prototype": (2, 32, 16, 1.0683e9, 7.9997e9, 1.0581e-6, 2.0638, 21.057),
}
for _d, (_r, _c, _k, _clk, _bw, _ov, _vl, _dw) in _ZIGZAG_CALIBRATED.items():
    ACCELERATORS[f"zigzag-{_d}"] = AcceleratorSpec(
        name=f"zigzag-{_d}", mac_rows=_r, mac_cols=_c, cores=_k, clock_hz=_clk, sram_bytes=0.0,
        dram_bytes_per_s=_bw, vector_lanes=_vl, layer_overhead_s=_ov, bytes_per_element=1,
        depthwise_efficiency=_dw,
        description=f"Analytic model calibrated on ZigZag's {_d} description (int8, {_r}x{_c}x{_k} array)",
        source=(f"zigzag-dse inputs/hardware/{_d}.yaml (array); rates fitted by hwmodel.calibrate "
                "to ZigZag latencies of 50 mobile-curated networks "
                "(benchmarks/results/hardware_in_the_loop_zigzag_cpu.json)."))
