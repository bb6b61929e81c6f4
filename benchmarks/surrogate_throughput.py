"""Surrogate predictions per second for batches of architectures (vmap), on the current backend.

    python benchmarks/surrogate_throughput.py [--space fbnet-cifar100] [--batches 1 64 1024 8192]

Builds the layer tables and predicts latency in one jitted, vmapped function (what a search calls),
and reports architectures per second per batch size, median of 10 timed calls after warm-up. Prints JSON.
"""

from __future__ import annotations

import argparse
import json

import jax
import numpy as np


from hwmodel.profile import backend_description, time_fn  # noqa: E402
from hwmodel.surrogate import fit, network_features, predict  # noqa: E402
from supernet.spaces import make_space  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="fbnet-cifar100")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64, 1024, 8192])
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args()
    space = make_space(args.space)
    archs = space.sample(jax.random.key(0), max(args.batches))
    x = np.asarray(jax.jit(jax.vmap(lambda a: network_features(space.layers(a))))(archs[:256]))
    s = fit(x, x[:, 1] * 0.01 + 1.0)  # any fitted surrogate: the cost does not depend on coefficients
    fn = jax.jit(jax.vmap(lambda a: predict(s, space.layers(a))))
    out = {"space": args.space, "device": backend_description(), "rows_per_table": len(space.template)}
    for b in args.batches:
        t = time_fn(fn, archs[:b], warmup=2, repeats=args.repeats)
        out[f"batch_{b}"] = {"median_s": t.median_s, "archs_per_s": b / t.median_s}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
