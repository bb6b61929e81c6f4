"""Step time of the supernet's search step vs the standalone largest subnet's training step.

Same batch size, same data, one process, side by side (ratios, since machines are noisy):
- `mixture`: one bilevel step of `SingleShot` with the relaxed mixture (DARTS softmax: every op of
  every mixed op runs, in the architecture and in the weight step);
- `single_path`: one bilevel step with one-hot sampled architectures run single-path
  (`blocks.single_path`): `--estimator reinforce` (TuNAS: a forward pass for the architecture
  step, default) or `relaxed` (straight-through hard Gumbel, GDAS: a backward pass too);
- `weight_step`: the mixture's weight step alone (warm-up, uniform weights);
- `subnet_step`: one training step of the derived standalone network of the *largest* architecture
  (per decision the choice with the most FLOPs, by coordinate ascent).
`mixture_ratio` and `single_path_ratio` are those step times over `subnet_step` (target of the
single-shot issue on this CPU: single_path_ratio <= 1.5). Each is timed as the wall time of
`--steps` steps after a warm-up epoch (compilation excluded). Prints one JSON object.

Example:
    python benchmarks/supernet_step.py --space nb201 --space-kwargs '{"channels": 8, "cells_per_stage": 1}'
"""

from __future__ import annotations

import argparse
import json
import time


import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from hwmodel.layers import total_flops  # noqa: E402
from hwmodel.profile import backend_description  # noqa: E402
from supernet import make_space, make_supernet  # noqa: E402
from supernet.single_shot import SearchConfig, SingleShot  # noqa: E402
from supernet.training import DeviceData, TrainConfig, Trainer, identity_input, make_mesh  # noqa: E402


def largest_arch(space) -> np.ndarray:
    """Per decision the choice that maximises the network's FLOPs (two passes of coordinate ascent)."""
    flops = jax.jit(lambda a: total_flops(space.layers(a)))
    arch = np.zeros(space.num_decisions, np.int32)
    for _ in range(2):
        for d in range(space.num_decisions):
            best = max(range(int(space.num_choices[d])),
                       key=lambda c: float(flops(jnp.asarray(np.where(np.arange(len(arch)) == d, c, arch)))))
            arch[d] = best
    return arch


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="nb201")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--input-size", type=int, default=32)
    p.add_argument("--space-kwargs", default="{}", help="JSON kwargs of the space, e.g. a narrow NB201")
    p.add_argument("--estimator", default="reinforce", choices=("reinforce", "relaxed"))
    p.add_argument("--skip-mixture", action="store_true", help="only the single-path and subnet steps")
    args = p.parse_args(argv)
    space = make_space(args.space, **json.loads(args.space_kwargs))
    mesh = make_mesh()
    n = 2 * args.batch_size * args.steps
    rng = np.random.default_rng(0)
    s = getattr(space, "input_size", args.input_size)
    x = rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8)
    y = rng.integers(0, getattr(space, "num_classes", 10), n).astype(np.int32)
    half = n // 2
    tr, va = DeviceData.put(x[:half], y[:half], mesh), DeviceData.put(x[half:], y[half:], mesh)
    out = {"space": args.space, "batch_size": args.batch_size, "steps": args.steps,
           "device": backend_description()}

    def time_search(warmup: bool = False, **kw) -> float:
        cfg = SearchConfig(epochs=3, batch_size=args.batch_size, steps_per_epoch=args.steps,
                           warmup_epochs=3 if warmup else 0, **kw)
        ss = SingleShot(space, make_supernet(space, rngs=nnx.Rngs(0)), cfg, mesh=mesh)
        ss.run_epoch(tr, va)  # compile + warm-up
        t0 = ss.seconds
        ss.run_epoch(tr, va)
        return (ss.seconds - t0) / args.steps

    one_hot = (dict(estimator="reinforce") if args.estimator == "reinforce"
               else dict(relaxation="gumbel", hard=True))
    out["single_path_estimator"] = args.estimator
    out["single_path_step_s"] = time_search(**one_hot)
    if not args.skip_mixture:
        out["mixture_step_s"] = time_search()
        out["weight_step_s"] = time_search(warmup=True)
    arch = largest_arch(space)
    sub = make_supernet(space, rngs=nnx.Rngs(0)).derive(arch)
    stamps = []
    Trainer(sub, TrainConfig(epochs=2, batch_size=args.batch_size, steps_per_epoch=args.steps),
            augment=identity_input, mesh=mesh).fit(tr, callback=lambda r: stamps.append(time.perf_counter()))
    out["subnet_step_s"] = (stamps[1] - stamps[0]) / args.steps
    out["largest_arch"] = space.encode(arch)
    out["space_kwargs"] = json.loads(args.space_kwargs)
    for k in ("mixture", "single_path", "weight"):
        if f"{k}_step_s" in out:
            out[f"{k}_ratio"] = out[f"{k}_step_s"] / out["subnet_step_s"]
    for k in ("mixture", "single_path", "weight", "subnet"):
        if f"{k}_step_s" in out:
            out[f"{k}_images_per_s"] = args.batch_size / out[f"{k}_step_s"]
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
