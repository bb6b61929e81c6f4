"""Scoring many architectures of a supernet with one compiled function.

`score_archs(net, archs[N, D], (x, y), key, proxies=...)` enters the architectures as an int array
(one compile per search, docs/design.md): a `jax.lax.map` over them, `chunk` architectures vmapped at
a time. With `chunk=1` (the default) each architecture runs alone and every mixed op computes only
its chosen operation (`lax.switch`, `blocks.Taps.select`): the cost of the derived subnet, not of the
whole supernet; with `chunk > 1` the switch becomes a select over all operations (more memory and
work, fewer sequential steps: for accelerators). On CPU, the gradients of convolutions inside the
switch are matrix products (`supernet.nested_conv`: XLA:CPU's own are 8-20x slower inside a
conditional, which made snip 5x slower per cell). All architectures see the same weights, the same
batch and the same key (per score `fold_in(key, crc32(name))`, per repeat `fold_in(., r)`), so
their scores are comparable. Scores of one architecture share work (one loss backward for snip,
grad_norm, fisher and grasp). The compiled function's input length is one of a few sizes (`PIECES`):
N architectures are scored in pieces of 4^k (the largest that fits first), so calls of any length,
e.g. evolution's batches of 1 to 24 neighbours, reuse at most five compilations instead of one per
distinct N.

`score(model, (x, y), key, ...)` scores one network: a supernet with `arch`, or a derived subnet.

Example (`space`, `supernet`, `x`, `y`, `jax`, `jnp`: the setup of the `zero_shot` package's example):
    >>> s = score_archs(supernet, space.sample(jax.random.key(1), 8), (x, y), jax.random.key(0),
    ...                 proxies=("naswot", "synflow"))
    >>> s["naswot"].shape
    (8,)
"""

from __future__ import annotations

import zlib
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array

from supernet.model import Supernet
from supernet.space import SearchSpace
from zero_shot.network import Batch, Network, network_of
from zero_shot.registry import PROXIES

#: Piece sizes of a scoring call (largest first): every N is a sum of them, so at most this many compiles.
PIECES = (256, 64, 16, 4, 1)


def _pieces(n: int) -> list[int]:
    """Greedy split of `n` into `PIECES` sizes (e.g. 24 -> [16, 4, 4])."""
    out = []
    for p in PIECES:
        k, n = divmod(n, p)
        out += [p] * k
    return out


#: The scores computed when none are named.
DEFAULT_PROXIES = ("naswot", "synflow", "jacob_cov", "snip", "grad_norm", "fisher", "grasp", "ntk",
                   "linear_regions", "zen", "params", "flops")


def check_names(proxies: Sequence[str]) -> tuple[str, ...]:
    """The score names as a tuple; none at all is a ValueError and an unknown one a KeyError, each
    listing the valid names (the one check of score names: the scorers, the launcher's
    `zero_shot.proxies` and `experiments.zero_shot_eval --proxies` all call it)."""
    if isinstance(proxies, str):
        proxies = (proxies,)
    names = tuple(proxies)
    if not names:
        raise ValueError(f"no scores requested; valid names: {', '.join(sorted(PROXIES))}")
    for n in names:
        PROXIES[n]  # KeyError listing the valid names
    return names


def _check_options(names: tuple[str, ...], batch_sizes: Mapping[str, int] | None,
                   repeats: Mapping[str, int] | None, x: Array) -> tuple[tuple, tuple]:
    out = []
    for what, opt in (("batch_sizes", batch_sizes), ("repeats", repeats)):
        opt = dict(opt or {})
        for n, v in opt.items():
            if n not in names:
                raise KeyError(f"{what} names {n!r}, which is not among the requested scores {list(names)}")
            if int(v) < 1 or (what == "batch_sizes" and int(v) > x.shape[0]):
                raise ValueError(f"{what}[{n!r}] = {v} must be in 1..{x.shape[0] if what == 'batch_sizes' else 'inf'}")
        out.append(tuple(sorted((n, int(v)) for n, v in opt.items())))
    return out[0], out[1]


def _score_all(net: Network, names: tuple[str, ...], x: Array, y: Array, key: jax.Array,
               batch_sizes: dict[str, int], repeats: dict[str, int]) -> dict[str, Array]:
    out = {}
    for name in names:
        b = batch_sizes.get(name, x.shape[0])
        k = jax.random.fold_in(key, zlib.crc32(name.encode()))
        n_rep = repeats.get(name, 1)
        if n_rep == 1:
            out[name] = PROXIES[name](net, (x[:b], y[:b]), jax.random.fold_in(k, 0)).astype(jnp.float32)
            continue
        # A loop over the repeats, not an unrolled Python list: Zen's 32 repeats unrolled made XLA:CPU
        # compile 32 copies of the network (over 20 min and 10 GB for the NB201 supernet).
        vals = jax.lax.map(lambda r: PROXIES[name](net, (x[:b], y[:b]), jax.random.fold_in(k, r)),
                           jnp.arange(n_rep))
        out[name] = jnp.mean(vals).astype(jnp.float32)
    return out


def check_archs(space: SearchSpace, archs: Any) -> np.ndarray:
    """`space.validate_batch(archs)`, and at least one architecture to score."""
    a = space.validate_batch(archs)
    if a.shape[0] == 0:
        raise ValueError("no architectures to score (the sample is empty)")
    return a


class ArchScorer:
    """A compiled scorer of integer architectures of one supernet (see module docstring).

    Attributes:
      traces: how many times the scoring function was traced (1 per piece size used, see `PIECES`).
    """

    def __init__(self, net: Supernet, proxies: Sequence[str] = DEFAULT_PROXIES, *, chunk: int = 1,
                 batch_sizes: Mapping[str, int] | None = None, repeats: Mapping[str, int] | None = None):
        if not isinstance(net, Supernet):
            raise TypeError(f"ArchScorer scores architectures of a Supernet, got {type(net).__name__}; "
                            "use zero_shot.score for a standalone network")
        if int(chunk) < 1:
            raise ValueError(f"chunk must be >= 1 (architectures vmapped together), got {chunk}")
        self.names = check_names(proxies)
        self.chunk, self.space = int(chunk), net.space
        self.batch_sizes, self.repeats = dict(batch_sizes or {}), dict(repeats or {})
        template = network_of(net, np.zeros(self.space.num_decisions, np.int32))
        self.graphdef, self.traces = template.graphdef, 0
        self._template = template
        self._fn = jax.jit(self._scores)

    def _scores(self, state: nnx.State, archs: Array, x: Array, y: Array, key: jax.Array) -> dict[str, Array]:
        self.traces += 1
        t = self._template

        def one(arch):
            net = Network(self.graphdef, state, self.space.one_hot(arch), True, self.space, arch,
                          t.supports_taps, t.family)
            return _score_all(net, self.names, x, y, key, self.batch_sizes, self.repeats)

        return jax.lax.map(one, archs, batch_size=None if self.chunk == 1 else min(self.chunk, archs.shape[0]))

    def __call__(self, net: Supernet, archs: Any, batch: Batch, key: jax.Array) -> dict[str, np.ndarray]:
        a = check_archs(self.space, archs)
        x, y = jnp.asarray(batch[0], jnp.float32), jnp.asarray(batch[1], jnp.int32)
        _check_options(self.names, self.batch_sizes, self.repeats, x)
        graphdef, state = nnx.split(_train_clone(net))
        if graphdef != self.graphdef:
            raise ValueError("this scorer was built for another network structure; build a new ArchScorer")
        outs, i = [], 0
        for n in _pieces(len(a)):
            outs.append(self._fn(state, jnp.asarray(a[i:i + n]), x, y, key))
            i += n
        return {k: np.concatenate([np.asarray(o[k]) for o in outs]) for k in outs[0]}


def _train_clone(net: nnx.Module) -> nnx.Module:
    m = nnx.clone(net)
    m.train()
    return m


_SCORERS: dict[Any, ArchScorer] = {}


def score_archs(net: Supernet, archs: Any, batch: Batch, key: jax.Array,
                proxies: Sequence[str] = DEFAULT_PROXIES, *, chunk: int = 1,
                batch_sizes: Mapping[str, int] | None = None,
                repeats: Mapping[str, int] | None = None) -> dict[str, np.ndarray]:
    """Scores `archs` (`[N, n_decisions]` int) of the supernet `net` with one compiled function.

    Args:
      net: the supernet (its current weights are used; BN in train mode, statistics not updated).
      archs: integer architectures `[N, n_decisions]`.
      batch: `(images [B, H, W, C], labels [B])`.
      key: PRNG key (`jax.random.key`) for the random scores (zen), the same for every architecture.
      proxies: names in `PROXIES`.
      chunk: architectures vmapped together (1: one at a time, computing only the chosen ops).
      batch_sizes: per score, use only the first n images (e.g. `{"ntk": 16}`, TE-NAS's batch).
      repeats: per score, average over this many keys (`fold_in(key, r)`), e.g. `{"zen": 32}`.

    Returns:
      `{name: float32 [N]}`, every score higher-is-better.

    Raises:
      KeyError: an unknown score name (the message lists the valid names).
      ValueError: an empty or malformed architecture array, a bad option, or a score the network
        cannot compute (activation scores on networks without taps).
    """
    names = check_names(proxies)
    x = jnp.asarray(batch[0])
    bs, rep = _check_options(names, batch_sizes, repeats, x)
    graphdef, _ = nnx.split(_train_clone(net)) if isinstance(net, Supernet) else (None, None)
    ck = (graphdef, names, int(chunk), bs, rep)
    if graphdef is None or ck not in _SCORERS:
        scorer = ArchScorer(net, names, chunk=chunk, batch_sizes=dict(bs), repeats=dict(rep))
        if len(_SCORERS) > 32:
            _SCORERS.clear()
        _SCORERS[ck] = scorer
    return _SCORERS[ck](net, archs, batch, key)


_SINGLE: dict[Any, Any] = {}


def score(model: nnx.Module, batch: Batch, key: jax.Array, proxies: Sequence[str] = DEFAULT_PROXIES, *,
          arch: Any = None, space: SearchSpace | None = None) -> dict[str, float]:
    """Scores one network: a supernet at `arch` (int architecture, or weights `[D, C]` to weight every
    op), a derived `Subnet` (pass `space` for `params`/`flops`), or any NNX classifier.

    Compiled once per network structure and score list (a supernet's architectures are array inputs).
    """
    names = check_names(proxies)
    net = network_of(model, arch, space=space)
    x, y = jnp.asarray(batch[0], jnp.float32), jnp.asarray(batch[1], jnp.int32)
    ck = (net.graphdef, names, net.select, net.arch is None, net.arch_weights is None, id(net.space))
    if ck not in _SINGLE:
        if len(_SINGLE) > 32:
            _SINGLE.clear()

        def fn(state, aw, a, x, y, key, proto=net):
            n = Network(proto.graphdef, state, aw, proto.select, proto.space, a, proto.supports_taps, proto.family)
            return _score_all(n, names, x, y, key, {}, {})

        _SINGLE[ck] = jax.jit(fn)
    out = _SINGLE[ck](net.state, net.arch_weights, net.arch, x, y, key)
    return {k: float(v) for k, v in out.items()}
