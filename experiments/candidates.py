"""Candidates from a study's searches: `python -m experiments.candidates ROOT --config SPEC [--k 5] [--out PREFIX]`.

The segmentation study's A-E (the reference article: candidates at 27-51 % lower latency than the
baseline at its mIoU or better). Every finished `evolve` run under ROOT holds a front of
(capacity, latency) at its own input size and decoder stage; this merges them, keeps the networks
of no less capacity than the baseline (log10 FLOPs, the searches' stand-in for the metric) that
are faster than it on the searches' accelerator, takes their non-dominated set and picks `k`
spread over latency (`supernet.pareto.spread`; A the fastest). `--fastest-at PX` adds, lettered
after them, the fastest such network of every decoder stage at input size PX (e.g. the baseline's
own resolution, whose networks the merged front can hide behind smaller inputs); with `--at-cut F`
also the network of most capacity among those at least F faster there (below the baseline's
capacity if need be: capacity is a loose proxy of the metric, which retraining then measures). The baseline is the run under ROOT
whose stages start with `baseline` (its config suffices: it may still be training), costed the
same way. For each candidate it prints its resolution, capacity, latency and cut, and the command
that retrains it with the baseline's schedule (stage `given`; `--seeds` of them).

Writes `PREFIX.md` (the table and the commands), `PREFIX.json` (the candidates) and
`PREFIX_fronts.png` (the fronts, the baseline and the candidates) with `--out`.

Example:
    python -m experiments.candidates workdirs/seg_study --config experiments/configs/segmentation/person_fpn.py \\
        --out docs/results/segmentation_candidates
"""

from __future__ import annotations

import argparse
import json
import os
import string
import sys
from typing import Any, Sequence

import numpy as np

from experiments.config import cli_errors, flatten
from experiments.hardware_report import space_of_run
from experiments.report import find_runs

#: Config keys that place a network at its resolution: they travel into each retraining command.
RESOLUTION_KEYS = ("space.kwargs.input_size", "data.input_size", "space.kwargs.decoder_stage")


def _baseline_costs(cfg: dict[str, Any]) -> tuple[float, float]:
    """`(log10 FLOPs, analytic latency ms on cost.accelerator)` of the baseline architecture of
    `cfg`'s space (flattened config keys)."""
    from hwmodel import analytic
    from hwmodel.accelerators import ACCELERATORS
    from supernet.evaluators import CapacityEvaluator
    space = space_of_run({"config": cfg})
    arch = space.baseline_arch()
    cap = float(CapacityEvaluator(space)(np.asarray(arch)[None])["capacity"][0])
    return cap, float(analytic.latency_ms(ACCELERATORS[cfg.get("cost.accelerator", "npu")], space.layers(arch)))


def load(root: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """`(baseline config, searches)` under `root`: the first run whose stages start with `baseline`
    (finished or not) and every finished `evolve` run with a front.

    Raises:
      ValueError: no baseline run or no finished search under `root`.
    """
    runs, unfinished = find_runs([root])

    def config(path: str) -> dict[str, Any]:
        with open(os.path.join(path, "config.json")) as f:
            return flatten(json.load(f)["config"])

    configs = [r["config"] for r in runs] + [config(d) for d in unfinished]
    base = next((c for c in configs if (c.get("stages") or [None])[0] == "baseline"), None)
    searches = [r for r in runs if r["results"].get("stages", {}).get("evolve", {}).get("front")]
    if base is None:
        raise ValueError(f"no run under {root} starts with the 'baseline' stage; start the study's baseline "
                         "first (its config is enough)")
    if not searches:
        raise ValueError(f"no finished evolve run with a front under {root}; run the study's searches first")
    return base, searches


def pick(base: dict[str, Any], searches: list[dict[str, Any]], k: int, fastest_at: Sequence[int] = (),
         at_cut: float | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """`(the baseline's costs, the k candidates, then per decoder stage at each input size of
    `fastest_at` the fastest and, with `at_cut`, the most capacity at that cut)`: module
    docstring. Each candidate has `name`
    (A, B, ...), `arch`, `capacity`, `latency_ms`, `cut`, `dir` (its search) and `overrides`."""
    from supernet.pareto import non_dominated, spread
    cap0, lat0 = _baseline_costs(base)
    pool, fast = [], []  # fast: at least `at_cut` faster, any capacity
    for r in searches:
        c = r["config"]
        lat_key = f"latency_ms:{c.get('cost.accelerator', 'npu')}"
        for p in r["results"]["stages"]["evolve"]["front"]:
            cap, lat = p.get("capacity_log10_flops"), p.get(lat_key)
            if cap is None or lat is None:
                raise ValueError(f"{r['dir']}: its front lacks capacity_log10_flops or {lat_key}; the candidates "
                                 "come from capacity searches (evolve.evaluator='capacity') with a latency model")
            net = {"arch": p["arch"], "capacity": float(cap), "latency_ms": float(lat), "dir": r["dir"],
                   "overrides": {k_: c[k_] for k_ in RESOLUTION_KEYS if k_ in c}}
            if cap >= cap0 and lat < lat0:
                pool.append(net)
            if at_cut is not None and lat <= (1.0 - at_cut) * lat0:
                fast.append(net)
    if not pool:
        return {"capacity": cap0, "latency_ms": lat0}, []
    pts = np.asarray([[p["capacity"], p["latency_ms"]] for p in pool])
    front = [pool[i] for i in np.flatnonzero(non_dominated(pts, ("max", "min")))]
    chosen = [front[i] for i in spread(np.asarray([p["latency_ms"] for p in front]), k)]
    for px in fastest_at:  # per (input size, decoder stage): the fastest, unless already chosen
        chosen += _best_per_stage(pool, px, chosen, lambda q: q["latency_ms"])
    for px in fastest_at if at_cut is not None else ():  # ... and the most capacity at the cut
        chosen += _best_per_stage(fast, px, chosen, lambda q: -q["capacity"])
    for letter, p in zip(string.ascii_uppercase, chosen):
        p["name"], p["cut"] = letter, 1.0 - p["latency_ms"] / lat0
    return {"capacity": cap0, "latency_ms": lat0}, chosen


def _best_per_stage(nets: list[dict[str, Any]], px: int, chosen: list[dict[str, Any]], key) -> list[dict[str, Any]]:
    """The best network by `key` (lowest) of each decoder stage at input size `px`, unless already
    chosen, fastest first."""
    at = {}
    for p in nets:
        o = p["overrides"]
        if o.get("space.kwargs.input_size") == px:
            stage = o.get("space.kwargs.decoder_stage")
            at[stage] = min(at.get(stage, p), p, key=key)
    return sorted((p for p in at.values() if p not in chosen), key=lambda q: q["latency_ms"])


def commands(spec: str, root: str, cands: list[dict[str, Any]], seeds: int) -> list[str]:
    """The retraining command of each candidate and seed (stage `given` then `retrain`)."""
    out = []
    for p in cands:
        over = " ".join(f"--config.{k}={v}" for k, v in p["overrides"].items())
        for s in range(seeds):
            out.append(f"python -m experiments.run --config {spec}:given {over} --config.given.arch='{p['arch']}' "
                       f"--config.given.name={p['name']} --config.seed={s} --workdir {root}/2_{p['name']}/seed={s}")
    return out


def markdown(base: dict[str, Any], cands: list[dict[str, Any]], cmds: list[str]) -> str:
    lines = [f"Baseline: capacity (log10 FLOPs) {base['capacity']:.3f}, analytic latency {base['latency_ms']:.3f} ms. "
             "Candidates: no less capacity, faster, non-dominated over every search, spread over latency; "
             "after them those of `--fastest-at` / `--at-cut` (`experiments.candidates`).\n",
             "| candidate | input px | decoder stage | log10 FLOPs | latency ms | latency cut | architecture | search |",
             "|---|---|---|---|---|---|---|---|"]
    for p in cands:
        o = p["overrides"]
        lines.append(f"| {p['name']} | {o.get('space.kwargs.input_size', '')} | {o.get('space.kwargs.decoder_stage', '')} | "
                     f"{p['capacity']:.3f} | {p['latency_ms']:.3f} | {p['cut']:.1%} | `{p['arch']}` | {p['dir']} |")
    if not cands:
        lines.append("\nNo search found a network of the baseline's capacity that is faster.")
    return "\n".join(lines) + "\n\nRetraining commands:\n\n```bash\n" + "\n".join(cmds) + "\n```\n"


def plot_fronts(base: dict[str, Any], searches: list[dict[str, Any]], cands: list[dict[str, Any]], path: str) -> str:
    """`path`: every search's front (capacity vs latency, one colour per resolution), the baseline
    and the lettered candidates."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for r in sorted(searches, key=lambda r: r["dir"]):
        c = r["config"]
        lat_key = f"latency_ms:{c.get('cost.accelerator', 'npu')}"
        pts = sorted((p[lat_key], p["capacity_log10_flops"]) for p in r["results"]["stages"]["evolve"]["front"])
        ax.plot(*zip(*pts), ".-", ms=3, lw=0.8, alpha=0.8,
                label=f"{c.get('space.kwargs.input_size', '?')} px, decoder stage {c.get('space.kwargs.decoder_stage', '?')}")
    ax.plot([base["latency_ms"]], [base["capacity"]], "k*", ms=14, label="baseline")
    ax.axhline(base["capacity"], color="k", lw=0.6, ls=":")
    for p in cands:
        ax.annotate(p["name"], (p["latency_ms"], p["capacity"]), xytext=(4, -12), textcoords="offset points",
                    fontsize=11, weight="bold")
        ax.plot([p["latency_ms"]], [p["capacity"]], "ro", mfc="none", ms=9)
    ax.set_xlabel("analytic latency (ms)")
    ax.set_ylabel("capacity (log10 FLOPs)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root", help="the study's sweep folder (baseline and searches)")
    p.add_argument("--config", required=True, help="the study's config file, for the retraining commands")
    p.add_argument("--k", type=int, default=5, help="how many candidates (default 5: A-E)")
    p.add_argument("--seeds", type=int, default=3, help="retraining seeds per candidate")
    p.add_argument("--fastest-at", type=int, action="append", default=[], metavar="PX",
                   help="add the fastest candidate of each decoder stage at this input size (repeatable)")
    p.add_argument("--at-cut", type=float, default=None, metavar="F",
                   help="with --fastest-at: also the most capacity at >= F lower latency (e.g. 0.5)")
    p.add_argument("--out", default="", help="write PREFIX.md and PREFIX.json")
    args = p.parse_args(argv)
    if args.k < 1 or args.seeds < 1:
        p.exit(2, "error: --k and --seeds must be >= 1\n")
    if args.at_cut is not None and not (0 < args.at_cut < 1 and args.fastest_at):
        p.exit(2, "error: --at-cut F needs 0 < F < 1 and an input size from --fastest-at\n")
    with cli_errors(p, also=(ValueError,)):
        base_cfg, searches = load(args.root)
        base, cands = pick(base_cfg, searches, args.k, args.fastest_at, args.at_cut)
    cmds = commands(args.config, args.root.rstrip("/"), cands, args.seeds)
    md = markdown(base, cands, cmds)
    print(md)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(f"{args.out}.md", "w") as f:
            f.write(f"Command: `python -m experiments.candidates {' '.join(argv if argv is not None else sys.argv[1:])}`\n\n{md}")
        with open(f"{args.out}.json", "w") as f:
            json.dump({"baseline": base, "candidates": cands}, f, indent=1)
        print(f"wrote {plot_fronts(base, searches, cands, f'{args.out}_fronts.png')}")
    return cands


if __name__ == "__main__":
    main(sys.argv[1:])
