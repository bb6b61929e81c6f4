"""The architecture a single-shot search returns under hard constraints (latency target, memory budgets).

A search ends with a factorised distribution `p(a) = prod_d p_d(a_d)` over the space. Without
constraints it returns the argmax. With constraints it returns the most probable architecture that
meets every limit by the search's cost model,

    a* = argmax_a  sum_d log p_d(a_d)   subject to   cost_k(a) <= limit_k  for every k,

a projection of the search result onto the feasible set, as HardCoRe-NAS (Nayman et al., NeurIPS
2021) satisfies a hard latency constraint by construction instead of hoping a loss term lands on it.
The gap between "the cost that was constrained" and "the cost of the returned architecture" is then
zero by definition, and one trained supernet serves any target (Once-for-All's "train once, specialise
for many"): the target enters only here.

Spaces with at most `ENUMERATE_MAX` allowed architectures (NAS-Bench-201: 15,625) are solved
exactly by enumeration; larger ones over the `k` most probable architectures (beam search over the
decisions), which is exact whenever a feasible architecture is among them.

Because the cost model is a model, a limit on its prediction is not a limit on the device.
`model_limit` tightens a target by the model's held-out error: with `r_i = measured / predicted` of
the n training architectures, each predicted by a fit without it (`hwmodel.fit.loo_ratios`), and
`r_(k)` their k-th smallest for `k = ceil((n + 1) q)`, a new architecture predicted at most at
`T / r_(k)` meets `T` on the device with probability at least `q` when it is exchangeable with the
training ones (split-conformal prediction, Vovk et al. 2005; Angelopoulos & Bates 2021). A quantile,
not a standard deviation: one cell the fit misses by 10x does not move it.

Example:
    >>> import numpy as np
    >>> from supernet.spaces import make_space
    >>> space = make_space("nb201")
    >>> logp = np.log(np.asarray(space.uniform_probs()) + 1e-30)
    >>> logp[:, 3] += 1.0  # every edge prefers nor_conv_3x3
    >>> cost = lambda probs: {"n_conv3": probs[..., 3].sum(-1)}
    >>> d = most_probable(space, logp, space.full_mask().allowed, cost, {"n_conv3": 2.0})
    >>> space.encode(d.arch).count("nor_conv_3x3"), d.feasible, d.exact
    (2, True, True)
    >>> ratios = np.linspace(0.8, 1.25, 19)  # measured / held-out prediction of 19 training cells
    >>> round(model_limit(10.0, ratios, 0.9), 4)  # the 18th of 19: predictions up to 10 / 1.225 ms
    8.1633
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Callable, Mapping

import jax
import numpy as np

from supernet.space import SearchSpace

#: Largest number of allowed architectures solved by enumeration (NAS-Bench-201 has 15,625).
ENUMERATE_MAX = 50_000
#: Architectures costed per call of the vectorised cost function.
CHUNK = 2048


@dataclasses.dataclass(frozen=True)
class Derivation:
    """The result of `most_probable`.

    Attributes:
      arch: the architecture `[D]` (the most probable live one when none is feasible).
      costs: its costs by the cost model (the keys of the cost function).
      feasible: whether it meets every limit.
      rank: its position in the probability order among live architectures (0 = the argmax).
      exact: whether every allowed architecture was considered (enumeration), not only the top k.
      candidates: how many architectures were considered.
    """

    arch: np.ndarray
    costs: dict[str, float]
    feasible: bool
    rank: int
    exact: bool
    candidates: int


def ratios_needed(confidence: float) -> int:
    """Fewest held-out ratios for which `model_limit` at `confidence` exists: the smallest n with
    `ceil((n + 1) confidence) <= n`, i.e. `n >= confidence / (1 - confidence)` (9 for 0.9)."""
    return int(np.ceil(confidence / (1 - confidence) - 1e-9))


def model_limit(target: float, ratios: np.ndarray | None, confidence: float | None) -> float:
    """The largest prediction of the cost model under which the device meets `target` with
    probability at least `confidence`, from the held-out `measured / predicted` ratios of its
    training architectures (module docstring): `target / r_(ceil((n + 1) confidence))`, never above
    `target`. `target` itself when `confidence` or `ratios` is None (an exact model).

    Raises:
      ValueError: confidence outside [0.5, 1), or too few ratios for it (n + 1 > 1 / (1 - confidence)
        is needed: 9 for 0.9).
    """
    if confidence is None or ratios is None:
        return float(target)
    if not 0.5 <= confidence < 1.0:
        raise ValueError(f"confidence must be in [0.5, 1), got {confidence!r}")
    r = np.sort(np.asarray(ratios, np.float64))
    if len(r) < ratios_needed(confidence):
        raise ValueError(f"a confidence of {confidence} needs at least {ratios_needed(confidence)} "
                         f"held-out errors of the cost model, got {len(r)}")
    k = int(np.ceil((len(r) + 1) * confidence - 1e-9))
    if not np.all(np.isfinite(r)) or not np.all(r > 0):
        raise ValueError("the measured / predicted ratios must be finite and positive")
    return float(target / max(r[k - 1], 1.0))


def allowed_architectures(allowed: np.ndarray) -> np.ndarray:
    """Every architecture `[N, D]` (int32) of a mask `[D, C]`, in lexicographic order."""
    choices = [np.flatnonzero(row) for row in np.asarray(allowed, bool)]
    return np.asarray(list(itertools.product(*choices)), np.int32).reshape(-1, len(choices))


def top_k(logp: np.ndarray, k: int) -> np.ndarray:
    """The k most probable architectures `[k', D]` under factorised log-probabilities `[D, C]`
    (-inf = not allowed), most probable first: an exact beam over the decisions."""
    beams: list[tuple[float, list[int]]] = [(0.0, [])]
    for d in range(logp.shape[0]):
        cand = [(s + logp[d, c], a + [c]) for s, a in beams for c in range(logp.shape[1]) if np.isfinite(logp[d, c])]
        beams = sorted(cand, key=lambda t: -t[0])[:k]
    return np.asarray([a for _, a in beams], np.int32)


def most_probable(space: SearchSpace, logp: np.ndarray, allowed: np.ndarray,
                  cost_fn: Callable[[jax.Array], Mapping[str, jax.Array]], limits: Mapping[str, float], *,
                  k: int = 1000, enumerate_max: int = ENUMERATE_MAX) -> Derivation:
    """The most probable live architecture meeting `limits` by `cost_fn` (module docstring).

    Args:
      space: the search space (its `is_constant` removes networks whose output ignores the input).
      logp: `[D, C]` log-probabilities of the search's distribution.
      allowed: `[D, C]` bool mask of the choices the search may return.
      cost_fn: one-hot probabilities `[D, C]` -> costs (`supernet.objectives.make_cost_fn`).
      limits: cost key -> largest allowed value (keys of `cost_fn`'s output).
      k: how many of the most probable architectures to consider when the space is not enumerated.
      enumerate_max: enumerate the allowed space when it has at most this many architectures.

    Raises:
      ValueError: a limit names a cost the cost function does not give, or every candidate is a
        network with constant output.
    """
    allowed = np.asarray(allowed, bool)
    logp = np.where(allowed, np.asarray(logp, np.float64), -np.inf)
    n_allowed = int(np.prod(allowed.sum(-1).astype(object)))
    exact = n_allowed <= enumerate_max
    archs = allowed_architectures(allowed) if exact else top_k(logp, k)
    score = np.take_along_axis(logp[None], archs[..., None], -1)[..., 0].sum(-1)
    order = np.argsort(-score, kind="stable")
    archs = archs[order]
    live = ~np.asarray(space.is_constant(archs))
    if not live.any():
        raise ValueError(f"every one of the {len(archs)} candidate architectures has an output that does not "
                         "depend on its input")
    archs = archs[live]
    cost = jax.jit(jax.vmap(cost_fn))
    parts = [jax.device_get(cost(space.one_hot(archs[i:i + CHUNK]))) for i in range(0, len(archs), CHUNK)]
    costs = {key: np.concatenate([np.asarray(p[key], np.float64) for p in parts]) for key in parts[0]}
    missing = sorted(set(limits) - set(costs))
    if missing:
        raise ValueError(f"limits on {missing} but the cost function gives only {sorted(costs)}")
    ok = np.ones(len(archs), bool)
    for key, limit in limits.items():
        ok &= costs[key] <= limit
    i = int(np.argmax(ok)) if ok.any() else 0
    return Derivation(archs[i], {key: float(v[i]) for key, v in costs.items()}, bool(ok[i]), i, exact, len(archs))
