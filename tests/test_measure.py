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
    m = measure.make_backend("onnxruntime", warmup=1, repeats=3, per_layer="alone").measure(table)
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


def _mobile_graph(seed=0):
    """A mobile-curated network's concrete table, plan, exported ONNX op types and node rows."""
    space = make_space("mobile-curated")
    table = space.layers(space.sample(jax.random.key(seed)))
    b = measure.make_backend("onnxruntime")
    t = profile.concrete(table)
    pl = profile.plan(t)
    params, apply = profile.build_network(t)
    model = b._export(lambda x: apply(params, x), (1, *pl.in_shape))
    ops = [n.op_type for n in model.graph.node]
    return b, t, pl, ops, measure.node_rows(ops, pl.steps, lambda r: b._ops_alone(t, r))


def test_onnx_nodes_map_to_rows_in_graph_order():
    b, t, pl, ops, rows = _mobile_graph()
    assert len(rows) == len(ops) and (rows >= 0).all() and (np.diff(rows) >= 0).all()  # graph order
    kind = {r.index: r.op for r, _ in pl.steps}
    conv_rows = {i for i, k in kind.items() if k in (profile.OpKind.CONV, profile.OpKind.DWCONV)}
    assert {int(rows[j]) for j, o in enumerate(ops) if o == "Conv"} == conv_rows  # one Conv per conv row
    assert kind[int(rows[ops.index("ReduceMean")])] == profile.OpKind.GAP
    adds = [i for i, k in kind.items() if k == profile.OpKind.ADD]
    assert adds and all(ops[j] == "Add" for j in np.nonzero(np.isin(rows, adds))[0])  # a residual is one Add
    with pytest.raises(measure.ProfileMappingError, match=r"row 1 \(CONV.*expected ONNX nodes"):
        c = ops.index("Conv")  # the stem's conv missing: its Add comes where a Conv should
        measure.node_rows(ops[:c] + ops[c + 1:], pl.steps, lambda r: b._ops_alone(t, r))


def test_profiler_events_land_in_their_rows_fused_kernels_in_the_anchor():
    _, t, pl, ops, rows = _mobile_graph()
    kinds = [int(t.op[i]) for i in range(t.num_rows)]
    add_row = next(r.index for r, _ in pl.steps if r.op == profile.OpKind.ADD)
    add_node = int(np.nonzero(rows == add_row)[0][0])
    conv_before = int(rows[add_node - 1])  # the conv whose output the residual Add takes
    gap_node = ops.index("ReduceMean")

    def run(ts):  # one run: each original node 1 us, except the fused conv + residual Add kernel
        ev = [{"cat": "Session", "name": "model_run", "ts": ts, "dur": 1000}]
        for j, o in enumerate(ops):
            if j == add_node:  # ORT fused the conv before it with this Add: a Conv named after the Add
                ev.append({"cat": "Node", "name": f"node_Add_{j}_nchwc_kernel_time", "ts": ts + j + 1, "dur": 5,
                           "args": {"op_name": "Conv"}})
            elif j == gap_node:  # renamed by ORT's layout transformer
                ev.append({"cat": "Node", "name": "ReduceMean_0_kernel_time", "ts": ts + j + 1, "dur": 7,
                           "args": {"op_name": "ReduceMean"}})
            else:
                ev.append({"cat": "Node", "name": f"node_{o}_{j}_kernel_time", "ts": ts + j + 1, "dur": 1,
                           "args": {"op_name": o}})
        ev.append({"cat": "Node", "name": "ReorderOutput_kernel_time", "ts": ts + len(ops) + 1, "dur": 3,
                   "args": {"op_name": "ReorderOutput"}})  # ORT's own kernel: the previous event's row
        return ev

    events = run(0) + run(10_000) + run(20_000)  # the first is a warm-up
    sec = measure.profiled_row_seconds(events, ops, rows, kinds, skip=1)
    want = np.zeros(t.num_rows)
    for j in range(len(ops)):
        want[rows[j]] += {add_node: 0, gap_node: 7}.get(j, 1)
    want[conv_before] += 5
    want[rows[-1]] += 3
    np.testing.assert_allclose(sec * 1e6, want, rtol=1e-9)
    assert sec[add_row] == 0 and sec.sum() * 1e6 == pytest.approx(len(ops) - 2 + 5 + 7 + 3)
    with pytest.raises(measure.ProfileMappingError, match="none after the 3 skipped"):
        measure.profiled_row_seconds(events, ops, rows, kinds, skip=3)


def test_profiled_rows_are_the_rows_that_execute():
    space = make_space("nb201", channels=4, cells_per_stage=1)
    arch = space.decode("|nor_conv_3x3~0|+|nor_conv_1x1~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|none~2|")
    table = space.layers(arch)
    m = measure.make_backend("onnxruntime", warmup=1, repeats=3, profiled_runs=3).measure(table)
    t = profile.concrete(table)
    steps = {r.index: r for r, _ in profile.plan(t).steps}
    timed = set(np.nonzero(m.layer_latency_ms)[0].tolist())
    assert timed <= set(steps)  # dead, absent and input rows get nothing
    convs = {i for i, r in steps.items() if r.op == profile.OpKind.CONV}
    assert convs <= timed and m.latency_ms > 0


def test_unknown_backend_and_bad_settings():
    with pytest.raises(KeyError, match="unknown measurement backend 'onnx'.*onnxruntime"):
        measure.make_backend("onnx")
    with pytest.raises(ValueError, match="threads"):
        measure.make_backend("onnxruntime", threads=0)
    with pytest.raises(ValueError, match="per_layer must be one of"):
        measure.make_backend("onnxruntime", per_layer="kernels")


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
