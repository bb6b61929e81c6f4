"""The zero-shot and multishot pipeline stages (`zero_shot`, `evolve`); see `experiments.pipeline`.

- `zero_shot`: scores `zero_shot.sample` architectures of the (masked) space with the configured
  trainability scores on one batch of training images (rank-averaged when several), prunes the space
  to a `SpaceMask` for the stages after it (`zero_shot.prune`), and hands on the best-scored
  architectures as a ranking (warm start of `evolve`). Alone it is a training-free search: its
  architecture is the best-scored sample inside the pruned space (and inside the latency target
  when the config has one, on the same cost model as the other stages).
- `evolve`: multishot search (`supernet.multishot`) with the evaluator named by `evolve.evaluator`
  (`table`: the config's lookup table, `supernet`: inherited weights of this run's single-shot
  supernet, `train`: a short training from scratch, `zero_shot`: the configured scores), the
  latency target as a constraint, the space pruned by an earlier `zero_shot`, and the population
  warm-started from the ranking an earlier stage handed on; `evolve.guide = "zero_shot"` lets the
  configured zero-shot scores pick the mutations (guided mutation, `supernet.multishot`). Every
  evaluation is logged to `metrics.jsonl`; the search state is saved to `stages/evolve.state.json` so a killed run resumes
  where it stopped and ends where an uninterrupted one ends. On a parallel executor (`experiments.run
  --executor ray`) the `train` and `supernet` evaluators split each generation over a pool of
  workers that each built the same evaluator (`worker_evaluator`): the history is the serial one.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any, Callable

import jax
import numpy as np
from flax import nnx

from hwmodel.registry import Registry
from experiments import data as D
from experiments.config import ConfigError
from experiments.context import STAGES, Context, cost_config, data_path, eval_input, fitted_surrogate, splits, task_of
from experiments.train_stages import image_augment, trained_supernet
from experiments.workdir import Workdir, write_json
from supernet.model import make_supernet
from supernet.spaces import make_space


def latency_target(ctx: Context) -> tuple[dict[str, Any], str] | None:
    """`(hwcost evaluator kwargs, objective name)` of the configured latency model, or None without a target."""
    cost = cost_config(ctx.cfg, ctx.space)
    if not cost.uses_latency:
        return None
    if cost.model == "surrogate":
        return {"accelerators": (), "surrogate": fitted_surrogate(ctx), "memory": False}, "latency_ms:surrogate"
    return {"accelerators": (cost.accelerator,), "memory": False}, f"latency_ms:{cost.accelerator}"


def _score_batch(ctx: Context, size: int) -> tuple[jax.Array, jax.Array]:
    d = ctx.data()
    if size > len(d.x_train):
        raise ConfigError(f"zero_shot.batch_size {size} exceeds the {len(d.x_train)} training images")
    pick = np.random.default_rng(ctx.cfg.seed).choice(len(d.x_train), size, replace=False)
    return D.normalize(jax.numpy.asarray(d.x_train[pick])), jax.numpy.asarray(d.y_train[pick])


def _zero_shot_inputs(ctx: Context) -> tuple[list[str], Any, tuple[jax.Array, jax.Array], jax.Array]:
    """The configured score names (checked), the scored supernet, the image batch and the key."""
    import zero_shot as Z
    z = ctx.cfg.zero_shot
    try:
        names = list(Z.check_names(tuple(z.proxies)))
    except (KeyError, ValueError) as e:
        raise ConfigError(f"zero_shot.proxies: {e.args[0]}") from None
    batch = _score_batch(ctx, z.batch_size)
    if z.init not in Z.INITS:
        raise ConfigError(f"unknown zero_shot.init {z.init!r}; valid: {', '.join(Z.INITS)}")
    key = jax.random.key(ctx.cfg.seed)
    net = Z.initialise(make_supernet(ctx.space, rngs=nnx.Rngs(ctx.cfg.seed), **dict(z.supernet)), z.init,
                       jax.random.fold_in(key, 1))
    return names, net, batch, key


def _raw_scorer(inputs: tuple):
    """`archs [N, D] -> {score name: [N]}`, the configured scores on `_zero_shot_inputs`."""
    import zero_shot as Z
    names, net, batch, key = inputs

    def raw(archs: np.ndarray) -> dict[str, np.ndarray]:
        s = Z.score_archs(net, np.asarray(archs), batch, key, proxies=tuple(names))
        return {k: np.asarray(v, float) for k, v in s.items()}

    return raw


def _combine(raw: dict[str, np.ndarray], names: list[str], reference: dict | None = None) -> np.ndarray:
    """One score as it is; several rank-averaged (within `raw`, or against `reference`)."""
    import zero_shot as Z
    if len(names) == 1:
        return raw[names[0]]
    return np.asarray(Z.rank_ensemble(raw, names, reference=reference), float)


def _sample_key(ctx: Context) -> jax.Array:
    return jax.random.fold_in(jax.random.key(ctx.cfg.seed), 11)


def _distinct(archs: np.ndarray) -> np.ndarray:
    return archs[np.sort(np.unique(archs, axis=0, return_index=True)[1])]  # in sampled order


def zero_shot_scorer(ctx: Context, inputs: tuple | None = None):
    """`archs [N, D] -> scores [N]` (higher is better) for evaluators (`evolve`): one configured score
    as it is; several rank-averaged, each ranked among the scores of a fixed reference sample (the
    `zero_shot.sample` cells that a `zero_shot` stage draws from the whole space), so that a cell's
    value does not depend on the batch it is scored in (a batch of one would otherwise always rank
    0). The reference is scored once per process (shared by the evaluator and the guide), or taken
    from this run's `zero_shot` stage when it scored the same cells. `inputs`: `_zero_shot_inputs(ctx)`
    when the caller already has them."""
    inputs = inputs or _zero_shot_inputs(ctx)
    names, raw = inputs[0], _raw_scorer(inputs)
    reference: dict[str, np.ndarray] = {}

    def score(archs: np.ndarray) -> np.ndarray:
        s = raw(archs)
        if len(names) > 1 and not reference:
            ref = _distinct(np.asarray(ctx.space.sample(_sample_key(ctx), ctx.cfg.zero_shot.sample)))
            done = ctx.zero_shot_scores
            if done is None or not np.array_equal(done[0], ref):
                done = ctx.zero_shot_scores = (ref, raw(ref))  # shared with the run's other scorers
            reference.update(done[1])
        return _combine(s, names, reference)

    return score


@STAGES.register("zero_shot")
def stage_zero_shot(ctx: Context) -> dict[str, Any]:
    from zero_shot.prune import prune_marginal, prune_progressive, weight_scorer
    z, space = ctx.cfg.zero_shot, ctx.space
    if z.sample < 1:
        raise ConfigError(f"zero_shot.sample must be >= 1, got {z.sample}")
    if z.method not in ("marginal", "progressive"):
        raise ConfigError(f"unknown zero_shot.method {z.method!r}; valid: marginal, progressive")
    t0 = time.perf_counter()
    inputs = _zero_shot_inputs(ctx)
    if z.method == "progressive":  # prune on the supernet first, then rank a sample inside the mask
        names, net, batch, key = inputs
        mask = prune_progressive(space, weight_scorer(net, batch, key, names), target_fraction=z.target_fraction,
                                 mask=ctx.mask, log=lambda r: ctx.wd.log({"stage": "zero_shot", **r}))
    archs = _distinct(np.asarray(space.sample(_sample_key(ctx), z.sample,
                                              mask=mask if z.method == "progressive" else ctx.mask)))
    try:
        raw = _raw_scorer(inputs)(archs)
    except ValueError as e:  # a score this network cannot give (e.g. naswot's activation taps: nb201 only)
        raise ConfigError(f"zero_shot.proxies: {e.args[0] if e.args else e}") from None
    ctx.zero_shot_scores = (archs, raw)
    scores = _combine(raw, inputs[0])  # several scores: rank-averaged within the sample
    bad = np.isnan(scores) | np.isposinf(scores)  # -inf ranks last (a score's verdict on a dead cell)
    if bad.any():
        raise FloatingPointError(f"{int(bad.sum())} zero-shot scores are NaN/+inf")
    if z.method == "marginal":
        mask = prune_marginal(space, archs, scores, target_fraction=z.target_fraction, mask=ctx.mask)
    ok = mask.contains(archs)
    target = latency_target(ctx)
    if target is not None:
        from supernet.evaluators import HwCostEvaluator
        kwargs, name = target
        lat = HwCostEvaluator(space, **kwargs)(archs)[name]
        bound = cost_config(ctx.cfg, space).target_ms
        if not (ok & (lat <= bound)).any():
            raise ConfigError(f"no scored architecture inside the pruned space meets the latency target "
                              f"{bound:.3f} ms ({name}); raise the target or zero_shot.sample")
        ok &= lat <= bound
    order = [i for i in np.argsort(-scores, kind="stable") if ok[i]]
    ctx.mask, ctx.arch = mask, archs[order[0]]
    ctx.ranking = [space.encode(archs[i]) for i in order[: z.top_k]]
    seconds = time.perf_counter() - t0
    ctx.wd.log({"stage": "zero_shot", "scored": len(archs), "kept_fraction": mask.size / space.size,
                "best_score": float(scores[order[0]]), "seconds": seconds})
    return {"arch": space.encode(ctx.arch), "search_seconds": seconds, "mask": mask.allowed.tolist(),
            "kept_fraction": mask.size / space.size, "scored": len(archs), "ranking": ctx.ranking}


#: How `evolve` builds the accuracy evaluator that `evolve.evaluator` names, from the run's context
#: (each builds the `supernet.evaluators.EVALUATORS` entry of that name with the run's data).
ACCURACY_EVALUATORS: Registry[Callable[[Context], Any]] = Registry("evolve.evaluator")


@ACCURACY_EVALUATORS.register("table")
def _table_accuracy(ctx: Context):
    from supernet.evaluators import make_evaluator
    t = ctx.cfg.table
    if not t.csv or not t.column:
        raise ConfigError("evolve.evaluator='table' needs table.csv and table.column")
    return make_evaluator("table", ctx.space, path=data_path(t.csv), columns={"accuracy": t.column},
                          arch_column=t.arch_column)


@ACCURACY_EVALUATORS.register("supernet")
def _supernet_accuracy(ctx: Context):
    from supernet.evaluators import BN_MODES, make_evaluator
    cfg, ec = ctx.cfg, ctx.cfg.evolve
    train, val = splits(ctx)
    if ec.supernet_bn not in BN_MODES:
        raise ConfigError(f"unknown evolve.supernet_bn {ec.supernet_bn!r}; valid: {', '.join(BN_MODES)}")
    return make_evaluator("supernet", ctx.space, net=trained_supernet(ctx), data=val,
                          prepare=eval_input, mesh=ctx.mesh, bn=ec.supernet_bn, calib=train,
                          calib_batches=cfg.single_shot.bn_recalibration or 10,
                          calib_batch_size=cfg.single_shot.batch_size, task=task_of(ctx))


@ACCURACY_EVALUATORS.register("train")
def _train_accuracy(ctx: Context):
    from supernet.evaluators import make_evaluator
    cfg = ctx.cfg
    train, val = splits(ctx)
    task = task_of(ctx)
    return make_evaluator("train", ctx.space, train=train, val=val, steps=cfg.evolve.train_steps,
                          batch_size=cfg.single_shot.batch_size, seed=cfg.seed,
                          net_kwargs=dict(cfg.single_shot.supernet), augment=image_augment(task),
                          prepare=eval_input, mesh=ctx.mesh, task=task)


@ACCURACY_EVALUATORS.register("zero_shot")
def _zero_shot_accuracy(ctx: Context):
    from supernet.evaluators import ZeroShotEvaluator
    return ZeroShotEvaluator(ctx.space, zero_shot_scorer(ctx), name="accuracy")


@ACCURACY_EVALUATORS.register("capacity")
def _capacity(ctx: Context):
    from supernet.evaluators import CapacityEvaluator
    return CapacityEvaluator(ctx.space, name="accuracy")


#: What `evolve` optimises (`evolve.goal`): the most accurate network (under the latency target and
#: budgets), or the fastest one no less accurate than the space's baseline architecture.
GOALS = ("accuracy", "latency")


#: Evaluators whose candidates cost real work (training, a supernet pass each): on a parallel
#: executor (`--executor ray`) a generation's candidates are split over a pool of workers.
POOLED = ("train", "supernet")

#: `(build the evaluator, whether the workers of a parallel executor may hold it)`.
Setup = tuple[Callable[[], Any], bool]


def _accuracy_setup(ctx: Context) -> Setup:
    name = ctx.cfg.evolve.evaluator
    if name not in ACCURACY_EVALUATORS:
        raise ConfigError(f"unknown evolve.evaluator {name!r}; valid: {', '.join(sorted(ACCURACY_EVALUATORS))}")
    if name in POOLED:
        return functools.partial(worker_evaluator, ctx.cfg, ctx.wd.path), True
    return functools.partial(ACCURACY_EVALUATORS[name], ctx), False


def worker_evaluator(cfg: Any, workdir: str):
    """The run's accuracy evaluator built from the config and the workdir as the run itself builds
    it (same data split, seed and supernet checkpoint), so each candidate's value equals the serial
    run's: what each worker of a parallel `evolve` holds."""
    return ACCURACY_EVALUATORS[cfg.evolve.evaluator](Context.of(cfg, Workdir(workdir)))


def measured_evaluator(space_name: str, space_kwargs: dict[str, Any], backend: str):
    """`evolve.measure`'s evaluator: every candidate's latency on a measurement backend."""
    from supernet.evaluators import MeasuredEvaluator
    return MeasuredEvaluator(make_space(space_name, **space_kwargs), backend)


def _measure_setup(ctx: Context) -> Setup:
    """A simulated backend's candidates may be split over workers; a timed backend measures in this
    process (parallel timings on shared cores are not latencies)."""
    from hwmodel.measure import BACKENDS, TimedBackend
    name = ctx.cfg.evolve.measure
    timed = issubclass(BACKENDS[name.partition(":")[0]], TimedBackend)
    return functools.partial(measured_evaluator, ctx.cfg.space.name, dict(ctx.cfg.space.kwargs), name), not timed


def worker_parts(space_name: str, space_kwargs: dict[str, Any], setups: list[Callable[[], Any]]):
    """The evaluators of `setups` as one (what each worker of the pool holds)."""
    from supernet.evaluators import CompositeEvaluator
    parts = [setup() for setup in setups]
    return parts[0] if len(parts) == 1 else CompositeEvaluator(make_space(space_name, **space_kwargs), parts)


def _evaluate(evaluator, archs: np.ndarray) -> dict[str, np.ndarray]:
    return evaluator(archs)


def _names(evaluator, _) -> tuple[str, ...]:
    return evaluator.names


def _evaluators(ctx: Context, setups: list[Setup]) -> list[Any]:
    """The evaluators of `setups`: built here, except, on a parallel executor, those its workers may
    hold, which become one `PooledEvaluator` over one pool (one actor per worker holds them all:
    two pools would compete for the same CPUs)."""
    from supernet.evaluators import PooledEvaluator
    parallel = ctx.executor is not None and ctx.executor.parallel
    remote = [setup for setup, poolable in setups if parallel and poolable]
    local = [setup() for setup, poolable in setups if not (parallel and poolable)]
    if remote:
        pool = ctx.executor.pool(functools.partial(worker_parts, ctx.cfg.space.name, dict(ctx.cfg.space.kwargs),
                                                   remote))
        names = pool.map(_names, [None])[0]
        print(f"evolve: {', '.join(names)} evaluated by {pool.workers} {ctx.executor.spec.name} workers")
        local.insert(0, PooledEvaluator(ctx.space, names, lambda chunks: pool.map(_evaluate, chunks), pool.workers))
    return local


def _accuracy_floor(ctx: Context, evaluator, target, algorithm: str) -> tuple[float, list[str]]:
    """`evolve.goal='latency'`: the baseline architecture's score under `evaluator` (the floor a
    found network must reach) and the single objective, the latency model's."""
    from supernet.space import HasBaseline
    if target is None:
        raise ConfigError("evolve.goal='latency' minimises the latency model: set cost.form (e.g. 'hinge') and a "
                          "target (target_frac=1.0: no slower than the baseline)")
    if algorithm == "nsga2":
        raise ConfigError("evolve.goal='latency' has one objective: use evolve.algorithm='rea' or 'random' "
                          "(nsga2's accuracy x latency front needs no goal)")
    if not isinstance(ctx.space, HasBaseline):
        raise ConfigError(f"evolve.goal='latency' compares with the baseline architecture; {ctx.space.name} has none")
    base = np.asarray(ctx.space.baseline_arch())[None]
    return float(_evaluate(evaluator, base)["accuracy"][0]), [f"min:{target[1]}"]


@STAGES.register("evolve")
def stage_evolve(ctx: Context) -> dict[str, Any]:
    from supernet import evaluators as E
    from supernet.multishot import EvolutionConfig, Evolution, InfeasibleError
    cfg, ec, space = ctx.cfg, ctx.cfg.evolve, ctx.space
    setups = [_accuracy_setup(ctx)] + ([_measure_setup(ctx)] if ec.measure else [])
    parts = _evaluators(ctx, setups)  # hardware in the loop with evolve.measure: every candidate measured
    objectives, constraints = ["max:accuracy"], []
    cost = cost_config(cfg, space)
    target = latency_target(ctx)
    budgets = cost.budgets  # params and peak activation bytes, both at once
    # one hardware evaluator (one layer table per candidate) for the latency and the memories
    hw = ({"accelerators": ()} if target is None else dict(target[0])) | (
        {"memory": True, "memory_accelerator": cfg.cost.accelerator} if budgets else {})
    if target is not None or budgets:
        parts.append(E.HwCostEvaluator(space, **hw))
    if target is not None:
        lat_name = target[1]
        if ec.algorithm == "nsga2":
            objectives.append(f"min:{lat_name}")
        else:
            constraints.append(f"{lat_name} <= {cost.target_ms!r}")
    floor = None
    if ec.get("goal", "accuracy") == "latency":  # the fastest network at the baseline's accuracy
        floor, objectives = _accuracy_floor(ctx, parts[0], target, ec.algorithm)
        constraints.append(f"accuracy >= {floor!r}")
    constraints += [f"{key} <= {value!r}" for key, value in budgets.items()]
    evaluator = parts[0] if len(parts) == 1 else E.CompositeEvaluator(space, parts)
    if ec.guide not in ("", "zero_shot"):
        raise ConfigError(f"unknown evolve.guide {ec.guide!r}; valid: zero_shot, or '' for unguided mutation")
    guide = E.ZeroShotEvaluator(space, zero_shot_scorer(ctx), name="guide") if ec.guide else None
    defaults = EvolutionConfig()
    try:
        ecfg = EvolutionConfig(algorithm=ec.algorithm, objectives=tuple(objectives), constraints=tuple(constraints),
                               population=ec.population or defaults.population,
                               sample_size=ec.sample_size or defaults.sample_size,
                               max_evals=ec.budget_evals or None, max_seconds=ec.budget_seconds or None,
                               seed=cfg.seed, guide="max:guide" if guide else None, guide_prob=ec.guide_prob,
                               batch=ec.batch)
    except ValueError as e:
        raise ConfigError(f"evolve: {e}") from None
    if ecfg.max_evals is None and ecfg.max_seconds is None:
        raise ConfigError("evolve needs a budget: evolve.budget_evals > 0 or evolve.budget_seconds > 0")
    state_path = ctx.wd.file("stages", "evolve.state.json")
    os.makedirs(os.path.dirname(state_path), exist_ok=True)
    state = ctx.wd.read_json(os.path.join("stages", "evolve.state.json"))
    logged = {m["index"] for m in ctx.wd.metrics() if m.get("stage") == "evolve"}
    last_save = [time.perf_counter()]
    search: Evolution | None = None

    def log(rec: dict[str, Any]) -> None:
        if rec["index"] not in logged:
            ctx.wd.log({"stage": "evolve", "index": rec["index"], "arch": rec["arch"], "cached": rec["cached"],
                        "origin": rec["origin"], "violation": rec["violation"], **rec["objectives"]})
            logged.add(rec["index"])
        if search is not None and time.perf_counter() - last_save[0] > 2.0:  # resumable, cheaply
            write_json(state_path, search.state())
            last_save[0] = time.perf_counter()

    if state is not None:
        search = Evolution.from_state(space, evaluator, state, ecfg, log=log, guide=guide)
    else:
        init = ctx.ranking[: ecfg.population] if ec.warm_start and ecfg.algorithm != "random" else []
        if ec.warm_start and "expert" in cfg.stages and ctx.arch is not None:  # rules + NAS
            init = [space.encode(ctx.arch)] + init[: ecfg.population - 1]
        if floor is not None and ecfg.algorithm != "random":  # the baseline meets the floor by definition
            init = [space.encode(space.baseline_arch())] + init[: ecfg.population - 1]
        search = Evolution(space, evaluator, ecfg, mask=ctx.mask, init=init, log=log, guide=guide)
    try:
        res = search.run()
    except InfeasibleError as e:
        raise ConfigError(str(e)) from None
    finally:
        write_json(state_path, search.state())
    ctx.arch = res.best_arch
    best = res.best["objectives"]
    # the zero-shot evaluator's "accuracy" is a score, not an accuracy: report it under its own name
    # train / supernet score by the task's own metric: accuracy, miou or map
    acc_key = {"zero_shot": "score", "capacity": "capacity_log10_flops"}.get(ec.evaluator) or (
        task_of(ctx).main_metric if ec.evaluator in POOLED else "accuracy")
    out = {"arch": space.encode(ctx.arch), "search_seconds": search.seconds, acc_key: best["accuracy"],
           "evaluations": len(res.history), "distinct": len({r["arch"] for r in res.history}),
           "warm_start": len(search.init), "guide_evals": search.guide_evals,
           # the front's fitness under the evaluator's own name (a capacity is not an accuracy in percent)
           "front": [{"arch": r["arch"], **{(acc_key if k == "accuracy" else k): v for k, v in r["objectives"].items()}}
                     for r in res.front]}
    if target is not None:
        out["latency_objective"] = {lat_name: best[lat_name]}
    if floor is not None:
        out["accuracy_floor"] = floor  # the baseline's score under the evaluator (its `acc_key`)
    if budgets:
        out["memory"] = {k: best[k] for k in budgets}
    return out
