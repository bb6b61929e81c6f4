"""A learned, differentiable latency surrogate: per-layer regression summed over the network.

The performance estimator of the reference article: "a machine learning regression model trained on
measurements of different operators or subgraphs ... the estimator would decompose the queried
architecture into subgraphs and use the regression model to estimate the performance of each. Then
it would accumulate these estimates." Here a layer's latency is a linear function of descriptive
features of its layer-table row (per op group: a count for the fixed dispatch cost, MACs, activation
traffic and weight traffic; optionally the analytic accelerator model's per-layer latency under named
presets), and a network's latency is the presence-weighted sum over rows plus a constant:

    LAT(net) = b + sum_rows weight_r * (phi(row_r) . theta)

Because the model is linear in `theta`, it can be fitted from per-layer measurements (regress rows)
or from whole-network latencies only (regress the summed features `sum_r weight_r phi(row_r)`),
which is what most published datasets give (HW-NAS-Bench, HELP). The fit is a weighted ridge
regression in closed form; weights `1/y^2` make it minimise relative error (what MAPE measures), and
the ridge strength is chosen by exact leave-one-out error (the hat-matrix identity), so a 10-sample
fit needs no held-out split.

Transfer (`priors`): surrogates already fitted on other devices can enter as extra, lightly penalised
basis functions (their predictions). This is the idea behind HELP (Lee et al., NeurIPS 2021), which
meta-learns across devices to predict a new device from 10 samples; since every prior is itself
linear in the same features, the result collapses back into one linear model.

Prediction is pure JAX: jit-, vmap- and grad-safe; with `expected_layers(probs)` of a space it gives
the expected latency whose gradient reaches the architecture logits.

Example:
    >>> from supernet.spaces import make_space
    >>> space = make_space("fbnet-cifar100")
    >>> archs = space.sample(jax.random.key(0), 40)
    >>> tables = jax.vmap(space.layers)(archs)
    >>> y = np.asarray(total_flops(tables)) / 1e6 * 0.01 + 1.0  # a toy device: 10 us per MFLOP
    >>> s = fit(network_features(tables), y)
    >>> bool(abs(float(predict(s, space.layers(archs[0]))) - y[0]) < 0.05)
    True
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jaxtyping import Array, Float

from hwmodel.layers import (DEAD_CODE, LayerTable, OpKind, executed, in_elems, is_op, macs, out_elems,
                            total_flops, weight_elems)

#: Op groups of the features: name -> predicate on a table.
_GROUPS = {
    "conv1x1": lambda t: is_op(t, OpKind.CONV) & (t.kernel < 2) & (t.groups < 1.5),
    "gconv1x1": lambda t: is_op(t, OpKind.CONV) & (t.kernel < 2) & (t.groups >= 1.5),
    "convkxk": lambda t: is_op(t, OpKind.CONV) & (t.kernel >= 2),
    "dwconv_k3": lambda t: is_op(t, OpKind.DWCONV) & (t.kernel < 4),
    "dwconv_k5+": lambda t: is_op(t, OpKind.DWCONV) & (t.kernel >= 4),
    "linear": lambda t: is_op(t, OpKind.LINEAR),
    "pool": lambda t: is_op(t, OpKind.AVGPOOL, OpKind.GAP),
    "add": lambda t: is_op(t, OpKind.ADD),
    "shuffle": lambda t: is_op(t, OpKind.SHUFFLE),
    "resample": lambda t: is_op(t, OpKind.UPSAMPLE, OpKind.CONCAT),
}
#: Groups added after surrogates were first saved: a saved file without them predicts 0 for them.
_ADDED_GROUPS = ("resample",)
_QUANTITIES = ("count", "mmacs", "mact", "mweights")  # per layer; M = 1e6 (keeps features O(1))


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """Which features a surrogate uses.

    Attributes:
      accelerators: names of `hwmodel.ACCELERATORS` presets whose per-layer analytic latency (ms,
        smooth model) is added as a feature; empty for op-group statistics only.
      temperature: temperature of the smooth analytic model inside the features (small: close to
        the exact model, still differentiable).
      quantities: which per-op-group quantities are features (a subset of `count`, `mmacs`,
        `mact`, `mweights`, in that order). `("count",)` is the plain per-operation-count linear
        model, the baseline a learned surrogate must not lose to (`COUNTS`).
    """

    accelerators: tuple[str, ...] = ()
    temperature: float = 0.02
    quantities: tuple[str, ...] = _QUANTITIES

    def __post_init__(self):
        if not self.quantities or any(q not in _QUANTITIES for q in self.quantities) or \
                list(self.quantities) != [q for q in _QUANTITIES if q in self.quantities]:
            raise ValueError(f"quantities must be a non-empty, ordered subset of {_QUANTITIES}, "
                             f"got {self.quantities}")

    @property
    def names(self) -> tuple[str, ...]:
        base = tuple(f"{g}.{q}" for g in _GROUPS for q in self.quantities)
        return base + tuple(f"analytic.{a}" for a in self.accelerators)


#: The per-operation-count linear model: how often each op group occurs, plus an intercept.
COUNTS = FeatureConfig(quantities=("count",))


def layer_features(table: LayerTable, config: FeatureConfig = FeatureConfig()) -> Float[Array, "*b L F"]:
    """Per-row features `phi(row)` (unweighted; rows that are not in a group are all zeros)."""
    q = {"mmacs": macs(table) / 1e6, "mact": (in_elems(table) + out_elems(table)) / 1e6,
         "mweights": weight_elems(table) / 1e6}
    feats = []
    for pred in _GROUPS.values():
        g = pred(table).astype(jnp.float32)
        feats += [g if name == "count" else g * q[name] for name in config.quantities]
    if config.accelerators:
        from hwmodel import accelerators, analytic  # local: analytic features are optional
        for name in config.accelerators:
            spec = accelerators.ACCELERATORS[name]
            feats.append(1e3 * analytic.layer_latency_smooth(spec, table, config.temperature))
    return jnp.stack(feats, axis=-1)


def network_features(table: LayerTable, config: FeatureConfig = FeatureConfig()) -> Float[Array, "*b F"]:
    """Presence-weighted sum of the per-row features: the regressors of a whole-network fit."""
    return jnp.sum(layer_features(table, config) * table.weight[..., None], axis=-2)


@struct.dataclass
class Surrogate:
    """A fitted surrogate: `LAT_ms = intercept + sum_r weight_r * phi(row_r) . coef` (a pytree).

    `dead_code` says which rows of a network the device it was fitted on runs
    (`hwmodel.layers.DEAD_CODE`): a phone's deployment compiler removes the ops whose output is
    unused (`unused`: NAS-Bench-201's Pixel 3 column, ~0.004 ms for cells whose output is cut off,
    while a conv behind a `none` edge still costs; Spearman 0.967 at 50 cells, against 0.90 when
    those convs are removed too, `prune`), a layer-by-layer simulator such as HW-NAS-Bench's
    Eyeriss column runs everything (`keep`: a least-squares fit on raw op counts reaches Spearman
    0.996, on the pruned ones 0.84). `executed(table)` applies it;
    `loo_rmse` is the leave-one-out RMS error of the fit (relative when fitted with `relative`).
    """

    coef: Float[Array, "F"]
    intercept: Float[Array, ""]
    config: FeatureConfig = struct.field(pytree_node=False, default=FeatureConfig())
    dead_code: str = struct.field(pytree_node=False, default="prune")
    loo_rmse: float = struct.field(pytree_node=False, default=0.0)

    def executed(self, table: LayerTable) -> LayerTable:
        """The rows the device runs: dead code removed when it removes it. On a distribution's
        table (every row present with some probability) pruning changes nothing; on a discrete or
        straight-through one-hot table it is what the fit saw, and gradients pass to live rows."""
        return executed(table, self.dead_code)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (`from_dict` inverts it)."""
        return {"coef": np.asarray(self.coef, np.float64).tolist(), "intercept": float(self.intercept),
                "feature_names": list(self.config.names), "quantities": list(self.config.quantities),
                "accelerators": list(self.config.accelerators), "temperature": self.config.temperature,
                "dead_code": self.dead_code, "loo_rmse": self.loo_rmse}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Surrogate":
        config = FeatureConfig(tuple(d.get("accelerators", ())), float(d.get("temperature", 0.02)),
                               tuple(d.get("quantities", _QUANTITIES)))
        saved = dict(zip(d["feature_names"], d["coef"]))
        missing = [n for n in config.names if n not in saved]
        if set(saved) - set(config.names) or any(n.split(".")[0] not in _ADDED_GROUPS for n in missing):
            raise ValueError("saved surrogate's features do not match this version's features: "
                             f"{d['feature_names'][:3]}... vs {list(config.names)[:3]}...; refit it")
        coef = [saved.get(n, 0.0) for n in config.names]  # ops it never saw (`_ADDED_GROUPS`) cost 0
        return cls(jnp.asarray(coef, jnp.float32), jnp.asarray(d["intercept"], jnp.float32), config,
                   # files saved before `unused` existed hold a bool `prunes_dead`
                   d.get("dead_code", "prune" if d.get("prunes_dead", True) else "keep"),
                   float(d.get("loo_rmse", 0.0)))


def predict(s: Surrogate, table: LayerTable) -> Float[Array, "*b"]:
    """Network latency in milliseconds (expected latency for a distribution's table).

    `table` is taken as given; pass `s.executed(table)` for a discrete architecture on a device
    that removes dead code (as the fit did, `hwmodel.fit.features_of`)."""
    return network_features(table, s.config) @ s.coef + s.intercept


def predict_layers(s: Surrogate, table: LayerTable) -> Float[Array, "*b L"]:
    """Per-row latency in milliseconds (unweighted; the network adds `intercept`)."""
    return layer_features(table, s.config) @ s.coef


# ---------------------------------------------------------------------------------------------
# Fitting (host-side, closed form).
# ---------------------------------------------------------------------------------------------

DEFAULT_LAMBDAS = tuple(10.0 ** np.arange(-6, 4))


def _ridge_loo(x: np.ndarray, y: np.ndarray, sample_w: np.ndarray, penalty: np.ndarray,
               lambdas: Sequence[float], intercept: bool) -> tuple[np.ndarray, float, float]:
    """Weighted ridge on standardised columns, lambda by exact leave-one-out error.

    Returns (coef in the raw feature space, intercept, chosen lambda, its LOO mean squared error in
    the weighted space). LOO residuals come from the
    hat matrix, r_i / (1 - H_ii), so no refitting is needed (Hastie et al., ESL eq. 7.52).
    """
    mu = x.mean(0) if intercept else np.zeros(x.shape[1])
    sd = x.std(0) if intercept else np.sqrt((x ** 2).mean(0))
    keep = sd > 1e-12
    z = (x[:, keep] - mu[keep]) / sd[keep]
    if intercept:
        z = np.hstack([z, np.ones((len(y), 1))])
    pen = np.r_[penalty[keep], [0.0] * intercept]
    sw = np.sqrt(sample_w)[:, None]
    zw, yw = z * sw, y * sw[:, 0]
    best = None
    for lam in lambdas:
        a_inv = np.linalg.pinv(zw.T @ zw + np.diag(lam * pen))
        beta = a_inv @ zw.T @ yw
        hat = np.einsum("ij,jk,ik->i", zw, a_inv, zw)
        loo = np.mean(((yw - zw @ beta) / np.maximum(1.0 - hat, 1e-6)) ** 2)
        if best is None or loo < best[0] - 1e-12 * abs(best[0]):
            best = (loo, lam, beta)
    loo, lam, beta = best
    coef = np.zeros(x.shape[1])
    coef[keep] = beta[: keep.sum()] / sd[keep]
    b = float(beta[-1] - coef @ mu) if intercept else 0.0
    return coef, b, float(lam), float(loo)


def fit(features: np.ndarray, latency_ms: np.ndarray, *, config: FeatureConfig = FeatureConfig(),
        priors: Sequence[Surrogate] = (), relative: bool = True,
        lambdas: Sequence[float] = DEFAULT_LAMBDAS, prior_penalty: float = 1e-3,
        shared_penalty: float = 1e-2, per_layer: bool = False, dead_code: str = "prune") -> Surrogate:
    """Fits a surrogate on whole-network features (`network_features`) or per-layer rows.

    Args:
      features: `[N, F]` network features, or per-layer features `[R, F]` with `per_layer=True`
        (present rows only; then there is no network intercept).
      latency_ms: `[N]` (or `[R]`) measured latencies in milliseconds.
      config: the FeatureConfig that produced `features`.
      priors: surrogates fitted on other devices (same config); their predictions become extra
        regressors with `prior_penalty` times the ridge penalty (transfer, see module docstring).
      relative: weight samples by 1/y^2, i.e. minimise relative squared error.
      lambdas: ridge strengths to choose from by leave-one-out error.
      shared_penalty: relative penalty of the shared per-quantity coefficients. Each quantity
        (count, MACs, activations, weights) gets one coefficient shared by all op groups, lightly
        penalised, plus a per-group deviation with the full penalty: hierarchical shrinkage, so a
        10-sample fit behaves like a 4-feature model and larger fits refine per op group.
      dead_code: the table semantics `features` were computed with (`hwmodel.layers.DEAD_CODE`,
        recorded on the result, see `Surrogate`).

    Returns:
      The fitted Surrogate.
    """
    x = np.asarray(features, np.float64)
    y = np.asarray(latency_ms, np.float64)
    if x.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[1] != len(config.names):
        raise ValueError(f"features must be [N, {len(config.names)}] with one latency per row; got "
                         f"{x.shape} and {y.shape}")
    if len(y) < 2:
        raise ValueError(f"need at least 2 measurements to fit a surrogate, got {len(y)}")
    if not np.all(np.isfinite(y)) or np.any(y < 0) or np.any(y == 0) and not per_layer or not np.any(y > 0):
        raise ValueError("latencies must be finite and positive (milliseconds; per layer also 0, a "
                         "row the device fused into another)")
    if dead_code not in DEAD_CODE:
        raise ValueError(f"dead_code must be one of {', '.join(DEAD_CODE)}, got {dead_code!r}")
    if any(p.config != config for p in priors):
        raise ValueError("prior surrogates must use the same FeatureConfig as the fit")
    nq = len(config.quantities)
    n_group = len(_GROUPS) * nq
    shared = x[:, :n_group].reshape(len(x), len(_GROUPS), nq).sum(1)
    basis = [x, shared]
    if priors:
        # each prior's prediction, scaled to O(1), as one extra regressor
        cols = np.stack([x @ np.asarray(p.coef, np.float64) + float(p.intercept) * (not per_layer)
                         for p in priors], 1)
        scale = np.maximum(np.abs(cols).mean(0), 1e-12)
        basis.append(cols / scale)
    xa = np.hstack(basis)
    penalty = np.r_[np.ones(x.shape[1]), np.full(shared.shape[1], shared_penalty),
                    np.full(xa.shape[1] - x.shape[1] - shared.shape[1], prior_penalty)]
    # a fused row (0 ms, per layer) weighs as much as the cheapest measured row
    sample_w = 1.0 / np.maximum(y, y[y > 0].min()) ** 2 if relative else np.ones_like(y)
    coef, b, _, loo = _ridge_loo(xa, y, sample_w, penalty, lambdas, intercept=not per_layer)
    theta = coef[: x.shape[1]].copy()
    k = x.shape[1]
    theta[:n_group] += np.tile(coef[k:k + shared.shape[1]], len(_GROUPS))  # shared -> per group
    k += shared.shape[1]
    for j, p in enumerate(priors):  # collapse the priors back into the feature space
        a = coef[k + j] / scale[j]
        theta += a * np.asarray(p.coef, np.float64)
        b += a * float(p.intercept) * (not per_layer)
    return Surrogate(jnp.asarray(theta, jnp.float32), jnp.asarray(b, jnp.float32), config,
                     dead_code, float(np.sqrt(loo)))


def fit_baseline(table_features: np.ndarray, latency_ms: np.ndarray, relative: bool = True):
    """Ordinary weighted least squares with intercept: the baselines' fitting procedure.

    Returns a function mapping `[M, K]` features to predictions.
    """
    x = np.asarray(table_features, np.float64)
    y = np.asarray(latency_ms, np.float64)
    mu, sd = x.mean(0), x.std(0) + 1e-12
    z = np.hstack([(x - mu) / sd, np.ones((len(y), 1))])
    sw = (1.0 / y if relative else np.ones_like(y))[:, None]
    beta = np.linalg.lstsq(z * sw, y * sw[:, 0], rcond=None)[0]
    return lambda q: np.hstack([(np.asarray(q, np.float64) - mu) / sd, np.ones((len(q), 1))]) @ beta


def baseline_features(table: LayerTable) -> dict[str, Float[Array, "*b"]]:
    """Network-level statistics of the baselines: FLOPs, depthwise FLOPs, params, layer count and
    activation size (elements written)."""
    w = table.weight
    dw = is_op(table, OpKind.DWCONV)
    compute = is_op(table, OpKind.CONV, OpKind.DWCONV, OpKind.LINEAR, OpKind.AVGPOOL, OpKind.GAP,
                    OpKind.ADD, OpKind.SHUFFLE, OpKind.UPSAMPLE, OpKind.CONCAT)
    return {
        "flops": total_flops(table),
        "dw_flops": 2.0 * jnp.sum(jnp.where(dw, macs(table), 0.0) * w, -1),
        "params": jnp.sum(weight_elems(table) * w, -1),
        "layers": jnp.sum(compute * w, -1),
        "activations": jnp.sum(out_elems(table) * w, -1),
    }
