"""Cost of differentiating convolutions inside `lax.switch` (the supernet's `Taps.select` path) on the
current backend, against the same convolutions outside a conditional and as a weighted mixture.
Prints JSON.

    python benchmarks/switch_grad.py [--batch 64] [--channels 16] [--size 32] [--layers 4] [--repeats 10]

Why: zero-shot scores of many architectures run one compiled function whose mixed ops compute only
the chosen op (`lax.switch`, `zero_shot.batch`). On XLA:CPU (jax 0.10.2, 2 cores) gradients of
convolutions inside a conditional are far slower than the same gradients outside one (measured in
`benchmarks/results/README.md`), which makes snip / grad_norm / fisher / grasp (weight gradients)
cost 5-35 s per NAS-Bench-201 cell there, against 0.2-2 s for the derived subnet. `ratio_*` are
times over the direct version's, in one run.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp


from supernet.nested_conv import xla_conv2d  # noqa: E402  (the project's one NHWC 'same' conv)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--repeats", type=int, default=10)
    a = p.parse_args(argv)
    x = jax.random.normal(jax.random.key(0), (a.batch, a.size, a.size, a.channels))
    ws = [jax.random.normal(jax.random.key(i), (3, 3, a.channels, a.channels)) * 0.1 for i in range(3)]
    onehot = jnp.array([0.0, 1.0, 0.0])

    def conv(v, w):
        return jax.nn.relu(xla_conv2d(v, w))

    def direct(ws, x, i):
        for _ in range(a.layers):
            x = conv(x, ws[1])
        return jnp.sum(x ** 2)

    def switch(ws, x, i):  # op 0 is the zero op, as NAS-Bench-201's `none`
        for _ in range(a.layers):
            x = jax.lax.switch(i, [jnp.zeros_like, lambda v: conv(v, ws[1]), lambda v: conv(v, ws[2])], x)
        return jnp.sum(x ** 2)

    def mixture(ws, x, i):
        for _ in range(a.layers):
            x = onehot[1] * conv(x, ws[1]) + onehot[2] * conv(x, ws[2])
        return jnp.sum(x ** 2)

    def timed(fn):
        f = jax.jit(fn)
        jax.block_until_ready(f(ws, x, 1))
        t = time.perf_counter()
        for _ in range(a.repeats):
            jax.block_until_ready(f(ws, x, 1))
        return (time.perf_counter() - t) / a.repeats * 1e3

    out = {"benchmark": "switch_grad", "backend": jax.default_backend(), "device": jax.devices()[0].device_kind,
           "jax": jax.__version__, "shape": [a.batch, a.size, a.size, a.channels], "layers": a.layers, "ms": {}}
    for what, arg in (("forward", None), ("grad_input", 1), ("grad_weights", 0)):
        for name, fn in (("direct", direct), ("switch", switch), ("mixture", mixture)):
            f = fn if arg is None else jax.grad(fn, argnums=arg)
            out["ms"][f"{what}_{name}"] = round(timed(f), 2)
        for name in ("switch", "mixture"):
            out[f"ratio_{what}_{name}"] = round(out["ms"][f"{what}_{name}"] / out["ms"][f"{what}_direct"], 2)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
