"""Activation-based scores: NASWOT (ReLU-code kernel) and Zen-score (feature sensitivity + BN scaling).

Both read activations through `supernet.blocks.Taps` (`zero_shot/taps.py`), where each ReLU / BN of
an inactive supernet op carries weight 0, so a supernet with a one-hot architecture scores exactly
like the derived subnet. Networks that do not report activations (only the NB201 supernet and its
derived subnets do) raise a ValueError naming the supported ones.

Example (`space`, `supernet`, `x`, `y`, `jax`, `jnp`: the setup of the `zero_shot` package's example):
    >>> from zero_shot import PROXIES, network_of
    >>> subnet = supernet.derive(space.sample(jax.random.key(2)))
    >>> bool(jnp.isfinite(PROXIES["naswot"](network_of(subnet), (x, y), jax.random.key(0))))
    True
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from supernet.blocks import BN_MOMENTUM
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
    Reference defaults: batch 16, 32 repeats averaged (`score_archs(..., batch_sizes={"zen": 16},
    repeats={"zen": 32})`, `evaluate --score-batch zen=16 --repeats zen=32`; on seed 0's 1,000
    NAS-Bench-201 cells it ranks them as batch 64 with one repeat does, Spearman 0.9995 between the
    two). Higher is better.

    The BN term reads what the reference reads: PyTorch's `running_var` after its two train-mode
    forwards (momentum 0.1, starting at 1), i.e. `0.81 + 0.09 s_0 + 0.1 s_1` per channel with `s_0`,
    `s_1` the batch variances of the unperturbed and the perturbed forward. It matters: a BN whose
    input is all zeros (on NAS-Bench-201, a conv fed only by `none` edges) has batch variance 0, so
    the paper's plain batch variance gives `-inf` to connected, trainable cells (131 of seed 0's
    1,000 sampled cells, median accuracy 85.9 %, best 90.2 %;
    `benchmarks/results/zero_shot_nb201_1000_zen_torchinit_cpu.json`), while the reference's
    running variance stays >= 0.81.

    Deviations: no division by alpha (the paper's and the reference's form; a constant shift);
    PyTorch's running variance uses the unbiased batch variance (a factor `n / (n - 1)`, n = batch x
    H x W >= 1,024 at batch 16: below 0.1 %); with `repeats > 1` each repeat starts from running
    variance 1 where the reference's keeps accumulating across repeats.
    """
    net.require_taps("zen")
    x = batch[0]
    k_init, k_x, k_eps = jax.random.split(key, 3)
    state = gaussian_init(net.state, k_init)
    x0 = jax.random.normal(k_x, x.shape, jnp.float32)
    eps = jax.random.normal(k_eps, x.shape, jnp.float32)
    keep = {"bn_var": lambda v: v.astype(jnp.float32)}  # per-channel batch variances, combined below
    f0, r0 = collect(net, x0, keep, state=state, features=True)
    f1, r1 = collect(net, x0 + alpha * eps, keep, state=state, features=True)
    delta = jnp.mean(jnp.sum(jnp.abs(f0 - f1).reshape(x.shape[0], -1), -1))
    m = 1.0 - BN_MOMENTUM  # PyTorch's momentum 0.1 (ours is the keep factor 0.9): running = (1 - m) running + m batch
    running = [(kind, bn_log_std((1 - m) ** 2 + (1 - m) * m * v0 + m * v1), w)
               for (kind, v0, w), (_, v1, _) in zip(r0, r1)]
    return jnp.log(delta) + bn_log_stds(running)
