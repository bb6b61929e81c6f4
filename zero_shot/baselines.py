"""Size baselines: parameters and FLOPs of the architecture, from its layer table (`hwmodel`).

Abdelfattah et al. (ICLR 2021) report `params` and `flops` as baseline proxies: on NAS-Bench-201
bigger networks are more accurate, so both are "higher is better". They read the architecture, not
the weights: `space.layers(arch)` (or `space.expected_layers(weights)` for a distribution) with
`hwmodel.layers.total_params` / `total_flops` (conventions in `supernet/spaces/nb201.py`).

Example (`space`, `supernet`, `x`, `y`, `jax`, `jnp`: the setup of the `zero_shot` package's example):
    >>> from zero_shot import PROXIES, network_of
    >>> arch = space.sample(jax.random.key(2))
    >>> flops = PROXIES["flops"](network_of(supernet, arch=arch), (x, y), jax.random.key(0))
    >>> bool(flops == PROXIES["flops"](network_of(supernet.derive(arch), space=space), (x, y), jax.random.key(0)))
    True
"""

from __future__ import annotations

import jax

from hwmodel.layers import LayerTable, total_flops, total_params
from zero_shot.network import Batch, Network
from zero_shot.registry import PROXIES


def _table(net: Network, score: str) -> LayerTable:
    if net.space is None:
        raise ValueError(f"score {score!r} needs the search space: pass `space=` to network_of for a subnet")
    if net.arch is not None:
        return net.space.layers(net.arch)
    if net.arch_weights is not None:
        return net.space.expected_layers(net.arch_weights)
    raise ValueError(f"score {score!r} needs the architecture (a supernet's arch or a derived Subnet)")


@PROXIES.register("params")
def params(net: Network, batch: Batch, key: jax.Array) -> jax.Array:
    """Number of parameters (`hwmodel.layers.total_params`). Higher is better (a baseline)."""
    del batch, key
    return total_params(_table(net, "params"))


@PROXIES.register("flops")
def flops(net: Network, batch: Batch, key: jax.Array) -> jax.Array:
    """FLOPs, 2 per MAC of conv/linear layers (`hwmodel.layers.total_flops`). Higher is better."""
    del batch, key
    return total_flops(_table(net, "flops"))
