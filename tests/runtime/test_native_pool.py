"""The native thread pool: split passes equal one-thread runs bit for bit, runs never hang,
close/recreate, fork, several Python threads, worker initializers and stacks, Ctrl-C."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import symgrad as sg
from symgrad.runtime import jit
from symgrad.runtime import native_pool as npl
from symgrad.runtime.python_pool import PythonPool

native_only = pytest.mark.skipif(not npl.available(), reason="the native pool needs Linux x86-64")

# Test kernels, all ``void k(ptr table, ptr dims, i64 start, i64 stop)``:
# - slice:  out = table[0] (f64), part = table[1] (f64), rec = table[2] (i64):
#           out[i] = sqrt(i + 1) * 1.25 for i in [start, stop); *part = sum of out over the
#           slice, left to right; rec[0] = start, rec[1] = stop, rec[2] += 1
# - hold:   spins until the i32 at table[0] is not 0, then stores 1 to the i32 at table[1]
# - deep:   alloca stop - start (+ 16) bytes, writes one byte every 4 KiB, stores the count
#           of bytes written to the i64 at table[0]
KERNELS_IR = """
declare double @llvm.sqrt.f64(double)
declare void @llvm.x86.sse2.pause()

define void @slice(ptr %table, ptr %dims, i64 %start, i64 %stop) {
entry:
  %out = load ptr, ptr %table
  %pp = getelementptr ptr, ptr %table, i64 1
  %part = load ptr, ptr %pp
  %rp = getelementptr ptr, ptr %table, i64 2
  %rec = load ptr, ptr %rp
  br label %loop
loop:
  %i = phi i64 [%start, %entry], [%i.next, %body]
  %acc = phi double [0.0, %entry], [%acc.next, %body]
  %more = icmp slt i64 %i, %stop
  br i1 %more, label %body, label %exit
body:
  %i1 = add i64 %i, 1
  %f = sitofp i64 %i1 to double
  %r = call double @llvm.sqrt.f64(double %f)
  %v = fmul double %r, 1.25
  %p = getelementptr double, ptr %out, i64 %i
  store double %v, ptr %p
  %acc.next = fadd double %acc, %v
  %i.next = add i64 %i, 1
  br label %loop
exit:
  store double %acc, ptr %part
  store i64 %start, ptr %rec
  %r1 = getelementptr i64, ptr %rec, i64 1
  store i64 %stop, ptr %r1
  %r2 = getelementptr i64, ptr %rec, i64 2
  %c = load i64, ptr %r2
  %c1 = add i64 %c, 1
  store i64 %c1, ptr %r2
  ret void
}

define void @hold(ptr %table, ptr %dims, i64 %start, i64 %stop) {
entry:
  %flag = load ptr, ptr %table
  %dp = getelementptr ptr, ptr %table, i64 1
  %done = load ptr, ptr %dp
  br label %spin
spin:
  %v = load atomic i32, ptr %flag acquire, align 4
  %go = icmp ne i32 %v, 0
  br i1 %go, label %exit, label %pause
pause:
  call void @llvm.x86.sse2.pause()
  br label %spin
exit:
  store atomic i32 1, ptr %done release, align 4
  ret void
}

define void @deep(ptr %table, ptr %dims, i64 %start, i64 %stop) {
entry:
  %n = sub i64 %stop, %start
  %size = add i64 %n, 16
  %buf = alloca i8, i64 %size, align 16
  br label %loop
loop:
  %i = phi i64 [0, %entry], [%i.next, %loop]
  %p = getelementptr i8, ptr %buf, i64 %i
  store volatile i8 1, ptr %p
  %i.next = add i64 %i, 4096
  %more = icmp slt i64 %i.next, %n
  br i1 %more, label %loop, label %sum
sum:
  %j = phi i64 [0, %loop], [%j.next, %sum]
  %s = phi i64 [0, %loop], [%s.next, %sum]
  %q = getelementptr i8, ptr %buf, i64 %j
  %b = load volatile i8, ptr %q
  %bz = zext i8 %b to i64
  %s.next = add i64 %s, %bz
  %j.next = add i64 %j, 4096
  %again = icmp slt i64 %j.next, %n
  br i1 %again, label %sum, label %exit
exit:
  %out = load ptr, ptr %table
  store i64 %s.next, ptr %out
  ret void
}
"""


@pytest.fixture(scope="module")
def kernels():
    lib = jit.compile_module(KERNELS_IR, ["slice", "hold", "deep"])
    return lib, {name: lib.address(name) for name in ("slice", "hold", "deep")}


class Slices:
    """Buffers for the ``slice`` kernel split ``threads`` ways over n items."""

    def __init__(self, n: int, threads: int):
        self.n, self.threads = n, threads
        self.out = np.full(n, np.nan)
        self.parts = np.full(threads, np.nan)
        self.recs = np.zeros((threads, 3), np.int64)
        self.tables = [(ctypes.c_void_p * 3)(self.out.ctypes.data,
                                             self.parts.ctypes.data + 8 * t,
                                             self.recs.ctypes.data + 24 * t)
                       for t in range(threads)]
        self.addresses = [ctypes.addressof(t) for t in self.tables]
        self.bounds = [n * t // threads for t in range(threads + 1)]
        self.dims = (ctypes.c_int64 * 1)(n)
        self.dims_address = ctypes.addressof(self.dims)

    def run(self, pool, kernel: int) -> None:
        assert pool.run(kernel, self.addresses, self.dims_address, self.bounds)

    def expected_out(self) -> np.ndarray:
        return np.sqrt(np.arange(1, self.n + 1, dtype=np.float64)) * 1.25


def in_time(fn, timeout: float = 60.0) -> None:
    """Run fn on a daemon thread; fail (rather than hang the suite) if it takes too long."""
    error: list[BaseException] = []

    def body():
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - reported below
            error.append(exc)

    t = threading.Thread(target=body, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"still running after {timeout} s (a hang)"
    if error:
        raise error[0]


@native_only
@pytest.mark.parametrize("threads", [1, 2, 3, 4])
def test_split_equals_one_thread(kernels, threads):
    lib, k = kernels
    with npl.NativePool(4) as pool:
        split = Slices(1001, threads)
        split.run(pool, k["slice"])
        one = Slices(1001, 1)
        one.run(pool, k["slice"])
        # every slice ran once, on its own table with its own bounds
        assert split.recs.tolist() == [[split.bounds[t], split.bounds[t + 1], 1]
                                       for t in range(threads)]
        assert np.array_equal(split.out, one.out)
        assert np.array_equal(split.out, split.expected_out())
        # the per-slice partials are those of the slices run one after another here
        alone = Slices(1001, threads)
        for t in range(threads):
            kernel = npl.KERNEL_TYPE(k["slice"])
            kernel(alone.addresses[t], alone.dims_address, alone.bounds[t], alone.bounds[t + 1])
        assert np.array_equal(split.parts, alone.parts)
        again = Slices(1001, threads)
        again.run(pool, k["slice"])
        assert np.array_equal(again.parts, split.parts)  # the same thread count, bit for bit


def real_pass(n: int):
    """A symgrad pass (one output per sample), its kernel address and its buffers."""
    X = sg.input("X", shape=("N", 64))
    f = sg.function(sg.sum(sg.tanh(X) + sg.exp(-X * X), axis=1))
    lf = f._compiled
    # the pass's kernel (any combine kernel after it has nothing to combine: no partials)
    assert lf.buffer_names == ["X", "out0"] and lf.program.kernels[0].name == "pass1"
    x = np.random.default_rng(1).standard_normal((n, 64)).astype(np.float32)
    dims = (ctypes.c_int64 * len(lf.dim_names))(*[1 if d == "#threads" else n
                                                  for d in lf.dim_names])
    return f, lf.library.address(lf.program.kernels[0].name), x, dims


@native_only
def test_real_symgrad_kernel_split(kernels):
    n = 1000
    f, kernel, x, dims = real_pass(n)
    reference = sg.evaluate(f.outputs[0], X=x)
    with npl.NativePool(3) as pool:
        for threads in (1, 2, 3):
            out = np.full(n, np.nan, np.float32)
            tables = [(ctypes.c_void_p * 2)(x.ctypes.data, out.ctypes.data)
                      for _ in range(threads)]
            bounds = [n * t // threads for t in range(threads + 1)]
            pool.run(kernel, [ctypes.addressof(t) for t in tables], ctypes.addressof(dims),
                     bounds)
            assert np.array_equal(out, f(X=x))  # the function's own one-thread result
            np.testing.assert_allclose(out, reference, rtol=1e-5)


@native_only
@pytest.mark.parametrize("spin_us", [0.0, 100.0])
def test_many_runs_never_hang(kernels, spin_us):
    lib, k = kernels
    # spin 0: every wait sleeps in the futex, so every wake-up path runs each time
    pool = npl.NativePool(3, spin_us=spin_us, caller_spin_us=spin_us)
    s = Slices(30, 3)

    def many():
        for i in range(10_000):
            pool.run(k["slice"], s.addresses, s.dims_address, s.bounds)
            if i % 2000 == 1999:
                time.sleep(0.002)  # let the workers fall asleep

    in_time(many)
    assert s.recs[:, 2].tolist() == [10_000] * 3
    assert np.array_equal(s.out, s.expected_out())
    pool.close()


@native_only
def test_close_and_recreate(kernels):
    lib, k = kernels
    before = set(threading.enumerate())
    pool = npl.NativePool(3, spin_us=0.0)
    workers = set(threading.enumerate()) - before
    assert len(workers) == 2 and all(t.daemon for t in workers)
    Slices(10, 3).run(pool, k["slice"])
    time.sleep(0.01)  # asleep in the futex: close must wake them
    in_time(pool.close, 10)
    assert not any(t.is_alive() for t in workers)
    with pytest.raises(RuntimeError, match="closed"):
        Slices(10, 2).run(pool, k["slice"])
    pool.close()  # twice is fine
    with npl.NativePool(3) as again:
        s = Slices(10, 3)
        s.run(again, k["slice"])
        assert np.array_equal(s.out, s.expected_out())


@native_only
def test_one_thread_pool_runs_on_the_caller(kernels):
    lib, k = kernels
    with npl.NativePool(1) as pool:
        s = Slices(7, 1)
        s.run(pool, k["slice"])
        assert s.recs.tolist() == [[0, 7, 1]]


@native_only
def test_bad_arguments(kernels):
    lib, k = kernels
    with pytest.raises(ValueError, match="positive int, got 0"):
        npl.NativePool(0)
    with pytest.raises(ValueError, match="spin times"):
        npl.NativePool(2, spin_us=-1)
    with npl.NativePool(2) as pool:
        s = Slices(9, 3)
        with pytest.raises(ValueError, match="1 to 2 tables and one bound more, got 3"):
            s.run(pool, k["slice"])
        with pytest.raises(ValueError, match="got 2 tables and 2 bounds"):
            pool.run(k["slice"], s.addresses[:2], s.dims_address, s.bounds[:2])
        assert s.recs[:, 2].tolist() == [0, 0, 0]  # nothing ran


@native_only
def test_fork_then_use_in_the_child(kernels):
    lib, k = kernels
    pool = npl.NativePool(2)
    Slices(10, 2).run(pool, k["slice"])
    pid = os.fork()
    if pid == 0:  # the child: a fresh pool behind the same object
        code = 1
        try:
            s = Slices(1000, 2)
            s.run(pool, k["slice"])
            ok = np.array_equal(s.out, s.expected_out()) and s.recs[:, 2].tolist() == [1, 1]
            pool.close()
            code = 0 if ok else 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + 30
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            pytest.fail("the forked child hung")
        time.sleep(0.01)
    assert os.waitstatus_to_exitcode(status) == 0
    s = Slices(100, 2)  # the parent's pool is untouched
    s.run(pool, k["slice"])
    assert np.array_equal(s.out, s.expected_out())
    pool.close()


@native_only
def test_python_threads_at_once(kernels):
    lib, k = kernels
    shared = npl.NativePool(2)
    results: list[bool] = []

    def user(own: bool):
        pool = npl.NativePool(2) if own else shared
        ok = True
        for _ in range(300):
            s = Slices(64, 2)
            s.run(pool, k["slice"])
            ok &= bool(np.array_equal(s.out, s.expected_out()))
            ok &= s.recs.tolist() == [[0, 32, 1], [32, 64, 1]]
        if own:
            pool.close()
        results.append(ok)

    threads = [threading.Thread(target=user, args=(i % 2 == 0,)) for i in range(4)]

    def all_users():
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    in_time(all_users)
    assert results == [True] * 4
    shared.close()


@native_only
def test_busy_pool_waits_or_declines(kernels):
    lib, k = kernels
    flag, done = np.zeros(1, np.int32), np.zeros(1, np.int32)
    table = (ctypes.c_void_p * 2)(flag.ctypes.data, done.ctypes.data)
    dims = (ctypes.c_int64 * 1)(0)
    pool = npl.NativePool(2)
    # slice 0 of a one-slice run holds the pool until the flag is set
    holder = threading.Thread(target=pool.run, args=(
        k["hold"], [ctypes.addressof(table)], ctypes.addressof(dims), [0, 1]))
    holder.start()
    s = Slices(10, 2)
    deadline = time.monotonic() + 10
    while not pool._lock.locked():
        assert time.monotonic() < deadline
        time.sleep(0.001)
    assert pool.run(k["slice"], s.addresses, s.dims_address, s.bounds, blocking=False) is False
    assert s.recs[:, 2].tolist() == [0, 0]
    waiter = threading.Thread(target=s.run, args=(pool, k["slice"]))
    waiter.start()
    time.sleep(0.05)
    assert s.recs[:, 2].tolist() == [0, 0]  # waiting for the lock
    flag[0] = 1
    holder.join(10)
    waiter.join(10)
    assert done[0] == 1 and s.recs[:, 2].tolist() == [1, 1]
    pool.close()


@native_only
@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="signals are delivered to the main thread")
def test_ctrl_c_is_raised_after_every_slice(kernels):
    lib, k = kernels
    # slice 0 (the caller's) holds until the flag is set; slice 1's flag is set already
    flags, done = np.array([0, 1], np.int32), np.zeros(2, np.int32)
    holds = [(ctypes.c_void_p * 2)(flags.ctypes.data + 4 * t, done.ctypes.data + 4 * t)
             for t in range(2)]
    tables = [ctypes.addressof(h) for h in holds]
    dims = (ctypes.c_int64 * 1)(0)
    pool = npl.NativePool(2)

    def interrupt_then_release():
        time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        flags[0] = 1

    helper = threading.Thread(target=interrupt_then_release)
    helper.start()
    with pytest.raises(KeyboardInterrupt):
        pool.run(k["hold"], tables, ctypes.addressof(dims), [0, 1, 1])
    helper.join()
    assert done.tolist() == [1, 1]  # the interrupt waited for every slice to end
    s = Slices(10, 2)
    s.run(pool, k["slice"])  # and the pool still works
    assert s.recs[:, 2].tolist() == [1, 1]
    pool.close()


@native_only
def test_initializer_runs_in_each_worker(kernels):
    seen: list[tuple[int, str]] = []
    lock = threading.Lock()

    def init():
        with lock:
            seen.append((threading.get_ident(), threading.current_thread().name))

    with npl.NativePool(4, initializer=init):
        assert len(seen) == 3 and len({ident for ident, _ in seen}) == 3
        assert threading.get_ident() not in {ident for ident, _ in seen}

    def broken():
        raise OSError("no BLAS here")

    with pytest.raises(RuntimeError, match="initializer .* raised OSError"):
        npl.NativePool(3, initializer=broken)


@native_only
def test_default_initializer_sets_one_blas_thread():
    from symgrad.codegen import blas

    if blas._thread_setter() is None:
        pytest.skip("no OpenBLAS with a thread-local thread count")
    counts: list[object] = []
    with npl.NativePool(2, initializer=lambda: (npl.default_initializer(),
                                                counts.append(blas._calling.threads))):
        pass
    assert counts == [1]


@native_only
def test_workers_have_large_stacks(tmp_path):
    # both slices keep 24 MiB on the stack of whichever thread claims them (a default
    # thread stack is 8 MiB): the workers' must hold it (the caller here is a thread started
    # with a 64 MiB stack); 20 runs, so the spinning worker claims some; in a subprocess,
    # since a stack overflow is a segfault
    script = textwrap.dedent(f"""
        import ctypes, sys, threading
        sys.path.insert(0, {os.getcwd()!r})
        from tests.runtime.test_native_pool import KERNELS_IR
        from symgrad.runtime import jit, native_pool as npl
        lib = jit.compile_module(KERNELS_IR, ["deep"])
        counts = (ctypes.c_int64 * 2)()
        tables = [(ctypes.c_void_p * 1)(ctypes.addressof(counts) + 8 * t) for t in range(2)]
        dims = (ctypes.c_int64 * 1)(0)
        def runs():
            with npl.NativePool(2) as pool:
                for _ in range(20):
                    pool.run(lib.address("deep"), [ctypes.addressof(t) for t in tables],
                             ctypes.addressof(dims), [0, 24 << 20, 48 << 20])
        threading.stack_size(64 << 20)
        caller = threading.Thread(target=runs)
        caller.start()
        caller.join()
        print(counts[0], counts[1])
        """)
    env = dict(os.environ, SYMGRAD_CACHE_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [str((24 << 20) // 4096)] * 2


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_python_pool_same_results(kernels, threads):
    lib, k = kernels
    with PythonPool(3) as pool:
        s = Slices(501, threads)
        s.run(pool, k["slice"])
    assert np.array_equal(s.out, s.expected_out())
    alone = Slices(501, threads)
    for t in range(threads):
        npl.KERNEL_TYPE(k["slice"])(alone.addresses[t], alone.dims_address, alone.bounds[t],
                                    alone.bounds[t + 1])
    assert np.array_equal(s.parts, alone.parts)


def test_new_pool_picks_the_native_one_where_available():
    with npl.new_pool(2) as pool:
        assert isinstance(pool, npl.NativePool if npl.available() else PythonPool)
    assert npl.available() == (sys.platform.startswith("linux") and
                               os.uname().machine == "x86_64")
