"""The FBNet supernet: 22 searchable layers, each mixing its 9 operations with shared weights.

FBNet (Wu et al., CVPR 2019) searches, per layer, over inverted bottlenecks `kK_eE` (1x1 expand to
E*C_in, KxK depthwise, 1x1 project), their grouped variants `_g2` (both 1x1 convs in 2 groups with a
ShuffleNet channel shuffle after the first, Zhang et al. CVPR 2018) and `skip`. Its supernet keeps
9 separate blocks per layer; here every layer holds its weights once at the largest size, as in
FBNetV2 (Wan et al., CVPR 2020): one dense expand kernel `[1, 1, C, 6C]` (eE uses its first E*C
outputs), one 5x5 depthwise kernel over 6C channels (k3 is its centre), one dense project kernel
`[1, 1, 6C, C_out]` (eE reads its first E*C inputs); `_g2` uses the same dense kernels restricted to
their block-diagonal (`group_mask`), so a derived grouped conv inherits exactly those blocks.

Nine branches are not computed separately. Expansion and the depthwise conv are per-channel after
the 1x1 expand, so the eE hidden tensor is the first E*C channels of the e6 one, for every E, in
train *and* eval mode (BN statistics are per channel): the g1 ops share one expand -> BN -> ReLU
and one depthwise -> BN -> ReLU per kernel size. The project is linear, so with hidden channels
split into the blocks [0, C), [C, 3C), [3C, 6C) and `z_j` each block's partial product, the e1/e3/e6
projections are the prefix sums z1, z1+z2, z1+z2+z3: all three cost one full-width project. (FBNetV2
instead masks the hidden channels with `sum_e w_e * mask_e` and applies one shared BN after one
project; that BN then normalises a mixture, which differs from every standalone net in train mode.)

BatchNorm: a BN is shared only by tensors that are identical per channel (the g1 expand output; the
g1 depthwise output per kernel size). The g2 hidden tensors (computed by the block-diagonal kernel)
and every op's project output get their own BN, so each BN only ever sees the tensor the standalone
op computes. Hence, for a one-hot architecture, the supernet equals the derived network in eval mode
*and* in train mode, including the running statistics it accumulates (the BNs of unchosen ops are
updated too, with their own op's statistics, and the derived net does not use them).

`skip` is the identity when shapes match, else a 1x1 conv with the stride and no BN, as the space's
layer table and the latency README define it (FBNet's reference builder, `fbnet_building_blocks.
Identity`, puts BN + ReLU after that conv).

Cost per layer (MACs per output pixel, stride 1, C_out ~ C): about 7C^2 + 238C + 14C^2 here against
21C^2 + 374C + 21C^2 for nine separate branches.

Example:
    >>> from supernet.spaces.fbnet import FBNetSpace
    >>> space = FBNetSpace(input_size=8, head_channels=32, num_classes=10, name="fbnet-tiny")
    >>> with jax.default_prng_impl("rbg"):  # a faster initialiser on a CPU (values do not matter here)
    ...     net = FBNetSupernet(space, rngs=nnx.Rngs(0))
    >>> nnx.jit(lambda n, x, w: n(x, w))(net, jnp.zeros((2, 8, 8, 3)), space.uniform_probs()).shape
    (2, 10)
    >>> nnx.jit(lambda n, x: n.derive(np.arange(22) % 9)(x))(net, jnp.zeros((2, 8, 8, 3))).shape
    (2, 10)
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float

from hwmodel.layers import OpKind
from supernet.blocks import BatchNorm, SharedConv, batch_norm, conv2d, slice_bn, slice_conv
from supernet.heads import ClassificationHead
from supernet.model import SUPERNETS, Supernet
from supernet.space import Architecture, ArchProbs
from supernet.spaces.fbnet import IBN_SHAPES, OPS, STAGE_LAYERS, FBNetSpace

SKIP = len(OPS) - 1
KERNELS, EXPANSIONS, MAX_EXPANSION = (3, 5), (1, 3, 6), 6


def channel_shuffle(x: Float[Array, "b h w c"], groups: int) -> Float[Array, "b h w c"]:
    """ShuffleNet's shuffle: channels viewed as `[groups, c / groups]`, transposed, flattened.

    With 2 groups, `[a0, a1, a2, b0, b1, b2]` becomes `[a0, b0, a1, b1, a2, b2]`.
    """
    b, h, w, c = x.shape
    return x.reshape(b, h, w, groups, c // groups).swapaxes(-1, -2).reshape(b, h, w, c)


def group_mask(c_in: int, c_out: int, groups: int, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Block-diagonal 0/1 mask `[c_in, c_out]` of a grouped 1x1 conv, zero-padded to `shape`."""
    m = np.zeros(shape or (c_in, c_out), np.float32)
    gi, go = c_in // groups, c_out // groups
    for g in range(groups):
        m[g * gi:(g + 1) * gi, g * go:(g + 1) * go] = 1.0
    return m


def fbnet_layout(space: FBNetSpace) -> tuple[tuple[int, int], list[tuple[int, int, int]], int]:
    """`((stem_channels, stem_stride), [(c_in, c_out, stride)] per layer, head_channels)`.

    Read from the space's layer table (the all-skip network: its stem conv, one skip row per layer
    and the head conv), which is the one description of the network the space keeps.
    """
    with jax.ensure_compile_time_eval():  # concrete even when a supernet is built under jit
        t = space.layers(np.full(space.num_decisions, SKIP, np.int32)).to_numpy()
    rows = [i for i in range(t.num_rows)
            if t.weight[i] > 0 and t.op[i] in (int(OpKind.CONV), int(OpKind.IDENTITY))]
    stem, *layers, head = rows
    if len(layers) != space.num_decisions:
        raise ValueError(f"cannot read the FBNet layout of space {space.name!r}: found {len(layers)} "
                         f"layers for {space.num_decisions} decisions")
    return ((int(t.c_out[stem]), int(t.stride[stem])),
            [(int(t.c_in[i]), int(t.c_out[i]), int(t.stride[i])) for i in layers], int(t.c_out[head]))


def _centre(kernel: Array, k: int) -> Array:
    """The centre `k x k` of a square kernel (a smaller kernel size of the shared one)."""
    o = (kernel.shape[0] - k) // 2
    return kernel[o:o + k, o:o + k]


class MixedLayer(nnx.Module):
    """One searchable layer holding all 9 ops; `__call__(x, w)` is `sum_op w[op] * op(x)`."""

    def __init__(self, c_in: int, c_out: int, stride: int, *, rngs: nnx.Rngs):
        if c_in % 2 or c_out % 2:
            raise ValueError(f"the _g2 ops need even channel counts, got {c_in} -> {c_out}")
        hid = MAX_EXPANSION * c_in
        self.c_in, self.c_out, self.stride = c_in, c_out, stride
        self.residual = stride == 1 and c_in == c_out
        self.expand = SharedConv(c_in, hid, 1, rngs=rngs)
        self.dw = SharedConv(hid, hid, max(KERNELS), stride, groups=hid, rngs=rngs)
        self.project = SharedConv(hid, c_out, 1, rngs=rngs)
        # g1 tensors: channel i is the same for every expansion, so one BN per tensor kind.
        self.bn_expand = batch_norm(hid, rngs=rngs)
        self.bn_dw = nnx.List([batch_norm(hid, rngs=rngs) for _ in KERNELS])
        # g2 tensors are computed by other (block-diagonal) kernels: their own statistics.
        self.bn_expand_g2 = batch_norm(c_in, rngs=rngs)
        self.bn_dw_g2 = nnx.List([batch_norm(c_in, rngs=rngs) for _ in KERNELS])
        # every op's project output is a different tensor: one BN per IBN op (index = op index).
        self.bn_project = nnx.List([batch_norm(c_out, rngs=rngs) for _ in OPS[:-1]])
        self.skip = None if self.residual else SharedConv(c_in, c_out, 1, stride, rngs=rngs)

    def __call__(self, x: Float[Array, "b h w c"], w: Float[Array, "9"]) -> Float[Array, "b h2 w2 o"]:
        c, hid = self.c_in, MAX_EXPANSION * self.c_in
        we, wd, wp = self.expand.kernel[...], self.dw.kernel[...], self.project.kernel[...]
        h = jax.nn.relu(self.bn_expand(conv2d(x, we)))  # [.., 6C], shared by every g1 op
        g_exp = jnp.asarray(group_mask(c, c, 2))
        hg = jax.nn.relu(self.bn_expand_g2(conv2d(x, we[:, :, :, :c] * g_exp)))
        hg = channel_shuffle(hg, 2)
        g_proj = jnp.asarray(group_mask(c, self.c_out, 2))
        bounds = [0] + [e * c for e in EXPANSIONS]
        out = 0.0
        for ki, k in enumerate(KERNELS):
            wk = _centre(wd, k)
            r = jax.nn.relu(self.bn_dw[ki](conv2d(h, wk, self.stride, groups=hid)))
            y = 0.0
            for e, lo, hi in zip(EXPANSIONS, bounds[:-1], bounds[1:]):
                y = y + conv2d(r[..., lo:hi], wp[:, :, lo:hi])  # prefix sum = project of e*C channels
                op = OPS.index(f"k{k}_e{e}")
                out = out + w[op] * self.bn_project[op](y)
            rg = jax.nn.relu(self.bn_dw_g2[ki](conv2d(hg, wk[..., :c], self.stride, groups=c)))
            op = OPS.index(f"k{k}_e1_g2")
            out = out + w[op] * self.bn_project[op](conv2d(rg, wp[:, :, :c] * g_proj))
        if self.residual:  # every IBN op adds x, and skip is x: sum_op w[op] * x
            return out + jnp.sum(w) * x
        return out + w[SKIP] * self.skip(x)

    def derive(self, op: int) -> nnx.Module:
        """The standalone op `op` with weights sliced from this layer (no masks)."""
        if op == SKIP:
            return Skip(None if self.skip is None else nnx.clone(self.skip))
        k, e, g = IBN_SHAPES[OPS[op]]
        c, mid, hid = self.c_in, e * self.c_in, MAX_EXPANSION * self.c_in
        ki = KERNELS.index(k)
        if g == 1:
            expand, bn1 = slice_conv(self.expand, c, mid, 1), slice_bn(self.bn_expand, mid)
            bn2, project = slice_bn(self.bn_dw[ki], mid), slice_conv(self.project, mid, self.c_out, 1)
        else:
            expand = slice_conv(self.expand, c, mid, 1, groups=g, group_mask=group_mask(c, mid, g, (c, hid)))
            bn1, bn2 = nnx.clone(self.bn_expand_g2), nnx.clone(self.bn_dw_g2[ki])
            project = slice_conv(self.project, mid, self.c_out, 1, groups=g,
                                 group_mask=group_mask(mid, self.c_out, g, (hid, self.c_out)))
        return IBN(expand, bn1, slice_conv(self.dw, mid, mid, k), bn2, project,
                   nnx.clone(self.bn_project[op]), groups=g, residual=self.residual)


class IBN(nnx.Module):
    """Standalone inverted bottleneck: expand -> BN -> ReLU [-> shuffle] -> dw -> BN -> ReLU -> project -> BN."""

    def __init__(self, expand: SharedConv, bn1: BatchNorm, dw: SharedConv, bn2: BatchNorm,
                 project: SharedConv, bn3: BatchNorm, *, groups: int, residual: bool):
        self.expand, self.bn1, self.dw, self.bn2, self.project, self.bn3 = expand, bn1, dw, bn2, project, bn3
        self.groups, self.residual = groups, residual

    def __call__(self, x: Float[Array, "b h w c"]) -> Float[Array, "b h2 w2 o"]:
        h = jax.nn.relu(self.bn1(self.expand(x)))
        if self.groups > 1:
            h = channel_shuffle(h, self.groups)
        y = self.bn3(self.project(jax.nn.relu(self.bn2(self.dw(h)))))
        return y + x if self.residual else y


class Skip(nnx.Module):
    """Standalone `skip`: the identity, or a 1x1 conv with the stride (no BN) when shapes change."""

    def __init__(self, conv: SharedConv | None):
        self.conv = conv

    def __call__(self, x: Float[Array, "b h w c"]) -> Float[Array, "b h2 w2 o"]:
        return x if self.conv is None else self.conv(x)


class FBNetBackbone(nnx.Module):
    """Stem conv -> BN -> ReLU, the 22 layers, head 1x1 conv -> BN -> ReLU; shared by search and derive.

    Returns the output of every stage and, last, the head conv's output.
    """

    def __init__(self, stem_conv: SharedConv, stem_bn: BatchNorm, layers: list[nnx.Module],
                 head_conv: SharedConv, head_bn: BatchNorm):
        self.stem_conv, self.stem_bn = stem_conv, stem_bn
        self.layers = nnx.List(layers)
        self.head_conv, self.head_bn = head_conv, head_bn
        self.stage_ends = tuple(int(i) for i in np.cumsum(STAGE_LAYERS) - 1)

    def run(self, x: Float[Array, "b h w 3"], layer_fn: Callable[[int, nnx.Module, Array], Array]) -> list[Array]:
        x = jax.nn.relu(self.stem_bn(self.stem_conv(x)))
        feats = []
        for d, layer in enumerate(self.layers):
            x = layer_fn(d, layer, x)
            if d in self.stage_ends:
                feats.append(x)
        feats.append(jax.nn.relu(self.head_bn(self.head_conv(x))))
        return feats

    def __call__(self, x: Float[Array, "b h w 3"]) -> list[Array]:
        return self.run(x, lambda d, layer, h: layer(h))


@SUPERNETS.register("fbnet")
class FBNetSupernet(Supernet):
    """Weight-sharing FBNet network (see module docstring)."""

    def __init__(self, space: FBNetSpace, *, rngs: nnx.Rngs):
        self.space = space
        (stem_c, stem_stride), layout, head_c = fbnet_layout(space)
        layers = [MixedLayer(ci, co, s, rngs=rngs) for ci, co, s in layout]
        self.net = FBNetBackbone(SharedConv(3, stem_c, 3, stem_stride, rngs=rngs), batch_norm(stem_c, rngs=rngs),
                                 layers, SharedConv(layout[-1][1], head_c, 1, rngs=rngs),
                                 batch_norm(head_c, rngs=rngs))
        self.head = ClassificationHead(head_c, space.num_classes, rngs=rngs)
        self.init_arch_logits()

    def backbone(self, x: Float[Array, "b h w 3"], arch_weights: ArchProbs) -> list[Array]:
        w = arch_weights[:, : len(OPS)].astype(x.dtype)
        return self.net.run(x, lambda d, layer, h: layer(h, w[d]))

    def derive_backbone(self, arch: Architecture) -> FBNetBackbone:
        ops = [int(o) for o in np.asarray(arch)]
        b = self.net
        return FBNetBackbone(nnx.clone(b.stem_conv), nnx.clone(b.stem_bn),
                             [layer.derive(op) for layer, op in zip(b.layers, ops)],
                             nnx.clone(b.head_conv), nnx.clone(b.head_bn))
