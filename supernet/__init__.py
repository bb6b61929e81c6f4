"""Search spaces, the weight-sharing supernets and the search algorithms.

Example:
    >>> from supernet import make_space
    >>> make_space("nb201").num_decisions
    6
"""

from supernet import nets  # noqa: F401  (registers the supernets)
from supernet.heads import HEADS, ClassificationHead
from supernet.model import SUPERNETS, ArchLogits, Subnet, Supernet, make_supernet
from supernet.space import Architecture, ArchProbs, Decision, SearchSpace, SpaceMask
from supernet.spaces import SPACES, make_space
from supernet import pareto  # noqa: F401
from supernet.evaluators import EVALUATORS, Evaluator, make_evaluator
from supernet.multishot import Evolution, EvolutionConfig, EvolutionResult, InfeasibleError, evolve

__all__ = ["EVALUATORS", "HEADS", "SPACES", "SUPERNETS", "ArchLogits", "ArchProbs", "Architecture",
           "ClassificationHead", "Decision", "Evaluator", "Evolution", "EvolutionConfig", "EvolutionResult",
           "InfeasibleError", "SearchSpace", "SpaceMask", "Subnet", "Supernet", "evolve", "make_evaluator",
           "make_space", "make_supernet", "pareto"]
