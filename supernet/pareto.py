"""Pareto utilities for multi-objective search: dominance, non-dominated sorting, crowding, hypervolume.

Conventions: objective values are rows of `points [N, M]`; `directions` gives `"max"` or `"min"` per
column (default: all minimised). Internally every objective is turned into a minimisation by
negating the maximised columns (`to_min`), so `a` dominates `b` when `a <= b` everywhere and `a < b`
somewhere (Deb et al., "A fast and elitist multiobjective genetic algorithm: NSGA-II", IEEE TEC 2002).

Hypervolume normalisation (what `hypervolume_ratio` does, and what `benchmarks/evolution_nb201.py`
reports): each objective is mapped to `[0, 1]` as a minimisation, 0 at its best and 1 at its worst
value over given bounds (e.g. the whole NAS-Bench-201 table), so accuracy in % and latency in ms weigh
the same; the reference point is `(1, ..., 1)`, the worst corner of the bounds. A point exactly on the
reference point adds no volume. The ratio `HV(found front) / HV(true front)` is 1 when the search found
the whole true front.

Example:
    >>> pts = np.array([[91.0, 20.0], [88.0, 5.0], [85.0, 6.0]])  # accuracy, latency
    >>> non_dominated(pts, ("max", "min")).tolist()
    [True, True, False]
    >>> hypervolume_2d(np.array([[1.0, 2.0], [2.0, 1.0]]), ref=(3.0, 3.0))
    3.0
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from jaxtyping import Bool, Float, Int

DIRECTIONS = ("max", "min")


def _signs(directions: Sequence[str] | None, m: int) -> np.ndarray:
    if directions is None:
        return np.ones(m)
    if len(directions) != m:
        raise ValueError(f"{len(directions)} directions for {m} objectives")
    bad = [d for d in directions if d not in DIRECTIONS]
    if bad:
        raise ValueError(f"unknown direction(s) {bad}; valid: {', '.join(DIRECTIONS)}")
    return np.asarray([-1.0 if d == "max" else 1.0 for d in directions])


def to_min(points: Float[np.ndarray, "n m"], directions: Sequence[str] | None = None) -> Float[np.ndarray, "n m"]:
    """The points as a minimisation problem (maximised columns negated), float64 `[N, M]`."""
    p = np.asarray(points, np.float64)
    if p.ndim != 2:
        raise ValueError(f"points must be [N, M], got shape {p.shape}")
    return p * _signs(directions, p.shape[1])


def dominance_matrix(points: Float[np.ndarray, "n m"], directions: Sequence[str] | None = None) -> Bool[np.ndarray, "n n"]:
    """`D[i, j]`: point i dominates point j (O(N^2 M) memory; for populations, not whole tables)."""
    f = to_min(points, directions)
    le = np.all(f[:, None, :] <= f[None, :, :], axis=-1)
    lt = np.any(f[:, None, :] < f[None, :, :], axis=-1)
    return le & lt


def non_dominated(points: Float[np.ndarray, "n m"], directions: Sequence[str] | None = None,
                  chunk: int = 1024) -> Bool[np.ndarray, "n"]:
    """Mask of the points no other point dominates (duplicates of a front point are all kept).

    Two objectives: one sort, O(N log N) (a whole NAS-Bench-201 table in milliseconds); more: a
    chunked O(N^2 M) comparison.
    """
    f = to_min(points, directions)
    if f.shape[1] == 2 and len(f):
        # Distinct points sorted by (f0, f1): every earlier one has f0 <= ours (and f1 < ours if f0 ties),
        # so a point is dominated iff some earlier distinct point has f1 <= its f1.
        u, inv = np.unique(f, axis=0, return_inverse=True)
        earlier_min = np.minimum.accumulate(np.concatenate([[np.inf], u[:-1, 1]]))
        return (u[:, 1] < earlier_min)[inv.reshape(-1)]
    keep = np.ones(len(f), bool)
    for s in range(0, len(f), chunk):
        b = f[s:s + chunk]
        dom = (np.all(f[None, :, :] <= b[:, None, :], axis=-1)
               & np.any(f[None, :, :] < b[:, None, :], axis=-1))  # [chunk, N]: j dominates i
        keep[s:s + chunk] = ~dom.any(axis=1)
    return keep


def spread(values: Float[np.ndarray, "n"], k: int) -> Int[np.ndarray, "k"]:
    """Indices of `min(k, n)` distinct points whose `values` lie nearest to `k` evenly spaced
    levels from the smallest value to the largest, in increasing order of value: candidates picked
    along a front by one objective (e.g. latency; the segmentation study's A-E).

    Example:
        >>> spread(np.array([5.0, 1.0, 2.0, 9.0, 3.0]), 3).tolist()  # levels 1, 5, 9
        [1, 0, 3]
    """
    v = np.asarray(values, np.float64)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    order = list(np.argsort(v, kind="stable"))
    if len(order) <= k:
        return np.asarray(order, np.int64)
    picked: list[int] = []
    for level in np.linspace(v.min(), v.max(), k):
        left = [i for i in order if i not in picked]
        picked.append(min(left, key=lambda i: (abs(v[i] - level), v[i])))
    return np.asarray(sorted(picked, key=lambda i: v[i]), np.int64)


def nondominated_sort(points: Float[np.ndarray, "n m"], directions: Sequence[str] | None = None) -> Int[np.ndarray, "n"]:
    """Front index of every point (0 = non-dominated), Deb et al. 2002's fast non-dominated sort."""
    d = dominance_matrix(points, directions)
    n = len(d)
    count = d.sum(axis=0)  # how many points dominate j
    rank = np.full(n, -1, np.int64)
    front = np.flatnonzero(count == 0)
    r = 0
    while front.size:
        rank[front] = r
        count = count - d[front].sum(axis=0)
        count[rank >= 0] = -1  # already ranked
        front = np.flatnonzero(count == 0)
        r += 1
    return rank


def crowding_distance(points: Float[np.ndarray, "n m"]) -> Float[np.ndarray, "n"]:
    """NSGA-II crowding distance of the points of ONE front (direction does not matter).

    Per objective the points are sorted; the two extremes get infinity and every other point the gap
    between its neighbours divided by the objective's range; the distances add over objectives.
    """
    f = np.asarray(points, np.float64)
    n, m = f.shape
    dist = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for k in range(m):
        order = np.argsort(f[:, k], kind="stable")
        v = f[order, k]
        span = v[-1] - v[0]
        dist[order[0]] = dist[order[-1]] = np.inf
        if span > 0:
            dist[order[1:-1]] += (v[2:] - v[:-2]) / span
    return dist


def hypervolume_2d(points: Float[np.ndarray, "n 2"], ref: Sequence[float],
                   directions: Sequence[str] | None = None) -> float:
    """Area dominated by the points and bounded by the reference point `ref` (2 objectives).

    `ref` is in the same units and directions as the points (e.g. `(worst accuracy, worst latency)`);
    points that do not strictly improve on it in both objectives add nothing.
    """
    f = to_min(points, directions)
    r = to_min(np.asarray(ref, np.float64)[None, :], directions)[0]
    if f.shape[1] != 2:
        raise ValueError(f"hypervolume_2d needs 2 objectives, got {f.shape[1]}")
    f = f[np.all(f < r, axis=1)]
    if not len(f):
        return 0.0
    f = f[np.lexsort((f[:, 1], f[:, 0]))]  # by first objective, then second
    hv, best1 = 0.0, r[1]
    for x0, x1 in f:  # sweep: each point adds the strip between it and the best second value so far
        if x1 < best1:
            hv += (r[0] - x0) * (best1 - x1)
            best1 = x1
    return float(hv)


def normalize(points: Float[np.ndarray, "n m"], lo: Sequence[float], hi: Sequence[float],
              directions: Sequence[str] | None = None) -> Float[np.ndarray, "n m"]:
    """Maps each objective to a minimisation in `[0, 1]`: 0 at its best bound, 1 at its worst.

    `lo` and `hi` are the smallest and largest values of each objective (in its own units).
    """
    p = np.asarray(points, np.float64)
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    if np.any(hi <= lo):
        raise ValueError(f"normalisation bounds need hi > lo per objective, got lo={lo}, hi={hi}")
    z = (p - lo) / (hi - lo)
    return np.where(_signs(directions, p.shape[1]) < 0, 1.0 - z, z)


def hypervolume_ratio(found: Float[np.ndarray, "n 2"], reference_set: Float[np.ndarray, "k 2"],
                      directions: Sequence[str], lo: Sequence[float] | None = None,
                      hi: Sequence[float] | None = None) -> float:
    """`HV(found) / HV(reference_set)`, both normalised by the reference set's bounds (module docstring).

    `reference_set` is e.g. every cell of a tabular benchmark (its bounds fix the normalisation, its
    non-dominated points are the true front). Found points outside the bounds are clipped to them.
    `lo` / `hi` override the bounds (e.g. a worst corner at the table's median accuracy and median
    latency, which only credits the region better than a typical cell: a stricter ratio).

    Example:
        >>> table = np.array([[90.0, 10.0], [80.0, 2.0], [10.0, 1.0], [50.0, 20.0]])
        >>> hypervolume_ratio(table[:1], table, ("max", "min")) < 1.0  # (80, 2) missing from the front
        True
    """
    ref_pts = np.asarray(reference_set, np.float64)
    lo = ref_pts.min(axis=0) if lo is None else np.asarray(lo, np.float64)
    hi = ref_pts.max(axis=0) if hi is None else np.asarray(hi, np.float64)
    found_pts = np.clip(np.asarray(found, np.float64), lo, hi)
    true_front = np.clip(ref_pts[non_dominated(ref_pts, directions)], lo, hi)
    ones = (1.0, 1.0)
    hv_true = hypervolume_2d(normalize(true_front, lo, hi, directions), ones)
    if hv_true <= 0:
        raise ValueError("the reference set's front has zero hypervolume inside the bounds")
    return hypervolume_2d(normalize(found_pts, lo, hi, directions), ones) / hv_true
