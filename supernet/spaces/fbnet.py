"""The FBNet search space (Wu et al., CVPR 2019), as HW-NAS-Bench and HELP build it.

22 searchable layers, each choosing one of 9 operations (`OPS`); an architecture string is the 22
op indices joined by `-`, the format of the measured latency tables in
`../shared/data/latency/fbnet_cifar100/` (see its README for the network):

- stem: 3x3 conv to 16 channels + BN + ReLU;
- 7 stages with [1, 4, 4, 4, 4, 4, 1] searchable layers, output channels
  [16, 24, 32, 64, 112, 184, 352] and strides per stage (applied to a stage's first layer);
- head: 1x1 conv to `head_channels` + BN + ReLU, global average pooling, linear classifier.

`kK_eE` is an inverted bottleneck (1x1 expand to E*C_in, KxK depthwise with the stride, 1x1
project, residual add when shapes match; `e1` keeps the 1x1 expansion); `_g2` groups both 1x1
convs in 2 with a channel shuffle after the first (ShuffleNet); `skip` is the identity, or a 1x1
conv (no BN) when the stride is 2 or the channels change.

Settings (FBNet paper, table 1; HW-NAS-Bench, Li et al. ICLR 2021, for CIFAR-100):
- `fbnet-cifar100`: 32x32 input, stem stride 1, strides [1, 1, 2, 2, 1, 2, 1], head 1504, 100 classes.
- `fbnet-imagenet`: 224x224 input, stem stride 2, strides [1, 2, 2, 2, 1, 2, 1], head 1984, 1000 classes.

Example:
    >>> space = FBNetSpace.cifar100()
    >>> arch = space.decode("0-1-2-3-4-5-6-7-8-0-1-2-3-4-5-6-7-8-0-1-2-3")
    >>> space.encode(arch)
    '0-1-2-3-4-5-6-7-8-0-1-2-3-4-5-6-7-8-0-1-2-3'
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hwmodel.layers import OpKind
from supernet.space import ArchProbs, Architecture, Decision, SearchSpace
from supernet.spaces.registry import SPACES
from supernet.template import TableTemplate, ref

#: Operation names, in the index order of the published FBNet latency tables.
OPS = ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip")
#: (kernel, expansion, groups) of each IBN op; `skip` is last.
IBN_SHAPES = {name: (int(name[1]), int(name.split("_")[1][1:]), 2 if name.endswith("g2") else 1)
        for name in OPS[:-1]}

STAGE_LAYERS = (1, 4, 4, 4, 4, 4, 1)
STAGE_CHANNELS = (16, 24, 32, 64, 112, 184, 352)


class FBNetSpace(SearchSpace):
    family = "fbnet"
    """FBNet's 22-layer, 9-op space (see module docstring)."""

    def __init__(self, *, input_size: int = 32, stem_stride: int = 1,
                 strides: Sequence[int] = (1, 1, 2, 2, 1, 2, 1), head_channels: int = 1504,
                 num_classes: int = 100, stem_channels: int = 16, name: str = "fbnet-cifar100"):
        self.name = name
        self.input_size = input_size
        self.num_classes = num_classes
        n_layers = sum(STAGE_LAYERS)
        decisions = [Decision(f"layer{i}", OPS) for i in range(n_layers)]
        t = TableTemplate({"p": (n_layers, len(OPS))})
        x = t.add(OpKind.INPUT, c_out=3, h=input_size, w=input_size)
        size = input_size
        x = t.add(OpKind.CONV, src=x, act=1, c_in=3, c_out=stem_channels, kernel=3, stride=stem_stride,
                  h=size, w=size)
        size = -(-size // stem_stride)
        c_in, d = stem_channels, 0
        for n, c_out, stride in zip(STAGE_LAYERS, STAGE_CHANNELS, strides):
            for j in range(n):
                s = stride if j == 0 else 1
                x = self._layer(t, x, d, c_in, c_out, s, size)
                size, c_in, d = -(-size // s), c_out, d + 1
        x = t.add(OpKind.CONV, src=x, act=1, c_in=c_in, c_out=head_channels, h=size, w=size)
        x = t.add(OpKind.GAP, src=x, c_in=head_channels, c_out=head_channels, h=size, w=size)
        t.add(OpKind.LINEAR, src=x, c_in=head_channels, c_out=num_classes)
        super().__init__(decisions, t)

    @classmethod
    def cifar100(cls) -> "FBNetSpace":
        return cls()

    @classmethod
    def imagenet(cls) -> "FBNetSpace":
        return cls(input_size=224, stem_stride=2, strides=(1, 2, 2, 2, 1, 2, 1), head_channels=1984,
                   num_classes=1000, name="fbnet-imagenet")

    @staticmethod
    def _layer(t: TableTemplate, x: int, d: int, c_in: int, c_out: int, stride: int, size: int) -> int:
        """Adds the 9 alternatives of searchable layer `d` and merges them; returns the output row."""
        residual = stride == 1 and c_in == c_out
        out = size // stride if size % stride == 0 else -(-size // stride)
        outs = []
        for c, name in enumerate(OPS[:-1]):
            k, e, g = IBN_SHAPES[name]
            p, mid = ref("p", d, c), e * c_in
            y = t.add(OpKind.CONV, src=x, act=1, weight=p, c_in=c_in, c_out=mid, groups=g, h=size, w=size)
            if g > 1:
                y = t.add(OpKind.SHUFFLE, src=y, weight=p, c_in=mid, c_out=mid, groups=g, h=size, w=size)
            y = t.add(OpKind.DWCONV, src=y, act=1, weight=p, c_in=mid, c_out=mid, kernel=k, stride=stride,
                      groups=mid, h=size, w=size)
            y = t.add(OpKind.CONV, src=y, weight=p, c_in=mid, c_out=c_out, groups=g, h=out, w=out)
            if residual:
                y = t.add(OpKind.ADD, src=y, res=x, weight=p, c_in=c_out, c_out=c_out, h=out, w=out)
            outs.append(y)
        p_skip = ref("p", d, len(OPS) - 1)
        if residual:
            outs.append(t.add(OpKind.IDENTITY, src=x, weight=p_skip, c_in=c_in, c_out=c_out, h=size, w=size))
        else:
            outs.append(t.add(OpKind.CONV, src=x, weight=p_skip, c_in=c_in, c_out=c_out, stride=stride,
                              h=size, w=size))
        y = outs[0]
        for z in outs[1:]:
            y = t.add(OpKind.MIX, src=y, res=z, c_in=c_out, c_out=c_out, h=out, w=out)
        return y

    # scalars: the choice indicators / probabilities themselves
    def arch_scalars(self, arch: Architecture) -> dict[str, jax.Array]:
        return {"p": jax.nn.one_hot(arch, len(OPS), dtype=jnp.float32)}

    def expected_scalars(self, probs: ArchProbs) -> dict[str, jax.Array]:
        return {"p": probs[..., : len(OPS)]}

    def _format(self, arch: np.ndarray) -> str:
        return "-".join(str(int(i)) for i in arch)

    def _parse(self, text: str) -> np.ndarray:
        parts = text.split("-")
        if len(parts) != self.num_decisions or not all(p.isdigit() for p in parts):
            raise ValueError(f"an FBNet architecture is {self.num_decisions} op indices (0-{len(OPS) - 1}) "
                             f"joined by '-', e.g. '{'-'.join(['3'] * self.num_decisions)}'; got {text!r}")
        return np.asarray([int(p) for p in parts], np.int32)

    def op_names(self, arch: Architecture) -> list[str]:
        """The operation names of an architecture, one per searchable layer."""
        return [OPS[i] for i in self.validate(arch)]


SPACES.register("fbnet-cifar100")(FBNetSpace.cifar100)
SPACES.register("fbnet-imagenet")(FBNetSpace.imagenet)
