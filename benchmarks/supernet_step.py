"""Step time of the supernet's search step vs the standalone largest subnet's training step.

Same batch size, same data, one process, side by side (ratios, since machines are noisy):
- `search_step`: one bilevel step of `SingleShot` (architecture step on a held-out batch, then
  weight step on a training batch), relaxed weights over every choice;
- `weight_step`: the weight step alone (the search with `warmup_epochs`, uniform weights);
- `subnet_step`: one training step of the derived standalone network of the *largest* architecture
  (per decision the choice with the most FLOPs, by coordinate ascent).
Each is timed as the wall time of `--steps` steps after a warm-up epoch (compilation excluded) and
reported with images per second. Prints one JSON object.

Example:
    python benchmarks/supernet_step.py --space nb201 --batch-size 64 --steps 50
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

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
    args = p.parse_args(argv)
    space = make_space(args.space)
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

    def time_search(warmup: bool) -> float:
        cfg = SearchConfig(epochs=3, batch_size=args.batch_size, steps_per_epoch=args.steps,
                           warmup_epochs=3 if warmup else 0)
        ss = SingleShot(space, make_supernet(space, rngs=nnx.Rngs(0)), cfg, mesh=mesh)
        ss.run_epoch(tr, va)  # compile + warm-up
        t0 = ss.seconds
        ss.run_epoch(tr, va)
        return (ss.seconds - t0) / args.steps

    out["search_step_s"] = time_search(False)
    out["weight_step_s"] = time_search(True)
    arch = largest_arch(space)
    sub = make_supernet(space, rngs=nnx.Rngs(0)).derive(arch)
    stamps = []
    Trainer(sub, TrainConfig(epochs=2, batch_size=args.batch_size, steps_per_epoch=args.steps),
            augment=identity_input, mesh=mesh).fit(tr, callback=lambda r: stamps.append(time.perf_counter()))
    out["subnet_step_s"] = (stamps[1] - stamps[0]) / args.steps
    out["largest_arch"] = space.encode(arch)
    out["ratio_search_over_subnet"] = out["search_step_s"] / out["subnet_step_s"]
    out["ratio_weight_step_over_subnet"] = out["weight_step_s"] / out["subnet_step_s"]
    for k in ("search", "weight", "subnet"):
        out[f"{k}_images_per_s"] = args.batch_size / out[f"{k}_step_s"]
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
