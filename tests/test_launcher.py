"""The launcher: configs, overrides, stage checks, the workdir contract and an end-to-end smoke run."""

import json
import os

import numpy as np
import pytest

from experiments.config import ConfigError, flatten, load_config, to_dict
from experiments.checks import check_stages
from experiments.run import main
from experiments.workdir import Workdir, WorkdirError

CFG = "experiments/configs/nb201/single_shot.py"


def test_overrides_are_typed_and_typos_list_the_valid_keys():
    cfg = load_config(f"{CFG}:smoke", ["--config.seed=3", "--config.single_shot.arch_lr=1e-2",
                                       "--config.single_shot.tau=(5, 1)"])
    assert cfg.seed == 3 and cfg.single_shot.arch_lr == 0.01 and tuple(cfg.single_shot.tau) == (5, 1)
    with pytest.raises(ConfigError, match="unknown config key 'single_shot.epoch'.*single_shot.epochs"):
        load_config(CFG, ["--config.single_shot.epoch=3"])
    with pytest.raises(ConfigError, match="expected a int"):
        load_config(CFG, ["--config.seed=abc"])
    with pytest.raises(ConfigError, match="not found"):
        load_config("experiments/configs/nope.py")
    with pytest.raises(ConfigError, match=r"unknown config argument 'quikc'; valid: .*quick.*smoke"):
        load_config(f"{CFG}:quikc")
    for spec in ("experiments/configs/nb201/ablation.py:quick,guided", "experiments/configs/mobile/npu.py:baseline"):
        load_config(spec)  # every documented argument is accepted
    assert load_config("experiments/configs/nb201/ablation.py:smoke,guided").evolve.guide == "zero_shot"


def test_stage_names_and_orders_are_checked_before_any_work():
    with pytest.raises(ConfigError, match="unknown stage 'single_shoot'; valid stages:"):
        check_stages(["single_shoot"])
    with pytest.raises(ConfigError, match="'retrain' needs an earlier stage"):
        check_stages(["retrain", "single_shot"])
    with pytest.raises(ConfigError, match="empty"):
        check_stages([])
    check_stages(["single_shot", "retrain"])


def test_workdir_refuses_a_different_config(tmp_path):
    Workdir.open(str(tmp_path), {"seed": 0})
    Workdir.open(str(tmp_path), {"seed": 0})  # same config: resume
    with pytest.raises(WorkdirError, match="different config.*seed"):
        Workdir.open(str(tmp_path), {"seed": 1})
    Workdir.open(str(tmp_path), {"seed": 1}, overwrite=True)
    assert any(n.startswith("old-") for n in os.listdir(tmp_path))


def test_keys_added_to_the_code_at_their_default_still_resume(tmp_path):
    old = {"seed": 0, "cost": {"form": "none"}}
    Workdir.open(str(tmp_path), old)
    defaults = {"seed": 0, "cost": {"form": "none", "discrete": False}, "bn": "running"}
    new = {"seed": 0, "cost": {"form": "none", "discrete": False}, "bn": "running"}
    Workdir.open(str(tmp_path), new, defaults=defaults)  # new keys at their defaults: same run
    with pytest.raises(WorkdirError, match="different config.*cost"):  # a new key set off its default
        Workdir.open(str(tmp_path), {**new, "cost": {"form": "none", "discrete": True}}, defaults=defaults)
    with pytest.raises(WorkdirError, match="different config.*bn"):
        Workdir.open(str(tmp_path), {**new, "bn": "batch"}, defaults=defaults)
    with pytest.raises(WorkdirError, match="different config.*bn"):  # without defaults: strict
        Workdir.open(str(tmp_path), new)


def test_smoke_run_end_to_end_and_rerun_resumes(tmp_path, data_dir, capsys):
    wd = str(tmp_path / "run")
    res = main(["--config", f"{CFG}:smoke", "--workdir", wd])
    for key in ("architecture", "accuracy_pct", "accuracy_source", "latency_ms", "params_bytes",
                "peak_activation_bytes", "search_seconds", "table_accuracy_pct"):
        assert key in res, key
    ss = res["stages"]["single_shot"]
    # the reported accuracy is the derived subnet's with recalibrated BN, beside the supernet's own
    assert res["accuracy_pct"] == ss["inherited_val_accuracy_pct"] and "BN recalibrated" in res["accuracy_source"]
    assert {"supernet_val_accuracy_pct", "search_val_accuracy_pct"} <= ss.keys()
    # one unit in results.json: the stage file's fraction is the percent / 100, no key left unconverted
    stage = json.load(open(os.path.join(wd, "stages", "single_shot.json")))
    assert ss["inherited_val_accuracy_pct"] == pytest.approx(100 * stage["inherited_val_accuracy"])
    assert not [k for k in flatten(res) if k.endswith("accuracy")]
    out = capsys.readouterr().out
    assert "table accuracy" in out and "inherited weights" in out and wd in out  # the summary says which is which
    assert set(res["latency_ms"]) == {"analytic:npu", "analytic:edgetpu", "analytic:mobile-cpu"}
    with open(os.path.join(wd, "config.json")) as f:
        meta = json.load(f)
    assert meta["config"] == to_dict(load_config(f"{CFG}:smoke")) and "git_commit" in meta
    assert len([json.loads(l) for l in open(os.path.join(wd, "metrics.jsonl"))]) == 2
    again = main(["--config", f"{CFG}:smoke", "--workdir", wd])  # finished stages are skipped
    assert again["architecture"] == res["architecture"]
    assert len(open(os.path.join(wd, "metrics.jsonl")).readlines()) == 2
    with pytest.raises(SystemExit):
        main(["--config", f"{CFG}:smoke", "--workdir", wd, "--config.seed=5"])


# reinforce's extra state (the reward baseline) resumes too: `slow` (suite time; the relaxed case runs by default)
@pytest.mark.parametrize("estimator", ["relaxed", pytest.param("reinforce", marks=pytest.mark.slow)])
def test_search_killed_mid_way_and_resumed_ends_like_an_uninterrupted_one(tmp_path, data_dir, monkeypatch, estimator):
    from supernet.single_shot import SingleShot
    over = [f"--config.single_shot.estimator={estimator}"]  # reinforce: its reward baseline is state too
    full = main(["--config", f"{CFG}:smoke", "--workdir", str(tmp_path / "full"), *over])
    real = SingleShot.run_epoch
    calls = {"n": 0}

    def dies_in_epoch_two(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed")
        return real(self, *a, **k)

    monkeypatch.setattr(SingleShot, "run_epoch", dies_in_epoch_two)
    wd = str(tmp_path / "killed")
    with pytest.raises(SystemExit) as e:  # the launcher turns ^C into exit 130 and a resume hint
        main(["--config", f"{CFG}:smoke", "--workdir", wd, *over])
    assert e.value.code == 130
    assert not os.path.exists(os.path.join(wd, "results.json"))
    monkeypatch.setattr(SingleShot, "run_epoch", real)
    resumed = main(["--config", f"{CFG}:smoke", "--workdir", wd, *over])
    epochs = [json.loads(l)["epoch"] for l in open(os.path.join(wd, "metrics.jsonl"))]
    assert epochs == [0, 1]  # the second run restored epoch 0's checkpoint and ran only epoch 1
    strip = lambda r: {k: v for k, v in r.items() if not k.endswith("seconds") and k != "stages"}
    assert strip(resumed) == strip(full)
    assert resumed["stages"]["single_shot"]["supernet_val_accuracy_pct"] == \
        full["stages"]["single_shot"]["supernet_val_accuracy_pct"]


ABL = "experiments/configs/nb201/ablation.py"


def test_search_stage_orders_are_checked():
    check_stages(["zero_shot", "single_shot", "evolve", "retrain"])
    with pytest.raises(ConfigError, match="order zero_shot -> single_shot -> evolve"):
        check_stages(["evolve", "single_shot"])
    with pytest.raises(ConfigError, match="order"):
        check_stages(["single_shot", "zero_shot"])
    with pytest.raises(ConfigError, match="baseline"):
        check_stages(["baseline", "evolve"])
    check_stages(["expert", "evolve", "retrain"])  # rules + NAS: the rules' network seeds evolution
    with pytest.raises(ConfigError, match="'expert' is an arm of its own, or seeds a later 'evolve'"):
        check_stages(["expert", "single_shot"])
    with pytest.raises(ConfigError, match="'expert' would replace the architecture chosen before it"):
        check_stages(["evolve", "expert"])


def test_evolve_stage_killed_and_resumed_ends_like_an_uninterrupted_run(tmp_path, data_dir, monkeypatch):
    from supernet.evaluators import TableEvaluator
    args = ["--config", f"{ABL}:smoke", "--config.stages=['evolve']", "--config.cost.form=tunas",
            "--config.cost.weight=0.5", "--config.cost.target_ms=10.0", "--config.cost.model=surrogate"]
    full = main(args + ["--workdir", str(tmp_path / "full")])
    assert full["stages"]["evolve"]["evaluations"] == 30
    assert full["latency_ms"]["surrogate"] <= 10.0  # the latency target is a constraint
    real, calls = TableEvaluator.evaluate, {"n": 0}

    def dies(self, archs):
        calls["n"] += 1
        if calls["n"] == 15:  # the initial population (1 call) and 13 children are done
            raise KeyboardInterrupt("killed")
        return real(self, archs)

    monkeypatch.setattr(TableEvaluator, "evaluate", dies)
    wd = str(tmp_path / "killed")
    with pytest.raises(SystemExit) as e:
        main(args + ["--workdir", wd])
    assert e.value.code == 130
    monkeypatch.setattr(TableEvaluator, "evaluate", real)
    resumed = main(args + ["--workdir", wd])
    idx = [json.loads(l)["index"] for l in open(os.path.join(wd, "metrics.jsonl"))]
    assert idx == list(range(30))  # every evaluation logged once, none repeated after the resume
    strip = lambda r: {k: v for k, v in r.items() if not k.endswith("seconds") and k != "stages"}
    assert strip(resumed) == strip(full)
    assert resumed["stages"]["evolve"]["front"] == full["stages"]["evolve"]["front"]


def test_zero_shot_evaluator_and_guide_score_a_cell_alike_in_any_batch(tmp_path, data_dir, capsys):
    """Several scores are rank-averaged against a fixed reference sample, so the children REA scores
    one at a time get real values (ranked within a batch of one they all used to get 0), and the
    zero-shot scores can guide the mutations."""
    args = ["--config", f"{ABL}:smoke", "--config.stages=['zero_shot', 'evolve']",
            "--config.zero_shot.proxies=('params', 'flops')", "--config.evolve.evaluator=zero_shot",
            "--config.evolve.guide=zero_shot", "--config.evolve.budget_evals=20", "--workdir", str(tmp_path / "guided")]
    res = main(args)
    recs = [r for r in map(json.loads, open(tmp_path / "guided" / "metrics.jsonl")) if r.get("stage") == "evolve"]
    assert len(recs) == 20 and res["stages"]["evolve"]["guide_evals"] >= 20
    children = [r for r in recs if r["index"] >= 10]
    assert {r["origin"] for r in children} <= {"mutation", "mutation+guide"}
    assert sum(r["origin"] == "mutation+guide" for r in children) >= 4  # guide_prob 0.75 of 10
    values = {}
    for r in recs:  # a cell's value is the same whenever (and in whichever batch) it is scored
        assert values.setdefault(r["arch"], r["accuracy"]) == r["accuracy"]
    scores = [r["accuracy"] for r in children]  # the objective's name; results.json calls it "score"
    assert res["stages"]["evolve"]["score"] == max(values.values()) and res["accuracy_pct"] is None
    assert len(set(scores)) > 3 and max(scores) > 0.5 and all(0 <= v <= 1 for v in scores)
    with pytest.raises(SystemExit):
        main(args[:-2] + ["--config.evolve.guide=synflow", "--workdir", str(tmp_path / "bad")])
    assert "unknown evolve.guide 'synflow'; valid: zero_shot" in capsys.readouterr().err


# progressive pruning is slow-marked here for suite time: the stage calls the same zero_shot.prune as
# test_zero_shot's CLI test, which keeps both methods against the oracle
@pytest.mark.parametrize("method", ["marginal", pytest.param("progressive", marks=pytest.mark.slow)])
def test_zero_shot_stage_prunes_to_the_target_by_either_method(tmp_path, data_dir, method, capsys):
    import numpy as np
    from supernet.spaces import make_space
    args = ["--config", f"{ABL}:smoke", "--config.stages=['zero_shot']", "--config.zero_shot.proxies=('synflow',)",
            f"--config.zero_shot.method={method}", "--config.zero_shot.target_fraction=0.3",
            # the marginal run scores from PyTorch's default init (the reference protocol)
            *(["--config.zero_shot.init=torch"] if method == "marginal" else []),
            "--workdir", str(tmp_path / method)]
    res = main(args)
    z = Workdir(str(tmp_path / method)).stage_done("zero_shot")  # with the mask and the ranking
    space = make_space("nb201")
    allowed = np.asarray(z["mask"], bool)
    assert 0 < z["kept_fraction"] <= 0.3 and z["kept_fraction"] == np.prod(allowed.sum(1)) / space.size
    # everything handed on lies inside the pruned space
    for a in [space.decode(s) for s in z["ranking"]] + [space.decode(res["architecture"])]:
        assert allowed[np.arange(6), a].all()
    if method == "progressive":  # each removal logged with the shrinking space size
        sizes = [r["size"] for r in map(json.loads, open(tmp_path / method / "metrics.jsonl")) if "size" in r]
        assert sizes == sorted(sizes, reverse=True) and sizes[-1] == round(z["kept_fraction"] * space.size)
    with pytest.raises(SystemExit):
        main(args[:-1] + [str(tmp_path / "bad"), "--config.zero_shot.method=tenas"])
    assert "unknown zero_shot.method 'tenas'; valid: marginal, progressive" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(args[:-1] + [str(tmp_path / "bad_init"), "--config.zero_shot.init=kaiming"])
    assert "unknown zero_shot.init 'kaiming'; valid: model, torch" in capsys.readouterr().err


def test_space_free_holds_the_other_decisions_at_the_baseline(tmp_path):
    """`space.free` (the article's V1 / V2 / V3: multiplier only, block types only, both) and
    `space.remove`; a pattern that names no decision stops with one message."""
    from experiments.config import ConfigError, load_config
    from experiments.context import search_mask
    from experiments.run import main
    from supernet import make_space

    cfg = load_config("experiments/configs/mobile/latency_cut.py:nas47,smoke")
    space = make_space(cfg.space.name, **dict(cfg.space.kwargs))
    assert search_mask(cfg, space) is None
    cfg.space.free = (r"b\d+_type",)
    cfg.space.remove = {"b2_type": ("skip",)}
    allowed = search_mask(cfg, space).allowed
    base = space.baseline_arch()
    for d, dec in enumerate(space.decisions):
        free = dec.name.endswith("_type")
        n = allowed[d, :dec.num_choices].sum()
        assert n == (dec.num_choices - (dec.name == "b2_type") if free else 1), dec.name
        assert free or allowed[d, base[d]]
    res = main(["--config", "experiments/configs/mobile/latency_cut.py:nas47,smoke", "--workdir", str(tmp_path / "v2"),
                r"--config.space.free=('b\\d+_type',)", "--config.target_frac=0.9"])
    found = space.decode(res["architecture"])
    keep = [d for d, dec in enumerate(space.decisions) if not dec.name.endswith("_type")]
    np.testing.assert_array_equal(found[keep], base[keep])
    cfg.space.free = ("mult",)
    with pytest.raises(ConfigError, match="'mult' matches no decision"):
        search_mask(cfg, space)
    # a `space.remove` key is a regex too: `skip` leaves every block type that offers it
    cfg.space.free = (r"b\d+_type",)
    cfg.space.remove = {r"b\d+_type": ("skip",)}
    allowed = search_mask(cfg, space).allowed
    for d, dec in enumerate(space.decisions):
        if dec.name.endswith("_type"):
            assert allowed[d, :dec.num_choices].tolist() == [c != "skip" for c in dec.choices], dec.name
    cfg.space.remove = {r"b\d+_type": ("dw",)}
    with pytest.raises(ConfigError, match="has the choice 'dw'"):
        search_mask(cfg, space)


def test_evolve_goal_latency_finds_the_fastest_network_at_the_baselines_score(tmp_path, capsys):
    """`evolve.goal='latency'` (the article's "X % lower latency at the baseline's accuracy"): the
    found network scores no less than the baseline under the evaluator and is no slower; the goal
    without a latency model, or with nsga2, stops with one message."""
    from experiments.run import main
    from hwmodel import analytic
    from hwmodel.accelerators import ACCELERATORS
    from supernet import make_space
    from supernet.evaluators import CapacityEvaluator

    cfg = "experiments/configs/mobile/latency_cut.py:nas47,smoke"
    res = main(["--config", cfg, "--workdir", str(tmp_path / "v3"), "--config.evolve.goal=latency",
                "--config.target_frac=1.0", "--config.evolve.budget_evals=120"])
    from experiments.config import load_config
    c = load_config(cfg)
    space = make_space(c.space.name, **dict(c.space.kwargs))
    cap = CapacityEvaluator(space, name="accuracy")
    found, base = space.decode(res["architecture"]), space.baseline_arch()
    floor = float(cap(np.asarray(base)[None])["accuracy"][0])
    ev = json.load(open(tmp_path / "v3" / "stages" / "evolve.json"))
    assert ev["accuracy_floor"] == pytest.approx(floor)
    assert float(cap(np.asarray(found)[None])["accuracy"][0]) >= floor
    npu = ACCELERATORS["npu"]
    lat = lambda a: float(analytic.latency_ms(npu, space.layers(np.asarray(a))))
    assert lat(found) < lat(base)  # fusion adds FLOPs and saves NPU time in the smoke space
    assert ev["latency_objective"]["latency_ms:npu"] == pytest.approx(lat(found), rel=1e-5)
    for i, (extra, msg) in enumerate(((["--config.cost.form=none", "--config.target_frac=0"], "minimises the latency model"),
                                      (["--config.evolve.algorithm=nsga2"], "has one objective"),
                                      (["--config.evolve.goal=speed"], "unknown evolve.goal 'speed'"))):
        with pytest.raises(SystemExit):
            main(["--config", cfg, "--workdir", str(tmp_path / f"bad{i}"), "--config.evolve.goal=latency", *extra])
        assert msg in capsys.readouterr().err


def test_given_stage_hands_on_the_configured_architecture(tmp_path, capsys):
    """Stage `given` (retraining a picked candidate): the run's network is `given.arch`; an empty or
    malformed string, or `given` after another chooser, stops with one message."""
    from supernet import make_space
    cfg = "experiments/configs/mobile/latency_cut.py:baseline,smoke"
    c = load_config(cfg)
    space = make_space(c.space.name, **dict(c.space.kwargs))
    arch = space.baseline_arch()
    arch[space.type_ids[1]] = 1  # fused
    s = space.encode(arch)
    res = main(["--config", cfg, "--workdir", str(tmp_path / "ok"), "--config.stages=['given']", f"--config.given.arch={s}"])
    assert res["architecture"] == s != space.encode(space.baseline_arch())
    for i, (extra, msg) in enumerate(((["--config.stages=['given']"], "set it"),
                                      (["--config.stages=['given']", "--config.given.arch=mult=9|x"], "given.arch:"),
                                      (["--config.stages=['baseline','given']", f"--config.given.arch={s}"],
                                       "'given' would replace the architecture chosen before it"))):
        with pytest.raises(SystemExit):
            main(["--config", cfg, "--workdir", str(tmp_path / f"bad{i}"), *extra])
        assert msg in capsys.readouterr().err


def test_dense_task_evolves_with_the_train_evaluator(tmp_path):
    """`evolve.evaluator='train'` on a segmentation config: every candidate is trained on the task's
    loss and scored by its mIoU, which results.json reports in percent under its own source."""
    res = main(["--config", "experiments/configs/segmentation/person_fpn.py:search,smoke", "--workdir", str(tmp_path / "s"),
                "--config.evolve.evaluator=train", "--config.evolve.train_steps=2", "--config.evolve.budget_evals=4",
                "--config.evolve.population=4", "--config.single_shot.batch_size=4"])
    ev = json.load(open(tmp_path / "s" / "stages" / "evolve.json"))
    assert 0.0 <= ev["miou"] <= 1.0 and all("miou" in p for p in ev["front"])
    assert res["accuracy_pct"] == pytest.approx(100 * ev["miou"]) and "mIoU" in res["accuracy_source"]


def test_dense_task_zero_shot_then_evolve(tmp_path, capsys):
    """Zero-shot pruning runs on a segmentation network with scores that take any task's network
    (synflow, jacob_cov); one that reads activation taps the mobile networks lack stops with one line."""
    cfg = "experiments/configs/segmentation/person_fpn.py:search,smoke"
    common = ["--config.stages=['zero_shot','evolve']", "--config.zero_shot.sample=8", "--config.zero_shot.batch_size=8"]
    res = main(["--config", cfg, "--workdir", str(tmp_path / "z"), *common, "--config.zero_shot.proxies=('synflow','jacob_cov')"])
    z = json.load(open(tmp_path / "z" / "stages" / "zero_shot.json"))
    assert 0 < z["kept_fraction"] < 1 and res["architecture"]
    with pytest.raises(SystemExit):
        main(["--config", cfg, "--workdir", str(tmp_path / "bad"), *common, "--config.zero_shot.proxies=('naswot',)"])
    err = capsys.readouterr().err
    assert "zero_shot.proxies: score 'naswot' reads activations" in err and "Traceback" not in err
