"""Multishot search: REA / NSGA-II / random search, Pareto utilities and the evaluators.

Toy objectives on the NAS-Bench-201 space (no data) for the algorithms; the table evaluator against
rows of the NB201 CSV; the hwcost evaluator against hwmodel; the supernet and train evaluators on a
tiny NB201 supernet with synthetic data (one compile for many architectures)."""

import csv
import json
import os
import re
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hwmodel import analytic, memory
from hwmodel.accelerators import ACCELERATORS
from hwmodel.surrogate import fit, network_features, predict
from supernet import make_supernet, pareto
from supernet.evaluators import (EVALUATORS, CompositeEvaluator, Evaluator, PooledEvaluator, ZeroShotEvaluator,
                                 make_evaluator)
from supernet.multishot import Evolution, EvolutionConfig, InfeasibleError, evolve
from supernet.spaces import make_space
from supernet.training import DeviceData, evaluate, make_mesh

SPACE = make_space("nb201")
TARGET = np.array([3, 3, 1, 2, 0, 3], np.int32)


class Toy(Evaluator):
    """score = -squared distance to TARGET (max 0 at TARGET), cost = sum of choices; counts queries."""

    names = ("score", "cost")

    def __init__(self, space=SPACE, sleep=0.0):
        super().__init__(space)
        self.calls, self.sleep = 0, sleep

    def evaluate(self, archs):
        self.calls += len(archs)
        time.sleep(self.sleep)
        return {"score": -((archs - TARGET) ** 2).sum(1).astype(float), "cost": archs.sum(1).astype(float)}


def _strip(history):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


def _nb201_csv(data_dir):
    return os.path.join(data_dir, "nas-bench-201", "nb201_cifar10.csv")


# ------------------------------------------------------------------ algorithms
def test_rea_finds_the_optimum_of_a_toy_objective():
    res = evolve(SPACE, Toy(), EvolutionConfig(objectives=("max:score",), max_evals=300, seed=0))
    assert res.best["objectives"]["score"] == 0.0
    assert res.best_arch.tolist() == TARGET.tolist()
    assert len(res.history) == 300
    traj = res.trajectory()
    assert traj[-1] == 0.0 and np.all(np.diff(traj[~np.isnan(traj)]) >= 0)


def test_rea_beats_random_search_on_the_toy_objective():
    cfg = dict(objectives=("max:score",), max_evals=120)
    rea = [evolve(SPACE, Toy(), EvolutionConfig(seed=s, **cfg)).best["objectives"]["score"] for s in range(4)]
    rnd = [evolve(SPACE, Toy(), EvolutionConfig(algorithm="random", seed=s, **cfg)).best["objectives"]["score"]
           for s in range(4)]
    assert np.mean(rea) > np.mean(rnd)


def test_aging_removes_the_oldest_member():
    # The first individual is the global optimum: non-regularized (elitist) evolution would keep it
    # forever; aging evolution drops it after P more children.
    p = 4
    search = Evolution(SPACE, Toy(), EvolutionConfig(objectives=("max:score",), population=p, sample_size=2,
                                                     max_evals=p + 1, seed=0), init=[TARGET])
    search.run()
    assert search.population == [1, 2, 3, 4]
    longer = EvolutionConfig(objectives=("max:score",), population=p, sample_size=2, max_evals=30, seed=0)
    search = Evolution.from_state(SPACE, Toy(), search.state(), cfg=longer)
    res = search.run()
    assert search.population == list(range(26, 30))
    for r in res.history[p:]:  # parents always come from the P most recent individuals
        assert r["origin"] == "mutation" and len(r["parents"]) == 1
        assert r["index"] - p <= r["parents"][0] < r["index"]


def test_nondominated_sort_and_crowding_on_a_hand_made_example():
    pts = np.array([[1, 5], [2, 3], [4, 2], [5, 1], [2, 5], [4, 4], [5, 5]], float)  # minimise both
    assert pareto.nondominated_sort(pts).tolist() == [0, 0, 0, 0, 1, 1, 2]
    assert pareto.non_dominated(pts).tolist() == [True] * 4 + [False] * 3
    # Maximised: (5,5) dominates all; then (5,1), (2,5), (4,4); (1,5), (2,3), (4,2) are dominated by those.
    assert pareto.nondominated_sort(pts, ("max", "max")).tolist() == [2, 2, 2, 1, 1, 1, 0]
    cd = pareto.crowding_distance(pts[:4])
    # (2,3): f0 neighbours 1 and 4, f1 neighbours 2 and 5, ranges 4 and 4 -> 3/4 + 3/4
    # (4,2): f0 neighbours 2 and 5, f1 neighbours 1 and 3 -> 3/4 + 2/4
    np.testing.assert_allclose(cd, [np.inf, 1.5, 1.25, np.inf])


def test_hypervolume_of_a_hand_computed_front():
    front = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])
    # Strips: (4-1)*(4-3) + (4-2)*(3-2) + (4-3)*(2-1) = 3 + 2 + 1
    assert pareto.hypervolume_2d(front, (4.0, 4.0)) == 6.0
    extra = np.vstack([front, [[3.0, 3.0], [5.0, 0.5]]])  # a dominated point and one beyond the reference
    assert pareto.hypervolume_2d(extra, (4.0, 4.0)) == 6.0
    # Same front as (accuracy, latency) with accuracy maximised: a = 10 - f0.
    acc_lat = np.stack([10 - front[:, 0], front[:, 1]], 1)
    assert pareto.hypervolume_2d(acc_lat, (6.0, 4.0), ("max", "min")) == 6.0
    table = np.vstack([acc_lat, [[6.0, 4.0], [7.5, 3.5]]])
    assert pareto.hypervolume_ratio(acc_lat, table, ("max", "min")) == 1.0
    # Normalised to [0, 1]^2 by the table's bounds (acc 6..9, lat 1..4): dropping (8, 2) loses
    # (9-8)/3 * (3-2)/3 of the true front's 6/9.
    np.testing.assert_allclose(pareto.hypervolume_ratio(acc_lat[[0, 2]], table, ("max", "min")), (6 - 1) / 6)


def test_nsga2_finds_the_toy_pareto_front():
    # Maximise score (distance to TARGET), minimise cost (sum of choices): the true front is known by
    # enumeration of the 15,625 cells.
    objectives = ("max:score", "min:cost")
    res = evolve(SPACE, Toy(), EvolutionConfig(algorithm="nsga2", objectives=objectives, population=20,
                                               max_evals=400, seed=0))
    all_archs = np.stack(np.unravel_index(np.arange(SPACE.size), tuple(SPACE.num_choices)), 1)
    vals = Toy()(all_archs)
    table = np.stack([vals["score"], vals["cost"]], 1)
    found = np.array([[r["objectives"]["score"], r["objectives"]["cost"]] for r in res.front])
    assert pareto.non_dominated(found, ("max", "min")).all()
    ratio = pareto.hypervolume_ratio(found, table, ("max", "min"))
    assert 0.97 < ratio <= 1.0
    assert res.best["objectives"]["score"] == 0.0  # the first objective's optimum is on the front


def test_constraint_keeps_parents_and_best_feasible():
    cfg = EvolutionConfig(objectives=("max:score",), constraints=("cost <= 6",), max_evals=200, seed=1)
    res = evolve(SPACE, Toy(), cfg)
    assert res.best["objectives"]["cost"] <= 6
    feasible = [r["objectives"]["score"] for r in res.history if r["objectives"]["cost"] <= 6]
    assert res.best["objectives"]["score"] == max(feasible)
    # The best feasible arch under cost <= 6 is at squared distance >= 49 - ... (TARGET costs 12).
    assert res.best["objectives"]["score"] < 0
    for r in res.history[10:]:
        assert (r["violation"] == 0) == (r["objectives"]["cost"] <= 6)


# ------------------------------------------------------------------ budget, determinism, resume
def test_budget_is_respected_and_repeats_count():
    ev = Toy()
    res = evolve(SPACE, ev, EvolutionConfig(objectives=("max:score",), max_evals=37, seed=0))
    assert len(res.history) == 37
    cached = sum(r["cached"] for r in res.history)
    assert ev.calls == 37 - cached  # a repeat is answered from the cache, but counts as a query
    for r in res.history:
        if r["cached"]:
            first = next(h for h in res.history if h["arch"] == r["arch"])
            assert r["objectives"] == first["objectives"] and r["seconds"] == 0.0

    slow = Toy(sleep=0.02)
    res = evolve(SPACE, slow, EvolutionConfig(objectives=("max:score",), population=2, sample_size=2,
                                              max_evals=None, max_seconds=0.2, seed=0))
    assert 2 <= len(res.history) < 30 and res.state["seconds"] >= 0.2


def test_resample_mode_spends_the_budget_on_new_architectures():
    mask = SPACE.mask(remove={"edge_1_0": ["none", "skip_connect", "avg_pool_3x3"],
                              "edge_2_0": ["none", "skip_connect", "nor_conv_1x1"],
                              "edge_2_1": ["none", "skip_connect", "nor_conv_1x1", "avg_pool_3x3"],
                              "edge_3_0": ["skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"],
                              "edge_3_1": ["skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"],
                              "edge_3_2": ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3"]})
    assert mask.size == 4
    res = evolve(SPACE, Toy(), EvolutionConfig(objectives=("max:score",), population=2, sample_size=2,
                                               max_evals=6, revisit="resample", seed=0), mask=mask)
    archs = [r["arch"] for r in res.history]
    assert len(set(archs[:4])) == 4  # the whole (masked) space before any repeat
    assert len(archs) == 6 and all(r["cached"] for r in res.history[4:])


def test_same_seed_same_history():
    cfg = EvolutionConfig(algorithm="nsga2", objectives=("max:score", "min:cost"), population=8,
                          max_evals=40, seed=3)
    a, b = evolve(SPACE, Toy(), cfg), evolve(SPACE, Toy(), cfg)
    assert _strip(a.history) == _strip(b.history)
    c = evolve(SPACE, Toy(), EvolutionConfig(**{**cfg.to_dict(), "seed": 4}))
    assert [r["arch"] for r in a.history] != [r["arch"] for r in c.history]


class Killed(Exception):
    pass


def _killed_at(cfg: EvolutionConfig, kill_at: int) -> dict:
    """The saved state of a search killed right after its query `kill_at` (what a checkpoint holds)."""
    def log(rec):
        if rec["index"] == kill_at:
            raise Killed

    search = Evolution(SPACE, Toy(), cfg, log=log)
    with pytest.raises(Killed):
        search.run()
    return json.loads(json.dumps(search.state()))


@pytest.mark.parametrize("algorithm,revisit,kill_at", [("rea", "count", 3), ("rea", "count", 23),
                                                       ("rea", "resample", 17), ("nsga2", "count", 13),
                                                       ("nsga2", "resample", 26), ("random", "count", 9)])
def test_killed_and_resumed_equals_uninterrupted(algorithm, revisit, kill_at):
    objectives = ("max:score", "min:cost") if algorithm == "nsga2" else ("max:score",)
    cfg = EvolutionConfig(algorithm=algorithm, objectives=objectives, population=6, sample_size=3,
                          max_evals=40, revisit=revisit, seed=7)
    full = evolve(SPACE, Toy(), cfg)
    state = _killed_at(cfg, kill_at)
    assert len(state["history"]) == kill_at + 1
    resumed = evolve(SPACE, Toy(), cfg, state=state)
    assert _strip(resumed.history) == _strip(full.history)
    assert resumed.state["population"] == full.state["population"]
    assert resumed.best == {**full.best, "seconds": resumed.best["seconds"]}


@pytest.mark.parametrize("algorithm,kill_at", [("rea", 8), ("rea", 13), ("random", 6)])
def test_batched_search_killed_inside_a_batch_resumes_to_the_uninterrupted_run(algorithm, kill_at):
    cfg = EvolutionConfig(algorithm=algorithm, objectives=("max:score",), population=6, sample_size=3,
                          max_evals=40, seed=7, batch=4)
    toy = Toy()
    full = evolve(SPACE, toy, cfg)
    assert toy.calls == sum(not r["cached"] for r in full.history)
    if algorithm == "rea":  # the children of one step share their parents' population, which then ages by 4
        for r in full.history[6:]:
            step_start = 6 + (r["index"] - 6) // 4 * 4
            assert step_start - 6 <= r["parents"][0] < step_start
        # 8 full steps (children 6..37) aged the population; the last, partial step (38, 39) has not
        assert full.state["population"] == list(range(32, 38))
        assert _strip(full.history) != _strip(evolve(SPACE, Toy(), EvolutionConfig(
            **{**cfg.to_dict(), "batch": 1})).history)  # batched REA is another algorithm
    else:  # random samples do not depend on the grouping
        assert _strip(full.history) == _strip(evolve(SPACE, Toy(), EvolutionConfig(
            **{**cfg.to_dict(), "batch": 1})).history)
    resumed = evolve(SPACE, Toy(), cfg, state=_killed_at(cfg, kill_at))
    assert _strip(resumed.history) == _strip(full.history)
    with pytest.raises(ValueError, match="batch must be >= 1"):
        EvolutionConfig(batch=0)


def test_pooled_evaluation_gives_the_serial_history():
    """A generation split over 3 workers (each holding its own evaluator) gives the serial search."""
    for cfg in (EvolutionConfig(algorithm="nsga2", objectives=("max:score", "min:cost"), population=8,
                                max_evals=40, seed=3),
                EvolutionConfig(objectives=("max:score",), population=8, max_evals=40, seed=3, batch=5)):
        workers, serial = [Toy() for _ in range(3)], Toy()
        pooled = PooledEvaluator(SPACE, Toy.names, lambda chunks: [w(c) for w, c in zip(workers, chunks)], 3)
        assert _strip(evolve(SPACE, pooled, cfg).history) == _strip(evolve(SPACE, serial, cfg).history)
        assert min(w.calls for w in workers) > 0 and sum(w.calls for w in workers) == serial.calls
    with pytest.raises(ValueError, match="workers >= 1"):
        PooledEvaluator(SPACE, Toy.names, lambda chunks: [], workers=0)


def test_resume_can_extend_the_budget_but_not_change_the_search():
    cfg = EvolutionConfig(objectives=("max:score",), max_evals=20, seed=0)
    short = evolve(SPACE, Toy(), cfg)
    longer = evolve(SPACE, Toy(), EvolutionConfig(objectives=("max:score",), max_evals=50, seed=0),
                    state=short.state)
    full = evolve(SPACE, Toy(), EvolutionConfig(objectives=("max:score",), max_evals=50, seed=0))
    assert _strip(longer.history) == _strip(full.history)
    with pytest.raises(ValueError, match="sample_size"):
        evolve(SPACE, Toy(), EvolutionConfig(objectives=("max:score",), sample_size=5, seed=0), state=short.state)


# ------------------------------------------------------------------ warm start and masks
def test_warm_start_fills_the_initial_population():
    init = ["|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|nor_conv_1x1~0|none~1|nor_conv_3x3~2|",
            SPACE.encode(np.array([1, 1, 1, 1, 1, 1]))]
    res = evolve(SPACE, Toy(), EvolutionConfig(objectives=("max:score",), population=5, max_evals=30, seed=0),
                 init=init)
    assert [r["arch"] for r in res.history[:2]] == init
    assert [r["origin"] for r in res.history[:6]] == ["init"] * 2 + ["random"] * 3 + ["mutation"]
    # The warm start is the optimum: the search keeps it as the best.
    res = evolve(SPACE, Toy(), EvolutionConfig(objectives=("max:score",), population=5, max_evals=6, seed=0),
                 init=[SPACE.encode(TARGET)])
    assert res.best_arch.tolist() == TARGET.tolist()


@pytest.mark.parametrize("algorithm", ["rea", "nsga2", "random"])
def test_mask_is_respected(algorithm):
    mask = SPACE.mask(remove={"edge_1_0": ["none", "nor_conv_3x3"], "edge_3_2": ["avg_pool_3x3"]})
    objectives = ("max:score", "min:cost") if algorithm == "nsga2" else ("max:score",)
    res = evolve(SPACE, Toy(), EvolutionConfig(algorithm=algorithm, objectives=objectives, population=6,
                                               max_evals=60, seed=0), mask=mask)
    archs = np.stack([SPACE.decode(r["arch"]) for r in res.history])
    assert mask.allowed[np.arange(6)[None, :], archs].all()
    assert set(archs[:, 0]) <= {1, 2, 4} and 4 not in archs[:, 5]


# ------------------------------------------------------------------ guided mutation
class Guide(Evaluator):
    """A cheap stand-in for a zero-shot score: g = -|arch - TARGET|_1 (a different metric from Toy's)."""

    names = ("g",)

    def __init__(self):
        super().__init__(SPACE)
        self.seen = []

    def evaluate(self, archs):
        self.seen += [SPACE.encode(a) for a in archs]
        return {"g": -np.abs(archs - TARGET).sum(1).astype(float)}


def _neighbours_by_hand(arch, mask=None):
    allowed = SPACE.full_mask().allowed if mask is None else mask.allowed
    out = []
    for d in range(len(arch)):
        for c in range(allowed.shape[1]):
            if allowed[d, c] and c != arch[d]:
                b = np.array(arch)
                b[d] = c
                out.append(b)
    return out


@pytest.mark.parametrize("algorithm", ["rea", "nsga2"])
def test_guide_prob_zero_reproduces_the_unguided_search(algorithm):
    objectives = ("max:score", "min:cost") if algorithm == "nsga2" else ("max:score",)
    cfg = dict(algorithm=algorithm, objectives=objectives, population=6, max_evals=40, seed=2)
    plain = evolve(SPACE, Toy(), EvolutionConfig(**cfg))
    g = Guide()
    guided = evolve(SPACE, Toy(), EvolutionConfig(**cfg, guide="max:g", guide_prob=0.0), guide=g)
    assert _strip(guided.history) == _strip(plain.history)
    assert g.seen == [] and guided.state["guide_evals"] == 0


def test_guided_child_is_the_best_unqueried_neighbour_and_speeds_up_the_search():
    mask = SPACE.mask(remove={"edge_2_1": ["avg_pool_3x3"]})
    g = Guide()
    cfg = EvolutionConfig(objectives=("max:score",), population=5, max_evals=40, seed=0, guide="max:g",
                          guide_prob=1.0)
    res = evolve(SPACE, Toy(), cfg, mask=mask, guide=g)
    queried = set()
    for r in res.history:
        if r["index"] >= 5:
            assert r["origin"] == "mutation+guide"
            parent = SPACE.decode(res.history[r["parents"][0]]["arch"])
            neigh = _neighbours_by_hand(parent, mask)
            fresh = [a for a in neigh if SPACE.encode(a) not in queried] or neigh
            best = max(-np.abs(a - TARGET).sum() for a in fresh)
            assert -np.abs(SPACE.decode(r["arch"]) - TARGET).sum() == best
        queried.add(r["arch"])
    assert len(set(g.seen)) == len(g.seen) == res.state["guide_evals"]  # each neighbour scored once
    # greedy moves reach the optimum in a handful of queries; 40 unguided ones usually do not
    first = next(r["index"] for r in res.history if r["objectives"]["score"] == 0)
    assert first < 20
    plain = [next((r["index"] for r in evolve(SPACE, Toy(), EvolutionConfig(
        objectives=("max:score",), population=5, max_evals=40, seed=s), mask=mask).history
                   if r["objectives"]["score"] == 0), 40) for s in range(3)]
    assert first < min(plain)


def test_guided_search_killed_and_resumed_equals_uninterrupted_without_rescoring():
    cfg = EvolutionConfig(objectives=("max:score",), population=6, max_evals=30, seed=5, guide="max:g",
                          guide_prob=0.5)
    full = evolve(SPACE, Toy(), cfg, guide=Guide())
    assert {"mutation", "mutation+guide"} <= {r["origin"] for r in full.history}

    def log(rec):
        if rec["index"] == 17:
            raise Killed

    search = Evolution(SPACE, Toy(), cfg, log=log, guide=Guide())
    with pytest.raises(Killed):
        search.run()
    state = json.loads(json.dumps(search.state()))
    g = Guide()
    resumed = evolve(SPACE, Toy(), cfg, state=state, guide=g)
    assert _strip(resumed.history) == _strip(full.history)
    assert not set(g.seen) & set(state["guide_cache"])  # nothing scored before the kill is scored again
    assert resumed.state["guide_evals"] == full.state["guide_evals"]


def test_guide_errors():
    with pytest.raises(ValueError, match="random search has no mutation to guide"):
        EvolutionConfig(algorithm="random", guide="max:g")
    with pytest.raises(ValueError, match="guide 'g' must read 'max:<name>'"):
        EvolutionConfig(guide="g")
    with pytest.raises(ValueError, match=r"guide_prob must be in \[0, 1\]"):
        EvolutionConfig(guide="max:g", guide_prob=1.5)
    with pytest.raises(ValueError, match="give both or neither"):
        Evolution(SPACE, Toy(), EvolutionConfig(objectives=("max:score",), guide="max:g"))
    with pytest.raises(ValueError, match="give both or neither"):
        Evolution(SPACE, Toy(), EvolutionConfig(objectives=("max:score",)), guide=Guide())
    with pytest.raises(KeyError, match="unknown guide objective 'synflow': the guide evaluator returns g"):
        Evolution(SPACE, Toy(), EvolutionConfig(objectives=("max:score",), guide="max:synflow"), guide=Guide())


# ------------------------------------------------------------------ errors
def test_clear_errors():
    with pytest.raises(KeyError, match="valid names: .*composite.*hwcost.*supernet.*table.*train.*zero_shot"):
        make_evaluator("tabel", SPACE)
    with pytest.raises(KeyError, match="unknown objective 'acc'.*score, cost"):
        Evolution(SPACE, Toy(), EvolutionConfig(objectives=("max:acc",)))
    with pytest.raises(KeyError, match="unknown constraint 'latency'"):
        Evolution(SPACE, Toy(), EvolutionConfig(objectives=("max:score",), constraints=("latency <= 2",)))
    with pytest.raises(ValueError, match="max_evals must be >= 1"):
        EvolutionConfig(max_evals=0)
    with pytest.raises(ValueError, match="population 10 is larger than the budget of 5"):
        EvolutionConfig(max_evals=5)
    with pytest.raises(ValueError, match="no budget"):
        EvolutionConfig(max_evals=None)
    with pytest.raises(ValueError, match="unknown search algorithm 'ea'; valid: rea, nsga2, random"):
        EvolutionConfig(algorithm="ea")
    with pytest.raises(ValueError, match="'max:<name>' or 'min:<name>'"):
        EvolutionConfig(objectives=("accuracy",))
    with pytest.raises(ValueError, match="rea needs exactly one objective"):
        EvolutionConfig(objectives=("max:score", "min:cost"))
    with pytest.raises(ValueError, match="constraint 'cost < 3'"):
        EvolutionConfig(constraints=("cost < 3",))
    with pytest.raises(ValueError, match="outside the mask"):
        Evolution(SPACE, Toy(), EvolutionConfig(objectives=("max:score",)),
                  mask=SPACE.mask(remove={"edge_1_0": ["nor_conv_3x3"]}), init=[TARGET])
    with pytest.raises(ValueError, match="warm start has 3 architectures but the population is 2"):
        Evolution(SPACE, Toy(), EvolutionConfig(objectives=("max:score",), population=2, sample_size=2),
                  init=[TARGET] * 3)
    with pytest.raises(InfeasibleError, match=r"none of the 20 evaluated architectures satisfies cost <= -1") as e:
        evolve(SPACE, Toy(), EvolutionConfig(objectives=("max:score",), constraints=("cost <= -1",),
                                             max_evals=20))
    assert len(e.value.result.history) == 20 and e.value.result.best is None


# ------------------------------------------------------------------ evaluators
def test_table_evaluator_matches_rows_of_the_csv(data_dir, tmp_path):
    path = _nb201_csv(data_dir)
    if not os.path.isfile(path):
        pytest.skip(f"{path} not found")
    with open(path, newline="") as f:
        rows = [r for _, r in zip(range(400), csv.DictReader(f))][::97]
    ev = make_evaluator("table", SPACE, path=path, columns={"accuracy": "cifar10_valid_acc",
                                                            "pixel3_latency_ms": "pixel3_latency_ms"})
    out = ev(np.stack([SPACE.decode(r["arch_str"]) for r in rows]))
    np.testing.assert_array_equal(out["accuracy"], [float(r["cifar10_valid_acc"]) for r in rows])
    np.testing.assert_array_equal(out["pixel3_latency_ms"], [float(r["pixel3_latency_ms"]) for r in rows])
    assert len(ev.archs) == 15625 and ev.values["accuracy"].max() == 91.57

    small = tmp_path / "small.csv"
    small.write_text("arch_str,acc\n" + "".join(f"{r['arch_str']},{r['cifar10_valid_acc']}\n" for r in rows[:2]))
    ev = make_evaluator("table", SPACE, path=str(small), columns=["acc"])
    missing = SPACE.decode(rows[2]["arch_str"])
    with pytest.raises(KeyError, match=r"1 architecture\(s\) not in .*small.csv, e.g. " + re.escape(rows[2]["arch_str"])):
        ev(np.stack([SPACE.decode(rows[0]["arch_str"]), missing]))
    with pytest.raises(ValueError, match="no column 'accuracy'; columns: \\['arch_str', 'acc'\\]"):
        make_evaluator("table", SPACE, path=str(small), columns=["accuracy"])
    with pytest.raises(FileNotFoundError, match="HWNAS_DATA_DIR"):
        make_evaluator("table", SPACE, path=str(tmp_path / "nope.csv"), columns=["acc"])


def test_hwcost_evaluator_equals_hwmodel():
    archs = np.asarray(SPACE.sample(jax.random.key(0), 5))
    train = np.asarray(SPACE.sample(jax.random.key(1), 40))
    feats = np.asarray(network_features(SPACE.layers(train)))
    surrogate = fit(feats, np.asarray(analytic.latency_ms(ACCELERATORS["edgetpu"], SPACE.layers(train))))
    ev = make_evaluator("hwcost", SPACE, accelerators=("npu", "edgetpu"), surrogate=surrogate)
    out = ev(archs)
    assert set(out) == {"latency_ms:npu", "latency_ms:edgetpu", "latency_ms:surrogate", "params_bytes",
                        "peak_activation_bytes"}
    npu, tpu, t = ACCELERATORS["npu"], ACCELERATORS["edgetpu"], SPACE.layers(archs)  # batched tables
    np.testing.assert_allclose(out["latency_ms:npu"], analytic.latency_ms(npu, t), rtol=1e-6)
    np.testing.assert_allclose(out["latency_ms:edgetpu"], analytic.latency_ms(tpu, t), rtol=1e-6)
    np.testing.assert_allclose(out["latency_ms:surrogate"], predict(surrogate, t), rtol=1e-5)
    np.testing.assert_array_equal(out["params_bytes"], memory.param_bytes(npu, t))
    np.testing.assert_array_equal(out["peak_activation_bytes"], memory.peak_activation_bytes(t, npu))
    assert len(set(out["latency_ms:npu"])) > 1


def test_composite_and_zero_shot_evaluators():
    zs = ZeroShotEvaluator(SPACE, lambda a: a[:, 0] * 10.0)
    ev = CompositeEvaluator(SPACE, [zs, {"name": "hwcost", "accelerators": ["npu"], "memory": False}])
    assert ev.names == ("zero_shot", "latency_ms:npu")
    out = ev(np.array([[3, 0, 0, 0, 0, 0], [1, 2, 3, 4, 0, 1]]))
    assert out["zero_shot"].tolist() == [30.0, 10.0]
    with pytest.raises(ValueError, match=r"objective name\(s\) \['zero_shot'\] returned by two evaluators"):
        CompositeEvaluator(SPACE, [zs, zs])
    with pytest.raises(ValueError, match="choice 5 out of range for decision 'edge_1_0'"):
        zs(np.array([[5, 0, 0, 0, 0, 0]]))
    assert "table" in EVALUATORS and "train" in EVALUATORS


TINY = make_space("nb201", channels=4, cells_per_stage=1, input_size=8)


def _centred(key, x):
    """uint8 -> roughly zero-mean input (a random network then predicts more than one class)."""
    return (x.astype(jnp.float32) - 128.0) / 64.0


def _data(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n).astype(np.int32)
    x = (rng.normal(size=(n, 8, 8, 3)) * 30 + 100 + 12 * y[:, None, None, None]).clip(0, 255).astype(np.uint8)
    return x, y


def test_supernet_evaluator_one_compile_and_equals_the_derived_subnet():
    mesh = make_mesh(1)
    net = make_supernet(TINY, rngs=nnx.Rngs(0))
    # BN running statistics away from their init (mean 0, var 1), so eval mode really reads them.
    stats = nnx.state(net, nnx.BatchStat)
    nnx.update(net, jax.tree.map(lambda v: v * jax.random.uniform(jax.random.key(v.size), v.shape, minval=0.5,
                                                                  maxval=1.5), stats))
    archs = np.asarray(TINY.sample(jax.random.key(0), 3))
    # Labels = the first architecture's derived subnet's own predictions (eval mode): the supernet with
    # its one-hot architecture must agree on every example (accuracy exactly 1).
    x = np.random.default_rng(1).integers(0, 256, (40, 8, 8, 3)).astype(np.uint8)
    sub = net.derive(archs[0])
    sub.eval()
    y = np.asarray(jnp.argmax(sub(_centred(None, jnp.asarray(x))), -1), np.int32)
    val = DeviceData.put(x, y, mesh)
    ev = make_evaluator("supernet", TINY, net=net, data=val, prepare=_centred, batch_size=16, mesh=mesh)
    acc = ev(archs)["accuracy"]
    ev(archs[1:])
    assert ev.traces == 1
    assert acc[0] == 1.0 and acc[1:].max() < 1.0
    for a, got in zip(archs, acc):
        assert got == evaluate(net.derive(a), val, _centred, batch_size=16, mesh=mesh)


def test_supernet_evaluator_with_batch_statistics_equals_train_mode_subnets():
    mesh = make_mesh(1)
    net = make_supernet(TINY, rngs=nnx.Rngs(0))
    stats = jax.tree.map(np.asarray, nnx.state(net, nnx.BatchStat))  # far from the data's: ignored
    nnx.update(net, jax.tree.map(lambda v: v + 3.0, stats))
    archs = np.asarray(TINY.sample(jax.random.key(4), 4))
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (40, 8, 8, 3)).astype(np.uint8)
    y = rng.integers(0, 10, 40).astype(np.int32)
    val = DeviceData.put(x, y, mesh)
    ev = make_evaluator("supernet", TINY, net=net, data=val, prepare=_centred, batch_size=20, mesh=mesh, bn="batch")
    got = ev(archs)["accuracy"]
    for a, acc in zip(archs, got):  # by hand: each batch of 20 through the train-mode derived subnet
        sub = nnx.clone(net.derive(a))
        sub.train()
        hits = sum(int(np.sum(np.asarray(jnp.argmax(sub(_centred(None, jnp.asarray(x[i:i + 20]))), -1)) == y[i:i + 20]))
                   for i in (0, 20))
        assert acc == hits / 40
    assert ev.traces == 1
    after = jax.tree.leaves(nnx.state(net, nnx.BatchStat))  # the supernet's statistics are untouched
    assert all(np.array_equal(a, b + 3.0) for a, b in zip(after, jax.tree.leaves(stats)))
    with pytest.raises(ValueError, match="unknown bn"):
        make_evaluator("supernet", TINY, net=net, data=val, bn="recal")


def test_train_evaluator_one_compile_deterministic_and_learns():
    mesh = make_mesh(1)
    train, val = DeviceData.put(*_data(96, 0), mesh), DeviceData.put(*_data(48, 1), mesh)
    ev = make_evaluator("train", TINY, train=train, val=val, steps=12, batch_size=32, mesh=mesh)
    conv = TINY.decode("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|")
    empty = TINY.decode("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    out = ev(np.stack([conv, empty, conv]))
    assert ev.traces == 1
    assert out["accuracy"][0] == out["accuracy"][2] and out["train_loss"][0] == out["train_loss"][2]
    # The all-`none` cell outputs zeros: its network is a constant classifier of the batch-free head.
    assert out["train_loss"][0] < out["train_loss"][1]
    assert 0.0 <= out["accuracy"].min() and out["accuracy"].max() <= 1.0


def test_train_evaluator_with_a_task_classification_equals_the_default_and_segmentation_scores_miou():
    """`task=`: the Classification task trains and scores exactly as the default (same loss, same
    accuracy); a segmentation candidate is scored by the mIoU of its own held-out statistics (the
    all-background predictor's mIoU bounds a constant network), deterministically."""
    from supernet.tasks import Classification, Segmentation
    mesh = make_mesh(1)
    train, val = DeviceData.put(*_data(96, 0), mesh), DeviceData.put(*_data(48, 1), mesh)
    conv = TINY.decode("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|")
    kw = dict(train=train, val=val, steps=6, batch_size=32, mesh=mesh)
    a = make_evaluator("train", TINY, **kw)(conv[None])
    b = make_evaluator("train", TINY, task=Classification(), **kw)(conv[None])
    np.testing.assert_allclose(b["accuracy"], a["accuracy"])
    np.testing.assert_allclose(b["train_loss"], a["train_loss"], rtol=1e-6)

    space = make_space("mobile-curated", parallelism=4, input_size=16, stem_stride=1, blocks_per_stage=(1, 2),
                       base_widths=(8, 16), stage_strides=(1, 2), stem_width=8, num_classes=2,
                       head="segmentation", head_channels=8, decoder_stage=0)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (48, 16, 16, 3), dtype=np.uint8)
    y = (x[..., 0] > 128).astype(np.int32)  # a learnable mask: the red channel's threshold
    tr, va = DeviceData.put(x[:32], y[:32], mesh), DeviceData.put(x[32:], y[32:], mesh)
    task = Segmentation(2, max_zoom=1.0)
    ev = make_evaluator("train", space, train=tr, val=va, steps=30, batch_size=16, mesh=mesh, task=task,
                        prepare=lambda k, v: v.astype(jnp.float32) / 255.0, augment=lambda k, v: v.astype(jnp.float32) / 255.0)
    base = space.baseline_arch()
    out = ev(np.stack([base, base]))
    assert out["accuracy"][0] == out["accuracy"][1] and ev.traces == 1
    cm = np.zeros((2, 2))
    for c in (0, 1):  # a constant predictor of class c: mIoU = share of c / 2
        cm[:] = 0
        cm[:, c] = np.bincount(y[32:].reshape(-1), minlength=2)
        assert out["accuracy"][0] > np.mean(np.diag(cm) / (cm.sum(0) + cm.sum(1) - np.diag(cm)))
