"""Continuous relaxations: architecture logits -> per-decision weights fed to the supernet.

A relaxation maps the logits `[D, C]` (an `ArchLogits` variable) and a key to the weights the
supernet mixes its operations with, and to the *expected* probabilities the cost model reads
(`space.expected_layers(probs)`). Choices outside the space (padding) or removed by a `SpaceMask`
(zero-shot pruning) get weight exactly zero.

- `softmax` (DARTS, Liu et al. ICLR 2019): w = softmax(alpha).
- `gumbel` (SNAS, Xie et al. 2019; GDAS, Dong & Yang CVPR 2019): w = softmax((log_softmax(alpha) + g)
  / tau), g ~ Gumbel(0, 1), with a temperature schedule (GDAS: tau from 10 to 0.1 linearly) and
  optional straight-through hard sampling (`hard=True`: forward one-hot, backward soft).
- `dirichlet` (DrNAS, Chen et al. ICLR 2021): w ~ Dir(beta), beta = elu(alpha) + 1, sampled with
  pathwise (implicit reparameterisation) gradients; `dirichlet_kl` is DrNAS's regulariser
  KL(Dir(beta) || Dir(1)) (their `reg_type='kl'`, scale 1e-3).

Example:
    >>> w, p = relax("softmax", jnp.zeros((2, 3)), jax.random.key(0), allowed=np.ones((2, 3), bool))
    >>> round(float(w[0, 0]), 3)
    0.333
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import digamma, gammaln
from jaxtyping import Array, Bool, Float

from hwmodel.registry import Registry

Weights = Float[Array, "D C"]
RELAXATIONS: Registry[Callable[..., tuple[Weights, Weights]]] = Registry("relaxation")
_NEG = -1e9  # logit of a removed choice (finite: -inf would give NaN gradients through softmax)


def _masked(logits: Weights, allowed) -> Weights:
    return jnp.where(jnp.asarray(allowed), logits, _NEG)


@RELAXATIONS.register("softmax")
def softmax(logits: Weights, key: jax.Array, *, allowed, tau: float = 1.0, hard: bool = False):
    """DARTS: weights = probabilities = softmax(logits) (key unused; `hard` gives straight-through argmax)."""
    p = jax.nn.softmax(_masked(logits, allowed), axis=-1)
    return (straight_through(p) if hard else p), p


@RELAXATIONS.register("gumbel")
def gumbel(logits: Weights, key: jax.Array, *, allowed, tau: float = 1.0, hard: bool = False):
    """Gumbel-softmax sample at temperature `tau` (straight-through one-hot if `hard`, as GDAS)."""
    logp = jax.nn.log_softmax(_masked(logits, allowed), axis=-1)
    g = jax.random.gumbel(key, logits.shape)
    w = jax.nn.softmax((logp + g) / tau, axis=-1)
    w = jnp.where(jnp.asarray(allowed), w, 0.0)
    return (straight_through(w) if hard else w), jnp.exp(logp)


@RELAXATIONS.register("dirichlet")
def dirichlet(logits: Weights, key: jax.Array, *, allowed, tau: float = 1.0, hard: bool = False):
    """DrNAS: w ~ Dir(elu(logits) + 1) over the allowed choices; expected probs = beta / sum(beta).

    Dropping the Gamma variates of removed choices before normalising gives exactly the Dirichlet
    over the remaining ones. `jax.random.gamma` has implicit reparameterisation gradients.
    """
    a = jnp.asarray(allowed)
    beta = concentration(logits)
    gam = jax.random.gamma(key, beta) * a
    w = gam / jnp.maximum(gam.sum(-1, keepdims=True), 1e-30)
    return (straight_through(w) if hard else w), _dirichlet_mean(beta, a)


def _dirichlet_mean(beta: Weights, allowed) -> Weights:
    b = beta * jnp.asarray(allowed)
    return b / b.sum(-1, keepdims=True)


def concentration(logits: Weights) -> Weights:
    """DrNAS's positive concentration elu(alpha) + 1."""
    return jax.nn.elu(logits) + 1.0


def dirichlet_kl(logits: Weights, allowed) -> jax.Array:
    """sum over decisions of KL(Dir(beta) || Dir(1)) over the allowed choices (DrNAS regulariser)."""
    a = jnp.asarray(allowed, jnp.float32)
    beta = jnp.where(a > 0, concentration(logits), 1.0)
    b0 = jnp.sum(beta * a, -1)
    k = a.sum(-1)
    # KL(Dir(b)||Dir(1)) = lnG(b0) - sum lnG(b_i) - lnG(K) + sum (b_i - 1)(psi(b_i) - psi(b0))
    kl = (gammaln(b0) - jnp.sum(gammaln(beta) * a, -1) - gammaln(k)
          + jnp.sum(a * (beta - 1.0) * (digamma(beta) - digamma(b0)[..., None]), -1))
    return jnp.sum(kl)


def beta_decay(logits: Weights, allowed) -> jax.Array:
    """beta-DARTS regulariser: mean over decisions of logsumexp of the allowed logits."""
    return jnp.mean(jax.nn.logsumexp(_masked(logits, allowed), axis=-1))


def straight_through(w: Weights) -> Weights:
    """Forward: one-hot of the argmax; backward: the gradient of `w` (Bengio et al. 2013)."""
    hard = jax.nn.one_hot(jnp.argmax(w, -1), w.shape[-1], dtype=w.dtype)
    return hard - jax.lax.stop_gradient(w) + w


def relax(name: str, logits: Weights, key: jax.Array, *, allowed: Bool[np.ndarray, "D C"],
          tau: float | jax.Array = 1.0, hard: bool = False) -> tuple[Weights, Weights]:
    """Returns `(weights for the supernet, expected probabilities for the cost model)`.

    Raises:
      KeyError: unknown relaxation (lists the valid names).
    """
    return RELAXATIONS[name](logits, key, allowed=allowed, tau=tau, hard=hard)


def probabilities(name: str, logits: Weights, allowed) -> Weights:
    """The expected choice probabilities of a relaxation (no sampling): used to derive and log."""
    if name == "dirichlet":
        return _dirichlet_mean(concentration(logits), allowed)
    return jax.nn.softmax(_masked(logits, allowed), axis=-1)


def temperature(schedule: tuple[float, float], step: jax.Array | int, total_steps: int) -> jax.Array:
    """GDAS's linear temperature schedule from `schedule[0]` to `schedule[1]` over `total_steps`."""
    t0, t1 = schedule
    frac = jnp.clip(jnp.asarray(step, jnp.float32) / max(total_steps - 1, 1), 0.0, 1.0)
    return t0 + (t1 - t0) * frac


def argmax_arch(probs: Weights, allowed) -> np.ndarray:
    """The most likely allowed choice per decision (int32 `[D]`)."""
    return np.asarray(jnp.argmax(jnp.where(jnp.asarray(allowed), probs, -1.0), -1), np.int32)
