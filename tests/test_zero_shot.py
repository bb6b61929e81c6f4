"""Zero-shot scores: values against independent implementations, supernet one-hot == derived
subnet for every score, isomorphism and batch-order invariances, one compile, clear errors."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import zero_shot as Z
from supernet import make_supernet
from supernet.blocks import Taps
from supernet.spaces import make_space
from zero_shot.gradient import JACOB_K, loss_grads
from zero_shot.network import KERNELS, NTK_WEIGHTS

SPACE = make_space("nb201", channels=4, cells_per_stage=1, input_size=8)
B = 8
# a cell with convs, pooling, skip and a zero edge: every op kind is exercised
ARCH = SPACE.decode("|nor_conv_3x3~0|+|none~0|nor_conv_1x1~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_3x3~2|")
TOL = dict(rtol=2e-4, atol=2e-4)


@pytest.fixture(scope="module")
def supernet():
    return make_supernet(SPACE, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def batch():
    kx, ky = jax.random.split(jax.random.key(1))
    return jax.random.normal(kx, (B, 8, 8, 3)), jax.random.randint(ky, (B,), 0, 10)


def _finite_or_both_inf(a, b):
    if np.isinf(a) or np.isinf(b):
        assert a == b
    else:
        np.testing.assert_allclose(a, b, **TOL)


# ------------------------------------------------------------------ supernet == derived subnet
# Compiling a score dominates these tests on a CPU, so each path compiles every score once.
# GraSP (forward-over-reverse), the NTK (full Jacobian) and Zen (a second network) compile slowly:
# their equality tests are marked `slow`.
FAST = ("naswot", "synflow", "jacob_cov", "snip", "grad_norm", "fisher", "linear_regions", "params", "flops")
HEAVY = ("grasp", "ntk", "zen")


def test_every_registered_score_is_checked():
    """Conformance by registry: a score added to `PROXIES` must join FAST or HEAVY, whose tests check
    it is finite and that a one-hot supernet scores like the derived subnet."""
    assert set(FAST) | set(HEAVY) == set(Z.PROXIES) and not set(FAST) & set(HEAVY)


def _compare(got, want, names):
    for n in names:
        assert np.isfinite(want[n]), f"{n} is not finite on the test cell"
        _finite_or_both_inf(got[n], want[n])


@pytest.fixture(scope="module")
def subnet_scores(supernet, batch):
    return Z.score(supernet.derive(ARCH), batch, jax.random.key(2), FAST, space=SPACE)


def test_one_hot_supernet_scores_like_the_derived_subnet(supernet, batch, subnet_scores):
    """Inactive ops must not leak: neither through activations (naswot, linear regions) nor through
    gradients (snip, fisher, ...). Integer arch: only the chosen op of each edge is computed."""
    by_int = Z.score(supernet, batch, jax.random.key(2), FAST, arch=jnp.asarray(ARCH))
    _compare(by_int, subnet_scores, FAST)


@pytest.mark.slow
def test_one_hot_weights_score_like_the_derived_subnet(supernet, batch, subnet_scores):
    """Every op computed and weighted by its one-hot weight (0 for inactive ops)."""
    by_weights = Z.score(supernet, batch, jax.random.key(2), FAST, arch=SPACE.one_hot(jnp.asarray(ARCH)))
    _compare(by_weights, subnet_scores, FAST)


@pytest.mark.slow
def test_heavy_scores_of_one_hot_supernet_equal_the_derived_subnet(supernet, batch):
    want = Z.score(supernet.derive(ARCH), batch, jax.random.key(2), HEAVY, space=SPACE)
    _compare(Z.score(supernet, batch, jax.random.key(2), HEAVY, arch=jnp.asarray(ARCH)), want, HEAVY)
    _compare(Z.score(supernet, batch, jax.random.key(2), HEAVY, arch=SPACE.one_hot(jnp.asarray(ARCH))),
             want, HEAVY)


def test_many_architectures_in_one_compile(supernet, batch, subnet_scores):
    """`ArchScorer` maps over architectures in one compiled function: it reproduces the one-at-a-
    time score of the derived subnet, and new architectures never retrace: a call of N cells runs in
    pieces of 4^k cells, so 3 cells compile the piece of 1 only, and 4 or 5 cells add the piece of 4."""
    names = ("naswot", "synflow", "jacob_cov")
    scorer = Z.ArchScorer(supernet, names)
    archs = np.concatenate([ARCH[None], np.asarray(SPACE.sample(jax.random.key(3), 2))])
    got = scorer(supernet, archs, batch, jax.random.key(2))
    _compare({n: got[n][0] for n in names}, subnet_scores, names)
    more = np.asarray(SPACE.sample(jax.random.key(4), 3))
    other = scorer(supernet, more, batch, jax.random.key(2))
    assert scorer.traces == 1
    assert not np.allclose(other["naswot"], got["naswot"])
    five = np.concatenate([archs, more[:2]])
    got5 = scorer(supernet, five, batch, jax.random.key(2))
    assert scorer.traces == 2 and Z.batch._pieces(5) == [4, 1] and Z.batch._pieces(24) == [16, 4, 4]
    for n in names:  # the piece an architecture lands in does not change its score
        np.testing.assert_allclose(got5[n][:3], got[n], rtol=1e-5)
        np.testing.assert_allclose(got5[n][3:], other[n][:2], rtol=1e-5)


@pytest.mark.slow
def test_chunked_scoring_equals_one_at_a_time(supernet, batch):
    archs = np.asarray(SPACE.sample(jax.random.key(3), 4))
    names = ("naswot", "synflow", "jacob_cov", "snip")
    one = Z.score_archs(supernet, archs, batch, jax.random.key(0), proxies=names)
    chunked = Z.score_archs(supernet, archs, batch, jax.random.key(0), proxies=names, chunk=2)
    for n in names:
        for a, b in zip(chunked[n], one[n]):
            _finite_or_both_inf(a, b)


# ------------------------------------------------------------------ against independent implementations
def _raw_relu_codes(model, x):
    """Every ReLU pre-activation of a derived subnet, flattened per sample, as 0/1 numpy codes."""
    net = Z.network_of(model)
    with Taps(reducers={"relu": lambda p: p}) as t:
        net.logits(x)
    return np.concatenate([(np.asarray(p).reshape(x.shape[0], -1) > 0) for _, p, _ in t.records], 1)


def test_naswot_is_the_logdet_of_the_hamming_kernel(supernet, batch, subnet_scores):
    sub = supernet.derive(ARCH)
    c = _raw_relu_codes(sub, batch[0])
    n = c.shape[1]
    k = np.array([[n - np.sum(ci != cj) for cj in c] for ci in c], np.float64)  # Mellor et al. eq. 2
    sign, want = np.linalg.slogdet(k)
    assert sign > 0
    got = subnet_scores["naswot"]
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_naswot_of_identical_images_is_minus_infinity(supernet, batch):
    x = jnp.repeat(batch[0][:1], B, 0)  # every code equal: K = n 1 1^T is singular
    assert Z.score(supernet.derive(ARCH), (x, batch[1]), jax.random.key(0), ("naswot",))["naswot"] == -np.inf


def test_linear_regions_counts_distinct_activation_patterns(supernet, batch):
    sub = supernet.derive(ARCH)
    x = jnp.concatenate([batch[0][:5], batch[0][:3]])  # 5 distinct images, 3 of them twice
    c = _raw_relu_codes(sub, x)
    assert len({row.tobytes() for row in c}) == 5
    got = Z.score(sub, (x, batch[1]), jax.random.key(0), ("linear_regions",))["linear_regions"]
    np.testing.assert_allclose(got, 5.0, rtol=1e-6)


def _plain_loss_and_grads(model, x, y):
    """Cross-entropy of the subnet in train mode and its gradient w.r.t. every parameter (nnx.grad)."""
    m = nnx.clone(model)
    m.train()

    def loss(m):
        return Z.cross_entropy(m(x), y)

    g = nnx.grad(loss)(m)
    return m, g


def _kernels(state):
    return {p: np.asarray(v.get_value(), np.float64) for p, v in nnx.to_flat_state(state)
            if KERNELS(p, v)}


def test_snip_and_grad_norm_match_plain_gradients(supernet, batch, subnet_scores):
    sub = supernet.derive(ARCH)
    m, g = _plain_loss_and_grads(sub, *batch)
    w, d = _kernels(nnx.state(m, nnx.Param)), _kernels(g)
    assert len(w) > 5 and set(w) == set(d)
    snip = sum(np.abs(w[p] * d[p]).sum() for p in w)
    gn = sum(np.sqrt((d[p] ** 2).sum()) for p in d)
    got = subnet_scores
    np.testing.assert_allclose(got["snip"], snip, rtol=1e-4)
    np.testing.assert_allclose(got["grad_norm"], gn, rtol=1e-4)


@pytest.mark.slow
def test_grasp_matches_reverse_over_reverse_hessian_product(supernet, batch):
    x, y = batch
    sub = supernet.derive(ARCH)
    net = Z.network_of(sub)
    kern, rest = net.split(KERNELS)

    def loss(k):
        return Z.cross_entropy(net.logits(x, net.merge(k, rest)), y)

    g = jax.lax.stop_gradient(jax.grad(loss)(kern))
    hg = jax.grad(lambda k: sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(g),
                                                                 jax.tree.leaves(jax.grad(loss)(k)))))(kern)
    want = -sum(float(jnp.sum(t * h)) for t, h in zip(jax.tree.leaves(kern), jax.tree.leaves(hg)))
    got = Z.score(sub, batch, jax.random.key(0), ("grasp",))["grasp"]
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-6)


def test_fisher_probes_agree_with_kernel_gradients(supernet, batch, subnet_scores):
    """Scaling a conv's output channel k for every sample is scaling its kernel's column k, so
    `sum_n dL/dz[n, k] = sum W[..., k] dL/dW[..., k]` summed over every conv (Euler's identity);
    the linear term is checked against its closed form."""
    x, y = batch
    net = Z.network_of(supernet.derive(ARCH))
    g = loss_grads(net, x, y)
    probes = sum(float(jnp.sum(p)) for p in g["probe_grads"])
    convs = sum(float(jnp.sum(k * d)) for (path, k), d in zip(
        nnx.to_flat_state(g["kernels"]), jax.tree.leaves(g["grads"])) if "head" not in path)
    np.testing.assert_allclose(probes, convs, rtol=1e-3, atol=1e-5)
    # zero-cost-nas broadcasts each channel's Fisher over `weight.shape[1:]`: every conv is called
    # once in the subnet, so the probes' (fan-in, c_out) are the kernels' (k * k * c_in, c_out).
    kernels = sorted((k.shape[0] * k.shape[1] * k.shape[2], k.shape[3]) for path, k in
                     nnx.to_flat_state(g["kernels"]) if "head" not in path)
    fans = g["probe_fan_ins"]
    assert all(np.all(np.asarray(f) == f[0]) for f in fans)
    assert sorted((int(f[0]), f.shape[0]) for f in fans) == kernels
    logits = g["logits"]
    d = jax.nn.softmax(logits) - jax.nn.one_hot(y, 10)
    linear = 16 * 0.5 * np.mean(np.square(np.asarray(logits * d / B)), 0).sum()  # 4 * channels features
    conv = sum(f[0] * 0.5 * np.mean(np.square(np.asarray(p)), 0).sum() for f, p in zip(fans, g["probe_grads"]))
    got = subnet_scores["fisher"]
    np.testing.assert_allclose(got, conv + linear, rtol=1e-4)


# node 1 only gets `none`: the convs on edges 2-1 and 3-1 see zeros, so their BNs' batch variance is 0
ZERO_FED = "|none~0|+|skip_connect~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|"


@pytest.mark.parametrize("cell", ["ARCH", ZERO_FED])
def test_zen_reads_the_running_variance_after_two_train_forwards(supernet, batch, cell):
    """Zen-NAS's `compute_zen_score.py` on the derived subnet, done as the reference does it: Gaussian
    weights, two train-mode forwards of random inputs (x, x + 0.01 eps) that update every BN's running
    variance (from 1, momentum 0.1), then `log mean_b sum |f0 - f1| + sum_BN log sqrt(mean running_var)`
    read off the modules. A BN fed only zeros keeps a running variance of 0.81: finite, not -inf."""
    from supernet.blocks import BatchNorm
    from zero_shot.network import gaussian_init, network_of
    sub = supernet.derive(ARCH if cell == "ARCH" else SPACE.decode(cell))
    key = jax.random.key(5)
    got = Z.PROXIES["zen"](network_of(sub), batch, key)
    k_init, k_x, k_eps = jax.random.split(key, 3)
    graphdef, state = nnx.split(sub)
    model = nnx.merge(graphdef, gaussian_init(state, k_init), copy=True)
    model.train()
    x0 = jax.random.normal(k_x, batch[0].shape)
    f0 = model.backbone(x0)[-1]  # no Taps: BN updates its running statistics, as PyTorch's does
    f1 = model.backbone(x0 + 0.01 * jax.random.normal(k_eps, batch[0].shape))[-1]
    bns = [m for _, m in nnx.iter_graph(model) if isinstance(m, BatchNorm)]
    assert bns and all(not np.allclose(m.var.get_value(), 1.0) for m in bns)  # every BN ran twice
    if cell != "ARCH":
        # the two zero-fed convs' BNs in each of the 3 cells (one per stage)
        assert sum(np.allclose(m.var.get_value(), 0.81) for m in bns) == 6
    want = np.log(np.mean(np.abs(np.asarray(f0) - np.asarray(f1)).reshape(B, -1).sum(-1)))
    want += sum(0.5 * np.log(np.mean(np.asarray(m.var.get_value(), np.float64))) for m in bns)
    assert np.isfinite(want)
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.slow  # suite time; test_many_architectures_in_one_compile covers the batched scorer by default
def test_repeats_average_the_score_over_keys_on_a_sub_batch(supernet, batch):
    """`repeats={"zen": 3}, batch_sizes={"zen": 4}` (the reference protocol's shape, Zen-NAS: batch 16,
    32 repeats) is the mean of the score at keys `fold_in(k_zen, r)` on the first 4 images, where
    `k_zen = fold_in(key, crc32("zen"))`."""
    import zlib

    from zero_shot.network import network_of
    key = jax.random.key(7)
    got = Z.score_archs(supernet, ARCH[None], batch, key, proxies=("zen",), batch_sizes={"zen": 4},
                        repeats={"zen": 3})["zen"]
    k = jax.random.fold_in(key, zlib.crc32(b"zen"))
    net = network_of(supernet, jnp.asarray(ARCH))
    each = [float(Z.PROXIES["zen"](net, (batch[0][:4], batch[1][:4]), jax.random.fold_in(k, r))) for r in range(3)]
    assert len(set(np.round(each, 4))) == 3  # the keys differ, so the repeats do
    np.testing.assert_allclose(got, [np.mean(each)], rtol=1e-5)


def test_jacob_cov_matches_numpy_corrcoef(supernet, batch, subnet_scores):
    sub = supernet.derive(ARCH)
    net = Z.network_of(sub)
    jac = np.asarray(jax.grad(lambda v: jnp.sum(net.logits(v)))(batch[0]), np.float64).reshape(B, -1)
    v = np.linalg.eigvalsh(np.corrcoef(jac))
    want = -np.sum(np.log(v + JACOB_K) + 1.0 / (v + JACOB_K))
    got = subnet_scores["jacob_cov"]
    np.testing.assert_allclose(got, want, rtol=1e-3)


def test_ntk_condition_number_from_per_sample_gradients(supernet, batch):
    x = batch[0]
    net = Z.network_of(supernet.derive(ARCH))
    params, rest = net.split(NTK_WEIGHTS)
    rows = []
    for i in range(B):  # one backward per sample through the batch forward (TE-NAS's loop)
        gi = jax.grad(lambda p: net.logits(x, net.merge(p, rest))[i].sum())(params)
        rows.append(np.concatenate([np.asarray(t, np.float64).ravel() for t in jax.tree.leaves(gi)]))
    j = np.stack(rows)
    ev = np.linalg.eigvalsh(j @ j.T)
    got = Z.score(supernet.derive(ARCH), batch, jax.random.key(0), ("ntk",))["ntk"]
    np.testing.assert_allclose(got, -ev[-1] / ev[0], rtol=2e-2)


def test_synflow_rescaling_is_exact(supernet, batch, subnet_scores):
    """The chain-point rescaling (float32 range) must not change the value: compare with the
    plain `log sum |theta dR/dtheta|` of the absolute-valued, BN-free network (no overflow at this
    size)."""
    net = Z.network_of(supernet.derive(ARCH))
    x1 = jnp.ones((1, 8, 8, 3))
    kern, rest = net.split(KERNELS, Z.network.abs_params(net.state))

    def r(k):
        with Taps(remove_bn=True):
            return jnp.sum(net.logits(x1, net.merge(k, rest)))

    grads = jax.grad(r)(kern)
    want = np.log(sum(float(jnp.sum(jnp.abs(t * d))) for t, d in zip(jax.tree.leaves(kern), jax.tree.leaves(grads))))
    got = subnet_scores["synflow"]
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_params_and_flops_count_the_derived_subnet(supernet, batch, subnet_scores):
    sub = supernet.derive(ARCH)
    got = subnet_scores
    # the layer table's convention (supernet/spaces/nb201.py): every conv/linear weight plus one
    # folded bias per output channel (BN folded into the conv; the linear's own bias)
    kernels = _kernels(nnx.state(sub, nnx.Param))
    assert got["params"] == sum(k.size + k.shape[-1] for k in kernels.values())
    bigger = SPACE.decode("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|")
    big = Z.score(supernet, batch, jax.random.key(0), ("params", "flops"), arch=jnp.asarray(bigger))
    assert big["params"] > got["params"] and big["flops"] > got["flops"]


# ------------------------------------------------------------------ invariances
# Node 1 is a dead end (its outgoing edges are `none`), so edge 0->1's op cannot reach the output:
# the two cells compute the same function with the same live weights.
DEAD_A = "|nor_conv_3x3~0|+|nor_conv_1x1~0|none~1|+|skip_connect~0|none~1|nor_conv_3x3~2|"
DEAD_B = "|nor_conv_1x1~0|+|nor_conv_1x1~0|none~1|+|skip_connect~0|none~1|nor_conv_3x3~2|"


def test_isomorphic_cells_score_the_same(supernet, batch):
    """Function- and gradient-based scores only see the computation that reaches the output
    (GraSP and the NTK too: dead weights have zero gradient; checked in the slow suite).
    NASWOT, Zen and linear regions count every ReLU/BN of the network, dead ends included, as the
    reference implementations hook every module, so they are not expected to be invariant."""
    # (grad_norm and fisher read the same gradients as snip: test_snip_and_grad_norm_match_plain_gradients,
    # test_fisher_probes_agree_with_kernel_gradients)
    names = ("snip", "synflow", "jacob_cov")
    s = Z.score_archs(supernet, np.stack([SPACE.decode(DEAD_A), SPACE.decode(DEAD_B)]), batch,
                      jax.random.key(0), proxies=names)
    for n in names:
        np.testing.assert_allclose(s[n][0], s[n][1], rtol=1e-5, err_msg=n)


@pytest.mark.parametrize("name", ["naswot", "linear_regions", "jacob_cov"])
def test_scores_do_not_depend_on_the_order_of_the_batch(supernet, batch, name):
    perm = np.random.default_rng(0).permutation(B)
    sub = supernet.derive(ARCH)
    a = Z.score(sub, batch, jax.random.key(0), (name,))[name]
    b = Z.score(sub, (batch[0][perm], batch[1][perm]), jax.random.key(0), (name,))[name]
    np.testing.assert_allclose(a, b, rtol=1e-3)


# ------------------------------------------------------------------ one compile, ensembles, errors
def test_rank_ensemble_averages_ranks():
    s = {"a": np.array([1.0, 2.0, 3.0, 4.0]), "b": np.array([40.0, 30.0, 20.0, 10.0]), "c": [0, 0, 1, 1]}
    np.testing.assert_allclose(Z.rank_ensemble(s, ["a", "b"]), [0.5, 0.5, 0.5, 0.5])
    np.testing.assert_allclose(Z.rank_ensemble(s, weights={"a": 3, "b": 1}), [0.25, 5 / 12, 7 / 12, 0.75])
    w = Z.fit_ensemble_weights(s, [1, 2, 3, 4])
    assert w["a"] == 1.0
    with pytest.raises(KeyError, match="available: a, b, c"):
        Z.rank_ensemble(s, ["a", "zzz"])


def test_rank_ensemble_against_a_reference_does_not_depend_on_the_batch():
    rng = np.random.default_rng(0)
    ref = {"a": rng.normal(size=50), "b": rng.normal(size=50)}
    x = {"a": rng.normal(size=7), "b": rng.normal(size=7)}
    whole = Z.rank_ensemble(x, ["a", "b"], reference=ref)
    one_by_one = [Z.rank_ensemble({k: v[i:i + 1] for k, v in x.items()}, ["a", "b"], reference=ref)[0]
                  for i in range(7)]
    np.testing.assert_allclose(whole, one_by_one)  # a batch of one is no longer always rank 0
    # by hand, among [0, 1, 1, 2]: 1.5 is above three -> 3/4; 1.0 is above one and ties two -> (1 + 2/2)/4
    np.testing.assert_allclose(Z.ranks([1.5, 1.0, -5.0, 9.0, np.nan], reference=[0, 1, 1, 2]),
                               [0.75, 0.5, 0.0, 1.0, 0.0])
    # ranked against itself, the order is that of the plain ranks
    assert np.array_equal(np.argsort(Z.ranks(ref["a"], reference=ref["a"])), np.argsort(Z.ranks(ref["a"])))
    with pytest.raises(KeyError, match="no reference scores for \\['b'\\]"):
        Z.rank_ensemble(x, ["a", "b"], reference={"a": ref["a"]})


def test_torch_init_draws_pytorch_default_bounds_and_keeps_the_subnet_invariance(supernet, batch):
    """`initialise(.., "torch")`: every kernel ~ U(+-1/sqrt(fan_in)) (PyTorch's Conv2d/Linear default,
    variance bound^2 / 3), nothing else changes, the input model is untouched, and a subnet derived
    from the re-initialised supernet scores like its one-hot supernet."""
    torch_net = Z.initialise(supernet, "torch", jax.random.key(3))
    old, new = nnx.state(supernet, nnx.Param), nnx.state(torch_net, nnx.Param)
    flat_old, flat_new = dict(nnx.to_flat_state(old)), dict(nnx.to_flat_state(new))
    pooled = []
    for path, v in flat_new.items():
        x, x0 = np.asarray(v.get_value()), np.asarray(flat_old[path].get_value())
        if path[-1] != "kernel":
            np.testing.assert_array_equal(x, x0)
            continue
        bound = np.prod(x.shape[:-1]) ** -0.5
        assert np.abs(x).max() <= bound and not np.array_equal(x, x0)
        pooled.append((x / bound).ravel())
    pooled = np.concatenate(pooled)
    assert len(pooled) > 5000 and abs(pooled.var() - 1 / 3) < 0.02 and abs(pooled.mean()) < 0.02
    # deterministic for a key; "model" is an unchanged copy
    again = dict(nnx.to_flat_state(nnx.state(Z.initialise(supernet, "torch", jax.random.key(3)), nnx.Param)))
    assert all(np.array_equal(again[p].get_value(), v.get_value()) for p, v in flat_new.items())
    same = dict(nnx.to_flat_state(nnx.state(Z.initialise(supernet, "model", jax.random.key(3)), nnx.Param)))
    assert all(np.array_equal(same[p].get_value(), v.get_value()) for p, v in flat_old.items())
    names = ("naswot", "synflow")  # an activation and a weight-magnitude score (jacob_cov: in the model-init test)
    want = Z.score(torch_net.derive(ARCH), batch, jax.random.key(2), names, space=SPACE)
    _compare(Z.score(torch_net, batch, jax.random.key(2), names, arch=jnp.asarray(ARCH)), want, names)
    base = Z.score(supernet, batch, jax.random.key(2), ("synflow",), arch=jnp.asarray(ARCH))
    assert abs(base["synflow"] - want["synflow"]) > 0.1  # synflow sees the weight magnitudes
    with pytest.raises(ValueError, match="valid: model, torch"):
        Z.initialise(supernet, "kaiming", jax.random.key(0))


def test_clear_errors(supernet, batch):
    with pytest.raises(KeyError, match="naswot"):  # lists the valid names
        Z.score_archs(supernet, np.zeros((1, 6), int), batch, jax.random.key(0), proxies=("naswto",))
    with pytest.raises(ValueError, match="empty"):
        Z.score_archs(supernet, np.zeros((0, 6), int), batch, jax.random.key(0), proxies=("naswot",))
    with pytest.raises(ValueError, match="no scores requested"):
        Z.score_archs(supernet, np.zeros((1, 6), int), batch, jax.random.key(0), proxies=())
    with pytest.raises(ValueError, match="out of range for decision 'edge_1_0'"):
        Z.score_archs(supernet, np.full((1, 6), 7), batch, jax.random.key(0), proxies=("naswot",))
    with pytest.raises(ValueError, match="needs `arch`"):
        Z.score(supernet, batch, jax.random.key(0), ("naswot",))

    class Plain(nnx.Module):  # a classifier that reports nothing to `Taps`
        def __init__(self):
            self.fc = nnx.Linear(3, 10, rngs=nnx.Rngs(0))

        def __call__(self, x):
            return self.fc(jnp.mean(x, (1, 2)))

    for name in ("fisher", "naswot"):
        with pytest.raises(ValueError, match=f"score '{name}' reads activations"):
            Z.score(Plain(), batch, jax.random.key(0), (name,))


def test_evaluate_cli_reports_correlations(tmp_path, capsys):
    from experiments import zero_shot_eval as evaluate
    archs = SPACE.sample(jax.random.key(5), 12)
    truth = tmp_path / "truth.csv"
    rng = np.random.default_rng(0)
    truth.write_text("arch_str,acc\n" + "".join(f"{SPACE.encode(a)},{rng.uniform(10, 90):.2f}\n" for a in archs))
    out = evaluate.main(["--truth", str(truth), "--column", "acc", "--sample", "10", "--proxies",
                         "naswot,synflow,ensemble", "--batch-size", "8", "--synthetic", "--json",
                         "--space-kwargs", "channels=4,cells_per_stage=1", "--ranking", str(tmp_path / "rank.txt")])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == json.loads(json.dumps(out))
    assert out["n"] == 10 and set(out["proxies"]) == {"naswot", "synflow", "ensemble"}
    for rec in out["proxies"].values():
        assert -1 <= rec["spearman"] <= 1 and rec["seconds_per_arch"] > 0
        assert -1 <= rec["spearman_no_unreachable"] <= 1
    n_ok = int((~SPACE.has_unreachable_branch(np.asarray(archs))).sum())
    assert n_ok - 2 <= out["n_no_unreachable"] <= min(n_ok, 10)  # 10 of the 12 cells sampled
    ranked = [ln.strip() for ln in open(tmp_path / "rank.txt") if not ln.startswith("#")]
    assert len(ranked) == 10 and set(ranked) <= {SPACE.encode(a) for a in archs}
    with pytest.raises(SystemExit):  # an existing ranking file is never overwritten
        evaluate.main(["--truth", str(truth), "--column", "acc", "--synthetic", "--ranking", str(tmp_path / "rank.txt")])
    with pytest.raises(SystemExit):
        evaluate.main(["--truth", str(truth), "--column", "acc", "--proxies", "nope", "--synthetic"])
    with pytest.raises(SystemExit):
        evaluate.main(["--truth", str(tmp_path / "missing.csv"), "--synthetic"])
    with pytest.raises(SystemExit):  # an unknown initialisation
        evaluate.main(["--truth", str(truth), "--column", "acc", "--synthetic", "--init", "kaiming",
                       "--space-kwargs", "channels=4,cells_per_stage=1"])
    # --no-unreachable samples only the clean cells (the published rank average's subset)
    clean = evaluate.main(["--truth", str(truth), "--column", "acc", "--sample", "0", "--proxies", "synflow",
                           "--batch-size", "8", "--synthetic", "--json", "--no-unreachable",
                           "--space-kwargs", "channels=4,cells_per_stage=1"])
    assert clean["n"] == clean["n_no_unreachable"] == n_ok and clean["no_unreachable"]
    with pytest.raises(SystemExit):  # more than the clean cells
        evaluate.main(["--truth", str(truth), "--column", "acc", "--sample", str(n_ok + 1), "--synthetic",
                       "--no-unreachable", "--proxies", "synflow"])


def test_evaluate_cli_killed_and_rerun_resumes_from_its_partial_file(tmp_path, monkeypatch, capsys):
    from experiments import zero_shot_eval as evaluate
    archs = SPACE.sample(jax.random.key(6), 10)
    truth = tmp_path / "truth.csv"
    truth.write_text("arch_str,acc\n" + "".join(f"{SPACE.encode(a)},{i}\n" for i, a in enumerate(archs)))
    args = ["--truth", str(truth), "--column", "acc", "--sample", "0", "--proxies", "params,flops", "--batch-size",
            "8", "--synthetic", "--json", "--space-kwargs", "channels=4,cells_per_stage=1", "--block", "4"]
    full = evaluate.main(args + ["--save", str(tmp_path / "full.npz")])
    real, calls = Z.score_archs, []

    def dies(*a, **k):
        calls.append(len(a[1]))
        if len(calls) == 5:  # params' three blocks (4, 4, 2) and flops' first are done
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(Z, "score_archs", dies)
    part = tmp_path / "cut.npz.partial.npz"
    with pytest.raises(SystemExit, match='130'):  # ^C: exit 130, the partial file stays
        evaluate.main(args + ["--save", str(tmp_path / "cut.npz")])
    z = np.load(part)
    assert len(z["score_params"]) == 10 and len(z["score_flops"]) == 4
    with pytest.raises(SystemExit, match="different command"):  # another seed may not finish it
        evaluate.main(args + ["--seed", "1", "--save", str(tmp_path / "cut.npz")])
    calls.clear()
    again = evaluate.main(args + ["--save", str(tmp_path / "cut.npz")])
    assert calls == [4, 2]  # only flops' last six cells were scored
    assert not part.exists()
    strip = lambda o: {k: {n: {m: v for m, v in r.items() if m != "seconds_per_arch"} for n, r in o[k].items()}
                       if k == "proxies" else o[k] for k in o}
    assert strip(again) == strip(full)
    a, b = np.load(tmp_path / "full.npz"), np.load(tmp_path / "cut.npz")
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k])

    # --joint scores the listed scores together, and finishes a partial file of the one-by-one mode:
    # cut after params' first block, then each joint call scores what every score still lacks
    calls.clear()

    def first_block_only(*a, **k):
        if calls:
            raise KeyboardInterrupt
        calls.append(len(a[1]))
        return real(*a, **k)

    def record(*a, **k):
        calls.append((len(a[1]), k["proxies"]))
        return real(*a, **k)

    monkeypatch.setattr(Z, "score_archs", first_block_only)
    with pytest.raises(SystemExit, match='130'):  # ^C: exit 130, the partial file stays
        evaluate.main(args + ["--save", str(tmp_path / "mixed.npz")])
    calls.clear()
    monkeypatch.setattr(Z, "score_archs", record)
    joint = evaluate.main(args + ["--joint", "--save", str(tmp_path / "mixed.npz")])
    assert calls == [(4, ("flops",)), (4, ("params", "flops")), (2, ("params", "flops"))]
    assert strip(joint) == strip(full)
    c = np.load(tmp_path / "mixed.npz")
    for k in a.files:
        np.testing.assert_array_equal(a[k], c[k])


def test_evaluate_cli_per_score_batch_and_repeats_reach_score_archs(tmp_path, capsys, monkeypatch):
    """`--score-batch zen=4 --repeats zen=2` hands zen, and only zen, those options of `score_archs`
    (ZenNAS's protocol: batch 16, 32 repeats; what they compute is tested on `score_archs` above), the
    JSON echoes them and a resumed run must repeat them; bad values stop with a message naming the flag."""
    from experiments import zero_shot_eval as evaluate
    archs = SPACE.sample(jax.random.key(8), 6)
    truth = tmp_path / "truth.csv"
    truth.write_text("arch_str,acc\n" + "".join(f"{SPACE.encode(a)},{i}\n" for i, a in enumerate(archs)))
    args = ["--truth", str(truth), "--column", "acc", "--sample", "5", "--proxies", "zen,params", "--batch-size",
            "8", "--synthetic", "--json", "--space-kwargs", "channels=4,cells_per_stage=1", "--block", "3"]
    real, calls = Z.score_archs, []

    def record(*a, **k):
        calls.append((k["proxies"], k["batch_sizes"], k["repeats"]))
        if len(calls) == 3:  # killed after zen's two blocks, as params starts
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(Z, "score_archs", record)
    opts = ["--score-batch", "zen=4", "--repeats", "zen=2", "--save", str(tmp_path / "r.npz")]
    with pytest.raises(SystemExit, match='130'):  # ^C: exit 130, the partial file stays
        evaluate.main(args + opts)
    with pytest.raises(SystemExit, match="different command"):  # the partial scores used the options
        evaluate.main(args + ["--save", str(tmp_path / "r.npz")])
    out = evaluate.main(args + opts)
    assert calls == [(("zen",), {"zen": 4}, {"zen": 2})] * 2 + [(("params",), {}, {})] * 3
    assert out["score_batch"] == {"zen": 4} and out["repeats"] == {"zen": 2}
    for extra, msg in ((["--repeats", "naswot=2"], "--repeats names 'naswot'"),
                       (["--repeats", "zen=0"], "must be >= 1"),
                       (["--score-batch", "zen=x"], "score=int pairs"),
                       (["--score-batch", "zen=16"], "exceeds --batch-size 8"),
                       (["--repeats", "zen=2", "--prune", "0.5", "--prune-method", "progressive"], "progressive")):
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            evaluate.main(args + extra)
        assert e.value.code == 2 and msg in capsys.readouterr().err, extra


def test_evaluate_crops_images_to_the_space_input_size(tmp_path):
    """TE-NAS counts linear regions on small random crops: a space with a smaller input_size gets
    one random window of each image (no padding, no resampling); the full size passes unchanged."""
    from experiments.data import random_crops
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (5, 32, 32, 3), dtype=np.uint8)
    assert random_crops(images, 32, rng) is images and random_crops(images, None, rng) is images
    crops = random_crops(images, 4, np.random.default_rng(1))
    assert crops.shape == (5, 4, 4, 3)
    for im, c in zip(images, crops):  # each crop is a window of its own image
        windows = np.lib.stride_tricks.sliding_window_view(im, (4, 4), axis=(0, 1))  # [29, 29, 3, 4, 4]
        assert (windows == c.transpose(2, 0, 1)).all(axis=(2, 3, 4)).any()
    with pytest.raises(ValueError, match="input_size 40 exceeds the 32x32 images"):
        random_crops(images, 40, rng)
    from experiments import zero_shot_eval as evaluate
    archs = SPACE.sample(jax.random.key(7), 6)
    truth = tmp_path / "truth.csv"
    truth.write_text("arch_str,acc\n" + "".join(f"{SPACE.encode(a)},{i}\n" for i, a in enumerate(archs)))
    out = evaluate.main(["--truth", str(truth), "--column", "acc", "--sample", "6", "--proxies", "linear_regions",
                         "--batch-size", "32", "--synthetic", "--json",
                         "--space-kwargs", "channels=1,cells_per_stage=1,input_size=4"])
    assert out["n"] == 6 and -1 <= out["proxies"]["linear_regions"]["spearman"] <= 1


# progressive is slow-marked for suite time: test_prune checks it against an additive toy score, and
# the CLI's pruning path is the same for both methods (marginal, here by default)
@pytest.mark.parametrize("method", ["marginal", pytest.param("progressive", marks=pytest.mark.slow)])
def test_evaluate_cli_pruning_never_beats_the_oracle(tmp_path, method):
    from experiments import zero_shot_eval as evaluate
    archs = np.asarray(SPACE.sample(jax.random.key(6), 24))
    truth = tmp_path / "truth.csv"
    rng = np.random.default_rng(1)
    truth.write_text("arch_str,acc\n" + "".join(f"{SPACE.encode(a)},{rng.uniform(10, 90):.2f}\n" for a in archs))
    out = evaluate.main(["--truth", str(truth), "--column", "acc", "--sample", "16", "--proxies",
                         "synflow,params,ensemble", "--batch-size", "8", "--synthetic", "--json",
                         "--space-kwargs", "channels=4,cells_per_stage=1", "--prune", "0.5,0.2",
                         "--prune-method", method])
    assert out["prune_method"] == method
    for f in ("0.5", "0.2"):
        oracle = out["prune_oracle"][f]
        assert oracle["top5_kept_fraction"] <= float(f)
        # marginal pruning with the truth as the score: a mask of that size, so never above the oracle
        perfect = oracle["marginal_with_truth"]
        assert 0 < perfect["kept_fraction"] <= float(f)
        assert perfect["top1_survival"] <= oracle["top1_survival"] + 1e-9
        assert perfect["top5_survival"] <= oracle["top5_survival"] + 1e-9
        for rec in out["proxies"].values():
            got = rec[f"prune_{f}"]
            assert 0 < got["kept_fraction"] <= float(f)
            # the oracle is the best any mask of that size can do: no score beats it
            assert got["top5_survival"] <= oracle["top5_survival"] + 1e-9
            assert got["top1_survival"] <= oracle["top1_survival"] + 1e-9
