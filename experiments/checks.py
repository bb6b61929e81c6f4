"""Checks of a whole config before the workdir is touched and before any work
(`check_config`, `check_stages`), and `resolve_data_source`, which fixes `data.name = "auto"` to the
source found now. Every failure is one `ConfigError` naming the key and what to fix."""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np

from hwmodel.accelerators import ACCELERATORS
from hwmodel.tables import read_csv
from supernet.spaces import make_space
from supernet.derive import ratios_needed
from supernet.tasks import TASKS
from zero_shot.registry import check_task
from supernet.objectives import check_budgets
from experiments import data as D
from experiments.search_stages import ACCURACY_EVALUATORS, GOALS  # (importing it registers every stage)
from experiments.landscape_stage import COSTS as LANDSCAPE_COSTS
from experiments.descent_stage import descent_config
from experiments.expert_stage import mined_rules
from experiments.train_stages import shared_supernet
from supernet import expert
from supernet.spaces.mobile import MobileSpace
from supernet.landscape import line_decisions
from hwmodel.measure import make_backend
from experiments.config import ConfigError, user_message
from experiments.context import (CHOOSERS, SEARCH_ORDER, STAGES, cost_config, data_path, data_source, search_anchor,
                                 search_config, search_mask, task_for)


def resolve_data_source(cfg: Any, quiet: bool = False) -> None:
    """Replaces `data.name = "auto"` by the source it finds now (`cifar10` when CIFAR-10 is there,
    else `synthetic`), before the workdir records the config: a run started on one source then
    never resumes on the other (the workdir refuses the changed `data.name`)."""
    if cfg.data.name == "auto":
        cfg.data.name = data_source(cfg.data, quiet)


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
        if s in ("baseline", "given", "expert") and CHOOSERS & set(stages[:i]):
            raise ConfigError(f"{s!r} would replace the architecture chosen before it in {stages}")
        if s in ("baseline", "given") and set(SEARCH_ORDER) & set(stages):
            raise ConfigError(f"{s!r} is an arm of its own; do not combine it with search stages: {stages}")
        # rules + NAS: the rules' network seeds evolution's population (`evolve.warm_start`)
        if s == "expert" and {"zero_shot", "single_shot"} & set(stages):
            raise ConfigError(f"'expert' is an arm of its own, or seeds a later 'evolve' (rules + NAS); "
                              f"do not combine it with other search stages: {stages}")
    for own in ("landscape", "descend"):
        if own in stages and set(stages) - {own, "retrain"}:
            raise ConfigError(f"{own!r} is a study of its own (only 'retrain' may follow it); got {stages}")
    searches = [s for s in stages if s in SEARCH_ORDER]
    if searches != sorted(searches, key=SEARCH_ORDER.index):
        raise ConfigError(f"search stages must run in the order {' -> '.join(SEARCH_ORDER)} (zero-shot prunes "
                          f"the space for the others, single-shot's supernet seeds evolution); got {stages}")


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
    _need(cfg.data.name == "auto" or cfg.data.name in D.DATASETS,
          f"unknown data.name {cfg.data.name!r}; valid: auto, {', '.join(sorted(D.DATASETS))}")
    _number(cfg, "data.num_train", 0, integer=True)
    _number(cfg, "data.num_test", 0, integer=True)
    _number(cfg, "data.copy_paste", 0, integer=True)
    _need(not cfg.data.copy_paste or cfg.data.name == "coco128-person-boxes",
          f"data.copy_paste builds composites of the person detection set: it needs "
          f"data.name='coco128-person-boxes', not {cfg.data.name!r}")
    search_mask(cfg, space)  # space.free / space.remove name real decisions and choices
    task = cfg.get("task", {}).get("name", "classification")
    _need(task in TASKS, f"unknown task.name {task!r}; valid: {', '.join(sorted(TASKS))}")
    if getattr(space, "head", "classification") == task:  # (a mismatch: the check below)
        task_for(cfg, space)  # task.kwargs are options the task takes
    if "zero_shot" in cfg.stages or cfg.get("evolve", {}).get("guide", "") == "zero_shot":
        try:
            check_task(list(cfg.zero_shot.proxies), task)
        except (KeyError, ValueError) as e:
            raise ConfigError(f"zero_shot.proxies: {e.args[0] if e.args else e}") from None
    if task != "classification":
        _need(getattr(space, "head", "classification") == task,
              f"task.name={task!r} needs a space with that head (space.kwargs head={task!r}); "
              f"{cfg.space.name!r} has head {getattr(space, 'head', 'classification')!r}")
        _need(set(cfg.stages) <= {"baseline", "given", "expert", "zero_shot", "single_shot", "evolve", "retrain"} and
              (cfg.evolve.evaluator in ("capacity", "train", "supernet") or "evolve" not in cfg.stages),
              f"task.name={task!r} runs the stages baseline, given, expert, zero_shot, single_shot, evolve (capacity, "
              f"train or supernet evaluator) and retrain so far; got {list(cfg.stages)} (evolve.evaluator="
              f"{cfg.evolve.evaluator!r})")
        _need(cfg.data.name != "cifar10" and cfg.data.get("input_size", 32) == getattr(space, "input_size", 32),
              f"task.name={task!r} needs its data set (e.g. data.name='coco128-person-masks') letterboxed "
              f"to the space's input_size: data.input_size={cfg.data.get('input_size')}, space "
              f"{getattr(space, 'input_size', None)}")
    if cfg.data.name == "cifar10":
        try:
            D.find_source(cfg.data.dir or None)
        except FileNotFoundError as e:
            raise ConfigError(f"data.name='cifar10': {e}") from None
    for name in cfg.report.get("measured", ()):
        try:
            make_backend(name).close()
        except (KeyError, ValueError) as e:
            raise ConfigError(f"report.measured: {e.args[0] if e.args else e}") from None
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
        check_budgets(space, cost)  # an impossible memory budget: the smallest reachable
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
        if cost.confidence is not None:
            _need(not sur.file, "cost.confidence needs the surrogate's training measurements: fit it in the run "
                                "(cost.surrogate.csv), not from a saved file")
            need = ratios_needed(cost.confidence)
            _need(sur.train_size >= need, f"cost.confidence={cost.confidence} needs cost.surrogate.train_size >= "
                                          f"{need} (held-out errors of the fit), got {sur.train_size}")
    if cfg.table.csv:
        path = data_path(cfg.table.csv)
        if os.path.isfile(path):
            header, _ = read_csv(path, "lookup table (config table.csv)")
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
        if search_config(cfg, space).uses_anchor:
            search_anchor(cfg, space)
        if cfg.single_shot.supernet_from:
            shared_supernet(cfg)
    if "retrain" in stages:
        _number(cfg, "retrain.epochs", 1, integer=True)
        _number(cfg, "retrain.batch_size", 1, integer=True)
        _number(cfg, "retrain.steps_per_epoch", 0, integer=True, note=" (0 = full epochs)")
        _number(cfg, "retrain.label_smoothing", 0, 1, high_open=True)
        src = cfg.retrain.get("init_from", "")
        _need(not src or os.path.isfile(os.path.join(src, "results.json")),
              f"retrain.init_from={src!r} is not a finished run's workdir (no results.json there); point it at "
              "a run whose retrain stage finished, e.g. a CIFAR-10 pretraining of the same widths")
    if "zero_shot" in stages:
        _number(cfg, "zero_shot.target_fraction", 0, 1, low_open=True)
        _number(cfg, "zero_shot.sample", 1, integer=True)
        _number(cfg, "zero_shot.batch_size", 1, integer=True)
        _need(cfg.zero_shot.method in ("marginal", "progressive"),
              f"unknown zero_shot.method {cfg.zero_shot.method!r}; valid: marginal, progressive")
    if "given" in stages:
        _need(bool(cfg.given.arch), "stage 'given' retrains the architecture in given.arch: set it (an "
              "architecture string of the space, e.g. a candidate from `python -m experiments.candidates`)")
        try:
            space.decode(cfg.given.arch)
        except ValueError as err:
            raise ConfigError(f"given.arch: {user_message(err)}") from None
    if "evolve" in stages:
        e = cfg.evolve
        _need(e.algorithm in ALGORITHMS, f"unknown evolve.algorithm {e.algorithm!r}; valid: {', '.join(ALGORITHMS)}")
        _need(e.evaluator in ACCURACY_EVALUATORS,
              f"unknown evolve.evaluator {e.evaluator!r}; valid: {', '.join(sorted(ACCURACY_EVALUATORS))}")
        if e.evaluator == "table":
            _need(bool(cfg.table.csv and cfg.table.column), "evolve.evaluator='table' needs table.csv and table.column")
        if e.evaluator == "supernet":
            from supernet.evaluators import BN_MODES
            _need(e.supernet_bn in BN_MODES, f"unknown evolve.supernet_bn {e.supernet_bn!r}; valid: {', '.join(BN_MODES)}")
        _number(cfg, "evolve.budget_evals", 0, integer=True)
        _number(cfg, "evolve.budget_seconds", 0)
        _need(e.budget_evals > 0 or e.budget_seconds > 0,
              "evolve needs a budget: evolve.budget_evals > 0 or evolve.budget_seconds > 0")
        _number(cfg, "evolve.guide_prob", 0, 1)
        _number(cfg, "evolve.batch", 1, integer=True)
        _need(e.get("goal", "accuracy") in GOALS, f"unknown evolve.goal {e.get('goal')!r}; valid: {', '.join(GOALS)}")
        if e.measure:
            try:  # an unknown backend or ZigZag description lists the valid ones, before any work
                make_backend(e.measure).close()
            except KeyError as err:
                raise ConfigError(f"evolve.measure: {user_message(err)}") from None
    if "landscape" in stages:
        lc = cfg.landscape
        _need(lc.cost in LANDSCAPE_COSTS or lc.cost in ACCELERATORS,
              f"unknown landscape.cost {lc.cost!r}; valid: {', '.join(LANDSCAPE_COSTS)} or an accelerator "
              f"({', '.join(sorted(ACCELERATORS))})")
        _number(cfg, "landscape.alpha", 0)
        for key in ("walks", "walk_steps", "lines", "descents"):
            _number(cfg, f"landscape.{key}", 1, integer=True)
        _need(len(lc.slice) == 2 and len(set(lc.slice)) == 2,
              f"landscape.slice names two different decisions, got {tuple(lc.slice)}")
        _need(bool(line_decisions(space, lc.line_decisions)),
              f"landscape.line_decisions={lc.line_decisions!r} matches no ordered decision with more than "
              f"two choices of {space.name}")
        _number(cfg, "landscape.workers", 1, integer=True)
        for name in lc.measured:
            try:
                make_backend(name).close()
            except (KeyError, ValueError) as e:
                raise ConfigError(f"landscape.measured: {e.args[0] if e.args else e}") from None
        for name in lc.slice:
            _need(name in [d.name for d in space.decisions],
                  f"landscape.slice: {space.name} has no decision {name!r}; e.g. "
                  f"{', '.join(d.name for d in space.decisions[-4:])}")
    if "descend" in stages:
        descent_config(cfg, space)
    if "expert" in stages:
        _need(isinstance(space, MobileSpace), f"the expert stage needs a mobile space, not {space.name!r}")
        rules = list(cfg.expert.rules) + (mined_rules(cfg.expert.mine_from) if cfg.expert.mine_from else [])
        try:
            applied = expert.apply_rules(space, space.baseline_arch(), rules)
        except (KeyError, ValueError) as e:
            raise ConfigError(f"expert.rules: {e.args[0] if e.args else e}") from None
        if cfg.expert.hold:
            _need("evolve" in stages, f"expert.hold fixes the rules' decisions for a later 'evolve'; "
                                      f"this run has none: {list(stages)}")
            try:
                expert.hold(space, applied, search_mask(cfg, space))
            except ValueError as e:
                raise ConfigError(f"expert.hold: {e.args[0]}") from None
