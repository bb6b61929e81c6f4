"""Experiment configs: `experiments/configs/<study>/<name>.py` defines `get_config(arg) -> ConfigDict`.

As in big_vision, a config file is Python; `path.py:arg` passes `arg` (e.g. `smoke`) to
`get_config`, and `--config.key=value` overrides any leaf (nested keys with dots). An override of a
key the config does not have fails before any work, listing the valid keys, so a typo never runs a
silently different experiment. Values are parsed as Python literals when they look like one
(`1e-3`, `True`, `(1, 2)`, `None`) and must keep the type of the value they replace (int -> float is
allowed).

Example:
    >>> cfg = load_config("experiments/configs/nb201/single_shot.py:smoke", ["--config.seed=3"])
    >>> cfg.seed
    3
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
import ast
import contextlib
import importlib.util
import os
from typing import Any, Iterator, Sequence

import ml_collections

from hwmodel.tables import InputError


class ConfigError(ValueError):
    """A config file, argument or override that cannot be used (the message says how to fix it)."""


#: What every command line reports as one `error: ...` line with exit code 2: bad configs and
#: workdirs (`ConfigError`, `WorkdirError`), bad tables and data (`InputError`, `DataError`),
#: unknown registry names (`KeyError`, whose message lists the valid names) and files that are
#: missing, unreadable or unwritable (`OSError`).
USER_ERRORS = (ConfigError, InputError, KeyError, OSError)


def user_message(e: BaseException) -> str:
    """The one line a user error prints (a KeyError's message without its repr quotes)."""
    if isinstance(e, OSError) and e.filename and e.strerror:
        return f"{e.strerror}: {e.filename}"
    return str(e.args[0] if e.args else e)


@contextlib.contextmanager
def cli_errors(parser: argparse.ArgumentParser, also: tuple[type[BaseException], ...] = (),
               resume: str | None = None, where: str = "") -> Iterator[None]:
    """The one way a command line ends on an error: `USER_ERRORS` (and `also`, e.g. `ValueError`
    where the command's library raises it for bad arguments) exit 2 with one `error: ...` line; a
    search that diverged (`FloatingPointError`) exits 1; Ctrl-C exits 130 with one line (saying how
    to resume when the command can: `resume` names where). `where` (e.g. " in run 'x'") follows
    "error" / "interrupted"."""
    try:
        yield
    except USER_ERRORS + tuple(also) as e:
        parser.exit(2, f"error{where}: {user_message(e)}\n")
    except FloatingPointError as e:  # diverged or collapsed: the workdir keeps its checkpoints
        parser.exit(1, f"error{where}: {e}\n")
    except KeyboardInterrupt:
        hint = f"; rerun the same command to resume from {resume}" if resume else ""
        parser.exit(130, f"interrupted{where}{hint}\n")


def _load_module(path: str):
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} not found; configs live in experiments/configs/<study>/")
    spec = importlib.util.spec_from_file_location(f"_hwnas_config_{abs(hash(path))}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if not hasattr(mod, "get_config"):
        raise ConfigError(f"{path} defines no get_config(arg)")
    return mod


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """`{'a.b': leaf}` for every leaf of a (nested) ConfigDict or dict."""
    out = {}
    items = cfg.items() if hasattr(cfg, "items") else []
    for k, v in items:
        key = f"{prefix}{k}"
        if isinstance(v, (ml_collections.ConfigDict, dict)) and len(v):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def parse_value(text: str, old: Any) -> Any:
    """Parses an override string, keeping the type of the value it replaces."""
    try:
        new = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        new = text
    if old is None or new is None:
        return new
    if isinstance(old, (ml_collections.ConfigDict, dict)):  # a section, e.g. task.kwargs={"max_zoom": 1.0}
        if not isinstance(new, dict):
            raise ConfigError(f"expected a dict literal, e.g. {{'key': 1.0}}, got {text!r}")
        return ml_collections.ConfigDict(new)
    if isinstance(old, bool) != isinstance(new, bool):
        raise ConfigError(f"expected a bool (True/False), got {text!r}")
    if isinstance(old, float) and isinstance(new, int):
        return float(new)
    if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)):
        return type(old)(new)
    if isinstance(old, str) and not isinstance(new, str):
        return text
    if type(new) is not type(old):
        raise ConfigError(f"expected a {type(old).__name__}, got {text!r}")
    return new


def apply_overrides(cfg: ml_collections.ConfigDict, overrides: Sequence[str]) -> ml_collections.ConfigDict:
    """Applies `--config.key=value` strings; unknown keys fail listing the valid ones. A key naming a
    section takes a dict literal that replaces the whole section, e.g. `--config.retrain.space_kwargs={}`
    (the searched space itself instead of the config's proxy)."""
    flat = flatten(cfg)
    for item in overrides:
        if not item.startswith("--config.") or "=" not in item:
            raise ConfigError(f"overrides look like --config.key=value, got {item!r}")
        key, _, text = item[len("--config."):].partition("=")
        if key not in flat and any(k.startswith(key + ".") for k in flat):  # a whole section
            flat[key] = ml_collections.ConfigDict()
        if key not in flat:
            import difflib
            close = difflib.get_close_matches(key, list(flat), n=3, cutoff=0.6)
            section = sorted(k for k in flat if k.split(".")[0] == key.split(".")[0])
            hint = (f"did you mean {' or '.join(close)}?" if close else
                    f"keys under {key.split('.')[0]!r}: {', '.join(section)}" if section else
                    f"top-level sections: {', '.join(sorted({k.split('.')[0] for k in flat}))}")
            raise ConfigError(f"unknown config key {key!r}; {hint}")
        try:
            value = parse_value(text, flat[key])
        except ConfigError as e:
            raise ConfigError(f"--config.{key}: {e}") from None
        *parents, leaf = key.split(".")
        node = cfg
        for p in parents:
            node = node[p]
        try:
            node[leaf] = value
        except (TypeError, ValueError):  # a typed field (FieldReference) that refuses the value
            ref = node.get_ref(leaf) if hasattr(node, "get_ref") else None
            want = getattr(getattr(ref, "_field_type", None), "__name__", "value of the field's type")
            raise ConfigError(f"--config.{key}: expected a {want}, got {text!r}") from None
        flat = flatten(cfg)  # a replaced section's own keys can be overridden next
    return cfg


def load_config(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """Loads `path.py[:arg]` and applies overrides."""
    path, _, arg = spec.partition(":")
    mod = _load_module(path)
    cfg = mod.get_config(arg or None)
    if not isinstance(cfg, ml_collections.ConfigDict):
        cfg = ml_collections.ConfigDict(cfg)
    return apply_overrides(cfg, overrides)


def defaults_of(cls: type, skip: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """A config section holding the defaults of dataclass `cls`'s fields (except `skip`): the
    dataclass that uses the options is their one source. A nested dataclass becomes a dict, a
    `None` default a typed `FieldReference` (so `--config.key=1.5` is checked against the type).

    >>> from supernet.objectives import CostConfig
    >>> c = defaults_of(CostConfig, skip=("target_ms",))
    >>> c.form, c.params_budget_bytes, c.get_ref("params_budget_bytes").get_type().__name__
    ('none', None, 'float')
    """
    hints = typing.get_type_hints(cls)
    out = ml_collections.ConfigDict()
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if dataclasses.is_dataclass(value):
            out[f.name] = dataclasses.asdict(value)
        elif value is None:
            kind = next(t for t in typing.get_args(hints[f.name]) if t is not type(None))
            out[f.name] = ml_collections.FieldReference(None, field_type=kind)
        else:
            out[f.name] = value
    return out


def from_section(cls: type, section: Any, **given: Any) -> Any:
    """`cls(**given, **{field: section[field]})` for every field of dataclass `cls` that `section`
    holds and `given` does not: the one translation of a config section into the dataclass its
    options belong to (keys of the section that are no field of `cls` are the caller's)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**given, **{k: section[k] for k in section.keys() if k in names and k not in given})


def to_dict(cfg: Any) -> Any:
    """A JSON-ready plain dict (tuples as lists)."""
    if isinstance(cfg, ml_collections.ConfigDict):
        cfg = cfg.to_dict()
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    return cfg
