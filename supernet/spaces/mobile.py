"""The curated mobile search space: a MobileNetV2 backbone with IBN / fused-IBN / skip blocks.

A MobileNetV2-style network (Sandler et al. 2018, Table 2) for an accelerator with parallelism
factor P (lanes): a 3x3 stem, seven stages of inverted-bottleneck blocks, a 1x1 head conv, global
average pooling and a classifier. Per block the search picks the block type (IBN, fused IBN or skip),
the kernel (3, 5) and the expansion ratio (1, 3, 6); per stage a width from a grid; and one global
width multiplier (the article's "depth multiplier" that scales every stage at once).

Curation (the article, "Search space curation"): the curated grid offers per stage only the distinct
multiples of P nearest to `B * f` for the width factors f (a handful of values, far apart), and the
actual width `grid value * multiplier` is re-aligned to a multiple of P, so no choice wastes lanes and
the latency landscape stays a smooth staircase. The raw grid offers every integer in
`[round(B * min f), round(B * max f)]` (the "increments of one" the article moved away from) and
rounds the scaled width to an integer. Rounding is to the nearest value, ties up.

Fixed parts: the stem (32) and head (1280) widths are not searched and not scaled by the multiplier
(MobileNetV2 keeps the last conv at 1280 for multipliers < 1); in the curated grid they are aligned
to the nearest multiple of P. The first block of a stage changes width/resolution, so it cannot be
`skip` and has no residual (as in MobileNetV2); the other blocks add a residual to IBN and fused IBN.

Decisions, in order: `b{b}_type`, `b{b}_kernel`, `b{b}_expansion` for each block b; `s{s}_width`
for each stage s; `width_multiplier`.

Template scalars: group `blk[n_blocks, 7]` holds per block `[p_ibn, p_fused, p_skip, E[k], E[e],
p(e == 1), p(e != 1)]`; group `width[n_stages]` the (expected) actual stage widths,
`E[W_s] = sum_{a,c} p_mult[a] p_width_s[c] W_s[a, c]` (bilinear; exact for one-hot).

Architecture string: `mult=1.0|w=16-24-32-64-96-160-320|ibn:k3:e1,ibn:k3:e6,fused:k5:e3,skip:k3:e6,...`
with the multiplier, the per-stage grid values (before the multiplier) and one `type:kK:eE` item
per block (a skipped block still carries its kernel and expansion decisions).

Example:
    >>> space = MobileSpace(parallelism=16, grid="curated")
    >>> arch = space.baseline_arch()
    >>> space.stage_widths(arch).tolist()
    [16, 32, 32, 64, 96, 160, 320]
    >>> space.decode(space.encode(arch)).tolist() == arch.tolist()
    True
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Int

from hwmodel.layers import OpKind
from supernet.space import Architecture, ArchProbs, Decision, SearchSpace
from supernet.spaces.registry import SPACES
from supernet.template import Number, TableTemplate, ref

GRIDS = ("curated", "raw")
HEADS = ("classification", "segmentation", "detection")
BLOCK_TYPES = ("ibn", "fused", "skip")
# Columns of the per-block scalar group "blk".
P_IBN, P_FUSED, P_SKIP, KERNEL, EXPANSION, P_E1, P_NOT_E1 = range(7)


def _round(x: np.ndarray | float) -> np.ndarray:
    """Round half up (np.round rounds half to even: at P=16 it would send 24 -> 32 but 40 -> 32)."""
    return np.floor(np.asarray(x, np.float64) + 0.5).astype(np.int64)


def _align(x: np.ndarray | float, p: int) -> np.ndarray:
    """Nearest multiple of `p` (ties up), at least `p`."""
    return np.maximum(p, _round(np.asarray(x, np.float64) / p) * p)


class MobileSpace(SearchSpace):
    family = "mobile"
    """MobileNetV2-style space with a curated (multiple-of-P) or raw (every integer) width grid.

    Example:
        >>> space = MobileSpace(grid="raw", blocks_per_stage=(1, 2), base_widths=(16, 24),
        ...                     stage_strides=(1, 2))
        >>> space.num_decisions  # 3 blocks x 3 + 2 stages + multiplier
        12
    """

    def __init__(self, parallelism: int = 16, grid: str = "curated", input_size: int = 32,
                 num_classes: int = 10, stem_stride: int = 1,
                 stage_strides: Sequence[int] = (1, 1, 2, 2, 1, 2, 1),
                 base_widths: Sequence[int] = (16, 24, 32, 64, 96, 160, 320),
                 blocks_per_stage: Sequence[int] = (1, 2, 3, 4, 3, 3, 1),
                 stem_width: int = 32, head_width: int = 1280,
                 width_multipliers: Sequence[float] = (0.5, 0.75, 1.0),
                 expansions: Sequence[int] = (1, 3, 6), kernels: Sequence[int] = (3, 5),
                 width_factors: Sequence[float] = (0.5, 0.75, 1.0, 1.25, 1.5),
                 head: str = "classification", head_channels: int = 64, decoder_stage: int = 2):
        """Builds the space. Defaults are MobileNetV2 for CIFAR (32x32 input, stem stride 1,
        stage strides (1, 1, 2, 2, 1, 2, 1)); ImageNet uses `input_size=224, stem_stride=2,
        stage_strides=(1, 2, 2, 2, 1, 2, 1), num_classes=1000`.

        `head`: `classification` (MobileNetV2's 1x1 head conv to `head_width`, global pooling, a
        linear classifier), `segmentation` (`supernet.heads.DenseHead`: the last stage and stage
        `decoder_stage` fused FPN-style at `head_channels`, `num_classes` per-pixel logits at the
        input's resolution) or `detection` (the same decoder, CenterNet's `num_classes` heatmaps
        plus box size and offset at stage `decoder_stage`'s stride); the layer table holds the
        head's rows either way.

        Raises:
          ValueError: unknown grid, inconsistent stage lengths or non-positive sizes.
        """
        if grid not in GRIDS:
            raise ValueError(f"unknown width grid {grid!r}; valid grids: {', '.join(GRIDS)}")
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}; valid heads: {', '.join(HEADS)}")
        n_st = len(base_widths)
        if not (len(stage_strides) == len(blocks_per_stage) == n_st >= 1):
            raise ValueError(f"stage_strides ({len(stage_strides)}), base_widths ({n_st}) and "
                             f"blocks_per_stage ({len(blocks_per_stage)}) need one entry per stage")
        for label, vals in dict(parallelism=[parallelism], input_size=[input_size],
                                num_classes=[num_classes], stem_stride=[stem_stride],
                                stage_strides=stage_strides, base_widths=base_widths,
                                blocks_per_stage=blocks_per_stage, stem_width=[stem_width],
                                head_width=[head_width], width_multipliers=width_multipliers,
                                expansions=expansions, kernels=kernels,
                                width_factors=width_factors, head_channels=[head_channels]).items():
            if len(vals) == 0 or min(vals) <= 0:
                raise ValueError(f"{label} must be positive and non-empty, got {tuple(vals)}")
        self.name = f"mobile-{grid}"
        self.grid, self.parallelism = grid, int(parallelism)
        self.input_size, self.num_classes, self.stem_stride = input_size, num_classes, stem_stride
        self.stage_strides, self.base_widths = tuple(stage_strides), tuple(base_widths)
        self.blocks_per_stage = tuple(blocks_per_stage)
        self.head, self.head_channels, self.decoder_stage = head, int(head_channels), int(decoder_stage)
        if head != "classification" and not 0 <= decoder_stage < n_st - 1:
            raise ValueError(f"decoder_stage must name a stage before the last (0..{n_st - 2}), got {decoder_stage}")
        self.multipliers = tuple(float(m) for m in width_multipliers)
        self.expansions, self.kernels = tuple(expansions), tuple(kernels)
        curated = grid == "curated"
        self.stem_width = int(_align(stem_width, parallelism)) if curated else int(stem_width)
        self.head_width = int(_align(head_width, parallelism)) if curated else int(head_width)

        # Width grids (decision choices) and actual widths W_s[a, c] = align(grid[c] * mult[a]).
        mult = np.asarray(self.multipliers, np.float64)
        self.width_grids: tuple[np.ndarray, ...] = tuple(
            np.unique(_align(np.asarray(width_factors, np.float64) * b, parallelism)) if curated
            else np.arange(_round(b * min(width_factors)), _round(b * max(width_factors)) + 1)
            for b in base_widths)
        self.width_tables: tuple[np.ndarray, ...] = tuple(
            _align(mult[:, None] * g[None, :], parallelism) if curated
            else np.maximum(1, _round(mult[:, None] * g[None, :])) for g in self.width_grids)

        # Blocks: stage, first-of-stage flag, stride.
        self.block_stage = np.repeat(np.arange(n_st), self.blocks_per_stage)
        self.block_first = np.concatenate([[True] + [False] * (n - 1) for n in self.blocks_per_stage])
        nb = self.num_blocks = len(self.block_stage)
        decisions: list[Decision] = []
        for b in range(nb):
            types = BLOCK_TYPES[:2] if self.block_first[b] else BLOCK_TYPES  # no skip across a shape change
            decisions += [Decision(f"b{b}_type", types), Decision(f"b{b}_kernel", self.kernels),
                          Decision(f"b{b}_expansion", self.expansions)]
        decisions += [Decision(f"s{s}_width", tuple(int(v) for v in g)) for s, g in enumerate(self.width_grids)]
        decisions.append(Decision("width_multiplier", self.multipliers))
        self.type_ids, self.kernel_ids, self.expansion_ids = (np.arange(nb) * 3 + i for i in range(3))
        self.width_ids = 3 * nb + np.arange(n_st)
        self.mult_id = 3 * nb + n_st
        super().__init__(decisions, self._build_template())

        # Value tables: arch_scalars indexes them, expected_scalars contracts them with probs.
        mc = self.max_choices
        self._v_type = np.zeros((nb, mc, 3), np.float32)  # [block, choice, (p_ibn, p_fused, p_skip)]
        for b in range(nb):
            n = 2 if self.block_first[b] else 3
            self._v_type[b, :n, :n] = np.eye(n)
        self._v_kernel = np.zeros(mc, np.float32)
        self._v_kernel[: len(self.kernels)] = self.kernels
        e = np.asarray(self.expansions, np.float32)
        self._v_exp = np.zeros((mc, 3), np.float32)  # [choice, (E[e], p(e == 1), p(e != 1))]
        self._v_exp[: len(e)] = np.stack([e, e == 1, e != 1], -1)
        self._w_table = np.zeros((n_st, len(mult), mc), np.float32)  # W_s[a, c], zero-padded choices
        for s, w in enumerate(self.width_tables):
            self._w_table[s, :, : w.shape[1]] = w

    # ----------------------------------------------------------------- template
    def _build_template(self) -> TableTemplate:
        t = TableTemplate({"blk": (self.num_blocks, 7), "width": (len(self.base_widths),)})
        names: list[str] = []

        def add(name: str, op: OpKind, **kw) -> int:
            names.append(name)
            return t.add(op, **kw)

        r = self.input_size
        x = add("input", OpKind.INPUT, c_out=3, h=r, w=r)
        x = add("stem", OpKind.CONV, src=x, act=1, c_in=3, c_out=self.stem_width, kernel=3,
                stride=self.stem_stride, h=r, w=r)
        r = -(-r // self.stem_stride)
        c: Number = self.stem_width
        stage_out: dict[int, tuple[int, int]] = {}  # stage -> (output row, resolution)
        for b in range(self.num_blocks):
            s = int(self.block_stage[b])
            first = bool(self.block_first[b])
            stride = self.stage_strides[s] if first else 1
            x = self._add_block(add, b, x, c, ref("width", s), stride, r, first)
            c, r = ref("width", s), -(-r // stride)
            stage_out[s] = (x, r)
        if self.head != "classification":
            self._add_dense_head(add, stage_out)
        else:
            x = add("head", OpKind.CONV, src=x, act=1, c_in=c, c_out=self.head_width, h=r, w=r)
            x = add("pool", OpKind.GAP, src=x, c_in=self.head_width, c_out=self.head_width, h=r, w=r)
            add("classifier", OpKind.LINEAR, src=x, c_in=self.head_width, c_out=self.num_classes)
        self.row_names: tuple[str, ...] = tuple(names)
        return t

    def _add_dense_head(self, add, stage_out: dict[int, tuple[int, int]]) -> None:
        """The rows of `supernet.heads.DenseHead` (same ops, same order of data): segmentation
        logits upsampled to the input, or CenterNet's `classes + 4` maps at the decoder's stride."""
        last = len(self.base_widths) - 1
        (deep, r_deep), (shallow, r_sh) = stage_out[last], stage_out[self.decoder_stage]
        if r_sh % r_deep or self.input_size % r_sh:
            raise ValueError(f"the {self.head} head upsamples by integer factors: stage {self.decoder_stage} "
                             f"({r_sh} px) must be a multiple of the last stage's {r_deep} px and divide "
                             f"the input's {self.input_size} px")
        ch, k = self.head_channels, self.num_classes + (4 if self.head == "detection" else 0)
        #: upsampling factors of the head: the last stage to stage `decoder_stage`, that to the input
        self.decoder_factors = (r_sh // r_deep, self.input_size // r_sh)
        d = add("dec.deep", OpKind.CONV, src=deep, act=1, c_in=ref("width", last), c_out=ch, h=r_deep, w=r_deep)
        u = add("dec.up", OpKind.UPSAMPLE, src=d, c_in=ch, c_out=ch, kernel=r_sh // r_deep, h=r_deep, w=r_deep)
        lat = add("dec.lateral", OpKind.CONV, src=shallow, act=1, c_in=ref("width", self.decoder_stage),
                  c_out=ch, h=r_sh, w=r_sh)
        y = add("dec.add", OpKind.ADD, src=u, res=lat, c_in=ch, c_out=ch, h=r_sh, w=r_sh)
        y = add("dec.fuse", OpKind.CONV, src=y, act=1, c_in=ch, c_out=ch, kernel=3, h=r_sh, w=r_sh)
        y = add("dec.output", OpKind.CONV, src=y, c_in=ch, c_out=k, h=r_sh, w=r_sh)
        if self.head == "segmentation":  # per-pixel logits at the input's size
            add("dec.upsample", OpKind.UPSAMPLE, src=y, c_in=k, c_out=k, kernel=self.input_size // r_sh,
                h=r_sh, w=r_sh)

    @staticmethod
    def _add_block(add, b: int, x: int, c_in: Number, c_out: Number, stride: int, r: int,
                   first: bool) -> int:
        """Adds block b's alternatives (IBN, fused IBN, skip) and their MIX; returns its output row."""
        p = lambda col: ref("blk", b, col)  # noqa: E731
        mid = p(EXPANSION) * c_in  # expected expansion width E[e] * c_in
        ro = -(-r // stride)
        io = dict(h=r, w=r)
        oo = dict(h=ro, w=ro)
        # IBN (MobileNetV2 Table 1): 1x1 expand -> KxK depthwise (stride) -> 1x1 linear project.
        # MobileNetV2 drops the expansion conv when e == 1; it stays in the superset with weight
        # p_ibn * p(e != 1), and an IDENTITY (weight p_ibn * p(e == 1)) feeds the depthwise conv then.
        ex = add(f"b{b}.ibn.expand", OpKind.CONV, src=x, act=1, weight=p(P_IBN) * p(P_NOT_E1),
                 c_in=c_in, c_out=mid, **io)
        no = add(f"b{b}.ibn.no_expand", OpKind.IDENTITY, src=x, weight=p(P_IBN) * p(P_E1),
                 c_in=c_in, c_out=c_in, **io)
        y = add(f"b{b}.ibn.expanded", OpKind.MIX, src=ex, res=no, weight=p(P_IBN), c_in=mid, c_out=mid, **io)
        y = add(f"b{b}.ibn.dw", OpKind.DWCONV, src=y, act=1, weight=p(P_IBN), c_in=mid, c_out=mid,
                groups=mid, kernel=p(KERNEL), stride=stride, **io)
        y = add(f"b{b}.ibn.project", OpKind.CONV, src=y, weight=p(P_IBN), c_in=mid, c_out=c_out, **oo)
        if not first:  # residual only where shapes match (stride 1, c_in == c_out)
            y = add(f"b{b}.ibn.residual", OpKind.ADD, src=y, res=x, weight=p(P_IBN), c_in=c_out,
                    c_out=c_out, **oo)
        # Fused IBN (the article): the 1x1 expansion and KxK depthwise fused into one KxK full conv,
        # more FLOPs but better use of the accelerator's lanes.
        f = add(f"b{b}.fused.conv", OpKind.CONV, src=x, act=1, weight=p(P_FUSED), c_in=c_in, c_out=mid,
                kernel=p(KERNEL), stride=stride, **io)
        f = add(f"b{b}.fused.project", OpKind.CONV, src=f, weight=p(P_FUSED), c_in=mid, c_out=c_out, **oo)
        if not first:
            f = add(f"b{b}.fused.residual", OpKind.ADD, src=f, res=x, weight=p(P_FUSED), c_in=c_out,
                    c_out=c_out, **oo)
        y = add(f"b{b}.mix", OpKind.MIX, src=y, res=f, c_in=c_out, c_out=c_out, **oo)
        if not first:
            k = add(f"b{b}.skip", OpKind.IDENTITY, src=x, weight=p(P_SKIP), c_in=c_out, c_out=c_out, **oo)
            y = add(f"b{b}.out", OpKind.MIX, src=y, res=k, c_in=c_out, c_out=c_out, **oo)
        return y

    # ----------------------------------------------------------------- scalars
    def arch_scalars(self, arch: Architecture) -> dict[str, jax.Array]:
        """Scalars of discrete architectures `[..., D]`, by indexing the value tables."""
        a = jnp.asarray(arch, jnp.int32)
        types = jnp.asarray(self._v_type)[np.arange(self.num_blocks), a[..., self.type_ids]]
        kern = jnp.take(jnp.asarray(self._v_kernel), a[..., self.kernel_ids])[..., None]
        exp = jnp.take(jnp.asarray(self._v_exp), a[..., self.expansion_ids], axis=0)
        n_st = len(self.base_widths)
        widths = jnp.asarray(self._w_table)[np.arange(n_st), a[..., self.mult_id, None], a[..., self.width_ids]]
        return {"blk": jnp.concatenate([types, kern, exp], -1), "width": widths}

    def expected_scalars(self, probs: ArchProbs) -> dict[str, jax.Array]:
        """Scalars of distributions `[..., D, C]`, by expectation (bilinear in multiplier x width)."""
        p = jnp.asarray(probs, jnp.float32)
        types = jnp.einsum("...bc,bcj->...bj", p[..., self.type_ids, :], self._v_type)
        kern = (p[..., self.kernel_ids, :] @ self._v_kernel)[..., None]
        exp = p[..., self.expansion_ids, :] @ self._v_exp
        p_mult = p[..., self.mult_id, : len(self.multipliers)]
        widths = jnp.einsum("...a,...sc,sac->...s", p_mult, p[..., self.width_ids, :], self._w_table)
        return {"blk": jnp.concatenate([types, kern, exp], -1), "width": widths}

    # ----------------------------------------------------------------- helpers
    def stage_widths(self, arch: Architecture) -> Int[np.ndarray, "n_stages"]:
        """Actual channels per stage: the grid choice times the multiplier, re-aligned (numpy ints)."""
        a = self.validate(arch)
        return np.asarray([w[a[self.mult_id], a[i]] for w, i in zip(self.width_tables, self.width_ids)])

    def baseline_arch(self) -> np.ndarray:
        """MobileNetV2: all IBN, k3, e6 (e1 in block 0), width factor 1.0, multiplier 1.0.

        The raw grid gives exactly the base widths; the curated grid the nearest multiple of P
        (ties up, e.g. 24 -> 32 at P=16).
        """
        for label, vals, v in (("kernels", self.kernels, 3), ("expansions", self.expansions, 1),
                               ("expansions", self.expansions, 6), ("width_multipliers", self.multipliers, 1.0)):
            if v not in vals:
                raise ValueError(f"the MobileNetV2 baseline needs {v} in {label}, got {vals}")
        a = np.zeros(self.num_decisions, np.int32)
        a[self.kernel_ids] = self.kernels.index(3)
        a[self.expansion_ids] = self.expansions.index(6)
        a[self.expansion_ids[0]] = self.expansions.index(1)
        for s, (g, b) in enumerate(zip(self.width_grids, self.base_widths)):
            target = int(_align(b, self.parallelism)) if self.grid == "curated" else b
            if target not in g:
                raise ValueError(f"stage {s}: width {target} is not in the grid {g.tolist()}; "
                                 "include 1.0 in width_factors")
            a[self.width_ids[s]] = int(np.flatnonzero(g == target)[0])
        a[self.mult_id] = self.multipliers.index(1.0)
        return a

    # ----------------------------------------------------------------- strings
    def _format(self, arch: np.ndarray) -> str:
        mult = self.decisions[self.mult_id].choices[arch[self.mult_id]]
        widths = "-".join(str(self.decisions[i].choices[arch[i]]) for i in self.width_ids)
        blocks = ",".join(f"{BLOCK_TYPES[arch[t]]}:k{self.kernels[arch[k]]}:e{self.expansions[arch[e]]}"
                          for t, k, e in zip(self.type_ids, self.kernel_ids, self.expansion_ids))
        return f"mult={mult}|w={widths}|{blocks}"

    def _parse(self, text: str) -> np.ndarray:
        fmt = "'mult=M|w=W0-W1-...|type:kK:eE,...'"
        parts = text.split("|")
        if len(parts) != 3 or not parts[0].startswith("mult=") or not parts[1].startswith("w="):
            raise ValueError(f"mobile architecture string must look like {fmt}, got {text!r}")
        a = np.zeros(self.num_decisions, np.int32)
        a[self.mult_id] = _lookup("width_multiplier", parts[0][5:], self.multipliers, float)
        widths = parts[1][2:].split("-")
        if len(widths) != len(self.width_ids):
            raise ValueError(f"expected {len(self.width_ids)} stage widths in {parts[1]!r}, got {len(widths)}")
        for s, w in enumerate(widths):
            a[self.width_ids[s]] = _lookup(f"s{s}_width", w, self.width_grids[s].tolist(), int)
        blocks = parts[2].split(",")
        if len(blocks) != self.num_blocks:
            raise ValueError(f"expected {self.num_blocks} blocks 'type:kK:eE', got {len(blocks)} in {text!r}")
        for b, item in enumerate(blocks):
            fields = item.split(":")
            if len(fields) != 3 or fields[1][:1] != "k" or fields[2][:1] != "e":
                raise ValueError(f"block {b}: expected 'type:kK:eE' (e.g. 'ibn:k3:e6'), got {item!r}")
            types = self.decisions[self.type_ids[b]].choices
            if fields[0] == "skip" and "skip" not in types:
                raise ValueError(f"block {b} is the first block of its stage (it changes width or "
                                 f"resolution) and cannot be 'skip'; choices: {list(types)}")
            a[self.type_ids[b]] = _lookup(f"b{b}_type", fields[0], types, str)
            a[self.kernel_ids[b]] = _lookup(f"b{b}_kernel", fields[1][1:], self.kernels, int)
            a[self.expansion_ids[b]] = _lookup(f"b{b}_expansion", fields[2][1:], self.expansions, int)
        return a


def _lookup(name: str, label: str, choices: Sequence, kind: type) -> int:
    """Index of `label` (parsed with `kind`) among `choices`; ValueError naming the valid ones."""
    try:
        value = kind(label)
    except ValueError:
        raise ValueError(f"decision {name!r}: {label!r} is not a valid {kind.__name__}; "
                         f"choices: {list(choices)}") from None
    for i, c in enumerate(choices):
        if (math.isclose(value, c) if kind is float else value == c):
            return i
    raise ValueError(f"decision {name!r} has no choice {label!r}; choices: {list(choices)}")


@SPACES.register("mobile-curated")
def mobile_curated(**kwargs) -> MobileSpace:
    """The curated mobile space (widths on multiples of the parallelism factor)."""
    return MobileSpace(grid="curated", **kwargs)


@SPACES.register("mobile-raw")
def mobile_raw(**kwargs) -> MobileSpace:
    """The uncurated mobile space (every integer width), the article's 'rocky' baseline."""
    return MobileSpace(grid="raw", **kwargs)
