"""Real latency of layers and whole networks on the current JAX backend (CPU, GPU or TPU).

The analytic model and the surrogate predict latency; this module *measures* it, so the surrogate
can be fitted (per layer or per whole network) and checked. It has two halves:

- An executor that turns a concrete layer table into a JAX function with random weights:
  `build_network` for the whole network and `layer_fn` for one row alone. It follows the execution
  semantics of `hwmodel.layers` (row 0 is the input; a row exists when present and its inputs exist;
  MIX sums its existing inputs; IDENTITY and MIX are aliases; ADD is a real add). Tensors are NHWC;
  BatchNorm is folded into the conv bias (as at inference), so it is not executed.
- Timers: `time_fn` (compile outside the clock, warm up, block on the result, take the median),
  `profile_network` and `profile_layers`.

Example:
    >>> t = LayerTable.from_rows([
    ...     dict(op=OpKind.INPUT, c_out=3, h=8, w=8),
    ...     dict(op=OpKind.CONV, src=0, c_in=3, c_out=8, kernel=3, h=8, w=8, act=1),
    ...     dict(op=OpKind.GAP, src=1, c_in=8, h=8, w=8),
    ... ])
    >>> params, apply = build_network(t, jax.random.key(0))
    >>> apply(params, jnp.ones((2, 8, 8, 3))).shape
    (2, 8)
    >>> profile_network(t, repeats=5).median_s > 0
    True
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, Float

from hwmodel.layers import LayerTable, OpKind

Params = dict[str, dict[str, jax.Array]]
ApplyFn = Callable[[Params, Float[Array, "b h w c"]], jax.Array]

#: Rows that compute nothing of their own; `profile_layers` reports 0 s for them.
NO_COMPUTE_OPS = (OpKind.NONE, OpKind.INPUT, OpKind.MIX, OpKind.IDENTITY)
_SPATIAL_OPS = (OpKind.CONV, OpKind.DWCONV, OpKind.AVGPOOL, OpKind.GAP, OpKind.ADD, OpKind.SHUFFLE,
                OpKind.UPSAMPLE, OpKind.CONCAT)
_SAME_CHANNEL_OPS = (OpKind.AVGPOOL, OpKind.GAP, OpKind.ADD, OpKind.SHUFFLE, OpKind.UPSAMPLE)
_BINARY_OPS = (OpKind.ADD, OpKind.CONCAT)  # read `src` and `res`, both needed
_INT_FIELDS = ("c_in", "c_out", "kernel", "stride", "groups", "h", "w")
_DN = ("NHWC", "HWIO", "NHWC")
# Random streams beyond any row index: the ADD operand and the inputs of timed functions.
_RES_STREAM, INPUT_STREAM = 1 << 30, (1 << 30) + 1


class Row(NamedTuple):
    """One row of a concrete table with integer fields."""

    index: int
    op: OpKind
    src: int
    res: int
    act: int
    c_in: int
    c_out: int
    kernel: int
    stride: int
    groups: int
    h: int
    w: int

    def describe(self) -> str:
        return (f"row {self.index} ({self.op.name}, c_in={self.c_in}, c_out={self.c_out}, "
                f"k={self.kernel}, s={self.stride}, g={self.groups}, {self.h}x{self.w})")


def concrete(table: LayerTable) -> LayerTable:
    """NumPy copy of a single, discrete table; ValueError if it is batched or a distribution."""
    t = table.to_numpy()
    if t.op.ndim != 1:
        raise ValueError(f"profile needs a single network's table, got batch shape {t.op.shape[:-1]}; "
                         "index it first, e.g. table[0]")
    if t.num_rows == 0 or t.op[0] != OpKind.INPUT:
        raise ValueError("row 0 of the table must be the network input (op INPUT)")
    present = t.weight > 0
    frac = np.flatnonzero(present & (np.abs(t.weight - 1.0) > 1e-6))
    if frac.size:
        raise ValueError(f"row {frac[0]} has presence weight {t.weight[frac[0]]:.4g}: the table describes a "
                         "distribution over architectures, not one network; build it with "
                         "space.layers(arch) to execute it")
    for f in _INT_FIELDS:
        v = getattr(t, f)
        bad = np.flatnonzero(present & (np.abs(v - np.round(v)) > 1e-4))
        if bad.size:
            raise ValueError(f"row {bad[0]} ({OpKind(int(t.op[bad[0]])).name}) has non-integer {f}="
                             f"{v[bad[0]]:.4g}: the table comes from a distribution (expected channels), "
                             "not an architecture; execute space.layers(arch) instead")
    return t


def table_row(t: LayerTable, i: int) -> Row:
    ints = {f: int(round(float(getattr(t, f)[i]))) for f in _INT_FIELDS}
    return Row(index=i, op=OpKind(int(t.op[i])), src=int(t.src[i]), res=int(t.res[i]),
                act=int(t.act[i]), **ints)


def _out_shape(r: Row, ins: list[tuple[int, int, int]]) -> tuple[int, int, int]:
    """Output (h, w, c) of an existing row given its existing inputs' shapes; checks the table."""
    if r.op == OpKind.MIX:
        if len(set(ins)) != 1:
            raise ValueError(f"{r.describe()} merges tensors of different shapes {ins}")
        return ins[0]
    if r.op == OpKind.IDENTITY:
        return ins[0]
    h, w, c = ins[0]
    if c != r.c_in:
        raise ValueError(f"{r.describe()} reads a tensor with {c} channels, but the table says c_in={r.c_in}")
    if r.op in _SPATIAL_OPS and (h, w) != (r.h, r.w):
        raise ValueError(f"{r.describe()} reads a {h}x{w} tensor, but the table says {r.h}x{r.w}")
    if r.op in _SAME_CHANNEL_OPS and r.c_out != r.c_in:
        raise ValueError(f"{r.describe()} cannot change the channel count")
    g = r.c_in if r.op == OpKind.DWCONV else r.groups
    if r.op in (OpKind.CONV, OpKind.DWCONV, OpKind.SHUFFLE) and (r.c_in % g or r.c_out % g):
        raise ValueError(f"{r.describe()}: channels must be divisible by the {g} groups")
    if r.op == OpKind.ADD and ins[1] != ins[0]:
        raise ValueError(f"{r.describe()} adds tensors of different shapes {ins}")
    if r.op == OpKind.CONCAT:
        if ins[1][:2] != (h, w) or c + ins[1][2] != r.c_out:
            raise ValueError(f"{r.describe()} concatenates {ins[0]} and {ins[1]}: the sizes must match and "
                             f"the channels add up to c_out={r.c_out}")
        return (h, w, r.c_out)
    if r.op == OpKind.UPSAMPLE:
        if r.kernel < 1:
            raise ValueError(f"{r.describe()}: the upsampling factor (kernel) must be >= 1")
        return (h * r.kernel, w * r.kernel, c)
    if r.op == OpKind.GAP:
        return (1, 1, c)
    if r.op == OpKind.LINEAR:
        return (h, w, r.c_out)
    if r.op in (OpKind.CONV, OpKind.DWCONV, OpKind.AVGPOOL):
        return (math.ceil(h / r.stride), math.ceil(w / r.stride), r.c_out)
    return (h, w, c)


class Plan(NamedTuple):
    steps: list[tuple[Row, list[int]]]  # rows that execute, in order, with the rows they read
    in_shape: tuple[int, int, int]  # (h, w, c) of the input
    out: int  # the output row: the last present row
    out_shape: tuple[int, int, int] | None  # its (h, w, c); None when it does not exist


def _declared_shape(r: Row) -> tuple[int, int, int]:
    """The (h, w, c) a row's fields say it writes (`hwmodel.layers.out_hw`)."""
    flat = r.op in (OpKind.GAP, OpKind.LINEAR)
    if r.op == OpKind.UPSAMPLE:
        return (r.h * r.kernel, r.w * r.kernel, r.c_out)
    return (1 if flat else math.ceil(r.h / r.stride), 1 if flat else math.ceil(r.w / r.stride), r.c_out)


def plan(t: LayerTable) -> Plan:
    """Which rows execute (`hwmodel.layers` semantics), checking every shape against the table.

    A row executes when it exists (present, inputs exist) and reaches the output row, i.e. after the
    dead-code elimination every compiler does (as `hwmodel.layers.prune_dead`): a row whose result
    is never used costs nothing, in the network or in `profile_layers`.
    """
    exists = np.zeros(t.num_rows, bool)
    if t.weight[0] <= 0:
        raise ValueError("the input row (row 0) must be present (weight 1)")
    exists[0], r0 = True, table_row(t, 0)
    shapes, ins = {0: (r0.h, r0.w, r0.c_out)}, {}
    for i in range(1, t.num_rows):
        r = table_row(t, i)
        if t.weight[i] <= 0 or r.op == OpKind.NONE:
            continue
        if r.op == OpKind.INPUT or not 0 <= r.src < i or r.res >= i or (r.op in _BINARY_OPS and r.res < 0):
            raise ValueError(f"{r.describe()} must read earlier rows (src={r.src}, res={r.res}; ADD and "
                             "CONCAT read both); only row 0 is an INPUT")
        # MIX reads whichever alternatives exist (exists if one does); ADD, CONCAT need both; others `src`.
        wanted = (r.src, r.res) if r.op in _BINARY_OPS else (r.src,)
        wanted = tuple(dict.fromkeys((r.src, r.res))) if r.op == OpKind.MIX else wanted
        ins[i] = [j for j in wanted if j >= 0 and exists[j]]
        exists[i] = bool(ins[i]) if r.op == OpKind.MIX else len(ins[i]) == len(wanted)
        if exists[i]:
            shapes[i] = _out_shape(r, [shapes[j] for j in ins[i]])
    out = int(np.flatnonzero((t.weight > 0) & (t.op != OpKind.NONE))[-1])
    live = np.zeros(t.num_rows, bool)
    live[out] = exists[out]
    for i in range(out, 0, -1):  # backward: mark the inputs of live rows
        if live[i]:
            live[ins[i]] = True
    steps = [(table_row(t, i), ins[i]) for i in np.flatnonzero(live[1:]) + 1]
    return Plan(steps, shapes[0], out, shapes.get(out))


def normal(key: jax.Array, stream: int, shape: tuple[int, ...], std: float = 1.0) -> jax.Array:
    """Normal samples from NumPy seeded by `(key, stream)`.

    Not `jax.random`: eager JAX ops compile once per new shape, and a network has dozens of weight
    shapes, which made building an FBNet network take seconds of compilation before any timing.
    """
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    rng = np.random.default_rng([*np.asarray(key).ravel().tolist(), stream])
    return jnp.asarray(rng.standard_normal(shape, np.float32) * np.float32(std))


def _init_row(r: Row, key: jax.Array) -> dict[str, jax.Array]:
    """He-normal weights (ReLU networks) and zero biases; the bias stands for the folded BN shift."""
    if r.op in (OpKind.CONV, OpKind.DWCONV):
        g = r.c_in if r.op == OpKind.DWCONV else r.groups
        shape = (r.kernel, r.kernel, r.c_in // g, r.c_out)  # HWIO
    elif r.op == OpKind.LINEAR:
        shape = (r.c_in, r.c_out)
    else:
        return {}
    fan_in = math.prod(shape[:-1])
    w = normal(key, r.index, shape, math.sqrt(2.0 / fan_in))
    return {"w": w, "b": jnp.zeros((r.c_out,), jnp.float32)}


def _avg_pool(x: jax.Array, k: int, s: int) -> jax.Array:
    # Padded elements are excluded from the mean (divide by the number of valid elements in each
    # window, PyTorch's count_include_pad=False as NAS-Bench-201 uses), so borders are not darkened.
    window, strides = (1, k, k, 1), (1, s, s, 1)
    total = lax.reduce_window(x, 0.0, lax.add, window, strides, "SAME")
    ones = jnp.ones((1, *x.shape[1:3], 1), x.dtype)
    count = lax.reduce_window(ones, 0.0, lax.add, window, strides, "SAME")  # constant-folded by XLA
    return total / count


def _shuffle(x: jax.Array, groups: int) -> jax.Array:
    # ShuffleNet: view channels as [groups, C/groups], transpose, flatten.
    b, h, w, c = x.shape
    return x.reshape(b, h, w, groups, c // groups).swapaxes(-1, -2).reshape(b, h, w, c)


def _apply_row(r: Row, p: dict[str, jax.Array], x: jax.Array, res: jax.Array | None = None) -> jax.Array:
    """Forward of one computing row (ReLU included when `act == 1`)."""
    if r.op in (OpKind.CONV, OpKind.DWCONV):
        g = r.c_in if r.op == OpKind.DWCONV else r.groups
        y = lax.conv_general_dilated(x, p["w"], (r.stride, r.stride), "SAME", dimension_numbers=_DN,
                                     feature_group_count=g) + p["b"]
    elif r.op == OpKind.LINEAR:
        y = x @ p["w"] + p["b"]
    elif r.op == OpKind.AVGPOOL:
        y = _avg_pool(x, r.kernel, r.stride)
    elif r.op == OpKind.GAP:
        y = jnp.mean(x, axis=(1, 2), keepdims=True)
    elif r.op == OpKind.SHUFFLE:
        y = _shuffle(x, r.groups)
    elif r.op == OpKind.ADD:
        y = x + res
    elif r.op == OpKind.UPSAMPLE:
        y = jnp.repeat(jnp.repeat(x, r.kernel, axis=1), r.kernel, axis=2)  # nearest neighbour
    elif r.op == OpKind.CONCAT:
        y = jnp.concatenate([x, res], axis=-1)
    else:
        raise ValueError(f"{r.describe()} has nothing to execute")
    return jax.nn.relu(y) if r.act == 1 else y


def build_network(table: LayerTable, key: jax.Array | None = None) -> tuple[Params, ApplyFn]:
    """Random weights and a forward function for a concrete, single (unbatched) layer table.

    Args:
      table: the table of one discrete architecture (`space.layers(arch)`), weights in {0, 1}.
      key: PRNG key of the weights (row `i`'s weights depend only on `(key, i)`, not on which other
        rows are present); default `jax.random.key(0)`.

    Returns:
      `(params, apply)`: `params["row<i>"] = {"w": HWIO or [c_in, c_out], "b": [c_out]}` for the
      CONV / DWCONV / LINEAR rows that execute, and `apply(params, x)` mapping an NHWC input
      `[batch, h, w, c]` (row 0's shape) to the output of the network: the last present row. Rows
      that exist but never reach it are dropped (dead code), and if it does not exist itself (e.g.
      a NAS-Bench-201 cell with no path to its output) the network is a constant and returns zeros.
      A 1x1 output (after GAP or LINEAR) is flattened to `[batch, c]`. `apply` is pure; jit it.

    Raises:
      ValueError: a batched table, fractional presence weights or non-integer channels (a
        distribution, not an architecture), or shapes inconsistent with the table.

    Example:
        >>> t = LayerTable.from_rows([dict(op=OpKind.INPUT, c_out=4, h=4, w=4),
        ...                           dict(op=OpKind.DWCONV, src=0, c_in=4, kernel=3, groups=4, h=4, w=4)])
        >>> params, apply = build_network(t)
        >>> apply(params, jnp.ones((1, 4, 4, 4))).shape
        (1, 4, 4, 4)
    """
    key = jax.random.key(0) if key is None else key
    t = concrete(table)
    pl = plan(t)
    params: Params = {}
    for r, _ in pl.steps:
        p = _init_row(r, key)
        if p:
            params[f"row{r.index}"] = p

    def apply(params: Params, x: jax.Array) -> jax.Array:
        if tuple(x.shape[1:]) != pl.in_shape:
            raise ValueError(f"the network expects input [batch, {', '.join(map(str, pl.in_shape))}], "
                             f"got {x.shape}")
        outs = {0: x}
        for r, ins in pl.steps:
            if r.op in (OpKind.MIX, OpKind.IDENTITY):
                y = outs[ins[0]]
                for j in ins[1:]:  # one input for exclusive alternatives; several for NB201's node sums
                    y = y + outs[j]
                y = jax.nn.relu(y) if r.act == 1 else y
            else:
                res = outs[ins[1]] if r.op in _BINARY_OPS else None
                y = _apply_row(r, params.get(f"row{r.index}", {}), outs[ins[0]], res)
            outs[r.index] = y
        if pl.out_shape is None:  # nothing reaches the output: the network is a constant
            y = jnp.zeros((x.shape[0], *_declared_shape(table_row(t, pl.out))), x.dtype)
        else:
            y = outs[pl.out]
        return y.reshape(y.shape[0], -1) if y.shape[1:3] == (1, 1) else y

    return params, apply


def layer_fn(table: LayerTable, row: int, key: jax.Array | None = None,
             batch_size: int = 1) -> tuple[dict[str, jax.Array], Callable, tuple[int, ...]]:
    """One computing row alone: `(params, fn, input_shape)` with `fn(params, x)` on `input_shape`.

    The input shape comes from the row's own fields: `[batch, h, w, c_in]` (`[batch, 1, 1, c_in]`
    for LINEAR). For ADD and CONCAT the second operand is a random tensor held in `params["res"]`, so the timed
    function reads both inputs as in the network.

    Example:
        >>> t = LayerTable.from_rows([dict(op=OpKind.INPUT, c_out=3, h=8, w=8),
        ...                           dict(op=OpKind.CONV, src=0, c_in=3, c_out=8, kernel=3, h=8, w=8)])
        >>> params, fn, shape = layer_fn(t, 1)
        >>> shape, fn(params, jnp.ones(shape)).shape
        ((1, 8, 8, 3), (1, 8, 8, 8))
    """
    key = jax.random.key(0) if key is None else key
    t = concrete(table)
    if not 0 <= row < t.num_rows:
        raise ValueError(f"row {row} out of range for a table of {t.num_rows} rows")
    r = table_row(t, row)
    if r.op in NO_COMPUTE_OPS:
        raise ValueError(f"{r.describe()} computes nothing (input, alias or padding); nothing to execute")
    h, w = (1, 1) if r.op == OpKind.LINEAR else (r.h, r.w)
    shape = (batch_size, h, w, r.c_in)
    res_shape = (*shape[:3], r.c_out - r.c_in) if r.op == OpKind.CONCAT else shape
    _out_shape(r, [shape[1:], res_shape[1:]])  # validates the row's own fields
    params = _init_row(r, key)
    if r.op in _BINARY_OPS:
        params = {"res": normal(key, _RES_STREAM, res_shape)}

    def fn(params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
        return _apply_row(r, params, x, params.get("res"))

    return params, fn, shape


@dataclasses.dataclass(frozen=True)
class TimingResult:
    """Wall-clock timing of one function; every sample is seconds per call.

    Attributes:
      median_s: median over samples (the reported latency).
      mean_s, std_s: mean and standard deviation over samples.
      samples: all samples, in order.
      number: calls per sample (>1 only when `min_time` asked for longer samples).
    """

    median_s: float
    mean_s: float
    std_s: float
    samples: tuple[float, ...]
    number: int = 1

    @property
    def median_ms(self) -> float:
        return 1e3 * self.median_s


def _run(compiled: Callable, args: tuple, number: int) -> float:
    start = time.perf_counter()
    for _ in range(number):
        # Block on every call: JAX dispatches asynchronously, so without it we would time the
        # dispatch (or the throughput of a pipeline of calls), not the latency of one call.
        jax.block_until_ready(compiled(*args))
    return time.perf_counter() - start


def time_fn(fn: Callable, *args: Any, warmup: int = 3, repeats: int = 20,
            min_time: float | None = None) -> TimingResult:
    """Median latency of `jax.jit(fn)(*args)`, compilation excluded.

    Compiles ahead of time (`jit(...).lower(...).compile()`) so no sample pays for tracing or XLA
    compilation, then runs `warmup` untimed calls: the first executions still allocate buffers,
    fill caches and (on GPUs) wake clocks from idle. The median is reported because latency noise
    is one-sided (OS jitter, interrupts, other processes only ever add time), so the mean is
    pulled up by outliers while the median is not.

    Args:
      fn: a JAX-traceable function of array (pytree) arguments.
      *args: its arguments; moved to the default device once, before timing.
      warmup: untimed calls before the samples.
      repeats: number of samples (>= 1).
      min_time: if given, each sample runs `fn` `number` times (doubling `number` until one sample
        lasts `min_time` seconds, as `timeit` does) and records the time per call; use it for
        microsecond layers, where one call is near the timer's resolution.

    Example:
        >>> r = time_fn(lambda x: x @ x, jnp.ones((64, 64)), repeats=5)
        >>> len(r.samples), r.median_s > 0
        (5, True)
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    args = jax.device_put(args)
    compiled = jax.jit(fn).lower(*args).compile()
    for _ in range(max(warmup, 0)):
        jax.block_until_ready(compiled(*args))
    number = 1
    if min_time:
        while _run(compiled, args, number) < min_time and number < 1 << 20:
            number *= 2
    samples = np.asarray([_run(compiled, args, number) / number for _ in range(repeats)])
    return TimingResult(median_s=float(np.median(samples)), mean_s=float(samples.mean()),
                        std_s=float(samples.std()), samples=tuple(float(s) for s in samples), number=number)


def profile_network(table: LayerTable, batch_size: int = 1, key: jax.Array | None = None,
                    warmup: int = 3, repeats: int = 20, min_time: float | None = None) -> TimingResult:
    """Whole-network latency of a concrete table (random weights, random input, jitted).

    Example:
        >>> t = LayerTable.from_rows([dict(op=OpKind.INPUT, c_out=3, h=8, w=8),
        ...                           dict(op=OpKind.GAP, src=0, c_in=3, h=8, w=8)])
        >>> profile_network(t, repeats=3).median_s > 0
        True
    """
    key = jax.random.key(0) if key is None else key
    params, apply = build_network(table, key)
    x = normal(key, INPUT_STREAM, (batch_size, *plan(concrete(table)).in_shape))
    # Weights are arguments, not closed-over constants, which XLA could fold or embed in the program.
    return time_fn(apply, params, x, warmup=warmup, repeats=repeats, min_time=min_time)


def profile_layers(table: LayerTable, batch_size: int = 1, key: jax.Array | None = None,
                   warmup: int = 3, repeats: int = 20, min_time: float | None = None) -> np.ndarray:
    """Median seconds of each row executed alone, `[num_rows]`.

    Rows that do not execute (absent, not fed, dead, aliases, input, padding) get 0. The sum over rows is
    usually *more* than `profile_network`: a whole network amortises dispatch and XLA fuses
    elementwise ops (ReLU, ADD, bias) into their producers, which is why the surrogate fits
    per-layer and whole-network measurements separately.

    Example:
        >>> t = LayerTable.from_rows([dict(op=OpKind.INPUT, c_out=3, h=8, w=8),
        ...                           dict(op=OpKind.IDENTITY, src=0, c_in=3, h=8, w=8),
        ...                           dict(op=OpKind.GAP, src=1, c_in=3, h=8, w=8)])
        >>> (profile_layers(t, repeats=3) > 0).tolist()
        [False, False, True]
    """
    key = jax.random.key(0) if key is None else key
    t = concrete(table)
    out = np.zeros(t.num_rows, np.float64)
    for r, _ in plan(t).steps:  # validates the whole graph before timing anything
        if r.op in NO_COMPUTE_OPS:
            continue
        params, fn, shape = layer_fn(t, r.index, key, batch_size)
        x = normal(key, INPUT_STREAM, shape)
        out[r.index] = time_fn(fn, params, x, warmup=warmup, repeats=repeats, min_time=min_time).median_s
    return out


def backend_description() -> str:
    """The device the timings come from, e.g. `'gpu: NVIDIA H100 80GB HBM3 x1 (jax 0.6.2)'`.

    On CPU the processor model and core count are added: `device_kind` is just `'cpu'` there.
    """
    d = jax.devices()[0]
    text = f"{d.platform}: {d.device_kind} x{jax.device_count()} (jax {jax.__version__})"
    if d.platform == "cpu":
        model = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as f:
                model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), model)
        except OSError:
            pass
        text += f", {model}, {os.cpu_count()} cores"
    return text
