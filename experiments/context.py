"""What the pipeline's stages share: the `Context` they read and extend, the `STAGES` registry they
register in, and the config-to-dataclass translations (`cost_config`, `search_config`, `target_of`)
that both the stages and `experiments.checks` use.

Dependencies point one way inside `experiments`: context <- train_stages <- search_stages <- checks
<- pipeline (the stage modules never import the checks or the pipeline that runs them).
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from hwmodel import analytic
from hwmodel.accelerators import ACCELERATORS
from hwmodel.registry import Registry
from supernet.objectives import CostConfig
from supernet.single_shot import SearchConfig
from supernet.space import HasBaseline, SearchSpace, SpaceMask
from supernet.tasks import TASKS, make_task
from supernet.training import DeviceData, OptimConfig
from experiments import data as D
from experiments.config import ConfigError, from_section
from experiments.workdir import Workdir


STAGES: Registry[Callable[["Context"], dict[str, Any]]] = Registry("stage")
#: Stages that choose an architecture; `retrain` needs one of them before it.
CHOOSERS = {"baseline", "given", "expert", "zero_shot", "single_shot", "evolve", "landscape", "descend"}
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
    #: Where costly evaluations run (`experiments.executors`; None: in this process, one by one).
    executor: Any = None
    _data: Any = None
    _surrogate: Any = None
    _surrogate_train: Any = None  # (archs, latency_ms) the surrogate was fitted on, when fitted in the run
    _surrogate_ratios: Any = None

    @classmethod
    def of(cls, cfg: Any, wd: Workdir, executor: Any = None) -> "Context":
        """A run's context from its config: the space, the mesh and the configured search mask (what
        the pipeline starts from, and what each worker of a parallel `evolve` rebuilds)."""
        from supernet.spaces import make_space
        from supernet.training import make_mesh
        space = make_space(cfg.space.name, **dict(cfg.space.kwargs))
        return cls(cfg=cfg, wd=wd, space=space, mesh=make_mesh(cfg.num_devices or None),
                   mask=search_mask(cfg, space), executor=executor)

    def data(self):
        """CIFAR-10 (or the synthetic stand-in) as host arrays, optionally subsampled."""
        if self._data is None:
            dc = self.cfg.data
            name = data_source(dc) if dc.name == "auto" else dc.name  # (launchers resolve "auto" first)
            if name not in D.DATASETS:
                raise ConfigError(f"unknown data.name {dc.name!r}; valid: auto, {', '.join(sorted(D.DATASETS))}")
            d = D.DATASETS[name](dc)
            if dc.num_train and len(d.x_train) > dc.num_train:  # a class-balanced subset for quick runs
                tr, _ = D.split_train(d, val_size=len(d.x_train) - dc.num_train, seed=0)
                d = dataclasses.replace(d, x_train=tr.x, y_train=tr.y)
            if dc.num_test and len(d.x_test) > dc.num_test:
                d = dataclasses.replace(d, x_test=d.x_test[:: len(d.x_test) // dc.num_test][: dc.num_test],
                                        y_test=d.y_test[:: len(d.y_test) // dc.num_test][: dc.num_test])
            self._data = d
        return self._data



def register_presets(cfg: Any) -> None:
    """Adds the config's own accelerators (`hardware.presets`: name -> `{"base": preset, field:
    value, ...}`, `hwmodel.accelerators.derive`) to `ACCELERATORS`, so every stage, evaluator and
    report names them like the built-in presets. A name that is taken by a different accelerator
    stops with one message (the same definition again, e.g. a sweep's next member, is fine)."""
    from hwmodel.accelerators import derive
    for name, fields in dict(cfg.get("hardware", {}).get("presets", {})).items():
        fields = dict(fields)
        if "base" not in fields:
            raise ConfigError(f"hardware.presets.{name}: name its base preset (\"base\": \"npu\", ...)")
        try:
            spec = derive(ACCELERATORS[fields.pop("base")], name, **fields)
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"hardware.presets.{name}: {e.args[0] if e.args else e}") from None
        if name in ACCELERATORS and ACCELERATORS[name] != spec:
            raise ConfigError(f"hardware.presets.{name}: {name!r} is already an accelerator "
                              f"({ACCELERATORS[name].description}); choose another name")
        ACCELERATORS[name] = spec


def checkpointer(ctx: Context, stage: str) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(os.path.abspath(ctx.wd.file("checkpoints", stage)),
                                 # a save interrupted by Ctrl-C or a kill leaves a `*.orbax-checkpoint-tmp*`
                                 # folder: removed here, and never taken for a checkpoint
                                 options=ocp.CheckpointManagerOptions(max_to_keep=2, cleanup_tmp_directories=True))


def restore_latest(mngr: ocp.CheckpointManager, template: dict[str, Any]) -> dict[str, Any] | None:
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


def to_pure(state: dict[str, Any]) -> dict[str, Any]:
    return {"nnx": nnx.to_pure_dict(state["nnx"]), "epoch": np.asarray(state["epoch"], np.int64),
            "seconds": np.asarray(state["seconds"], np.float64)}


def from_pure(template: dict[str, Any], pure: dict[str, Any]) -> dict[str, Any]:
    nnx.replace_by_pure_dict(template["nnx"], pure["nnx"])
    return {"nnx": template["nnx"], "epoch": int(pure["epoch"]), "seconds": float(pure["seconds"])}


def search_mask(cfg: Any, space: SearchSpace) -> SpaceMask | None:
    """The part of `space` a search may visit: `space.free` (regexes of the decisions that may
    change; the others are held at the baseline architecture's choice) minus `space.remove`
    (`{decision regex: choices no search may take}`, each choice removed from every matching
    decision that has it); None when both are empty.

    Raises:
      ConfigError: a regex that names no decision, a space without a baseline, an unknown choice.
    """
    free, remove = tuple(cfg.space.get("free", ()) or ()), dict(cfg.space.get("remove", {}) or {})
    if not free and not remove:
        return None
    names = [d.name for d in space.decisions]
    allowed = space.full_mask().allowed.copy()
    if free:
        if not isinstance(space, HasBaseline):
            raise ConfigError(f"space.free holds the other decisions at the baseline; {space.name} has none")
        base = space.baseline_arch()
        for f in free:
            if not any(re.fullmatch(f, n) for n in names):
                raise ConfigError(f"space.free: {f!r} matches no decision of {space.name} "
                                  f"(decisions: {', '.join(names[:4])}, ..., {names[-1]})")
        for d, n in enumerate(names):
            if not any(re.fullmatch(f, n) for f in free):
                allowed[d] = False
                allowed[d, base[d]] = True
    exact = {}  # `space.remove` keys are regexes of decision names: each choice from every match holding it
    for key, choices in remove.items():
        matched = [d for d in space.decisions if re.fullmatch(key, d.name)]
        if not matched:
            raise ConfigError(f"space.remove: {key!r} matches no decision of {space.name} "
                              f"(decisions: {', '.join(names[:4])}, ..., {names[-1]})")
        for c in choices:
            holders = [d.name for d in matched if str(c) in map(str, d.choices)]
            if not holders:
                raise ConfigError(f"space.remove: no decision matching {key!r} has the choice {c!r} "
                                  f"(choices of {matched[0].name}: {[str(x) for x in matched[0].choices]})")
            for n in holders:
                exact.setdefault(n, []).append(c)
    try:
        return space.mask(remove=exact, allowed=allowed)
    except (KeyError, ValueError) as e:
        raise ConfigError(f"space.remove: {e.args[0] if e.args else e}") from None


def eval_input(key: Any, x: Any) -> Any:
    """The held-out input pipeline of every stage (an `AugmentFn`): normalisation, no augmentation."""
    del key
    return D.normalize(x)


def task_of(ctx: Context) -> Any:
    """The config's task (`task.name`, `supernet.tasks.TASKS`, with `task.kwargs`) for the run's space."""
    return task_for(ctx.cfg, ctx.space)


def task_for(cfg: Any, space: SearchSpace) -> Any:
    """`task_of` for a config and space (what `experiments.checks` validates up front).

    Raises:
        ConfigError: an unknown task or an option it does not take.
    """
    name = cfg.task.name
    if name not in TASKS:
        raise ConfigError(f"unknown task.name {name!r}; valid: {', '.join(sorted(TASKS))}")
    try:
        return make_task(name, space, **dict(cfg.task.get("kwargs", {})))
    except ValueError as e:
        raise ConfigError(f"task.kwargs: {e}") from None


def splits(ctx: Context) -> tuple[DeviceData, DeviceData]:
    d = ctx.data()
    tr, va = D.split_train(d, val_fraction=ctx.cfg.single_shot.val_fraction, seed=ctx.cfg.seed)
    return DeviceData.put(tr.x, tr.y, ctx.mesh), DeviceData.put(va.x, va.y, ctx.mesh)


def target_of(cfg: Any, space: SearchSpace | None = None) -> tuple[float | None, str]:
    """`(target ms, where it came from)`: an explicit `cost.target_ms` wins; else `target_frac`
    (a config's own key) times the space's baseline architecture's latency under the search's cost
    model (exact analytic on `cost.accelerator`, or the surrogate's prediction); else none."""
    if cfg.cost.target_ms is not None:
        return cfg.cost.target_ms, "cost.target_ms"
    frac = cfg.get("target_frac")
    if frac is None or frac == 0:
        return None, "none"
    if not isinstance(frac, (int, float)) or not 0 < frac:
        raise ConfigError(f"target_frac must be a number > 0 (a fraction of the baseline's latency), got {frac!r}")
    if not isinstance(space, HasBaseline):
        raise ConfigError("target_frac needs a space with a baseline architecture; set cost.target_ms instead")
    table = space.layers(jnp.asarray(space.baseline_arch()))
    if cfg.cost.model == "surrogate":  # the fraction of what the search's own cost model says
        from hwmodel.surrogate import predict
        sur = surrogate_of(cfg, space)[0]
        base_ms, model = float(predict(sur, sur.executed(table))), "surrogate"
    else:
        base_ms, model = float(analytic.latency_ms(ACCELERATORS[cfg.cost.accelerator], table)), f"analytic {cfg.cost.accelerator}"
    return frac * base_ms, f"target_frac {frac:g} x baseline {base_ms:.4g} ms ({model})"


def cost_config(cfg: Any, space: SearchSpace | None = None) -> CostConfig:
    """The CostConfig of `cfg.cost`, its target from `target_of`."""
    c = cfg.cost
    target, source = target_of(cfg, space)
    if c.form in ("proxyless", "tunas", "hinge", "constraint") and target is None:
        raise ConfigError(f"cost.form={c.form!r} needs a latency target: set cost.target_ms (ms) or target_frac")
    return from_section(CostConfig, c, target_ms=target)


def fitted_surrogate(ctx: Context):
    """The latency surrogate the config asks for (`surrogate_of`), loaded or fitted once per run and
    kept on the context (the search and the final report use it)."""
    if ctx._surrogate is None:
        ctx._surrogate, ctx._surrogate_train = surrogate_of(ctx.cfg, ctx.space)
    return ctx._surrogate


def surrogate_of(cfg: Any, space: SearchSpace) -> tuple[Any, tuple[np.ndarray, np.ndarray] | None]:
    """`(surrogate, (archs, latency_ms) it was fitted on, or None for a saved file)`: the file
    `cost.surrogate.file` (e.g. the article's per-layer estimator, `python -m
    experiments.fit_surrogate --per-layer ... --save`), or a whole-network fit on `train_size` rows
    of `cost.surrogate.csv`; bad input is a `ConfigError` naming the config keys."""
    from experiments import fit_surrogate as F
    from hwmodel.fit import fit_space, split
    from hwmodel.tables import InputError
    s = cfg.cost.surrogate
    try:
        if s.file:
            return F.load_surrogate(data_path(s.file)), None
        if s.csv:
            archs, lat = F.load_latency_csv(data_path(s.csv), space, s.column or None, s.arch_column or None)
            idx, _ = split(len(archs), s.train_size, cfg.seed)
            return fit_space(space, archs[idx], lat[idx], dead_code=s.dead_code), (archs[idx], lat[idx])
        raise ConfigError("cost.model='surrogate' needs cost.surrogate.file or cost.surrogate.csv")
    except InputError as e:  # the fit's messages name its command-line flags: say the config keys
        msg = str(e.args[0] if e.args else e)
        for flag, key in _SURROGATE_FLAGS.items():
            msg = msg.replace(flag, key)
        raise ConfigError(msg) from None


def surrogate_ratios(ctx: Context) -> np.ndarray:
    """`measured / predicted` of the surrogate's training cells, each by a fit without it
    (`hwmodel.fit.loo_ratios`): what `cost.confidence` turns into a limit on the prediction."""
    if ctx._surrogate_ratios is None:
        from hwmodel.fit import loo_ratios
        surrogate = fitted_surrogate(ctx)
        if ctx._surrogate_train is None:
            raise ConfigError("cost.confidence needs the surrogate's training measurements: fit it in the run "
                              "(cost.surrogate.csv), not from a saved file")
        ctx._surrogate_ratios = loo_ratios(ctx.space, *ctx._surrogate_train, surrogate)
    return ctx._surrogate_ratios


#: `python -m experiments.fit_surrogate` flags and the config keys that set the same thing in a run.
_SURROGATE_FLAGS = {"--arch-column": "cost.surrogate.arch_column", "--column": "cost.surrogate.column",
                    "--train-size": "cost.surrogate.train_size", "--data": "cost.surrogate.csv",
                    "--dead-code": "cost.surrogate.dead_code"}


def data_source(dc: Any, quiet: bool = False) -> str:
    """What `data.name = "auto"` means now: `cifar10` when CIFAR-10 is found, else `synthetic`."""
    try:
        D.find_source(dc.dir or None)
        return "cifar10"
    except FileNotFoundError:
        if not quiet:
            print("data.name=auto: CIFAR-10 not found, using the synthetic stand-in (set HWNAS_DATA_DIR)")
        return "synthetic"


def data_path(path: str) -> str:
    """`{data}/...` in config paths means the shared data folder (`$HWNAS_DATA_DIR` or ../shared/data)."""
    return path.replace("{data}", str(D.resolve_data_dir(None)))


def search_config(cfg: Any, space: SearchSpace) -> SearchConfig:
    """The `SearchConfig` of `cfg.single_shot` and `cfg.cost`; a bad value is a `ConfigError`."""
    sc = cfg.single_shot
    try:
        return from_section(SearchConfig, sc, optim=OptimConfig(**dict(sc.optim)), tau=tuple(sc.tau),
                            arch_lr_min=None if sc.arch_lr_min < 0 else sc.arch_lr_min,
                            cost=cost_config(cfg, space), seed=cfg.seed, steps_per_epoch=sc.steps_per_epoch or None)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"config single_shot / cost: {e}") from None




def search_anchor(cfg: Any, space: SearchSpace) -> np.ndarray:
    """`single_shot.anchor`, the anchor of the sandwich and of progressive shrinking: the space's
    baseline (`"baseline"`) or an architecture string of the space; a bad value is a `ConfigError`."""
    text = cfg.single_shot.anchor
    if text == "baseline":
        if not isinstance(space, HasBaseline):
            raise ConfigError(f"single_shot.anchor='baseline': space {space.name!r} has no baseline network; "
                              f"give an architecture string of the space")
        return space.baseline_arch()
    try:
        return space.decode(text)
    except ValueError as e:
        raise ConfigError(f"single_shot.anchor={text!r} is not an architecture of {space.name!r}: {e}") from None


def last_metric(ctx: Context, stage: str, key: str) -> float | None:
    vals = [m[key] for m in ctx.wd.metrics() if m.get("stage") == stage and key in m]
    return vals[-1] if vals else None

