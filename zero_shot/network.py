"""A pure-function view of a network for the zero-shot scores: one type for supernets and subnets.

A score is a pure function `score(net, batch, key) -> scalar` (the design's `(model_fn, params,
batch, key)`, bundled): `net` is a `Network`, which holds the NNX graph definition, the weights as an
`nnx.State`, and, for a supernet, the architecture weights `[n_decisions, max_choices]` as an array,
so one traced function scores every architecture. `Network.logits(x, state)` and
`Network.features(x, state)` run the model with BatchNorm in train mode (batch statistics, as every
reference implementation scores) and never update its running statistics.

Parameter groups follow the reference implementations: `KERNELS` are the Conv2d and Linear weights
that Abdelfattah et al. (2021) sum over (`nnx.Param`s named `kernel`, so no biases and no BN);
`NTK_WEIGHTS` adds BN scales (TE-NAS takes every parameter named `weight`).

Example (`space`, `supernet`, `x`, `y`, `jax`, `jnp`: the setup of the `zero_shot` package's example):
    >>> net = network_of(supernet, arch=space.sample(jax.random.key(0)))
    >>> net.logits(x).shape
    (8, 10)
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float, Int

from supernet.blocks import ReportsTaps, Taps, active_taps
from supernet.model import Subnet, Supernet
from supernet.training import cross_entropy  # noqa: F401  (the scores' loss, re-exported: one definition)
from supernet.space import SearchSpace

Batch = tuple[Float[Array, "b h w c"], Int[Array, "b"]]
"""`(images, integer labels)`."""


def KERNELS(path: tuple, value: Any) -> bool:
    """Conv2d and Linear weights (nnx filter): `nnx.Param`s named `kernel`."""
    return isinstance(value, nnx.Param) and path[-1] == "kernel"


def NTK_WEIGHTS(path: tuple, value: Any) -> bool:
    """Conv/Linear weights and BN scales: TE-NAS's parameters named `weight` in PyTorch."""
    return isinstance(value, nnx.Param) and path[-1] in ("kernel", "scale")


@dataclasses.dataclass(frozen=True, eq=False)
class Network:
    """A model as pure functions of its state (see module docstring).

    Attributes:
      graphdef, state: `nnx.split` of the model (in train mode).
      arch_weights: `[n_decisions, max_choices]` for a supernet, None for a standalone network.
      select: compute only the chosen op of each mixed op (`blocks.Taps.select`; one-hot only).
      space, arch: the search space and the integer architecture when known (for `params`/`flops`).
      supports_taps: the model reports ReLUs, BNs and mixed ops to `blocks.Taps`.
      family: a readable model name for error messages.
      cache: values shared by the scores computed in one trace (e.g. one loss gradient).
    """

    graphdef: Any
    state: nnx.State
    arch_weights: Array | None = None
    select: bool = False
    space: SearchSpace | None = None
    arch: Array | None = None
    supports_taps: bool = False
    family: str = "model"
    cache: dict = dataclasses.field(default_factory=dict)

    # ---------------------------------------------------------------- running the model
    def module(self, state: nnx.State | None = None) -> nnx.Module:
        # copy=True: fresh Variables at the current trace level (merging inside jax.grad/vmap)
        return nnx.merge(self.graphdef, self.state if state is None else state, copy=True)

    def _run(self, fn: Callable[[], Array]) -> Array:
        if active_taps() is not None:
            return fn()
        with Taps(select=self.select):  # freezes BN statistics; one-hot mixed ops via switch
            return fn()

    def logits(self, x: Float[Array, "b h w c"], state: nnx.State | None = None) -> Array:
        """The model's output for `x` (BN in train mode)."""
        m = self.module(state)
        if self.arch_weights is None:
            return self._run(lambda: m(x))
        return self._run(lambda: m(x, self.arch_weights))

    def features(self, x: Float[Array, "b h w c"], state: nnx.State | None = None) -> Array:
        """The last backbone feature map, before global pooling (Zen-score's `forward_pre_GAP`)."""
        m = self.module(state)
        if isinstance(m, Supernet):
            return self._run(lambda: m.backbone(x, self.arch_weights)[-1])
        if isinstance(m, Subnet):
            return self._run(lambda: m.backbone(x)[-1])
        return self._run(lambda: m(x))

    # ---------------------------------------------------------------- parameter groups
    def split(self, which: Callable = KERNELS, state: nnx.State | None = None) -> tuple[nnx.State, nnx.State]:
        """`(selected, rest)` of the state; `merge(selected, rest)` puts them back together."""
        return nnx.split_state(self.state if state is None else state, which, ...)

    @staticmethod
    def merge(*states: nnx.State) -> nnx.State:
        return nnx.merge_state(*states)

    def replace(self, **changes: Any) -> "Network":
        return dataclasses.replace(self, cache={}, **changes)

    def cached(self, name: str, fn: Callable[[], Any]) -> Any:
        """`fn()` computed once per Network object (shared by the scores of one trace)."""
        if name not in self.cache:
            self.cache[name] = fn()
        return self.cache[name]

    def require_taps(self, score: str) -> None:
        if not self.supports_taps:
            raise ValueError(f"score {score!r} reads activations through `supernet.blocks.Taps`, which only "
                             f"these networks report: nb201 (supernet and derived subnets); got {self.family}")


def _supports_taps(model: nnx.Module) -> bool:
    return isinstance(model.backbone if isinstance(model, Subnet) else model, ReportsTaps)


def network_of(model: nnx.Module, arch: Any = None, *, space: SearchSpace | None = None) -> Network:
    """The `Network` of an NNX model in train mode (the model itself is not modified).

    Args:
      model: a `Supernet` (then `arch` is required), a derived `Subnet`, or any NNX module whose
        `__call__(x)` returns logits.
      arch: for a supernet, an integer architecture `[n_decisions]` (scored by computing only the
        chosen ops) or architecture weights `[n_decisions, max_choices]` (every op, weighted).
      space: the search space (default: the supernet's); with it a `Subnet`'s architecture string is
        decoded so that `params`/`flops` work.

    Raises:
      ValueError: a supernet without `arch`, or an architecture of the wrong shape.
    """
    m = nnx.clone(model)
    m.train()  # batch statistics, as every reference implementation scores
    graphdef, state = nnx.split(m)
    family = type(model).__name__
    if isinstance(model, Supernet):
        space = model.space
        if arch is None:
            raise ValueError("scoring a supernet needs `arch`: an integer architecture or architecture weights")
        a = jnp.asarray(arch)
        if jnp.issubdtype(a.dtype, jnp.integer):
            a_int = jnp.asarray(space.validate(np.asarray(a)))
            return Network(graphdef, state, space.one_hot(a_int), True, space, a_int, _supports_taps(model), family)
        if a.shape != (space.num_decisions, space.max_choices):
            raise ValueError(f"architecture weights must have shape {(space.num_decisions, space.max_choices)}, "
                             f"got {a.shape}")
        return Network(graphdef, state, a.astype(jnp.float32), False, space, None, _supports_taps(model), family)
    a_int = None
    if isinstance(model, Subnet) and space is not None:
        a_int = jnp.asarray(space.decode(model.arch))
    return Network(graphdef, state, None, False, space, a_int, _supports_taps(model), family)


# ------------------------------------------------------------------ helpers shared by the scores
def fingerprint(x: Array) -> Array:
    """A uint32 hash of an array's values (position-weighted sum of its float32 bit patterns)."""
    bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32).reshape(-1), jnp.uint32)
    pos = jnp.arange(bits.size, dtype=jnp.uint32) * jnp.uint32(2654435761) + jnp.uint32(1)
    return jnp.sum(bits * pos, dtype=jnp.uint32) ^ jnp.uint32(bits.size)


def gaussian_init(state: nnx.State, key: jax.Array) -> nnx.State:
    """Zen-NAS's `network_weight_gaussian_init`: conv/linear weights N(0, 1), biases 0, BN scale 1.

    Each weight tensor's draw is keyed by `fold_in(key, fingerprint(old values))`, not by its path:
    a derived subnet, whose tensors are copies of the supernet's, gets the same new weights as the
    supernet, so its Zen-score equals the supernet's for that architecture.
    """
    def init(path, v):
        if not isinstance(v, nnx.Param):
            return v
        x = v.get_value()
        if path[-1] == "kernel":
            return v.replace(jax.random.normal(_rbg(key, fingerprint(x)), x.shape, x.dtype))
        if path[-1] == "bias":
            return v.replace(jnp.zeros_like(x))
        if path[-1] == "scale":
            return v.replace(jnp.ones_like(x))
        return v

    return nnx.map_state(init, state)


#: Weight initialisations a model can be scored with (`initialise`).
INITS = ("model", "torch")


def initialise(model: nnx.Module, init: str, key: jax.Array) -> nnx.Module:
    """The model with its weights re-drawn as `init` says (a copy; `model` is not modified).

    - `"model"`: unchanged (the model's own initialisation; NB201 convs: He-normal, fan_out).
    - `"torch"`: PyTorch's default `Conv2d`/`Linear` initialisation, `kaiming_uniform_(a=sqrt(5))`,
      i.e. every kernel `~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))` with `fan_in = prod(shape[:-1])`
      (flax layout `[kh, kw, c_in / groups, c_out]` / `[in, out]`). This is what the reference
      implementations score: zero-cost-nas (`nasbench2_pred.py`, `--init_w_type none` keeps the
      PyTorch default) and nas-without-training both build the NB201 network without re-initialising
      it. It matters wherever weight magnitudes survive normalisation: with BN removed, synflow
      weighs a path of L convs by the product of its |weights| (He-normal draws |w| about 2.3x larger,
      favouring deep all-conv paths), and in NB201 the reduction blocks' shortcut 1x1 conv has no BN
      but is added to a BN-normalised branch, which every activation- or gradient-based score sees.
      On the 1,000-cell NB201 samples of seeds 0 / 1 / 2 (README), jacob_cov goes from 0.741 / 0.727 /
      0.752 with the model's init to 0.790 / 0.749 / 0.748 with this one, and the naswot+synflow+
      jacob_cov rank average from 0.853 / 0.849 / 0.861 to 0.873 / 0.865 / 0.861. Biases and
      BatchNorm are left as they are. In a weight-sharing supernet fan_in is that of the stored
      (largest) kernel; re-initialise the supernet before deriving subnets so both share weights.
    """
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; valid: {', '.join(INITS)}")
    m = nnx.clone(model)
    if init == "model":
        return m
    graphdef, state = nnx.split(m)

    def draw(path, v):
        if not isinstance(v, nnx.Param) or path[-1] != "kernel":
            return v
        x = v.get_value()
        bound = float(np.prod(x.shape[:-1])) ** -0.5
        k = jax.random.fold_in(key, zlib.crc32("/".join(map(str, path)).encode()))  # per tensor
        return v.replace(jax.random.uniform(k, x.shape, x.dtype, -bound, bound))

    return nnx.merge(graphdef, nnx.map_state(draw, state))


def _rbg(key: jax.Array, data: Array) -> jax.Array:
    """An "rbg" key (XLA's RngBitGenerator) seeded by the key's data mixed with `data` (uint32).

    A threefry draw (or fold_in) per weight tensor compiles one unrolled hash program each (~0.3 s
    on a CPU); integer mixing and the rbg generator compile to a handful of instructions.
    """
    kd = jax.random.key_data(key).reshape(-1).astype(jnp.uint32)
    mult = jnp.asarray([0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D, 0x27D4EB2F], jnp.uint32)
    h = (jnp.resize(kd, (4,)) ^ (data.astype(jnp.uint32) * mult)) * jnp.uint32(0x165667B1)
    h = h ^ (h >> jnp.uint32(15))
    return jax.random.wrap_key_data(h * jnp.uint32(0x27D4EB2F), impl="rbg")


def abs_params(state: nnx.State) -> nnx.State:
    """Every `nnx.Param` replaced by its absolute value (synflow's `linearize`)."""
    return nnx.map_state(lambda p, v: v.replace(jnp.abs(v.get_value())) if isinstance(v, nnx.Param) else v, state)


def tree_sum(fn: Callable[[Array], Array], *trees: Any) -> Array:
    """`sum over leaves of fn(leaf, ...)` in float32."""
    leaves = [jnp.sum(fn(*xs)).astype(jnp.float32) for xs in zip(*(jax.tree.leaves(t) for t in trees))]
    return jnp.sum(jnp.stack(leaves)) if leaves else jnp.float32(0)
