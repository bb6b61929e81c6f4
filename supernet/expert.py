"""Expert-in-the-loop rules: named, composable transforms of a mobile-space architecture, and mining
them from what a search found.

The reference article ("Productizing NAS with expert-in-the-loop"): when there is no time to search
a new task, an expert carries over what NAS found on another one: "fuse the IBN blocks in the early
layers", "channel sizes on multiples of the parallelism factor", "a depth multiplier"; with those
modifications alone the detector's latency fell by about 50 %, against 53 % with full NAS. Here each
such modification is a `Rule` in the `RULES` registry; `apply_rules` runs a list of them (each named
`name` or `name(key=value, ...)`) and returns the new architecture with every change it made, and
`mine` reads the rules a found architecture implies (which stages it fused, its width factor per
stage, its multiplier), so that `apply_rules(other_baseline, mined)` transfers them.

Every rule returns a valid architecture of the same space and is idempotent (applying it twice
changes nothing the second time). Rules act on `supernet.spaces.mobile.MobileSpace` (raw or curated
grid).

Example:
    >>> from supernet.spaces import make_space
    >>> space = make_space("mobile-raw", blocks_per_stage=(1, 2), base_widths=(16, 40),
    ...                    stage_strides=(1, 2), head_width=64)
    >>> out = apply_rules(space, space.baseline_arch(), ["multiplier(value=0.75)", "align_widths"])
    >>> space.stage_widths(out.arch).tolist()  # 16, 40 x 0.75 = 12, 30 -> multiples of 16
    [16, 32]
    >>> [str(c) for c in out.changes]
    ['multiplier: width_multiplier 1.0 -> 0.75', 'align_widths: s0_width 16 -> 21', 'align_widths: s1_width 40 -> 42']
"""

from __future__ import annotations

import abc
import dataclasses
import re
from typing import Any, Callable, Sequence

import numpy as np

from hwmodel import analytic
from hwmodel.accelerators import ACCELERATORS, AcceleratorSpec
from hwmodel.layers import layer_flops
from hwmodel.registry import Registry
from supernet.space import SpaceMask
from supernet.spaces.mobile import BLOCK_TYPES, MobileSpace

__all__ = ["RULES", "Applied", "Change", "Rule", "apply_rules", "best_fusion", "block_costs", "describe", "hold",
           "mine", "parse_rule"]


@dataclasses.dataclass(frozen=True)
class Change:
    """One decision a rule changed."""

    rule: str
    decision: str
    before: Any
    after: Any

    def __str__(self) -> str:
        return f"{self.rule}: {self.decision} {self.before} -> {self.after}"


@dataclasses.dataclass(frozen=True)
class Applied:
    """The architecture after some rules, every change they made (in order), and the indices of
    every decision a rule set (changed or set to the value it had): what `hold` keeps fixed."""

    arch: np.ndarray
    changes: tuple[Change, ...] = ()
    decided: frozenset[int] = frozenset()


class Rule(abc.ABC):
    """A transform of one architecture of a `MobileSpace` into another of the same space."""

    name: str = "rule"

    @abc.abstractmethod
    def targets(self, space: MobileSpace, arch: np.ndarray) -> dict[int, int]:
        """`{decision index: choice index}` this rule sets (entries equal to `arch` are no change)."""

    def apply(self, space: MobileSpace, arch: np.ndarray) -> Applied:
        """The architecture with `targets` set, checked valid, and the changes it made."""
        if not isinstance(space, MobileSpace):
            raise TypeError(f"expert rules act on the mobile spaces, not {space.name!r}")
        a = space.validate(arch).copy()
        changes = []
        targets = self.targets(space, a)
        for d, c in sorted(targets.items()):
            if int(c) != int(a[d]):
                dec = space.decisions[d]
                changes.append(Change(self.name, dec.name, dec.choices[a[d]], dec.choices[int(c)]))
                a[d] = int(c)
        return Applied(space.validate(a), tuple(changes), frozenset(int(d) for d in targets))


RULES: Registry[Callable[..., Rule]] = Registry("expert rule")


def _stage_blocks(space: MobileSpace, stage: int) -> np.ndarray:
    return np.flatnonzero(space.block_stage == stage)


@RULES.register("fuse")
@dataclasses.dataclass(frozen=True)
class Fuse(Rule):
    """Fuse every IBN block (1x1 expand + depthwise -> one full KxK conv) of the given stages (all
    when `stages` is empty); kernel and expansion stay. The article's detector V2: fused IBN in the
    early layers."""

    stages: tuple[int, ...] = ()
    name: str = "fuse"

    def targets(self, space, arch):
        stages = self.stages or tuple(range(len(space.base_widths)))
        bad = [s for s in stages if not 0 <= s < len(space.base_widths)]
        if bad:
            raise ValueError(f"fuse: no stage {bad} in a space of {len(space.base_widths)} stages")
        fused = BLOCK_TYPES.index("fused")
        return {int(space.type_ids[b]): fused for s in stages for b in _stage_blocks(space, s)
                if arch[space.type_ids[b]] == BLOCK_TYPES.index("ibn")}


@RULES.register("no_depthwise")
@dataclasses.dataclass(frozen=True)
class NoDepthwise(Rule):
    """Replace every depthwise conv by a standard conv: in this space, every IBN block becomes a
    fused IBN (its depthwise KxK and 1x1 expansion become one full KxK conv)."""

    name: str = "no_depthwise"

    def targets(self, space, arch):
        return Fuse(name=self.name).targets(space, arch)


@RULES.register("fuse_where_it_pays")
@dataclasses.dataclass(frozen=True)
class FuseWhereItPays(Rule):
    """Fuse an IBN block where the cost model says the network gets faster, one block at a time
    from the input, until no fusion pays (so the rule is idempotent). `accelerator` names an
    analytic preset (`hwmodel.ACCELERATORS`)."""

    accelerator: str = "npu"
    name: str = "fuse_where_it_pays"

    def targets(self, space, arch):
        spec: AcceleratorSpec = ACCELERATORS[self.accelerator]
        lat = lambda a: float(analytic.latency_ms(spec, space.layers(a)))  # noqa: E731
        a = np.asarray(arch).copy()
        ibn, fused = BLOCK_TYPES.index("ibn"), BLOCK_TYPES.index("fused")
        current, changed = lat(a), True
        while changed:
            changed = False
            for b in range(space.num_blocks):
                d = space.type_ids[b]
                if a[d] != ibn:
                    continue
                trial = a.copy()
                trial[d] = fused
                t = lat(trial)
                if t < current:
                    a, current, changed = trial, t, True
        return {int(d): int(a[d]) for d in space.type_ids}


@RULES.register("align_widths")
@dataclasses.dataclass(frozen=True)
class AlignWidths(Rule):
    """Every stage's actual width onto a multiple of the parallelism factor P (the nearest one the
    grid offers at this multiplier, ties up; at least P). A no-op on the curated grid, which is
    aligned by construction."""

    name: str = "align_widths"

    def targets(self, space, arch):
        p, m = space.parallelism, int(arch[space.mult_id])
        out = {}
        for s, d in enumerate(space.width_ids):
            actual = space.width_tables[s][m]  # the actual width of every grid choice at this multiplier
            ok = np.flatnonzero(actual % p == 0)
            if actual[arch[d]] % p == 0 or ok.size == 0:
                continue  # aligned already, or no aligned width in this stage's grid
            target = max(p, int(np.floor(actual[arch[d]] / p + 0.5)) * p)
            dist = np.abs(actual[ok] - target) - 1e-3 * (actual[ok] > target)  # ties go up
            out[int(d)] = int(ok[np.argmin(dist)])
        return out


@RULES.register("even_widths")
@dataclasses.dataclass(frozen=True)
class EvenWidths(Rule):
    """One width factor for every stage (the grid value nearest `factor x base width`; `factor` 0 =
    the median of the architecture's own factors): widths grow evenly across the model, as in
    MobileNetV2's width multiplier, instead of a different factor per stage."""

    factor: float = 0.0
    name: str = "even_widths"

    def targets(self, space, arch):
        grids = [np.asarray(space.decisions[d].choices, float) for d in space.width_ids]
        f = self.factor or float(np.median([g[arch[d]] / b for g, d, b in
                                            zip(grids, space.width_ids, space.base_widths)]))
        if f <= 0:
            raise ValueError(f"even_widths: factor must be > 0 (0 = the architecture's median), got {self.factor}")
        return {int(d): int(np.argmin(np.abs(g - f * b) - 1e-6 * g)) for g, d, b in
                zip(grids, space.width_ids, space.base_widths)}


@RULES.register("multiplier")
@dataclasses.dataclass(frozen=True)
class Multiplier(Rule):
    """Set the global width ("depth") multiplier to `value` (one of the space's multipliers)."""

    value: float = 1.0
    name: str = "multiplier"

    def targets(self, space, arch):
        m = [i for i, v in enumerate(space.multipliers) if np.isclose(v, self.value)]
        if not m:
            raise ValueError(f"multiplier: {self.value} is not one of the space's multipliers {space.multipliers}")
        return {int(space.mult_id): m[0]}


@RULES.register("stage_widths")
@dataclasses.dataclass(frozen=True)
class StageWidths(Rule):
    """Per stage, the grid value nearest `factors[s] x base width` (what `mine` reads from a found
    architecture: its width relative to the baseline, stage by stage)."""

    factors: tuple[float, ...] = ()
    name: str = "stage_widths"

    def targets(self, space, arch):
        if len(self.factors) != len(space.width_ids):
            raise ValueError(f"stage_widths: {len(self.factors)} factors for {len(space.width_ids)} stages")
        return {int(d): int(np.argmin(np.abs(np.asarray(space.decisions[d].choices, float) - f * b)))
                for d, f, b in zip(space.width_ids, self.factors, space.base_widths)}


_SPEC = re.compile(r"^\s*([a-z_]+)\s*(?:\((.*)\))?\s*$")


def parse_rule(text: str) -> Rule:
    """`name` or `name(key=value, ...)` (values are Python literals) -> the rule.

    Raises:
      KeyError: an unknown rule name (the message lists the valid ones).
      ValueError: a malformed spec or an argument the rule does not take.
    """
    import ast
    m = _SPEC.match(text)
    if not m:
        raise ValueError(f"expert rule {text!r} must look like name or name(key=value, ...)")
    cls = RULES[m.group(1)]
    kwargs: dict[str, Any] = {}
    if m.group(2):
        try:
            call = ast.parse(f"f({m.group(2)})", mode="eval").body
            kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
        except (SyntaxError, ValueError):
            raise ValueError(f"expert rule {text!r}: arguments must be key=literal pairs") from None
        if call.args:
            raise ValueError(f"expert rule {text!r}: name its arguments (key=value)")
    fields = {f.name for f in dataclasses.fields(cls)} - {"name"}
    unknown = set(kwargs) - fields
    if unknown:
        raise ValueError(f"expert rule {m.group(1)!r} takes {sorted(fields) or 'no arguments'}, not {sorted(unknown)}")
    for k, v in kwargs.items():
        if isinstance(v, list):
            kwargs[k] = tuple(v)
    return cls(**kwargs)


def apply_rules(space: MobileSpace, arch: np.ndarray, rules: Sequence[str | Rule]) -> Applied:
    """Applies the rules in order (each a `Rule` or its spec string) and collects their changes."""
    a, changes, decided = np.asarray(arch), [], frozenset()
    for r in rules:
        out = (parse_rule(r) if isinstance(r, str) else r).apply(space, a)
        a = out.arch
        changes += out.changes
        decided |= out.decided
    return Applied(a, tuple(changes), decided)


def hold(space: MobileSpace, applied: Applied, mask: SpaceMask | None = None) -> SpaceMask:
    """`mask` (default: the whole space) with every decision the rules set held at their choice:
    the article's expert in the loop, where the expert fixes what they know (e.g. the multiplier)
    and the search decides the rest, instead of only seeding the search with the rules' network.

    Raises:
        ValueError: a rule's choice that `mask` already excludes (names the decision).

    Example:
        >>> from supernet.spaces import make_space
        >>> space = make_space("mobile-curated", blocks_per_stage=(1, 2), base_widths=(16, 32),
        ...                    stage_strides=(1, 2), head_width=64)
        >>> out = apply_rules(space, space.baseline_arch(), ["multiplier(value=0.5)"])
        >>> m = hold(space, out)
        >>> m.allowed[space.mult_id].sum(), m.size * len(space.multipliers) == space.full_mask().size
        (np.int64(1), True)
    """
    allowed = space.check_mask(mask).allowed.copy()
    for d in sorted(applied.decided):
        c = int(applied.arch[d])
        if not allowed[d, c]:
            dec = space.decisions[d]
            raise ValueError(f"the rules set {dec.name} = {dec.choices[c]}, which the search space "
                             f"(space.free / space.remove) excludes")
        allowed[d] = False
        allowed[d, c] = True
    return space.check_mask(SpaceMask(allowed))


def mine(space: MobileSpace, found: np.ndarray) -> list[Rule]:
    """The rules a found architecture implies, in an order that reproduces it from the baseline:
    `fuse(stages=...)` for the stages where most blocks are fused, `stage_widths(factors=...)` (its
    grid width over the base width, per stage) and `multiplier(value=...)`. Kernels, expansions and
    skipped blocks are not rules: applied to the baseline, the mined rules reproduce `found`
    exactly when those are the baseline's and every stage is fused throughout or not at all."""
    a = space.validate(found)
    fused = BLOCK_TYPES.index("fused")
    stages = tuple(int(s) for s in range(len(space.base_widths))
                   if np.mean(a[space.type_ids[_stage_blocks(space, s)]] == fused) > 0.5)
    factors = tuple(float(space.decisions[d].choices[a[d]]) / b for d, b in zip(space.width_ids, space.base_widths))
    rules: list[Rule] = [Fuse(stages=stages)] if stages else []
    return rules + [StageWidths(factors=factors), Multiplier(value=space.multipliers[a[space.mult_id]])]


def describe(rules: Sequence[Rule]) -> list[str]:
    """The rules as spec strings (`parse_rule` reads them back; width factors rounded to 4 digits)."""
    def text(v):
        if isinstance(v, tuple):
            return "(" + ", ".join(text(x) for x in v) + ("," if len(v) == 1 else "") + ")"
        return repr(round(v, 4) if isinstance(v, float) else v)

    out = []
    for r in rules:
        args = ", ".join(f"{f.name}={text(getattr(r, f.name))}" for f in dataclasses.fields(r) if f.name != "name")
        out.append(f"{r.name}({args})" if args else r.name)
    return out


def block_costs(space: MobileSpace, arch: np.ndarray, accelerator: str = "npu") -> list[dict[str, Any]]:
    """Per block of `arch`: its type, FLOPs and exact analytic latency on `accelerator` (the rows
    named `b<i>.*` of the layer table, each weighted by its presence): where fusion raised FLOPs
    and what it did to latency (the article: fusion raised FLOPs but not latency, and paid early).

    Example:
        >>> from supernet.spaces import make_space
        >>> space = make_space("mobile-curated")
        >>> base = space.baseline_arch()
        >>> fused = apply_rules(space, base, ["fuse(stages=(1,))"]).arch
        >>> a, b = block_costs(space, base)[1], block_costs(space, fused)[1]
        >>> a["type"], b["type"], b["flops"] > a["flops"]
        ('ibn', 'fused', True)
    """
    spec = ACCELERATORS[accelerator]
    table = space.layers(np.asarray(arch))
    lat = np.asarray(analytic.layer_latency(spec, table)) * np.asarray(table.weight)
    flops = np.asarray(layer_flops(table))
    a = space.validate(arch)
    out = []
    for b in range(space.num_blocks):
        rows = [i for i, n in enumerate(space.row_names) if n.startswith(f"b{b}.")]
        out.append({"block": b, "stage": int(space.block_stage[b]),
                    "type": space.decisions[space.type_ids[b]].choices[a[space.type_ids[b]]],
                    "flops": float(flops[rows].sum()), "latency_us": float(lat[rows].sum() * 1e6)})
    return out


#: `best_fusion` enumerates every subset of the blocks it may fuse: 2**20 subsets at most.
MAX_FUSION_BLOCKS = 20


def best_fusion(space: MobileSpace, arch: np.ndarray, min_flops: float,
                accelerator: str = "npu") -> tuple[np.ndarray, float]:
    """The exact fastest choice of IBN vs fused IBN per block of `arch` (every other decision, and
    `skip` blocks, kept) among those of at least `min_flops` FLOPs: `(architecture, latency ms)`.

    Why: the detection study's searches (regularized evolution, `evolve.goal='latency'` under the
    capacity floor) can be checked against the optimum they approximate. A block's type changes
    only that block's rows of the layer table, so FLOPs and the analytic latency are sums of
    per-block terms (`block_costs`) and every subset of fused blocks is scored by one matrix
    product; the returned latency is recomputed on the whole network.

    Raises:
        ValueError: more than `MAX_FUSION_BLOCKS` blocks could fuse, or no choice reaches
            `min_flops` (the message gives the most FLOPs reachable).

    Example:
        >>> from supernet.spaces import make_space
        >>> space = make_space("mobile-curated", blocks_per_stage=(1, 2), base_widths=(16, 32),
        ...                    stage_strides=(1, 2), head_width=64)
        >>> base = space.baseline_arch()
        >>> flops = sum(c["flops"] for c in block_costs(space, base))
        >>> arch, ms = best_fusion(space, base, min_flops=0.0)  # no floor: fuse where it pays
        >>> bool(ms <= analytic.latency_ms(ACCELERATORS["npu"], space.layers(base)))
        True
    """
    spec = ACCELERATORS[accelerator]
    a = space.validate(arch).copy()
    ibn, fused = BLOCK_TYPES.index("ibn"), BLOCK_TYPES.index("fused")
    blocks = [b for b in range(space.num_blocks) if a[space.type_ids[b]] in (ibn, fused)]
    if len(blocks) > MAX_FUSION_BLOCKS:
        raise ValueError(f"best_fusion enumerates 2**n subsets: {len(blocks)} blocks exceed "
                         f"{MAX_FUSION_BLOCKS}; free fewer blocks")
    a[space.type_ids[blocks]] = ibn
    table = space.layers(a)
    base_flops = float(np.asarray(layer_flops(table)).sum())
    base_ms = float(analytic.latency_ms(spec, table))
    all_fused = a.copy()
    all_fused[space.type_ids[blocks]] = fused
    ci, cf = block_costs(space, a, accelerator), block_costs(space, all_fused, accelerator)
    d_flops = np.array([cf[b]["flops"] - ci[b]["flops"] for b in blocks])
    d_ms = np.array([(cf[b]["latency_us"] - ci[b]["latency_us"]) / 1e3 for b in blocks])
    subsets = (np.arange(2 ** len(blocks))[:, None] >> np.arange(len(blocks))) & 1
    flops, ms = base_flops + subsets @ d_flops, base_ms + subsets @ d_ms
    ok = flops >= min_flops * (1 - 1e-6)  # float32 FLOPs of the layer table
    if not ok.any():
        raise ValueError(f"no fusion of this architecture reaches {min_flops:.4g} FLOPs; "
                         f"the most reachable is {flops.max():.4g}")
    best = subsets[np.argmin(np.where(ok, ms, np.inf))]
    a[space.type_ids[blocks]] = np.where(best > 0, fused, ibn)
    return a, float(analytic.latency_ms(spec, space.layers(a)))
