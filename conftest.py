"""Test-session setup: XLA compile settings and a shared compilation cache (below), and the
doctest setup: the examples in `zero_shot`'s modules use the tiny supernet and batch that the
package docstring's example builds; its setup lines (those before `import zero_shot as Z`) run once
per process and fill their namespace, so the setup is written once, where a reader meets it."""

import doctest
import os
import tempfile

import pytest

# A persistent XLA compilation cache shared by the xdist workers (set before any test imports jax):
# many tests compile the same small supernets, and on a CPU compiles dominate the suite (measured on
# test_launcher + test_single_shot with a fresh cache: 343 s -> 254 s). The cache key covers the
# program, the jax/jaxlib versions and the flags, so a hit is the same executable; a fresh clone
# (CI) starts empty. `JAX_COMPILATION_CACHE_DIR=` (empty) turns it off.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), f"hwnas-jax-cache-{getattr(os, 'getuid', lambda: 0)()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
# The tests check values, not speed: XLA:CPU compiles without LLVM's optimisation passes (about 2x
# faster compiles: 83 s -> 44 s on test_single_path's mobile forward/gradient test; numerics are
# unchanged, XLA:CPU does not reassociate floating point without fast-math). Benchmarks and runs do
# not load this file and compile at the default level. Several fake CPU devices serve the
# data-parallel tests. (Both must be set before jax initialises its backend.)
_FLAGS = os.environ.get("XLA_FLAGS", "")
for _flag in ("--xla_backend_optimization_level=0", "--xla_force_host_platform_device_count=4"):
    if _flag.split("=")[0] not in _FLAGS:
        _FLAGS += " " + _flag
os.environ["XLA_FLAGS"] = _FLAGS.strip()

_SETUP: dict = {}


@pytest.fixture(autouse=True)
def _zero_shot_doctest_namespace(request, doctest_namespace):
    if not request.node.name.startswith("zero_shot.") or not isinstance(request.node, pytest.Item):
        return
    if not _SETUP:
        import zero_shot
        examples = doctest.DocTestParser().get_examples(zero_shot.__doc__)
        for ex in examples[: next(i for i, e in enumerate(examples) if "import zero_shot" in e.source)]:
            exec(ex.source, _SETUP)
    doctest_namespace.update({k: v for k, v in _SETUP.items() if not k.startswith("__")})
