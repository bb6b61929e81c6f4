"""The search spaces: curated mobile (IBN / fused IBN), FBNet and NAS-Bench-201.

Example:
    >>> from supernet.spaces import make_space, SPACES
    >>> sorted(SPACES)[:2]
    ['fbnet-cifar100', 'fbnet-imagenet']
"""

from supernet.spaces.registry import SPACES, make_space
from supernet.spaces import fbnet, mobile, nb201  # noqa: F401  (registers the spaces)

__all__ = ["SPACES", "make_space"]
