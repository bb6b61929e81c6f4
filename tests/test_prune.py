"""Search-space pruning: marginal and TE-NAS-style progressive, against an additive toy score."""

import jax
import numpy as np
import pytest

from supernet.spaces import make_space
import itertools

from supernet.space import SpaceMask
from zero_shot.prune import best_covering_mask, choice_effects, prune_marginal, prune_progressive, survival

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


def test_progressive_with_a_size_target_removes_one_choice_at_a_time():
    value = np.random.default_rng(3).random((6, 5))
    log = []
    mask = prune_progressive(SPACE, lambda w: (w[:, :, :5] * value[None]).sum((1, 2)),
                             target_fraction=0.2, log=log.append)
    assert mask.size <= 0.2 * SPACE.size < log[-2]["size"]  # stops at the first step under the target
    assert [r["size"] for r in log] == sorted((r["size"] for r in log), reverse=True)
    assert mask.allowed[np.arange(6), value.argmax(1)].all()
    # the first removal is the globally least harmful one: removing c from a decision with 5
    # choices raises its expected value by (mean - value[c]) / 4, most for the decision whose
    # worst choice lies furthest below its mean
    d = int(np.argmax(value.mean(1) - value.min(1)))
    assert (log[0]["decision"], log[0]["choice"]) == (SPACE.decisions[d].name, value[d].argmin())
    with pytest.raises(ValueError, match="target_fraction"):
        prune_progressive(SPACE, lambda w: np.zeros(len(w)), target_fraction=1.5)


def test_best_covering_mask_equals_brute_force():
    # restrict to 3 choices on decisions 0-2 and one on 3-5: 7^3 candidate masks to enumerate
    base = np.zeros((6, 5), bool)
    base[:3, 1:4] = True
    base[3:, 0] = True
    rng = np.random.default_rng(0)
    archs = np.zeros((40, 6), int)
    archs[:, :3] = rng.integers(1, 4, (40, 3))
    w = rng.random(40)
    subsets = [s for r in (1, 2, 3) for s in itertools.combinations((1, 2, 3), r)]
    for frac in (0.5, 0.2, 0.08):
        best = 0.0
        for combo in itertools.product(subsets, repeat=3):
            a = base.copy()
            for d, sub in enumerate(combo):
                a[d] = False
                a[d, list(sub)] = True
            m = SpaceMask(a)
            if m.size <= frac * 27:
                best = max(best, w[a[np.arange(6)[None], archs].all(-1)].sum())
        mask, share = best_covering_mask(SPACE, archs, frac, weights=w, mask=SpaceMask(base))
        assert mask.size <= frac * 27 and not (mask.allowed & ~base).any()
        kept = w[mask.allowed[np.arange(6)[None], archs].all(-1)].sum()
        assert kept == pytest.approx(best) and share == pytest.approx(best / w.sum())
    # unweighted, its share is `survival` of the same cells
    full = all_archs()
    top = full[np.argsort(-additive(full), kind="stable")[:50]]
    mask, share = best_covering_mask(SPACE, top, 0.2)
    assert share == pytest.approx(survival(mask, top, np.arange(50, 0, -1), 1.0))
    with pytest.raises(ValueError, match="weights"):
        best_covering_mask(SPACE, top, 0.2, weights=-np.ones(50))


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


def test_prune_ceiling_shows_marginal_pruning_missing_cells_good_only_in_combination(tmp_path):
    """benchmarks/prune_ceiling.py on a table whose best cells need a choice that is bad on average
    (as NAS-Bench-201's top cells need skip_connect on edge_3_0): marginal pruning, even with the
    truth of every cell, removes that choice; the oracle mask keeps it."""
    import importlib.util
    import os
    spec = importlib.util.spec_from_file_location(
        "prune_ceiling", os.path.join(os.path.dirname(__file__), "..", "benchmarks", "prune_ceiling.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    full = all_archs()
    value = VALUE.copy()
    value[3, 1] = -4.0  # choice 1 of decision 3 is the worst on average ...
    combo = (full[:, 3] == 1) & (full[:, 0] == 3)  # ... but the 625 cells with it and this are the best
    truth = value[np.arange(6)[None, :], full].sum(-1) + 20.0 * combo
    csv = tmp_path / "truth.csv"
    csv.write_text("arch_str,acc\n" + "".join(f"{SPACE.encode(a)},{t}\n" for a, t in zip(full, truth)))
    idx = np.random.default_rng(0).choice(len(full), 500, replace=False)
    np.savez(tmp_path / "s.npz", archs=full[idx], truth=truth[idx], perfect=truth[idx], anti=-truth[idx])
    out = bench.main(["--scores", str(tmp_path / "s.npz"), "--truth", str(csv), "--column", "acc",
                      "--fractions", "0.2", "--cover-top", "0.03"])
    assert out["n"] == 500 and set(out["scores"]) == {"perfect", "anti", "truth_on_sample"}
    oracle = out["oracle"]["0.2"]
    assert oracle["top1_survival"] == 1.0  # fixing decision 3 to choice 1 (20 %) keeps all 625
    assert out["truth_on_all"]["0.2"]["top1_survival"] == 0.0  # the 156 top-1 % cells are all lost
    perfect = out["scores"]["perfect"]["0.2"]
    assert perfect == out["scores"]["truth_on_sample"]["0.2"]  # the score is the sample's truth
    # the sample's top 3 % (15 cells) are combination cells: covering them keeps the choice
    assert perfect["cover_top0.03"]["top1_survival"] == 1.0 and perfect["marginal"]["top1_survival"] == 0.0
    for rec in out["scores"].values():
        for r in rec["0.2"].values():
            assert 0 < r["kept_fraction"] <= 0.2 and r["top1_survival"] <= oracle["top1_survival"]
    assert out["scores"]["anti"]["0.2"]["marginal"]["top1_survival"] == 0.0
    with pytest.raises(SystemExit):
        bench.main(["--scores", str(tmp_path / "missing.npz"), "--truth", str(csv), "--column", "acc"])
