"""Task heads on top of a backbone's list of feature maps (one per stage, the last the deepest).

The backbone interface (`Supernet.backbone`, `Subnet.backbone`) returns all stage outputs, so a
detection or segmentation head reads several scales while the classification head reads the last.
A head is an ordinary NNX module `head(features) -> outputs` and is shared as-is by the supernet and
the derived subnet (`Supernet.derive` clones it).

Example:
    >>> head = ClassificationHead(16, 10, rngs=nnx.Rngs(0))
    >>> head([jnp.ones((2, 8, 8, 16))]).shape
    (2, 10)
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float

from hwmodel.registry import Registry

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
