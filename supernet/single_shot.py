"""Single-shot search: bilevel training of a supernet's weights and architecture logits.

Alternating first-order updates (DARTS, Liu et al. ICLR 2019, first-order variant, which NAS-Bench-201
and most follow-ups use): per step,
1. architecture step on a batch of the held-out split: loss = task CE + hardware cost of the expected
   architecture (`supernet.objectives`), gradient w.r.t. the `ArchLogits` only, Adam
   (lr 3e-4, betas (0.5, 0.999), L2 1e-3, DARTS's settings);
2. weight step on a batch of the training split: CE under sampled/relaxed architecture weights,
   gradient w.r.t. the `nnx.Param`s only, SGD (`training.OptimConfig`).
The relaxation (`supernet.relax`: softmax / gumbel / dirichlet) turns logits into the weights the
supernet mixes with. Choices removed by a `SpaceMask` (zero-shot pruning) get weight zero and can
never be derived. `warmup_epochs` train the weights only (uniform weights over the allowed choices)
before the architecture moves, which avoids DARTS's early rich-get-richer collapse.

One jitted step serves the whole search: the architecture is an array, the data sit on the devices
and each batch is gathered inside the step; with a mesh of several devices the batch is sharded over
`data` (same function as on one device).

Example:
    >>> # search = SingleShot(space, supernet, SearchConfig(epochs=1), augment=augment)
    >>> # for epoch in range(cfg.epochs): search.run_epoch(train, val)
    >>> # arch = search.derive_arch()
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from supernet import relax as R
from supernet.model import ArchLogits, Supernet
from supernet.objectives import CostConfig, CostFn, combine
from supernet.space import SearchSpace, SpaceMask
from supernet.training import (AugmentFn, DeviceData, OptimConfig, accuracy, check_batch, cross_entropy,
                               gather_batch, identity_input, make_mesh, weight_tx)


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Single-shot search settings (defaults: the NAS-Bench-201 / DARTS search recipe).

    Attributes:
      epochs, batch_size: search length and per-step batch (each of the two splits).
      optim: weight optimizer (SGD + cosine).
      arch_lr, arch_betas, arch_weight_decay: Adam on the architecture logits.
      relaxation: `softmax` (DARTS), `gumbel` (GDAS/SNAS) or `dirichlet` (DrNAS).
      tau: (start, end) temperature of `gumbel`, linear over the search (GDAS: 10 -> 0.1).
      hard: straight-through one-hot sampling (GDAS's hard Gumbel).
      dirichlet_kl: weight of DrNAS's KL(Dir(beta) || Dir(1)) regulariser.
      beta_decay: final weight of beta-DARTS's regulariser (Ye et al., CVPR 2022): the mean over
        decisions of logsumexp(alpha), ramped linearly from 0 over the search. Its gradient
        softmax(alpha) shrinks the logits of strong choices most, which keeps the architecture
        weights from running away (the skip-connection collapse of DARTS).
      warmup_epochs: epochs of weight-only training before architecture updates.
      path_sampling: weight steps (warm-up included) train one uniformly sampled path (one-hot
        architecture) per step, SPOS (Guo et al., ECCV 2020), instead of the relaxed mixture. A
        mixture-trained supernet ranks one-hot subnets poorly (their operations were trained at
        weight ~1/C beside the others); single-path weights are what the multishot `supernet`
        evaluator (inherited weights) needs. The architecture step is unchanged.
      cost: the hardware cost in the architecture loss.
      seed: drives initialisation-independent streams (data order, augmentation, sampling).
      steps_per_epoch: cap on steps per epoch (smoke runs); None = full epochs.
    """

    epochs: int = 50
    batch_size: int = 64
    optim: OptimConfig = OptimConfig()
    arch_lr: float = 3e-4
    arch_betas: tuple[float, float] = (0.5, 0.999)
    arch_weight_decay: float = 1e-3
    relaxation: str = "softmax"
    tau: tuple[float, float] = (10.0, 0.1)
    hard: bool = False
    dirichlet_kl: float = 1e-3
    beta_decay: float = 0.0
    warmup_epochs: int = 0
    path_sampling: bool = False
    cost: CostConfig = CostConfig()
    seed: int = 0
    steps_per_epoch: int | None = None

    def __post_init__(self):
        if self.relaxation not in R.RELAXATIONS:
            raise ValueError(f"unknown relaxation {self.relaxation!r}; valid: {', '.join(R.RELAXATIONS)}")
        if self.epochs < 1 or not 0 <= self.warmup_epochs <= self.epochs:
            raise ValueError(f"need epochs >= 1 and 0 <= warmup_epochs <= epochs, got {self.epochs}, "
                             f"{self.warmup_epochs}")
        if not self.arch_lr > 0 or min(self.tau) <= 0:
            raise ValueError("arch_lr and the temperatures must be > 0")


class SingleShot:
    """Bilevel single-shot search over one supernet (see module docstring).

    Call `run_epoch(train, val)` `cfg.epochs` times (the caller owns checkpointing: `state()` and
    `load_state()` round-trip everything, including the epoch counter), then `derive_arch()`.
    """

    def __init__(self, space: SearchSpace, model: Supernet, cfg: SearchConfig, *,
                 mask: SpaceMask | None = None, cost_fn: CostFn | None = None,
                 augment: AugmentFn = identity_input, mesh: jax.sharding.Mesh | None = None,
                 weight_optimizer: optax.GradientTransformation | None = None, total_steps: int | None = None):
        if cfg.cost.uses_latency and cost_fn is None:
            raise ValueError(f"latency loss {cfg.cost.form!r} needs a cost_fn "
                             "(supernet.objectives.make_cost_fn)")
        self.space, self.model, self.cfg = space, model, cfg
        self.mask = space.check_mask(mask)
        self.allowed = jnp.asarray(self.mask.allowed)
        self.cost_fn, self.augment = cost_fn, augment
        self.mesh = mesh or make_mesh()
        self.epoch = 0
        self.seconds = 0.0
        self._weight_tx, self._total_steps = weight_optimizer, total_steps
        self._opts: tuple[nnx.Optimizer, nnx.Optimizer] | None = None
        self._step_fns: dict[bool, Callable] = {}

    # ----------------------------------------------------------------- optimizers and state
    def _setup(self, steps_per_epoch: int) -> None:
        if self._opts is not None:
            return
        total = self._total_steps or self.cfg.epochs * steps_per_epoch
        wtx = self._weight_tx or weight_tx(self.cfg.optim, total)
        atx = optax.chain(optax.add_decayed_weights(self.cfg.arch_weight_decay),
                          optax.adam(self.cfg.arch_lr, b1=self.cfg.arch_betas[0], b2=self.cfg.arch_betas[1]))
        self._opts = (nnx.Optimizer(self.model, wtx, wrt=nnx.Param),
                      nnx.Optimizer(self.model, atx, wrt=ArchLogits))

    def state(self) -> dict[str, Any]:
        """Everything needed to resume: module + optimizer states and counters (a pytree)."""
        if self._opts is None:
            raise RuntimeError("nothing to save before the first epoch")
        return {"nnx": nnx.state((self.model, *self._opts)), "epoch": self.epoch, "seconds": self.seconds}

    def load_state(self, state: dict[str, Any], steps_per_epoch: int) -> None:
        self._setup(steps_per_epoch)
        nnx.update((self.model, *self._opts), state["nnx"])
        self.epoch, self.seconds = int(state["epoch"]), float(state["seconds"])

    # ----------------------------------------------------------------- the step
    def _make_step(self, arch_on: bool, steps: int, val_steps: int):
        graphdef, _ = nnx.split((self.model, *self._opts))
        cfg, mesh, allowed = self.cfg, self.mesh, self.allowed
        bs, aug, cost_fn = cfg.batch_size, self.augment, self.cost_fn
        total = cfg.epochs * steps

        def weights_of(logits, key, gstep):
            tau = R.temperature(cfg.tau, gstep, total)
            return R.relax(cfg.relaxation, logits, key, allowed=allowed, tau=tau, hard=cfg.hard)

        def step(state, train, val, perm_t, perm_v, i, gstep, key):
            model, wopt, aopt = nnx.merge(graphdef, state)
            k_at, k_av, k_rt, k_rv = jax.random.split(jax.random.fold_in(key, gstep), 4)
            metrics = {}
            if arch_on:  # 1. architecture step on the held-out split
                xv, yv = gather_batch(val, perm_v, i % val_steps, bs, mesh)
                xv = aug(k_av, xv)

                def arch_loss(m):
                    w, p = weights_of(m.arch_logits.get_value(), k_rv, gstep)
                    logits = m(xv, w)
                    ce = cross_entropy(logits, yv)
                    cost = cost_fn(p) if cost_fn is not None else {}
                    loss = combine(ce, cost.get("latency_ms"), cost.get("memory_bytes"), cfg.cost)
                    if cfg.relaxation == "dirichlet" and cfg.dirichlet_kl:
                        loss = loss + cfg.dirichlet_kl * R.dirichlet_kl(m.arch_logits.get_value(), allowed)
                    if cfg.beta_decay:
                        ramp = jnp.asarray(gstep, jnp.float32) / max(total - 1, 1)
                        loss = loss + cfg.beta_decay * ramp * R.beta_decay(m.arch_logits.get_value(), allowed)
                    return loss, (ce, accuracy(logits, yv), cost)

                grads, (ce_v, acc_v, cost) = nnx.grad(arch_loss, argnums=nnx.DiffState(0, ArchLogits),
                                                      has_aux=True)(model)
                aopt.update(model, grads)
                metrics.update(val_ce=ce_v, val_acc=acc_v, **cost)
            # 2. weight step on the training split
            xt, yt = gather_batch(train, perm_t, i, bs, mesh)
            xt = aug(k_at, xt)
            if cfg.path_sampling:  # SPOS: one uniformly sampled allowed path
                pick = jax.random.categorical(k_rt, jnp.where(allowed, 0.0, -jnp.inf), axis=-1)
                w = jax.nn.one_hot(pick, allowed.shape[-1], dtype=jnp.float32)
            elif arch_on:
                w, _ = weights_of(jax.lax.stop_gradient(model.arch_logits.get_value()), k_rt, gstep)
            else:  # warm-up: uniform over the allowed choices
                w = allowed / allowed.sum(-1, keepdims=True)

            def weight_loss(m):
                logits = m(xt, w)
                return cross_entropy(logits, yt), accuracy(logits, yt)

            (ce_t, acc_t), grads = nnx.value_and_grad(weight_loss, argnums=nnx.DiffState(0, nnx.Param),
                                                      has_aux=True)(model)
            wopt.update(model, grads)
            metrics.update(train_ce=ce_t, train_acc=acc_t)
            return nnx.state((model, wopt, aopt)), metrics

        return jax.jit(step, donate_argnums=0)

    # ----------------------------------------------------------------- public API
    def run_epoch(self, train: DeviceData, val: DeviceData, progress: Callable | None = None) -> dict[str, float]:
        """One epoch of alternating updates; returns the epoch's mean metrics and current choices."""
        cfg = self.cfg
        steps = check_batch(cfg.batch_size, self.mesh, len(train), "training split")
        val_steps = check_batch(cfg.batch_size, self.mesh, len(val), "validation split")
        steps = min(steps, cfg.steps_per_epoch or steps)
        self._setup(steps)
        arch_on = self.epoch >= cfg.warmup_epochs
        if arch_on not in self._step_fns:
            self._step_fns[arch_on] = self._make_step(arch_on, steps, val_steps)
        step = self._step_fns[arch_on]
        t0 = time.perf_counter()
        key = jax.random.fold_in(jax.random.key(cfg.seed), 7)
        ek = jax.random.fold_in(key, self.epoch)
        perm_t = jax.random.permutation(jax.random.fold_in(ek, 0), len(train))
        perm_v = jax.random.permutation(jax.random.fold_in(ek, 1), len(val))
        state = jax.device_put(nnx.state((self.model, *self._opts)), NamedSharding(self.mesh, P()))
        sums: dict[str, jax.Array] = {}
        it = range(steps) if progress is None else progress(range(steps))
        for i in it:
            state, m = step(state, train, val, perm_t, perm_v, jnp.int32(i),
                            jnp.int32(self.epoch * steps + i), key)
            sums = {k: sums.get(k, 0.0) + v for k, v in m.items()}
        nnx.update((self.model, *self._opts), state)
        rec = {k: float(v) / steps for k, v in sums.items()}
        self.seconds += time.perf_counter() - t0
        bad = [k for k, v in rec.items() if not np.isfinite(v)]
        if bad:
            raise FloatingPointError(f"non-finite {bad} in search epoch {self.epoch}; lower the learning "
                                     "rates or the latency weight")
        rec.update(epoch=self.epoch, seconds=self.seconds, arch=self.space.encode(self.derive_arch()))
        self.epoch += 1
        return rec

    def probs(self) -> np.ndarray:
        """Current expected choice probabilities `[D, C]` (zero on removed choices)."""
        return np.asarray(R.probabilities(self.cfg.relaxation, self.model.arch_logits.get_value(), self.allowed))

    def derive_arch(self) -> np.ndarray:
        """The argmax architecture among the allowed choices."""
        return R.argmax_arch(jnp.asarray(self.probs()), self.allowed)

    def top_k(self, k: int) -> list[np.ndarray]:
        """The k most probable architectures under the factorised distribution (beam over decisions)."""
        logp = np.log(np.maximum(self.probs(), 1e-30))
        logp[~np.asarray(self.allowed)] = -np.inf
        beams: list[tuple[float, list[int]]] = [(0.0, [])]
        for d in range(self.space.num_decisions):
            cand = [(s + logp[d, c], a + [c]) for s, a in beams for c in range(logp.shape[1])
                    if np.isfinite(logp[d, c])]
            beams = sorted(cand, key=lambda t: -t[0])[:k]
        return [np.asarray(a, np.int32) for _, a in beams]
