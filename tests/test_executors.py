"""Executors (`experiments.executors`): sweeps whose failing members are reported while the others
finish, Ray runs that equal the serial ones, and bad executor settings that stop in seconds."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from experiments.executors import ExecutorError, ExecutorSpec, Failure, LocalExecutor, make_executor, parse_resources
from experiments.sweep import main as sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: A three-member sweep of quick `evolve` runs (table lookups); the member named `broken` reads a
#: lookup table with a corrupt accuracy cell, which only the run itself finds (the config check
#: reads the header alone).
SWEEP = '''
from experiments.configs.nb201.ablation import get_config as ablation

def get_config(arg=None):
    c = ablation("smoke")
    c.stages = ["evolve"]
    c.evolve.budget_evals = 12
    c.evolve.population = 4
    return c

def get_sweep(arg=None):
    runs = [{{"seed": 0}}, {{"seed": 1}}]
    if arg == "broken":
        runs.append({{"name": "broken", "seed": 2, "table.csv": {bad!r}}})
    return runs
'''

#: What may differ between two runs with equal results: wall times.
TIMING = ("search_seconds", "seconds")


def _sweep_file(tmp_path, data_dir) -> str:
    src = os.path.join(data_dir, "nas-bench-201", "nb201_cifar10.csv")
    lines = open(src).read().splitlines()
    head, row = lines[0], lines[1].split(",")
    row[1] = "abc"  # a non-number where the accuracy belongs
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([head, ",".join(row), *lines[2:]]) + "\n")
    path = tmp_path / "sweep_cfg.py"
    path.write_text(SWEEP.format(bad=str(bad)))
    return str(path)


def _results(root: str) -> dict[str, dict]:
    """Every member's results.json under `root`, without the wall times."""
    out = {}
    for name in sorted(os.listdir(root)):
        p = os.path.join(root, name, "results.json")
        if os.path.isfile(p):
            res = json.load(open(p))
            res.pop("search_seconds")
            for stage in res["stages"].values():
                for k in TIMING:
                    stage.pop(k, None)
            out[name] = res
    return out


def test_resources_and_executor_names_are_checked():
    assert parse_resources("cpu=2, gpu=0.5") == {"cpu": 2.0, "gpu": 0.5}
    for bad in ("cpu", "tpu=1", "cpu=-1", "cpu=0,gpu=0", "cpu=x"):
        with pytest.raises(ExecutorError, match="resources-per-run"):
            parse_resources(bad)
    with pytest.raises(ExecutorError, match="unknown executor 'dask'"):
        ExecutorSpec.parse("dask")
    with pytest.raises(ExecutorError, match="needs --executor ray"):
        ExecutorSpec.parse("local", address="10.0.0.1:6379")


def test_local_executor_reports_failures_in_order_and_goes_on():
    out = list(LocalExecutor().run_all(lambda x: 10 // x, [5, 0, 2]))
    assert [i for i, _ in out] == [0, 1, 2] and out[0][1] == 2 and out[2][1] == 5
    f = out[1][1]
    assert isinstance(f, Failure) and f.type == "ZeroDivisionError" and "10 // x" in f.traceback


def test_a_failing_member_is_reported_with_its_log_while_the_others_finish(tmp_path, data_dir, capsys):
    cfg = _sweep_file(tmp_path, data_dir)
    root = str(tmp_path / "sweep")
    with pytest.raises(SystemExit) as e:
        sweep(["--config", f"{cfg}:broken", "--workdir", root])
    assert e.value.code == 1
    err = capsys.readouterr().err
    log = os.path.join(root, "broken", "sweep.log")
    assert "1 of 3 runs failed" in err and "broken: InputError" in err and log in err
    assert "abc" in open(log).read()  # the member's own output, the error included
    assert sorted(_results(root)) == ["seed=0", "seed=1"]  # the others finished
    # the rerun skips the finished members (their results stay) and reports the broken one again
    before = {n: os.path.getmtime(os.path.join(root, n, "results.json")) for n in ("seed=0", "seed=1")}
    with pytest.raises(SystemExit):
        sweep(["--config", f"{cfg}:broken", "--workdir", root])
    assert before == {n: os.path.getmtime(os.path.join(root, n, "results.json")) for n in before}


def test_an_unreachable_ray_address_stops_in_seconds():
    pytest.importorskip("ray")
    t0 = time.perf_counter()
    with pytest.raises(ExecutorError, match=r"no Ray cluster reachable at '127.0.0.1:9'.*ray start --head"):
        make_executor(ExecutorSpec.parse("ray", address="127.0.0.1:9"))
    with pytest.raises(ExecutorError, match="expected host:port"):
        make_executor(ExecutorSpec.parse("ray", address="nowhere"))
    assert time.perf_counter() - t0 < 10


def test_resources_the_ray_instance_lacks_stop_in_seconds():
    pytest.importorskip("ray")
    t0 = time.perf_counter()
    with pytest.raises(ExecutorError, match=r"gpu=1 but the local Ray instance has 0 GPUs.*would wait forever"):
        make_executor(ExecutorSpec.parse("ray", resources="cpu=1,gpu=1", workers=1))
    with pytest.raises(ExecutorError, match=r"cpu=4 but the local Ray instance has 2 CPUs"):
        make_executor(ExecutorSpec.parse("ray", resources="cpu=4", workers=2))
    with make_executor(ExecutorSpec.parse("ray", workers=2)) as ex:  # 2 CPUs: 2 workers of 1 CPU
        pool = ex.pool(lambda: 10, workers=2)
        assert pool.map(lambda held, x: held + x, [1, 2, 3]) == [11, 12, 13]  # in order
        with pytest.raises(ExecutorError, match="does not fit beside the 2 already held"):
            ex.pool(lambda: 0, workers=1)  # would wait for a free CPU forever
    assert time.perf_counter() - t0 < 90  # three local Ray starts, no hang


@pytest.mark.slow
def test_ray_sweep_equals_serial_reports_failures_and_resumes_after_a_kill(tmp_path, data_dir):
    """A Ray sweep on 2 workers: the failing member is reported, the others finish with the serial
    sweep's results.json; a Ray sweep killed mid-way resumes to the same results."""
    pytest.importorskip("ray")
    cfg = _sweep_file(tmp_path, data_dir)
    serial, ray_root, killed = (str(tmp_path / n) for n in ("serial", "ray", "killed"))
    with pytest.raises(SystemExit):
        sweep(["--config", f"{cfg}:broken", "--workdir", serial])
    cmd = [sys.executable, "-m", "experiments.sweep", "--config", f"{cfg}:broken", "--executor", "ray",
           "--workers", "2"]
    run = subprocess.run(cmd + ["--workdir", ray_root], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 1 and "1 of 3 runs failed" in run.stderr and "broken: InputError" in run.stderr
    assert _results(ray_root) == _results(serial) and len(_results(serial)) == 2
    # killed once a member has started: every workdir resumes, to the serial results
    proc = subprocess.Popen(cmd + ["--workdir", killed], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not any(  # a member has opened its workdir
            os.path.isfile(os.path.join(killed, n, "config.json")) for n in ("seed=0", "seed=1")):
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[1]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in err, err
    assert len(_results(killed)) < 2  # stopped with a member unfinished: the rerun resumes it
    run = subprocess.run(cmd + ["--workdir", killed], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 1 and _results(killed) == _results(serial)


def _evolve_history(wd: str) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in open(os.path.join(wd, "metrics.jsonl")) if json.loads(line).get("stage") == "evolve"]


def test_measured_latency_of_every_candidate_and_bad_backends(tmp_path, data_dir):
    """`evolve.measure`: each candidate's ZigZag latency in the history, equal to the backend's own."""
    from experiments.run import main as run
    from hwmodel.measure import make_backend
    from supernet.spaces import make_space
    over = ["--config.stages=['evolve']", "--config.evolve.budget_evals=6", "--config.evolve.population=4",
            "--config.evolve.measure=zigzag:edge_tpu_like"]
    wd = str(tmp_path / "run")
    run(["--config", "experiments/configs/nb201/ablation.py:smoke", "--workdir", wd, *over])
    hist = _evolve_history(wd)
    from experiments.config import load_config
    cfg = load_config("experiments/configs/nb201/ablation.py:smoke")
    space = make_space(cfg.space.name, **dict(cfg.space.kwargs))
    backend = make_backend("zigzag:edge_tpu_like")
    r = hist[-1]
    assert r["latency_ms:zigzag:edge_tpu_like"] == backend.measure(space.layers(space.decode(r["arch"])),
                                                                    layers=False).latency_ms > 0
    backend.close()
    with pytest.raises(SystemExit) as e:
        run(["--config", "experiments/configs/nb201/ablation.py:smoke", "--workdir", str(tmp_path / "bad"),
             *over[:-1], "--config.evolve.measure=zigzag:nope"])
    assert e.value.code == 2 and not os.path.exists(tmp_path / "bad")


@pytest.mark.slow
def test_ray_pool_evaluates_a_generation_as_the_serial_search(tmp_path, data_dir):
    """`evolve` with the `supernet` evaluator and ZigZag-measured latency: the candidates of each step
    split over 2 Ray actors give the serial history."""
    pytest.importorskip("ray")
    over = ["--config.stages=['single_shot','evolve']", "--config.evolve.evaluator=supernet",
            "--config.evolve.budget_evals=8", "--config.evolve.population=4", "--config.evolve.batch=2",
            "--config.evolve.measure=zigzag:edge_tpu_like"]
    cmd = [sys.executable, "-m", "experiments.run", "--config", "experiments/configs/nb201/single_shot.py:smoke", *over]
    for name, extra in (("serial", []), ("ray", ["--executor", "ray", "--workers", "2"])):
        run = subprocess.run(cmd + ["--workdir", str(tmp_path / name), *extra], cwd=ROOT, capture_output=True,
                             text=True, timeout=900)
        assert run.returncode == 0, run.stderr[-2000:]
    assert "evaluated by 2 ray workers" in run.stdout
    serial, ray = _evolve_history(str(tmp_path / "serial")), _evolve_history(str(tmp_path / "ray"))
    assert len(serial) == 8 and serial == ray
