"""Defaults shared by every config; a config file starts from `base()` and changes what it studies.

Every key here can be overridden from the command line (`--config.single_shot.epochs=10`).
"""

from __future__ import annotations

from typing import Sequence

import ml_collections

from experiments.config import ConfigError


def config_args(arg: str | None, valid: Sequence[str], default: str = "") -> list[str]:
    """The comma-separated words of `path.py:arg`; an unknown word (a typo such as `quikc`) is an
    error listing the valid ones, before any work."""
    args = [a for a in (arg or default).split(",") if a]
    bad = [a for a in args if a not in valid]
    if bad:
        raise ConfigError(f"unknown config argument(s) {bad}; valid: {', '.join(valid)}")
    return args


def base() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.num_devices = 0  # 0: all local devices (data parallel)
    c.matmul_precision = "default"
    c.stages = ["single_shot"]
    c.space = ml_collections.ConfigDict({"name": "nb201", "kwargs": {}})
    c.data = ml_collections.ConfigDict({"name": "cifar10", "dir": "", "num_train": 0, "num_test": 0})

    s = c.single_shot = ml_collections.ConfigDict()
    s.epochs = 50
    s.batch_size = 64
    s.val_fraction = 0.5  # NAS-Bench-201 / DARTS: half of the training set for the architecture step
    s.steps_per_epoch = 0  # 0: full epochs
    s.optim = {"lr": 0.025, "lr_min": 0.001, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4,
               "grad_clip": 5.0, "warmup_steps": 0}
    s.arch_lr = 3e-4
    s.arch_weight_decay = 1e-3
    s.arch_lr_min = -1.0  # < 0: constant arch_lr (DARTS); >= 0: cosine decay to it over the search
    s.relaxation = "softmax"
    s.tau = (10.0, 0.1)
    s.hard = False
    s.dirichlet_kl = 1e-3
    s.beta_decay = 0.0
    s.warmup_epochs = 0
    s.path_sampling = False  # weight steps on one uniformly sampled path (SPOS), not the mixture
    s.estimator = "relaxed"  # architecture gradient: "relaxed" (pathwise) or "reinforce" (TuNAS)
    s.reward_momentum = 0.95  # reinforce: moving-average reward baseline (TuNAS)
    s.entropy_weight = 0.0  # final weight of the choice entropy in the architecture loss (ramped from 0)
    s.single_path = True  # one-hot forward weights run only the chosen ops (same function, faster)
    s.bn_recalibration = 10  # training batches that recompute the derived subnet's BN statistics (SPOS)
    s.supernet = ml_collections.ConfigDict()  # extra kwargs of the supernet class
    s.top_k = 10  # most probable architectures handed on (warm start of a later `evolve`)

    k = c.cost = ml_collections.ConfigDict()
    k.form = "none"
    k.target_ms = ml_collections.FieldReference(None, field_type=float)
    k.weight = 0.0
    k.exponent = 0.6
    k.model = "analytic"
    k.accelerator = "npu"
    k.temperature = 0.05
    k.memory = ml_collections.FieldReference(None, field_type=str)
    k.memory_budget_bytes = ml_collections.FieldReference(None, field_type=float)
    k.memory_weight = 1.0
    k.discrete = False  # cost the argmax architecture (straight-through), not the expected table
    # dead_code: does the device remove dead ops ("prune") or run them ("keep"); "auto" picks the
    # fit with the lower leave-one-out error (hwmodel.fit.fit_space)
    k.surrogate = ml_collections.ConfigDict({"file": "", "csv": "", "column": "", "arch_column": "",
                                             "train_size": 50, "dead_code": "auto"})

    z = c.zero_shot = ml_collections.ConfigDict()
    z.proxies = ("naswot", "synflow", "jacob_cov")  # rank-averaged when there are several
    z.sample = 1000  # architectures scored (uniformly sampled inside the current mask)
    z.batch_size = 64  # Abdelfattah et al. 2021 / Mellor et al. 2021 use one batch of 64 images
    z.method = "marginal"  # or "progressive" (least harmful removal first, scored on the supernet)
    z.target_fraction = 0.2  # keep at most this fraction of the space
    z.top_k = 100  # best-scored architectures kept as a ranking (warm starts of `evolve`)
    z.supernet = ml_collections.ConfigDict()  # extra kwargs of the scored supernet
    # weights scored: "torch" = PyTorch's default init, the reference implementations' protocol and
    # `python -m experiments.zero_shot_eval`'s default (higher rank correlations, README); "model" = the
    # supernet's own init, kept as the default here so that earlier workdirs resume unchanged
    z.init = "model"

    e = c.evolve = ml_collections.ConfigDict()
    e.algorithm = "rea"  # regularized evolution; "nsga2" for accuracy x latency fronts
    e.evaluator = "table"  # table | supernet | train | zero_shot
    e.budget_evals = 300
    e.budget_seconds = 0.0  # 0: no time budget
    e.population = 0  # 0: the algorithm's default
    e.sample_size = 0  # 0: the algorithm's default
    e.warm_start = True  # seed the population with the zero-shot ranking / single-shot top-k if present
    e.train_steps = 100  # evaluator "train": steps of training per candidate
    # New keys must default to the old behaviour: workdirs made before a key existed then still
    # resume (`Workdir.open(defaults=...)`).
    # evaluator "supernet": BN statistics "recalibrate"d per candidate on single_shot.bn_recalibration
    # training batches (SPOS), the supernet's "running" ones, or per-"batch" ones
    e.supernet_bn = "recalibrate"
    e.eval_batches = 4  # evaluators "supernet"/"train": held-out batches per candidate
    # guided mutation (Abdelfattah et al. 2021's zero-cost move proposal): "zero_shot" = the zero_shot
    # scores pick the best neighbour with probability guide_prob (0.75 in their code); "" = unguided
    e.guide = ""
    e.guide_prob = 0.75

    r = c.retrain = ml_collections.ConfigDict()
    r.epochs = 30
    r.batch_size = 128
    r.steps_per_epoch = 0
    r.label_smoothing = 0.0
    r.optim = {"lr": 0.1, "lr_min": 0.0, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4,
               "grad_clip": 0.0, "warmup_steps": 0}

    c.table = ml_collections.ConfigDict({"csv": "", "arch_column": "arch_str", "column": "",
                                         "latency_columns": ()})
    c.report = ml_collections.ConfigDict({"accelerators": ("npu", "edgetpu", "mobile-cpu")})
    return c


def smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Seconds on a CPU: synthetic data, tiny schedule."""
    c.data.name = "synthetic"
    c.data.num_train = 256
    c.data.num_test = 128
    c.single_shot.epochs = 2
    c.single_shot.batch_size = 32
    c.single_shot.steps_per_epoch = 2
    c.retrain.epochs = 1
    c.retrain.batch_size = 32
    c.retrain.steps_per_epoch = 2
    return c
