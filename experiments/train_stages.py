"""The stages that train: `baseline` (the space's reference architecture, e.g. MobileNetV2),
`single_shot` (bilevel supernet search, `supernet.single_shot`, resumed from its orbax checkpoint)
and `retrain` (the architecture trained from scratch with a fixed schedule; its weights saved for
`experiments.export`). Registered in `experiments.context.STAGES`."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any

import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from tqdm import tqdm

from supernet.model import Subnet, make_supernet
from supernet.derive import model_limit
from supernet.objectives import MEMORY_BUDGETS, CostConfig, hardware_in_loss, make_cost_fn
from supernet.single_shot import SingleShot
from supernet.space import HasBaseline, SearchSpace
from supernet.spaces import make_space
from supernet.tasks import Classification
from supernet.training import (DeviceData, OptimConfig, TrainConfig, Trainer, evaluate, evaluate_task,
                               recalibrate_bn)
from experiments import data as D
from experiments.config import ConfigError, from_section, to_dict
from experiments.context import (STAGES, Context, checkpointer, eval_input, fitted_surrogate, from_pure, last_metric,
                                 restore_latest, search_anchor, search_config, splits, surrogate_ratios, task_of,
                                 to_pure)


@STAGES.register("baseline")
def stage_baseline(ctx: Context) -> dict[str, Any]:
    if not isinstance(ctx.space, HasBaseline):
        raise ConfigError(f"space {ctx.space.name!r} has no baseline architecture")
    ctx.arch = ctx.space.baseline_arch()
    return {"arch": ctx.space.encode(ctx.arch)}


@STAGES.register("given")
def stage_given(ctx: Context) -> dict[str, Any]:
    """The architecture of `given.arch` (checked by `experiments.checks`): retraining a network
    picked by hand or from a search's front, e.g. the segmentation study's candidates A-E."""
    ctx.arch = ctx.space.decode(ctx.cfg.given.arch)
    return {"arch": ctx.space.encode(ctx.arch)}


def _single_shot(ctx: Context) -> tuple[SingleShot, Any, DeviceData, DeviceData]:
    """The configured search, restored from its latest checkpoint when there is one."""
    cfg, sc = ctx.cfg, ctx.cfg.single_shot
    search_cfg = search_config(cfg, ctx.space)
    cost = search_cfg.cost
    surrogate = fitted_surrogate(ctx) if cost.model == "surrogate" and cost.uses_latency else None
    limits = model_limits(cost, surrogate_ratios(ctx) if surrogate is not None and cost.confidence else None)
    if "latency_ms" in limits:  # the loss aims at the limit the returned architecture is held to
        search_cfg = dataclasses.replace(search_cfg, cost=dataclasses.replace(cost, target_ms=limits["latency_ms"]))
    # the supernet of `single_shot.space_kwargs`'s proxy (same decisions), costs of the searched space
    net = make_supernet(proxy_space(cfg, ctx.space, "single_shot"), rngs=nnx.Rngs(cfg.seed), **dict(sc.supernet))
    task = task_of(ctx)
    search = SingleShot(ctx.space, net, search_cfg, mask=ctx.mask,
                        cost_fn=make_cost_fn(ctx.space, search_cfg.cost, surrogate) if cost.uses_cost else None,
                        augment=image_augment(task), mesh=ctx.mesh, limits=limits, task=task,
                        anchor=search_anchor(cfg, ctx.space) if search_cfg.uses_anchor else None)
    train, val = splits(ctx)
    steps = min(len(train) // sc.batch_size, sc.steps_per_epoch or 10**9)
    mngr = checkpointer(ctx, "single_shot")
    search.init_optimizers(steps)
    restored = restore_latest(mngr, to_pure(search.state()))
    if restored is None and sc.supernet_from:  # the finished search of another workdir (same training)
        source = ocp.CheckpointManager(os.path.join(shared_supernet(cfg), "checkpoints", "single_shot"))
        restored = restore_latest(source, to_pure(search.state()))
    if restored is not None:
        search.load_state(from_pure(search.state(), restored), steps)
    if ctx.wd.stage_done("single_shot") is None:  # epochs after the checkpoint run (and are logged) again
        ctx.wd.drop_metrics("single_shot", from_epoch=search.epoch)
    return search, mngr, train, val


def image_augment(task: Any):
    """The image part of a task's training augmentation: CIFAR's crop + flip for classification,
    normalisation only for dense tasks (their `Task.augment` flips image and target together)."""
    return D.augment if isinstance(task, Classification) else eval_input


def model_limits(cost: CostConfig, ratios: np.ndarray | None = None) -> dict[str, float]:
    """The limits the returned architecture is held to by the cost model: the memory budgets, and
    the latency target tightened by `cost.confidence` and the surrogate's held-out `measured /
    predicted` ratios (`supernet.derive.model_limit`; None: an exact model, the target itself)."""
    limits = dict(cost.budgets)
    if cost.uses_latency and cost.target_ms is not None:
        limits["latency_ms"] = model_limit(cost.target_ms, ratios, cost.confidence)
    return limits


#: `single_shot` keys that act after the search (what is derived and reported), and may differ
#: between a run and the workdir whose supernet it takes (`single_shot.supernet_from`).
AFTER_SEARCH = ("supernet_from", "top_k", "bn_recalibration")


def shared_supernet(cfg: Any) -> str:
    """The workdir named by `single_shot.supernet_from`, checked to have trained the supernet this
    run would train: its single-shot stage finished, the space, data, seed, zero-shot and search
    settings (but for `AFTER_SEARCH`) and the stages before single_shot equal, and neither loss with
    a hardware term (a latency target or budget that only bounds the derivation is allowed: it
    changes what is returned, not the training)."""
    src = os.path.abspath(cfg.single_shot.supernet_from)
    try:
        with open(os.path.join(src, "config.json")) as f:
            other = json.load(f)["config"]
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(f"single_shot.supernet_from={src!r}: no readable config.json of a run there ({e})") from None
    if not os.path.isfile(os.path.join(src, "stages", "single_shot.json")):
        raise ConfigError(f"single_shot.supernet_from={src!r}: its single_shot stage has not finished; "
                          f"run it to the end first")
    mine = to_dict(cfg)
    strip = lambda sec: {k: v for k, v in (sec or {}).items() if k not in AFTER_SEARCH}
    before = lambda c: list(c["stages"][:c["stages"].index("single_shot")]) if "single_shot" in c["stages"] else None
    differ = [k for k in ("space", "data", "seed", "zero_shot") if other.get(k) != mine.get(k)]
    differ += ["single_shot"] * (strip(other.get("single_shot")) != strip(mine.get("single_shot")))
    differ += ["stages before single_shot"] * (before(other) != before(mine))
    if differ:
        raise ConfigError(f"single_shot.supernet_from={src!r} trained another supernet: {', '.join(differ)} "
                          f"differ from this config")
    for who, c in (("its", other["cost"]), ("this run's", mine["cost"])):
        if hardware_in_loss(c["form"], any(c.get(k) is not None for k in MEMORY_BUDGETS)):
            raise ConfigError(f"single_shot.supernet_from needs searches without a hardware term in the loss; "
                              f"{who} cost.form={c['form']!r} (or a memory budget) trains the logits differently "
                              f"(use cost.form='constraint' or 'none')")
    return src


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
            mngr.save(search.epoch, args=ocp.args.StandardSave(to_pure(search.state())))
    finally:  # an interrupt (Ctrl-C) must not leave the last epoch's async save half written
        mngr.wait_until_finished()
    argmax = search.argmax_arch()
    ctx.supernet = search.model
    # the most probable architectures seed a later evolution (single-shot -> multishot); those whose
    # output is a constant (a NAS-Bench-201 cell cut off by `none` edges: 10 % in the table, what a
    # cost-driven search with near-uniform logits can land on) are no result and are skipped
    top = live_top_k(ctx, search, max(ctx.cfg.single_shot.top_k, 1))
    ctx.ranking = [ctx.space.encode(a) for a in top]
    ctx.arch = top[0]
    skipped = not np.array_equal(top[0], argmax)
    constrained = {"argmax_arch": ctx.space.encode(argmax), "argmax_is_constant": True} if skipped else {}
    if search.limits:
        # a latency target and memory budgets are constraints on what is returned: the most probable
        # live architecture that meets them all by the search's own cost model (`supernet.derive`;
        # the smooth activation peak there bounds the exact one from above)
        d = search.derivation()
        ctx.arch = d.arch
        found = ctx.space.encode(d.arch)  # first in the ranking handed on, the others after it
        ctx.ranking = ([found] + [r for r in ctx.ranking if r != found])[:len(top)]
        argmax_costs = search.costs_of(argmax)
        constrained.update({"argmax_arch": ctx.space.encode(argmax), "meets_target_by_model": d.feasible,
                            "rank_by_probability": d.rank, "derivation_exact": d.exact,
                            "model_limits": search.limits,
                            **{f"{k}_model": v for k, v in d.costs.items()}})
        if "latency_ms" in argmax_costs:
            constrained["argmax_latency_ms"] = argmax_costs["latency_ms"]
    return {"arch": ctx.space.encode(ctx.arch), "search_seconds": search.seconds,
            "steps_per_epoch": min(len(train) // sc.batch_size, sc.steps_per_epoch or 10**9),
            **inherited_accuracies(ctx, search.model, ctx.arch, train, val), **constrained,
            "search_val_accuracy": last_metric(ctx, "single_shot", "val_acc"),
            "probs": search.probs().tolist(), "ranking": ctx.ranking}


def live_top_k(ctx: Context, search: Any, k: int) -> list[np.ndarray]:
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
    prepare = eval_input
    task = task_of(ctx)
    n = ctx.cfg.single_shot.bn_recalibration
    if not isinstance(task, Classification):  # dense tasks: the derived subnet's metrics (BN recalibrated)
        sub = net.derive(arch)
        if n:
            recalibrate_bn(sub, train, prepare, batches=n, batch_size=ctx.cfg.single_shot.batch_size,
                           seed=ctx.cfg.seed, mesh=ctx.mesh)
        return {f"inherited_val_{k}": v for k, v in evaluate_task(sub, val, prepare, task, mesh=ctx.mesh).items()}
    onehot = ctx.space.one_hot(arch)
    out = {"supernet_val_accuracy": evaluate(net, val, prepare, arch_weights=onehot, mesh=ctx.mesh)}
    if n:
        sub = net.derive(arch)
        recalibrate_bn(sub, train, prepare, batches=n, batch_size=ctx.cfg.single_shot.batch_size,
                       seed=ctx.cfg.seed, mesh=ctx.mesh)
        out["inherited_val_accuracy"] = evaluate(sub, val, prepare, mesh=ctx.mesh)
    return out


#: Where `retrain` saves the trained network's weights (an orbax checkpoint of its NNX state).
MODEL_DIR = "model"


def proxy_space(cfg: Any, space: SearchSpace, section: str = "retrain") -> SearchSpace:
    """The space whose network a training stage trains: `space`, or the space rebuilt with
    `<section>.space_kwargs` overriding its constructor arguments (`retrain`: the retrained network;
    `single_shot`: the supernet). The override makes a training proxy of the searched architecture
    (the same decision vector, e.g. every width halved on half the parallelism factor:
    `mobile-curated` with `parallelism=8` and halved `base_widths`, `stem_width`, `head_width` gives
    each layer exactly half the channels), as ProxylessNAS and MnasNet train reduced proxies when full
    networks are too dear; costs (the latency target, the derivation, the reports) stay those of the
    searched network in `space`.

    Raises:
      ConfigError: the override changes the decisions (their number or choice counts), so the
        architecture would not mean the same choices.
    """
    over = dict(cfg[section].get("space_kwargs", None) or {})
    if not over:
        return space
    proxy = make_space(cfg.space.name, **{**dict(cfg.space.kwargs), **over})
    if [d.name for d in proxy.decisions] != [d.name for d in space.decisions] or \
            not np.array_equal(proxy.num_choices, space.num_choices):
        raise ConfigError(f"{section}.space_kwargs={over} change the space's decisions (their number or "
                          "choice counts); a training proxy must keep them (scale widths and the "
                          "parallelism factor together)")
    return proxy


def build_subnet(cfg: Any, space: SearchSpace, arch: np.ndarray) -> Subnet:
    """The standalone network of `arch` as `retrain` builds it (fresh weights; `load_subnet` fills
    in the trained ones), in `proxy_space(cfg, space)`."""
    net = make_supernet(proxy_space(cfg, space), rngs=nnx.Rngs(cfg.seed + 1), **dict(cfg.single_shot.supernet))
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


#: `subnet_of_workdir`'s word for weights that `retrain` trained.
TRAINED = "trained (retrain)"


def subnet_of_workdir(path: str) -> tuple[Subnet, SearchSpace, str]:
    """`(network, space, which weights)` of a finished run's workdir: its `retrain`ed network when
    it has one (`TRAINED`), else its found network with fresh weights.

    Raises:
      ConfigError: `path` is not a finished run's workdir.
    """
    from experiments.configs.common import base
    cfg_path, res_path = os.path.join(path, "config.json"), os.path.join(path, "results.json")
    for f in (cfg_path, res_path):
        if not os.path.isfile(f):
            raise ConfigError(f"{f} not found: {path!r} is not a finished run's workdir "
                              "(run experiments.run to the end first)")
    with open(cfg_path) as f:
        stored = json.load(f)["config"]
    cfg = base()
    cfg.update(ml_collections.ConfigDict(stored))  # keys added since the run keep their defaults
    with open(res_path) as f:
        res = json.load(f)
    space = make_space(cfg.space.name, **dict(cfg.space.kwargs))
    arch = space.decode(res["architecture"])
    weights = res.get("stages", {}).get("retrain", {}).get("weights")
    if weights:
        return load_subnet(cfg, space, arch, os.path.join(path, weights)), space, TRAINED
    return build_subnet(cfg, space, arch), space, "initial (no retrain stage in this run)"


def warm_start(sub: Subnet, path: str) -> dict[str, Any]:
    """Copies into `sub` every weight and BN statistic of the network `retrain` trained in workdir
    `path` that sits at the same place with the same shape (`retrain.init_from`): a backbone
    pretrained on another task (e.g. CIFAR-10 classification) under a new head; the rest keeps its
    fresh initialisation. Returns how many arrays (and values) were copied.

    Raises:
      ConfigError: `path` has no retrained network, or shares no array with `sub`.
    """
    src, _, how = subnet_of_workdir(path)
    if how != TRAINED:
        raise ConfigError(f"retrain.init_from={path!r}: that run has no retrain stage, so no trained weights")
    have = nnx.to_pure_dict(nnx.state(src))
    counts = {"arrays": 0, "values": 0, "of_arrays": 0}

    def merge(dst: Any, got: Any) -> Any:
        if isinstance(dst, dict):
            return {k: merge(v, got.get(k) if isinstance(got, dict) else None) for k, v in dst.items()}
        counts["of_arrays"] += 1
        if got is not None and np.shape(got) == np.shape(dst):
            counts["arrays"] += 1
            counts["values"] += int(np.size(dst))
            return got
        return dst

    state = nnx.state(sub)
    pure = merge(nnx.to_pure_dict(state), have)
    if counts["arrays"] == 0:
        raise ConfigError(f"retrain.init_from={path!r}: its network shares no weight (same place and shape) "
                          "with this one; pretrain a network of the same widths")
    nnx.replace_by_pure_dict(state, pure)
    nnx.update(sub, state)
    return {"init_from": os.path.abspath(path), "init_arrays": counts["arrays"], "init_of_arrays": counts["of_arrays"],
            "init_values": counts["values"]}


@STAGES.register("retrain")
def stage_retrain(ctx: Context) -> dict[str, Any]:
    cfg, rc = ctx.cfg, ctx.cfg.retrain
    sub = build_subnet(cfg, ctx.space, ctx.arch)  # fresh weights: retraining from scratch
    init = warm_start(sub, rc.init_from) if rc.get("init_from", "") else {}  # or from a pretrained backbone
    d = ctx.data()
    train = DeviceData.put(d.x_train, d.y_train, ctx.mesh)
    test = DeviceData.put(d.x_test, d.y_test, ctx.mesh)
    tcfg = from_section(TrainConfig, rc, optim=OptimConfig(**dict(rc.optim)), seed=cfg.seed,
                        steps_per_epoch=rc.steps_per_epoch or None)
    task = task_of(ctx)
    classify = isinstance(task, Classification)
    # a dense task flips image and target together (Task.augment); CIFAR's crop + flip is images-only
    trainer = Trainer(sub, tcfg, augment=image_augment(task), mesh=ctx.mesh, eval_input=eval_input, task=task)
    ctx.wd.drop_metrics("retrain")  # retraining restarts from scratch: a killed run's epochs go
    t0 = time.perf_counter()
    hist = trainer.fit(train, test, callback=lambda r: ctx.wd.log({"stage": "retrain", **r}))
    save_subnet(trainer.model, ctx.wd.file(MODEL_DIR))
    scores = ({"test_accuracy": hist[-1]["test_acc"]} if classify
              else {k: v for k, v in hist[-1].items() if k.startswith("test_")})
    if not classify:  # the training split too: a dense pipeline that learns nears its ceiling there
        scores.update({f"train_{k}": v for k, v in evaluate_task(trainer.model, train, eval_input, task,
                                                                  mesh=ctx.mesh).items()})
    out = {"arch": ctx.space.encode(ctx.arch), **scores, **init,
           "retrain_seconds": time.perf_counter() - t0, "weights": MODEL_DIR}
    if rc.get("space_kwargs", None):
        out["trained_arch"] = proxy_space(cfg, ctx.space).encode(ctx.arch)  # the proxy's widths
    return out

