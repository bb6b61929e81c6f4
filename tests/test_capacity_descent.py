"""`supernet.capacity_descent` and the `descend` stage: the single-shot architecture step with the
capacity proxy as its task term (issue 25 part 1, the gradient half of the convergence study)."""

import jax
import numpy as np
import pytest

from experiments.config import ConfigError, load_config
from experiments.hardware_report import convergence_markdown
from experiments.pipeline import launch, prepare
from hwmodel import ACCELERATORS, analytic
from hwmodel.layers import total_flops
from supernet.capacity_descent import DescentConfig, check_cost, descend
from supernet.objectives import CostConfig
from supernet.spaces import make_space

TINY = dict(parallelism=16, blocks_per_stage=(1, 2), base_widths=(16, 32), stage_strides=(1, 2), stem_width=16,
            head_width=64)
CONFIG = "experiments/configs/mobile/convergence.py:descend,smoke"


def test_each_step_records_the_exact_cost_of_its_derived_network():
    space = make_space("mobile-curated", **TINY)
    cost = CostConfig(accelerator="npu", form="hinge", target_ms=0.05, weight=5.0)
    out = descend(space, cost, DescentConfig(steps=40), jax.random.key(3))
    assert out["arch"].shape == (40, space.num_decisions) and np.isfinite(out["loss"]).all()
    for i in (0, 17, 39):
        table = space.layers(out["arch"][i])
        assert out["capacity"][i] == pytest.approx(np.log10(float(total_flops(table))), rel=1e-6)
        assert out["latency_ms"][i] == pytest.approx(float(analytic.latency_ms(ACCELERATORS["npu"], table)), rel=1e-6)
        assert out["violation"][i] == pytest.approx(out["latency_ms"][i] / 0.05 - 1, rel=1e-5, abs=1e-6)
    # the baseline (0.112 ms) misses the target; the penalty brings derived networks under it
    assert (out["violation"] <= 0).any()


def test_the_latency_penalty_sets_the_trade():
    """Without the penalty's pull the capacity term widens the network; a heavier penalty gives a
    faster network at the end (straight-through softmax: deterministic for a seed)."""
    space = make_space("mobile-curated", **TINY)
    ends = []
    for weight in (0.05, 50.0):
        cost = CostConfig(accelerator="npu", form="hinge", target_ms=0.05, weight=weight)
        out = descend(space, cost, DescentConfig(steps=150, relaxation="softmax", hard=True, lr=0.1), jax.random.key(0))
        ends.append(out["latency_ms"][-20:].mean())
    assert ends[1] < 0.06 < ends[0]


def test_a_cost_without_a_latency_penalty_and_bad_options_stop():
    space = make_space("mobile-curated", **TINY)
    with pytest.raises(ValueError, match="latency penalty"):
        descend(space, CostConfig(accelerator="npu", form="hinge", target_ms=0.05, weight=0.0), DescentConfig(),
                jax.random.key(0))
    with pytest.raises(ValueError, match="analytic model"):
        check_cost(CostConfig(accelerator="npu", form="hinge", target_ms=0.05, weight=5.0, model="surrogate"))
    with pytest.raises(ValueError, match="latency target only"):
        check_cost(CostConfig(accelerator="npu", form="hinge", target_ms=0.05, weight=5.0, params_budget_bytes=1e4))
    with pytest.raises(ValueError, match="unknown relaxation"):
        DescentConfig(relaxation="dirichlet")
    with pytest.raises(ValueError, match="steps >= 1"):
        DescentConfig(steps=0)


def test_the_stage_returns_the_best_feasible_step_and_resumes_without_duplicates(tmp_path):
    cfg = load_config(CONFIG)
    prepare(cfg, quiet=True)
    res = launch(cfg, str(tmp_path))
    d = res["stages"]["descend"]
    assert res["latency_ms"]["analytic:npu"] <= res["latency_target_ms"] + 1e-9
    from experiments.workdir import Workdir
    steps = [m for m in Workdir(str(tmp_path)).metrics() if m["stage"] == "descend"]
    assert [m["index"] for m in steps] == list(range(cfg.descend.steps))
    feasible = [m["accuracy"] for m in steps if m["violation"] <= 0]
    assert d["capacity_log10_flops"] == pytest.approx(max(feasible)) and d["feasible_steps"] == len(feasible)
    assert steps[d["best_step"]]["arch"] == res["architecture"]


@pytest.mark.parametrize("override, message", [
    (["--config.cost.weight=0"], "latency penalty"),
    (["--config.descend.relaxation=dartz"], "unknown relaxation"),
    (['--config.stages=["descend", "evolve"]'], "is a study of its own")])
def test_bad_descend_configs_stop_before_any_work(override, message):
    cfg = load_config(CONFIG, override)
    with pytest.raises(ConfigError, match=message):
        prepare(cfg, quiet=True)


def test_convergence_tables_each_search_against_its_own_level():
    def run(stage, space, values):
        return {"config": {"space.name": space, "evolve.evaluator": "capacity"}, "dir": f"{stage}/{space}",
                "results": {"stages": {stage: {}}},
                "metrics": [{"stage": stage, "index": i, "accuracy": v, "violation": 0.0} for i, v in enumerate(values)]}

    md = convergence_markdown([run("evolve", "mobile-raw", [7.0, 8.0]), run("evolve", "mobile-curated", [8.5, 8.6]),
                               run("descend", "mobile-raw", [6.0, 6.5, 7.0]), run("descend", "mobile-curated", [7.0, 7.1, 7.2])])
    evolve, descend_ = md.split("Convergence (")[1:]
    assert "Level: 8.000" in evolve and "| mobile-raw | 1 | 8.000 ± 0.000 | 1.0 ± 0.0 | 2 ± 0 (median 2) |" in evolve
    assert "steps to the level" in descend_ and "Level: 7.000" in descend_
    assert "| mobile-raw | 1 | 7.000 ± 0.000 | 1.0 ± 0.0 | 3 ± 0 (median 3) |" in descend_
    assert "| mobile-curated | 1 | 7.200 ± 0.000 | 1.0 ± 0.0 | 1 ± 0 (median 1) |" in descend_
