"""Makes the OpenBLAS of the PyPI package scipy-openblas32 loadable by distgan._core.

The extension is linked against ``libscipy_openblas.so`` with an rpath to the
package's folder next to it in site-packages. An editable or in-place build has
no such neighbour (and the rpath of an isolated build environment is gone once
the build ends), so the library is loaded here first, by its full path and with
RTLD_GLOBAL: the dynamic linker then satisfies the extension's dependency with
the already-loaded library of the same soname. Builds against the system's
OpenBLAS (``DISTGAN_BLAS=system``) do not need it; a missing package is not an
error here (the import of ``_core`` reports what is missing).
"""
import ctypes
import os

_loaded = None


def preload():
    """Load scipy-openblas32's shared library once; return its path or None."""
    global _loaded
    if _loaded is not None:
        return _loaded or None
    _loaded = ""
    try:
        import scipy_openblas32 as sob
    except ImportError:
        return None
    libdir = sob.get_lib_dir()
    for name in sorted(os.listdir(libdir)):
        if name.startswith("lib" + sob.get_library()) and ".so" in name:
            path = os.path.join(libdir, name)
            try:
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            except OSError:
                continue
            _loaded = path
            return path
    return None
