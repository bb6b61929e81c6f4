"""Search spaces and (later) the weight-sharing supernet and search algorithms.

Example:
    >>> from supernet import make_space
    >>> make_space("nb201").num_decisions
    6
"""

from supernet.space import Architecture, ArchProbs, Decision, SearchSpace, SpaceMask
from supernet.spaces import SPACES, make_space

__all__ = ["SPACES", "ArchProbs", "Architecture", "Decision", "SearchSpace", "SpaceMask", "make_space"]
