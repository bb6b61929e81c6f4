"""Memory of a network: parameter bytes and peak activation bytes from tensor liveness.

Parameters: `sum_rows weight * weight_elems * bytes_per_element` (BatchNorm folded, see
`layers.weight_elems`).

Activations follow an *arena planner* (what TFLite's and most NPU compilers' memory planners do):
running the rows in table order, each row allocates its output tensor when it runs and a tensor is
freed right after its last reader has run. So at row t the arena holds every tensor written at or
before t whose last reader runs at or after t, including t's own inputs and output (an op needs both
at once):

    live(t) = sum_i s_i * [i <= t <= last_use(i)],     peak = max_t live(t) * bytes_per_element

- Row i writes `s_i = weight_i * out_elems_i` elements (the INPUT row holds the image,
  `c_out * h * w`); aliases (MIX, IDENTITY, NONE) write nothing (s = 0).
- `last_use(i)` is the last *present* (weight > 0) row that reads i. A reader that is an alias does not
  read the data itself; it hands the tensor on, so it extends i's lifetime to the alias's own last use.
  This is how a residual's input stays alive through the whole block (IDENTITY -> ADD), and how the
  chosen alternative of a MIX stays alive until the MIX's consumer. Absent readers (weight 0, e.g. the
  rows of an inactive alternative, or padding) extend nothing, so they change neither peak nor lifetimes.
- For a distribution over architectures `s_i` is the expected size and every row with weight > 0 is
  a reader: lifetimes are those of the union of the alternatives (a conservative expected footprint).

Example:
    >>> from hwmodel.layers import LayerTable, OpKind
    >>> t = LayerTable.from_rows([
    ...     dict(op=OpKind.INPUT, c_out=3, h=8, w=8),                            # 192 elements
    ...     dict(op=OpKind.CONV, src=0, c_in=3, c_out=16, kernel=3, h=8, w=8),   # 1024
    ...     dict(op=OpKind.GAP, src=1, c_in=16, c_out=16, h=8, w=8),             # 16
    ... ])
    >>> int(peak_activation_bytes(t, 1))  # input + conv output while the conv runs
    1216
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from hwmodel import layers as L
from hwmodel.accelerators import AcceleratorSpec
from hwmodel.layers import ALIAS_OPS, LayerTable


def _flat_batch(fn, *arrays: jax.Array) -> jax.Array:
    """Applies a function of `[L]` arrays to `[..., L]` arrays by vmapping over flattened batch dims."""
    batch = arrays[0].shape[:-1]
    n = arrays[0].shape[-1]
    flat = [a.reshape((-1, n)) for a in arrays]
    out = jax.vmap(fn)(*flat)
    return out.reshape(batch + (n,))


def _last_use_1d(op: jax.Array, src: jax.Array, res: jax.Array, weight: jax.Array) -> jax.Array:
    n = op.shape[0]
    rows = jnp.arange(n, dtype=jnp.int32)
    present = weight > 0
    alias = jnp.isin(op, jnp.asarray([int(k) for k in ALIAS_OPS], jnp.int32)) & present

    def scatter(lu, inputs, values):
        ok = (inputs >= 0) & present
        # Invalid entries scatter -1 into row 0: a no-op under max.
        return lu.at[jnp.maximum(inputs, 0)].max(jnp.where(ok, values, -1))

    # Direct readers: every present row t that reads i keeps i alive until t.
    lu = scatter(scatter(rows, src, rows), res, rows)

    # Aliases hand their inputs on: last_use[i] >= last_use[alias] for alias readers of i. Readers
    # come later in the table, so this fixed point is reached after (alias nesting depth + 1) rounds
    # of a parallel O(L) scatter, instead of L sequential steps.
    def step(carry):
        lu, _ = carry
        through = jnp.where(alias, lu, -1)
        new = scatter(scatter(lu, src, through), res, through)
        return new, jnp.any(new != lu)

    lu, _ = jax.lax.while_loop(lambda c: c[1], step, (lu, jnp.asarray(True)))
    return lu


def tensor_last_use(table: LayerTable) -> Int[Array, "*b L"]:
    """Index of the last row that needs each row's output (itself if nothing reads it).

    Example:
        >>> from hwmodel.layers import LayerTable, OpKind
        >>> t = LayerTable.from_rows([
        ...     dict(op=OpKind.INPUT, c_out=4, h=2, w=2),
        ...     dict(op=OpKind.IDENTITY, src=0, c_in=4, c_out=4, h=2, w=2),
        ...     dict(op=OpKind.CONV, src=0, c_in=4, c_out=4, h=2, w=2),
        ...     dict(op=OpKind.ADD, src=2, res=1, c_in=4, c_out=4, h=2, w=2),
        ... ])
        >>> tensor_last_use(t).tolist()  # the input lives until the ADD through the IDENTITY
        [3, 3, 3, 3]
    """
    return _flat_batch(_last_use_1d, table.op, table.src, table.res, table.weight)


def tensor_elems(table: LayerTable) -> Float[Array, "*b L"]:
    """Elements each row writes, weighted by its presence (`weight * out_elems`; 0 for aliases)."""
    return table.weight * L.out_elems(table)


def _live_1d(storage: jax.Array, last_use: jax.Array) -> jax.Array:
    # Interval sums in O(L): +s_i at i, -s_i after last_use_i, then a prefix sum.
    n = storage.shape[0]
    delta = jnp.zeros(n + 1, storage.dtype).at[:n].add(storage).at[last_use + 1].add(-storage)
    return jnp.cumsum(delta)[:n]


def live_elems(table: LayerTable) -> Float[Array, "*b L"]:
    """Elements held by the arena while each row runs (`live(t)` of the module docstring)."""
    return _flat_batch(_live_1d, tensor_elems(table), tensor_last_use(table))


def activation_bytes_by_row(table: LayerTable, bytes_per_element: float | AcceleratorSpec) -> Float[Array, "*b L"]:
    """Activation bytes live while each row runs (for reports; its max over rows is the peak).

    Args:
      table: layer table `[..., L]`.
      bytes_per_element: bytes per element, or a spec whose `bytes_per_element` to use.

    Example:
        >>> from hwmodel.layers import LayerTable, OpKind
        >>> t = LayerTable.from_rows([dict(op=OpKind.INPUT, c_out=2, h=2, w=2),
        ...                           dict(op=OpKind.GAP, src=0, c_in=2, c_out=2, h=2, w=2)])
        >>> activation_bytes_by_row(t, 4).tolist()
        [32.0, 40.0]
    """
    return live_elems(table) * _bpe(bytes_per_element)


def peak_activation_bytes(table: LayerTable, bytes_per_element: float | AcceleratorSpec,
                          temperature: float | jax.Array | None = None) -> Float[Array, "*b"]:
    """Peak activation memory in bytes under the arena semantics of the module docstring.

    Args:
      table: layer table `[..., L]` (row weights may be fractional: expected tensor sizes).
      bytes_per_element: bytes per element, or a spec whose `bytes_per_element` to use.
      temperature: None for the exact max over rows; otherwise (a float or a traced scalar) a smooth max
        `m * tau * logsumexp(live / (m * tau))` with `m` the (constant) exact peak, so tau is
        relative: the result lies in `[peak, peak * (1 + tau * log L)]` and its gradient is a
        softmax over rows instead of a one-hot.

    Example:
        >>> from hwmodel.layers import LayerTable, OpKind
        >>> t = LayerTable.from_rows([dict(op=OpKind.INPUT, c_out=2, h=2, w=2),
        ...                           dict(op=OpKind.GAP, src=0, c_in=2, c_out=2, h=2, w=2)])
        >>> float(peak_activation_bytes(t, 4))
        40.0
    """
    live = live_elems(table)
    if temperature is None:
        peak = jnp.max(live, axis=-1)
    else:
        if isinstance(temperature, (int, float)) and not temperature > 0:  # a tracer passes unchecked
            raise ValueError(f"temperature must be > 0 or None, got {temperature!r}")
        scale = jax.lax.stop_gradient(jnp.maximum(jnp.max(live, axis=-1, keepdims=True), 1.0)) * temperature
        peak = jnp.squeeze(scale, -1) * jax.nn.logsumexp(live / scale, axis=-1)
    return peak * _bpe(bytes_per_element)


def param_bytes(spec_or_bytes: AcceleratorSpec | float, table: LayerTable) -> Float[Array, "*b"]:
    """Parameter memory in bytes: `sum weight * weight_elems * bytes_per_element`.

    Args:
      spec_or_bytes: an `AcceleratorSpec` (its `bytes_per_element`) or bytes per element.
      table: layer table `[..., L]`.

    Example:
        >>> from hwmodel.layers import LayerTable, OpKind
        >>> t = LayerTable.from_rows([dict(op=OpKind.INPUT, c_out=3, h=8, w=8),
        ...                           dict(op=OpKind.CONV, src=0, c_in=3, c_out=16, kernel=3, h=8, w=8)])
        >>> float(param_bytes(4, t))  # (3*3*3*16 + 16) * 4
        1792.0
    """
    return jnp.sum(table.weight * L.weight_elems(table), axis=-1) * _bpe(spec_or_bytes)


def _bpe(x: AcceleratorSpec | float) -> float:
    return float(x.bytes_per_element) if isinstance(x, AcceleratorSpec) else float(x)
