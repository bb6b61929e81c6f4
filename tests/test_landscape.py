"""The landscape measures (`supernet.landscape`) against hand-computed values, the article's three
claims on a small mobile space, and the `landscape` stage through the launcher and the report."""

import json
import os

import jax
import numpy as np
import pytest

from experiments.config import ConfigError, load_config
from hwmodel import ACCELERATORS
from supernet import landscape as L
from supernet.spaces import make_space

#: Two stages at the NPU preset's parallelism (P = 16): the curated grid is on multiples of 16.
SMALL = dict(parallelism=16, blocks_per_stage=(1, 2), base_widths=(16, 32), stage_strides=(1, 2),
             stem_width=16, head_width=64)


@pytest.fixture(scope="module")
def spaces():
    return make_space("mobile-raw", **SMALL), make_space("mobile-curated", **SMALL)


def test_strict_minima_counts_plateaus_once_and_ends():
    assert L.strict_minima([3, 2, 1, 2, 3]) == 1
    assert L.strict_minima([3, 1, 2, 1, 3]) == 2
    assert L.strict_minima([2, 1, 1, 1, 2]) == 1  # a plateau lower than both sides: one minimum
    assert L.strict_minima([1, 2, 3]) == 1  # an end whose neighbour is higher
    assert L.strict_minima([1, 2, 1]) == 2
    assert L.strict_minima([5, 5, 5]) == 1


def test_walk_measures_on_known_sequences():
    assert L.walk_minimum_share([3, 1, 2, 0, 4]) == pytest.approx(2 / 3)  # minima at 1 and 0; 2 is a maximum
    alt = np.tile([0.0, 1.0], 50)
    assert L.autocorrelation(alt) == pytest.approx(-1.0, abs=0.03)
    assert L.correlation_length(np.arange(100.0)) > 10 > L.correlation_length(np.random.default_rng(0).normal(size=500))


def test_neighbours_move_one_decision_by_one_step(spaces):
    raw, _ = spaces
    a = raw.baseline_arch()
    nb = L.neighbours(raw, a)
    assert ((nb != a).sum(1) == 1).all()
    expect = sum(dec.num_choices - 1 if not L.is_ordered(dec) else
                 int(a[d] > 0) + int(a[d] < dec.num_choices - 1) for d, dec in enumerate(raw.decisions))
    assert len(nb) == expect
    for row in nb:  # ordered decisions move to a neighbouring value only
        d = int(np.flatnonzero(row != a)[0])
        if L.is_ordered(raw.decisions[d]):
            assert abs(int(row[d]) - int(a[d])) == 1
    assert not L.is_ordered(raw.decisions[raw.decision_index("b0_type")])
    assert L.is_ordered(raw.decisions[raw.decision_index("s1_width")])


def test_flops_is_unimodal_latency_is_rocky_curation_smooths_it(spaces):
    """The article's three panels on a small space: every width line has one minimum under FLOPs,
    some have several under the NPU latency on raw widths, fewer on the curated grid."""
    raw, cur = spaces
    npu = ACCELERATORS["npu"]
    starts_raw = raw.validate_batch(raw.sample(jax.random.key(0), 30))
    starts_cur = cur.validate_batch(cur.sample(jax.random.key(0), 30))
    flops = L.line_minima(raw, L.objective(raw, "flops"), starts_raw)
    lat_raw = L.line_minima(raw, L.objective(raw, npu), starts_raw)
    lat_cur = L.line_minima(cur, L.objective(cur, npu), starts_cur)
    assert (flops == 1).all()
    assert lat_raw.mean() > 1.5 * lat_cur.mean() and lat_raw.max() >= 3
    # the hardware cost alone: raw widths the accelerator cannot tell apart are plateaus
    assert L.plateau_share(raw, L.objective(raw, npu, alpha=0.0), starts_raw) > \
        L.plateau_share(cur, L.objective(cur, npu, alpha=0.0), starts_cur)


def test_descent_ends_in_a_local_minimum_and_objective_is_relative_to_the_baseline(spaces):
    raw, _ = spaces
    j = L.objective(raw, ACCELERATORS["npu"])
    assert j(raw.baseline_arch()[None])[0] == pytest.approx(1.0)  # HW(ref)/HW(ref) - log 1
    start = raw.validate_batch(raw.sample(jax.random.key(1), 1))[0]
    run = L.descend(raw, j, start)
    assert (np.diff(run.values) < 0).all()
    assert j(L.neighbours(raw, run.path[-1])).min() >= run.values[-1]
    w0, w1 = raw.decision_index("s0_width"), raw.decision_index("s1_width")
    inside = L.descend(raw, j, start, decisions=(w0, w1))
    changed = np.flatnonzero((inside.path != start).any(0))
    assert set(changed) <= {w0, w1}
    grid = L.slice_2d(raw, j, start, w0, w1)
    assert grid.shape == (raw.decisions[w0].num_choices, raw.decisions[w1].num_choices)
    assert grid[start[w0], start[w1]] == pytest.approx(j(start[None])[0])


def test_a_measured_cost_enters_the_objective_like_the_analytic_one(spaces):
    """A cost given as a function of the architectures (what a measurement backend gives) makes the
    same objective as the built-in cost it reproduces."""
    from hwmodel.layers import total_flops
    raw, _ = spaces
    archs = raw.validate_batch(raw.sample(jax.random.key(2), 7))
    by_fn = L.objective(raw, lambda a: np.asarray(jax.vmap(lambda x: total_flops(raw.layers(x)))(a)))
    np.testing.assert_allclose(by_fn(archs), L.objective(raw, "flops")(archs), rtol=1e-6)


def test_bad_landscape_input_stops_with_one_message(spaces):
    raw, _ = spaces
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        L.objective(raw, "flops", alpha=-1.0)
    with pytest.raises(ValueError, match="unknown landscape cost 'macs'"):
        L.objective(raw, "macs")
    from experiments.pipeline import prepare
    for key, value, msg in (("landscape.cost", "tpu9", "unknown landscape.cost 'tpu9'"),
                            ("landscape.measured", ("zigzag:nope",), "unknown ZigZag description 'nope'"),
                            ("landscape.slice", ("s0_width", "s9_width"), "has no decision 's9_width'"),
                            ("landscape.walks", 0, "landscape.walks must be an integer >= 1")):
        cfg = load_config("experiments/configs/mobile/curation.py:smoke")
        cfg[key.split(".")[0]][key.split(".")[1]] = value
        with pytest.raises(ConfigError, match=msg):
            prepare(cfg, quiet=True)
    cfg = load_config("experiments/configs/mobile/curation.py:smoke")
    cfg.stages = ["landscape", "evolve"]
    with pytest.raises(ConfigError, match="'landscape' is a study of its own"):
        prepare(cfg, quiet=True)


def test_landscape_stage_runs_resumes_and_reports(tmp_path):
    from experiments.pipeline import launch, prepare
    from experiments.report import main as report
    for panel in ("flops", "curated"):
        cfg = load_config(f"experiments/configs/mobile/curation.py:{panel},smoke")
        if panel == "curated":  # the measured line (2 points here), on the JAX backend for speed
            cfg.landscape.measured = ("jax",)
        prepare(cfg, quiet=True)
        res = launch(cfg, str(tmp_path / panel))
        m = res["stages"]["landscape"]["measures"]
        assert m["line_minima_mean"] >= 1 and m["descent_steps_mean"] >= 0
        assert "slice" not in res["stages"]["landscape"]  # the grid stays in the stage file
        for m in res["stages"]["landscape"]["measured"].values():
            assert len(m["latency_ms"]) == len(m["objective"]) == len(m["choices"]) and m["minima"] >= 1
        again = launch(cfg, str(tmp_path / panel))  # a finished stage is not run again
        assert again["architecture"] == res["architecture"]
    with open(tmp_path / "flops" / "stages" / "landscape.json") as f:
        s = json.load(f)["slice"]
    assert np.asarray(s["objective"]).shape == tuple(len(c) for c in s["choices"])
    out = str(tmp_path / "rep")
    report([str(tmp_path), "--out", out, "--group-by", "space.name,landscape.cost"])
    assert os.path.exists(out + "_landscape.png") and os.path.exists(out + "_landscape_measured.png")
    with open(out + ".md") as f:
        md = f.read()
    assert "minima per width line" in md and "name=mobile-curated, cost=npu" in md
