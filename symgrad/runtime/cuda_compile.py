"""CUDA C to cubin: NVRTC in-process (``cuda-python``) when importable, else ``nvcc``.

Compiling needs no GPU. Code is compiled to a cubin for one ``sm_XX`` (the device's own,
when there is one): PTX from an NVRTC newer than the driver would not load. Cubins are
cached in memory by (source, arch, compiler).

>>> cubin = compile_cubin(source, "sm_90")
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from functools import lru_cache

ARCHS = ("sm_80", "sm_90")  # what CI checks every kernel against
_cache: dict[tuple[str, str], bytes] = {}


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
    """Compile CUDA C to a cubin for ``arch`` (``"sm_80"``, ``"sm_90"``, ...)."""
    if not arch.startswith("sm_"):
        raise ValueError(f"arch must be like 'sm_80', got {arch!r}")
    which = compiler()
    if which is None:
        raise CudaCompileError(
            "no CUDA compiler found: install symgrad[cuda] (NVRTC through cuda-python) or "
            "the CUDA toolkit (nvcc on PATH or under $CUDA_HOME)")
    key = (hashlib.sha256(source.encode()).hexdigest(), f"{arch}-{which}{version()}")
    if key not in _cache:
        path = _disk_path(key)
        if path is not None and path.exists():
            _cache[key] = path.read_bytes()
        else:
            _cache[key] = _nvrtc_compile(source, arch) if which == "nvrtc" else \
                _nvcc_compile(source, arch)
            if path is not None:  # written whole, then renamed: readers never see a part
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_bytes(_cache[key])
                os.replace(tmp, path)
    return _cache[key]


def _disk_path(key: tuple[str, str]):
    """Where a cubin is kept between processes: the LLVM backend's cache directory
    (``SYMGRAD_CACHE_DIR``, ...), under ``cuda/``; ``None`` when the disk cache is off."""
    from symgrad.runtime import jit

    root = jit.cache_dir()
    if root is None:
        return None
    folder = root / "cuda"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{key[0][:40]}-{key[1]}.cubin"


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
