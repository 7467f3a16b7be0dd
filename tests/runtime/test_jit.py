"""The LLVM code lifecycle: compile, load, call through ctypes, cache in memory and on disk."""

from __future__ import annotations

import ctypes
import gc
import json
import os
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from symgrad.runtime import jit

ADD_IR = """
define double @add(double %a, double %b) {
  %c = fadd double %a, %b
  ret double %c
}
"""

# float sum(float* x, i64 n): a reassociable reduction, which the loop vectorizer vectorizes.
SUM_IR = """
define float @sum(float* %x, i64 %n) {
entry:
  br label %loop
loop:
  %i = phi i64 [0, %entry], [%i.next, %body]
  %acc = phi float [0.0, %entry], [%acc.next, %body]
  %more = icmp slt i64 %i, %n
  br i1 %more, label %body, label %exit
body:
  %p = getelementptr float, float* %x, i64 %i
  %v = load float, float* %p
  %acc.next = fadd reassoc float %acc, %v
  %i.next = add i64 %i, 1
  br label %loop
exit:
  ret float %acc
}
"""

ADD_TYPES = (ctypes.c_double, ctypes.c_double, ctypes.c_double)
SUM_TYPES = (ctypes.c_float, ctypes.c_void_p, ctypes.c_int64)


@pytest.fixture
def cache(tmp_path):
    """A private disk cache and an empty memory cache; counters from zero."""
    jit.set_cache_dir(tmp_path)
    jit.clear_cache(disk=False)
    jit.stats.reset()
    yield tmp_path
    jit.clear_cache(disk=False)
    jit.set_cache_dir(None)
    jit.set_cache_max_bytes(None)


def cache_files(root: Path) -> list[Path]:
    return sorted((root / "llvm").glob("*")) if (root / "llvm").is_dir() else []


def counting(ir: str):
    """build_ir that records how often it was called."""
    def build():
        build.calls += 1
        return ir
    build.calls = 0
    return build


def test_add_called_through_ctypes_matches_numpy():
    lib = jit.compile_module(ADD_IR, ["add"])
    add = lib.cfunc("add", *ADD_TYPES)
    a, b = np.random.default_rng(0).normal(size=(2, 10))
    assert [add(x, y) for x, y in zip(a, b)] == list(a + b)
    assert lib.object_code.startswith(b"\x7fELF")
    assert "define double @add" in lib.optimized_ir
    assert "add:" in lib.asm


@pytest.mark.parametrize("n", [0, 1, 7, 1000, 4099])
def test_float_loop_sum_matches_numpy(n):
    lib = jit.compile_module(SUM_IR, ["sum"])
    fsum = lib.cfunc("sum", *SUM_TYPES)
    x = np.random.default_rng(n).random(n, dtype=np.float32)
    assert fsum(x.ctypes.data, n) == pytest.approx(float(np.sum(x, dtype=np.float64)),
                                                   rel=1e-5, abs=1e-6)


def test_optimize_vectorizes_the_reduction_loop():
    optimized = jit.optimize(SUM_IR)
    assert "x float>" in optimized  # a vector loop exists
    assert "<16 x float>" not in optimized or jit.prefer_vector_width() == "512"


def test_prefer_vector_width_is_a_target_option():
    with pytest.raises(ValueError, match="prefer_vector_width"):
        jit.set_prefer_vector_width("1024")
    assert jit.host().features.endswith("+prefer-256-bit")
    jit.set_prefer_vector_width(512)
    try:
        assert jit.host().features.endswith("-prefer-256-bit")
        if "+avx512f" in jit.host().features:
            assert "zmm" in jit.compile_module(SUM_IR, ["sum"]).asm
    finally:
        jit.set_prefer_vector_width("256")
    if "+avx512f" in jit.host().features:
        assert "zmm" not in jit.compile_module(SUM_IR, ["sum"]).asm


@pytest.mark.skipif(not jit.host().triple.startswith("x86_64"), reason="x86-64 feature names")
@pytest.mark.parametrize("cpu", ["skylake-avx512", "znver4"])
def test_prefer_vector_width_flag_on_avx512_cpus(cpu):
    """Code generation only (nothing runs), so any x86-64 host checks the AVX-512 choice."""
    def vector_asm(flag: str) -> str:
        tm = jit._target_machine(jit.host().triple, cpu, flag)
        target = jit.HostTarget(jit.host().triple, cpu, flag, "", tm)
        module = jit._parse(SUM_IR, target)
        jit._run_o3(module, target)
        return tm.emit_assembly(module)
    assert "zmm" not in vector_asm("+prefer-256-bit") and "ymm" in vector_asm("+prefer-256-bit")
    assert "zmm" in vector_asm("-prefer-256-bit")


def test_missing_symbol_and_invalid_ir_are_errors():
    with pytest.raises(KeyError, match="nope"):
        jit.compile_module(ADD_IR, ["add", "nope"])
    with pytest.raises(RuntimeError, match="LLVM rejected"):
        jit.compile_module("define double @f( {", ["f"])
    with pytest.raises(RuntimeError, match="LLVM rejected"):  # parses, fails to verify
        jit.compile_module("define i32 @f() {\n  ret i64 0\n}", ["f"])


def test_second_request_is_a_memory_hit(cache):
    build = counting(ADD_IR)
    first = jit.get_or_compile("add-v1", build, ["add"])
    second = jit.get_or_compile("add-v1", build, ["add"])
    assert second is first
    assert (jit.compile_count, jit.memory_hits, jit.disk_hits, build.calls) == (1, 1, 0, 1)
    assert second.cfunc("add", *ADD_TYPES)(1.5, 2.25) == 3.75


def test_key_none_uses_the_ir_text(cache):
    a = jit.get_or_compile(None, lambda: ADD_IR, ["add"])
    assert jit.get_or_compile(None, lambda: ADD_IR, ["add"]) is a
    jit.get_or_compile(None, lambda: ADD_IR + "\n; another module", ["add"])
    assert jit.compile_count == 2


def test_disk_hit_skips_llvm_in_process(cache):
    jit.get_or_compile("sum-v1", lambda: SUM_IR, ["sum"])
    files = cache_files(cache)
    assert len(files) == 1 and files[0].suffix == ".sgobj"  # no temporary files left
    jit.clear_cache(disk=False)
    build = counting(SUM_IR)
    lib = jit.get_or_compile("sum-v1", build, ["sum"])
    assert (jit.compile_count, jit.disk_hits, build.calls) == (1, 1, 0)
    x = np.arange(10, dtype=np.float32)
    assert lib.cfunc("sum", *SUM_TYPES)(x.ctypes.data, 10) == 45.0
    assert "@sum" in lib.optimized_ir and "sum:" in lib.asm


def test_new_process_loads_from_disk_without_compiling(cache):
    jit.get_or_compile("sum-v1", lambda: SUM_IR, ["sum"])
    script = textwrap.dedent("""
        import ctypes, json, time
        import numpy as np
        from symgrad.runtime import jit
        def build():
            raise AssertionError("build_ir called on a disk hit")
        t = time.perf_counter()
        lib = jit.get_or_compile("sum-v1", build, ["sum"])
        seconds = time.perf_counter() - t
        fn = lib.cfunc("sum", ctypes.c_float, ctypes.c_void_p, ctypes.c_int64)
        x = np.arange(100, dtype=np.float32)
        print(json.dumps({"compile_count": jit.compile_count, "disk_hits": jit.disk_hits,
                          "value": fn(x.ctypes.data, 100), "seconds": seconds}))
    """)
    env = {**os.environ, "SYMGRAD_CACHE_DIR": str(cache)}
    env.pop("SYMGRAD_NO_DISK_CACHE", None)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, check=True, cwd=Path(__file__).parents[2])
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["compile_count"] == 0 and result["disk_hits"] == 1
    assert result["value"] == 4950.0
    assert result["seconds"] < 1.0


def test_clear_cache_empties_memory_and_disk(cache):
    jit.get_or_compile("add-v1", lambda: ADD_IR, ["add"])
    assert cache_files(cache)
    jit.clear_cache()
    assert cache_files(cache) == []
    jit.get_or_compile("add-v1", lambda: ADD_IR, ["add"])
    assert jit.compile_count == 2 and jit.disk_hits == 0


@pytest.mark.parametrize("damage", ["garbage", "truncated", "flipped", "empty"])
def test_corrupt_cache_file_is_ignored_and_rewritten(cache, damage):
    jit.get_or_compile("add-v1", lambda: ADD_IR, ["add"])
    [path] = cache_files(cache)
    data = path.read_bytes()
    damaged = {"garbage": b"\x7fELF" + os.urandom(200), "truncated": data[:len(data) // 2],
               "flipped": data[:-10] + bytes([data[-10] ^ 1]) + data[-9:], "empty": b""}
    path.write_bytes(damaged[damage])
    jit.clear_cache(disk=False)
    lib = jit.get_or_compile("add-v1", lambda: ADD_IR, ["add"])
    assert jit.compile_count == 2 and jit.disk_hits == 0
    assert lib.cfunc("add", *ADD_TYPES)(1.0, 2.0) == 3.0
    assert path.read_bytes() == data  # rewritten, and a later process gets a disk hit
    jit.clear_cache(disk=False)
    jit.get_or_compile("add-v1", lambda: ADD_IR, ["add"])
    assert jit.disk_hits == 1


# A child process that loads SUM_IR under "sum-v1" from the cache in $SYMGRAD_CACHE_DIR (here
# the test's), after $READY is written and $GO exists, and prints what happened. A child, because
# loading a bad entry may kill the process.
LOAD_SUM = textwrap.dedent("""
    import ctypes, json, os, sys, time
    import numpy as np
    from symgrad.runtime import jit
    if os.environ.get("READY"):
        open(os.environ["READY"], "w").close()
        while not os.path.exists(os.environ["GO"]):
            time.sleep(0.001)
    lib = jit.get_or_compile("sum-v1", lambda: sys.argv[1], ["sum"])
    fn = lib.cfunc("sum", ctypes.c_float, ctypes.c_void_p, ctypes.c_int64)
    x = np.arange(100, dtype=np.float32)
    print(json.dumps({"compile_count": jit.compile_count, "disk_hits": jit.disk_hits,
                      "value": fn(x.ctypes.data, 100)}))
""")


def start_child(cache: Path, script: str = LOAD_SUM, *args: str, **env: str) -> subprocess.Popen:
    env = {**os.environ, "SYMGRAD_CACHE_DIR": str(cache), **env}
    env.pop("SYMGRAD_NO_DISK_CACHE", None)
    return subprocess.Popen([sys.executable, "-c", script, SUM_IR, *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=Path(__file__).parents[2])


def child_result(child: subprocess.Popen) -> dict:
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def entry_files(cache: Path, key: str) -> list[str]:
    """The names of the files of ``key``'s entry: new, proven (.ok) or claimed (.loading-)."""
    digest = jit._digest(key, jit.host())
    return sorted(p.name for p in (cache / "llvm").glob(f"{digest}*"))


def bad_relocation(code: bytes) -> bytes:
    """The object with its first RELA relocation's type made one x86-64 does not have: a
    well-formed ELF file that LLVM's loader aborts the process on."""
    code = bytearray(code)
    [shoff], (shentsize, shnum) = struct.unpack_from("<Q", code, 0x28), \
        struct.unpack_from("<HH", code, 0x3A)
    for header in range(shoff, shoff + shnum * shentsize, shentsize):
        if struct.unpack_from("<I", code, header + 4)[0] == 4:  # SHT_RELA
            [first] = struct.unpack_from("<Q", code, header + 24)  # sh_offset
            [info] = struct.unpack_from("<Q", code, first + 8)
            struct.pack_into("<Q", code, first + 8, (info & ~0xFFFFFFFF) | 0xFF)
            return bytes(code)
    raise AssertionError("the object has no RELA section")


@pytest.mark.skipif(not jit.host().triple.startswith("x86_64"), reason="x86-64 relocations")
def test_entry_that_crashes_the_loader_is_replaced(cache):
    """A checksummed entry whose object code kills the process that loads it: the next
    process compiles again and writes a good entry instead of crashing too."""
    jit.get_or_compile("sum-v1", lambda: SUM_IR, ["sum"])
    [path] = cache_files(cache)
    parts = jit._disk.decode(path.read_bytes())
    code = parts["object"]
    path.write_bytes(jit._disk.encode({**parts, "object": bad_relocation(code)}))

    first = start_child(cache)
    out, err = first.communicate(timeout=120)
    assert first.returncode != 0 and not out, (first.returncode, out)  # llvmlite aborts
    assert "LLVM ERROR" in err
    assert entry_files(cache, "sum-v1") == [  # it claimed the entry before loading it
        p.name for p in cache_files(cache) if f".loading-{first.pid}-" in p.name]

    second = child_result(start_child(cache))
    assert second == {"compile_count": 1, "disk_hits": 0, "value": 4950.0}
    assert entry_files(cache, "sum-v1") == [path.name]  # the orphaned claim was deleted
    assert jit._disk.decode(path.read_bytes())["object"] != bad_relocation(code)

    third = child_result(start_child(cache))  # the new entry loads, and is marked proven
    assert third == {"compile_count": 0, "disk_hits": 1, "value": 4950.0}
    assert entry_files(cache, "sum-v1") == [path.name.replace(".sgobj", ".ok.sgobj")]


REFUSE_MALFORMED = textwrap.dedent("""
    import ctypes, json, struct, sys
    from symgrad.runtime import jit
    ADD_IR = sys.argv[2]
    lib = jit.get_or_compile("add-v1", lambda: ADD_IR, ["add"])
    good, ir = lib.object_code, lib.optimized_ir
    path = jit._disk.path(jit._digest("add-v1", jit.host()))
    far = bytearray(good)
    struct.pack_into("<Q", far, 0x28, 1 << 40)  # e_shoff: the section headers far away
    results = []
    for damaged in (good[:len(good) // 2], bytes(far), b"\\x7fELF" + bytes(range(200))):
        path.write_bytes(jit._disk.encode({"object": damaged, "ir": ir.encode()}))  # valid sum
        jit.clear_cache(disk=False)
        lib = jit.get_or_compile("add-v1", lambda: ADD_IR, ["add"])
        add = lib.cfunc("add", ctypes.c_double, ctypes.c_double, ctypes.c_double)
        results.append([add(1.0, 2.0), jit._disk.decode(path.read_bytes())["object"] == good])
    try:
        jit.CompiledLibrary(b"\\x7fELF\\x02\\x01" + bytes(100), "", ["add"])
    except ValueError as exc:
        results.append(str(exc))
    print(json.dumps({"compile_count": jit.compile_count, "results": results}))
""")


def test_malformed_object_with_a_valid_checksum_is_refused_without_crashing(cache):
    """Object code whose ELF headers point past its end is refused before LLVM sees it
    (llvmlite segfaults or aborts on it): compiled again, the entry rewritten."""
    result = child_result(start_child(cache, REFUSE_MALFORMED, ADD_IR))
    assert result == {"compile_count": 4, "results": [[3.0, True]] * 3 + [
        "CompiledLibrary: object_code is not an ELF object file (type 0, not a relocatable "
        "object)"]}


def test_processes_loading_a_new_entry_at_once_all_get_it(cache):
    """Several processes load the same new entry at the same moment: one claims it, the others
    compile; every result is right and the entry ends proven, loaded without compiling."""
    jit.get_or_compile("sum-v1", lambda: SUM_IR, ["sum"])
    jit.clear_cache(disk=False)
    go, ready = cache / "go", [cache / f"ready-{i}" for i in range(3)]
    children = [start_child(cache, READY=str(r), GO=str(go)) for r in ready]
    deadline = time.monotonic() + 60
    while not all(r.exists() for r in ready) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    results = [child_result(child) for child in children]
    assert all(r["value"] == 4950.0 and r["compile_count"] + r["disk_hits"] == 1
               for r in results), results
    assert sum(r["disk_hits"] for r in results) >= 1  # the first claim always wins
    [proven] = [n for n in entry_files(cache, "sum-v1") if n.endswith(".ok.sgobj")]
    assert not [n for n in entry_files(cache, "sum-v1") if ".loading-" in n]
    lib = jit.get_or_compile("sum-v1", lambda: SUM_IR, ["sum"])
    assert (jit.compile_count, jit.disk_hits) == (1, 1)
    x = np.arange(10, dtype=np.float32)
    assert lib.cfunc("sum", *SUM_TYPES)(x.ctypes.data, 10) == 45.0


def add_ir(i: int) -> str:
    return ADD_IR.replace("fadd double %a, %b", f"fadd double %a, {i}.0")


def test_disk_cache_evicts_least_recently_used_past_the_bound(cache):
    """A bound of 4.5 entries keeps 4: each write past it deletes the entry used longest ago,
    and a disk hit (new or proven entry) makes an entry the most recent."""
    def compile_add(i: int) -> None:
        lib = jit.get_or_compile(f"add-{i}", lambda: add_ir(i), ["add"])
        assert lib.cfunc("add", *ADD_TYPES)(1.0, 0.0) == 1.0 + i
        assert sum(p.stat().st_size for p in cache_files(cache)) <= bound

    def age(*order: int) -> None:  # mtimes in this order, long ago (coarse mtimes tie)
        for rank, i in enumerate(order):
            [name] = entry_files(cache, f"add-{i}")
            os.utime(cache / "llvm" / name, (time.time() - 1000 + rank,) * 2)

    def kept() -> list[int]:
        return [i for i in range(1, 8) if entry_files(cache, f"add-{i}")]

    def hit(i: int) -> None:
        jit.clear_cache(disk=False)
        hits = jit.disk_hits
        compile_add(i)
        assert jit.disk_hits == hits + 1

    jit.get_or_compile("add-1", lambda: add_ir(1), ["add"])
    [first] = cache_files(cache)
    bound = first.stat().st_size * 9 // 2
    jit.set_cache_max_bytes(bound)
    for i in (2, 3, 4):
        compile_add(i)
    age(1, 2, 3, 4)
    hit(1)  # a new entry, claimed and marked proven: now the most recent
    compile_add(5)
    compile_add(6)
    assert kept() == [1, 4, 5, 6]
    age(1, 4, 5, 6)
    hit(1)  # a proven entry: touched
    compile_add(7)
    assert kept() == [1, 5, 6, 7]
    assert jit.compile_count == 7


def test_cache_max_bytes_setting(monkeypatch):
    monkeypatch.delenv("SYMGRAD_CACHE_MAX_BYTES", raising=False)
    assert jit.cache_max_bytes() == jit.DEFAULT_CACHE_MAX_BYTES == 256 * 2**20
    monkeypatch.setenv("SYMGRAD_CACHE_MAX_BYTES", "1000000")
    assert jit.cache_max_bytes() == 1_000_000
    jit.set_cache_max_bytes(4096)
    try:
        assert jit.cache_max_bytes() == 4096
    finally:
        jit.set_cache_max_bytes(None)
    assert jit.cache_max_bytes() == 1_000_000
    for bad in ("0", "-5", "64M", "1e6"):
        monkeypatch.setenv("SYMGRAD_CACHE_MAX_BYTES", bad)
        with pytest.raises(ValueError, match=f"SYMGRAD_CACHE_MAX_BYTES.*got '{bad}'"):
            jit.cache_max_bytes()
    for bad in (0, -1, 2.5, True, "100"):
        with pytest.raises(ValueError, match="set_cache_max_bytes: expected a positive"):
            jit.set_cache_max_bytes(bad)


def test_disk_cache_can_be_disabled(cache, monkeypatch):
    jit.disable_disk_cache()
    try:
        assert jit.cache_dir() is None
        jit.get_or_compile("add-v1", lambda: ADD_IR, ["add"])
        assert cache_files(cache) == []
    finally:
        jit.enable_disk_cache()
    monkeypatch.setenv("SYMGRAD_NO_DISK_CACHE", "1")
    jit.get_or_compile("sum-v1", lambda: SUM_IR, ["sum"])
    assert cache_files(cache) == []
    monkeypatch.delenv("SYMGRAD_NO_DISK_CACHE")
    assert jit.cache_dir() == cache


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    jit.set_cache_dir(None)
    monkeypatch.setenv("SYMGRAD_CACHE_DIR", str(tmp_path / "c"))
    assert jit.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("SYMGRAD_CACHE_DIR")
    assert jit.cache_dir() == Path.home() / ".cache" / "symgrad"


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


needs_proc = pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")


@needs_proc
def test_loading_and_dropping_libraries_frees_them():
    """Each library has its own engine; dropping it frees its code (1500 loads, 1-3 ms each)."""
    lib = jit.compile_module(SUM_IR, ["sum"])
    for _ in range(100):
        jit.CompiledLibrary(lib.object_code, lib.optimized_ir, ["sum"])
    gc.collect()
    before = rss_mb()
    for _ in range(1500):
        jit.CompiledLibrary(lib.object_code, lib.optimized_ir, ["sum"])
    gc.collect()
    assert rss_mb() - before < 5  # a shared MCJIT engine kept ~12 KB per library: 18 MB


@pytest.mark.slow
@needs_proc
def test_compiling_thousands_of_modules_does_not_grow_memory():
    """2000 distinct modules compiled, called and dropped: RSS grows by well under 100 MB."""
    def module(i: int) -> str:
        return ADD_IR.replace("fadd double %a, %b", f"fadd double %a, {i}.0")
    for i in range(20):
        jit.compile_module(module(i), ["add"])
    gc.collect()
    before, start = rss_mb(), time.perf_counter()
    for i in range(2000):
        lib = jit.compile_module(module(i), ["add"])
        assert lib.cfunc("add", *ADD_TYPES)(1.0, 0.0) == 1.0 + i
        del lib
    gc.collect()
    growth = rss_mb() - before
    print(f"2000 compiles: {time.perf_counter() - start:.1f} s, RSS +{growth:.1f} MB")
    assert growth < 50  # measured +3 MB; without freeing the pass manager, +109 MB
