"""Training machinery shared by single-shot search and (re)training of standalone networks.

- `OptimConfig` + `weight_tx`: SGD with momentum (Nesterov), weight decay, gradient clipping and a
  cosine schedule, the DARTS / NAS-Bench-201 recipe (lr 0.025 -> 0.001, momentum 0.9, wd 5e-4,
  clip 5); any optax transform can be passed instead.
- `DeviceData`: a dataset put on the devices once (uint8 images, replicated), batches gathered inside
  the jitted step from an on-device permutation, so no host round trip per step (docs/design.md).
- `Mesh`-based data parallelism: `jax.make_mesh` over the local devices with `NamedSharding`; the
  batch is sharded on the `data` axis, state replicated, and XLA inserts the all-reduces. BatchNorm
  statistics are computed over the global batch, so 1 and N devices compute the same function.
- `Trainer`: trains a standalone network (a derived `Subnet`) with a fixed schedule and evaluates it.
- `recalibrate_bn`: recomputes a network's BatchNorm running statistics on a few training batches
  before an inherited-weight evaluation (SPOS, Guo et al. 2020).

Example:
    >>> tx = weight_tx(OptimConfig(lr=0.1), total_steps=100)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P
from jaxtyping import Array, Float, Int

from supernet.blocks import BatchNorm, single_path
from supernet.tasks.task import Classification, Task

AugmentFn = Callable[[jax.Array, jax.Array], jax.Array]
"""`(key, uint8 images [B, H, W, C]) -> float32 network input` (jittable)."""


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Weight optimizer: SGD + momentum with a cosine schedule (DARTS/NB201 search defaults), or
    AdamW (`kind="adamw"`, Loshchilov & Hutter 2019; CenterNet trains with Adam) on the same schedule,
    with `weight_decay` decoupled and `momentum` / `nesterov` unused."""

    lr: float = 0.025
    lr_min: float = 0.001
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    grad_clip: float | None = 5.0
    warmup_steps: int = 0
    kind: str = "sgd"

    def __post_init__(self):
        if self.kind not in ("sgd", "adamw"):
            raise ValueError(f"unknown optimizer kind {self.kind!r}: use 'sgd' or 'adamw'")
        if not self.lr > 0 or self.lr_min < 0 or self.weight_decay < 0:
            raise ValueError(f"invalid optimizer settings: lr={self.lr}, lr_min={self.lr_min}, "
                             f"weight_decay={self.weight_decay} (need lr > 0, lr_min >= 0, wd >= 0)")


def weight_tx(cfg: OptimConfig, total_steps: int) -> optax.GradientTransformation:
    """clip -> decoupled-as-L2 weight decay -> SGD(momentum, cosine schedule), as torch.optim.SGD;
    or clip -> AdamW(cosine schedule, decoupled weight decay), as torch.optim.AdamW."""
    total = max(total_steps, 1)
    if cfg.warmup_steps:
        sched = optax.warmup_cosine_decay_schedule(0.0, cfg.lr, cfg.warmup_steps, total, end_value=cfg.lr_min)
    else:
        sched = optax.cosine_decay_schedule(cfg.lr, total, alpha=cfg.lr_min / cfg.lr)
    parts = [optax.clip_by_global_norm(cfg.grad_clip)] if cfg.grad_clip else []
    if cfg.kind == "adamw":
        parts += [optax.adamw(sched, weight_decay=cfg.weight_decay)]
    else:
        parts += [optax.add_decayed_weights(cfg.weight_decay),
                  optax.sgd(sched, momentum=cfg.momentum, nesterov=cfg.nesterov)]
    return optax.chain(*parts)


def cross_entropy(logits: Float[Array, "b k"], labels: Int[Array, "b"]) -> jax.Array:
    """Mean softmax cross-entropy over integer labels, in float32 (PyTorch's `F.cross_entropy`):
    the loss of search, training and the gradient-based zero-shot scores alike (the
    `Classification` task's loss, its one definition)."""
    return Classification().loss(logits, labels)


# ------------------------------------------------------------------ devices and data
def make_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
    """A 1-D `data` mesh over the first `num_devices` devices (all by default): those of every
    process of a `jax.distributed` run, which must then use them all."""
    devs = jax.devices()
    n = len(devs) if num_devices is None else num_devices
    if not 1 <= n <= len(devs):
        raise ValueError(f"asked for {n} devices, {len(devs)} available")
    if jax.process_count() > 1 and n != len(devs):
        raise ValueError(f"a run over {jax.process_count()} processes uses all {len(devs)} devices, not {n}")
    return jax.sharding.Mesh(np.asarray(devs[:n]), ("data",))


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class DeviceData:
    """Images (uint8) and labels placed on every device of `mesh` once."""

    x: jax.Array
    y: jax.Array

    @classmethod
    def put(cls, x: np.ndarray, y: np.ndarray, mesh: jax.sharding.Mesh) -> "DeviceData":
        if len(x) != len(y) or len(x) == 0:
            raise ValueError(f"need as many labels as images (and at least one): {len(x)} vs {len(y)}")
        rep = NamedSharding(mesh, P())
        y = np.asarray(y)  # integer labels or masks as int32; float targets (boxes) as float32
        y = y.astype(np.float32 if np.issubdtype(y.dtype, np.floating) else np.int32)
        return cls(jax.device_put(np.asarray(x), rep), jax.device_put(y, rep))

    def __len__(self) -> int:
        return int(self.x.shape[0])


def check_batch(batch_size: int, mesh: jax.sharding.Mesh, n: int, what: str = "training set") -> int:
    """Steps per epoch; a clear error for batches that do not split over devices or exceed the data."""
    d = mesh.devices.size
    if batch_size <= 0 or batch_size % d:
        raise ValueError(f"batch_size {batch_size} must be a positive multiple of the {d} devices")
    if n < batch_size:
        raise ValueError(f"the {what} has {n} examples, fewer than one batch of {batch_size}")
    return n // batch_size


def gather_batch(data: DeviceData, perm: jax.Array, step: jax.Array, batch_size: int,
                 mesh: jax.sharding.Mesh) -> tuple[jax.Array, jax.Array]:
    """Batch `step` of the permutation, sharded over the mesh's `data` axis (inside jit).

    Pass `data` as an argument of the jitted function (a pytree), never as a closure: closed-over
    arrays become compile-time constants.
    """
    idx = jax.lax.dynamic_slice(perm, (step * batch_size,), (batch_size,))
    shard = NamedSharding(mesh, P("data"))
    return (jax.lax.with_sharding_constraint(data.x[idx], shard),
            jax.lax.with_sharding_constraint(data.y[idx], shard))


def identity_input(key: jax.Array, x: jax.Array) -> jax.Array:
    """No augmentation: uint8 -> float32 in [0, 1]."""
    del key
    return x.astype(jnp.float32) / 255.0


# ------------------------------------------------------------------ standalone training
@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """A fixed training schedule for a standalone network."""

    epochs: int = 10
    batch_size: int = 128
    optim: OptimConfig = OptimConfig(lr=0.1, lr_min=0.0, weight_decay=5e-4, grad_clip=None)
    seed: int = 0
    steps_per_epoch: int | None = None  # cap (smoke runs)
    label_smoothing: float = 0.0


class Trainer:
    """Trains `model(x) -> logits` (e.g. a derived `Subnet`) on `DeviceData` with `TrainConfig`.

    Example:
        >>> # trainer = Trainer(subnet, cfg, augment); trainer.fit(train, test)
    """

    def __init__(self, model: nnx.Module, cfg: TrainConfig, augment: AugmentFn = identity_input,
                 mesh: jax.sharding.Mesh | None = None, eval_input: AugmentFn | None = None,
                 task: Task | None = None):
        """`task` (default `Classification()`) gives the loss, the batch metric, the joint
        augmentation of images and targets (`augment` is its image part) and the test metrics."""
        self.model, self.cfg, self.augment = model, cfg, augment
        self.task = task or Classification()
        self.eval_input = eval_input or identity_input
        self.mesh = mesh or make_mesh()
        self.epoch = 0
        self._opt: nnx.Optimizer | None = None

    def fit(self, train: DeviceData, test: DeviceData | None = None,
            callback: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
        cfg = self.cfg
        steps = check_batch(cfg.batch_size, self.mesh, len(train))
        steps = min(steps, cfg.steps_per_epoch or steps)
        if self._opt is None:
            self._opt = nnx.Optimizer(self.model, weight_tx(cfg.optim, cfg.epochs * steps), wrt=nnx.Param)
        graphdef, state = nnx.split((self.model, self._opt))
        rep = NamedSharding(self.mesh, P())
        state = jax.device_put(state, rep)
        key = jax.random.key(cfg.seed)
        mesh, bs, aug, ls, task = self.mesh, cfg.batch_size, self.augment, cfg.label_smoothing, self.task

        @jax.jit
        def step(state, train, perm, i, k):
            model, opt = nnx.merge(graphdef, state)
            model.train()
            xb, yb = gather_batch(train, perm, i, bs, mesh)
            xb, yb = task.augment(jax.random.fold_in(k, i), xb, yb, aug)

            def loss_fn(m):
                out = m(xb)
                return task.loss(out, yb, ls), task.train_metric(out, yb)

            (loss, acc), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
            opt.update(model, grads)
            return nnx.state((model, opt)), jnp.stack([loss, acc])

        history = []
        while self.epoch < cfg.epochs:
            ek = jax.random.fold_in(key, self.epoch)
            perm = jax.random.permutation(jax.random.fold_in(ek, 1), len(train))
            sums = jnp.zeros(2)
            for i in range(steps):
                state, m = step(state, train, perm, jnp.int32(i), ek)
                sums = sums + m
            nnx.update((self.model, self._opt), state)
            sums = np.asarray(sums) / steps
            rec = {"epoch": self.epoch, "train_loss": float(sums[0]), "train_acc": float(sums[1])}
            if not np.isfinite(rec["train_loss"]):
                raise FloatingPointError(f"training loss is {rec['train_loss']} at epoch {self.epoch}; "
                                         "lower the learning rate or check the data")
            if test is not None and (self.epoch == cfg.epochs - 1):
                if isinstance(self.task, Classification):
                    rec["test_acc"] = evaluate(self.model, test, self.eval_input, mesh=self.mesh)
                else:
                    rec.update({f"test_{k}": v for k, v in evaluate_task(
                        self.model, test, self.eval_input, self.task, mesh=self.mesh).items()})
            history.append(rec)
            self.epoch += 1
            if callback:
                callback(rec)
        return history


class BNRecalibrator:
    """Recomputes BatchNorm running statistics on a few training batches (SPOS's BN recalibration).

    Why: the running statistics of a weight-sharing supernet were accumulated under other
    architectures (the mixture, or other sampled paths), so a derived subnet evaluated with them
    can be at chance although its weights are good. Single-path one-shot methods recompute them on
    training batches before every inherited-weight evaluation (SPOS, Guo et al. 2020, Sec. 3.3),
    as PyTorch's cumulative average (`momentum=None`) does: the new running mean and variance are
    the means of the `batches` batch means and batch variances. Only `nnx.BatchStat` variables
    change. The batches are the first of a permutation of `data` fixed by `seed`, so every
    architecture is calibrated on the same images.

    `model(x)` for a standalone network, `model(x, arch_weights)` for a supernet (one-hot weights
    run single-path, so BatchNorms of ops not chosen keep their statistics). One compiled function
    serves every architecture of a supernet (`traces` counts compilations).

    Example:
        >>> # calib = BNRecalibrator(net, train, prepare, batches=10)
        >>> # state = calib(nnx.state(net), space.one_hot(arch))  # then evaluate with `state`
    """

    def __init__(self, model: nnx.Module, data: DeviceData, prepare: AugmentFn, *, batches: int = 10,
                 batch_size: int = 128, seed: int = 0, mesh: jax.sharding.Mesh | None = None):
        if batches < 1:
            raise ValueError(f"BN recalibration needs batches >= 1, got {batches}")
        mesh = mesh or make_mesh()
        d = mesh.devices.size
        bs = max(d, (min(batch_size, len(data)) // d) * d)
        self.batches = max(1, min(batches, len(data) // bs))
        self.data, self.traces, self._mesh = data, 0, mesh
        self._perm = jax.random.permutation(jax.random.key(seed), len(data))
        was_training = [getattr(m, "use_running_average", None) for _, m in nnx.iter_modules(model)]
        model.train()
        self._graphdef = nnx.graphdef(model)
        for (_, m), v in zip(nnx.iter_modules(model), was_training):  # leave the caller's mode as it was
            if v is not None:
                m.use_running_average = v
        n = self.batches

        def stats(state, data, perm, w, one_hot: bool):
            self.traces += 1
            m = nnx.merge(self._graphdef, state)
            for _, mod in nnx.iter_modules(m):
                if isinstance(mod, BatchNorm):
                    mod.momentum = 0.0  # after one forward the running statistics are that batch's
            total = None
            for i in range(n):  # unrolled: NNX refuses BatchStat writes inside a loop body's trace
                xb, _ = gather_batch(data, perm, jnp.int32(i), bs, mesh)
                xb = prepare(None, xb)
                with single_path(one_hot):
                    m(xb) if w is None else m(xb, w)
                # a copy: the state holds the variables themselves, which the next forward overwrites
                st = jax.tree.map(jnp.copy, nnx.state(m, nnx.BatchStat))
                total = st if total is None else jax.tree.map(jnp.add, total, st)
            return jax.tree.map(lambda v: v / n, total)

        self._stats = jax.jit(stats, static_argnums=4)

    def __call__(self, state: nnx.State, arch_weights: jax.Array | None = None) -> nnx.State:
        """`state` (of the model this was built from) with recalibrated BatchNorm statistics."""
        rep = NamedSharding(self._mesh, P())
        w = None if arch_weights is None else jax.device_put(jnp.asarray(arch_weights), rep)
        one_hot = w is not None and bool(jnp.all((w == 0) | (w == 1)))
        new = self._stats(jax.device_put(state, rep), self.data, jax.device_put(self._perm, rep), w, one_hot)
        return nnx.merge_state(state, new)


def recalibrate_bn(model: nnx.Module, data: DeviceData, prepare: AugmentFn, *, batches: int = 10,
                   batch_size: int = 128, arch_weights: jax.Array | None = None, seed: int = 0,
                   mesh: jax.sharding.Mesh | None = None) -> int:
    """Recalibrates `model`'s BatchNorm statistics in place (`BNRecalibrator`); returns the batches used."""
    calib = BNRecalibrator(model, data, prepare, batches=batches, batch_size=batch_size, seed=seed, mesh=mesh)
    nnx.update(model, calib(nnx.state(model), arch_weights))
    return calib.batches


def held_out_correct(model: Any, data: DeviceData, w: jax.Array, prepare: AugmentFn, bs: int,
                      mesh: jax.sharding.Mesh, unroll: bool = False) -> jax.Array:
    """Number of correct predictions of `model(x, w)` over all of `data` (inside jit; the last
    partial batch is included, its indices clamped and the repeats not counted): the one held-out
    loop of `evaluate` and of the `supernet` and `train` evaluators. `unroll`: a Python loop instead of `fori_loop`, for a train-mode model whose BatchNorm
    writes statistics (NNX refuses that inside a loop body's trace); the writes are dropped."""
    n = len(data)

    def body(i, total):
        pos = i * bs + jnp.arange(bs)
        idx = jnp.minimum(pos, n - 1)
        xb = jax.lax.with_sharding_constraint(data.x[idx], NamedSharding(mesh, P("data")))
        logits = model(prepare(None, xb), w)
        return total + jnp.sum((jnp.argmax(logits, -1) == data.y[idx]) & (pos < n))

    if unroll:
        total = jnp.int32(0)
        for i in range(-(-n // bs)):
            total = body(i, total)
        return total
    return jax.lax.fori_loop(0, -(-n // bs), body, jnp.int32(0))


def held_out_batch(batch_size: int, n: int, mesh: jax.sharding.Mesh) -> int:
    """The held-out batch: at most `batch_size` and `n`, a multiple of the mesh's devices."""
    d = mesh.devices.size
    return max(d, (min(batch_size, n) // d) * d)


def evaluate(model: nnx.Module, data: DeviceData, prepare: AugmentFn, arch_weights: jax.Array | None = None,
             batch_size: int = 500, mesh: jax.sharding.Mesh | None = None) -> float:
    """Top-1 accuracy over `data` with `model` in eval mode (BatchNorm running statistics).

    `model(x)` for a standalone network, `model(x, arch_weights)` for a supernet (one-hot weights
    run single-path). The last partial batch is included (`held_out_correct`). The model is left in
    train mode.
    """
    mesh = mesh or make_mesh()
    bs = held_out_batch(batch_size, len(data), mesh)
    model.eval()
    graphdef, state = nnx.split(model)
    one_hot = arch_weights is not None and bool(jnp.all((arch_weights == 0) | (arch_weights == 1)))

    @jax.jit
    def correct(state, data, w):
        m = nnx.merge(graphdef, state)
        with single_path(one_hot):
            return held_out_correct(m if w is not None else (lambda x, _: m(x)), data, w, prepare, bs, mesh)

    total = int(correct(state, data, arch_weights))
    model.train()
    return total / len(data)




def batch_stats(model: Any, data: DeviceData, w: jax.Array | None, prepare: AugmentFn, bs: int,
                mesh: jax.sharding.Mesh, task: Task, i: jax.Array) -> Any:
    """`task.held_out_stats` of held-out batch `i` of `data` under `model(x)` (or `model(x, w)`;
    inside jit; the last partial batch's indices are clamped and its repeats masked): the one
    held-out step of `evaluate_task` and of the `supernet` and `train` evaluators on a task."""
    n = len(data)
    pos = i * bs + jnp.arange(bs)
    idx = jnp.minimum(pos, n - 1)
    xb = prepare(None, jax.lax.with_sharding_constraint(data.x[idx], NamedSharding(mesh, P("data"))))
    return task.held_out_stats(model(xb) if w is None else model(xb, w), data.y[idx], pos < n)


def summarise_batches(task: Task, stats_of: Callable[[jax.Array], Any], n: int, bs: int) -> dict[str, float]:
    """`task.summary` of `stats_of(i)` (a compiled `batch_stats`) combined over the `ceil(n / bs)` batches."""
    stats = None
    for i in range(-(-n // bs)):
        s = jax.device_get(stats_of(jnp.int32(i)))
        stats = s if stats is None else task.combine(stats, s)
    return task.summary(stats)


def evaluate_task(model: nnx.Module, data: DeviceData, prepare: AugmentFn, task: Task, batch_size: int = 50,
                  mesh: jax.sharding.Mesh | None = None) -> dict[str, float]:
    """`task.summary` of a standalone network over all of `data` in eval mode (BatchNorm running
    statistics; the last partial batch included, its repeats masked). The model is left in train mode.

    Example:
        >>> # evaluate_task(subnet, test, normalize_only, Segmentation(2))["miou"]
    """
    mesh = mesh or make_mesh()
    n = len(data)
    bs = held_out_batch(batch_size, n, mesh)
    model.eval()
    graphdef, state = nnx.split(model)

    batch = jax.jit(lambda state, data, i: batch_stats(nnx.merge(graphdef, state), data, None, prepare, bs, mesh, task, i))
    out = summarise_batches(task, lambda i: batch(state, data, i), n, bs)
    model.train()
    return out
