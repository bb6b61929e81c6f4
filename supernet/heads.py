"""Task heads on top of a backbone's list of feature maps (one per stage, the last the deepest).

The backbone interface (`Supernet.backbone`, `Subnet.backbone`) returns all stage outputs, so a
detection or segmentation head reads several scales while the classification head reads the last.
A head is an ordinary NNX module `head(features) -> outputs`. One that reads only fixed-width maps
is shared as-is by the supernet and the derived subnet (`Supernet.derive` clones it); one that reads
maps whose width is a search decision is a `SlicedHead`: the supernet's copy holds its convs at the
largest widths (masked channels are zero), `derive(channels)` slices them to the derived network's.

Example:
    >>> head = ClassificationHead(16, 10, rngs=nnx.Rngs(0))
    >>> head([jnp.ones((2, 8, 8, 16))]).shape
    (2, 10)
"""

from __future__ import annotations

import abc
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float

from hwmodel.registry import Registry
from supernet.blocks import ConvBN, SharedConv, slice_conv

#: Heads by task name (classification here; detection and segmentation register themselves).
HEADS: Registry = Registry("head")


@HEADS.register("classification")
class ClassificationHead(nnx.Module):
    """Global average pooling of the last feature map, then a linear classifier (with bias)."""

    def __init__(self, in_channels: int, num_classes: int, *, rngs: nnx.Rngs):
        # PyTorch nn.Linear's default init (uniform +-1/sqrt(fan_in)), as the reference nets use.
        bound = in_channels ** -0.5
        self.fc = nnx.Linear(in_channels, num_classes, rngs=rngs,
                             kernel_init=nnx.initializers.uniform(2 * bound),
                             bias_init=nnx.initializers.zeros)
        self.fc.kernel.set_value(self.fc.kernel.get_value() - bound)

    def __call__(self, features: Sequence[Float[Array, "b h w c"]]) -> Float[Array, "b k"]:
        return self.fc(jnp.mean(features[-1], axis=(1, 2)))


class SlicedHead(nnx.Module, abc.ABC):
    """A head reading feature maps whose widths the architecture decides (module docstring)."""

    @abc.abstractmethod
    def derive(self, channels: Sequence[int]) -> "SlicedHead":
        """A standalone copy for features of these widths (`channels[i]` of `features[i]`)."""


def upsample(x: Float[Array, "b h w c"], factor: int) -> Float[Array, "b fh fw c"]:
    """Nearest-neighbour upsampling by an integer factor (the layer table's UPSAMPLE; ONNX Resize)."""
    if factor == 1:
        return x
    b, h, w, c = x.shape
    return jax.image.resize(x, (b, h * factor, w * factor, c), "nearest")


class DenseHead(SlicedHead):
    """A light FPN-style decoder (Kirillov et al. 2019, Panoptic FPN's semantic branch, one level):
    the deep map `features[deep]` through a 1x1 conv to `channels`, upsampled to the resolution of
    `features[shallow]`, added to that map's own 1x1 lateral conv, a 3x3 conv, a 1x1 output conv
    (`outputs` channels, with bias), then upsampled by `out_factor`. Every op is a layer-table op
    (CONV, UPSAMPLE, ADD), so the head is costed with the backbone (`MobileSpace(head=...)` adds the
    same rows). Segmentation: `outputs` = classes, `out_factor` up to the input. Detection
    (CenterNet, Zhou et al. 2019): `outputs` = classes + 4 (heatmap, size, offset) at the decoder's
    stride, `out_factor` 1, the heatmap biases at `prior_bias`.

    Example:
        >>> head = DenseHead(16, 32, 8, 2, shallow=0, deep=1, up=2, out_factor=4, rngs=nnx.Rngs(0))
        >>> head([jnp.ones((1, 8, 8, 16)), jnp.ones((1, 4, 4, 32))]).shape
        (1, 32, 32, 2)
        >>> head.derive([8, 24])([jnp.ones((1, 8, 8, 8)), jnp.ones((1, 4, 4, 24))]).shape
        (1, 32, 32, 2)
    """

    def __init__(self, c_shallow: int, c_deep: int, channels: int, outputs: int, *, shallow: int,
                 deep: int, up: int, out_factor: int, rngs: nnx.Rngs | None,
                 prior_bias: tuple[int, float] | None = None):
        self.shallow, self.deep, self.up, self.out_factor = shallow, deep, up, out_factor
        if rngs is None:  # `derive` fills the modules in
            return
        self.deep_conv = ConvBN.new(c_deep, channels, rngs=rngs)
        self.lateral = ConvBN.new(c_shallow, channels, rngs=rngs)
        self.fuse = ConvBN.new(channels, channels, 3, rngs=rngs)
        self.classifier = SharedConv(channels, outputs, use_bias=True, rngs=rngs)
        if prior_bias is not None:  # (n, b): the first n outputs start at logit b (a rare-positive prior)
            n, b = prior_bias
            self.classifier.bias.set_value(self.classifier.bias.get_value().at[:n].set(b))
            # and every output near its bias at the start, as RetinaNet / FCOS / CenterNet heads
            # (Gaussian sigma 0.01): a He-initialised output conv puts logits of several units on
            # hundreds of cells and the focal loss (normalised by the few boxes) starts in the 100s
            w = self.classifier.kernel.get_value()
            self.classifier.kernel.set_value(0.01 * jax.random.normal(rngs.params(), w.shape, w.dtype))

    def __call__(self, features: Sequence[Float[Array, "b h w c"]]) -> Float[Array, "b H W k"]:
        y = upsample(self.deep_conv(features[self.deep]), self.up) + self.lateral(features[self.shallow])
        return upsample(self.classifier(self.fuse(y)), self.out_factor)

    def derive(self, channels: Sequence[int]) -> "DenseHead":
        new = DenseHead(0, 0, 0, 0, shallow=self.shallow, deep=self.deep, up=self.up,
                               out_factor=self.out_factor, rngs=None)
        c = self.fuse.conv.c_out
        new.deep_conv = self.deep_conv.sliced(int(channels[self.deep]), c, 1)
        new.lateral = self.lateral.sliced(int(channels[self.shallow]), c, 1)
        new.fuse = self.fuse.sliced(c, c, self.fuse.conv.k)
        new.classifier = slice_conv(self.classifier, c, self.classifier.c_out, 1)
        return new


HEADS.register("segmentation")(DenseHead)
HEADS.register("detection")(DenseHead)
