import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import fit_surrogate as fit_cli
from hwmodel.fit import fit_space
from hwmodel.fit import InputError
from hwmodel.layers import OpKind, executed, is_op, prune_dead, total_flops
from hwmodel.surrogate import (FeatureConfig, fit, layer_features, network_features,
                               predict, predict_layers)
from supernet.spaces import make_space


@pytest.fixture(scope="module")
def fbnet():
    space = make_space("fbnet-cifar100")
    archs = np.asarray(space.sample(jax.random.key(0), 64))
    tables = jax.vmap(space.layers)(archs)
    return space, archs, tables


def _toy_device(tables, theta, b=0.7):
    """A device whose per-layer latency is exactly linear in the features."""
    return np.asarray(network_features(tables) @ theta + b, np.float64)


def test_recovers_an_additive_device(fbnet):
    space, archs, tables = fbnet
    theta = np.zeros(len(FeatureConfig().names), np.float32)
    theta[[0, 1, 9, 13]] = [0.01, 0.002, 0.03, 0.05]  # overheads and per-MMAC costs
    y = _toy_device(tables, theta)
    s = fit(np.asarray(network_features(tables)), y, lambdas=(1e-8,))
    np.testing.assert_allclose(np.asarray(predict(s, tables)), y, rtol=1e-3)
    # the network prediction is the sum of the per-layer predictions plus the constant
    per_layer = np.asarray((predict_layers(s, tables) * tables.weight).sum(-1) + s.intercept)
    np.testing.assert_allclose(per_layer, y, rtol=1e-4)


def test_fit_from_per_layer_measurements(fbnet):
    space, archs, tables = fbnet
    feats = np.asarray(layer_features(tables)).reshape(-1, len(FeatureConfig().names))
    present = np.asarray(tables.weight).reshape(-1) > 0
    theta = np.abs(np.random.default_rng(0).normal(size=feats.shape[1])) * 1e-3
    y_rows = feats[present] @ theta + 1e-4 * (feats[present][:, 0] > 0)
    s = fit(feats[present], y_rows + 1e-6, per_layer=True, lambdas=(1e-10,))
    assert float(s.intercept) == 0.0
    np.testing.assert_allclose(feats[present] @ np.asarray(s.coef), y_rows, rtol=0.05, atol=2e-5)


def test_prior_transfers_from_another_device(fbnet):
    space, archs, tables = fbnet
    x = np.asarray(network_features(tables))
    theta = np.abs(np.random.default_rng(1).normal(size=x.shape[1])) * 1e-3
    src = fit(x, x @ theta + 1.0)
    y = 2.0 * (x @ theta) + 0.5  # the target device: same shape of costs, other scale
    s = fit(x[:5], y[:5], priors=[src])
    np.testing.assert_allclose(x[5:] @ np.asarray(s.coef) + float(s.intercept), y[5:], rtol=0.02)


def test_grad_reaches_architecture_probabilities_and_vmaps(fbnet):
    space, archs, tables = fbnet
    x = np.asarray(network_features(tables))
    s = fit(x, np.asarray(total_flops(tables)) / 1e7 + 1.0)
    probs = space.uniform_probs()
    g = jax.grad(lambda p: predict(s, space.expected_layers(p)))(probs)
    assert np.all(np.isfinite(g)) and np.abs(g).sum() > 0
    batched = jax.jit(jax.vmap(lambda a: predict(s, space.layers(a))))(jnp.asarray(archs[:8]))
    np.testing.assert_allclose(batched, np.asarray(predict(s, tables[:8])), rtol=1e-5)


def test_save_load_round_trip(fbnet, tmp_path):
    space, archs, tables = fbnet
    x = np.asarray(network_features(tables))
    s = fit(x, x[:, 1] * 0.01 + 1.0)
    path = str(tmp_path / "s.json")
    fit_cli.save_surrogate(s, path)
    with pytest.raises(fit_cli.InputError, match="exists"):
        fit_cli.save_surrogate(s, path)  # never overwritten silently
    s2 = fit_cli.load_surrogate(path)
    np.testing.assert_allclose(predict(s2, tables), predict(s, tables), rtol=1e-6)


def test_fit_rejects_bad_input(fbnet):
    x = np.asarray(network_features(fbnet[2]))
    with pytest.raises(ValueError, match="positive"):
        fit(x[:4], np.array([1.0, -1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="features must be"):
        fit(x[:4, :3], np.ones(4))
    with pytest.raises(ValueError, match="at least 2"):
        fit(x[:1], np.ones(1))


def test_cli_on_real_data(data_dir, tmp_path, capsys):
    src = os.path.join(data_dir, "latency", "fbnet_cifar100", "pixel3.csv")
    small = tmp_path / "pixel3_small.csv"
    small.write_text("".join(open(src).readlines()[:301]))
    res = fit_cli.main(["--space", "fbnet-cifar100", "--data", str(small), "--train-size", "50",
                        "--seed", "0", "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == {"spearman", "kendall", "mape", "within_10pct", "n_train", "n_test",
                            "fit_seconds", "dead_code", "loo_rmse", "fit", "features"}
    assert printed["n_train"] == 50 and printed["n_test"] == 250
    assert res["spearman"] > 0.95 and res["mape"] < 3.0


@pytest.mark.parametrize("args,msg", [
    (["--data", "missing.csv"], "not found"),
    (["--column", "nope"], "no column 'nope'"),
    (["--train-size", "100000"], "--train-size"),
])
def test_cli_errors(data_dir, capsys, args, msg):
    base = {"--space": "fbnet-cifar100",
            "--data": os.path.join(data_dir, "latency", "fbnet_cifar100", "pixel3.csv"),
            "--train-size": "50"}
    for k, v in zip(args[::2], args[1::2]):
        base[k] = v
    with pytest.raises(SystemExit) as e:
        fit_cli.main([x for kv in base.items() for x in kv])
    assert e.value.code == 2 and msg in capsys.readouterr().err


def test_prune_dead_nb201():
    space = make_space("nb201")
    cut = space.decode("|avg_pool_3x3~0|+|avg_pool_3x3~0|nor_conv_3x3~1|+|none~0|none~1|none~2|")
    assert float(total_flops(prune_dead(space.layers(cut)))) == 0.0  # output disconnected
    fwd = prune_dead(space.layers(cut), backward=False)
    assert 0 < float(total_flops(fwd)) < float(total_flops(space.layers(cut)))
    full = space.decode("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
                        "+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|")
    assert float(total_flops(prune_dead(space.layers(full)))) == float(total_flops(space.layers(full)))


@pytest.fixture(scope="module")
def nb201():
    space = make_space("nb201", channels=4, cells_per_stage=1)
    archs = np.asarray(space.sample(jax.random.key(3), 80))
    return space, archs


@pytest.mark.parametrize("semantics", ["prune", "unused", "keep"])
def test_fit_space_finds_which_dead_code_the_device_removes(nb201, semantics):
    """A device that runs dead ops (a simulator: HW-NAS-Bench's Eyeriss), one that removes the ops
    whose output is unused (a graph compiler: its Pixel 3) and one that also removes ops fed only by
    `none`: `auto` keeps the fit whose table semantics match, by far."""
    space, archs = nb201
    tables = jax.vmap(space.layers)(jnp.asarray(archs))
    seen = executed(tables, semantics)
    theta = np.zeros(len(FeatureConfig().names), np.float32)
    theta[[0, 1, 9, 13]] = [0.01, 0.002, 0.03, 0.05]  # overheads and per-MMAC costs
    y = _toy_device(seen, theta, b=0.1)
    s = fit_space(space, archs, y, dead_code="auto")
    assert s.dead_code == semantics
    for other in {"prune", "unused", "keep"} - {semantics}:
        assert s.loo_rmse < 0.1 * fit_space(space, archs, y, dead_code=other).loo_rmse
    np.testing.assert_allclose(np.asarray(predict(s, s.executed(tables))), y, rtol=0.02)
    with pytest.raises(InputError, match="dead_code"):
        fit_space(space, archs, y, dead_code="sometimes")


def test_the_three_table_semantics_on_a_cell_with_a_none_fed_conv():
    """Node 1 gets only `none`: its conv into node 3 computes on zeros. `unused` runs it (a compiler
    cannot know its input is zero), `prune` removes it; both remove an op whose output is unused
    (the conv into node 2, which feeds nothing), `keep` runs all."""
    space = make_space("nb201", cells_per_stage=1)  # three cells, one per stage
    cell = space.decode("|none~0|+|skip_connect~0|nor_conv_3x3~1|+|nor_conv_1x1~0|nor_conv_3x3~1|none~2|")
    convs = lambda sem: int(np.sum(np.asarray(executed(space.layers(cell), sem).weight)[
        np.asarray(is_op(space.layers(cell), OpKind.CONV))] > 0))
    stem_etc = convs("prune")
    assert convs("unused") == stem_etc + 3  # + the none-fed 3x3 into node 3 of each cell
    assert convs("keep") == stem_etc + 6  # + the unused 3x3 into node 2 of each cell
    with pytest.raises(ValueError, match="dead_code must be one of prune, unused, keep"):
        executed(space.layers(cell), "sometimes")


def test_discrete_cost_of_a_cut_off_cell_is_what_the_device_runs(nb201, tmp_path):
    """The search's straight-through cost applies the surrogate to the rows the device runs: a cell
    whose output is cut off costs the surrogate's constant on a dead-code-removing device, and its
    full table's cost on one that runs everything; gradients stay finite."""
    from supernet.objectives import CostConfig, make_cost_fn
    space, archs = nb201
    tables = jax.vmap(space.layers)(jnp.asarray(archs))
    x = np.asarray(network_features(tables))
    base = fit(x, x[:, 1] * 0.01 + x[:, 0] * 0.001 + 1.0)
    cut = space.decode("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|none~0|none~1|none~2|")
    cfg = CostConfig(form="hinge", target_ms=1.0, weight=1.0, model="surrogate", discrete=True)
    probs = jnp.asarray(space.one_hot(cut)) * 0.9 + 0.1 / 5
    full = float(predict(base, space.layers(cut)))
    for semantics in ("prune", "unused", "keep"):
        s = base.replace(dead_code=semantics)
        lat = float(make_cost_fn(space, cfg, s)(probs)["latency_ms"])
        if semantics == "unused":  # the rows the output still reaches (reductions, classifier on
            assert float(s.intercept) < lat < full  # the constant cell output), not the cells' convs
        else:
            assert lat == pytest.approx(float(s.intercept) if semantics == "prune" else full, rel=1e-5)
        g = jax.grad(lambda p: make_cost_fn(space, cfg, s)(p)["latency_ms"])(probs)
        assert np.all(np.isfinite(np.asarray(g)))
    assert float(predict(base, space.layers(cut))) > float(base.intercept) + 1e-3  # the case differs
    path = str(tmp_path / "s.json")
    fit_cli.save_surrogate(base.replace(dead_code="unused"), path)
    assert fit_cli.load_surrogate(path).dead_code == "unused"  # the device semantics are saved


def test_per_layer_fit_predicts_the_backends_layer_sum_and_the_cli_calibrates_it(tmp_path, capsys):
    """A backend whose per-layer latency is linear in the row's features: the per-layer fit predicts
    the sum of its layers on unseen networks; `experiments.fit_surrogate --per-layer` maps that sum to whole
    networks that cost 0.7x the sum plus a constant (fusion and dispatch, as on ONNX Runtime)."""
    import csv

    from hwmodel import profile
    space = make_space("mobile-curated")
    archs = np.asarray(space.sample(jax.random.key(5), 40))
    theta = np.zeros(len(FeatureConfig().names))
    theta[0::4] = 0.005  # every op group has a dispatch cost: every executed row is measured
    theta[[1, 2, 5, 13, 17]] = [0.004, 0.02, 0.003, 0.05, 0.002]
    lay_path, net_path = tmp_path / "layers.csv", tmp_path / "nets.csv"
    sums = []
    with open(lay_path, "w", newline="") as fl:
        wl = csv.writer(fl)
        wl.writerow(["arch", "row", *fit_cli.LAYER_COLUMNS, "latency_ms"])
        for a in archs:
            t = profile.concrete(space.layers(a))
            lat = np.asarray(layer_features(t)) @ theta
            total = 0.0
            for r, _ in profile.plan(t).steps:
                if r.op in profile.NO_COMPUTE_OPS or lat[r.index] <= 0:
                    continue
                wl.writerow([space.encode(a), r.index, r.op.name, r.c_in, r.c_out, r.kernel, r.stride,
                             r.groups, r.h, r.w, r.act, lat[r.index]])
                total += lat[r.index]
            sums.append(total)
    sums = np.asarray(sums)
    names, lx, ly = fit_cli.load_layer_csv(str(lay_path))
    train = np.isin(names, [space.encode(a) for a in archs[:10]])
    s = fit(lx[train], ly[train], per_layer=True, lambdas=(1e-10,))
    tables = jax.vmap(space.layers)(jnp.asarray(archs[10:]))
    np.testing.assert_allclose(np.asarray(predict(s, tables)), sums[10:], rtol=0.02)
    with open(net_path, "w", newline="") as f:
        wn = csv.writer(f)
        wn.writerow(["arch", "latency_ms"])
        wn.writerows([space.encode(a), 0.7 * v + 0.1] for a, v in zip(archs, sums))
    res = fit_cli.main(["--space", "mobile-curated", "--data", str(net_path), "--per-layer", str(lay_path),
                        "--train-size", "10", "--json"])
    assert res["fit"] == "per_layer" and res["spearman"] > 0.99 and res["mape"] < 2.0
    bad = tmp_path / "bad.csv"
    bad.write_text(open(lay_path).read().replace("CONV", "CONVX", 1))
    with pytest.raises(SystemExit):
        fit_cli.main(["--space", "mobile-curated", "--data", str(net_path), "--per-layer", str(bad),
                      "--train-size", "10"])
    assert "data row" in capsys.readouterr().err


def test_fit_layers_keeps_the_weighting_whose_sums_fit_the_networks():
    """Rows whose small values are noisy (a profiler's microsecond kernels, fused rows timed at 0)
    pull a relative-error fit off; the per-layer estimator is judged by its network sums, so
    `fit_layers` takes plain least squares there, and its sums beat the relative fit's on unseen
    networks. Zero-cost rows are valid per layer, not per network."""
    from hwmodel import profile
    from hwmodel.fit import calibrate_to_networks, features_of, fit_layers
    space = make_space("mobile-curated")
    archs = np.asarray(space.sample(jax.random.key(7), 40))
    theta = np.zeros(len(FeatureConfig().names))
    theta[0::4] = 0.002
    theta[[1, 2, 5, 13, 17]] = [0.004, 0.02, 0.003, 0.05, 0.002]
    rng = np.random.default_rng(0)
    xs, ys = [], []
    for a in archs[:10]:
        t = profile.concrete(space.layers(a))
        idx = [r.index for r, _ in profile.plan(t).steps if r.op not in profile.NO_COMPUTE_OPS]
        x = np.asarray(layer_features(t))[idx]
        y = x @ theta
        small = y < np.median(y)
        y = np.where(small, y * rng.choice([0.0, 2.0], size=len(y)), y)  # small rows: 0 or twice
        xs.append(x), ys.append(y)
    x, y = np.concatenate(xs), np.concatenate(ys)
    assert (y == 0).any()
    c = FeatureConfig()
    nets = features_of(space, archs, c)
    true = nets @ theta
    s = fit_layers({c: x}, y, {c: nets[:10]}, true[:10])
    rel = calibrate_to_networks(fit(x, y, config=c, per_layer=True), nets[:10], true[:10])

    def test_err(m):
        return np.mean(np.abs(nets[10:] @ np.asarray(m.coef) + float(m.intercept) - true[10:]) / true[10:])
    assert test_err(s) < test_err(rel)
    with pytest.raises(ValueError, match="finite and positive"):
        fit(nets[:10], np.r_[0.0, true[1:10]])  # a whole network cannot cost 0
