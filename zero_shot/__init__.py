"""Zero-shot trainability scores (issue 4): scores by name, many architectures per compile, ensembles.

Every score is a pure function `PROXIES[name](net, (x, y), key) -> scalar`, higher is better, over a
`Network` (`network_of(model, arch)`: a supernet at an architecture or a standalone network). A
supernet with a one-hot architecture scores exactly like its derived subnet: activations of inactive
ops are masked (`supernet.blocks.Taps`), their weights get zero gradient.

Example (its first six lines are the setup the examples of the modules below use; `conftest.py`
runs them for those doctests):
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> from supernet import make_space, make_supernet
    >>> space = make_space("nb201", channels=4, cells_per_stage=1)
    >>> supernet = make_supernet(space, rngs=nnx.Rngs(0))
    >>> x, y = jax.random.normal(jax.random.key(1), (8, 32, 32, 3)), jnp.arange(8) % 10
    >>> import zero_shot as Z
    >>> archs = space.sample(jax.random.key(2), 4)
    >>> s = Z.score_archs(supernet, archs, (x, y), jax.random.key(0), proxies=("naswot", "synflow"))
    >>> Z.rank_ensemble(s, ["naswot", "synflow"]).shape  # one rank-averaged score per architecture
    (4,)
"""

from zero_shot import activation, baselines, gradient, tenas  # noqa: F401  (register the scores)
from zero_shot.batch import DEFAULT_PROXIES, ArchScorer, check_archs, check_names, score, score_archs
from zero_shot.ensemble import fit_and_report, fit_ensemble_weights, rank_ensemble, ranks, spearman
from zero_shot.network import (INITS, KERNELS, NTK_WEIGHTS, Batch, Network, cross_entropy, gaussian_init,
                               initialise, network_of)
from zero_shot.registry import PROXIES
from zero_shot.taps import code_kernel, collect

__all__ = ["DEFAULT_PROXIES", "INITS", "KERNELS", "NTK_WEIGHTS", "PROXIES", "ArchScorer", "Batch", "Network",
           "check_archs", "check_names", "code_kernel", "collect", "cross_entropy", "fit_and_report", "fit_ensemble_weights",
           "gaussian_init", "initialise", "network_of", "rank_ensemble", "ranks", "score", "score_archs", "spearman"]
