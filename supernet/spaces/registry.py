"""Search spaces by name: `make_space("fbnet-cifar100")`; a typo lists the valid names."""

from __future__ import annotations

from typing import Any

from hwmodel.registry import Registry

SPACES = Registry("search space")


def make_space(name: str, **kwargs: Any):
    """Builds the registered space `name` (keyword arguments go to its constructor)."""
    return SPACES[name](**kwargs)
