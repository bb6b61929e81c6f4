"""The workdir contract (DESIGN.md): everything a run produced, in one folder, never overwritten silently.

- `config.json`: the resolved config, git commit and dirty flag, package versions, device kind.
- `metrics.jsonl`: one JSON object per logged step/epoch (appended; survives a kill).
- `checkpoints/<stage>/`: orbax checkpoints, so a rerun of the same command resumes.
- `results.json`: the final architecture, accuracy, latency per cost model, memory, search seconds.

Opening a workdir that holds a *different* config is refused (unless `overwrite=True`, which moves
the old contents aside into `old-<time>/` rather than deleting them).

Example:
    >>> # wd = Workdir.open("/tmp/run", {"seed": 0}); wd.log({"epoch": 0}); wd.write_results({...})
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import time
from typing import Any

import jax
import numpy as np

PACKAGES = ("jax", "jaxlib", "flax", "optax", "chex", "orbax-checkpoint", "numpy", "ml_collections")


def _git(*args: str) -> str | None:
    try:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def provenance() -> dict[str, Any]:
    """Git commit/dirty flag, package versions and the device, recorded with every run."""
    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            versions[p] = None
    status = _git("status", "--porcelain")
    dev = jax.devices()[0]
    return {"git_commit": _git("rev-parse", "HEAD"), "git_dirty": bool(status) if status is not None else None,
            "versions": versions, "python": platform.python_version(),
            "device": {"platform": dev.platform, "kind": dev.device_kind, "count": jax.device_count()}}


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.generic, jax.Array)):
        return np.asarray(x).tolist()
    return x


def write_json(path: str, obj: Any) -> None:
    """Atomic JSON write (temp file + rename): a kill never leaves half a file."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(_jsonable(obj), f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def _with_new_defaults(old: dict, new: dict, defaults: dict) -> dict:
    """`old` plus the keys only `new` has whose value there equals `defaults` (recursively)."""
    out = dict(old)
    for k, v in new.items():
        if k not in old:
            if k in defaults and defaults[k] == v:
                out[k] = v
        elif isinstance(v, dict) and isinstance(old[k], dict) and isinstance(defaults.get(k), dict):
            out[k] = _with_new_defaults(old[k], v, defaults[k])
    return out


class WorkdirError(RuntimeError):
    """The workdir holds another experiment (the message says how to proceed)."""


class Workdir:
    """A run's folder (see module docstring)."""

    def __init__(self, path: str):
        self.path = path

    @classmethod
    def open(cls, path: str, config: dict[str, Any], overwrite: bool = False,
             defaults: dict[str, Any] | None = None) -> "Workdir":
        """Opens (or creates) the run folder for `config`.

        `defaults` (the base config): a key the stored config lacks, but `defaults` has and `config`
        holds at its default value, was added to the code after the run started; by the house rule
        (a new key's default keeps the old behaviour) it changes nothing, so the run still resumes.
        """
        os.makedirs(path, exist_ok=True)
        cfg_path = os.path.join(path, "config.json")
        if os.path.exists(cfg_path):
            with open(cfg_path) as f:
                old = json.load(f).get("config")
            if defaults is not None and isinstance(old, dict):
                old = _with_new_defaults(old, _jsonable(config), _jsonable(defaults))
            if old != _jsonable(config):
                if not overwrite:
                    diff = sorted(k for k in set(old or {}) | set(config)
                                  if (old or {}).get(k) != _jsonable(config).get(k))
                    raise WorkdirError(f"{path} holds a run with a different config (differs in {diff}); "
                                       "use another --workdir, or --overwrite to move the old run aside")
                aside = os.path.join(path, f"old-{time.strftime('%Y%m%d-%H%M%S')}")
                os.makedirs(aside)
                for name in os.listdir(path):
                    if not name.startswith("old-"):
                        os.replace(os.path.join(path, name), os.path.join(aside, name))
        wd = cls(path)
        if not os.path.exists(cfg_path):
            write_json(cfg_path, {"config": config, **provenance(), "created": time.time()})
        return wd

    def file(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    def log(self, record: dict[str, Any]) -> None:
        with open(self.file("metrics.jsonl"), "a") as f:
            f.write(json.dumps(_jsonable(record), sort_keys=True) + "\n")

    def metrics(self) -> list[dict[str, Any]]:
        if not os.path.exists(self.file("metrics.jsonl")):
            return []
        with open(self.file("metrics.jsonl")) as f:
            return [json.loads(line) for line in f if line.strip()]

    def write_results(self, results: dict[str, Any]) -> None:
        write_json(self.file("results.json"), results)

    def read_json(self, name: str) -> Any:
        p = self.file(name)
        if not os.path.exists(p):
            return None
        with open(p) as f:
            return json.load(f)

    def write_stage(self, stage: str, data: dict[str, Any]) -> None:
        """Marks a pipeline stage done with its outputs (`stages/<stage>.json`)."""
        os.makedirs(self.file("stages"), exist_ok=True)
        write_json(self.file("stages", f"{stage}.json"), data)

    def stage_done(self, stage: str) -> dict[str, Any] | None:
        return self.read_json(os.path.join("stages", f"{stage}.json"))
