"""A sweep run serially and on a local Ray instance, side by side: wall times, their ratio, the
executor's overhead per member, and whether every member's `results.json` is identical.

Both sweeps run as fresh `python -m experiments.sweep` processes on the same machine, one after the
other (serial first), into `ROOT/serial` and `ROOT/ray`; ROOT must not hold them yet. Per member:
`seconds` is the member's own time (measured inside the process or Ray worker that ran it). The
overhead of the executor per member is `(workers * ray_wall - serial_wall) / members`: the worker
seconds the Ray run spent beyond the serial run's (Ray's start, a worker process and imports per
member, compiles without a warm cache, and the two workers slowing each other on shared cores).
`results.json` are compared without their wall times (`search_seconds`, stage `seconds`).

With `--evolve-evals N` it also runs one multishot search whose candidates are trained (`evolve`
with the `train` evaluator, batched REA with `--workers` children per step) serially and on Ray,
and reports both wall times, the seconds per trained candidate, the pool's start-up (each worker
loads the data and compiles once) and whether the two histories are identical.

Prints one JSON object; `docs/results/scaling.md` turns it into the scaling model.

Example (about 25 minutes on a 2-core CPU):
    python benchmarks/sweep_scaling.py --root /tmp/scaling \\
        --config experiments/configs/nb201/ablation.py:quick --only '^(zero|multi|zero\\+multi)/.*seed=[01]$'
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DONE = re.compile(r"^\[\d+/\d+\] (?P<path>\S+) done in (?P<s>[0-9.]+) s")


def run_sweep(cmd: list[str]) -> tuple[float, dict[str, float]]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"sweep failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    members = {m["path"]: float(m["s"]) for m in map(DONE.match, proc.stdout.splitlines()) if m}
    return wall, members


def list_schedule(durations: list[float], workers: int) -> float:
    """Makespan of running `durations` in this order on `workers` (each task goes to the first free
    worker: how Ray hands out queued tasks of equal resources)."""
    free = [0.0] * workers
    for d in durations:
        i = min(range(workers), key=free.__getitem__)
        free[i] += d
    return max(free)


def ray_start_stop_s(workers: int) -> float:
    """Seconds to start a local Ray instance and shut it down again (no tasks)."""
    from experiments.executors import ExecutorSpec, make_executor
    t0 = time.perf_counter()
    make_executor(ExecutorSpec.parse("ray", workers=workers)).close()
    return time.perf_counter() - t0


def results(root: str) -> dict[str, dict]:
    out = {}
    for dirpath, _, files in os.walk(root):
        if "results.json" in files and "old-" not in dirpath:
            res = json.load(open(os.path.join(dirpath, "results.json")))
            res.pop("search_seconds", None)
            for stage in res.get("stages", {}).values():
                stage.pop("seconds", None)
                stage.pop("search_seconds", None)
            out[os.path.relpath(dirpath, root)] = res
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", required=True, help="an empty folder for ROOT/serial and ROOT/ray")
    p.add_argument("--config", default="experiments/configs/nb201/ablation.py:quick")
    p.add_argument("--only", default=r"^(zero|multi|zero\+multi)/.*seed=[01]$")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--evolve-evals", type=int, default=0, help="also a trained multishot search of N candidates")
    p.add_argument("--evolve-config", default="experiments/configs/nb201/single_shot.py:quick")
    p.add_argument("--train-steps", type=int, default=50)
    args = p.parse_args()
    args.root = os.path.abspath(args.root)
    for sub in ("serial", "ray", "evolve-serial", "evolve-ray"):
        if os.path.exists(os.path.join(args.root, sub)):
            sys.exit(f"{os.path.join(args.root, sub)} exists: give an empty --root (results are never overwritten)")
    base = [sys.executable, "-m", "experiments.sweep", "--config", args.config, "--only", args.only]
    serial_wall, serial = run_sweep(base + ["--workdir", os.path.join(args.root, "serial")])
    ray_wall, ray = run_sweep(base + ["--workdir", os.path.join(args.root, "ray"), "--executor", "ray",
                                         "--workers", str(args.workers)])
    n = len(serial)
    order = subprocess.run(base + ["--workdir", os.path.join(args.root, "ray"), "--list"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    start_stop = ray_start_stop_s(args.workers)
    predicted = start_stop + list_schedule([ray[p] for p in order], args.workers)
    a, b = results(os.path.join(args.root, "serial")), results(os.path.join(args.root, "ray"))
    member_s = sorted(serial.values())
    out = {
        "config": args.config, "only": args.only, "members": n, "workers": args.workers,
        "cpus": os.cpu_count(),
        "serial_wall_s": round(serial_wall, 1), "ray_wall_s": round(ray_wall, 1),
        "speedup": round(serial_wall / ray_wall, 3),
        "serial_member_s": {"mean": round(sum(member_s) / n, 1), "min": round(member_s[0], 1),
                            "max": round(member_s[-1], 1), "sum": round(sum(member_s), 1)},
        "ray_member_s_mean": round(sum(ray.values()) / max(len(ray), 1), 1),
        "serial_outside_members_s": round(serial_wall - sum(member_s), 1),
        "overhead_per_member_s": round((args.workers * ray_wall - serial_wall) / n, 1),
        "ray_start_stop_s": round(start_stop, 1),
        # the model's check: Ray's start + the members' own (in-worker) times list-scheduled on the workers
        "ray_wall_predicted_s": round(predicted, 1),
        "unexplained_per_member_s": round((ray_wall - predicted) * args.workers / n, 2),
        "contention": round(sum(ray.values()) / sum(serial.values()), 3),
        "identical_results": a == b and len(a) == n,
        "differing_members": sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k)),
    }
    if args.evolve_evals:
        out["evolve"] = evolve_part(args)
    print(json.dumps(out, indent=1))


def evolve_part(args) -> dict:
    """The same trained multishot search serially and on `workers` Ray workers."""
    over = ["--config.stages=['evolve']", "--config.evolve.evaluator=train",
            f"--config.evolve.train_steps={args.train_steps}", f"--config.evolve.budget_evals={args.evolve_evals}",
            f"--config.evolve.population={2 * args.workers}", f"--config.evolve.batch={args.workers}"]
    base = [sys.executable, "-m", "experiments.run", "--config", args.evolve_config, *over]
    out = {"config": args.evolve_config, "evals": args.evolve_evals, "train_steps": args.train_steps}
    hist = {}
    for name, extra in (("serial", []), ("ray", ["--executor", "ray", "--workers", str(args.workers)])):
        wd = os.path.join(args.root, f"evolve-{name}")
        t0 = time.perf_counter()
        proc = subprocess.run(base + ["--workdir", wd, *extra], cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"evolve ({name}) failed: {proc.stderr[-3000:]}")
        out[f"{name}_wall_s"] = round(time.perf_counter() - t0, 1)
        recs = [json.loads(line) for line in open(os.path.join(wd, "metrics.jsonl"))]
        hist[name] = [{k: v for k, v in r.items() if k != "seconds"} for r in recs if r.get("stage") == "evolve"]
        out[f"{name}_search_s"] = round(json.load(open(os.path.join(wd, "results.json")))["search_seconds"], 1)
    out["speedup_search"] = round(out["serial_search_s"] / out["ray_search_s"], 3)
    out["serial_s_per_candidate"] = round(out["serial_search_s"] / args.evolve_evals, 2)
    out["identical_history"] = hist["serial"] == hist["ray"] and len(hist["serial"]) == args.evolve_evals
    return out


if __name__ == "__main__":
    main()
