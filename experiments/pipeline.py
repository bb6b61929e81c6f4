"""Pipeline stages composed by a config: `config.stages = ["single_shot", "retrain"]` etc.

Each stage reads and extends a `Context` (space, data, mask, architecture, results) and writes its
outputs to the workdir (`stages/<name>.json`), so a rerun skips finished stages and resumes an
interrupted one from its orbax checkpoint. `check_stages` refuses unknown names (listing the valid
ones) and orders that make no sense (e.g. `retrain` before anything chose an architecture).

Stages here: `baseline` (the space's reference architecture, e.g. MobileNetV2), `single_shot`
(bilevel supernet search, `supernet.single_shot`), `retrain` (train the architecture from scratch with
a fixed schedule and report test accuracy). Every run ends with the architecture's costs from
`hwmodel` and, when a lookup table is configured (NAS-Bench-201), its table accuracy and latencies.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from tqdm import tqdm

from hwmodel import analytic, memory
from hwmodel.accelerators import ACCELERATORS
from hwmodel.registry import Registry
from supernet.model import Subnet, make_supernet
from supernet.objectives import CostConfig, make_cost_fn
from supernet.single_shot import SearchConfig, SingleShot
from supernet.space import SearchSpace, SpaceMask
from supernet.spaces import make_space
from supernet.training import DeviceData, OptimConfig, TrainConfig, Trainer, evaluate, make_mesh, recalibrate_bn
from experiments import data as D
from experiments.config import ConfigError
from experiments.workdir import Workdir

STAGES: Registry[Callable[["Context"], dict[str, Any]]] = Registry("stage")
#: Stages that choose an architecture; `retrain` needs one of them before it.
CHOOSERS = {"baseline", "zero_shot", "single_shot", "evolve"}
#: Search stages in the only order that makes sense: prune (zero), collapse (single), evolve (multi).
SEARCH_ORDER = ("zero_shot", "single_shot", "evolve")


@dataclasses.dataclass
class Context:
    """What stages share: config, workdir, space, data (loaded lazily), mask and the architecture."""

    cfg: Any
    wd: Workdir
    space: SearchSpace
    mesh: jax.sharding.Mesh
    mask: SpaceMask | None = None
    arch: np.ndarray | None = None
    #: Ranked architecture strings (best first) for warm starts: zero-shot's best scored, single-shot's top-k.
    ranking: list[str] = dataclasses.field(default_factory=list)
    #: The trained supernet of a `single_shot` stage of this run (for the `supernet` evaluator).
    supernet: Any = None
    #: `(archs, {score name: raw scores})` of this run's `zero_shot` stage or of the reference sample
    #: of `search_stages.zero_shot_scorer` (shared, not scored twice).
    zero_shot_scores: Any = None
    results: dict[str, Any] = dataclasses.field(default_factory=dict)
    _data: Any = None
    _surrogate: Any = None

    def data(self):
        """CIFAR-10 (or the synthetic stand-in) as host arrays, optionally subsampled."""
        if self._data is None:
            dc = self.cfg.data
            name = dc.name
            if name == "auto":  # CIFAR-10 when it is found, else the synthetic stand-in (quickstart)
                try:
                    D.find_source(dc.dir or None)
                    name = "cifar10"
                except FileNotFoundError:
                    print("CIFAR-10 not found; using synthetic data (set HWNAS_DATA_DIR)")
                    name = "synthetic"
            if name == "synthetic":
                d = D.synthetic_cifar10(dc.num_train or 2000, dc.num_test or 500, seed=0)
            elif name == "cifar10":
                d = D.load_cifar10(dc.dir or None)
            else:
                raise ConfigError(f"unknown data.name {dc.name!r}; valid: auto, cifar10, synthetic")
            if dc.num_train and len(d.x_train) > dc.num_train:  # a class-balanced subset for quick runs
                tr, _ = D.split_train(d, val_size=len(d.x_train) - dc.num_train, seed=0)
                d = dataclasses.replace(d, x_train=tr.x, y_train=tr.y)
            if dc.num_test and len(d.x_test) > dc.num_test:
                d = dataclasses.replace(d, x_test=d.x_test[:: len(d.x_test) // dc.num_test][: dc.num_test],
                                        y_test=d.y_test[:: len(d.y_test) // dc.num_test][: dc.num_test])
            self._data = d
        return self._data


def check_stages(stages: list[str]) -> None:
    """Unknown names and senseless orders fail before any work."""
    if not stages:
        raise ConfigError(f"config.stages is empty; choose from {', '.join(sorted(STAGES))}")
    for s in stages:
        if s not in STAGES:
            raise ConfigError(f"unknown stage {s!r}; valid stages: {', '.join(sorted(STAGES))}")
    if len(set(stages)) != len(stages):
        raise ConfigError(f"a stage appears twice in {stages}")
    for i, s in enumerate(stages):
        if s == "retrain" and not CHOOSERS & set(stages[:i]):
            raise ConfigError(f"'retrain' needs an earlier stage that chooses an architecture "
                              f"({', '.join(sorted(CHOOSERS))}); got {stages}")
        if s == "baseline" and CHOOSERS & set(stages[:i]):
            raise ConfigError(f"'baseline' would replace the architecture chosen before it in {stages}")
        if s == "baseline" and set(SEARCH_ORDER) & set(stages):
            raise ConfigError(f"'baseline' is an arm of its own; do not combine it with search stages: {stages}")
    searches = [s for s in stages if s in SEARCH_ORDER]
    if searches != sorted(searches, key=SEARCH_ORDER.index):
        raise ConfigError(f"search stages must run in the order {' -> '.join(SEARCH_ORDER)} (zero-shot prunes "
                          f"the space for the others, single-shot's supernet seeds evolution); got {stages}")


def _checkpointer(ctx: Context, stage: str) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(os.path.abspath(ctx.wd.file("checkpoints", stage)),
                                 options=ocp.CheckpointManagerOptions(max_to_keep=2))


def _restore(mngr: ocp.CheckpointManager, template: dict[str, Any]) -> dict[str, Any] | None:
    step = mngr.latest_step()
    if step is None:
        return None
    return mngr.restore(step, args=ocp.args.StandardRestore(template))


def _pure(state: dict[str, Any]) -> dict[str, Any]:
    return {"nnx": nnx.to_pure_dict(state["nnx"]), "epoch": np.asarray(state["epoch"], np.int64),
            "seconds": np.asarray(state["seconds"], np.float64)}


def _unpure(template: dict[str, Any], pure: dict[str, Any]) -> dict[str, Any]:
    nnx.replace_by_pure_dict(template["nnx"], pure["nnx"])
    return {"nnx": template["nnx"], "epoch": int(pure["epoch"]), "seconds": float(pure["seconds"])}


def _splits(ctx: Context) -> tuple[DeviceData, DeviceData]:
    d = ctx.data()
    tr, va = D.split_train(d, val_fraction=ctx.cfg.single_shot.val_fraction, seed=ctx.cfg.seed)
    return DeviceData.put(tr.x, tr.y, ctx.mesh), DeviceData.put(va.x, va.y, ctx.mesh)


def cost_config(cfg: Any, space: SearchSpace | None = None) -> CostConfig:
    """The CostConfig of `cfg.cost`; with `cfg.target_frac` the target is that fraction of the
    space's baseline architecture's exact analytic latency on `cfg.cost.accelerator`."""
    c = cfg.cost
    target = c.target_ms
    if cfg.get("target_frac") and space is not None and hasattr(space, "baseline_arch"):
        base_ms = float(analytic.latency_ms(ACCELERATORS[c.accelerator],
                                            space.layers(jnp.asarray(space.baseline_arch()))))
        target = cfg.target_frac * base_ms
    return CostConfig(form=c.form, target_ms=target, weight=c.weight, exponent=c.exponent,
                      model=c.model, accelerator=c.accelerator, temperature=c.temperature,
                      memory=c.memory, memory_budget_bytes=c.memory_budget_bytes,
                      memory_weight=c.memory_weight, discrete=c.discrete)


def fitted_surrogate(ctx: Context):
    """The latency surrogate the config asks for: a saved file, or fitted on N rows of a CSV.

    Loaded or fitted once per run and kept on the context (the search and the final report use it).
    """
    if ctx._surrogate is not None:
        return ctx._surrogate
    from experiments import fit_surrogate as F
    from hwmodel.fit import fit_space, split
    s = ctx.cfg.cost.surrogate
    if s.file:
        ctx._surrogate = F.load_surrogate(s.file)
    elif s.csv:
        archs, lat = F.load_latency_csv(_data_path(s.csv), ctx.space, s.column or None, s.arch_column or None)
        idx, _ = split(len(archs), s.train_size, ctx.cfg.seed)
        ctx._surrogate = fit_space(ctx.space, archs[idx], lat[idx], dead_code=s.dead_code)
    else:
        raise ConfigError("cost.model='surrogate' needs cost.surrogate.file or cost.surrogate.csv")
    return ctx._surrogate


def _data_path(path: str) -> str:
    """`{data}/...` in config paths means the shared data folder (`$HWNAS_DATA_DIR` or ../shared/data)."""
    return path.replace("{data}", str(D.resolve_data_dir(None)))


# ------------------------------------------------------------------ stages
@STAGES.register("baseline")
def stage_baseline(ctx: Context) -> dict[str, Any]:
    if not hasattr(ctx.space, "baseline_arch"):
        raise ConfigError(f"space {ctx.space.name!r} has no baseline architecture")
    ctx.arch = ctx.space.baseline_arch()
    return {"arch": ctx.space.encode(ctx.arch)}


def search_config(cfg: Any, space: SearchSpace) -> SearchConfig:
    """The `SearchConfig` of `cfg.single_shot` and `cfg.cost`; a bad value is a `ConfigError`."""
    sc = cfg.single_shot
    try:
        return SearchConfig(
            epochs=sc.epochs, batch_size=sc.batch_size, optim=OptimConfig(**dict(sc.optim)), arch_lr=sc.arch_lr,
            arch_lr_min=None if sc.arch_lr_min < 0 else sc.arch_lr_min, arch_weight_decay=sc.arch_weight_decay, relaxation=sc.relaxation, tau=tuple(sc.tau), hard=sc.hard,
            dirichlet_kl=sc.dirichlet_kl, beta_decay=sc.beta_decay, warmup_epochs=sc.warmup_epochs,
            path_sampling=sc.path_sampling, estimator=sc.estimator, reward_momentum=sc.reward_momentum,
            entropy_weight=sc.entropy_weight, single_path=sc.single_path, cost=cost_config(cfg, space),
            seed=cfg.seed, steps_per_epoch=sc.steps_per_epoch or None)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"config single_shot / cost: {e}") from None


def check_config(cfg: Any) -> None:
    """Values the stages will need, checked before the workdir is touched (one message each)."""
    if "single_shot" in cfg.stages:
        if cfg.single_shot.steps_per_epoch < 0:
            raise ConfigError(f"single_shot.steps_per_epoch must be >= 1 (or 0 for full epochs), "
                              f"got {cfg.single_shot.steps_per_epoch}")
        if cfg.single_shot.bn_recalibration < 0:
            raise ConfigError(f"single_shot.bn_recalibration must be >= 0 batches, got {cfg.single_shot.bn_recalibration}")
        search_config(cfg, make_space(cfg.space.name, **dict(cfg.space.kwargs)))


def _single_shot(ctx: Context) -> tuple[SingleShot, Any, DeviceData, DeviceData]:
    """The configured search, restored from its latest checkpoint when there is one."""
    cfg, sc = ctx.cfg, ctx.cfg.single_shot
    search_cfg = search_config(cfg, ctx.space)
    cost = search_cfg.cost
    surrogate = fitted_surrogate(ctx) if cost.model == "surrogate" and cost.uses_latency else None
    net = make_supernet(ctx.space, rngs=nnx.Rngs(cfg.seed), **dict(sc.supernet))
    search = SingleShot(ctx.space, net, search_cfg, mask=ctx.mask,
                        cost_fn=make_cost_fn(ctx.space, cost, surrogate) if cost.uses_latency else None,
                        augment=D.augment, mesh=ctx.mesh)
    train, val = _splits(ctx)
    steps = min(len(train) // sc.batch_size, sc.steps_per_epoch or 10**9)
    mngr = _checkpointer(ctx, "single_shot")
    search._setup(steps)
    restored = _restore(mngr, _pure(search.state()))
    if restored is not None:
        search.load_state(_unpure(search.state(), restored), steps)
    return search, mngr, train, val


def trained_supernet(ctx: Context) -> Any:
    """The supernet trained by this run's `single_shot` stage (restored from its last checkpoint)."""
    if ctx.supernet is None:
        if "single_shot" not in ctx.cfg.stages or ctx.wd.stage_done("single_shot") is None:
            raise ConfigError("this stage needs the trained supernet of an earlier 'single_shot' stage")
        ctx.supernet = _single_shot(ctx)[0].model
    return ctx.supernet


@STAGES.register("single_shot")
def stage_single_shot(ctx: Context) -> dict[str, Any]:
    sc = ctx.cfg.single_shot
    search, mngr, train, val = _single_shot(ctx)
    bar = tqdm(range(search.epoch, sc.epochs), desc="single-shot", initial=search.epoch, total=sc.epochs)
    try:
        for _ in bar:
            rec = search.run_epoch(train, val)
            ctx.wd.log({"stage": "single_shot", **rec})
            bar.set_postfix(val_acc=f"{rec.get('val_acc', float('nan')):.3f}", lat=rec.get("latency_ms"))
            mngr.save(search.epoch, args=ocp.args.StandardSave(_pure(search.state())))
    finally:  # an interrupt (Ctrl-C) must not leave the last epoch's async save half written
        mngr.wait_until_finished()
    argmax = search.derive_arch()
    ctx.supernet = search.model
    # the most probable architectures seed a later evolution (single-shot -> multishot); those whose
    # output is a constant (a NAS-Bench-201 cell cut off by `none` edges: 10 % in the table, what a
    # cost-driven search with near-uniform logits can land on) are no result and are skipped
    top = _live_top_k(ctx, search, max(ctx.cfg.single_shot.top_k, 1))
    ctx.ranking = [ctx.space.encode(a) for a in top]
    ctx.arch = top[0]
    skipped = not np.array_equal(top[0], argmax)
    constrained = {"argmax_arch": ctx.space.encode(argmax), "argmax_is_constant": True} if skipped else {}
    if search.cfg.cost.target_ms is not None and search.cost_fn is not None:
        # a latency target is a constraint on what is returned: the most probable of the top-k
        # architectures that meets it by the search's own cost model (the argmax when it does)
        cost = jax.jit(search.cost_fn)
        lat = [float(cost(jnp.asarray(ctx.space.one_hot(a)))["latency_ms"]) for a in top]
        ok = [i for i, v in enumerate(lat) if v <= search.cfg.cost.target_ms]
        if ok:
            ctx.arch = top[ok[0]]
        argmax_lat = float(cost(jnp.asarray(ctx.space.one_hot(argmax)))["latency_ms"]) if skipped else lat[0]
        constrained.update({"argmax_arch": ctx.space.encode(argmax), "argmax_latency_ms": argmax_lat,
                            "latency_ms_model": lat[ok[0]] if ok else lat[0], "meets_target_by_model": bool(ok),
                            "rank_among_top_k": ok[0] if ok else None})
    return {"arch": ctx.space.encode(ctx.arch), "search_seconds": search.seconds,
            "steps_per_epoch": min(len(train) // sc.batch_size, sc.steps_per_epoch or 10**9),
            **inherited_accuracies(ctx, search.model, ctx.arch, train, val), **constrained,
            "search_val_accuracy": _last_metric(ctx, "single_shot", "val_acc"),
            "probs": search.probs().tolist(), "ranking": ctx.ranking}


def _live_top_k(ctx: Context, search: Any, k: int) -> list[np.ndarray]:
    """The k most probable architectures of the search whose output depends on the input
    (`SearchSpace.is_constant`), among the `max(k, 100)` most probable; stops when all are constant."""
    depth = max(k, 100)
    top = search.top_k(depth)
    live = [a for a, c in zip(top, ctx.space.is_constant(np.stack(top))) if not c]
    if live:
        return live[:k]
    raise FloatingPointError(f"single-shot collapsed: each of the {depth} most probable architectures has an "
                             "output that does not depend on its input (every path cut by `none`); lower "
                             "cost.weight or raise cost.target_ms")


def inherited_accuracies(ctx: Context, net: Any, arch: np.ndarray, train: DeviceData,
                         val: DeviceData) -> dict[str, float]:
    """Validation accuracy (fraction) of `arch` with the supernet's weights, two ways:

    - `inherited_val_accuracy`: BatchNorm statistics recomputed on `single_shot.bn_recalibration`
      training batches under `arch` alone (SPOS), the number that means something;
    - `supernet_val_accuracy`: the supernet's own running statistics (accumulated under the search's
      mixture or sampled paths; near chance for a mixture-trained supernet), kept for comparison.
    """
    prepare = lambda k, x: D.normalize(x)  # noqa: E731
    onehot = ctx.space.one_hot(arch)
    out = {"supernet_val_accuracy": evaluate(net, val, prepare, arch_weights=onehot, mesh=ctx.mesh)}
    n = ctx.cfg.single_shot.bn_recalibration
    if n:
        sub = net.derive(arch)
        recalibrate_bn(sub, train, prepare, batches=n, batch_size=ctx.cfg.single_shot.batch_size,
                       seed=ctx.cfg.seed, mesh=ctx.mesh)
        out["inherited_val_accuracy"] = evaluate(sub, val, prepare, mesh=ctx.mesh)
    return out


def _last_metric(ctx: Context, stage: str, key: str) -> float | None:
    vals = [m[key] for m in ctx.wd.metrics() if m.get("stage") == stage and key in m]
    return vals[-1] if vals else None


#: Where `retrain` saves the trained network's weights (an orbax checkpoint of its NNX state).
MODEL_DIR = "model"


def build_subnet(cfg: Any, space: SearchSpace, arch: np.ndarray) -> Subnet:
    """The standalone network of `arch` as `retrain` builds it (fresh weights; `load_subnet` fills
    in the trained ones)."""
    net = make_supernet(space, rngs=nnx.Rngs(cfg.seed + 1), **dict(cfg.single_shot.supernet))
    return net.derive(arch)


def save_subnet(sub: Subnet, path: str) -> None:
    """Writes `sub`'s weights and BN statistics (orbax). Only a retrain that had not finished wrote
    to `path` before (its stage file is absent), so a partial save is replaced."""
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(os.path.abspath(path), nnx.to_pure_dict(nnx.state(sub)), force=True)


def load_subnet(cfg: Any, space: SearchSpace, arch: np.ndarray, path: str) -> Subnet:
    """The network `retrain` trained and saved at `path` (clear error when the folder is missing)."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no saved weights at {path!r}; run the config with a 'retrain' stage")
    sub = build_subnet(cfg, space, arch)
    state = nnx.state(sub)
    with ocp.StandardCheckpointer() as ckpt:
        pure = ckpt.restore(os.path.abspath(path), nnx.to_pure_dict(state))
    nnx.replace_by_pure_dict(state, pure)
    nnx.update(sub, state)
    return sub


@STAGES.register("retrain")
def stage_retrain(ctx: Context) -> dict[str, Any]:
    cfg, rc = ctx.cfg, ctx.cfg.retrain
    sub = build_subnet(cfg, ctx.space, ctx.arch)  # fresh weights: retraining from scratch
    d = ctx.data()
    train = DeviceData.put(d.x_train, d.y_train, ctx.mesh)
    test = DeviceData.put(d.x_test, d.y_test, ctx.mesh)
    tcfg = TrainConfig(epochs=rc.epochs, batch_size=rc.batch_size, optim=OptimConfig(**dict(rc.optim)),
                       seed=cfg.seed, steps_per_epoch=rc.steps_per_epoch or None,
                       label_smoothing=rc.label_smoothing)
    trainer = Trainer(sub, tcfg, augment=D.augment, mesh=ctx.mesh, eval_input=lambda k, x: D.normalize(x))
    t0 = time.perf_counter()
    hist = trainer.fit(train, test, callback=lambda r: ctx.wd.log({"stage": "retrain", **r}))
    save_subnet(trainer.model, ctx.wd.file(MODEL_DIR))
    return {"arch": ctx.space.encode(ctx.arch), "test_accuracy": hist[-1]["test_acc"],
            "retrain_seconds": time.perf_counter() - t0, "weights": MODEL_DIR}


# ------------------------------------------------------------------ costs and table lookups
def hardware_costs(ctx: Context, arch: np.ndarray) -> dict[str, Any]:
    """Latency of every configured accelerator (exact analytic), memory, and surrogate latency."""
    table = ctx.space.layers(jnp.asarray(arch))
    spec = ACCELERATORS[ctx.cfg.cost.accelerator]
    lat = {f"analytic:{name}": float(analytic.latency_ms(ACCELERATORS[name], table))
           for name in ctx.cfg.report.accelerators}
    out = {"latency_ms": lat, "params_bytes": float(memory.param_bytes(spec, table)),
           "peak_activation_bytes": float(memory.peak_activation_bytes(table, spec))}
    if ctx.cfg.cost.model == "surrogate" and (ctx.cfg.cost.surrogate.file or ctx.cfg.cost.surrogate.csv):
        from hwmodel.surrogate import predict
        sur = fitted_surrogate(ctx)
        lat["surrogate"] = float(predict(sur, sur.executed(table)))
    return out


def table_lookup(ctx: Context, arch: np.ndarray) -> dict[str, Any]:
    """Accuracy and latencies of `arch` from the configured lookup table (NAS-Bench-201 CSV)."""
    t = ctx.cfg.table
    if not t.csv:
        return {}
    path = _data_path(t.csv)
    if not os.path.isfile(path):
        if ctx.cfg.data.name == "auto":  # the quickstart runs on whatever data is there
            print(f"lookup table {path!r} not found: no table accuracy (set HWNAS_DATA_DIR)")
            return {}
        raise ConfigError(f"lookup table {path!r} not found (config table.csv)")
    key = ctx.space.encode(arch)
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row[t.arch_column] == key:
                out = {"table_accuracy": float(row[t.column])}
                for c in t.latency_columns:
                    out.setdefault("table_latency_ms", {})[c] = float(row[c])
                return out
    raise ConfigError(f"architecture {key} not in {path}")


#: What `results.json`'s `accuracy` is, by the stage and key it was taken from.
ACCURACY_SOURCES = {
    ("retrain", "test_accuracy"): "retrain: test accuracy (fraction) of the found network trained from scratch",
    ("evolve", "accuracy"): "evolve: the evaluator's accuracy of the best candidate (the table's percent for "
                            "evolve.evaluator=table, else a fraction)",
    ("single_shot", "inherited_val_accuracy"): "single_shot: validation accuracy (fraction) of the derived subnet "
                                               "of the searched supernet, inherited weights, BN recalibrated",
    ("single_shot", "supernet_val_accuracy"): "single_shot: validation accuracy (fraction) of the supernet with the "
                                              "found architecture, its own running BN statistics",
}


def run_pipeline(cfg: Any, wd: Workdir) -> dict[str, Any]:
    """Runs `cfg.stages` in order (skipping finished ones) and writes `results.json`."""
    check_stages(list(cfg.stages))
    space = make_space(cfg.space.name, **dict(cfg.space.kwargs))
    ctx = Context(cfg=cfg, wd=wd, space=space, mesh=make_mesh(cfg.num_devices or None))
    outputs: dict[str, Any] = {}
    for stage in cfg.stages:
        done = wd.stage_done(stage)
        if done is None:
            done = STAGES[stage](ctx)
            wd.write_stage(stage, done)
        else:  # a finished stage: restore what it handed on
            if "arch" in done:
                ctx.arch = space.decode(done["arch"])
            if "mask" in done:
                ctx.mask = space.check_mask(SpaceMask(np.asarray(done["mask"], bool)))
            if "ranking" in done:
                ctx.ranking = list(done["ranking"])
        outputs[stage] = done
    res: dict[str, Any] = {"architecture": space.encode(ctx.arch), "space": space.name}
    res["search_seconds"] = sum(o.get("search_seconds", 0.0) for o in outputs.values())
    src = next(((s, k) for s, k in (("retrain", "test_accuracy"), ("evolve", "accuracy"),
                                    ("single_shot", "inherited_val_accuracy"), ("single_shot", "supernet_val_accuracy"))
                if k in outputs.get(s, {})), None)  # a zero-shot-scored evolve has no accuracy
    res["accuracy"] = None if src is None else outputs[src[0]][src[1]]
    res["accuracy_source"] = None if src is None else ACCURACY_SOURCES[src]
    res.update(hardware_costs(ctx, ctx.arch))
    res.update(table_lookup(ctx, ctx.arch))
    res["stages"] = {s: {k: v for k, v in o.items() if k not in ("probs", "mask", "ranking", "history")}
                     for s, o in outputs.items()}
    wd.write_results(res)
    return res


from experiments import search_stages  # noqa: E402,F401  (registers the zero_shot and evolve stages)
