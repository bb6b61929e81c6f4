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


def test_ablation_latency_arm_is_the_cpu_protocols_constraint_and_words_restore_the_old_arms():
    """The ablation's single-shot latency arm is the CPU protocol's (the target a hard limit on the
    returned cell at the surrogate's 90 % bound, single_shot.py:cpu,pixel3); `:hinge` and `:tunas`
    rerun the earlier arms for comparison."""
    from experiments.config import load_config

    abl = "experiments/configs/nb201/ablation.py"
    runs = dict(sweep.load_sweep(f"{abl}:quick"))
    assert len(runs) == 7 * 2 * 5
    p3, none = runs["single/pixel3/seed=0"], runs["single/none/seed=0"]
    cpu = load_config("experiments/configs/nb201/single_shot.py:cpu,pixel3")
    for k in ("form", "weight", "target_ms", "model", "confidence"):
        assert p3.cost[k] == cpu.cost[k], k
    assert (p3.cost.form, p3.cost.confidence) == ("constraint", 0.9) and none.cost.form == "none"
    assert (p3.single_shot.epochs, p3.single_shot.steps_per_epoch) == (5, 40)
    hinge = dict(sweep.load_sweep(f"{abl}:quick,hinge"))["single/pixel3/seed=0"]
    assert (hinge.cost.form, hinge.cost.weight, hinge.cost.discrete, hinge.single_shot.arch_lr_min) == ("hinge", 2.0, True, 0.0)
    old = dict(sweep.load_sweep(f"{abl}:quick,tunas"))["zero+single/pixel3/seed=4"]
    assert (old.cost.form, old.cost.discrete, old.stages) == ("tunas", False, ["zero_shot", "single_shot"])


def test_study_tables_give_latency_cuts_metric_distance_and_fused_blocks():
    """`experiments.study_report` on a hand-made study: the cut per cost model is 1 - arm / baseline
    mean, the metric's distance is in baseline seed stds, an unretrained arm with the baseline's
    network says so, and the fusion table names exactly the blocks fused (their FLOPs rise)."""
    from experiments.study_report import fusion_markdown, study_markdown
    from supernet import make_space

    kwargs = {"parallelism": 4, "input_size": 32, "stem_stride": 2, "blocks_per_stage": (1, 2, 2),
              "base_widths": (8, 16, 24), "stage_strides": (1, 2, 2), "stem_width": 8, "num_classes": 1,
              "head": "detection", "head_channels": 16, "decoder_stage": 1}
    space = make_space("mobile-curated", **kwargs)
    base = space.baseline_arch()
    fused = base.copy()
    fused[space.type_ids[1]] = list(space.decisions[space.type_ids[1]].choices).index("fused")
    cfg = {"space.name": "mobile-curated", **{f"space.kwargs.{k}": v for k, v in kwargs.items()}}

    def run(label, stages, arch, npu, acc, seed, free=()):
        st = {s: {} for s in stages}
        if "retrain" in stages:
            st["retrain"] = {"test_ap50_pct": 2 * acc}
        res = {"architecture": space.encode(arch), "latency_ms": {"analytic:npu": npu, "onnxruntime": 2 * npu},
               "stages": st, "accuracy_source": "retrain: test COCO mAP"}
        if "retrain" in stages:
            res["accuracy_pct"] = acc
        return {"dir": f"{label}/{seed}", "label": label, "results": res,
                "config": {**cfg, "stages": list(stages), "seed": seed, "space.free": list(free)}}

    runs = [run("base", ["baseline", "retrain"], base, 2.0, a, s) for s, a in enumerate((1.0, 2.0, 3.0))]
    runs += [run("v2", ["evolve", "retrain"], fused, 1.5, a, s, [r"b\d+_type"]) for s, a in enumerate((1.0, 1.5))]
    runs += [run("v1", ["evolve"], base, 2.0, 0.0, 0, ["width_multiplier"])]
    md = study_markdown(runs)
    rows = {line.split(" | ")[0].strip("| "): line for line in md.splitlines() if line.startswith("| ")}
    assert "| 25.0% ± 0.0% | 25.0% ± 0.0% | 1.25 ± 0.25 | 2.50 ± 0.50 |" in rows["v2"]  # both cost models; metric, AP50
    assert "-0.9 |" in rows["v2"]  # (1.25 - 2.0) / std(1, 2, 3) = -0.92
    assert "search: block types" in rows["v2"] and "AP50" in md
    assert "not retrained: the baseline's network" in rows["v1"]
    fz = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in fusion_markdown(runs).splitlines()
          if line.startswith("| v")}
    assert fz["v2"][2] == "b1 (1)" and fz["v1"][2] == "none"
    before, after = map(float, fz["v2"][3].split(" -> "))
    assert after > before  # fusion raises the block's FLOPs
    assert study_markdown([r for r in runs if r["label"] != "base"]) == ""  # no baseline arm: no table
    hw = [dict(r, results={k: v for k, v in r["results"].items() if k != "accuracy_pct"} | {"stages": {s: {} for s in r["config"]["stages"] if s != "retrain"}})
          for r in runs]
    for r in hw:
        r["config"] = dict(r["config"], stages=[s for s in r["config"]["stages"] if s != "retrain"])
    md = study_markdown(hw)  # the hardware side: the cuts alone
    assert "nothing trained" in md and "| v2 | search: block types | 2 | 25.0% ± 0.0% | 25.0% ± 0.0% |" in md


def test_candidates_merge_the_fronts_and_keep_the_baselines_capacity(tmp_path, capsys):
    """`experiments.candidates` on the segmentation study's smoke sweep (its searches, the baseline's
    config): every candidate has no less capacity than the baseline and is faster, none dominates
    another, A is the fastest; each command retrains it through stage `given` at its resolution,
    and that command runs."""
    import shlex
    from experiments import candidates
    from experiments.run import main as run_main

    spec = "experiments/configs/segmentation/person_fpn.py"
    root = str(tmp_path / "seg")
    assert "1_search/in32_dec1" in sweep.main(["--config", f"{spec}:study,smoke", "--workdir", root, "--only", "1_search"])
    with pytest.raises(SystemExit):  # no baseline run yet
        candidates.main([root, "--config", spec])
    assert "no run under" in capsys.readouterr().err
    sweep.main(["--config", f"{spec}:study,smoke", "--workdir", root, "--only", "0_baseline/seed=0"])
    got = candidates.main([root, "--config", f"{spec}", "--k", "3", "--seeds", "1", "--out", str(tmp_path / "c")])
    base = json.load(open(tmp_path / "c.json"))["baseline"]
    assert 1 <= len(got) <= 3 and [c["name"] for c in got] == list("ABC"[:len(got)])
    lat = [c["latency_ms"] for c in got]
    assert lat == sorted(lat) and all(c["capacity"] >= base["capacity"] and c["latency_ms"] < base["latency_ms"] for c in got)
    for a in got:
        assert not any(b["capacity"] >= a["capacity"] and b["latency_ms"] < a["latency_ms"] for b in got)
    # --fastest-at PX: per decoder stage at PX, the fastest network of the baseline's capacity; a
    # second search (decoder stage 9, every network 1 % faster) holds the fastest of all (A)
    import copy
    base_cfg, searches = candidates.load(root)
    other = copy.deepcopy(searches[0])
    other["config"]["space.kwargs.decoder_stage"] = 9
    for p in other["results"]["stages"]["evolve"]["front"]:
        p["latency_ms:npu"] *= 0.99
    px = searches[0]["config"]["space.kwargs.input_size"]
    _, more = candidates.pick(base_cfg, searches + [other], 1, fastest_at=[px])
    assert [c["name"] for c in more] == ["A", "B"]
    assert more[0]["overrides"]["space.kwargs.decoder_stage"] == 9 and more[1]["overrides"]["space.kwargs.decoder_stage"] == 1
    assert more[1]["latency_ms"] == pytest.approx(more[0]["latency_ms"] / 0.99)
    # --at-cut F: per decoder stage at PX, the most capacity among the networks at least F faster
    lat0 = base["latency_ms"]
    fast = [(p["capacity_log10_flops"], p["latency_ms:npu"]) for p in searches[0]["results"]["stages"]["evolve"]["front"]]
    cut = 1 - float(np.median([lat for _, lat in fast])) / lat0
    _, cut_more = candidates.pick(base_cfg, searches, 1, fastest_at=[px], at_cut=cut)
    top = max((c for c in fast if c[1] <= (1 - cut) * lat0), default=None)
    added = [c for c in cut_more[1:] if c["latency_ms"] <= (1 - cut) * lat0]
    assert top is not None and [(c["capacity"], c["latency_ms"]) for c in added] in ([], [pytest.approx(top)])
    assert added or cut_more[0]["capacity"] == pytest.approx(top[0])  # else A is that network already
    cmd = next(line for line in open(tmp_path / "c.md") if line.startswith("python -m experiments.run"))
    argv = shlex.split(cmd)[3:]
    argv[argv.index("--config") + 1] += ",smoke"  # the smoke schedule on the smoke space
    res = run_main(argv)
    assert res["architecture"] == got[0]["arch"] and res["accuracy_pct"] is not None
