"""Sweeps and reports: override lists validated up front, runs into sub-workdirs, aggregated tables.

Also the reproducibility contract: the same config and seed give the same `results.json` on CPU
(apart from wall-clock fields, `*_seconds`), and a search killed mid-way and resumed ends where an
uninterrupted one ends.
"""

import json
import os
import textwrap

import numpy as np
import pytest

from experiments import report, sweep
from experiments.config import ConfigError

BASE = os.path.abspath("experiments/configs/nb201/single_shot.py")


def _sweep_file(tmp_path, runs: str) -> str:
    path = tmp_path / "sweep_cfg.py"
    path.write_text(textwrap.dedent(f"""
        import importlib.util
        spec = importlib.util.spec_from_file_location("base_cfg", {BASE!r})
        m = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(m)

        def get_config(arg=None):
            return m.get_config("smoke")

        def get_sweep(arg=None):
            return {runs}
    """))
    return str(path)


def _strip_times(x):
    if isinstance(x, dict):
        return {k: _strip_times(v) for k, v in x.items() if not k.endswith("_seconds")}
    return x


def test_sweep_rejects_typos_and_duplicate_names_before_any_run(tmp_path):
    bad = _sweep_file(tmp_path, '[{"seed": 0}, {"single_shot.epoch": 2}]')
    with pytest.raises(ConfigError, match="sweep run 'epoch=2'.*unknown config key 'single_shot.epoch'"):
        sweep.load_sweep(bad)
    bad = _sweep_file(tmp_path, '[{"stages": ["single_shoot"]}]')
    with pytest.raises(ConfigError, match="unknown stage 'single_shoot'"):
        sweep.load_sweep(bad)
    dup = _sweep_file(tmp_path, '[{"name": "a", "seed": 0}, {"name": "a", "seed": 1}]')
    with pytest.raises(ConfigError, match="share the names"):
        sweep.load_sweep(dup)
    ok = _sweep_file(tmp_path, '[{"seed": s, "single_shot.relaxation": r} for r in ("softmax", "gumbel") '
                               'for s in range(2)]')
    runs = sweep.load_sweep(ok)
    assert [n for n, _ in runs] == ["seed=0,relaxation=softmax", "seed=1,relaxation=softmax",
                                    "seed=0,relaxation=gumbel", "seed=1,relaxation=gumbel"]
    assert runs[3][1].single_shot.relaxation == "gumbel" and runs[3][1].seed == 1


def test_sweep_runs_are_reproducible_and_the_report_aggregates_them(tmp_path, data_dir):
    # two runs (suite time: each is a whole smoke search); the mean and std of a group over
    # different seeds are checked by test_report_groups_by_the_given_keys
    cfg = _sweep_file(tmp_path, '[{"name": "a", "seed": 0}, {"name": "b", "seed": 0}]')
    root = str(tmp_path / "runs")
    summary = sweep.main(["--config", cfg, "--workdir", root])
    assert set(summary) == {"a", "b"}
    res = {n: json.load(open(os.path.join(root, n, "results.json"))) for n in "ab"}
    # same config and seed: the same results, bit for bit, apart from wall-clock times
    assert _strip_times(res["a"]) == _strip_times(res["b"])
    assert res["a"]["search_seconds"] > 0

    out = str(tmp_path / "docs" / "table")
    rows = report.main([root, "--out", out])
    # the runs differ only in their name: one group of two
    assert len(rows) == 1 and rows[0]["runs"] == 2
    acc = [r["table_accuracy_pct"] for r in res.values()]
    assert rows[0]["accuracy"] == pytest.approx(np.mean(acc))
    assert rows[0]["accuracy_std"] == pytest.approx(np.std(acc))
    for suffix in (".md", ".csv", "_pareto.png", "_trajectories.png"):
        assert os.path.getsize(out + suffix) > 0
    assert "| seed=" not in open(out + ".md").read()
    assert len(open(out + ".csv").readlines()) == 3


def test_pareto_front_by_hand():
    acc = np.array([70.0, 80.0, 75.0, 90.0, np.nan])
    lat = np.array([1.0, 2.0, 3.0, 4.0, 0.5])
    # (75, 3) is beaten by (80, 2); the NaN point is ignored
    assert report.pareto_front(acc, lat).tolist() == [0, 1, 3]


def test_report_without_runs_says_so(tmp_path):
    with pytest.raises(SystemExit):
        report.main([str(tmp_path)])


def test_report_groups_by_the_given_keys(tmp_path):
    from experiments.workdir import write_json
    for name, stages, sample, seed, acc in [("a", ["evolve"], 100, 0, 91.0), ("b", ["evolve"], 50, 1, 90.0),
                                            ("c", ["zero_shot"], 50, 0, 85.0)]:
        os.makedirs(tmp_path / name)
        write_json(str(tmp_path / name / "config.json"),
                   {"config": {"stages": stages, "zero_shot": {"sample": sample}, "seed": seed}})
        write_json(str(tmp_path / name / "results.json"),
                   {"table_accuracy_pct": acc, "table_latency_ms": {"pixel3_latency_ms": 10.0}, "search_seconds": 1})
    rows = report.main([str(tmp_path), "--group-by", "stages"])
    assert [(r["group"], r["runs"], r["accuracy"]) for r in rows] == [("stages=evolve", 2, 90.5),
                                                                     ("stages=zero_shot", 1, 85.0)]
    assert len(report.main([str(tmp_path)])) == 3  # by default zero_shot.sample splits the groups too
    with pytest.raises(SystemExit):
        report.main([str(tmp_path), "--group-by", "stage"])


def test_ablation_latency_arm_costs_the_returned_cell_and_tunas_restores_the_old_arm():
    """The ablation's single-shot latency arm is the CPU protocol's (hinge on the argmax cell's cost,
    single_shot.py:cpu,pixel3); `:tunas` reruns the earlier expected-cost arm for comparison."""
    abl = "experiments/configs/nb201/ablation.py"
    runs = dict(sweep.load_sweep(f"{abl}:quick"))
    assert len(runs) == 7 * 2 * 5
    p3, none = runs["single/pixel3/seed=0"], runs["single/none/seed=0"]
    assert (p3.cost.form, p3.cost.weight, p3.cost.discrete, p3.cost.target_ms) == ("hinge", 2.0, True, 10.0)
    assert p3.single_shot.arch_lr_min == 0.0 and none.cost.form == "none" and not none.cost.discrete
    assert (p3.single_shot.epochs, p3.single_shot.steps_per_epoch) == (5, 40)
    old = dict(sweep.load_sweep(f"{abl}:quick,tunas"))["zero+single/pixel3/seed=4"]
    assert (old.cost.form, old.cost.discrete, old.stages) == ("tunas", False, ["zero_shot", "single_shot"])
