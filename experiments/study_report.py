"""The trained-arms part of `experiments.report`: arms against the `baseline` arm, each retrained
with the baseline's schedule (the article's detection table, V1-V3 and the expert transfer:
`experiments/configs/detection/person_centernet.py:study`, issue 26).

- `study_markdown`: per arm, what it searched (block types, the width multiplier, the expert's
  rules), its runs, its latency reduction against the baseline under every cost model the runs
  recorded (`latency_ms`: the analytic presets of `report.accelerators`, and measured backends of
  `report.measured`), its test metric (the retrain's `accuracy_pct`: mAP, mIoU or accuracy, percent)
  and, for detection, AP50; mean ± std over seeds, and the metric's difference to the baseline's
  mean in units of the baseline's seed std. An arm that was not retrained (the V1 search returns
  MobileNetV2 itself) shows its network's relation to the baseline instead. Without training (the
  hardware side of a study, e.g. `person_centernet.py:study,search`) the table has the cuts alone.
- `fusion_markdown`: per arm (its lowest seed), the blocks that are fused IBN where the baseline has
  IBN, and what fusion does to them: FLOPs and analytic latency of those blocks as IBN and as fused
  IBN at the arm's own widths (`supernet.expert.block_costs`), so a multiplier change is not
  counted as fusion's effect.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from experiments.hardware_report import space_of_run


def _is_baseline(run: dict[str, Any]) -> bool:
    return (run["config"].get("stages") or [None])[0] == "baseline"


def _trained(run: dict[str, Any]) -> bool:
    return "retrain" in run["results"].get("stages", {})


def study_runs(runs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """`(baseline runs, other runs)` of a study: a `baseline` arm and at least one other arm that
    searched or applied rules, all retrained or none (the hardware side); `([], [])` otherwise."""
    base = [r for r in runs if _is_baseline(r)]
    # an untrained NSGA-II search answers with a front (`experiments.candidates` picks from it), not a network
    front_only = lambda r: ("evolve" in r["results"].get("stages", {}) and not _trained(r)
                            and r["config"].get("evolve.algorithm") == "nsga2")
    others = [r for r in runs if not _is_baseline(r) and not front_only(r)
              and {"evolve", "expert", "given"} & set(r["results"].get("stages", {}))]
    if not base or not others or len({_trained(r) for r in base}) > 1:
        return [], []
    return base, others


def _searched(run: dict[str, Any]) -> str:
    c, stages = run["config"], run["results"].get("stages", {})
    if "given" in stages:  # a candidate picked from the searches (`experiments.candidates`)
        return (f"candidate {c.get('given.name') or ''}: {c.get('space.kwargs.input_size', '?')} px, decoder on stage "
                f"{c.get('space.kwargs.decoder_stage', '?')}")
    if "expert" in stages:
        return "expert rules: " + "; ".join(stages["expert"].get("rules", [])) if "evolve" not in stages else "rules + search"
    free = c.get("space.free") or []
    what = [name for name, key in (("block types", "_type"), ("multiplier", "width_multiplier"))
            if any(key in f for f in free)]
    return "search: " + (" + ".join(what) if what else "every decision")


def _ms(x: list[float], fmt: str) -> str:
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]  # runs that did not cost the network on this model (e.g. no measured backend)
    if not len(x):
        return "-"
    return f"{x.mean():{fmt}} ± {x.std():{fmt}}" if len(x) > 1 else f"{x[0]:{fmt}}"


def _cut(run: dict[str, Any], model: str, ref: float) -> float:
    return 1 - run["results"]["latency_ms"].get(model, np.nan) / ref


def _metric(run: dict[str, Any]) -> tuple[float, float]:
    r = run["results"]
    ap50 = r.get("stages", {}).get("retrain", {}).get("test_ap50_pct")  # (results.json: percent)
    return float(r.get("accuracy_pct", np.nan)), np.nan if ap50 is None else float(ap50)


def _groups(runs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        out.setdefault(r.get("label", r["dir"]), []).append(r)
    return out


def study_markdown(runs: list[dict[str, Any]]) -> str:
    """The arms table (module docstring); empty unless `study_runs` finds a study."""
    base, others = study_runs(runs)
    if not base:
        return ""
    models = [k for k in base[0]["results"].get("latency_ms", {})]
    ref = {k: np.mean([b["results"]["latency_ms"][k] for b in base]) for k in models}
    if not _trained(base[0]):  # the hardware side: the cuts alone
        out = ["Latency reduction = 1 - arm / baseline per cost model (`report.accelerators`, `report.measured`); "
               "mean ± std over seeds; nothing trained.\n",
               "| arm | what it changes | runs | " + " | ".join(f"{m} cut" for m in models) + " |",
               "|---|---|---|" + "---|" * len(models)]
        for label, rs in _groups(others).items():
            cuts = [_ms([_cut(r, m, ref[m]) for r in rs], ".1%") for m in models]
            out.append(f"| {label} | {_searched(rs[0])} | {len(rs)} | " + " | ".join(cuts) + " |")
        return "\n".join(out) + "\n"
    bm = np.asarray([_metric(b)[0] for b in base])
    source = base[0]["results"].get("accuracy_source", "accuracy")
    det = np.isfinite(_metric(base[0])[1])
    out = [f"Latency reduction = 1 - arm / baseline per cost model; test metric: {source}; mean ± std over "
           "seeds; Δ = arm - baseline mean, in baseline seed stds (|Δ| <= 2: within the baseline's noise).\n",
           "| arm | what it changes | runs | " + " | ".join(f"{m} cut" for m in models) + " | test metric (%) | "
           + ("AP50 (%) | " if det else "") + "Δ (baseline stds) |",
           "|---|---|---|" + "---|" * len(models) + "---|" + ("---|" if det else "") + "---|"]
    base_arch = base[0]["results"]["architecture"]
    for label, rs in [("baseline", base)] + list(_groups(others).items()):
        cuts = [_ms([_cut(r, m, ref[m]) for r in rs], ".1%") for m in models]
        trained = [r for r in rs if _trained(r)]
        what = "nothing (MobileNetV2)" if rs is base else _searched(rs[0])
        if trained:
            met = np.asarray([_metric(r) for r in trained])
            delta = (met[:, 0].mean() - bm.mean()) / bm.std() if len(bm) > 1 and bm.std() > 0 else np.nan
            acc = (f"{_ms(met[:, 0], '.2f')} | " + (f"{_ms(met[:, 1], '.2f')} | " if det else "")
                   + ("" if rs is base else f"{delta:+.1f}") + " |")
        else:
            same = all(r["results"]["architecture"] == base_arch for r in rs)
            acc = ("not retrained: " + ("the baseline's network, its metric" if same else "another network")
                   + " | " + ("| " if det else "") + " |")
        out.append(f"| {label} | {what} | {len(trained)} of {len(rs)} retrained | " + " | ".join(cuts) + f" | {acc}")
    return "\n".join(out) + "\n"


def fusion_markdown(runs: list[dict[str, Any]]) -> str:
    """Which blocks each arm fused, and fusion's effect on them (module docstring)."""
    from supernet.expert import block_costs
    base, others = study_runs(runs)
    if not base:
        return ""
    acc = base[0]["config"].get("cost.accelerator", "npu")
    space0 = space_of_run(base[0])
    blocks0 = sum(x["flops"] for x in block_costs(space0, space0.baseline_arch(), acc)) / 1e6
    out = [f"Fused blocks per arm (lowest seed), their MFLOPs and analytic `{acc}` latency as IBN and as fused "
           "IBN at the arm's own widths, multiplier and input size (`supernet.expert.block_costs`):\n",
           "| arm | multiplier | fused blocks (stage) | MFLOPs as IBN -> fused | latency us as IBN -> fused | "
           f"MFLOPs in blocks (baseline {blocks0:.1f}) |",
           "|---|---|---|---|---|---|"]
    for label, rs in _groups(others).items():
        r = min(rs, key=lambda r: r["config"].get("seed", 0))
        space = space_of_run(r)  # its own input size / decoder (the block decisions are the baseline's)
        b_arch = space.baseline_arch()
        arch = space.decode(r["results"]["architecture"])
        as_ibn = arch.copy()
        for t in space.type_ids:
            if space.decisions[t].choices[arch[t]] == "fused" and space.decisions[t].choices[b_arch[t]] == "ibn":
                as_ibn[t] = b_arch[t]
        got, ibn = block_costs(space, arch, acc), block_costs(space, as_ibn, acc)
        fused = [i for i, (g, x) in enumerate(zip(got, ibn)) if g["type"] != x["type"]]
        f = lambda rows, k, s: sum(rows[i][k] for i in fused) / s
        out.append(f"| {label} | {space.multipliers[arch[space.mult_id]]:g} | "
                   + (", ".join(f"b{i} ({got[i]['stage']})" for i in fused) or "none")
                   + f" | {f(ibn, 'flops', 1e6):.1f} -> {f(got, 'flops', 1e6):.1f} | "
                   f"{f(ibn, 'latency_us', 1):.1f} -> {f(got, 'latency_us', 1):.1f} | "
                   f"{sum(x['flops'] for x in got) / 1e6:.1f} |")
    return "\n".join(out) + "\n"
