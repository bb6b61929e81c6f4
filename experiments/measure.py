"""Measure sampled architectures of a space on a backend; writes the CSVs `experiments.fit_surrogate` reads.

    python -m experiments.measure --space S --backend B --num N --seed K --out F.csv [--per-layer F_layers.csv]

Whole networks go to `--out` (`arch,latency_ms,spread_ms[,energy_mj]`), executed layer-table rows
to `--per-layer` (their description, latency and, where the backend has it, energy; e.g.
`zigzag:edge_tpu_like`). Backends that batch (ZigZag) cost the unseen layers of the next
`--chunk` networks at once on `--workers` processes. A network's whole-network row is written last, so
after a kill a rerun of the same command skips the finished networks and drops the layers of the
unfinished one; a file holding another sample is refused. The backends are `hwmodel.measure`.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from typing import Sequence

import jax
import numpy as np
from tqdm import tqdm

from hwmodel import profile
from hwmodel.measure import BACKENDS, make_backend
from experiments.config import cli_errors
from experiments.fit_surrogate import LAYER_COLUMNS
from supernet.spaces import make_space


_LAYER_FIELDS = ("arch", "row", *LAYER_COLUMNS, "latency_ms")


def _done_archs(path: str) -> list[str]:
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return [r["arch"] for r in csv.DictReader(f)]


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m experiments.measure", description=__doc__.split("\n\n")[0])
    p.add_argument("--space", required=True)
    p.add_argument("--backend", required=True, help=f"one of {', '.join(sorted(BACKENDS))}")
    p.add_argument("--num", type=int, required=True, help="architectures to measure")
    p.add_argument("--seed", type=int, default=0, help="seed of the architecture sample")
    p.add_argument("--out", required=True, help="whole-network CSV (arch,latency_ms,spread_ms)")
    p.add_argument("--per-layer", default=None, help="per-layer CSV (one row per executed table row)")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    p.add_argument("--ort-per-layer", default="profiler", choices=("profiler", "alone"),
                   help="onnxruntime per-layer times: from its profiler on the whole network "
                        "(sees fusions) or each row in its own session")
    p.add_argument("--workers", type=int, default=1, help="zigzag: processes costing layers")
    p.add_argument("--chunk", type=int, default=20, help="networks whose layers are costed together")
    args = p.parse_args(argv)
    with cli_errors(p, also=(ValueError,), resume=f"the networks already in {args.out}"):
        _measure(p, args)


def _measure(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    space = make_space(args.space)
    if args.backend.startswith("zigzag"):
        kw = {"workers": args.workers}
    else:
        kw = {"repeats": args.repeats} | ({"threads": args.threads, "per_layer": args.ort_per_layer}
                                          if args.backend == "onnxruntime" else {})
    backend = make_backend(args.backend, **kw)
    if args.num < 1 or args.chunk < 1:
        raise ValueError(f"--num and --chunk must be >= 1, got {args.num} and {args.chunk}")
    try:
        energy = backend.has_energy
        net_fields = ["arch", "latency_ms", "spread_ms"] + (["energy_mj"] if energy else [])
        layer_fields = list(_LAYER_FIELDS) + (["energy_mj"] if energy else [])
        for path, fields in ((args.out, net_fields), (args.per_layer, layer_fields)):
            if path and os.path.exists(path) and os.path.getsize(path):
                with open(path, newline="") as f:
                    header = next(csv.reader(f), [])
                if header != fields:
                    p.exit(2, f"error: {path} has columns {header}, backend {args.backend} writes {fields}; "
                              "choose another file\n")
        archs = np.asarray(space.sample(jax.random.key(args.seed), args.num))
        strings = [space.encode(a) for a in archs]
        done = _done_archs(args.out)
        if done and done != strings[:len(done)]:
            p.exit(2, f"error: {args.out} holds other architectures (another --space, --seed or file); "
                      "choose another --out\n")
        new = not os.path.exists(args.out) or not os.path.getsize(args.out)  # no header yet
        if args.per_layer and os.path.exists(args.per_layer):  # drop the layers of an unfinished network
            with open(args.per_layer, newline="") as f:
                keep = [r for r in csv.DictReader(f) if r["arch"] in set(done)]
            with open(args.per_layer + ".tmp", "w", newline="") as f:
                wr = csv.DictWriter(f, layer_fields)
                wr.writeheader()
                wr.writerows(keep)
            os.replace(args.per_layer + ".tmp", args.per_layer)
        with open(args.out, "a", newline="") as f_net, \
                (open(args.per_layer, "a", newline="") if args.per_layer else open(os.devnull, "w")) as f_lay:
            w_net = csv.writer(f_net)
            w_lay = csv.writer(f_lay)
            if new:
                w_net.writerow(net_fields)
            if args.per_layer and not os.path.getsize(args.per_layer):
                w_lay.writerow(layer_fields)
            todo = list(zip(archs[len(done):], strings[len(done):]))
            for k, (a, s) in enumerate(tqdm(todo, initial=len(done), total=len(strings),
                                             desc=f"measure {args.backend}", file=sys.stderr)):
                if k % args.chunk == 0:
                    backend.prefetch([space.layers(b) for b, _ in todo[k:k + args.chunk]])
                table = space.layers(a)
                m = backend.measure(table, layers=bool(args.per_layer))
                if args.per_layer:
                    t = profile.concrete(table)
                    # every computing row (0 where the backend fused it into another) and any row the
                    # backend timed (ORT's profiler: the Adds of a merge row)
                    rows = sorted({r.index for r in backend.executed_rows(t)}
                                  | set(np.nonzero(m.layer_latency_ms)[0].tolist()))
                    for i in rows:
                        r = profile.table_row(t, i)
                        w_lay.writerow([s, int(i), r.op.name, r.c_in, r.c_out, r.kernel, r.stride, r.groups,
                                        r.h, r.w, r.act, f"{m.layer_latency_ms[i]:.6g}"]
                                       + ([f"{m.layer_energy_mj[i]:.6g}"] if energy else []))
                    f_lay.flush()
                w_net.writerow([s, f"{m.latency_ms:.6g}", f"{m.spread_ms:.6g}"]
                               + ([f"{m.energy_mj:.6g}"] if energy else []))  # last: marks it done
                f_net.flush()
    finally:  # a worker pool (zigzag) ends with the command, also on an error
        backend.close()


if __name__ == "__main__":
    main(sys.argv[1:])
