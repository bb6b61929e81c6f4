"""Search-space pruning: marginal and TE-NAS-style progressive, against an additive toy score."""

import jax
import numpy as np
import pytest

from supernet.spaces import make_space
from zero_shot.prune import choice_effects, prune_marginal, prune_progressive, survival

SPACE = make_space("nb201", channels=4, cells_per_stage=1)
# a known additive score: choice c of decision d is worth VALUE[d, c]
VALUE = np.array([[0, 1, 3, 4, 2], [4, 3, 2, 1, 0], [0, 4, 1, 2, 3],
                  [1, 0, 4, 3, 2], [2, 4, 0, 1, 3], [3, 2, 4, 0, 1]], float)


def additive(archs):
    return VALUE[np.arange(6)[None, :], np.asarray(archs)].sum(-1)


def all_archs():
    return np.stack(np.meshgrid(*[np.arange(5)] * 6, indexing="ij"), -1).reshape(-1, 6)


def test_choice_effects_rank_the_choices_of_an_additive_score():
    archs = np.asarray(SPACE.sample(jax.random.key(0), 2000))
    eff = choice_effects(SPACE, archs, additive(archs))
    for d in range(6):  # the marginal effect orders each decision's choices like the true values
        assert np.argsort(eff[d]).tolist() == np.argsort(VALUE[d]).tolist()


@pytest.mark.parametrize("frac", [0.5, 0.2, 0.1])
def test_marginal_pruning_hits_the_target_and_keeps_the_best(frac):
    archs = np.asarray(SPACE.sample(jax.random.key(1), 1000))
    mask = prune_marginal(SPACE, archs, additive(archs), target_fraction=frac)
    assert frac / 5 < mask.size / SPACE.size <= frac  # one removal never shrinks the space >5x
    assert mask.allowed[np.arange(6), VALUE.argmax(1)].all()  # the optimum survives
    full = all_archs()
    assert survival(mask, full, additive(full), 0.01) > 0.5
    # deterministic: the same sample gives the same mask
    assert mask == prune_marginal(SPACE, archs, additive(archs), target_fraction=frac)


def test_keep_choices_per_decision():
    archs = all_archs()
    mask = prune_marginal(SPACE, archs, additive(archs), keep_choices=0.4)  # ceil(0.4 * 5) = 2
    assert (mask.allowed.sum(1) == 2).all()
    assert all(set(np.flatnonzero(mask.allowed[d])) == set(np.argsort(-VALUE[d])[:2]) for d in range(6))


def test_progressive_pruning_removes_the_least_harmful_choice_each_round():
    calls = []

    def score_weights(w):  # expected additive value under the per-decision distribution
        calls.append(len(w))
        return (w[:, :, :5] * VALUE[None]).sum((1, 2))

    log = []
    mask = prune_progressive(SPACE, score_weights, keep=1, log=log.append)
    assert mask.allowed.sum() == 6 and mask.allowed[np.arange(6), VALUE.argmax(1)].all()
    assert calls == [30, 24, 18, 12]  # one batched call per round, every candidate removal scored
    assert [r["choice"] for r in log[:6]] == VALUE.argmin(1).tolist()  # round 0 drops each worst


def test_survival_by_hand_and_errors():
    archs = np.array([[0] * 6, [1] * 6, [2] * 6, [3] * 6])
    truth = np.array([1.0, 4.0, 3.0, 2.0])
    mask = SPACE.mask(remove={SPACE.decisions[0].name: ["skip_connect"]})
    assert survival(mask, archs, truth, 0.25) == 0.0  # the best ([1]*6) was pruned
    assert survival(mask, archs, truth, 0.5) == 0.5
    with pytest.raises(ValueError, match="non-empty"):
        prune_marginal(SPACE, np.zeros((0, 6), int), np.zeros(0), target_fraction=0.5)
    with pytest.raises(ValueError, match="exactly one"):
        prune_marginal(SPACE, archs, truth)
    with pytest.raises(ValueError, match="NaN"):
        prune_marginal(SPACE, archs, np.array([1.0, np.nan, 0, 0]), target_fraction=0.5)
    with pytest.raises(ValueError, match="target_fraction"):
        prune_marginal(SPACE, archs, truth, target_fraction=0.0)


def test_minus_infinity_ranks_last_and_nan_is_refused():
    archs = np.asarray(SPACE.sample(jax.random.key(2), 200))
    s = additive(archs).astype(float)
    dead = archs[:, 0] == 0  # say choice 0 of decision 0 disconnects the cell: score -inf
    s_inf = np.where(dead, -np.inf, s)
    eff = choice_effects(SPACE, archs, s_inf)
    assert eff[0, 0] == np.nanmin(eff[0]) and eff[0, 0] < choice_effects(SPACE, archs, s)[0, 0]
    with pytest.raises(ValueError, match="NaN"):
        choice_effects(SPACE, archs, np.where(dead, np.nan, s))
