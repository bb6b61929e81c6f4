"""Command line: fit the latency surrogate on N rows of a CSV and score it on the others.

    python -m experiments.fit_surrogate --space fbnet-cifar100 \
        --data ../shared/data/latency/fbnet_cifar100/pixel3.csv --train-size 50 --seed 0 --json
    python -m experiments.fit_surrogate --space nb201 --data ../shared/data/nas-bench-201/nb201_cifar10.csv \
        --column pixel3_latency_ms --train-size 50 --seed 0 --json

Prints one JSON object: `spearman`, `kendall`, `mape` (%), `within_10pct` (%), `n_train`,
`n_test`, `fit` (`whole_network`, or `per_layer` with `--per-layer F_layers.csv`: the article's
estimator, fitted on the measured layers of the training architectures and tested on the other
architectures' whole networks in `--data`), `fit_seconds`, `dead_code` (`prune`, `unused` or `keep`: which dead ops the device
removes, `hwmodel.layers.DEAD_CODE`; `--dead-code auto`, the default, picks the one with the lowest
leave-one-out error on the training rows), `features` (the feature set model selection chose by
leave-one-out error among the op-group statistics with the `--accelerators` analytic features,
without them, and the plain op counts; `hwmodel.fit.candidate_configs`) and `loo_rmse`. The
measured column may be energy (`--column energy_mj`, from `experiments.measure` on ZigZag).
CSV format: an architecture column (`arch`, or `arch_str` for
NAS-Bench-201; `--arch-column` to name another) and a latency column in milliseconds
(`latency_ms` by default, `--column` to name another). `--prior-data` adds surrogates fitted on
other devices' CSVs as a transfer prior (HELP-style; see `hwmodel.surrogate`). `--save` writes the
fitted surrogate as JSON (`load_surrogate` reads it back).

This module is the hwmodel package's only entry point that reads flags and files (the issue asks
for `python -m experiments.fit_surrogate`); the library functions it calls are pure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from typing import Sequence

import numpy as np

from experiments.config import cli_errors
from hwmodel.fit import (DEAD_CODE, InputError, features_of, fit_layers, fit_space,
                         ranking_metrics, split)
from hwmodel.layers import LayerTable, OpKind
from hwmodel.surrogate import FeatureConfig, Surrogate, layer_features
from hwmodel.tables import numbers, read_csv, require_columns
from supernet.spaces import make_space

#: Columns of a per-layer CSV (`python -m experiments.measure --per-layer`) that describe the row.
LAYER_COLUMNS = ("op", "c_in", "c_out", "kernel", "stride", "groups", "h", "w", "act")


def load_latency_csv(path: str, space, column: str | None = None,
                     arch_column: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Reads `(archs [N, D] int32, latency [N] float64)` from a CSV; clear errors on bad input."""
    header, rows = read_csv(path, "latency file", "pass --data with a CSV of architectures and latencies "
                            "(e.g. ../shared/data/latency/fbnet_cifar100/pixel3.csv)")
    arch_column = arch_column or next((c for c in ("arch", "arch_str") if c in header), None)
    column = column or "latency_ms"
    if arch_column is None:
        raise InputError(f"{path}: no architecture column (looked for 'arch' and 'arch_str'; name yours with "
                         f"--arch-column); columns: {header}")
    require_columns(path, header, [arch_column], "--arch-column")
    require_columns(path, header, [column], "--column")
    archs = []
    for i, r in enumerate(rows):
        try:
            archs.append(space.decode(r[arch_column]))
        except ValueError as e:
            raise InputError(f"{path}, data row {i + 1}: {e}") from None
    return np.stack(archs), numbers(path, rows, column, positive=True)


def load_layer_csv(path: str, column: str = "latency_ms",
                   config: FeatureConfig = FeatureConfig()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reads a per-layer CSV: `(arch strings [R], layer features [R, F], measured [R])`.

    One row per executed layer-table row, with the columns of `LAYER_COLUMNS` (op by `OpKind`
    name), an `arch` column and the measured `column` (>= 0: a row ONNX Runtime fused into its neighbour,
a residual Add into the conv before it, costs 0 there); every row is checked.
    """
    header, rows = read_csv(path, "per-layer file", "write one with python -m experiments.measure --per-layer")
    require_columns(path, header, ["arch", *LAYER_COLUMNS, column])
    layer_rows = []
    for i, r in enumerate(rows):
        try:
            op = OpKind[r["op"]]
            layer_rows.append({"op": op, **{k: int(r[k]) for k in LAYER_COLUMNS[1:]}})
        except (KeyError, ValueError) as e:
            raise InputError(f"{path}, data row {i + 1}: bad layer description ({e})") from None
    y = numbers(path, rows, column, nonnegative=True)  # 0: the backend fused the row into another
    feats = np.asarray(layer_features(LayerTable.from_rows(layer_rows), config), np.float64)
    return np.asarray([r["arch"] for r in rows]), feats, y


def save_surrogate(s: Surrogate, path: str, **meta) -> None:
    """Writes a surrogate as JSON (refuses to overwrite an existing file)."""
    if os.path.exists(path):
        raise InputError(f"{path} exists; remove it or choose another --save path")
    with open(path, "w") as f:
        json.dump(s.to_dict() | {"meta": meta}, f, indent=1)


def load_surrogate(path: str) -> Surrogate:
    """Reads a surrogate written by `save_surrogate`."""
    if not os.path.isfile(path):
        raise InputError(f"surrogate file {path!r} not found")
    with open(path) as f:
        return Surrogate.from_dict(json.load(f))


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m experiments.fit_surrogate", description=__doc__.split("\n\n")[0])
    p.add_argument("--space", required=True, help="search space name, e.g. fbnet-cifar100 or nb201")
    p.add_argument("--data", required=True, help="CSV with an architecture column and a latency column")
    p.add_argument("--column", default=None, help="latency column (default latency_ms)")
    p.add_argument("--arch-column", default=None, help="architecture column (default arch or arch_str)")
    p.add_argument("--train-size", type=int, required=True, help="rows used for fitting")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prior-data", nargs="*", default=(), help="CSVs of other devices (transfer prior)")
    p.add_argument("--accelerators", default="", help="comma-separated analytic presets as features")
    p.add_argument("--per-layer", default=None,
                   help="fit on per-layer measurements of the training architectures (CSV of "
                        "python -m experiments.measure --per-layer); --data then gives the whole networks")
    p.add_argument("--dead-code", choices=DEAD_CODE, default="auto",
                   help="which ops of a network the device runs: prune (none-fed and unused ops removed), "
                        "unused (only ops whose output is unused removed), keep (all); auto: by LOO error")
    p.add_argument("--save", default=None, help="write the fitted surrogate here (JSON)")
    p.add_argument("--json", action="store_true", help="print one JSON object (default: readable)")
    args = p.parse_args(argv)
    with cli_errors(p, also=(ValueError,)):
        space = make_space(args.space)
        config = FeatureConfig(tuple(a for a in args.accelerators.split(",") if a))
        archs, y = load_latency_csv(args.data, space, args.column, args.arch_column)
        # a repeated architecture stays on one side of the split (train_size counts architectures)
        tr, te = split(len(y), args.train_size, args.seed, groups=np.asarray([space.encode(a) for a in archs]))
        t0 = time.perf_counter()
        if args.per_layer:
            if args.prior_data:
                raise InputError("--prior-data is for whole-network fits; drop it with --per-layer")
            train_archs = {space.encode(a) for a in archs[tr]}
            by_config, nets = {}, {}
            for c in [config] + ([replace(config, accelerators=())] if config.accelerators else []):
                names, lx, ly = load_layer_csv(args.per_layer, args.column or "latency_ms", c)
                keep = np.isin(names, list(train_archs))
                if not keep.any():
                    raise InputError(f"{args.per_layer} has no layers of the {len(tr)} training architectures "
                                     f"of {args.data}; measure both with the same hwmodel.measure run")
                by_config[c] = lx[keep]
                # per-layer files hold only rows that execute (the backend removed dead code)
                nets[c] = features_of(space, archs[tr], c, dead_code="prune")
            s = fit_layers(by_config, ly[keep], nets, y[tr])
        else:
            priors = []
            for path in args.prior_data:
                pa, py = load_latency_csv(path, space, args.column, args.arch_column)
                priors.append(fit_space(space, pa, py, config=config, dead_code=args.dead_code))
            s = fit_space(space, archs[tr], y[tr], config=config, dead_code=args.dead_code, priors=priors)
        fit_seconds = time.perf_counter() - t0
        x = features_of(space, archs[te], s.config, dead_code=s.dead_code)
    pred = x @ np.asarray(s.coef, np.float64) + float(s.intercept)
    result = ranking_metrics(pred, y[te]) | {"n_train": int(len(tr)), "n_test": int(len(te)),
                                             "fit": "per_layer" if args.per_layer else "whole_network",
                                             "fit_seconds": fit_seconds,
                                             "dead_code": s.dead_code,
                                             "features": list(s.config.quantities)
                                             + [f"analytic.{a}" for a in s.config.accelerators],
                                             "loo_rmse": s.loo_rmse}
    if args.save:
        with cli_errors(p):
            save_surrogate(s, args.save, space=args.space, data=args.data, column=args.column,
                           train_size=args.train_size, seed=args.seed)
    print_result(result, args.json)
    return result


def print_result(result: dict, as_json: bool) -> None:
    """One JSON line, or one readable `key: value` line per entry (the CLIs' shared output)."""
    if as_json:
        print(json.dumps(result))
        return
    for k, v in result.items():
        print(f"{k:>14}: {v:.4g}" if isinstance(v, float) else f"{k:>14}: {v}")


if __name__ == "__main__":
    main(sys.argv[1:])
