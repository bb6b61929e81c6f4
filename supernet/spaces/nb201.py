"""The NAS-Bench-201 cell space (Dong & Yang, ICLR 2020) as a superset layer table.

A cell is a DAG of 4 nodes; each of its 6 edges (j <- i, i < j) carries one of 5 operations, so the
space holds 5**6 = 15,625 cells. One decision per edge, in the order of the official string
`|op~0|+|op~0|op~1|+|op~0|op~1|op~2|` (group k lists the edges into node k, `op~i` is the edge from
node i): edges (1<-0), (2<-0), (2<-1), (3<-0), (3<-1), (3<-2). Choices keep the official order
`none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3`, so indices match the benchmark's.

The network is the benchmark's `TinyNetwork` (xautodl / nas_201_api): a 3x3 conv stem with BN;
three stages of `cells_per_stage` cells with C, 2C, 4C channels; between stages a ResNet basic
reduction block; BN + ReLU, global average pooling and a linear classifier.

Table conventions (see `hwmodel.layers` for the execution semantics):
- Every cell holds all alternatives of every edge: IDENTITY (skip_connect), CONV 1x1, CONV 3x3 and
  AVGPOOL 3x3, weighted by `ref("p", edge, choice)`; `none` has no row (it outputs zeros, which
  add nothing to a node sum). A chain of MIX rows merges an edge's alternatives.
- Node j = sum of its incoming edges, also merged with MIX rows. MIX is a *free* merge in the
  table's semantics while NB201 really adds the edges (a real elementwise add). We accept this
  small approximation: an add of C x H x W elements is negligible next to the convolutions.
- `nor_conv_kxk` is ReLU -> conv -> BN (pre-activation). The row has `act=0` (`act` means a ReLU
  *after* the op): the ReLU is fused into the conv's input read, free on an accelerator. BN is
  folded into the conv (one bias per output channel, see `hwmodel.layers.weight_elems`). The final
  BN + ReLU before pooling has no row for the same reason. No row of this space sets `act=1`.
- A cell whose node 3 is unreachable from node 0 (e.g. all edges `none`) outputs zeros in NB201;
  here its last MIX has no existing input, so rows downstream are present but their inputs do not
  exist. FLOPs/params still count them (as NB201's counter does).

Counting conventions vs the NAS-Bench-201 API (`get_cost_info`), CIFAR-10, all-`nor_conv_3x3`:
the API reports params 1.531546 M and "flops" 220.11969 M, i.e. multiply-accumulates of convs and
linear layers (the linear's bias counted as one MAC per output, pooling not counted), and params
with 2 per BN channel (affine) and no conv biases. `hwmodel.layers.total_flops` counts 2 FLOPs per
MAC without the linear bias, and `total_params` one folded bias per conv output channel (also on the
reduction shortcut's 1x1 conv, which has no BN in NB201) and nothing for the final BN.

Example:
    >>> space = NB201Space()
    >>> arch = space.decode("|nor_conv_3x3~0|+|none~0|skip_connect~1|+|none~0|none~1|avg_pool_3x3~2|")
    >>> arch.tolist()
    [3, 0, 1, 0, 0, 4]
    >>> space.layers(arch).num_rows == len(space.template)
    True
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from hwmodel.layers import OpKind
from supernet.space import Architecture, ArchProbs, Decision, SearchSpace
from supernet.spaces.registry import SPACES
from supernet.template import TableTemplate, ref

#: Operations in the official NAS-Bench-201 order (choice index = position).
OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NONE, SKIP, CONV1X1, CONV3X3, POOL3X3 = range(len(OPS))
#: Edges as (to, from) in the order of the official string (one decision each).
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
NUM_NODES = 4
#: The official string's shape, shown in parse errors.
ARCH_FORMAT = "|op~0|+|op~0|op~1|+|op~0|op~1|op~2|"


def _edge(t: TableTemplate, e: int, x: int, c: int, h: int) -> int:
    """Adds the alternatives of edge `e` reading row `x`; returns the row of their merge."""
    dims = dict(c_in=c, c_out=c, h=h, w=h)
    skip = t.add(OpKind.IDENTITY, src=x, weight=ref("p", e, SKIP), **dims)
    # nor_conv_kxk = ReLU -> conv -> BN (NB201 `ReLUConvBN`); pre-ReLU fused, BN folded (act=0).
    conv1 = t.add(OpKind.CONV, src=x, weight=ref("p", e, CONV1X1), kernel=1, **dims)
    conv3 = t.add(OpKind.CONV, src=x, weight=ref("p", e, CONV3X3), kernel=3, **dims)
    # avg_pool_3x3: stride 1, padding 1 (count_include_pad=False); C_in == C_out, no preprocessing.
    pool = t.add(OpKind.AVGPOOL, src=x, weight=ref("p", e, POOL3X3), kernel=3, **dims)
    out = skip
    for alt in (conv1, conv3, pool):  # MIX has two inputs: chain the four alternatives
        out = t.add(OpKind.MIX, src=out, res=alt, **dims)
    return out


def _cell(t: TableTemplate, x: int, c: int, h: int) -> int:
    """Adds one cell reading row `x` (node 0); returns the row of node 3 (the cell output)."""
    nodes = [x]
    for j in range(1, NUM_NODES):
        acc = None
        for e, (to, frm) in enumerate(EDGES):
            if to != j:
                continue
            out = _edge(t, e, nodes[frm], c, h)
            # Node sum as a free MIX merge: an approximation, see the module docstring.
            acc = out if acc is None else t.add(OpKind.MIX, src=acc, res=out, c_in=c, c_out=c, h=h, w=h)
        nodes.append(acc)
    return nodes[-1]


def _reduction(t: TableTemplate, x: int, c_in: int, c_out: int, h: int) -> tuple[int, int]:
    """ResNet basic block with stride 2 (NB201 `ResNetBasicblock`); returns (row, output size)."""
    ho = math.ceil(h / 2)
    a = t.add(OpKind.CONV, src=x, c_in=c_in, c_out=c_out, kernel=3, stride=2, h=h, w=h)  # ReLU-conv-BN
    b = t.add(OpKind.CONV, src=a, c_in=c_out, c_out=c_out, kernel=3, h=ho, w=ho)  # ReLU-conv-BN
    # Shortcut: AvgPool 2x2 stride 2, then a 1x1 conv without BN.
    p = t.add(OpKind.AVGPOOL, src=x, c_in=c_in, c_out=c_in, kernel=2, stride=2, h=h, w=h)
    s = t.add(OpKind.CONV, src=p, c_in=c_in, c_out=c_out, kernel=1, h=ho, w=ho)
    return t.add(OpKind.ADD, src=b, res=s, c_in=c_out, c_out=c_out, h=ho, w=ho), ho


@SPACES.register("nb201")
class NB201Space(SearchSpace):
    """The NAS-Bench-201 cell space: 6 edges x 5 operations, one shared cell in every position.

    Attributes:
      cell_rows: `(start, stop)` row ranges of each cell in the table, in network order.

    Example:
        >>> space = NB201Space(num_classes=100)
        >>> space.size, space.num_decisions
        (15625, 6)
        >>> space.encode(np.array([3, 3, 3, 3, 3, 3]))
        '|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|'
    """

    name = "nb201"
    family = "nb201"

    def __init__(self, num_classes: int = 10, input_size: int = 32, channels: int = 16,
                 cells_per_stage: int = 5):
        """Builds the space.

        Args:
          num_classes: classifier outputs (10 CIFAR-10, 100 CIFAR-100, 120 ImageNet16-120).
          input_size: input height = width (32 for CIFAR, 16 for ImageNet16-120).
          channels: C of the first stage (the stages have C, 2C, 4C).
          cells_per_stage: N, cells per stage (NB201: 5).
        """
        for k, v in dict(num_classes=num_classes, input_size=input_size, channels=channels,
                         cells_per_stage=cells_per_stage).items():
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"NB201Space: {k} must be a positive integer, got {v!r}")
        if input_size % 4:
            # Each reduction halves the size; NB201's 2x2 shortcut pooling floors while the stride-2
            # conv rounds up, so odd sizes would not even add up in the reference network.
            raise ValueError(f"NB201Space: input_size must be a multiple of 4 (two stride-2 reductions), "
                             f"got {input_size}")
        self.num_classes, self.input_size = int(num_classes), int(input_size)
        self.channels, self.cells_per_stage = int(channels), int(cells_per_stage)
        decisions = [Decision(f"edge_{to}_{frm}", OPS) for to, frm in EDGES]

        t = TableTemplate({"p": (len(EDGES), len(OPS))})
        h, c = self.input_size, self.channels
        x = t.add(OpKind.INPUT, c_out=3, h=h, w=h)
        x = t.add(OpKind.CONV, src=x, c_in=3, c_out=c, kernel=3, h=h, w=h)  # stem: conv + BN, no ReLU
        cells = []
        for stage in range(3):
            if stage:
                x, h = _reduction(t, x, c, 2 * c, h)
                c *= 2
            for _ in range(self.cells_per_stage):
                start = len(t)
                x = _cell(t, x, c, h)
                cells.append((start, len(t)))
        # Final BN + ReLU (fused, no row), global average pooling, classifier.
        x = t.add(OpKind.GAP, src=x, c_in=c, c_out=c, h=h, w=h)
        t.add(OpKind.LINEAR, src=x, c_in=c, c_out=self.num_classes)
        self.cell_rows: tuple[tuple[int, int], ...] = tuple(cells)
        super().__init__(decisions, t)

    # ----------------------------------------------------------------- template scalars
    def arch_scalars(self, arch: Architecture) -> dict[str, jax.Array]:
        """`p[..., edge, op]` = 1 on the chosen op of each edge (rows of other ops get weight 0)."""
        return {"p": jax.nn.one_hot(arch, len(OPS), dtype=jnp.float32)}

    def expected_scalars(self, probs: ArchProbs) -> dict[str, jax.Array]:
        """`p` = the choice probabilities themselves (row weights become presence probabilities)."""
        return {"p": probs[..., : len(EDGES), : len(OPS)]}

    def has_unreachable_branch(self, archs: Architecture) -> np.ndarray:
        """Bool `[N]`: a cell has an operation (not `none`) whose input node is unreachable from the
        cell's input or whose output node does not reach the cell's output. The published rank
        average of zero-cost proxies (about 0.87, NAS-Bench-Suite-Zero) is over the 9,445 cells
        without one (the all-`none` cell included); comparing with it needs the same subset."""
        a = np.atleast_2d(np.asarray(archs))
        live = a != NONE
        fwd = {0: np.ones(len(a), bool)}  # node reachable from the input
        for j in (1, 2, 3):
            fwd[j] = np.any([live[:, e] & fwd[frm] for e, (to, frm) in enumerate(EDGES) if to == j], 0)
        bwd = {3: np.ones(len(a), bool)}  # node reaches the output
        for j in (2, 1, 0):
            bwd[j] = np.any([live[:, e] & bwd[to] for e, (to, frm) in enumerate(EDGES) if frm == j], 0)
        bad = [live[:, e] & ~(fwd[frm] & bwd[to]) for e, (to, frm) in enumerate(EDGES)]
        return np.any(bad, 0)

    # ----------------------------------------------------------------- official strings
    def _format(self, arch: np.ndarray) -> str:
        groups = []
        for j in range(1, NUM_NODES):
            items = [f"{OPS[arch[e]]}~{frm}" for e, (to, frm) in enumerate(EDGES) if to == j]
            groups.append("|" + "|".join(items) + "|")
        return "+".join(groups)

    def _parse(self, text: str) -> np.ndarray:
        def fail(why: str) -> ValueError:
            return ValueError(f"malformed NAS-Bench-201 string {text!r}: {why}; expected the form "
                              f"{ARCH_FORMAT} with op in {list(OPS)}")

        groups = text.split("+")
        if len(groups) != NUM_NODES - 1:
            raise fail(f"found {len(groups)} '+'-separated groups, need {NUM_NODES - 1} (one per node 1..3)")
        out = []
        for j, group in enumerate(groups, start=1):
            if len(group) < 2 or not (group.startswith("|") and group.endswith("|")):
                raise fail(f"group {j} ({group!r}) must start and end with '|'")
            items = group[1:-1].split("|")
            if len(items) != j:
                raise fail(f"group {j} ({group!r}) has {len(items)} edge(s), need {j} (edges from nodes 0..{j - 1})")
            for i, item in enumerate(items):
                op, sep, frm = item.partition("~")
                if not sep:
                    raise fail(f"edge {item!r} in group {j} is not of the form 'op~{i}'")
                if op not in OPS:
                    raise fail(f"unknown operation {op!r} in group {j}")
                if frm != str(i):
                    raise fail(f"edge {item!r} in group {j} must come from node {i} ('~{i}')")
                out.append(OPS.index(op))
        return np.asarray(out, np.int32)
