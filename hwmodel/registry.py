"""A dict of components by string name whose lookup failure lists the valid names.

Configs pick spaces, accelerators, proxies and evaluators by name; a typo must fail at once with a
message that says what to write instead.

Example:
    >>> r = Registry("accelerator", {"npu": 1})
    >>> r["npu"]
    1
    >>> r["nup"]  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    KeyError: "unknown accelerator 'nup'; valid names: npu"
"""

from __future__ import annotations

from typing import Any


class Registry(dict):
    """`dict[str, T]` with a helpful KeyError and a `register` decorator."""

    def __init__(self, kind: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kind = kind

    def __missing__(self, key: str) -> Any:
        raise KeyError(f"unknown {self.kind} {key!r}; valid names: {', '.join(sorted(self))}")

    def register(self, name: str):
        """Decorator registering a function or class under `name` (duplicates are an error)."""
        def wrap(obj):
            if name in self:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self[name] = obj
            return obj
        return wrap
