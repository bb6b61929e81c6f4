"""The layer table: what every cost model reads.

A network of any search space is described as a *layer table*: a struct of arrays with one row per
operation, in execution order. It is both a cost-model input (shapes, kernel, stride, groups) and a
small dataflow graph (`src`, `res` name the rows whose outputs a row consumes), so the memory model
can compute tensor liveness and `hwmodel.profile` can execute the network for real.

Weight sharing makes every search space a *superset* graph: a block holds all of its alternatives
(IBN, fused IBN, skip, ...) as rows, and `weight` says how present each row is. For a discrete
architecture `weight` is 1 on the chosen rows and 0 elsewhere; for a distribution over choices it is
the probability that the row exists, and channel counts may be expectations (continuous). Because the
superset's shape does not depend on the architecture, tables of one space have a static shape: they
jit once, vmap over architectures, and differentiate with respect to the architecture distribution.
Padding rows (op NONE, weight 0) make tables of different lengths stack (`pad`).

Execution semantics (used by `memory` and `profile`):
- Row 0 is the network input (op INPUT); `src == -1` only there.
- A row is *present* when `weight > 0`; its output *exists* when it is present and its inputs exist
  (for MIX: when at least one input exists). Absent rows cost nothing and hold no memory.
- MIX outputs the sum of its existing inputs and is free: it merges mutually exclusive alternatives,
  so in a discrete network exactly one input exists and MIX is an alias of it (no compute, no tensor).
  IDENTITY is an alias of its input (a skip connection). Neither writes a new tensor.
- ADD is a real elementwise add (a residual); both inputs exist whenever it is present.
- UPSAMPLE is a nearest-neighbour resize by the integer factor `kernel` (`h_out = h * kernel`; a
  bilinear resize costs the same data movement on the models here); CONCAT joins `src` (`c_in`
  channels) and `res` (`c_out - c_in` channels) of the same `h x w` along channels, both inputs
  needed: the decoders of detection and segmentation heads (FPN, LR-ASPP) are built from them.
- Every other op writes a new tensor of `c_out x h_out x w_out` elements.

Example:
    >>> t = LayerTable.from_rows([
    ...     dict(op=OpKind.INPUT, c_out=3, h=32, w=32),
    ...     dict(op=OpKind.CONV, src=0, c_in=3, c_out=16, kernel=3, stride=1, h=32, w=32),
    ... ])
    >>> float(macs(t)[1])  # 32*32*3*3*3*16
    442368.0
"""

from __future__ import annotations

import enum
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jaxtyping import Array, Float, Int


class OpKind(enum.IntEnum):
    """Operation kinds of a layer-table row (stored as int32 in `LayerTable.op`)."""

    NONE = 0  # padding: no operation
    INPUT = 1  # the network input tensor (row 0)
    CONV = 2  # KxK convolution with `groups` groups (groups=1: full conv)
    DWCONV = 3  # depthwise KxK convolution (groups == c_in == c_out)
    AVGPOOL = 4  # KxK average pooling, 'same' padding
    GAP = 5  # global average pooling to 1x1
    LINEAR = 6  # fully connected layer on a [c_in] vector
    ADD = 7  # elementwise residual add of `src` and `res`
    MIX = 8  # free merge of exclusive alternatives (alias of the one that exists)
    IDENTITY = 9  # skip connection (alias of `src`)
    SHUFFLE = 10  # channel shuffle (ShuffleNet), a pure data movement
    UPSAMPLE = 11  # nearest-neighbour upsampling by the integer factor `kernel` (h_out = h * kernel)
    CONCAT = 12  # channel concatenation of `src` (c_in channels) and `res` (c_out - c_in channels)


#: Ops that write no tensor of their own (aliases) and cost nothing.
ALIAS_OPS = (OpKind.NONE, OpKind.MIX, OpKind.IDENTITY)
#: Ops with weights (multiply-accumulate layers).
WEIGHTED_OPS = (OpKind.CONV, OpKind.DWCONV, OpKind.LINEAR)
#: Ops that read two tensors, both needed (`src` and `res`).
BINARY_OPS = (OpKind.ADD, OpKind.CONCAT)
#: Ops that only move data (no arithmetic): their work is the elements they write.
MOVE_OPS = (OpKind.SHUFFLE, OpKind.UPSAMPLE, OpKind.CONCAT)

FIELDS_INT = ("op", "src", "res", "act")
FIELDS_FLOAT = ("weight", "c_in", "c_out", "kernel", "stride", "groups", "h", "w")


@struct.dataclass
class LayerTable:
    """A network as a padded struct of arrays, one row per operation (see module docstring).

    All fields have the same shape `[..., L]`; leading dimensions batch several networks.

    Attributes:
      op: `OpKind` of each row.
      src: row index of the main input (-1 for the INPUT row).
      res: row index of the second input (ADD, MIX), else -1.
      act: 1 when a ReLU follows the op (used only when executing the table).
      weight: presence of the row in [0, 1]; 1/0 for a discrete network, a probability otherwise.
      c_in, c_out: input and output channels (possibly expected values, hence float).
      kernel: spatial kernel size K (KxK).
      stride: spatial stride.
      groups: convolution groups (c_in for a depthwise conv).
      h, w: spatial size of the input.
    """

    op: Int[Array, "*b L"]
    src: Int[Array, "*b L"]
    res: Int[Array, "*b L"]
    act: Int[Array, "*b L"]
    weight: Float[Array, "*b L"]
    c_in: Float[Array, "*b L"]
    c_out: Float[Array, "*b L"]
    kernel: Float[Array, "*b L"]
    stride: Float[Array, "*b L"]
    groups: Float[Array, "*b L"]
    h: Float[Array, "*b L"]
    w: Float[Array, "*b L"]

    @property
    def num_rows(self) -> int:
        return self.op.shape[-1]

    @property
    def valid(self) -> jax.Array:
        """Validity mask: rows present in the network (weight > 0)."""
        return self.weight > 0

    @classmethod
    def from_rows(cls, rows: Sequence[dict[str, Any]]) -> "LayerTable":
        """Builds a table from a list of dicts (missing fields take neutral defaults).

        Defaults: src=-1, res=-1, act=0, weight=1, c_in=c_out, kernel=1, stride=1, groups=1, h=w=1.
        """
        cols: dict[str, list] = {k: [] for k in FIELDS_INT + FIELDS_FLOAT}
        for r in rows:
            unknown = set(r) - set(cols)
            if unknown:
                raise ValueError(f"unknown layer-table fields {sorted(unknown)}; valid: {sorted(cols)}")
            c_out = r.get("c_out", r.get("c_in", 1))
            defaults = dict(op=OpKind.NONE, src=-1, res=-1, act=0, weight=1.0, c_in=c_out, c_out=c_out,
                            kernel=1, stride=1, groups=1, h=1, w=1)
            for k in cols:
                cols[k].append(r.get(k, defaults[k]))
        arrays = {k: jnp.asarray(np.asarray(v, np.int32)) for k, v in cols.items() if k in FIELDS_INT}
        arrays |= {k: jnp.asarray(np.asarray(v, np.float32)) for k, v in cols.items() if k in FIELDS_FLOAT}
        return cls(**arrays)

    def to_numpy(self) -> "LayerTable":
        """The same table with NumPy leaves (for host-side loops such as `profile`)."""
        return jax.tree.map(np.asarray, self)

    def __getitem__(self, idx) -> "LayerTable":
        """Indexes the leading (batch) dimensions of every field."""
        return jax.tree.map(lambda a: a[idx], self)


def pad(table: LayerTable, length: int) -> LayerTable:
    """Pads a table with NONE rows (weight 0) to `length` rows so tables of different nets stack."""
    n = table.num_rows
    if length < n:
        raise ValueError(f"cannot pad a table of {n} rows to {length} rows")
    def _pad(x, value):
        widths = [(0, 0)] * (x.ndim - 1) + [(0, length - n)]
        return jnp.pad(x, widths, constant_values=value)
    fill = dict(op=int(OpKind.NONE), src=0, res=-1, act=0, weight=0.0, c_in=0.0, c_out=0.0, kernel=1.0,
                stride=1.0, groups=1.0, h=1.0, w=1.0)
    return LayerTable(**{k: _pad(getattr(table, k), v) for k, v in fill.items()})


def stack(tables: Sequence[LayerTable]) -> LayerTable:
    """Stacks tables (padding to the longest) into one batched table `[len(tables), L]`."""
    length = max(t.num_rows for t in tables)
    padded = [pad(t, length) for t in tables]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *padded)


# ---------------------------------------------------------------------------------------------
# Derived per-row quantities. All are per row and *unweighted*: multiply by `table.weight` to get
# a network total. They are smooth in the (possibly continuous) channel counts.
# ---------------------------------------------------------------------------------------------


def _is(table: LayerTable, *kinds: OpKind) -> jax.Array:
    return jnp.isin(table.op, jnp.asarray([int(k) for k in kinds], jnp.int32))


def out_hw(table: LayerTable) -> tuple[jax.Array, jax.Array]:
    """Output spatial size: ceil(h / stride) ('same' padding); 1x1 after GAP and LINEAR; h * kernel
    after UPSAMPLE."""
    flat = _is(table, OpKind.GAP, OpKind.LINEAR)
    up = _is(table, OpKind.UPSAMPLE)
    ho = jnp.where(flat, 1.0, jnp.where(up, table.h * table.kernel, jnp.ceil(table.h / table.stride)))
    wo = jnp.where(flat, 1.0, jnp.where(up, table.w * table.kernel, jnp.ceil(table.w / table.stride)))
    return ho, wo


def in_elems(table: LayerTable) -> jax.Array:
    """Elements of the input tensors read by each row (both inputs for ADD and CONCAT)."""
    n = table.c_in * table.h * table.w
    n = jnp.where(_is(table, OpKind.ADD), 2 * n, n)
    n = jnp.where(_is(table, OpKind.CONCAT), table.c_out * table.h * table.w, n)
    return jnp.where(_is(table, *ALIAS_OPS, OpKind.INPUT), 0.0, n)


def out_elems(table: LayerTable) -> jax.Array:
    """Elements of the tensor each row writes (0 for aliases and padding)."""
    ho, wo = out_hw(table)
    n = table.c_out * ho * wo
    return jnp.where(_is(table, *ALIAS_OPS), 0.0, n)


def weight_elems(table: LayerTable) -> jax.Array:
    """Parameters of each row: conv/linear weights plus one bias per output channel.

    BatchNorm is assumed folded into the preceding conv at inference (scale into the weights,
    shift into the bias), as every accelerator compiler does, hence "+ c_out".
    """
    k2 = table.kernel * table.kernel
    conv = k2 * table.c_in * table.c_out / table.groups + table.c_out
    dw = k2 * table.c_out + table.c_out
    lin = table.c_in * table.c_out + table.c_out
    return jnp.select([_is(table, OpKind.CONV), _is(table, OpKind.DWCONV), _is(table, OpKind.LINEAR)],
                      [conv, dw, lin], 0.0)


def macs(table: LayerTable) -> jax.Array:
    """Multiply-accumulates of each row (for pooling and adds: one op per input element used; data
    movement, `MOVE_OPS`, has none)."""
    ho, wo = out_hw(table)
    k2 = table.kernel * table.kernel
    conv = ho * wo * k2 * table.c_in * table.c_out / table.groups
    dw = ho * wo * k2 * table.c_out
    lin = table.c_in * table.c_out
    pool = ho * wo * k2 * table.c_out
    gap = table.h * table.w * table.c_in
    add = ho * wo * table.c_out
    return jnp.select(
        [_is(table, OpKind.CONV), _is(table, OpKind.DWCONV), _is(table, OpKind.LINEAR),
         _is(table, OpKind.AVGPOOL), _is(table, OpKind.GAP), _is(table, OpKind.ADD)],
        [conv, dw, lin, pool, gap, add], 0.0)


def layer_flops(table: LayerTable) -> jax.Array:
    """FLOPs of each row, weighted by its presence (2 per MAC of conv/linear rows, 0 elsewhere)."""
    mac_layers = _is(table, OpKind.CONV, OpKind.DWCONV, OpKind.LINEAR)
    return 2.0 * jnp.where(mac_layers, macs(table), 0.0) * table.weight


def total_flops(table: LayerTable) -> jax.Array:
    """FLOPs of the network (2 per MAC of conv/linear layers; FBNet/NAS-Bench-201 convention)."""
    return jnp.sum(layer_flops(table), axis=-1)


def total_params(table: LayerTable) -> jax.Array:
    """Number of parameters of the network (expected value for a distribution)."""
    return jnp.sum(weight_elems(table) * table.weight, axis=-1)


def is_op(table: LayerTable, *kinds: OpKind) -> jax.Array:
    """Boolean mask of rows whose op is one of `kinds`."""
    return _is(table, *kinds)


#: What a device runs of a discrete network (`executed`): `prune` removes the ops fed only by `none`
#: edges (their input is all zeros) and the ops whose output never reaches the network output;
#: `unused` removes only the latter (a graph compiler's dead-code elimination, which cannot know that
#: an input is all zeros: NAS-Bench-201's Pixel 3 column, where a conv behind a `none` edge still
#: costs, and a cell whose output is cut off costs ~0.004 ms); `keep` runs everything (a
#: layer-by-layer simulator such as HW-NAS-Bench's Eyeriss column).
DEAD_CODE = ("prune", "unused", "keep")


def executed(table: LayerTable, dead_code: str) -> LayerTable:
    """The rows a device with the `dead_code` semantics (`DEAD_CODE`) runs of a discrete table."""
    if dead_code not in DEAD_CODE:
        raise ValueError(f"dead_code must be one of {', '.join(DEAD_CODE)}, got {dead_code!r}")
    return table if dead_code == "keep" else prune_dead(table, forward=dead_code == "prune")


def prune_dead(table: LayerTable, backward: bool = True, forward: bool = True) -> LayerTable:
    """Zeroes the weight of rows that a compiler would remove from a *discrete* network.

    Forward (with `forward`): a row whose input does not exist (an op fed only by `none` edges) is
    removed (MIX needs one existing input, ADD and CONCAT both, as in the execution semantics above). Backward
    (dead-code elimination): a row whose output never
    reaches the network output (the last non-padding row) is removed; when nothing reaches the output
    (a NAS-Bench-201 cell with a disconnected output node) the whole network folds to a constant.
    Deployed graphs are pruned like this: NAS-Bench-201's Pixel 3 latencies (HW-NAS-Bench) show it,
    e.g. ~0.004 ms for cells whose output node is disconnected.

    Jittable and vmappable (two `lax.fori_loop`s over rows); meant for discrete tables (weights 0/1).
    """
    def one(t: LayerTable) -> LayerTable:
        n = t.op.shape[0]
        present = t.weight > 0

        def fwd(i, ex):
            src_ok = jnp.where(t.src[i] >= 0, ex[jnp.maximum(t.src[i], 0)], t.op[i] == OpKind.INPUT)
            res_ok = (t.res[i] >= 0) & ex[jnp.maximum(t.res[i], 0)]
            binary = (t.op[i] == OpKind.ADD) | (t.op[i] == OpKind.CONCAT)
            ok = jnp.where(t.op[i] == OpKind.MIX, src_ok | res_ok, jnp.where(binary, src_ok & res_ok, src_ok))
            return ex.at[i].set(present[i] & ok)

        exists = jax.lax.fori_loop(0, n, fwd, jnp.zeros(n, bool)) if forward else present
        if backward:
            last = jnp.max(jnp.where(t.op != OpKind.NONE, jnp.arange(n), 0))

            def bwd(j, reach):
                i = n - 1 - j
                r = reach[i] & exists[i]
                reach = reach.at[jnp.maximum(t.src[i], 0)].max(r & (t.src[i] >= 0))
                return reach.at[jnp.maximum(t.res[i], 0)].max(r & (t.res[i] >= 0))

            reach = jax.lax.fori_loop(0, n, bwd, jnp.zeros(n, bool).at[last].set(True))
            exists = exists & reach
        return t.replace(weight=jnp.where(exists, t.weight, 0.0))

    fn = one
    for _ in range(table.op.ndim - 1):
        fn = jax.vmap(fn)
    return fn(table)
