"""The disk cache of compiled code (symgrad/runtime/disk_cache.py): entries, claims, proven
marks, corruption, the per-folder bound; and the CUDA cubin cache built on it.

The LLVM object cache's own tests (loads that crash the process, several processes at once)
are in test_jit.py.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from symgrad.runtime import cuda_compile, disk_cache, jit
from symgrad.runtime.disk_cache import DiskCache

needs_compiler = pytest.mark.skipif(cuda_compile.compiler() is None,
                                    reason="no CUDA compiler (NVRTC or nvcc) installed")


@pytest.fixture
def root(tmp_path):
    """A private cache directory, the default bound, empty cubin memory cache."""
    disk_cache.set_cache_dir(tmp_path)
    cuda_compile.clear_cache(disk=False)
    yield tmp_path
    cuda_compile.clear_cache(disk=False)
    disk_cache.set_cache_dir(None)
    disk_cache.set_cache_max_bytes(None)


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def parts_of(parts: dict[str, bytes]) -> tuple[bytes, bytes]:
    return parts["a"], parts["b"]


CACHE = DiskCache("things", "test-things 1", ".thing", ("a", "b"))


def test_an_entry_is_claimed_on_its_first_load_then_proven(root):
    CACHE.store("x1", {"a": b"alpha", "b": b""})
    assert names(root / "things") == ["x1.thing"]
    seen = []

    def use(parts):  # what the loader sees, while it runs
        seen.append(names(root / "things"))
        return parts_of(parts)
    assert CACHE.load("x1", use) == (b"alpha", b"")
    [claimed] = seen[0]
    assert claimed.startswith(f"x1.loading-{os.getpid()}-")
    assert names(root / "things") == ["x1.ok.thing"]
    assert CACHE.load("x1", use) == (b"alpha", b"")  # proven: loaded where it is
    assert seen[1] == ["x1.ok.thing"]
    CACHE.store("x1", {"a": b"other", "b": b""})  # a proven entry is not overwritten
    assert names(root / "things") == ["x1.ok.thing"]
    assert CACHE.load("missing", use) is None


def test_reading_without_a_claim_leaves_a_new_entry_new(root):
    CACHE.store("x1", {"a": b"alpha", "b": b"beta"})
    assert CACHE.load("x1", parts_of, claim=False) == (b"alpha", b"beta")
    assert names(root / "things") == ["x1.thing"]


@pytest.mark.parametrize("damage", ["flipped", "truncated", "magic", "header", "empty"])
def test_a_corrupt_entry_is_never_used_and_is_deleted(root, damage):
    CACHE.store("x1", {"a": b"alpha" * 20, "b": b"beta"})
    path = root / "things" / "x1.thing"
    data = path.read_bytes()
    path.write_bytes({"flipped": data[:-3] + bytes([data[-3] ^ 4]) + data[-2:],
                      "truncated": data[:-1],
                      "magic": data.replace(b"test-things 1", b"test-things 2"),
                      "header": data.replace(b'"a": 100', b'"a": 99'),
                      "empty": b""}[damage])
    used = []
    assert CACHE.load("x1", used.append) is None
    assert used == [] and names(root / "things") == []


def test_an_entry_its_loader_rejects_is_deleted(root):
    def refuse(parts):
        raise RuntimeError("the loader refuses it")
    for claim in (True, False):
        CACHE.store("x1", {"a": b"alpha", "b": b""})
        assert CACHE.load("x1", refuse, rejects=(RuntimeError,), claim=claim) is None
        assert names(root / "things") == []
    CACHE.store("x1", {"a": b"alpha", "b": b""})
    CACHE.load("x1", parts_of)
    assert CACHE.load("x1", refuse, rejects=(RuntimeError,)) is None  # proven, then refused
    assert names(root / "things") == []
    CACHE.store("x1", {"a": b"alpha", "b": b""})
    with pytest.raises(RuntimeError):  # not among rejects: raised
        CACHE.load("x1", refuse)


def test_a_dead_process_claim_is_deleted_by_the_next_write(root):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder = root / "things"
    folder.mkdir()
    host = disk_cache._HOST
    orphan = folder / f"x1.loading-{dead.pid}-{host}-0000"
    mine = folder / f"x2.loading-{os.getpid()}-{host}-0000"
    stale = folder / f"x3.loading-{os.getpid()}-otherhost-0000"
    for path in (orphan, mine, stale):
        path.write_bytes(b"claimed")
    old = time.time() - 2 * disk_cache._CLAIM_MAX_AGE
    os.utime(stale, (old, old))
    CACHE.store("x4", {"a": b"", "b": b""})  # this process's first write to the folder lists it
    assert names(folder) == [mine.name, "x4.thing"]


def test_each_folder_is_bounded_least_recently_used_first(root):
    """A bound of 3.5 entries keeps 3 per folder: a write past it deletes the entry used longest
    ago (a load counts as a use), down to 90%; another folder's entries are not counted."""
    other = DiskCache("others", "test-others 1", ".other", ("a",))
    payload = {"a": b"x" * 1000, "b": b""}
    CACHE.store("e0", payload)
    size = (root / "things" / "e0.thing").stat().st_size
    disk_cache.set_cache_max_bytes(size * 7 // 2)
    for i in range(4):
        other.store(f"o{i}", {"a": b"y" * 1000})

    def age(*order: str) -> None:  # mtimes in this order, long ago (coarse mtimes tie)
        for rank, name in enumerate(order):
            [path] = (root / "things").glob(f"{name}.*")
            os.utime(path, (time.time() - 1000 + rank,) * 2)

    for i in (1, 2):
        CACHE.store(f"e{i}", payload)
    age("e0", "e1", "e2")
    assert CACHE.load("e0", parts_of) is not None  # claimed, proven: the most recent
    CACHE.store("e3", payload)
    assert names(root / "things") == ["e0.ok.thing", "e2.thing", "e3.thing"]
    age("e0", "e2", "e3")
    assert CACHE.load("e0", parts_of) is not None  # proven: touched
    CACHE.store("e4", payload)
    assert names(root / "things") == ["e0.ok.thing", "e3.thing", "e4.thing"]
    assert len(names(root / "others")) == 3  # bounded on its own writes only


def test_drop_and_clear(root):
    CACHE.store("x1", {"a": b"a", "b": b""})
    CACHE.load("x1", parts_of)
    CACHE.store("x1", {"a": b"a", "b": b""})  # proven exists: not written
    CACHE.store("x2", {"a": b"a", "b": b""})
    (root / "things" / "unrelated.txt").write_text("kept")
    CACHE.drop("x1")
    assert names(root / "things") == ["unrelated.txt", "x2.thing"]
    CACHE.clear()
    assert names(root / "things") == ["unrelated.txt"]


def test_disk_cache_off_reads_and_writes_nothing(root):
    disk_cache.disable_disk_cache()
    try:
        CACHE.store("x1", {"a": b"a", "b": b""})
        assert CACHE.load("x1", parts_of) is None and CACHE.path("x1") is None
    finally:
        disk_cache.enable_disk_cache()
    assert names(root) == []


def test_the_llvm_cache_shares_the_settings():
    assert jit.set_cache_max_bytes is disk_cache.set_cache_max_bytes
    assert jit.cache_dir is disk_cache.cache_dir and jit.set_cache_dir is disk_cache.set_cache_dir


# --- the cubin cache --------------------------------------------------------------------------

def kernel(i: int) -> str:
    return f'extern "C" __global__ void k(float* x) {{ x[0] = {i}.0f; }}\n'


def cubin_files(root: Path) -> list[str]:
    return names(root / "cuda")


def driver_check(cubin: bytes) -> bytes:
    """What a driver checks first on loading a cubin: an ELF64 file for a CUDA device (EM_CUDA)
    whose section headers and sections lie inside it; it raises otherwise. (The GPU's
    driver, where there is one, is tested in test_cuda_runtime.py.)"""
    machine, = struct.unpack_from("<H", cubin, 18)
    shoff, = struct.unpack_from("<Q", cubin, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", cubin, 0x3A)
    if cubin[4] != 2 or machine != 190 or shoff + shnum * shentsize > len(cubin):
        raise RuntimeError("CUDA driver call cuModuleLoadData failed: CUDA_ERROR_INVALID_IMAGE")
    for i in range(shnum):
        kind, = struct.unpack_from("<I", cubin, shoff + i * shentsize + 4)
        offset, size = struct.unpack_from("<QQ", cubin, shoff + i * shentsize + 24)
        if kind != 8 and offset + size > len(cubin):  # 8: SHT_NOBITS
            raise RuntimeError("CUDA driver call cuModuleLoadData failed: "
                               "CUDA_ERROR_INVALID_IMAGE")
    return cubin


@needs_compiler
def test_cubins_come_back_from_disk_without_compiling(root):
    first = cuda_compile.compile_cubin(kernel(1), "sm_80")
    [name] = cubin_files(root)
    assert name.endswith(".cubin") and "sm_80" in name
    count = cuda_compile.compile_count
    cuda_compile.clear_cache(disk=False)
    assert cuda_compile.compile_cubin(kernel(1), "sm_80") == first
    assert cuda_compile.compile_count == count
    assert cubin_files(root) == [name]  # compile_cubin loads nothing, so claims nothing
    cuda_compile.clear_cache()
    assert cubin_files(root) == []


@needs_compiler
@pytest.mark.parametrize("damage", ["flipped", "not-elf"])
def test_a_corrupt_cubin_entry_is_compiled_again(root, damage):
    good = cuda_compile.compile_cubin(kernel(2), "sm_80")
    [name] = cubin_files(root)
    path = root / "cuda" / name
    data = path.read_bytes()
    path.write_bytes(data[:-9] + bytes([data[-9] ^ 1]) + data[-8:] if damage == "flipped" else
                     cuda_compile._disk.encode({"cubin": b"\0ELF" + good[4:]}))
    cuda_compile.clear_cache(disk=False)
    count = cuda_compile.compile_count
    assert cuda_compile.compile_cubin(kernel(2), "sm_80") == good
    assert cuda_compile.compile_count == count + 1
    assert path.read_bytes() == data  # rewritten good


@needs_compiler
def test_a_cubin_the_driver_rejects_is_dropped_and_compiled_again(root):
    """A checksummed entry whose cubin the driver refuses: deleted, compiled again, loaded;
    the new entry is claimed by the next process's load and marked proven."""
    good = cuda_compile.compile_cubin(kernel(3), "sm_90")
    [name] = cubin_files(root)
    path = root / "cuda" / name
    far = bytearray(good)
    struct.pack_into("<Q", far, 0x28, 1 << 40)  # e_shoff: the section headers far away
    path.write_bytes(cuda_compile._disk.encode({"cubin": bytes(far)}))
    cuda_compile.clear_cache(disk=False)  # a new process
    count, seen = cuda_compile.compile_count, []

    def load(cubin: bytes) -> bytes:
        seen.append(cubin)
        return driver_check(cubin)
    assert cuda_compile.load_cubin(kernel(3), "sm_90", load) == good
    assert seen == [bytes(far), good] and cuda_compile.compile_count == count + 1
    assert cubin_files(root) == [name]
    assert cuda_compile._disk.decode(path.read_bytes())["cubin"] == good

    cuda_compile.clear_cache(disk=False)  # the next process: claims, loads, proves
    assert cuda_compile.load_cubin(kernel(3), "sm_90", load) == good
    assert cubin_files(root) == [name.replace(".cubin", ".ok.cubin")]
    assert cuda_compile.load_cubin(kernel(3), "sm_90", load) == good  # memory, trusted
    assert cuda_compile.compile_count == count + 1 and len(seen) == 4


@needs_compiler
def test_a_cubin_read_by_compile_cubin_reaches_the_driver_only_through_a_claim(root):
    """``f.cubin(arch)`` read a (driver-rejected) entry into memory before the first load:
    the load still claims the entry, so the rejection drops it and the source is compiled."""
    good = cuda_compile.compile_cubin(kernel(5), "sm_80")
    [name] = cubin_files(root)
    far = bytearray(good)
    struct.pack_into("<Q", far, 0x28, 1 << 40)
    (root / "cuda" / name).write_bytes(cuda_compile._disk.encode({"cubin": bytes(far)}))
    cuda_compile.clear_cache(disk=False)
    assert cuda_compile.compile_cubin(kernel(5), "sm_80") == far  # checksummed, an ELF file
    assert cuda_compile.load_cubin(kernel(5), "sm_80", driver_check) == good
    assert cuda_compile.compile_cubin(kernel(5), "sm_80") == good
    assert cuda_compile._disk.decode((root / "cuda" / name).read_bytes())["cubin"] == good


@needs_compiler
def test_a_cubin_compiled_here_that_the_driver_rejects_raises(root):
    def refuse(cubin: bytes) -> None:
        raise RuntimeError("CUDA driver call cuModuleLoadData failed: CUDA_ERROR_NO_BINARY")
    count = cuda_compile.compile_count
    with pytest.raises(RuntimeError, match="CUDA_ERROR_NO_BINARY"):
        cuda_compile.load_cubin(kernel(4), "sm_80", refuse)
    with pytest.raises(RuntimeError, match="CUDA_ERROR_NO_BINARY"):  # from memory: raised
        cuda_compile.load_cubin(kernel(4), "sm_80", refuse)
    assert cuda_compile.compile_count == count + 1


@needs_compiler
def test_the_cubin_folder_is_bounded_least_recently_used_first(root):
    cuda_compile.compile_cubin(kernel(10), "sm_80")
    [first] = cubin_files(root)
    disk_cache.set_cache_max_bytes((root / "cuda" / first).stat().st_size * 5 // 2)
    cuda_compile.compile_cubin(kernel(11), "sm_80")
    [second] = set(cubin_files(root)) - {first}
    old = time.time() - 1000
    os.utime(root / "cuda" / first, (old, old))  # 10 before 11 (coarse mtimes tie)
    os.utime(root / "cuda" / second, (old + 1, old + 1))
    cuda_compile.clear_cache(disk=False)
    cuda_compile.compile_cubin(kernel(10), "sm_80")  # a disk hit: now the most recent
    cuda_compile.compile_cubin(kernel(12), "sm_80")
    kept = [i for i in (10, 11, 12)
            if cuda_compile._name(cuda_compile._key(kernel(i), "sm_80")) + ".cubin"
            in cubin_files(root)]
    assert kept == [10, 12]
