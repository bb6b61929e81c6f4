"""Sweeps: `python -m experiments.sweep --config FILE.py[:arg] --workdir ROOT [--config.key=value ...]`.

A config file that defines `get_sweep(arg) -> list[dict]` lists runs as override dicts over its
`get_config(arg)` (big_vision style), e.g. products over seeds and search categories:

    def get_sweep(arg):
        return [{"seed": s, "stages": st} for st in (["single_shot"], ["evolve"]) for s in range(5)]

Each run goes to `ROOT/<name>` (the name is made from the overrides, e.g.
`stages=single_shot+evolve,seed=3`, or an explicit `"name"` item). Every run's overrides are checked
before the first run starts (unknown keys and stages fail at once with the valid names); runs are
executed one after another in this process (`--executor local`, the default) or as Ray tasks
(`--executor ray [--address ADDR] [--resources-per-run cpu=1,gpu=0]`: a local Ray instance started
for the sweep, or an existing cluster; `experiments.executors`). Each run's output is also written to
`ROOT/<name>/sweep.log`; a run that fails is reported with its error and that log while the others
go on (the sweep then exits 1). Compiled functions are kept in `ROOT/.jax_cache` (JAX's persistent
compilation cache; `JAX_COMPILATION_CACHE_DIR` chooses another folder), which every member reads. A rerun of the same command skips finished runs and resumes
interrupted ones (the workdir contract of `experiments.run`), on either executor: a sweep stopped
with Ctrl-C or killed leaves every workdir resumable. `--only REGEX` selects
runs, `--list` prints the plan. Aggregate with `python -m experiments.report ROOT`.

Example (seconds on a CPU):
    python -m experiments.sweep --config experiments/configs/nb201/ablation.py:smoke --workdir /tmp/abl
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib.util
import json
import os
import re
import sys
import time
import traceback
from typing import Any, Sequence

import ml_collections

from experiments.config import ConfigError, apply_overrides, cli_errors, load_config
from experiments.executors import Failure, add_flags, make_executor, spec_of, tee_output


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


@dataclasses.dataclass(frozen=True)
class Member:
    """One run of a sweep, as an executor ships it (picklable).

    Attributes:
      name, cfg: the run's name and resolved config.
      workdir: its folder, `ROOT/<name>`.
      overwrite: move a different run found there aside.
      echo: also print its output here (the local executor), not only into `<workdir>/sweep.log`.
      cache: the sweep's persistent JAX compilation cache.
    """

    name: str
    cfg: Any
    workdir: str
    overwrite: bool
    echo: bool
    cache: str


def run_member(member: Member) -> dict[str, Any]:
    """One sweep member, wherever it runs (this process or a Ray worker): `launch` into its workdir
    with its output copied into `<workdir>/sweep.log`; returns the summary the sweep prints.

    Compiled functions go to the sweep's persistent JAX cache: a member in a fresh process (a Ray
    worker) loads what another member compiled instead of compiling it again; the cached executables
    are the ones a compile would produce, so results do not change."""
    t0 = time.perf_counter()
    import jax
    jax.config.update("jax_compilation_cache_dir", member.cache)
    from experiments.pipeline import launch
    with tee_output(log_path(member.workdir), echo=member.echo) as log:
        try:
            res = launch(member.cfg, member.workdir, overwrite=member.overwrite)
        except Exception:
            log.write(traceback.format_exc())  # the log has the traceback, the sweep's report one line
            raise
    return {"seconds": time.perf_counter() - t0, **{k: res.get(k) for k in SUMMARY_KEYS}}


#: What the sweep prints of each member's `results.json`.
SUMMARY_KEYS = ("architecture", "accuracy_pct", "table_accuracy_pct")


def log_path(wd_path: str) -> str:
    """Where a member's output goes (appended by every attempt)."""
    return os.path.join(wd_path, "sweep.log")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="experiments/configs/<study>/<name>.py[:arg] with get_sweep")
    p.add_argument("--workdir", required=True, help="root folder; each run writes ROOT/<run name>")
    p.add_argument("--only", default="", help="run only the runs whose name matches this regular expression")
    p.add_argument("--list", action="store_true", help="print the runs and exit")
    p.add_argument("--overwrite", action="store_true", help="move existing different runs aside")
    add_flags(p)
    args, overrides = p.parse_known_args(argv)
    try:
        only = re.compile(args.only)
    except re.error as e:
        p.exit(2, f"error: --only {args.only!r} is not a regular expression ({e})\n")
    with cli_errors(p):
        spec = spec_of(args)
        every = load_sweep(args.config, overrides)
    runs = [(n, c) for n, c in every if only.search(n)]
    if not runs:
        names = ", ".join(n for n, _ in every[:6]) + (", ..." if len(every) > 6 else "")
        p.exit(2, f"error: no run matched --only {args.only!r}; the {len(every)} runs: {names}\n")
    if args.list:
        for n, _ in runs:
            print(os.path.join(args.workdir, n))
        return {}
    root = os.path.abspath(args.workdir)
    cache = os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.join(root, ".jax_cache")
    members = [Member(name, cfg, os.path.join(root, name), args.overwrite, spec.name == "local", cache)
               for name, cfg in runs]
    summary: dict[str, Any] = {}
    failed: dict[str, Failure] = {}
    with cli_errors(p, resume="each run's last checkpoint"), make_executor(spec) as ex:
        print(f"{len(runs)} runs on the {spec.name} executor" + (f" ({spec.address})" if spec.address else ""),
              flush=True)
        done = 0
        for i, out in ex.run_all(run_member, members):
            done += 1
            name, wd_path = members[i].name, members[i].workdir
            if isinstance(out, Failure):
                failed[name] = out
                print(f"[{done}/{len(runs)}] FAILED {wd_path}: {out} (log: {log_path(wd_path)})", flush=True)
                continue
            summary[name] = {k: out[k] for k in SUMMARY_KEYS}
            print(f"[{done}/{len(runs)}] {wd_path} done in {out['seconds']:.1f} s: {json.dumps(summary[name])}",
                  flush=True)
    if failed:
        p.exit(1, f"error: {len(failed)} of {len(runs)} runs failed (the others finished): "
                  + "; ".join(f"{n}: {f} (log: {log_path(os.path.join(root, n))})" for n, f in failed.items())
                  + "\nfix them and rerun the same command: finished runs are skipped\n")
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
