"""How far per-decision pruning can go with a given score, and with a perfect one. Prints JSON.

    python benchmarks/prune_ceiling.py --scores SCORES.npz \
        --truth ../shared/data/nas-bench-201/nb201_cifar10.csv --column cifar10_valid_acc [--space nb201]

`SCORES.npz` is what `python -m experiments.zero_shot_eval ... --save SCORES.npz` keeps (the sampled `archs`,
their `truth` and one array per score). For every score, and for the truth itself used as the score
(`truth_on_sample`), at each `--fractions` it reports the share of the truth file's top-1 % and
top-5 % architectures inside the pruned space by two per-decision methods:

- `marginal`: `zero_shot.prune.prune_marginal` (what `evaluate --prune` and the launcher use);
- `cover_top{q}`: `best_covering_mask` on the score's own top `q` of the sample (the mask of that size
  that keeps most of the cells the score likes best), for each `--cover-top` q.

`truth_on_all` is marginal pruning with the truth of *every* architecture in the file: the marginal
method's own ceiling. `oracle` is `best_covering_mask` on the true top cells, the ceiling of every
per-decision mask. Why the gap matters on NAS-Bench-201: a choice's marginal effect averages over all
its cells, and the best cells combine choices that are good only together (133 of the 156 top-1 %
cells take `skip_connect` on `edge_3_0`, a choice whose cells rank below those with a 3x3 conv there
on average), so even the truth, applied marginally, misses many of them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np


from supernet.spaces import make_space  # noqa: E402
from experiments.zero_shot_eval import read_truth  # noqa: E402
from zero_shot.prune import best_covering_mask, mask_quality, prune_marginal, survival, top_archs  # noqa: E402


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scores", required=True, help="an npz written by experiments.zero_shot_eval --save")
    p.add_argument("--truth", required=True)
    p.add_argument("--column", default="cifar10_valid_acc")
    p.add_argument("--arch-column", default="arch_str")
    p.add_argument("--space", default="nb201")
    p.add_argument("--fractions", default="0.5,0.2,0.1")
    p.add_argument("--cover-top", default="0.02,0.05,0.1", help="top fractions of the sample to cover")
    args = p.parse_args(argv)
    try:
        if not os.path.exists(args.scores):
            raise FileNotFoundError(f"{args.scores} not found; write it with experiments.zero_shot_eval --save")
        saved = np.load(args.scores)
        if "archs" not in saved.files:
            raise ValueError(f"{args.scores} has no 'archs'; is it a experiments.zero_shot_eval --save file?")
        space = make_space(args.space)
        strings, truth = read_truth(args.truth, args.column, args.arch_column)
    except (KeyError, ValueError, FileNotFoundError) as e:
        p.exit(2, f"error: {e.args[0] if e.args else e}\n")
    all_archs = np.stack([space.decode(s) for s in strings])
    fracs = [float(f) for f in args.fractions.split(",") if f]
    tops = [float(q) for q in args.cover_top.split(",") if q]
    archs = saved["archs"]
    scores = {k: saved[k] for k in saved.files if k not in ("archs", "truth")}
    scores["truth_on_sample"] = saved["truth"]
    out = {"scores_file": os.path.basename(args.scores), "n": int(len(archs)), "column": args.column,
           "oracle": {}, "truth_on_all": {}, "scores": {}}
    for f in fracs:
        m1, _ = best_covering_mask(space, top_archs(all_archs, truth, 0.01), f)
        m5, _ = best_covering_mask(space, top_archs(all_archs, truth, 0.05), f)
        out["oracle"][f"{f:g}"] = {"top1_survival": survival(m1, all_archs, truth, 0.01),
                                   "top5_survival": survival(m5, all_archs, truth, 0.05)}
        out["truth_on_all"][f"{f:g}"] = mask_quality(space, prune_marginal(space, all_archs, truth, target_fraction=f),
                                                all_archs, truth)
    for name, s in scores.items():
        s = np.nan_to_num(np.asarray(s, float), nan=-np.inf)  # NaN ranks last, like -inf
        rec = {}
        for f in fracs:
            r = {"marginal": mask_quality(space, prune_marginal(space, archs, s, target_fraction=f), all_archs, truth)}
            for q in tops:
                m, _ = best_covering_mask(space, top_archs(archs, s, q), f)
                r[f"cover_top{q:g}"] = mask_quality(space, m, all_archs, truth)
            rec[f"{f:g}"] = r
        out["scores"][name] = rec
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
