"""Rank ensembles of zero-shot scores, and fitting their weights on one split to report on another.

Abdelfattah et al. (ICLR 2021) vote with several proxies; TE-NAS (Chen et al. 2021) sums the ranks
of the NTK condition number and the number of linear regions; NAS-Bench-Suite-Zero (Krishnakumar et
al., NeurIPS 2022 D&B) averages ranks. `rank_ensemble` is the (weighted) average of each score's
rank, scaled to [0, 1] (1 = best). `fit_ensemble_weights` picks non-negative weights that maximise
the Spearman correlation of the ensemble with a target (e.g. benchmark accuracy) on a training
split; report `spearman(rank_ensemble(test_scores, weights=w), test_target)` on a held-out split.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> acc = rng.normal(size=200)  # the truth, and two noisy scores of it (the second noisier)
    >>> scores = {"a": acc + rng.normal(size=200), "b": acc + 3 * rng.normal(size=200)}
    >>> train = {k: v[:100] for k, v in scores.items()}
    >>> test = {k: v[100:] for k, v in scores.items()}
    >>> w = fit_ensemble_weights(train, acc[:100])
    >>> bool(w["a"] > w["b"]), bool(spearman(rank_ensemble(test, weights=w), acc[100:]) > 0.5)
    (True, True)
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from scipy import optimize, stats


def ranks(values: Sequence[float] | np.ndarray, reference: Sequence[float] | np.ndarray | None = None) -> np.ndarray:
    """Ranks scaled to [0, 1] (ties share their average rank; NaN ranks as the worst).

    With `reference`, each value is placed among the reference values instead of among the others:
    its mid-rank percentile `(#{ref < v} + #{ref == v} / 2) / #ref`. A value's rank then does not
    depend on what else is in the batch, which is what an evaluator scoring one architecture at a
    time (evolution) needs; `ranks(x, reference=x)` orders `x` as `ranks(x)` does.
    """
    v = np.asarray(values, np.float64).reshape(-1)
    if v.size == 0:
        raise ValueError("cannot rank an empty score array")
    v = np.where(np.isnan(v), -np.inf, v)
    if reference is not None:
        ref = np.sort(np.where(np.isnan(r := np.asarray(reference, np.float64).reshape(-1)), -np.inf, r))
        if ref.size == 0:
            raise ValueError("cannot rank against an empty reference")
        return (np.searchsorted(ref, v, "left") + np.searchsorted(ref, v, "right")) / (2.0 * ref.size)
    r = stats.rankdata(v, method="average") - 1.0
    return r / max(v.size - 1, 1)


def spearman(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Spearman's rank correlation (NaN scores rank as the worst)."""
    ra, rb = ranks(a), ranks(b)
    if np.std(ra) == 0 or np.std(rb) == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def _select(scores: Mapping[str, np.ndarray], names: Sequence[str] | None) -> list[str]:
    names = list(scores) if names is None else list(names)
    if not names:
        raise ValueError("rank_ensemble needs at least one score name")
    for n in names:
        if n not in scores:
            raise KeyError(f"no scores named {n!r}; available: {', '.join(sorted(scores))}")
    sizes = {n: np.asarray(scores[n]).reshape(-1).size for n in names}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"scores have different lengths: {sizes}")
    return names


def _weights(names: list[str], weights: Mapping[str, float] | Sequence[float] | None) -> np.ndarray:
    if weights is None:
        w = np.ones(len(names))
    elif isinstance(weights, Mapping):
        unknown = set(weights) - set(names)
        if unknown:
            raise KeyError(f"weights for {sorted(unknown)}, which are not among the scores {names}")
        w = np.asarray([float(weights.get(n, 0.0)) for n in names])
    else:
        w = np.asarray(weights, np.float64).reshape(-1)
        if w.size != len(names):
            raise ValueError(f"{w.size} weights for {len(names)} scores {names}")
    if np.any(w < 0) or not np.isfinite(w).all() or w.sum() <= 0:
        raise ValueError(f"weights must be finite, non-negative and not all zero, got {w.tolist()}")
    return w / w.sum()


def rank_ensemble(scores: Mapping[str, Sequence[float] | np.ndarray], names: Sequence[str] | None = None,
                  weights: Mapping[str, float] | Sequence[float] | None = None,
                  reference: Mapping[str, Sequence[float] | np.ndarray] | None = None) -> np.ndarray:
    """The weighted average of each score's [0, 1] rank (higher is better), `[N]`.

    Args:
      scores: `{name: [N] scores}`, each higher-is-better (as `PROXIES` returns them).
      names: the scores to combine (default: all, or those with a weight).
      weights: non-negative weights, by name or in the order of `names` (default: equal).
      reference: `{name: [M] scores}` of a fixed reference sample: rank each score among these
        (`ranks(..., reference=)`) rather than within this batch, so that an architecture's value
        is the same whichever batch it comes in.

    Raises:
      KeyError: a name or weight for a score that is not in `scores` (lists the available ones).
      ValueError: no names, scores of different lengths, or invalid weights.
    """
    if names is None and isinstance(weights, Mapping):
        names = list(weights)
    names = _select(scores, names)
    w = _weights(names, weights)
    if reference is not None:
        missing = [n for n in names if n not in reference]
        if missing:
            raise KeyError(f"no reference scores for {missing}; the reference has {', '.join(sorted(reference))}")
    r = np.stack([ranks(scores[n], None if reference is None else reference[n]) for n in names])
    return w @ r


def fit_ensemble_weights(scores: Mapping[str, Sequence[float] | np.ndarray], target: Sequence[float] | np.ndarray,
                         names: Sequence[str] | None = None, *, num_random: int = 2000,
                         seed: int = 0) -> dict[str, float]:
    """Non-negative weights (summing to 1) maximising `spearman(rank_ensemble(scores, w), target)`.

    The objective is piecewise constant in the weights, so candidates are compared directly: each
    single score, equal weights, the non-negative least-squares fit of the target's ranks by the
    scores' ranks (`scipy.optimize.nnls`), and `num_random` Dirichlet(1) draws (seeded). Ties keep
    the earlier (simpler) candidate. Fit on one split, report on another.
    """
    names = _select(scores, names)
    t = np.asarray(target, np.float64).reshape(-1)
    r = np.stack([ranks(scores[n]) for n in names])
    if t.size != r.shape[1]:
        raise ValueError(f"target has {t.size} values for {r.shape[1]} architectures")
    k = len(names)
    cands = [np.eye(k)[i] for i in range(k)] + [np.full(k, 1.0 / k)]
    rc, tc = r - r.mean(1, keepdims=True), ranks(t) - ranks(t).mean()
    w_nnls, _ = optimize.nnls(rc.T, tc)
    if w_nnls.sum() > 0:
        cands.append(w_nnls / w_nnls.sum())
    cands += list(np.random.default_rng(seed).dirichlet(np.ones(k), size=num_random))
    best, best_rho = cands[0], -np.inf
    for w in cands:
        rho = spearman(w @ r, t)
        if rho > best_rho + 1e-12:
            best, best_rho = w, rho
    return {n: float(v) for n, v in zip(names, best)}


def fit_and_report(train_scores: Mapping[str, np.ndarray], train_target: np.ndarray,
                   test_scores: Mapping[str, np.ndarray], test_target: np.ndarray,
                   names: Sequence[str] | None = None, **kwargs) -> dict[str, object]:
    """Fits weights on the training split; returns them with the train and test Spearman rho."""
    w = fit_ensemble_weights(train_scores, train_target, names, **kwargs)
    return {"weights": w,
            "train_spearman": spearman(rank_ensemble(train_scores, list(w), w), train_target),
            "test_spearman": spearman(rank_ensemble(test_scores, list(w), w), test_target)}
