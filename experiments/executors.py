"""Executors for independent work: `local` (in this process, one item after another: the default)
and `ray` (Ray tasks and actors on a local Ray instance or an existing cluster).

Two kinds of work go through an executor:

- `Executor.run_all(fn, items)`: independent runs (the members of `experiments.sweep`), each a task
  that may fail on its own; outcomes arrive as they finish, a failure as a `Failure` (its type,
  message and traceback) while the others go on.
- `Executor.pool(setup, workers)`: a `Pool` of workers that each build one object once (`setup()`,
  e.g. an evaluator that loaded its data and compiled its training step) and then map batches over
  it in order (`Pool.map`), for the candidates of a multishot generation (`experiments.search_stages`).

Neither changes results: a member's result depends on its own config and seed only, and a
candidate's evaluation on the candidate only (the evaluators of `supernet.evaluators` give each
candidate the same initialisation and batches), so the serial and the Ray runs agree.

Ray is optional (`pip install -e '.[ray]'`). Bad settings stop in seconds with one `ExecutorError`:
an address nothing listens on, resources the cluster does not have (Ray would otherwise queue the
tasks forever), Ray not installed.

Example:
    >>> spec = ExecutorSpec.parse("local")
    >>> with make_executor(spec) as ex:
    ...     sorted(ex.run_all(lambda x: 10 // x, [1, 0, 5]), key=lambda o: o[0])[1][1].type
    'ZeroDivisionError'
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import io
import os
import socket
import sys
import traceback
from typing import Any, Callable, Iterator, Sequence, TypeVar

from experiments.config import ConfigError

T = TypeVar("T")

EXECUTORS = ("local", "ray")


class ExecutorError(ConfigError):
    """Executor settings that cannot work (the message says what to fix)."""


@dataclasses.dataclass(frozen=True)
class Failure:
    """An item whose function raised: what a report shows instead of its result."""

    type: str
    message: str
    traceback: str

    @classmethod
    def of(cls, e: BaseException) -> "Failure":
        return cls(type(e).__name__, str(e), "".join(traceback.format_exception(e)))

    def __str__(self) -> str:
        return f"{self.type}: {self.message}"


def parse_resources(text: str) -> dict[str, float]:
    """`"cpu=1,gpu=0"` -> `{"cpu": 1.0, "gpu": 0.0}` (each run's or worker's share of a node)."""
    out = {"cpu": 1.0, "gpu": 0.0}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, eq, value = part.partition("=")
        key = key.strip().lower()
        try:
            amount = float(value)
        except ValueError:
            amount = -1.0
        if not eq or key not in out or amount < 0:
            raise ExecutorError(f"--resources-per-run {text!r}: expected items like cpu=1,gpu=0 (cpu and gpu, "
                                f"non-negative numbers); {part!r} is not one")
        out[key] = amount
    if out["cpu"] == 0 and out["gpu"] == 0:
        raise ExecutorError(f"--resources-per-run {text!r} asks for nothing; give each run cpu >= 1 or a gpu")
    return out


@dataclasses.dataclass(frozen=True)
class ExecutorSpec:
    """Which executor and where: `name` (`local` or `ray`), `address` (an existing Ray cluster,
    `host:port`, `auto` or `ray://host:port`; empty: a local Ray instance started for this command),
    `resources` (per run or pool worker) and `workers` (pool size and, for a local Ray instance, the
    CPUs it may use; 0: the CPUs of this machine)."""

    name: str = "local"
    address: str = ""
    resources: tuple[tuple[str, float], ...] = (("cpu", 1.0), ("gpu", 0.0))
    workers: int = 0

    @classmethod
    def parse(cls, name: str, address: str = "", resources: str = "cpu=1,gpu=0", workers: int = 0) -> "ExecutorSpec":
        if name not in EXECUTORS:
            raise ExecutorError(f"unknown executor {name!r}; valid: {', '.join(EXECUTORS)}")
        if address and name != "ray":
            raise ExecutorError(f"--address {address!r} needs --executor ray")
        if workers < 0:
            raise ExecutorError(f"--workers {workers} must be >= 0 (0: one per CPU)")
        return cls(name, address, tuple(sorted(parse_resources(resources).items())), workers)

    @property
    def per_run(self) -> dict[str, float]:
        return dict(self.resources)


def add_flags(parser: Any) -> None:
    """The executor flags of `experiments.sweep` and `experiments.run`."""
    parser.add_argument("--executor", default="local", choices=EXECUTORS,
                        help="local: one after another in this process; ray: Ray tasks (sweep members) and "
                             "actors (a generation's candidates)")
    parser.add_argument("--address", default="", help="an existing Ray cluster (host:port, auto, ray://...); "
                                                     "default: start a local Ray instance for this command")
    parser.add_argument("--resources-per-run", default="cpu=1,gpu=0", help="each Ray task's or worker's share")
    parser.add_argument("--workers", type=int, default=0,
                        help="Ray workers for a generation's candidates, and the CPUs of a local Ray instance "
                             "(0: this machine's CPUs)")


def spec_of(args: Any) -> ExecutorSpec:
    return ExecutorSpec.parse(args.executor, args.address, args.resources_per_run, args.workers)


class Pool(abc.ABC):
    """Workers that each hold `setup()`'s object; `map(fn, items)` -> `[fn(obj, item) ...]` in order."""

    workers: int = 1

    @abc.abstractmethod
    def map(self, fn: Callable[[Any, Any], T], items: Sequence[Any]) -> list[T]: ...

    def close(self) -> None:
        pass


class Executor(abc.ABC):
    """Runs independent items (`run_all`) and holds worker pools (`pool`); a context manager."""

    spec: ExecutorSpec

    @abc.abstractmethod
    def run_all(self, fn: Callable[[Any], T], items: Sequence[Any]) -> Iterator[tuple[int, T | Failure]]:
        """`(index, fn(item) or its Failure)` for every item, in the order they finish."""

    @abc.abstractmethod
    def pool(self, setup: Callable[[], Any], workers: int = 0) -> Pool: ...

    @property
    def parallel(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _LocalPool(Pool):
    def __init__(self, setup: Callable[[], Any]):
        self.holder = _Holder(setup)

    def map(self, fn, items):
        return [self.holder.call(fn, item) for item in items]


class LocalExecutor(Executor):
    """Today's behaviour: every item in this process, one after another (Ctrl-C stops at once)."""

    def __init__(self, spec: ExecutorSpec = ExecutorSpec()):
        self.spec = spec

    def run_all(self, fn, items):
        for i, item in enumerate(items):
            yield i, _capture(fn, item)  # a member's failure is reported, the others go on

    def pool(self, setup, workers=0):
        return _LocalPool(setup)


def _check_reachable(address: str, timeout_s: float = 3.0) -> None:
    """A `host:port` (or `ray://host:port`) that does not accept a TCP connection within seconds is
    an error now, not a Ray connection attempt that retries for a minute or more."""
    if address in ("", "auto", "local"):
        return
    host_port = address.split("://", 1)[-1]
    host, sep, port = host_port.rpartition(":")
    if not sep or not port.isdigit():
        raise ExecutorError(f"--address {address!r}: expected host:port, ray://host:port or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ExecutorError(f"no Ray cluster reachable at {address!r} ({e.strerror or e}); start one there with "
                            "`ray start --head --port PORT`, or leave out --address for a local Ray instance") from None


def _capacity(need: dict[str, float], have: dict[str, float], where: str) -> int:
    """How many runs of `need` the cluster's resources `have` hold at once; none is an error (Ray
    would queue them forever)."""
    fits = []
    for key, ray_key in (("cpu", "CPU"), ("gpu", "GPU")):
        if need[key] > 0:
            fits.append(int(have.get(ray_key, 0.0) // need[key]))
            if fits[-1] < 1:
                raise ExecutorError(f"each run asks for {key}={need[key]:g} but {where} has "
                                    f"{have.get(ray_key, 0.0):g} {ray_key}s in all, so it would wait forever; "
                                    "lower --resources-per-run")
    return min(fits)


class _Holder:
    """A Ray actor's payload: the object `setup()` built, and calls on it."""

    def __init__(self, setup: Callable[[], Any]):
        self.obj = setup()

    def call(self, fn: Callable[[Any, Any], Any], item: Any) -> Any:
        return fn(self.obj, item)


class _RayPool(Pool):
    def __init__(self, ray: Any, setup: Callable[[], Any], workers: int, options: dict[str, Any]):
        from ray.util import ActorPool
        self.ray, self.workers = ray, workers
        actor = ray.remote(_Holder).options(**options)
        self.actors = [actor.remote(setup) for _ in range(workers)]
        self._pool = ActorPool(self.actors)

    def map(self, fn, items):
        return list(self._pool.map(lambda a, item: a.call.remote(fn, item), list(items)))  # in order

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)


class RayExecutor(Executor):
    """Ray tasks for `run_all`, Ray actors for `pool` (`ray.util.ActorPool`).

    Without an address a local Ray instance is started for this command (with `workers` CPUs, or all)
    and shut down at the end; with one, this process joins that cluster. Ctrl-C cancels every
    pending and running task (their workdirs resume on the next run) and re-raises."""

    def __init__(self, spec: ExecutorSpec):
        try:
            import ray
        except ImportError:
            raise ExecutorError("--executor ray needs Ray: pip install -e '.[ray]'") from None
        _check_reachable(spec.address)
        self.spec, self.ray = spec, ray
        # JAX / XLA settings of this process (e.g. JAX_COMPILATION_CACHE_DIR) hold in every worker
        env = {k: v for k, v in os.environ.items() if k.startswith(("JAX_", "XLA_", "HWNAS_"))}
        kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, configure_logging=False,
                                      runtime_env={"env_vars": env} if env else None)
        if spec.address:
            kwargs["address"] = spec.address
        else:
            kwargs["num_cpus"] = spec.workers or os.cpu_count() or 1
        try:
            with contextlib.redirect_stderr(io.StringIO()):
                ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ExecutorError(f"cannot start or join Ray ({spec.address or 'a local instance'}): "
                                f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        self._owned, self._pools = True, []
        where = f"the Ray cluster at {spec.address}" if spec.address else "the local Ray instance"
        try:
            self.capacity = _capacity(spec.per_run, ray.cluster_resources(), where)
        except ExecutorError:
            self.close()
            raise
        self.options = {"num_cpus": spec.per_run["cpu"], "num_gpus": spec.per_run["gpu"]}

    @property
    def parallel(self) -> bool:
        return True

    def run_all(self, fn, items):
        ray = self.ray
        task = ray.remote(_capture).options(max_retries=0, **self.options)
        refs = {task.remote(fn, item): i for i, item in enumerate(items)}
        try:
            pending = list(refs)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    try:
                        yield refs[ref], ray.get(ref)
                    except ray.exceptions.RayError as e:  # the worker died (killed, out of memory)
                        cause = getattr(e, "cause", None)
                        yield refs[ref], Failure.of(cause if isinstance(cause, Exception) else e)
        except BaseException:  # Ctrl-C or the consumer stopped: nothing keeps running behind it
            for ref in refs:
                ray.cancel(ref, force=True)
            raise

    def pool(self, setup, workers=0):
        n = workers or self.spec.workers or self.capacity
        busy = sum(p.workers for p in self._pools)
        if busy + n > self.capacity:  # Ray would queue the new actors until the others die: never
            raise ExecutorError(f"a pool of {n} workers does not fit beside the {busy} already held: the cluster "
                                f"runs {self.capacity} at {self.spec.per_run}; lower --workers")
        pool = _RayPool(self.ray, setup, n, self.options)
        self._pools.append(pool)
        return pool

    def close(self) -> None:
        for pool in getattr(self, "_pools", ()):
            pool.close()
        if getattr(self, "_owned", False):
            self.ray.shutdown()
            self._owned = False


def _capture(fn: Callable[[Any], T], item: Any) -> T | Failure:
    """A Ray task's body: the failure travels back as a `Failure` (the user's exception types need
    not unpickle in the driver, and Ray's wrapping stays out of the report)."""
    try:
        return fn(item)
    except Exception as e:  # noqa: BLE001
        return Failure.of(e)


def make_executor(spec: ExecutorSpec) -> Executor:
    return RayExecutor(spec) if spec.name == "ray" else LocalExecutor(spec)


@contextlib.contextmanager
def tee_output(path: str, echo: bool = True) -> Iterator[io.TextIOBase]:
    """Copies this process's Python-level stdout and stderr into `path` (appended), and also to the
    console when `echo`: a member's log, wherever it ran. Yields the log file (for what only the log
    should hold, e.g. a traceback)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "a", buffering=1) as log:
        out, err = sys.stdout, sys.stderr

        class Tee(io.TextIOBase):
            def __init__(self, stream):
                self.stream = stream

            def write(self, s):
                log.write(s)
                if echo:
                    self.stream.write(s)
                return len(s)

            def flush(self):
                log.flush()
                if echo:
                    self.stream.flush()

        sys.stdout, sys.stderr = Tee(out), Tee(err)
        try:
            yield log
        finally:
            sys.stdout, sys.stderr = out, err
