"""TE-NAS's two indicators (Chen et al., "Neural Architecture Search on ImageNet in Four GPU Hours:
A Theoretically Inspired Perspective", ICLR 2021): NTK condition number and number of linear regions.

Reference: VITA-Group/TENAS, `lib/procedures/ntk.py` and `lib/procedures/linear_region_counter.py`,
driven by `prune_tenas.py`. TE-NAS ranks by the sum of the two ranks (`rank_ensemble`).

The reference scores each indicator on its own small network, not on the benchmark's: the NTK on a
C = 3, N = 1 supernet with stem and batch 16; linear regions on a thin C = 1, N = 1 network over
3 x 1000 random 3x3 crops. On NAS-Bench-201 that protocol is (measured numbers in README.md)::

    python -m experiments.zero_shot_eval ... --proxies ntk --space-kwargs channels=3,cells_per_stage=1 \
        --batch-size 16 --init model
    python -m experiments.zero_shot_eval ... --proxies linear_regions \
        --space-kwargs channels=1,cells_per_stage=1,input_size=4 --batch-size 3000 --init model

(4x4 crops of all three channels through the stem: our NB201 network needs multiples of 4.
`--init model` keeps our convs' Kaiming-normal init, which is TE-NAS's; evaluate's default,
`--init torch`, is the zero-cost-nas protocol.)

Example (`space`, `supernet`, `x`, `y`, `jax`, `jnp`: the setup of the `zero_shot` package's example):
    >>> from zero_shot import PROXIES, network_of
    >>> subnet = supernet.derive(space.sample(jax.random.key(2)))
    >>> bool(jnp.isfinite(PROXIES["ntk"](network_of(subnet), (x, y), jax.random.key(0))))
    True
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from zero_shot.network import NTK_WEIGHTS, Batch, Network
from zero_shot.registry import PROXIES
from zero_shot.taps import code_kernel


@PROXIES.register("ntk")
def ntk_cond(net: Network, batch: Batch, key: jax.Array) -> jax.Array:
    """Minus the condition number `lambda_max / lambda_min` of the empirical NTK (TE-NAS eq. 3).

    `Theta = J J^T`, `J[i] = d sum_k f_k(x_i) / d theta` over TE-NAS's parameters named `weight`
    (conv and linear weights and BN scales, `NTK_WEIGHTS`), BN in train mode (`train_mode=True`), so
    a sample's gradient includes its effect through the batch statistics, as the reference's
    per-sample `backward` on a batch forward does. Reference protocol: one batch (`--batch_size`,
    default 16), Kaiming-normal fan-out re-initialisation (our convs' own init), 3 repeats.
    A well-conditioned NTK trains well, so lower cond is better: score = -cond (higher is better);
    a kernel with `lambda_min <= 0` scores `-inf`.
    """
    del key
    x = batch[0]
    params, rest = net.split(NTK_WEIGHTS)
    j = jax.jacrev(lambda p: net.logits(x, net.merge(p, rest)).sum(-1))(params)
    rows = [leaf.reshape(x.shape[0], -1) for leaf in jax.tree.leaves(j)]
    theta = sum(r @ r.T for r in rows)
    ev = jnp.linalg.eigvalsh(theta)  # ascending
    return jnp.where(ev[0] > 0, -ev[-1] / ev[0], -jnp.inf)


@PROXIES.register("linear_regions")
def linear_regions(net: Network, batch: Batch, key: jax.Array) -> jax.Array:
    """Number of distinct ReLU activation patterns among the batch's samples (TE-NAS sec. 3.2).

    `sum_i 1 / #{j : code_j == code_i}` over the codes of every ReLU (`LinearRegionCount.calc_LR`),
    two samples sharing a pattern when their masked Hamming distance is 0 (`K_ij == n`, exact for
    0/1 architecture weights). Higher is better (more regions: more expressive). The reference
    counts 3 x 1000 random 3x3 one-channel crops on a thin (C=1, N=1, no stem) supernet with
    Kaiming-normal fan-in init; here the caller chooses the network and inputs (e.g. a
    `channels=1, cells_per_stage=1` space and small crops).
    """
    del key
    net.require_taps("linear_regions")
    k, n = code_kernel(net, batch[0])
    same = k >= n - 0.5
    return jnp.sum(1.0 / jnp.sum(same, 1))
