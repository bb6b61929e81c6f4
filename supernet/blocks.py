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

Activation taps (`Taps`, used by `zero_shot/`): the modules report what trainability scores read,
and nothing happens unless a `Taps` collector is active (`with Taps(...):`, at trace time):
`relu` records pre-activations (NASWOT's and TE-NAS's ReLU codes), `BatchNorm` its batch variances
(Zen-score) and can be removed (synflow), `SharedConv` scales its output by a zero "probe" per sample
and channel (whose gradient is Fisher's `sum_hw act * dL/dact`), `chain_point` rescales between
blocks that every path crosses (synflow in float32), and `mixed` computes a mixed operation
`sum_k w[k] op_k(x)` with each op's records weighted by its `w[k]`, or, for one-hot weights, only the
chosen op (`lax.switch`). While a collector is active, BatchNorm running statistics are not updated.

Single-path execution (`with single_path():`, at trace time): for one-hot architecture weights a mixed
operation computes only its chosen op (`nnx.switch`, so one compiled function still serves every
architecture and the chosen op's BatchNorm statistics update), as single-path one-shot search runs
it (SPOS, Guo et al. 2020; GDAS, Dong & Yang 2019, computes only the sampled op). The result is
`w[k*] * op_{k*}(x)` with `k* = argmax w`: exactly the mixture for one-hot weights, and its gradient
with respect to `w` is GDAS's (only `w[k*]` gets one; a straight-through sample passes it on to every
logit through the softmax). Ops not chosen are not run, so their BatchNorm statistics stay as they
are, where the mixture would update them with a zero-weighted batch.

Example:
    >>> conv = SharedConv(8, 16, kernel=5, rngs=nnx.Rngs(0))
    >>> y = conv(jnp.ones((2, 8, 8, 8)), kernel_mask=kernel_mask(5, jnp.array([1.0, 0.0]), (3, 5)))
    >>> y.shape
    (2, 8, 8, 16)
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float

from supernet import nested_conv

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
        if self.kernel.get_value().shape != shape:
            raise ValueError(f"kernel shape {self.kernel.get_value().shape} != {shape}")
        self.bias = nnx.Param(jnp.zeros((c_out,))) if use_bias else None

    def __call__(self, x: Float[Array, "b h w c"], kernel_mask: Float[Array, "k k"] | None = None,
                 group_mask: Float[Array, "i o"] | None = None) -> Float[Array, "b h2 w2 o"]:
        w = self.kernel.get_value()
        if kernel_mask is not None:
            w = w * kernel_mask[:, :, None, None]
        if group_mask is not None:  # e.g. a block-diagonal mask making a dense 1x1 conv grouped
            w = w * group_mask[None, None]
        y = conv2d(x, w, self.stride, self.groups, None if self.bias is None else self.bias.get_value())
        taps = _ACTIVE.get()
        return y if taps is None else taps.probe(y, lambda: self.fan_in(x.shape[-1], kernel_mask, group_mask))

    def fan_in(self, c_x: int, kernel_mask: Array | None = None, group_mask: Array | None = None) -> Float[Array, "o"]:
        """Weights feeding each output channel in this call: `prod(weight.shape[1:])` of the equivalent
        standalone PyTorch conv (kernel taps kept by `kernel_mask` x input channels per group, or the
        non-zero rows of `group_mask`'s column). zero-cost-nas's Fisher counts each channel this often."""
        taps = self.k * self.k if kernel_mask is None else jnp.sum(kernel_mask != 0)
        if group_mask is not None:
            per_out = jnp.sum(group_mask[:c_x] != 0, axis=0)
        else:
            per_out = jnp.full((self.c_out,), c_x if self.groups == 1 else self.c_in // self.groups)
        return (taps * per_out).astype(jnp.float32)


_LIBRARY_CONVS: contextvars.ContextVar[bool] = contextvars.ContextVar("supernet_library_convs", default=False)


@contextlib.contextmanager
def library_convolutions():
    """Within (at trace time), `conv2d` is always one `lax.conv_general_dilated`, never the CPU
    rewrites of `supernet.nested_conv` (same function): ONNX export must see one Conv node per
    convolution, as the layer table and the measured backends count them."""
    token = _LIBRARY_CONVS.set(True)
    try:
        yield
    finally:
        _LIBRARY_CONVS.reset(token)


def conv2d(x: Float[Array, "b h w c"], w: Float[Array, "k k i o"], stride: int = 1, groups: int = 1,
           bias: Float[Array, "o"] | None = None) -> Float[Array, "b h2 w2 o"]:
    """NHWC convolution with symmetric 'same' padding `k // 2` (PyTorch's `padding=k//2`)."""
    taps = _ACTIVE.get()
    cpu = jax.default_backend() == "cpu" and not _LIBRARY_CONVS.get()
    if cpu and groups > 1 and nested_conv.supported(w, groups, x.shape[-1]):
        # XLA:CPU's grouped convolution is 3-6x slower than the tap sum (supernet/nested_conv.py)
        y = nested_conv.depthwise_tap_sum(x, w, stride)
    elif (((taps is not None and taps.select) or _IN_SWITCH.get()) and cpu
            and nested_conv.supported(w, groups, x.shape[-1])):
        # inside lax.switch XLA:CPU's conv gradients are 8-20x slower (supernet/nested_conv.py)
        y = nested_conv.conv2d_matmul_grads(x, w, stride, groups)
    else:
        y = nested_conv.xla_conv2d(x, w, stride, groups)
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
        taps = _ACTIVE.get()
        if taps is not None and taps.remove_bn:
            return x  # synflow's network "without BN" (Abdelfattah et al. 2021)
        if self.use_running_average:
            mean, var = self.mean.get_value(), self.var.get_value()
        else:
            axes = tuple(range(x.ndim - 1))
            xf = x.astype(jnp.float32)
            mean = jnp.mean(xf, axes)
            var = jnp.mean(jnp.square(xf - mean), axes)
            if taps is None:  # scoring (taps active) leaves the running statistics alone
                m = self.momentum
                self.mean.set_value(m * self.mean.get_value() + (1 - m) * jax.lax.stop_gradient(mean))
                self.var.set_value(m * self.var.get_value() + (1 - m) * jax.lax.stop_gradient(var))
            else:
                taps.record("bn_var", var)
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
    w = src.kernel.get_value()[o:o + kernel, o:o + kernel]
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
        new.bias.set_value(src.bias.get_value()[:c_out])
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


class ConvBN(nnx.Module):
    """Conv -> BN (-> ReLU6 when `act`): every conv of the network (no bias; BN follows)."""

    def __init__(self, conv: SharedConv, bn: BatchNorm, act: bool):
        self.conv, self.bn, self.act = conv, bn, act

    @classmethod
    def new(cls, c_in: int, c_out: int, kernel: int = 1, stride: int = 1, *, depthwise: bool = False,
            act: bool = True, rngs: nnx.Rngs) -> "ConvBN":
        conv = SharedConv(c_in, c_out, kernel, stride, groups=c_in if depthwise else 1, rngs=rngs)
        return cls(conv, batch_norm(c_out, rngs=rngs), act)

    def __call__(self, x: Float[Array, "b h w c"], kmask: Float[Array, "k k"] | None = None) -> Array:
        y = self.bn(self.conv(x, kernel_mask=kmask))
        return jax.nn.relu6(y) if self.act else y

    def sliced(self, c_in: int, c_out: int, kernel: int) -> "ConvBN":
        """A standalone copy with the first `c_in`/`c_out` channels and the centre `kernel`."""
        return ConvBN(slice_conv(self.conv, c_in, c_out, kernel), slice_bn(self.bn, c_out), self.act)


# ------------------------------------------------------------------ activation taps (zero-shot scores)
_ACTIVE: contextvars.ContextVar["Taps | None"] = contextvars.ContextVar("supernet_taps", default=None)


def active_taps() -> "Taps | None":
    """The `Taps` collecting inside the current `with Taps(...)` block, or None outside one."""
    return _ACTIVE.get()


class ReportsTaps:
    """Marks a network (a supernet or a derived backbone) whose every ReLU, BN and mixed op reports
    to an active `Taps`: the zero-shot scores that read activations (naswot, jacob_cov, ...) need
    one, and say so in one line for any other network (`zero_shot.network.Network.require_taps`)."""


@dataclasses.dataclass(eq=False)
class Taps:
    """Trace-time collector of what zero-shot scores read (see the module docstring).

    Attributes (settings):
      reducers: kind (`"relu"`: pre-activations, `"bn_var"`: per-channel batch variances) ->
        function summarising one tapped tensor (e.g. NASWOT's per-layer code kernel); kinds without
        a reducer are not recorded. `records` holds `(kind, summary, weight)` where `weight` is the
        product of the architecture weights of the mixed ops the tensor belongs to (0: inactive op).
      remove_bn: BatchNorm layers are the identity.
      normalize_chain: `chain_point` divides by the (stop-gradient) mean |x| and logs it in `log_scales`.
      probing: `SharedConv` outputs are multiplied by `1 + probes[i]` (`[batch, c_out]`, i in call
        order); with `probes=None` their shapes are only collected in `probe_shapes`. A `"fan_in"`
        reducer records each probed conv's weights per output channel (Fisher's weighting).
      select: `mixed` computes only the op with the largest weight (exact for one-hot weights; a
        `lax.switch`, so one compiled function still serves every architecture).
    """

    reducers: Mapping[str, Callable[[Array], Any]] = dataclasses.field(default_factory=dict)
    remove_bn: bool = False
    normalize_chain: bool = False
    probing: bool = False
    probes: Sequence[Array] | None = None
    select: bool = False
    probe_offset: int = 0

    def __post_init__(self):
        self.records: list[tuple[str, Any, Array]] = []
        self.log_scales: list[Array] = []
        self.probe_shapes: list[tuple[int, int]] = []
        self.probe_index = self.probe_offset
        self.weight: Any = 1.0
        self._token = None

    def __enter__(self) -> "Taps":
        self._token = _ACTIVE.set(self)
        return self

    def __exit__(self, *exc) -> None:
        _ACTIVE.reset(self._token)

    # -------------------------------------------------------------- called by the modules
    def record(self, kind: str, value: Array) -> None:
        if kind in self.reducers:
            self.records.append((kind, self.reducers[kind](value), jnp.asarray(self.weight, jnp.float32)))

    def probe(self, y: Float[Array, "b h w c"], fan_in: Callable[[], Array]) -> Float[Array, "b h w c"]:
        """Scales a conv output by `1 + probes[i]`; with a `"fan_in"` reducer also records the conv's
        weights per output channel (`fan_in()`, `[c_out]`), one record per probe in probe order."""
        if not self.probing:
            return y
        i, shape = self.probe_index, (y.shape[0], y.shape[-1])
        self.probe_index += 1
        if "fan_in" in self.reducers:
            self.record("fan_in", fan_in())
        if self.probes is None:
            self.probe_shapes.append(shape)
            return y
        z = self.probes[i]
        if z.shape != shape:
            raise ValueError(f"probe {i} has shape {z.shape}, the conv output needs {shape}")
        return y * (1 + z.astype(y.dtype))[:, None, None, :]

    def child(self, probe_offset: int, dry: bool = False) -> "Taps":
        """A collector with the same settings (`dry`: probes only counted, as in discovery)."""
        return Taps(self.reducers, self.remove_bn, self.normalize_chain, self.probing,
                    None if dry else self.probes, self.select, probe_offset)

    def mixed(self, w: Float[Array, "k"], ops: Sequence[Callable[[Array], Array] | None], x: Array) -> Array:
        if not self.select:
            y, outer = None, self.weight
            for k, op in enumerate(ops):
                if op is None:
                    continue
                self.weight = outer * w[k]
                try:
                    yk = w[k] * op(x)
                finally:
                    self.weight = outer
                y = yk if y is None else y + yk
            return y
        return self._switch(w, ops, x)

    def _switch(self, w: Array, ops: Sequence[Callable | None], x: Array) -> Array:
        """`w[k*] op_{k*}(x)`, k* = argmax w, computing only that op; records padded across ops."""
        fns = [(lambda v: jnp.zeros_like(v)) if op is None else op for op in ops]

        def run(k: int, v: Array, offset: int, dry: bool = False) -> tuple[Array, Taps]:
            sub = self.child(offset, dry)
            with sub:
                y = fns[k](v)
            if sub.log_scales:
                raise ValueError("a chain_point inside a mixed op is not supported")
            return y, sub

        # 1. structure of each op's records and number of probes it uses (abstract evaluation)
        structs, counts, shapes = [], [], []
        for k in range(len(fns)):
            box = {}

            def shape_of(v, k=k, box=box):
                y, sub = run(k, v, 0, dry=True)
                box["kinds"], box["n"], box["shapes"] = [r[0] for r in sub.records], sub.probe_index, sub.probe_shapes
                return [(r[1], r[2]) for r in sub.records]

            out = jax.eval_shape(shape_of, x)
            structs.append(list(zip(box["kinds"], out)))
            counts.append(box["n"])
            shapes.append(box["shapes"])
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(int) + self.probe_index
        slots = [(k, j) for k in range(len(fns)) for j in range(len(structs[k]))]

        # 2. one branch per op, each returning every op's record slots (zeros for the others)
        def branch(k: int):
            def f(v):
                y, sub = run(k, v, int(offsets[k]))
                outs = [(sub.records[j][1], sub.records[j][2]) if kk == k else
                        jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), structs[kk][j][1])
                        for kk, j in slots]
                return y, outs
            return f

        idx = jnp.argmax(w)
        branches = [branch(k) for k in range(len(fns))]
        # Rematerialised: differentiating a switch otherwise saves every branch's residuals (zeros
        # for the ops not taken, written for each mixed op); recomputing the chosen op is cheaper.
        y, outs = jax.checkpoint(lambda i, v: jax.lax.switch(i, branches, v))(idx, x)
        for (k, j), (summary, weight) in zip(slots, outs):
            self.records.append((structs[k][j][0], summary, weight * w[idx] * self.weight))
        if self.probing and self.probes is None:  # shapes in the order the probes are numbered
            self.probe_shapes.extend(s for sh in shapes for s in sh)
        self.probe_index = int(offsets[-1])
        return w[idx] * y


def relu(x: Array) -> Array:
    """ReLU that reports its pre-activation to an active `Taps` (kind `"relu"`)."""
    taps = _ACTIVE.get()
    if taps is not None:
        taps.record("relu", x)
    return jax.nn.relu(x)


_SINGLE_PATH: contextvars.ContextVar[bool] = contextvars.ContextVar("supernet_single_path", default=False)


@contextlib.contextmanager
def single_path(on: bool = True):
    """Within (at trace time), mixed operations run only their chosen op (module docstring).

    Only valid for one-hot architecture weights (a soft weight vector would be cut to its largest
    entry). Supernets that do not implement it (the FBNet supernet) still compute the mixture,
    which for one-hot weights is the same function, only slower.
    """
    token = _SINGLE_PATH.set(on)
    try:
        yield
    finally:
        _SINGLE_PATH.reset(token)


def is_single_path() -> bool:
    """Whether the current trace runs one-hot mixed operations single-path (`single_path`)."""
    return _SINGLE_PATH.get()


_IN_SWITCH: contextvars.ContextVar[bool] = contextvars.ContextVar("supernet_in_switch", default=False)


def choose(w: Float[Array, "k"], branches: Sequence[Callable[..., Array]], *operands: Any) -> Array:
    """`w[k*] * branches[k*](*operands)` with `k* = argmax w`, running only that branch.

    Modules the branches use must be passed in `operands` (not closed over), so that `nnx.switch`
    carries their state updates (BatchNorm statistics) out of the chosen branch. Convolutions
    inside a branch use matrix-product gradients on the CPU (`nested_conv`: XLA:CPU's own conv
    gradients inside a conditional are 8-20x slower).
    """
    def traced(f):
        def g(*args):
            token = _IN_SWITCH.set(True)
            try:
                return f(*args)
            finally:
                _IN_SWITCH.reset(token)
        return g

    idx = jnp.argmax(w)
    fns = [traced(f) for f in branches]
    if _writes_batch_stats(operands):  # train mode: carry the chosen branch's statistics out
        return w[idx] * nnx.switch(idx, fns, *operands)
    # eval mode writes nothing: a plain switch, which also works inside loop bodies (where NNX
    # refuses to write back variables created outside the loop)
    return w[idx] * jax.lax.switch(idx, [lambda _, f=f: f(*operands) for f in fns], 0)


def _writes_batch_stats(operands: Sequence[Any]) -> bool:
    """Whether a module among `operands` (or inside lists of them) is a train-mode BatchNorm."""
    for op in operands:
        items = op if isinstance(op, (list, tuple)) else [op]
        for item in items:
            if isinstance(item, nnx.Module) and any(
                    isinstance(m, BatchNorm) and not m.use_running_average for _, m in nnx.iter_modules(item)):
                return True
    return False


def mixed(w: Float[Array, "k"], ops: Sequence[Callable[[Array], Array] | None], x: Array) -> Array:
    """A mixed operation `sum_k w[k] * ops[k](x)` (`None`: the zero op) (DARTS).

    Without an active `Taps` this is the plain weighted sum, or, under `single_path()`, only the op
    with the largest weight (exact for one-hot weights); with a `Taps`, records inside op k are
    weighted by `w[k]`, or (`Taps.select`) only the op with the largest weight is computed.
    """
    taps = _ACTIVE.get()
    if taps is None and _SINGLE_PATH.get():
        mods = [op if isinstance(op, nnx.Module) else None for op in ops]

        def branch(k: int):
            op = ops[k]
            if op is None:
                return lambda ms, v: jnp.zeros_like(v)
            if mods[k] is not None:
                return lambda ms, v: ms[k](v)
            return lambda ms, v: op(v)  # a stateless function (skip, pooling)

        return choose(w, [branch(k) for k in range(len(ops))], mods, x)
    if taps is None:
        y = None
        for k, op in enumerate(ops):
            if op is not None:
                y = w[k] * op(x) if y is None else y + w[k] * op(x)
        return y
    return taps.mixed(w, ops, x)


def chain_point(x: Array) -> Array:
    """Marks a tensor that every input-output path crosses; `Taps.normalize_chain` rescales it.

    Synflow's network (|weights|, no BN, positive input) is positively homogeneous between chain
    points, so dividing by a constant `c` divides every weight's gradient by `c` exactly; the
    score is recovered as `log S' + sum log c` without float64 (the reference) or overflow.
    """
    taps = _ACTIVE.get()
    if taps is None or not taps.normalize_chain:
        return x
    c = jax.lax.stop_gradient(jnp.maximum(jnp.mean(jnp.abs(x)), jnp.finfo(x.dtype).tiny))
    taps.log_scales.append(jnp.log(c))
    return x / c
