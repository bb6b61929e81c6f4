"""Search spaces: named decisions with finite choices; an architecture is an int array of choices.

`SearchSpace` is the contract every space implements (see `supernet/spaces/`):
- `decisions`: the ordered decisions; an `Architecture` is `int32[n_decisions]` of choice indices.
- `sample` (vectorised, from a JAX key, optionally restricted by a `SpaceMask`), `mutate`.
- `encode`/`decode`: a readable string per architecture, with a clear error when malformed.
- `layers(arch)` and `expected_layers(probs)`: the superset `LayerTable` for a discrete
  architecture or for a distribution over choices (`probs`: `[n_decisions, max_choices]`, rows
  summing to one, padded with zeros), built from the same `TableTemplate` so that
  `expected_layers(one_hot(arch)) == layers(arch)`.

Example:
    >>> from supernet.spaces import make_space
    >>> space = make_space("nb201")
    >>> arch = space.sample(jax.random.key(0))
    >>> space.decode(space.encode(arch)).tolist() == arch.tolist()
    True
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar, Mapping, Protocol, Sequence, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from hwmodel.layers import LayerTable, prune_dead
from supernet.template import TableTemplate

Architecture = Int[Array, "n_decisions"]
"""An architecture: one choice index per decision (int32)."""
ArchProbs = Float[Array, "n_decisions max_choices"]
"""A distribution over architectures: per-decision choice probabilities, zero-padded."""


@dataclasses.dataclass(frozen=True)
class Decision:
    """One searchable decision: a name and its choices (readable labels)."""

    name: str
    choices: tuple[Any, ...]

    def __post_init__(self):
        if not self.choices:
            raise ValueError(f"decision {self.name!r} has no choices")
        if len(set(map(str, self.choices))) != len(self.choices):
            raise ValueError(f"decision {self.name!r} has duplicate choices {self.choices}")

    @property
    def num_choices(self) -> int:
        return len(self.choices)


@dataclasses.dataclass(frozen=True, eq=False)
class SpaceMask:
    """Choices still allowed per decision (`allowed[d, c]`); made by pruning, read by samplers.

    Build one with `SearchSpace.mask(...)`; a mask that removes every choice of a decision is
    refused with the decision's name.
    """

    allowed: np.ndarray  # bool [n_decisions, max_choices]

    def __post_init__(self):
        object.__setattr__(self, "allowed", np.asarray(self.allowed, bool))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SpaceMask) and np.array_equal(self.allowed, other.allowed)

    def __hash__(self) -> int:
        return hash(self.allowed.tobytes())

    @property
    def size(self) -> int:
        """Number of architectures left (product of allowed choices per decision)."""
        return int(np.prod(self.allowed.sum(-1).astype(object)))

    def contains(self, archs: Any) -> np.ndarray:
        """Bool `[N]`: which integer architectures `[N, n_decisions]` take only allowed choices."""
        a = np.asarray(archs)
        return self.allowed[np.arange(a.shape[-1]), a].all(-1)


@runtime_checkable
class HasBaseline(Protocol):
    """A space with a reference architecture (MobileNetV2 in the mobile spaces): the `baseline`
    stage and `target_frac` (a latency target as a fraction of the baseline's) need one."""

    def baseline_arch(self) -> np.ndarray: ...


@runtime_checkable
class HasUnreachableBranches(Protocol):
    """A space whose architectures can hold branches that reach no output (NAS-Bench-201 cells cut
    by `none` edges): benchmarks report rank correlations with and without them."""

    def has_unreachable_branch(self, archs: Any) -> np.ndarray: ...


class SearchSpace(abc.ABC):
    """Base class of search spaces (see module docstring). Subclasses define the template and scalars."""

    name: str = "space"
    #: the supernet family that builds its networks (`supernet.model.SUPERNETS`; e.g. `mobile` for
    #: `mobile-curated` and `mobile-raw`); "" for a space without a supernet (tests' toy spaces)
    family: ClassVar[str] = ""
    #: input height = width of the networks (NHWC, 3 channels); subclasses set it from their args
    input_size: int = 32
    #: classifier outputs; subclasses set it from their args
    num_classes: int = 10

    def __init__(self, decisions: Sequence[Decision], template: TableTemplate):
        names = [d.name for d in decisions]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate decision names in space {self.name!r}")
        self.decisions = tuple(decisions)
        self.template = template
        self.num_choices = np.asarray([d.num_choices for d in decisions], np.int32)
        self.max_choices = int(self.num_choices.max())
        self.choice_valid = np.arange(self.max_choices)[None, :] < self.num_choices[:, None]
        self._index = {d.name: i for i, d in enumerate(decisions)}

    # ----------------------------------------------------------------- size, masks, probabilities
    @property
    def num_decisions(self) -> int:
        return len(self.decisions)

    @property
    def size(self) -> int:
        """Number of architectures in the space."""
        return int(np.prod(self.num_choices.astype(object)))

    def decision_index(self, name: str) -> int:
        if name not in self._index:
            raise KeyError(f"space {self.name!r} has no decision {name!r}; decisions: {list(self._index)}")
        return self._index[name]

    def full_mask(self) -> SpaceMask:
        return SpaceMask(self.choice_valid.copy())

    def mask(self, remove: Mapping[str, Sequence[Any]] | None = None,
             allowed: np.ndarray | None = None) -> SpaceMask:
        """A validated SpaceMask: from a bool array, or the full space minus `remove[decision]` choices."""
        m = self.full_mask().allowed if allowed is None else np.asarray(allowed, bool).copy()
        for name, choices in (remove or {}).items():
            d = self.decisions[self.decision_index(name)]
            labels = [str(c) for c in d.choices]
            for c in choices:
                if str(c) not in labels:
                    raise ValueError(f"decision {name!r} has no choice {c!r}; choices: {labels}")
                m[self._index[name], labels.index(str(c))] = False
        return self.check_mask(SpaceMask(m))

    def check_mask(self, mask: SpaceMask | None) -> SpaceMask:
        """Validates a mask against this space (shape, padding, no empty decision)."""
        if mask is None:
            return self.full_mask()
        a = mask.allowed
        if a.shape != self.choice_valid.shape:
            raise ValueError(f"mask shape {a.shape} does not match space {self.name!r} "
                             f"({self.num_decisions} decisions x {self.max_choices} choices)")
        a = a & self.choice_valid
        empty = [self.decisions[i].name for i in np.flatnonzero(~a.any(-1))]
        if empty:
            raise ValueError(f"the mask removes every choice of decision(s) {empty}; keep at least one "
                             "choice per decision")
        return SpaceMask(a)

    def one_hot(self, arch: Architecture) -> ArchProbs:
        """One-hot probabilities `[..., n_decisions, max_choices]` of an architecture."""
        return jax.nn.one_hot(jnp.asarray(arch), self.max_choices, dtype=jnp.float32)

    def uniform_probs(self, mask: SpaceMask | None = None) -> ArchProbs:
        """The uniform distribution over the (masked) space."""
        a = jnp.asarray(self.check_mask(mask).allowed, jnp.float32)
        return a / a.sum(-1, keepdims=True)

    # ----------------------------------------------------------------- sampling and mutation
    def sample(self, key: jax.Array, num: int | None = None, mask: SpaceMask | None = None) -> Architecture:
        """Uniformly random architectures: `[D]` or `[num, D]` int32. Jittable for a fixed mask."""
        allowed = jnp.asarray(self.check_mask(mask).allowed)
        logits = jnp.where(allowed, 0.0, -jnp.inf)
        shape = (self.num_decisions,) if num is None else (num, self.num_decisions)
        return jax.random.categorical(key, logits, shape=shape).astype(jnp.int32)

    def mutate(self, key: jax.Array, arch: Architecture, mask: SpaceMask | None = None) -> Architecture:
        """Changes one decision (chosen uniformly among those with >1 allowed choice) to another choice.

        Regularized evolution's mutation (Real et al. 2019). Works under jit and vmap.
        """
        allowed = jnp.asarray(self.check_mask(mask).allowed)
        arch = jnp.asarray(arch, jnp.int32)
        kd, kc = jax.random.split(key)
        mutable = allowed.sum(-1) > 1
        d = jax.random.categorical(kd, jnp.where(mutable, 0.0, -jnp.inf))
        others = allowed[d] & (jnp.arange(self.max_choices) != arch[d])
        c = jax.random.categorical(kc, jnp.where(others, 0.0, -jnp.inf))
        return jnp.where(mutable.any(), arch.at[d].set(c.astype(jnp.int32)), arch)

    # ----------------------------------------------------------------- strings
    def validate(self, arch: Any) -> np.ndarray:
        """Checks shape and ranges; returns the architecture as a NumPy int32 array."""
        a = np.asarray(arch)
        if a.shape != (self.num_decisions,):
            raise ValueError(f"space {self.name!r} expects an architecture of {self.num_decisions} choices, "
                             f"got shape {a.shape}")
        if not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"architecture must hold integer choice indices, got dtype {a.dtype}")
        bad = np.flatnonzero((a < 0) | (a >= self.num_choices))
        if bad.size:
            d = self.decisions[bad[0]]
            raise ValueError(f"choice {a[bad[0]]} out of range for decision {d.name!r} "
                             f"(valid 0..{d.num_choices - 1}: {list(d.choices)})")
        return a.astype(np.int32)

    def validate_batch(self, archs: Any) -> np.ndarray:
        """`archs` as int32 `[N, D]` (one `[D]` architecture becomes `[1, D]`) with every choice in
        range; otherwise one error naming the first bad architecture and decision. What every batched
        consumer (evaluators, zero-shot scoring) checks its input with.

        >>> from supernet import make_space
        >>> make_space("nb201").validate_batch([[0, 1, 2, 3, 4, 5]])
        Traceback (most recent call last):
        ValueError: architecture 0: choice 5 out of range for decision 'edge_3_2' (valid 0..4: ['none', 'skip_connect', 'nor_conv_1x1', 'nor_conv_3x3', 'avg_pool_3x3'])
        """
        a = np.asarray(archs)
        if a.ndim == 1:
            a = a[None]
        if a.ndim != 2 or a.shape[1] != self.num_decisions:
            raise ValueError(f"expected architectures [N, {self.num_decisions}] for space {self.name!r}, "
                             f"got shape {np.shape(archs)}")
        if a.size and not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"architectures must hold integer choice indices, got dtype {a.dtype}")
        bad = np.argwhere((a < 0) | (a >= self.num_choices[None, :]))
        if bad.size:
            i, d = bad[0]
            dec = self.decisions[d]
            raise ValueError(f"architecture {i}: choice {a[i, d]} out of range for decision {dec.name!r} "
                             f"(valid 0..{dec.num_choices - 1}: {list(dec.choices)})")
        return a.astype(np.int32)

    def encode(self, arch: Architecture) -> str:
        """The architecture's readable string (`decode` inverts it)."""
        return self._format(self.validate(arch))

    def decode(self, text: str) -> np.ndarray:
        """Parses an architecture string; a malformed string raises ValueError saying what is wrong."""
        if not isinstance(text, str):
            raise ValueError(f"architecture string expected, got {type(text).__name__}")
        return self.validate(self._parse(text.strip()))

    def _format(self, arch: np.ndarray) -> str:
        """Default: `decision=choice` pairs joined by commas."""
        return ",".join(f"{d.name}={d.choices[i]}" for d, i in zip(self.decisions, arch))

    def _parse(self, text: str) -> np.ndarray:
        parts = [p for p in text.split(",") if p]
        if len(parts) != self.num_decisions:
            raise ValueError(f"space {self.name!r} needs {self.num_decisions} 'decision=choice' items, "
                             f"got {len(parts)} in {text!r}")
        out = []
        for d, p in zip(self.decisions, parts):
            name, _, label = p.partition("=")
            if name != d.name:
                raise ValueError(f"expected decision {d.name!r}, found {name!r} in {text!r}")
            labels = [str(c) for c in d.choices]
            if label not in labels:
                raise ValueError(f"decision {d.name!r} has no choice {label!r}; choices: {labels}")
            out.append(labels.index(label))
        return np.asarray(out, np.int32)

    # ----------------------------------------------------------------- layer tables
    def layers(self, arch: Architecture) -> LayerTable:
        """The network's layer table (the superset with weight 1 on chosen rows, 0 elsewhere)."""
        return self.template.build(self.arch_scalars(jnp.asarray(arch, jnp.int32)))

    def expected_layers(self, probs: ArchProbs) -> LayerTable:
        """The layer table of a distribution over architectures (presence probabilities,
        expected channel counts); differentiable in `probs`."""
        return self.template.build(self.expected_scalars(jnp.asarray(probs, jnp.float32)))

    def is_constant(self, arch: Architecture) -> np.ndarray:
        """Whether the network's output does not depend on its input `[...]` (bool): every row of its
        layer table is dead code (`hwmodel.layers.prune_dead`), e.g. a NAS-Bench-201 cell whose
        output node is reached only through `none` edges. Such a network predicts a constant (10.0 %
        in the benchmark table) and is never a search result.

        >>> from supernet.spaces import make_space
        >>> s = make_space("nb201")
        >>> s.is_constant(s.decode("|none~0|+|none~0|skip_connect~1|+|none~0|none~1|nor_conv_3x3~2|")).item()
        True
        >>> s.is_constant(s.decode("|none~0|+|skip_connect~0|none~1|+|none~0|none~1|nor_conv_3x3~2|")).item()
        False
        """
        arch = jnp.asarray(arch, jnp.int32)
        return np.asarray(jnp.sum(prune_dead(self.layers(arch)).weight, axis=-1) == 0)

    @abc.abstractmethod
    def arch_scalars(self, arch: Architecture) -> dict[str, jax.Array]:
        """Template scalars of a discrete architecture `[..., D]` (by indexing)."""

    @abc.abstractmethod
    def expected_scalars(self, probs: ArchProbs) -> dict[str, jax.Array]:
        """Template scalars of a distribution `[..., D, C]` (by expectation)."""

    # helpers for subclasses
    @staticmethod
    def pick(arch: jax.Array, d: int, values: Sequence[float] | np.ndarray) -> jax.Array:
        """`values[arch[..., d]]`."""
        return jnp.take(jnp.asarray(values, jnp.float32), arch[..., d])

    @staticmethod
    def expect(probs: jax.Array, d: int, values: Sequence[float] | np.ndarray) -> jax.Array:
        """`sum_c probs[..., d, c] * values[c]` (values padded with zeros)."""
        v = jnp.asarray(values, jnp.float32)
        return jnp.sum(probs[..., d, : v.shape[0]] * v, axis=-1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, decisions={self.num_decisions}, size={self.size:.3g})"
