"""Reading activations through `supernet.blocks.Taps`: ReLU-code kernels and BN statistics.

The modules report every ReLU pre-activation (kind `"relu"`) and BN batch variance (`"bn_var"`)
to an active `Taps` collector, each with the architecture weight of the op it belongs to (0 for an
inactive op of a one-hot supernet, 1 in a derived subnet). The reducers here summarise one tensor
at a time, so no activation outlives its layer:

- `code_kernel`: per ReLU layer l with binary codes `c = 1[pre-activation > 0]` (`[batch, units]`),
  `K_l = c c^T + (1 - c)(1 - c)^T` (agreements between two samples' codes, Mellor et al. 2021),
  and the network's kernel is the weighted sum `K = sum_l m_l K_l` over `n = sum_l m_l units_l`
  units: the masked Hamming kernel, `K_ij = n - hamming_m(c_i, c_j)`. With 0/1 weights it equals
  the derived subnet's kernel exactly (integers below 2**24 are exact in float32).
- `bn_log_stds`: `sum_l m_l log sqrt(mean_c var_lc)` (Zen-score's BN scaling term).

Example (`space`, `supernet`, `x`, `y`, `jax`, `jnp`: the setup of the `zero_shot` package's example):
    >>> from zero_shot import network_of
    >>> subnet = supernet.derive(space.sample(jax.random.key(2)))
    >>> K, n = code_kernel(network_of(subnet), x)
    >>> bool(jnp.all(jnp.diag(K) == n))
    True
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float

from supernet.blocks import Taps
from zero_shot.network import Network


def relu_code_kernel(pre: Float[Array, "b ..."]) -> tuple[Array, Array]:
    """`(c c^T + (1 - c)(1 - c)^T, units)` for codes `c = 1[pre > 0]` flattened per sample."""
    c = (pre.reshape(pre.shape[0], -1) > 0).astype(jnp.float32)
    u = c.shape[1]
    s = jnp.sum(c, 1)
    # c c^T + (1-c)(1-c)^T = 2 c c^T - s 1^T - 1 s^T + u: one matmul; exact integers in float32
    k = 2.0 * (c @ c.T) - s[:, None] - s[None, :] + u
    return k, jnp.float32(u)


def bn_log_std(var: Float[Array, "c"]) -> Array:
    """`log sqrt(mean_c var_c)` of one BN layer (Zen-NAS's `log(sqrt(mean(running_var)))`)."""
    return 0.5 * jnp.log(jnp.mean(var.astype(jnp.float32)))


def collect(net: Network, x: Array, reducers: Mapping[str, Callable[[Array], Any]], *,
            state: nnx.State | None = None, features: bool = False) -> tuple[Array, list]:
    """Runs the network on `x` with the given reducers; returns `(output, [(kind, summary, weight)])`.

    `features=True` returns the pre-pooling features instead of the logits. Raises ValueError when
    the network does not report activations.
    """
    net.require_taps("activation taps")
    with Taps(reducers=reducers, select=net.select) as taps:
        out = net.features(x, state) if features else net.logits(x, state)
    return out, taps.records


def code_kernel(net: Network, x: Float[Array, "b h w c"], state: nnx.State | None = None) -> tuple[Array, Array]:
    """The masked ReLU-code kernel `K [b, b]` and the number of active units `n` (module docstring)."""
    _, records = collect(net, x, {"relu": relu_code_kernel}, state=state)
    if not records:
        raise ValueError(f"{net.family} reported no ReLU activations")
    k = sum(weighted(w, kl) for _, (kl, _), w in records)
    n = sum(weighted(w, u) for _, (_, u), w in records)
    return k, n


def weighted(w: Array, v: Any) -> Any:
    """`w * v` with exact zeros where `w == 0` (an inactive op's `-inf` or NaN does not leak)."""
    return jax.tree.map(lambda a: jnp.where(w != 0, w * a, 0.0), v)


def bn_log_stds(records: list) -> Array:
    """`sum_l m_l log sqrt(mean var_l)` over the `"bn_var"` records (reducer `bn_log_std`)."""
    terms = [weighted(w, v) for kind, v, w in records if kind == "bn_var"]
    return jnp.sum(jnp.stack(terms)) if terms else jnp.float32(0)
