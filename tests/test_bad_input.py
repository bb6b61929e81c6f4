"""Issue 23: bad input stops with exit code 2 and one message that names the fix; no wrong result
with exit 0, no blocked or damaged workdir."""

import os

import numpy as np
import pytest

from experiments import fit_surrogate as fit_cli
from experiments import report, run, sweep
from experiments.config import ConfigError, load_config
from experiments.workdir import Workdir, WorkdirError
from hwmodel.tables import InputError

SMOKE = "experiments/configs/nb201/single_shot.py:smoke"
ABLATION = "experiments/configs/nb201/ablation.py:smoke"


def _exit(capsys, fn, argv):
    """Runs a CLI main, expecting SystemExit: `(code, stderr)`."""
    with pytest.raises(SystemExit) as e:
        fn(argv)
    err = capsys.readouterr().err
    return e.value.code, err


def _nb201_excerpt(data_dir, tmp_path, n=100, edit=None, name="pixel3.csv", text=None):
    import csv
    src = os.path.join(data_dir, "nas-bench-201", "nb201_cifar10.csv")
    with open(src, newline="") as f:
        rows = [r for _, r in zip(range(n), csv.DictReader(f))]
    if edit:
        edit(rows)
    path = tmp_path / name
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, ["arch_str", "pixel3_latency_ms"], extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    if text is not None:
        path.write_text(text(path.read_text()))
    return str(path)


# ---------------------------------------------------------------- wrong results, now refused
@pytest.mark.parametrize("bad", ["-17.5", "nan", "0", "inf", ""])
def test_fit_checks_every_row_not_only_the_training_rows(data_dir, tmp_path, capsys, bad):
    def edit(rows):
        rows[0]["pixel3_latency_ms"] = bad
    path = _nb201_excerpt(data_dir, tmp_path, edit=edit)
    for seed in ("0", "3"):  # before: refused at --seed 3, a wrong Spearman with exit 0 at --seed 0
        code, err = _exit(capsys, fit_cli.main, ["--space", "nb201", "--data", path, "--column", "pixel3_latency_ms",
                                                 "--train-size", "50", "--seed", seed, "--json"])
        assert code == 2 and "data row 1: pixel3_latency_ms must be a" in err and path in err


def test_csv_ergonomics(data_dir, tmp_path, capsys):
    argv = ["--space", "nb201", "--column", "pixel3_latency_ms", "--seed", "0", "--json"]
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    code, err = _exit(capsys, fit_cli.main, argv + ["--data", str(empty), "--train-size", "5"])
    assert code == 2 and "is empty" in err
    # a UTF-8 byte-order mark (spreadsheet export) is not part of the first column's name
    bom = _nb201_excerpt(data_dir, tmp_path, name="bom.csv", text=lambda t: "\ufeff" + t)
    res = fit_cli.main(argv + ["--data", bom, "--train-size", "50"])
    assert res["n_test"] == 50
    # n-1 training rows would leave one test row (Spearman NaN): a minimum test size
    code, err = _exit(capsys, fit_cli.main, argv + ["--data", bom, "--train-size", "99"])
    assert code == 2 and "between 2 and 95" in err and "kept for testing" in err
    # a repeated architecture never lands on both sides of the split
    dup = _nb201_excerpt(data_dir, tmp_path, name="dup.csv", edit=lambda rows: rows.extend(rows[:30]))
    res = fit_cli.main(argv + ["--data", dup, "--train-size", "50"])
    assert res["n_train"] + res["n_test"] == 130
    from hwmodel.fit import split
    keys = np.asarray([str(i % 100) for i in range(130)])
    tr, te = split(130, 50, 0, groups=keys)
    assert not set(keys[tr]) & set(keys[te]) and len(set(keys[tr])) == 50
    assert split(100, 50, 0, groups=keys[:100])[0].tolist() == split(100, 50, 0)[0].tolist()  # no repeats: same


def test_unquoted_mobile_architecture_says_to_quote(tmp_path, capsys):
    from supernet import make_space
    import jax
    space = make_space("mobile-curated")
    arch = space.encode(space.sample(jax.random.key(0)))
    assert "," in arch
    path = tmp_path / "m.csv"
    path.write_text(f"arch,latency_ms\n{arch},1.5\n")
    code, err = _exit(capsys, fit_cli.main, ["--space", "mobile-curated", "--data", str(path), "--train-size", "2"])
    assert code == 2 and "quote fields that contain commas" in err


def test_zero_shot_truth_file_rows_are_checked(tmp_path):
    from experiments.zero_shot_eval import read_truth
    path = tmp_path / "t.csv"
    for cell, msg in (("", "must be a number, got ''"), ("nan", "must be a finite number")):
        path.write_text(f"arch_str,acc\na,90.1\nb,{cell}\n")
        with pytest.raises(InputError, match=f"data row 2: acc {msg}"):
            read_truth(str(path), "acc")


def test_sweep_refuses_overrides_the_sweep_itself_sets(capsys):
    code, err = _exit(capsys, sweep.main, ["--config", ABLATION, "--workdir", "/tmp/unused", "--config.seed=5", "--list"])
    assert code == 2 and "the sweep itself sets seed" in err
    code, err = _exit(capsys, sweep.main, ["--config", ABLATION, "--workdir", "/tmp/unused", "--config.cost.form=none",
                                           "--list"])
    assert code == 2 and "cost.form" in err
    code, err = _exit(capsys, sweep.main, ["--config", ABLATION, "--workdir", "/tmp/unused", "--only", "zzz", "--list"])
    assert code == 2 and "no run matched --only 'zzz'" in err
    code, err = _exit(capsys, sweep.main, ["--config", ABLATION, "--workdir", "/tmp/unused", "--only", "[", "--list"])
    assert code == 2 and "not a regular expression" in err


def test_report_never_mixes_spaces_units_or_sources_and_lists_unfinished_runs(tmp_path, capsys):
    from experiments.workdir import write_json
    runs = [("nb", "nb201", {"table_accuracy": 91.0, "table_latency_ms": {"pixel3_latency_ms": 10.0}}),
            ("mob", "mobile-curated", {"accuracy": 0.9, "accuracy_source": "retrain: test accuracy (fraction) ...",
                                       "latency_ms": {"analytic:npu": 0.4}})]
    for name, space, res in runs:
        os.makedirs(tmp_path / name)
        write_json(str(tmp_path / name / "config.json"), {"config": {"space": {"name": space}, "seed": 0}})
        write_json(str(tmp_path / name / "results.json"), {"space": space, "search_seconds": 1, **res})
    os.makedirs(tmp_path / "dead")
    write_json(str(tmp_path / "dead" / "config.json"), {"config": {"seed": 0}})
    out = str(tmp_path / "r")
    rows = report.main([str(tmp_path), "--out", out])
    md = open(out + ".md").read()
    assert {(r["space"], r["accuracy_source"], r["latency_source"]) for r in rows} == {
        ("nb201", "table accuracy (%)", "table pixel3_latency_ms"),
        ("mobile-curated", "retrain accuracy (fraction)", "analytic:npu ms")}
    assert md.count("| group | runs |") == 2 and "Unfinished runs" in md and "dead" in md
    assert os.path.getsize(out + "_pareto.png") > 0


def test_explicit_latency_target_wins_and_is_recorded(tmp_path, capsys):
    from experiments.context import cost_config, target_of
    from supernet import make_space
    path = "experiments/configs/mobile/npu.py:search,smoke"
    cfg = load_config(path)
    space = make_space(cfg.space.name, **dict(cfg.space.kwargs))
    frac_ms, src = target_of(cfg, space)
    assert "target_frac 0.6 x baseline" in src and frac_ms > 0
    cfg = load_config(path, ["--config.cost.target_ms=0.123"])
    assert cost_config(cfg, space).target_ms == 0.123 and target_of(cfg, space)[1] == "cost.target_ms"
    cfg = load_config(path, ["--config.target_frac=0.0"])  # before: a 0.6 ms placeholder, no pressure
    with pytest.raises(ConfigError, match="needs a latency target"):
        cost_config(cfg, space)
    # results.json records the target the stages worked against
    wd = str(tmp_path / "w")
    res = run.main(["--config", path, "--workdir", wd, "--config.stages=['baseline']"])
    assert res["latency_target_ms"] == pytest.approx(frac_ms) and "target_frac" in res["latency_target_source"]


def test_auto_data_source_is_recorded_and_a_resume_on_another_source_refused(tmp_path, data_dir):
    from experiments.config import to_dict
    from experiments.checks import resolve_data_source
    a = load_config(SMOKE, ["--config.data.name=auto", f"--config.data.dir={tmp_path}"])  # no CIFAR-10 there
    resolve_data_source(a)
    assert a.data.name == "synthetic"
    b = load_config(SMOKE, ["--config.data.name=auto", f"--config.data.dir={tmp_path}"])
    b.data.name = "cifar10"  # what auto resolves to once the data appears
    Workdir.open(str(tmp_path / "w"), to_dict(a))
    with pytest.raises(WorkdirError, match="data.name: stored 'synthetic', given 'cifar10'"):
        Workdir.open(str(tmp_path / "w"), to_dict(b))


# ---------------------------------------------------------------- a failed check leaves the workdir alone
@pytest.mark.parametrize("override, message", [
    ("--config.single_shot.epochs=-1", "single_shot.epochs must be an integer >= 1"),
    ("--config.single_shot.batch_size=0", "single_shot.batch_size must be an integer >= 1"),
    ("--config.cost.target_ms=ten", "--config.cost.target_ms: expected a float, got 'ten'"),
    ("--config.cost.target_ms=-1", "cost.target_ms must be a latency in ms > 0"),
    ("--config.cost.confidence=1.0", "confidence must be a probability in [0.5, 1)"),
    ("--config.single_shot.tau=(0,0)", "the temperatures tau must be >= 1e-06"),
    ("--config.single_shot.tau=(1e-40,1e-40)", "a colder Gumbel softmax is a hard argmax: use hard=True"),
    ("--config.single_shot.val_fraction=1.5", "single_shot.val_fraction must be a number > 0 and < 1"),
    ("--config.num_devices=64", "num_devices=64 but this machine has"),
    ("--config.matmul_precision=bogus", "unknown matmul_precision 'bogus'"),
    ("--config.report.accelerators=('bogus',)", "unknown accelerator 'bogus' in report.accelerators"),
    ("--config.table.column=bogus", "table.column='bogus' is not a column of"),
    ("--config.single_shot.epoch=3", "did you mean single_shot.epochs"),
    ("--config.task.kwargs={'max_zoom': 1.0}", "task.kwargs: Classification takes no option 'max_zoom'; its options: none"),
    ("--config.task.kwargs=1.0", "--config.task.kwargs: expected a dict literal"),
    ("--config.data.copy_paste=3", "data.copy_paste builds composites of the person detection set"),
    ("--config.cost.params_budget_bytes=10",
     "params_budget_bytes=10 is below the smallest params_bytes reachable in nb201, 4834"),
])
def test_config_is_checked_before_the_workdir_is_touched(tmp_path, capsys, data_dir, override, message):
    wd = tmp_path / "w"
    code, err = _exit(capsys, run.main, ["--config", SMOKE, "--workdir", str(wd), override])
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not wd.exists()  # the corrected command is not refused as "a different config"


@pytest.mark.parametrize("extra, message", [
    ([], "sandwich trains one-hot paths: it needs path_sampling=True"),
    (["--config.single_shot.path_sampling=True"], "single_shot.anchor='baseline': space 'nb201' has no baseline"),
    (["--config.single_shot.path_sampling=True", "--config.single_shot.anchor=bogus"],
     "single_shot.anchor='bogus' is not an architecture of 'nb201'"),
])
def test_sandwich_settings_are_checked_up_front(tmp_path, capsys, data_dir, extra, message):
    wd = tmp_path / "w"
    code, err = _exit(capsys, run.main, ["--config", SMOKE, "--workdir", str(wd), "--config.single_shot.sandwich=1",
                                         *extra])
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not wd.exists()


def test_zero_shot_and_evolve_values_are_checked_up_front(tmp_path, capsys):
    for extra, message in ((["--config.stages=['zero_shot']", "--config.zero_shot.target_fraction=1.5"],
                            "zero_shot.target_fraction must be a number > 0 and <= 1"),
                           (["--config.stages=['evolve']", "--config.evolve.algorithm=bogus"],
                            "unknown evolve.algorithm 'bogus'"),
                           (["--config.stages=['single_shot','evolve']", "--config.evolve.evaluator=supernet",
                             "--config.evolve.supernet_bn=bogus"], "unknown evolve.supernet_bn 'bogus'")):
        code, err = _exit(capsys, run.main, ["--config", SMOKE, "--workdir", str(tmp_path / "w"), *extra])
        assert code == 2 and message in err


def test_workdir_errors_are_one_line(tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    code, err = _exit(capsys, run.main, ["--config", SMOKE, "--workdir", str(f)])
    assert code == 2 and "is a file, not a folder" in err
    Workdir.open(str(tmp_path / "w"), {"a": {"b": 1, "c": 2}})
    with pytest.raises(WorkdirError, match=r"a\.b: stored 1, given 5"):  # the leaf key and both values
        Workdir.open(str(tmp_path / "w"), {"a": {"b": 5, "c": 2}})


def test_one_process_per_workdir_and_a_dead_holder_is_taken_over(tmp_path, capsys):
    """A second launch into a workdir a live process is running in stops with that process's id
    (two would interleave metrics and checkpoints); a lock left by a killed process is taken over,
    and a finished run leaves none behind."""
    import json
    import socket
    import subprocess
    import sys
    from experiments.workdir import LOCK, held
    w = tmp_path / "w"
    w.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (w / LOCK).write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname(), "since": 0}))
        code, err = _exit(capsys, run.main, ["--config", SMOKE, "--workdir", str(w)])
        assert code == 2 and f"in use by process {sleeper.pid}" in err and LOCK in err
        assert not (w / "config.json").exists()  # nothing touched
    finally:
        sleeper.kill()
        sleeper.wait()
    with held(str(w)):  # the holder is gone: taken over, and released after
        assert json.loads((w / LOCK).read_text())["pid"] == os.getpid()
    assert not (w / LOCK).exists()
    (w / LOCK).write_text("{")  # half-written by a process killed while writing it
    with held(str(w)):
        assert json.loads((w / LOCK).read_text())["pid"] == os.getpid()
    with held(str(w)), pytest.raises(WorkdirError, match="in use by process"):
        (w / LOCK).write_text(json.dumps({"pid": os.getpid(), "host": "another-machine", "since": 0}))
        with held(str(w)):
            pass


def test_a_finished_run_prints_its_results_without_writing(tmp_path, monkeypatch):
    wd = Workdir.open(str(tmp_path / "w"), {"a": 1})
    wd.write_results({"x": 1.0, "y": [1, 2]})
    import experiments.workdir as W

    def refuse(*a, **k):
        raise PermissionError("read-only")
    monkeypatch.setattr(W, "write_json", refuse)
    wd.write_results({"x": 1.0, "y": (1, 2)})  # the same results: nothing to write, no error
    with pytest.raises(PermissionError):
        wd.write_results({"x": 2.0})


def test_surrogate_errors_name_config_keys_not_cli_flags(tmp_path, capsys, data_dir):
    path = tmp_path / "lat.csv"
    path.write_text("arch_str,other\n|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|"
                    "nor_conv_3x3~1|nor_conv_3x3~2|,1.0\n")
    code, err = _exit(capsys, run.main, ["--config", SMOKE, "--workdir", str(tmp_path / "w"),
                                         "--config.cost.form=hinge", "--config.cost.target_ms=5.0",
                                         "--config.cost.weight=1.0", "--config.cost.model=surrogate",
                                         f"--config.cost.surrogate.csv={path}", "--config.cost.surrogate.column=lat"])
    assert code == 2 and "cost.surrogate.column" in err and "--column" not in err


def test_corrupt_cifar10_names_the_file(tmp_path):
    from experiments import data as D
    (tmp_path / "cifar10").mkdir()
    bad = tmp_path / "cifar10" / "cifar10-jpeg.tar.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00truncated")
    with pytest.raises(D.DataError, match="cifar10-jpeg.tar.gz is corrupt or truncated"):
        D.load_cifar10(tmp_path, cache_dir=tmp_path / "cache")


def test_drop_metrics_never_leaves_a_step_twice(tmp_path):
    wd = Workdir.open(str(tmp_path / "w"), {"a": 1})
    for e in range(4):
        wd.log({"stage": "single_shot", "epoch": e})
    wd.log({"stage": "evolve", "index": 0})
    assert wd.drop_metrics("single_shot", from_epoch=2) == 2
    assert [(m["stage"], m.get("epoch")) for m in wd.metrics()] == [("single_shot", 0), ("single_shot", 1),
                                                                    ("evolve", None)]


@pytest.mark.slow  # 50-150 s: two smoke runs and a corrupted checkpoint (suite time)
def test_corrupted_latest_checkpoint_falls_back_and_resume_logs_each_epoch_once(tmp_path, capsys):
    """A smoke search (2 epochs, a checkpoint after each), then: the newest checkpoint's files
    damaged, a leftover `*.orbax-checkpoint-tmp*` folder of an interrupted save, the stage not
    finished. The rerun warns, resumes from checkpoint 1, removes the temporary folder and logs
    epoch 1 once."""
    wd = str(tmp_path / "w")
    argv = ["--config", SMOKE, "--workdir", wd]
    first = run.main(argv)
    ck = os.path.join(wd, "checkpoints", "single_shot")
    assert sorted(os.listdir(ck)) == ["1", "2"]
    for root, _, files in os.walk(os.path.join(ck, "2")):
        for name in files:
            with open(os.path.join(root, name), "wb") as f:
                f.write(b"garbage")
    os.makedirs(os.path.join(ck, "3.orbax-checkpoint-tmp-1234"))
    os.remove(os.path.join(wd, "stages", "single_shot.json"))
    os.remove(os.path.join(wd, "results.json"))
    capsys.readouterr()
    again = run.main(argv)
    out = capsys.readouterr().out
    assert "checkpoint 2" in out and "unreadable" in out and "falling back to checkpoint 1" in out
    epochs = [m["epoch"] for m in Workdir(wd).metrics() if m.get("stage") == "single_shot"]
    assert epochs == [0, 1]
    assert not any("tmp" in n for n in os.listdir(ck))
    assert again["architecture"] == first["architecture"]


def test_edited_workdir_files_are_named_and_a_cut_off_metrics_line_is_tolerated(tmp_path, capsys):
    wd = Workdir.open(str(tmp_path / "w"), {"a": 1})
    wd.write_stage("single_shot", {"arch": "x"})
    with open(wd.file("stages", "single_shot.json"), "w") as f:
        f.write('{"arch": "x",')  # edited by hand
    with pytest.raises(WorkdirError, match=r"single_shot.json is not valid JSON .*delete it to rerun that stage"):
        wd.stage_done("single_shot")
    wd.log({"stage": "single_shot", "epoch": 0})
    with open(wd.file("metrics.jsonl"), "a") as f:
        f.write('{"stage": "single_sh')  # a kill in the middle of a write
    assert wd.metrics() == [{"stage": "single_shot", "epoch": 0}]
    with open(wd.file("metrics.jsonl"), "a") as f:
        f.write('\n{"stage": 1}\n')  # the broken line is no longer the last: it was edited
    with pytest.raises(WorkdirError, match="metrics.jsonl, line 2 is not JSON"):
        wd.metrics()
    with open(wd.file("config.json"), "w") as f:
        f.write("{")
    code, err = _exit(capsys, run.main, ["--config", SMOKE, "--workdir", wd.path])
    assert code == 2 and "config.json is not valid JSON" in err and len(err.strip().splitlines()) == 1


def test_every_cli_ends_a_user_error_with_one_line(tmp_path, capsys):
    """`export`, `cost`, `measure` and `zero_shot_eval` end on `experiments.config.cli_errors`
    (exit 2, one line) also for errors found after argument parsing (unwritable output files)."""
    from experiments import cost, export, measure, zero_shot_eval
    ro = tmp_path / "afile"
    ro.write_text("x")  # a file where a folder is needed: unwritable even as root
    arch = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    cases = [
        (export.main, ["--space", "nb201", "--arch", arch, "--out", str(ro / "m.onnx")], "afile"),
        (export.main, ["--space", "nb201", "--arch", "bogus", "--out", str(tmp_path / "m.onnx")], "bogus"),
        (cost.main, ["--onnx", str(ro)], "is not a readable ONNX model"),
        (measure.main, ["--space", "nb201", "--backend", "jax", "--num", "1", "--out", str(ro / "x.csv")],
         "afile"),
        (measure.main, ["--space", "nb201", "--backend", "bogus", "--num", "1", "--out", str(tmp_path / "x.csv")],
         "bogus"),
        (zero_shot_eval.main, ["--truth", str(tmp_path / "none.csv"), "--synthetic"], "none.csv"),
    ]
    for fn, argv, message in cases:
        code, err = _exit(capsys, fn, argv)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (argv, err)
