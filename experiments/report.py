"""Aggregate workdirs into a table and plots: `python -m experiments.report DIR... [--out PREFIX]`.

Every folder under the given directories that holds a `results.json` is one run. Runs are grouped
by the config keys that differ between them, except `seed` (so a sweep over seeds becomes one row
per method), and each group reports mean +- std over its runs of
- `accuracy`: `table_accuracy` when a lookup table applies (NAS-Bench-201), else the run's accuracy;
- `latency_ms`: the measured table column named by `--latency` (e.g. `pixel3_latency_ms`), else
  the analytic latency on `--accelerator`;
- `search_seconds` (wall time of the search stages).

Writes `PREFIX.md` (a Markdown table), `PREFIX.csv` (one row per run), `PREFIX_pareto.png`
(accuracy vs latency of every run, with the Pareto front over all of them) and
`PREFIX_trajectories.png` (best-so-far accuracy per evaluation of `evolve` stages and supernet
validation accuracy per epoch of `single_shot` stages, from `metrics.jsonl`) and, for runs whose
config has a lookup table, `PREFIX_search_length.png`: the table accuracy of the architecture each
`single_shot` epoch would have returned (its argmax, logged per epoch) against the search steps so far,
per run (`search_length` in the JSON printed with `--out`).

Example:
    python -m experiments.report workdirs/ablation --out docs/ablation --latency pixel3_latency_ms
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from typing import Any, Sequence

import numpy as np

from experiments.config import flatten


def find_runs(dirs: Sequence[str]) -> list[dict[str, Any]]:
    """Loads `results.json`, the config and the metrics of every run folder under `dirs`."""
    runs = []
    for top in dirs:
        if not os.path.isdir(top):
            raise FileNotFoundError(f"{top!r} is not a directory")
        for root, subdirs, files in sorted(os.walk(top)):
            subdirs[:] = sorted(d for d in subdirs if not d.startswith(("old-", "checkpoints")))
            if "results.json" not in files:
                continue
            with open(os.path.join(root, "results.json")) as f:
                res = json.load(f)
            cfg = {}
            if os.path.exists(os.path.join(root, "config.json")):
                with open(os.path.join(root, "config.json")) as f:
                    cfg = json.load(f).get("config", {})
            metrics = []
            if os.path.exists(os.path.join(root, "metrics.jsonl")):
                with open(os.path.join(root, "metrics.jsonl")) as f:
                    metrics = [json.loads(line) for line in f if line.strip()]
            runs.append({"dir": root, "results": res, "config": flatten(cfg), "metrics": metrics})
    if not runs:
        raise FileNotFoundError(f"no results.json under {list(dirs)}")
    return runs


def run_metrics(run: dict[str, Any], latency: str, accelerator: str) -> dict[str, float]:
    r = run["results"]
    acc = r.get("table_accuracy", r.get("accuracy"))
    lat = (r.get("table_latency_ms") or {}).get(latency)
    if lat is None:
        lat = (r.get("latency_ms") or {}).get(f"analytic:{accelerator}")
    return {"accuracy": np.nan if acc is None else float(acc), "latency_ms": np.nan if lat is None else float(lat),
            "search_seconds": float(r.get("search_seconds") or 0.0)}


def group_label(run: dict[str, Any], varying: list[str]) -> str:
    def fmt(v):
        return "+".join(map(str, v)) if isinstance(v, list) else str(v)
    return ", ".join(f"{k.split('.')[-1]}={fmt(run['config'].get(k))}" for k in varying) or "all"


def varying_keys(runs: list[dict[str, Any]], ignore: Sequence[str] = ("seed",)) -> list[str]:
    keys = sorted(set().union(*(r["config"] for r in runs)))
    out = []
    for k in keys:
        if k in ignore:
            continue
        vals = {json.dumps(r["config"].get(k), sort_keys=True) for r in runs}
        if len(vals) > 1:
            out.append(k)
    return out


def pareto_front(acc: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Indices of the points no other point beats in both accuracy (max) and latency (min), by latency."""
    ok = np.flatnonzero(np.isfinite(acc) & np.isfinite(lat))
    front = [i for i in ok if not any((acc[j] >= acc[i]) & (lat[j] <= lat[i]) & ((acc[j] > acc[i]) | (lat[j] < lat[i]))
                                      for j in ok)]
    return np.asarray(sorted(front, key=lambda i: lat[i]), int)


def summarise(runs: list[dict[str, Any]], latency: str, accelerator: str,
              group_by: Sequence[str] = ()) -> list[dict[str, Any]]:
    varying = list(group_by) or varying_keys(runs)
    groups: dict[str, list[dict[str, float]]] = {}
    for r in runs:
        r["label"] = group_label(r, varying)
        r["values"] = run_metrics(r, latency, accelerator)
        groups.setdefault(r["label"], []).append(r["values"])
    rows = []
    for label, vals in groups.items():
        row: dict[str, Any] = {"group": label, "runs": len(vals)}
        for k in ("accuracy", "latency_ms", "search_seconds"):
            x = np.asarray([v[k] for v in vals], float)
            row[k] = float(np.nanmean(x)) if np.isfinite(x).any() else None
            row[f"{k}_std"] = float(np.nanstd(x)) if np.isfinite(x).any() else None
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]], latency_name: str) -> str:
    def cell(r, k, digits):
        return "n/a" if r[k] is None else f"{r[k]:.{digits}f} ± {r[k + '_std']:.{digits}f}"
    lines = [f"| group | runs | accuracy | {latency_name} | search seconds |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['group']} | {r['runs']} | {cell(r, 'accuracy', 2)} | {cell(r, 'latency_ms', 3)} | "
                     f"{cell(r, 'search_seconds', 1)} |")
    return "\n".join(lines) + "\n"


def plot(runs: list[dict[str, Any]], prefix: str, latency_name: str) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc = np.asarray([r["values"]["accuracy"] for r in runs])
    lat = np.asarray([r["values"]["latency_ms"] for r in runs])
    labels = sorted({r["label"] for r in runs})
    fig, ax = plt.subplots(figsize=(7, 5))
    for i, lab in enumerate(labels):
        sel = [j for j, r in enumerate(runs) if r["label"] == lab]
        ax.scatter(lat[sel], acc[sel], label=lab, s=25, color=plt.cm.tab20(i % 20))
    front = pareto_front(acc, lat)
    if front.size:
        ax.step(lat[front], acc[front], where="post", color="k", lw=1, label="Pareto front")
    ax.set_xlabel(latency_name)
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    out = [f"{prefix}_pareto.png"]
    fig.savefig(out[0], dpi=130)
    plt.close(fig)

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for i, r in enumerate(runs):
        color = plt.cm.tab20(labels.index(r["label"]) % 20)
        ev = [m for m in r["metrics"] if m.get("stage") == "evolve" and m.get("accuracy") is not None]
        if ev:
            a1.plot(np.arange(1, len(ev) + 1), np.maximum.accumulate([m["accuracy"] for m in ev]), color=color,
                    lw=0.8)
        ss = [m for m in r["metrics"] if m.get("stage") == "single_shot" and "val_acc" in m]
        if ss:
            a2.plot([m["epoch"] for m in ss], [m["val_acc"] for m in ss], color=color, lw=0.8)
    a1.set(xlabel="evaluations", ylabel="best accuracy so far", title="evolve")
    a2.set(xlabel="epoch", ylabel="supernet val accuracy", title="single_shot")
    fig.tight_layout()
    out.append(f"{prefix}_trajectories.png")
    fig.savefig(out[1], dpi=130)
    plt.close(fig)

    curves = search_length_curves(runs)
    if curves:
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        for i, (r, (steps, acc)) in enumerate(curves.items()):
            lab = f"{runs[r]['label']} seed {runs[r]['config'].get('seed')}"
            ax.plot(steps, acc, marker=".", lw=1, label=lab, color=plt.cm.tab10(i % 10))
        pts = np.concatenate([np.asarray(a, float) for _, a in curves.values()])
        pts = pts[np.isfinite(pts)]
        if pts.size:  # the first epochs' near-random cells would squash the curves of interest
            ax.set_ylim(np.percentile(pts, 5) - 1.0, pts.max() + 0.5)
        ax.set(xlabel="search steps (architecture + weight step pairs)", ylabel="table accuracy of the argmax cell",
               title="single_shot: found cell vs search length")
        ax.legend(fontsize=6, loc="lower right")
        fig.tight_layout()
        out.append(f"{prefix}_search_length.png")
        fig.savefig(out[-1], dpi=130)
        plt.close(fig)
    return out


def search_length_curves(runs: list[dict[str, Any]]) -> dict[int, tuple[list[int], list[float]]]:
    """Run index -> (steps after each `single_shot` epoch, table accuracy of that epoch's argmax cell),
    for runs whose config names a lookup table that exists (NAS-Bench-201)."""
    from experiments.pipeline import _data_path
    tables: dict[tuple[str, str, str], dict[str, float]] = {}
    out = {}
    for i, r in enumerate(runs):
        c = r["config"]
        path = _data_path(c.get("table.csv") or "")
        ss = [m for m in r["metrics"] if m.get("stage") == "single_shot" and "arch" in m]
        if not ss or not c.get("table.csv") or not os.path.isfile(path):
            continue
        key = (path, c.get("table.arch_column", "arch_str"), c.get("table.column", ""))
        if key not in tables:
            with open(path, newline="") as f:
                tables[key] = {row[key[1]]: float(row[key[2]]) for row in csv.DictReader(f)}
        spe = c.get("single_shot.steps_per_epoch") or None
        n_train = r["results"].get("stages", {}).get("single_shot", {}).get("steps_per_epoch")
        per = spe or n_train or 1
        out[i] = ([(m["epoch"] + 1) * per for m in ss], [tables[key].get(m["arch"], float("nan")) for m in ss])
    return out


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dirs", nargs="+", help="workdirs or folders of workdirs")
    p.add_argument("--out", default="", help="write PREFIX.md, PREFIX.csv and PREFIX_*.png")
    p.add_argument("--latency", default="pixel3_latency_ms", help="table latency column to report if present")
    p.add_argument("--accelerator", default="npu", help="analytic latency preset otherwise")
    p.add_argument("--group-by", default="", help="config keys that define a group, e.g. stages,cost.form "
                   "(default: every key that differs between runs, except seed)")
    args = p.parse_args(argv)
    try:
        runs = find_runs(args.dirs)
    except FileNotFoundError as e:
        p.exit(2, f"error: {e}\n")
    group_by = [k for k in args.group_by.split(",") if k]
    unknown = [k for k in group_by if not any(k in r["config"] for r in runs)]
    if unknown:
        p.exit(2, f"error: --group-by key(s) {unknown} are in no run's config\n")
    rows = summarise(runs, args.latency, args.accelerator, group_by)
    has_table = any(r["results"].get("table_latency_ms", {}).get(args.latency) is not None for r in runs)
    lat_name = args.latency if has_table else f"analytic:{args.accelerator} ms"
    md = markdown(rows, lat_name)
    print(md)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(f"{args.out}.md", "w") as f:
            f.write(f"Command: `python -m experiments.report {' '.join(argv if argv is not None else sys.argv[1:])}`"
                    "\n\n" + md)
        with open(f"{args.out}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["dir", "group", "seed", "architecture", "accuracy", "latency_ms", "search_seconds"])
            for r in runs:
                v = r["values"]
                w.writerow([r["dir"], r["label"], r["config"].get("seed"), r["results"].get("architecture"),
                            v["accuracy"], v["latency_ms"], v["search_seconds"]])
        for path in plot(runs, args.out, lat_name):
            print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
