"""Does the reference's per-cell randomness explain why our gradient scores beat the published ones?

zero-cost-nas (Abdelfattah et al., ICLR 2021; `nasbench2_pred.py`) seeds PyTorch once, then for
every NAS-Bench-201 cell builds a new network (a fresh draw of PyTorch's default init from the
global stream) and scores it on `get_some_data(train_loader, 1)`, i.e. `next(iter(loader))` of a
shuffled, augmented training loader (RandomCrop(32, padding=4), horizontal flip): a new init and a
new batch for every cell. `experiments.zero_shot_eval` scores every cell with one supernet init and one
batch (common random numbers), which removes that noise from the ranking.

This script scores the same cells as `python -m experiments.zero_shot_eval --sample N --seed S` under four
protocols and prints one JSON object with each score's Spearman / Kendall against the table:
  - `shared`: one init, one batch (ours; equals `experiments.zero_shot_eval --init torch`);
  - `fresh_init`: a new torch-init draw per cell, one batch;
  - `fresh_batch`: one init, a new augmented batch of 64 training images per cell;
  - `fresh_both`: both (the reference protocol).
`fisher_channel` is Fisher summed per output channel, without zero-cost-nas's broadcast over each
channel's `c_in * k * k` weights (`zero_shot.gradient.fisher`), to show what that weighting does.

    PYTHONPATH=. python benchmarks/zero_shot_reference_protocol.py --data-dir ../shared/data \
        --sample 300 --seed 0 --save protocol_s0.npz > protocol_s0.json

`--save FILE.npz` checkpoints after every 25 cells; rerunning the same command resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats
from tqdm import tqdm

import zero_shot as Z
from experiments import data as D
from supernet.spaces import make_space
from experiments.zero_shot_eval import read_truth, draw_inputs
from zero_shot.gradient import fisher_per_channel
from zero_shot.network import Network
from zero_shot.registry import PROXIES

ARMS = ("shared", "fresh_init", "fresh_batch", "fresh_both")
PUBLISHED = {"snip": 0.60, "grad_norm": 0.59, "fisher": 0.36, "synflow": 0.74, "jacob_cov": 0.73,
             "source": "Abdelfattah et al. 2021 via ../shared/data/nas-bench-201/README.md (all 15,625 cells)"}


def fisher_channel(net: Network, batch, key):
    """Fisher summed per output channel, without the per-weight broadcast (diagnostic only)."""
    del key
    return sum(jnp.sum(f) for _, f in fisher_per_channel(net, batch))


if "fisher_channel" not in PROXIES:
    PROXIES.register("fisher_channel")(fisher_channel)


def add_sample_args(p: argparse.ArgumentParser) -> None:
    """The options that pick the cells, batch and init (those of `experiments.zero_shot_eval`)."""
    p.add_argument("--data-dir", default=os.environ.get("HWNAS_DATA_DIR", "../shared/data"))
    p.add_argument("--truth", default=None, help="default: DATA_DIR/nas-bench-201/nb201_cifar10.csv")
    p.add_argument("--column", default="cifar10_valid_acc")
    p.add_argument("--sample", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)


def draw_sample(p: argparse.ArgumentParser, args):
    """The same cells, batch and init as `experiments.zero_shot_eval --sample N --seed S --init torch`:
    `(archs, truth, data, (x, y), supernet, key)` (`truth` of the sampled cells)."""
    truth_path = args.truth or os.path.join(args.data_dir, "nas-bench-201", "nb201_cifar10.csv")
    if not os.path.exists(truth_path):
        p.error(f"{truth_path} not found; pass --truth or --data-dir")
    space = make_space("nb201")
    strings, truth = read_truth(truth_path, args.column)
    d = D.load_cifar10(args.data_dir)
    idx, batch, net, key = draw_inputs(space, np.arange(len(strings)), args.sample, d, args.batch_size,
                                       args.seed, "torch", np.random.default_rng(args.seed))
    return np.stack([space.decode(strings[i]) for i in idx]), truth[idx], d, batch, net, key


def correlations(s: np.ndarray, t: np.ndarray) -> dict:
    """Spearman and Kendall of scores `s` (non-finite ranks last) with the truth `t`."""
    s = np.where(np.isfinite(s), s, -np.inf)
    return {"spearman": round(float(stats.spearmanr(s, t)[0]), 4),
            "kendall": round(float(stats.kendalltau(s, t)[0]), 4)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_sample_args(p)
    p.add_argument("--proxies", default="snip,grad_norm,fisher,fisher_channel,synflow")
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--save", default="", help="checkpoint .npz (resumed by the same command)")
    args = p.parse_args(argv)
    names = tuple(n for n in args.proxies.split(",") if n)
    arms = tuple(a for a in args.arms.split(",") if a)
    for n in names:
        PROXIES[n]  # KeyError listing the valid names
    bad = [a for a in arms if a not in ARMS]
    if bad:
        p.error(f"unknown arms {bad}; valid: {', '.join(ARMS)}")
    archs, t, d, (x0, y0), net0, key = draw_sample(p, args)
    n_cells = len(archs)

    sig = json.dumps(vars(args), sort_keys=True)
    scores = {a: {n: np.full(n_cells, np.nan, np.float32) for n in names} for a in arms}
    if args.save and os.path.exists(args.save):
        z = np.load(args.save)
        if str(z["signature"]) != sig:
            p.error(f"{args.save} was written by a different command: {z['signature']}")
        scores = {a: {n: z[f"{a}/{n}"] for n in names} for a in arms}
    for a in arms:
        todo = [i for i in range(n_cells) if np.isnan(scores[a][names[0]][i])]
        for j, i in enumerate(tqdm(todo, desc=a, file=sys.stderr)):
            # per-cell draws depend only on (seed, cell position), so a resumed run draws the same
            k_cell = jax.random.fold_in(jax.random.fold_in(key, 7), i)
            net = Z.initialise(net0, "torch", k_cell) if a in ("fresh_init", "fresh_both") else net0
            if a in ("fresh_batch", "fresh_both"):
                r = np.random.default_rng([args.seed, 2021, i])
                b = r.choice(len(d.x_train), args.batch_size, replace=False)
                x = D.augment(jax.random.fold_in(k_cell, 1), jnp.asarray(d.x_train[b]))
                y = jnp.asarray(d.y_train[b])
            else:
                x, y = x0, y0
            out = Z.score_archs(net, archs[i:i + 1], (x, y), key, proxies=names)
            for n in names:
                scores[a][n][i] = out[n][0]
            if args.save and (j % 25 == 24 or j == len(todo) - 1):
                tmp = f"{args.save}.tmp.npz"
                np.savez(tmp, signature=sig, **{f"{aa}/{n}": scores[aa][n] for aa in arms for n in names})
                os.replace(tmp, args.save)

    res = {a: {n: correlations(scores[a][n], t) for n in names} for a in arms}
    out = {"n": n_cells, "seed": args.seed, "batch_size": args.batch_size, "column": args.column,
           "device": jax.devices()[0].device_kind, "arms": res, "published": PUBLISHED,
           "command": "PYTHONPATH=. python benchmarks/zero_shot_reference_protocol.py " + " ".join(
               sys.argv[1:] if argv is None else argv)}
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
