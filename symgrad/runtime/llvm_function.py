"""Running a graph through the LLVM backend: lower, render, JIT (cached), call.

The feeds are checked exactly as the NumPy reference checks them (same function, same
errors) before anything runs. Buffers are NumPy arrays whose addresses go to the kernels
through ctypes (which releases the GIL, so a pass over the batch runs on several threads
at once, each over its own slice with its own partial accumulators; partials are combined
in thread order, so a given thread count always gives the same result).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import inspect
import math
import threading
from typing import Any, Callable

import numpy as np

from symgrad.codegen import blas
from symgrad.codegen import llvm as llvm_printer
from symgrad.codegen import llvm_entry as E
from symgrad.codegen import loopir as L
from symgrad.codegen.llvm import render_llvm
from symgrad.codegen.passes import Compilation
from symgrad.codegen.schedule import LEAVES
from symgrad.expr.evaluate import Outputs
from symgrad.runtime import jit, native_pool
from symgrad.runtime.compiled import (
    CompiledFunction,
    commit_on_host,
    distinct_arrays,
    leaf_result,
)
from symgrad.runtime.signals import deferred_signals
from symgrad.runtime.threads import get_num_threads

ENTRY_TYPE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
# A pass is split across threads only when each thread gets about this many operations
# (~100 us of work): a split on the native pool costs ~2-3 us while its workers spin, ~45 us
# to wake them after they slept (bench/README.md)
MIN_WORK_PER_THREAD = 500_000
# A split pass has this many slices per thread (at least 64 samples each): a thread that
# another program delays leaves its later slices to the others. More slices, more partials
# to combine after the pass (a weight gradient's each): 2 measured enough on 2 cores
SLICES_PER_THREAD = 2
# ... when its partials hold at most this many elements in all; else one slice per thread.
# Each slice sets its partials, and the kernel after the pass adds them one after another
# (the 784-256-10 GELU net's weight gradient, 200,704 elements: 4 slices at batch 256 took
# 2.6-2.8 ms, 2 slices 1.9-2.1; the softmax regression's 7,850: 4 slices 0.14 ms, 2 0.19)
EXTRA_SLICE_PARTIALS = 32_768
# A pass's partials cost about this many operations per element and slice (set before the
# pass, read and added after it): a pass is split only as far as each slice's work pays for
# the partials it adds (an embedding's gradient at batch 1,024 has a partial the size of its
# table, ~100x the pass's work: one slice)
PARTIAL_COST = 4
# A call's reusable scratch (arena, partials, tables) is kept for the next call when it is
# at most this big, or at most SCRATCH_PER_PARAM_BYTES times the parameters' bytes (a
# training step's partials and new values scale with its parameters: an embedding table of
# 13 MB, allocated afresh each call, cost its step 10 ms of page faults), for at most
# IDLE_SCRATCH sets of sizes (one of them larger than SCRATCH_CACHE_BYTES): enough for a
# training loop's batch sizes and an evaluation's; a larger call (a long batch's stored
# values) allocates its own: its work dwarfs the cost
SCRATCH_CACHE_BYTES = 16 << 20
SCRATCH_PER_PARAM_BYTES = 4
IDLE_SCRATCH = 4
# A new value of at least this many bytes that the native entry commits is not copied into
# its parameter: the parameter takes the step's array (``ParamSlot.swap``) and the step
# writes the next new value into the old one. The copies were a fifth of a bag-of-words
# step's time (three 5 MB tables per Adam step); below this, a copy costs less than the
# ~1 us of Python a swap takes
SWAP_MIN_BYTES = 64 << 10
_pool: Any = None
_pool_lock = threading.Lock()
_addressof, _char_at = ctypes.addressof, ctypes.c_char.from_buffer
_NOT_HELD = contextlib.nullcontext()


def _address(a: np.ndarray) -> int:
    """The address of a C-contiguous array's data, through the buffer protocol (~0.3 us;
    ``a.ctypes.data`` builds a helper object: ~1.5 us). A read-only or empty array has no
    writable buffer of a byte to give: ``a.ctypes.data``."""
    try:
        return _addressof(_char_at(a))
    except (TypeError, ValueError, BufferError):
        return a.ctypes.data


def _thread_pool() -> Any:
    """One pool for the process (``native_pool``: workers waiting in native code, so a
    split costs microseconds), grown when the thread count grows."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool.threads < get_num_threads():
            old, _pool = _pool, native_pool.new_pool(get_num_threads())
            if old is not None:
                old.close()
        return _pool


@functools.lru_cache(maxsize=1)
def _codegen_digest() -> str:
    """A digest of the code that turns loop IR into LLVM IR (part of every cache key)."""
    from symgrad.codegen import (
        llvm,
        llvm_entry,
        llvm_math,
        llvm_region,
        llvm_trig,
        loopir,
        regions,
        tiles,
    )

    h = hashlib.sha256()
    for module in (llvm, llvm_entry, llvm_math, llvm_region, llvm_trig, loopir, regions, tiles):
        h.update(inspect.getsource(module).encode())
    return h.hexdigest()


class LLVMFunction(CompiledFunction):
    """Outputs compiled to machine code; call with feeds by input name."""

    def __init__(self, outputs: Outputs, compilation: Compilation | None = None):
        super().__init__(outputs, "cpu", compilation)
        self.buffer_names = list(self.program.buffers)
        self.dim_names = list(self.program.dims)
        self._index = {n: i for i, n in enumerate(self.buffer_names)}
        self._dim_index = {d: i for i, d in enumerate(self.dim_names)}
        self._source: str | None = None
        # The cache key is the loop IR itself (every field, dtypes included) and the code
        # of the LLVM printer: a cached function skips rendering LLVM IR, not only LLVM.
        key = hashlib.sha256((_codegen_digest() + repr(llvm_printer.MAX_BUFFER_ARGS) +
                              repr(self.program.kernels) +
                              repr(self.program.stages) + repr(self._index) +
                              repr(self._dim_index)).encode()).hexdigest()
        log = self.compilation
        with log.timed("jit"):
            self.library = jit.get_or_compile(key, lambda: self.source, [E.ENTRY],
                                              optimize=log.on("optimize"))
        if "render" in log.timings:  # (rendered inside the jit pass: LLVM needed the IR)
            log.timings["jit"] -= log.timings["render"]
        self._entry = ENTRY_TYPE(self.library.address(E.ENTRY))
        self.last_passes: list = []  # (threads, bounds) of each pass of the last call
        # a data-parallel run (``distributed.DataParallel``): ``enter(plan, scratch, ctl)``
        # before the entry (it sets ``ctl[AFTER_PASS]``), ``leave(plan, scratch, ctl)`` after
        self.data_parallel: Any = None
        self._layout()
        self._repeated_outputs = len(set(self.program.outputs)) < len(self.program.outputs)

    @property
    def source(self) -> str:
        """The LLVM IR as generated (rendered on first use; a cached function skips it)."""
        if self._source is None:
            with self.compilation.timed("render"):
                self._source = self._render()
        return self._source

    def _render(self) -> str:
        return render_llvm(self.program.kernels, self._index, self._dim_index,
                           is_pass=[stage % 2 == 1 for stage in self.program.stages],
                           threads_slot=self._dim_index.get(L.THREADS.name, -1),
                           notes=self.program.stage_notes)

    @property
    def asm(self) -> str:
        return self.library.asm

    @property
    def optimized_source(self) -> str:
        return self.library.optimized_ir

    def run(self, arrays: dict[str, np.ndarray], sizes: dict[str, int],
            commit: dict[int, Any] | None, accept: Callable[[list], bool],
            gates: tuple[int, ...] | None = None, **backend_args: Any) -> list:
        """Run on feeds already checked (``check_feeds``, ``check_dims_bound``).

        One native call (``llvm_entry``) runs every stage and, when ``commit`` is given and
        every output in ``gates`` is zero, commits; otherwise ``accept(results)`` decides
        and the commit is made here. What a call needs besides its inputs and outputs (the
        arena of intermediate buffers, the partials, the pointer tables) is built once per
        set of sizes and reused by the next call with those sizes; a call that finds it in
        use (another thread's call in flight) builds its own. Outputs returned to the caller
        are fresh arrays every call; the new values of ``commit``'s outputs live in the
        reused arena (they are copied into the parameters, or copied out when nothing is
        committed)."""
        if commit and gates is not None and any(s.mirror is not None for s in commit.values()):
            gates = None  # a GPU copy newer than the host's: committed here (``commit_on_host``)
        key = (tuple([sizes[d] for d in self._key_dims]), get_num_threads(),
               MIN_WORK_PER_THREAD, tuple(commit) if commit else (), gates)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plan(key, sizes, commit)
        idle = self._idle
        # dict.pop is atomic: two threads never take one scratch (the second builds its own)
        scratch = idle.pop(key, None)
        if scratch is None:
            scratch = self._scratch(plan, commit)
        try:
            return self._call(plan, scratch, arrays, sizes, commit, accept)
        finally:  # every kernel and worker is done with it: the next call may take it
            if scratch.nbytes <= self._scratch_cap:
                if scratch.nbytes > SCRATCH_CACHE_BYTES:  # one large scratch kept at most
                    with self._lock:
                        for other, kept in list(idle.items()):
                            if kept.nbytes > SCRATCH_CACHE_BYTES:
                                idle.pop(other, None)
                idle[key] = scratch
                if len(idle) > IDLE_SCRATCH:
                    with self._lock:
                        while len(idle) > IDLE_SCRATCH:  # the least recently put back
                            idle.pop(next(iter(idle)), None)

    def _call(self, plan: _Plan, scratch: _Scratch, arrays: dict[str, np.ndarray],
              sizes: dict[str, int], commit: dict[int, Any] | None,
              accept: Callable[[list], bool]) -> list:
        tables = scratch.tables
        keep = []  # contiguous copies of inputs, alive until the kernels have run
        for i, name in self._inputs:
            a = arrays[name]
            c = np.ascontiguousarray(a)
            if c is not a:
                keep.append(c)
            try:  # (_address, inline)
                address = _addressof(_char_at(c))
            except (TypeError, ValueError, BufferError):
                address = c.ctypes.data
            for table in tables:
                table[i] = address
        params = scratch.params
        for i, slot in self._params:
            # a parameter's array is in the tables already unless a step has swapped it
            # since (``SWAP_MIN_BYTES``); a GPU copy newer than it is fetched first
            value = slot._value if slot.mirror is None else slot.value
            if value is not params[i]:
                self._moved(scratch, i, value)
        views: list[np.ndarray] = []  # the fresh buffers: outputs the caller gets
        if plan.fresh_bytes:
            fresh = np.empty(plan.fresh_bytes, np.uint8)
            base = _address(fresh)
            for i, offset in plan.fresh_offsets:
                for table in tables:
                    table[i] = base + offset
            views = [np.ndarray(bound, dt, fresh, offset)
                     for bound, dt, offset in plan.fresh_views]
        ctl, pool = scratch.ctl, None
        if plan.max_threads > 1:
            pool = _thread_pool()
            context = pool.hold()
            if context:
                ctl[E.POOL_RUN], ctl[E.POOL_CTX] = pool.run_address, context
            else:  # another thread's call holds the pool, or none is native: the slices
                pool, ctl[E.POOL_RUN] = None, 0  # one after another on this thread
        blas.set_threads(1)  # (the workers' BLAS is single-threaded from their start)
        self.last_passes = plan.passes
        hook = self.data_parallel
        if hook is not None:
            hook.enter(plan, scratch, ctl)
        # a plan that swaps commits in two parts (the copies in the entry, the swaps here):
        # a signal arriving in between would tear the step, so it waits for both
        held = deferred_signals() if plan.swaps and plan.commits else _NOT_HELD
        with held:
            try:
                self._entry(scratch.tables_address, scratch.dims_address,
                            ctypes.addressof(ctl))
            finally:
                if pool is not None:
                    pool.release()
                if hook is not None:  # (the scratch is reused: dims and ctl as they were)
                    hook.leave(plan, scratch, ctl)
            if plan.swaps and ctl[E.STATUS]:  # (1 only when the entry committed)
                self._swap(plan, scratch, commit)
        kept = scratch.views
        results = [views[ref] if kind == 0 else kept[ref] if kind == 1 else
                   leaf_result(ref, arrays, sizes) for kind, ref in plan.results]
        if self._repeated_outputs:  # function([loss, loss]): two arrays, not one twice
            results = distinct_arrays(results)
        if plan.commits and ctl[E.STATUS]:  # committed in the native call (and swapped)
            for i in commit:
                results[i] = None
            return results
        accepted = accept(results)
        if not accepted:  # returned, not committed: the caller's own arrays
            for i in plan.kept_results:
                if results[i] is kept[plan.results[i][1]]:
                    results[i] = results[i].copy()
        return commit_on_host(results, commit if accepted else None)

    def _moved(self, scratch: _Scratch, i: int, value: np.ndarray) -> None:
        """Parameter slot ``i``'s array is ``value`` now (swapped by a step, or fetched from
        a GPU copy): the tables and the commit list point at it."""
        scratch.params[i] = value
        address = _address(value)
        for table in scratch.tables:
            table[i] = address
        word = scratch.commit_words.get(i)
        if word is not None:
            scratch.lists[0][word] = address

    def _swap(self, plan: _Plan, scratch: _Scratch, commit: dict[int, Any]) -> None:
        """The committed new values of ``plan.swaps``: each parameter takes the array the
        step wrote and gives its old one for the next step's new value (the tables' entry
        for the parameter itself is refreshed at the next call, as every function's is)."""
        views = scratch.views  # (signals held by the caller since before the entry)
        for i, name, slot_index in plan.swaps:
            old = commit[i].swap(views[name])
            views[name] = old
            address = _address(old)
            for table in scratch.tables:
                table[slot_index] = address

    def _layout(self) -> None:
        """Which buffer is what, worked out once: inputs are fed, parameters and constants
        are fixed arrays, everything else lives in arenas (``_plan``)."""
        prog = self.program
        node_of = {name: n for n, name in prog.node_buffer.items()}
        self._inputs: list[tuple[int, str]] = []
        self._params: list[tuple[int, Any]] = []  # (slot, ParamSlot)
        self._consts: list[tuple[int, np.ndarray]] = []
        self._owned: list[tuple[int, str, tuple, np.dtype]] = []
        self._partial_specs: dict[str, tuple[int, tuple, np.dtype]] = {}
        for i, (name, spec) in enumerate(prog.buffers.items()):
            if spec.role == "input":
                self._inputs.append((i, node_of[name].name))
            elif spec.role == "param":
                self._params.append((i, node_of[name].arg))
            elif spec.role == "const":
                self._consts.append((i, prog.const_arrays[name]))
            elif spec.role == "partial":
                self._partial_specs[name] = (i, spec.shape, np.dtype(spec.dtype))
            else:
                self._owned.append((i, name, spec.shape, np.dtype(spec.dtype)))
        self._param_index = {id(slot): i for i, slot in self._params}
        self._scratch_cap = max(SCRATCH_CACHE_BYTES, SCRATCH_PER_PARAM_BYTES * sum(
            math.prod(slot.shape) * np.dtype(slot.dtype).itemsize for _, slot in self._params))
        # the sizes a plan depends on: the kernels' dims, the batch, the dims of a mean
        used = set(self.dim_names) - {L.THREADS.name}  # (set per pass, not a size)
        used.update(d for accs in prog.accumulators.values() for a in accs
                    for d in (a.mean_of or ()) if isinstance(d, str))
        if prog.plan.batch:
            used.add(prog.plan.batch)
        self._key_dims = sorted(used)
        self._plans: dict[tuple, _Plan] = {}
        self._idle: dict[tuple, _Scratch] = {}  # scratch no call is using, by plan key
        self._lock = threading.Lock()  # guards _plans and _idle (not held while running)

    def _plan(self, key: tuple, sizes: dict, commit: dict[int, Any] | None) -> _Plan:
        """Where every buffer lies and how each pass runs, for one key of ``run``."""
        prog = self.program
        threads_wanted, min_work, committed = key[1], key[2], set(key[3])
        plan = _Plan()
        plan.dims = [1 if d == L.THREADS.name else sizes[d] for d in self.dim_names]
        # (the kernels start and combine the partials themselves: ``Program.target``)

        def bound(shape: tuple) -> tuple:
            return tuple(sizes[d] if isinstance(d, str) else d for d in shape)

        buffer_of = [None if o.op in LEAVES else prog.node_buffer[o] for o in prog.outputs]
        fresh = {b for i, b in enumerate(buffer_of) if b is not None and i not in committed}
        # new values the parameters take without a copy: each its own array of the
        # parameter's shape and dtype (outside the arena), the source of no other output;
        # swapped only when the entry commits (committed in Python, they are copied)
        plan.swaps = []
        if commit and key[4] is not None:
            for i, slot in commit.items():
                name = buffer_of[i]
                spec = prog.buffers.get(name) if name is not None else None
                if spec is None or spec.role not in ("output", "temp") or \
                        buffer_of.count(name) != 1 or name in fresh or \
                        not _holds(spec, slot, bound) or \
                        slot.dtype.itemsize * math.prod(slot.shape) < SWAP_MIN_BYTES:
                    continue
                plan.swaps.append((i, name, self._index[name]))
        swapped = {name for _, name, _ in plan.swaps}
        targets = {a.target for accs in prog.accumulators.values() for a in accs}
        kept = ({b for b in buffer_of if b is not None} | targets) - fresh
        plan.scratch_offsets, plan.fresh_offsets, plan.fresh_views = [], [], []
        plan.kept_views, fresh_index = [], {}
        sizes_in = {True: 0, False: 0}  # bytes in the fresh and the reused arena
        for i, name, shape, dt in self._owned:
            if name in swapped:
                continue
            shaped = bound(shape)
            nbytes = math.prod(shaped) * dt.itemsize
            is_fresh = name in fresh
            offset = sizes_in[is_fresh]
            sizes_in[is_fresh] += -(-max(nbytes, 1) // 64) * 64  # 64-byte aligned
            if is_fresh:
                fresh_index[name] = len(plan.fresh_views)
                plan.fresh_offsets.append((i, offset))
                plan.fresh_views.append((shaped, dt, offset))
            else:
                plan.scratch_offsets.append((i, offset))
                if name in kept:
                    plan.kept_views.append((name, shaped, dt, offset))
        plan.fresh_bytes, plan.scratch_bytes = sizes_in[True], sizes_in[False]
        plan.results = [(2, o) if b is None else (0, fresh_index[b]) if b in fresh else
                        (1, b) for o, b in zip(prog.outputs, buffer_of)]
        plan.kept_results = [i for i, (kind, _) in enumerate(plan.results) if kind == 1]
        plan.partials, plan.max_threads = {}, 1
        plan.passes = []  # (slices, bounds) per pass
        for stage in prog.stages:
            if stage % 2 == 0:
                continue
            n = sizes[prog.plan.batch]
            work = n * prog.work_per_sample.get(stage, 1)
            partial_elements = sum(math.prod(bound(self._partial_specs[acc.partial][1]))
                                   for acc in prog.accumulators.get(stage, []))
            most = work // max(min_work, PARTIAL_COST * partial_elements)
            threads = max(1, min(threads_wanted, most, n // 64))
            # slices claimed by whichever thread is free (``native_pool``): more slices than
            # threads, so a thread another program delays leaves its share to the others,
            # where the partials are small (each slice sets and adds its own)
            per_thread = SLICES_PER_THREAD if partial_elements <= EXTRA_SLICE_PARTIALS else 1
            slices = threads if threads == 1 else max(threads, min(
                per_thread * threads, n // 64, most))
            plan.passes.append((slices, [n * t // slices for t in range(slices + 1)]))
            for acc in prog.accumulators.get(stage, []):
                slot, shape, dt = self._partial_specs[acc.partial]
                shaped = bound(shape)
                before = plan.partials.get(acc.partial, (slot, shaped, dt, 0))
                plan.partials[acc.partial] = (slot, shaped, dt, max(before[3], slices))
            plan.max_threads = max(plan.max_threads, slices)
        plan.commits, plan.gates = self._native_commit(plan, key[4], commit, bound)
        with self._lock:
            if len(self._plans) >= 16:  # many batch sizes: keep the newest few
                self._plans.pop(next(iter(self._plans)))
            self._plans[key] = plan
        return plan

    def _native_commit(self, plan: _Plan, gates: tuple[int, ...] | None,
                       commit: dict[int, Any] | None, bound: Callable) -> tuple[list, list]:
        """What the entry commits itself: (output position, source slot, bytes) for every
        new value, and (slot, kind) for every gate; nothing when one of them is not a
        buffer of the arena of the parameter's dtype and size (committed in Python then)."""
        if not commit or gates is None:
            return [], []
        prog, outputs = self.program, self.program.outputs
        commits, swapped = [], {i for i, _, _ in plan.swaps}
        for i, slot in commit.items():
            kind, name = plan.results[i]
            spec = prog.buffers[name] if kind == 1 else None
            if spec is None or not _holds(spec, slot, bound):
                return [], []
            # (a swapped value: no bytes to copy, ``_swap`` after the call)
            nbytes = 0 if i in swapped else slot.dtype.itemsize * math.prod(slot.shape)
            commits.append((i, self._index[name], nbytes))
        gate_slots = []
        for i in gates:
            name = prog.node_buffer.get(outputs[i]) if outputs[i].op not in LEAVES else None
            kind = E.GATE_KINDS.get(np.dtype(prog.buffers[name].dtype).name) if name else None
            if kind is None or math.prod(bound(prog.buffers[name].shape)) < 1:
                return [], []
            gate_slots.append((self._index[name], kind))
        return commits, gate_slots

    def _scratch(self, plan: _Plan, commit: dict[int, Any] | None) -> _Scratch:
        """The reusable part of a call: arena, partials, pointer tables, dims."""
        s = _Scratch()
        s.arena = np.empty(plan.scratch_bytes, np.uint8)
        base = _address(s.arena) if plan.scratch_bytes else 0
        nbuf = max(1, len(self.buffer_names))
        s.tables = [(ctypes.c_void_p * nbuf)() for _ in range(plan.max_threads)]
        s.addresses = [ctypes.addressof(t) for t in s.tables]
        s.partials, nbytes = {}, plan.scratch_bytes
        s.params = {i: slot.value for i, slot in self._params}
        for table in s.tables:
            for i, offset in plan.scratch_offsets:
                table[i] = base + offset
            for i, array in self._consts:
                table[i] = array.ctypes.data
            for i, value in s.params.items():
                table[i] = value.ctypes.data
        for name, (i, shaped, dt, threads) in plan.partials.items():
            # one array, thread t's partial at t * size: the combine step reads them in turn
            s.partials[name] = block = np.empty((threads, *shaped), dt)  # (kept alive here)
            for table, part in zip(s.tables, block.reshape(threads, -1)):
                table[i] = _address(part)
            nbytes += block.nbytes
        s.views = {name: np.ndarray(shaped, dt, s.arena, offset)
                   for name, shaped, dt, offset in plan.kept_views}
        for i, name, slot_index in plan.swaps:
            spare = s.views[name] = np.empty(commit[i].shape, commit[i].dtype)
            nbytes += spare.nbytes
            for table in s.tables:
                table[slot_index] = _address(spare)
        s.dims = (ctypes.c_int64 * max(1, len(plan.dims)))(*plan.dims)
        s.dims_address = ctypes.addressof(s.dims)
        s.tables_list = (ctypes.c_void_p * len(s.addresses))(*s.addresses)
        s.tables_address = ctypes.addressof(s.tables_list)
        s.nbytes = nbytes
        # the entry's control words (``llvm_entry``): the commit and gate lists, each
        # pass's slices and bounds
        commits = [w for i, slot, nbytes in plan.commits
                   for w in (_address(commit[i].value), slot, nbytes)]
        # where each copied parameter's address is in the commit list (``_moved``)
        s.commit_words = {self._param_index[id(commit[i])]: 3 * k
                          for k, (i, _, _) in enumerate(plan.commits)
                          if id(commit[i]) in self._param_index}
        gates = [w for pair in plan.gates for w in pair]
        s.lists = [(ctypes.c_int64 * max(1, len(words)))(*words) for words in (commits, gates)]
        s.bounds = []

        def control(passes: list) -> Any:
            words = [0] * (E.PASSES + 2 * len(passes))
            words[E.COMMITS], words[E.GATES] = len(plan.commits), len(plan.gates)
            words[E.COMMIT_LIST], words[E.GATE_LIST] = map(ctypes.addressof, s.lists)
            for p, (threads, bounds) in enumerate(passes):
                s.bounds.append(array := (ctypes.c_int64 * len(bounds))(*bounds))
                words[E.PASSES + 2 * p:E.PASSES + 2 * p + 2] = threads, ctypes.addressof(array)
            return (ctypes.c_int64 * len(words))(*words)

        s.ctl = control(plan.passes)
        return s


def _holds(spec: Any, slot: Any, bound: Callable) -> bool:
    """Buffer ``spec`` holds a value of parameter ``slot`` (its dtype, its shape)."""
    return np.dtype(spec.dtype) == slot.dtype and bound(spec.shape) == tuple(slot.shape)


class _Plan:
    """Worked out once per key of ``LLVMFunction.run`` (sizes, threads, committed outputs):
    the dims, where each owned buffer lies (the fresh arena: outputs returned to the caller;
    the reused arena: everything else), each output's source, each pass."""

    __slots__ = ("dims", "scratch_offsets", "scratch_bytes", "fresh_offsets", "fresh_bytes",
                 "fresh_views", "kept_views", "results", "kept_results", "partials",
                 "max_threads", "passes", "commits", "gates", "swaps")


class _Scratch:
    """What a call reuses from the previous call with the same plan: the arena of buffers
    the caller never gets, the partials, one pointer table per thread (``addresses``) with
    the fixed addresses filled in, the parameters' arrays whose addresses the tables hold,
    the dims; one call at a time."""

    __slots__ = ("arena", "tables", "addresses", "partials", "views", "params", "dims",
                 "dims_address", "tables_list", "tables_address", "nbytes", "lists", "bounds",
                 "ctl", "commit_words")
