"""The constrained derivation (`supernet.derive`): the most probable architecture meeting hard limits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from supernet.derive import allowed_architectures, model_limit, most_probable, top_k
from supernet.spaces import make_space

SPACE = make_space("nb201")
OPS = [str(c) for c in SPACE.decisions[0].choices]  # none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3
CONV3 = OPS.index("nor_conv_3x3")
CONV1 = OPS.index("nor_conv_1x1")


def conv3_count(probs):
    return {"n_conv3": probs[..., CONV3].sum(-1), "n_conv": probs[..., [CONV1, CONV3]].sum((-1, -2))}


def margins_logp(margins):
    """Every edge prefers nor_conv_3x3 by `margins[e]` nats over nor_conv_1x1, which leads the rest by 1."""
    logp = np.full((SPACE.num_decisions, SPACE.max_choices), -3.0)
    logp[:, CONV1] = -1.0
    logp[:, CONV3] = -1.0 + np.asarray(margins)
    return logp


def test_the_limit_keeps_the_choices_the_distribution_prefers_most():
    """With at most two 3x3 convs allowed, the two edges with the largest preference keep theirs and
    the other edges take their second choice (worked by hand from the log-probabilities)."""
    margins = [0.5, 2.0, 0.1, 1.5, 0.3, 0.7]
    d = most_probable(SPACE, margins_logp(margins), SPACE.full_mask().allowed, conv3_count, {"n_conv3": 2.0})
    expect = np.where(np.isin(np.arange(6), [1, 3]), CONV3, CONV1)
    np.testing.assert_array_equal(d.arch, expect)
    assert d.feasible and d.exact and d.costs["n_conv3"] == 2.0
    # its rank: the number of live cells more probable than it
    score = lambda a: margins_logp(margins)[np.arange(6), a].sum()
    everything = allowed_architectures(SPACE.full_mask().allowed)
    live = everything[~SPACE.is_constant(everything)]
    assert d.rank == int(np.sum(np.asarray([score(a) for a in live]) > score(expect)))


def test_without_a_binding_limit_it_is_the_argmax_and_an_impossible_one_says_so():
    logp = margins_logp([1.0] * 6)
    free = most_probable(SPACE, logp, SPACE.full_mask().allowed, conv3_count, {"n_conv3": 6.0})
    assert free.rank == 0 and free.feasible and np.all(free.arch == CONV3)
    # no convolution at all: impossible with n_conv <= -1; the argmax comes back, marked infeasible
    none = most_probable(SPACE, logp, SPACE.full_mask().allowed, conv3_count, {"n_conv": -1.0})
    assert not none.feasible and none.rank == 0 and np.all(none.arch == CONV3)
    with pytest.raises(ValueError, match=r"limits on \['latency_ms'\]"):
        most_probable(SPACE, logp, SPACE.full_mask().allowed, conv3_count, {"latency_ms": 1.0})


def test_constant_networks_are_never_returned():
    """A distribution that prefers `none` everywhere: the argmax cell is cut off (10 % in the table)."""
    logp = np.full((6, SPACE.max_choices), -5.0)
    logp[:, OPS.index("none")] = 0.0
    logp[:, CONV3] = -1.0
    d = most_probable(SPACE, logp, SPACE.full_mask().allowed, conv3_count, {"n_conv3": 6.0})
    assert not SPACE.is_constant(d.arch) and d.rank == 0
    assert d.candidates < SPACE.size  # the constant cells were removed before ranking


def test_a_mask_is_respected_and_the_beam_agrees_with_enumeration():
    mask = SPACE.mask({"edge_1_0": ["nor_conv_3x3"], "edge_3_2": ["nor_conv_1x1", "nor_conv_3x3"]}).allowed
    rng = np.random.default_rng(0)
    logp = rng.normal(size=(6, SPACE.max_choices))
    cost = lambda p: {"lat": (p * jnp.asarray([0.0, 0.1, 1.0, 3.0, 0.5])).sum()}
    exact = most_probable(SPACE, logp, mask, cost, {"lat": 6.0})
    beam = most_probable(SPACE, logp, mask, cost, {"lat": 6.0}, enumerate_max=0, k=5000)
    assert exact.exact and not beam.exact and beam.candidates <= 5000
    np.testing.assert_array_equal(exact.arch, beam.arch)
    assert mask[np.arange(6), exact.arch].all() and exact.costs["lat"] <= 6.0


def test_top_k_is_the_k_most_probable_in_order():
    rng = np.random.default_rng(1)
    logp = rng.normal(size=(4, 3))
    every = allowed_architectures(np.ones((4, 3), bool))
    scores = logp[np.arange(4), every].sum(-1)
    got = top_k(logp, 7)
    np.testing.assert_array_equal(got, every[np.argsort(-scores, kind="stable")[:7]])


def test_model_limit_is_the_conformal_quantile_of_the_held_out_ratios():
    ratios = np.r_[np.full(17, 1.1), 1.3, 40.0]  # 19 cells, one missed by 40x
    assert model_limit(10.0, None, 0.9) == model_limit(10.0, ratios, None) == 10.0
    assert model_limit(10.0, ratios, 0.9) == pytest.approx(10.0 / 1.3)  # the 18th of 19: the outlier ignored
    assert model_limit(10.0, ratios, 0.5) == pytest.approx(10.0 / 1.1)
    assert model_limit(10.0, np.full(19, 0.8), 0.9) == 10.0  # a model that overestimates: never loosened
    with pytest.raises(ValueError, match=r"confidence must be in \[0.5, 1\)"):
        model_limit(10.0, ratios, 1.0)
    with pytest.raises(ValueError, match="needs at least 9 held-out errors"):
        model_limit(10.0, ratios[:5], 0.9)


def test_the_conformal_limit_holds_on_cells_the_surrogate_never_saw(data_dir):
    """NAS-Bench-201, pixel3, the surrogate fitted on 50 cells: of the unseen cells predicted under
    the 90 % limit for 10 ms, about 90 % meet 10 ms in the table, clearly more than of those
    predicted under 10 ms."""
    from experiments.fit_surrogate import load_latency_csv
    from hwmodel.fit import features_of, fit_space, loo_ratios, split
    space = make_space("nb201")
    archs, lat = load_latency_csv(f"{data_dir}/nas-bench-201/nb201_cifar10.csv", space, "pixel3_latency_ms", None)
    idx, rest = split(len(archs), 50, 1)
    s = fit_space(space, archs[idx], lat[idx])
    limit = model_limit(10.0, loo_ratios(space, archs[idx], lat[idx], s), 0.9)
    test = rest[:3000]
    pred = features_of(space, archs[test], s.config, dead_code=s.dead_code) @ np.asarray(s.coef, np.float64) + float(s.intercept)
    assert 5.0 < limit < 10.0
    met, plain = np.mean(lat[test][pred <= limit] <= 10.0), np.mean(lat[test][pred <= 10.0] <= 10.0)
    print(f"limit {limit:.2f} ms: {met:.3f} meet 10 ms (prediction <= 10 ms: {plain:.3f})")
    assert met >= 0.87 and met > plain + 0.05


def test_single_shot_returns_what_it_logs_and_meets_the_limit():
    """A search with a latency limit: the architecture of each epoch's record is the one derived
    under the limit, its logged cost is that architecture's, and it meets the limit."""
    from flax import nnx

    from supernet.model import make_supernet
    from supernet.objectives import CostConfig, make_cost_fn
    from supernet.single_shot import SearchConfig, SingleShot
    from supernet.spaces.nb201 import NB201Space
    from supernet.training import DeviceData, make_mesh
    space = NB201Space(channels=2, cells_per_stage=1, input_size=8)
    cost_cfg = CostConfig(form="hinge", target_ms=1.0, weight=0.0)  # no pull: only the limit acts
    fn = make_cost_fn(space, cost_cfg)
    every = allowed_architectures(space.full_mask().allowed)
    lat = np.asarray(jax.vmap(lambda a: fn(space.one_hot(a))["latency_ms"])(jnp.asarray(every)))
    limit = float(np.quantile(lat, 0.3))
    search = SingleShot(space, make_supernet(space, rngs=nnx.Rngs(0)),
                        SearchConfig(epochs=1, batch_size=8, steps_per_epoch=2, cost=cost_cfg),
                        cost_fn=fn, limits={"latency_ms": limit})
    rng = np.random.default_rng(0)
    data = DeviceData.put(rng.integers(0, 255, (32, 8, 8, 3)).astype(np.uint8), np.arange(32) % 10, make_mesh())
    rec = search.run_epoch(data, data)
    arch = search.derive_arch()
    assert rec["arch"] == space.encode(arch) and rec["meets_limits"]
    assert rec["latency_ms_argmax"] == pytest.approx(float(fn(space.one_hot(arch))["latency_ms"]), rel=1e-5)
    assert rec["latency_ms_argmax"] <= limit
    with pytest.raises(ValueError, match="need a cost_fn"):
        SingleShot(space, search.model, SearchConfig(epochs=1), limits={"latency_ms": 1.0})


def test_the_constraint_form_adds_nothing_to_the_loss_and_needs_a_target():
    from supernet.objectives import CostConfig, combine
    c = CostConfig(form="constraint", target_ms=5.0, confidence=0.9)
    assert c.uses_latency and not c.in_loss and c.uses_cost
    assert float(combine(jnp.float32(1.5), {"latency_ms": jnp.float32(50.0)}, c)) == 1.5
    assert CostConfig(form="constraint", target_ms=5.0, params_budget_bytes=1e3).in_loss  # the budget's penalty
    with pytest.raises(ValueError, match="needs a latency target"):
        CostConfig(form="constraint")
    with pytest.raises(ValueError, match=r"confidence must be a probability in \[0.5, 1\)"):
        CostConfig(form="constraint", target_ms=5.0, confidence=0.2)


def test_a_run_derives_from_another_workdirs_supernet_under_its_own_target(tmp_path, data_dir, capsys):
    """`single_shot.supernet_from`: a search without a hardware term in the loss is trained once; a
    run with a latency constraint takes its supernet (same logits, no training) and returns the most
    probable cell that meets its own target by the surrogate; a run that would train differently is
    refused before its workdir is written."""
    import json
    import os

    from experiments import run
    smoke = "experiments/configs/nb201/single_shot.py:smoke"
    src = str(tmp_path / "src")
    base = run.main(["--config", smoke, "--workdir", src])
    with open(os.path.join(src, "stages", "single_shot.json")) as f:
        trained = json.load(f)
    target = ["--config.cost.form=constraint", "--config.cost.weight=0", "--config.cost.target_ms=9.0",
              "--config.cost.model=surrogate", "--config.cost.surrogate.csv={data}/nas-bench-201/nb201_cifar10.csv",
              "--config.cost.surrogate.column=pixel3_latency_ms", "--config.cost.confidence=0.9",
              f"--config.single_shot.supernet_from={src}"]
    wd = str(tmp_path / "derived")
    res = run.main(["--config", smoke, "--workdir", wd, *target])
    with open(os.path.join(wd, "stages", "single_shot.json")) as f:
        stage = json.load(f)
    assert stage["probs"] == trained["probs"]  # the same supernet, not trained again
    assert stage["search_seconds"] == trained["search_seconds"]
    assert not os.path.exists(os.path.join(wd, "metrics.jsonl"))  # no epoch ran
    limit = stage["model_limits"]["latency_ms"]  # 9 ms tightened by the fit's held-out errors
    assert 3.0 < limit < 9.0 and stage["meets_target_by_model"] and stage["latency_ms_model"] <= limit
    assert res["latency_ms"]["surrogate"] == pytest.approx(stage["latency_ms_model"], rel=1e-5)
    assert base["architecture"] == trained["arch"]
    for extra, message in [(["--config.seed=1"], "seed differ"),
                           (["--config.single_shot.epochs=3"], "single_shot differ"),
                           (["--config.cost.form=hinge"], "this run's cost.form='hinge'"),
                           (["--config.cost.surrogate.train_size=5"], "needs cost.surrogate.train_size >= 9")]:
        bad = str(tmp_path / f"bad{len(message)}")
        with pytest.raises(SystemExit) as e:
            run.main(["--config", smoke, "--workdir", bad, *target, *extra])
        assert e.value.code == 2 and not os.path.exists(bad)
        assert message in capsys.readouterr().err
