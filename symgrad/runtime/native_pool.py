"""A thread pool whose workers wait in machine code: a split pass costs microseconds.

A pass over the batch split n ways runs slice ``t`` of ``kernel(table, dims, start, stop)``
with ``tables[t]``, on whichever thread claims it first. With a Python pool every split pays
a Python round trip per worker (submit, wake, future, wait: tens of microseconds), so only
passes of a millisecond or more were worth splitting. Here each worker is a Python thread
that called the native ``pool_worker`` once (through ctypes, which released the GIL) and
stays in it:

    caller (pool_run)                         worker w (pool_worker, forever)
    pending = n; job = (kernel, tables, ...)  spin on slot[w].gen (pause), a few us,
    claim = run << 32 | n << 16 | 0             then futex-wait on it
    slot[w].gen += 1, w < n - 1  ---------->  claim slices (CAS on claim) and run them
    futex-wake w if it sleeps                   until none is left; pending -= 1 each;
    claim slices and run them                   the last one futex-wakes the caller if
    spin on pending, then futex-wait  <-----    it sleeps
    return

Slices are claimed, not assigned: a worker that wakes late or is not scheduled (a busy
machine, other programs' spinning threads) leaves its slices to the caller, so a split pass
is never much slower than one thread; and since slice t always reads and writes what
``tables[t]`` names (its own partials), the result is the same whichever thread ran it.

No Python runs between the caller's call and its return. On a 2-core znver3 KVM guest
(``bench/native_pool.py``): an empty run on 2 threads ~2 us with the worker spinning (the
ThreadPoolExecutor: ~25 us), ~45 us when it had fallen asleep (this VM's futex wake-up);
a 100 us pass split in two ~55 us, a 1 ms pass ~600 us.

Why it is built this way:

- **Futex, not a condition variable.** The futex syscall (``SYS_futex``, private) is all
  the blocking there is, called through libc's ``syscall`` (bound by name for the JIT):
  no pthread objects to initialise, copy across ``fork`` or destroy.
- **A sleeping flag beside each futex word** (Dekker-style, sequentially consistent): the
  poster pays the wake syscall only when the waiter has said it may sleep.
- **Spin budgets in TSC cycles** (``llvm.readcyclecounter``), calibrated once: the latency
  of ``pause`` differs ten-fold between CPUs. A worker spins ``spin_us`` after each job (a
  training step's next pass comes a few microseconds of Python later); the caller spins
  ``caller_spin_us`` for the others' slices before sleeping. Past ``YIELD_AFTER_US`` a spin
  calls ``sched_yield`` between looks: a pure ``pause`` loop of 50 us made runs ~100 us
  slower on the KVM guest (pause-loop exits deschedule the vCPU), and on a busy machine the
  thread waited for may need the core.
- **Deterministic**: slice ``t`` reads ``tables[t]`` and writes only what that table names,
  whichever thread claims it; the pool adds no arithmetic.
- **Python threads** (not native ones): Python owns their stacks (``STACK_BYTES``, set while
  they start: kernels keep up to a few MiB of tile scratch on the stack), their per-thread
  initializer runs in Python (by default OpenBLAS's thread-local thread count set to 1:
  ``blas.set_threads``), and ``threading`` knows them across ``fork``.

Ctrl-C cannot interrupt a run (no Python runs inside it): the ``KeyboardInterrupt`` is
raised when every slice is done, so no slice is left writing into freed buffers. A kernel
that crashes takes the process down, as on one thread; one that never returns hangs
``run`` (and ``close`` gives up joining its worker after 5 s).

Lifecycle: ``close()`` (also at exit and when the pool is collected) posts a quit to every
worker, wakes it and joins it. After ``os.fork`` the child's pools start fresh workers on
their next ``run`` (the parent's threads do not exist in the child). One ``run`` at a time
per pool: a second Python thread calling ``run`` waits for the first (a lock), or passes
``blocking=False`` and gets ``False`` back (then runs the slices another way).

Only Linux on x86-64 has the native path (``available()``); ``new_pool`` falls back to
``PythonPool``, the ThreadPoolExecutor design with the same ``run``.

>>> pool = new_pool(2)
>>> pool.run(kernel_address, [table0, table1], dims_address, [0, n // 2, n])
>>> pool.close()
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import sys
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from llvmlite import ir
from llvmlite.ir import instructions as _instructions

from symgrad.codegen.llvm_entry import counted_loop, loop_next

SYS_FUTEX, SYS_SCHED_YIELD = 202, 24  # x86-64
FUTEX_WAIT_PRIVATE = 128  # FUTEX_WAIT | FUTEX_PRIVATE_FLAG
FUTEX_WAKE_PRIVATE = 129
STACK_BYTES = 64 << 20
SPIN_US = 100.0  # a worker's spin after each job before it sleeps
CALLER_SPIN_US = 1000.0  # the caller's spin for the other slices before it sleeps
YIELD_AFTER_US = 10.0  # a spin longer than this yields the core between two looks

# The context: a header line, the pending line, one line per worker (byte offsets).
_LINE = 64
_WORKER_SPIN, _CALLER_SPIN, _YIELD_AFTER = 0, 8, 16  # i64 cycles
_WORKERS = 24  # i64: how many workers wait in the context (a run may have more slices)
_PENDING, _WAITING = 64, 68  # i32: slices not done; the caller may sleep on _PENDING
# The run's job (written before its claim word is published): the kernel, the tables, the
# dims, the bounds; and the claim word: run number << 32 | slices << 16 | next slice
_CLAIM, _JOB_KERNEL, _JOB_TABLES, _JOB_DIMS, _JOB_BOUNDS = 72, 80, 88, 96, 104
_SLOTS = 128
_GEN, _SLEEPING, _QUIT = 0, 4, 8  # a worker's slot: its wake-up generation, flags

_SYSCALL = "symgrad_pool_syscall"  # libc's syscall(), bound under a name of our own
_I32, _I64, _PTR = ir.IntType(32), ir.IntType(64), ir.PointerType()
_KERNEL_TYPE = ir.FunctionType(ir.VoidType(), [_PTR, _PTR, _I64, _I64])
KERNEL_TYPE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                               ctypes.c_int64)


def available() -> bool:
    """Whether the native pool runs here: Linux on x86-64 (futex, ``pause``, rdtsc)."""
    return sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")


def default_initializer() -> None:
    """Run in each worker before its first job: its BLAS calls stay on its own thread."""
    from symgrad.codegen import blas

    blas.set_threads(1)


# --- the native code ---------------------------------------------------------------------

class _Emit:
    """Helpers over one IR builder: byte-offset fields, atomics, the futex call."""

    def __init__(self, module: ir.Module, fn: ir.Function):
        self.b = ir.IRBuilder(fn.append_basic_block("entry"))
        self.fn = fn
        get = module.globals.get
        self.pause = get("llvm.x86.sse2.pause") or ir.Function(
            module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause")
        self.cycles = get("llvm.readcyclecounter") or ir.Function(
            module, ir.FunctionType(_I64, []), "llvm.readcyclecounter")
        self.syscall = get(_SYSCALL) or ir.Function(
            module, ir.FunctionType(_I64, [_I64], var_arg=True), _SYSCALL)

    def block(self, name: str) -> ir.Block:
        return self.fn.append_basic_block(name)

    def at(self, base: ir.Value, offset: int | ir.Value) -> ir.Value:
        off = ir.Constant(_I64, offset) if isinstance(offset, int) else offset
        return self.b.gep(base, [off], source_etype=ir.IntType(8))

    def load(self, p: ir.Value, ty: ir.Type, order: str | None = None) -> ir.Value:
        if order is None:
            return self.b.load(p, typ=ty)
        return self.b.load_atomic(p, order, ty.width // 8, typ=ty)

    def store(self, v: ir.Value, p: ir.Value, order: str | None = None) -> None:
        if order is None:
            self.b.store(v, p)
        else:  # (IRBuilder.store_atomic asks an opaque pointer for its pointee type)
            self.b._insert(_instructions.StoreAtomicInstr(self.b.block, v, p, order,
                                                            v.type.width // 8))

    def futex(self, word: ir.Value, op: int, value: ir.Value) -> None:
        null = ir.Constant(_PTR, None)
        self.b.call(self.syscall, [ir.Constant(_I64, SYS_FUTEX), word,
                                   ir.Constant(_I64, op), self.b.zext(value, _I64)
                                   if value.type != _I64 else value, null, null,
                                   ir.Constant(_I64, 0)])

    def call_kernel(self, address: ir.Value, table: ir.Value, dims: ir.Value,
                    start: ir.Value, stop: ir.Value) -> None:
        fn = self.b.inttoptr(address, _KERNEL_TYPE.as_pointer())
        self.b.call(fn, [table, dims, start, stop])

    def spin_until(self, test: Callable[[], ir.Value], ctx: ir.Value, budget_at: int,
                   done: ir.Block, tired: ir.Block) -> None:
        """Spin until ``test()`` holds (to ``done``) or the budget at ``ctx + budget_at``
        (cycles) has passed (to ``tired``); past the first ``_YIELD_AFTER`` cycles each
        round also yields the core (a thread we wait for may need it)."""
        b = self.b
        budget = self.load(self.at(ctx, budget_at), _I64, "monotonic")
        polite = self.load(self.at(ctx, _YIELD_AFTER), _I64, "monotonic")
        t0 = b.call(self.cycles, [])
        loop, wait_more, give = self.block("spin"), self.block("pause"), self.block("yield")
        b.branch(loop)
        b.position_at_end(loop)
        b.cbranch(test(), done, wait_more)
        b.position_at_end(wait_more)
        b.call(self.pause, [])
        spent = b.sub(b.call(self.cycles, []), t0)
        more = self.block("more")
        b.cbranch(b.icmp_unsigned("<", spent, budget), more, tired)
        b.position_at_end(more)
        b.cbranch(b.icmp_unsigned("<", spent, polite), loop, give)
        b.position_at_end(give)
        b.call(self.syscall, [ir.Constant(_I64, SYS_SCHED_YIELD)])
        b.branch(loop)


def _build_worker(module: ir.Module) -> None:
    """``void pool_worker(ptr ctx, i64 index)``: run worker ``index``'s jobs until quit."""
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [_PTR, _I64]), "pool_worker")
    e = _Emit(module, fn)
    b = e.b
    ctx, index = fn.args
    slot = _slot(e, ctx, index)
    gen, sleeping = e.at(slot, _GEN), e.at(slot, _SLEEPING)
    seen = b.alloca(_I32)  # the last generation this worker ran (mem2reg makes it a phi)
    b.store(ir.Constant(_I32, 0), seen)
    wait_top, got, sleep, futex, woke = (e.block(n) for n in
                                         ("wait", "got", "sleep", "futex", "woke"))
    job, leave = e.block("job"), e.block("leave")
    b.branch(wait_top)

    b.position_at_end(wait_top)
    e.spin_until(lambda: b.icmp_unsigned("!=", e.load(gen, _I32, "acquire"),
                                         b.load(seen, typ=_I32)), ctx, _WORKER_SPIN, got,
                 sleep)

    b.position_at_end(sleep)  # say so, then check once more: the poster reads the flag
    e.store(ir.Constant(_I32, 1), sleeping, "seq_cst")
    now = b.load(seen, typ=_I32)
    b.cbranch(b.icmp_unsigned("!=", e.load(gen, _I32, "seq_cst"), now), woke, futex)
    b.position_at_end(futex)  # returns at once if gen != now (no lost wake-up)
    e.futex(gen, FUTEX_WAIT_PRIVATE, now)
    b.branch(woke)
    b.position_at_end(woke)
    e.store(ir.Constant(_I32, 0), sleeping, "monotonic")
    b.branch(wait_top)

    b.position_at_end(got)
    b.store(e.load(gen, _I32, "acquire"), seen)
    quit_ = e.load(e.at(slot, _QUIT), _I32, "monotonic")
    b.cbranch(b.icmp_unsigned("!=", quit_, ir.Constant(_I32, 0)), leave, job)

    b.position_at_end(job)
    _run_slices(e, ctx, wait_top)

    b.position_at_end(leave)
    b.ret_void()


def _run_slices(e: _Emit, ctx: ir.Value, done: ir.Block) -> None:
    """Claim the current run's slices one by one (a compare-and-swap on the claim word)
    and run each, until none is left (to ``done``). The caller and every worker run this:
    a worker that wakes late, or not at all (a busy machine), leaves its slices to whoever
    comes first, and a slice's result does not depend on which thread ran it. Once a slice
    is claimed its run cannot finish without it, so the job read after the claim is that
    run's; a claim word read from an older run fails the swap (its run number differs)."""
    b = e.b
    claim = e.at(ctx, _CLAIM)
    pending, waiting = e.at(ctx, _PENDING), e.at(ctx, _WAITING)
    top, try_, run, last, wake = (e.block(n) for n in ("claim", "try", "slice", "last",
                                                       "wake"))
    b.branch(top)
    b.position_at_end(top)
    word = e.load(claim, _I64, "acquire")
    mask = ir.Constant(_I64, 0xFFFF)
    index = b.and_(word, mask)
    count = b.and_(b.lshr(word, ir.Constant(_I64, 16)), mask)
    b.cbranch(b.icmp_unsigned("<", index, count), try_, done)
    b.position_at_end(try_)
    swapped = b.extract_value(b.cmpxchg(claim, word, b.add(word, ir.Constant(_I64, 1)),
                                        "seq_cst", "seq_cst"), 1)
    b.cbranch(swapped, run, top)
    b.position_at_end(run)

    def item(field: int, i: ir.Value, ty: ir.Type) -> ir.Value:
        base = e.load(e.at(ctx, field), _PTR)
        return e.load(e.at(base, b.mul(i, ir.Constant(_I64, 8))), ty)

    e.call_kernel(e.load(e.at(ctx, _JOB_KERNEL), _I64), item(_JOB_TABLES, index, _PTR),
                  e.load(e.at(ctx, _JOB_DIMS), _PTR), item(_JOB_BOUNDS, index, _I64),
                  item(_JOB_BOUNDS, b.add(index, ir.Constant(_I64, 1)), _I64))
    before = b.atomic_rmw("sub", pending, ir.Constant(_I32, 1), "seq_cst")
    b.cbranch(b.icmp_unsigned("==", before, ir.Constant(_I32, 1)), last, top)
    b.position_at_end(last)  # the last slice: wake the caller if it said it may sleep
    b.cbranch(b.icmp_unsigned("!=", e.load(waiting, _I32, "seq_cst"),
                              ir.Constant(_I32, 0)), wake, top)
    b.position_at_end(wake)
    e.futex(pending, FUTEX_WAKE_PRIVATE, ir.Constant(_I32, 1))
    b.branch(top)


def _slot(e: _Emit, ctx: ir.Value, worker: ir.Value) -> ir.Value:
    """The address of worker ``worker``'s slot line in the context."""
    return e.at(ctx, e.b.add(ir.Constant(_I64, _SLOTS), e.b.mul(worker,
                                                                ir.Constant(_I64, _LINE))))


def _post(e: _Emit, slot: ir.Value, fields: Sequence[tuple[int, ir.Value]]) -> None:
    """Write a job (or a quit) into a worker's slot, bump its generation, wake it if it
    said it may sleep."""
    b = e.b
    for offset, value in fields:
        e.store(value, e.at(slot, offset), "monotonic" if value.type == _I32 else None)
    gen = e.at(slot, _GEN)
    e.store(b.add(e.load(gen, _I32, "monotonic"), ir.Constant(_I32, 1)), gen, "seq_cst")
    asleep = b.icmp_unsigned("!=", e.load(e.at(slot, _SLEEPING), _I32, "seq_cst"),
                             ir.Constant(_I32, 0))
    with b.if_then(asleep):
        e.futex(gen, FUTEX_WAKE_PRIVATE, ir.Constant(_I32, 1))


def _build_run(module: ir.Module) -> None:
    """``void pool_run(ptr ctx, i64 kernel, ptr tables, ptr dims, ptr bounds, i64 n)``:
    slices 0..n-1 (slice t: ``bounds[t]`` to ``bounds[t + 1]`` with ``tables[t]``) claimed
    by this thread and up to n - 1 workers, whoever is free first; returns when all are
    done. n may exceed the pool's threads (at most 65535)."""
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [_PTR, _I64, _PTR, _PTR, _PTR,
                                                              _I64]), "pool_run")
    e = _Emit(module, fn)
    b = e.b
    ctx, kernel, tables, dims, bounds, n = fn.args
    pending, waiting = e.at(ctx, _PENDING), e.at(ctx, _WAITING)
    e.store(b.trunc(n, _I32), pending, "monotonic")  # (published by the claim's release)
    for field, value in ((_JOB_KERNEL, kernel), (_JOB_TABLES, tables), (_JOB_DIMS, dims),
                         (_JOB_BOUNDS, bounds)):
        e.store(value, e.at(ctx, field))
    claim = e.at(ctx, _CLAIM)
    run = b.add(b.lshr(e.load(claim, _I64, "monotonic"), ir.Constant(_I64, 32)),
                ir.Constant(_I64, 1))
    e.store(b.or_(b.shl(run, ir.Constant(_I64, 32)), b.shl(n, ir.Constant(_I64, 16))),
            claim, "seq_cst")
    # wake min(n - 1, workers) workers: a run may have more slices than threads (a slow
    # thread then leaves more of them to the others)
    waiting_workers = e.load(e.at(ctx, _WORKERS), _I64)
    workers = b.sub(n, ir.Constant(_I64, 1))
    workers = b.select(b.icmp_signed("<", workers, waiting_workers), workers, waiting_workers)
    w, own = counted_loop(fn, b, workers, "post")
    _post(e, _slot(e, ctx, w), [])  # a wake-up: the worker claims what is left when it runs
    loop_next(b, w)

    b.position_at_end(own)
    spin = e.block("wait")
    _run_slices(e, ctx, spin)
    done, tired, futex, woke = (e.block(n) for n in ("done", "tired", "futex", "woke"))
    b.position_at_end(spin)
    zero = ir.Constant(_I32, 0)
    e.spin_until(lambda: b.icmp_unsigned("==", e.load(pending, _I32, "acquire"), zero),
                 ctx, _CALLER_SPIN, done, tired)
    b.position_at_end(tired)  # say so, then check once more: the last worker reads the flag
    e.store(ir.Constant(_I32, 1), waiting, "seq_cst")
    left = e.load(pending, _I32, "seq_cst")
    b.cbranch(b.icmp_unsigned("==", left, zero), woke, futex)
    b.position_at_end(futex)
    e.futex(pending, FUTEX_WAIT_PRIVATE, left)
    b.branch(woke)
    b.position_at_end(woke)
    e.store(zero, waiting, "monotonic")
    b.cbranch(b.icmp_unsigned("==", e.load(pending, _I32, "acquire"), zero), done, tired)
    b.position_at_end(done)
    b.ret_void()


def _build_quit(module: ir.Module) -> None:
    """``void pool_quit(ptr ctx, i64 workers)``: post a quit to every worker and wake it."""
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [_PTR, _I64]), "pool_quit")
    e = _Emit(module, fn)
    b = e.b
    ctx, workers = fn.args
    w, out = counted_loop(fn, b, workers, "quit")
    _post(e, _slot(e, ctx, w), [(_QUIT, ir.Constant(_I32, 1))])
    loop_next(b, w)
    b.position_at_end(out)
    b.ret_void()


def _build_cycles(module: ir.Module) -> None:
    """``i64 pool_cycles()``: the cycle counter the spin budgets are measured in."""
    fn = ir.Function(module, ir.FunctionType(_I64, []), "pool_cycles")
    e = _Emit(module, fn)
    e.b.ret(e.b.call(e.cycles, []))


def native_ir() -> str:
    """The pool's LLVM IR: ``pool_worker``, ``pool_run``, ``pool_quit``, ``pool_cycles``."""
    module = ir.Module("symgrad_native_pool")
    for build in (_build_worker, _build_run, _build_quit, _build_cycles):
        build(module)
    return str(module)


class _Native:
    """The compiled pool functions (one library per process) and the TSC rate."""

    def __init__(self) -> None:
        import llvmlite.binding as llvm

        from symgrad.runtime import jit

        libc = ctypes.CDLL(None)
        jit.host()  # initializes LLVM before a symbol is added
        llvm.add_symbol(_SYSCALL, ctypes.cast(libc.syscall, ctypes.c_void_p).value)
        names = ["pool_worker", "pool_run", "pool_quit", "pool_cycles"]
        self.library = jit.get_or_compile(None, native_ir, names)
        c_i64, c_ptr = ctypes.c_int64, ctypes.c_void_p
        self.worker = self.library.cfunc("pool_worker", None, c_ptr, c_i64)
        self.run = self.library.cfunc("pool_run", None, c_ptr, c_ptr, c_ptr, c_ptr, c_ptr,
                                      c_i64)
        self.quit = self.library.cfunc("pool_quit", None, c_ptr, c_i64)
        self.cycles = self.library.cfunc("pool_cycles", c_i64)
        self.cycles_per_us = self._calibrate()

    def _calibrate(self) -> float:
        """TSC cycles per microsecond, over ~2 ms of sleep (accurate to a few percent, all
        a spin budget needs)."""
        c0, t0 = self.cycles(), time.perf_counter()
        time.sleep(0.002)
        c1, t1 = self.cycles(), time.perf_counter()
        return max(1.0, (c1 - c0) / ((t1 - t0) * 1e6))


@functools.lru_cache(maxsize=1)
def _native() -> _Native:
    if not available():
        raise RuntimeError(f"NativePool: needs Linux on x86-64, this is {sys.platform} on "
                           f"{platform.machine()} (use new_pool or PythonPool)")
    return _Native()


# --- the pools ---------------------------------------------------------------------------

_stack_lock = threading.Lock()  # threading.stack_size is process-wide


def _start_threads(count: int, target: Callable[[int], Any], name: str) -> list[threading.Thread]:
    """``count`` daemon threads running ``target(i)``, started with ``STACK_BYTES`` stacks."""
    threads = [threading.Thread(target=target, args=(i,), name=f"{name}-{i}", daemon=True)
               for i in range(count)]
    with _stack_lock:
        before = threading.stack_size(STACK_BYTES)
        try:
            for thread in threads:
                thread.start()
        finally:
            threading.stack_size(before)
    return threads


class _Workers:
    """One generation of a native pool's state: the context memory and the worker threads
    waiting in it. Dropped whole at ``close`` and in a forked child."""

    def __init__(self, native: _Native, workers: int, initializer: Callable[[], Any] | None,
                 spin_us: float, caller_spin_us: float):
        self.count = workers
        size = _SLOTS + _LINE * workers
        self.memory = ctypes.create_string_buffer(size + _LINE)
        self.ctx = -(-ctypes.addressof(self.memory) // _LINE) * _LINE  # line-aligned
        spins = (ctypes.c_int64 * 3).from_address(self.ctx + _WORKER_SPIN)
        spins[:] = [int(us * native.cycles_per_us) for us in
                    (spin_us, caller_spin_us, YIELD_AFTER_US)]
        ctypes.c_int64.from_address(self.ctx + _WORKERS).value = workers
        self.native = native
        self.errors: list[BaseException | None] = [None] * workers
        ready = threading.Barrier(workers + 1)
        # the threads hold the memory too: one left inside a kernel by a timed-out join
        # must not find its context freed when it comes back
        worker, ctx, errors = native.worker, self.ctx, self.errors

        def body(i: int, memory: Any = self.memory) -> None:
            try:
                if initializer is not None:
                    initializer()
            except BaseException as exc:  # reported by the constructor
                errors[i] = exc
            try:
                ready.wait()
            except threading.BrokenBarrierError:  # another worker did not start
                return
            if errors[i] is None:
                worker(ctx, i)  # returns at quit

        self.threads = []
        if workers:
            try:
                self.threads = _start_threads(workers, body, "symgrad-pool")
            except BaseException:  # (can't start new thread): release those that did
                ready.abort()
                raise
            ready.wait()
        failed = [e for e in self.errors if e is not None]
        if failed:
            self.shutdown()
            raise RuntimeError(f"NativePool: the worker initializer {initializer!r} "
                               f"raised {failed[0]!r}") from failed[0]

    def shutdown(self, timeout: float = 5.0) -> None:
        """Quit and wake every worker, join them (a worker still inside a kernel is left
        after ``timeout`` seconds)."""
        if self.threads:
            self.native.quit(self.ctx, self.count)
            for thread in self.threads:
                thread.join(timeout)
            self.threads = []


_live: weakref.WeakSet[NativePool] = weakref.WeakSet()


class NativePool:
    """``threads - 1`` worker threads waiting in native code; ``run`` splits a kernel over
    them and the calling thread.

    ``initializer`` runs once in each worker before its first job (default: BLAS calls
    single-threaded there). ``spin_us``: how long a worker spins after a job before it
    sleeps; ``caller_spin_us``: how long ``run`` spins for the other slices before sleeping.

    >>> with NativePool(4) as pool:
    ...     pool.run(kernel_address, tables, dims_address, [0, 250, 500, 750, 1000])
    """

    def __init__(self, threads: int, initializer: Callable[[], Any] | None =
                 default_initializer, spin_us: float = SPIN_US,
                 caller_spin_us: float = CALLER_SPIN_US):
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"NativePool: threads must be a positive int, got {threads!r}")
        if not spin_us >= 0 or not caller_spin_us >= 0:
            raise ValueError(f"NativePool: spin times must be >= 0 us, got spin_us={spin_us!r}"
                             f", caller_spin_us={caller_spin_us!r}")
        self.threads = threads
        self._settings = (initializer, float(spin_us), float(caller_spin_us))
        self._native = _native()
        self._lock = threading.Lock()
        self._closed = False
        self._tables = (ctypes.c_void_p * threads)()
        self._bounds = (ctypes.c_int64 * (threads + 1))()
        self._addresses = (ctypes.addressof(self._tables), ctypes.addressof(self._bounds))
        self._workers: _Workers | None = None
        self._finalizer: weakref.finalize | None = None
        self._start()
        _live.add(self)

    def _start(self) -> None:
        self._workers = _Workers(self._native, self.threads - 1, *self._settings)
        # at exit or when the pool is collected: the workers must not outlive their context
        self._finalizer = weakref.finalize(self, self._workers.shutdown)

    def run(self, kernel: int, tables: Sequence[int], dims: int, bounds: Sequence[int],
            blocking: bool = True) -> bool:
        """Run ``kernel(tables[t], dims, bounds[t], bounds[t + 1])`` for every slice t, slice
        0 on the calling thread and slice t on worker t; return when all are done (True).

        ``kernel`` is the address of ``void kernel(ptr, ptr, i64, i64)``; ``tables`` and
        ``dims`` addresses that stay valid until ``run`` returns. One run at a time: another
        thread's call waits, or with ``blocking=False`` returns False (nothing run) while
        this pool is busy. The call cannot be interrupted: a Ctrl-C is handled once every
        slice has finished."""
        n = len(tables)
        if not 1 <= n <= self.threads or len(bounds) != n + 1:
            raise ValueError(f"NativePool.run: expected 1 to {self.threads} tables and one "
                             f"bound more, got {n} tables and {len(bounds)} bounds")
        if not self._lock.acquire(blocking):
            return False
        try:
            if self._workers is None:
                if self._closed:
                    raise RuntimeError("NativePool.run: the pool is closed")
                self._start()  # the first run in a forked child
            self._tables[:n] = tables
            self._bounds[:n + 1] = bounds
            self._native.run(self._workers.ctx, kernel, self._addresses[0], dims,
                             self._addresses[1], n)
        finally:
            self._lock.release()
        return True

    @property
    def run_address(self) -> int:
        """The address of ``void pool_run(ptr ctx, i64 kernel, ptr tables, ptr dims, ptr
        bounds, i64 n)``, for native code that splits its passes itself (``hold``)."""
        return self._native.library.address("pool_run")

    def hold(self) -> int:
        """Reserve the pool for native code calling ``pool_run`` (a compiled function's
        entry): the context address to pass it, or 0 when another thread holds the pool
        (run on one thread then). ``release()`` when the native call has returned."""
        if not self._lock.acquire(False):
            return 0
        if self._workers is None:
            if self._closed:
                self._lock.release()
                raise RuntimeError("NativePool.hold: the pool is closed")
            self._start()  # the first run in a forked child
        return self._workers.ctx

    def release(self) -> None:
        """End a ``hold``."""
        self._lock.release()

    def close(self) -> None:
        """Stop and join the workers (waits for a run in flight); ``run`` then raises."""
        with self._lock:
            self._closed = True
            if self._finalizer is not None:
                self._finalizer()
            self._workers = self._finalizer = None

    def _forget_in_child(self) -> None:
        """After ``fork``: the workers are gone (only the forking thread exists in the
        child), and the lock may have been held by another thread; start afresh."""
        if self._finalizer is not None:
            self._finalizer.detach()
        self._workers = self._finalizer = None
        self._lock = threading.Lock()

    def __enter__(self) -> NativePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running"
        return f"<NativePool threads={self.threads} {state}>"


def _after_fork_in_child() -> None:
    for pool in list(_live):
        pool._forget_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def new_pool(threads: int, initializer: Callable[[], Any] | None = default_initializer
             ) -> Any:
    """A ``NativePool`` where ``available()``, else a ``PythonPool``."""
    if available():
        return NativePool(threads, initializer)
    from symgrad.runtime.python_pool import PythonPool

    return PythonPool(threads, initializer)
