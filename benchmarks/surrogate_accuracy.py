"""Latency-surrogate accuracy on measured latency tables, against two baselines. Prints JSON.

    python benchmarks/surrogate_accuracy.py --data-dir ../shared/data [--sizes 10 20 50 100] [--seeds 5]

For every device file in `<data-dir>/latency/fbnet_cifar100/` and the `pixel3_latency_ms` and
`eyeriss_latency_ms` columns of `<data-dir>/nas-bench-201/nb201_cifar10.csv`, for each training
size N and seed, all methods are fitted on the same N random rows and scored on all other rows
(Spearman, Kendall, MAPE %, share within 10 %):

- `surrogate`: the per-layer linear surrogate (`hwmodel.surrogate.fit`), target device only;
- `surrogate+prior`: the same, with surrogates fitted on the *other* devices of the same table as a
  transfer prior (leave-one-device-out; HELP's setting, Lee et al. NeurIPS 2021);
- `flops`: latency linear in FLOPs;
- `linear5`: a plain linear model on FLOPs, depthwise FLOPs, params, layer count, activation size.

Targets (issue 2): FBNet devices, N=50: mean Spearman >= 0.97, none below 0.92, mean MAPE <= 3 %;
N=10: mean Spearman >= 0.91 (HELP's 10-sample figure). Runs in about 2 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np


from hwmodel.layers import prune_dead  # noqa: E402
from experiments.fit_surrogate import load_latency_csv  # noqa: E402
from hwmodel.fit import features_of, ranking_metrics, split  # noqa: E402
from hwmodel.surrogate import baseline_features, fit, fit_baseline  # noqa: E402
from supernet.spaces import make_space  # noqa: E402

METHODS = ("surrogate", "surrogate+prior", "flops", "linear5")


def load_tables(data_dir: str) -> list[dict]:
    """[{name, space, archs, devices: {device: latency}}] for the FBNet and NAS-Bench-201 tables."""
    out = []
    fb_files = sorted(glob.glob(os.path.join(data_dir, "latency", "fbnet_cifar100", "*.csv")))
    nb_file = os.path.join(data_dir, "nas-bench-201", "nb201_cifar10.csv")
    if not fb_files or not os.path.isfile(nb_file):
        sys.exit(f"error: latency data not found under {data_dir!r}; pass --data-dir pointing at the "
                 "shared data folder (with latency/fbnet_cifar100/*.csv and nas-bench-201/nb201_cifar10.csv)")
    space = make_space("fbnet-cifar100")
    archs, devices = None, {}
    for f in fb_files:
        a, y = load_latency_csv(f, space)
        if archs is not None and not np.array_equal(a, archs):
            sys.exit(f"error: {f} lists other architectures than {fb_files[0]}")
        archs, devices[os.path.basename(f)[:-4]] = a, y
    out.append(dict(name="fbnet_cifar100", space=space, archs=archs, devices=devices))
    space = make_space("nb201")
    devices = {}
    for col in ("pixel3_latency_ms", "eyeriss_latency_ms"):
        archs, devices[col] = load_latency_csv(nb_file, space, column=col)
    # a deployed graph drops dead ops (hwmodel.layers.prune_dead): NB201 cells can disconnect
    out.append(dict(name="nb201_cifar10", space=space, archs=archs, devices=devices))
    return out


def evaluate(table: dict, sizes: list[int], seeds: int) -> dict:
    space, archs = table["space"], table["archs"]
    x = features_of(space, archs)
    base = jax.jit(jax.vmap(lambda a: baseline_features(prune_dead(space.layers(a)))))
    stats = {k: np.asarray(v, np.float64) for k, v in base(jnp.asarray(archs)).items()}
    b_flops = stats["flops"][:, None]
    b_lin = np.stack([stats[k] for k in ("flops", "dw_flops", "params", "layers", "activations")], 1)
    full = {d: fit(x, y) for d, y in table["devices"].items()}  # the priors, per source device
    results = {}
    for device, y in table["devices"].items():
        priors = [s for d, s in full.items() if d != device]
        for n in sizes:
            rows = {m: [] for m in METHODS}
            for seed in range(seeds):
                tr, te = split(len(y), n, seed)
                t0 = time.perf_counter()
                s = fit(x[tr], y[tr])
                t_fit = time.perf_counter() - t0
                preds = {
                    "surrogate": x[te] @ np.asarray(s.coef, np.float64) + float(s.intercept),
                    "flops": fit_baseline(b_flops[tr], y[tr])(b_flops[te]),
                    "linear5": fit_baseline(b_lin[tr], y[tr])(b_lin[te]),
                }
                if priors:
                    sp = fit(x[tr], y[tr], priors=priors)
                    preds["surrogate+prior"] = x[te] @ np.asarray(sp.coef, np.float64) + float(sp.intercept)
                for m, p in preds.items():
                    rows[m].append(ranking_metrics(p, y[te]) | ({"fit_seconds": t_fit} if m == "surrogate" else {}))
            results[f"{device}/N={n}"] = {
                m: {k: float(np.mean([r[k] for r in v])) for k in v[0]} | {"spearman_std": float(np.std([r["spearman"] for r in v]))}
                for m, v in rows.items() if v}
    return results


def summary(results: dict, devices: list[str], sizes: list[int]) -> dict:
    out = {}
    for n in sizes:
        for m in METHODS:
            vals = [results[f"{d}/N={n}"].get(m) for d in devices]
            if all(v is not None for v in vals):
                out[f"N={n}/{m}"] = {"mean_spearman": float(np.mean([v["spearman"] for v in vals])),
                                     "min_spearman": float(np.min([v["spearman"] for v in vals])),
                                     "mean_mape": float(np.mean([v["mape"] for v in vals])),
                                     "mean_within_10pct": float(np.mean([v["within_10pct"] for v in vals]))}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.environ.get("HWNAS_DATA_DIR", "../shared/data"))
    p.add_argument("--sizes", type=int, nargs="+", default=[10, 20, 50, 100])
    p.add_argument("--seeds", type=int, default=5)
    args = p.parse_args()
    t0 = time.perf_counter()
    report = {"device": f"{jax.devices()[0].platform}", "sizes": args.sizes, "seeds": args.seeds}
    for table in load_tables(args.data_dir):
        res = evaluate(table, args.sizes, args.seeds)
        report[table["name"]] = {"per_device": res,
                                 "summary": summary(res, list(table["devices"]), args.sizes)}
    report["seconds"] = time.perf_counter() - t0
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
