"""The weight-sharing supernet contract: backbone + head, architecture logits, derive.

A supernet is one NNX module per search space that holds every weight once at its largest size
(`supernet/blocks.py`). The architecture enters `__call__` as an array of per-decision weights
`[n_decisions, max_choices]`: `space.one_hot(arch)` for a discrete architecture, probabilities or
Gumbel-softmax samples during search (`supernet/relax.py`). It is an *input array*, never Python
structure, so one compiled function serves every architecture (one compile per search).

The architecture logits live in the module as `ArchLogits`, an `nnx.Variable` subtype that is *not*
an `nnx.Param`, so `nnx.Optimizer(model, tx, wrt=nnx.Param)` trains the weights and
`nnx.Optimizer(model, adam, wrt=ArchLogits)` the architecture (bilevel search, `single_shot`).

The backbone returns a list of feature maps (one per stage, the last being the head's input), so
detection and segmentation heads (`supernet/heads.py`) plug in without touching the backbone.

Example:
    >>> from supernet import make_space, make_supernet
    >>> space = make_space("nb201", channels=4, cells_per_stage=1)
    >>> net = make_supernet(space, rngs=nnx.Rngs(0))
    >>> logits = net(jnp.zeros((2, 32, 32, 3)), space.one_hot(space.sample(jax.random.key(0))))
    >>> logits.shape
    (2, 10)
"""

from __future__ import annotations

import abc
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float

from hwmodel.registry import Registry
from supernet.heads import SlicedHead
from supernet.space import Architecture, ArchProbs, SearchSpace

#: Supernet classes by space family (`make_supernet` picks by the space's type).
SUPERNETS: Registry[Callable[..., "Supernet"]] = Registry("supernet")


class ArchLogits(nnx.Variable):
    """Architecture logits `[n_decisions, max_choices]` (their own optimizer; not an nnx.Param)."""


class Supernet(nnx.Module, abc.ABC):
    """Base class: `features = backbone(x, arch_weights)`, `head(features)`, `derive(arch)`.

    Subclasses build `self.head` and implement `backbone` and `derive_backbone`.
    """

    space: SearchSpace

    def init_arch_logits(self, scale: float = 1e-3, rngs: nnx.Rngs | None = None) -> None:
        """Zero (or `scale`-small random, as DARTS's 1e-3 * randn) logits of shape `[D, C]`."""
        shape = (self.space.num_decisions, self.space.max_choices)
        z = jnp.zeros(shape) if rngs is None else scale * jax.random.normal(rngs.params(), shape)
        self.arch_logits = ArchLogits(z)

    @abc.abstractmethod
    def backbone(self, x: Float[Array, "b h w 3"], arch_weights: ArchProbs) -> list[Array]:
        """Feature maps per stage for the given per-decision weights."""

    def __call__(self, x: Float[Array, "b h w 3"], arch_weights: ArchProbs) -> Any:
        return self.head(self.backbone(x, arch_weights))

    @abc.abstractmethod
    def derive_backbone(self, arch: Architecture) -> nnx.Module:
        """A standalone backbone with only the chosen operations, weights copied from this one."""

    def derive(self, arch: Architecture | str) -> "Subnet":
        """The standalone network of `arch` (an int array or its string) with inherited weights.

        Its outputs equal `self(x, space.one_hot(arch))` when both are in the same BN mode.
        """
        a = self.space.decode(arch) if isinstance(arch, str) else self.space.validate(arch)
        backbone = self.derive_backbone(a)
        head = nnx.clone(self.head)
        if isinstance(self.head, SlicedHead):  # slice its convs to the derived features' widths
            size = self.space.input_size
            feats = jax.eval_shape(lambda m, x: m(x), backbone, jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32))
            head = self.head.derive([f.shape[-1] for f in feats])
        return Subnet(backbone, head, self.space.encode(a))


class Subnet(nnx.Module):
    """A derived standalone network: `head(backbone(x))`, plus its architecture string."""

    def __init__(self, backbone: nnx.Module, head: nnx.Module, arch: str):
        self.backbone, self.head, self.arch = backbone, head, arch

    def __call__(self, x: Float[Array, "b h w 3"]) -> Any:
        return self.head(self.backbone(x))


def make_supernet(space: SearchSpace, *, rngs: nnx.Rngs, **kwargs: Any) -> Supernet:
    """The supernet of `space` (by its family: nb201, fbnet-*, mobile-*); kwargs go to its class.

    Raises:
      KeyError: no supernet is registered for the space (lists the registered families).
    """
    return SUPERNETS[space.family](space, rngs=rngs, **kwargs)

