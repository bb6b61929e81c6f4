"""Gradient-based scores of Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS" (ICLR 2021).

Reference: SamsungLabs/zero-cost-nas (`foresight/pruners/measures/`). Its protocol, kept here:
- one batch of 64 training images ("random" dataload, 1 batch), the network's own initialisation,
  a copy of the network in train mode (batch statistics), cross-entropy (mean over the batch);
- per-weight scores are summed over the weights of `nn.Conv2d` and `nn.Linear` layers only
  (`get_layer_metric_array`): `KERNELS` here, so no biases and no BatchNorm parameters.

Only the needed quantities are differentiated (the conv/linear kernels, zero probes, or the input),
never the BatchNorm statistics or the whole state. `snip`, `grad_norm`, `fisher` and `grasp` share
one backward pass per architecture (`loss_grads`). In a supernet, weights of inactive operations get
exactly zero gradient, so these scores equal the derived subnet's.

Example (`space`, `supernet`, `x`, `y`, `jax`, `jnp`: the setup of the `zero_shot` package's example):
    >>> from zero_shot import PROXIES, network_of
    >>> subnet = supernet.derive(space.sample(jax.random.key(2)))
    >>> bool(PROXIES["snip"](network_of(subnet), (x, y), jax.random.key(0)) >= 0)
    True
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array

from supernet.blocks import Taps
from zero_shot.network import KERNELS, Batch, Network, abs_params, cross_entropy, tree_sum
from zero_shot.registry import PROXIES

#: eigenvalue offset of jacob_cov (the reference's `k = 1e-5`)
JACOB_K = 1e-5


def probe_shapes(net: Network, x: Array) -> list[tuple[int, int]]:
    """Shapes `[batch, c_out]` of every conv output, in call order (an abstract forward)."""
    box: dict[str, Any] = {}

    def run(v):
        with Taps(probing=True, select=net.select) as t:
            out = net.logits(v)
        box["shapes"] = list(t.probe_shapes)
        return out

    jax.eval_shape(run, x)
    return box["shapes"]


def loss_grads(net: Network, x: Array, y: Array) -> dict[str, Any]:
    """Cross-entropy, its gradient w.r.t. the kernels and w.r.t. zero per-(sample, channel) scales of
    every conv output, each probed conv's weights per output channel (`probe_fan_ins`, `[c_out]`),
    and the logits: one backward pass, cached on `net` for the other scores.

    The probe `y_conv * (1 + z[n, c])` has `dL/dz[n, c] = sum_hw act * dL/dact` (Fisher's `g_nk`).
    """
    def compute():
        kern, rest = net.split(KERNELS)
        probes = [jnp.zeros(s, jnp.float32) for s in probe_shapes(net, x)]

        def loss(k, p):
            with Taps(probing=True, probes=p, select=net.select, reducers={"fan_in": lambda v: v}) as t:
                logits = net.logits(x, net.merge(k, rest))
            fans = [r[1] for r in t.records if r[0] == "fan_in"]
            return cross_entropy(logits, y), (logits, fans)

        (value, (logits, fans)), (gk, gp) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(kern, probes)
        if len(fans) != len(gp):
            raise AssertionError(f"{len(fans)} fan-in records for {len(gp)} conv probes")
        return dict(loss=value, kernels=kern, rest=rest, grads=gk, probe_grads=gp, probe_fan_ins=fans,
                    logits=logits)

    return net.cached(("loss_grads", x.shape), compute)


@PROXIES.register("snip")
def snip(net: Network, batch: Batch, key: jax.Array) -> Array:
    """SNIP (Lee et al., ICLR 2019) as a network score: `sum |theta * dL/dtheta|` (zero-cost-nas
    `snip.py`: `|dL/dmask|` at mask 1). Higher is better."""
    del key
    g = loss_grads(net, *batch)
    return tree_sum(lambda t, d: jnp.abs(t * d), g["kernels"], g["grads"])


@PROXIES.register("grad_norm")
def grad_norm(net: Network, batch: Batch, key: jax.Array) -> Array:
    """Sum over conv/linear layers of the L2 norm of `dL/dW` (zero-cost-nas `grad_norm.py`).
    Higher is better."""
    del key
    g = loss_grads(net, *batch)
    return tree_sum(lambda d: jnp.sqrt(jnp.sum(jnp.square(d))), g["grads"])


@PROXIES.register("fisher")
def fisher(net: Network, batch: Batch, key: jax.Array) -> Array:
    """Fisher (Theis et al. 2018; Turner et al., BlockSwap, ICLR 2020) as zero-cost-nas sums it.

    For every conv and linear layer and output channel k: `F_k = 0.5 * mean_n (sum_hw act * dL/dact)^2`
    with `act` the layer's output (before BN), as zero-cost-nas `fisher.py` hooks an identity after
    each layer. zero-cost-nas then broadcasts `F_k` to every weight of channel k
    (`reshape_elements` over `weight.shape[1:]`) and sums over weights, so the score is
    `sum_layers fan_in * sum_k F_k` with `fan_in = c_in / groups * kh * kw` (`SharedConv.fan_in`;
    the classifier's: its input features). That is what the reference code computes; on NB201 it
    ranks cells better than the per-channel sum (seed 0's 300 cells: Spearman 0.583 vs 0.458).

    Why the published NB201 figure (0.36) is lower than ours (0.51-0.54 on 1,000 cells): zero-cost-nas
    scores its own copy of the network whose cells are search cells with `affine=False`, hence
    `nn.Conv2d(..., bias=not affine)`: every cell conv has a bias, and `act` includes it. The bias
    changes nothing else (a train-mode BN follows), so only Fisher sees it. With PyTorch and the
    reference's hooks on the same 300 cells and init draws, Fisher is 0.427 with those biases and
    0.573 with them set to zero (`benchmarks/zero_shot_torch_crosscheck.py`, which also checks that
    this function equals the hook-based computation on the same weights). Here the network is the
    benchmark's (no conv bias). Conv terms come from zero probes (`loss_grads`); the classifier's `act` is
    the logits and `dL/dlogits` is exact. Assumes the model's output is its last linear layer's.
    Higher is better. Needs a network that reports to `Taps` (NB201): the FBNet supernet computes
    its mixed convs outside `SharedConv`, so their outputs would be missing from the sum.
    """
    del key
    return sum(jnp.sum(fan * f) for fan, f in fisher_per_channel(net, batch))


def fisher_per_channel(net: Network, batch: Batch) -> list[tuple[Array, Array]]:
    """`(fan_in, F)` per conv and for the classifier: each output channel's `F_k = 0.5 * mean_n
    (sum_hw act * dL/dact)^2` and its layer's weights per channel (`fisher`'s docstring)."""
    net.require_taps("fisher")
    x, y = batch
    g = loss_grads(net, x, y)
    out = [(fan, 0.5 * jnp.mean(jnp.square(d), 0)) for fan, d in zip(g["probe_fan_ins"], g["probe_grads"])]
    logits = g["logits"]
    d_logits = jax.grad(lambda z: cross_entropy(z, y))(logits)
    in_features = jax.eval_shape(net.features, x).shape[-1]
    return out + [(jnp.float32(in_features), 0.5 * jnp.mean(jnp.square(logits * d_logits), 0))]


@PROXIES.register("grasp")
def grasp(net: Network, batch: Batch, key: jax.Array) -> Array:
    """GraSP (Wang et al., ICLR 2020) as in zero-cost-nas `grasp.py`: `sum -theta * (H g)`.

    `g = dL/dtheta` (held constant), `H g = d(g . dL/dtheta)/dtheta` over conv/linear weights, T = 1,
    one iteration. zero-cost-nas keeps the minus sign ("accuracy seems to be negatively correlated
    with this metric"); higher is better. `H g` is a forward-over-reverse product (`jax.jvp`).

    The most init-sensitive score here: on 1,000 NAS-Bench-201 cells two torch-init draws rank
    cells at Spearman 0.54 with each other and 0.46 / 0.34 with the accuracy (published 0.51;
    `benchmarks/results/zero_shot_nb201_1000_grasp_torchinit_cpu.json`).
    """
    del key
    x, y = batch
    g = loss_grads(net, x, y)
    kern, rest = g["kernels"], g["rest"]

    def grad_fn(k):
        return jax.grad(lambda kk: cross_entropy(net.logits(x, net.merge(kk, rest)), y))(k)

    _, hg = jax.jvp(grad_fn, (kern,), (jax.lax.stop_gradient(g["grads"]),))
    return tree_sum(lambda t, h: -t * h, kern, hg)


@PROXIES.register("synflow")
def synflow(net: Network, batch: Batch, key: jax.Array) -> Array:
    """log SynFlow (Tanaka et al., NeurIPS 2020) with zero-cost-nas's protocol (`synflow.py`).

    `S = sum |theta * dR/dtheta|` over conv/linear weights, `R = sum(f(1))` for one all-ones input
    of the batch's image shape, every parameter replaced by its absolute value (`linearize`), the
    network without BatchNorm (`bn=False`). Data-independent. Higher is better.

    The reference computes in float64 to avoid overflow. Here the score is `log S` (same ranking)
    in float32: with |weights|, no BN and a positive input, the network is positively homogeneous
    between the `chain_point`s that every path crosses (NB201: stem, cells, reductions), so each is
    divided by a constant `c` (`Taps.normalize_chain`) and `log S = log S' + sum log c`. A network
    without chain points is not rescaled. A disconnected network has `S = 0`: `-inf`.
    """
    del key
    x1 = jnp.ones((1,) + batch[0].shape[1:], jnp.float32)
    kern, rest = net.split(KERNELS, abs_params(net.state))

    def r(k):
        with Taps(remove_bn=True, normalize_chain=True, select=net.select) as t:
            out = net.logits(x1, net.merge(k, rest))
        logc = jnp.sum(jnp.stack(t.log_scales)) if t.log_scales else jnp.float32(0)
        return jnp.sum(out), logc

    grads, logc = jax.grad(r, has_aux=True)(kern)
    s = tree_sum(lambda t, d: jnp.abs(t * d), kern, grads)
    return jnp.log(s) + logc


@PROXIES.register("jacob_cov")
def jacob_cov(net: Network, batch: Batch, key: jax.Array) -> Array:
    """jacob_cov (Mellor et al. 2020, v1 of "NAS without training"; zero-cost-nas `jacob_cov.py`).

    `J[i] = d sum(f(X)) / d x_i` (one backward of the batch's summed logits, BN in train mode),
    `C = corrcoef(J)`, eigenvalues `v` of C: score `-sum(log(v + k) + 1 / (v + k))`, k = 1e-5.
    Higher is better. The eigenvalues are the squared singular values of the rows of J centred and
    normalised (float32-accurate for small eigenvalues, unlike an eigensolver on C); a sample with
    a constant Jacobian (the reference's NaN, e.g. a disconnected cell) scores `-inf`.
    """
    del key
    x = batch[0]
    b = x.shape[0]
    jac = jax.grad(lambda v: jnp.sum(net.logits(v)))(x).reshape(b, -1).astype(jnp.float32)
    z = jac - jnp.mean(jac, 1, keepdims=True)
    norm = jnp.linalg.norm(z, axis=1, keepdims=True)
    s = jnp.linalg.svd(z / jnp.where(norm > 0, norm, 1.0), compute_uv=False)
    v = jnp.zeros(b, jnp.float32).at[: s.shape[0]].set(jnp.square(s))
    score = -jnp.sum(jnp.log(v + JACOB_K) + 1.0 / (v + JACOB_K))
    return jnp.where(jnp.all(norm > 0), score, -jnp.inf)
