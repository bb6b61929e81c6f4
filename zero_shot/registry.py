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

#: Tasks each score supports (`supernet.tasks.TASKS` names). Scores that differentiate a cross-entropy
#: on class logits (snip, grad_norm, fisher, grasp) or read the logits' NTK assume classification;
#: the others read activations, weights or a sum of the output and take any task's network.
ALL_TASKS = ("classification", "segmentation", "detection")
CLASSIFICATION_ONLY = ("snip", "grad_norm", "fisher", "grasp", "ntk")


def supported_tasks(name: str) -> tuple[str, ...]:
    """The tasks the score `name` supports (KeyError listing the scores for an unknown name)."""
    PROXIES[name]  # noqa: B018  (the registry's KeyError for unknown names)
    return ("classification",) if name in CLASSIFICATION_ONLY else ALL_TASKS


def check_task(names, task: str) -> None:
    """Raises one line naming the first score of `names` that does not support `task`.

    >>> check_task(["naswot", "synflow"], "segmentation")
    >>> check_task(["snip"], "detection")
    Traceback (most recent call last):
    ...
    ValueError: zero-shot score 'snip' supports classification only (a cross-entropy on class logits); for detection use naswot, zen, params, flops, synflow, jacob_cov or linear_regions
    """
    for n in names:
        if task not in supported_tasks(n):
            others = [p for p in PROXIES if task in supported_tasks(p)]
            raise ValueError(f"zero-shot score {n!r} supports classification only (a cross-entropy on class "
                             f"logits); for {task} use {', '.join(others[:-1])} or {others[-1]}")
