"""Superset layer-table templates: a space's graph is static, its numbers are products of scalars.

A search space describes its weight-sharing superset once, in Python, as rows whose structure (op,
inputs, activation) is fixed and whose numbers (presence weight, channels, kernel, ...) are *products
of named scalars*: a choice probability, an expected width, an expected expansion ratio, times a
constant. Building a `LayerTable` for an architecture or a distribution over architectures is then
one gather and one product per field, so it jits once per space, vmaps over architectures, and is
differentiable in the scalars. The space computes the scalars two ways, from a discrete architecture
(by indexing) and from choice probabilities (by expectation); for a one-hot distribution both give
the same numbers, which is the invariant `expected_layers(one_hot(arch)) == layers(arch)`.

Example:
    >>> t = TableTemplate({"p": (2,)})
    >>> i = t.add(OpKind.INPUT, c_out=3, h=8, w=8)
    >>> j = t.add(OpKind.CONV, src=i, weight=ref("p", 0), c_in=3, c_out=ref("p", 1) * 16, h=8, w=8)
    >>> float(t.build({"p": jnp.array([1.0, 0.5])}).c_out[1])
    8.0
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Union

import jax.numpy as jnp
import numpy as np

from hwmodel.layers import FIELDS_FLOAT, LayerTable, OpKind


@dataclasses.dataclass(frozen=True)
class Expr:
    """`const * prod(scalars[r] for r in refs)`; refs are (group, flat index) pairs."""

    const: float = 1.0
    refs: tuple[tuple[str, tuple[int, ...]], ...] = ()

    def __mul__(self, other: "Number") -> "Expr":
        other = as_expr(other)
        return Expr(self.const * other.const, self.refs + other.refs)

    __rmul__ = __mul__


Number = Union[int, float, Expr]


def as_expr(x: Number) -> Expr:
    return x if isinstance(x, Expr) else Expr(float(x))


def ref(group: str, *index: int) -> Expr:
    """A reference to one scalar of a group, e.g. `ref("p", decision, choice)`."""
    return Expr(1.0, ((group, tuple(index)),))  # type: ignore[arg-type]  # flattened in compile()


class TableTemplate:
    """A superset graph whose rows are added once and built many times (see module docstring)."""

    def __init__(self, groups: Mapping[str, tuple[int, ...]]):
        """Args: groups: name -> shape of each scalar group the builder will be given."""
        self.groups = dict(groups)
        self._offsets: dict[str, int] = {}
        offset = 1  # index 0 holds the constant 1.0
        for name, shape in self.groups.items():
            self._offsets[name] = offset
            offset += math.prod(shape)
        self._num_scalars = offset
        self._rows: list[dict] = []
        self._compiled = None

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, op: OpKind, *, src: int = -1, res: int = -1, act: int = 0, weight: Number = 1.0,
            c_in: Number | None = None, c_out: Number = 1.0, kernel: Number = 1.0,
            stride: Number = 1.0, groups: Number = 1.0, h: Number = 1.0, w: Number = 1.0) -> int:
        """Appends a row and returns its index (the value later rows use as `src`/`res`)."""
        n = len(self._rows)
        if op != OpKind.INPUT and not (0 <= src < n):
            raise ValueError(f"row {n} ({op.name}) needs src in [0, {n}), got {src}")
        if res >= n:
            raise ValueError(f"row {n} ({op.name}) has res={res}, which is not an earlier row")
        row = dict(op=int(op), src=src, res=res, act=act, weight=weight,
                   c_in=c_out if c_in is None else c_in, c_out=c_out, kernel=kernel, stride=stride,
                   groups=groups, h=h, w=w)
        self._rows.append(row)
        self._compiled = None
        return n

    def _flat_index(self, group: str, index: tuple[int, ...]) -> int:
        if group not in self.groups:
            raise KeyError(f"unknown scalar group {group!r}; groups: {sorted(self.groups)}")
        return self._offsets[group] + int(np.ravel_multi_index(index, self.groups[group]))

    def _compile(self):
        if self._compiled is not None:
            return self._compiled
        exprs = {f: [as_expr(r[f]) for r in self._rows] for f in FIELDS_FLOAT}
        k = max(1, max(len(e.refs) for es in exprs.values() for e in es))
        consts = np.zeros((len(FIELDS_FLOAT), len(self._rows)), np.float32)
        refs = np.zeros((len(FIELDS_FLOAT), len(self._rows), k), np.int32)  # 0 -> the constant 1.0
        for fi, f in enumerate(FIELDS_FLOAT):
            for ri, e in enumerate(exprs[f]):
                consts[fi, ri] = e.const
                for ki, (g, idx) in enumerate(e.refs):
                    refs[fi, ri, ki] = self._flat_index(g, idx)
        ints = {f: np.asarray([r[f] for r in self._rows], np.int32) for f in ("op", "src", "res", "act")}
        self._compiled = (consts, refs, ints)
        return self._compiled

    def build(self, scalars: Mapping[str, jnp.ndarray]) -> LayerTable:
        """Builds the table from scalar groups (each `[*batch, *group_shape]`)."""
        consts, refs, ints = self._compile()
        missing = set(self.groups) - set(scalars)
        if missing:
            raise KeyError(f"missing scalar groups {sorted(missing)}")
        parts, batch = [], None
        for name, shape in self.groups.items():
            v = jnp.asarray(scalars[name], jnp.float32)
            nb = v.ndim - len(shape)
            if nb < 0 or tuple(v.shape[nb:]) != tuple(shape):
                raise ValueError(f"scalar group {name!r} has shape {v.shape}, expected [..., *{shape}]")
            batch = v.shape[:nb] if batch is None else batch
            parts.append(v.reshape(*v.shape[:nb], -1))
        batch = tuple(batch or ())
        ones = jnp.ones((*batch, 1), jnp.float32)
        flat = jnp.concatenate([ones] + [jnp.broadcast_to(p, (*batch, p.shape[-1])) for p in parts], -1)
        gathered = jnp.take(flat, jnp.asarray(refs), axis=-1)  # [*batch, F, L, K]
        values = jnp.asarray(consts) * jnp.prod(gathered, axis=-1)
        fields = {f: values[..., i, :] for i, f in enumerate(FIELDS_FLOAT)}
        fields |= {f: jnp.broadcast_to(jnp.asarray(v), (*batch, v.shape[0])) for f, v in ints.items()}
        return LayerTable(**fields)
