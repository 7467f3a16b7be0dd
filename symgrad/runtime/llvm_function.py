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
import threading
from typing import Any

import numpy as np

from symgrad.codegen.llvm import render_llvm
from symgrad.codegen.lower import Program, lower
from symgrad.expr import ops_tensor as T
from symgrad.expr.evaluate import Outputs, as_outputs, check_feeds, graph_inputs, run_graph
from symgrad.expr.leaves import CONST, INPUT, PARAM, SIZE
from symgrad.expr.node import toposort
from symgrad.expr.ops_index import INDEX, SCATTER
from symgrad.expr.shapes import size_of
from symgrad.runtime import jit
from symgrad.runtime.threads import get_num_threads

KERNEL_TYPE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                               ctypes.c_int64)
# Below this many samples a pass runs on one thread: starting threads costs more (measured
# in bench/README.md).
MIN_SAMPLES_PER_THREAD = 16384
_IDENTITY = {"sum": 0, "max": -np.inf, "min": np.inf}


@functools.lru_cache(maxsize=1)
def _codegen_digest() -> str:
    """A digest of the code that turns loop IR into LLVM IR (part of every cache key)."""
    from symgrad.codegen import llvm, llvm_math, loopir

    h = hashlib.sha256()
    for module in (llvm, llvm_math, loopir):
        h.update(inspect.getsource(module).encode())
    return h.hexdigest()


class LLVMFunction:
    """Outputs compiled to machine code; call with feeds by input name."""

    def __init__(self, outputs: Outputs):
        self.outputs, self._single = as_outputs(outputs)
        self.inputs = graph_inputs(self.outputs)
        self.program: Program = lower(self.outputs)
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
        self._guards = _size_guards(self.outputs)

    @property
    def source(self) -> str:
        """The LLVM IR as generated (rendered on first use; a cached function skips it)."""
        if self._source is None:
            self._source = render_llvm(self.program.kernels, self._index, self._dim_index)
        return self._source

    @property
    def plan(self) -> str:
        return self.program.plan_text

    @property
    def loop_ir(self) -> str:
        return str(self.program)

    @property
    def asm(self) -> str:
        return self.library.asm

    @property
    def optimized_source(self) -> str:
        return self.library.optimized_ir

    def __call__(self, **feeds: Any) -> np.ndarray | tuple[np.ndarray, ...]:
        arrays, sizes = check_feeds(self.inputs, feeds)
        results = self.run(arrays, sizes)
        return results[0] if self._single else tuple(results)

    def run(self, arrays: dict[str, np.ndarray], sizes: dict[str, int]) -> list[np.ndarray]:
        prog = self.program
        missing = [d for d in self.dim_names if d not in sizes]
        if missing:
            raise ValueError(f"no input binds the dimension{'s' if len(missing) > 1 else ''} "
                             f"{', '.join(missing)}")
        if any(_fails(g, sizes, arrays) for g in self._guards):
            # an index past a symbolic axis, a max over zero samples, a label out of range:
            # the reference raises its own error (compiled code would read out of bounds,
            # return -inf or a row of zeros)
            return run_graph(self.outputs, arrays, sizes)
        bufs: dict[str, np.ndarray] = {}
        node_of = {name: n for n, name in prog.node_buffer.items()}
        for name, spec in prog.buffers.items():
            shape = tuple(sizes[d] if isinstance(d, str) else d for d in spec.shape)
            if spec.role == "input":
                bufs[name] = np.ascontiguousarray(arrays[node_of[name].name])
            elif spec.role == "param":
                bufs[name] = node_of[name].arg.value
            elif spec.role == "const":
                bufs[name] = prog.const_arrays[name]
            elif spec.role != "partial":
                bufs[name] = np.empty(shape, spec.dtype)
        dims = (ctypes.c_int64 * max(1, len(self.dim_names)))(
            *[sizes[d] for d in self.dim_names])
        for fn, stage in zip(self._kernels, prog.stages):
            if stage % 2 == 0:
                fn(self._pointers(bufs), dims, 0, 0)
            else:
                self._run_pass(fn, stage, bufs, sizes, dims)
        return [self._result(o, bufs, arrays, sizes) for o in prog.outputs]

    def _pointers(self, bufs: dict[str, np.ndarray]):
        return (ctypes.c_void_p * max(1, len(self.buffer_names)))(
            *[bufs[n].ctypes.data if n in bufs else None for n in self.buffer_names])

    def _run_pass(self, fn, stage: int, bufs: dict, sizes: dict, dims) -> None:
        prog = self.program
        accs = prog.accumulators.get(stage, [])
        n = sizes[prog.plan.batch]
        threads = max(1, min(get_num_threads(), n // MIN_SAMPLES_PER_THREAD))
        bounds = [n * t // threads for t in range(threads + 1)]
        per_thread = []
        for _ in range(threads):
            mine = dict(bufs)
            for acc in accs:
                shape = tuple(sizes[d] if isinstance(d, str) else d for d in
                              prog.buffers[acc.partial].shape)
                mine[acc.partial] = np.full(shape, _IDENTITY[acc.kind], acc.node.dtype)
            per_thread.append(mine)
        calls = [(self._pointers(m), lo, hi) for m, lo, hi in
                 zip(per_thread, bounds[:-1], bounds[1:])]
        if threads == 1:
            fn(calls[0][0], dims, calls[0][1], calls[0][2])
        else:
            workers = [threading.Thread(target=fn, args=(p, dims, lo, hi)) for p, lo, hi in
                       calls]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
        for acc in accs:  # combine in thread order: the same thread count, the same result
            total = per_thread[0][acc.partial]
            for m in per_thread[1:]:
                part = m[acc.partial]
                total = (total + part if acc.kind == "sum" else np.maximum(total, part)
                         if acc.kind == "max" else np.minimum(total, part))
            if acc.transposed:
                total = total.T
            if acc.mean_of is not None:  # 0/0 is nan, as in the reference, without a warning
                with np.errstate(invalid="ignore", divide="ignore"):
                    total = total / np.asarray(size_of(acc.mean_of, sizes), acc.node.dtype)
            bufs[acc.target][...] = total

    def _result(self, o, bufs, arrays, sizes) -> np.ndarray:
        if o.op is INPUT:
            return arrays[o.name].copy()
        if o.op is PARAM:
            return o.arg.value.copy()
        if o.op is CONST:
            return np.array(o.arg.array)
        if o.op is SIZE:
            return np.asarray(size_of(o.arg[0], sizes), o.dtype)
        return bufs[self.program.node_buffer[o]]


def _size_guards(outputs: list) -> list[tuple]:
    """What the NumPy reference checks while it runs and compiled code does not: an int index
    on a symbolic axis (``x[-1]``), a max/min/argmax over axes with a symbolic length, and
    the range of one_hot labels fed as an input."""
    guards: list[tuple] = []
    for n in toposort(list(outputs)):
        if n.op is INDEX or n.op is SCATTER:
            key, shape = (n.arg, n.srcs[0].shape) if n.op is INDEX else n.arg
            axis = 0
            for e in key:
                if e[0] != "new":
                    if e[0] == "int" and isinstance(shape[axis], str):
                        guards.append(("index", e[1], shape[axis]))
                    axis += 1
        elif n.op in (T.MAX, T.MIN, T.ARGMAX):
            x = n.srcs[0]
            axes = range(x.ndim) if n.arg[0] is None else n.arg[0]
            dims = tuple(x.shape[a] for a in axes)
            if any(isinstance(d, str) for d in dims):
                guards.append(("empty", dims))
        elif n.op is T.ONE_HOT and n.srcs[0].op is INPUT:
            guards.append(("labels", n.srcs[0].name, n.arg[0]))
    return guards


def _fails(guard: tuple, sizes: dict, arrays: dict) -> bool:
    if guard[0] == "labels":
        labels = arrays[guard[1]]
        return bool(labels.size) and bool(labels.min() < 0 or labels.max() >= guard[2])
    if guard[0] == "index":
        _, k, dim = guard
        return not -sizes[dim] <= k < sizes[dim]
    return size_of(guard[1], sizes) == 0
