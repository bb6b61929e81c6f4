"""What a latency-constrained derivation on NAS-Bench-201 could return at best, given its cost model.

For each target T and seed: the pixel3 surrogate fitted on the seed's 50 table cells (as the
`:cpu,pixel3` protocol fits it), its limit at `--confidence` (`supernet.derive.model_limit` on the
leave-one-out ratios), and over the whole table: the best table accuracy among the live cells the
surrogate predicts under the limit (`best_under_limit`), the share of those cells that meet T in
the table (`share_meeting_target`), and the best table cell that meets T (`best_feasible`). If
`best_under_limit` is close to `best_feasible`, a search that returns a worse cell loses by its
ranking of cells, not by its cost model (docs/results/single_shot.md). Prints one JSON object.

Example:
    python benchmarks/constraint_oracle.py --targets 10,6,15 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from experiments.data import resolve_data_dir
from experiments.fit_surrogate import load_latency_csv
from hwmodel.fit import features_of, fit_space, loo_ratios, split
from hwmodel.tables import read_csv
from supernet.derive import model_limit
from supernet.spaces import make_space


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--targets", default="10,6,15", help="latency targets in ms, comma-separated")
    p.add_argument("--seeds", default="0,1,2", help="surrogate training splits (the runs' seeds)")
    p.add_argument("--train-size", type=int, default=50)
    p.add_argument("--confidence", type=float, default=0.9)
    p.add_argument("--space-kwargs", default='{"channels": 8, "cells_per_stage": 1}',
                   help="the searched supernet's space (JSON), whose layer tables the surrogate costs (the CPU protocol's)")
    p.add_argument("--data-dir", default=None)
    args = p.parse_args()
    path = f"{resolve_data_dir(args.data_dir)}/nas-bench-201/nb201_cifar10.csv"
    space = make_space("nb201", **json.loads(args.space_kwargs))
    archs, lat = load_latency_csv(path, space, "pixel3_latency_ms", None)
    _, rows = read_csv(path, "NAS-Bench-201 table")
    acc = np.asarray([float(r["cifar10_valid_acc"]) for r in rows])
    live = ~np.asarray(space.is_constant(archs))
    out = {}
    for seed in map(int, args.seeds.split(",")):
        idx, _ = split(len(archs), args.train_size, seed)
        s = fit_space(space, archs[idx], lat[idx])
        ratios = loo_ratios(space, archs[idx], lat[idx], s)
        pred = features_of(space, archs, s.config, dead_code=s.dead_code) @ np.asarray(s.coef, np.float64) \
            + float(s.intercept)
        for t in map(float, args.targets.split(",")):
            limit = model_limit(t, ratios, args.confidence)
            ok = live & (pred <= limit)
            out[f"T={t:g},seed={seed}"] = {
                "dead_code": s.dead_code, "limit_ms": round(limit, 3),
                "best_under_limit": float(acc[ok].max()), "share_meeting_target": round(float(np.mean(lat[ok] <= t)), 4),
                "best_feasible": float(acc[live & (lat <= t)].max())}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
