"""Multishot search: regularized (aging) evolution, NSGA-II and random search over pluggable evaluators.

- `rea`: regularized evolution (Real, Aggarwal, Huang, Le, "Regularized Evolution for Image Classifier
  Architecture Search", AAAI 2019, Algorithm 1). A population of P architectures, first random (or
  warm-started from `init`, e.g. the top of a zero-shot ranking); each cycle draws S members at random
  (with replacement, as the paper's and NAS-Bench-201's code), mutates the best of them with
  `space.mutate` (one decision changed), evaluates the child, adds it and removes the *oldest* member.
  Defaults P = 10, S = 3 are NAS-Bench-201's REA settings (Dong & Yang, ICLR 2020; AutoDL-Projects
  `scripts-search/algos/R-EA.sh` and NATS-Bench `regularized_ea.py`: `--ea_population 10
  --ea_sample_size 3`).
- `nsga2`: NSGA-II (Deb, Pratap, Agarwal, Meyarivan, IEEE TEC 2002): generations of P offspring, each
  from two binary-tournament parents (better front, then larger crowding distance), uniform crossover
  with probability `crossover_prob`, then one mutation; the next population is the best P of parents
  and offspring by non-dominated sort and crowding distance (`supernet.pareto`).
- `random`: random search (the baseline of Li & Talwalkar, UAI 2019), every candidate sampled.

Constraints (`"latency_ms:npu <= 2.0"`, `"accuracy >= 0.5"`) follow Deb's constrained domination: a
feasible architecture beats an infeasible one, two infeasible ones compare by their total violation
(sum of `max(0, excess) / |bound|`), so infeasible candidates are never picked as parents while a
feasible one is in the tournament, and rank below every feasible one. If no evaluated architecture is
feasible the run ends with `InfeasibleError` (which carries the result).

Budget: `max_evals` queries and/or `max_seconds` of search time (checked between evaluator calls; a
time budget makes where a run stops depend on the machine). A query of an architecture evaluated
before is answered from a cache without calling the evaluator; with `revisit="count"` (default, the
NAS-Bench-201 protocol, whose REA counts every query) it still counts as a query and enters the
population; with `revisit="resample"` the proposal is redrawn (up to `max_resample` times) until it is
new, so the budget buys distinct architectures.

Guided mutation (`guide`): the zero-cost move proposal of Abdelfattah, Mehrotra, Dudziak, Lane,
"Zero-Cost Proxies for Lightweight NAS" (ICLR 2021, section 5): a second, cheap evaluator (e.g. a
zero-shot score, or a table of one) picks the mutation. With probability `guide_prob` (0.75 in the
reference code) the child is the parent's neighbour (one decision changed, inside the mask) that the
guide rates best; otherwise it is the ordinary random mutation, drawn with the same key as an
unguided run's (so `guide_prob = 0` reproduces the unguided search exactly). One deviation from the
reference: the greedy pick skips neighbours that were already queried (while any is left), since
re-querying a known cell spends budget and learns nothing. Guide evaluations are not queries: they
are cached, counted (`guide_evals` in the state) and stored in the state so that a resumed run
does not repeat them. NSGA-II uses the guide for the mutation after crossover; random search has
no mutation and takes no guide.

Determinism and resume: the key of query i is `fold_in(key(seed), i)` (redraws fold in the attempt
number), so a run is a function of the seed and the history. `Evolution.state()` is JSON
(config, mask, warm start, history, population, counters); `Evolution.from_state` continues it, and a
run killed at any query and resumed ends exactly where an uninterrupted run ends.

Example (NAS-Bench-201's table from the shared data folder):
    >>> import os
    >>> from supernet.evaluators import make_evaluator
    >>> from supernet.spaces import make_space
    >>> csv = os.path.join(os.environ.get("HWNAS_DATA_DIR", "../shared/data"), "nas-bench-201", "nb201_cifar10.csv")
    >>> space = make_space("nb201")
    >>> ev = make_evaluator("table", space, path=csv, columns={"accuracy": "cifar10_valid_acc"})
    >>> res = evolve(space, ev, EvolutionConfig(max_evals=300, seed=1))
    >>> res.best["objectives"]["accuracy"], len(res.history)  # the table's best cell
    (91.57, 300)
"""

from __future__ import annotations

import dataclasses
import functools
import re
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from supernet import pareto
from supernet.evaluators import Evaluator
from supernet.space import SearchSpace, SpaceMask

ALGORITHMS = ("rea", "nsga2", "random")
REVISIT = ("count", "resample")
#: Config fields that may change when a run is resumed (the budget can be extended).
_RESUMABLE_CHANGES = ("max_evals", "max_seconds")
_CONSTRAINT = re.compile(r"^\s*(.+?)\s*(<=|>=)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?inf)\s*$")

Record = dict[str, Any]
"""One evaluation: index, arch (string), objectives, seconds, cached, origin, parents, violation."""


class InfeasibleError(RuntimeError):
    """No evaluated architecture satisfies the constraints; `.result` holds the search's result."""

    def __init__(self, message: str, result: "EvolutionResult"):
        super().__init__(message)
        self.result = result


@dataclasses.dataclass(frozen=True)
class EvolutionConfig:
    """Settings of a multishot search (see module docstring).

    Attributes:
      algorithm: `rea`, `nsga2` or `random`.
      objectives: `"max:<name>"` / `"min:<name>"`, names returned by the evaluator; `rea` takes one,
        `nsga2` two or more (the first also picks `best`).
      constraints: `"<name> <= bound"` or `"<name> >= bound"`.
      population: P (the first P queries are the initial population; not used by `random`).
      sample_size: S, REA's tournament size.
      crossover_prob: NSGA-II's probability of uniform crossover before mutation.
      max_evals: query budget (None: only `max_seconds`).
      max_seconds: search-time budget (None: only `max_evals`).
      revisit: `count` or `resample` (module docstring).
      max_resample: redraws per query in `resample` mode before a repeat is accepted.
      seed: the run's PRNG seed.
      guide: `"max:<name>"` / `"min:<name>"` of the guide evaluator (module docstring); None: no guide.
      guide_prob: probability that a guided mutation takes the guide's best neighbour.
      batch: children per step of `rea` and samples per step of `random`, proposed together and
        evaluated together (in parallel on a pool of workers, `evaluators.PooledEvaluator`). REA's
        children of one step come from the same population, which ages by the whole batch after it
        (batched, synchronous REA); 1 is Real et al.'s sequential REA. NSGA-II's batch is its
        generation (P offspring). The history depends on `batch`, never on where it ran.
    """

    algorithm: str = "rea"
    objectives: tuple[str, ...] = ("max:accuracy",)
    constraints: tuple[str, ...] = ()
    population: int = 10
    sample_size: int = 3
    crossover_prob: float = 0.9
    max_evals: int | None = 300
    max_seconds: float | None = None
    revisit: str = "count"
    max_resample: int = 100
    seed: int = 0
    guide: str | None = None
    guide_prob: float = 0.75
    batch: int = 1

    def __post_init__(self):
        object.__setattr__(self, "objectives", tuple(self.objectives))
        object.__setattr__(self, "constraints", tuple(self.constraints))
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1 (children per step), got {self.batch}")
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"unknown search algorithm {self.algorithm!r}; valid: {', '.join(ALGORITHMS)}")
        if self.revisit not in REVISIT:
            raise ValueError(f"unknown revisit policy {self.revisit!r}; valid: {', '.join(REVISIT)}")
        objs = self.parsed_objectives()
        need = {"rea": (1, 1), "nsga2": (2, None), "random": (1, None)}[self.algorithm]
        if len(objs) < need[0] or (need[1] and len(objs) > need[1]):
            want = "exactly one objective" if need[1] else f"at least {need[0]} objectives"
            raise ValueError(f"{self.algorithm} needs {want}, got {list(self.objectives)} (multi-objective: "
                             "algorithm='nsga2'; a bound on a second objective: constraints)")
        self.parsed_constraints()
        if self.max_evals is None and self.max_seconds is None:
            raise ValueError("no budget: set max_evals and/or max_seconds")
        if self.max_evals is not None and self.max_evals < 1:
            raise ValueError(f"max_evals must be >= 1, got {self.max_evals}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ValueError(f"max_seconds must be > 0, got {self.max_seconds}")
        if self.population < (2 if self.algorithm == "nsga2" else 1):
            raise ValueError(f"population must be >= {2 if self.algorithm == 'nsga2' else 1}, got {self.population}")
        if self.algorithm != "random" and self.max_evals is not None and self.population > self.max_evals:
            raise ValueError(f"population {self.population} is larger than the budget of {self.max_evals} "
                             f"evaluations (the initial population alone needs {self.population}); raise "
                             "max_evals or lower population")
        if self.algorithm == "rea" and not 1 <= self.sample_size <= self.population:
            raise ValueError(f"sample_size must be in 1..population ({self.population}), got {self.sample_size}")
        if not 0 <= self.crossover_prob <= 1:
            raise ValueError(f"crossover_prob must be in [0, 1], got {self.crossover_prob}")
        if self.guide is not None:
            if self.algorithm == "random":
                raise ValueError("random search has no mutation to guide; set guide=None or use rea / nsga2")
            self.parsed_guide()
        if not 0 <= self.guide_prob <= 1:
            raise ValueError(f"guide_prob must be in [0, 1], got {self.guide_prob}")

    def parsed_guide(self) -> tuple[str, str] | None:
        """`(name, "max" | "min")` of the guide, or None."""
        if self.guide is None:
            return None
        direction, sep, name = str(self.guide).partition(":")
        if not sep or direction not in pareto.DIRECTIONS or not name:
            raise ValueError(f"guide {self.guide!r} must read 'max:<name>' or 'min:<name>'")
        return name, direction

    def parsed_objectives(self) -> list[tuple[str, str]]:
        """`[(name, "max" | "min")]`."""
        out = []
        for o in self.objectives:
            direction, sep, name = str(o).partition(":")
            if not sep or direction not in pareto.DIRECTIONS or not name:
                raise ValueError(f"objective {o!r} must read 'max:<name>' or 'min:<name>'")
            out.append((name, direction))
        if len({n for n, _ in out}) != len(out):
            raise ValueError(f"an objective appears twice in {list(self.objectives)}")
        return out

    def parsed_constraints(self) -> list[tuple[str, str, float]]:
        """`[(name, "<=" | ">=", bound)]`."""
        out = []
        for c in self.constraints:
            m = _CONSTRAINT.match(str(c))
            if not m:
                raise ValueError(f"constraint {c!r} must read '<name> <= <number>' or '<name> >= <number>'")
            out.append((m.group(1), m.group(2), float(m.group(3))))
        return out

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "EvolutionConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - fields
        if unknown:
            raise ValueError(f"unknown EvolutionConfig field(s) {sorted(unknown)}; valid: {sorted(fields)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


@dataclasses.dataclass
class EvolutionResult:
    """What a search returns.

    Attributes:
      best: the best feasible record by the first objective (ties: the earliest); None if none is feasible.
      best_arch: its architecture (`int32 [D]`).
      front: the feasible non-dominated records over all objectives, one per architecture, sorted by
        the first objective (best first); for one objective, the best architecture(s).
      history: every query in order (records, see `Record`).
      state: the JSON state (`Evolution.from_state` resumes or extends the run).
    """

    best: Record | None
    best_arch: np.ndarray | None
    front: list[Record]
    history: list[Record]
    state: dict[str, Any]

    def trajectory(self, objective: str | None = None) -> np.ndarray:
        """Best feasible value of an objective (default: the first) after each query (NaN before any)."""
        cfg = EvolutionConfig.from_dict(self.state["config"])
        objs = dict(cfg.parsed_objectives())
        name = objective or cfg.parsed_objectives()[0][0]
        sign = -1.0 if objs.get(name, "max") == "max" else 1.0
        vals = np.asarray([sign * r["objectives"][name] if r["violation"] == 0 else np.inf for r in self.history])
        best = np.minimum.accumulate(vals) * sign
        return np.where(np.isinf(best), np.nan, best)


@functools.lru_cache(maxsize=64)
def _proposers(space: SearchSpace, mask: SpaceMask) -> dict[str, Callable]:
    """Jitted proposal functions for a space and mask (compiled once per population shape)."""

    def tournament(key, merit, size):
        idx = jax.random.randint(key, (size,), 0, merit.shape[0])  # with replacement (Real et al.)
        return idx[jnp.argmax(merit[idx])]  # ties: the first drawn

    # `*_select` return the architecture before mutation, the parents and the mutation's key
    def rea_select(key, pop, merit, sample_size):
        k_sel, k_mut = jax.random.split(key)
        p = tournament(k_sel, merit, sample_size)
        return pop[p], p[None], k_mut

    def nsga_select(key, pop, merit, crossover_prob):
        ka, kb, kc, ku, km = jax.random.split(key, 5)
        a, b = tournament(ka, merit, 2), tournament(kb, merit, 2)  # binary tournaments
        take_b = jax.random.bernoulli(kc, crossover_prob) & jax.random.bernoulli(ku, 0.5, (pop.shape[1],))
        return jnp.where(take_b, pop[b], pop[a]), jnp.stack([a, b]), km

    def mutated(select):
        def child(*args):
            base, parents, k = select(*args)
            return space.mutate(k, base, mask), parents
        return child

    def guided_coin(key):  # the guided mutation's own draw, independent of the mutation's
        return jax.random.uniform(jax.random.fold_in(key, 1))

    return {"sample": jax.jit(lambda k: space.sample(k, mask=mask)),
            "rea": jax.jit(mutated(rea_select), static_argnums=3), "nsga2": jax.jit(mutated(nsga_select)),
            "rea_select": jax.jit(rea_select, static_argnums=3), "nsga2_select": jax.jit(nsga_select),
            "mutate": jax.jit(lambda k, a: space.mutate(k, a, mask)), "coin": jax.jit(guided_coin)}


def _dense_rank(keys: Sequence[np.ndarray]) -> np.ndarray:
    """Merit (higher is better) from lexicographic keys, most significant first; equal keys tie."""
    k = np.stack([np.nan_to_num(np.asarray(x, np.float64), nan=-np.inf) for x in keys], axis=1)
    _, inv = np.unique(k, axis=0, return_inverse=True)
    return inv.reshape(-1).astype(np.float32)


class Evolution:
    """A resumable multishot search (see module docstring); `run()` returns an `EvolutionResult`.

    Example:
        >>> import json
        >>> from supernet.evaluators import ZeroShotEvaluator
        >>> from supernet.spaces import make_space
        >>> space = make_space("nb201")
        >>> evaluator = ZeroShotEvaluator(space, lambda a: a.sum(1) * 1.0, name="accuracy")  # any scorer
        >>> search = Evolution(space, evaluator, EvolutionConfig(max_evals=50))
        >>> best = search.run().best["objectives"]["accuracy"]
        >>> state = json.loads(json.dumps(search.state()))  # saved as JSON, resumed later
        >>> again = Evolution.from_state(space, evaluator, state, EvolutionConfig(max_evals=50))
        >>> again.run().best["objectives"]["accuracy"] == best, len(again.history)
        (True, 50)
    """

    def __init__(self, space: SearchSpace, evaluator: Evaluator, cfg: EvolutionConfig = EvolutionConfig(),
                 mask: SpaceMask | None = None, init: Sequence[Any] | None = None,
                 log: Callable[[Record], None] | None = None, guide: Evaluator | None = None):
        """Validates the setup (names, mask, warm start, guide) before any evaluation.

        Args:
          space: the search space.
          evaluator: an `Evaluator` (its `names` must include every objective and constraint).
          cfg: the search settings.
          mask: restricts sampling and mutation (and must contain the warm start).
          init: warm start: architectures (strings or int arrays) that fill the initial population in
            order before random samples; at most `cfg.population`.
          log: called with every record as it is committed.
          guide: the evaluator of guided mutation (needed exactly when `cfg.guide` is set).
        """
        self.space, self.evaluator, self.cfg, self.log = space, evaluator, cfg, log
        self.mask = space.check_mask(mask)
        self.objectives = cfg.parsed_objectives()
        self.constraints = cfg.parsed_constraints()
        for what, ev in (("evaluator", evaluator), ("guide", guide)):
            if ev is not None and not isinstance(ev, Evaluator):  # `names` is what makes objectives checkable
                raise TypeError(f"the {what} must be a supernet.evaluators.Evaluator (it declares the names of "
                                f"its objectives), got {type(ev).__name__}")
        names = evaluator.names
        for what, n in [("objective", o) for o, _ in self.objectives] + [("constraint", c[0]) for c in self.constraints]:
            if n not in names:
                raise KeyError(f"unknown {what} {n!r}: the evaluator returns {', '.join(names) or 'nothing'}")
        self.guide, self.guide_objective = guide, cfg.parsed_guide()
        if (guide is None) != (self.guide_objective is None):
            raise ValueError("cfg.guide names the guide's objective and the guide argument is its evaluator: "
                             f"give both or neither (cfg.guide={cfg.guide!r}, guide={type(guide).__name__})")
        if guide is not None and self.guide_objective[0] not in guide.names:
            raise KeyError(f"unknown guide objective {self.guide_objective[0]!r}: the guide evaluator returns "
                           f"{', '.join(guide.names) or 'nothing'}")
        self.init = [space.decode(a) if isinstance(a, str) else space.validate(a) for a in (init or [])]
        if self.init and cfg.algorithm == "random":
            raise ValueError("random search takes no warm start (init); use rea or nsga2")
        if len(self.init) > cfg.population:
            raise ValueError(f"the warm start has {len(self.init)} architectures but the population is "
                             f"{cfg.population}; pass at most population (e.g. init[:{cfg.population}]) "
                             "or raise population")
        for a in self.init:
            if not self.mask.allowed[np.arange(len(a)), a].all():
                raise ValueError(f"warm-start architecture {space.encode(a)} is outside the mask")
        self.history: list[Record] = []
        self.population: list[int] = []  # history indices, oldest first (REA) / current generation (NSGA-II)
        self.generation_start: int | None = None
        self.seconds = 0.0
        self._cache: dict[str, dict[str, float]] = {}
        self._guide_cache: dict[str, float] = {}  # arch -> guide value, signed so that larger is better
        self._key = jax.random.key(cfg.seed)
        self._ops = _proposers(space, self.mask)

    @property
    def guide_evals(self) -> int:
        """Distinct architectures the guide has scored (they are not queries)."""
        return len(self._guide_cache)

    # ----------------------------------------------------------------- state
    def state(self) -> dict[str, Any]:
        """JSON-serialisable state: everything `from_state` needs to continue bit for bit."""
        state = {"version": 1, "space": self.space.name, "config": self.cfg.to_dict(),
                 "mask": self.mask.allowed.tolist(), "init": [self.space.encode(a) for a in self.init],
                 "history": [dict(r) for r in self.history], "population": list(self.population),
                 "generation_start": self.generation_start, "seconds": self.seconds}
        if self.guide is not None:  # JSON has no infinities: the guide's -inf (its "worst") is stored as None
            state["guide_cache"] = {k: (None if np.isneginf(v) else v) for k, v in self._guide_cache.items()}
            state["guide_evals"] = self.guide_evals
        return state

    @classmethod
    def from_state(cls, space: SearchSpace, evaluator: Evaluator, state: Mapping[str, Any],
                   cfg: EvolutionConfig | None = None, log: Callable[[Record], None] | None = None,
                   guide: Evaluator | None = None) -> "Evolution":
        """Continues a run from `state()` (e.g. after a kill); `cfg` may only change the budget."""
        if state.get("version") != 1 or state.get("space") != space.name:
            raise ValueError(f"state of space {state.get('space')!r} (version {state.get('version')}) cannot "
                             f"resume a search of space {space.name!r}")
        saved = EvolutionConfig.from_dict(state["config"])
        if cfg is not None:
            diff = [f.name for f in dataclasses.fields(cfg) if f.name not in _RESUMABLE_CHANGES
                    and getattr(cfg, f.name) != getattr(saved, f.name)]
            if diff:
                raise ValueError(f"cannot resume with a different {', '.join(diff)} (only "
                                 f"{', '.join(_RESUMABLE_CHANGES)} may change); saved: "
                                 f"{ {k: getattr(saved, k) for k in diff} }")
        self = cls(space, evaluator, cfg or saved, SpaceMask(np.asarray(state["mask"], bool)),
                   state["init"], log, guide)
        self.history = [dict(r) for r in state["history"]]
        self.population = [int(i) for i in state["population"]]
        g = state["generation_start"]
        self.generation_start = None if g is None else int(g)
        self.seconds = float(state["seconds"])
        for r in self.history:
            self._cache.setdefault(r["arch"], dict(r["objectives"]))
        self._guide_cache = {k: (-np.inf if v is None else float(v)) for k, v in state.get("guide_cache", {}).items()}
        return self

    # ----------------------------------------------------------------- fitness
    def _violation(self, obj: Mapping[str, float]) -> float:
        v = 0.0
        for name, op, bound in self.constraints:
            x = obj[name]
            excess = (x - bound) if op == "<=" else (bound - x)
            v += np.inf if np.isnan(x) else max(0.0, excess) / max(abs(bound), 1e-12)
        return float(v)

    def _matrix(self, idx: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Objectives `[n, M]` (signed so larger is better) and violations `[n]` of history records."""
        recs = [self.history[i] for i in idx]
        f = np.asarray([[r["objectives"][n] * (1.0 if d == "max" else -1.0) for n, d in self.objectives]
                        for r in recs], np.float64).reshape(len(recs), len(self.objectives))
        return np.nan_to_num(f, nan=-np.inf), np.asarray([r["violation"] for r in recs], np.float64)

    def _fronts(self, idx: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Constrained non-dominated front (0 best) and crowding distance of history records."""
        f, viol = self._matrix(idx)
        rank = np.zeros(len(idx), np.int64)
        ok = viol == 0
        maxdir = ("max",) * f.shape[1]
        if ok.any():
            rank[ok] = pareto.nondominated_sort(f[ok], maxdir)
        if (~ok).any():  # Deb's constraint handling: infeasible after every feasible front, by violation
            _, inv = np.unique(viol[~ok], return_inverse=True)
            rank[~ok] = (rank[ok].max() + 1 if ok.any() else 0) + inv.reshape(-1)
        crowd = np.zeros(len(idx))
        for r in np.unique(rank):
            sel = rank == r
            crowd[sel] = pareto.crowding_distance(f[sel])
        return rank, crowd

    def _merit(self) -> np.ndarray:
        """Selection merit of the population members (higher is better)."""
        if self.cfg.algorithm == "rea":
            f, viol = self._matrix(self.population)
            return _dense_rank([(viol == 0).astype(float), -viol, f[:, 0]])
        rank, crowd = self._fronts(self.population)
        return _dense_rank([-rank.astype(float), crowd])

    # ----------------------------------------------------------------- proposals
    def _neighbours(self, arch: np.ndarray) -> np.ndarray:
        """Every architecture one allowed change away from `arch`, `[K, D]` (decision-major order)."""
        d, c = np.nonzero(self.mask.allowed)
        keep = c != arch[d]
        out = np.repeat(arch[None], int(keep.sum()), axis=0)
        out[np.arange(len(out)), d[keep]] = c[keep]
        return out

    def _guide_values(self, archs: np.ndarray, strs: Sequence[str]) -> np.ndarray:
        """Guide values (larger is better; NaN as -inf) of architectures (`strs`: their encodings),
        evaluated once each."""
        new = [j for j, s in enumerate(strs) if s not in self._guide_cache]
        if new:
            name, direction = self.guide_objective
            v = np.asarray(self.guide(archs[new])[name], np.float64).reshape(-1)
            v = np.nan_to_num(v if direction == "max" else -v, nan=-np.inf, posinf=np.inf, neginf=-np.inf)
            for j, x in zip(new, v):
                self._guide_cache[strs[j]] = float(x)
        return np.asarray([self._guide_cache[s] for s in strs])

    def _guided(self, base: np.ndarray, key: jax.Array, taken: set[str]) -> tuple[np.ndarray, bool]:
        """Guided mutation of `base` (module docstring): `(child, whether the guide chose it)`."""
        neigh = self._neighbours(base)
        if len(neigh) == 0 or float(self._ops["coin"](key)) >= self.cfg.guide_prob:
            return np.asarray(self._ops["mutate"](key, base)), False
        strs = [self.space.encode(a) for a in neigh]
        fresh = [j for j, s in enumerate(strs) if s not in self._cache and s not in taken] or list(range(len(neigh)))
        vals = self._guide_values(neigh[fresh], [strs[j] for j in fresh])
        return neigh[fresh[int(np.argmax(vals))]], True  # ties: the first in decision order

    def _candidate(self, i: int, key: jax.Array, pop: np.ndarray | None, merit: np.ndarray | None,
                   taken: set[str]):
        cfg = self.cfg
        if i < len(self.init):
            return self.init[i], "init", []
        if i < cfg.population or cfg.algorithm == "random":
            return np.asarray(self._ops["sample"](key)), "random", []
        args = (cfg.sample_size,) if cfg.algorithm == "rea" else (jnp.float32(cfg.crossover_prob),)
        origin = "mutation" if cfg.algorithm == "rea" else "offspring"
        if self.guide is None:
            child, p = self._ops[cfg.algorithm](key, pop, merit, *args)
        else:
            base, p, k = self._ops[cfg.algorithm + "_select"](key, pop, merit, *args)
            child, chosen = self._guided(np.asarray(base), k, taken)
            origin += "+guide" if chosen else ""
        return np.asarray(child), origin, [self.population[int(j)] for j in np.asarray(p)]

    def _propose(self, i: int, taken: set[str], pop, merit) -> tuple[np.ndarray, str, list[int]]:
        key = jax.random.fold_in(self._key, i)
        tries = self.cfg.max_resample + 1 if self.cfg.revisit == "resample" else 1
        for r in range(tries):
            arch, origin, parents = self._candidate(i, key if r == 0 else jax.random.fold_in(key, r), pop, merit,
                                                    taken)
            s = self.space.encode(arch)
            if origin == "init" or (s not in self._cache and s not in taken):
                break
        return arch, origin, parents

    def _batch_size(self) -> int:
        cfg, i = self.cfg, len(self.history)
        left = np.inf if cfg.max_evals is None else cfg.max_evals - i
        if left <= 0 or (cfg.max_seconds is not None and self.seconds >= cfg.max_seconds):
            return 0
        if cfg.algorithm == "random":
            n = cfg.batch - i % cfg.batch
        elif i < cfg.population:
            n = cfg.population - i
        elif cfg.algorithm == "rea":  # the rest of the batch (a resumed search may stop inside one)
            n = cfg.batch - (i - cfg.population) % cfg.batch
        else:
            n = self.generation_start + cfg.population - i
        return int(min(n, left))

    # ----------------------------------------------------------------- the loop
    def _commit(self, rec: Record) -> None:
        cfg, i = self.cfg, rec["index"]
        self.history.append(rec)
        self._cache.setdefault(rec["arch"], dict(rec["objectives"]))
        if cfg.algorithm == "random":
            pass
        elif i < cfg.population:
            self.population.append(i)
            if i == cfg.population - 1 and cfg.algorithm == "nsga2":
                self.generation_start = cfg.population
        elif cfg.algorithm == "rea":  # aging: after each batch its children join, as many of the oldest leave
            if (i - cfg.population + 1) % cfg.batch == 0:
                self.population = self.population[cfg.batch:] + list(range(i + 1 - cfg.batch, i + 1))
        elif i == self.generation_start + cfg.population - 1:  # NSGA-II environmental selection
            pool = self.population + list(range(self.generation_start, i + 1))
            rank, crowd = self._fronts(pool)
            order = np.lexsort((np.asarray(pool), -crowd, rank))  # front, then crowding, then age
            self.population = sorted(pool[j] for j in order[: cfg.population])
            self.generation_start = i + 1
        if self.log is not None:
            self.log(rec)

    def run(self) -> EvolutionResult:
        """Runs until the budget is spent; returns the result (raises InfeasibleError if none feasible)."""
        t0, s0 = time.perf_counter(), self.seconds
        while (n := self._batch_size()) > 0:
            i0 = len(self.history)
            pop = merit = None
            if i0 >= self.cfg.population and self.cfg.algorithm != "random":
                pop = jnp.asarray(np.stack([self.space.decode(self.history[j]["arch"]) for j in self.population]))
                merit = jnp.asarray(self._merit())
            cands, taken = [], set()
            for i in range(i0, i0 + n):
                arch, origin, parents = self._propose(i, taken, pop, merit)
                s = self.space.encode(arch)
                cands.append((arch, s, origin, parents, s in self._cache or s in taken))
                taken.add(s)
            new = [c for c in cands if not c[4]]
            t = time.perf_counter()
            out = self.evaluator(np.stack([c[0] for c in new])) if new else {}
            per = (time.perf_counter() - t) / max(len(new), 1)
            values = {c[1]: {k: float(v[j]) for k, v in out.items()} for j, c in enumerate(new)}
            for k, (arch, s, origin, parents, cached) in enumerate(cands):
                obj = dict(self._cache[s]) if cached else values[s]
                self.seconds = s0 + time.perf_counter() - t0
                self._commit({"index": i0 + k, "arch": s, "objectives": obj, "seconds": 0.0 if cached else per,
                              "cached": cached, "origin": origin, "parents": parents,
                              "violation": self._violation(obj)})
        self.seconds = s0 + time.perf_counter() - t0
        return self.result()

    def result(self) -> EvolutionResult:
        """The result of the history so far (see `EvolutionResult`)."""
        feasible = [r["index"] for r in self.history if r["violation"] == 0]
        seen, uniq = set(), []
        for i in feasible:
            if self.history[i]["arch"] not in seen:
                seen.add(self.history[i]["arch"])
                uniq.append(i)
        front: list[Record] = []
        best = None
        if uniq:
            f, _ = self._matrix(uniq)
            nd = pareto.non_dominated(f, ("max",) * f.shape[1])
            keep = [uniq[j] for j in np.flatnonzero(nd)]
            keep.sort(key=lambda j: (-self._matrix([j])[0][0, 0], j))
            front = [self.history[j] for j in keep]
            best = front[0]
        res = EvolutionResult(best, None if best is None else self.space.decode(best["arch"]), front,
                              self.history, self.state())
        if best is None and self.constraints and self.history:
            closest = min(self.history, key=lambda r: r["violation"])
            raise InfeasibleError(
                f"none of the {len(self.history)} evaluated architectures satisfies "
                f"{' and '.join(self.cfg.constraints)}; the closest ({closest['arch']}) has "
                f"{ {c[0]: closest['objectives'][c[0]] for c in self.constraints} }; relax the constraint "
                "or check its units", res)
        return res


def evolve(space: SearchSpace, evaluator: Evaluator, cfg: EvolutionConfig | None = None,
           mask: SpaceMask | None = None, init: Sequence[Any] | None = None,
           log: Callable[[Record], None] | None = None, state: Mapping[str, Any] | None = None,
           guide: Evaluator | None = None) -> EvolutionResult:
    """Runs a multishot search (or resumes `state`, whose config, mask and warm start it keeps).

    Args:
      space, evaluator, mask, init, log, guide: as `Evolution`.
      cfg: the settings (default `EvolutionConfig()`, or the state's when resuming).
      state: a previous `Evolution.state()` / `EvolutionResult.state` to continue; `cfg` may then only
        change `max_evals` / `max_seconds` (e.g. extend the budget); mask and init come from the state.

    Returns:
      The `EvolutionResult`: best architecture, Pareto front, history and the final state.

    Example:
        >>> from supernet.evaluators import ZeroShotEvaluator
        >>> from supernet.spaces import make_space
        >>> space = make_space("nb201")
        >>> ev = ZeroShotEvaluator(space, lambda a: {"accuracy": a.sum(1) * 1.0, "cost": a.sum(1) * 2.0},
        ...                        name=("accuracy", "cost"))  # two objectives in conflict
        >>> res = evolve(space, ev, EvolutionConfig(algorithm="nsga2", population=20, max_evals=200,
        ...              objectives=("max:accuracy", "min:cost")))
        >>> len(res.front) > 1, len(res.history)
        (True, 200)
    """
    if state is not None:
        if mask is not None or init is not None:
            raise ValueError("a resumed search keeps the mask and warm start of its state; pass neither")
        return Evolution.from_state(space, evaluator, state, cfg, log, guide).run()
    return Evolution(space, evaluator, cfg or EvolutionConfig(), mask, init, log, guide).run()
