"""A CPU stand-in for the CUDA driver, so that the CUDA backend is tested on machines without a
GPU: the CUDA C source is compiled unchanged by g++ with ``emulation.h`` (one OS thread per CUDA
thread, the blocks of a grid one after another) and "device memory" is host memory.

The interface is the one the runtime calls on a real driver: ``load``, ``alloc``, ``free``,
``upload``, ``download``, ``copy``, ``memset``, ``launch``, ``synchronize``. Beyond what a GPU
would check, the emulator checks that copies stay inside live allocations and that kernel
arguments have the size of their parameters and that pointer arguments point into live
allocations; fresh allocations are filled with 0xFF bytes (NaN as float or double), so that
reading memory nobody wrote shows up.
"""

from __future__ import annotations

import atexit
import bisect
import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np

HEADER = Path(__file__).resolve().with_name("emulation.h")
GXX = "g++"
FLAGS = ["-std=c++20", "-O1", "-fPIC", "-pthread",
         # Hidden symbols, no STB_GNU_UNIQUE: the statics (`__shared__`) and globals
         # (blockDim) of two loaded modules must never be merged by the dynamic linker.
         "-fvisibility=hidden", "-fno-gnu-unique"]
ALIGN = 64
ERRLEN = 2048

_PROBE = """
#include <atomic>
#include <barrier>
int main() { float f = 0; std::atomic_ref<float>(f).fetch_add(1.0f);
             std::barrier b(1); b.arrive_and_wait(); return f == 1.0f ? 0 : 1; }
"""


@functools.lru_cache(maxsize=1)
def gxx_available() -> bool:
    """True when g++ is on PATH and compiles C++20 with <barrier> and std::atomic_ref."""
    if shutil.which(GXX) is None:
        return False
    try:
        result = subprocess.run([GXX, "-std=c++20", "-pthread", "-fsyntax-only", "-x", "c++", "-"],
                                input=_PROBE, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0


_process_cache_dir: str | None = None


def _default_cache_dir() -> str:
    global _process_cache_dir
    env = os.environ.get("SYMGRAD_EMU_CACHE")
    if env:
        os.makedirs(env, exist_ok=True)
        return env
    if _process_cache_dir is None:
        _process_cache_dir = tempfile.mkdtemp(prefix="symgrad-emu-")
        atexit.register(shutil.rmtree, _process_cache_dir, ignore_errors=True)
    return _process_cache_dir


def _run_gxx(args: list) -> subprocess.CompletedProcess:
    return subprocess.run([GXX, *FLAGS, *args], capture_output=True, text=True,
                          env={**os.environ, "LC_ALL": "C"})  # plain ASCII quotes in messages


def _replace_atomically(src: str, dst: str) -> None:
    """Copies src to dst so that a concurrent reader (another process) never sees half a file."""
    tmp = f"{dst}.{os.getpid()}.{threading.get_ident()}.tmp"
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _numbered(text: str) -> str:
    return "\n".join(f"{i:5d}  {line}" for i, line in enumerate(text.splitlines(), 1))


def _wrapper(kernels: list) -> str:
    """Per kernel: sg_launch_<name> (unpacks args like cuLaunchKernel) and sg_params_<name>."""
    parts = ["\n// ---- emulator host wrapper ----",
             '#define SG_EXPORT extern "C" __attribute__((visibility("default")))']
    for k in kernels:
        n = k.name
        parts.append(
            f"static_assert(sg_emu::arity({n}) == {len(k.params)}, "
            f'"kernel {n}: the source and the kernel list disagree on the parameter count");\n'
            f"SG_EXPORT int sg_launch_{n}(unsigned grid, unsigned block, void** args, "
            f"char* err, unsigned long errlen) {{\n"
            f"  return sg_emu::launch_c(grid, block, [&] {{ sg_emu::invoke({n}, args); }}, "
            f"err, errlen);\n}}\n"
            f"SG_EXPORT unsigned sg_params_{n}(unsigned* sizes, int* pointer) {{\n"
            f"  return sg_emu::params({n}, sizes, pointer);\n}}")
    return "\n".join(parts) + "\n"


class EmulatedModule(ctypes.CDLL):
    """What ``load`` returns: the compiled library, with the kernels' parameter layouts."""

    def __init__(self, path: str, kernels: list):
        super().__init__(path)
        self.path = path
        self.signatures = {}  # kernel name -> [(parameter size in bytes, is a pointer)]
        for k in kernels:
            sizes, pointer = (ctypes.c_uint * 4096)(), (ctypes.c_int * 4096)()
            count = getattr(self, f"sg_params_{k.name}")(sizes, pointer)
            self.signatures[k.name] = [(sizes[i], bool(pointer[i])) for i in range(count)]
            fn = getattr(self, f"sg_launch_{k.name}")
            fn.argtypes = [ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_char_p,
                           ctypes.c_ulong]
            fn.restype = ctypes.c_int

    def __repr__(self):
        return f"EmulatedModule({self.path!r}, kernels={sorted(self.signatures)})"


class EmulatedDriver:
    name = "emulated (g++ -std=c++20, one OS thread per CUDA thread)"
    block_size = 64  # threads per block the runtime should launch with (2 warps)
    max_blocks = 3  # the runtime launches at most this many blocks per grid
    multiprocessors = 1

    def __init__(self, cache_dir: str | None = None, precompiled_header: bool = True,
                 check_cubins: bool = True):
        self.cache_dir = cache_dir or _default_cache_dir()
        self.precompiled_header = precompiled_header
        self.check_cubins = check_cubins
        self.compile_count = 0  # modules compiled by this driver (cache misses)
        self._buffers: dict[int, tuple[np.ndarray, int]] = {}  # address -> (storage, nbytes)
        self._starts: list[int] = []  # sorted addresses, for interior-pointer lookups
        self._lock = threading.Lock()

    # -- modules ---------------------------------------------------------------------------------
    def load(self, source: str, kernels: list) -> EmulatedModule:
        """Compile and load for the emulator; where NVRTC or nvcc is installed, also compile
        the same source to cubins for every architecture CI checks (a real GPU's compiler
        accepts every kernel the suite runs here: a compile error raises with the source)."""
        if self.check_cubins:
            from symgrad.runtime import cuda_compile

            if cuda_compile.compiler() is not None:
                for arch in cuda_compile.ARCHS:
                    cuda_compile.compile_cubin(source, arch)
        wrapper = _wrapper(kernels)
        text = source + "\n" + wrapper
        key = hashlib.sha256("\0".join([source, wrapper, HEADER.read_text(), " ".join(FLAGS)])
                             .encode()).hexdigest()[:32]
        so = os.path.join(self.cache_dir, f"emu-{key}.so")
        if not os.path.exists(so):
            self._compile(text, so)
        return EmulatedModule(so, kernels)

    def _compile(self, text: str, so: str) -> None:
        self.compile_count += 1
        header = self._header()
        with tempfile.TemporaryDirectory(prefix="sg-emu-build-") as build:
            cpp, out = os.path.join(build, "kernels.cpp"), os.path.join(build, "kernels.so")
            Path(cpp).write_text(text)
            args = ["-shared", "-include", header, cpp, "-o", out]
            result = _run_gxx(args)
            if result.returncode != 0:
                raise RuntimeError(
                    f"g++ failed to compile the CUDA source for the emulator "
                    f"({' '.join([GXX, *FLAGS, *args])}):\n{result.stderr}\n"
                    f"--- source (kernels.cpp) ---\n{_numbered(text)}")
            os.makedirs(os.path.dirname(so), exist_ok=True)
            _replace_atomically(out, so)

    def _header(self) -> str:
        """The header to -include: emulation.h, or a copy of it beside its precompiled .gch.

        Parsing the header is most of a module's compile time (1 s of 1.2 s); the precompiled
        header is built once per cache directory (about 3 s) and makes the later compiles take
        about 0.3 s. When it cannot be built, the plain header is used.
        """
        if not self.precompiled_header:
            return str(HEADER)
        text = HEADER.read_text()
        key = hashlib.sha256("\0".join([text, " ".join(FLAGS)]).encode()).hexdigest()[:16]
        directory = os.path.join(self.cache_dir, f"pch-{key}")
        header, gch = os.path.join(directory, "emulation.h"), os.path.join(directory,
                                                                          "emulation.h.gch")
        if os.path.exists(gch):
            return header
        os.makedirs(directory, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="sg-emu-pch-") as build:
            Path(build, "emulation.h").write_text(text)
            result = _run_gxx(["-x", "c++-header", os.path.join(build, "emulation.h"),
                               "-o", os.path.join(build, "emulation.h.gch")])
            if result.returncode != 0:
                return str(HEADER)
            _replace_atomically(os.path.join(build, "emulation.h"), header)  # header first
            _replace_atomically(os.path.join(build, "emulation.h.gch"), gch)
        return header

    # -- memory ----------------------------------------------------------------------------------
    def alloc(self, nbytes: int) -> int:
        if nbytes < 0:
            raise ValueError(f"alloc of {nbytes} bytes")
        storage = np.full(nbytes + ALIGN, 0xFF, dtype=np.uint8)  # 0xFF..: NaN when read unwritten
        address = (storage.ctypes.data + ALIGN - 1) // ALIGN * ALIGN
        with self._lock:
            self._buffers[address] = (storage, nbytes)
            bisect.insort(self._starts, address)
        return address

    def free(self, address: int) -> None:
        with self._lock:
            if address not in self._buffers:
                raise ValueError(f"free of {address:#x}, which is not a live allocation")
            del self._buffers[address]
            self._starts.remove(address)

    def _check(self, address: int, nbytes: int, what: str) -> None:
        """[address, address + nbytes) must lie inside one live allocation."""
        with self._lock:
            i = bisect.bisect_right(self._starts, address) - 1
            if i >= 0:
                start = self._starts[i]
                size = self._buffers[start][1]
                if address + nbytes <= start + size:
                    return
        raise ValueError(f"{what}: {nbytes} bytes at {address:#x} are not inside a live "
                         f"allocation")

    def upload(self, address: int, array) -> None:
        array = np.ascontiguousarray(array)
        self._check(address, array.nbytes, "upload")
        ctypes.memmove(address, array.ctypes.data, array.nbytes)

    def download(self, address: int, out) -> None:
        if not (out.flags.c_contiguous and out.flags.writeable):
            raise ValueError("download needs a contiguous, writable array")
        self._check(address, out.nbytes, "download")
        ctypes.memmove(out.ctypes.data, address, out.nbytes)

    def copy(self, dst: int, src: int, nbytes: int) -> None:
        self._check(src, nbytes, "copy (source)")
        self._check(dst, nbytes, "copy (destination)")
        ctypes.memmove(dst, src, nbytes)

    def memset(self, address: int, byte: int, nbytes: int) -> None:
        self._check(address, nbytes, "memset")
        ctypes.memset(address, byte, nbytes)

    # -- kernels ---------------------------------------------------------------------------------
    def launch(self, module: EmulatedModule, name: str, grid: int, block: int, args: list) -> None:
        signature = module.signatures.get(name)
        if signature is None:
            raise KeyError(f"kernel {name!r} is not in {module!r}")
        if len(args) != len(signature):
            raise TypeError(f"kernel {name}: {len(args)} arguments for {len(signature)} "
                            f"parameters")
        if grid < 1 or block < 1:
            raise ValueError(f"kernel {name}: launch with grid={grid}, block={block}")
        for i, (arg, (size, is_pointer)) in enumerate(zip(args, signature)):
            if not isinstance(arg, ctypes._SimpleCData) or ctypes.sizeof(arg) != size:
                raise TypeError(f"kernel {name}, argument {i}: {arg!r} does not fit a "
                                f"{size}-byte parameter")
            if is_pointer and arg.value:  # may point one past the end (empty buffers)
                self._check(arg.value, 0, f"kernel {name}, pointer argument {i}")
        argv = (ctypes.c_void_p * max(len(args), 1))(*[ctypes.addressof(a) for a in args])
        err = ctypes.create_string_buffer(ERRLEN)
        status = getattr(module, f"sg_launch_{name}")(grid, block, argv, err, ERRLEN)
        if status != 0:
            message = err.value.decode(errors="replace")
            raise RuntimeError(f"emulated kernel {name} failed: {message}")

    def synchronize(self) -> None:
        pass
