"""Several processes (hosts) for one run: `python -m experiments.run ... --distributed`.

`initialize` calls `jax.distributed.initialize` before anything touches a device. The coordinator
address, the process count and this process's id come from the flags (`--coordinator HOST:PORT
--num-processes N --process-id I`), else from `JAX_COORDINATOR_ADDRESS` / `JAX_NUM_PROCESSES` /
`JAX_PROCESS_ID`, else from JAX's own detection of the cluster (Slurm, Open MPI, TPU pods, ...).
On CPUs the processes exchange collectives through Gloo.

After it, `jax.devices()` lists every process's devices: `supernet.training.make_mesh` builds the
`data` mesh over all of them, every array is placed with a global sharding, and each process's
devices compute their shard of every global batch (the data set itself is small and replicated:
each process loads it and gathers its shard on its own devices, which is the "feed" of this design).
Only process 0 writes the workdir (`experiments.workdir.is_writer`); every process reads it, so
every process resumes from it, and orbax checkpoints are written by all processes together.

Example (two processes on one machine; the second command in another shell):
    python -m experiments.run --config experiments/configs/nb201/single_shot.py:smoke --workdir /tmp/d \\
        --distributed --coordinator localhost:12355 --num-processes 2 --process-id 0
    python -m experiments.run ... --process-id 1
"""

from __future__ import annotations

import os
from typing import Any

import jax

from experiments.config import ConfigError


def add_flags(parser: Any) -> None:
    parser.add_argument("--distributed", action="store_true",
                        help="one run over several processes (jax.distributed); see experiments/distributed.py")
    parser.add_argument("--coordinator", default=None, help="HOST:PORT of process 0 (env JAX_COORDINATOR_ADDRESS)")
    parser.add_argument("--num-processes", type=int, default=None, help="processes in all (env JAX_NUM_PROCESSES)")
    parser.add_argument("--process-id", type=int, default=None, help="this process, 0..N-1 (env JAX_PROCESS_ID)")


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer") from None


def initialize(args: Any, timeout_s: int = 120) -> None:
    """`jax.distributed.initialize` from the flags / environment, when `--distributed` is given."""
    if not args.distributed:
        for flag in ("coordinator", "num_processes", "process_id"):
            if getattr(args, flag) is not None:
                raise ConfigError(f"--{flag.replace('_', '-')} needs --distributed")
        return
    coordinator = args.coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS")
    n = args.num_processes if args.num_processes is not None else _env_int("JAX_NUM_PROCESSES")
    pid = args.process_id if args.process_id is not None else _env_int("JAX_PROCESS_ID")
    if n is not None and n < 1 or pid is not None and n is not None and not 0 <= pid < n:
        raise ConfigError(f"--process-id {pid} must be in 0..{(n or 1) - 1} (--num-processes {n})")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU collectives across processes
    try:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=n, process_id=pid,
                                   initialization_timeout=timeout_s)
    except (ValueError, RuntimeError) as e:
        raise ConfigError(f"jax.distributed.initialize failed ({str(e).splitlines()[0]}); give --coordinator "
                          "HOST:PORT, --num-processes and --process-id, or run under Slurm / a TPU pod") from None

