"""Aggregate workdirs into a table and plots: `python -m experiments.report DIR... [--out PREFIX]`.

Every folder under the given directories that holds a `results.json` is one run. Runs are grouped
by the config keys that differ between them, except `seed` (so a sweep over seeds becomes one row
per method), and each group reports mean +- std over its runs of
- `accuracy`: `table_accuracy_pct` when a lookup table applies (NAS-Bench-201), else the run's `accuracy_pct`
  (older workdirs: their `table_accuracy` / `accuracy`, whose unit the `accuracy_source` names);
- `latency_ms`: the measured table column named by `--latency` (e.g. `pixel3_latency_ms`), else
  the analytic latency on `--accelerator`;
- `search_seconds` (wall time of the search stages).

Writes `PREFIX.md` (a Markdown table), `PREFIX.csv` (one row per run), `PREFIX_pareto.png`
(accuracy vs latency of every run, with the Pareto front over all of them) and
`PREFIX_trajectories.png` (best-so-far accuracy per evaluation of `evolve` stages and supernet
validation accuracy per epoch of `single_shot` stages, from `metrics.jsonl`) and, for runs whose
config has a lookup table, `PREFIX_search_length.png`: the table accuracy of the architecture each
`single_shot` epoch would have returned (its argmax, logged per epoch) against the search steps so far,
per run (`search_length` in the JSON printed with `--out`). Runs of the `landscape` stage add a table
of its measures and `PREFIX_landscape.png` (`experiments.landscape_report`); `evolve` runs with the
`capacity` evaluator the searched-for x run-on accelerator matrix, or the raw vs curated convergence
table and `PREFIX_convergence.png` (`experiments.hardware_report`); retrained arms beside a retrained
`baseline` arm the latency reduction per cost model, the metric's distance to the baseline in seed
stds and the fused blocks (`experiments.study_report`).

Example:
    python -m experiments.report workdirs/ablation --out docs/results/ablation --latency pixel3_latency_ms
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from typing import Any, Sequence

import numpy as np

from experiments.config import cli_errors, flatten
from experiments.hardware_report import (blocks_markdown, convergence_markdown, is_capacity_search, matrix_markdown, arms_markdown,
                                         plot_convergence)
from experiments.landscape_report import is_landscape, landscape_markdown, landscape_runs, plot_landscape
from experiments.study_report import fusion_markdown, study_markdown


def find_runs(dirs: Sequence[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """`(runs, unfinished)`: the `results.json`, config and metrics of every finished run folder
    under `dirs`, and the folders of runs that have a config but no results yet."""
    runs, unfinished = [], []
    for top in dirs:
        if not os.path.isdir(top):
            raise FileNotFoundError(f"{top!r} is not a directory")
        for root, subdirs, files in sorted(os.walk(top)):
            subdirs[:] = sorted(d for d in subdirs if not d.startswith(("old-", "checkpoints", ".")))
            if "results.json" not in files:
                if "config.json" in files:  # a run that started and has not finished (or died)
                    unfinished.append(root)
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
        raise FileNotFoundError(f"no results.json under {list(dirs)}"
                                + (f" ({len(unfinished)} unfinished runs: {', '.join(unfinished[:5])})" if unfinished else ""))
    return runs, unfinished


def run_metrics(run: dict[str, Any], latency: str, accelerator: str) -> dict[str, Any]:
    """The run's accuracy and latency, each with its source and unit (the report never puts two
    sources or units in one column): the table's accuracy (percent) when a lookup table applies,
    else the run's own (`accuracy_source`); the table's latency column, else the analytic model."""
    r, c = run["results"], run["config"]
    table = r.get("table_accuracy_pct", r.get("table_accuracy"))  # (`table_accuracy`: workdirs before 2026-12-04)
    if table is not None:
        acc, acc_src = table, f"table {c.get('table.column') or 'accuracy'} (%)"
    elif "accuracy_pct" in r:
        acc, src = r["accuracy_pct"], r.get("accuracy_source") or "accuracy"
        acc_src = f"{src.split(':')[0]} {'score' if 'score' in src else 'accuracy'} (%)"
    else:  # results.json before 2026-12-04: `accuracy` a fraction, or the table's percent
        acc = r.get("accuracy")
        src = r.get("accuracy_source") or "accuracy"
        unit = "%" if "percent" in src else "fraction"
        acc_src = f"{src.split(':')[0]} {'score' if 'score' in src else 'accuracy'} ({unit})"
    lat = (r.get("table_latency_ms") or {}).get(latency)
    lat_src = f"table {latency}"
    if lat is None:
        lat, lat_src = (r.get("latency_ms") or {}).get(f"analytic:{accelerator}"), f"analytic:{accelerator} ms"
    return {"accuracy": np.nan if acc is None else float(acc), "latency_ms": np.nan if lat is None else float(lat),
            "search_seconds": float(r.get("search_seconds") or 0.0),
            "section": (str(r.get("space") or c.get("space.name") or "?"), acc_src, lat_src)}


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
    """Mean and std per group, groups inside sections of comparable runs (same space, accuracy
    source and unit, latency source): a group never mixes them."""
    varying = list(group_by) or varying_keys(runs)
    groups: dict[tuple, list[dict[str, float]]] = {}
    for r in runs:
        r["label"] = group_label(r, varying)
        r["values"] = run_metrics(r, latency, accelerator)
        groups.setdefault((r["values"]["section"], r["label"]), []).append(r["values"])
    rows = []
    for (section, label), vals in groups.items():
        row: dict[str, Any] = {"group": label, "runs": len(vals), "space": section[0],
                               "accuracy_source": section[1], "latency_source": section[2]}
        for k in ("accuracy", "latency_ms", "search_seconds"):
            x = np.asarray([v[k] for v in vals], float)
            row[k] = float(np.nanmean(x)) if np.isfinite(x).any() else None
            row[f"{k}_std"] = float(np.nanstd(x)) if np.isfinite(x).any() else None
        rows.append(row)
    return rows


def sections(rows: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """The distinct (space, accuracy source, latency source) of `rows`, in order of appearance."""
    return list(dict.fromkeys((r["space"], r["accuracy_source"], r["latency_source"]) for r in rows))


def markdown(rows: list[dict[str, Any]], unfinished: Sequence[str] = ()) -> str:
    """One table per section of comparable runs, every column labelled with its unit and source."""
    def cell(r, k, digits):
        return "n/a" if r[k] is None else f"{r[k]:.{digits}f} ± {r[k + '_std']:.{digits}f}"
    out = []
    secs = sections(rows)
    for space, acc_src, lat_src in secs:
        if len(secs) > 1:
            out.append(f"Space `{space}`:\n")
        out += [f"| group | runs | accuracy: {acc_src} | latency: {lat_src} | search seconds |",
                "|---|---|---|---|---|"]
        for r in rows:
            if (r["space"], r["accuracy_source"], r["latency_source"]) == (space, acc_src, lat_src):
                out.append(f"| {r['group']} | {r['runs']} | {cell(r, 'accuracy', 2)} | {cell(r, 'latency_ms', 3)} | "
                           f"{cell(r, 'search_seconds', 1)} |")
        out.append("")
    if unfinished:
        out.append(f"Unfinished runs (no results.json yet, not in the tables): {', '.join(unfinished)}\n")
    return "\n".join(out)


def _short(label: str, n: int = 48) -> str:
    return label if len(label) <= n else label[: n - 1] + "…"


def plot(runs: list[dict[str, Any]], prefix: str) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = sorted({r["label"] for r in runs})
    secs = list(dict.fromkeys(r["values"]["section"] for r in runs))
    # one panel per section of comparable runs (a front over mixed units or sources means nothing);
    # the legend sits outside the axes so that long group labels never cover the points
    fig, axes = plt.subplots(1, len(secs), figsize=(5.5 * len(secs) + 3.5, 4.6), squeeze=False)
    for ax, sec in zip(axes[0], secs):
        sub = [r for r in runs if r["values"]["section"] == sec]
        acc = np.asarray([r["values"]["accuracy"] for r in sub])
        lat = np.asarray([r["values"]["latency_ms"] for r in sub])
        for i, lab in enumerate(labels):
            sel = [j for j, r in enumerate(sub) if r["label"] == lab]
            if sel:
                ax.scatter(lat[sel], acc[sel], label=_short(lab), s=25, color=plt.cm.tab20(i % 20))
        front = pareto_front(acc, lat)
        if front.size:
            ax.step(lat[front], acc[front], where="post", color="k", lw=1, label="Pareto front")
        ax.set(xlabel=f"latency: {sec[2]}", ylabel=f"accuracy: {sec[1]}", title=f"space {sec[0]}")
    handles = {h.get_label(): h for ax in axes[0] for h in ax.get_legend_handles_labels()[0]}
    fig.legend(handles.values(), handles.keys(), fontsize=6, loc="center left", bbox_to_anchor=(0.99, 0.5),
               frameon=False)
    fig.tight_layout()
    out = [f"{prefix}_pareto.png"]
    fig.savefig(out[0], dpi=130, bbox_inches="tight")
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
    from experiments.context import data_path
    tables: dict[tuple[str, str, str], dict[str, float]] = {}
    out = {}
    for i, r in enumerate(runs):
        c = r["config"]
        path = data_path(c.get("table.csv") or "")
        ss = [m for m in r["metrics"] if m.get("stage") == "single_shot" and "arch" in m]
        if not ss or not c.get("table.csv") or not os.path.isfile(path):
            continue
        key = (path, c.get("table.arch_column", "arch_str"), c.get("table.column", ""))
        if key not in tables:
            from hwmodel.tables import numbers, read_csv, require_columns
            header, rows = read_csv(path, "lookup table (config table.csv)")
            require_columns(path, header, key[1:])
            tables[key] = dict(zip((row[key[1]] for row in rows), numbers(path, rows, key[2]).tolist()))
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
    with cli_errors(p, also=(ValueError,)):  # a missing folder, an unreadable or edited JSON file
        runs, unfinished = find_runs(args.dirs)
    group_by = [k for k in args.group_by.split(",") if k]
    unknown = [k for k in group_by if not any(k in r["config"] for r in runs)]
    if unknown:
        p.exit(2, f"error: --group-by key(s) {unknown} are in no run's config\n")
    with cli_errors(p):  # a lookup table with a bad row, an unknown accelerator preset
        rows = summarise(runs, args.latency, args.accelerator, group_by)
    studies = landscape_runs(runs)
    # landscape studies and hardware-only runs (capacity searches, arms without training) have no
    # accuracy: they get tables of their own
    searches = [r for r in runs if not is_landscape(r) and not is_capacity_search(r)
                and np.isfinite(r["values"]["accuracy"])]
    parts = [markdown([row for row in rows if any(r["label"] == row["group"] for r in searches)], unfinished)
             if searches else "", landscape_markdown(runs) if studies else "",
             study_markdown(runs), fusion_markdown(runs),
             matrix_markdown(runs), arms_markdown(runs), blocks_markdown(runs), convergence_markdown(runs)]
    md = "\n".join(p for p in parts if p)
    print(md)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(f"{args.out}.md", "w") as f:
            f.write(f"Command: `python -m experiments.report {' '.join(argv if argv is not None else sys.argv[1:])}`"
                    "\n\n" + md)
        with open(f"{args.out}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["dir", "group", "seed", "space", "architecture", "accuracy", "accuracy_source", "latency_ms",
                        "latency_source", "search_seconds"])
            for r in runs:
                v = r["values"]
                w.writerow([r["dir"], r["label"], r["config"].get("seed"), v["section"][0], r["results"].get("architecture"),
                            v["accuracy"], v["section"][1], v["latency_ms"], v["section"][2], v["search_seconds"]])
        for path in (plot(searches, args.out) if searches else []) + plot_landscape(runs, args.out) + plot_convergence(runs, args.out):
            print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
