"""BLAS for the contractions of a tile: which GEMM the generated code calls, and where it is.

Generated code calls ``symgrad_sgemm`` / ``symgrad_dgemm``; the JIT binds those names to the
GEMM that SciPy's ``cython_blas`` exports (its OpenBLAS, the one NumPy-level users already
have) before any module is loaded. Without SciPy the lowering writes contractions as loops.
The functions take every argument by reference, in BLAS's column-major convention.
"""

from __future__ import annotations

import ctypes
import functools
import threading

import numpy as np

SYMBOLS = {np.dtype("float32"): ("sgemm", "symgrad_sgemm"),
           np.dtype("float64"): ("dgemm", "symgrad_dgemm")}
# A tile GEMM over fewer terms than this runs as loops instead (``llvm.KernelBuilder._gemm``):
# the softmax regression's 784x10 weight gradient over a tile of 1 sample took ~6 us in
# OpenBLAS's small-matrix kernel, ~1 us as loops; at 8 samples 15 us vs 9 us; at 32 BLAS won
# (25.7 vs 29.3 us for the whole step's kernels; AMD EPYC Zen 4, bench/README.md)
LOOPS_BELOW_K = 16


@functools.lru_cache(maxsize=1)
def addresses() -> dict[str, int]:
    """The generated code's GEMM symbol names and the addresses they stand for (empty
    without SciPy)."""
    try:
        from scipy.linalg import cython_blas
    except ImportError:
        return {}
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype = ctypes.c_void_p
    get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    found = {}
    for blas_name, symbol in SYMBOLS.values():
        capsule = cython_blas.__pyx_capi__[blas_name]
        found[symbol] = get_pointer(capsule, get_name(capsule))
    return found


def available(dtype: np.dtype) -> bool:
    """Whether generated code can call a GEMM for ``dtype``."""
    entry = SYMBOLS.get(np.dtype(dtype))
    return entry is not None and entry[1] in addresses()


_calling = threading.local()


@functools.lru_cache(maxsize=1)
def _thread_setter():
    """OpenBLAS's ``openblas_set_num_threads_local`` in SciPy's OpenBLAS (0.3.27 and later:
    the thread count of the calling thread only), or None."""
    if not addresses():
        return None
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "scipy_openblas" in line
                     and "openblas64_" not in line}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            fn = ctypes.CDLL(path).openblas_set_num_threads_local
        except (OSError, AttributeError):
            continue
        fn.restype, fn.argtypes = ctypes.c_int, [ctypes.c_int]
        return fn
    return None


def set_threads(count: int) -> None:
    """How many threads the calling thread's next GEMM calls may use. symgrad's kernels
    use 1: the pass is split over symgrad's own threads, and OpenBLAS's spinning threads
    inside a one-thread pass ran the 784-256-10 step 20x slower on a busy 2-core machine."""
    setter = _thread_setter()
    if setter is not None and getattr(_calling, "threads", None) != count:
        setter(count)
        _calling.threads = count
