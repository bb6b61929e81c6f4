"""One-shot ranking quality of the inherited-weights evaluator on NAS-Bench-201 (CIFAR-10). Prints JSON.

    python benchmarks/oneshot_ranking.py [--data-dir ../shared/data] [--steps 600] [--sample 100]
        [--channels 8] [--cells-per-stage 1] [--seed 0] [--out FILE.json]

Trains the weights of a NAS-Bench-201 supernet (`--train`): `mixture`, under the uniform mixture of
all operations (the single-shot search's warm-up weight step; no architecture updates), and/or
`path`, one uniformly sampled path per step (SPOS, `SearchConfig.path_sampling`); then scores `--sample` random cells of the table with `SupernetEvaluator`
(the multishot evaluator `supernet`: one-hot architecture, inherited weights, no training) on
held-out CIFAR-10 training images, with BatchNorm's running statistics (`bn="running"`, collected
under the mixture) and with per-batch statistics under the candidate (`bn="batch"`, the
large-batch limit of SPOS's per-subnet recalibration). Reports Spearman and Kendall rank
correlation of each with the table's `cifar10_valid_acc`: how well weight sharing ranks cells, the
quantity "Evaluating the search phase of NAS" (Yu et al., ICLR 2020) measures. Cells with an
unreachable branch (`has_unreachable_branch`) are reported separately as well.

A few minutes on a 2-core CPU at the defaults (narrow network); the benchmark's network
(`--channels 16 --cells-per-stage 5`) and longer training belong on a GPU.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import time



def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=None, help="folder with cifar10/ and nas-bench-201/ "
                   "(default: $HWNAS_DATA_DIR or ../shared/data)")
    p.add_argument("--steps", type=int, default=600, help="weight-training steps of the supernet")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--sample", type=int, default=100, help="random table cells scored")
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--cells-per-stage", type=int, default=1)
    p.add_argument("--train-images", type=int, default=10000)
    p.add_argument("--eval-images", type=int, default=1000, help="held-out training images for the evaluator")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train", default="mixture,path", help="weight training of the supernet: mixture, path, or both")
    p.add_argument("--out", default="", help="also write the JSON here (never overwritten)")
    args = p.parse_args(argv)
    if args.out and os.path.exists(args.out):
        p.exit(2, f"error: {args.out} exists; choose a new file (results are never overwritten)\n")

    import jax
    import numpy as np
    from flax import nnx
    from scipy.stats import kendalltau, spearmanr

    from experiments import data as D
    from supernet.evaluators import SupernetEvaluator
    from supernet.model import make_supernet
    from supernet.single_shot import SearchConfig, SingleShot
    from supernet.spaces import make_space
    from supernet.training import DeviceData, make_mesh

    root = D.resolve_data_dir(args.data_dir)
    table = root / "nas-bench-201" / "nb201_cifar10.csv"
    if not table.is_file():
        p.exit(2, f"error: {table} not found; pass --data-dir with nas-bench-201/nb201_cifar10.csv\n")
    with open(table, newline="") as f:
        rows = [(r["arch_str"], float(r["cifar10_valid_acc"])) for r in csv.DictReader(f)]
    d = D.load_cifar10(args.data_dir)
    n_tr, n_ev = args.train_images, args.eval_images
    if n_tr + n_ev > len(d.x_train):
        p.exit(2, f"error: --train-images + --eval-images exceed the {len(d.x_train)} training images\n")

    space = make_space("nb201", channels=args.channels, cells_per_stage=args.cells_per_stage)
    mesh = make_mesh(1)
    rng = np.random.default_rng(args.seed)
    perm = rng.permutation(len(d.x_train))
    train = DeviceData.put(d.x_train[perm[:n_tr]], d.y_train[perm[:n_tr]], mesh)
    held = DeviceData.put(d.x_train[perm[n_tr:n_tr + n_ev]], d.y_train[perm[n_tr:n_tr + n_ev]], mesh)
    steps_per_epoch = n_tr // args.batch_size
    epochs = -(-args.steps // steps_per_epoch)
    idx = np.sort(rng.choice(len(rows), args.sample, replace=False))
    archs = np.stack([space.decode(rows[i][0]) for i in idx])
    truth = np.asarray([rows[i][1] for i in idx])
    clean = ~space.has_unreachable_branch(archs)
    out = {"benchmark": "oneshot_ranking", "space": "nb201", "channels": args.channels,
           "cells_per_stage": args.cells_per_stage, "train_images": n_tr, "eval_images": n_ev,
           "sample": int(args.sample), "sample_no_unreachable": int(clean.sum()), "seed": args.seed,
           "device": jax.devices()[0].device_kind, "jax": jax.__version__,
           "python": platform.python_version(), "train": {}}
    prepare = lambda k, x: D.normalize(x)  # noqa: E731
    for mode in [m for m in args.train.split(",") if m]:
        if mode not in ("mixture", "path"):
            p.exit(2, f"error: unknown --train {mode!r}; valid: mixture, path\n")
        cfg = SearchConfig(epochs=epochs, warmup_epochs=epochs, batch_size=args.batch_size, seed=args.seed,
                           steps_per_epoch=min(steps_per_epoch, args.steps), path_sampling=mode == "path")
        net = make_supernet(space, rngs=nnx.Rngs(args.seed))
        search = SingleShot(space, net, cfg, augment=D.augment, mesh=mesh)
        t0 = time.perf_counter()
        for _ in range(epochs):
            rec = search.run_epoch(train, train)  # warm-up epochs: the second split is never read
        res = {"steps": epochs * cfg.steps_per_epoch, "supernet_train_acc": float(rec.get("train_acc", float("nan"))),
               "train_seconds": round(time.perf_counter() - t0, 1), "bn": {}}
        for bn in ("running", "batch"):
            ev = SupernetEvaluator(space, net, held, prepare=prepare, batch_size=500, mesh=mesh, bn=bn)
            t0 = time.perf_counter()
            acc = ev(archs)["accuracy"]
            res["bn"][bn] = {"spearman": float(spearmanr(acc, truth)[0]), "kendall": float(kendalltau(acc, truth)[0]),
                             "spearman_no_unreachable": float(spearmanr(acc[clean], truth[clean])[0]),
                             "mean_accuracy": float(acc.mean()), "max_accuracy": float(acc.max()),
                             "seconds_per_arch": (time.perf_counter() - t0) / len(archs)}
        out["train"][mode] = res
    text = json.dumps(out)
    print(text)
    if args.out:
        with open(args.out, "x") as f:
            f.write(text + "\n")
    return out


if __name__ == "__main__":
    main()
