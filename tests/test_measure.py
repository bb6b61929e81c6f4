"""Measurement backends: per-layer results map to layer-table rows; the CLI resumes."""

import csv

import jax
import numpy as np
import pytest

from experiments import measure as measure_cli
from hwmodel import measure, profile
from supernet import make_space


def test_per_layer_measurement_maps_to_the_rows_that_execute():
    space = make_space("nb201", channels=4, cells_per_stage=1)
    # edge 2<-1 is a conv fed by node 1, but node 2 reaches the output only through `none`: dead
    arch = space.decode("|nor_conv_3x3~0|+|nor_conv_1x1~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|none~2|")
    table = space.layers(arch)
    m = measure.make_backend("onnxruntime", warmup=1, repeats=3).measure(table)
    t = profile.concrete(table)
    computing = {r.index for r, _ in profile.plan(t).steps if r.op not in profile.NO_COMPUTE_OPS}
    assert set(np.nonzero(m.layer_latency_ms)[0]) == computing
    rows = [profile.table_row(t, i) for i in range(t.num_rows)]
    dead = [r.index for r in rows if r.op == profile.OpKind.CONV and float(t.weight[r.index]) > 0
            and r.index not in computing]
    assert dead and all(m.layer_latency_ms[i] == 0 for i in dead)  # present but dead: not measured
    assert m.latency_ms > 0 and m.spread_ms >= 0
    # rows with one signature are measured once (cache) and get the same number
    sig = {}
    for i in computing:
        sig.setdefault(measure.signature(rows[i]), set()).add(float(m.layer_latency_ms[i]))
    assert all(len(v) == 1 for v in sig.values())


def test_unknown_backend_and_bad_settings():
    with pytest.raises(KeyError, match="unknown measurement backend 'onnx'.*onnxruntime"):
        measure.make_backend("onnx")
    with pytest.raises(ValueError, match="threads"):
        measure.make_backend("onnxruntime", threads=0)


def test_cli_resumes_after_a_kill(tmp_path, capsys):
    out, lay = str(tmp_path / "n.csv"), str(tmp_path / "l.csv")
    argv = ["--space", "nb201", "--backend", "onnxruntime", "--num", "2", "--seed", "1", "--out", out,
            "--per-layer", lay, "--repeats", "2"]
    measure_cli.main(argv)
    full_net = list(csv.DictReader(open(out)))
    full_lay = list(csv.DictReader(open(lay)))
    # a kill after the first network's layers were written but before its network row:
    first = full_net[0]["arch"]
    with open(out, "w", newline="") as f:
        f.write("arch,latency_ms,spread_ms\n")
    lines = open(lay).read().splitlines()
    with open(lay, "w") as f:
        f.write("\n".join(lines[:3]) + "\n")  # header + two layer rows of the unfinished network
    measure_cli.main(argv)
    net = list(csv.DictReader(open(out)))
    layers = list(csv.DictReader(open(lay)))
    assert [r["arch"] for r in net] == [r["arch"] for r in full_net]
    assert sorted((r["arch"], r["row"]) for r in layers) == sorted((r["arch"], r["row"]) for r in full_lay)
    assert sum(r["arch"] == first for r in layers) == sum(r["arch"] == first for r in full_lay)
    measure_cli.main(argv)  # finished: nothing added
    assert len(list(csv.DictReader(open(out)))) == 2
    with pytest.raises(SystemExit) as e:  # another sample into the same file is refused
        measure_cli.main([*argv[:7], "7", *argv[8:]])
    assert e.value.code == 2 and "other architectures" in capsys.readouterr().err
