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
- **Cache files are checksummed and their ELF headers bounds-checked** before LLVM sees them:
  llvmlite aborts or segfaults the process on a malformed object file rather than raising.
  The disk cache itself (``disk_cache.py``, folder ``llvm/``) claims a new entry before its
  first load, so an entry that crashes the loader is not loaded again, and keeps the folder
  within its bound, least recently used first.

Options:

- ``prefer_vector_width``: ``"256"`` (default) or ``"512"``, set by
  ``set_prefer_vector_width`` or the ``SYMGRAD_PREFER_VECTOR_WIDTH`` environment variable. It
  is a target option: the x86 feature ``+prefer-256-bit`` or ``-prefer-256-bit`` appended to
  the host features, so the loop and SLP vectorizers pick 256- or 512-bit vectors on AVX-512
  hosts (explicit 512-bit vector IR is legal either way). It is part of every cache key.
- Disk cache (``disk_cache.py``; these names are re-exported here): ``$SYMGRAD_CACHE_DIR`` or
  ``~/.cache/symgrad`` (files under ``llvm/``); ``set_cache_dir``, ``disable_disk_cache`` or
  ``SYMGRAD_NO_DISK_CACHE=1``, ``clear_cache``. At most 256 MiB: ``set_cache_max_bytes`` or
  ``SYMGRAD_CACHE_MAX_BYTES``.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import llvmlite
import llvmlite.binding as llvm
from llvmlite.binding.newpassmanagers import NewPassManager

from symgrad.codegen import blas
from symgrad.runtime.disk_cache import (  # noqa: F401 (re-exported: the documented names)
    DEFAULT_CACHE_MAX_BYTES,
    DiskCache,
    cache_dir,
    cache_max_bytes,
    disable_disk_cache,
    enable_disk_cache,
    set_cache_dir,
    set_cache_max_bytes,
)

VECTOR_WIDTHS = ("256", "512")
MEMORY_CACHE_SIZE = 256  # libraries kept alive by the in-memory cache (least recent dropped)
_FORMAT = "symgrad-llvm-object 1"  # bump when the file layout or the compile pipeline changes
# A new entry: <digest>.sgobj; one that loaded fine: <digest>.ok.sgobj (see disk_cache.py).
_disk = DiskCache("llvm", _FORMAT, ".sgobj", ("object", "ir"))

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
            for name, address in blas.addresses().items():  # before any code is loaded
                llvm.add_symbol(name, address)
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


def compile_module(ir_text: str, symbols: Sequence[str], optimize: bool = True
                   ) -> CompiledLibrary:
    """Parse, verify, optimize (unless ``optimize=False``), generate object code and load
    it; no caching.

    >>> lib = compile_module(ir, ["add"])
    >>> lib.cfunc("add", ctypes.c_double, ctypes.c_double, ctypes.c_double)(1.0, 2.0)
    3.0
    """
    with _lock:
        target = host()
        module = _parse(ir_text, target)
        if optimize:
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
        _check_elf(self.object_code)
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


def _check_elf(code: bytes) -> None:
    """Refuse object code that is not a relocatable ELF file whose section headers lie inside
    it: llvmlite aborts or segfaults on such files instead of raising."""
    def bad(why: str) -> ValueError:
        return ValueError(f"CompiledLibrary: object_code is not an ELF object file ({why})")
    if not code.startswith(b"\x7fELF") or len(code) < 16 or code[4] not in (1, 2) \
            or code[5] not in (1, 2):
        raise bad("no ELF identification")
    order, wide = "<" if code[5] == 1 else ">", code[4] == 2  # EI_DATA, EI_CLASS
    head = struct.Struct(order + ("16sHHIQQQIHHHHHH" if wide else "16sHHIIIIIHHHHHH"))
    section = struct.Struct(order + ("IIQQQQIIQQ" if wide else "IIIIIIIIII"))
    if len(code) < head.size:
        raise bad(f"{len(code)} bytes, shorter than its header")
    fields = head.unpack_from(code)
    kind, shoff, shentsize, shnum, shstrndx = fields[1], fields[6], *fields[11:14]
    if kind != 1:  # ET_REL, what the JIT loads
        raise bad(f"type {kind}, not a relocatable object")
    if shentsize != section.size or not shoff or shoff + section.size > len(code):
        raise bad("no section header table")
    first = section.unpack_from(code, shoff)
    shnum = shnum or first[5]  # 0: the count is in section 0's sh_size (>= 0xff00 sections)
    shstrndx = first[6] if shstrndx == 0xFFFF else shstrndx  # SHN_XINDEX: in its sh_link
    if shoff + shnum * section.size > len(code) or shstrndx >= shnum:
        raise bad("section header table past the end")
    for i in range(shnum):
        _, stype, _, _, offset, size, link, *_ = section.unpack_from(code, shoff + i * section.size)
        if (stype != 8 and offset + size > len(code)) or link >= shnum:  # 8: SHT_NOBITS
            raise bad(f"section {i} past the end")


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


def __getattr__(name: str) -> int:
    """``jit.compile_count``, ``jit.memory_hits``, ``jit.disk_hits``: live counter values."""
    if name in ("compile_count", "memory_hits", "disk_hits"):
        return getattr(stats, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_or_compile(key: str | None, build_ir: Callable[[], str],
                   symbols: Sequence[str], optimize: bool = True) -> CompiledLibrary:
    """The library for ``key``: from memory, else from the disk cache, else compiled.

    ``key`` names the IR that ``build_ir()`` would return (a hash of the graph, say); it is
    combined with the host CPU and features, the vector width, the llvmlite, LLVM and symgrad
    versions. ``build_ir`` is called only when LLVM must run. With ``key=None`` the IR text is
    the key (``build_ir`` is then always called). ``optimize=False`` skips LLVM's -O3
    pipeline (a separate cache entry).

    >>> lib = get_or_compile(graph_hash, lambda: render_llvm(kernels), ["kernel0"])
    """
    with _lock:
        ir_text = build_ir() if key is None else None
        digest = _digest((ir_text if key is None else key) + ("" if optimize else "\0O0"),
                         host())
        library = _memory.get(digest)
        if library is not None:
            _memory.move_to_end(digest)
            for name in symbols:
                library.address(name)
            stats.memory_hits += 1
            return library
        library = _disk.load(digest, lambda parts: CompiledLibrary(
            parts["object"], parts["ir"].decode(), symbols), rejects=(KeyError, RuntimeError))
        if library is not None:
            stats.disk_hits += 1
        else:
            library = compile_module(build_ir() if ir_text is None else ir_text, symbols,
                                     optimize)
            _disk.store(digest, {"object": library.object_code,
                                 "ir": library.optimized_ir.encode()})
        _memory[digest] = library
        while len(_memory) > MEMORY_CACHE_SIZE:
            _memory.popitem(last=False)
        return library


def _digest(key: str, target: HostTarget) -> str:
    from symgrad import __version__  # here: symgrad imports this module while it starts

    parts = (_FORMAT, key, target.triple, target.cpu, target.features, llvmlite.__version__,
             ".".join(map(str, llvm.llvm_version_info)), __version__)
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def clear_cache(disk: bool = True) -> None:
    """Forget every library in memory and, with ``disk``, delete the cached object files."""
    with _lock:
        _memory.clear()
        if disk:
            _disk.clear()
