"""Evaluators for multishot search: batched `archs [N, D] int -> {objective name: values [N]}`.

Every evaluator is an `Evaluator`: callable on a batch of architectures, with the names of the
objectives it returns in `names` (so a search can check its objectives and constraints before any
work). They are registered by name in `EVALUATORS` and built with `make_evaluator(name, space,
**kwargs)`; a typo lists the valid names.

- `table`: lookup in a CSV of measured architectures (NAS-Bench-201: 200-epoch validation accuracy,
  HW-NAS-Bench latencies), vectorised through an index built once; an architecture missing from the
  table is an error naming it.
- `zero_shot`: wraps a scoring callable `archs [N, D] -> scores [N]` (e.g. a `zero_shot` rank
  ensemble), so a search can use trainability scores as its fitness.
- `supernet`: one-shot evaluation (Bender et al., "Understanding and simplifying one-shot
  architecture search", ICML 2018; Guo et al., SPOS, ECCV 2020): held-out accuracy of the trained
  supernet with the candidate's one-hot architecture and inherited weights, BN in eval mode. One
  compiled function serves every architecture (the architecture is an array input).
- `train`: true multishot: each candidate is trained from the same fresh initialisation for a fixed
  number of steps (the supernet with the candidate's fixed one-hot architecture: one compiled
  train-and-evaluate function for all candidates) and its validation accuracy returned.
- `capacity`: log10 FLOPs, a training-free capacity proxy (no accuracy: see its docstring).
- `hwcost`: hardware costs from `hwmodel`, jitted and vmapped over the batch: exact analytic latency
  on named accelerators (`latency_ms:<accelerator>`), surrogate latency (`latency_ms:surrogate`),
  `params_bytes` and `peak_activation_bytes`, and measured columns of a CSV (through `table`).
- `measured`: latency from a `hwmodel.measure` backend (ONNX Runtime, JAX, the ZigZag simulator).
- `composite`: several evaluators whose objectives are merged (names must not clash).
- `PooledEvaluator` (not registered: built from a pool of workers): a batch split over workers that
  each hold an equal evaluator, for parallel multishot generations.

Example:
    >>> from supernet.spaces import make_space
    >>> space = make_space("nb201")
    >>> ev = make_evaluator("hwcost", space, accelerators=("npu",))
    >>> sorted(ev(space.sample(jax.random.key(0), 4)))
    ['latency_ms:npu', 'params_bytes', 'peak_activation_bytes']
"""

from __future__ import annotations

import abc
import os
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P
from jaxtyping import Int

from hwmodel import analytic, memory as hwmemory
from hwmodel.accelerators import ACCELERATORS
from hwmodel.layers import prune_dead, total_flops
from hwmodel.registry import Registry
from hwmodel.tables import numbers, read_csv, require_columns
from supernet.blocks import single_path
from supernet.landscape import table_function
from supernet.space import SearchSpace
from supernet.training import (AugmentFn, BNRecalibrator, DeviceData, OptimConfig, batch_stats, cross_entropy,
                               held_out_batch, summarise_batches,
                               held_out_correct, identity_input, make_mesh, weight_tx)


Objectives = dict[str, np.ndarray]
"""Named objective values, each `float64 [N]`."""


class Evaluator(abc.ABC):
    """`evaluator(archs [N, D]) -> {name: values [N]}` with the names known in advance (`names`)."""

    names: tuple[str, ...] = ()

    def __init__(self, space: SearchSpace):
        self.space = space

    def __call__(self, archs: Int[np.ndarray, "n d"]) -> Objectives:
        a = self.space.validate_batch(archs)
        out = self.evaluate(a)
        for k in self.names:
            if k not in out or np.shape(out[k]) != (len(a),):
                raise RuntimeError(f"{type(self).__name__} returned no [N={len(a)}] values for {k!r}")
        return {k: np.asarray(out[k], np.float64) for k in self.names}

    @abc.abstractmethod
    def evaluate(self, archs: np.ndarray) -> Mapping[str, Any]:
        """The objectives of validated architectures `int32 [N, D]`."""


EVALUATORS: Registry[Callable[..., Evaluator]] = Registry("evaluator")


def make_evaluator(name: str, space: SearchSpace, **kwargs: Any) -> Evaluator:
    """Builds the registered evaluator `name` for `space` (kwargs go to its constructor).

    Raises:
      KeyError: unknown name (the message lists the valid ones).
    """
    return EVALUATORS[name](space, **kwargs)


def arch_codes(space: SearchSpace, archs: np.ndarray) -> np.ndarray:
    """A unique integer per architecture (mixed radix); object ints when the space exceeds int64."""
    if space.size < 2**62:
        return np.ravel_multi_index(tuple(np.asarray(archs).T), tuple(space.num_choices)).astype(np.int64)
    radix = np.cumprod([1] + list(space.num_choices[::-1].astype(object)))[:-1][::-1]
    return np.asarray([int(np.dot(a.astype(object), radix)) for a in archs], dtype=object)


# ------------------------------------------------------------------ table lookup
@EVALUATORS.register("table")
class TableEvaluator(Evaluator):
    """Objectives looked up in a CSV with an architecture column (the space's string encoding).

    Example:
        >>> import os, pathlib, tempfile
        >>> from supernet.spaces import make_space
        >>> space = make_space("nb201")
        >>> best = "|nor_conv_3x3~0|+|nor_conv_1x1~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|"
        >>> path = os.path.join(tempfile.mkdtemp(), "nb201.csv")  # e.g. NAS-Bench-201's table
        >>> _ = pathlib.Path(path).write_text(f"arch_str,cifar10_valid_acc\\n{best},91.57\\n")
        >>> ev = TableEvaluator(space, path, {"accuracy": "cifar10_valid_acc"})
        >>> ev(np.stack([space.decode(best)]))["accuracy"]
        array([91.57])
    """

    def __init__(self, space: SearchSpace, path: str, columns: Sequence[str] | Mapping[str, str],
                 arch_column: str = "arch_str"):
        """Reads the table and builds the index.

        Args:
          space: the space whose `decode` parses the architecture column.
          path: the CSV file.
          columns: column names (the objectives keep them), or `{objective name: column}`.
          arch_column: the column holding architecture strings.
        """
        super().__init__(space)
        cols = dict(columns) if isinstance(columns, Mapping) else {c: c for c in columns}
        if not cols:
            raise ValueError("TableEvaluator needs at least one column")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"lookup table {path!r} not found (shared data lives in "
                                    "$HWNAS_DATA_DIR or ../shared/data)")
        header, rows = read_csv(path, "lookup table")
        require_columns(path, header, [arch_column, *cols.values()])
        try:
            self.archs = np.stack([space.decode(r[arch_column]) for r in rows])
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        self.values = {k: numbers(path, rows, c) for k, c in cols.items()}  # every row finite
        self.path, self.names = path, tuple(cols)
        codes = arch_codes(space, self.archs)
        if space.size <= 2**26:  # a dense row index: one gather per batch
            self._dense = np.full(space.size, -1, np.int64)
            self._dense[codes[::-1]] = np.arange(len(codes))[::-1]  # first occurrence wins
            self._dict = None
        else:
            self._dense, self._dict = None, {}
            for i, c in enumerate(codes):
                self._dict.setdefault(c, i)
        if len(set(codes.tolist())) != len(codes):
            raise ValueError(f"{path}: an architecture appears in more than one row")

    def rows(self, archs: np.ndarray) -> np.ndarray:
        """Row index of each architecture; KeyError naming the first missing one."""
        codes = arch_codes(self.space, archs)
        if self._dense is not None:
            idx = self._dense[codes]
        else:
            idx = np.asarray([self._dict.get(c, -1) for c in codes], np.int64)
        missing = np.flatnonzero(idx < 0)
        if missing.size:
            raise KeyError(f"{missing.size} architecture(s) not in {self.path}, e.g. "
                           f"{self.space.encode(archs[missing[0]])}")
        return idx

    def evaluate(self, archs: np.ndarray) -> Objectives:
        idx = self.rows(archs)
        return {k: v[idx] for k, v in self.values.items()}


# ------------------------------------------------------------------ zero-shot scores
@EVALUATORS.register("zero_shot")
class ZeroShotEvaluator(Evaluator):
    """A scoring callable as an evaluator: `score_fn(archs [N, D]) -> scores [N]` (or a dict of them).

    Example:
        >>> from supernet.spaces import make_space
        >>> space = make_space("nb201")
        >>> ev = ZeroShotEvaluator(space, lambda a: a.sum(1) * 1.0, name="score")  # any scorer
        >>> ev(np.array([[1, 2, 3, 4, 0, 1]]))["score"]
        array([11.])
    """

    def __init__(self, space: SearchSpace, score_fn: Callable[[np.ndarray], Any],
                 name: str | Sequence[str] = "zero_shot"):
        """`name`: the objective's name, or the keys of the dict `score_fn` returns."""
        super().__init__(space)
        self.score_fn = score_fn
        self.names = (name,) if isinstance(name, str) else tuple(name)

    def evaluate(self, archs: np.ndarray) -> Mapping[str, Any]:
        out = self.score_fn(archs)
        if not isinstance(out, Mapping):
            out = {self.names[0]: np.asarray(out, np.float64).reshape(-1)}
        return {k: np.asarray(v, np.float64).reshape(-1) for k, v in out.items()}


def log10_flops(table) -> jax.Array:
    """The capacity proxy of a layer table (one network's, or the expected table of a distribution,
    `supernet.capacity_descent`): log10 of its FLOPs (at least 1)."""
    return jnp.log10(jnp.maximum(total_flops(table), 1.0))


@EVALUATORS.register("capacity")
class CapacityEvaluator(ZeroShotEvaluator):
    """`log10` of the network's FLOPs (2 x MACs): a training-free capacity proxy for a search that
    trades capacity against hardware cost before any accuracy can be had (a chip in its design
    phase, or a CPU too slow to train the mobile space). In the MobileNet family ImageNet accuracy
    grows about linearly in log MACs (MobileNetV2's width-multiplier and resolution table, Sandler
    et al. 2018, Table 6 / Fig. 5), which is also the task term of `supernet.landscape`'s objective.
    It knows nothing else about accuracy (it prefers a wide network to a deep one of equal MACs).

    Example:
        >>> from supernet.spaces import make_space
        >>> space = make_space("mobile-curated")
        >>> ev = CapacityEvaluator(space)
        >>> small, base = ev(np.stack([np.zeros(space.num_decisions, np.int32), space.baseline_arch()]))["capacity"]
        >>> bool(small < base)
        True
    """

    def __init__(self, space: SearchSpace, name: str = "capacity"):
        super().__init__(space, table_function(space, log10_flops), name)


def dense_task(task: Any) -> Any:
    """`task` when it needs its own loss and held-out statistics; None for classification (or no
    task), which the evaluators score by their fused in-jit count of correct predictions."""
    from supernet.tasks import Classification
    return None if task is None or isinstance(task, Classification) else task


# ------------------------------------------------------------------ one-shot (inherited weights)
@EVALUATORS.register("supernet")
class SupernetEvaluator(Evaluator):
    """Held-out accuracy of `net(x, space.one_hot(arch))` with the supernet's (inherited) weights
    (`task`, a `supernet.tasks.Task`: a dense task's `main_metric` instead, e.g. mIoU).

    The weights are a snapshot taken when the evaluator is made. `bn="running"`: BatchNorm uses its
    running statistics (eval mode), so the accuracy equals that of `net.derive(arch)` evaluated in
    eval mode. Those statistics were accumulated under the search's mixture of operations, not under
    the candidate alone, which biases one-shot accuracies (a mixture-trained supernet's derived
    subnets score at chance with them). `bn="recalibrate"` recomputes them for each candidate on
    `calib_batches` batches of `calib` (training images) under the candidate's architecture, then
    evaluates in eval mode: SPOS's per-subnet BN recalibration (Guo et al., ECCV 2020, sec. 3.3;
    `training.BNRecalibrator`). `bn="batch"` normalises every held-out batch by its own statistics
    (train-mode BatchNorm, nothing stored), the large-batch limit of the recalibration; use
    batches of a few hundred images for it. `traces` counts compilations of the evaluation function
    (1 for any number of architectures).
    """

    def __init__(self, space: SearchSpace, net: nnx.Module, data: DeviceData,
                 prepare: AugmentFn = identity_input, batch_size: int = 500,
                 mesh: jax.sharding.Mesh | None = None, name: str = "accuracy", bn: str = "running",
                 calib: DeviceData | None = None, calib_batches: int = 10, calib_batch_size: int = 128,
                 task: Any = None):
        super().__init__(space)
        if bn not in BN_MODES:
            raise ValueError(f"unknown bn {bn!r}; valid: running (eval-mode statistics), recalibrate "
                             "(recomputed per candidate on training batches), batch (per-batch)")
        if bn == "recalibrate" and calib is None:
            raise ValueError("bn='recalibrate' needs calib, the training images to recompute the statistics on")
        self.names, self.data, self.traces = (name,), data, 0
        task = dense_task(task)
        mesh = mesh or make_mesh()
        bs = held_out_batch(batch_size, len(data), mesh)
        self._calib = (BNRecalibrator(net, calib, prepare, batches=calib_batches, batch_size=calib_batch_size,
                                      mesh=mesh) if bn == "recalibrate" else None)
        if bn != "batch":
            net.eval()
        graphdef, self._state = nnx.split(net)  # train mode: BN computes (and drops) batch statistics
        net.train()

        def correct(state, data, arch):
            self.traces += 1
            model = nnx.merge(graphdef, state)
            with single_path():  # one-hot weights: only the candidate's operations run
                return held_out_correct(model, data, space.one_hot(arch), prepare, bs, mesh,
                                         unroll=bn == "batch")

        def stats(state, data, arch, i):  # a dense task's statistics of held-out batch i
            self.traces += 1
            with single_path():
                return batch_stats(nnx.merge(graphdef, state), data, space.one_hot(arch), prepare, bs, mesh, task, i)

        self.task, self._bs = task, bs
        self._correct, self._stats = jax.jit(correct), jax.jit(stats)

    def evaluate(self, archs: np.ndarray) -> Objectives:
        n = len(self.data)
        acc = []
        for a in archs:
            state = self._state if self._calib is None else self._calib(self._state, self.space.one_hot(a))
            if self.task is None:
                acc.append(int(self._correct(state, self.data, jnp.asarray(a))) / n)
            else:
                summary = summarise_batches(self.task, lambda i: self._stats(state, self.data, jnp.asarray(a), i), n,
                                            self._bs)
                acc.append(summary[self.task.main_metric])
        return {self.names[0]: np.asarray(acc)}


#: BatchNorm statistics of `SupernetEvaluator` (and the launcher's `evolve.supernet_bn`).
BN_MODES = ("running", "recalibrate", "batch")


# ------------------------------------------------------------------ multishot (train each candidate)
@EVALUATORS.register("train")
class TrainEvaluator(Evaluator):
    """Trains each candidate from the same fresh initialisation for `steps` steps; validation accuracy.

    The network is the space's supernet with the candidate's one-hot architecture fixed: operations
    with weight 0 get zero gradients, so this trains exactly the candidate's subnetwork (their
    BatchNorm statistics are never read; `blocks.single_path` skips computing them: the same
    function, up to float32 rounding of a differently fused graph), and one compiled function (`traces` counts them) trains and evaluates every candidate. Every candidate starts from the same weights and sees the same
    batches in the same order (common random numbers): differences come from the architecture
    alone, and a candidate's accuracy is deterministic. Objectives: `name` (validation accuracy)
    and `train_loss` (mean loss over the last 10% of steps).

    `task` (a `supernet.tasks.Task`; default: classification by cross-entropy and held-out
    accuracy): a dense task trains on its own loss with its joint image-and-target augmentation
    (`Task.augment`, with `augment` as the image part) and `name` is its `main_metric` on the
    validation data (mIoU, or COCO mAP through pycocotools on the host), a fraction.
    """

    def __init__(self, space: SearchSpace, train: DeviceData, val: DeviceData, steps: int = 100,
                 batch_size: int = 64, optim: OptimConfig = OptimConfig(lr=0.05, lr_min=0.0, grad_clip=5.0),
                 seed: int = 0, make_net: Callable[[nnx.Rngs], nnx.Module] | None = None,
                 net_kwargs: Mapping[str, Any] | None = None, augment: AugmentFn = identity_input,
                 prepare: AugmentFn = identity_input, eval_batch_size: int = 500,
                 mesh: jax.sharding.Mesh | None = None, name: str = "accuracy", task: Any = None):
        """Builds the network, optimizer and the compiled train-and-evaluate function.

        Args:
          train, val: training and validation data on the devices.
          steps: training steps per candidate (batches drawn from per-epoch permutations).
          batch_size: training batch (a multiple of the mesh's devices).
          optim: SGD schedule over `steps` (`training.weight_tx`).
          seed: initial weights and batch order (shared by all candidates).
          make_net: `rngs -> supernet`; default `make_supernet(space, rngs=rngs, **net_kwargs)`.
          augment: `(key, uint8 batch) -> float input` for training; `prepare` for validation.
        """
        super().__init__(space)
        from supernet.model import make_supernet  # the model registry imports every net family

        if steps < 1:
            raise ValueError(f"TrainEvaluator needs steps >= 1, got {steps}")
        task = dense_task(task)
        mesh = mesh or make_mesh()
        if batch_size % mesh.devices.size or batch_size > len(train):
            raise ValueError(f"batch_size {batch_size} must be a multiple of the {mesh.devices.size} "
                             f"devices and at most the {len(train)} training examples")
        self.names, self.train_data, self.val_data, self.traces = (name, "train_loss"), train, val, 0
        rngs = nnx.Rngs(seed)
        net = make_net(rngs) if make_net else make_supernet(space, rngs=rngs, **dict(net_kwargs or {}))
        net.train()
        opt = nnx.Optimizer(net, weight_tx(optim, steps), wrt=nnx.Param)
        graphdef, self._state0 = nnx.split((net, opt))
        self._key = jax.random.key(seed)
        n_train, bs = len(train), batch_size
        ebs = held_out_batch(eval_batch_size, len(val), mesh)
        per_epoch = n_train // bs
        epochs = -(-steps // per_epoch)
        tail = max(1, steps // 10)

        def run(state, train, val, arch, key):
            self.traces += 1
            w = space.one_hot(arch)
            perms = jax.vmap(lambda k: jax.random.permutation(k, n_train))(jax.random.split(key, epochs))
            order = perms[:, : per_epoch * bs].reshape(-1, bs)  # the full batches of each epoch
            shard = NamedSharding(mesh, P("data"))

            def step(i, carry):
                state, loss_sum = carry
                model, opt = nnx.merge(graphdef, state)
                idx = order[i]
                xb = jax.lax.with_sharding_constraint(train.x[idx], shard)
                if task is None:
                    xb, yb, loss_of = augment(jax.random.fold_in(key, i), xb), train.y[idx], cross_entropy
                else:  # image and target augmented together
                    xb, yb = task.augment(jax.random.fold_in(key, i), xb, train.y[idx], augment)
                    loss_of = task.loss
                loss, grads = nnx.value_and_grad(lambda m: loss_of(m(xb, w), yb))(model)
                opt.update(model, grads)
                return nnx.state((model, opt)), loss_sum + jnp.where(i >= steps - tail, loss, 0.0)

            with single_path():  # one-hot weights: only the candidate's operations run (the same function)
                state, loss_sum = jax.lax.fori_loop(0, steps, step, (state, jnp.float32(0.0)))
                if task is not None:  # scored batch by batch by `_stats` (the task's statistics)
                    return state, loss_sum / tail
                model, _ = nnx.merge(graphdef, state)
                model.eval()
                correct = held_out_correct(model, val, w, prepare, ebs, mesh)
            return correct, loss_sum / tail

        def stats(state, val, arch, i):  # a dense task's held-out statistics of batch i
            model, _ = nnx.merge(graphdef, state)
            model.eval()
            with single_path():
                return batch_stats(model, val, space.one_hot(arch), prepare, ebs, mesh, task, i)

        self.task, self._ebs = task, ebs
        self._run, self._stats = jax.jit(run), jax.jit(stats)

    def evaluate(self, archs: np.ndarray) -> Objectives:
        acc, loss = [], []
        for a in archs:
            c, l = self._run(self._state0, self.train_data, self.val_data, jnp.asarray(a), self._key)
            if self.task is None:
                acc.append(int(c) / len(self.val_data))
            else:
                summary = summarise_batches(self.task, lambda i: self._stats(c, self.val_data, jnp.asarray(a), i),
                                            len(self.val_data), self._ebs)
                acc.append(summary[self.task.main_metric])
            loss.append(float(l))
        return {self.names[0]: np.asarray(acc), "train_loss": np.asarray(loss)}


# ------------------------------------------------------------------ parallel evaluation
class PooledEvaluator(Evaluator):
    """A batch of candidates split over workers that each hold an equal evaluator (e.g. a `train`
    evaluator built from the same config and seed in each Ray actor of `experiments.executors`).

    `map_chunks(chunks)` evaluates a list of `[n_i, D]` batches, one per worker, and returns their
    objectives in the same order; the batch is cut into `workers` contiguous chunks and the results
    joined in order. Every evaluator in this module gives a candidate a value that depends on the
    candidate alone (same initial weights, batches and BN calibration for all), so the values, and a
    seeded search's history, equal the serial evaluator's.

    Example:
        >>> from supernet.spaces import make_space
        >>> space = make_space("nb201")
        >>> cap = make_evaluator("capacity", space)
        >>> pooled = PooledEvaluator(space, cap.names, lambda chunks: [cap(c) for c in chunks], workers=3)
        >>> a = space.sample(jax.random.key(0), 7)
        >>> bool(np.array_equal(pooled(a)["capacity"], cap(a)["capacity"]))
        True
    """

    def __init__(self, space: SearchSpace, names: Sequence[str],
                 map_chunks: Callable[[list[np.ndarray]], list[Mapping[str, Any]]], workers: int):
        super().__init__(space)
        if workers < 1:
            raise ValueError(f"PooledEvaluator needs workers >= 1, got {workers}")
        self.names, self.map_chunks, self.workers = tuple(names), map_chunks, workers

    def evaluate(self, archs: np.ndarray) -> Objectives:
        chunks = np.array_split(archs, min(self.workers, len(archs)))
        outs = self.map_chunks(chunks)
        return {k: np.concatenate([np.asarray(o[k], np.float64) for o in outs]) for k in self.names}


# ------------------------------------------------------------------ hardware costs
@EVALUATORS.register("hwcost")
class HwCostEvaluator(Evaluator):
    """Hardware costs of architectures from `hwmodel`, jitted and vmapped over the batch.

    Objectives: `latency_ms:<name>` (exact analytic model, `hwmodel.analytic.latency_ms`) for every
    accelerator in `accelerators`; `latency_ms:surrogate` when a fitted `surrogate` is given
    (`hwmodel.surrogate.predict`); `params_bytes` and `peak_activation_bytes` (`hwmodel.memory`, with
    the bytes per element of `memory_accelerator`, default the first accelerator) unless
    `memory=False`; and the `measured` columns of a CSV (e.g. `pixel3_latency_ms`), looked up by a
    `TableEvaluator` (`measured_path`, `arch_column`).

    `prune=True` drops dead rows first (`hwmodel.layers.prune_dead`, what a compiler removes, e.g.
    the ops of a disconnected NAS-Bench-201 cell) for the analytic and memory models; the default
    keeps the table as `experiments.pipeline.hardware_costs` reports it. The surrogate always sees
    the rows its device runs (`Surrogate.executed`, as it was fitted).
    """

    def __init__(self, space: SearchSpace, accelerators: Sequence[str] = ("npu",), surrogate: Any = None,
                 memory: bool = True, memory_accelerator: str | None = None, measured: Sequence[str] = (),
                 measured_path: str | None = None, arch_column: str = "arch_str", prune: bool = False,
                 chunk: int = 4096):
        super().__init__(space)
        specs = {name: ACCELERATORS[name] for name in accelerators}  # unknown -> lists the presets
        mem_name = memory_accelerator or (accelerators[0] if accelerators else None)
        if memory and mem_name is None:
            raise ValueError("memory costs need a memory_accelerator (its bytes per element)")
        mem_spec = ACCELERATORS[mem_name] if memory else None
        self.table = None
        if measured:
            if not measured_path:
                raise ValueError(f"measured columns {list(measured)} need measured_path (a CSV)")
            self.table = TableEvaluator(space, measured_path, list(measured), arch_column)
        self.names = tuple([f"latency_ms:{n}" for n in specs] + (["latency_ms:surrogate"] if surrogate else [])
                           + (["params_bytes", "peak_activation_bytes"] if memory else []) + list(measured))
        if not self.names:
            raise ValueError("HwCostEvaluator has nothing to compute: give accelerators, a surrogate, "
                             "memory=True or measured columns")
        self.chunk = chunk

        def costs(arch):
            table = space.layers(arch)
            table = prune_dead(table) if prune else table
            out = {f"latency_ms:{n}": analytic.latency_ms(s, table) for n, s in specs.items()}
            if surrogate is not None:
                from hwmodel.surrogate import predict
                out["latency_ms:surrogate"] = predict(surrogate, surrogate.executed(space.layers(arch)))
            if mem_spec is not None:
                out["params_bytes"] = hwmemory.param_bytes(mem_spec, table)
                out["peak_activation_bytes"] = hwmemory.peak_activation_bytes(table, mem_spec)
            return out

        self._costs = jax.jit(jax.vmap(costs))

    def evaluate(self, archs: np.ndarray) -> Objectives:
        out: dict[str, list[np.ndarray]] = {}
        for s in range(0, len(archs), self.chunk):
            block = archs[s:s + self.chunk]
            size = min(self.chunk, 1 << max(3, (len(block) - 1).bit_length()))  # few shapes: few compiles
            padded = np.concatenate([block, np.repeat(block[:1], size - len(block), 0)])
            for k, v in self._costs(jnp.asarray(padded)).items():
                out.setdefault(k, []).append(np.asarray(v, np.float64)[: len(block)])
        res = {k: np.concatenate(v) for k, v in out.items()}
        if self.table is not None:
            res.update(self.table(archs))
        return res


# ------------------------------------------------------------------ measured (hardware in the loop)
@EVALUATORS.register("measured")
class MeasuredEvaluator(Evaluator):
    """Each candidate's latency from a measurement backend (`hwmodel.measure`: `jax`, `onnxruntime`,
    `zigzag:<description>`), the whole network as the backend runs or simulates it: objective
    `latency_ms:<backend>`. Batched backends (ZigZag) cost the unseen layers of the whole batch at
    once (`Backend.prefetch`).

    `timed` says whether the backend times execution on this host: such candidates must be measured
    one at a time on a quiet machine, so a parallel search keeps them in one process; a simulated
    backend is deterministic and its candidates can be split over workers (`PooledEvaluator`).

    Example:
        >>> from supernet.spaces import make_space
        >>> space = make_space("nb201", channels=4, cells_per_stage=1, input_size=8)
        >>> ev = MeasuredEvaluator(space, "jax", warmup=1, repeats=3)
        >>> ev.names, ev.timed, bool(ev(space.sample(jax.random.key(0), 2))["latency_ms:jax"].min() > 0)
        (('latency_ms:jax',), True, True)
    """

    def __init__(self, space: SearchSpace, backend: str, **backend_kwargs: Any):
        super().__init__(space)
        from hwmodel.measure import make_backend
        self.backend = make_backend(backend, **backend_kwargs)
        self.names = (f"latency_ms:{backend}",)

    @property
    def timed(self) -> bool:
        from hwmodel.measure import TimedBackend
        return isinstance(self.backend, TimedBackend)

    def evaluate(self, archs: np.ndarray) -> Objectives:
        tables = [self.space.layers(jnp.asarray(a)) for a in archs]
        self.backend.prefetch(tables)
        return {self.names[0]: np.asarray([self.backend.measure(t, layers=False).latency_ms for t in tables])}


# ------------------------------------------------------------------ several at once
@EVALUATORS.register("composite")
class CompositeEvaluator(Evaluator):
    """Merges the objectives of several evaluators (given as evaluators or `{"name": ..., **kwargs}`).

    Example:
        >>> from supernet.spaces import make_space
        >>> space = make_space("nb201")
        >>> score = ZeroShotEvaluator(space, lambda a: a.sum(1) * 1.0, name="score")
        >>> ev = CompositeEvaluator(space, [score, {"name": "hwcost", "accelerators": ["npu"]}])
        >>> ev.names
        ('score', 'latency_ms:npu', 'params_bytes', 'peak_activation_bytes')
    """

    def __init__(self, space: SearchSpace, parts: Sequence[Evaluator | Mapping[str, Any]]):
        super().__init__(space)
        self.parts = []
        for p in parts:
            if isinstance(p, Mapping):
                p = dict(p)
                p = make_evaluator(p.pop("name"), space, **p)
            self.parts.append(p)
        names: list[str] = []
        for p in self.parts:
            clash = set(names) & set(p.names)
            if clash:
                raise ValueError(f"objective name(s) {sorted(clash)} returned by two evaluators; rename one")
            names += list(p.names)
        if not names:
            raise ValueError("CompositeEvaluator needs at least one evaluator")
        self.names = tuple(names)

    def evaluate(self, archs: np.ndarray) -> Objectives:
        out: Objectives = {}
        for p in self.parts:
            out.update(p(archs))
        return out
