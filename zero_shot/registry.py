"""The registry of zero-shot scores by name: `PROXIES["naswot"](net, batch, key) -> scalar`.

Every registered score is "higher is better" (a reference score where lower is better is negated;
each docstring states its sign). Scores register themselves from their modules
(`activation`, `gradient`, `tenas`, `baselines`); `zero_shot/__init__.py` imports them all.
"""

from __future__ import annotations

from typing import Callable

import jax

from hwmodel.registry import Registry

ScoreFn = Callable[..., jax.Array]
"""`score(net: Network, batch: (x, y), key) -> float32 scalar`."""

#: Zero-shot scores by name (a typo raises a KeyError listing the valid names).
PROXIES: Registry[ScoreFn] = Registry("zero-shot score")
