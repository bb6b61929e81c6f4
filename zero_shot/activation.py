"""Activation-based scores: NASWOT (ReLU-code kernel) and Zen-score (feature sensitivity + BN scaling).

Both read activations through `supernet.blocks.Taps` (`zero_shot/taps.py`), where each ReLU / BN of
an inactive supernet op carries weight 0, so a supernet with a one-hot architecture scores exactly
like the derived subnet. Networks that do not report activations (only the NB201 supernet and its
derived subnets do) raise a ValueError naming the supported ones.

Example:
    >>> PROXIES["naswot"](network_of(subnet), (x, y), jax.random.key(0))
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from zero_shot.network import Batch, Network, gaussian_init
from zero_shot.registry import PROXIES
from zero_shot.taps import bn_log_std, bn_log_stds, code_kernel, collect


@PROXIES.register("naswot")
def naswot(net: Network, batch: Batch, key: jax.Array) -> jax.Array:
    """NASWOT (Mellor et al., "Neural Architecture Search without Training", ICML 2021), eq. 2.

    `log |K_H|` with `K_H = sum_relu c c^T + (1 - c)(1 - c)^T` over the binary codes
    `c = 1[pre-activation > 0]` of every ReLU (the reference hooks every `nn.ReLU` module,
    BayesWatch/nas-without-training `score_networks.py`, `hooklogdet` = `np.linalg.slogdet`).
    Protocol of the reference: one batch of 128 training images, the network's default
    initialisation, BN in train mode. Higher is better; a singular kernel scores `-inf`.

    Computed as `slogdet(K / n) + b log n` (n = number of active ReLU units) for float32 range.
    """
    del key
    net.require_taps("naswot")
    k, n = code_kernel(net, batch[0])
    sign, logdet = jnp.linalg.slogdet(k / n)
    return jnp.where(sign > 0, logdet + k.shape[0] * jnp.log(n), -jnp.inf)


@PROXIES.register("zen")
def zen(net: Network, batch: Batch, key: jax.Array, alpha: float = 1e-2) -> jax.Array:
    """Zen-score (Lin et al., "Zen-NAS", ICCV 2021), eq. 8 as in idstcv/ZenNAS `compute_zen_score.py`.

    `log E_{x, eps} sum_{hwc} |f(x) - f(x + alpha eps)| + sum_BN log sqrt(mean_c sigma_c^2)` where
    `f` is the pre-global-pooling feature map, `x, eps ~ N(0, 1)` of the batch's shape (the data
    are not used), `alpha = 0.01` (`mixup_gamma`), every weight re-drawn from N(0, 1) with biases 0
    and BN scale 1 / shift 0 (`network_weight_gaussian_init`, here `network.gaussian_init`, keyed
    by each tensor's values so derived subnets get the same weights), BN in train mode.
    Reference defaults: batch 16, 32 repeats (average over keys for repeats). Higher is better.

    Deviations: no division by alpha (the paper's and the reference's form; a constant shift), and
    `sigma^2` is the batch variance of the unperturbed forward (the paper's definition) where the
    reference reads PyTorch's running variance after two forwards (`0.81 + 0.09 s1 + 0.1 s2`).
    """
    net.require_taps("zen")
    x = batch[0]
    k_init, k_x, k_eps = jax.random.split(key, 3)
    state = gaussian_init(net.state, k_init)
    x0 = jax.random.normal(k_x, x.shape, jnp.float32)
    eps = jax.random.normal(k_eps, x.shape, jnp.float32)
    f0, records = collect(net, x0, {"bn_var": bn_log_std}, state=state, features=True)
    f1 = net.features(x0 + alpha * eps, state)
    delta = jnp.mean(jnp.sum(jnp.abs(f0 - f1).reshape(x.shape[0], -1), -1))
    return jnp.log(delta) + bn_log_stds(records)
