"""The exact optimum the fused-IBN searches approximate: `python -m experiments.fusion_optimum --config SPEC [--out PREFIX] [--config.key=value ...]`.

The detection study's V2 / V3 searches (`experiments/configs/detection/person_centernet.py`) look
for the lowest analytic latency among networks of no less capacity (log10 FLOPs) than the baseline,
over each block's type (IBN or fused IBN) and, for V3, the width multiplier. That space is small
enough to solve exactly: for each multiplier, `supernet.expert.best_fusion` scores every subset of
fused blocks (2**17 for MobileNetV2's 17 blocks). The table says what the searches could have
found at best under that proxy, so a cut short of a target is either the search's fault or the
proxy's.

Example (seconds on a CPU):
    python -m experiments.fusion_optimum --config experiments/configs/detection/person_centernet.py:v3 \\
        --out docs/results/detection_fusion_optimum
    # the same space searched for another accelerator (a design-phase question: which chip reaches the cut)
    python -m experiments.fusion_optimum --config experiments/configs/detection/person_centernet.py:v3 \\
        --config.cost.accelerator=npu-p32
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Sequence

import numpy as np

from experiments.config import cli_errors, load_config


def optimum(cfg: Any) -> list[dict[str, Any]]:
    """Per width multiplier of the config's space: the fastest fusion of the baseline at that
    multiplier among those of no less FLOPs than the baseline (`cost.accelerator`)."""
    from hwmodel import analytic
    from hwmodel.accelerators import ACCELERATORS
    from hwmodel.layers import total_flops
    from supernet.expert import best_fusion
    from supernet.spaces import make_space
    from supernet.spaces.mobile import BLOCK_TYPES, MobileSpace

    space = make_space(cfg.space.name, **dict(cfg.space.kwargs))
    if not isinstance(space, MobileSpace):
        raise ValueError(f"fusion_optimum needs a mobile space, not {space.name!r}")
    acc = cfg.cost.accelerator
    base = space.baseline_arch()
    base_flops = float(total_flops(space.layers(base)))
    base_ms = float(analytic.latency_ms(ACCELERATORS[acc], space.layers(base)))
    mult = space.decision_index("width_multiplier")
    rows = []
    for m, value in enumerate(space.decisions[mult].choices):
        a = base.copy()
        a[mult] = m
        try:
            arch, ms = best_fusion(space, a, base_flops, acc)
        except ValueError:  # no fusion at this multiplier reaches the baseline's FLOPs
            rows.append({"multiplier": value, "reachable": False})
            continue
        fused = [b for b in range(space.num_blocks) if arch[space.type_ids[b]] == BLOCK_TYPES.index("fused")]
        rows.append({"multiplier": value, "reachable": True, "arch": space.encode(arch), "latency_ms": ms,
                     "cut_pct": 100 * (1 - ms / base_ms), "flops_ratio": float(total_flops(space.layers(arch))) / base_flops,
                     "fused_blocks": fused, "baseline_ms": base_ms, "accelerator": acc})
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| multiplier | fastest fusion under the baseline's FLOPs: latency (ms) | cut | FLOPs / baseline | fused blocks |",
             "|---|---|---|---|---|"]
    for r in rows:
        if not r["reachable"]:
            lines.append(f"| {r['multiplier']} | none reaches the baseline's FLOPs | | | |")
            continue
        lines.append(f"| {r['multiplier']} | {r['latency_ms']:.4f} | {r['cut_pct']:.1f} % | {r['flops_ratio']:.3f} | "
                     f"{', '.join(f'b{b}' for b in r['fused_blocks']) or 'none'} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="a config spec of a mobile-space run, e.g. ...person_centernet.py:v3")
    p.add_argument("--out", default="", help="write PREFIX.md and PREFIX.json (refuses to overwrite)")
    args, overrides = p.parse_known_args(argv)
    with cli_errors(p, also=(ValueError,)):
        if args.out and any(os.path.exists(f"{args.out}.{e}") for e in ("md", "json")):
            raise ValueError(f"{args.out}.md or .json exists; remove it or choose another --out")
        rows = optimum(load_config(args.config, overrides))
    md = markdown(rows)
    print(md)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        cmd = " ".join(argv if argv is not None else sys.argv[1:])
        with open(f"{args.out}.md", "w") as f:
            f.write(f"Command: `python -m experiments.fusion_optimum {cmd}`\n\n{md}\n")
        with open(f"{args.out}.json", "w") as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
