"""Fitting the latency surrogate to a space's architectures: features, table semantics, splits.

Pure functions (no files, no flags): `features_of` (network features of many architectures, one
compiled function), `fit_space` (whole-network fit, choosing whether the device runs dead code by
leave-one-out error), `fit_layers` (the per-layer fit, mapped to whole networks by `calibrate_to_networks`),
`split`, `loo_ratios` (held-out error of a fit) and `ranking_metrics`. The command line that reads CSVs and prints metrics is
`python -m experiments.fit_surrogate`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from hwmodel.layers import DEAD_CODE as SEMANTICS, executed
from hwmodel.surrogate import FeatureConfig, Surrogate, fit, network_features
from hwmodel.tables import InputError  # noqa: F401  (re-exported: the fit's bad-input error)


def features_of(space, archs: np.ndarray, config: FeatureConfig = FeatureConfig(),
                chunk: int = 1024, dead_code: str = "prune") -> np.ndarray:
    """Network features of many architectures: one compiled, vmapped function, chunked.

    The tables keep the rows a device with the `dead_code` semantics runs (`hwmodel.layers.executed`:
    `prune`, `unused` or `keep`); this only changes spaces with disconnectable graphs (NAS-Bench-201).
    """
    fn = jax.jit(jax.vmap(lambda a: network_features(executed(space.layers(a), dead_code), config)))
    out = []
    for i in range(0, len(archs), chunk):
        block = archs[i:i + chunk]
        pad = chunk - len(block) if len(archs) > chunk else 0  # keep one shape: one compile
        x = np.asarray(fn(jnp.asarray(np.concatenate([block, np.repeat(block[-1:], pad, 0)]))))
        out.append(x[: len(block)])
    return np.concatenate(out).astype(np.float64)


def calibrate_to_networks(s: Surrogate, net_features: np.ndarray, latency_ms: np.ndarray) -> Surrogate:
    """Rescales a per-layer fit to whole networks: `LAT = a * sum_rows(pred_row) + b`.

    Layers run alone cost more than inside a network (every run pays the runtime's dispatch, and a
    whole graph fuses consecutive ops: on ONNX Runtime the sum of the rows is ~1.4x the network),
    so the per-layer model keeps the *relative* costs of layers and two numbers, fitted by
    relative least squares on the training networks, map their sum to a network's latency.
    """
    z = net_features @ np.asarray(s.coef, np.float64)
    y = np.asarray(latency_ms, np.float64)
    a, b = np.linalg.lstsq(np.stack([z, np.ones_like(z)], 1) / y[:, None], np.ones_like(y), rcond=None)[0]
    if not a > 0:
        raise InputError("the per-layer fit does not order the training networks (its calibration "
                         "scale is not positive); measure more architectures")
    return s.replace(coef=s.coef * a, intercept=jnp.asarray(b, jnp.float32))


DEAD_CODE = ("auto", *SEMANTICS)


def candidate_configs(config: FeatureConfig) -> list[FeatureConfig]:
    """The feature sets model selection compares: `config`, `config` without its analytic
    features (if it has any), and the per-operation-count model (`surrogate.COUNTS`)."""
    out = [config]
    if config.accelerators:
        out.append(dataclasses.replace(config, accelerators=()))
    if config.quantities != ("count",):
        out.append(dataclasses.replace(config, accelerators=(), quantities=("count",)))
    return out


def fit_layers(layer_features_by_config: dict, latency_ms: np.ndarray, net_features_by_config: dict,
               net_latency_ms: np.ndarray) -> Surrogate:
    """The article's per-layer estimator: a fit on measured rows, summed and mapped to networks.

    Candidates: each feature set of `{config: [R, F] row features}` (no intercept) fitted by
    relative least squares (every row's error counts in per cent) and by plain least squares
    (errors in milliseconds, so the rows that dominate a network's sum dominate the fit), each
    calibrated to the training networks (`calibrate_to_networks`, with `{config: [N, F] network
    features}` of the networks whose rows these are). The candidate whose calibrated sums have the
    lowest RMS relative error on those networks is returned: it is the sum that is used, and the
    row-level leave-one-out errors of the two weightings are not comparable. On ONNX Runtime's
    profiled rows (mobile-curated, 50 networks) plain least squares wins, test MAPE 5.9 -> 3.6 %:
    with relative weights the many microsecond rows (1x1 projections, zero-cost fused Adds) pull
    the fit away from the few convolutions that make up most of a network.
    """
    y = np.asarray(net_latency_ms, np.float64)
    best, best_err = None, np.inf
    for c, x in layer_features_by_config.items():
        for relative in (True, False):
            s = calibrate_to_networks(fit(x, latency_ms, config=c, per_layer=True, dead_code="prune",
                                          relative=relative), net_features_by_config[c], y)
            pred = net_features_by_config[c] @ np.asarray(s.coef, np.float64) + float(s.intercept)
            err = float(np.sqrt(np.mean(((pred - y) / y) ** 2)))
            if err < best_err:
                best, best_err = s, err
    return best


def fit_space(space, archs: np.ndarray, latency_ms: np.ndarray, *, config: FeatureConfig = FeatureConfig(),
              dead_code: str = "auto", priors: tuple[Surrogate, ...] = (), select: bool = True) -> Surrogate:
    """Fits a surrogate on whole-network latencies of `archs` of `space`, choosing the model by
    cross-validation on these rows.

    Candidates (`candidate_configs`, with `select` and no `priors`; else `config` alone): the
    features of `config`, the same without its analytic-model features, and the plain
    per-operation-count linear model (`surrogate.COUNTS`), each with the ridge strength chosen by exact leave-one-out error; and the table semantics
    `dead_code` (`hwmodel.layers.DEAD_CODE`): `prune` (ops fed by `none` and ops whose output is
    unused removed), `unused` (only the latter, a graph compiler's dead-code elimination), `keep`
    (every op runs, as a layer-by-layer simulator does) or `auto` (all three). The candidate with
    the lowest leave-one-out relative error is returned, so the fit is never worse than the count
    baseline by more than the noise of that estimate (on NAS-Bench-201's Pixel 3 column `auto`
    picks `unused`, on its Eyeriss column `keep`; see `Surrogate`). The chosen features are
    `result.config`.
    """
    if dead_code not in DEAD_CODE:
        raise InputError(f"dead_code must be one of {', '.join(DEAD_CODE)}, got {dead_code!r}")
    configs = candidate_configs(config) if select and not priors else [config]
    fits = [fit(features_of(space, archs, c, dead_code=d), latency_ms, config=c, priors=priors, dead_code=d)
            for c in configs for d in (SEMANTICS if dead_code == "auto" else (dead_code,))]
    return min(fits, key=lambda s: s.loo_rmse)


def loo_ratios(space, archs: np.ndarray, latency_ms: np.ndarray, s: Surrogate) -> np.ndarray:
    """`measured / predicted` of each training architecture by the surrogate refitted without it
    (leave-one-out, same features and table semantics as `s`): the held-out error of the fit, from
    which a latency limit on the model's prediction that the device meets with a chosen probability
    follows (`supernet.derive.model_limit`, a split-conformal bound). Needs at least 3 rows."""
    y = np.asarray(latency_ms, np.float64)
    if len(y) < 3:
        raise InputError(f"leave-one-out errors need at least 3 measured architectures, got {len(y)}")
    x = features_of(space, np.asarray(archs), s.config, dead_code=s.dead_code)
    keep = np.ones(len(y), bool)
    ratios = np.empty(len(y))
    for i in range(len(y)):
        keep[i] = False
        fi = fit(x[keep], y[keep], config=s.config, dead_code=s.dead_code)
        ratios[i] = y[i] / max(float(x[i] @ np.asarray(fi.coef, np.float64) + float(fi.intercept)), 1e-9)
        keep[i] = True
    return ratios


def ranking_metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Spearman, Kendall, MAPE (%) and share within 10% (%) of predictions."""
    rel = np.abs(pred - true) / np.abs(true)
    return {"spearman": float(stats.spearmanr(pred, true)[0]),
            "kendall": float(stats.kendalltau(pred, true)[0]),
            "mape": float(100 * rel.mean()), "within_10pct": float(100 * (rel <= 0.10).mean())}


#: Fewest rows a split leaves for testing: a rank correlation over fewer is noise (over 1, NaN).
MIN_TEST = 5


def split(n: int, train_size: int, seed: int, groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random train/test split of `n` rows, at least `MIN_TEST` of them for testing.

    With `groups` (one key per row, e.g. the architecture string) rows of one key land on the
    same side, so a repeated measurement of a training architecture never scores as unseen;
    `train_size` then counts keys.
    """
    if groups is not None:
        _, first, inverse = np.unique(np.asarray(groups), return_index=True, return_inverse=True)
        rank = np.empty(len(first), np.int64)
        rank[np.argsort(first)] = np.arange(len(first))  # keys numbered in order of first appearance
        row_key = rank[inverse.ravel()]
        if len(first) == n:  # no repeats: the same split as without groups
            groups = None
    m = n if groups is None else len(first)
    if not 2 <= train_size <= m - MIN_TEST:
        what = "rows" if groups is None else "distinct architectures"
        raise InputError(f"--train-size must be between 2 and {m - MIN_TEST} (the file has {m} {what}; "
                         f"at least {MIN_TEST} are kept for testing), got {train_size}")
    perm = np.random.default_rng(seed).permutation(m)
    if groups is None:
        return perm[:train_size], perm[train_size:]
    train = np.isin(row_key, perm[:train_size])
    return np.nonzero(train)[0], np.nonzero(~train)[0]
