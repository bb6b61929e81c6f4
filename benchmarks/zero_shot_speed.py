"""Zero-shot scoring throughput on NAS-Bench-201: architectures scored per second. Prints JSON.

    python benchmarks/zero_shot_speed.py [--proxies naswot,synflow,jacob_cov] [--archs 32]
        [--batch-size 64] [--chunk 1] [--channels 16 --cells 5] [--data-dir ../shared/data | --synthetic]
        [--joint]

Protocol: the full NB201 network of the benchmark (C = 16, N = 5 cells per stage, 32x32 inputs)
as a weight-sharing supernet; one batch of `--batch-size` CIFAR-10 training images; per score, one
compiled function (`zero_shot.ArchScorer`) is built and compiled on a first set of `--archs` random
cells (reported as `first_call_seconds`: compile plus scoring that set), then a *different* set of `--archs` cells is
timed (no recompilation: the architectures are array inputs). `archs_per_second` is that second
set's size over its wall time. `chunk = 1` computes only the chosen op of each edge (the derived
subnet's cost); `chunk > 1` vmaps that many cells over every op (for accelerators).

Reference points: the reference implementations take 0.3 to 0.7 s per cell on a GPU (issue 4;
NASWOT reports 0.3 s per cell, Mellor et al. 2021, table 2 setting), i.e. 1.4 to 3.3 cells/s.
The issue's target is >= 100 cells/s for NASWOT on an H100 GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np


import zero_shot as Z  # noqa: E402
from experiments import data as D  # noqa: E402
from flax import nnx  # noqa: E402
from supernet.model import make_supernet  # noqa: E402
from supernet.spaces import make_space  # noqa: E402


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--proxies", default="naswot,synflow,jacob_cov")
    p.add_argument("--archs", type=int, default=32, help="cells timed per score (after a compile set)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--chunk", type=int, default=1)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--cells", type=int, default=5, help="cells per stage (NB201: 5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--synthetic", action="store_true", help="random images (no CIFAR-10 needed)")
    p.add_argument("--joint", action="store_true", help="also time all --proxies in one compiled call "
                   "(shared work, e.g. one backward for snip/grad_norm/fisher) and report `joint_speedup` "
                   "over the sum of the single scores' times")
    args = p.parse_args(argv)
    names = [n for n in args.proxies.split(",") if n]
    for n in names:
        Z.PROXIES[n]  # unknown names fail before any work, listing the valid ones

    space = make_space("nb201", channels=args.channels, cells_per_stage=args.cells)
    d = D.synthetic_cifar10(max(256, args.batch_size), 10, seed=args.seed) if args.synthetic \
        else D.load_cifar10(args.data_dir)
    rng = np.random.default_rng(args.seed)
    pick = rng.choice(len(d.x_train), args.batch_size, replace=False)
    batch = (D.normalize(jnp.asarray(d.x_train[pick])), jnp.asarray(d.y_train[pick]))
    net = make_supernet(space, rngs=nnx.Rngs(args.seed))
    warm = np.asarray(space.sample(jax.random.key(args.seed), args.archs))
    timed = np.asarray(space.sample(jax.random.key(args.seed + 1), args.archs))
    key = jax.random.key(args.seed)

    out = {"benchmark": "zero_shot_speed", "space": space.name, "channels": args.channels,
           "cells_per_stage": args.cells, "batch_size": args.batch_size, "archs": args.archs,
           "chunk": args.chunk, "data": "synthetic" if args.synthetic else "cifar10",
           "device": jax.devices()[0].device_kind, "backend": jax.default_backend(),
           "cpu_count": os.cpu_count(), "jax": jax.__version__, "python": platform.python_version(),
           "reference_seconds_per_arch": [0.3, 0.7], "proxies": {}}
    groups = [(n,) for n in names] + ([tuple(names)] if args.joint and len(names) > 1 else [])
    for group in groups:
        name = "+".join(group)
        scorer = Z.ArchScorer(net, group, chunk=args.chunk)
        t0 = time.perf_counter()
        jax.block_until_ready(scorer(net, warm, batch, key))
        compile_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        s = np.stack([np.asarray(v) for v in scorer(net, timed, batch, key).values()])
        wall = time.perf_counter() - t0
        out["proxies"][name] = {"archs_per_second": round(args.archs / wall, 3),
                                "seconds_per_arch": round(wall / args.archs, 4),
                                "first_call_seconds": round(compile_s, 2), "traces": scorer.traces,
                                "finite": int(np.isfinite(s).sum())}
        print(f"{name}: {args.archs / wall:.2f} archs/s", file=sys.stderr)
    if len(groups) > len(names):  # the joint call against the scores one at a time, same run
        single = sum(out["proxies"][n]["seconds_per_arch"] for n in names)
        out["joint_speedup"] = round(single / out["proxies"]["+".join(names)]["seconds_per_arch"], 2)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
