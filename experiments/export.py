"""Write a network as ONNX: the one a run found (and trained), or any architecture of a space.

    python -m experiments.export WORKDIR [--out F.onnx]
    python -m experiments.export --space S --arch STR --out F.onnx [--space-kwargs JSON] [--batch 1]

From a workdir: the found architecture (`results.json`) with the weights its `retrain` stage
saved (`model/`); a run without a retrain exports the found architecture with freshly initialised
weights and says so (right for latency measurement, not for accuracy). The default output is
`WORKDIR/model.onnx`; an existing file is never overwritten. The network takes one NHWC float32
batch of normalised images (`experiments.data.normalize`) and returns logits; BatchNorm is in
inference mode. See `supernet.export` for what the graph makes explicit.

Example (seconds on a CPU):
    python -m experiments.export --space nb201 --space-kwargs '{"channels": 8, "cells_per_stage": 1}' \\
        --arch '|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|' \\
        --out /tmp/cell.onnx
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

from experiments.config import ConfigError, cli_errors


def _from_workdir(path: str):
    from experiments.train_stages import subnet_of_workdir
    return subnet_of_workdir(path)


def main(argv: Sequence[str] | None = None) -> str:
    p = argparse.ArgumentParser(prog="python -m experiments.export", description=__doc__.split("\n\n")[0])
    p.add_argument("workdir", nargs="?", help="a finished run's workdir")
    p.add_argument("--space", help="search space name (without a workdir)")
    p.add_argument("--arch", help="architecture string of --space")
    p.add_argument("--space-kwargs", default="{}", help="JSON keyword arguments of the space")
    p.add_argument("--out", help="the .onnx file to write (default WORKDIR/model.onnx)")
    p.add_argument("--batch", type=int, default=1, help="static batch size of the graph")
    p.add_argument("--format", default="onnx", choices=("onnx",), help="export format")
    args = p.parse_args(argv)
    if (args.workdir is None) == (args.space is None):
        p.exit(2, "error: give either a WORKDIR or --space with --arch\n")
    out = args.out or (os.path.join(args.workdir, "model.onnx") if args.workdir else None)
    if out is None:
        p.exit(2, "error: --out is required with --space\n")
    if os.path.exists(out):
        p.exit(2, f"error: {out} exists; remove it or choose another --out\n")
    if args.batch < 1:
        p.exit(2, f"error: --batch must be >= 1, got {args.batch}\n")
    with cli_errors(p, also=(ValueError, TypeError)):  # TypeError: --space-kwargs the space lacks
        if args.workdir:
            sub, space, weights = _from_workdir(args.workdir)
        else:
            from flax import nnx
            from supernet import make_space, make_supernet
            if not args.arch:
                raise ConfigError("--space needs --arch (an architecture string of that space)")
            try:
                kwargs = json.loads(args.space_kwargs)
            except json.JSONDecodeError as e:
                raise ConfigError(f"--space-kwargs is not JSON: {e}") from None
            space = make_space(args.space, **kwargs)
            sub = make_supernet(space, rngs=nnx.Rngs(0)).derive(args.arch)
            weights = "initial (seed 0)"
        from supernet.export import to_onnx
        model = to_onnx(sub, (args.batch, space.input_size, space.input_size, 3))
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "xb") as f:  # exclusive: never overwrite
            f.write(model.SerializeToString())
    convs = sum(n.op_type == "Conv" for n in model.graph.node)
    print(f"wrote {out}: {space.name} {sub.arch}, weights {weights}, input "
          f"[{args.batch}, {space.input_size}, {space.input_size}, 3] NHWC, {len(model.graph.node)} nodes "
          f"({convs} Conv)")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
