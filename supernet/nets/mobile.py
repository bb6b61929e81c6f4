"""The mobile supernet: MobileNetV2 blocks where each block holds IBN, fused IBN and skip at once.

Why this shape: the curated mobile space (`supernet/spaces/mobile.py`) searches per block the type
(MobileNetV2's inverted bottleneck, Sandler et al. CVPR 2018; the article's *fused* IBN, whose 1x1
expansion and KxK depthwise conv are one KxK full conv; or skip), the kernel and the expansion, per
stage a width and globally a width multiplier. A one-shot search must evaluate all of them with one
set of weights and one compiled function, so every conv is held once at its largest size and:
- kernel sizes share the largest kernel, a smaller one is its centre (`blocks.kernel_mask`);
- widths and expansions are FBNetV2 channel masks (Wan et al. CVPR 2020) applied after the
  activation (after BN for the linear projection), so masked channels are exactly zero. The
  hidden width of a block is `e * (actual input width)`, and the input width depends on the
  previous stage's width choice *and* the multiplier, so the hidden mask is the trilinear
  `sum_{e,a,c} p_e p_mult[a] p_prev[c] 1[i < e * W_prev[a, c]]` (exact for one-hot weights);
- the three types are computed side by side and summed with their weights (DARTS).

An IBN with `e == 1` has no expansion conv (MobileNetV2): its hidden tensor is the block input
zero-padded to the hidden width, i.e. `hidden = p(e==1) pad(x) + (sum_{e!=1} p_e m_e) * expand(x)`.
The layer table of the space describes exactly this network (rows `b{b}.ibn.expand`, ...), and
`derive` returns the standalone network with only the chosen ops at their chosen sizes.

The backbone returns the output of every stage and, last, the head conv's output (1x1 conv to
`head_width` -> BN -> ReLU6), which the classification head pools.

Example:
    >>> from supernet.spaces.mobile import MobileSpace
    >>> space = MobileSpace(blocks_per_stage=(1, 2), base_widths=(8, 16), stage_strides=(1, 2),
    ...                     stem_width=8, head_width=32, parallelism=4, input_size=16)
    >>> net = MobileSupernet(space, rngs=nnx.Rngs(0))
    >>> x = jnp.zeros((2, 16, 16, 3))
    >>> net(x, space.uniform_probs()).shape
    (2, 10)
    >>> arch = space.baseline_arch()
    >>> [f.shape[-1] for f in net.derive(arch).backbone(x)]  # stage widths, then head_width
    [8, 16, 32]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float

from supernet.blocks import ConvBN, channel_mask, choose, is_single_path, kernel_mask
from supernet.heads import ClassificationHead, DenseHead
from supernet.model import SUPERNETS, Supernet
from supernet.space import Architecture, ArchProbs
from supernet.spaces.mobile import BLOCK_TYPES, MobileSpace

IBN, FUSED, SKIP = (BLOCK_TYPES.index(t) for t in ("ibn", "fused", "skip"))


# ------------------------------------------------------------------ derived (standalone) modules
class IBNBlock(nnx.Module):
    """MobileNetV2 inverted bottleneck: [1x1 expand] -> KxK depthwise -> 1x1 linear project (+ x)."""

    def __init__(self, expand: ConvBN | None, dw: ConvBN, project: ConvBN, residual: bool):
        self.expand, self.dw, self.project, self.residual = expand, dw, project, residual

    def __call__(self, x: Array) -> Array:
        h = x if self.expand is None else self.expand(x)
        y = self.project(self.dw(h))
        return x + y if self.residual else y


class FusedIBNBlock(nnx.Module):
    """Fused inverted bottleneck: KxK full conv (expansion) -> 1x1 linear project (+ x)."""

    def __init__(self, conv: ConvBN, project: ConvBN, residual: bool):
        self.conv, self.project, self.residual = conv, project, residual

    def __call__(self, x: Array) -> Array:
        y = self.project(self.conv(x))
        return x + y if self.residual else y


class MobileBackbone(nnx.Module):
    """A derived network: stem, stages of chosen blocks (skipped blocks omitted), head conv."""

    def __init__(self, stem: ConvBN, stages: list[list[nnx.Module]], head_conv: ConvBN | None):
        self.stem, self.head_conv = stem, head_conv
        self.stages = nnx.List([nnx.List(s) for s in stages])

    def __call__(self, x: Float[Array, "b h w 3"]) -> list[Array]:
        x, feats = self.stem(x), []
        for stage in self.stages:
            for block in stage:
                x = block(x)
            feats.append(x)
        return feats if self.head_conv is None else feats + [self.head_conv(x)]


# ------------------------------------------------------------------ weight-sharing modules
class SearchBlock(nnx.Module):
    """One block of the supernet: IBN and fused IBN at their largest sizes, plus skip.

    Sizes: `c_in`/`c_out` are the largest input/output widths, `hidden = max(e) * c_in`, the
    kernels `max(kernels)`. The stride applies to the depthwise / fused conv (first block of a
    stage); the residual and the skip exist only on the other blocks.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, first: bool, expansions: tuple[int, ...],
                 kernels: tuple[int, ...], *, rngs: nnx.Rngs):
        self.c_in, self.c_out, self.first = c_in, c_out, first
        self.hidden, k = max(expansions) * c_in, max(kernels)
        # No expansion conv when every choice is e == 1 (it would never be used).
        self.ibn_expand = (ConvBN.new(c_in, self.hidden, rngs=rngs) if any(e != 1 for e in expansions)
                           else None)
        self.ibn_dw = ConvBN.new(self.hidden, self.hidden, k, stride, depthwise=True, rngs=rngs)
        self.ibn_project = ConvBN.new(self.hidden, c_out, act=False, rngs=rngs)
        self.fused_conv = ConvBN.new(c_in, self.hidden, k, stride, rngs=rngs)
        self.fused_project = ConvBN.new(self.hidden, c_out, act=False, rngs=rngs)

    def __call__(self, x: Float[Array, "b h w ci"], w_type: Float[Array, "t"], kmask: Array,
                 m_hidden: Float[Array, "hid"], m_expanded: Float[Array, "hid"], p_e1: Array,
                 m_out: Float[Array, "co"]) -> Float[Array, "b h2 w2 co"]:
        """`x` is already masked to its width; masks are soft for distributions, 0/1 for one-hot.

        Under `blocks.single_path()` (one-hot `w_type`) only the chosen type is computed.
        """
        def ibn(blk: "SearchBlock", x: Array) -> Array:
            # IBN: e == 1 feeds the (zero-padded) input to the depthwise conv, e > 1 the expansion.
            h = p_e1 * jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, blk.hidden - x.shape[-1])))
            if blk.ibn_expand is not None:
                h = h + m_expanded * blk.ibn_expand(x)
            return m_out * blk.ibn_project(m_hidden * blk.ibn_dw(h, kmask))

        def fused(blk: "SearchBlock", x: Array) -> Array:
            return m_out * blk.fused_project(m_hidden * blk.fused_conv(x, kmask))

        if is_single_path():  # w[k*] * (op_k*(x) [+ x]): the one-hot mixture below, one type run
            res = (lambda y, x: y) if self.first else (lambda y, x: y + x)
            stride, b, h, w_ = self.ibn_dw.conv.stride, *x.shape[:3]
            out_shape = (b, (h - 1) // stride + 1, (w_ - 1) // stride + 1, self.c_out)
            # a first block has no skip choice (masked): its branch is never taken
            skip = (lambda blk, x: jnp.zeros(out_shape, x.dtype)) if self.first else (lambda blk, x: x)
            return choose(w_type[:3], [lambda blk, x: res(ibn(blk, x), x), lambda blk, x: res(fused(blk, x), x),
                                       skip], self, x)
        y_ibn, y_fused = ibn(self, x), fused(self, x)
        if self.first:
            return w_type[IBN] * y_ibn + w_type[FUSED] * y_fused
        # residual on IBN and fused, so w_ibn (ibn + x) + w_fused (fused + x) + w_skip x
        return w_type[IBN] * y_ibn + w_type[FUSED] * y_fused + (w_type[IBN] + w_type[FUSED] + w_type[SKIP]) * x

    def derive(self, op: int, c_in: int, c_out: int, kernel: int, e: int) -> nnx.Module:
        """The standalone block of type `op` (IBN or FUSED) at the given sizes."""
        hidden = e * c_in
        if op == IBN:
            expand = None if e == 1 else self.ibn_expand.sliced(c_in, hidden, 1)
            return IBNBlock(expand, self.ibn_dw.sliced(hidden, hidden, kernel),
                            self.ibn_project.sliced(hidden, c_out, 1), residual=not self.first)
        return FusedIBNBlock(self.fused_conv.sliced(c_in, hidden, kernel),
                             self.fused_project.sliced(hidden, c_out, 1), residual=not self.first)


def _stage_width_dist(space: MobileSpace, aw: ArchProbs, s: int) -> tuple[Array, np.ndarray]:
    """Joint weights `p_mult[a] p_width_s[c]` (flat) and the actual widths `W_s[a, c]` (flat)."""
    table = space.width_tables[s]
    p_mult = aw[space.mult_id, : table.shape[0]]
    p_width = aw[space.width_ids[s], : table.shape[1]]
    return (p_mult[:, None] * p_width[None, :]).reshape(-1), table.reshape(-1)


@SUPERNETS.register("mobile")
class MobileSupernet(Supernet):
    """Weight-sharing network of a `MobileSpace` (see module docstring)."""

    def __init__(self, space: MobileSpace, *, rngs: nnx.Rngs):
        self.space = space
        c_max = [int(t.max()) for t in space.width_tables]
        self.stem = ConvBN.new(3, space.stem_width, 3, space.stem_stride, rngs=rngs)
        blocks, c_in = [], space.stem_width
        for b in range(space.num_blocks):
            s, first = int(space.block_stage[b]), bool(space.block_first[b])
            stride = space.stage_strides[s] if first else 1
            blocks.append(SearchBlock(c_in, c_max[s], stride, first, space.expansions, space.kernels,
                                      rngs=rngs))
            c_in = c_max[s]
        self.blocks = nnx.List(blocks)
        if space.head in ("segmentation", "detection"):  # reads the stages' maps: no head conv
            self.head_conv = None
            last = len(space.base_widths) - 1
            up, out = space.decoder_factors
            det = space.head == "detection"
            self.head = DenseHead(c_max[space.decoder_stage], c_max[last], space.head_channels,
                                  space.num_classes + (4 if det else 0), shallow=space.decoder_stage, deep=last,
                                  up=up, out_factor=1 if det else out, rngs=rngs,
                                  # CenterNet's heatmap prior: sigmoid(-2.19) = 0.1
                                  prior_bias=(space.num_classes, -2.19) if det else None)
        else:
            self.head_conv = ConvBN.new(c_in, space.head_width, rngs=rngs)
            self.head = ClassificationHead(space.head_width, space.num_classes, rngs=rngs)
        self.init_arch_logits()

    def backbone(self, x: Float[Array, "b h w 3"], arch_weights: ArchProbs) -> list[Array]:
        space, aw = self.space, jnp.asarray(arch_weights).astype(x.dtype)
        e = np.asarray(space.expansions)
        k_max = max(space.kernels)
        x, feats = self.stem(x), []
        p_in, w_in = jnp.ones((1,), x.dtype), np.asarray([space.stem_width])  # block 0 reads the stem
        for b, block in enumerate(self.blocks):
            s = int(space.block_stage[b])
            p_out, w_out = _stage_width_dist(space, aw, s)
            p_e = aw[space.expansion_ids[b], : len(e)]
            # per-expansion hidden masks m_e[i] = sum_{a,c} p_mult p_prev 1[i < e W_prev[a, c]]
            m_e = jnp.stack([channel_mask(block.hidden, p_in, k * w_in) for k in e]).astype(x.dtype)
            x = block(x, aw[space.type_ids[b]],
                      kernel_mask(k_max, aw[space.kernel_ids[b]], space.kernels).astype(x.dtype),
                      m_hidden=p_e @ m_e, m_expanded=(p_e * (e != 1)) @ m_e,
                      p_e1=jnp.sum(p_e * (e == 1)),
                      m_out=channel_mask(block.c_out, p_out, w_out).astype(x.dtype))
            p_in, w_in = p_out, w_out
            if b + 1 == space.num_blocks or space.block_first[b + 1]:
                feats.append(x)
        return feats if self.head_conv is None else feats + [self.head_conv(x)]

    def derive_backbone(self, arch: Architecture) -> MobileBackbone:
        # One jit of the whole derivation: eagerly, every distinct shape compiles its own slice
        # ops and the random init that `slice_conv`'s fresh conv discards (seconds per
        # architecture on a CPU, ~10x more than this); under jit that init is dead code.
        a = np.asarray(arch)
        return nnx.jit(lambda net: net._derive(a))(self)

    def _derive(self, a: np.ndarray) -> MobileBackbone:
        space = self.space
        widths = space.stage_widths(a)
        stages: list[list[nnx.Module]] = [[] for _ in space.base_widths]
        c_in = space.stem_width
        for b, block in enumerate(self.blocks):
            s, op = int(space.block_stage[b]), int(a[space.type_ids[b]])
            c_out = int(widths[s])
            if op != SKIP:  # a skipped block is the identity: no module
                stages[s].append(block.derive(op, c_in, c_out, space.kernels[a[space.kernel_ids[b]]],
                                              space.expansions[a[space.expansion_ids[b]]]))
            c_in = c_out
        return MobileBackbone(nnx.clone(self.stem), stages,
                              None if self.head_conv is None else self.head_conv.sliced(c_in, space.head_width, 1))
