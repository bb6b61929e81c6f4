"""A convolution whose gradients are matrix products, for convolutions inside `lax.switch` on CPU.

Why: XLA:CPU runs convolutions that sit in a nested computation (a conditional branch or a loop
body) without the layout changes it gives them in the entry computation, and the transposed
convolutions of their gradients fall back to slow code: in one run (jax 0.10.2, 2-core CPU,
`benchmarks/switch_grad.py`, 4 layers of 3x3 convs on `[64, 32, 32, 16]`) the weight gradient inside
a `lax.switch` took 19.5x as long as outside one and the input gradient 7.7x, while the forward pass
was unaffected (jax-ml/jax#12868 reports the same for convolutions inside loops). Zero-shot scoring
of many architectures runs every mixed op as a `lax.switch` inside a `lax.map` (`zero_shot.batch`),
so snip / grad_norm / fisher / grasp / jacob_cov pay this on every conv.

`xla_conv2d` is the project's one NHWC "same" convolution (`blocks.conv2d` calls it);
`conv2d_matmul_grads` computes the same forward convolution with `lax.conv_general_dilated` and
defines its VJP tap by tap: for each kernel offset `(a, b)`,
    `dW[a, b] = sum_{n,h,w} X_pad[n, s h + a, s w + b, :]^T dY[n, h, w, :]`
    `dX_pad[n, s h + a, s w + b, :] += dY[n, h, w, :] W[a, b]^T`
(`k^2` matrix products and strided pads, which XLA:CPU runs at full speed anywhere). Symmetric
padding `k // 2` as `blocks.conv2d`; dense (`groups == 1`) and depthwise (`groups == channels`).
`blocks.conv2d` uses it only on the CPU backend, inside a `Taps(select=True)` collector (the
switch path); every other path keeps XLA's own convolution gradients.

`depthwise_tap_sum` is a depthwise convolution written as the sum of its `k^2` shifted, scaled
inputs, `Y[n, h, w, c] = sum_{a,b} X_pad[n, s h + a, s w + b, c] W[a, b, 0, c]`: elementwise work
that XLA:CPU fuses and differentiates by autodiff into more elementwise work. XLA:CPU's grouped
convolution is slow in the entry computation too (one run, jax 0.10.2, 2-core CPU, a 3x3 depthwise
conv on `[64, 32, 32, 96]`: forward + both gradients 0.70 s vs 0.11 s as a tap sum; one training
step of MobileNetV2 at 32 px, batch 64: 9.6 s vs 2.9 s), so `blocks.conv2d` takes it for every
depthwise convolution on the CPU backend. On GPUs the library's depthwise kernels stay.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


def supported(w: Array, groups: int, c_in: int) -> bool:
    """Odd square kernels, dense or depthwise (the cases `conv2d_matmul_grads` implements)."""
    k = w.shape[0]
    return k % 2 == 1 and w.shape[1] == k and (groups == 1 or (groups == c_in and w.shape[2] == 1))


def xla_conv2d(x: Float[Array, "b h w i"], w: Float[Array, "k k i o"], stride: int = 1,
               groups: int = 1) -> Float[Array, "b h2 w2 o"]:
    """NHWC convolution with symmetric padding `k // 2`, differentiated by XLA (`blocks.conv2d`'s)."""
    k = w.shape[0]
    return jax.lax.conv_general_dilated(
        x, w.astype(x.dtype), window_strides=(stride, stride), padding=[(k // 2, k // 2)] * 2,
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)


def depthwise_tap_sum(x: Float[Array, "b h w c"], w: Float[Array, "k k 1 c"],
                      stride: int = 1) -> Float[Array, "b h2 w2 c"]:
    """`xla_conv2d(x, w, stride, groups=c)` as a sum of `k^2` shifted inputs (module docstring).

    >>> x, w = jnp.arange(2. * 5 * 5 * 3).reshape(2, 5, 5, 3), jnp.ones((3, 3, 1, 3))
    >>> bool(jnp.allclose(depthwise_tap_sum(x, w, 2), xla_conv2d(x, w, 2, groups=3)))
    True
    """
    k, p, s = w.shape[0], w.shape[0] // 2, stride
    _, h, wd, _ = x.shape
    ho, wo = (h + 2 * p - k) // s + 1, (wd + 2 * p - k) // s + 1
    xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    wx = w.astype(x.dtype)
    out = None
    for a in range(k):
        for b in range(k):
            t = xp[:, a:a + s * (ho - 1) + 1:s, b:b + s * (wo - 1) + 1:s, :] * wx[a, b, 0]
            out = t if out is None else out + t
    return out


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv2d_matmul_grads(x: Float[Array, "b h w i"], w: Float[Array, "k k i o"], stride: int = 1,
                        groups: int = 1) -> Float[Array, "b h2 w2 o"]:
    """`blocks.conv2d` (no bias) with tap-wise matrix-product gradients (module docstring)."""
    return xla_conv2d(x, w, stride, groups)


def _fwd(x, w, stride, groups):
    return xla_conv2d(x, w, stride, groups), (x, w)


def _bwd(stride, groups, res, g):
    x, w = res
    k, p, s = w.shape[0], w.shape[0] // 2, stride
    _, h, wd, _ = x.shape
    ho, wo = g.shape[1], g.shape[2]
    depthwise = groups > 1
    g = g.astype(x.dtype)
    wx = w.astype(x.dtype)
    xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    hp, wp = h + 2 * p, wd + 2 * p
    dxp = jnp.zeros_like(xp)
    dw = []
    for a in range(k):
        row = []
        for b in range(k):
            win = xp[:, a:a + s * (ho - 1) + 1:s, b:b + s * (wo - 1) + 1:s, :]  # [B, ho, wo, i]
            if depthwise:
                row.append(jnp.sum(win * g, (0, 1, 2))[None, :])
                contrib = g * wx[a, b, 0]
            else:
                row.append(jnp.einsum("nhwi,nhwo->io", win, g))
                contrib = jnp.einsum("nhwo,io->nhwi", g, wx[a, b])
            # place contrib[n, y, z] at dX_pad[n, s y + a, s z + b] (interior padding s - 1)
            cfg = [(0, 0, 0), (a, hp - a - s * (ho - 1) - 1, s - 1), (b, wp - b - s * (wo - 1) - 1, s - 1),
                   (0, 0, 0)]
            dxp = dxp + jax.lax.pad(contrib, jnp.zeros((), contrib.dtype), cfg)
        dw.append(jnp.stack(row))
    dx = dxp[:, p:p + h, p:p + wd, :]
    return dx.astype(x.dtype), jnp.stack(dw).astype(w.dtype)


conv2d_matmul_grads.defvjp(_fwd, _bwd)
