"""Shared test fixtures and the error metric used by every numeric test of distgan.

* ``rng``: a seeded ``np.random.default_rng`` -- every test sees the same stream, so a
  failure reproduces exactly.
* ``rel_err(a, b)``: the one error metric of the suite (see its docstring).
* ``torch``: PyTorch imported lazily (skips when missing), pinned to one thread so its
  float32 reductions run in a fixed order.
* ``impl``: the implementation under test, ``distgan.reference`` or ``distgan.ops``.
* ``subprocess_env(**extra)``: the environment for a child Python that must import this
  checkout's distgan.
"""
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:                        # the in-place build of distgan._core lives here
    sys.path.insert(0, ROOT)

SEED = 20240607


def subprocess_env(**extra):
    """``os.environ`` updated with ``extra``, with the repository root first on
    PYTHONPATH (the entries already there kept after it, empty ones dropped: an empty
    entry would put the child's working directory on its path)."""
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join(
        [ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def rel_err(a, b):
    """Normwise max relative error of ``a`` against the trusted value ``b``.

    rel_err(a, b) = max|a - b| / max(max|b|, 1e-30).

    Why normwise and not elementwise: an elementwise relative error |a_i - b_i| / |b_i| is
    meaningless where b_i is near zero -- a conv output or a gradient that happens to be
    1e-9 in float32 carries an absolute rounding error of the size of the LARGEST terms
    summed into it (~1e-7 * max|b|), so its elementwise relative error can be anything. Scaling
    by the largest magnitude measures the error against the precision the computation can
    actually deliver, which is what a float32 tolerance (1e-4 forward, 1e-3 backward) is
    about. The 1e-30 floor only avoids 0/0 when b is identically zero (then any nonzero
    difference is a huge error, as it should be).
    Works for scalars (loss values) and arrays of equal shape.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"rel_err: shapes differ, {a.shape} vs {b.shape}")
    if a.size == 0:
        return 0.0
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return float("inf") if not np.array_equal(a, b, equal_nan=True) else 0.0
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))


def load_impl(name):
    """The module under test: ``"reference"`` -> distgan.reference, ``"ops"`` -> distgan.ops.

    Returns None when distgan.ops (or the compiled distgan._core) does not exist yet;
    any other import error propagates, so a broken ops.py fails loudly instead of skipping.
    Set DISTGAN_REQUIRE_OPS=1 to turn the missing module into an error too.
    """
    if name == "reference":
        import distgan.reference as mod
        return mod
    if name == "ops":
        try:
            import distgan.ops as mod
        except ModuleNotFoundError as e:
            if os.environ.get("DISTGAN_REQUIRE_OPS") or e.name not in ("distgan.ops",
                                                                       "distgan._core"):
                raise
            return None
        return mod
    raise ValueError(f"unknown implementation {name!r}")


def load_core():
    """distgan._core, or None when it has not been built yet."""
    try:
        import distgan._core as core
    except ModuleNotFoundError as e:
        if os.environ.get("DISTGAN_REQUIRE_OPS") or e.name != "distgan._core":
            raise
        return None
    return core


@pytest.fixture
def rng():
    """A freshly seeded generator per test (same seed everywhere: failures reproduce)."""
    return np.random.default_rng(SEED)


@pytest.fixture(scope="session")
def torch():
    """torch, imported only by the tests that need it, single-threaded for determinism."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    return torch


@pytest.fixture(params=["reference", "ops"])
def impl(request):
    """Each test taking ``impl`` runs on distgan.reference and on distgan.ops."""
    mod = load_impl(request.param)
    if mod is None:
        pytest.skip("distgan.ops / distgan._core not built yet")
    return mod


@pytest.fixture
def core():
    mod = load_core()
    if mod is None:
        pytest.skip("distgan._core not built yet")
    return mod
