"""Pipeline stages composed by a config: `config.stages = ["single_shot", "retrain"]` etc.

Each stage reads and extends a `Context` (`experiments.context`: space, data, mask, architecture,
results) and writes its outputs to the workdir (`stages/<name>.json`), so a rerun skips finished
stages and resumes an interrupted one from its orbax checkpoint. `experiments.checks` refuses
unknown names and orders that make no sense (e.g. `retrain` before anything chose an architecture).

Stages: `baseline`, `single_shot`, `retrain` (`experiments.train_stages`), `zero_shot`, `evolve`
(`experiments.search_stages`). Every run ends with the architecture's costs from `hwmodel` and, when
a lookup table is configured (NAS-Bench-201), its table accuracy and latencies. `launch` is the one
sequence every launcher (`experiments.run`, `experiments.sweep`) runs a config through.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hwmodel import analytic, memory
from hwmodel.accelerators import ACCELERATORS
from hwmodel.layers import total_flops
from hwmodel.measure import make_backend
from hwmodel.tables import numbers, read_csv, require_columns
from supernet.space import SpaceMask
from experiments.checks import check_config, check_stages, resolve_data_source
from experiments.config import ConfigError, to_dict
from experiments.configs.common import CHANGED_DEFAULTS, RETIRED, base
from experiments.context import STAGES, Context, data_path, fitted_surrogate, register_presets, target_of
from experiments.workdir import Workdir, held, recorded_config


# ------------------------------------------------------------------ costs and table lookups
def hardware_costs(ctx: Context, arch: np.ndarray) -> dict[str, Any]:
    """Latency of every configured accelerator (exact analytic) and measurement backend
    (`report.measured`), memory, and surrogate latency."""
    table = ctx.space.layers(jnp.asarray(arch))
    spec = ACCELERATORS[ctx.cfg.cost.accelerator]
    lat = {f"analytic:{name}": float(analytic.latency_ms(ACCELERATORS[name], table))
           for name in ctx.cfg.report.accelerators}
    out = {"latency_ms": lat, "flops": float(total_flops(table)), "params_bytes": float(memory.param_bytes(spec, table)),
           "peak_activation_bytes": float(memory.peak_activation_bytes(table, spec))}
    for name in ctx.cfg.report.get("measured", ()):
        backend = make_backend(name)
        try:
            lat[name] = float(backend.measure(table, layers=False).latency_ms)
        finally:
            backend.close()
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
            out = {"table_accuracy_pct": float(numbers(path, [row], t.column, first_row=i + 1)[0])}
            for c in t.latency_columns:
                out.setdefault("table_latency_ms", {})[c] = float(numbers(path, [row], c, positive=True, first_row=i + 1)[0])
            return out
    raise ConfigError(f"architecture {key} not in {path}")


#: What `results.json`'s `accuracy_pct` is, by the stage and key it was taken from, in order of
#: preference (a retrained network's test metric before a search's own estimate).
ACCURACY_SOURCES = {
    ("retrain", "test_accuracy"): "retrain: test accuracy (%) of the found network trained {start}",
    ("retrain", "test_miou"): "retrain: test mIoU (%) of the found network trained {start} (segmentation)",
    ("retrain", "test_map"): "retrain: test COCO mAP@[.5:.95] (%) of the found network trained {start} "
                             "(detection)",
    ("evolve", "accuracy"): "evolve: the evaluator's accuracy (%) of the best candidate",
    ("evolve", "miou"): "evolve: the evaluator's validation mIoU (%) of the best candidate (segmentation)",
    ("evolve", "map"): "evolve: the evaluator's validation COCO mAP (%) of the best candidate (detection)",
    ("single_shot", "inherited_val_accuracy"): "single_shot: validation accuracy (%) of the derived subnet "
                                               "of the searched supernet, inherited weights, BN recalibrated",
    ("single_shot", "supernet_val_accuracy"): "single_shot: validation accuracy (%) of the supernet with the "
                                              "found architecture, its own running BN statistics",
}


def in_percent(stage: str, out: dict[str, Any], cfg: Any) -> dict[str, Any]:
    """A stage's output as `results.json` shows it: every accuracy in percent, its key ending in
    `_pct` (the stage files keep what the stages computed: fractions, or the lookup table's percent
    for `evolve.evaluator=table`)."""
    scale = 1.0 if stage == "evolve" and cfg.evolve.evaluator == "table" else 100.0

    def pct(k: str) -> bool:
        return k.endswith(("accuracy", "miou", "map", "ap50", "ap75"))

    def convert(d: dict[str, Any]) -> dict[str, Any]:
        return {(k + "_pct" if pct(k) else k):
                (v * scale if pct(k) and isinstance(v, (int, float)) else v) for k, v in d.items()}

    res = convert(out)
    if "front" in res:
        res["front"] = [convert(r) for r in res["front"]]
    return res


def run_pipeline(cfg: Any, wd: Workdir, executor: Any = None) -> dict[str, Any]:
    """Runs `cfg.stages` in order (skipping finished ones) and writes `results.json`; `executor`
    (`experiments.executors`) runs the costly evaluations of `evolve` (default: this process)."""
    check_stages(list(cfg.stages))
    ctx = Context.of(cfg, wd, executor)
    space = ctx.space
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
    # the first source (in ACCURACY_SOURCES' order) the stages produced; a zero-shot-scored evolve has none
    src = next(((s, k) for s, k in ACCURACY_SOURCES if k in outputs.get(s, {})), None)
    res["accuracy_pct"] = None if src is None else in_percent(src[0], {src[1]: outputs[src[0]][src[1]]}, cfg)[src[1] + "_pct"]
    # `{start}`: how a retrained network began, from scratch or warm-started (`retrain.init_from`)
    start = "from retrain.init_from's weights" if cfg.retrain.get("init_from", "") else "from scratch"
    res["accuracy_source"] = None if src is None else ACCURACY_SOURCES[src].format(start=start)
    target, source = target_of(cfg, space)
    if target is not None:  # every target a stage worked against, and where it came from
        res["latency_target_ms"], res["latency_target_source"] = target, source
    res.update(hardware_costs(ctx, ctx.arch))
    res.update(table_lookup(ctx, ctx.arch))
    res["stages"] = {s: in_percent(s, {k: v for k, v in o.items() if k not in ("probs", "mask", "ranking", "history", "slice")}, cfg)
                     for s, o in outputs.items()}
    wd.write_results(res)
    return res



def prepare(cfg: Any, quiet: bool = False) -> None:
    """Fixes `data.name = "auto"` to the source found now and checks the whole config: what every
    launcher does before it touches a workdir (a bad config stops here, with nothing written)."""
    resolve_data_source(cfg, quiet=quiet)
    register_presets(cfg)  # the config's own accelerators, before anything names them
    check_config(cfg)


def launch(cfg: Any, workdir: str, overwrite: bool = False, executor: Any = None) -> dict[str, Any]:
    """Runs a `prepare`d config into `workdir` (created, resumed, or refused when it holds another
    config; `overwrite` moves that aside) and returns `results.json`. Keys added to `base()` since a
    run started resume at their defaults. `executor` is how, not what: results do not depend on it,
    so it is not part of the config."""
    if not overwrite:
        adopt_recorded_defaults(cfg, recorded_config(workdir))
    jax.config.update("jax_default_matmul_precision", cfg.get("matmul_precision", "default"))
    with held(workdir):  # one process per workdir
        wd = Workdir.open(workdir, to_dict(cfg), overwrite=overwrite, defaults=to_dict(base()), retired=RETIRED)
        return run_pipeline(cfg, wd, executor)


def adopt_recorded_defaults(cfg: Any, recorded: dict[str, Any] | None) -> None:
    """A workdir started before a default changed (`CHANGED_DEFAULTS`) resumes with the old value it
    recorded, when `cfg` holds the new default there: the run goes on as it started."""
    if not recorded:
        return
    for key, (old, new) in CHANGED_DEFAULTS.items():
        node, stored = cfg, recorded
        *path, leaf = key.split(".")
        for k in path:
            node, stored = node[k], stored.get(k, {}) if isinstance(stored, dict) else {}
        if isinstance(stored, dict) and stored.get(leaf) == old and node[leaf] == new:
            node[leaf] = old
            print(f"{key}: resuming with {old!r} as this workdir recorded (the default is now {new!r})")
