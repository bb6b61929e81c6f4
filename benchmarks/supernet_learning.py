"""Does the supernet's weight training learn? Uniform single-path sampling vs the baseline's path.

The warm-up of a single-path search (`SearchConfig.path_sampling`, as SPOS and TuNAS warm up)
trains one uniformly sampled path per step. This runs `SingleShot` warm-up epochs on shuffled
CIFAR-10 training images twice, same data, steps and seed, in one process: `uniform` (every
choice allowed) and `fixed` (a `SpaceMask` that allows only the space's baseline architecture, e.g.
MobileNetV2: the same code path training one network). A supernet whose `uniform` training accuracy
stays at chance while `fixed` rises cannot rank architectures after this warm-up (the mobile
`single47` arm of `latency_cut.py`, docs/results/latency_cut.md). Prints one JSON object with the
per-epoch training accuracy and cross-entropy of both arms (each epoch's mean over its steps; the
first epoch's time includes compilation).

Example (about 25 min on the 2-core CPU with other jobs):
    python benchmarks/supernet_learning.py --space mobile-curated --half-width
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from flax import nnx

from experiments.configs.common import MOBILE_HALF_WIDTH
from experiments.data.cifar10 import augment, load_cifar10
from hwmodel.profile import backend_description
from supernet import make_space, make_supernet
from supernet.single_shot import SearchConfig, SingleShot
from supernet.training import DeviceData, make_mesh


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="mobile-curated")
    p.add_argument("--half-width", action="store_true", help="the mobile CPU protocol's proxy (MOBILE_HALF_WIDTH)")
    p.add_argument("--images", type=int, default=2048, help="weight-training images (as many again for the other split)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=48, help="steps per epoch")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    space = make_space(args.space, **(MOBILE_HALF_WIDTH if args.half_width else {}))
    d = load_cifar10()
    idx = np.random.default_rng(args.seed).permutation(len(d.train.y))  # the files are ordered by class
    x, y = d.train.x[idx], d.train.y[idx]
    mesh = make_mesh()
    n = args.images
    train, val = DeviceData.put(x[:n], y[:n], mesh), DeviceData.put(x[n:2 * n], y[n:2 * n], mesh)
    out = {"space": args.space, "half_width": args.half_width, "images": n, "batch_size": args.batch_size,
           "steps_per_epoch": args.steps, "device": backend_description()}
    # `fixed`: only the baseline's choice of every decision allowed
    fixed = space.mask(allowed=np.asarray(space.one_hot(space.baseline_arch())) > 0)
    for arm, mask in (("uniform", None), ("fixed", fixed)):
        cfg = SearchConfig(epochs=args.epochs, warmup_epochs=args.epochs, path_sampling=True, estimator="reinforce",
                           batch_size=args.batch_size, steps_per_epoch=args.steps, seed=args.seed)
        search = SingleShot(space, make_supernet(space, rngs=nnx.Rngs(args.seed)), cfg, mask=mask,
                            augment=augment, mesh=mesh)
        recs = []
        for _ in range(args.epochs):
            t0 = time.perf_counter()
            r = search.run_epoch(train, val)
            recs.append({"train_acc": r["train_acc"], "train_ce": r["train_ce"], "seconds": time.perf_counter() - t0})
        out[arm] = recs
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
