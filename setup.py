"""Build of distgan's C extension ``distgan._core``.

The BLAS is chosen with the environment variable ``DISTGAN_BLAS``:

* ``scipy-openblas32`` (default): the OpenBLAS that NumPy/SciPy ship, from the
  PyPI package ``scipy-openblas32``; its symbols carry the prefix ``scipy_``.
* ``system``: the system's OpenBLAS (Debian: ``apt-get install libopenblas-dev``),
  plain ``cblas_*`` symbols, found with pkg-config when available.
* ``none``: no BLAS; the core's plain C reference GEMM (slow, for debugging).

``DISTGAN_CFLAGS`` adds compiler flags (for example the sanitizer build).
"""
import glob
import os
import shlex
import subprocess

import numpy
from setuptools import Extension, setup


def _blas_options():
    mode = os.environ.get("DISTGAN_BLAS", "scipy-openblas32").strip().lower()
    if mode in ("scipy-openblas32", "scipy", "default", ""):
        import scipy_openblas32 as sob

        libdir = sob.get_lib_dir()
        return dict(
            include_dirs=[sob.get_include_dir()],
            library_dirs=[libdir],
            libraries=[sob.get_library()],
            define_macros=[("DG_BLAS_SCIPY", "1")],
            # the installed package finds the library next to it in site-packages;
            # the absolute path serves in-place builds
            extra_link_args=["-Wl,-rpath,$ORIGIN/../scipy_openblas32/lib",
                             "-Wl,-rpath," + libdir],
        )
    if mode == "system":
        opts = dict(include_dirs=[], library_dirs=[], libraries=["openblas"],
                    define_macros=[("DG_BLAS_SYSTEM", "1")], extra_link_args=[])
        try:
            cflags = subprocess.run(["pkg-config", "--cflags", "openblas"], check=True,
                                    capture_output=True, text=True).stdout
            libs = subprocess.run(["pkg-config", "--libs", "openblas"], check=True,
                                  capture_output=True, text=True).stdout
        except (OSError, subprocess.CalledProcessError):
            cflags = libs = ""
        for f in shlex.split(cflags):
            if f.startswith("-I"):
                opts["include_dirs"].append(f[2:])
        for f in shlex.split(libs):
            if f.startswith("-L"):
                opts["library_dirs"].append(f[2:])
            elif f.startswith("-l"):
                opts["libraries"] = [f[2:]]
        return opts
    if mode == "none":
        return dict(include_dirs=[], library_dirs=[], libraries=[],
                    define_macros=[], extra_link_args=[])
    raise SystemExit(f"DISTGAN_BLAS={mode!r}: expected 'scipy-openblas32', 'system' or 'none'")


blas = _blas_options()
extra_cflags = shlex.split(os.environ.get("DISTGAN_CFLAGS", ""))

# -O3 vectorises the elementwise loops (GCC's -O2 cost model does not version
# loops for aliasing); -fno-trapping-math lets it turn the selects of
# relu/leaky_relu into vector blends. Neither changes a computed value (no
# -ffast-math: results stay IEEE, NaN and inf propagate as in PyTorch).
ext = Extension(
    "distgan._core",
    sources=sorted(glob.glob("csrc/*.c")),
    depends=sorted(glob.glob("csrc/*.h")),
    include_dirs=[numpy.get_include(), "csrc"] + blas["include_dirs"],
    library_dirs=blas["library_dirs"],
    libraries=blas["libraries"] + ["m"],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_20_API_VERSION")] + blas["define_macros"],
    extra_compile_args=["-O3", "-fno-trapping-math", "-std=c11", "-Wall", "-Wextra"] + extra_cflags,
    extra_link_args=blas["extra_link_args"] + extra_cflags,
)

setup(ext_modules=[ext])
