"""CUDA C to cubin: NVRTC in-process (``cuda-python``) when importable, else ``nvcc``.

Compiling needs no GPU. Code is compiled to a cubin for one ``sm_XX`` (the device's own,
when there is one): PTX from an NVRTC newer than the driver would not load. Cubins are
cached in memory and on disk (``disk_cache.py``, folder ``cuda/``: checksummed, bounded,
least recently used first) by (source, arch, compiler and its version).

>>> cubin = compile_cubin(source, "sm_90")                        # no GPU needed
>>> module = load_cubin(source, "sm_90", driver_load)             # what a driver calls

A cubin is loaded by the driver, which may reject it (or, in principle, crash on it), so a
cubin from disk reaches the driver only through ``load_cubin``: a new entry is claimed
before the driver loads it and marked proven after; an entry the driver rejects is deleted
and the source compiled again. ``compile_cubin`` reads entries without claiming them (it
loads nothing).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from functools import lru_cache
from typing import TypeVar

from symgrad.runtime.disk_cache import DiskCache

T = TypeVar("T")
ARCHS = ("sm_80", "sm_90")  # what CI checks every kernel against
_cache: dict[tuple[str, str], bytes] = {}
# Keys whose cubin in _cache was compiled here or loaded by the driver: a driver error on it
# is not the cache's doing. A cubin read from disk by compile_cubin is not in it.
_trusted: set[tuple[str, str]] = set()
# <source hash>-<arch>-<compiler><version>.cubin, .ok.cubin once the driver loaded it
_disk = DiskCache("cuda", "symgrad-cubin 1", ".cubin", ("cubin",))
compile_count = 0  # cubins compiled by NVRTC or nvcc in this process (cache misses)


class CudaCompileError(RuntimeError):
    """The CUDA compiler rejected generated source; the message carries its log and the
    numbered source."""


def numbered(source: str) -> str:
    return "\n".join(f"{i:5d}  {line}" for i, line in enumerate(source.splitlines(), 1))


@lru_cache(maxsize=1)
def _nvrtc():
    try:
        from cuda.bindings import nvrtc
    except ImportError:
        return None
    try:
        nvrtc.nvrtcVersion()
    except Exception:  # the bindings without libnvrtc
        return None
    return nvrtc


def nvcc_path() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
    candidate = os.path.join(home, "bin", "nvcc")
    return candidate if os.access(candidate, os.X_OK) else None


def compiler() -> str | None:
    """``"nvrtc"``, ``"nvcc"``, or ``None`` when neither is available."""
    if _nvrtc() is not None:
        return "nvrtc"
    return "nvcc" if nvcc_path() else None


def compile_cubin(source: str, arch: str = "sm_80") -> bytes:
    """Compile CUDA C to a cubin for ``arch`` (``"sm_80"``, ``"sm_90"``, ...): from memory,
    else from the disk cache, else compiled (and cached)."""
    key = _key(source, arch)
    cubin = _cache.get(key)
    if cubin is None:
        cubin = _disk.load(_name(key), _cubin_of, claim=False)
        if cubin is None:
            return _compile(key, source, arch)
        _cache[key] = cubin
    return cubin


def load_cubin(source: str, arch: str, load: Callable[[bytes], T]) -> T:
    """``load(cubin)`` (the driver's module load) on ``source``'s cubin for ``arch``.

    A cubin from the disk cache that ``load`` raises on is dropped from memory and disk, and
    the source compiled again and loaded (any error of the driver counts: a good entry lost
    to, say, an out-of-memory error costs one compile). An error on a cubin compiled in this
    process, or one the driver loaded before, is raised.
    """
    key = _key(source, arch)
    cubin = _cache.get(key)
    if cubin is not None and key in _trusted:
        return load(cubin)

    def use(parts: dict[str, bytes]) -> tuple[bytes, T]:
        found = _cubin_of(parts)
        return found, load(found)

    loaded = _disk.load(_name(key), use, rejects=(Exception,))
    if loaded is not None:
        _cache[key] = loaded[0]
        _trusted.add(key)
        return loaded[1]
    return load(_compile(key, source, arch))  # (replaces a copy compile_cubin read from disk)


def clear_cache(disk: bool = True) -> None:
    """Forget every cubin in memory and, with ``disk``, delete the cached cubins."""
    _cache.clear()
    _trusted.clear()
    if disk:
        _disk.clear()


def _key(source: str, arch: str) -> tuple[str, str]:
    if not arch.startswith("sm_"):
        raise ValueError(f"arch must be like 'sm_80', got {arch!r}")
    which = compiler()
    if which is None:
        raise CudaCompileError(
            "no CUDA compiler found: install symgrad[cuda] (NVRTC through cuda-python) or "
            "the CUDA toolkit (nvcc on PATH or under $CUDA_HOME)")
    return hashlib.sha256(source.encode()).hexdigest(), f"{arch}-{which}{version()}"


def _name(key: tuple[str, str]) -> str:
    return f"{key[0][:40]}-{key[1]}"


def _cubin_of(parts: dict[str, bytes]) -> bytes:
    cubin = parts["cubin"]
    if not cubin.startswith(b"\x7fELF"):
        raise ValueError("the cached cubin is not an ELF file")
    return cubin


def _compile(key: tuple[str, str], source: str, arch: str) -> bytes:
    """Compile with NVRTC or nvcc; cache in memory (trusted) and on disk."""
    global compile_count
    cubin = _nvrtc_compile(source, arch) if compiler() == "nvrtc" else \
        _nvcc_compile(source, arch)
    compile_count += 1
    _cache[key] = cubin
    _trusted.add(key)
    _disk.store(_name(key), {"cubin": cubin})
    return cubin


@lru_cache(maxsize=1)
def version() -> str:
    """The compiler's CUDA version, ``"13.0"``: part of every cache key, and what the
    driver must support to load its cubins."""
    if _nvrtc() is not None:
        _, major, minor = _nvrtc().nvrtcVersion()
        return f"{major}.{minor}"
    path = nvcc_path()
    if path is None:
        return "none"
    out = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
    found = [w.strip(",") for w in out.split() if w[:1].isdigit() and "." in w]
    return found[0] if found else "unknown"


def _nvrtc_compile(source: str, arch: str) -> bytes:
    nvrtc = _nvrtc()
    err, prog = nvrtc.nvrtcCreateProgram(source.encode(), b"symgrad.cu", 0, [], [])
    _check(nvrtc, err, "nvrtcCreateProgram")
    try:
        opts = [f"--gpu-architecture={arch}".encode(), b"--std=c++17"]
        (result,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        if result != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            err, size = nvrtc.nvrtcGetProgramLogSize(prog)
            log = b" " * size
            nvrtc.nvrtcGetProgramLog(prog, log)
            raise CudaCompileError(f"NVRTC could not compile the generated CUDA C for {arch}:\n"
                                   f"{log.decode(errors='replace').strip()}\n\n"
                                   f"{numbered(source)}")
        err, size = nvrtc.nvrtcGetCUBINSize(prog)
        _check(nvrtc, err, "nvrtcGetCUBINSize")
        cubin = b" " * size
        (err,) = nvrtc.nvrtcGetCUBIN(prog, cubin)
        _check(nvrtc, err, "nvrtcGetCUBIN")
        return bytes(cubin)
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


def _check(nvrtc, err, what: str) -> None:
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise CudaCompileError(f"{what} failed: {err}")


def _nvcc_compile(source: str, arch: str) -> bytes:
    with tempfile.TemporaryDirectory(prefix="symgrad-cu-") as tmp:
        src, out = os.path.join(tmp, "symgrad.cu"), os.path.join(tmp, "symgrad.cubin")
        with open(src, "w") as f:
            f.write(source)
        cmd = [nvcc_path(), "-cubin", f"-arch={arch}", "-std=c++17", "-o", out, src]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise CudaCompileError(f"nvcc could not compile the generated CUDA C for {arch}:\n"
                                   f"{done.stderr.strip()}\n\n{numbered(source)}")
        with open(out, "rb") as f:
            return f.read()


def check_driver_version(driver_version: int) -> None:
    """Raise when the driver (``cuDriverGetVersion``: 12040 is CUDA 12.4) is older than the
    compiler's CUDA major version: it could not load the cubins."""
    major = driver_version // 1000
    ours = version()
    if ours[:1].isdigit() and int(ours.split(".")[0]) > major:
        raise CudaCompileError(
            f"the CUDA compiler here ({compiler()} {ours}) makes cubins the installed driver "
            f"(CUDA {major}.{driver_version % 1000 // 10}) cannot load: install the NVRTC of "
            f"the driver's CUDA version (pip install nvidia-cuda-nvrtc-cu{major}) or a newer "
            "driver")
