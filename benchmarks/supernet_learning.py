"""Does the supernet's weight training learn? Uniform single-path sampling, the sandwich rule, and
the baseline's path alone.

The warm-up of a single-path search (`SearchConfig.path_sampling`, as SPOS and TuNAS warm up)
trains one uniformly sampled path per step. This runs `SingleShot` warm-up epochs on shuffled
CIFAR-10 training images once per arm, same data, steps and seed, in one process:
- `uniform`: one uniformly sampled path per step (every choice allowed);
- `sandwich`: the space's baseline (the anchor) and one uniformly sampled path per step, gradients
  summed (`SearchConfig.sandwich=1`, BigNAS's sandwich rule with the baseline as anchor);
- `distill`: as `sandwich`, the sampled path learning from the anchor's softmax (`distill=True`);
- `shrink`: progressive shrinking from the baseline (`shrink_epochs = epochs - 1`: the paths start
  as the anchor and are uniform in the last epoch, `SearchConfig.shrink_epochs`);
- `random`: as `fixed`, for one uniformly sampled architecture (`space.sample` at `--seed`): does a
  path other than the baseline train when it is trained alone?
- `fixed`: a `SpaceMask` that allows only the baseline architecture (e.g. MobileNetV2): the same
  code path training one network.
`train_acc` is the sampled paths' training accuracy (each epoch's mean over its steps), the number
that says whether the shared weights serve the paths a search samples (for `shrink` that is the
last, uniform epoch only); `anchor_acc` the anchor's.
A supernet whose sampled paths stay at chance while `fixed` rises cannot rank architectures after
this warm-up (the mobile `single47` arm of `latency_cut.py`, docs/results/latency_cut.md). Prints
one JSON object (the first epoch's time includes compilation).

`--free` restricts the sampled arms to some decisions (the others at the baseline's choice), to find
which kind of decision the shared weights cannot follow.

Example (about 25 min per arm on the 2-core CPU with another job; the sandwich arms cost two
paths per step):
    python benchmarks/supernet_learning.py --space mobile-curated --half-width
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import jax
import ml_collections
import numpy as np
from flax import nnx

from experiments.configs.common import MOBILE_HALF_WIDTH
from experiments.context import search_mask
from experiments.data.cifar10 import augment, load_cifar10
from hwmodel.profile import backend_description
from supernet import make_space, make_supernet
from supernet.single_shot import SearchConfig, SingleShot
from supernet.training import DeviceData, make_mesh

ARMS = ("uniform", "sandwich", "distill", "shrink", "random", "fixed")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="mobile-curated")
    p.add_argument("--half-width", action="store_true", help="the mobile CPU protocol's proxy (MOBILE_HALF_WIDTH)")
    p.add_argument("--space-kwargs", default="{}", help="JSON of the space's constructor arguments (lists become "
                   "tuples), e.g. a small space; applied after --half-width")
    p.add_argument("--images", type=int, default=2048, help="weight-training images (as many again for the other split)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=48, help="steps per epoch")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated subset of {ARMS}")
    p.add_argument("--free", default="", help="comma-separated regexes of the decisions the sampled arms vary "
                   "(`space.free`: the others held at the baseline's choice); default: all")
    args = p.parse_args(argv)
    arms = args.arms.split(",")
    if not set(arms) <= set(ARMS):
        p.error(f"unknown arms {sorted(set(arms) - set(ARMS))}; valid: {', '.join(ARMS)}")
    kwargs = dict(MOBILE_HALF_WIDTH) if args.half_width else {}
    kwargs.update({k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(args.space_kwargs).items()})
    space = make_space(args.space, **kwargs)
    d = load_cifar10()
    idx = np.random.default_rng(args.seed).permutation(len(d.train.y))  # the files are ordered by class
    x, y = d.train.x[idx], d.train.y[idx]
    mesh = make_mesh()
    n = args.images
    train, val = DeviceData.put(x[:n], y[:n], mesh), DeviceData.put(x[n:2 * n], y[n:2 * n], mesh)
    out = {"space": args.space, "half_width": args.half_width, "space_kwargs": kwargs, "images": n,
           "batch_size": args.batch_size, "steps_per_epoch": args.steps, "device": backend_description()}
    def only(arch):  # a mask that allows one architecture's choices alone
        return space.mask(allowed=np.asarray(space.one_hot(arch)) > 0)

    sampled = np.asarray(space.sample(jax.random.key(args.seed)))  # `random`: one sampled path alone
    out["random_arch"] = space.encode(sampled)
    masks = {"fixed": only(space.baseline_arch()), "random": only(sampled)}
    if args.free:  # the sampled arms vary only these decisions
        out["free"] = args.free.split(",")
        part = search_mask(ml_collections.ConfigDict({"space": {"free": tuple(out["free"]), "remove": {}}}), space)
        masks.update({a: part for a in ARMS if a not in masks})
    for arm in arms:
        cfg = SearchConfig(epochs=args.epochs, warmup_epochs=args.epochs, path_sampling=True, estimator="reinforce",
                           batch_size=args.batch_size, steps_per_epoch=args.steps, seed=args.seed,
                           sandwich=int(arm in ("sandwich", "distill")), distill=arm == "distill",
                           shrink_epochs=args.epochs - 1 if arm == "shrink" else 0)
        search = SingleShot(space, make_supernet(space, rngs=nnx.Rngs(args.seed)), cfg,
                            mask=masks.get(arm), augment=augment, mesh=mesh,
                            anchor=space.baseline_arch() if cfg.uses_anchor else None)
        recs = []
        for _ in range(args.epochs):
            t0 = time.perf_counter()
            r = search.run_epoch(train, val)
            recs.append({k: r[k] for k in ("train_acc", "train_ce", "anchor_acc") if k in r}
                        | {"seconds": time.perf_counter() - t0})
        out[arm] = recs
        print(json.dumps({arm: recs}), file=sys.stderr)  # progress: one line per arm
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
