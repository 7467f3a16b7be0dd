"""The code lifecycle of the LLVM backend: one host target, compile, load, cache.

    IR text --parse, verify--> module --O3 (new pass manager)--> optimized IR
            --codegen--> object code --load into an engine--> function addresses

Every path ends by loading object code, so a library compiled now and one read back from the
disk cache are the same thing, and a disk hit runs no LLVM pass and no code generation.

>>> lib = get_or_compile(key, build_ir, ["kernel"])   # memory, then disk, then LLVM
>>> fn = lib.cfunc("kernel", None, ctypes.c_void_p, ctypes.c_int64)

Costs on a 2-core znver3: compiling a small loop ~20 ms (half of it O3), loading it from the
disk cache ~2 ms, a memory hit ~10 us, ``.asm`` on first access ~15 ms.

Why it is built this way (measured with llvmlite 0.50 / LLVM 22; see tests/runtime/test_jit.py):

- **One engine per library.** MCJIT cannot unload code: a shared engine that adds and then
  removes modules kept ~12 KB per library; ORC (LLJIT resource trackers) kept ~9 KB per
  library. An MCJIT engine that holds one library's object code frees everything when the
  library is dropped (no measurable growth over thousands of loads) and costs ~1 ms to make.
  The host target machine (CPU, features, O3) is process-wide; each engine gets its own copy
  because an engine owns and deletes its target machine.
- **One LLVM context per compile**, so the types and constants of dropped modules do not pile
  up in llvmlite's global context.
- **The module pass manager is freed by hand.** llvmlite's ``ModulePassManager`` never frees
  itself (its MRO picks the no-op ``ObjectRef._dispose``): ~70 KB lost per compile. The
  ``PassBuilder`` still loses ~2 KB per compile (its instrumentation callbacks are never
  deleted by llvmlite) and cannot be reused (each run leaves callbacks to a dead object).
- **Cache files are checksummed** before LLVM sees them: llvmlite crashes the process on a
  malformed object file.

Options:

- ``prefer_vector_width``: ``"256"`` (default) or ``"512"``, set by
  ``set_prefer_vector_width`` or the ``SYMGRAD_PREFER_VECTOR_WIDTH`` environment variable. It
  is a target option: the x86 feature ``+prefer-256-bit`` or ``-prefer-256-bit`` appended to
  the host features, so the loop and SLP vectorizers pick 256- or 512-bit vectors on AVX-512
  hosts (explicit 512-bit vector IR is legal either way). It is part of every cache key.
- Disk cache: ``$SYMGRAD_CACHE_DIR`` or ``~/.cache/symgrad`` (files under ``llvm/``);
  ``set_cache_dir``, ``disable_disk_cache`` or ``SYMGRAD_NO_DISK_CACHE=1``, ``clear_cache``.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import llvmlite
import llvmlite.binding as llvm
from llvmlite.binding.newpassmanagers import NewPassManager

VECTOR_WIDTHS = ("256", "512")
MEMORY_CACHE_SIZE = 256  # libraries kept alive by the in-memory cache (least recent dropped)
_FORMAT = "symgrad-llvm-object 1"  # bump when the file layout or the compile pipeline changes
_MAGIC = _FORMAT.encode() + b"\n"
_SUFFIX = ".sgobj"

# Guards the host, the caches and the shared target machine (codegen is not thread-safe).
_lock = threading.RLock()


# --- the host target ------------------------------------------------------------------------

@dataclass(frozen=True)
class HostTarget:
    """The machine code target: this CPU, its features, O3, a JIT-friendly code model."""

    triple: str
    cpu: str
    features: str  # host features plus the prefer-vector-width choice
    prefer_vector_width: str
    target_machine: Any = field(repr=False, compare=False)

    @property
    def data_layout(self) -> str:
        return str(self.target_machine.target_data)

    def new_target_machine(self) -> Any:
        """A fresh target machine with these settings (an MCJIT engine takes ownership of one)."""
        return _target_machine(self.triple, self.cpu, self.features)


def _target_machine(triple: str, cpu: str, features: str) -> Any:
    """O3, ``jit=True`` and the JIT default code model (large on x86-64): the engine's
    allocator may place code and constants anywhere in memory."""
    return llvm.Target.from_triple(triple).create_target_machine(
        cpu=cpu, features=features, opt=3, reloc="default", codemodel="jitdefault", jit=True)


_host: HostTarget | None = None
_prefer_vector_width = os.environ.get("SYMGRAD_PREFER_VECTOR_WIDTH", "256")


def host() -> HostTarget:
    """The process-wide host target, created on first use."""
    global _host
    with _lock:
        if _host is None:
            llvm.initialize_native_target()  # (llvm.initialize() raises in llvmlite 0.50)
            llvm.initialize_native_asmprinter()
            width = _check_width(_prefer_vector_width)
            triple, cpu = llvm.get_process_triple(), llvm.get_host_cpu_name()
            flag = ("" if not triple.startswith(("x86_64", "i386", "i686"))  # an x86 feature
                    else "+prefer-256-bit" if width == "256" else "-prefer-256-bit")
            features = ",".join(f for f in (llvm.get_host_cpu_features().flatten(), flag) if f)
            _host = HostTarget(triple, cpu, features, width,
                               _target_machine(triple, cpu, features))
        return _host


def set_prefer_vector_width(width: str | int) -> None:
    """Choose 256- or 512-bit vectors for the vectorizers (takes effect for new compiles).

    >>> set_prefer_vector_width("512")
    """
    global _prefer_vector_width, _host
    width = _check_width(width)
    with _lock:
        if width != _prefer_vector_width:
            _prefer_vector_width, _host = width, None


def prefer_vector_width() -> str:
    """The current vector width preference, ``"256"`` or ``"512"``."""
    return _check_width(_prefer_vector_width)


def _check_width(width: str | int) -> str:
    if str(width) not in VECTOR_WIDTHS:
        raise ValueError(f"prefer_vector_width: expected one of {VECTOR_WIDTHS}, got {width!r}")
    return str(width)


# --- compiling --------------------------------------------------------------------------------

def _parse(ir_text: str, target: HostTarget, verify: bool = True) -> Any:
    """Parse IR into a module of its own context, retargeted at the host."""
    try:
        module = llvm.parse_assembly(ir_text, context=llvm.create_context())
        module.triple = target.triple
        module.data_layout = target.data_layout
        if verify:
            module.verify()
    except RuntimeError as exc:
        raise RuntimeError(f"LLVM rejected the generated IR: {exc}") from exc
    return module


def _run_o3(module: Any, target: HostTarget) -> None:
    """The new pass manager's default O3 pipeline, loop and SLP vectorizers on."""
    tuning = llvm.create_pipeline_tuning_options(speed_level=3)
    tuning.loop_vectorization = True
    tuning.slp_vectorization = True
    # Full unrolling of the fixed-length inner loops (784 features, 10 classes) multiplies
    # code size by ~5 and compile time by ~6 for no measured speed-up; the vectorizer still
    # interleaves its vector loops.
    tuning.loop_unrolling = False
    builder = llvm.create_pass_builder(target.target_machine, tuning)
    passes = builder.getModulePassManager()
    try:
        passes.run(module, builder)
    finally:  # llvmlite would leak it (see the module docstring)
        NewPassManager._dispose(passes)
        passes.detach()


def optimize(module_ir_text: str) -> str:
    """Optimize IR text at O3 for the host (vectorizers on); return the optimized IR text.

    >>> "<8 x float>" in optimize(ir)   # a reassociable float loop, 256-bit vectors
    True
    """
    with _lock:
        target = host()
        module = _parse(module_ir_text, target)
        _run_o3(module, target)
        return str(module)


def compile_module(ir_text: str, symbols: Sequence[str]) -> CompiledLibrary:
    """Parse, verify, optimize, generate object code and load it; no caching.

    >>> lib = compile_module(ir, ["add"])
    >>> lib.cfunc("add", ctypes.c_double, ctypes.c_double, ctypes.c_double)(1.0, 2.0)
    3.0
    """
    with _lock:
        target = host()
        module = _parse(ir_text, target)
        _run_o3(module, target)
        optimized = str(module)
        object_code = target.target_machine.emit_object(module)
        stats.compile_count += 1
        return CompiledLibrary(object_code, optimized, symbols, target)


class CompiledLibrary:
    """Machine code loaded into its own MCJIT engine; freed when the library is dropped.

    Keep the library alive while calling its functions (``cfunc`` ties them to it).
    ``object_code`` is the ELF object, ``optimized_ir`` the IR it was generated from, ``asm``
    the assembly (generated on first access by running code generation again on
    ``optimized_ir``; the same input, so the same code).
    """

    def __init__(self, object_code: bytes, optimized_ir: str, symbols: Sequence[str],
                 target: HostTarget | None = None):
        self.object_code = bytes(object_code)
        self.optimized_ir = optimized_ir
        self.target = target or host()
        if not self.object_code.startswith(b"\x7fELF"):
            raise ValueError("CompiledLibrary: object_code is not an ELF object file")
        with _lock:
            # An engine needs a module: an empty one, in a context that dies with the engine.
            empty = llvm.parse_assembly("", context=llvm.create_context())
            empty.triple = self.target.triple
            self._engine = llvm.create_mcjit_compiler(empty, self.target.new_target_machine())
            self._engine.add_object_file(llvm.ObjectFileRef.from_data(self.object_code))
            self._engine.finalize_object()
        self._addresses: dict[str, int] = {}
        for name in symbols:
            self.address(name)

    def address(self, name: str) -> int:
        """The address of the function ``name``; KeyError if the library does not define it."""
        if name not in self._addresses:
            address = self._engine.get_function_address(name)
            if not address:
                raise KeyError(f"the compiled library defines no function {name!r}")
            self._addresses[name] = address
        return self._addresses[name]

    def cfunc(self, name: str, restype: Any, *argtypes: Any) -> Any:
        """A ctypes function for ``name`` that keeps this library alive.

        >>> lib.cfunc("sum", ctypes.c_double, ctypes.c_void_p, ctypes.c_int64)
        """
        fn = ctypes.CFUNCTYPE(restype, *argtypes)(self.address(name))
        fn.library = self  # the code lives as long as the engine does
        return fn

    @cached_property
    def asm(self) -> str:
        with _lock:
            module = _parse(self.optimized_ir, self.target, verify=False)
            return self.target.target_machine.emit_assembly(module)

    def __repr__(self) -> str:
        names = ", ".join(self._addresses)
        return f"<CompiledLibrary [{names}] {len(self.object_code)} bytes>"


# --- the cache --------------------------------------------------------------------------------

@dataclass
class CacheStats:
    """Counters for tests and benchmarks: LLVM compiles, and hits in memory and on disk."""

    compile_count: int = 0
    memory_hits: int = 0
    disk_hits: int = 0

    def reset(self) -> None:
        self.compile_count = self.memory_hits = self.disk_hits = 0


stats = CacheStats()
_memory: OrderedDict[str, CompiledLibrary] = OrderedDict()
_cache_dir_override: Path | None = None
_disk_enabled = True


def __getattr__(name: str) -> int:
    """``jit.compile_count``, ``jit.memory_hits``, ``jit.disk_hits``: live counter values."""
    if name in ("compile_count", "memory_hits", "disk_hits"):
        return getattr(stats, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_or_compile(key: str | None, build_ir: Callable[[], str],
                   symbols: Sequence[str]) -> CompiledLibrary:
    """The library for ``key``: from memory, else from the disk cache, else compiled.

    ``key`` names the IR that ``build_ir()`` would return (a hash of the graph, say); it is
    combined with the host CPU and features, the vector width, the llvmlite, LLVM and symgrad
    versions. ``build_ir`` is called only when LLVM must run. With ``key=None`` the IR text is
    the key (``build_ir`` is then always called).

    >>> lib = get_or_compile(graph_hash, lambda: render_llvm(kernels), ["kernel0"])
    """
    with _lock:
        ir_text = build_ir() if key is None else None
        digest = _digest(ir_text if key is None else key, host())
        library = _memory.get(digest)
        if library is not None:
            _memory.move_to_end(digest)
            for name in symbols:
                library.address(name)
            stats.memory_hits += 1
            return library
        path = _cache_file(digest)
        library = _read(path, symbols) if path else None
        if library is not None:
            stats.disk_hits += 1
        else:
            library = compile_module(build_ir() if ir_text is None else ir_text, symbols)
            if path:
                _write(path, library)
        _memory[digest] = library
        while len(_memory) > MEMORY_CACHE_SIZE:
            _memory.popitem(last=False)
        return library


def _digest(key: str, target: HostTarget) -> str:
    from symgrad import __version__  # here: symgrad imports this module while it starts

    parts = (_FORMAT, key, target.triple, target.cpu, target.features, llvmlite.__version__,
             ".".join(map(str, llvm.llvm_version_info)), __version__)
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def cache_dir() -> Path | None:
    """Where object code is cached on disk, or None when the disk cache is off."""
    if not _disk_enabled or os.environ.get("SYMGRAD_NO_DISK_CACHE", "") not in ("", "0"):
        return None
    if _cache_dir_override is not None:
        return _cache_dir_override
    env = os.environ.get("SYMGRAD_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "symgrad"


def set_cache_dir(path: str | os.PathLike | None) -> None:
    """Cache object code under ``path`` (and turn the disk cache on); None: the default place.

    >>> set_cache_dir("/tmp/symgrad-cache")
    """
    global _cache_dir_override, _disk_enabled
    with _lock:
        _cache_dir_override = None if path is None else Path(path)
        _disk_enabled = True


def disable_disk_cache() -> None:
    """Stop reading and writing the disk cache (the memory cache stays on)."""
    global _disk_enabled
    with _lock:
        _disk_enabled = False


def enable_disk_cache() -> None:
    """Turn the disk cache back on (``SYMGRAD_NO_DISK_CACHE=1`` still wins)."""
    global _disk_enabled
    with _lock:
        _disk_enabled = True


def clear_cache(disk: bool = True) -> None:
    """Forget every library in memory and, with ``disk``, delete the cached object files."""
    with _lock:
        _memory.clear()
        root = cache_dir()
        if disk and root is not None and (root / "llvm").is_dir():
            for path in (root / "llvm").iterdir():
                if path.suffix == _SUFFIX or path.name.startswith(".tmp-"):
                    path.unlink(missing_ok=True)


def _cache_file(digest: str) -> Path | None:
    root = cache_dir()
    return None if root is None else root / "llvm" / f"{digest}{_SUFFIX}"


def _read(path: Path, symbols: Sequence[str]) -> CompiledLibrary | None:
    """Load a cached library; a missing, corrupt or unloadable file gives None."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    try:
        object_code, optimized_ir = _decode(data)
        return CompiledLibrary(object_code, optimized_ir, symbols)
    except (ValueError, KeyError, RuntimeError):  # corrupt: drop it, compile again
        path.unlink(missing_ok=True)
        return None


def _write(path: Path, library: CompiledLibrary) -> None:
    """Write atomically (a temporary file, then rename); a cache that cannot be written is
    skipped, not an error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(_encode(library.object_code, library.optimized_ir))
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        pass


def _encode(object_code: bytes, optimized_ir: str) -> bytes:
    """``MAGIC``, a JSON header line (sizes, sha256 of the payload), object code, IR."""
    ir = optimized_ir.encode()
    payload = object_code + ir
    header = {"object": len(object_code), "ir": len(ir),
              "sha256": hashlib.sha256(payload).hexdigest()}
    return _MAGIC + json.dumps(header).encode() + b"\n" + payload


def _decode(data: bytes) -> tuple[bytes, str]:
    """Inverse of ``_encode``; ValueError if anything does not match."""
    if not data.startswith(_MAGIC):
        raise ValueError("not a symgrad object cache file")
    line, sep, payload = data[len(_MAGIC):].partition(b"\n")
    try:
        header = json.loads(line)
        sizes = (int(header["object"]), int(header["ir"]))
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, KeyError) as exc:
        raise ValueError("corrupt cache header") from exc
    if (not sep or len(payload) != sum(sizes)
            or hashlib.sha256(payload).hexdigest() != header.get("sha256")):
        raise ValueError("corrupt cache payload")
    return payload[:sizes[0]], payload[sizes[0]:].decode()
