"""Analytic latency of a layer table on an accelerator: exact tiling/roofline and a smooth variant.

Per row (a layer that does work) the model takes the larger of a compute time and a memory time
(a roofline: the chip overlaps DMA with compute) and adds a fixed per-layer overhead:

    t_layer = max(cycles / clock_hz, bytes / dram_bytes_per_s) + layer_overhead_s

Compute cycles, with R = `mac_rows`, C = `mac_cols` (the parallelism factor P) and `cores` arrays:
- CONV (g groups): `ho*wo*k^2 * g * ceil((c_in/g)/R) * ceil((c_out/g)/C) / cores`. The ceilings are
  the staircase of the article: 40 output channels cost as much as 48 on a P=16 array.
- DWCONV: a depthwise filter reads one input channel per output channel, so only
  `spec.depthwise_lanes` lanes work (the array's diagonal, `min(R, C)`; all C lanes of a SIMD CPU):
  `ho*wo*k^2 * ceil(c / lanes) / cores`. On a PxP NPU this is 1/P efficient, which is why FBNet-style
  depthwise blocks are not free on a neural engine and fused IBNs win in early stages.
- LINEAR: a 1x1 conv on a 1x1 map: `ceil(c_in/R) * ceil(c_out/C) / cores`.
- AVGPOOL, GAP, ADD (their MACs) and the data movement of SHUFFLE, UPSAMPLE and CONCAT (their output
  elements) run on the vector unit:
  `elements / (vector_lanes * cores)`.
- INPUT, MIX, IDENTITY, NONE do no work and cost nothing (no overhead either).

Memory bytes: weights always stream from DRAM once per inference; activations (input + output) only
when the layer's working set `(in + out + weights) * bytes_per_element` exceeds `sram_bytes` (spill),
and always when `sram_bytes == 0` (no residency between layers, as in ZigZag's per-layer model).

The network latency is `sum_rows table.weight * t_layer`: for a discrete table the latency of the
chosen rows, for a distribution over architectures the expected latency.

The smooth variant (`*_smooth`) replaces each ceiling by `soft_ceil`, the spill indicator by a
sigmoid of `log(working_set / sram)` and the max by a p-norm with `p = 1 / temperature`. It has a
gradient everywhere with respect to continuous channel counts, kernel sizes and row weights and tends
to the exact model as `temperature -> 0`, also at integers (channel counts on the grid are exact
multiples of P, where a centred soft step would be off by half a tile). Each step sits `sqrt(tau)`
above its integer, so at moderate temperature the smooth model *underestimates* layers just above a
multiple of P (e.g. c_in = 3 on a 64-lane array): MobileNetV2 on "edgetpu" is 2.46 ms exact, 2.06 ms at
tau = 0.1, 2.23 ms at tau = 0.01. Temperatures of 0.01-0.3 suit gradient-based search; the temperature
may be a traced scalar, so a jitted search step can anneal it without recompiling.

Example:
    >>> from hwmodel.layers import LayerTable, OpKind
    >>> from hwmodel.accelerators import ACCELERATORS
    >>> t = LayerTable.from_rows([
    ...     dict(op=OpKind.INPUT, c_out=16, h=8, w=8),
    ...     dict(op=OpKind.CONV, src=0, c_in=16, c_out=40, kernel=3, h=8, w=8),
    ... ])
    >>> cycles = 8 * 8 * 9 * 1 * 3  # ceil(16/16) * ceil(40/16) tiles
    >>> spec = ACCELERATORS["npu"]
    >>> round(float(latency(spec, t)) * 1e6, 3)  # us: 1728 cycles at 1 GHz + 2 us overhead
    3.728
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from hwmodel import layers as L
from hwmodel.accelerators import AcceleratorSpec
from hwmodel.layers import LayerTable, OpKind

#: Ops that do work (and pay `layer_overhead_s`).
_NO_WORK_OPS = (OpKind.NONE, OpKind.INPUT, OpKind.MIX, OpKind.IDENTITY)
_VECTOR_OPS = (OpKind.AVGPOOL, OpKind.GAP, OpKind.ADD, *L.MOVE_OPS)
#: Half-width of the window of integers that `soft_ceil` evaluates around floor(x).
_CEIL_WINDOW = 6

CeilFn = Callable[[jax.Array], jax.Array]


# ----------------------------------------------------------------------------------------------
# Smooth primitives
# ----------------------------------------------------------------------------------------------


def soft_ceil(x: Float[Array, "*s"], temperature: float | jax.Array, window: int = _CEIL_WINDOW) -> Float[Array, "*s"]:
    """Smooth `ceil(x)` for `x >= 0`, exact at integers in the limit `temperature -> 0`.

    `ceil(x) = #{k in N : k < x}`, so the soft version sums steps `sigmoid((x - k - d) / tau)` over
    integers k, with the step offset `d = sqrt(tau)` just above each integer: at `x == n` the error
    is `sigmoid(-1/sqrt(tau))`, which vanishes as `tau -> 0` (a centred step, d = 0, would return
    n - 0.5 at every multiple of P, exactly where the grid's channel counts sit). Only the integers
    within `window` of floor(x) are evaluated; the ones below the window count exactly 1, those
    above 0 (error <= sigmoid(-(window - d) / tau), negligible for tau <= 1).

    Args:
      x: non-negative values (negative ones are clipped to 0).
      temperature: step width tau > 0, in units of x.
      window: half-width of the evaluated window.

    Returns:
      Smooth ceilings, same shape as `x`.

    Example:
        >>> round(float(soft_ceil(jnp.asarray(3.0), 1e-3)), 4), round(float(soft_ceil(jnp.asarray(2.5), 1e-3)), 4)
        (3.0, 3.0)
    """
    x = jnp.maximum(x, 0.0)
    n0 = jax.lax.stop_gradient(jnp.floor(x))
    delta = temperature ** 0.5
    ks = n0[..., None] + jnp.arange(-window, window + 1, dtype=x.dtype)
    steps = jax.nn.sigmoid((x[..., None] - ks - delta) / temperature)
    steps = jnp.where(ks >= 0, steps, 0.0)
    below = jnp.maximum(n0 - window, 0.0)  # integers 0 .. n0-window-1, all fully below x
    return below + jnp.sum(steps, axis=-1)


def soft_max2(a: Float[Array, "*s"], b: Float[Array, "*s"], temperature: float | jax.Array) -> Float[Array, "*s"]:
    """Smooth `max(a, b)` for `a, b >= 0`: the p-norm `(a^p + b^p)^(1/p)` with `p = 1/temperature`.

    Computed in log space (`logsumexp(p log a, p log b) / p`) so that seconds-scale inputs do not
    underflow at large p. It overestimates by at most a factor `2^temperature`; zeros are safe
    (gradient 0, no NaN).
    """
    p = 1.0 / temperature
    tiny = jnp.finfo(jnp.result_type(a, b)).tiny
    both_zero = (a <= 0) & (b <= 0)
    la = jnp.log(jnp.maximum(a, tiny))
    lb = jnp.log(jnp.maximum(b, tiny))
    out = jnp.exp(jnp.logaddexp(p * la, p * lb) / p)
    return jnp.where(both_zero, 0.0, out)


# ----------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------


def _compute_cycles(spec: AcceleratorSpec, table: LayerTable, ceil: CeilFn) -> jax.Array:
    """Cycles of each row on one accelerator (see module docstring), before the clock."""
    ho, wo = L.out_hw(table)
    k2 = table.kernel * table.kernel
    g = jnp.maximum(table.groups, 1.0)
    rows, cols, cores = float(spec.mac_rows), float(spec.mac_cols), float(spec.cores)
    # One pair of (soft) ceilings serves CONV and LINEAR (a 1x1 conv on 1x1, never grouped): the
    # smooth ceil is the expensive part of the smooth model, so it is evaluated 3 times per row, not 5.
    lin_mask = L.is_op(table, OpKind.LINEAR)
    g = jnp.where(lin_mask, 1.0, g)
    tiles = ceil(table.c_in / g / rows) * ceil(table.c_out / g / cols)
    conv = ho * wo * k2 * g * tiles
    dw = ho * wo * k2 * ceil(table.c_out / float(spec.depthwise_lanes))
    lin = tiles
    vec_elems = jnp.where(L.is_op(table, *L.MOVE_OPS), L.out_elems(table), L.macs(table))
    vec = vec_elems / float(spec.vector_lanes)
    # Nested `where` rather than `jnp.select`: select lowers to a variadic argmax-reduce that XLA
    # constant-folds very slowly when a large batched table is a closure constant.
    cycles = jnp.where(L.is_op(table, OpKind.CONV), conv,
                       jnp.where(L.is_op(table, OpKind.DWCONV), dw,
                                 jnp.where(L.is_op(table, OpKind.LINEAR), lin,
                                           jnp.where(L.is_op(table, *_VECTOR_OPS), vec, 0.0))))
    return cycles / cores


def _traffic(spec: AcceleratorSpec, table: LayerTable):
    """Weight bytes, activation bytes and working-set bytes of each row."""
    bpe = float(spec.bytes_per_element)
    w_bytes = L.weight_elems(table) * bpe
    act_bytes = (L.in_elems(table) + L.out_elems(table)) * bpe
    return w_bytes, act_bytes, w_bytes + act_bytes


def _does_work(table: LayerTable) -> jax.Array:
    return ~L.is_op(table, *_NO_WORK_OPS)


def _layer_terms(spec: AcceleratorSpec, table: LayerTable, temperature: float | jax.Array | None):
    """(cycles, compute_s, memory_s, spill, bytes) per row; exact when temperature is None."""
    if temperature is None:
        ceil: CeilFn = jnp.ceil
    else:
        ceil = lambda x: soft_ceil(x, temperature)  # noqa: E731
    cycles = _compute_cycles(spec, table, ceil)
    compute_s = cycles / float(spec.clock_hz)
    w_bytes, act_bytes, working_set = _traffic(spec, table)
    if spec.sram_bytes == 0:  # nothing resident between layers: all activation traffic is DRAM's
        spill = jnp.ones_like(working_set)
    elif temperature is None:
        spill = (working_set > spec.sram_bytes).astype(compute_s.dtype)
    else:
        # Sigmoid of the log-ratio: scale-free, so one temperature serves KiB and MiB layers.
        log_ratio = jnp.log(jnp.maximum(working_set, 1.0)) - jnp.log(float(spec.sram_bytes))
        spill = jax.nn.sigmoid(log_ratio / temperature)
    n_bytes = w_bytes + spill * act_bytes
    memory_s = n_bytes / float(spec.dram_bytes_per_s)
    work = _does_work(table)
    compute_s = jnp.where(work, compute_s, 0.0)
    memory_s = jnp.where(work, memory_s, 0.0)
    return cycles, compute_s, memory_s, spill, n_bytes


def _combine(spec: AcceleratorSpec, table: LayerTable, compute_s, memory_s, temperature):
    if temperature is None:
        t = jnp.maximum(compute_s, memory_s)
    else:
        t = soft_max2(compute_s, memory_s, temperature)
    return jnp.where(_does_work(table), t + float(spec.layer_overhead_s), 0.0)


def _check_temperature(temperature) -> None:
    # A traced temperature (annealed inside a jitted step without retracing) cannot be checked.
    if isinstance(temperature, (int, float)) and not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}; use the exact model for 0")


def layer_latency(spec: AcceleratorSpec, table: LayerTable) -> Float[Array, "*b L"]:
    """Exact latency in seconds of each row, unweighted (multiply by `table.weight` for totals).

    Example:
        >>> from hwmodel.accelerators import ACCELERATORS
        >>> from hwmodel.layers import LayerTable, OpKind
        >>> t = LayerTable.from_rows([dict(op=OpKind.INPUT, c_out=8, h=4, w=4),
        ...                           dict(op=OpKind.ADD, src=0, res=0, c_in=8, c_out=8, h=4, w=4)])
        >>> [round(float(v) * 1e6, 3) for v in layer_latency(ACCELERATORS["npu"], t)]  # 128/16 cycles + 2 us
        [0.0, 2.008]
    """
    _, compute_s, memory_s, _, _ = _layer_terms(spec, table, None)
    return _combine(spec, table, compute_s, memory_s, None)


def latency(spec: AcceleratorSpec, table: LayerTable) -> Float[Array, "*b"]:
    """Exact (expected, for fractional row weights) network latency in seconds: `sum weight * t_layer`."""
    return jnp.sum(table.weight * layer_latency(spec, table), axis=-1)


def latency_ms(spec: AcceleratorSpec, table: LayerTable) -> Float[Array, "*b"]:
    """`latency` in milliseconds."""
    return 1e3 * latency(spec, table)


def layer_latency_smooth(spec: AcceleratorSpec, table: LayerTable,
                         temperature: float | jax.Array) -> Float[Array, "*b L"]:
    """Smooth per-row latency in seconds (soft ceil, soft spill, soft max; see module docstring).

    Args:
      spec: the accelerator.
      table: layer table, possibly with continuous channel counts and row weights.
      temperature: > 0; smaller is closer to `layer_latency` and rougher. A Python float or a
        traced scalar (so a jitted search step can anneal it without recompiling).

    Example:
        >>> from hwmodel.accelerators import ACCELERATORS
        >>> from hwmodel.layers import LayerTable, OpKind
        >>> t = LayerTable.from_rows([dict(op=OpKind.INPUT, c_out=16, h=8, w=8),
        ...                           dict(op=OpKind.CONV, src=0, c_in=16, c_out=40, kernel=3, h=8, w=8)])
        >>> g = jax.grad(lambda c: latency_smooth(ACCELERATORS["npu"], t.replace(c_out=t.c_out.at[1].set(c)), 0.2))
        >>> bool(g(40.0) > 0)
        True
    """
    _check_temperature(temperature)
    _, compute_s, memory_s, _, _ = _layer_terms(spec, table, temperature)
    return _combine(spec, table, compute_s, memory_s, temperature)


def latency_smooth(spec: AcceleratorSpec, table: LayerTable, temperature: float | jax.Array) -> Float[Array, "*b"]:
    """Smooth (expected) network latency in seconds; differentiable, tends to `latency` as tau -> 0."""
    return jnp.sum(table.weight * layer_latency_smooth(spec, table, temperature), axis=-1)


def latency_smooth_ms(spec: AcceleratorSpec, table: LayerTable, temperature: float | jax.Array) -> Float[Array, "*b"]:
    """`latency_smooth` in milliseconds."""
    return 1e3 * latency_smooth(spec, table, temperature)


def breakdown(spec: AcceleratorSpec, table: LayerTable) -> dict[str, jax.Array]:
    """Per-row terms of the exact model, for reports (all `[..., L]`, unweighted unless named so).

    Returns:
      A dict with `cycles` (compute cycles per row), `compute_s`, `memory_s`, `bytes` (DRAM bytes),
      `spill` (bool: activations spilled to DRAM), `memory_bound` (bool), `latency_s` (per row,
      overhead included), `weighted_latency_s` (times `table.weight`) and `utilization` (fraction of
      the MAC array's peak used by MAC layers; 0 elsewhere).

    Example:
        >>> from hwmodel.accelerators import ACCELERATORS
        >>> from hwmodel.layers import LayerTable, OpKind
        >>> t = LayerTable.from_rows([dict(op=OpKind.INPUT, c_out=16, h=8, w=8),
        ...                           dict(op=OpKind.CONV, src=0, c_in=16, c_out=40, kernel=3, h=8, w=8)])
        >>> round(float(breakdown(ACCELERATORS["npu"], t)["utilization"][1]), 4)  # 40 of 48 lanes
        0.8333
    """
    cycles, compute_s, memory_s, spill, n_bytes = _layer_terms(spec, table, None)
    lat = _combine(spec, table, compute_s, memory_s, None)
    mac_ops = L.is_op(table, OpKind.CONV, OpKind.DWCONV, OpKind.LINEAR)
    peak = float(spec.mac_rows * spec.mac_cols * spec.cores)
    # `cycles` is already per core, so the array offers `cycles * rows * cols * cores` MAC slots.
    util = jnp.where(mac_ops & (cycles > 0), L.macs(table) / jnp.maximum(cycles * peak, 1e-30), 0.0)
    work = _does_work(table)
    return dict(
        cycles=jnp.where(work, cycles, 0.0),
        compute_s=compute_s,
        memory_s=memory_s,
        bytes=jnp.where(work, n_bytes, 0.0),
        spill=(spill > 0) & work,
        memory_bound=(memory_s > compute_s) & work,
        latency_s=lat,
        weighted_latency_s=table.weight * lat,
        utilization=util,
    )
