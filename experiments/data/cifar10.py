"""CIFAR-10: load once from JPEGs or the official pickles, cache, split, batch, augment on device.

Sources, searched in this order inside `data_dir` (the folder that *holds* `cifar10/`):

1. `cifar10/cifar10-jpeg.tar.gz`: `cifar10/{train,test}/<class>/NNNN.jpg` (the shared data set).
2. `cifar10/cifar-10-batches-py/`, 3. `cifar-10-batches-py/`: the official python pickles.
4. `cifar10/cifar-10-python.tar.gz`: the official download, unextracted.

Decoding 60k JPEGs with Pillow takes ~10-15 s, so the arrays are cached as an uncompressed `.npz`
(~185 MB, loads in well under a second) keyed by the source's path, size and mtime: a changed
source is decoded again, never silently served stale. Labels are the index of the class name in
the official order (`CLASSES`). JPEG-sourced arrays are grouped by class (files sorted), so always
split and batch with a permutation (`split_train`, `batches` do).

Example:
    >>> import jax
    >>> data = synthetic_cifar10(200, 50)  # `load_cifar10()` returns the real set in the same form
    >>> train, val = split_train(data, seed=0)  # class-balanced halves (25k / 25k on CIFAR-10)
    >>> len(train.x), len(val.x)
    (100, 100)
    >>> x, y = next(batches(0, *train, batch_size=50))
    >>> augment(jax.random.key(1), x).shape  # float32, normalised
    (50, 32, 32, 3)
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import os
import pickle
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from hwmodel.tables import InputError
from jaxtyping import Array, Bool, Float, Int, Shaped, UInt8

log = logging.getLogger(__name__)

CLASSES: tuple[str, ...] = ("airplane", "automobile", "bird", "cat", "deer",
                            "dog", "frog", "horse", "ship", "truck")
# Per-channel mean / std of the 50k training images in [0, 1], as used by DARTS (Liu et al. 2019,
# quark0/darts cnn/utils.py) and NAS-Bench-201 ([125.3, 123.0, 113.9] / 255, [63.0, 62.1, 66.7] / 255).
# The true std, not the (0.2023, 0.1994, 0.2010) that circulates from pytorch-cifar.
CIFAR10_MEAN: tuple[float, float, float] = (0.49139968, 0.48215827, 0.44653124)
CIFAR10_STD: tuple[float, float, float] = (0.24703233, 0.24348505, 0.26158768)

ENV_DATA_DIR = "HWNAS_DATA_DIR"
ENV_CACHE_DIR = "HWNAS_CACHE_DIR"
_CACHE_VERSION = 1  # bump when the decoded arrays would change (ordering, dtype, ...)
_REPO_ROOT = Path(__file__).resolve().parents[2]
_PY_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
# (kind, path inside data_dir), in search order.
_CANDIDATES = (("jpeg-tar", "cifar10/cifar10-jpeg.tar.gz"),
               ("py-dir", "cifar10/cifar-10-batches-py"),
               ("py-dir", "cifar-10-batches-py"),
               ("py-tar", "cifar10/cifar-10-python.tar.gz"))


class Split(NamedTuple):
    """Images and labels of one split; unpacks as `x, y = split`."""
    x: UInt8[np.ndarray, "n 32 32 3"]
    y: Int[np.ndarray, " n"]


@dataclasses.dataclass(frozen=True)
class Cifar10:
    """CIFAR-10 as host numpy arrays: uint8 NHWC images, int32 labels in [0, 10).

    `source` records where the arrays came from (a path, or `synthetic(...)`) for run metadata.
    """
    x_train: UInt8[np.ndarray, "n_train 32 32 3"]
    y_train: Int[np.ndarray, " n_train"]
    x_test: UInt8[np.ndarray, "n_test 32 32 3"]
    y_test: Int[np.ndarray, " n_test"]
    source: str = ""

    @property
    def train(self) -> Split:
        return Split(self.x_train, self.y_train)

    @property
    def test(self) -> Split:
        return Split(self.x_test, self.y_test)


# ----------------------------------------------------------------------------- locating & caching

def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Argument, else `$HWNAS_DATA_DIR`, else `<repo>/../shared/data` (the shared data checkout)."""
    if data_dir is None:
        data_dir = os.environ.get(ENV_DATA_DIR) or _REPO_ROOT.parent / "shared" / "data"
    return Path(data_dir).expanduser()


def find_source(data_dir: str | os.PathLike | None = None) -> tuple[str, Path]:
    """Returns `(kind, path)` of the first CIFAR-10 source found in `data_dir`.

    Raises:
        FileNotFoundError: none exists; the message lists every path tried and how to fix it.
    """
    root = resolve_data_dir(data_dir)
    tried = []
    for kind, rel in _CANDIDATES:
        path = root / rel
        if path.is_file() if kind.endswith("tar") else path.is_dir():
            return kind, path
        tried.append(str(path))
    raise FileNotFoundError(
        "CIFAR-10 not found; tried:\n  " + "\n  ".join(tried) + "\n"
        f"Put cifar10-jpeg.tar.gz (or the official cifar-10-batches-py/ or cifar-10-python.tar.gz) "
        f"under <data_dir>/cifar10/, and pass data_dir=<the folder holding cifar10/> or set "
        f"{ENV_DATA_DIR}. For a run without the data use synthetic_cifar10().")


def _source_files(kind: str, path: Path) -> list[Path]:
    if kind != "py-dir":
        return [path]
    files = [path / name for name in _PY_FILES]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"incomplete CIFAR-10 python directory {path}: missing {missing}")
    return files


def _cache_path(cache_dir: Path, kind: str, files: list[Path]) -> Path:
    # Name = hash(source path) + hash(path, size, mtime of every file): a changed source gets a new
    # name (stale caches of the same source are pruned when the new one is written).
    where = hashlib.sha1(str(files[0].resolve()).encode()).hexdigest()[:10]
    state = [_CACHE_VERSION, kind] + [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns)
                                      for f in files]
    what = hashlib.sha1(repr(state).encode()).hexdigest()[:10]
    return cache_dir / f"cifar10-{where}-{what}.npz"


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path) as z:
            arrays = {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except FileNotFoundError:
        return None
    except Exception as e:  # truncated or foreign file: decode again and overwrite
        log.warning("ignoring unreadable CIFAR-10 cache %s (%s)", path, e)
        return None
    return arrays


def _write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Atomic write (temp file in the same dir + os.replace): readers never see a partial file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; a shared cache dir should stay readable
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
        for stale in path.parent.glob(path.name.rsplit("-", 1)[0] + "-*.npz"):
            if stale != path:
                stale.unlink(missing_ok=True)
    except OSError as e:  # read-only or full disk: the data is still good, only slower next time
        log.warning("could not write CIFAR-10 cache %s (%s); continuing without it", path, e)


# ----------------------------------------------------------------------------- decoding

def _decode_jpeg_tar(path: Path) -> dict[str, np.ndarray]:
    """Decodes `.../{train,test}/<class>/<name>.jpg` members; sorted by (class index, file name)."""
    from PIL import Image  # only needed on a cache miss

    blobs: dict[str, list[tuple[int, str, bytes]]] = {"train": [], "test": []}
    with tarfile.open(path, "r:*") as tf:
        for m in tf:
            parts = m.name.split("/")
            if not m.isfile() or len(parts) < 3 or not parts[-1].lower().endswith((".jpg", ".jpeg")):
                continue
            split, cls = parts[-3], parts[-2]
            if split not in blobs or cls not in CLASSES:
                raise ValueError(f"{path}: unexpected member {m.name!r} "
                                 f"(want <split>/<class>/<file>.jpg, split in train/test, class in {CLASSES})")
            blobs[split].append((CLASSES.index(cls), parts[-1], tf.extractfile(m).read()))
    out = {}
    for split, items in blobs.items():
        if not items:
            raise ValueError(f"{path}: no {split}/<class>/*.jpg images")
        items.sort(key=lambda t: t[:2])  # deterministic whatever the tar's member order
        x = np.empty((len(items), 32, 32, 3), np.uint8)
        for i, (_, name, blob) in enumerate(items):
            # formats=["JPEG"] skips Pillow's format probing: ~2x faster for tiny images.
            with Image.open(io.BytesIO(blob), formats=["JPEG"]) as im:
                if im.size != (32, 32):
                    raise ValueError(f"{path}: {split}/{CLASSES[items[i][0]]}/{name} is {im.size}, not 32x32")
                x[i] = np.asarray(im if im.mode == "RGB" else im.convert("RGB"))
        out[f"x_{split}"] = x
        out[f"y_{split}"] = np.array([c for c, _, _ in items], np.int32)
    return out


def _unpickle_batches(read: dict[str, bytes]) -> dict[str, np.ndarray]:
    """Official pickles: `data` is uint8 [10000, 3072] in CHW order, `labels` a list of ints."""
    def split(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        # The pickles are the data set the user pointed us at (same trust as the code running here).
        ds = [pickle.loads(read[n], encoding="bytes") for n in names]
        x = np.concatenate([d[b"data"] for d in ds]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        y = np.concatenate([np.asarray(d[b"labels"], np.int32) for d in ds])
        return np.ascontiguousarray(x, np.uint8), y
    x_train, y_train = split(list(_PY_FILES[:5]))
    x_test, y_test = split([_PY_FILES[5]])
    return dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


class DataError(InputError):
    """A data source that exists but cannot be read (corrupt, truncated, wrong content)."""


def _decode(kind: str, path: Path) -> dict[str, np.ndarray]:
    if kind == "jpeg-tar":
        return _decode_jpeg_tar(path)
    if kind == "py-dir":
        return _unpickle_batches({n: (path / n).read_bytes() for n in _PY_FILES})
    with tarfile.open(path, "r:*") as tf:  # py-tar
        read = {Path(m.name).name: tf.extractfile(m).read() for m in tf
                if m.isfile() and Path(m.name).name in _PY_FILES}
    missing = sorted(set(_PY_FILES) - set(read))
    if missing:
        raise ValueError(f"{path}: missing members {missing}")
    return _unpickle_batches(read)


def load_cifar10(data_dir: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None) -> Cifar10:
    """Loads CIFAR-10 (50k train + 10k test), decoding once and caching the arrays.

    Args:
        data_dir: folder holding `cifar10/` (see the module docstring for what is searched);
            default `$HWNAS_DATA_DIR`, else `../shared/data` next to the repository.
        cache_dir: where the decoded `.npz` goes; default `$HWNAS_CACHE_DIR`, else `~/.cache/hwnas`.

    Returns:
        `Cifar10` with uint8 [N, 32, 32, 3] images and int32 labels.

    Raises:
        FileNotFoundError: no source found (the message lists the paths tried).
        DataError: the source is corrupt or truncated (names the file).
    """
    kind, path = find_source(data_dir)
    files = _source_files(kind, path)
    if cache_dir is None:
        cache_dir = os.environ.get(ENV_CACHE_DIR) or Path.home() / ".cache" / "hwnas"
    cache = _cache_path(Path(cache_dir).expanduser(), kind, files)
    arrays = _read_cache(cache)
    if arrays is None:
        log.info("decoding CIFAR-10 from %s (one time; cached at %s)", path, cache)
        try:
            arrays = _decode(kind, path)
        except (tarfile.TarError, EOFError, OSError, zlib.error, pickle.UnpicklingError, KeyError, ValueError) as e:
            raise DataError(f"CIFAR-10 source {path} is corrupt or truncated ({type(e).__name__}: {e}); "
                            "download it again or point HWNAS_DATA_DIR at a good copy") from None
        _write_cache(cache, arrays)
    return Cifar10(**arrays, source=str(path))


def synthetic_cifar10(num_train: int = 5000, num_test: int = 1000, seed: int = 0) -> Cifar10:
    """Random but learnable stand-in with CIFAR-10's shapes and dtypes, for tests and data-less runs.

    Each class has its own mean colour and a horizontal/vertical brightness gradient; pixels add
    Gaussian noise. A linear model on pooled colour separates the classes, a small conv net reaches
    ~100 %, so a pipeline that cannot learn it is broken. Labels are balanced and shuffled.
    """
    rng = np.random.default_rng(seed)
    colours = rng.uniform(50, 205, (10, 3))
    ramp = np.linspace(-1.0, 1.0, 32)
    grads = rng.uniform(-30, 30, (10, 2))  # per-class brightness slope along (rows, columns)

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.permutation(np.arange(n) % 10).astype(np.int32)
        pattern = grads[y, 0, None, None] * ramp[:, None] + grads[y, 1, None, None] * ramp[None, :]
        x = colours[y, None, None, :] + pattern[..., None] + rng.normal(0, 40, (n, 32, 32, 3))
        return np.clip(np.rint(x), 0, 255).astype(np.uint8), y

    (x_train, y_train), (x_test, y_test) = make(num_train), make(num_test)
    return Cifar10(x_train, y_train, x_test, y_test,
                   source=f"synthetic(num_train={num_train}, num_test={num_test}, seed={seed})")


# ----------------------------------------------------------------------------- splitting & batching

def split_train(data: Cifar10 | Split, val_fraction: float = 0.5, val_size: int | None = None,
                seed: int = 0) -> tuple[Split, Split]:
    """Deterministic, class-stratified (train, val) split of the training set, for bilevel search.

    DARTS / NAS-Bench-201 search on two 25k halves of the 50k training images (weights on one,
    architecture on the other): the default. Stratified so each half has every class in proportion
    (within one image), which a plain prefix split of our class-grouped arrays would not.

    Args:
        data: a `Cifar10` or another set with `x_train` / `y_train` (its train split is split; dense
            targets such as masks are split at random) or a `Split`.
        val_fraction: fraction for validation, used when `val_size` is None.
        val_size: exact number of validation images.
        seed: numpy seed; same seed, same split.
    """
    x, y = (data.x_train, data.y_train) if hasattr(data, "x_train") else data
    n = len(y)
    k = round(n * val_fraction) if val_size is None else val_size
    if not 0 < k < n:
        raise ValueError(f"validation size must be in (0, {n}), got {k} "
                         f"(val_fraction={val_fraction}, val_size={val_size})")
    order = np.random.default_rng(seed).permutation(n)
    if np.ndim(y) != 1:  # dense targets (masks, boxes): no class to stratify by, a random split
        val, train = order[:k], order[k:]
        return Split(x[train], y[train]), Split(x[val], y[val])
    # Rank of each image within its class (in random order), as a fraction of the class size;
    # taking the k smallest fractions takes ~k/n of every class.
    y_perm = y[order]
    frac = np.empty(n)
    for c in np.unique(y_perm):
        idx = np.flatnonzero(y_perm == c)
        frac[idx] = (np.arange(len(idx)) + 0.5) / len(idx)
    order = order[np.argsort(frac, kind="stable")]
    val, train = order[:k], order[k:]
    return Split(x[train], y[train]), Split(x[val], y[val])


def batches(seed: int | jax.Array, x: Shaped[np.ndarray, "n ..."], y: Shaped[np.ndarray, " n"],
            batch_size: int, drop_remainder: bool = True
            ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yields one epoch of shuffled `(x, y)` numpy batches, the same order for the same seed.

    For several epochs pass a new seed each (`jax.random.fold_in(key, epoch)` or `seed + epoch`).
    Batches stay on the host; `jax.device_put` them (with a sharding) inside the training loop.

    Args:
        seed: int, or a JAX PRNG key (turned into a numpy seed).
        drop_remainder: drop the last partial batch, so every step has one shape (one compile).
    """
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length: {len(x)} vs {len(y)}")
    if batch_size <= 0 or (drop_remainder and batch_size > len(x)):
        raise ValueError(f"batch_size {batch_size} must be in [1, {len(x)}] with drop_remainder")
    if isinstance(seed, jax.Array):
        if jnp.issubdtype(seed.dtype, jax.dtypes.prng_key):
            seed = jax.random.key_data(seed)
        seed = [int(v) for v in np.asarray(seed, np.uint32).ravel()]
    perm = np.random.default_rng(seed).permutation(len(x))
    stop = len(x) - len(x) % batch_size if drop_remainder else len(x)
    for i in range(0, stop, batch_size):
        idx = perm[i:i + batch_size]
        yield x[idx], y[idx]


# ----------------------------------------------------------------------------- on-device transforms

def normalize(x: Shaped[Array, "... c"]) -> Float[Array, "... c"]:
    """Pixels in [0, 255] (uint8 or float) -> float32 `(x / 255 - mean) / std` per channel."""
    mean = jnp.asarray(CIFAR10_MEAN, jnp.float32)
    std = jnp.asarray(CIFAR10_STD, jnp.float32)
    return (jnp.asarray(x, jnp.float32) / 255.0 - mean) / std


def random_crops(images: np.ndarray, size: int | None, rng: np.random.Generator) -> np.ndarray:
    """One random `size x size` window per image (no padding), host-side; the images unchanged when
    `size` is None or their full size. `experiments.zero_shot_eval` scores a space with a smaller
    `input_size` on such crops, as TE-NAS counts linear regions on 3x3 crops of CIFAR images
    (`RandomCrop(3, padding=0)` in `linear_region_counter.get_datasets`)."""
    h, w = images.shape[1:3]
    if size is None or size == h == w:
        return images
    if size > min(h, w):
        raise ValueError(f"the space's input_size {size} exceeds the {h}x{w} images")
    oy = rng.integers(0, h - size + 1, len(images))
    ox = rng.integers(0, w - size + 1, len(images))
    return np.stack([im[a:a + size, b:b + size] for im, a, b in zip(images, oy, ox)])


def crop_flip_params(key: jax.Array, batch: int, pad: int = 4
                     ) -> tuple[Int[Array, "b 2"], Bool[Array, " b"]]:
    """Draws per-image crop offsets in [0, 2 * pad] (pad = no shift) and horizontal-flip flags."""
    k_off, k_flip = jax.random.split(key)
    offsets = jax.random.randint(k_off, (batch, 2), 0, 2 * pad + 1, dtype=jnp.int32)
    return offsets, jax.random.bernoulli(k_flip, 0.5, (batch,))


def crop_flip(images: Shaped[Array, "b h w c"], offsets: Int[Array, "b 2"], flips: Bool[Array, " b"],
              pad: int = 4) -> Shaped[Array, "b h w c"]:
    """Zero-pads by `pad`, crops back to h x w at `offsets` (row, column), mirrors where `flips`."""
    _, h, w, c = images.shape
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))

    def one(img, off, flip):
        out = jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, c))
        return jnp.where(flip, out[:, ::-1], out)
    return jax.vmap(one)(padded, offsets, flips)


def augment(key: jax.Array, images: Shaped[Array, "b h w c"], pad: int = 4) -> Float[Array, "b h w c"]:
    """Standard CIFAR training augmentation, on device: random crop of the image zero-padded by 4,
    random horizontal flip (He et al. 2016, Sec. 4.2), then `normalize`.

    Padding is in pixel space (value 0, black) before normalising, as torchvision's
    `RandomCrop(32, padding=4)` + `Normalize` does. Jittable (shapes are static) and deterministic
    for a key; per-step keys by `jax.random.fold_in(key, step)`.

    Args:
        key: PRNG key.
        images: pixels in [0, 255], uint8 or float, [B, H, W, C].
        pad: padding / maximum shift in pixels.
    """
    offsets, flips = crop_flip_params(key, images.shape[0], pad)
    return normalize(crop_flip(jnp.asarray(images), offsets, flips, pad))
