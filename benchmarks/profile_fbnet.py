"""Measures the latency of FBNet-space networks on this machine's JAX backend and writes a CSV.

Whole-network mode writes `arch,latency_ms` (the format of `shared/data/latency/fbnet_cifar100/*.csv`,
see its README): one row per network, the median of `--repeats` timed runs at `--batch-size`, with
compilation and warm-up excluded (`hwmodel.profile.time_fn`). `--per-layer` writes
`arch,row,op,latency_ms` instead: every computing row of the network's layer table timed alone (rows
that compute nothing are left out), for fitting the surrogate per layer. `row` indexes
`space.layers(space.decode(arch))`, so the layer's features can be recomputed from the CSV.

Networks are sampled with `fold_in(key(seed), i)` for network `i`, so a larger `--num` extends the
same list; `--archs-from CSV` measures the networks listed in another file's `arch` column instead
(e.g. the 5,000 of the shared data set, to compare devices). Re-running the same command resumes: the
output is only ever appended to, networks already in it are skipped, and a file with other columns
is refused. Prints one JSON summary line at the end.

Example (about a minute on a laptop CPU):
    python benchmarks/profile_fbnet.py --out /tmp/fbnet_cpu.csv --num 20 --repeats 10
    python benchmarks/profile_fbnet.py --out /tmp/fbnet_layers.csv --num 5 --per-layer
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from typing import Any, Sequence


import jax  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from hwmodel.layers import OpKind  # noqa: E402
from hwmodel.profile import backend_description, profile_layers, profile_network  # noqa: E402

WHOLE_HEADER = ["arch", "latency_ms"]
LAYER_HEADER = ["arch", "row", "op", "latency_ms"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="CSV to write (appended to and resumed if it exists)")
    p.add_argument("--space", default="fbnet-cifar100", help="search space name (supernet.spaces)")
    p.add_argument("--num", type=int, default=100, help="number of networks")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampled networks")
    p.add_argument("--archs-from", default=None, help="measure the archs of this CSV's arch column")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--min-time", type=float, default=None,
                   help="seconds per timed sample (loops short calls; see hwmodel.profile.time_fn)")
    p.add_argument("--per-layer", action="store_true", help="time every layer alone (arch,row,op,latency_ms)")
    return p.parse_args(argv)


def read_done(path: str, header: list[str]) -> set[str]:
    """Archs already in `path`; refuses a file whose columns differ (never mix or overwrite)."""
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return set()
    with open(path, newline="") as f:
        rows = csv.reader(f)
        first = next(rows, None)
        if first != header:
            raise SystemExit(f"{path} exists with columns {first}, but this mode writes {header}; "
                             "pass another --out (existing results are never overwritten)")
        return {r[0] for r in rows if r}


def archs_to_measure(space: Any, args: argparse.Namespace) -> list[tuple[str, np.ndarray]]:
    """(encoded, arch) pairs in order, without duplicates."""
    if args.archs_from:
        with open(args.archs_from, newline="") as f:
            texts = [r["arch"] for r in csv.DictReader(f)][: args.num]
        archs = [space.decode(t) for t in texts]
    else:
        key = jax.random.key(args.seed)
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(np.arange(args.num))
        archs = list(np.asarray(jax.vmap(lambda k: space.sample(k))(keys)))
    out, seen = [], set()
    for a in archs:
        text = space.encode(a)
        if text not in seen:
            seen.add(text)
            out.append((text, np.asarray(a)))
    return out


def main(argv: Sequence[str] | None = None, space: Any = None) -> dict[str, Any]:
    """Runs the benchmark; `space` overrides `--space` (tests pass a small one)."""
    args = parse_args(argv)
    if space is None:
        from supernet.spaces import make_space
        space = make_space(args.space)
    header = LAYER_HEADER if args.per_layer else WHOLE_HEADER
    done = read_done(args.out, header)
    wanted = archs_to_measure(space, args)
    todo = [(t, a) for t, a in wanted if t not in done]
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    key = jax.random.fold_in(jax.random.key(args.seed), 1 << 30)  # weights and inputs, not sampling
    timing = dict(batch_size=args.batch_size, key=key, warmup=args.warmup, repeats=args.repeats,
                  min_time=args.min_time)
    latencies, start = [], time.perf_counter()
    with open(args.out, "a", newline="") as f:
        writer = csv.writer(f)
        if not done and f.tell() == 0:
            writer.writerow(header)
        for text, arch in tqdm(todo, desc=f"profiling {getattr(space, 'name', 'space')}", unit="net"):
            table = space.layers(arch)
            if args.per_layer:
                secs = profile_layers(table, **timing)
                ops = np.asarray(table.op)
                for i in np.flatnonzero(secs > 0):
                    writer.writerow([text, int(i), OpKind(int(ops[i])).name, f"{1e3 * secs[i]:.6f}"])
                latencies.append(1e3 * float(secs.sum()))
            else:
                ms = profile_network(table, **timing).median_ms
                writer.writerow([text, f"{ms:.6f}"])
                latencies.append(ms)
            f.flush()  # a killed run keeps every finished network
    summary = dict(out=args.out, mode="per_layer" if args.per_layer else "network",
                   backend=backend_description(), batch_size=args.batch_size, measured=len(todo),
                   skipped=len(wanted) - len(todo),
                   median_latency_ms=float(np.median(latencies)) if latencies else None, wall_s=round(time.perf_counter() - start, 2))
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
