"""The workdir contract (docs/design.md): everything a run produced, in one folder, never overwritten silently.

- `config.json`: the resolved config, git commit and dirty flag, package versions, device kind.
- `metrics.jsonl`: one JSON object per logged step/epoch (appended; survives a kill).
- `checkpoints/<stage>/`: orbax checkpoints, so a rerun of the same command resumes.
- `results.json`: the final architecture, accuracy, latency per cost model, memory, search seconds.

Opening a workdir that holds a *different* config is refused (unless `overwrite=True`, which moves
the old contents aside into `old-<time>/` rather than deleting them). One process runs in a workdir
at a time (`held`: a `RUNNING` file names it while it runs; two would interleave their metrics and
checkpoints); a second launch into it stops with that process's id, and one left by a killed
process on this machine is taken over.

Example:
    >>> # wd = Workdir.open("/tmp/run", {"seed": 0}); wd.log({"epoch": 0}); wd.write_results({...})
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import socket
import subprocess
import time
from typing import Any, Iterator

import jax
import numpy as np

from experiments.config import ConfigError

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


def is_writer() -> bool:
    """Whether this process writes the workdir: process 0 of a distributed run
    (`experiments.distributed`), or the only process; the others read it (and resume from it)."""
    return jax.process_index() == 0


def write_json(path: str, obj: Any) -> None:
    """Atomic JSON write (temp file + rename): a kill never leaves half a file. Process 0 only."""
    if not is_writer():
        return
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


def _without(old: dict, retired: dict[str, Any]) -> dict:
    """`old` without the dotted keys of `retired` whose stored value is the retired one."""
    out = dict(old)
    for key, value in retired.items():
        head, _, rest = key.partition(".")
        if rest and isinstance(out.get(head), dict):
            out[head] = _without(out[head], {rest: value})
        elif not rest and head in out and out[head] == _jsonable(value):
            del out[head]
    return out


def recorded_config(path: str) -> dict[str, Any] | None:
    """The config a workdir recorded (`config.json`), or None for a new folder."""
    cfg_path = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_path):
        return None
    return _load_json(cfg_path, "restore it from a copy, or choose another --workdir").get("config")


def _leaves(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict) or not d:
        return {prefix[:-1]: d} if prefix else {}
    out = {}
    for k, v in d.items():
        out.update(_leaves(v, f"{prefix}{k}."))
    return out


def config_diff(old: Any, new: Any, limit: int = 6) -> str:
    """`key: stored -> given` for the leaf keys that differ (the first `limit`)."""
    a, b = _leaves(old or {}), _leaves(new or {})
    keys = sorted(k for k in set(a) | set(b) if a.get(k, "<absent>") != b.get(k, "<absent>"))
    items = [f"{k}: stored {a.get(k, '<absent>')!r}, given {b.get(k, '<absent>')!r}" for k in keys[:limit]]
    return "; ".join(items) + (f"; and {len(keys) - limit} more" if len(keys) > limit else "")


def _load_json(path: str, fix: str) -> Any:
    """A workdir's JSON file, or one `WorkdirError` naming the file and `fix` (edited by hand, cut off)."""
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise WorkdirError(f"{path} is not valid JSON ({e.msg}, line {e.lineno}); {fix}") from None


class WorkdirError(ConfigError):
    """The workdir holds another experiment (the message says how to proceed)."""


#: The file that names the process running in a workdir (`held`).
LOCK = "RUNNING"


def _alive(pid: int) -> bool:
    if pid <= 0:  # no process (os.kill would signal a group)
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextlib.contextmanager
def held(path: str) -> Iterator[None]:
    """Holds `path` for this process while the block runs (module docstring).

    Raises:
      WorkdirError: another live process holds it (on this machine; one on another machine is
        taken as live: the message says which file to remove if it is gone).
    """
    if not is_writer() or (os.path.exists(path) and not os.path.isdir(path)):
        yield  # another process of a distributed run, or a bad path that `Workdir.open` names
        return
    os.makedirs(path, exist_ok=True)
    lock, me = os.path.join(path, LOCK), {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                with open(lock) as f:
                    other = json.load(f)
                pid, host = int(other["pid"]), str(other["host"])
            except (OSError, ValueError, KeyError, TypeError):  # half-written by a killed process
                other, pid, host = {}, -1, me["host"]
            if host != me["host"] or (pid != me["pid"] and _alive(pid)):
                since = time.strftime("%Y-%m-%d %H:%M", time.localtime(other.get("since", 0)))
                raise WorkdirError(f"{path} is in use by process {pid} on {host} (since {since}); wait for it to "
                                   f"end or stop it, or remove {lock} if that process is gone") from None
            os.remove(lock)  # left by a process that is gone: take it over
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    else:  # another process took it between the two tries
        raise WorkdirError(f"{path} was taken by another process while this one started; rerun when it ends")
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.remove(lock)


class Workdir:
    """A run's folder (see module docstring)."""

    def __init__(self, path: str):
        self.path = path

    @classmethod
    def open(cls, path: str, config: dict[str, Any], overwrite: bool = False,
             defaults: dict[str, Any] | None = None, retired: dict[str, Any] | None = None) -> "Workdir":
        """Opens (or creates) the run folder for `config`.

        `defaults` (the base config): a key the stored config lacks, but `defaults` has and `config`
        holds at its default value, was added to the code after the run started; by the house rule
        (a new key's default keeps the old behaviour) it changes nothing, so the run still resumes.
        `retired` (dotted key -> value): keys removed from the code; a stored config holding one at
        that value (a key nothing read) still resumes.
        """
        if os.path.exists(path) and not os.path.isdir(path):
            raise WorkdirError(f"workdir {path!r} is a file, not a folder; choose another --workdir")
        if not is_writer():  # another process of a distributed run: process 0 opens (and checks) it
            return cls(path)
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as e:
            raise WorkdirError(f"cannot create workdir {path!r} ({e.strerror}); choose another --workdir") from None
        cfg_path = os.path.join(path, "config.json")
        if os.path.exists(cfg_path):
            old = _load_json(cfg_path, "restore it from a copy, or choose another --workdir").get("config")
            if defaults is not None and isinstance(old, dict):
                old = _with_new_defaults(old, _jsonable(config), _jsonable(defaults))
            if retired and isinstance(old, dict):
                old = _without(old, retired)
            if old != _jsonable(config):
                if not overwrite:
                    raise WorkdirError(f"{path} holds a run with a different config ({config_diff(old, _jsonable(config))}); "
                                       "use another --workdir, or --overwrite to move the old run aside")
                aside = os.path.join(path, f"old-{time.strftime('%Y%m%d-%H%M%S')}")
                os.makedirs(aside)
                for name in os.listdir(path):
                    if not name.startswith("old-") and name != LOCK:
                        os.replace(os.path.join(path, name), os.path.join(aside, name))
        wd = cls(path)
        if not os.path.exists(cfg_path):
            if not os.access(path, os.W_OK):
                raise WorkdirError(f"workdir {path!r} is not writable; choose another --workdir")
            write_json(cfg_path, {"config": config, **provenance(), "created": time.time()})
        return wd

    def file(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    def log(self, record: dict[str, Any]) -> None:
        if not is_writer():
            return
        with open(self.file("metrics.jsonl"), "a") as f:
            f.write(json.dumps(_jsonable(record), sort_keys=True) + "\n")

    def drop_metrics(self, stage: str, from_epoch: int = 0) -> int:
        """Removes `stage`'s records of epochs >= `from_epoch` (atomically; returns how many).

        A resumed stage calls this first: the epochs after its last complete checkpoint run again
        and are logged again, so their records from the killed run must go (never a step twice)."""
        if not is_writer():
            return 0
        old = self.metrics()
        keep = [m for m in old if not (m.get("stage") == stage and m.get("epoch", -1) >= from_epoch)]
        if len(keep) != len(old):
            tmp = self.file(f"metrics.jsonl.tmp{os.getpid()}")
            with open(tmp, "w") as f:
                f.writelines(json.dumps(_jsonable(m), sort_keys=True) + "\n" for m in keep)
            os.replace(tmp, self.file("metrics.jsonl"))
        return len(old) - len(keep)

    def metrics(self) -> list[dict[str, Any]]:
        if not os.path.exists(self.file("metrics.jsonl")):
            return []
        with open(self.file("metrics.jsonl")) as f:
            lines = f.read().split("\n")
        out = []
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                if i == len(lines) - 1:  # a record cut off by a kill mid-write: its epoch reruns
                    break
                raise WorkdirError(f"{self.file('metrics.jsonl')}, line {i + 1} is not JSON (edited?); "
                                   "fix or delete that line") from None
        return out

    def write_results(self, results: dict[str, Any]) -> None:
        """Writes `results.json`, unless it already holds exactly these results (so a finished run
        in a read-only workdir still prints them)."""
        if self.read_json("results.json") == json.loads(json.dumps(_jsonable(results), sort_keys=True)):
            return
        write_json(self.file("results.json"), results)

    def read_json(self, name: str) -> Any:
        p = self.file(name)
        if not os.path.exists(p):
            return None
        fix = ("delete it to rerun that stage" if name.startswith("stages") else "delete it to rewrite it")
        return _load_json(p, f"restore it, or {fix}")

    def write_stage(self, stage: str, data: dict[str, Any]) -> None:
        """Marks a pipeline stage done with its outputs (`stages/<stage>.json`)."""
        if not is_writer():
            return
        os.makedirs(self.file("stages"), exist_ok=True)
        write_json(self.file("stages", f"{stage}.json"), data)

    def stage_done(self, stage: str) -> dict[str, Any] | None:
        return self.read_json(os.path.join("stages", f"{stage}.json"))
