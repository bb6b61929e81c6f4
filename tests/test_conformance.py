"""Conformance, driven by the registries: whatever is registered (a new space, evaluator, accelerator
preset) meets the contracts the rest of the framework relies on, or this file fails.

- every search space (`SPACES`): architecture strings round-trip; the expected layer table of a
  one-hot architecture is the architecture's own table; its supernet with a one-hot architecture
  computes what the derived standalone subnet computes (checked on a small member of the same
  family: `SMALL`, which must name every registered space);
- every evaluator (`EVALUATORS`): returns exactly its declared `names`, one finite value per
  architecture, the same values for the same architectures whichever batch they come in.
Every accelerator preset is checked in `test_analytic.py` (smooth -> exact), every zero-shot score in
`test_zero_shot.py` (one-hot supernet == derived subnet; `test_every_registered_score_is_checked`).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import zero_shot as Z
from supernet import make_supernet
from supernet.blocks import ReportsTaps
from supernet.evaluators import EVALUATORS, make_evaluator
from supernet.spaces import SPACES, make_space
from supernet.spaces.fbnet import FBNetSpace
from supernet.spaces.mobile import MobileSpace
from supernet.training import DeviceData, make_mesh

MOBILE = dict(blocks_per_stage=(1, 2), base_widths=(8, 16), stage_strides=(1, 2), stem_width=8,
              head_width=32, parallelism=4, input_size=16)
#: A small space of each registered space's family and class (fast supernets on a CPU).
SMALL = {
    "nb201": lambda: make_space("nb201", channels=4, cells_per_stage=1, input_size=8),
    "mobile-curated": lambda: MobileSpace(grid="curated", **MOBILE),
    "mobile-raw": lambda: MobileSpace(grid="raw", **MOBILE),
    "fbnet-cifar100": lambda: FBNetSpace(input_size=8, head_channels=32, num_classes=10, name="fbnet-tiny"),
    "fbnet-imagenet": lambda: FBNetSpace(input_size=16, stem_stride=2, head_channels=32, num_classes=10,
                                         name="fbnet-tiny-imagenet"),
}
NAMES = sorted(SPACES)


def _tables_equal(a, b):
    for field in a.__dataclass_fields__:
        np.testing.assert_allclose(np.asarray(getattr(a, field), np.float64),
                                   np.asarray(getattr(b, field), np.float64), rtol=1e-5, atol=1e-5,
                                   err_msg=field)


def test_every_registered_space_has_a_small_member():
    assert set(SMALL) == set(SPACES), "add the new space to SMALL"


@pytest.mark.parametrize("name", NAMES)
def test_arch_strings_round_trip_and_one_hot_tables_are_the_architectures(name):
    space = make_space(name)
    archs = np.asarray(space.sample(jax.random.key(0), 6))
    for a in archs:
        text = space.encode(a)
        np.testing.assert_array_equal(space.decode(text), a)
        assert space.encode(space.decode(text)) == text
    _tables_equal(jax.vmap(space.expected_layers)(jax.vmap(space.one_hot)(jnp.asarray(archs))),
                  space.layers(jnp.asarray(archs)))


# the FBNet family is `slow` here (suite time): tests/test_supernet_fbnet.py checks it by default
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n.startswith("fbnet") else n for n in NAMES])
def test_one_hot_supernet_equals_the_derived_subnet(name):
    space = SMALL[name]()
    assert type(space) is type(make_space(name)) and space.family == make_space(name).family
    with jax.default_prng_impl("rbg"):  # faster init on a CPU; values do not matter
        net = make_supernet(space, rngs=nnx.Rngs(0))
    net.eval()
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, space.input_size, space.input_size, 3)), jnp.float32)
    for a in np.asarray(space.sample(jax.random.key(3), 2)):
        sub = net.derive(a)
        sub.eval()
        want = nnx.jit(lambda s, x: s(x))(sub, x)
        got = nnx.jit(lambda n, x, w: n(x, w))(net, x, space.one_hot(jnp.asarray(a)))
        assert want.shape == (2, space.num_classes)
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4, err_msg=space.encode(a))
    # an activation score on this supernet: a finite value where the network reports to the taps
    # (it declares so by subclassing ReportsTaps), else one line saying which networks do
    y = jnp.arange(2) % space.num_classes
    if isinstance(net, ReportsTaps):
        assert np.isfinite(Z.score(net, (x, y), jax.random.key(0), ("jacob_cov",), arch=jnp.asarray(a))["jacob_cov"])
    else:
        with pytest.raises(ValueError, match=r"score 'naswot' reads activations .* only these networks report: nb201"):
            Z.score(net, (x, y), jax.random.key(0), ("naswot",), arch=jnp.asarray(a))


# ------------------------------------------------------------------ evaluators
SPACE = make_space("nb201", channels=4, cells_per_stage=1, input_size=8)


def _data(n: int, seed: int) -> DeviceData:
    rng = np.random.default_rng(seed)
    return DeviceData.put(rng.normal(size=(n, 8, 8, 3)).astype(np.float32), rng.integers(0, 10, n).astype(np.int32),
                          make_mesh())


def _kwargs(name: str, tmp_path) -> dict:
    """The smallest arguments each registered evaluator takes."""
    archs = np.asarray(SPACE.sample(jax.random.key(0), 16))
    if name == "table":
        path = os.path.join(tmp_path, "t.csv")
        with open(path, "w") as f:
            f.write("arch_str,acc\n" + "".join(f"{SPACE.encode(a)},{i}\n" for i, a in enumerate(archs)))
        return {"path": path, "columns": {"accuracy": "acc"}}
    if name == "capacity":
        return {}
    if name == "zero_shot":
        return {"score_fn": lambda a: np.asarray(a).sum(1) * 1.0}
    if name == "supernet":
        return {"net": make_supernet(SPACE, rngs=nnx.Rngs(0)), "data": _data(16, 1), "batch_size": 8}
    if name == "train":
        return {"train": _data(16, 1), "val": _data(8, 2), "steps": 2, "batch_size": 8, "eval_batch_size": 8}
    if name == "hwcost":
        return {"accelerators": ("npu", "edgetpu")}
    if name == "measured":
        return {"backend": "zigzag:edge_tpu_like"}  # simulated: deterministic, as this test needs
    if name == "composite":
        return {"parts": [{"name": "hwcost", "accelerators": ["npu"]},
                          make_evaluator("zero_shot", SPACE, score_fn=lambda a: np.asarray(a).sum(1) * 1.0)]}
    raise AssertionError(f"evaluator {name!r} is registered but not in this test: add its arguments")


@pytest.mark.parametrize("name", sorted(EVALUATORS))
def test_every_evaluator_returns_its_declared_names(name, tmp_path):
    csv_archs = np.asarray(SPACE.sample(jax.random.key(0), 16))  # the table holds these
    ev = make_evaluator(name, SPACE, **_kwargs(name, tmp_path))
    archs = csv_archs[:3]
    out = ev(archs)
    assert tuple(out) == tuple(ev.names) and len(ev.names) >= 1
    for k, v in out.items():
        assert v.shape == (3,) and np.all(np.isfinite(v)), (k, v)
    again = ev(csv_archs[[2, 0]])  # the same architecture, another batch: the same value
    for k in ev.names:
        np.testing.assert_allclose(again[k], out[k][[2, 0]], rtol=1e-6, err_msg=k)
