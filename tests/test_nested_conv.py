"""`supernet.nested_conv`: the tap-wise VJP equals XLA's convolution gradients, and `blocks.conv2d`
takes it only on the zero-shot switch path."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from supernet import blocks, nested_conv


_lax = nested_conv.xla_conv2d  # XLA's own convolution and gradients


@pytest.mark.parametrize("k,stride,groups,size", [(3, 1, 1, 8), (1, 1, 1, 8), (5, 1, 1, 7), (3, 2, 1, 8),
                                                  (3, 2, 1, 7), (1, 2, 1, 8), (3, 1, 6, 8), (5, 2, 6, 9)])
def test_matmul_grads_equal_xla(k, stride, groups, size):
    kx, kw, kc = jax.random.split(jax.random.key(k * 10 + stride + groups), 3)
    c_in, c_out = 6, (6 if groups > 1 else 5)
    x = jax.random.normal(kx, (2, size, size, c_in))
    w = jax.random.normal(kw, (k, k, c_in // groups, c_out))
    ct = jax.random.normal(kc, _lax(x, w, stride, groups).shape)  # a random cotangent

    def vjp(f):
        y, pull = jax.vjp(lambda a, b: f(a, b, stride, groups), x, w)
        return (y, *pull(ct))

    for got, want in zip(vjp(nested_conv.conv2d_matmul_grads), vjp(_lax)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_conv2d_uses_it_only_on_the_switch_path(monkeypatch):
    calls = []
    real = nested_conv.conv2d_matmul_grads
    monkeypatch.setattr(nested_conv, "conv2d_matmul_grads", lambda *a: calls.append(a) or real(*a))
    x, w = jnp.ones((1, 4, 4, 2)), jnp.ones((3, 3, 2, 2))
    blocks.conv2d(x, w)
    with blocks.Taps():
        blocks.conv2d(x, w)
    assert not calls  # plain and mixture paths: XLA's own gradients
    with blocks.Taps(select=True):
        y = blocks.conv2d(x, w)
    assert len(calls) == (1 if jax.default_backend() == "cpu" else 0)
    np.testing.assert_allclose(y, _lax(x, w, 1, 1), rtol=1e-6)
    assert not nested_conv.supported(jnp.ones((2, 2, 2, 2)), 1, 2)  # even kernels keep XLA's path


@pytest.mark.parametrize("k,stride,size", [(3, 1, 8), (3, 2, 8), (5, 2, 9), (7, 1, 6), (1, 2, 7)])
def test_depthwise_tap_sum_equals_xla(k, stride, size):
    kx, kw, kc = jax.random.split(jax.random.key(k * 10 + stride), 3)
    x = jax.random.normal(kx, (2, size, size, 6))
    w = jax.random.normal(kw, (k, k, 1, 6))
    ct = jax.random.normal(kc, _lax(x, w, stride, 6).shape)

    def vjp(f):
        y, pull = jax.vjp(f, x, w)
        return (y, *pull(ct))

    got = vjp(lambda a, b: nested_conv.depthwise_tap_sum(a, b, stride))
    want = vjp(lambda a, b: _lax(a, b, stride, 6))
    for g, w_ in zip(got, want):
        np.testing.assert_allclose(g, w_, rtol=1e-4, atol=1e-4)


def test_conv2d_takes_the_tap_sum_for_depthwise_on_cpu_but_not_in_export(monkeypatch):
    calls = []
    real = nested_conv.depthwise_tap_sum
    monkeypatch.setattr(nested_conv, "depthwise_tap_sum", lambda *a: calls.append(a) or real(*a))
    x, w = jnp.ones((1, 4, 4, 3)), jnp.ones((3, 3, 1, 3))
    blocks.conv2d(x, w, groups=3)
    assert len(calls) == (1 if jax.default_backend() == "cpu" else 0)
    blocks.conv2d(x, jnp.ones((3, 3, 3, 3)))  # dense: XLA's convolution
    with blocks.library_convolutions():
        y = blocks.conv2d(x, w, groups=3)
    assert len(calls) == (1 if jax.default_backend() == "cpu" else 0)
    np.testing.assert_allclose(y, _lax(x, w, 1, 3), rtol=1e-6)
