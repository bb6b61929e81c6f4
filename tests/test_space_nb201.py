"""Tests of the NAS-Bench-201 cell space (supernet/spaces/nb201.py)."""

from __future__ import annotations

import csv
import dataclasses
import pathlib

import jax
import numpy as np
import pytest

from hwmodel.layers import OpKind, total_flops, total_params
from supernet.spaces.nb201 import OPS, NB201Space
from supernet.spaces.registry import make_space

# The benchmark table lives in the shared data folder next to the repository checkout.
CSV = pathlib.Path(__file__).resolve().parents[2] / "shared/data/nas-bench-201/nb201_cifar10.csv"
ALL_CONV3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
ALL_SKIP = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"


@pytest.fixture(scope="module")
def space() -> NB201Space:
    return NB201Space()


def _csv_path() -> pathlib.Path:
    if not CSV.exists():
        pytest.skip(f"{CSV} not available")
    return CSV


def test_registry_and_decisions(space):
    s = make_space("nb201", num_classes=100)
    assert isinstance(s, NB201Space) and s.num_classes == 100
    assert [d.name for d in space.decisions] == ["edge_1_0", "edge_2_0", "edge_2_1", "edge_3_0",
                                                 "edge_3_1", "edge_3_2"]
    assert all(d.choices == OPS for d in space.decisions)
    assert OPS == ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
    assert space.size == 15625


def test_round_trip_all_benchmark_rows(space):
    with open(_csv_path(), newline="") as f:
        strings = [row["arch_str"] for row in csv.DictReader(f)]
    assert len(strings) == 15625
    archs = set()
    for s in strings:
        a = space.decode(s)
        assert space.encode(a) == s
        archs.add(tuple(a.tolist()))
    assert len(archs) == space.size  # the table covers the space, each cell once


def test_decode_order():
    # Group k lists the edges into node k; '~i' is the source node.
    s = "|nor_conv_3x3~0|+|avg_pool_3x3~0|skip_connect~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|"
    assert NB201Space().decode(s).tolist() == [3, 4, 1, 1, 2, 3]


@pytest.mark.parametrize("text, why", [
    ("|none~0|+|none~0|none~1|", "groups"),  # two groups
    ("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|+|none~0|", "groups"),
    ("|conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown operation 'conv_5x5'"),
    ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", "from node 0"),
    ("|none~0|+|none~0|none~2|+|none~0|none~1|none~2|", "from node 1"),
    ("none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "start and end with '|'"),
    ("|none~0|+|none~0|none~1|+|none~0|none~1|none~2", "start and end with '|'"),
    ("|none~0|+|none~0|+|none~0|none~1|none~2|", "need 2"),
    ("|none|+|none~0|none~1|+|none~0|none~1|none~2|", "form 'op~0'"),
    ("", "groups"),
])
def test_malformed_strings(space, text, why):
    with pytest.raises(ValueError) as err:
        space.decode(text)
    msg = str(err.value)
    assert why in msg and "|op~0|+|op~0|op~1|+|op~0|op~1|op~2|" in msg and "nor_conv_3x3" in msg


def test_expected_layers_of_one_hot_equal_layers(space):
    for arch in np.asarray(space.sample(jax.random.key(0), num=8)):
        a, b = space.layers(arch), space.expected_layers(space.one_hot(arch))
        for f in dataclasses.fields(a):
            np.testing.assert_array_equal(getattr(a, f.name), getattr(b, f.name), err_msg=f.name)


def test_structure_invariants(space):
    t = space.layers(space.decode(ALL_CONV3)).to_numpy()
    idx = np.arange(t.num_rows)
    assert t.op[0] == OpKind.INPUT and t.src[0] == -1
    assert np.all((t.src[1:] >= 0) & (t.src[1:] < idx[1:]))
    assert np.all(t.res < idx)
    assert np.all(t.res[~np.isin(t.op, [OpKind.ADD, OpKind.MIX])] == -1)
    assert np.all(t.res[np.isin(t.op, [OpKind.ADD, OpKind.MIX])] >= 0)
    assert np.all(t.act == 0)  # pre-activation ReLUs are fused (see module docstring)
    assert len(space.cell_rows) == 15 and t.op[-1] == OpKind.LINEAR and t.c_out[-1] == 10
    # Every row's inputs have the row's channels and spatial size (a well-formed graph).
    ho = np.where(np.isin(t.op, [OpKind.GAP, OpKind.LINEAR]), 1, np.ceil(t.h / t.stride))
    for r in idx[1:]:
        for s in (t.src[r], t.res[r]):
            if s >= 0:
                assert (t.c_out[s], ho[s]) == (t.c_in[r], t.h[r]), (r, s)


def test_cells_hold_each_edge_choice(space):
    # Each cell: 6 edges x (IDENTITY, CONV1, CONV3, AVGPOOL, 3 MIX) + 3 node-sum MIX rows.
    t = space.layers(space.decode(ALL_CONV3)).to_numpy()
    (s0, e0), (s1, e1) = space.cell_rows[0], space.cell_rows[-1]
    assert e0 - s0 == 6 * 7 + 3
    ops = t.op[s0:e0]
    assert (ops == OpKind.CONV).sum() == 12 and (ops == OpKind.MIX).sum() == 21
    k3 = (t.op[s1:e1] == OpKind.CONV) & (t.kernel[s1:e1] == 3)
    assert np.all(t.c_in[s1:e1][k3] == 64) and np.all(t.h[s1:e1][k3] == 8)
    assert np.all(t.stride[s1:e1] == 1) and np.all(t.groups == 1)


def test_all_none_cell_has_no_conv_in_cells(space):
    t = space.layers(np.zeros(6, np.int32)).to_numpy()
    present = t.weight > 0
    for s, e in space.cell_rows:
        assert not np.any(present[s:e] & (t.op[s:e] != OpKind.MIX))
    # Outside the cells: stem, 2 x (conv_a, conv_b, shortcut conv) and the classifier.
    assert np.sum(present & (t.op == OpKind.CONV)) == 7
    assert np.sum(present & (t.op == OpKind.AVGPOOL)) == 2


def test_jit_vmap_one_trace(space):
    traces = []

    def f(archs):
        traces.append(1)
        return jax.vmap(space.layers)(archs)

    g = jax.jit(f)
    for seed in range(3):
        t = g(space.sample(jax.random.key(seed), num=4))
    assert len(traces) == 1 and t.op.shape == (4, len(space.template))
    flops = jax.jit(jax.vmap(lambda a: total_flops(space.layers(a))))(space.sample(jax.random.key(0), 4))
    assert flops.shape == (4,)


# ------------------------------------------------------------------------ FLOPs and params
def _hand_count(cell_convs: list[int], num_classes: int = 10) -> tuple[int, int, int]:
    """(params with one bias per conv output channel, MACs, NB201-style BN channels) by hand.

    `cell_convs`: kernel sizes of the convs in one cell. Layers as (k, c_in, c_out, h_out).
    """
    layers = [(3, 3, 16, 32)]  # stem
    for c, h in ((16, 32), (32, 16), (64, 8)):
        if c > 16:  # reduction block: conv_a (stride 2), conv_b, shortcut 1x1 conv
            layers += [(3, c // 2, c, h), (3, c, c, h), (1, c // 2, c, h)]
        layers += [(k, c, c, h) for k in cell_convs] * 5
    params = sum(k * k * ci * co + co for k, ci, co, _ in layers) + 64 * num_classes + num_classes
    macs = sum(h * h * k * k * ci * co for k, ci, co, h in layers) + 64 * num_classes
    # Channels of NB201's BNs: all convs but the two shortcut 1x1 convs (no BN there).
    bn = sum(co for k, ci, co, _ in layers) - 32 - 64
    return params, macs, bn


@pytest.mark.parametrize("text, cell_convs", [(ALL_CONV3, [3] * 6), (ALL_SKIP, [])])
def test_flops_params_by_hand(space, text, cell_convs):
    t = space.layers(space.decode(text))
    params, macs, _ = _hand_count(cell_convs)
    assert float(total_params(t)) == params
    assert float(total_flops(t)) == 2 * macs


@pytest.mark.parametrize("text, cell_convs, api_params, api_flops", [
    # NAS-Bench-201 API, CIFAR-10: the largest and smallest cells of the benchmark (these are the
    # max / min of params and 'flops' over the space as quoted in evoxbench's NB201 normalisation).
    (ALL_CONV3, [3] * 6, 1.531546e6, 220.11969e6),
    (ALL_SKIP, [], 0.073306e6, 7.78305e6),
])
def test_matches_published_nb201_costs(space, text, cell_convs, api_params, api_flops):
    """Exact agreement once the counting conventions are converted.

    The API counts params with 2 per BN channel (affine), no conv bias, a 64-channel final BN, and
    no BN on the shortcut 1x1 conv; we fold each BN into one bias per conv output channel. Its
    'flops' are MACs of conv and linear layers plus the linear bias (pooling not counted); ours are
    2 x MACs without biases.
    """
    t = space.layers(space.decode(text))
    _, _, bn = _hand_count(cell_convs)
    ours_params = float(total_params(t))
    assert ours_params - (32 + 64) + bn + 2 * 64 == pytest.approx(api_params, abs=0.5)
    assert float(total_flops(t)) / 2 + 10 == pytest.approx(api_flops, abs=0.5)
    # Without the conversion the conventions still agree within 0.5 % (params) and 1e-6 (MACs).
    assert ours_params == pytest.approx(api_params, rel=5e-3)
    assert float(total_flops(t)) / 2 == pytest.approx(api_flops, rel=1e-5)


def test_expected_costs_are_linear_in_probs(space):
    # Uniform over the 5 ops: each cell conv row has presence 1/5, so the cells' params are the
    # mean of the five single-op cells' params (none, skip and pool add no weights).
    t = space.expected_layers(space.uniform_probs())
    base = float(total_params(space.layers(np.zeros(6, np.int32))))
    c1 = float(total_params(space.layers(np.full(6, 2, np.int32)))) - base
    c3 = float(total_params(space.layers(np.full(6, 3, np.int32)))) - base
    assert float(total_params(t)) == pytest.approx(base + (c1 + c3) / 5, rel=1e-6)
    grad = jax.grad(lambda p: total_flops(space.expected_layers(p)))(space.uniform_probs())
    assert grad.shape == (6, 5) and float(grad[0, 3]) > float(grad[0, 2]) > 0
    assert float(grad[0, 0]) == 0.0  # 'none' has no rows


def test_bad_constructor_args():
    with pytest.raises(ValueError, match="multiple of 4"):
        NB201Space(input_size=30)
    with pytest.raises(ValueError, match="channels"):
        NB201Space(channels=0)
    small = NB201Space(num_classes=120, input_size=16, cells_per_stage=1)
    t = small.layers(np.full(6, 3, np.int32)).to_numpy()
    assert len(small.cell_rows) == 3 and t.h[-2] == 4 and t.c_out[-1] == 120


def test_unreachable_branches_by_hand_and_the_published_count(space):
    cells = {
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|": False,
        # node 2 gets input but feeds nothing: its conv is a dead end
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|nor_conv_3x3~1|none~2|": True,
        # node 1 gets no input, but its output edge 3<-1 is live: unreachable
        "|none~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|": True,
        "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|": False,  # nothing live, nothing unreachable
        "|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|": False,
    }
    got = space.has_unreachable_branch(np.stack([space.decode(c) for c in cells]))
    assert got.tolist() == list(cells.values())
    every = np.stack(np.meshgrid(*[np.arange(5)] * 6, indexing="ij"), -1).reshape(-1, 6)
    assert int((~space.has_unreachable_branch(every)).sum()) == 9445  # NAS-Bench-Suite-Zero's subset


def test_constant_output_cells_are_exactly_the_tables_chance_cells(space, data_dir):
    """`is_constant` (every row dead code) marks the 341 cells whose output node is cut off from the
    input by `none` edges: exactly the cells at 10.0 % (chance) in the benchmark table."""
    with open(CSV, newline="") as f:
        rows = list(csv.DictReader(f))
    archs = np.stack([space.decode(r["arch_str"]) for r in rows])
    acc = np.array([float(r["cifar10_valid_acc"]) for r in rows])
    const = space.is_constant(archs)
    assert const.sum() == 341 and np.array_equal(const, acc <= 10.0)
    assert not space.is_constant(space.decode(ALL_SKIP)) and const.shape == (len(rows),)


def test_single_shot_never_returns_a_constant_output_cell():
    """The derivation skips the most probable cells when they predict a constant (seen with a latency
    hinge on near-uniform logits), and says so when the search has collapsed entirely."""
    import types
    from experiments.train_stages import live_top_k
    space = make_space("nb201")
    dead = space.decode("|none~0|+|none~0|skip_connect~1|+|none~0|none~1|nor_conv_3x3~2|")
    live = [space.decode(ALL_SKIP), space.decode(ALL_CONV3)]
    ctx = types.SimpleNamespace(space=space)
    search = types.SimpleNamespace(top_k=lambda k: ([dead, live[0], dead, live[1]] * 30)[:k])
    got = live_top_k(ctx, search, 2)
    assert [space.encode(a) for a in got] == [ALL_SKIP, ALL_CONV3]
    with pytest.raises(FloatingPointError, match="each of the 100 most probable.*does not depend on its input"):
        live_top_k(ctx, types.SimpleNamespace(top_k=lambda k: [dead] * k), 10)
