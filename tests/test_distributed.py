"""`experiments.run --distributed`: one run over two processes (`jax.distributed`, CPU + Gloo) equals
one process with the same two devices, and only process 0 writes the workdir."""

import json
import os
import socket
import subprocess
import sys

import pytest

from experiments.config import ConfigError
from experiments.run import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = "experiments/configs/nb201/single_shot.py:smoke"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _run(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "experiments.run", "--config", CFG, *args], cwd=ROOT,
                            env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _strip(res: dict) -> dict:
    res = dict(res, stages={s: {k: v for k, v in o.items() if k not in ("seconds", "search_seconds")}
                            for s, o in res["stages"].items()})
    res.pop("search_seconds")
    return res


def _metrics(wd: str) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in open(os.path.join(wd, "metrics.jsonl"))]


def test_flags_need_distributed():
    with pytest.raises(SystemExit) as e:
        main(["--config", CFG, "--workdir", "/tmp/never", "--process-id", "1"])
    assert e.value.code == 2


@pytest.mark.slow
def test_two_processes_equal_one_process_with_two_devices(tmp_path, data_dir):
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    single = _run(["--workdir", one], env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    out, _ = single.communicate(timeout=600)
    assert single.returncode == 0, out
    port = _free_port()
    flags = ["--workdir", two, "--distributed", "--coordinator", f"localhost:{port}", "--num-processes", "2"]
    one_device = {"XLA_FLAGS": "--xla_force_host_platform_device_count=1"}  # not the test session's 4
    procs = [_run(flags + ["--process-id", str(i)], env=one_device) for i in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert "found (nb201)" in outs[0] and "found (nb201)" not in outs[1]  # process 0 speaks for the run
    r1, r2 = (json.load(open(os.path.join(wd, "results.json"))) for wd in (one, two))
    assert r2["architecture"] == r1["architecture"] and _strip(r2) == _strip(r1)
    # every logged epoch, once (only process 0 writes); losses may differ in float32's last bits (the
    # cross-process all-reduce of Gloo sums in another order than one process's), accuracies do not
    m1, m2 = _metrics(one), _metrics(two)
    assert len(m2) == len(m1) and all(a.keys() == b.keys() for a, b in zip(m1, m2))
    for a, b in zip(m1, m2):
        assert {k: v for k, v in b.items() if "ce" not in k} == {k: v for k, v in a.items() if "ce" not in k}
        assert [b[k] for k in b if "ce" in k] == pytest.approx([a[k] for k in a if "ce" in k], rel=1e-5)
    assert json.load(open(os.path.join(two, "config.json")))["device"]["count"] == 2
    # both processes resume from the workdir: the finished run is not run again
    procs = [_run(flags + ["--process-id", str(i)], env=one_device) for i in range(2)]
    assert [p.wait(timeout=600) for p in procs] == [0, 0]
    assert _metrics(two) == m2
