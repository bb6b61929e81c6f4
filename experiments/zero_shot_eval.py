"""Rank correlation of zero-shot scores with a benchmark's accuracies, and pruning quality.

    python -m experiments.zero_shot_eval --space nb201 --truth ../shared/data/nas-bench-201/nb201_cifar10.csv \
        --column cifar10_valid_acc --sample 1000 --proxies naswot,synflow,jacob_cov,ensemble \
        --seed 0 --batch-size 64 --data-dir ../shared/data --json

Scores a random sample of the truth file's architectures (seeded) on one batch of real CIFAR-10
training images with one compiled function per score (`zero_shot.score_archs`), and prints one JSON
object: per score `spearman`, `kendall`, `seconds_per_arch` (wall time of scoring the sample,
compile included, divided by its size), plus `n`, `device`, `seed`, `batch_size`. On NAS-Bench-201
also `spearman_no_unreachable`: on the sampled cells without unreachable branches
(`n_no_unreachable`), the subset of the published rank-average figure. The scored supernet starts
from PyTorch's default initialisation (`--init torch`, what the reference implementations score;
`--init model` keeps the supernet's own He-normal init, the protocol of the results recorded before
2026-11-24). `ensemble` is the rank average of the other listed scores (Abdelfattah et al. 2021's
vote / NAS-Bench-Suite-Zero's rank-average). A score can follow its reference's protocol:
`--score-batch zen=16` scores it on the first 16 of the `--batch-size` images, `--repeats zen=32`
averages it over 32 keys (ZenNAS). With `--prune 0.5,0.2,0.1` each score also prunes the space to
those fractions and reports the share of the truth file's top-1% and top-5% architectures that
survive: by marginal effects from the scored sample (`--prune-method marginal`,
`zero_shot.prune.prune_marginal`) or by progressive removal on the supernet under the uniform
distribution over the allowed choices (`--prune-method progressive`, `prune_progressive` with a size
target; the ensemble ranks each step's candidates by the sum of the scores' ranks, as TE-NAS does).
`prune_oracle` gives the best survival any per-decision mask of that size can reach
(`best_covering_mask` on the true top cells): the ceiling to read the scores' survival against; its
`marginal_with_truth` is what marginal pruning reaches with a perfect score, the truth itself on
every architecture of the file (on NAS-Bench-201 far below the ceiling: the best cells take choices
that are good only together, below). `--save FILE.npz` keeps the raw scores (for ensembles fitted on
one split and reported on another, or a guide of `supernet.multishot`). Long runs (`--sample 0`
scores all cells) show progress on stderr and, with `--save`, checkpoint every `--block` cells to
`FILE.partial.npz`: rerunning the same command after a kill resumes there.

This is a command-line entry point (the issue's interface); the library functions it calls do no I/O.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Sequence

import numpy as np

from experiments.config import cli_errors


def read_truth(path: str, column: str, arch_column: str = "arch_str") -> tuple[list[str], np.ndarray]:
    from hwmodel.tables import numbers, read_csv, require_columns
    header, rows = read_csv(path, "truth file", f"a CSV with {arch_column!r} and {column!r} columns")
    require_columns(path, header, [arch_column, column])
    return [r[arch_column] for r in rows], numbers(path, rows, column)  # every row finite


def draw_inputs(space, pool: np.ndarray, n: int, data, batch_size: int, seed: int, init: str,
                rng: np.random.Generator):
    """What `main` scores, drawn from `rng` (seeded with `seed`) in a fixed order: `n` sorted cells of
    `pool`, one batch of `batch_size` training images of `data` (cropped to the space's input size,
    normalised) and the supernet re-initialised by `init`. Returns `(idx, (x, y), supernet, key)`."""
    import jax
    from flax import nnx

    import zero_shot as Z
    from experiments import data as D
    from supernet.model import make_supernet
    idx = np.sort(rng.choice(pool, n, replace=False))
    pick = rng.choice(len(data.x_train), batch_size, replace=False)
    x = D.normalize(jax.numpy.asarray(D.random_crops(data.x_train[pick], space.input_size, rng)))
    y = jax.numpy.asarray(data.y_train[pick])
    key = jax.random.key(seed)
    net = Z.initialise(make_supernet(space, rngs=nnx.Rngs(seed)), init, jax.random.fold_in(key, 1))
    return idx, (x, y), net, key


def _kwargs(text: str) -> dict:
    """`"channels=8,cells_per_stage=1"` -> `{"channels": 8, "cells_per_stage": 1}` (ints, floats or strings)."""
    out = {}
    for item in filter(None, text.split(",")):
        if "=" not in item:
            raise ValueError(f"--space-kwargs expects key=value pairs separated by commas, got {item!r}")
        k, v = item.split("=", 1)
        for cast in (int, float):
            try:
                v = cast(v)
                break
            except ValueError:
                pass
        out[k.strip()] = v
    return out


def _per_score(text: str, flag: str, names: Sequence[str]) -> dict[str, int]:
    """`"zen=16,ntk=16"` -> `{"zen": 16, "ntk": 16}`: a positive int per score, each among `names`."""
    out = {}
    for item in filter(None, text.split(",")):
        k, _, v = item.partition("=")
        k = k.strip()
        if k not in names:
            raise ValueError(f"{flag} names {k!r}, which is not among the scores in --proxies {list(names)}")
        try:
            out[k] = int(v)
        except ValueError:
            raise ValueError(f"{flag} expects score=int pairs separated by commas, got {item!r}") from None
        if out[k] < 1:
            raise ValueError(f"{flag} {item!r}: the number must be >= 1")
    return out


def _score_resumably(args, names, net, archs, batch, key, sizes: dict, reps: dict) -> tuple[dict, dict]:
    """Scores `archs` in blocks of `--block` cells, each score alone or, with `--joint`, all of them in
    one call, with a progress bar on stderr; `sizes` and `reps` are the parsed `--score-batch` and
    `--repeats`.

    With `--save FILE`, `FILE.partial.npz` is rewritten (atomically) after every block: a killed run
    rerun with the same command continues where it stopped. The partial file records the command's
    arguments that decide the scores and the sampled cells; a different command refuses it.
    Returns `({name: scores}, {name: seconds spent scoring, over all sessions})`."""
    import zero_shot as Z
    from tqdm import tqdm
    part = f"{args.save}.partial.npz" if args.save else ""
    sig = json.dumps({k: getattr(args, k) for k in ("space", "space_kwargs", "truth", "column", "arch_column",
                                                   "sample", "seed", "no_unreachable", "batch_size", "init",
                                                   "synthetic", "chunk", "data_dir", "score_batch", "repeats")},
                     sort_keys=True)
    done: dict[str, np.ndarray] = {}
    seconds = {n: 0.0 for n in names}
    if part and os.path.exists(part):
        z = np.load(part)
        if str(z["signature"]) != sig or not np.array_equal(z["archs"], archs):
            raise SystemExit(f"error: {part} was written by a different command ({z['signature']}); rerun that "
                             "command to finish it, or delete the file")
        done = {n: z[f"score_{n}"] for n in names if f"score_{n}" in z.files}
        seconds.update({n: float(z[f"seconds_{n}"]) for n in done})
    kw = {"chunk": args.chunk} if args.chunk else {}
    # one group per score, or with --joint all scores in one compiled call (their shared work, e.g.
    # the one backward of snip/grad_norm/fisher/grasp, done once); each group starts at the fewest
    # cells any of its scores has done, so a resumed run never scores a cell twice per score
    groups = [list(names)] if args.joint else [[n] for n in names]
    for group in groups:
        start = min(len(done.get(n, ())) for n in group)
        bar = tqdm(total=len(archs), initial=start, desc="+".join(group), file=sys.stderr,
                   disable=args.json and not sys.stderr.isatty())
        while start < len(archs):
            have = {n: len(done.get(n, ())) for n in group}
            todo = [n for n in group if have[n] == start]
            stop = min([start + args.block] + [h for h in have.values() if h > start])
            t0 = time.perf_counter()
            block = Z.score_archs(net, archs[start:stop], batch, key, proxies=tuple(todo), **kw,
                                  batch_sizes={n: sizes[n] for n in todo if n in sizes},
                                  repeats={n: reps[n] for n in todo if n in reps})
            dt = (time.perf_counter() - t0) / len(todo)  # a joint call's time is shared equally
            for n in todo:
                seconds[n] += dt
                done[n] = np.concatenate([done.get(n, np.zeros(0, np.float32)), np.asarray(block[n], np.float32)])
            start = stop
            bar.update(start - bar.n)
            if part:
                tmp = f"{part}.tmp.npz"
                np.savez(tmp, signature=sig, archs=archs, **{f"score_{k}": v for k, v in done.items()},
                         **{f"seconds_{k}": seconds[k] for k in done})
                os.replace(tmp, part)
        bar.close()
    return {n: done[n] for n in names}, seconds


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="nb201")
    p.add_argument("--space-kwargs", default="",
                   help="options of the space, e.g. channels=8,cells_per_stage=1 (a smaller NB201 network)")
    p.add_argument("--truth", required=True, help="CSV with arch_str and the accuracy column")
    p.add_argument("--column", default="cifar10_valid_acc")
    p.add_argument("--arch-column", default="arch_str")
    p.add_argument("--sample", type=int, default=1000, help="architectures scored (0: all)")
    p.add_argument("--proxies", default="naswot,synflow,jacob_cov,ensemble")
    p.add_argument("--seed", type=int, default=0, help="drives the sample, the image batch and the init")
    p.add_argument("--no-unreachable", action="store_true",
                   help="sample only cells without unreachable branches (NAS-Bench-201's 9,445; the subset of "
                   "the published nwot+synflow+jacob_cov rank average)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--init", default="torch",
                   help="weights scored: torch = PyTorch's default init, as the reference implementations "
                   "score (default); model = the supernet's own init (zero_shot.INITS, zero_shot.initialise)")
    p.add_argument("--score-batch", default="",
                   help="per score, use only the first N images of the batch, e.g. zen=16,ntk=16 (the reference "
                   "implementations' batch sizes); the others use --batch-size")
    p.add_argument("--repeats", default="",
                   help="per score, average over N keys, e.g. zen=32 (ZenNAS's repeats; only random scores differ)")
    p.add_argument("--chunk", type=int, default=0, help="architectures per compiled call (0: default)")
    p.add_argument("--data-dir", default=None, help="folder with cifar10/ (default: $HWNAS_DATA_DIR or ../shared/data)")
    p.add_argument("--synthetic", action="store_true", help="random images instead of CIFAR-10 (smoke tests)")
    p.add_argument("--prune", default="", help="fractions of the space to prune to, e.g. 0.5,0.2,0.1")
    p.add_argument("--prune-method", default="marginal", choices=("marginal", "progressive"),
                   help="marginal: from the scored sample; progressive: remove the least harmful choice "
                   "one at a time, scoring the supernet (no sample needed; slower)")
    p.add_argument("--save", default="", help="write the sampled archs and their scores to this .npz; until "
                   "the run ends, FILE.partial.npz holds the scores so far and the same command resumes from it")
    p.add_argument("--block", type=int, default=256, help="cells scored between progress updates and checkpoints")
    p.add_argument("--joint", action="store_true",
                   help="score all --proxies in one compiled call per block, sharing their common work (e.g. "
                   "snip, grad_norm, fisher: one backward); seconds_per_arch is then the joint time split "
                   "equally; the scores are the same, so a run resumes from the other mode's partial file")
    p.add_argument("--ranking", default="", help="write the sample's architecture strings, best first by "
                   "the last listed score (e.g. ensemble), to this text file (warm starts of evolution)")
    p.add_argument("--json", action="store_true", help="print only the JSON object")
    args = p.parse_args(argv)

    import jax
    from scipy.stats import kendalltau, spearmanr

    import zero_shot as Z
    from experiments import data as D
    from supernet.spaces import make_space
    from supernet.space import HasUnreachableBranches
    from zero_shot.prune import (best_covering_mask, mask_quality, prune_marginal, prune_progressive, top_archs,
                                 weight_scorer)

    names = [n for n in args.proxies.split(",") if n]
    base = [n for n in names if n != "ensemble"]
    with cli_errors(p, also=(ValueError, TypeError)):  # TypeError: --space-kwargs the space lacks
        if not names:
            raise ValueError("--proxies is empty")
        if base:
            Z.check_names(base)  # unknown names fail here, listing the valid ones
        if "ensemble" in names and len(base) < 2:
            raise ValueError("'ensemble' needs at least two other scores in --proxies")
        for path in (args.ranking, args.save):
            if path and os.path.exists(path):
                raise ValueError(f"{path} exists; choose a new file (results are never overwritten)")
        if args.sample < 0 or args.batch_size < 1 or args.block < 1:
            raise ValueError("--sample must be >= 0, --batch-size and --block >= 1")
        score_batch = _per_score(args.score_batch, "--score-batch", base)
        repeats = _per_score(args.repeats, "--repeats", base)
        for k, v in score_batch.items():
            if v > args.batch_size:
                raise ValueError(f"--score-batch {k}={v} exceeds --batch-size {args.batch_size}")
        if (score_batch or repeats) and args.prune and args.prune_method == "progressive":
            raise ValueError("--score-batch and --repeats apply to the sampled cells' scores; progressive pruning "
                             "scores the supernet with the whole --batch-size and one key: drop them or use "
                             "--prune-method marginal")
        space = make_space(args.space, **_kwargs(args.space_kwargs))
        strings, truth = read_truth(args.truth, args.column, args.arch_column)
        all_archs = np.stack([space.decode(s) for s in strings])
        rng = np.random.default_rng(args.seed)
        # NAS-Bench-201: cells with unreachable branches (outside the published rank average's subset)
        unreachable = space.has_unreachable_branch(all_archs) if isinstance(space, HasUnreachableBranches) else None
        pool = np.arange(len(strings))
        if args.no_unreachable:
            if unreachable is None:
                raise ValueError(f"--no-unreachable applies to NAS-Bench-201 cells, not to space {space.name!r}")
            pool = pool[~unreachable]
        n = len(pool) if args.sample == 0 else args.sample
        if n > len(pool):
            raise ValueError(f"--sample {n} exceeds the {len(pool)} architectures to sample from in {args.truth}")
        if args.synthetic:
            d = D.synthetic_cifar10(max(args.batch_size, 256), 10, seed=args.seed)
        else:
            d = D.load_cifar10(args.data_dir)
        # an unknown --init fails here with the valid names (zero_shot.INITS)
        idx, (x, y), net, key = draw_inputs(space, pool, n, d, args.batch_size, args.seed, args.init, rng)

    with cli_errors(p, resume=f"{args.save}.partial.npz" if args.save else None):
        scores, seconds = _score_resumably(args, base, net, all_archs[idx], (x, y), key, score_batch, repeats)
    seconds = {k: v / n for k, v in seconds.items()}
    if "ensemble" in names:
        scores["ensemble"] = np.asarray(Z.rank_ensemble({k: scores[k] for k in base}, base))
        seconds["ensemble"] = sum(seconds[k] for k in base)
    out = {"n": int(n), "no_unreachable": bool(args.no_unreachable), "seed": args.seed,
           "batch_size": args.batch_size, "score_batch": score_batch, "repeats": repeats, "init": args.init,
           "space": space.name, "column": args.column, "device": jax.devices()[0].device_kind, "proxies": {}}
    fracs = sorted((float(f) for f in args.prune.split(",") if f), reverse=True)
    progressive_masks = {}
    if fracs and args.prune_method == "progressive":
        cache: dict = {}  # the ensemble's candidates reuse the single scores' evaluations
        for name in names:
            scorer = weight_scorer(net, (x, y), key, base if name == "ensemble" else [name], cache=cache)
            mask, masks = None, {}
            for f in fracs:  # nested: each fraction continues from the previous mask
                cur = space.size if mask is None else mask.size
                mask = prune_progressive(space, scorer, mask=mask,
                                         target_fraction=min(1.0, f * space.size / cur))
                masks[f] = mask
            progressive_masks[name] = masks
    if fracs:
        out["prune_method"] = args.prune_method
        out["prune_oracle"] = {f"{f:g}": {} for f in fracs}
        for top in (0.01, 0.05):
            best = top_archs(all_archs, truth, top)
            for f in fracs:
                m, share = best_covering_mask(space, best, f)
                out["prune_oracle"][f"{f:g}"].update({f"top{round(top * 100)}_survival": share,
                                                      f"top{round(top * 100)}_kept_fraction": m.size / space.size})
        for f in fracs:
            # the marginal method's own ceiling: a perfect score (the truth) on every architecture
            m = prune_marginal(space, all_archs, truth, target_fraction=f)
            out["prune_oracle"][f"{f:g}"]["marginal_with_truth"] = mask_quality(space, m, all_archs, truth)
    clean = None if unreachable is None else ~unreachable[idx]
    for name in names:
        s = scores[name]
        # -inf is the score's verdict "worst" (e.g. NASWOT's singular kernel, synflow's S = 0 of a
        # disconnected cell) and ranks last, as in the references; only NaN is dropped
        ok = ~np.isnan(s)
        rec = {"spearman": float(spearmanr(s[ok], truth[idx][ok])[0]),
               "kendall": float(kendalltau(s[ok], truth[idx][ok])[0]),
               "seconds_per_arch": seconds[name], "nan": int((~ok).sum()),
               "minus_inf": int(np.isneginf(s).sum())}
        for f in fracs:
            mask = (progressive_masks[name][f] if progressive_masks else
                    prune_marginal(space, all_archs[idx][ok], s[ok], target_fraction=f))
            rec[f"prune_{f:g}"] = mask_quality(space, mask, all_archs, truth)
        if clean is not None:
            keep = ok & clean
            rec["spearman_no_unreachable"] = float(spearmanr(s[keep], truth[idx][keep])[0])
            out["n_no_unreachable"] = int(keep.sum())
        out["proxies"][name] = rec
    with cli_errors(p):  # an unwritable --save or --ranking
        if args.save:
            np.savez(args.save, archs=all_archs[idx], truth=truth[idx], **scores)
            if os.path.exists(f"{args.save}.partial.npz"):
                os.remove(f"{args.save}.partial.npz")
        if args.ranking:
            order = np.argsort(-np.nan_to_num(scores[names[-1]], nan=-np.inf), kind="stable")
            with open(args.ranking, "x") as f:  # never overwrite earlier results
                f.write(f"# {space.name} cells best first by {names[-1]!r} (seed {args.seed}, n={n})\n")
                f.writelines(strings[idx[i]] + "\n" for i in order)
    print(json.dumps(out, indent=None if args.json else 1))
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
