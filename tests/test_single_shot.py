"""Single-shot search: gradients reach the logits, the latency term works, one compile, clear errors,
and data parallelism over 4 fake CPU devices computes what one device computes."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from supernet import make_supernet
from supernet import relax as R
from supernet.model import ArchLogits
from supernet.objectives import CostConfig, combine, make_cost_fn
from supernet.single_shot import SearchConfig, SingleShot
from supernet.spaces.nb201 import NB201Space
from supernet.training import DeviceData, OptimConfig, cross_entropy, make_mesh

SPACE = NB201Space(channels=2, cells_per_stage=1, input_size=8)


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n).astype(np.int32)
    x = (rng.normal(size=(n, 8, 8, 3)) * 30 + 100 + 12 * y[:, None, None, None]).clip(0, 255).astype(np.uint8)
    return x, y


def test_gradients_reach_every_architecture_logit():
    net = make_supernet(SPACE, rngs=nnx.Rngs(0))
    x, y = _data(16)
    xb = jnp.asarray(x, jnp.float32) / 255
    allowed = SPACE.full_mask().allowed
    cost = make_cost_fn(SPACE, CostConfig(form="proxyless", target_ms=0.01, weight=1.0))

    def loss(m):
        w, p = R.relax("softmax", m.arch_logits.get_value(), jax.random.key(0), allowed=allowed)
        return combine(cross_entropy(m(xb, w), jnp.asarray(y)), cost(p),
                       CostConfig(form="proxyless", target_ms=0.01, weight=1.0))

    g = nnx.grad(loss, argnums=nnx.DiffState(0, ArchLogits))(net)
    ga = np.asarray(g["arch_logits"].get_value())
    assert np.all(np.isfinite(ga))
    assert np.all(np.abs(ga[:, :5]).sum(-1) > 0), "every edge's logits must get a gradient"


@pytest.mark.parametrize("relaxation", ["softmax", "gumbel", "dirichlet"])
def test_relaxations_respect_the_mask(relaxation):
    allowed = np.ones((3, 4), bool)
    allowed[0, 1:] = False
    allowed[2, 3] = False
    w, p = R.relax(relaxation, jnp.zeros((3, 4)), jax.random.key(1), allowed=allowed, tau=0.5)
    for a in (w, p):
        a = np.asarray(a)
        np.testing.assert_allclose(a.sum(-1), 1.0, rtol=1e-5)
        assert np.all(a[~allowed] == 0)
    np.testing.assert_allclose(np.asarray(w)[0], [1, 0, 0, 0], atol=1e-6)


def test_hard_gumbel_is_one_hot_forward_soft_backward():
    logits = jnp.array([[0.0, 1.0, 2.0]])
    w, _ = R.relax("gumbel", logits, jax.random.key(0), allowed=np.ones((1, 3), bool), hard=True)
    assert sorted(np.asarray(w)[0].tolist()) == [0.0, 0.0, 1.0]
    g = jax.grad(lambda l: (R.relax("gumbel", l, jax.random.key(0), allowed=np.ones((1, 3), bool),
                                    hard=True)[0] * jnp.arange(3.0)).sum())(logits)
    assert np.abs(np.asarray(g)).sum() > 0


def test_dirichlet_kl_is_zero_at_the_uniform_prior():
    # elu(0) + 1 = 1: Dir(1) vs Dir(1)
    assert abs(float(R.dirichlet_kl(jnp.zeros((2, 5)), np.ones((2, 5), bool)))) < 1e-5
    assert float(R.dirichlet_kl(jnp.full((2, 5), 2.0), np.ones((2, 5), bool))) > 0


def test_supernet_apply_never_retraces_across_architectures():
    net = make_supernet(SPACE, rngs=nnx.Rngs(0))
    g, st = nnx.split(net)
    x = jnp.zeros((2, 8, 8, 3))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def apply(st, w):
        return nnx.merge(g, st)(x, w)

    for s in range(3):
        apply(st, SPACE.one_hot(SPACE.sample(jax.random.key(s))))
    apply(st, SPACE.uniform_probs())


def _search(weight, mesh, steps=3, arch_lr=0.05, epochs=1):
    x, y = _data(96)
    cost = CostConfig(form="proxyless" if weight else "none", target_ms=0.01 if weight else None,
                      weight=weight)
    cfg = SearchConfig(epochs=epochs, batch_size=16, steps_per_epoch=steps, arch_lr=arch_lr, cost=cost,
                       optim=OptimConfig(lr=0.05))
    net = make_supernet(SPACE, rngs=nnx.Rngs(0))
    ss = SingleShot(SPACE, net, cfg, cost_fn=make_cost_fn(SPACE, cost) if weight else None, mesh=mesh)
    tr, va = DeviceData.put(x[:48], y[:48], mesh), DeviceData.put(x[48:], y[48:], mesh)
    for _ in range(epochs):
        rec = ss.run_epoch(tr, va)
    return ss, rec


def test_large_latency_weight_lowers_expected_latency():
    cost = make_cost_fn(SPACE, CostConfig(form="hinge", target_ms=1.0))
    lat = {}
    for weight in (0.0, 50.0):
        ss, _ = _search(weight, make_mesh(1), steps=4)
        lat[weight] = float(cost(jnp.asarray(ss.probs()))["latency_ms"])
    uniform = float(cost(SPACE.uniform_probs())["latency_ms"])
    assert lat[50.0] < 0.95 * uniform
    assert lat[50.0] < lat[0.0]


def test_discrete_cost_is_the_argmax_architecture_with_a_straight_through_gradient():
    probs = jax.nn.softmax(jax.random.normal(jax.random.key(3), (SPACE.num_decisions, SPACE.max_choices)) * 2)
    hard = jax.nn.one_hot(jnp.argmax(probs, -1), SPACE.max_choices)
    for budget in (None, 1e3):
        kw = dict(form="hinge", target_ms=1.0, params_budget_bytes=budget)
        soft = make_cost_fn(SPACE, CostConfig(**kw))
        disc = make_cost_fn(SPACE, CostConfig(discrete=True, **kw))
        for key in soft(probs):
            f_soft = lambda p, k=key: soft(p)[k]
            f_disc = lambda p, k=key: disc(p)[k]
            # value: the derived (argmax) architecture's cost, not the expected table's
            np.testing.assert_allclose(f_disc(probs), f_soft(hard), rtol=1e-6)
            assert abs(float(f_disc(probs)) - float(f_soft(probs))) > 1e-6 * float(f_soft(probs))
            # gradient: the expected table's, taken at the argmax point
            np.testing.assert_allclose(jax.grad(f_disc)(probs), jax.grad(f_soft)(hard), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("path_sampling", [True, False])
def test_path_sampling_trains_one_operation_per_edge_per_step(path_sampling):
    x, y = _data(48)
    mesh = make_mesh(1)
    cfg = SearchConfig(epochs=1, warmup_epochs=1, batch_size=16, steps_per_epoch=1, path_sampling=path_sampling,
                       optim=OptimConfig(lr=0.05, weight_decay=0.0))  # no decay: untouched weights stay put
    net = make_supernet(SPACE, rngs=nnx.Rngs(0))
    before = [(path, np.array(v.get_value())) for path, v in nnx.to_flat_state(nnx.state(net, nnx.Param))]
    ss = SingleShot(SPACE, net, cfg, mesh=mesh)
    data = DeviceData.put(x, y, mesh)
    ss.run_epoch(data, data)
    after = dict(nnx.to_flat_state(nnx.state(net, nnx.Param)))
    changed = {path for path, v in before if not np.array_equal(v, np.asarray(after[path].get_value()))}
    edges = {path[:6] for path in changed if "edges" in path}  # (net, stages, s, c, edges, e)
    for e in edges:
        convs = {path[6] for path in changed if path[:6] == e}
        # SPOS: one sampled op per edge (of conv1/conv3 at most one); the mixture trains both
        assert len(convs) == (1 if path_sampling else 2), (e, convs)
    n_edges = 3 * 6  # 3 stages x 1 cell x 6 edges
    assert len(edges) == n_edges if not path_sampling else 0 < len(edges) < n_edges  # skip/pool/none picked somewhere


ALL_CONV3 = np.full(6, 3)  # nor_conv_3x3 on every edge


@pytest.mark.parametrize("distill", [False, True])
def test_sandwich_trains_the_anchor_and_the_sampled_path(distill):
    """BigNAS's sandwich rule with an anchor: one step trains the anchor's op on every edge (all
    3x3 convs) and, beside it, the sampled path's (the 1x1 convs it picked); without the anchor
    (`sandwich=0`) the 3x3 convs the path did not pick stay put."""
    x, y = _data(48)
    mesh = make_mesh(1)
    changed = {}
    for sandwich in (0, 1):
        cfg = SearchConfig(epochs=1, warmup_epochs=1, batch_size=16, steps_per_epoch=1, path_sampling=True,
                           sandwich=sandwich, distill=distill and sandwich > 0,
                           optim=OptimConfig(lr=0.05, weight_decay=0.0))
        net = make_supernet(SPACE, rngs=nnx.Rngs(0))
        before = [(path, np.array(v.get_value())) for path, v in nnx.to_flat_state(nnx.state(net, nnx.Param))]
        ss = SingleShot(SPACE, net, cfg, mesh=mesh, anchor=ALL_CONV3 if sandwich else None)
        data = DeviceData.put(x, y, mesh)
        rec = ss.run_epoch(data, data)
        assert ("anchor_acc" in rec) == bool(sandwich)
        after = dict(nnx.to_flat_state(nnx.state(net, nnx.Param)))
        changed[sandwich] = {path[:7] for path, v in before
                             if "edges" in path and not np.array_equal(v, np.asarray(after[path].get_value()))}
    conv3 = lambda paths: {p[:6] for p in paths if p[6] == "conv3"}  # noqa: E731  edges whose 3x3 conv moved
    conv1 = lambda paths: {p[:6] for p in paths if p[6] == "conv1"}  # noqa: E731
    assert len(conv3(changed[1])) == 18  # every edge of 3 stages x 1 cell x 6 edges: the anchor
    assert len(conv3(changed[0])) < 18  # one uniform path alone leaves some 3x3 convs untouched
    # the same sampled path (same key) beside the anchor: its 1x1 convs train as without the anchor
    assert conv1(changed[1]) == conv1(changed[0]) and conv1(changed[0])


def test_progressive_shrinking_starts_at_the_anchor_and_spreads():
    """Step 0 of `shrink_epochs` samples the anchor itself (every 3x3 conv trains, no 1x1 conv);
    once the shrinking is over the paths are uniform (some 1x1 convs train)."""
    x, y = _data(48)
    mesh = make_mesh(1)
    cfg = SearchConfig(epochs=2, warmup_epochs=2, batch_size=16, steps_per_epoch=1, path_sampling=True,
                       shrink_epochs=1, optim=OptimConfig(lr=0.05, weight_decay=0.0))
    ss = SingleShot(SPACE, make_supernet(SPACE, rngs=nnx.Rngs(0)), cfg, mesh=mesh, anchor=ALL_CONV3)
    data = DeviceData.put(x, y, mesh)
    moved = []
    for _ in range(2):
        before = [(p, np.array(v.get_value())) for p, v in nnx.to_flat_state(nnx.state(ss.model, nnx.Param))]
        ss.run_epoch(data, data)
        after = dict(nnx.to_flat_state(nnx.state(ss.model, nnx.Param)))
        moved.append({p[:7] for p, v in before if "edges" in p and not np.array_equal(v, after[p].get_value())})
    assert {p[6] for p in moved[0]} == {"conv3"} and len(moved[0]) == 18
    assert "conv1" in {p[6] for p in moved[1]}


def test_sandwich_settings_are_checked():
    with pytest.raises(ValueError, match="one-hot paths"):
        SearchConfig(sandwich=1)  # the relaxed mixture has no path to sandwich
    with pytest.raises(ValueError, match="needs sandwich >= 1"):
        SearchConfig(path_sampling=True, distill=True)
    cfg = SearchConfig(epochs=1, path_sampling=True, sandwich=1)
    net = make_supernet(SPACE, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="pass anchor="):
        SingleShot(SPACE, net, cfg)
    with pytest.raises(ValueError, match="shrink_epochs must be in"):
        SearchConfig(epochs=1, path_sampling=True, shrink_epochs=2)
    no_conv3 = SPACE.mask(remove={"edge_1_0": ("nor_conv_3x3",)})
    with pytest.raises(ValueError, match="the mask removed"):
        SingleShot(SPACE, net, cfg, anchor=ALL_CONV3, mask=no_conv3)


@pytest.mark.skipif(jax.device_count() < 4, reason="needs 4 (fake) devices, see conftest")
def test_four_devices_compute_what_one_device_computes():
    one, rec1 = _search(1.0, make_mesh(1), steps=2)
    four, rec4 = _search(1.0, make_mesh(4), steps=2)
    np.testing.assert_allclose(np.asarray(one.model.arch_logits.get_value()),
                               np.asarray(four.model.arch_logits.get_value()), rtol=1e-4, atol=1e-6)
    p1 = jax.tree.leaves(nnx.state(one.model, nnx.Param))
    p4 = jax.tree.leaves(nnx.state(four.model, nnx.Param))
    for a, b in zip(p1, p4):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    assert abs(rec1["train_ce"] - rec4["train_ce"]) < 1e-4


def test_bad_inputs_give_clear_errors():
    with pytest.raises(ValueError, match="unknown latency loss form"):
        CostConfig(form="fastest")
    with pytest.raises(ValueError, match="target_ms > 0"):
        CostConfig(form="tunas", target_ms=0.0, weight=1.0)
    with pytest.raises(ValueError, match="target_ms > 0"):
        CostConfig(form="proxyless", target_ms=None, weight=1.0)
    with pytest.raises(ValueError, match="unknown relaxation"):
        SearchConfig(relaxation="sparsemax")
    with pytest.raises(KeyError, match="valid names"):
        CostConfig(accelerator="tpu-v9")
    allowed = SPACE.full_mask().allowed.copy()
    allowed[2] = False
    net = make_supernet(SPACE, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="removes every choice of decision"):
        SingleShot(SPACE, net, SearchConfig(), mask=SPACE.mask(allowed=allowed))
    with pytest.raises(ValueError, match="needs a cost_fn"):
        SingleShot(SPACE, net, SearchConfig(cost=CostConfig(form="tunas", target_ms=1.0, weight=1.0)))


def test_mask_restricts_the_derived_architecture():
    mask = SPACE.mask(remove={f"edge_{t}_{f}": ["none", "skip_connect", "avg_pool_3x3", "nor_conv_1x1"]
                              for t, f in [(1, 0), (2, 0)]})
    net = make_supernet(SPACE, rngs=nnx.Rngs(0))
    ss = SingleShot(SPACE, net, SearchConfig(), mask=mask)
    net.arch_logits.set_value(net.arch_logits.get_value().at[:, 0].set(5.0))  # favour 'none' everywhere
    arch = ss.derive_arch()
    assert arch[0] == arch[1] == 3 and arch[2] == 0
    assert ss.probs()[0, 0] == 0
