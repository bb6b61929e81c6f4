"""Single-shot search: bilevel training of a supernet's weights and architecture logits.

Alternating first-order updates (DARTS, Liu et al. ICLR 2019, first-order variant, which NAS-Bench-201
and most follow-ups use): per step,
1. architecture step on a batch of the held-out split: loss = task CE + hardware cost
   (`supernet.objectives`), gradient w.r.t. the `ArchLogits` only, Adam (lr 3e-4, betas (0.5, 0.999),
   L2 1e-3, DARTS's settings);
2. weight step on a batch of the training split: CE under sampled/relaxed architecture weights,
   gradient w.r.t. the `nnx.Param`s only, SGD (`training.OptimConfig`).
The relaxation (`supernet.relax`: softmax / gumbel / dirichlet) turns logits into the weights the
supernet mixes with. Choices removed by a `SpaceMask` (zero-shot pruning) get weight zero and can
never be derived. `warmup_epochs` train the weights only (uniform weights over the allowed choices)
before the architecture moves, which avoids DARTS's early rich-get-richer collapse.

Two gradient estimators for the architecture step (`estimator`):
- `relaxed`: the pathwise gradient through the relaxation (DARTS, GDAS, DrNAS). With `hard=True`
  the forward weights are a one-hot sample (straight-through Gumbel, GDAS / FBNetV2).
- `reinforce`: TuNAS (Bender et al., CVPR 2020): sample one architecture `a ~ p`, score it on the
  batch, reward `R = -combine(1 - accuracy, cost(a))` (with the `tunas` form TuNAS's absolute
  reward `Q(a) - b |LAT(a) / T - 1|`), and ascend `(R - baseline) grad log p(a)` with an exponential
  moving-average baseline (`reward_momentum`). No backward pass through the network.

Honest costs. With one-hot forward weights (`hard`, `reinforce`) the hardware cost in the loss is the
cost of the *sampled* architecture (straight-through for `hard`), as GDAS / FBNetV2 / TuNAS use it, not
that of the expected layer table: with a spread distribution the expected table's cost can be far from
any architecture the search returns (docs/results/ablation.md: 12 ms optimised, 2 ms derived). Every epoch
logs the optimised cost (`latency_ms`, the epoch's mean), the cost of the current argmax
architecture (`latency_ms_argmax`) and their relative gap (`latency_gap`), and the mean entropy of
the choice distributions (`arch_entropy`); `entropy_weight` (ramped up from 0 like beta-decay)
concentrates the distribution so that the samples become the architecture that is derived.

Single-path steps. One-hot forward weights (hard samples, `path_sampling`, `reinforce`) run only the
chosen operation of every mixed op (`blocks.single_path`, `single_path=True`): the same outputs and
weight gradients as the one-hot mixture, at the cost of one subnet.

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

from supernet import derive as DV
from supernet import relax as R
from supernet.blocks import single_path
from supernet.model import ArchLogits, Supernet
from supernet.objectives import CostConfig, CostFn, combine
from supernet.space import Architecture, SearchSpace, SpaceMask
from supernet.tasks import Classification, Distillable, Task
from supernet.training import (AugmentFn, DeviceData, OptimConfig, check_batch, gather_batch, identity_input,
                               make_mesh, weight_tx)


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Single-shot search settings (defaults: the NAS-Bench-201 / DARTS search recipe).

    Attributes:
      epochs, batch_size: search length and per-step batch (each of the two splits).
      optim: weight optimizer (SGD + cosine).
      arch_lr, arch_betas, arch_weight_decay: Adam on the architecture logits.
      arch_lr_min: None keeps `arch_lr` constant (DARTS); a value decays it by a cosine to
        `arch_lr_min` over the search, so that the architecture settles in the last epochs (with a
        latency constraint the argmax otherwise keeps flipping between cells on either side of the
        target, and the cost of the returned cell differs from the one optimised).
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
      estimator: `relaxed` (pathwise, through the relaxation) or `reinforce` (TuNAS); see the module
        docstring. With `reinforce` (and with `hard`) the weight step trains the path sampled from
        the current distribution (uniform during warm-up) unless `path_sampling` asks for uniform.
      sandwich: with one-hot weight steps (`path_sampling`, `hard`, `reinforce`), each weight step
        also trains the `anchor` architecture given to `SingleShot` beside `sandwich` sampled
        paths, their gradients summed: BigNAS's sandwich rule (Yu et al., ECCV 2020), with the anchor
        in place of the largest child. Why: in a width- and type-elastic space (the mobile spaces)
        a uniformly sampled path changes every block's shape from one step to the next, and the
        shared weights learn almost nothing (`benchmarks/supernet_learning.py`: 11.1 -> 12.4 %
        training accuracy in 96 steps where MobileNetV2's path alone reaches 23.6 %); the anchor
        is one network trained on every step, whose weights the sampled paths start from (in
        that benchmark it did not lift the sampled paths in 96 steps: 12.6 %). 0 (default): one
        sampled path per step, as before. Costs `1 + sandwich` forward and backward passes per
        weight step.
      distill: the sampled paths of a sandwich step learn from the anchor's predictions instead of
        the labels (BigNAS / OFA in-place distillation; the anchor still learns from the labels);
        needs a `tasks.Distillable` task.
      shrink_epochs: progressive shrinking (Once-for-All, Cai et al. ICLR 2020, generalised from its
        kernel -> depth -> width order to any space): for the first `shrink_epochs` epochs each
        decision of a uniformly sampled path keeps the `anchor`'s choice with probability
        `1 - t / shrink_epochs` (t: epochs elapsed, per step) and is uniform otherwise, so the
        paths start as the anchor and spread to the whole space; later epochs sample uniformly.
        Why: the sampled paths of a uniform warm-up differ from each other in nearly every
        decision and the shared weights serve none of them (`benchmarks/supernet_learning.py`);
        starting from one network that learns, the weights of nearby paths are trained first.
        0 (default): uniform from the first step.
      reward_momentum: momentum of `reinforce`'s moving-average reward baseline (TuNAS: 0.95).
      entropy_weight: final weight of the mean per-decision entropy of the choice distribution in
        the architecture loss, ramped linearly from 0 over the search (concentrates the
        distribution, so that the sampled and the derived architectures agree at the end).
      single_path: one-hot forward weights run only the chosen operations (module docstring);
        False computes the one-hot mixture (same function, every op run: for tests and benchmarks).
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
    arch_lr_min: float | None = None
    relaxation: str = "softmax"
    tau: tuple[float, float] = (10.0, 0.1)
    hard: bool = False
    dirichlet_kl: float = 1e-3
    beta_decay: float = 0.0
    warmup_epochs: int = 0
    path_sampling: bool = False
    sandwich: int = 0
    distill: bool = False
    shrink_epochs: int = 0
    estimator: str = "relaxed"
    reward_momentum: float = 0.95
    entropy_weight: float = 0.0
    single_path: bool = True
    cost: CostConfig = CostConfig()
    seed: int = 0
    steps_per_epoch: int | None = None

    def __post_init__(self):
        if self.relaxation not in R.RELAXATIONS:
            raise ValueError(f"unknown relaxation {self.relaxation!r}; valid: {', '.join(R.RELAXATIONS)}")
        if self.epochs < 1 or not 0 <= self.warmup_epochs <= self.epochs:
            raise ValueError(f"need epochs >= 1 and 0 <= warmup_epochs <= epochs, got {self.epochs}, "
                             f"{self.warmup_epochs}")
        if not self.arch_lr > 0:
            raise ValueError(f"arch_lr must be > 0, got {self.arch_lr}")
        if min(self.tau) < TAU_MIN:  # logits / tau overflows float32 (1e-40 is a subnormal: inf / NaN)
            raise ValueError(f"the temperatures tau must be >= {TAU_MIN:g} (a colder Gumbel softmax is a "
                             f"hard argmax: use hard=True), got {tuple(self.tau)}")
        if self.arch_lr_min is not None and not 0 <= self.arch_lr_min <= self.arch_lr:
            raise ValueError(f"arch_lr_min must be in [0, arch_lr], got {self.arch_lr_min}")
        if len(self.tau) != 2 or self.tau[1] > self.tau[0]:
            raise ValueError(f"the temperature schedule tau=(start, end) must not increase (annealing: "
                             f"start >= end), got {tuple(self.tau)}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1 (or None for full epochs), got {self.steps_per_epoch}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"unknown estimator {self.estimator!r}; valid: {', '.join(ESTIMATORS)}")
        if not 0 <= self.reward_momentum < 1:
            raise ValueError(f"reward_momentum must be in [0, 1), got {self.reward_momentum}")
        if self.sandwich < 0:
            raise ValueError(f"sandwich (sampled paths per weight step beside the anchor) must be >= 0, "
                             f"got {self.sandwich}")
        if self.sandwich and not (self.path_sampling or self.one_hot_forward):
            raise ValueError("sandwich trains one-hot paths: it needs path_sampling=True, hard=True or "
                             "estimator='reinforce'")
        if not 0 <= self.shrink_epochs <= self.epochs:
            raise ValueError(f"shrink_epochs must be in [0, epochs={self.epochs}], got {self.shrink_epochs}")
        if self.shrink_epochs and not (self.path_sampling or self.one_hot_forward):
            raise ValueError("shrink_epochs narrows uniformly sampled one-hot paths: it needs path_sampling=True, "
                             "hard=True or estimator='reinforce'")
        if self.distill and not self.sandwich:
            raise ValueError("distill learns from the sandwich's anchor: it needs sandwich >= 1")
        if self.entropy_weight < 0 or self.beta_decay < 0:
            raise ValueError("entropy_weight and beta_decay must be >= 0")

    @property
    def uses_anchor(self) -> bool:
        """Whether the weight steps need an anchor architecture (`sandwich`, `shrink_epochs`)."""
        return bool(self.sandwich or self.shrink_epochs)

    @property
    def one_hot_forward(self) -> bool:
        """Whether the architecture step runs a one-hot sample (hard Gumbel or REINFORCE)."""
        return self.hard or self.estimator == "reinforce"


ESTIMATORS = ("relaxed", "reinforce")
#: Coldest Gumbel-softmax temperature accepted: logits / tau stays far from float32 overflow, and a
#: colder softmax is a hard argmax in float32 anyway (use `hard=True` for one-hot samples).
TAU_MIN = 1e-6


class RewardBaseline(nnx.Module):
    """REINFORCE's moving-average reward baseline (state of the search, checkpointed with it)."""

    def __init__(self):
        self.value = nnx.Variable(jnp.zeros((), jnp.float32))
        self.count = nnx.Variable(jnp.zeros((), jnp.int32))

    def advantage(self, reward: jax.Array, momentum: float) -> jax.Array:
        """`reward - baseline` (0 on the first step, whose reward starts the average), then update."""
        first = self.count.get_value() == 0
        base = jnp.where(first, reward, self.value.get_value())
        self.value.set_value(momentum * base + (1 - momentum) * reward)
        self.count.set_value(self.count.get_value() + 1)
        return reward - base


class SingleShot:
    """Bilevel single-shot search over one supernet (see module docstring).

    Call `run_epoch(train, val)` `cfg.epochs` times (the caller owns checkpointing: `state()` and
    `load_state()` round-trip everything, including the epoch counter), then `derive_arch()`.
    """

    def __init__(self, space: SearchSpace, model: Supernet, cfg: SearchConfig, *,
                 mask: SpaceMask | None = None, cost_fn: CostFn | None = None,
                 augment: AugmentFn = identity_input, mesh: jax.sharding.Mesh | None = None,
                 weight_optimizer: optax.GradientTransformation | None = None, total_steps: int | None = None,
                 limits: dict[str, float] | None = None, task: Task | None = None,
                 anchor: Architecture | None = None):
        if cfg.cost.uses_cost and cost_fn is None:
            raise ValueError(f"the hardware cost (latency form {cfg.cost.form!r}, memory budgets "
                             f"{cfg.cost.budgets}) needs a cost_fn (supernet.objectives.make_cost_fn)")
        self.space, self.model, self.cfg = space, model, cfg
        self.mask = space.check_mask(mask)
        self.allowed = jnp.asarray(self.mask.allowed)
        self.cost_fn, self.augment = cost_fn, augment
        # the loss and batch metric of what the network predicts (`supernet.tasks`); `augment` is
        # the image part of its augmentation
        self.task = task or Classification()
        if cfg.distill and not isinstance(self.task, Distillable):
            raise ValueError(f"distill: task {type(self.task).__name__} has no in-place distillation loss "
                             f"(tasks.Distillable); set distill=False")
        # the anchor of the sandwich and of progressive shrinking, one-hot [D, C]; it must be allowed
        self.anchor = None
        if cfg.uses_anchor:
            if anchor is None:
                raise ValueError(f"sandwich={cfg.sandwich} / shrink_epochs={cfg.shrink_epochs} start from an "
                                 f"anchor architecture: pass anchor= (e.g. the space's baseline)")
            arch = space.validate(anchor)
            if not bool(self.mask.contains(arch[None])[0]):
                raise ValueError(f"the anchor {space.encode(arch)} uses a choice the mask removed")
            self.anchor = jnp.asarray(space.one_hot(arch), jnp.float32)
        # hard limits on what is returned (cost key -> largest value by the cost model): the derived
        # architecture is the most probable one meeting them (`supernet.derive`)
        self.limits = dict(limits or {})
        if self.limits and cost_fn is None:
            raise ValueError(f"limits on {sorted(self.limits)} need a cost_fn to check them")
        self.mesh = mesh or make_mesh()
        self.epoch = 0
        self.seconds = 0.0
        self._weight_tx, self._total_steps = weight_optimizer, total_steps
        self._opts: tuple[nnx.Optimizer, nnx.Optimizer] | None = None
        # REINFORCE's reward baseline is state; other estimators keep the (model, opt, opt) layout
        # of earlier checkpoints.
        self._extra: tuple[nnx.Module, ...] = (RewardBaseline(),) if cfg.estimator == "reinforce" else ()
        self._step_fns: dict[bool, Callable] = {}
        self._argmax_cost: Callable | None = None
        self._derived: tuple[bytes, DV.Derivation] | None = None  # the last derivation, by its logits

    # ----------------------------------------------------------------- optimizers and state
    def init_optimizers(self, steps_per_epoch: int) -> None:
        """Builds the weight and architecture optimizers (their schedules need the epoch length);
        called by `run_epoch`, and before `state()` when a checkpoint is to be restored into it.
        Idempotent."""
        if self._opts is not None:
            return
        total = self._total_steps or self.cfg.epochs * steps_per_epoch
        wtx = self._weight_tx or weight_tx(self.cfg.optim, total)
        c = self.cfg
        arch_steps = max(1, (c.epochs - c.warmup_epochs) * steps_per_epoch)
        alr = (c.arch_lr if c.arch_lr_min is None else
               optax.cosine_decay_schedule(c.arch_lr, arch_steps, alpha=c.arch_lr_min / c.arch_lr))
        atx = optax.chain(optax.add_decayed_weights(c.arch_weight_decay),
                          optax.adam(alr, b1=c.arch_betas[0], b2=c.arch_betas[1]))
        self._opts = (nnx.Optimizer(self.model, wtx, wrt=nnx.Param),
                      nnx.Optimizer(self.model, atx, wrt=ArchLogits))

    def _modules(self) -> tuple:
        return (self.model, *self._opts, *self._extra)

    def state(self) -> dict[str, Any]:
        """Everything needed to resume: module + optimizer states and counters (a pytree)."""
        if self._opts is None:
            raise RuntimeError("nothing to save before the first epoch")
        return {"nnx": nnx.state(self._modules()), "epoch": self.epoch, "seconds": self.seconds}

    def load_state(self, state: dict[str, Any], steps_per_epoch: int) -> None:
        self.init_optimizers(steps_per_epoch)
        # replicated over the mesh as the step leaves it: a search restored after its last epoch
        # goes straight to evaluation, which must not mix one-device weights with sharded data
        nnx.update(self._modules(), jax.device_put(state["nnx"], NamedSharding(self.mesh, P())))
        self.epoch, self.seconds = int(state["epoch"]), float(state["seconds"])

    # ----------------------------------------------------------------- the step
    def _make_step(self, arch_on: bool, steps: int, val_steps: int):
        graphdef, _ = nnx.split(self._modules())
        cfg, mesh, allowed = self.cfg, self.mesh, self.allowed
        bs, aug, cost_fn, task = cfg.batch_size, self.augment, self.cost_fn, self.task
        total = cfg.epochs * steps
        n_choices = allowed.shape[-1]
        anchor = self.anchor

        def weights_of(logits, key, gstep):
            tau = R.temperature(cfg.tau, gstep, total)
            return R.relax(cfg.relaxation, logits, key, allowed=allowed, tau=tau, hard=cfg.hard)

        def sample_one_hot(logits, key):  # a ~ p (the relaxation's expected probabilities)
            p = R.probabilities(cfg.relaxation, logits, allowed)
            pick = jax.random.categorical(key, jnp.where(allowed, jnp.log(jnp.maximum(p, 1e-30)), -jnp.inf))
            return jax.nn.one_hot(pick, n_choices, dtype=jnp.float32), p

        def forward(m, x, w, one_hot: bool):
            with single_path(one_hot and cfg.single_path):
                return m(x, w)

        def regularisers(logits, gstep):
            ramp = jnp.asarray(gstep, jnp.float32) / max(total - 1, 1)
            reg = 0.0
            if cfg.relaxation == "dirichlet" and cfg.dirichlet_kl:
                reg = reg + cfg.dirichlet_kl * R.dirichlet_kl(logits, allowed)
            if cfg.beta_decay:
                reg = reg + cfg.beta_decay * ramp * R.beta_decay(logits, allowed)
            if cfg.entropy_weight:
                reg = reg + cfg.entropy_weight * ramp * mean_entropy(
                    R.probabilities(cfg.relaxation, logits, allowed), allowed)
            return reg

        def step(state, train, val, perm_t, perm_v, i, gstep, key):
            model, wopt, aopt, *extra = nnx.merge(graphdef, state)
            k_at, k_av, k_rt, k_rv = jax.random.split(jax.random.fold_in(key, gstep), 4)
            metrics = {}
            if arch_on:  # 1. architecture step on the held-out split
                xv, yv = gather_batch(val, perm_v, i % val_steps, bs, mesh)
                xv, yv = task.augment(k_av, xv, yv, aug)
                if cfg.estimator == "reinforce":
                    a, _ = sample_one_hot(model.arch_logits.get_value(), k_rv)
                    logits = jax.lax.stop_gradient(forward(model, xv, a, True))
                    ce_v, acc_v = task.loss(logits, yv), task.train_metric(logits, yv)
                    cost = cost_fn(a) if cost_fn is not None and cfg.cost.in_loss else {}
                    # TuNAS's reward: quality (batch accuracy) minus the cost terms of the loss form
                    reward = -combine(1.0 - acc_v, cost, cfg.cost)
                    adv = extra[0].advantage(jax.lax.stop_gradient(reward), cfg.reward_momentum)

                    def arch_loss(m):
                        lg = m.arch_logits.get_value()
                        logp = jnp.log(jnp.maximum(R.probabilities(cfg.relaxation, lg, allowed), 1e-30))
                        return -adv * jnp.sum(a * logp) + regularisers(lg, gstep)

                    grads = nnx.grad(arch_loss, argnums=nnx.DiffState(0, ArchLogits))(model)
                    metrics.update(reward=reward)
                else:
                    def arch_loss(m):
                        lg = m.arch_logits.get_value()
                        w, p = weights_of(lg, k_rv, gstep)
                        logits = forward(m, xv, w, cfg.hard)
                        ce = task.loss(logits, yv)
                        # one-hot forward: the cost of the sampled architecture (straight-through)
                        cost = cost_fn(w if cfg.hard else p) if cost_fn is not None and cfg.cost.in_loss else {}
                        loss = combine(ce, cost, cfg.cost)
                        return loss + regularisers(lg, gstep), (ce, task.train_metric(logits, yv), cost)

                    grads, (ce_v, acc_v, cost) = nnx.grad(arch_loss, argnums=nnx.DiffState(0, ArchLogits),
                                                          has_aux=True)(model)
                aopt.update(model, grads)
                metrics.update(val_ce=ce_v, val_acc=acc_v, **jax.lax.stop_gradient(cost))
            # 2. weight step on the training split
            xt, yt = gather_batch(train, perm_t, i, bs, mesh)
            xt, yt = task.augment(k_at, xt, yt, aug)
            uniform_path = cfg.path_sampling or (cfg.one_hot_forward and not arch_on)
            logits_now = jax.lax.stop_gradient(model.arch_logits.get_value())

            def weight_path(key):  # the architecture weights of one path of the weight step, one-hot?
                if uniform_path:  # SPOS: one uniformly sampled allowed path (also one-hot warm-ups)
                    pick = jax.random.categorical(key, jnp.where(allowed, 0.0, -jnp.inf), axis=-1)
                    if cfg.shrink_epochs:  # progressive shrinking: the anchor's choice with prob 1 - t / T
                        spread = jnp.minimum(1.0, gstep / (cfg.shrink_epochs * steps))
                        keep = jax.random.uniform(jax.random.fold_in(key, 0), pick.shape) >= spread
                        pick = jnp.where(keep, jnp.argmax(anchor, -1), pick)
                    return jax.nn.one_hot(pick, n_choices, dtype=jnp.float32), True
                if arch_on and cfg.estimator == "reinforce":
                    return sample_one_hot(logits_now, key)[0], True
                if arch_on:
                    return weights_of(logits_now, key, gstep)[0], cfg.hard
                return allowed / allowed.sum(-1, keepdims=True), False  # warm-up: uniform over the allowed

            w, one_hot = weight_path(k_rt)
            # the sandwich's further sampled paths (validated: with a sandwich every path is one-hot)
            sandwich = cfg.sandwich
            paths = [w] + [weight_path(jax.random.fold_in(k_rt, j))[0] for j in range(1, sandwich)]

            def weight_loss(m):
                # the sandwich rule: the anchor's loss plus each sampled path's, gradients summed
                # (BigNAS accumulates them); metrics are the sampled paths' (the first one's CE)
                loss, aux = 0.0, {}
                if sandwich:
                    teacher = forward(m, xt, anchor, True)
                    loss = task.loss(teacher, yt)
                    aux["anchor_acc"] = task.train_metric(teacher, yt)
                    teacher = jax.lax.stop_gradient(teacher)
                accs = []
                for j, wj in enumerate(paths):
                    logits = forward(m, xt, wj, one_hot)
                    ce = task.loss(logits, yt)
                    loss = loss + (task.distill_loss(logits, teacher) if cfg.distill else ce)
                    accs.append(task.train_metric(logits, yt))
                    if j == 0:
                        aux["train_ce"] = ce
                aux["train_acc"] = jnp.mean(jnp.stack(accs))
                return loss, aux

            (_, aux), grads = nnx.value_and_grad(weight_loss, argnums=nnx.DiffState(0, nnx.Param),
                                                 has_aux=True)(model)
            wopt.update(model, grads)
            metrics.update(aux)
            return nnx.state((model, wopt, aopt, *extra)), metrics

        return jax.jit(step, donate_argnums=0)

    # ----------------------------------------------------------------- public API
    def run_epoch(self, train: DeviceData, val: DeviceData, progress: Callable | None = None) -> dict[str, float]:
        """One epoch of alternating updates; returns the epoch's mean metrics and current choices.

        With a cost function the record also holds `latency_ms_argmax` (the cost of the architecture
        `derive_arch()` returns now; with `limits` also `meets_limits` and `derived_rank`, its place
        in the probability order) and `latency_gap` (`latency_ms / latency_ms_argmax - 1`, the
        optimised cost's relative distance from it); always `arch_entropy` (mean per decision, nats).
        """
        cfg = self.cfg
        steps = check_batch(cfg.batch_size, self.mesh, len(train), "training split")
        val_steps = check_batch(cfg.batch_size, self.mesh, len(val), "validation split")
        steps = min(steps, cfg.steps_per_epoch or steps)
        self.init_optimizers(steps)
        arch_on = self.epoch >= cfg.warmup_epochs
        if arch_on not in self._step_fns:
            self._step_fns[arch_on] = self._make_step(arch_on, steps, val_steps)
        step = self._step_fns[arch_on]
        t0 = time.perf_counter()
        key = jax.random.fold_in(jax.random.key(cfg.seed), 7)
        ek = jax.random.fold_in(key, self.epoch)
        perm_t = jax.random.permutation(jax.random.fold_in(ek, 0), len(train))
        perm_v = jax.random.permutation(jax.random.fold_in(ek, 1), len(val))
        state = jax.device_put(nnx.state(self._modules()), NamedSharding(self.mesh, P()))
        sums: dict[str, jax.Array] = {}
        it = range(steps) if progress is None else progress(range(steps))
        for i in it:
            state, m = step(state, train, val, perm_t, perm_v, jnp.int32(i),
                            jnp.int32(self.epoch * steps + i), key)
            sums = {k: sums.get(k, 0.0) + v for k, v in m.items()}
        nnx.update(self._modules(), state)
        rec = {k: float(v) / steps for k, v in sums.items()}
        self.seconds += time.perf_counter() - t0
        bad = [k for k, v in rec.items() if not np.isfinite(v)]
        if bad:
            raise FloatingPointError(f"non-finite {bad} in search epoch {self.epoch}; lower the learning "
                                     f"rates (weights {cfg.optim.lr}, logits {cfg.arch_lr}) or the latency weight"
                                     + (f", or raise the temperatures tau={tuple(cfg.tau)}"
                                        if cfg.relaxation == "gumbel" else ""))
        derived = self.derivation() if self.limits else None
        arch = self.derive_arch() if derived is None else derived.arch
        rec.update(epoch=self.epoch, seconds=self.seconds, arch=self.space.encode(arch),
                   arch_entropy=float(mean_entropy(jnp.asarray(self.probs()), self.allowed)))
        if derived is not None:
            rec.update(meets_limits=derived.feasible, derived_rank=derived.rank)
        if self.cost_fn is not None:
            argmax = derived.costs if derived is not None else self.costs_of(arch)
            rec.update({f"{k}_argmax": v for k, v in argmax.items()})
            if "latency_ms" in rec and "latency_ms" in argmax:
                rec["latency_gap"] = rec["latency_ms"] / argmax["latency_ms"] - 1.0
        self.epoch += 1
        return rec

    def probs(self) -> np.ndarray:
        """Current expected choice probabilities `[D, C]` (zero on removed choices)."""
        return np.asarray(R.probabilities(self.cfg.relaxation, self.model.arch_logits.get_value(), self.allowed))

    def derive_arch(self) -> np.ndarray:
        """The architecture the search returns now: the argmax among the allowed choices, or with
        `limits` the most probable live architecture that meets them (`derivation`)."""
        return self.derivation().arch if self.limits else self.argmax_arch()

    def argmax_arch(self) -> np.ndarray:
        """The most probable architecture among the allowed choices (limits ignored)."""
        return R.argmax_arch(jnp.asarray(self.probs()), self.allowed)

    def derivation(self) -> DV.Derivation:
        """The most probable live architecture meeting `limits` by the cost model, with its costs and
        its rank (`supernet.derive.most_probable`; exact on spaces small enough to enumerate)."""
        if self.cost_fn is None:
            raise ValueError("a derivation under limits needs the search's cost_fn")
        logp = self._logp()
        if self._derived is None or self._derived[0] != logp.tobytes():  # the logits moved since
            self._derived = logp.tobytes(), DV.most_probable(self.space, logp, np.asarray(self.allowed),
                                                               self.cost_fn, self.limits)
        return self._derived[1]

    def costs_of(self, arch: np.ndarray) -> dict[str, float]:
        """The cost model's costs of one architecture (the search's `cost_fn`, compiled once)."""
        if self._argmax_cost is None:
            self._argmax_cost = jax.jit(self.cost_fn)
        return {k: float(v) for k, v in self._argmax_cost(jnp.asarray(self.space.one_hot(arch))).items()}

    def _logp(self) -> np.ndarray:
        logp = np.log(np.maximum(self.probs(), 1e-30))
        logp[~np.asarray(self.allowed)] = -np.inf
        return logp

    def top_k(self, k: int) -> list[np.ndarray]:
        """The k most probable architectures under the factorised distribution (beam over decisions)."""
        return list(DV.top_k(self._logp(), k))


def mean_entropy(probs: jax.Array, allowed) -> jax.Array:
    """Mean over decisions of the entropy (nats) of the choice distribution among allowed choices."""
    p = jnp.where(jnp.asarray(allowed), probs, 0.0)
    return -jnp.mean(jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.maximum(p, 1e-30)), 0.0), -1))
