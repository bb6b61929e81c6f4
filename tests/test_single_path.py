"""Single-path search: one-hot steps that run only the sampled ops equal the one-hot mixture, the
straight-through and REINFORCE gradients reach every logit, the optimised cost is the sampled
architecture's, BN recalibration, one compile for every sampled architecture, clear errors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from supernet import make_supernet
from supernet import relax as R
from supernet.blocks import BatchNorm, single_path
from supernet.evaluators import SupernetEvaluator
from supernet.model import ArchLogits
from supernet.objectives import CostConfig, make_cost_fn
from supernet.single_shot import SearchConfig, SingleShot, mean_entropy
from supernet.spaces.mobile import MobileSpace
from supernet.spaces.nb201 import NB201Space
from supernet.training import (BNRecalibrator, DeviceData, OptimConfig, cross_entropy, evaluate, identity_input,
                               make_mesh, recalibrate_bn)

NB201 = NB201Space(channels=2, cells_per_stage=1, input_size=8)
MOBILE = MobileSpace(blocks_per_stage=(1, 2), base_widths=(8, 16), stage_strides=(1, 2), stem_width=8,
                     head_width=16, parallelism=4, input_size=8)


def _data(n=64, seed=0, size=8):
    """A learnable synthetic task: the class shifts the image's brightness."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n).astype(np.int32)
    x = (rng.normal(size=(n, size, size, 3)) * 20 + 40 + 18 * y[:, None, None, None]).clip(0, 255).astype(np.uint8)
    return x, y


def _params(net):
    return {k: np.array(v.get_value()) for k, v in nnx.to_flat_state(nnx.state(net, nnx.Param))}


def _stats(net):
    return {k: np.array(v.get_value()) for k, v in nnx.to_flat_state(nnx.state(net, nnx.BatchStat))}


# nb201 is `slow` (suite time): its single-path step is checked against the mixture step by default below
@pytest.mark.parametrize("space", [pytest.param(NB201, marks=pytest.mark.slow), MOBILE], ids=lambda s: s.name)
def test_single_path_forward_and_weight_gradients_equal_the_one_hot_mixture(space):
    net = make_supernet(space, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (4, 8, 8, 3))
    y = jnp.arange(4)
    for s in range(3):
        w = space.one_hot(space.sample(jax.random.key(10 + s)))

        def loss(m, sp):
            with single_path(sp):
                out = m(x, w)
            return cross_entropy(out, y), out

        res = []
        for sp in (False, True):
            m = nnx.clone(net)
            (_, out), g = nnx.value_and_grad(loss, has_aux=True, argnums=nnx.DiffState(0, nnx.Param))(m, sp)
            res.append((np.asarray(out), {k: np.asarray(v.get_value()) for k, v in nnx.to_flat_state(g)}))
        np.testing.assert_allclose(res[1][0], res[0][0], rtol=1e-5, atol=1e-6)
        assert res[0][1].keys() == res[1][1].keys()
        for k in res[0][1]:
            np.testing.assert_allclose(res[1][1][k], res[0][1][k], rtol=1e-4, atol=1e-6, err_msg=str(k))


# the mobile step is slow-marked for suite time: its forward pass and weight gradients are checked
# against the one-hot mixture above, and the step's optimiser updates are the same code for both spaces
@pytest.mark.parametrize("space", [NB201, pytest.param(MOBILE, marks=pytest.mark.slow)], ids=lambda s: s.name)
def test_single_path_search_step_equals_the_one_hot_mixture_step(space):
    """Same sampled paths (SPOS), one run single-path and one through the mixture: same weights after."""
    x, y = _data(64)
    mesh = make_mesh(1)
    nets = []
    for sp in (True, False):
        cfg = SearchConfig(epochs=1, warmup_epochs=1, batch_size=16, steps_per_epoch=2, path_sampling=True,
                           single_path=sp, optim=OptimConfig(lr=0.05, weight_decay=0.0))
        net = make_supernet(space, rngs=nnx.Rngs(0))
        ss = SingleShot(space, net, cfg, mesh=mesh)
        d = DeviceData.put(x, y, mesh)
        rec = ss.run_epoch(d, d)
        nets.append((net, rec))
    (a, ra), (b, rb) = nets
    assert abs(ra["train_ce"] - rb["train_ce"]) < 1e-5
    pa, pb = _params(a), _params(b)
    for k in pa:
        np.testing.assert_allclose(pa[k], pb[k], rtol=1e-4, atol=1e-6, err_msg=str(k))


def test_straight_through_gradient_reaches_every_logit_in_expectation():
    """GDAS: the forward runs only the sampled op, yet the softmax passes its gradient to all logits."""
    net = make_supernet(NB201, rngs=nnx.Rngs(0))
    x, y = _data(16)
    xb, yb = jnp.asarray(x, jnp.float32) / 255, jnp.asarray(y)
    allowed = NB201.full_mask().allowed

    def loss(m, key):
        w, _ = R.relax("gumbel", m.arch_logits.get_value(), key, allowed=allowed, tau=1.0, hard=True)
        with single_path():
            return cross_entropy(m(xb, w), yb)

    grad = jax.jit(lambda m, k: nnx.grad(loss, argnums=nnx.DiffState(0, ArchLogits))(m, k))
    gs = np.stack([np.asarray(grad(net, jax.random.key(s))["arch_logits"].get_value()) for s in range(16)])
    mean = np.abs(gs.mean(0))[:, :5]
    assert np.all(mean > 0), mean
    # one sample reaches every logit of an edge through the softmax, except where it sampled `none`
    # (w[none] multiplies zeros, so d loss / d w[none] = 0): whole rows, never single entries
    rows = np.abs(gs[0][:, :5]) > 0
    assert np.all(rows.all(1) | ~rows.any(1)) and rows.any()


def test_reinforce_moves_the_policy_towards_the_rewarded_choice():
    """The score-function step increases the logit of the choice a reward favours and the cost in
    the reward is the sampled architecture's: with a latency penalty the fast choice wins."""
    space = NB201
    cost_cfg = CostConfig(form="hinge", target_ms=1e-6, weight=1.0)
    cost = make_cost_fn(space, cost_cfg)
    x, y = _data(64)
    mesh = make_mesh(1)
    cfg = SearchConfig(epochs=2, batch_size=16, steps_per_epoch=3, estimator="reinforce", relaxation="softmax",
                       arch_lr=0.1, arch_weight_decay=0.0, cost=cost_cfg, reward_momentum=0.5)
    ss = SingleShot(space, make_supernet(space, rngs=nnx.Rngs(0)), cfg, cost_fn=cost, mesh=mesh)
    d = DeviceData.put(x, y, mesh)
    p0 = ss.probs()
    for _ in range(2):
        rec = ss.run_epoch(d, d)
    p1 = ss.probs()
    # `none` is the fastest op on every edge: its probability grows under a pure latency penalty
    assert np.all(p1[:, 0] > p0[:, 0]), (p0[:, 0], p1[:, 0])
    assert {"reward", "latency_ms", "latency_ms_argmax", "latency_gap", "arch_entropy"} <= rec.keys()


def test_reinforce_gradient_reaches_every_logit_in_expectation():
    logits = jnp.zeros((NB201.num_decisions, NB201.max_choices))
    allowed = jnp.asarray(NB201.full_mask().allowed)
    rewards = jnp.arange(NB201.max_choices, dtype=jnp.float32)  # a per-choice reward

    def surrogate(lg, key):
        p = R.probabilities("softmax", lg, allowed)
        a = jax.nn.one_hot(jax.random.categorical(key, jnp.where(allowed, jnp.log(p), -jnp.inf)), lg.shape[-1])
        r = jnp.sum(a * rewards)  # summed over the 6 decisions: E[R] = 6 * 2
        return -(r - 12.0) * jnp.sum(a * jnp.log(jnp.maximum(p, 1e-30)))

    g = jnp.mean(jax.vmap(lambda k: jax.grad(surrogate)(logits, k))(jax.random.split(jax.random.key(0), 8000)), 0)
    g = np.asarray(g)[:, :5]
    # E[-(R - b) grad log p(a)] = -grad E[R] = -p_c (r_c - E[r]) per decision: every logit, its sign
    # by its reward (the standard error of each mean is about 0.02 here)
    expect = -(np.arange(5) - 2.0) / 5
    np.testing.assert_allclose(g, np.broadcast_to(expect, g.shape), atol=0.07)
    assert np.all(np.sign(g[:, [0, 1, 3, 4]]) == np.sign(expect[[0, 1, 3, 4]]))


def test_optimised_cost_is_the_sampled_architectures_and_the_gap_is_logged():
    """A mask that leaves one architecture: every sample is the argmax, so the gap is exactly 0; with
    the expected table of a spread softmax the logged gap is not 0."""
    cost_cfg = CostConfig(form="tunas", target_ms=0.01, weight=0.1)
    cost = make_cost_fn(NB201, cost_cfg)
    x, y = _data(64)
    mesh = make_mesh(1)
    d = DeviceData.put(x, y, mesh)
    one = NB201.mask(remove={f"edge_{t}_{f}": ["none", "skip_connect", "avg_pool_3x3", "nor_conv_1x1"]
                             for t, f in [(1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2)]})
    for estimator, hard in (("reinforce", False), ("relaxed", True)):
        cfg = SearchConfig(epochs=1, batch_size=16, steps_per_epoch=2, estimator=estimator, relaxation="gumbel",
                           hard=hard, cost=cost_cfg)
        ss = SingleShot(NB201, make_supernet(NB201, rngs=nnx.Rngs(0)), cfg, cost_fn=cost, mask=one, mesh=mesh)
        rec = ss.run_epoch(d, d)
        assert rec["latency_gap"] == pytest.approx(0.0, abs=1e-6), estimator
        assert rec["arch_entropy"] == pytest.approx(0.0, abs=1e-6)
    cfg = SearchConfig(epochs=1, batch_size=16, steps_per_epoch=2, relaxation="softmax", cost=cost_cfg)
    ss = SingleShot(NB201, make_supernet(NB201, rngs=nnx.Rngs(0)), cfg, cost_fn=cost, mesh=mesh)
    rec = ss.run_epoch(d, d)
    assert abs(rec["latency_gap"]) > 0.05  # the expected table of a uniform mixture vs one cell
    assert rec["arch_entropy"] == pytest.approx(np.log(5), rel=1e-3)


def test_no_retrace_across_sampled_architectures():
    net = make_supernet(NB201, rngs=nnx.Rngs(0))
    g, st = nnx.split(net)
    x = jnp.zeros((2, 8, 8, 3))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def apply(st, w):
        with single_path():
            return nnx.merge(g, st)(x, w)

    for s in range(4):
        apply(st, NB201.one_hot(NB201.sample(jax.random.key(s))))
    # the search compiles one step for the warm-up and one for the search, whatever it samples
    xs, ys = _data(64)
    mesh = make_mesh(1)
    d = DeviceData.put(xs, ys, mesh)
    cfg = SearchConfig(epochs=3, warmup_epochs=1, batch_size=16, steps_per_epoch=2, estimator="reinforce")
    ss = SingleShot(NB201, make_supernet(NB201, rngs=nnx.Rngs(0)), cfg, mesh=mesh)
    for _ in range(3):
        ss.run_epoch(d, d)
    assert sorted(ss._step_fns) == [False, True]
    assert all(f._cache_size() == 1 for f in ss._step_fns.values())


def test_bn_recalibration_changes_only_running_statistics():
    x, y = _data(128)
    mesh = make_mesh(1)
    d = DeviceData.put(x, y, mesh)
    net = make_supernet(NB201, rngs=nnx.Rngs(0))
    p0, s0 = _params(net), _stats(net)
    arch = NB201.decode("|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_3x3~2|")
    assert recalibrate_bn(net, d, identity_input, batches=3, batch_size=32, arch_weights=NB201.one_hot(arch),
                          mesh=mesh) == 3
    p1, s1 = _params(net), _stats(net)
    assert all(np.array_equal(p0[k], p1[k]) for k in p0)
    changed = [k for k in s0 if not np.array_equal(s0[k], s1[k])]
    assert changed and len(changed) < len(s0)  # single-path: BNs of ops not chosen keep their statistics
    assert all(not isinstance(m, BatchNorm) or m.momentum == 0.9 for _, m in nnx.iter_modules(net))
    # the statistics are the means of the batches' means and (biased) variances, here of the stem BN
    xs = np.asarray(x, np.float32)[np.asarray(jax.random.permutation(jax.random.key(0), 128))] / 255
    ref = nnx.clone(net)
    conv = ref.net.stem_conv
    means = [np.asarray(conv(jnp.asarray(xs[i * 32:(i + 1) * 32]))).mean((0, 1, 2)) for i in range(3)]
    np.testing.assert_allclose(np.asarray(net.net.stem_bn.mean.get_value()), np.mean(means, 0), rtol=1e-4, atol=1e-6)


def test_bn_recalibration_makes_inherited_accuracy_mean_something():
    """A supernet trained only on one architecture (a one-architecture mask) is that standalone
    network: with recalibrated statistics its derived subnet's accuracy equals the accuracy with the
    statistics of its own training. A supernet trained on uniformly sampled paths (SPOS) holds
    running statistics mixed over paths; recalibrated, its derived subnet is well above chance."""
    x, y = _data(512, size=8)
    mesh = make_mesh(1)
    tr, va = DeviceData.put(x[:384], y[:384], mesh), DeviceData.put(x[384:], y[384:], mesh)
    arch_str = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|"
    arch = NB201.decode(arch_str)
    ops = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
    edges = [(1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2)]
    only = NB201.mask(remove={f"edge_{t}_{f}": [o for o in ops if o != ops[a]] for (t, f), a in zip(edges, arch)})
    accs = {}
    for name, mask in (("one_hot", only), ("spos", None)):
        cfg = SearchConfig(epochs=6, warmup_epochs=6, batch_size=32, optim=OptimConfig(lr=0.05), path_sampling=True)
        net = make_supernet(NB201, rngs=nnx.Rngs(0))
        ss = SingleShot(NB201, net, cfg, mask=mask, mesh=mesh)
        for _ in range(cfg.epochs):
            ss.run_epoch(tr, tr)
        sub = net.derive(arch)
        running = evaluate(sub, va, identity_input, mesh=mesh)
        recalibrate_bn(sub, tr, identity_input, batches=8, batch_size=48, mesh=mesh)
        accs[name] = (running, evaluate(sub, va, identity_input, mesh=mesh))
    (run1, cal1), (_, cal_spos) = accs["one_hot"], accs["spos"]
    assert cal1 > 0.3, accs  # it learned (chance is 0.1)
    # running statistics (a moving average over training) vs recalibrated ones (an average under the
    # final weights) are two estimates of the same statistics: 128 validation images, a few differ
    assert abs(cal1 - run1) <= 0.08, accs
    assert cal_spos > 0.25, accs


def test_supernet_evaluator_recalibrates_each_candidate_with_one_compile():
    x, y = _data(128)
    mesh = make_mesh(1)
    d = DeviceData.put(x, y, mesh)
    net = make_supernet(NB201, rngs=nnx.Rngs(0))
    ev = SupernetEvaluator(NB201, net, d, bn="recalibrate", calib=d, calib_batches=2, calib_batch_size=32, mesh=mesh)
    archs = np.asarray(NB201.sample(jax.random.key(0), 3))
    acc = ev.evaluate(archs)["accuracy"]
    assert ev.traces == 1 and ev._calib.traces == 1
    for a, v in zip(archs, acc):  # each equals its derived subnet, recalibrated the same way
        sub = net.derive(a)
        recalibrate_bn(sub, d, identity_input, batches=2, batch_size=32, mesh=mesh)
        assert evaluate(sub, d, identity_input, mesh=mesh) == pytest.approx(v, abs=1e-9)
    with pytest.raises(ValueError, match="needs calib"):
        SupernetEvaluator(NB201, net, d, bn="recalibrate")
    with pytest.raises(ValueError, match="BN recalibration needs batches >= 1"):
        BNRecalibrator(net, d, identity_input, batches=0)


def test_entropy_of_the_choice_distributions():
    allowed = np.ones((2, 4), bool)
    allowed[1, 2:] = False
    p = jnp.asarray([[0.25] * 4, [0.5, 0.5, 0.0, 0.0]])
    assert float(mean_entropy(p, allowed)) == pytest.approx((np.log(4) + np.log(2)) / 2, rel=1e-6)


def test_bad_search_settings_stop_with_one_message():
    with pytest.raises(ValueError, match="target_ms > 0"):
        CostConfig(form="hinge", target_ms=0.0, weight=1.0)
    with pytest.raises(ValueError, match="target_ms must be > 0"):
        CostConfig(form="none", target_ms=-1.0)
    with pytest.raises(ValueError, match="must not increase"):
        SearchConfig(relaxation="gumbel", tau=(0.1, 10.0))
    with pytest.raises(ValueError, match="need epochs >= 1"):
        SearchConfig(epochs=0)
    with pytest.raises(ValueError, match="steps_per_epoch must be >= 1"):
        SearchConfig(steps_per_epoch=0)
    with pytest.raises(ValueError, match="unknown estimator"):
        SearchConfig(estimator="ppo")
    with pytest.raises(ValueError, match="reward_momentum"):
        SearchConfig(reward_momentum=1.0)


@pytest.mark.parametrize("override, message", [
    ("--config.cost.target_ms=-1", "cost.target_ms must be a latency in ms > 0"),
    ("--config.single_shot.tau=(0.1,10.0)", "must not increase"),
    ("--config.single_shot.epochs=0", "single_shot.epochs must be an integer >= 1"),
    ("--config.single_shot.steps_per_epoch=-1", "steps_per_epoch must be an integer >= 0 (0 = full epochs)"),
])
def test_launcher_refuses_bad_search_settings_before_the_workdir(tmp_path, capsys, override, message):
    from experiments import run
    wd = tmp_path / "wd"
    with pytest.raises(SystemExit) as e:
        run.main(["--config", "experiments/configs/nb201/single_shot.py:smoke,pixel3", "--workdir", str(wd), override])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not wd.exists()  # nothing written: the corrected command starts cleanly
