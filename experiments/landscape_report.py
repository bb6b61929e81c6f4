"""The `landscape` stage's part of `experiments.report`: a table of its measures per group (mean and
std over seeds) and the three-panel figure of the reference article (the objective on a 2-D slice
through two width decisions, its discrete points and a descent inside the slice)."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

#: Measures shown, with their column headings (see `supernet.landscape`).
COLUMNS = {
    "line_minima_mean": "minima per width line",
    "line_unimodal_share": "unimodal lines",
    "line_plateau_share": "plateau moves (HW alone)",
    "descent_steps_mean": "descent steps",
    "walk_correlation_length": "walk correlation length (moves)",
    "walk_minimum_share": "walk minima share",
    "space_size_log10": "log10 space size",
}


def is_landscape(run: dict[str, Any]) -> bool:
    """Whether a run is a `landscape` study (it has no accuracy to tabulate or plot)."""
    return "landscape" in run["results"].get("stages", {})


def landscape_runs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in runs if is_landscape(r)]


def landscape_markdown(runs: list[dict[str, Any]]) -> str:
    """One row per group (`label` set by `report.summarise`): each measure's mean +- std over seeds."""
    groups: dict[str, list[dict[str, float]]] = {}
    for r in landscape_runs(runs):
        groups.setdefault(r["label"], []).append(r["results"]["stages"]["landscape"]["measures"])
    if not groups:
        return ""
    out = [("Landscape (`landscape` stage; `J = HW / HW(ref) - alpha log(MACs / MACs(ref))`, see "
            "`supernet/landscape.py`):\n"), "| group | seeds | " + " | ".join(COLUMNS.values()) + " |",
           "|---|---|" + "---|" * len(COLUMNS)]
    for label, ms in groups.items():
        cells = []
        for k in COLUMNS:
            x = np.asarray([m.get(k, np.nan) for m in ms], float)
            cells.append("n/a" if not np.isfinite(x).any() else f"{np.nanmean(x):.2f} ± {np.nanstd(x):.2f}")
        out.append(f"| {label} | {len(ms)} | " + " | ".join(cells) + " |")
    lines = [(r["label"], r["config"].get("seed"), name, m) for r in landscape_runs(runs)
             for name, m in r["results"]["stages"]["landscape"].get("measured", {}).items()]
    if lines:
        out += ["", ("Measured line through the baseline (the hardware term from a measurement backend, next to "
                     "the analytic model on the same points; strict minima, plateaus collapsed):\n"),
                ("| group | seed | backend | line | points | minima of J, analytic | minima of J, measured | "
                 "minima of the measured latency alone | measured latency (ms) |"), "|---|---|---|---|---|---|---|---|---|"]
        for label, seed, name, m in lines:
            lat = np.asarray(m["latency_ms"])
            out.append(f"| {label} | {seed} | {name} | {m['decision']} | {len(lat)} | {m['analytic_minima']} | "
                       f"{m['minima']} | {m['latency_minima']} | {lat.min():.4f}-{lat.max():.4f} |")
    return "\n".join(out) + "\n"


def _slice(run: dict[str, Any]) -> dict[str, Any]:
    with open(os.path.join(run["dir"], "stages", "landscape.json")) as f:
        return json.load(f)["slice"]


def plot_landscape(runs: list[dict[str, Any]], prefix: str) -> list[str]:
    """`PREFIX_landscape.png`: one panel per group (its lowest seed's slice), as the article's figure:
    the objective over the grid's widths (one cell per point), the discrete points (black, where the
    grid is sparse enough to see them) and the descent from the slice's smallest corner (blue)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first: dict[str, dict[str, Any]] = {}
    for r in sorted(landscape_runs(runs), key=lambda r: r["config"].get("seed", 0)):
        first.setdefault(r["label"], r)
    if not first:
        return []
    fig, axes = plt.subplots(1, len(first), figsize=(4.6 * len(first), 4.2), squeeze=False)
    for ax, (label, run) in zip(axes[0], first.items()):
        s = _slice(run)
        c0, c1 = (np.asarray(c, float) for c in s["choices"])
        z = np.asarray(s["objective"], float)
        # nearest-value cells, not a contour: a contour would interpolate the staircase away
        mesh = ax.pcolormesh(c1, c0, z, shading="nearest", cmap="Greens_r")
        fig.colorbar(mesh, ax=ax, shrink=0.8, label="J")
        if z.size <= 400:
            g1, g0 = np.meshgrid(c1, c0)
            ax.scatter(g1, g0, s=12, color="k", zorder=3)
        path = np.asarray(s["descent"], int)
        xs, ys = c1[path[:, 1]], c0[path[:, 0]]
        ax.plot(xs, ys, color="tab:blue", lw=1.2, zorder=4)
        if len(path) > 1:
            ax.annotate("", xy=(xs[-1], ys[-1]), xytext=(xs[-2], ys[-2]),
                        arrowprops=dict(arrowstyle="->", color="tab:blue", lw=1.5), zorder=5)
        ax.scatter(xs[:1], ys[:1], s=30, color="tab:blue", marker="s", zorder=5)
        cost = run["results"]["stages"]["landscape"].get("cost", "")
        ends = z[path[0, 0], path[0, 1]], z[path[-1, 0], path[-1, 1]]
        ax.set(xlabel=f"{s['decisions'][1]} (channels)", ylabel=f"{s['decisions'][0]} (channels)",
               title=f"{run['results'].get('space', '')}, {cost}\nJ {ends[0]:.3f} -> {ends[1]:.3f} in "
                     f"{len(path) - 1} steps (slice's lowest {z.min():.3f})")
    fig.tight_layout()
    out = [f"{prefix}_landscape.png"]
    fig.savefig(out[0], dpi=130)
    plt.close(fig)
    lines = [(r["label"], name, m) for r in landscape_runs(runs)
             for name, m in r["results"]["stages"]["landscape"].get("measured", {}).items()]
    if lines:  # `PREFIX_landscape_measured.png`: J along the measured line, analytic vs measured
        fig, axes = plt.subplots(1, len(lines), figsize=(4.6 * len(lines), 3.6), squeeze=False)
        for ax, (label, name, m) in zip(axes[0], lines):
            x = np.asarray(m["choices"])
            ax.plot(x, m["analytic_objective"], ".-", lw=0.8, ms=3, label="analytic")
            ax.plot(x, m["objective"], ".-", lw=0.8, ms=3, label=name)
            ax.set(xlabel=f"{m['decision']} (channels)", ylabel="J",
                   title=f"{label}: minima {m['analytic_minima']} vs {m['minima']}")
            ax.legend(fontsize=7)
        fig.tight_layout()
        out.append(f"{prefix}_landscape_measured.png")
        fig.savefig(out[-1], dpi=130)
        plt.close(fig)
    return out
