"""Cross-check snip, grad_norm and fisher against a PyTorch network scored the way zero-cost-nas does.

Why: on NAS-Bench-201 our fisher ranks cells at Spearman 0.51-0.58 where Abdelfattah et al. (ICLR
2021) publish 0.36 (README). Reading the reference leaves two candidate causes: our computation
differs from theirs, or their run differs from the protocol we read. This script separates the two.
Result (seed 0's 300 cells, `benchmarks/results/zero_shot_nb201_seed0_torch_crosscheck_300_cpu.json`):
the computations agree to float32 rounding, and zero-cost-nas's network (below) alone lowers Fisher
from 0.573 to 0.427: the published figure is that network's.
It needs PyTorch (`pip install -e '.[crosscheck]'`; the framework itself does not), and
builds NAS-Bench-201's network in PyTorch from the benchmark's description (Dong & Yang, ICLR 2020;
`../shared/data/nas-bench-201/README.md`): a 3x3 conv + BN stem, three stages of 5 cells joined by
ResNet basic blocks, BN + ReLU, global pooling, a linear classifier; `nor_conv_kxk` = ReLU -> conv
-> BN, `avg_pool_3x3` without counting padding, `none` = zeros.

The PyTorch scores use zero-cost-nas's mechanisms (`foresight/pruners/measures/*.py`), not ours:
  - fisher: each Conv2d/Linear's forward stores its output after an `nn.Identity` on which an
    old-style module backward hook (`register_backward_hook`) reads `grad_output[0]`; per output
    channel `0.5 * mean_n (sum_hw act * grad)^2`, broadcast over `weight.shape[1:]` and summed;
  - snip: `sum |w * dL/dw|`; grad_norm: `sum_layers ||dL/dw||` (Conv2d and Linear weights);
  - the network in train mode (batch statistics), cross-entropy, one batch.

zero-cost-nas does not score the benchmark's network itself. Its `foresight/models/nasbench2.py`
builds every cell as a search cell: all five operations of every edge are instantiated and a keep
mask sums the chosen one; the cell's ReLUConvBN gets `affine=False`, hence `nn.Conv2d(...,
bias=not affine)`, a conv *with bias*, and a non-affine BN without running statistics; stem,
reductions and classifier are the benchmark's. A bias before a train-mode BN changes no output and
no weight gradient (the BN subtracts each channel's batch mean), so snip, grad_norm, jacob_cov and
naswot cannot see it, but Fisher's `act` is the conv output *including* the bias.

Three parts, all on the cells of `python -m experiments.zero_shot_eval --sample N --seed S --init torch`:
  - `same_weights`: the first `--exact` cells with our supernet's weights copied into the
    benchmark's network in PyTorch and our batch; the largest relative difference per score (the
    implementations agree if it is float32 rounding);
  - per-cell PyTorch default initialisation from one `torch.manual_seed`, as `nasbench2_pred.py`
    draws it (this includes the classifier's random bias, which our `ClassificationHead` sets to
    zero), on our batch, Spearman / Kendall with the table for:
      `benchmark_net`: the benchmark's network (what `zero_shot` scores);
      `zc_net`: zero-cost-nas's network (search cells, biased cell convs);
      `zc_net_no_bias`: the same draws with the cell convs' biases set to zero;
  - `ours_same_cells`: `zero_shot.score_archs` on the same cells and batch.

    PYTHONPATH=. python benchmarks/zero_shot_torch_crosscheck.py --data-dir ../shared/data \
        --sample 300 --seed 0 --exact 20 > crosscheck_s0.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
import warnings

import numpy as np
from tqdm import tqdm

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:  # pragma: no cover - depends on the environment
    sys.exit("error: this cross-check needs PyTorch: pip install -e '.[crosscheck]' (the framework itself does not)")


import zero_shot as Z
from supernet.spaces.nb201 import CONV1X1, CONV3X3, EDGES, NONE, NUM_NODES, OPS, POOL3X3, SKIP

# (a sibling script: `python benchmarks/X.py` puts the folder of the script on the import path)
from zero_shot_reference_protocol import add_sample_args, correlations, draw_sample  # noqa: E402

NAMES = ("snip", "grad_norm", "fisher")


# ------------------------------------------------------------------ the benchmark's network in PyTorch
def relu_conv_bn(c_in: int, c_out: int, k: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.ReLU(), nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=False), nn.BatchNorm2d(c_out))


class Reduction(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.down = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(c_in, c_out, 1, bias=False))
        self.conv_a, self.conv_b = relu_conv_bn(c_in, c_out, 3, 2), relu_conv_bn(c_out, c_out, 3)

    def forward(self, x):
        return self.conv_b(self.conv_a(x)) + self.down(x)


class Cell(nn.Module):
    def __init__(self, ops: tuple[int, ...], c: int):
        super().__init__()
        self.ops = ops
        mods = {}
        for e, op in enumerate(ops):
            if op in (CONV1X1, CONV3X3):
                mods[str(e)] = relu_conv_bn(c, c, 1 if op == CONV1X1 else 3)
        self.convs = nn.ModuleDict(mods)
        self.pool = nn.AvgPool2d(3, 1, 1, count_include_pad=False)

    def forward(self, x):
        nodes = [x]
        for j in range(1, NUM_NODES):
            acc = torch.zeros_like(x)
            for e, (to, i) in enumerate(EDGES):
                if to != j or self.ops[e] == NONE:
                    continue
                h = nodes[i]
                acc = acc + (h if self.ops[e] == SKIP else self.pool(h) if self.ops[e] == POOL3X3
                             else self.convs[str(e)](h))
            nodes.append(acc)
        return nodes[-1]


class SearchCell(nn.Module):
    """zero-cost-nas's cell (`nasbench2_ops.SearchCell`): every operation of every edge instantiated
    (in its OPS order, which sets the random draws), the chosen one summed; biased, non-affine convs."""

    ORDER = ("none", "avg_pool_3x3", "nor_conv_3x3", "nor_conv_1x1", "skip_connect")

    def __init__(self, ops: tuple[int, ...], c: int):
        super().__init__()
        names = [OPS[o] for o in ops]
        self.options, self.keep = nn.ModuleList(), []
        for e in range(len(EDGES)):
            for name in self.ORDER:
                if name.startswith("nor_conv"):
                    k = int(name[-1])
                    op = nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, k, 1, k // 2, bias=True),
                                       nn.BatchNorm2d(c, affine=False, track_running_stats=False))
                else:
                    op = nn.AvgPool2d(3, 1, 1, count_include_pad=False) if name == "avg_pool_3x3" else nn.Identity()
                self.options.append(op)
                self.keep.append(name == names[e])

    def forward(self, x):
        nodes, i = [x], 0
        for j in range(1, NUM_NODES):
            acc = []
            for e, (to, src) in enumerate(EDGES):
                if to != j:
                    continue
                for name in self.ORDER:
                    if self.keep[i]:
                        h = self.options[i](nodes[src])
                        acc.append(h.mul(0.0) if name == "none" else h)
                    i += 1
            nodes.append(sum(acc))
        return nodes[-1]


class TinyNetwork(nn.Module):
    """The benchmark's network; subclasses swap the cell and the order the modules are created in
    (which decides PyTorch's random draws)."""

    cell = Cell
    reductions_between_stages = False  # zero-cost-nas creates each reduction before the next stage

    def __init__(self, ops: tuple[int, ...], c: int = 16, n: int = 5, num_classes: int = 10):
        super().__init__()
        w = [c, 2 * c, 4 * c]
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c))
        stages, reds = [], []
        for s, wi in enumerate(w):
            if s and self.reductions_between_stages:
                reds.append(Reduction(w[s - 1], wi))
            stages.append(nn.ModuleList([self.cell(ops, wi) for _ in range(n)]))
        if not self.reductions_between_stages:
            reds = [Reduction(w[0], w[1]), Reduction(w[1], w[2])]
        self.stages, self.reductions = nn.ModuleList(stages), nn.ModuleList(reds)
        self.last = nn.Sequential(nn.BatchNorm2d(w[2]), nn.ReLU())
        self.classifier = nn.Linear(w[2], num_classes)

    def forward(self, x):
        x = self.stem(x)
        for s, cells in enumerate(self.stages):
            if s:
                x = self.reductions[s - 1](x)
            for cell in cells:
                x = cell(x)
        return self.classifier(self.last(x).mean((2, 3)))


class ZCNetwork(TinyNetwork):
    """zero-cost-nas's NAS-Bench-201 network (`nasbench2.NAS201Model`): the benchmark's stem,
    reductions and head around `SearchCell`s, modules created in its order (stem, stage 1,
    reduction 1 with the shortcut conv first, ...). `bias=False` zeroes the cell convs' biases."""

    cell = SearchCell
    reductions_between_stages = True

    def __init__(self, ops: tuple[int, ...], *, bias: bool = True, **kw):
        super().__init__(ops, **kw)
        if not bias:
            for m in self.stages.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.zeros_(m.bias)


# ------------------------------------------------------------------ copying our supernet's weights
def _t(a) -> torch.Tensor:
    return torch.from_numpy(np.array(a, dtype=np.float32))


def _conv(dst: nn.Conv2d, src) -> None:
    dst.weight.data.copy_(_t(src.kernel.get_value()).permute(3, 2, 0, 1))  # HWIO -> OIHW


def _bn(dst: nn.BatchNorm2d, src) -> None:
    if src.scale is not None:  # the supernet's cell BNs are not affine: PyTorch's 1 and 0 are equal
        dst.weight.data.copy_(_t(src.scale.get_value()))
        dst.bias.data.copy_(_t(src.bias.get_value()))


def _rcb(dst: nn.Sequential, src) -> None:
    _conv(dst[1], src.conv)
    _bn(dst[2], src.bn)


def load_supernet_weights(tnet: TinyNetwork, supernet) -> TinyNetwork:
    """`tnet` (of one cell) with the weights the derived subnet of `supernet` would have."""
    b = supernet.net
    _conv(tnet.stem[0], b.stem_conv)
    _bn(tnet.stem[1], b.stem_bn)
    for s, cells in enumerate(tnet.stages):
        for c, cell in enumerate(cells):
            for e, mod in cell.convs.items():
                edge = b.stages[s][c].edges[int(e)]
                _rcb(mod, edge.conv1 if cell.ops[int(e)] == CONV1X1 else edge.conv3)
    for r, red in enumerate(tnet.reductions):
        _rcb(red.conv_a, b.reductions[r].conv_a)
        _rcb(red.conv_b, b.reductions[r].conv_b)
        _conv(red.down[1], b.reductions[r].down)
    _bn(tnet.last[0], b.last_bn)
    fc = supernet.head.fc
    tnet.classifier.weight.data.copy_(_t(fc.kernel.get_value()).T)
    tnet.classifier.bias.data.copy_(_t(fc.bias.get_value()))
    return tnet


# ------------------------------------------------------------------ the scores, zero-cost-nas's way
def reference_scores(tnet: TinyNetwork, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """snip, grad_norm and fisher of `tnet` on one batch, by the reference's mechanisms (docstring)."""
    tnet.train()
    layers = [m for m in tnet.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    fisher = {}

    def hooked_forward(layer):
        plain = layer.forward

        def forward(inp):
            layer.act = layer.dummy(plain(inp))
            return layer.act
        return forward

    def hook_for(layer):
        def hook(module, grad_input, grad_output):
            act, grad = layer.act.detach(), grad_output[0].detach()
            g = (act * grad).sum(tuple(range(2, act.dim()))) if act.dim() > 2 else act * grad
            fisher[layer] = fisher.get(layer, 0) + 0.5 * g.pow(2).mean(0)
        return hook

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # register_backward_hook is deprecated; the reference uses it
        for layer in layers:
            layer.dummy = nn.Identity()
            layer.forward = hooked_forward(layer)
            layer.dummy.register_backward_hook(hook_for(layer))
        tnet.zero_grad()
        F.cross_entropy(tnet(x), y).backward()
    used = [l for l in layers if l.weight.grad is not None]  # unused ops of a search cell: 0
    out = {"snip": sum(float((l.weight.detach() * l.weight.grad).abs().sum()) for l in used),
           "grad_norm": sum(float(l.weight.grad.norm()) for l in used),
           "fisher": sum(float(fisher[l].abs().sum()) * float(np.prod(l.weight.shape[1:]))
                         for l in layers if l in fisher)}
    out["fisher_layers_hooked"] = len(fisher) / len(used)
    for layer in layers:  # the reference deletes `act` in its hook; the forward closures form cycles
        for attr in ("act", "forward", "dummy"):
            if attr in layer.__dict__ or attr in layer._modules:
                delattr(layer, attr)
    gc.collect()
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_sample_args(p)
    p.add_argument("--exact", type=int, default=20, help="cells compared with copied weights")
    p.add_argument("--torch-seed", type=int, default=42, help="nasbench2_pred.py's default --seed")
    p.add_argument("--save", default="", help="also write every cell's scores to this .npz (never overwritten)")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: PyTorch's default)")
    args = p.parse_args(argv)
    if args.save and os.path.exists(args.save):
        p.error(f"{args.save} exists; choose a new file (results are never overwritten)")
    if args.threads:
        torch.set_num_threads(args.threads)

    archs, t, _, (x, y), supernet, key = draw_sample(p, args)
    xt, yt = _t(np.asarray(x)).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(np.array(y)).long()

    t0 = time.perf_counter()
    ours = {k: np.asarray(v) for k, v in Z.score_archs(supernet, archs, (x, y), key, proxies=NAMES).items()}
    t_ours = time.perf_counter() - t0

    exact = {n: [] for n in NAMES}
    hooked = []
    for i in tqdm(range(min(args.exact, len(archs))), desc="same_weights", file=sys.stderr):
        tnet = load_supernet_weights(TinyNetwork(tuple(int(o) for o in archs[i])), supernet)
        r = reference_scores(tnet, xt, yt)
        hooked.append(r["fisher_layers_hooked"])
        for n in NAMES:
            exact[n].append((float(ours[n][i]), r[n]))

    arms = {"benchmark_net": TinyNetwork, "zc_net": ZCNetwork,
            "zc_net_no_bias": lambda ops: ZCNetwork(ops, bias=False)}
    ref = {a: {n: np.zeros(len(archs)) for n in NAMES} for a in arms}
    seconds = {"ours": round(t_ours, 1)}
    for arm, build in arms.items():
        torch.manual_seed(args.torch_seed)  # the same draws for every arm's k-th cell where shapes agree
        t0 = time.perf_counter()
        for i in tqdm(range(len(archs)), desc=arm, file=sys.stderr):
            r = reference_scores(build(tuple(int(o) for o in archs[i])), xt, yt)
            for n in NAMES:
                ref[arm][n][i] = r[n]
        seconds[arm] = round(time.perf_counter() - t0, 1)

    rel = {n: max(abs(a - b) / max(abs(b), 1e-30) for a, b in exact[n]) if exact[n] else None for n in NAMES}
    out = {"n": len(archs), "seed": args.seed, "batch_size": args.batch_size, "column": args.column,
           "torch": torch.__version__, "torch_seed": args.torch_seed,
           "same_weights": {"cells": len(exact["snip"]), "max_relative_difference": rel,
                            "fisher_hooks_fired_share": min(hooked) if hooked else None,
                            "first_cells": {n: exact[n][:3] for n in NAMES}},
           **{arm: {n: correlations(ref[arm][n], t) for n in NAMES} for arm in arms},
           "ours_same_cells": {n: correlations(ours[n], t) for n in NAMES},
           "seconds": seconds,
           "command": "PYTHONPATH=. python benchmarks/zero_shot_torch_crosscheck.py " + " ".join(
               sys.argv[1:] if argv is None else argv)}
    if args.save:
        with open(args.save, "xb") as f:  # never overwrite earlier results
            np.savez(f, archs=archs, truth=t, **{f"ours/{n}": ours[n] for n in NAMES},
                     **{f"{arm}/{n}": ref[arm][n] for arm in arms for n in NAMES})
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
