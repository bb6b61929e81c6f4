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
  `score_weights` callable does (higher is better). With `target_fraction` the removals go one at a
  time over all decisions (the least harmful first) until the space is small enough.
- `best_covering_mask`: the mask within a size budget that keeps the most (or the highest total
  weight) of a given set of architectures, solved exactly as a small integer program (HiGHS via
  `scipy.optimize.milp`). Given the *true* top cells of a benchmark it is the ceiling of every
  per-decision pruning method: on NAS-Bench-201 (cifar10_valid_acc) the best mask with 20 % of
  the space keeps 85.3 % of the top-1 % cells, and only by fixing `edge_3_0` to `skip_connect`.

Both are deterministic: ties break towards the lower (decision, choice) index, and the only
randomness is the caller's sample.

Example:
    >>> import jax
    >>> from supernet import make_space
    >>> space = make_space("nb201")
    >>> archs = space.sample(jax.random.key(0), 200)
    >>> scores = -(archs == 0).sum(1)  # any score, higher is better: here fewer `none` edges
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
    mask = space.check_mask(mask)
    m, inside = mask.allowed, mask.contains(archs)
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
                      keep: int = 1, target_fraction: float | None = None, mask: SpaceMask | None = None,
                      log: Callable[[dict], None] | None = None) -> SpaceMask:
    """TE-NAS-style round-based pruning (see module docstring).

    Args:
      score_weights: scores a batch of per-decision weight arrays `[K, D, C]` (uniform over each
        decision's allowed choices) -> `[K]`, higher is better; called once per round with the
        current supernet and every single-choice removal, so one compiled function serves all.
      keep: choices left per decision at the end.
      target_fraction: instead of rounds, remove the single least harmful choice (over all
        decisions) per call until at most this fraction of the (masked) space is left (or every
        decision is down to `keep`).
      log: called with `{"round", "decision", "choice", "score", "size"}` after each pruned choice.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    if target_fraction is not None and not 0 < target_fraction <= 1:
        raise ValueError(f"target_fraction must be in (0, 1], got {target_fraction}")
    allowed = space.check_mask(mask).allowed.copy()
    goal = None if target_fraction is None else target_fraction * SpaceMask(allowed).size
    rnd = 0
    while (allowed.sum(-1) > keep).any() and (goal is None or SpaceMask(allowed).size > goal):
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
        # one op per edge per round), or with a size target the single best removal overall:
        # the removal that leaves the best score
        for d in sorted({d for d, _ in cands}) if goal is None else [None]:
            i = max((i for i, (dd, _) in enumerate(cands) if d is None or dd == d), key=lambda i: (s[i], -i))
            allowed[cands[i][0], cands[i][1]] = False
            if log is not None:
                log({"round": rnd, "decision": space.decisions[cands[i][0]].name, "choice": int(cands[i][1]),
                     "score": float(s[i]), "size": SpaceMask(allowed).size})
        rnd += 1
    return space.check_mask(SpaceMask(allowed))


def weight_scorer(net, batch, key, proxies, cache: dict | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """A `score_weights` for `prune_progressive` from zero-shot scores of a supernet.

    Each score rates the supernet mixing every allowed choice by the candidate's weights
    (`zero_shot.score(..., arch=weights)`: one compile, weights are an input); the candidates of a
    step are ranked per score and the ranks summed, as TE-NAS ranks its removals by the sum of the
    NTK and linear-region ranks (Chen et al. 2021, Alg. 1). A score's -inf or NaN ranks last.
    Scores are memoised per (score, weights) in `cache` (pass one dict to scorers of the same net,
    batch and key to share it), so a candidate seen before costs nothing.
    """
    from scipy.stats import rankdata

    from zero_shot.batch import score

    names = [proxies] if isinstance(proxies, str) else list(proxies)
    cache = {} if cache is None else cache

    def score_weights(weights: np.ndarray) -> np.ndarray:
        ranks = []
        for name in names:
            vals = []
            for w in np.asarray(weights, np.float32):
                k = (name, w.tobytes())
                if k not in cache:
                    cache[k] = score(net, batch, key, (name,), arch=w)[name]
                vals.append(cache[k])
            ranks.append(rankdata(np.nan_to_num(np.asarray(vals, float), nan=-np.inf)))
        return np.sum(ranks, 0)

    return score_weights


def best_covering_mask(space: SearchSpace, archs: np.ndarray, target_fraction: float, *,
                       weights: np.ndarray | None = None, mask: SpaceMask | None = None,
                       time_limit: float = 120.0) -> tuple[SpaceMask, float]:
    """The mask with at most `target_fraction` of the (masked) space that keeps the largest total
    `weights` (default 1 each) of `archs` `[N, D]`; returns it and the kept share of the weight.

    An exact mixed-integer program (the size constraint is linear in log space):
    `x[d, c]` = choice c of decision d kept, `z[d, s]` = decision d keeps exactly s choices,
    `k[i]` = arch i kept; maximise `sum_i w_i k_i` s.t. `k_i <= x[d, arch_i[d]]` for every d,
    `sum_c x[d, c] = sum_s s z[d, s]`, `sum_s z[d, s] = 1`, `sum_{d,s} log(s) z[d, s] <= log(budget)`.

    Used with a benchmark's true top cells, it is the best any per-decision pruning can do (the
    ceiling to report pruning quality against); with a proxy's top cells it is a pruning method.
    """
    from scipy.optimize import Bounds, LinearConstraint, milp

    archs = np.asarray(archs)
    if archs.ndim != 2 or archs.shape[1] != space.num_decisions or len(archs) == 0:
        raise ValueError(f"need a non-empty archs [N, {space.num_decisions}], got {archs.shape}")
    if not 0 < target_fraction <= 1:
        raise ValueError(f"target_fraction must be in (0, 1], got {target_fraction}")
    w = np.ones(len(archs)) if weights is None else np.asarray(weights, float)
    if w.shape != (len(archs),) or not np.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"weights must be {len(archs)} finite non-negative numbers")
    allowed = space.check_mask(mask).allowed
    n_dec, n_ch = allowed.shape
    budget = target_fraction * SpaceMask(allowed).size
    nx, n = n_dec * n_ch, 2 * n_dec * n_ch + len(archs)  # x, z (s = 1..n_ch), k
    rows, lo, hi = [], [], []

    def add(entries, low, high):
        r = np.zeros(n)
        for j, v in entries:
            r[j] += v
        rows.append(r), lo.append(low), hi.append(high)

    sizes = np.arange(1, n_ch + 1)
    for d in range(n_dec):
        add([(nx + d * n_ch + s, 1.0) for s in range(n_ch)], 1, 1)
        add([(d * n_ch + c, 1.0) for c in range(n_ch)] + [(nx + d * n_ch + s, -sizes[s]) for s in range(n_ch)], 0, 0)
    add([(nx + d * n_ch + s, np.log(sizes[s])) for d in range(n_dec) for s in range(n_ch)],
        -np.inf, np.log(budget) + 1e-9)
    inside = SpaceMask(allowed).contains(archs)
    for i, a in enumerate(archs):
        for d in range(n_dec):
            add([(2 * nx + i, 1.0), (d * n_ch + a[d], -1.0)], -np.inf, 0)
    ub = np.ones(n)
    ub[:nx] = allowed.reshape(-1)
    ub[nx:2 * nx] = (sizes[None, :] <= allowed.sum(-1, keepdims=True)).reshape(-1)
    ub[2 * nx:] = inside
    c = np.zeros(n)
    c[2 * nx:] = -w
    res = milp(c, constraints=LinearConstraint(np.array(rows), lo, hi), integrality=np.ones(n),
               bounds=Bounds(np.zeros(n), ub), options={"time_limit": time_limit})
    if res.x is None:
        raise ValueError(f"no mask within {target_fraction} of the space found ({res.message})")
    kept = space.check_mask(SpaceMask(res.x[:nx].round().reshape(n_dec, n_ch).astype(bool) & allowed))
    hit = kept.contains(archs)  # exact, not the solver's float objective
    return kept, float(w[hit].sum() / w.sum()) if w.sum() > 0 else 0.0


def top_archs(archs: np.ndarray, truth: np.ndarray, top: float) -> np.ndarray:
    """The best `top` fraction of `archs` by `truth` (higher better; at least one; ties by order)."""
    archs, truth = np.asarray(archs), np.asarray(truth, float)
    k = max(1, int(round(top * len(truth))))
    return archs[np.argsort(-truth, kind="stable")[:k]]


def survival(mask: SpaceMask, archs: np.ndarray, truth: np.ndarray, top: float) -> float:
    """Share of the true top-`top` fraction of `archs` (by `truth`, higher better) inside `mask`."""
    return float(mask.contains(top_archs(archs, truth, top)).mean())


def mask_quality(space: SearchSpace, mask: SpaceMask, archs: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """What a pruned space is reported by: its share of the space and of the true top-1 % / top-5 %."""
    return {"kept_fraction": mask.size / space.size, "top1_survival": survival(mask, archs, truth, 0.01),
            "top5_survival": survival(mask, archs, truth, 0.05)}
