"""Running a graph through the LLVM backend: lower, render, JIT (cached), call.

The feeds are checked exactly as the NumPy reference checks them (same function, same
errors) before anything runs. Buffers are NumPy arrays whose addresses go to the kernels
through ctypes (which releases the GIL, so a pass over the batch runs on several threads
at once, each over its own slice with its own partial accumulators; partials are combined
in thread order, so a given thread count always gives the same result).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import inspect
import math
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, Callable

import numpy as np

from symgrad.codegen import blas
from symgrad.codegen.llvm import render_llvm
from symgrad.codegen.schedule import LEAVES
from symgrad.expr.evaluate import Outputs
from symgrad.expr.shapes import size_of
from symgrad.runtime import jit
from symgrad.runtime.compiled import (
    CompiledFunction,
    commit_on_host,
    distinct_arrays,
    leaf_result,
)
from symgrad.runtime.signals import deferred_signals
from symgrad.runtime.threads import get_num_threads

KERNEL_TYPE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                               ctypes.c_int64)
# A pass is split across threads only when each thread gets about this many operations
# (~1-2 ms of work): below that, handing work to the pool and combining partials cost more
# than they save (bench/README.md: a 256-sample softmax step was 3x slower on 2 threads).
MIN_WORK_PER_THREAD = 8_000_000
_pool: ThreadPoolExecutor | None = None


def _thread_pool() -> ThreadPoolExecutor:
    """One pool for the process: a pass reuses its threads instead of starting new ones."""
    global _pool
    if _pool is None or _pool._max_workers < get_num_threads():
        _pool = ThreadPoolExecutor(max_workers=get_num_threads(),
                                   thread_name_prefix="symgrad")
    return _pool


def _one_blas_thread(fn, table, dims, start: int, stop: int) -> None:
    """A slice of a pass split over threads: its BLAS calls stay on this thread."""
    blas.set_threads(1)
    fn(table, dims, start, stop)


def _identity(kind: str, dtype: np.dtype) -> Any:
    """The value a ``sum``/``max``/``min`` partial of ``dtype`` starts from: 0, the dtype's
    lowest or highest value (False/True for bools), or -inf/inf (an infinity cast to int32
    would be INT32_MIN, and a min would start from it)."""
    dtype = np.dtype(dtype)
    if kind == "sum":
        return 0
    if dtype.kind == "b":
        return kind == "min"
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return info.min if kind == "max" else info.max
    return -np.inf if kind == "max" else np.inf


@functools.lru_cache(maxsize=1)
def _codegen_digest() -> str:
    """A digest of the code that turns loop IR into LLVM IR (part of every cache key)."""
    from symgrad.codegen import llvm, llvm_math, llvm_trig, loopir

    h = hashlib.sha256()
    for module in (llvm, llvm_math, llvm_trig, loopir):
        h.update(inspect.getsource(module).encode())
    return h.hexdigest()


class LLVMFunction(CompiledFunction):
    """Outputs compiled to machine code; call with feeds by input name."""

    def __init__(self, outputs: Outputs):
        super().__init__(outputs, "cpu")
        self.buffer_names = list(self.program.buffers)
        self.dim_names = list(self.program.dims)
        self._index = {n: i for i, n in enumerate(self.buffer_names)}
        self._dim_index = {d: i for i, d in enumerate(self.dim_names)}
        self._source: str | None = None
        # The cache key is the loop IR itself (every field, dtypes included) and the code
        # of the LLVM printer: a cached function skips rendering LLVM IR, not only LLVM.
        key = hashlib.sha256((_codegen_digest() + repr(self.program.kernels) +
                              repr(self._index) + repr(self._dim_index)).encode()).hexdigest()
        names = [k.name for k in self.program.kernels]
        self.library = jit.get_or_compile(key, lambda: self.source, names)
        self._kernels = [KERNEL_TYPE(self.library.address(k.name)) for k in
                         self.program.kernels]
        self._layout()
        self._repeated_outputs = len(set(self.program.outputs)) < len(self.program.outputs)

    @property
    def source(self) -> str:
        """The LLVM IR as generated (rendered on first use; a cached function skips it)."""
        if self._source is None:
            self._source = render_llvm(self.program.kernels, self._index, self._dim_index)
        return self._source

    @property
    def asm(self) -> str:
        return self.library.asm

    @property
    def optimized_source(self) -> str:
        return self.library.optimized_ir

    def run(self, arrays: dict[str, np.ndarray], sizes: dict[str, int],
            commit: dict[int, Any] | None, accept: Callable[[list], bool],
            **backend_args: Any) -> list:
        """Run on feeds already checked (``check_feeds``, ``check_dims_bound``)."""
        prog = self.program
        views, ptrs, arena = self._buffers(arrays, sizes)
        dims = (ctypes.c_int64 * max(1, len(self.dim_names)))(
            *[sizes[d] for d in self.dim_names])
        table = self._table(ptrs)  # the stages between passes share one pointer table
        for fn, stage in zip(self._kernels, prog.stages):
            if stage % 2 == 0:
                fn(table, dims, 0, 0)
            else:
                self._run_pass(fn, stage, views, ptrs, sizes, dims)
        results = [self._result(o, views, arrays, sizes) for o in prog.outputs]
        if self._repeated_outputs:  # function([loss, loss]): two arrays, not one twice
            results = distinct_arrays(results)
        return commit_on_host(results, commit if accept(results) else None)

    def _layout(self) -> None:
        """Which buffer is what, worked out once: inputs are fed, parameters and constants
        are fixed arrays, everything else lives in one allocation per call."""
        prog = self.program
        node_of = {name: n for n, name in prog.node_buffer.items()}
        self._inputs: list[tuple[int, str]] = []
        self._fixed: list[tuple[int, Any]] = []  # (slot, ParamSlot or const array)
        self._owned: list[tuple[int, str, tuple, np.dtype]] = []
        self._partial_specs: dict[str, tuple[int, tuple, np.dtype]] = {}
        self._layouts: dict[tuple, tuple[list, list, int]] = {}
        self._returned = {prog.node_buffer[o] for o in prog.outputs if o in prog.node_buffer}
        self._returned |= {a.target for accs in prog.accumulators.values() for a in accs}
        for i, (name, spec) in enumerate(prog.buffers.items()):
            if spec.role == "input":
                self._inputs.append((i, node_of[name].name))
            elif spec.role == "param":
                self._fixed.append((i, node_of[name].arg))
            elif spec.role == "const":
                self._fixed.append((i, prog.const_arrays[name]))
            elif spec.role == "partial":
                self._partial_specs[name] = (i, spec.shape, np.dtype(spec.dtype))
            else:
                self._owned.append((i, name, spec.shape, np.dtype(spec.dtype)))

    def _buffers(self, arrays: dict, sizes: dict) -> tuple[dict, list, np.ndarray]:
        """Every buffer's address, and NumPy views of those Python needs (outputs)."""
        ptrs: list = [None] * max(1, len(self.buffer_names))
        keep = []
        for i, name in self._inputs:
            a = np.ascontiguousarray(arrays[name])
            keep.append(a)
            ptrs[i] = a.ctypes.data
        for i, owner in self._fixed:
            ptrs[i] = (owner.value if hasattr(owner, "value") else owner).ctypes.data
        offsets, returned, total = self._arena_layout(sizes)
        arena = np.empty(total, np.uint8)
        base = arena.ctypes.data
        for i, offset in offsets:
            ptrs[i] = base + offset
        views = {"__keep__": keep}
        for name, dt, bound, offset, nbytes in returned:
            views[name] = arena[offset:offset + nbytes].view(dt).reshape(bound)
        return views, ptrs, arena

    def _arena_layout(self, sizes: dict) -> tuple[list, list, int]:
        """Where each owned buffer lies in the arena for these sizes (worked out once per
        set of sizes: a training loop's batches share one or two)."""
        key = tuple(sizes[d] for d in self.dim_names)
        found = self._layouts.get(key)
        if found is None:
            offsets, returned, total = [], [], 0
            for i, name, shape, dt in self._owned:
                bound = tuple(sizes[d] if isinstance(d, str) else d for d in shape)
                nbytes = math.prod(bound) * dt.itemsize
                offsets.append((i, total))
                if name in self._returned:
                    returned.append((name, dt, bound, total, nbytes))
                total += -(-max(nbytes, 1) // 64) * 64  # 64-byte aligned
            if len(self._layouts) >= 16:  # many batch sizes: keep the newest few
                self._layouts.pop(next(iter(self._layouts)))
            self._layouts[key] = found = (offsets, returned, total)
        return found

    def _table(self, ptrs: list):
        return (ctypes.c_void_p * len(ptrs))(*ptrs)

    def _run_pass(self, fn, stage: int, views: dict, ptrs: list, sizes: dict, dims) -> None:
        prog = self.program
        accs = prog.accumulators.get(stage, [])
        n = sizes[prog.plan.batch]
        work = n * prog.work_per_sample.get(stage, 1)
        threads = max(1, min(get_num_threads(), work // MIN_WORK_PER_THREAD, n // 64))
        bounds = [n * t // threads for t in range(threads + 1)]
        partials: list[dict[str, np.ndarray]] = []
        tables = []
        for _ in range(threads):
            mine, row = {}, list(ptrs)
            for acc in accs:
                i, shape, dt = self._partial_specs[acc.partial]
                bound = tuple(sizes[d] if isinstance(d, str) else d for d in shape)
                mine[acc.partial] = part = np.full(bound, _identity(acc.kind, dt), dt)
                row[i] = part.ctypes.data
            partials.append(mine)
            tables.append(self._table(row))
        if threads == 1:
            blas.set_threads(get_num_threads())
            fn(tables[0], dims, 0, n)
        else:  # the caller's thread runs the first slice, the pool the others
            # Ctrl-C waits for the workers: raised while they still write into this call's
            # partials and arena, it would free them under the workers' feet (a segfault)
            with deferred_signals():
                pool = _thread_pool()
                futures = [pool.submit(_one_blas_thread, fn, t, dims, lo, hi) for t, lo, hi
                           in zip(tables[1:], bounds[1:-1], bounds[2:])]
                try:
                    _one_blas_thread(fn, tables[0], dims, bounds[0], bounds[1])
                finally:
                    wait(futures)
                for f in futures:
                    f.result()
        for acc in accs:  # combine in thread order: the same thread count, the same result
            total = partials[0][acc.partial]
            for mine in partials[1:]:
                part = mine[acc.partial]
                total = (total + part if acc.kind == "sum" else np.maximum(total, part)
                         if acc.kind == "max" else np.minimum(total, part))
            if acc.transposed:
                total = total.T
            if acc.mean_of is not None:
                count = size_of(acc.mean_of, sizes)
                if count:
                    total = total / acc.node.dtype.type(count)
                else:  # 0/0 is nan, as in the reference, without a warning
                    with np.errstate(invalid="ignore", divide="ignore"):
                        total = total / acc.node.dtype.type(0)
            views[acc.target][...] = total

    def _result(self, o, bufs, arrays, sizes) -> np.ndarray:
        if o.op in LEAVES:
            return leaf_result(o, arrays, sizes)
        return bufs[self.program.node_buffer[o]]  # a view of this call's own allocation
