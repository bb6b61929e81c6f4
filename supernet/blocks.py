"""Weight-shared building blocks of the supernets: convolutions and BatchNorms held once at their
largest size, selected by masks (search) or by slicing (derived standalone networks).

Weight sharing follows FBNetV2 (Wan et al., CVPR 2020) and Once-for-All (Cai et al., ICLR 2020):
- **kernel sizes** share the largest kernel; a smaller kernel is its centre. A distribution over
  kernel sizes is one conv with the kernel multiplied by `sum_k w_k * centre_mask_k`, which equals
  `sum_k w_k * conv_k(x)` because a convolution is linear in its kernel;
- **channel counts** share the widest tensor; a width `c` is its first `c` channels. A
  distribution over widths multiplies the activation by `sum_c w_c * 1[i < c]` (FBNetV2's channel
  masking), applied after the non-linearity so that masked channels are exactly zero;
- **alternative operations** (IBN vs fused IBN vs skip, the 5 NAS-Bench-201 edge operations) are
  computed side by side and summed with their weights (DARTS, Liu et al. ICLR 2019).

With a one-hot architecture every mask is 0/1, so the supernet computes exactly what the standalone
network built from `slice_*` copies of the weights computes (the invariant `tests/test_supernet_*`
check). All tensors are NHWC.

Example:
    >>> conv = SharedConv(8, 16, kernel=5, rngs=nnx.Rngs(0))
    >>> y = conv(jnp.ones((2, 8, 8, 8)), kernel_mask=kernel_mask(5, jnp.array([1.0, 0.0]), (3, 5)))
    >>> y.shape
    (2, 8, 8, 16)
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float

# He (Kaiming) normal with fan_out, as torchvision's MobileNetV2/ResNet and xautodl initialise convs.
CONV_INIT = jax.nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# BatchNorm momentum 0.9 (PyTorch's 0.1) and epsilon 1e-5, the reference implementations' defaults.
BN_MOMENTUM, BN_EPSILON = 0.9, 1e-5


def kernel_mask(k_max: int, weights: Float[Array, "n"], kernels: Sequence[int]) -> Float[Array, "k k"]:
    """`sum_i weights[i] * centre_mask(kernels[i])` on a `k_max x k_max` grid."""
    masks = []
    for k in kernels:
        o = (k_max - k) // 2
        m = np.zeros((k_max, k_max), np.float32)
        m[o:o + k, o:o + k] = 1.0
        masks.append(m)
    return jnp.tensordot(weights[: len(kernels)], jnp.asarray(np.stack(masks)), axes=1)


def channel_mask(c_max: int, weights: Float[Array, "n"], widths: Sequence[int] | np.ndarray) -> Float[Array, "c"]:
    """`sum_i weights[i] * 1[channel < widths[i]]` over `c_max` channels (FBNetV2 channel masking)."""
    w = np.asarray(widths).reshape(-1)
    m = (np.arange(c_max)[None, :] < w[:, None]).astype(np.float32)
    return weights.reshape(-1)[: w.size] @ jnp.asarray(m)


class SharedConv(nnx.Module):
    """A 2-D convolution holding its largest kernel `[k, k, c_in / groups, c_out]` (no bias).

    `kernel_mask` ([k, k]) selects kernel sizes; inputs narrower than `c_in` use the first input
    channels. Depthwise convs have `groups == c_in == c_out`.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int = 1, stride: int = 1, groups: int = 1,
                 *, use_bias: bool = False, rngs: nnx.Rngs | None, init: jax.Array | None = None):
        if c_in % groups or c_out % groups:
            raise ValueError(f"channels ({c_in}, {c_out}) must be divisible by groups={groups}")
        self.c_in, self.c_out, self.k, self.stride, self.groups = c_in, c_out, kernel, stride, groups
        shape = (kernel, kernel, c_in // groups, c_out)
        # `init` (a given kernel) skips the random draw: derived networks copy weights, and an eager
        # random init compiles one threefry program per new shape (seconds per derive).
        self.kernel = nnx.Param(CONV_INIT(rngs.params(), shape) if init is None else jnp.asarray(init))
        if self.kernel.value.shape != shape:
            raise ValueError(f"kernel shape {self.kernel.value.shape} != {shape}")
        self.bias = nnx.Param(jnp.zeros((c_out,))) if use_bias else None

    def __call__(self, x: Float[Array, "b h w c"], kernel_mask: Float[Array, "k k"] | None = None,
                 group_mask: Float[Array, "i o"] | None = None) -> Float[Array, "b h2 w2 o"]:
        w = self.kernel.value
        if kernel_mask is not None:
            w = w * kernel_mask[:, :, None, None]
        if group_mask is not None:  # e.g. a block-diagonal mask making a dense 1x1 conv grouped
            w = w * group_mask[None, None]
        return conv2d(x, w, self.stride, self.groups, None if self.bias is None else self.bias.value)


def conv2d(x: Float[Array, "b h w c"], w: Float[Array, "k k i o"], stride: int = 1, groups: int = 1,
           bias: Float[Array, "o"] | None = None) -> Float[Array, "b h2 w2 o"]:
    """NHWC convolution with symmetric 'same' padding `k // 2` (PyTorch's `padding=k//2`)."""
    k = w.shape[0]
    y = jax.lax.conv_general_dilated(
        x, w.astype(x.dtype), window_strides=(stride, stride), padding=[(k // 2, k // 2)] * 2,
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)
    return y if bias is None else y + bias.astype(y.dtype)


class BatchNorm(nnx.Module):
    """BatchNorm over the last axis (NHWC), with PyTorch's defaults (momentum 0.1 = ours 0.9, eps 1e-5).

    Same variables as `nnx.BatchNorm` (`scale`, `bias`, `mean`, `var`) and the same train/eval switch
    (`use_running_average`, set by `model.train()` / `model.eval()`). Our own because updating the
    running statistics through `nnx.BatchNorm`'s `variable[...] = v` probes the tracer's sharding,
    which with jax 0.10 walks the whole trace each time (jax-ml/jax#40041): tracing a train step
    grew quadratically with depth (100 s for the NAS-Bench-201 supernet). `set_value` avoids that.
    Batch statistics use the biased variance, as nnx and the normalisation itself do.
    """

    def __init__(self, c: int, *, affine: bool = True, momentum: float = BN_MOMENTUM,
                 epsilon: float = BN_EPSILON):
        self.scale = nnx.Param(jnp.ones((c,))) if affine else None
        self.bias = nnx.Param(jnp.zeros((c,))) if affine else None
        self.mean = nnx.BatchStat(jnp.zeros((c,)))
        self.var = nnx.BatchStat(jnp.ones((c,)))
        self.momentum, self.epsilon = momentum, epsilon
        self.use_running_average = False

    def __call__(self, x: Float[Array, "... c"]) -> Float[Array, "... c"]:
        if self.use_running_average:
            mean, var = self.mean.get_value(), self.var.get_value()
        else:
            axes = tuple(range(x.ndim - 1))
            xf = x.astype(jnp.float32)
            mean = jnp.mean(xf, axes)
            var = jnp.mean(jnp.square(xf - mean), axes)
            m = self.momentum
            self.mean.set_value(m * self.mean.get_value() + (1 - m) * jax.lax.stop_gradient(mean))
            self.var.set_value(m * self.var.get_value() + (1 - m) * jax.lax.stop_gradient(var))
        y = (x - mean.astype(x.dtype)) * jax.lax.rsqrt(var + self.epsilon).astype(x.dtype)
        if self.scale is not None:
            y = y * self.scale.get_value().astype(x.dtype) + self.bias.get_value().astype(x.dtype)
        return y


def batch_norm(c: int, *, affine: bool = True, rngs: nnx.Rngs | None = None) -> BatchNorm:
    """BatchNorm with the reference implementations' momentum/epsilon (eval mode: `model.eval()`)."""
    del rngs  # no random initialisation
    return BatchNorm(c, affine=affine)


def avg_pool(x: Float[Array, "b h w c"], k: int, stride: int, pad: int,
             count_include_pad: bool = False) -> Float[Array, "b h2 w2 c"]:
    """Average pooling; `count_include_pad=False` divides by the window's in-bounds size (PyTorch)."""
    dims, strides = (1, k, k, 1), (1, stride, stride, 1)
    padding = ((0, 0), (pad, pad), (pad, pad), (0, 0))
    s = jax.lax.reduce_window(x, 0.0, jax.lax.add, dims, strides, padding)
    if count_include_pad or pad == 0:
        return s / (k * k)
    ones = jnp.ones((1,) + x.shape[1:3] + (1,), x.dtype)
    n = jax.lax.reduce_window(ones, 0.0, jax.lax.add, dims, strides, padding)
    return s / n


# ------------------------------------------------------------------ slicing for derived networks
def slice_conv(src: SharedConv, c_in: int, c_out: int, kernel: int, *, groups: int | None = None,
               group_mask: np.ndarray | None = None) -> SharedConv:
    """A standalone conv with the first `c_in`/`c_out` channels and the centre `kernel` of `src`.

    A depthwise `src` (groups == c_in) stays depthwise with `groups = c_out`. `group_mask`
    (dense `[c_in_max, c_out_max]`) zeroes cross-group weights when a dense shared kernel serves a
    grouped op, and the slice keeps the per-group blocks in grouped layout.
    """
    o = (src.k - kernel) // 2
    w = src.kernel.value[o:o + kernel, o:o + kernel]
    depthwise = src.groups > 1 and src.groups == src.c_in
    if depthwise:
        groups, w = c_out, w[:, :, :, :c_out]
    elif groups is not None and groups > 1:  # dense shared kernel -> grouped conv blocks
        if group_mask is not None:
            w = w * jnp.asarray(group_mask)[None, None]
        w = w[:, :, :c_in, :c_out]
        ci, co = c_in // groups, c_out // groups
        w = jnp.concatenate([w[:, :, g * ci:(g + 1) * ci, g * co:(g + 1) * co] for g in range(groups)], -1)
    else:
        groups, w = 1, w[:, :, :c_in, :c_out]
    new = SharedConv(c_in, c_out, kernel, src.stride, groups, use_bias=src.bias is not None, rngs=None, init=w)
    if src.bias is not None:
        new.bias.value = src.bias.value[:c_out]
    return new


def slice_bn(src: BatchNorm, c: int) -> BatchNorm:
    """A standalone BatchNorm over the first `c` channels of `src` (statistics and affine)."""
    new = BatchNorm(c, affine=src.scale is not None, momentum=src.momentum, epsilon=src.epsilon)
    for name in ("scale", "bias", "mean", "var"):
        v = getattr(src, name)
        if v is not None:
            getattr(new, name).set_value(v.get_value()[:c])
    new.use_running_average = src.use_running_average
    return new
