"""The hardware-search part of `experiments.report`: runs of `evolve` with the training-free
`capacity` evaluator (the most log10 FLOPs under a latency target; `experiments/configs/mobile/
accelerators.py` and `convergence.py`).

- `matrix_markdown`: the design-phase sweep (issue 25 part 5). One row per accelerator searched for
  (`cost.accelerator`), what the search chose (multiplier, stage widths, block types) and, per
  accelerator run on, the found network's latency divided by that accelerator's own target (0.6 x
  MobileNetV2 there: <= 1 meets it), next to the capacity and the measured latencies (ZigZag, ONNX
  Runtime on this CPU) of `report.measured`.
- `arms_markdown`: hardware-only arms against the `baseline` arm (the memory budget of part 4:
  baseline, rules, NAS, rules + NAS; the latency cut of parts 2-3: rules vs NAS): both memories,
  their cut, whether the exact memory model says the budgets are met, the capacity, the latency
  and its cut.
- `convergence_markdown` / `plot_convergence`: evolution (and the gradient search of the `descend`
  stage) on `mobile-raw` vs `mobile-curated` with the same target and budget (part 1): the best
  feasible capacity so far per evaluation (or step), and the evaluations until a run first meets
  the target at the capacity every run of the same search reaches.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Block type letters (`supernet.spaces.mobile.BLOCK_TYPES`): IBN, fused IBN, skip.
_LETTERS = {"ibn": "I", "fused": "F", "skip": "-"}


def search_stage(run: dict[str, Any]) -> str:
    """The stage that searched for capacity: `descend` (the gradient search) or `evolve`."""
    return "descend" if "descend" in run["results"].get("stages", {}) else "evolve"


def is_capacity_search(run: dict[str, Any]) -> bool:
    """An `evolve` run whose fitness is the `capacity` proxy, or a `descend` run, that trained nothing
    after it (no accuracy to tabulate; one with a `retrain` stage has one)."""
    stages = run["results"].get("stages", {})
    return "retrain" not in stages and ("descend" in stages or (
        run["config"].get("evolve.evaluator") == "capacity" and "evolve" in stages))


def capacity_runs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in runs if is_capacity_search(r)]


def space_of_run(run: dict[str, Any]):
    """The search space the run recorded (its flattened `space.*` config keys)."""
    from supernet.spaces import make_space
    c = run["config"]
    return make_space(c["space.name"], **{k[len("space.kwargs."):]: v for k, v in c.items()
                                          if k.startswith("space.kwargs.")})


def _design(run: dict[str, Any]) -> tuple[str, str, str]:
    """`(multiplier, actual stage widths, block types by stage)` of the run's architecture."""
    space = space_of_run(run)
    arch = space.decode(run["results"]["architecture"])
    types = [space.decisions[d].choices[arch[d]] for d in space.type_ids]
    stages = np.cumsum(space.blocks_per_stage)[:-1]
    letters = "/".join("".join(_LETTERS[t] for t in part) for part in np.split(np.asarray(types), stages))
    widths = "-".join(str(int(w)) for w in space.stage_widths(arch))
    return f"{space.multipliers[arch[space.mult_id]]:g}", widths, letters


def _capacity(run: dict[str, Any]) -> float:
    return float(run["results"]["stages"][search_stage(run)]["capacity_log10_flops"])


def matrix_markdown(runs: list[dict[str, Any]]) -> str:
    """The searched-for x run-on table (module docstring); empty unless the capacity searches
    target two or more accelerators."""
    by_acc: dict[str, dict[str, Any]] = {}
    for r in sorted(capacity_runs(runs), key=lambda r: r["config"].get("seed", 0)):
        by_acc.setdefault(r["config"]["cost.accelerator"], r)  # the lowest seed of each accelerator
    if len(by_acc) < 2:
        return ""
    targets = {a: r["results"].get("latency_target_ms") for a, r in by_acc.items()}
    analytic = list(by_acc)
    measured = sorted({k for r in by_acc.values() for k in r["results"]["latency_ms"] if not k.startswith("analytic:")})
    out = [("Design-phase sweep (`evolve` for the most capacity, log10 FLOPs, under a latency target of 0.6 x "
            "MobileNetV2 on the accelerator searched for; one row per accelerator searched for). Block types "
            "by stage (stages split by /): I = IBN, F = fused IBN, - = skip. Run-on columns: the found network's analytic latency "
            "on that accelerator divided by that accelerator's own target (bold: <= 1, the target is met; the "
            "diagonal is the search's own). Measured: ms.\n"),
           "| searched for | target ms | log10 FLOPs | mult | stage widths | block types | "
           + " | ".join(f"on {a}" for a in analytic) + " | " + " | ".join(f"{m} ms" for m in measured) + " |",
           "|---|---|---|---|---|---|" + "---|" * (len(analytic) + len(measured))]
    for acc, r in by_acc.items():
        lat = r["results"]["latency_ms"]
        cells = []
        for a in analytic:
            v, t = lat.get(f"analytic:{a}"), targets.get(a)
            if v is None or not t:
                cells.append("n/a")
                continue
            ratio = v / t
            cells.append(f"**{ratio:.2f}**" if ratio <= 1 + 1e-9 else f"{ratio:.2f}")
        cells += [f"{lat[m]:.3f}" if m in lat else "n/a" for m in measured]
        mult, widths, letters = _design(r)
        out.append(f"| {acc} | {targets[acc]:.4g} | {_capacity(r):.3f} | {mult} | {widths} | `{letters}` | "
                   + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def _budgets(run: dict[str, Any]) -> dict[str, float]:
    """The run's memory budgets by cost key (`supernet.objectives.MEMORY_BUDGETS`)."""
    from supernet.objectives import MEMORY_BUDGETS
    c = run["config"]
    return {k: float(c[f"cost.{f}"]) for f, k in MEMORY_BUDGETS.items() if c.get(f"cost.{f}") is not None}


def _baseline_of_hardware_study(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The `baseline` arm, when no run has an accuracy (a trained study has the main table)."""
    base = [r for r in runs if r["config"].get("stages") == ["baseline"]]
    if not base or any(np.isfinite(r.get("values", {}).get("accuracy", np.nan)) for r in runs):
        return None
    return base[0]


def arms_markdown(runs: list[dict[str, Any]]) -> str:
    """Hardware-only arms against the baseline (module docstring): empty unless one run is the
    `baseline` arm and no run has an accuracy (a trained study has the main table)."""
    base = _baseline_of_hardware_study(runs)
    if base is None:
        return ""
    ref = base["results"]
    budgets = next((_budgets(r) for r in runs if _budgets(r)), {})
    acc = base["config"].get("cost.accelerator", "npu")
    lat = f"analytic:{acc}"
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault(r.get("label", r["dir"]), []).append(r)
    head = ("Memory budget: " + ", ".join(f"{k} <= {v:,.0f}" for k, v in budgets.items())
            + f" (exact `hwmodel.memory` on `{acc}`); " if budgets else "")
    out = [(head + "cut = 1 - arm / baseline; mean ± std over seeds. log10 FLOPs is the searches' capacity "
            "proxy, not an accuracy.\n"),
           "| arm | runs | params bytes | params cut | peak activation bytes | peak cut | "
           + ("budgets met | " if budgets else "") + f"log10 FLOPs | latency ms (analytic {acc}) | latency cut |",
           "|---|---|---|---|---|---|---|---|---|" + ("---|" if budgets else "")]

    def ms(x, fmt):
        x = np.asarray(x, float)
        return f"{x.mean():{fmt}} ± {x.std():{fmt}}"

    for label, rs in groups.items():
        res = [r["results"] for r in rs]
        p = [x["params_bytes"] for x in res]
        a = [x["peak_activation_bytes"] for x in res]
        t = [x["latency_ms"][lat] for x in res]
        met = sum(all(x[k] <= v for k, v in budgets.items()) for x in res)
        out.append(f"| {label} | {len(rs)} | {ms(p, ',.0f')} | {ms(1 - np.asarray(p) / ref['params_bytes'], '.1%')} | "
                   f"{ms(a, ',.0f')} | {ms(1 - np.asarray(a) / ref['peak_activation_bytes'], '.1%')} | "
                   + (f"{met}/{len(rs)} | " if budgets else "")
                   + f"{ms(np.log10([x['flops'] for x in res]), '.3f')} | {ms(t, '.3f')} | "
                   f"{ms(1 - np.asarray(t) / ref['latency_ms'][lat], '.1%')} |")
    return "\n".join(out) + "\n"


def blocks_markdown(runs: list[dict[str, Any]]) -> str:
    """Block by block, the baseline arm vs the search run with the tightest latency target (its
    lowest seed): type, FLOPs and analytic latency per block (`supernet.expert.block_costs`): which
    blocks the search fused and what that did to FLOPs and latency. Empty without both."""
    from supernet.expert import block_costs
    base = _baseline_of_hardware_study(runs)
    found = sorted((r for r in capacity_runs(runs) if r["results"].get("latency_target_ms")),
                   key=lambda r: (r["results"]["latency_target_ms"], r["config"].get("seed", 0)))
    if base is None or not found:
        return ""
    acc = found[0]["config"].get("cost.accelerator", "npu")
    space = space_of_run(found[0])
    a = block_costs(space, space.decode(base["results"]["architecture"]), acc)
    b = block_costs(space, space.decode(found[0]["results"]["architecture"]), acc)
    out = [(f"Block by block (`supernet.expert.block_costs`, analytic `{acc}`): the baseline vs `{found[0]['dir']}` "
            f"(target {found[0]['results']['latency_target_ms']:.3g} ms). Widths differ between the two, so a "
            "block's change is its type's and its width's together.\n"),
           "| block | stage | baseline type | MFLOPs | latency us | found type | MFLOPs | latency us |",
           "|---|---|---|---|---|---|---|---|"]
    for x, y in zip(a, b):
        out.append(f"| {x['block']} | {x['stage']} | {x['type']} | {x['flops'] / 1e6:.2f} | {x['latency_us']:.1f} | "
                   f"{y['type']} | {y['flops'] / 1e6:.2f} | {y['latency_us']:.1f} |")
    return "\n".join(out) + "\n"


def _trajectory(run: dict[str, Any]) -> np.ndarray:
    """Best capacity so far among the candidates (`evolve`) or derived networks (`descend`) that met
    every constraint, per evaluation or step (NaN before the first feasible one)."""
    stage = search_stage(run)
    ev = [m for m in run["metrics"] if m.get("stage") == stage]
    ev.sort(key=lambda m: m["index"])
    vals = np.asarray([m["accuracy"] if m.get("violation", 0) <= 0 else -np.inf for m in ev], float)
    best = np.maximum.accumulate(vals) if len(vals) else vals
    return np.where(np.isfinite(best), best, np.nan)


def _convergence_groups(runs: list[dict[str, Any]]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """{search stage: {space: runs}} of the capacity searches, for searches run on two or more spaces."""
    groups: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for r in capacity_runs(runs):
        groups.setdefault(search_stage(r), {}).setdefault(r["config"]["space.name"], []).append(r)
    return {k: v for k, v in groups.items() if len(v) >= 2}


def convergence_markdown(runs: list[dict[str, Any]]) -> str:
    """Per search (`evolve`, `descend`) and space (mobile-raw vs mobile-curated): seeds, final best
    capacity, and evaluations (steps) until the target is first met at the level every run of that
    search reaches (its lowest final capacity)."""
    out = []
    for stage, by_space in _convergence_groups(runs).items():
        trajs = {id(r): _trajectory(r) for rs in by_space.values() for r in rs}
        level = min(np.nanmax(t) for t in trajs.values())
        unit = "steps" if stage == "descend" else "evaluations"
        what = ("`descend`: gradient steps on the architecture logits, one derived network per step"
                if stage == "descend" else "`evolve`")
        out += [(f"Convergence ({what}; most capacity under the same latency target and budget; capacity = log10 "
                 f"FLOPs of the best network that meets the target). Level: {level:.3f}, the lowest final capacity "
                 "of this search's runs, so every run reaches it.\n"),
                f"| space | seeds | final log10 FLOPs | {unit} to the first feasible | {unit} to the level |",
                "|---|---|---|---|---|"]
        for s_, rs in by_space.items():
            final = np.asarray([np.nanmax(trajs[id(r)]) for r in rs])
            first = np.asarray([np.argmax(np.isfinite(trajs[id(r)])) + 1 for r in rs], float)
            reach = np.asarray([np.argmax(np.nan_to_num(trajs[id(r)], nan=-np.inf) >= level) + 1 for r in rs], float)
            out.append(f"| {s_} | {len(rs)} | {final.mean():.3f} ± {final.std():.3f} | {first.mean():.1f} ± {first.std():.1f} | "
                       f"{reach.mean():.0f} ± {reach.std():.0f} (median {np.median(reach):.0f}) |")
        out.append("")
    return "\n".join(out)


def plot_convergence(runs: list[dict[str, Any]], prefix: str) -> list[str]:
    """`PREFIX_convergence.png`: best feasible capacity vs evaluations (steps), one line per run,
    coloured by space, one panel per search."""
    groups = _convergence_groups(runs)
    if not groups:
        return []
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(groups), figsize=(6.5 * len(groups), 4.2), squeeze=False, sharey=True)
    spaces = list(dict.fromkeys(s for g in groups.values() for s in g))
    for ax, (stage, by_space) in zip(axes[0], groups.items()):
        for s, rs in by_space.items():
            for j, r in enumerate(rs):
                t = _trajectory(r)
                ax.plot(np.arange(1, len(t) + 1), t, color=plt.cm.tab10(spaces.index(s)), lw=0.9, alpha=0.8,
                        label=s if j == 0 else None)
        ax.set_xscale("log")
        ax.set(xlabel="gradient steps" if stage == "descend" else "evaluations",
               title=("gradient search (descend)" if stage == "descend" else "evolution") + ": raw vs curated widths")
        ax.legend()
    axes[0][0].set_ylabel("best log10 FLOPs meeting the target")
    fig.tight_layout()
    out = [f"{prefix}_convergence.png"]
    fig.savefig(out[0], dpi=130)
    plt.close(fig)
    return out
