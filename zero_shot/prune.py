"""Pruning a search space into a `SpaceMask` with zero-shot scores (before single-shot or multishot).

Two methods:

- `prune_marginal`: from scores of a sample of architectures, each choice's *marginal effect* is the
  mean score-rank of the sampled architectures that take it (rank-based, so any score or the rank
  ensemble works). Either keep the top `keep_choices` fraction of every decision, or remove choices
  one at a time, worst marginal first, recomputing the marginals on the surviving sample after each
  removal (so correlated decisions are judged in the pruned space, not the full one), until the
  space has at most `target_fraction` of its architectures. This is what zero-shot-then-single-shot
  uses: the supernet then searches the pruned space only.
- `prune_progressive`: TE-NAS's round-based pruning (Chen et al., ICLR 2021, Alg. 1). The supernet
  under the uniform distribution over the allowed choices is scored; in every round, for every
  decision, each still allowed choice is removed in turn and the resulting supernet scored, and the
  choice whose removal leaves the best score (hurts least) is pruned; rounds go on until every
  decision has `keep` choices left (TE-NAS: one, i.e. a single architecture). TE-NAS ranks
  removals by the sum of the ranks of NTK condition number and linear regions; here any
  `score_weights` callable does (higher is better).

Both are deterministic: ties break towards the lower (decision, choice) index, and the only
randomness is the caller's sample.

Example:
    >>> space = make_space("nb201")
    >>> archs = space.sample(jax.random.key(0), 200)
    >>> mask = prune_marginal(space, archs, scores, target_fraction=0.2)
    >>> mask.size <= 0.2 * space.size
    True
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.stats import rankdata

from supernet.space import SearchSpace, SpaceMask


def choice_effects(space: SearchSpace, archs: np.ndarray, scores: np.ndarray,
                   mask: SpaceMask | None = None) -> np.ndarray:
    """Mean normalised rank (0 worst .. 1 best) of the sampled archs taking each choice `[D, C]`.

    Only archs inside `mask` count; choices no surviving sample takes get NaN.
    """
    archs, scores = np.asarray(archs), np.asarray(scores, float)
    if archs.ndim != 2 or archs.shape[1] != space.num_decisions or len(archs) != len(scores):
        raise ValueError(f"need archs [N, {space.num_decisions}] and scores [N], got {archs.shape} and "
                         f"{scores.shape}")
    if len(archs) == 0:
        raise ValueError("no scored architectures to prune with; score a non-empty sample")
    bad = np.isnan(scores) | np.isposinf(scores)  # -inf is a valid "worst" (e.g. a disconnected cell)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} scores are NaN/+inf; fix or drop those archs")
    m = space.check_mask(mask).allowed
    inside = m[np.arange(space.num_decisions)[None, :], archs].all(-1)
    a, s = archs[inside], scores[inside]
    out = np.full((space.num_decisions, space.max_choices), np.nan)
    if len(a) == 0:
        return out
    r = (rankdata(s) - 1) / max(len(s) - 1, 1)
    for d in range(space.num_decisions):
        for c in range(space.max_choices):
            sel = a[:, d] == c
            if sel.any() and m[d, c]:
                out[d, c] = r[sel].mean()
    return out


def prune_marginal(space: SearchSpace, archs: np.ndarray, scores: np.ndarray, *,
                   target_fraction: float | None = None, keep_choices: float | None = None,
                   mask: SpaceMask | None = None) -> SpaceMask:
    """Prunes by marginal effects (see module docstring); exactly one of the two targets is given.

    Args:
      archs, scores: a scored sample `[N, D]`, `[N]` (higher score = better).
      target_fraction: keep at most this fraction of the (masked) space's architectures.
      keep_choices: keep `ceil(keep_choices * n)` of the `n` allowed choices of every decision.
      mask: start from this mask (e.g. a space already restricted by an expert).
    """
    if (target_fraction is None) == (keep_choices is None):
        raise ValueError("give exactly one of target_fraction and keep_choices")
    allowed = space.check_mask(mask).allowed.copy()
    if keep_choices is not None:
        if not 0 < keep_choices <= 1:
            raise ValueError(f"keep_choices must be in (0, 1], got {keep_choices}")
        eff = choice_effects(space, archs, scores, SpaceMask(allowed))
        for d in range(space.num_decisions):
            idx = np.flatnonzero(allowed[d])
            k = int(np.ceil(keep_choices * len(idx)))
            # unsampled choices rank last; stable sort keeps lower indices first on ties
            order = sorted(idx, key=lambda c: -np.nan_to_num(eff[d, c], nan=-1.0))
            allowed[d] = False
            allowed[d, order[:k]] = True
        return space.check_mask(SpaceMask(allowed))
    if not 0 < target_fraction <= 1:
        raise ValueError(f"target_fraction must be in (0, 1], got {target_fraction}")
    goal = target_fraction * SpaceMask(allowed).size
    while SpaceMask(allowed).size > goal:
        eff = choice_effects(space, archs, scores, SpaceMask(allowed))
        removable = allowed & (allowed.sum(-1, keepdims=True) > 1)
        if not removable.any():
            break
        # an allowed choice no surviving sample takes has no evidence: treat it as the worst
        e = np.where(removable, np.nan_to_num(eff, nan=-1.0), np.inf)
        d, c = np.unravel_index(np.argmin(e), e.shape)
        allowed[d, c] = False
    return space.check_mask(SpaceMask(allowed))


def prune_progressive(space: SearchSpace, score_weights: Callable[[np.ndarray], np.ndarray], *,
                      keep: int = 1, mask: SpaceMask | None = None,
                      log: Callable[[dict], None] | None = None) -> SpaceMask:
    """TE-NAS-style round-based pruning (see module docstring).

    Args:
      score_weights: scores a batch of per-decision weight arrays `[K, D, C]` (uniform over each
        decision's allowed choices) -> `[K]`, higher is better; called once per round with the
        current supernet and every single-choice removal, so one compiled function serves all.
      keep: choices left per decision at the end.
      log: called with `{"round", "decision", "choice", "score"}` after each pruned choice.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    allowed = space.check_mask(mask).allowed.copy()
    rnd = 0
    while (allowed.sum(-1) > keep).any():
        cands = [(d, c) for d in range(space.num_decisions) if allowed[d].sum() > keep
                 for c in np.flatnonzero(allowed[d])]
        weights = []
        for d, c in cands:
            a = allowed.copy()
            a[d, c] = False
            weights.append(a / a.sum(-1, keepdims=True))
        s = np.asarray(score_weights(np.stack(weights).astype(np.float32)), float)
        if s.shape != (len(cands),) or not np.isfinite(s).all():
            raise ValueError(f"score_weights returned {s.shape} scores (need {len(cands)}, all finite)")
        # per round, prune one choice of every decision that still has too many (TE-NAS prunes
        # one op per edge per round): the removal that leaves the best score
        for d in sorted({d for d, _ in cands}):
            i = max((i for i, (dd, _) in enumerate(cands) if dd == d), key=lambda i: (s[i], -i))
            allowed[d, cands[i][1]] = False
            if log is not None:
                log({"round": rnd, "decision": space.decisions[d].name, "choice": int(cands[i][1]),
                     "score": float(s[i])})
        rnd += 1
    return space.check_mask(SpaceMask(allowed))


def survival(mask: SpaceMask, archs: np.ndarray, truth: np.ndarray, top: float) -> float:
    """Share of the true top-`top` fraction of `archs` (by `truth`, higher better) inside `mask`."""
    archs, truth = np.asarray(archs), np.asarray(truth, float)
    k = max(1, int(round(top * len(truth))))
    best = np.argsort(-truth, kind="stable")[:k]
    a = mask.allowed
    inside = a[np.arange(archs.shape[1])[None, :], archs[best]].all(-1)
    return float(inside.mean())
