"""Hardware-only searches (issue 25 parts 1, 4 and 5): `evolve` for the most capacity under a latency
target and both memory budgets, the found network measured by a backend (`report.measured`), and
the report's searched-for x run-on matrix and raw-vs-curated convergence table."""

import copy
import json

import numpy as np
import pytest

from experiments.config import load_config
from experiments.hardware_report import convergence_markdown, matrix_markdown
from experiments.pipeline import launch, prepare
from hwmodel import ACCELERATORS, memory
from supernet.evaluators import CapacityEvaluator
from supernet.spaces import make_space


@pytest.fixture(scope="module")
def capacity_run(tmp_path_factory):
    """One smoke search on the accelerator sweep's config under a latency target and both memory
    budgets at 70 % of the baseline's, measured by ZigZag."""
    cfg = load_config("experiments/configs/mobile/accelerators.py:smoke")
    space = make_space(cfg.space.name, **dict(cfg.space.kwargs))
    table = space.layers(space.baseline_arch())
    spec = ACCELERATORS[cfg.cost.accelerator]
    base = {"params_bytes": float(memory.param_bytes(spec, table)),
            "peak_activation_bytes": float(memory.peak_activation_bytes(table, spec))}
    cfg.cost.params_budget_bytes = 0.7 * base["params_bytes"]
    cfg.cost.activation_budget_bytes = 0.7 * base["peak_activation_bytes"]
    prepare(cfg, quiet=True)
    wd = tmp_path_factory.mktemp("capacity")
    res = launch(cfg, str(wd))
    return cfg, res, base, wd


def test_capacity_search_meets_the_latency_target_and_both_budgets(capacity_run):
    cfg, res, base, _ = capacity_run
    assert res["latency_ms"][f"analytic:{cfg.cost.accelerator}"] <= res["latency_target_ms"] + 1e-9
    assert res["params_bytes"] <= cfg.cost.params_budget_bytes
    assert res["peak_activation_bytes"] <= cfg.cost.activation_budget_bytes
    ev = res["stages"]["evolve"]
    assert ev["memory"] == {"params_bytes": res["params_bytes"], "peak_activation_bytes": res["peak_activation_bytes"]}
    assert res["accuracy_pct"] is None  # a capacity proxy is no accuracy
    space = make_space(cfg.space.name, **dict(cfg.space.kwargs))
    arch = space.decode(res["architecture"])
    assert ev["capacity_log10_flops"] == pytest.approx(float(CapacityEvaluator(space)(arch[None])["capacity"][0]))
    assert res["latency_ms"]["zigzag:ascend_like"] > 0  # the measured backend of report.measured


def _fake(run, accelerator, target, latencies):
    r = copy.deepcopy(run)
    r["config"]["cost.accelerator"] = accelerator
    r["results"]["latency_target_ms"] = target
    r["results"]["latency_ms"] = {f"analytic:{k}": v for k, v in latencies.items()} | {"onnxruntime": 1.5}
    return r


def _as_report_run(capacity_run):
    from experiments.report import find_runs
    runs, _ = find_runs([str(capacity_run[3])])
    return runs[0]


def test_matrix_divides_each_run_on_latency_by_that_accelerators_target(capacity_run):
    run = _as_report_run(capacity_run)
    a = _fake(run, "chip-a", 1.0, {"chip-a": 0.9, "chip-b": 3.0})
    b = _fake(run, "chip-b", 2.0, {"chip-a": 1.2, "chip-b": 2.0})
    md = matrix_markdown([a, b])
    rows = {line.split(" | ")[0].strip("| "): line for line in md.splitlines() if line.startswith("| chip-")}
    assert "| **0.90** | 1.50 | 1.500 |" in rows["chip-a"]  # 0.9 / 1.0 meets; 3.0 / 2.0 does not
    assert "| 1.20 | **1.00** | 1.500 |" in rows["chip-b"]
    mult, widths = rows["chip-a"].split(" | ")[3:5]
    space = make_space(run["config"]["space.name"], **dict(capacity_run[0].space.kwargs))
    arch = space.decode(run["results"]["architecture"])
    assert widths == "-".join(map(str, space.stage_widths(arch)))
    assert matrix_markdown([a]) == ""  # one accelerator: no matrix


def test_convergence_counts_evaluations_to_the_level_every_run_reaches(capacity_run):
    run = _as_report_run(capacity_run)

    def with_trajectory(space, values, violations):
        r = copy.deepcopy(run)
        r["config"]["space.name"] = space
        r["metrics"] = [{"stage": "evolve", "index": i, "accuracy": v, "violation": x}
                        for i, (v, x) in enumerate(zip(values, violations))]
        return r

    raw = with_trajectory("mobile-raw", [9.0, 7.0, 7.5, 8.0], [1.0, 0.0, 0.0, 0.0])  # 9.0 misses the target
    cur = with_trajectory("mobile-curated", [8.2, 8.1, 8.5, 8.6], [0.0, 0.0, 0.0, 0.0])
    md = convergence_markdown([raw, cur])
    assert "Level: 8.000" in md  # raw's final best feasible, the lower of the two
    assert "| mobile-raw | 1 | 8.000 ± 0.000 | 2.0 ± 0.0 | 4 ± 0 (median 4) |" in md
    assert "| mobile-curated | 1 | 8.600 ± 0.000 | 1.0 ± 0.0 | 1 ± 0 (median 1) |" in md
    assert convergence_markdown([raw]) == ""  # one space: nothing to compare


def test_rules_seed_the_search_and_the_memory_table_cuts_against_the_baseline(tmp_path):
    """Rules + NAS (`expert` then `evolve`): the rules' network is the first candidate evaluated and
    the decisions the rules set are held (`expert.hold`);
    the arm meets both budgets by the exact memory model; the table cuts against the baseline arm."""
    from experiments.hardware_report import arms_markdown
    from experiments.report import find_runs, summarise
    runs = {}
    for arm in ("baseline", "rules_nas"):
        cfg = load_config(f"experiments/configs/mobile/memory.py:{arm},smoke")
        prepare(cfg, quiet=True)
        launch(cfg, str(tmp_path / arm))
    found, _ = find_runs([str(tmp_path)])
    summarise(found, "", "npu", ["stages"])
    runs = {r["config"]["stages"][-1]: r for r in found}
    first = min((m for m in runs["evolve"]["metrics"] if m.get("stage") == "evolve"), key=lambda m: m["index"])
    assert first["arch"] == runs["evolve"]["results"]["stages"]["expert"]["arch"]
    assert first["arch"].startswith("mult=0.5|")  # the rule multiplier(value=0.5)
    # expert.hold: the search decides only what the rules left open; the multiplier stays the rule's
    archs = [m["arch"] for m in runs["evolve"]["metrics"] if m.get("stage") == "evolve"]
    assert len(set(archs)) > 10 and all(a.startswith("mult=0.5|") for a in archs)
    assert runs["evolve"]["results"]["stages"]["expert"]["held"] == ["width_multiplier"]
    # a run killed between the expert stage and evolve resumes with the held mask (the stage hands it on)
    wd = tmp_path / "rules_nas"
    for f in ("stages/evolve.json", "stages/evolve.state.json", "results.json"):
        (wd / f).unlink()
    launch(cfg, str(wd))
    mask = np.asarray(json.loads((wd / "stages/evolve.state.json").read_text())["mask"])  # the rerun's search
    mult = make_space(cfg.space.name, **dict(cfg.space.kwargs)).decision_index("width_multiplier")
    assert mask[mult].sum() == 1
    res, base = runs["evolve"]["results"], runs["baseline"]["results"]
    assert res["params_bytes"] <= 14000 and res["peak_activation_bytes"] <= 65000
    md = arms_markdown(found)
    row = next(line for line in md.splitlines() if line.startswith("| stages=expert+evolve"))
    assert f"{1 - res['params_bytes'] / base['params_bytes']:.1%}" in row and "| 1/1 |" in row


# `slow` (suite time: a single-shot search compiled with the budget terms, 44 s); the budget terms
# themselves are covered by tests/test_objectives.py, the budgets as constraints by the evolve runs here
@pytest.mark.slow
def test_single_shot_returns_the_most_probable_architecture_within_both_budgets(tmp_path):
    """The single-shot stage with both memory budgets (no latency term): it returns the most probable
    live architecture of the space that meets both by the search's cost model (`supernet.derive`),
    and that one meets them exactly."""
    import json
    import os

    import jax
    import numpy as np

    from experiments.run import main
    from supernet.objectives import CostConfig, make_cost_fn
    cfg = load_config("experiments/configs/nb201/single_shot.py:smoke")
    space = make_space(cfg.space.name, **dict(cfg.space.kwargs))
    spec = ACCELERATORS[cfg.cost.accelerator]
    tables = [space.layers(a) for a in space.validate_batch(space.sample(jax.random.key(0), 64))]
    p = sorted(float(memory.param_bytes(spec, t)) for t in tables)[20]
    a = sorted(float(memory.peak_activation_bytes(t, spec)) for t in tables)[40]
    wd = str(tmp_path / "run")
    res = main(["--config", "experiments/configs/nb201/single_shot.py:smoke", "--workdir", wd,
                f"--config.cost.params_budget_bytes={p}", f"--config.cost.activation_budget_bytes={a}"])
    with open(os.path.join(wd, "stages", "single_shot.json")) as f:
        stage = json.load(f)
    fn = make_cost_fn(space, CostConfig(params_budget_bytes=p, activation_budget_bytes=a,
                                        accelerator=cfg.cost.accelerator))
    from supernet.derive import most_probable
    logp = np.log(np.maximum(np.asarray(stage["probs"]), 1e-30))
    d = most_probable(space, logp, space.full_mask().allowed, fn, {"params_bytes": p, "peak_activation_bytes": a})
    assert stage["meets_target_by_model"] == d.feasible and stage["rank_by_probability"] == d.rank
    assert res["architecture"] == space.encode(d.arch) == stage["ranking"][0]
    if d.feasible:
        assert res["params_bytes"] <= p and res["peak_activation_bytes"] <= a
        assert stage["peak_activation_bytes_model"] >= res["peak_activation_bytes"]  # smooth >= exact


def test_blocks_table_sets_the_found_network_beside_the_baseline(capacity_run):
    from experiments.hardware_report import blocks_markdown
    from experiments.report import summarise
    from supernet.expert import block_costs
    found = _as_report_run(capacity_run)
    base = copy.deepcopy(found)
    space = make_space(found["config"]["space.name"], **dict(capacity_run[0].space.kwargs))
    base["config"]["stages"] = ["baseline"]
    base["results"]["architecture"] = space.encode(space.baseline_arch())
    base["results"]["stages"] = {"baseline": {}}
    summarise([base, found], "", "npu", ["stages"])
    rows = [line for line in blocks_markdown([base, found]).splitlines() if line[:3] in {f"| {b}" for b in range(10)}]
    costs = block_costs(space, space.decode(found["results"]["architecture"]))
    assert len(rows) == space.num_blocks == len(costs)
    for row, c in zip(rows, costs):
        cells = [x.strip() for x in row.strip("|").split("|")]
        assert cells[2] == "ibn" and cells[5] == c["type"] and float(cells[6]) == pytest.approx(c["flops"] / 1e6, abs=0.01)
    # the blocks' FLOPs are the network's but for the stem, head and classifier
    total = sum(c["flops"] for c in costs)
    assert 0 < total < found["results"]["flops"]


def test_a_search_for_the_per_layer_surrogate_targets_its_own_prediction(tmp_path):
    """`latency_cut.py:<arm>,zigzag`: the search's cost model is a saved surrogate (the article's
    estimator), so `target_frac` is a fraction of the baseline's latency as the *surrogate* predicts
    it, the search meets that target by the surrogate, and results.json carries the surrogate's
    latency beside the analytic one; a missing surrogate file stops before any work."""
    import jax

    from experiments.config import ConfigError
    from experiments.context import target_of
    from experiments.fit_surrogate import save_surrogate
    from hwmodel import analytic
    from hwmodel.fit import fit_space
    from hwmodel.surrogate import predict
    cfg = load_config("experiments/configs/mobile/latency_cut.py:nas47,zigzag,smoke")
    space = make_space(cfg.space.name, **dict(cfg.space.kwargs))
    archs = np.asarray(space.sample(jax.random.key(0), 40))
    npu = ACCELERATORS["npu"]
    # a device 1.7x the NPU plus 5 us: the surrogate's baseline differs from the analytic one
    y = np.array([1.7 * float(analytic.latency_ms(npu, space.layers(a))) + 0.005 for a in archs])
    sur = fit_space(space, archs, y)
    path = tmp_path / "sur.json"
    save_surrogate(sur, str(path))
    cfg.cost.surrogate.file = str(path)
    base = space.baseline_arch()
    predicted = float(predict(sur, sur.executed(space.layers(base))))
    target, source = target_of(cfg, space)
    assert target == pytest.approx(0.47 * predicted) and "(surrogate)" in source
    assert abs(predicted - float(analytic.latency_ms(npu, space.layers(base)))) > 0.01
    prepare(cfg, quiet=True)
    res = launch(cfg, str(tmp_path / "run"))
    assert res["latency_ms"]["surrogate"] <= target + 1e-6
    assert res["latency_target_ms"] == pytest.approx(target)
    cfg.cost.surrogate.file = str(tmp_path / "nowhere.json")
    with pytest.raises(ConfigError, match="surrogate file .*nowhere.json' not found"):
        prepare(cfg, quiet=True)
