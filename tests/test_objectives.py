"""The joint memory budget of the search loss (`supernet.objectives`): zero inside, relative and
differentiable outside, and an impossible budget stops with the smallest reachable memory."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hwmodel import ACCELERATORS, memory
from supernet import landscape
from supernet.objectives import CostConfig, check_budgets, combine, make_cost_fn, memory_floor
from supernet.spaces import make_space

# A mobile space small enough to enumerate (2 blocks, 2 stages): 6912 architectures.
SPACE = make_space("mobile-curated", parallelism=8, blocks_per_stage=(1, 1), base_widths=(16, 32),
                   stage_strides=(1, 2), stem_width=16, head_width=64, input_size=16)
SPEC = ACCELERATORS["npu"]


def _exact(archs):
    f = landscape.table_function(SPACE, lambda t: jnp.stack(
        [memory.param_bytes(SPEC, t), memory.peak_activation_bytes(t, SPEC)], -1))
    return f(archs)


def _all_archs():
    archs = np.asarray(list(itertools.product(*[range(d.num_choices) for d in SPACE.decisions])), np.int32)
    return archs, _exact(archs)


def test_penalty_is_zero_inside_the_budget_and_relative_outside():
    arch = SPACE.baseline_arch()
    p, a = _exact(arch[None])[0]
    probs = jnp.asarray(SPACE.one_hot(arch))
    ce = jnp.float32(1.25)
    inside = CostConfig(params_budget_bytes=p * 1.01, activation_budget_bytes=a * 1.2)
    cost = make_cost_fn(SPACE, inside)(probs)
    assert set(cost) == {"params_bytes", "peak_activation_bytes"}  # no latency form: no latency term
    assert float(combine(ce, cost, inside)) == pytest.approx(1.25, abs=0)
    g = jax.grad(lambda q: combine(ce, make_cost_fn(SPACE, inside)(q), inside))(probs)
    assert float(jnp.abs(g).max()) == 0.0  # free inside the budget

    # outside: m * sum_k (M_k / B_k - 1), the smooth peak (>= the exact one) on activations
    out = CostConfig(params_budget_bytes=p / 2, activation_budget_bytes=a / 4, memory_weight=0.5)
    cost = make_cost_fn(SPACE, out)(probs)
    assert float(cost["params_bytes"]) == pytest.approx(p, rel=1e-6)
    assert a <= float(cost["peak_activation_bytes"]) <= a * (1 + 0.05 * np.log(SPACE.layers(arch).op.shape[-1]))
    want = 1.25 + 0.5 * (float(cost["params_bytes"]) / (p / 2) - 1 + float(cost["peak_activation_bytes"]) / (a / 4) - 1)
    assert float(combine(ce, cost, out)) == pytest.approx(want, rel=1e-6)


def test_each_budget_gradient_lowers_its_memory():
    arch = SPACE.baseline_arch()
    p, a = _exact(arch[None])[0]
    allowed = jnp.asarray(SPACE.full_mask().allowed)
    probs = jax.nn.softmax(jnp.where(allowed, jnp.asarray(SPACE.one_hot(arch)) * 3.0, -jnp.inf))
    for cfg, key in ((CostConfig(params_budget_bytes=p / 2), "params_bytes"),
                     (CostConfig(activation_budget_bytes=a / 2), "peak_activation_bytes")):
        fn = make_cost_fn(SPACE, cfg)
        g = jax.grad(lambda q: combine(jnp.float32(0.0), fn(q), cfg))(probs)
        assert np.all(np.isfinite(np.asarray(g))) and float(jnp.abs(g).max()) > 0
        # a small step against the gradient projected on the simplex (zero sum over each decision's
        # allowed choices, so the step stays a distribution) lowers the memory
        g = jnp.where(allowed, g - jnp.sum(jnp.where(allowed, g, 0), -1, keepdims=True) / allowed.sum(-1, keepdims=True), 0)
        stepped = probs - 1e-3 * g / jnp.abs(g).max()
        assert float(stepped.min()) >= 0 and np.allclose(stepped.sum(-1), 1, atol=1e-5)
        assert float(fn(stepped)[key]) < float(fn(probs)[key]), key


def test_memory_floor_is_the_smallest_of_the_whole_space():
    archs, mem = _all_archs()
    floors, closest, got = memory_floor(SPACE, CostConfig(params_budget_bytes=1.0, activation_budget_bytes=1.0))
    assert floors["params_bytes"] == mem[:, 0].min()
    assert floors["peak_activation_bytes"] == mem[:, 1].min()
    assert SPACE.validate(closest) is not None and got["params_bytes"] == _exact(closest[None])[0, 0]


def test_impossible_budgets_say_the_smallest_reachable():
    archs, mem = _all_archs()
    p_min, a_min = mem[:, 0].min(), mem[:, 1].min()
    with pytest.raises(ValueError, match=rf"params_budget_bytes=\d+ is below the smallest params_bytes "
                                         rf"reachable in mobile-curated, {p_min:.0f}"):
        check_budgets(SPACE, CostConfig(params_budget_bytes=p_min - 1))
    with pytest.raises(ValueError, match=f"smallest peak_activation_bytes reachable in mobile-curated, {a_min:.0f}"):
        check_budgets(SPACE, CostConfig(params_budget_bytes=p_min * 10, activation_budget_bytes=a_min * 0.9))
    # met by some architecture (brute force): no error
    i = int(np.argmin(mem[:, 0] + mem[:, 1] * mem[:, 0].mean() / mem[:, 1].mean()))
    check_budgets(SPACE, CostConfig(params_budget_bytes=mem[i, 0], activation_budget_bytes=mem[i, 1]))
    check_budgets(SPACE, CostConfig())  # no budget, nothing to check
    with pytest.raises(ValueError, match="activation_budget_bytes must be a memory in bytes > 0"):
        CostConfig(activation_budget_bytes=0.0)
