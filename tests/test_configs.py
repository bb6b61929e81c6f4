"""Configs: every shipped config loads and passes `check_config`, typed `:key=value` arguments, and
every key of `base()` and of every config file is read by some code (a key nothing reads is a
setting a researcher changes to no effect: `evolve.eval_batches` was one).

"Read" is decided from the source with `ast`: a dotted key `a.b.c` is read when one module of the
framework (the configs included: `get_sweep` reads `num_seeds`) loads the attribute or string key
`c` and also its section `b` (so a leaf named like a common word, e.g. `init`, must be read beside
its own section). Dict-valued keys splatted into a dataclass (`OptimConfig(**dict(sc.optim))`) are
read when their keys are that dataclass's fields; free-form kwargs dicts count as one key.
"""

import ast
import dataclasses
import pathlib

import pytest

from experiments.config import ConfigError, flatten, load_config
from experiments.configs.common import RETIRED, base, config_args
from supernet.capacity_descent import DescentConfig
from supernet.objectives import CostConfig
from supernet.single_shot import SearchConfig
from supernet.training import OptimConfig, TrainConfig

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("hwmodel", "supernet", "zero_shot", "experiments")
#: Every shipped config with the arguments its docstring and the README name.
SPECS = ["nb201/single_shot.py", "nb201/single_shot.py:cpu", "nb201/single_shot.py:cpu,pixel3",
         "nb201/single_shot.py:cpu,zero", "nb201/single_shot.py:beta,quick,zero", "nb201/single_shot.py:smoke",
         "nb201/single_shot.py:gdas,pixel3", "nb201/ablation.py", "nb201/ablation.py:quick",
         "nb201/ablation.py:smoke,guided", "mobile/npu.py:search", "mobile/npu.py:baseline", "mobile/npu.py:smoke",
         "mobile/npu.py:expert", "mobile/npu.py:expert,smoke",
         "mobile/curation.py", "mobile/curation.py:flops", "mobile/curation.py:curated,smoke",
         "mobile/accelerators.py", "mobile/accelerators.py:npu-p8", "mobile/accelerators.py:smoke",
         "mobile/convergence.py", "mobile/convergence.py:raw", "mobile/convergence.py:smoke",
         "mobile/convergence.py:descend", "mobile/convergence.py:descend,raw,smoke",
         "mobile/memory.py", "mobile/memory.py:baseline,smoke", "mobile/latency_cut.py",
         "mobile/latency_cut.py:rules", "mobile/latency_cut.py:transfer", "mobile/latency_cut.py:smoke",
         "mobile/latency_cut.py:retrain", "mobile/latency_cut.py:nas47,retrain,smoke",
         "mobile/latency_cut.py:v3", "mobile/latency_cut.py:v3,retrain",
         "mobile/memory.py:nas,retrain", "mobile/memory.py:rules,retrain,smoke", "mobile/memory.py:rules_nas",
         "segmentation/person_fpn.py", "segmentation/person_fpn.py:baseline,smoke",
         "detection/person_centernet.py", "detection/person_centernet.py:v3,copypaste",
         "detection/person_centernet.py:v3,scenes", "detection/person_centernet.py:transfer_fuse,scenes"]
#: Dict-valued keys whose items are a dataclass's fields (read by `Cls(**dict(section))`).
SPLATTED = {"single_shot.optim": OptimConfig, "retrain.optim": OptimConfig}
#: Sections translated by `experiments.config.from_section(Cls, section)`: their keys that are fields
#: of `Cls` are read (the test checks that the source makes that call).
FROM_SECTION = {"single_shot": SearchConfig, "cost": CostConfig, "retrain": TrainConfig, "descend": DescentConfig}
#: Free-form kwargs dicts (passed on whole to a space or supernet class).
KWARGS = ("space.kwargs", "single_shot.supernet", "zero_shot.supernet", "hardware.presets", "retrain.space_kwargs",
          "single_shot.space_kwargs", "task.kwargs",
          "space.remove")  # dicts whose keys are data (constructor arguments, decision names)


def _reads(path: pathlib.Path) -> set[str]:
    """Attribute names and string keys the module loads (`x.name`, `x["name"]`, `x.get("name")`)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            out.add(node.attr)
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) \
                and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
            out.add(node.slice.value)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            out.add(node.args[0].value)
    return out


MODULES = {f: _reads(f) for pkg in PACKAGES for f in sorted((ROOT / pkg).rglob("*.py"))}


def unread(keys) -> list[str]:
    """The dotted keys that no module reads (with their section), by the rule of the docstring."""
    def read(leaf: str, section: str | None) -> bool:
        return any(leaf in r and (section is None or section in r) for r in MODULES.values())

    out = []
    for key in keys:
        parts = key.split(".")
        if any(key == k or key.startswith(k + ".") for k in KWARGS):
            parts = next(k for k in KWARGS if key == k or key.startswith(k + ".")).split(".")
        if len(parts) == 2 and parts[0] in FROM_SECTION and \
                parts[1] in {f.name for f in dataclasses.fields(FROM_SECTION[parts[0]])}:
            continue
        spl = next((k for k in SPLATTED if key.startswith(k + ".")), None)
        if spl is not None:
            if parts[-1] not in {f.name for f in dataclasses.fields(SPLATTED[spl])}:
                out.append(key)
            parts = spl.split(".")
        if not read(parts[-1], parts[-2] if len(parts) > 1 else None):
            out.append(key)
    return sorted(set(out))


def test_the_sections_are_translated_by_from_section():
    source = "".join(f.read_text() for f in MODULES if f.parent.name == "experiments")
    for cls in FROM_SECTION.values():
        assert f"from_section({cls.__name__}, " in source, cls.__name__


def _keys(cfg) -> set[str]:
    flat = flatten(cfg)
    return set(flat) | {k for k in KWARGS if any(f == k or f.startswith(k + ".") for f in flat)}


def test_every_key_of_base_and_of_every_config_is_read():
    keys = _keys(base())
    for spec in SPECS:
        keys |= _keys(load_config(f"experiments/configs/{spec}"))
    assert not unread(keys), f"config keys that no code reads: {unread(keys)}"


def test_the_unread_key_check_can_fail():
    """A key nothing reads (the retired `evolve.eval_batches`), a misspelt optimizer field and a
    leaf read only under another section are reported; read ones are not."""
    assert unread(["evolve.eval_batches", "single_shot.optim.lr_max", "retrain.val_fraction"]) == [
        "evolve.eval_batches", "retrain.val_fraction", "single_shot.optim.lr_max"]
    assert unread(["single_shot.val_fraction", "single_shot.optim.lr", "space.kwargs.channels", "seed"]) == []
    assert set(RETIRED) & set(flatten(base())) == set()


@pytest.mark.parametrize("spec", SPECS)
def test_every_shipped_config_passes_the_checks(spec):
    from experiments.pipeline import prepare
    cfg = load_config(f"experiments/configs/{spec}")
    if cfg.data.name == "cifar10":  # CI and this machine have ../shared; elsewhere the synthetic stand-in
        cfg.data.name = "auto"
    prepare(cfg, quiet=True)


def test_typed_config_arguments():
    args = config_args("cpu,zero,epochs=5,fast=True", ("cpu", "zero"), epochs=15, fast=False, frac=0.5)
    assert list(args) == ["cpu", "zero"] and (args.epochs, args.fast, args.frac) == (5, True, 0.5)
    with pytest.raises(ConfigError, match=r"unknown config argument steps=3; typed arguments: epochs="):
        config_args("steps=3", ("cpu",), epochs=15)
    with pytest.raises(ConfigError, match=r"config argument fast=1: expected a bool"):
        config_args("fast=1", (), fast=False)
    with pytest.raises(ConfigError, match=r"unknown config argument 'quikc'; valid: cpu; typed: epochs="):
        config_args("quikc", ("cpu",), epochs=15)
    # in the shipped configs
    assert load_config("experiments/configs/nb201/single_shot.py:cpu,epochs=3").single_shot.epochs == 3
    assert load_config("experiments/configs/nb201/single_shot.py:cpu").single_shot.epochs == 15
    assert load_config("experiments/configs/nb201/ablation.py:quick,seeds=3").num_seeds == 3


def test_a_dict_literal_replaces_a_whole_section():
    """`--config.retrain.space_kwargs={}` retrains the searched space itself (full width) instead of
    the config's half-width proxy; a replaced section's keys can be set next; a non-dict is refused."""
    spec = "experiments/configs/mobile/latency_cut.py:v3,retrain"
    assert load_config(spec).retrain.space_kwargs.parallelism == 8
    assert load_config(spec, ["--config.retrain.space_kwargs={}"]).retrain.space_kwargs.to_dict() == {}
    cfg = load_config(spec, ["--config.retrain.space_kwargs={'parallelism': 4}",
                             "--config.retrain.space_kwargs.parallelism=32"])
    assert cfg.retrain.space_kwargs.to_dict() == {"parallelism": 32}
    with pytest.raises(ConfigError, match=r"--config.retrain.space_kwargs: expected a dict literal"):
        load_config(spec, ["--config.retrain.space_kwargs=3"])
    with pytest.raises(ConfigError, match=r"unknown config key 'retrain.space_kw'"):
        load_config(spec, ["--config.retrain.space_kw={}"])


def test_old_workdirs_resume_across_a_retired_key_and_a_changed_default(tmp_path):
    """A workdir written before `evolve.eval_batches` was retired and while `zero_shot.init`
    defaulted to "model" resumes with today's base config: the retired key at its old value is
    ignored, and the run goes on with the init it recorded (a different recorded value is refused)."""
    from experiments.config import to_dict
    from experiments.configs.common import CHANGED_DEFAULTS
    from experiments.pipeline import adopt_recorded_defaults
    from experiments.workdir import Workdir, WorkdirError, recorded_config
    old = to_dict(base())
    old["evolve"]["eval_batches"] = 4
    old["zero_shot"]["init"] = CHANGED_DEFAULTS["zero_shot.init"][0]
    Workdir.open(str(tmp_path), old)
    cfg = base()
    assert cfg.zero_shot.init == "torch"
    adopt_recorded_defaults(cfg, recorded_config(str(tmp_path)))
    assert cfg.zero_shot.init == "model"
    Workdir.open(str(tmp_path), to_dict(cfg), defaults=to_dict(base()), retired=RETIRED)  # resumes
    with pytest.raises(WorkdirError, match="eval_batches"):  # without the retired list: refused
        Workdir.open(str(tmp_path), to_dict(cfg), defaults=to_dict(base()))
    old["evolve"]["eval_batches"] = 8  # a value someone changed: not silently dropped
    Workdir.open(str(tmp_path / "b"), old)
    with pytest.raises(WorkdirError, match="eval_batches"):
        Workdir.open(str(tmp_path / "b"), to_dict(cfg), defaults=to_dict(base()), retired=RETIRED)
    fresh = base()  # a new workdir keeps the new default
    adopt_recorded_defaults(fresh, recorded_config(str(tmp_path / "new")))
    assert fresh.zero_shot.init == "torch"


def test_config_accelerators_derive_from_a_preset_and_run_like_one(tmp_path):
    """`hardware.presets` (a chip in its design phase): derived from a preset, registered at launch,
    then named like any preset; a derived P = 32 NPU is `make_npu(32)` (the same latency); bad
    definitions stop with one message."""
    import numpy as np

    from experiments.pipeline import launch, prepare
    from hwmodel import ACCELERATORS, analytic, make_npu
    from hwmodel.accelerators import MiB, derive
    from supernet.spaces import make_space
    p32 = derive(ACCELERATORS["npu"], "x", parallelism=32, sram_bytes=2 * MiB)
    ref = make_npu(32)
    table = make_space("mobile-curated").layers(make_space("mobile-curated").baseline_arch())
    assert float(analytic.latency_ms(p32, table)) == float(analytic.latency_ms(ref, table))
    assert float(analytic.latency_ms(ACCELERATORS["npu"], table)) > float(analytic.latency_ms(ref, table))
    cfg = load_config("experiments/configs/mobile/curation.py:curated,smoke")
    cfg.hardware.presets = {"chip-p8": {"base": "npu", "parallelism": 8, "sram_bytes": 524288}}
    cfg.landscape.cost = "chip-p8"
    cfg.report.accelerators = ("npu", "chip-p8")
    try:
        prepare(cfg, quiet=True)
        res = launch(cfg, str(tmp_path / "run"))
        assert res["latency_ms"]["analytic:chip-p8"] > 0 and ACCELERATORS["chip-p8"].mac_cols == 8
        prepare(cfg, quiet=True)  # the same definition again (a resumed run, a sweep's next member)
        assert np.isclose(ACCELERATORS["chip-p8"].sram_bytes, 524288)
    finally:  # the registry is the process's: leave it as the other tests expect it
        ACCELERATORS.pop("chip-p8", None)
    for presets, msg in (({"c1": {"base": "tpu9"}}, "unknown accelerator 'tpu9'"),
                         ({"c2": {"base": "npu", "lanes": 8}}, "unknown AcceleratorSpec fields \\['lanes'\\]"),
                         ({"c3": {"parallelism": 8}}, "name its base preset"),
                         ({"npu": {"base": "npu", "parallelism": 8}}, "'npu' is already an accelerator")):
        bad = load_config("experiments/configs/mobile/curation.py:curated,smoke")
        bad.hardware.presets = presets
        with pytest.raises(ConfigError, match=msg):
            prepare(bad, quiet=True)
