"""Defaults shared by every config; a config file starts from `base()` and changes what it studies.

Every key here can be overridden from the command line (`--config.single_shot.epochs=10`).
"""

from __future__ import annotations

from typing import Any, Sequence

import ml_collections

from experiments.config import ConfigError, defaults_of, parse_value


class ConfigArgs(list):
    """The bare words of a config argument, in order (`"cpu" in args`), with the typed `key=value`
    items as attributes (`args.epochs`), each at its declared default when not given."""


def config_args(arg: str | None, valid: Sequence[str], default: str = "", **typed: Any) -> ConfigArgs:
    """Parses `path.py:arg`, comma-separated bare words and typed `key=value` items (as big_vision's
    `parse_arg`): `single_shot.py:cpu,zero,epochs=5`. `typed` declares each key with its default,
    whose type the given value must have (`parse_value`: an int stays an int, a bool is True/False).
    An unknown word or key (a typo such as `quikc`) or a value of the wrong type is one error,
    before any work.

    >>> args = config_args("cpu,epochs=5", ("cpu", "zero"), epochs=15)
    >>> list(args), "zero" in args, args.epochs
    (['cpu'], False, 5)
    >>> config_args("cpu,epochs=five", ("cpu",), epochs=15)
    Traceback (most recent call last):
    experiments.config.ConfigError: config argument epochs=five: expected a int, got 'five'
    """
    out, values = ConfigArgs(), dict(typed)
    for item in (a for a in (arg or default).split(",") if a):
        key, eq, text = item.partition("=")
        if eq:
            if key not in typed:
                raise ConfigError(f"unknown config argument {key}={text}; typed arguments: "
                                  f"{', '.join(f'{k}=' for k in typed) or 'none'}; words: {', '.join(valid)}")
            try:
                values[key] = parse_value(text, typed[key])
            except ConfigError as e:
                raise ConfigError(f"config argument {item}: {e}") from None
        elif item in valid:
            out.append(item)
        else:
            raise ConfigError(f"unknown config argument {item!r}; valid: {', '.join(valid)}"
                              + (f"; typed: {', '.join(f'{k}=' for k in typed)}" if typed else ""))
    out.__dict__.update(values)
    return out


#: Keys removed from `base()`, with the value every config held: a workdir that recorded one at
#: that value resumes (`Workdir.open(retired=...)`). `evolve.eval_batches` was never read (the
#: `supernet` and `train` evaluators score the whole validation split).
#: `cost.memory` and `cost.memory_budget_bytes` (one memory penalty) became `cost.params_budget_bytes`
#: and `cost.activation_budget_bytes` (both at once); every config held them at None.
RETIRED = {"evolve.eval_batches": 4, "cost.memory": None, "cost.memory_budget_bytes": None}

#: Defaults changed since workdirs were written: key -> (old default, new default). A workdir that
#: recorded the old default, run again by a config that holds the new one, resumes with the old
#: value it started with (`experiments.pipeline.launch` says so in one line).
CHANGED_DEFAULTS = {"zero_shot.init": ("model", "torch")}


def overrides(c: ml_collections.ConfigDict, *keys: str, **extra: Any) -> dict[str, Any]:
    """A sweep run's override dict (`get_sweep`): the dotted `keys` at their values in `c` (a config
    the file's `get_config` built for that arm; sections as plain dicts, lists and tuples kept), plus
    `extra` (e.g. `name`, `seed`).

    >>> c = ml_collections.ConfigDict({"stages": ["evolve"], "space": {"free": ("b1_type",), "remove": {}}})
    >>> overrides(c, "stages", "space.free", "space.remove", seed=2)
    {'stages': ['evolve'], 'space.free': ('b1_type',), 'space.remove': {}, 'seed': 2}
    """
    out = {}
    for key in keys:
        value = c
        for part in key.split("."):
            value = value[part]
        out[key] = value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value
    return out | extra


def base() -> ml_collections.ConfigDict:
    # the dataclasses whose defaults the sections take (imported when a config is built, not when
    # this module is: `config_args` and the constants need none of the supernet package)
    from supernet.objectives import CostConfig
    from supernet.single_shot import SearchConfig
    from supernet.training import TrainConfig

    c = ml_collections.ConfigDict()
    c.seed = 0
    c.num_devices = 0  # 0: all local devices (data parallel)
    c.matmul_precision = "default"
    c.stages = ["single_shot"]
    # free: regular expressions of the decisions a search may change; the others stay at the space's
    # baseline architecture (empty: every decision is free). E.g. ("width_multiplier",) searches
    # only the depth multiplier, (r"b\d+_type",) only the block types (the article's V1 and V2).
    # remove: choices no search may take, {decision: (choice, ...)}, e.g. {"b3_type": ("skip",)}
    c.space = ml_collections.ConfigDict({"name": "nb201", "kwargs": {}, "free": (), "remove": {}})
    # input_size: the side images are letterboxed to (the dense-task sets; CIFAR-10 is 32 px as stored)
    # copy_paste: composites appended to coco128-person-boxes' training split (train persons pasted
    # onto train images, experiments.data.copy_paste; 0 = none)
    c.data = ml_collections.ConfigDict({"name": "cifar10", "dir": "", "num_train": 0, "num_test": 0,
                                        "input_size": 32, "copy_paste": 0})
    # what the network predicts (supernet.tasks.TASKS): classification, segmentation, detection;
    # kwargs: the task's options (`supernet.tasks.Task.options`), e.g. {"max_zoom": 1.0} turns off
    # the dense tasks' scale-and-crop augmentation
    c.task = ml_collections.ConfigDict({"name": "classification", "kwargs": {}})

    # The options of a section that a dataclass takes come from that dataclass's defaults (their one
    # source; its docstring says what each does) and are translated back by `from_section`; the
    # section's other keys belong to the launcher and are documented here.
    s = c.single_shot = defaults_of(SearchConfig, skip=("cost", "seed", "arch_betas", "arch_lr_min", "steps_per_epoch"))
    s.val_fraction = 0.5  # NAS-Bench-201 / DARTS: half of the training set for the architecture step
    s.steps_per_epoch = 0  # 0: full epochs
    s.arch_lr_min = -1.0  # < 0: constant arch_lr (DARTS); >= 0: cosine decay to it over the search
    s.bn_recalibration = 10  # training batches that recompute the derived subnet's BN statistics (SPOS)
    s.supernet = ml_collections.ConfigDict()  # extra kwargs of the supernet class
    s.top_k = 10  # most probable architectures handed on (warm start of a later `evolve`)
    # a finished workdir whose trained supernet this run derives from instead of training its own
    # (both searches without a hardware term in the loss, all else equal): one search, many targets
    s.supernet_from = ""
    # constructor arguments of the space that override `space.kwargs` for the trained supernet only
    # (`train_stages.proxy_space`, as `retrain.space_kwargs`): a narrower proxy with the same decisions
    s.space_kwargs = {}
    # the anchor of `sandwich` >= 1 and `shrink_epochs` >= 1: "baseline" (the space's baseline
    # network) or an architecture string of the space
    s.anchor = "baseline"

    k = c.cost = defaults_of(CostConfig)  # target_ms: None, or set from `target_frac` (pipeline.target_of)
    # dead_code: which ops the device runs ("prune": none-fed and unused ones removed, "unused": only
    # the unused ones removed, "keep": all, hwmodel.layers.DEAD_CODE); "auto" picks the
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
    # `python -m experiments.zero_shot_eval`'s default (higher rank correlations:
    # docs/results/zero_shot.md); "model" = the supernet's own init (the default before 2026-12-04;
    # workdirs that recorded it resume with it, CHANGED_DEFAULTS)
    z.init = "torch"

    e = c.evolve = ml_collections.ConfigDict()
    e.algorithm = "rea"  # regularized evolution; "nsga2" for accuracy x latency fronts
    e.evaluator = "table"  # table | supernet | train | zero_shot
    e.budget_evals = 300
    e.budget_seconds = 0.0  # 0: no time budget
    e.population = 0  # 0: the algorithm's default
    e.sample_size = 0  # 0: the algorithm's default
    e.warm_start = True  # seed the population with the zero-shot ranking / single-shot top-k / expert network if present
    e.train_steps = 100  # evaluator "train": steps of training per candidate
    # children per step of rea / samples per step of random, evaluated together: on `--executor ray`
    # a step's candidates train in parallel (1: Real et al.'s sequential REA; nsga2: its generation)
    e.batch = 1
    # a measurement backend ("onnxruntime", "jax", "zigzag:<description>") that measures every
    # candidate's latency beside the search's objectives (hardware in the loop); "": none
    e.measure = ""
    # New keys must default to the old behaviour: workdirs made before a key existed then still
    # resume (`Workdir.open(defaults=...)`).
    # evaluator "supernet": BN statistics "recalibrate"d per candidate on single_shot.bn_recalibration
    # training batches (SPOS), the supernet's "running" ones, or per-"batch" ones
    e.supernet_bn = "recalibrate"
    # guided mutation (Abdelfattah et al. 2021's zero-cost move proposal): "zero_shot" = the zero_shot
    # scores pick the best neighbour with probability guide_prob (0.75 in their code); "" = unguided
    e.guide = ""
    e.guide_prob = 0.75
    # what the search optimises: "accuracy" (the most accurate network, under the latency target
    # and budgets if any) or "latency" (the fastest network whose evaluator score is no lower than
    # the space's baseline architecture's: the article's "X % lower latency at the baseline's
    # accuracy", detection V1-V3; needs a latency model, e.g. cost.form='hinge' with target_frac=1)
    e.goal = "accuracy"

    r = c.retrain = defaults_of(TrainConfig, skip=("seed", "steps_per_epoch"))
    r.epochs = 30  # the launcher's retraining schedule (TrainConfig's own default is a short 10)
    r.steps_per_epoch = 0  # 0: full epochs
    r.optim.grad_clip = 0.0  # 0: no clipping, as OptimConfig's None (0.0 is what workdirs recorded)
    # constructor arguments of the space that override `space.kwargs` for the retrained network only
    # (`train_stages.proxy_space`): a narrower proxy with the same decisions, e.g. mobile half width
    r.space_kwargs = {}
    # a finished run's workdir whose retrained weights initialise every array of the same place and
    # shape (`train_stages.warm_start`: a CIFAR-10-pretrained backbone under a dense head); "": none
    r.init_from = ""

    # stage `expert` (`supernet.expert`): rules applied to the space's baseline, after those mined
    # from another run's workdir; hold: a later `evolve` keeps every decision a rule set (rules + NAS)
    c.expert = ml_collections.ConfigDict({"rules": (), "mine_from": "", "hold": False})

    # stage `given`: the architecture string it hands on (a candidate picked from a search's front)
    c.given = ml_collections.ConfigDict({"arch": "", "name": ""})  # name: a label for reports (e.g. A-E)
    c.table = ml_collections.ConfigDict({"csv": "", "arch_column": "arch_str", "column": "",
                                         "latency_columns": ()})
    # the found network's latency on each analytic preset, and measured by each backend of
    # `hwmodel.measure` (e.g. "zigzag:ascend_like", "onnxruntime": seconds per network) in results.json
    c.report = ml_collections.ConfigDict({"accelerators": ("npu", "edgetpu", "mobile-cpu"), "measured": ()})
    # accelerators that exist only in this config (a chip in its design phase): name -> {"base": a
    # preset, and the AcceleratorSpec fields that differ, or "parallelism": P}; registered at launch,
    # then named like any preset (cost.accelerator, report.accelerators, evolve's hwcost)
    c.hardware = ml_collections.ConfigDict({"presets": {}})
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


#: The mobile accuracy protocol's training proxy (`train_stages.proxy_space`): the searched
#: decisions of `mobile-curated` (P = 16, MobileNetV2's widths) on half the widths and half the
#: parallelism factor, so every layer has exactly half its channels.
MOBILE_HALF_WIDTH = {"parallelism": 8, "base_widths": (8, 12, 16, 32, 48, 80, 160), "stem_width": 16,
                     "head_width": 640}
#: The same proxy of the configs' two-stage smoke space (`base_widths=(16, 32)`, P = 16).
SMOKE_HALF_WIDTH = {"parallelism": 8, "base_widths": (8, 16), "stem_width": 8, "head_width": 32}


def mobile_data(c: ml_collections.ConfigDict, smoke_run: bool = False) -> None:
    """The mobile CPU protocol's data: 10,000 CIFAR-10 training images and 2,000 test images
    (`smoke_run`: 256 / 128 synthetic ones), for `mobile_retrain` and the searches that train."""
    if smoke_run:
        c.data.name, c.data.num_train, c.data.num_test = "synthetic", 256, 128
    else:
        c.data.name, c.data.num_train, c.data.num_test = "cifar10", 10000, 2000


def mobile_retrain(c: ml_collections.ConfigDict, smoke_space: bool = False) -> ml_collections.ConfigDict:
    """Appends `retrain` with the mobile space's CPU accuracy protocol: the half-width proxy
    (`MOBILE_HALF_WIDTH`) trained on 10,000 CIFAR-10 images for 3 epochs (batch 128, cosine SGD 0.1,
    weight decay 5e-4, label smoothing 0.1; about 10 min for MobileNetV2 on a 2-core CPU), tested on
    2,000. `smoke_space`: the configs' two-stage smoke space (`base_widths=(16, 32)`) on synthetic data."""
    c.stages = [*c.stages, "retrain"]
    mobile_data(c, smoke_space)
    c.retrain.space_kwargs = MOBILE_HALF_WIDTH
    c.retrain.epochs = 3
    c.retrain.batch_size = 128
    c.retrain.label_smoothing = 0.1
    c.report.measured = ()  # the hardware side is each study's sweep without `retrain`
    if smoke_space:
        c.retrain.space_kwargs = SMOKE_HALF_WIDTH
        c.retrain.epochs, c.retrain.batch_size, c.retrain.steps_per_epoch = 1, 32, 2
    return c


def coco128_person(task: str, data: str, num_classes: int, batch_size: int, smoke_run: bool) -> ml_collections.ConfigDict:
    """The dense-task CPU protocol on COCO128 person (`detection/person_centernet.py`,
    `segmentation/person_fpn.py`): MobileNetV2 on `mobile-curated` (P = 16) at 160 px with ImageNet
    strides and the FPN-style decoder on stage 2 (64 channels), trained 60 epochs (SGD 0.05) by
    `retrain`, and the studies' search space (block types without `skip`) and capacity evaluator;
    `smoke_run`: a tiny 32 px space and two steps on the same data."""
    c = base()
    c.task.name = task
    c.space.name = "mobile-curated"
    c.space.kwargs = {"parallelism": 16, "input_size": 160, "stem_stride": 2,
                      "stage_strides": (1, 2, 2, 2, 1, 2, 1), "num_classes": num_classes, "head": task,
                      "head_channels": 64, "decoder_stage": 2}
    c.cost.accelerator = "npu"
    c.cost.form = "none"
    c.report.accelerators = ("npu", "npu-p32", "edgetpu", "mobile-cpu")
    c.data.input_size = 160
    c.stages = ["baseline", "retrain"]
    c.retrain.epochs = 60
    c.retrain.optim.lr = 0.05
    # the studies' searches (detection V1-V3, segmentation A-E): IBN or fused IBN per block, scored
    # by the training-free capacity proxy; `space.free` picks each arm's decisions
    c.space.free = ()
    c.space.remove = {r"b\d+_type": ("skip",)}
    c.evolve.evaluator = "capacity"
    c.target_frac = 0.0
    if smoke_run:
        smoke(c)
        c.space.kwargs = {"parallelism": 4, "input_size": 32, "stem_stride": 2, "blocks_per_stage": (1, 2, 2),
                          "base_widths": (8, 16, 24), "stage_strides": (1, 2, 2), "stem_width": 8,
                          "num_classes": num_classes, "head": task, "head_channels": 16, "decoder_stage": 1}
        c.data.input_size = 32
    c.data.name = data
    c.retrain.batch_size = batch_size
    return c


def cifar_pretrain(c: ml_collections.ConfigDict, smoke_run: bool = False) -> ml_collections.ConfigDict:
    """Turns a dense-task config into the pretraining of its backbone for `retrain.init_from`: the
    same space (widths, parallelism, blocks) with the classification head on CIFAR-10 at 32 px
    (stem stride 1, MobileNetV2's CIFAR strides), MobileNetV2 trained on 10,000 images for 5 epochs
    (batch 128, cosine SGD 0.1, label smoothing 0.1). Every backbone weight then has the dense
    network's place and shape (`train_stages.warm_start`); the head is trained from scratch."""
    c.task.name = "classification"
    kw = dict(c.space.kwargs)
    kw.update(head="classification", num_classes=10, input_size=32)
    if not smoke_run:
        kw.update(stem_stride=1, stage_strides=(1, 1, 2, 2, 1, 2, 1))
    c.space.kwargs = kw
    c.stages = ["baseline", "retrain"]
    c.data.name, c.data.input_size = "cifar10", 32
    c.data.num_train, c.data.num_test = 10000, 2000
    c.retrain.epochs, c.retrain.batch_size, c.retrain.label_smoothing = 5, 128, 0.1
    c.retrain.optim.lr = 0.1
    c.report.measured = ()
    if smoke_run:
        smoke(c)
    return c
