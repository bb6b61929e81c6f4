"""The NAS-Bench-201 supernet: the benchmark's TinyNetwork with every edge holding all 5 operations.

Follows the search network of the benchmark's code base (xautodl `TinyNetworkDarts`/`GDAS`,
`NAS201SearchCell`): a 3x3 conv + BN stem; three stages of `N` cells (C, 2C, 4C channels) joined by
ResNet basic blocks with stride 2; BN + ReLU, global average pooling and a linear classifier. Each
of a cell's 6 edges computes `sum_k w[e, k] * op_k(x)` over `none` (zeros), `skip_connect`,
`nor_conv_1x1`, `nor_conv_3x3` (ReLU -> conv -> BN) and `avg_pool_3x3` (stride 1, padding 1,
`count_include_pad=False`); node j is the sum of its incoming edges. Every cell shares the one
architecture (NAS-Bench-201 stacks one cell). As in the reference search code, the cells' BNs are
not affine by default (`affine=False`): the architecture weights, not BN scales, scale each op.

The derived subnet keeps only the chosen operation of each edge (no module for `none` edges; a node
with no incoming edge is zeros, as in NAS-Bench-201).

Example:
    >>> from supernet.spaces.nb201 import NB201Space
    >>> space = NB201Space(channels=4, cells_per_stage=1)
    >>> net = NB201Supernet(space, rngs=nnx.Rngs(0))
    >>> net(jnp.zeros((1, 32, 32, 3)), space.uniform_probs()).shape
    (1, 10)
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float

from supernet.blocks import ReportsTaps, SharedConv, avg_pool, batch_norm, chain_point, mixed, relu
from supernet.heads import ClassificationHead
from supernet.model import SUPERNETS, Supernet
from supernet.space import Architecture, ArchProbs
from supernet.spaces.nb201 import CONV1X1, CONV3X3, EDGES, NONE, NUM_NODES, POOL3X3, SKIP, NB201Space


class ReLUConvBN(nnx.Module):
    """ReLU -> conv -> BN (xautodl `ReLUConvBN`, padding k // 2)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, *, affine: bool = True,
                 rngs: nnx.Rngs):
        self.conv = SharedConv(c_in, c_out, kernel, stride, rngs=rngs)
        self.bn = batch_norm(c_out, affine=affine, rngs=rngs)

    def __call__(self, x: Array) -> Array:
        return self.bn(self.conv(relu(x)))


class ResNetBasicBlock(nnx.Module):
    """NB201's reduction block: two ReLUConvBN 3x3 (first with stride 2) + AvgPool 2x2 -> 1x1 conv."""

    def __init__(self, c_in: int, c_out: int, *, rngs: nnx.Rngs):
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2, rngs=rngs)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, rngs=rngs)
        self.down = SharedConv(c_in, c_out, 1, rngs=rngs)

    def __call__(self, x: Array) -> Array:
        return self.conv_b(self.conv_a(x)) + self.down(avg_pool(x, 2, 2, 0))


class MixedEdge(nnx.Module):
    """All operations of one edge; `__call__(x, w)` returns `sum_k w[k] op_k(x)` (none adds 0)."""

    def __init__(self, c: int, *, affine: bool, rngs: nnx.Rngs):
        self.conv1 = ReLUConvBN(c, c, 1, affine=affine, rngs=rngs)
        self.conv3 = ReLUConvBN(c, c, 3, affine=affine, rngs=rngs)

    def __call__(self, x: Array, w: Float[Array, "5"]) -> Array:
        ops = [None] * 5  # `none` adds nothing
        ops[SKIP], ops[CONV1X1], ops[CONV3X3] = (lambda h: h), self.conv1, self.conv3
        ops[POOL3X3] = lambda h: avg_pool(h, 3, 1, 1)
        return mixed(w, ops, x)  # sum_k w[k] op_k(x), with activation taps (`blocks.Taps`)


class SearchCell(nnx.Module):
    """A cell with every edge mixed: node j = sum_{i<j} edge_{j,i}(node_i)."""

    def __init__(self, c: int, *, affine: bool, rngs: nnx.Rngs):
        self.edges = nnx.List([MixedEdge(c, affine=affine, rngs=rngs) for _ in EDGES])

    def __call__(self, x: Array, w: Float[Array, "6 5"]) -> Array:
        nodes = [x]
        for j in range(1, NUM_NODES):
            nodes.append(sum(self.edges[e](nodes[i], w[e]) for e, (to, i) in enumerate(EDGES) if to == j))
        return nodes[-1]


class DerivedCell(nnx.Module):
    """A cell with one fixed operation per edge (modules only for the convs)."""

    def __init__(self, ops: tuple[int, ...], convs: dict[int, ReLUConvBN]):
        self.ops = ops
        self.convs = nnx.Dict({str(e): m for e, m in convs.items()})

    def __call__(self, x: Array) -> Array:
        nodes = [x]
        for j in range(1, NUM_NODES):
            acc = jnp.zeros_like(x)  # a node with only `none` inputs is zeros (NB201)
            for e, (to, i) in enumerate(EDGES):
                if to != j or self.ops[e] == NONE:
                    continue
                if self.ops[e] == SKIP:
                    y = nodes[i]
                elif self.ops[e] == POOL3X3:
                    y = avg_pool(nodes[i], 3, 1, 1)
                else:
                    y = self.convs[str(e)](nodes[i])
                acc = acc + y
            nodes.append(acc)
        return nodes[-1]


class NB201Backbone(nnx.Module, ReportsTaps):
    """Stem, stages of cells with reductions between, final BN + ReLU; shared by search and derive."""

    def __init__(self, stem_conv, stem_bn, stages: list[list[nnx.Module]], reductions: list[nnx.Module],
                 last_bn):
        self.stem_conv, self.stem_bn = stem_conv, stem_bn
        self.stages = nnx.List([nnx.List(s) for s in stages])
        self.reductions = nnx.List(reductions)
        self.last_bn = last_bn

    def run(self, x: Array, cell_fn) -> list[Array]:
        # chain_point: every path crosses the stem, each cell and each reduction (zero-shot taps)
        x = chain_point(self.stem_bn(self.stem_conv(x)))
        feats = []
        for s, cells in enumerate(self.stages):
            if s:
                x = chain_point(self.reductions[s - 1](x))
            for cell in cells:
                x = chain_point(cell_fn(cell, x))
            feats.append(x)
        feats[-1] = relu(self.last_bn(feats[-1]))
        return feats

    def __call__(self, x: Array) -> list[Array]:
        return self.run(x, lambda cell, h: cell(h))


@SUPERNETS.register("nb201")
class NB201Supernet(Supernet, ReportsTaps):
    """Weight-sharing NAS-Bench-201 network (see module docstring)."""

    def __init__(self, space: NB201Space, *, rngs: nnx.Rngs, affine: bool = False):
        self.space = space
        c, n = space.channels, space.cells_per_stage
        widths = [c, 2 * c, 4 * c]
        stages = [[SearchCell(w, affine=affine, rngs=rngs) for _ in range(n)] for w in widths]
        reductions = [ResNetBasicBlock(widths[i], widths[i + 1], rngs=rngs) for i in range(2)]
        self.net = NB201Backbone(SharedConv(3, c, 3, rngs=rngs), batch_norm(c, rngs=rngs), stages,
                                 reductions, batch_norm(4 * c, rngs=rngs))
        self.head = ClassificationHead(4 * c, space.num_classes, rngs=rngs)
        self.init_arch_logits()

    def backbone(self, x: Float[Array, "b h w 3"], arch_weights: ArchProbs) -> list[Array]:
        w = arch_weights[: len(EDGES), :5].astype(x.dtype)
        return self.net.run(x, lambda cell, h: cell(h, w))

    def derive_backbone(self, arch: Architecture) -> NB201Backbone:
        ops = tuple(int(o) for o in np.asarray(arch))

        def derive_cell(cell: SearchCell) -> DerivedCell:
            convs = {}
            for e, op in enumerate(ops):
                if op in (CONV1X1, CONV3X3):
                    src = cell.edges[e].conv1 if op == CONV1X1 else cell.edges[e].conv3
                    convs[e] = nnx.clone(src)
            return DerivedCell(ops, convs)

        b = self.net
        return NB201Backbone(nnx.clone(b.stem_conv), nnx.clone(b.stem_bn),
                             [[derive_cell(c) for c in s] for s in b.stages],
                             [nnx.clone(r) for r in b.reductions], nnx.clone(b.last_bn))

