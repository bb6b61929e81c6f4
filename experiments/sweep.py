"""Sweeps: `python -m experiments.sweep --config FILE.py[:arg] --workdir ROOT [--config.key=value ...]`.

A config file that defines `get_sweep(arg) -> list[dict]` lists runs as override dicts over its
`get_config(arg)` (big_vision style), e.g. products over seeds and search categories:

    def get_sweep(arg):
        return [{"seed": s, "stages": st} for st in (["single_shot"], ["evolve"]) for s in range(5)]

Each run goes to `ROOT/<name>` (the name is made from the overrides, e.g.
`stages=single_shot+evolve,seed=3`, or an explicit `"name"` item). Every run's overrides are checked
before the first run starts (unknown keys and stages fail at once with the valid names); runs are
executed one after another in this process, and a rerun of the same command skips finished runs and
resumes an interrupted one (the workdir contract of `experiments.run`). `--only REGEX` selects
runs, `--list` prints the plan. Aggregate with `python -m experiments.report ROOT`.

Example (seconds on a CPU):
    python -m experiments.sweep --config experiments/configs/nb201/ablation.py:smoke --workdir /tmp/abl
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import re
import sys
import time
from typing import Any, Sequence

import ml_collections

from experiments.config import ConfigError, apply_overrides, cli_errors, load_config


def _format(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "+".join(_format(v) for v in value)
    return str(value)


def run_name(overrides: dict[str, Any]) -> str:
    """A folder name from the overrides: `key=value` items joined by commas (the leaf key only)."""
    if "name" in overrides:
        return str(overrides["name"])
    parts = [f"{k.split('.')[-1]}={_format(v)}" for k, v in overrides.items()]
    name = ",".join(parts) or "default"
    return name.replace("/", "_").replace(" ", "")


def load_sweep(spec: str, overrides: Sequence[str] = ()) -> list[tuple[str, ml_collections.ConfigDict]]:
    """`(run name, resolved config)` for every run of the sweep file, all validated up front.

    Raises:
      ConfigError: the file has no `get_sweep`, two runs share a name, or a run's override is an
        unknown key / a value of the wrong type / a bad stage list.
    """
    from experiments.pipeline import prepare
    path, _, arg = spec.partition(":")
    base = load_config(spec, overrides)
    mod_spec = importlib.util.spec_from_file_location("_hwnas_sweep", path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    if not hasattr(mod, "get_sweep"):
        raise ConfigError(f"{path} defines no get_sweep(arg); a sweep file lists its runs as override dicts")
    cli_keys = {o[len("--config."):].partition("=")[0] for o in overrides}
    runs, conflicts = [], {}
    for item in mod.get_sweep(arg or None):
        item = dict(item)
        name = run_name(item)
        item.pop("name", None)
        for k in cli_keys & set(item):
            conflicts.setdefault(k, []).append(name)
        cfg = copy.deepcopy(base)
        # dict items become typed `--config.` overrides: the same checks as the command line
        texts = [f"--config.{k}={v!r}" if not isinstance(v, str) else f"--config.{k}={v}"
                 for k, v in item.items()]
        try:
            apply_overrides(cfg, texts)
            prepare(cfg, quiet=True)  # every run's whole config, before the first run starts
        except ConfigError as e:
            raise ConfigError(f"sweep run {name!r}: {e}") from None
        runs.append((name, cfg))
    if conflicts:  # the sweep would silently replace the user's value in these runs
        raise ConfigError("the sweep itself sets " + "; ".join(
            f"{k} (in {len(v)} runs, e.g. {v[0]!r})" for k, v in sorted(conflicts.items()))
            + ": a command-line --config override of these keys would be ignored there; select runs with "
              "--only REGEX or edit get_sweep instead")
    names = [n for n, _ in runs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"sweep runs share the names {dup}; give them distinct overrides or a 'name'")
    if not runs:
        raise ConfigError(f"{path}: get_sweep returned no runs")
    return runs


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="experiments/configs/<study>/<name>.py[:arg] with get_sweep")
    p.add_argument("--workdir", required=True, help="root folder; each run writes ROOT/<run name>")
    p.add_argument("--only", default="", help="run only the runs whose name matches this regular expression")
    p.add_argument("--list", action="store_true", help="print the runs and exit")
    p.add_argument("--overwrite", action="store_true", help="move existing different runs aside")
    args, overrides = p.parse_known_args(argv)
    try:
        only = re.compile(args.only)
    except re.error as e:
        p.exit(2, f"error: --only {args.only!r} is not a regular expression ({e})\n")
    with cli_errors(p):
        every = load_sweep(args.config, overrides)
    runs = [(n, c) for n, c in every if only.search(n)]
    if not runs:
        names = ", ".join(n for n, _ in every[:6]) + (", ..." if len(every) > 6 else "")
        p.exit(2, f"error: no run matched --only {args.only!r}; the {len(every)} runs: {names}\n")
    if args.list:
        for n, _ in runs:
            print(os.path.join(args.workdir, n))
        return {}
    from experiments.pipeline import launch
    summary: dict[str, Any] = {}
    for i, (name, cfg) in enumerate(runs):
        wd_path = os.path.join(args.workdir, name)
        print(f"[{i + 1}/{len(runs)}] {wd_path}", flush=True)
        t0 = time.perf_counter()
        with cli_errors(p, resume="each run's last checkpoint", where=f" in run {name!r}"):
            res = launch(cfg, wd_path, overwrite=args.overwrite)
        summary[name] = {k: res.get(k) for k in ("architecture", "accuracy_pct", "table_accuracy_pct")}
        print(f"  done in {time.perf_counter() - t0:.1f} s: {json.dumps(summary[name])}", flush=True)
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
