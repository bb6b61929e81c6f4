"""Tests of experiments.data.cifar10: sources, cache, split, batches, synthetic data, augmentation."""

import io
import os
import pickle
import tarfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from experiments.data import cifar10 as C

N_TRAIN, N_TEST = 3, 2  # images per class in the small synthetic sources


def _colour(split: str, c: int, i: int) -> np.ndarray:
    # A flat colour per image (JPEG keeps it within a few levels) that encodes split, class, index.
    return np.array([20 + 20 * c, 40 + 50 * i, 200 if split == "train" else 60], np.uint8)


def _make_jpeg_tar(path, shuffle_seed: int = 0):
    """The layout of the shared tarball, with members written in a shuffled order."""
    members = [(s, c, i) for s, n in (("train", N_TRAIN), ("test", N_TEST))
               for c in range(10) for i in range(n)]
    order = np.random.default_rng(shuffle_seed).permutation(len(members))
    with tarfile.open(path, "w:gz") as tf:
        for j in order:
            s, c, i = members[j]
            buf = io.BytesIO()
            Image.fromarray(np.broadcast_to(_colour(s, c, i), (32, 32, 3)).copy()).save(
                buf, "JPEG", quality=95)
            info = tarfile.TarInfo(f"cifar10/{s}/{C.CLASSES[c]}/{i:04d}.jpg")
            info.size = buf.tell()
            buf.seek(0)
            tf.addfile(info, buf)
    return path


def _make_py_dir(path, per_batch: int = 7, seed: int = 0):
    """Official pickle format: uint8 data [n, 3072] in CHW order, a list of labels; returns the truth."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True)
    truth = {}
    for name in C._PY_FILES:
        x = rng.integers(0, 256, (per_batch, 32, 32, 3), dtype=np.uint8)
        y = rng.integers(0, 10, per_batch)
        data = x.transpose(0, 3, 1, 2).reshape(per_batch, 3072)
        (path / name).write_bytes(pickle.dumps({b"data": data, b"labels": y.tolist()}))
        truth[name] = (x, y)
    x_train = np.concatenate([truth[n][0] for n in C._PY_FILES[:5]])
    y_train = np.concatenate([truth[n][1] for n in C._PY_FILES[:5]])
    return x_train, y_train, truth["test_batch"][0], truth["test_batch"][1]


@pytest.fixture
def jpeg_root(tmp_path):
    root = tmp_path / "data"
    (root / "cifar10").mkdir(parents=True)
    _make_jpeg_tar(root / "cifar10" / "cifar10-jpeg.tar.gz")
    return root


def _assert_same(a: C.Cifar10, b: C.Cifar10):
    for k in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))


# ----------------------------------------------------------------------------- sources

def test_jpeg_tar_layout_labels_and_order(jpeg_root, tmp_path):
    d = C.load_cifar10(jpeg_root, cache_dir=tmp_path / "cache")
    assert d.x_train.shape == (10 * N_TRAIN, 32, 32, 3) and d.x_train.dtype == np.uint8
    assert d.x_test.shape == (10 * N_TEST, 32, 32, 3)
    assert d.y_train.dtype == np.int32 and d.y_test.dtype == np.int32
    # sorted by (class index, file name) whatever the tar's member order
    np.testing.assert_array_equal(d.y_train, np.repeat(np.arange(10), N_TRAIN))
    for split, x, n in (("train", d.x_train, N_TRAIN), ("test", d.x_test, N_TEST)):
        want = np.stack([_colour(split, c, i) for c in range(10) for i in range(n)])
        assert np.abs(x.astype(int) - want[:, None, None, :]).max() <= 4  # JPEG rounding only
    # another member order gives the same arrays
    other = tmp_path / "other"
    (other / "cifar10").mkdir(parents=True)
    _make_jpeg_tar(other / "cifar10" / "cifar10-jpeg.tar.gz", shuffle_seed=1)
    _assert_same(d, C.load_cifar10(other, cache_dir=tmp_path / "cache"))


@pytest.mark.parametrize("where", ["cifar10/cifar-10-batches-py", "cifar-10-batches-py", "tar"])
def test_official_python_format(tmp_path, where):
    root = tmp_path / "data"
    if where == "tar":
        x_tr, y_tr, x_te, y_te = _make_py_dir(tmp_path / "src" / "cifar-10-batches-py")
        (root / "cifar10").mkdir(parents=True)
        with tarfile.open(root / "cifar10" / "cifar-10-python.tar.gz", "w:gz") as tf:
            tf.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    else:
        x_tr, y_tr, x_te, y_te = _make_py_dir(root / where)
    d = C.load_cifar10(root, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(d.x_train, x_tr)  # CHW -> HWC exactly
    np.testing.assert_array_equal(d.y_train, y_tr)
    np.testing.assert_array_equal(d.x_test, x_te)
    np.testing.assert_array_equal(d.y_test, y_te)
    assert d.y_train.dtype == np.int32 and d.x_train.flags.c_contiguous


def test_search_order_prefers_jpeg_tarball(jpeg_root):
    _make_py_dir(jpeg_root / "cifar-10-batches-py")
    kind, path = C.find_source(jpeg_root)
    assert kind == "jpeg-tar" and path == jpeg_root / "cifar10" / "cifar10-jpeg.tar.gz"


def test_missing_data_names_every_path_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        C.load_cifar10(tmp_path / "nowhere", cache_dir=tmp_path / "cache")
    msg = str(e.value)
    for _, rel in C._CANDIDATES:
        assert str(tmp_path / "nowhere" / rel) in msg
    assert "HWNAS_DATA_DIR" in msg and "data_dir" in msg
    assert not (tmp_path / "cache").exists()


def test_incomplete_python_dir_names_missing_files(tmp_path):
    _make_py_dir(tmp_path / "cifar-10-batches-py")
    os.remove(tmp_path / "cifar-10-batches-py" / "data_batch_3")
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        C.load_cifar10(tmp_path, cache_dir=tmp_path / "cache")


def test_env_vars_pick_data_and_cache_dirs(jpeg_root, tmp_path, monkeypatch):
    monkeypatch.setenv("HWNAS_DATA_DIR", str(jpeg_root))
    monkeypatch.setenv("HWNAS_CACHE_DIR", str(tmp_path / "envcache"))
    d = C.load_cifar10()
    assert d.source == str(jpeg_root / "cifar10" / "cifar10-jpeg.tar.gz")
    assert len(list((tmp_path / "envcache").glob("cifar10-*.npz"))) == 1


# ----------------------------------------------------------------------------- cache

def test_cache_hit_skips_decoding_and_changed_source_decodes_again(jpeg_root, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = C.load_cifar10(jpeg_root, cache_dir=cache)
    files = list(cache.glob("cifar10-*.npz"))
    assert len(files) == 1 and not list(cache.glob("*.tmp"))

    def boom(*a):
        raise AssertionError("decoded although cached")
    with monkeypatch.context() as m:
        m.setattr(C, "_decode", boom)
        _assert_same(first, C.load_cifar10(jpeg_root, cache_dir=cache))

    # a changed source (new content and mtime) is decoded again; the stale cache is pruned
    src = jpeg_root / "cifar10" / "cifar10-jpeg.tar.gz"
    _make_jpeg_tar(src, shuffle_seed=2)
    os.utime(src, ns=(time.time_ns(), time.time_ns() + 10**9))
    calls = []
    real = C._decode
    monkeypatch.setattr(C, "_decode", lambda *a: calls.append(a) or real(*a))
    _assert_same(first, C.load_cifar10(jpeg_root, cache_dir=cache))
    assert len(calls) == 1
    new_files = list(cache.glob("cifar10-*.npz"))
    assert len(new_files) == 1 and new_files != files


def test_corrupt_cache_is_decoded_again(jpeg_root, tmp_path):
    cache = tmp_path / "cache"
    first = C.load_cifar10(jpeg_root, cache_dir=cache)
    (path,) = cache.glob("cifar10-*.npz")
    path.write_bytes(path.read_bytes()[:1000])  # truncated
    _assert_same(first, C.load_cifar10(jpeg_root, cache_dir=cache))
    with np.load(path) as z:  # rewritten whole
        assert z["x_train"].shape == first.x_train.shape


def test_real_tarball_layout_is_what_the_loader_expects(data_dir):
    # Fast: reads the first members only (the full decode is the slow test below).
    kind, path = C.find_source(data_dir)
    assert kind == "jpeg-tar", f"expected the JPEG tarball first, found {path}"
    with tarfile.open(path, "r:gz") as tf:
        names = [m.name for _, m in zip(range(50), tf) if m.isfile()]
    assert names
    for n in names:
        split, cls, f = n.split("/")[-3:]
        assert split in ("train", "test") and cls in C.CLASSES and f.endswith(".jpg")


@pytest.mark.slow  # ~15 s of JPEG decoding on a CPU
def test_real_tarball_full_decode_and_cache(data_dir, tmp_path):
    d = C.load_cifar10(data_dir, cache_dir=tmp_path)
    assert d.x_train.shape == (50000, 32, 32, 3) and d.x_test.shape == (10000, 32, 32, 3)
    assert d.x_train.dtype == np.uint8 and d.y_train.dtype == np.int32
    np.testing.assert_array_equal(np.bincount(d.y_train, minlength=10), [5000] * 10)
    np.testing.assert_array_equal(np.bincount(d.y_test, minlength=10), [1000] * 10)
    mean = d.x_train.reshape(-1, 3).mean(0) / 255
    np.testing.assert_allclose(mean, C.CIFAR10_MEAN, atol=2e-3)  # JPEG barely moves the statistics
    _assert_same(d, C.load_cifar10(data_dir, cache_dir=tmp_path))
    train, val = C.split_train(d, seed=0)
    assert len(train.y) == len(val.y) == 25000
    np.testing.assert_array_equal(np.bincount(val.y, minlength=10), [2500] * 10)


# ----------------------------------------------------------------------------- synthetic, split, batches

def test_synthetic_shapes_balance_determinism_and_learnability():
    d = C.synthetic_cifar10(1000, 500, seed=3)
    assert d.x_train.shape == (1000, 32, 32, 3) and d.x_train.dtype == np.uint8
    assert d.y_train.dtype == np.int32 and set(np.unique(d.y_test)) == set(range(10))
    np.testing.assert_array_equal(np.bincount(d.y_train), [100] * 10)
    _assert_same(d, C.synthetic_cifar10(1000, 500, seed=3))
    assert not np.array_equal(d.x_train, C.synthetic_cifar10(1000, 500, seed=4).x_train)
    # nearest class mean on pooled colour + quadrant brightness already separates the classes
    feats = lambda x: x.reshape(len(x), 2, 16, 2, 16, 3).mean((2, 4)).reshape(len(x), -1)
    means = np.stack([feats(d.x_train)[d.y_train == c].mean(0) for c in range(10)])
    pred = np.argmin(((feats(d.x_test)[:, None] - means) ** 2).sum(-1), 1)
    assert (pred == d.y_test).mean() > 0.9


def test_split_is_deterministic_disjoint_complete_and_stratified():
    y = np.repeat(np.arange(10), 100).astype(np.int32)
    data = C.Split(np.arange(1000), y)  # "images" are their own index
    train, val = C.split_train(data, seed=0)
    assert len(train.x) == len(val.x) == 500
    assert not set(train.x) & set(val.x) and set(train.x) | set(val.x) == set(range(1000))
    np.testing.assert_array_equal(train.y, y[train.x])
    np.testing.assert_array_equal(np.bincount(val.y), [50] * 10)
    again = C.split_train(data, seed=0)
    np.testing.assert_array_equal(again[1].x, val.x)
    assert not np.array_equal(np.sort(C.split_train(data, seed=1)[1].x), np.sort(val.x))
    train, val = C.split_train(data, val_size=123, seed=0)
    assert len(val.x) == 123 and np.abs(np.bincount(val.y) - 12.3).max() < 1
    t2, v2 = C.split_train(C.synthetic_cifar10(100, 10), val_fraction=0.2)
    assert len(t2.x) == 80 and t2.x.shape[1:] == (32, 32, 3)
    with pytest.raises(ValueError, match="validation size"):
        C.split_train(data, val_size=1000)


def test_batches_deterministic_epoch_and_remainder():
    x, y = np.arange(103) * 10, np.arange(103)
    out = list(C.batches(7, x, y, 10))
    assert len(out) == 10 and all(xb.shape == (10,) for xb, _ in out)
    seen = np.concatenate([yb for _, yb in out])
    assert len(set(seen)) == 100 and not np.array_equal(seen, np.sort(seen))  # shuffled, no repeats
    assert all(np.array_equal(xb, yb * 10) for xb, yb in out)  # x and y stay paired
    np.testing.assert_array_equal(seen, np.concatenate([b for _, b in C.batches(7, x, y, 10)]))
    assert not np.array_equal(seen, np.concatenate([b for _, b in C.batches(8, x, y, 10)]))
    full = list(C.batches(7, x, y, 10, drop_remainder=False))
    assert len(full) == 11 and len(full[-1][0]) == 3
    key = jax.random.key(0)
    a = np.concatenate([b for _, b in C.batches(key, x, y, 10)])
    np.testing.assert_array_equal(a, np.concatenate([b for _, b in C.batches(jax.random.key(0), x, y, 10)]))
    b = np.concatenate([b for _, b in C.batches(jax.random.PRNGKey(0), x, y, 10)])  # legacy keys too
    assert len(set(b)) == 100
    with pytest.raises(ValueError):
        next(C.batches(0, x, y, 200))


# ----------------------------------------------------------------------------- normalise, augment

def _reference_crop_flip(images, offsets, flips, pad=4):
    p = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    out = np.stack([p[i, dy:dy + 32, dx:dx + 32] for i, (dy, dx) in enumerate(offsets)])
    return np.where(np.asarray(flips)[:, None, None, None], out[:, :, ::-1], out)


def test_normalize():
    x = np.broadcast_to(np.round(np.array(C.CIFAR10_MEAN) * 255), (2, 4, 4, 3)).astype(np.uint8)
    out = C.normalize(x)
    assert out.dtype == jnp.float32 and out.shape == x.shape
    assert float(jnp.abs(out).max()) < 0.01
    np.testing.assert_allclose(C.normalize(np.full((1, 3), 255, np.uint8))[0],
                               (1 - np.array(C.CIFAR10_MEAN)) / np.array(C.CIFAR10_STD), rtol=1e-6)


def test_crop_flip_on_a_hand_made_image():
    img = np.arange(32 * 32 * 3).reshape(1, 32, 32, 3) % 251 + 1  # no zeros, asymmetric
    img = img.astype(np.uint8)
    imgs = np.repeat(img, 4, 0)
    offsets = jnp.array([[4, 4], [4, 4], [0, 0], [8, 8]])
    flips = jnp.array([False, True, False, False])
    out = np.asarray(jax.jit(C.crop_flip)(imgs, offsets, flips))
    np.testing.assert_array_equal(out[0], img[0])                 # offset = pad: no shift
    np.testing.assert_array_equal(out[1], img[0, :, ::-1])        # horizontal mirror
    np.testing.assert_array_equal(out[2, 4:, 4:], img[0, :-4, :-4])  # shifted down-right...
    assert (out[2, :4] == 0).all() and (out[2, :, :4] == 0).all()  # ...with a zero border
    np.testing.assert_array_equal(out[3, :-4, :-4], img[0, 4:, 4:])
    np.testing.assert_array_equal(out, _reference_crop_flip(imgs, offsets, flips))


def test_augment_shape_determinism_correctness_and_jit():
    imgs = np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    key = jax.random.key(42)
    aug = jax.jit(C.augment)  # everything jitted: eager dispatch compiles op by op (slow on CPU)
    out = aug(key, imgs)
    assert out.shape == imgs.shape and out.dtype == jnp.float32
    np.testing.assert_array_equal(out, aug(key, imgs))
    assert not np.array_equal(out, aug(jax.random.key(43), imgs))
    # every image is the normalised crop/flip its drawn parameters say; both flips and many shifts occur
    offsets, flips = jax.jit(C.crop_flip_params, static_argnums=1)(key, len(imgs))
    offsets, flips = np.asarray(offsets), np.asarray(flips)
    mean, std = np.array(C.CIFAR10_MEAN), np.array(C.CIFAR10_STD)
    want = (_reference_crop_flip(imgs, offsets, flips) / 255 - mean) / std
    np.testing.assert_allclose(out, want, atol=1e-5)
    assert 0 < flips.sum() < len(imgs) and len(np.unique(offsets, axis=0)) > 20
    assert offsets.min() >= 0 and offsets.max() <= 8
    # vmappable over an extra leading axis (e.g. per-device batches); float pixels work like uint8
    keys = jax.random.split(key, 2)
    per = jax.jit(jax.vmap(C.augment))(keys, imgs.reshape(2, 32, 32, 32, 3).astype(np.float32))
    np.testing.assert_allclose(per[1], aug(keys[1], imgs[32:]), atol=1e-6)


def test_unwritable_cache_dir_still_loads(jpeg_root, tmp_path, caplog):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    d = C.load_cifar10(jpeg_root, cache_dir=blocker)
    assert d.x_train.shape == (10 * N_TRAIN, 32, 32, 3)
    assert "could not write CIFAR-10 cache" in caplog.text
