import csv
import os

import jax
import numpy as np
import pytest

from hwmodel.layers import OpKind, total_flops, total_params
from supernet.spaces import make_space
from supernet.spaces.fbnet import OPS


@pytest.fixture(scope="module")
def space():
    return make_space("fbnet-cifar100")


def test_round_trip_all_published_archs(space, data_dir):
    with open(os.path.join(data_dir, "latency", "fbnet_cifar100", "pixel3.csv")) as f:
        archs = [r["arch"] for r in csv.DictReader(f)]
    assert len(archs) == 5000
    for a in archs:
        assert space.encode(space.decode(a)) == a


@pytest.mark.parametrize("bad", ["", "1-2-3", "-".join(["9"] * 22), "-".join(["a"] * 22),
                                 "-".join(["1"] * 23), "1--2"])
def test_malformed_strings_raise(space, bad):
    with pytest.raises(ValueError):
        space.decode(bad)


def test_one_hot_expected_layers_equal_layers(space):
    for a in space.sample(jax.random.key(1), 5):
        t1, t2 = space.layers(a), space.expected_layers(space.one_hot(a))
        for f in ("weight", "c_in", "c_out", "kernel", "stride", "groups", "h", "w"):
            np.testing.assert_array_equal(getattr(t1, f), getattr(t2, f))


def test_all_skip_flops_by_hand(space):
    """All-skip network: only the stem, the 1x1 convs where shapes change, head and classifier."""
    arch = space.decode("-".join(["8"] * 22))
    macs = (32 * 32 * 27 * 16            # stem 3x3, 3->16, 32x32
            + 32 * 32 * 16 * 24          # stage 2 first layer 16->24 (stride 1) 1x1 conv
            + 16 * 16 * 24 * 32          # 24->32 stride 2 -> 16x16
            + 8 * 8 * 32 * 64            # 32->64 stride 2 -> 8x8
            + 8 * 8 * 64 * 112           # 64->112 stride 1
            + 4 * 4 * 112 * 184          # 112->184 stride 2 -> 4x4
            + 4 * 4 * 184 * 352          # 184->352 stride 1
            + 4 * 4 * 352 * 1504         # head 1x1
            + 1504 * 100)                # classifier
    assert float(total_flops(space.layers(arch))) == pytest.approx(2 * macs)


def test_ibn_layer_params_by_hand(space):
    """Layer 0 (16->16, stride 1) as k3_e6: 1x1 16->96, dw3x3 96, 1x1 96->16, each + bias."""
    skip, ibn = np.full(22, 8), np.full(22, 8)
    ibn[0] = OPS.index("k3_e6")
    extra = (16 * 96 + 96) + (9 * 96 + 96) + (96 * 16 + 16)
    d = float(total_params(space.layers(ibn)) - total_params(space.layers(skip)))
    assert d == pytest.approx(extra)


def test_grouped_op_has_shuffle_and_half_the_weights(space):
    a = np.full(22, 8)
    a[1] = OPS.index("k3_e1_g2")
    t = space.layers(a)
    present = np.asarray(t.weight) > 0
    assert (np.asarray(t.op)[present] == OpKind.SHUFFLE).sum() == 1


def test_imagenet_setting():
    s = make_space("fbnet-imagenet")
    t = s.layers(np.full(22, 3))
    assert float(t.h[1]) == 224 and int(t.c_out[-1]) == 1000


def test_layers_vmaps_and_jits_once(space):
    traces = []

    @jax.jit
    def flops(a):
        traces.append(1)
        return total_flops(space.layers(a))

    for k in range(3):
        flops(space.sample(jax.random.key(k)))
    assert len(traces) == 1
    batch = jax.vmap(space.layers)(space.sample(jax.random.key(0), 7))
    assert batch.weight.shape == (7, len(space.template))
