"""The launcher: `python -m experiments.run --config FILE.py[:arg] --workdir DIR [--config.key=value ...]`.

Runs the pipeline of stages named in the config (`experiments.pipeline`) into the workdir
(`experiments.workdir`). Rerunning the same command resumes; a different config in an existing
workdir is refused unless `--overwrite` (which moves the old run aside). Config errors (unknown keys,
stages or names) stop before any work with one message. Prints `results.json` at the end.
`--executor ray [--workers N]` evaluates the candidates of a multishot generation (`evolve` with the
`train` or `supernet` evaluator) on N Ray workers, with the serial run's results. `--distributed`
runs one pipeline over several processes (`experiments.distributed`: `jax.distributed`, a mesh over
every process's devices, process 0 writes the workdir).

Example (seconds on a CPU):
    python -m experiments.run --config experiments/configs/nb201/single_shot.py:smoke --workdir /tmp/nb201
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from experiments import distributed
from experiments.config import cli_errors, load_config
from experiments.executors import add_flags, make_executor, spec_of
from experiments.workdir import is_writer


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="experiments/configs/<study>/<name>.py[:arg]")
    p.add_argument("--workdir", required=True, help="folder for config.json, metrics, checkpoints, results")
    p.add_argument("--overwrite", action="store_true", help="move an existing different run aside")
    add_flags(p)
    distributed.add_flags(p)
    args, overrides = p.parse_known_args(argv)
    with cli_errors(p, resume=f"the last checkpoint in {args.workdir}"):
        spec = spec_of(args)
        distributed.initialize(args)  # before anything touches a device
        cfg = load_config(args.config, overrides)
        from experiments.pipeline import launch, prepare  # heavy imports
        prepare(cfg)  # the whole config, before the workdir is touched
        with make_executor(spec) as executor:
            results = launch(cfg, args.workdir, overwrite=args.overwrite, executor=executor)
    if is_writer():  # process 0 speaks for a distributed run
        print(json.dumps(results, indent=1, sort_keys=True))
        print(summary(results, args.workdir))
    return results


def summary(res: dict, workdir: str) -> str:
    """A few lines a person reads: what was found, which accuracy is which, costs, time, where."""
    lines = [f"found ({res.get('space')}): {res.get('architecture')}"]
    if res.get("accuracy_pct") is not None:
        lines.append(f"  accuracy {res['accuracy_pct']:.2f} %: {res.get('accuracy_source')}")
    ss = res.get("stages", {}).get("single_shot", {})
    if "inherited_val_accuracy_pct" in ss and res.get("accuracy_pct") != ss["inherited_val_accuracy_pct"]:
        lines.append(f"  inherited accuracy {ss['inherited_val_accuracy_pct']:.2f} %: the searched supernet's weights, BN "
                     "recalibrated (near chance after mixture training: the weights were trained in the mixture)")
    if "table_accuracy_pct" in res:
        lines.append(f"  table accuracy {res['table_accuracy_pct']:.2f} %: the same cell in the benchmark's own network "
                     "(NAS-Bench-201 lookup)")
    lat = dict(res.get("latency_ms", {}), **{f"table:{k}": v for k, v in res.get("table_latency_ms", {}).items()})
    if lat:
        lines.append("  latency ms: " + ", ".join(f"{k} {v:.3g}" for k, v in sorted(lat.items())))
    if "params_bytes" in res:
        lines.append(f"  memory: params {res['params_bytes'] / 1e3:.1f} kB, peak activations "
                     f"{res['peak_activation_bytes'] / 1e3:.1f} kB")
    lines.append(f"  search time {res.get('search_seconds', 0.0):.0f} s; everything is in {workdir}")
    return "\n".join(lines)


if __name__ == "__main__":
    main(sys.argv[1:])
