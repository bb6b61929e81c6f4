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
import sys
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
from hwmodel.tables import numbers, read_csv, require_columns
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


def resolve_data_source(cfg: Any, quiet: bool = False) -> None:
    """Replaces `data.name = "auto"` by the source it finds now (`cifar10` when CIFAR-10 is there,
    else `synthetic`), before the workdir records the config: a run started on one source then
    never resumes on the other (the workdir refuses the changed `data.name`)."""
    if cfg.data.name == "auto":
        try:
            D.find_source(cfg.data.dir or None)
            cfg.data.name = "cifar10"
        except FileNotFoundError:
            if not quiet:
                print("data.name=auto: CIFAR-10 not found, using the synthetic stand-in (set HWNAS_DATA_DIR)")
            cfg.data.name = "synthetic"


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
                                 # a save interrupted by Ctrl-C or a kill leaves a `*.orbax-checkpoint-tmp*`
                                 # folder: removed here, and never taken for a checkpoint
                                 options=ocp.CheckpointManagerOptions(max_to_keep=2, cleanup_tmp_directories=True))


def _restore(mngr: ocp.CheckpointManager, template: dict[str, Any]) -> dict[str, Any] | None:
    """The newest checkpoint that reads back; an unreadable one (a corrupted or truncated file) is
    skipped with one line saying so, and the previous kept one is used (`max_to_keep=2`)."""
    steps = sorted(mngr.all_steps(), reverse=True)
    for i, step in enumerate(steps):
        try:
            return mngr.restore(step, args=ocp.args.StandardRestore(template))
        except Exception as e:  # orbax/tensorstore raise many types for a damaged file
            what = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            nxt = f"falling back to checkpoint {steps[i + 1]}" if i + 1 < len(steps) else "no older checkpoint"
            print(f"warning: checkpoint {step} in {mngr.directory} is unreadable ({what}); {nxt}")
            try:  # the epoch runs again and saves this step anew
                mngr.delete(step)
            except Exception:  # noqa: BLE001  (a folder that cannot be removed: the save will say so)
                pass
    if steps:
        raise ConfigError(f"every checkpoint in {mngr.directory} is unreadable; delete that folder to "
                          "restart the stage from scratch")
    return None


def _pure(state: dict[str, Any]) -> dict[str, Any]:
    return {"nnx": nnx.to_pure_dict(state["nnx"]), "epoch": np.asarray(state["epoch"], np.int64),
            "seconds": np.asarray(state["seconds"], np.float64)}


def _unpure(template: dict[str, Any], pure: dict[str, Any]) -> dict[str, Any]:
    nnx.replace_by_pure_dict(template["nnx"], pure["nnx"])
    return {"nnx": template["nnx"], "epoch": int(pure["epoch"]), "seconds": float(pure["seconds"])}


def splits(ctx: Context) -> tuple[DeviceData, DeviceData]:
    d = ctx.data()
    tr, va = D.split_train(d, val_fraction=ctx.cfg.single_shot.val_fraction, seed=ctx.cfg.seed)
    return DeviceData.put(tr.x, tr.y, ctx.mesh), DeviceData.put(va.x, va.y, ctx.mesh)


def target_of(cfg: Any, space: SearchSpace | None = None) -> tuple[float | None, str]:
    """`(target ms, where it came from)`: an explicit `cost.target_ms` wins; else `target_frac`
    (a config's own key) times the space's baseline architecture's exact analytic latency on
    `cost.accelerator`; else none."""
    if cfg.cost.target_ms is not None:
        return cfg.cost.target_ms, "cost.target_ms"
    frac = cfg.get("target_frac")
    if frac is None or frac == 0:
        return None, "none"
    if not isinstance(frac, (int, float)) or not 0 < frac:
        raise ConfigError(f"target_frac must be a number > 0 (a fraction of the baseline's latency), got {frac!r}")
    if space is None or not hasattr(space, "baseline_arch"):
        raise ConfigError("target_frac needs a space with a baseline architecture; set cost.target_ms instead")
    base_ms = float(analytic.latency_ms(ACCELERATORS[cfg.cost.accelerator],
                                        space.layers(jnp.asarray(space.baseline_arch()))))
    return frac * base_ms, f"target_frac {frac:g} x baseline {base_ms:.4g} ms (analytic {cfg.cost.accelerator})"


def cost_config(cfg: Any, space: SearchSpace | None = None) -> CostConfig:
    """The CostConfig of `cfg.cost`, its target from `target_of`."""
    c = cfg.cost
    target, source = target_of(cfg, space)
    if c.form in ("proxyless", "tunas", "hinge") and target is None:
        raise ConfigError(f"cost.form={c.form!r} needs a latency target: set cost.target_ms (ms) or target_frac")
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
    from hwmodel.tables import InputError
    s = ctx.cfg.cost.surrogate
    try:
        if s.file:
            ctx._surrogate = F.load_surrogate(data_path(s.file))
        elif s.csv:
            archs, lat = F.load_latency_csv(data_path(s.csv), ctx.space, s.column or None, s.arch_column or None)
            idx, _ = split(len(archs), s.train_size, ctx.cfg.seed)
            ctx._surrogate = fit_space(ctx.space, archs[idx], lat[idx], dead_code=s.dead_code)
        else:
            raise ConfigError("cost.model='surrogate' needs cost.surrogate.file or cost.surrogate.csv")
    except InputError as e:  # the fit's messages name its command-line flags: say the config keys
        msg = str(e.args[0] if e.args else e)
        for flag, key in _SURROGATE_FLAGS.items():
            msg = msg.replace(flag, key)
        raise ConfigError(msg) from None
    return ctx._surrogate


#: `python -m experiments.fit_surrogate` flags and the config keys that set the same thing in a run.
_SURROGATE_FLAGS = {"--arch-column": "cost.surrogate.arch_column", "--column": "cost.surrogate.column",
                    "--train-size": "cost.surrogate.train_size", "--data": "cost.surrogate.csv",
                    "--dead-code": "cost.surrogate.dead_code"}


def data_path(path: str) -> str:
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


#: `matmul_precision` values JAX accepts (`jax_default_matmul_precision`).
MATMUL_PRECISIONS = ("default", "high", "highest", "bfloat16", "tensorfloat32", "float32")


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _number(cfg: Any, key: str, low: float | None = None, high: float | None = None, integer: bool = False,
            low_open: bool = False, high_open: bool = False, note: str = "") -> None:
    """`key` (dotted) is a number in the range; else one message naming the key, range and value
    (and `note`, e.g. what 0 means)."""
    v = cfg
    for k in key.split("."):
        v = v[k]
    kind = int if integer else (int, float)
    ok = isinstance(v, kind) and not isinstance(v, bool) and np.isfinite(v)
    ok = ok and (low is None or (v > low if low_open else v >= low)) and (high is None or (v < high if high_open else v <= high))
    if not ok:
        lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
        hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
        rng = " and ".join(x for x in (lo, hi) if x)
        raise ConfigError(f"{key} must be {'an integer' if integer else 'a number'}{' ' + rng if rng else ''}{note}, got {v!r}")


def check_config(cfg: Any) -> None:
    """The whole config, checked before the workdir is touched and before any work: types, ranges,
    names (stages, space, accelerators, algorithms, evaluators), files and their columns. One
    `ConfigError` naming the key and what to fix. (Checks that need the data, e.g. a batch larger
    than the training set, stay where the data is loaded.)"""
    import jax
    from supernet.multishot import ALGORITHMS
    check_stages(list(cfg.stages))
    stages = set(cfg.stages)
    _number(cfg, "seed", 0, integer=True)
    _number(cfg, "num_devices", 0, integer=True)
    _need(cfg.num_devices <= jax.device_count(),
          f"num_devices={cfg.num_devices} but this machine has {jax.device_count()} "
          f"{jax.devices()[0].platform} device(s); use 0 (all) or at most {jax.device_count()}")
    _need(cfg.get("matmul_precision", "default") in MATMUL_PRECISIONS,
          f"unknown matmul_precision {cfg.get('matmul_precision')!r}; valid: {', '.join(MATMUL_PRECISIONS)}")
    try:
        space = make_space(cfg.space.name, **dict(cfg.space.kwargs))
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"space {cfg.space.name!r} with kwargs {dict(cfg.space.kwargs)}: "
                          f"{e.args[0] if e.args else e}") from None
    _need(cfg.data.name in ("auto", "cifar10", "synthetic"),
          f"unknown data.name {cfg.data.name!r}; valid: auto, cifar10, synthetic")
    _number(cfg, "data.num_train", 0, integer=True)
    _number(cfg, "data.num_test", 0, integer=True)
    if cfg.data.name == "cifar10":
        try:
            D.find_source(cfg.data.dir or None)
        except FileNotFoundError as e:
            raise ConfigError(f"data.name='cifar10': {e}") from None
    for name in cfg.report.accelerators:
        _need(name in ACCELERATORS, f"unknown accelerator {name!r} in report.accelerators; valid: "
                                    f"{', '.join(sorted(ACCELERATORS))}")
    _need(cfg.cost.accelerator in ACCELERATORS, f"unknown cost.accelerator {cfg.cost.accelerator!r}; valid: "
                                                 f"{', '.join(sorted(ACCELERATORS))}")
    t = cfg.cost.target_ms
    _need(t is None or (isinstance(t, (int, float)) and not isinstance(t, bool) and np.isfinite(t) and t > 0),
          f"cost.target_ms must be a latency in ms > 0 (or None), got {t!r}")
    _number(cfg, "cost.weight", 0)
    try:
        cost = cost_config(cfg, space)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"config cost: {e}") from None
    if not cost.uses_latency and (cfg.cost.target_ms is not None or cfg.cost.weight > 0):
        print(f"warning: cost.form='none': no latency term in the loss, so cost.target_ms={cfg.cost.target_ms!r} "
              f"and cost.weight={cfg.cost.weight!r} have no effect (set cost.form, e.g. hinge)", file=sys.stderr)
    if cost.model == "surrogate" and cost.uses_latency:
        sur = cfg.cost.surrogate
        _need(bool(sur.file or sur.csv), "cost.model='surrogate' needs cost.surrogate.file or cost.surrogate.csv")
        path = data_path(sur.file or sur.csv)
        _need(os.path.isfile(path), f"cost.surrogate.{'file' if sur.file else 'csv'} {path!r} not found")
    if cfg.table.csv:
        path = data_path(cfg.table.csv)
        if os.path.isfile(path):
            with open(path, newline="", encoding="utf-8-sig") as f:
                header = next(csv.reader(f), [])
            for key, col in [("table.arch_column", cfg.table.arch_column), ("table.column", cfg.table.column)] + \
                    [("table.latency_columns", c) for c in cfg.table.latency_columns]:
                _need(col in header, f"{key}={col!r} is not a column of {path}; columns: {header}")
        elif cfg.data.name != "auto":  # the quickstart runs without the table
            raise ConfigError(f"lookup table {path!r} not found (config table.csv)")
    if "single_shot" in stages:
        _number(cfg, "single_shot.epochs", 1, integer=True)
        _number(cfg, "single_shot.batch_size", 1, integer=True)
        _number(cfg, "single_shot.val_fraction", 0, 1, low_open=True, high_open=True)
        _number(cfg, "single_shot.steps_per_epoch", 0, integer=True, note=" (0 = full epochs)")
        _number(cfg, "single_shot.bn_recalibration", 0, integer=True)
        _number(cfg, "single_shot.top_k", 1, integer=True)
        search_config(cfg, space)
    if "retrain" in stages:
        _number(cfg, "retrain.epochs", 1, integer=True)
        _number(cfg, "retrain.batch_size", 1, integer=True)
        _number(cfg, "retrain.steps_per_epoch", 0, integer=True, note=" (0 = full epochs)")
        _number(cfg, "retrain.label_smoothing", 0, 1, high_open=True)
    if "zero_shot" in stages:
        _number(cfg, "zero_shot.target_fraction", 0, 1, low_open=True)
        _number(cfg, "zero_shot.sample", 1, integer=True)
        _number(cfg, "zero_shot.batch_size", 1, integer=True)
        _need(cfg.zero_shot.method in ("marginal", "progressive"),
              f"unknown zero_shot.method {cfg.zero_shot.method!r}; valid: marginal, progressive")
    if "evolve" in stages:
        e = cfg.evolve
        _need(e.algorithm in ALGORITHMS, f"unknown evolve.algorithm {e.algorithm!r}; valid: {', '.join(ALGORITHMS)}")
        _need(e.evaluator in ("table", "supernet", "train", "zero_shot"),
              f"unknown evolve.evaluator {e.evaluator!r}; valid: table, supernet, train, zero_shot")
        if e.evaluator == "table":
            _need(bool(cfg.table.csv and cfg.table.column), "evolve.evaluator='table' needs table.csv and table.column")
        _number(cfg, "evolve.budget_evals", 0, integer=True)
        _number(cfg, "evolve.budget_seconds", 0)
        _need(e.budget_evals > 0 or e.budget_seconds > 0,
              "evolve needs a budget: evolve.budget_evals > 0 or evolve.budget_seconds > 0")
        _number(cfg, "evolve.guide_prob", 0, 1)


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
    train, val = splits(ctx)
    steps = min(len(train) // sc.batch_size, sc.steps_per_epoch or 10**9)
    mngr = _checkpointer(ctx, "single_shot")
    search._setup(steps)
    restored = _restore(mngr, _pure(search.state()))
    if restored is not None:
        search.load_state(_unpure(search.state(), restored), steps)
    if ctx.wd.stage_done("single_shot") is None:  # epochs after the checkpoint run (and are logged) again
        ctx.wd.drop_metrics("single_shot", from_epoch=search.epoch)
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
    ctx.wd.drop_metrics("retrain")  # retraining restarts from scratch: a killed run's epochs go
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
    path = data_path(t.csv)
    if not os.path.isfile(path):
        if ctx.cfg.data.name == "auto":  # the quickstart runs on whatever data is there
            print(f"lookup table {path!r} not found: no table accuracy (set HWNAS_DATA_DIR)")
            return {}
        raise ConfigError(f"lookup table {path!r} not found (config table.csv)")
    key = ctx.space.encode(arch)
    header, rows = read_csv(path, "lookup table (config table.csv)")
    require_columns(path, header, [t.arch_column, t.column, *t.latency_columns])
    for i, row in enumerate(rows):
        if row[t.arch_column] == key:
            out = {"table_accuracy": float(numbers(path, [row], t.column, first_row=i + 1)[0])}
            for c in t.latency_columns:
                out.setdefault("table_latency_ms", {})[c] = float(numbers(path, [row], c, positive=True, first_row=i + 1)[0])
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
    target, source = target_of(cfg, space)
    if target is not None:  # every target a stage worked against, and where it came from
        res["latency_target_ms"], res["latency_target_source"] = target, source
    res.update(hardware_costs(ctx, ctx.arch))
    res.update(table_lookup(ctx, ctx.arch))
    res["stages"] = {s: {k: v for k, v in o.items() if k not in ("probs", "mask", "ranking", "history")}
                     for s, o in outputs.items()}
    wd.write_results(res)
    return res


from experiments import search_stages  # noqa: E402,F401  (registers the zero_shot and evolve stages)
