"""Lowering: a schedule (``schedule.py``) becomes kernels of loop IR (``loopir.py``).

Each stage of the plan is one kernel. A value computed in a stage is a loop nest over its
shape (inside a pass, over its shape without the batch axis, with the batch index ``n``
fixed) that stores into its buffer; a per-sample scalar is just a named register. Every
elementwise or shape operator a value depends on is inlined as an index map (a transpose
permutes indices, a slice offsets them, a broadcast drops them, a scatter or a one-hot
compares them), so only reductions and shared values ever touch memory.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from symgrad.codegen import loopir as L
from symgrad.codegen.schedule import (
    LEAVES,
    Plan,
    decompose,
    describe,
    per_sample,
    schedule,
    stage_lines,
)
from symgrad.expr import ops_tensor as T
from symgrad.expr.leaves import CONST, INPUT, PARAM, SIZE
from symgrad.expr.node import ELEMENTWISE, Expr
from symgrad.expr.ops_band import BANDS
from symgrad.expr.ops_index import INDEX, SCATTER
from symgrad.expr.shapes import fmt

# Operators the lowering handles itself (loop nests or index maps); every other operator is
# elementwise and spelled by each backend's own table (``LLVM_OPS``, ...).
LOWERED_OPS = (INPUT, PARAM, CONST, SIZE, T.SUM, T.MEAN, T.MAX, T.MIN, T.ARGMAX,
               T.LOGSUMEXP, T.SOFTMAX, T.LOG_SOFTMAX, T.MATMUL, T.RESHAPE, T.TRANSPOSE,
               T.BROADCAST_TO, T.CONCAT, T.ONE_HOT, INDEX, SCATTER, BANDS)


BLOCK = 8  # samples per block for sums of outer products over the batch
CHUNK = 4096  # samples whose float32 sums are added into a float64 total at a time


@dataclass
class Accumulator:
    node: Expr
    partial: str  # the per-thread buffer
    target: str  # where the combined value goes
    kind: str  # sum, max, min
    mean_of: tuple | None = None  # dims whose product divides the sum, for a mean
    transposed: bool = False  # the partial holds the transpose of the value


@dataclass
class Program:
    """Everything a backend compiles and the runtime runs, in order."""
    kernels: list[L.Kernel]
    stages: list[int]
    buffers: dict[str, L.Buffer]
    node_buffer: dict[Expr, str]
    accumulators: dict[int, list[Accumulator]]  # by pass stage
    outputs: list[Expr]
    plan: Plan
    plan_text: str
    const_arrays: dict[str, np.ndarray] = field(default_factory=dict)
    dims: list[str] = field(default_factory=list)
    work_per_sample: dict[int, int] = field(default_factory=dict)  # by pass stage, rough ops
    stage_notes: list[list[str]] = field(default_factory=list)  # by kernel: the plan's lines

    def __str__(self) -> str:
        return self.plan_text + "\n\n" + "\n\n".join(str(k) for k in self.kernels)


# Names the lowering writes itself (loop indices, chunk and block bounds): a model's input
# or parameter never gets one of them.
FIXED_NAMES = frozenset("n start stop chunk c0 c1 blk n0 nb".split())


class _Names:
    """Fresh names for one program. Every name handed out, the model's own buffer names
    included, is taken once: a user's input called ``out0`` or ``s3`` never shares a name
    with a generated buffer, scratch array or register."""

    def __init__(self):
        self.counter = itertools.count()
        self.taken: set[str] = set(FIXED_NAMES)

    def fresh(self, prefix: str) -> str:
        name = f"{prefix}{next(self.counter)}"
        while name in self.taken:
            name = f"{prefix}{next(self.counter)}"
        self.taken.add(name)
        return name



TARGETS = ("cpu", "gpu")


def lower(outputs: list[Expr], target: str = "cpu") -> Program:
    """Schedule and lower ``outputs`` to kernels for a ``target``: ``"cpu"`` (a thread runs a
    contiguous slice of the batch: samples in blocks against transposed weight copies,
    float32 sums in float64 chunks) or ``"gpu"`` (a thread runs a few samples: one sample
    per loop iteration, weights read in place, so a grid-stride loop can take the batch)."""
    if target not in TARGETS:
        raise ValueError(f"lowering target must be one of {TARGETS}, got {target!r}")
    work = decompose(list(outputs))
    plan = schedule(work)
    return _Lowerer(plan, work, target).program()


class _Lowerer:
    def __init__(self, plan: Plan, outputs: list[Expr], target: str = "cpu"):
        self.plan, self.outputs = plan, outputs
        self.cpu = target == "cpu"
        self.names = _Names()
        self.buffers: dict[str, L.Buffer] = {}
        self.node_buffer: dict[Expr, str] = {}
        self.const_arrays: dict[str, np.ndarray] = {}
        self.dims: set[str] = set()
        self.scratch: dict[Expr, str] = {}  # per-sample buffers of the current pass
        self.block_values: dict[Expr, tuple] = {}  # values computed a block at a time
        self.locals: dict[Expr, L.Local] = {}  # per-sample scalars of the current pass
        self.stage = 0
        self.labels: dict[Expr, str] = {}
        self._name_leaves()

    # -- buffers -----------------------------------------------------------------------
    def _add_buffer(self, name: str, node: Expr, role: str) -> str:
        self.buffers[name] = L.Buffer(name, node.dtype, role, node.shape)
        self.node_buffer[node] = name
        self.dims.update(d for d in node.shape if isinstance(d, str))
        return name

    def _name_leaves(self) -> None:
        leaves = [n for n in self.plan.order if n.op is INPUT or n.op is PARAM]
        # Every user name is taken before any leaf is named, so a renamed leaf (parameters
        # "w_0", "w", "w" become w_0, w, w_1) or a generated name never lands on one.
        self.names.taken |= {n.name for n in leaves}
        claimed: set[str] = set()
        for n in self.plan.order:
            if n.op is INPUT or n.op is PARAM:
                own = n.name.isidentifier() and n.name not in FIXED_NAMES
                if own and n.name not in claimed:
                    name = n.name
                else:
                    name = self.names.fresh((n.name if n.name.isidentifier() else "p") + "_")
                claimed.add(name)
                self._add_buffer(name, n, "input" if n.op is INPUT else "param")
                self.labels[n] = name
            elif n.op is CONST and n.arg.scalar() is None:
                name = self.names.fresh("const")
                self._add_buffer(name, n, "const")
                self.const_arrays[name] = np.ascontiguousarray(n.arg.array)
        for i, o in enumerate(self.outputs):
            if o.op not in LEAVES and o not in self.node_buffer:
                name = f"out{i}" if f"out{i}" not in self.names.taken else \
                    self.names.fresh(f"out{i}_")
                self.names.taken.add(name)
                self._add_buffer(name, o, "output")
                self.labels[o] = name
        for n in self.plan.order:
            if n in self.plan.materialized and n not in self.node_buffer:
                if not per_sample(n, self.plan.batch) or n in self.plan.stored_whole:
                    self._add_buffer(self.names.fresh("v"), n, "temp")
                self.labels.setdefault(n, self.node_buffer.get(n) or self.names.fresh("s"))

    # -- the program -------------------------------------------------------------------
    def program(self) -> Program:
        kernels, stages, accs, work = [], [], {}, {}
        for stage, members in self.plan.stages():
            self.stage = stage
            if stage % 2:
                kernel, stage_accs = self._pass_kernel(stage, members)
                accs[stage] = stage_accs
                work[stage] = sum(_work(n, self.plan.batch) for n in members)
            else:
                kernel = self._between_kernel(stage, members)
            kernels.append(kernel)
            stages.append(stage)
        text = describe(self.plan, self.labels)
        notes = [lines for _, lines in stage_lines(self.plan, self.labels)]
        return Program(kernels, stages, self.buffers, self.node_buffer, accs, self.outputs,
                       self.plan, text, self.const_arrays, sorted(self.dims), work, notes)

    def _kernel(self, name: str, body: list, batch: str | None, members: list) -> L.Kernel:
        return L.Kernel(name, list(self.buffers.values()), sorted(self.dims), body, batch,
                        fuses=[self.labels.get(m, m.op.name) for m in members])

    def _between_kernel(self, stage: int, members: list[Expr]) -> L.Kernel:
        self.scratch, self.locals = {}, {}  # the last pass's per-sample values are gone
        body: list = []
        for n in members:
            body += self._compute(n, per_sample=False)
        return self._kernel(f"stage{stage // 2}", body, None, members)

    def _pass_kernel(self, stage: int, members: list[Expr]) -> tuple[L.Kernel, list]:
        batch = self.plan.batch
        self.scratch, self.locals, self.transposed, self.block_values = {}, {}, {}, {}
        self.chunk_init, self.chunk_flush = [], []
        prologue: list = []
        self.pass_prologue = prologue
        inner: list = []
        epilogue: list = []
        accs: list[Accumulator] = []
        blocked: list = []  # sums of outer products over the batch, done a block at a time
        for n in members:
            if n in self.plan.accumulators:
                if self.cpu and n.op is T.MATMUL and n.ndim == 2 and all(
                        isinstance(d, int) for d in n.shape):
                    accs.append(self._block_accumulator(n, prologue, inner, blocked))
                else:
                    accs.append(self._accumulator(n, prologue, inner, epilogue))
                continue
            if self._block_product(n, prologue, blocked):
                continue
            if self._sample_shape(n):
                name = self.names.fresh("s")
                prologue.append(L.Alloc(name, n.dtype, self._size(self._sample_shape(n))))
                self.scratch[n] = name
            inner += self._compute(n, per_sample=True)
        reduction = any(a.kind in ("sum", "max", "min") for a in accs)
        if not blocked and self.chunk_init:
            body = prologue + [self._chunks(inner, reduction)] + epilogue
        elif not blocked:
            loop = L.Loop("n", L.Index("start"), L.Index("stop"), inner, reduction)
            body = prologue + [loop] + epilogue
        else:
            body = prologue + [self._blocks(inner, blocked, reduction)] + epilogue
        return self._kernel(f"pass{stage // 2 + 1}", body, batch, members), accs

    def _chunks(self, inner: list, reduction: bool) -> L.Loop:
        """The batch loop in chunks of ``CHUNK`` samples, each chunk's float32 sums added
        into float64 totals."""
        start, stop = L.Index("start"), L.Index("stop")
        count = L.IOp("//", L.iadd(L.IOp("-", stop, start), CHUNK - 1), L.Const(CHUNK, L.INT))
        lo = L.iadd(start, L.imul(L.Index("chunk"), CHUNK))
        body: list = [L.Let("c0", lo),
                      L.Let("c1", L.IOp("min", L.iadd(L.Index("c0"), CHUNK), stop))]
        body += self.chunk_init
        body.append(L.Loop("n", L.Index("c0"), L.Index("c1"), inner, reduction))
        body += self.chunk_flush
        return L.Loop("chunk", L.Const(0, L.INT), count, body)

    def _blocks(self, inner: list, blocked: list, reduction: bool) -> L.Loop:
        """The batch loop in blocks of ``BLOCK`` samples: per-sample work for each sample of
        the block, then every blocked accumulator once for the whole block."""
        start, stop = L.Index("start"), L.Index("stop")
        count = L.IOp("//", L.iadd(L.IOp("-", stop, start), BLOCK - 1), L.Const(BLOCK, L.INT))
        n0 = L.iadd(start, L.imul(L.Index("blk"), BLOCK))
        body: list = [L.Let("n0", n0),
                      L.Let("nb", L.IOp("min", L.Const(BLOCK, L.INT),
                                        L.IOp("-", stop, L.Index("n0"))))]
        body += [stmt for pre, _ in blocked for stmt in pre]
        body += self.chunk_init
        body.append(L.Loop("n", L.Index("n0"), L.iadd(L.Index("n0"), L.Index("nb")), inner,
                           reduction))
        body += self.chunk_flush
        body += [stmt for _, post in blocked for stmt in post]
        return L.Loop("blk", L.Const(0, L.INT), count, body)

    def _block_product(self, n: Expr, prologue: list, blocked: list) -> bool:
        """``X @ W`` with X an input and W a matrix without the batch: computed for a whole
        block of samples before their per-sample work, each row of W (transposed) loaded
        once for ``BLOCK`` samples (one dot product per sample in registers)."""
        if not self.cpu or n.op is not T.MATMUL or n in self.node_buffer:
            return False
        a, b = n.srcs
        if (a.op is not INPUT or a.ndim != 2 or self._batch_axis(a) != 0 or b.ndim != 2
                or not all(isinstance(d, int) for d in b.shape) or self._batch_axis(b)
                is not None):
            return False
        depth, cols = b.shape
        out = self.names.fresh("Z")
        prologue.append(L.Alloc(out, n.dtype, L.Const(BLOCK * cols, L.INT)))
        wt = self._transposed(b)
        (j,), loops_j = self._loops((cols,))
        k = L.Index(self.names.fresh("k"))
        last = L.IOp("-", L.Index("stop"), L.Const(1, L.INT))
        accs = [self.names.fresh("acc") for _ in range(BLOCK)]
        weight = L.Load(wt, L.iadd(L.imul(j, depth), k), b.dtype)
        body = [L.AccInit(name, n.dtype, L.Const(0, n.dtype), "sum") for name in accs]
        updates = []
        for s, name in enumerate(accs):  # rows past the end repeat the last (then unused)
            row = L.IOp("min", L.iadd(L.Index("n0"), s), last)
            x = self.expr(a, (row, k))
            updates.append(L.Acc(name, "sum", L.Op("multiply", (x, weight), n.dtype)))
        body.append(L.Loop(k.name, L.Const(0, L.INT), L.Const(depth, L.INT), updates, True))
        body += [L.Store(out, L.iadd(s * cols, j), L.Local(name, n.dtype))
                 for s, name in enumerate(accs)]
        blocked.append((self._nest(loops_j, body), []))
        self.block_values[n] = (out, cols)
        return True

    def _block_accumulator(self, n: Expr, prologue: list, inner: list,
                           blocked: list) -> Accumulator:
        """``A.T @ B`` summed over the batch: each sample's row of A and of B is copied into
        a block buffer, and once per block ``partial[j, i] += sum_s A[s, i]*B[s, j]`` runs
        with the sum over the block's samples unrolled: one load and store of the partial
        per block instead of per sample, the inner loop over i contiguous."""
        a, b = n.srcs
        rows, cols = n.shape
        partial = self.names.fresh("partial")
        self.buffers[partial] = L.Buffer(partial, n.dtype, "partial", (cols, rows))
        a_blk, b_blk = self.names.fresh("A"), self.names.fresh("B")
        prologue.append(L.Alloc(a_blk, n.dtype, L.Const(BLOCK * rows, L.INT)))
        prologue.append(L.Alloc(b_blk, n.dtype, L.Const(BLOCK * cols, L.INT)))
        s = L.IOp("-", L.Index("n"), L.Index("n0"))
        (i,), loops_i = self._loops((rows,))
        (j,), loops_j = self._loops((cols,))
        a_idx, _ = self._matmul_operands(n, (i, j), L.Index("n"))
        _, b_idx = self._matmul_operands(n, (i, j), L.Index("n"))
        inner += self._nest(loops_i, [L.Store(a_blk, L.iadd(L.imul(s, rows), i),
                                              self.expr(a, a_idx))])
        inner += self._nest(loops_j, [L.Store(b_blk, L.iadd(L.imul(s, cols), j),
                                              self.expr(b, b_idx))])
        # rows past the end of the last, partial block are zeros in both buffers (not
        # stale or uninitialized values: 0*NaN would be NaN)
        zero = L.Const(0, n.dtype)
        tail = L.Index(self.names.fresh("z"))
        pad = L.Loop(tail.name, L.Index("nb"), L.Const(BLOCK, L.INT),
                     self._nest(loops_i, [L.Store(a_blk, L.iadd(L.imul(tail, rows), i), zero)])
                     + self._nest(loops_j, [L.Store(b_blk, L.iadd(L.imul(tail, cols), j),
                                                    zero)]))
        terms = None
        for k in range(BLOCK):
            term = L.Op("multiply", (L.Load(a_blk, L.iadd(k * rows, i), n.dtype),
                                     L.Load(b_blk, L.iadd(k * cols, j), n.dtype)), n.dtype)
            terms = term if terms is None else L.Op("add", (terms, term), n.dtype)
        offset = L.iadd(L.imul(j, rows), i)
        update = L.Store(partial, offset, L.Op("add", (L.Load(partial, offset, n.dtype), terms),
                                               n.dtype))
        blocked.append(([], [pad] + self._nest(loops_j + loops_i, [update])))
        return Accumulator(n, partial, self.node_buffer[n], "sum", None, True)

    # -- shapes and indices ------------------------------------------------------------
    def _size(self, shape: tuple) -> L.Expr:
        out: L.Expr = L.Const(1, L.INT)
        for d in shape:
            out = L.imul(out, L.size_expr(d))
            if isinstance(d, str):
                self.dims.add(d)
        return out

    def _batch_axis(self, n: Expr) -> int | None:
        b = self.plan.batch
        return n.shape.index(b) if per_sample(n, b) else None

    def _sample_shape(self, n: Expr) -> tuple:
        ax = self._batch_axis(n)
        return n.shape if ax is None else n.shape[:ax] + n.shape[ax + 1:]

    def _loops(self, shape: tuple, fixed: dict[int, L.Expr] | None = None):
        """Fresh loop indices over ``shape`` (axes in ``fixed`` use the given index)."""
        fixed = fixed or {}
        idx, loops = [], []
        for axis, d in enumerate(shape):
            if axis in fixed:
                idx.append(fixed[axis])
                continue
            name = self.names.fresh("i")
            if isinstance(d, str):
                self.dims.add(d)
            idx.append(L.Index(name))
            loops.append((name, L.size_expr(d)))
        return tuple(idx), loops

    @staticmethod
    def _nest(loops: list, body: list, reduction: bool = False) -> list:
        for name, stop in reversed(loops):
            body = [L.Loop(name, L.Const(0, L.INT), stop, body, reduction)]
        return body

    # -- computing a value -------------------------------------------------------------
    def _targets(self, n: Expr, idx: tuple, per_sample: bool) -> list[tuple[str, L.Expr]]:
        out = []
        if per_sample and n in self.scratch:
            out.append((self.scratch[n], self._sample_offset(n, idx)))
        if n in self.node_buffer:
            out.append((self.node_buffer[n], L.flat_offset(idx, n.shape)))
        return out

    def _sample_offset(self, n: Expr, idx: tuple) -> L.Expr:
        ax = self._batch_axis(n)
        sample_idx = idx if ax is None else idx[:ax] + idx[ax + 1:]
        return L.flat_offset(sample_idx, self._sample_shape(n))

    def _compute(self, n: Expr, per_sample: bool) -> list:
        fixed = {}
        if per_sample:
            fixed = {self._batch_axis(n): L.Index("n")}
        idx, loops = self._loops(n.shape, fixed)
        body: list = []
        value = self._value(n, idx, body)
        targets = self._targets(n, idx, per_sample)
        if per_sample and not loops and n not in self.scratch:
            name = self.names.fresh("t")
            body.append(L.Let(name, value))
            self.locals[n] = L.Local(name, n.dtype)
            value = self.locals[n]
        body += [L.Store(buf, off, value) for buf, off in targets]
        return self._nest(loops, body)

    def _value(self, n: Expr, idx: tuple, body: list) -> L.Expr:
        """Statements computing ``n`` at ``idx`` go to ``body``; returns its value."""
        op = n.op
        if op in (T.SUM, T.MEAN, T.MAX, T.MIN, T.LOGSUMEXP, T.ARGMAX):
            return self._reduce(n, idx, body)
        if op is T.MATMUL:
            return self._matmul(n, idx, body)
        return self.expr(n, idx, top=True)

    def _reduce(self, n: Expr, idx: tuple, body: list) -> L.Expr:
        (x,) = n.srcs
        axes, keep = n.arg
        axes = tuple(range(x.ndim)) if axes is None else axes
        out_axes = iter(idx)
        src_idx, loops = [], []
        for a, d in enumerate(x.shape):
            if a in axes:
                name = self.names.fresh("r")
                src_idx.append(L.Index(name))
                loops.append((name, L.size_expr(d)))
                if isinstance(d, str):
                    self.dims.add(d)
                if keep:
                    next(out_axes)
            else:
                src_idx.append(next(out_axes))
        src_idx = tuple(src_idx)
        acc = self.names.fresh("acc")
        dt = n.dtype if n.op is not T.ARGMAX else x.dtype
        if n.op is T.LOGSUMEXP:
            m = self.names.fresh("m")
            body.append(L.AccInit(m, x.dtype, L.Const(-np.inf, x.dtype), "max"))
            body += self._nest(loops, [L.Acc(m, "max", self.expr(x, src_idx))], True)
            shift = L.Op("where", (L.Op("less", (L.Op("abs", (L.Local(m, x.dtype),), x.dtype),
                                                L.Const(np.inf, x.dtype)), L.BOOL),
                                   L.Local(m, x.dtype), L.Const(0.0, x.dtype)), x.dtype)
            sh = self.names.fresh("sh")
            body.append(L.Let(sh, shift))
            # the sum of exponentials over a symbolic length adds in float64 (see below)
            st = np.dtype("float64") if x.dtype == np.float32 and any(
                isinstance(x.shape[a], str) for a in axes) else x.dtype
            body.append(L.AccInit(acc, st, L.Const(0.0, st), "sum"))
            term = L.Op("exp", (L.Op("subtract", (self.expr(x, src_idx),
                                                  L.Local(sh, x.dtype)), x.dtype),), x.dtype)
            if st != x.dtype:
                term = L.Op("cast", (term,), st, st)
            total = L.Local(acc, st)
            body += self._nest(loops, [L.Acc(acc, "sum", term)], True)
            if st != x.dtype:
                total = L.Op("cast", (total,), x.dtype, x.dtype)
            return L.Op("add", (L.Op("log", (total,), x.dtype),
                                L.Local(sh, x.dtype)), x.dtype)
        kind = {T.SUM: "sum", T.MEAN: "sum", T.MAX: "max", T.MIN: "min",
                T.ARGMAX: "argmax"}[n.op]
        # each dtype's own identity: bools start from False (True for a min), integers
        # from their extremes (an infinity cast to int32 is INT32_MIN, to bool True)
        init = {"sum": 0, "max": -np.inf, "min": np.inf, "argmax": -np.inf}[kind]
        if dt.kind == "b" and kind != "sum":
            init = kind == "min"
        elif dt.kind in "iu" and kind != "sum":
            info = np.iinfo(dt)
            init = info.max if kind == "min" else info.min
        if dt.kind == "b" and kind == "sum":
            dt = np.dtype("int32")
        if kind == "sum" and dt == np.float32 and any(isinstance(x.shape[a], str)
                                                      for a in axes):
            # a float32 sum over a symbolic length (an (N, N) mean: N*N terms) adds in
            # float64, as NumPy's pairwise sum keeps ~1e-7 where float32 lanes lose ~1e-4
            dt = np.dtype("float64")
        value = self.expr(x, src_idx)
        if value_dtype(value) != dt:
            value = L.Op("cast", (value,), dt, dt)
        body.append(L.AccInit(acc, dt, L.Const(init, dt), kind))
        position = None
        if kind == "argmax":
            position = src_idx[axes[0]] if len(axes) == 1 else L.flat_offset(
                tuple(src_idx[a] for a in axes), tuple(x.shape[a] for a in axes))
        body += self._nest(loops, [L.Acc(acc, kind, value, position)], reduction=True)
        if kind == "argmax":
            return L.Op("cast", (L.Local(acc + "_i", L.INT),), n.dtype, n.dtype)
        out = L.Local(acc, dt)
        if n.op is T.MEAN:
            count = self._size(tuple(x.shape[a] for a in axes))
            out = L.Op("divide", (out, L.Op("cast", (count,), dt, dt)), dt)
        if dt != n.dtype:
            out = L.Op("cast", (out,), n.dtype, n.dtype)
        return out

    def _matmul_operands(self, n: Expr, idx: tuple, k: L.Expr) -> tuple[tuple, tuple]:
        a, b = n.srcs
        batch_len = n.ndim - (a.ndim > 1) - (b.ndim > 1)
        batch = idx[:batch_len]
        rest = idx[batch_len:]
        i = rest[0] if a.ndim > 1 else None
        j = rest[-1] if b.ndim > 1 else None
        a_idx = _bcast(batch, n.shape[:batch_len], a.shape[:-2]) + ((i, k) if a.ndim > 1
                                                                   else (k,))
        b_idx = _bcast(batch, n.shape[:batch_len], b.shape[:-2]) + ((k, j) if b.ndim > 1
                                                                   else (k,))
        return a_idx, b_idx

    def _matmul(self, n: Expr, idx: tuple, body: list) -> L.Expr:
        a, b = n.srcs
        k = self.names.fresh("k")
        a_idx, b_idx = self._matmul_operands(n, idx, L.Index(k))
        acc = self.names.fresh("acc")
        body.append(L.AccInit(acc, n.dtype, L.Const(0, n.dtype), "sum"))
        right = self.expr(b, b_idx)
        if self.cpu and self.stage % 2 and b.ndim == 2 and all(isinstance(d, int)
                                                               for d in b.shape):
            # per sample, x @ W walks down W's columns: read a transposed copy instead, made
            # once per call, so the dot product runs along contiguous memory on both sides
            rows, cols = b.shape
            right = L.Load(self._transposed(b), L.iadd(L.imul(b_idx[1], rows), b_idx[0]),
                           b.dtype)
        prod = L.Op("multiply", (self.expr(a, a_idx), right), n.dtype)
        body.append(L.Loop(k, L.Const(0, L.INT), L.size_expr(a.shape[-1]),
                           [L.Acc(acc, "sum", prod)], reduction=True))
        return L.Local(acc, n.dtype)

    def _transposed(self, b: Expr) -> str:
        """A scratch copy of matrix ``b`` transposed, filled before the pass's loop."""
        if b not in self.transposed:
            name = self.names.fresh("T")
            rows, cols = b.shape
            self.pass_prologue.append(L.Alloc(name, b.dtype, L.Const(rows * cols, L.INT)))
            (r, c), loops = self._loops(b.shape)
            self.pass_prologue += self._nest(loops, [L.Store(
                name, L.iadd(L.imul(c, rows), r), self.expr(b, (r, c)))])
            self.transposed[b] = name
        return self.transposed[b]

    # -- accumulating over the batch ---------------------------------------------------
    def _accumulator(self, n: Expr, prologue: list, inner: list, epilogue: list) -> Accumulator:
        partial = self.names.fresh("partial")
        self.buffers[partial] = L.Buffer(partial, n.dtype, "partial", n.shape)
        kind = {T.MAX: "max", T.MIN: "min"}.get(n.op, "sum")
        mean_of = None
        transposed = False
        if n.op is T.MATMUL:
            a, b = n.srcs
            out_idx, loops = self._loops(n.shape)
            a_idx, b_idx = self._matmul_operands(n, out_idx, L.Index("n"))
            value = L.Op("multiply", (self.expr(a, a_idx), self.expr(b, b_idx)), n.dtype)
            if n.ndim == 2:
                # sum over samples of outer products, A.T @ D: the partial is kept
                # transposed so the inner loop runs over A's row, contiguous in memory
                transposed = True
                loops = loops[::-1]
                self.buffers[partial].shape = n.shape[::-1]
        else:
            (x,) = n.srcs
            axes, keep = n.arg
            axes = tuple(range(x.ndim)) if axes is None else axes
            bax = self._batch_axis(x)
            src_idx, loops = self._loops(x.shape, {bax: L.Index("n")})
            out_idx = tuple(L.Const(0, L.INT) if a in axes else i
                            for a, i in enumerate(src_idx) if keep or a not in axes)
            value = self.expr(x, src_idx)
            if value_dtype(value) != n.dtype:
                value = L.Op("cast", (value,), n.dtype, n.dtype)
            if n.op is T.MEAN:
                mean_of = tuple(x.shape[a] for a in axes)
        offset = L.flat_offset(out_idx[::-1], n.shape[::-1]) if transposed else \
            L.flat_offset(out_idx, n.shape)
        if not loops:
            # a scalar: a register across the whole pass, stored once at the end. A float32
            # sum over millions of samples in a few float32 lanes would lose ~1e-4 (NumPy
            # sums pairwise): float32 lanes add up one chunk of samples (vectorized), and
            # each chunk's total goes into a float64 sum (and a float64 partial).
            name = self.names.fresh("acc")
            if self.cpu and kind == "sum" and n.dtype == np.float32:
                self.buffers[partial].dtype = np.dtype("float64")
                total = self.names.fresh("total")
                prologue.append(L.AccInit(total, np.dtype("float64"),
                                          L.Load(partial, offset, np.dtype("float64")), kind))
                self.chunk_init.append(L.AccInit(name, n.dtype, L.Const(0, n.dtype), kind))
                inner.append(L.Acc(name, kind, value))
                self.chunk_flush.append(L.Acc(total, kind, L.Local(name, n.dtype)))
                epilogue.append(L.Store(partial, offset, L.Local(total, np.dtype("float64"))))
            else:
                prologue.append(L.AccInit(name, n.dtype, L.Load(partial, offset, n.dtype),
                                          kind))
                inner.append(L.Acc(name, kind, value))
                epilogue.append(L.Store(partial, offset, L.Local(name, n.dtype)))
        else:
            dt = n.dtype
            if self.cpu and kind == "sum" and dt == np.float32 and n.op is not T.MATMUL:
                # the same float32 sum over millions of samples, element by element into
                # a memory partial, would lose ~1e-2 (mse over (N, 10) at N = 1e6): the
                # partial adds in float64
                dt = np.dtype("float64")
                self.buffers[partial].dtype = dt
                value = L.Op("cast", (value,), dt, dt)
            old = L.Load(partial, offset, dt)
            combined = L.Op({"sum": "add", "max": "maximum", "min": "minimum"}[kind],
                            (old, value), dt)
            inner += self._nest(loops, [L.Store(partial, offset, combined)])
        return Accumulator(n, partial, self.node_buffer[n], kind, mean_of, transposed)

    # -- inlined values ----------------------------------------------------------------
    def expr(self, n: Expr, idx: tuple, top: bool = False) -> L.Expr:
        """The value of ``n`` at ``idx`` as a loop IR expression (inlining shape maps and
        elementwise operators; loading stored values)."""
        if not top:
            if n in self.locals:
                return self.locals[n]
            if n in self.scratch:
                return L.Load(self.scratch[n], self._sample_offset(n, idx), n.dtype)
            if n in self.block_values:  # computed for the whole block: this sample's row
                buf, cols = self.block_values[n]
                s = L.IOp("-", L.Index("n"), L.Index("n0"))
                return L.Load(buf, L.iadd(L.imul(s, cols), self._sample_offset(n, idx)),
                              n.dtype)
            if n in self.node_buffer and n.op is not CONST:
                return L.Load(self.node_buffer[n], L.flat_offset(idx, n.shape), n.dtype)
        op = n.op
        if op is CONST:
            v = n.arg.scalar()
            if v is not None:
                return L.Const(v, n.dtype)
            return L.Load(self.node_buffer[n], L.flat_offset(idx, n.shape), n.dtype)
        if op is SIZE:
            return L.Op("cast", (self._size(n.arg[0]),), n.dtype, n.dtype)
        if op.kind == ELEMENTWISE:
            args = tuple(self.expr(s, _bcast(idx, n.shape, s.shape)) for s in n.srcs)
            return L.Op(op.name, args, n.dtype, n.arg)
        if op is T.BROADCAST_TO:
            (x,) = n.srcs
            return self.expr(x, _bcast(idx, n.shape, x.shape))
        if op is T.TRANSPOSE:
            src = [None] * n.ndim
            for i, p in enumerate(n.arg):
                src[p] = idx[i]
            return self.expr(n.srcs[0], tuple(src))
        if op is T.RESHAPE:
            return self.expr(n.srcs[0], _reshape_index(idx, n.shape, n.srcs[0].shape))
        if op is INDEX:
            return self.expr(n.srcs[0], _index_map(idx, n.arg, n.srcs[0].shape))
        if op is SCATTER:
            return self._scatter(n, idx)
        if op is T.CONCAT:
            return self._concat(n, idx)
        if op is T.ONE_HOT:
            (labels,) = n.srcs
            label = self.expr(labels, idx[:-1])
            hit = L.IOp("==", label, idx[-1])
            return L.Select(hit, L.Const(1, n.dtype), L.Const(0, n.dtype), n.dtype)
        if op is BANDS:
            return self._bands(n, idx)
        raise NotImplementedError(f"llvm backend: cannot inline operator {op.name!r} "
                                  f"({n.dtype} {fmt(n.shape)})")

    def _scatter(self, n: Expr, idx: tuple) -> L.Expr:
        key, _ = n.arg
        (g,) = n.srcs
        src_idx, conds = [], []
        axis = 0
        for e in key:
            if e[0] == "new":
                src_idx.append(L.Const(0, L.INT))
                continue
            i = idx[axis]
            if e[0] == "int":
                k = e[1] if e[1] >= 0 else L.iadd(L.size_expr(n.shape[axis]), e[1])
                conds.append(L.IOp("==", i, L.int_expr(k)))
            elif e[0] == "all":
                src_idx.append(i)
            else:
                start, _, step = e[1:]
                length = g.shape[len(src_idx)]
                j = L.IOp("-", i, L.Const(start, L.INT))
                if step > 0:
                    conds.append(L.IOp("<=", L.Const(start, L.INT), i))
                else:
                    conds.append(L.IOp("<=", i, L.Const(start, L.INT)))
                    j = L.IOp("-", L.Const(start, L.INT), i)
                s = abs(step)
                if s != 1:
                    conds.append(L.IOp("==", L.IOp("%", j, L.Const(s, L.INT)),
                                       L.Const(0, L.INT)))
                    j = L.IOp("//", j, L.Const(s, L.INT))
                conds.append(L.IOp("<", j, L.Const(length, L.INT)))
                src_idx.append(L.IOp("clamp", j, L.Const(length, L.INT)))  # safe if unused
            axis += 1
        value = self.expr(g, tuple(src_idx))
        cond = conds[0] if conds else None
        for c in conds[1:]:
            cond = L.IOp("and", cond, c)
        if cond is None:
            return value
        return L.Select(cond, value, L.Const(0, n.dtype), n.dtype)

    def _concat(self, n: Expr, idx: tuple) -> L.Expr:
        axis = n.arg
        parts, start = [], 0
        for s in n.srcs:
            parts.append((s, start))
            start += s.shape[axis]
        out = None
        for s, off in reversed(parts):
            shifted = L.IOp("-", idx[axis], L.Const(off, L.INT))
            local = idx[:axis] + (L.IOp("clamp", shifted, L.Const(s.shape[axis], L.INT)),) \
                + idx[axis + 1:]
            value = self.expr(s, local)
            out = value if out is None else L.Select(
                L.IOp("<", idx[axis], L.Const(off + s.shape[axis], L.INT)), value, out, n.dtype)
        return out

    def _bands(self, n: Expr, idx: tuple) -> L.Expr:
        shape, layout = n.arg
        i, j = idx
        total = None
        for v, (offset, axis) in zip(n.srcs, layout):
            pos, other = (j, i) if axis == 1 else (i, j)
            hit = L.IOp("==", other, L.iadd(pos, offset))
            term = L.Select(hit, self.expr(v, (pos,)), L.Const(0, n.dtype), n.dtype)
            total = term if total is None else L.Op("add", (total, term), n.dtype)
        return total


def _work(n: Expr, batch: str | None) -> int:
    """Roughly how many operations one sample costs for ``n`` (to decide on threads)."""
    if n.op is T.MATMUL:  # one multiply-add per output element and contracted element
        dims, unknown = [d for d in n.shape if d != batch] + [n.srcs[0].shape[-1]], 1
    else:  # one operation per element of the source
        dims, unknown = [d for d in (n.srcs[0].shape if n.srcs else n.shape) if d != batch], 64
    size = 1
    for d in dims:
        size *= d if isinstance(d, int) else unknown  # another symbolic size: a guess
    return max(size, 1)


def value_dtype(e: L.Expr) -> np.dtype:
    return e.dtype if hasattr(e, "dtype") else L.INT


def _bcast(idx: tuple, out_shape: tuple, src_shape: tuple) -> tuple:
    """Index of a broadcast source: leading axes dropped, stretched axes pinned to 0."""
    lead = len(out_shape) - len(src_shape)
    return tuple(L.Const(0, L.INT) if d == 1 and out_shape[lead + a] != 1 else idx[lead + a]
                 for a, d in enumerate(src_shape))


def _reshape_index(idx: tuple, out_shape: tuple, src_shape: tuple) -> tuple:
    """Source index of a reshape (dropping or adding 1s is a direct map)."""
    squeeze_out = [i for i, d in zip(idx, out_shape) if d != 1]
    if [d for d in out_shape if d != 1] == [d for d in src_shape if d != 1]:
        it = iter(squeeze_out)
        return tuple(L.Const(0, L.INT) if d == 1 else next(it) for d in src_shape)
    flat = L.flat_offset(idx, out_shape)
    out = []
    for d in reversed(src_shape):
        size = L.size_expr(d)
        out.append(L.IOp("%", flat, size))
        flat = L.IOp("//", flat, size)
    return tuple(reversed(out))


def _index_map(idx: tuple, key: tuple, src_shape: tuple) -> tuple:
    src, axis_in = [], 0
    it = iter(idx)
    for e in key:
        if e[0] == "new":
            next(it)
            continue
        if e[0] == "int":
            k = e[1]
            src.append(L.Const(k, L.INT) if k >= 0 else
                       L.iadd(L.size_expr(src_shape[axis_in]), k))
        elif e[0] == "all":
            src.append(next(it))
        else:
            start, _, step = e[1:]
            src.append(L.iadd(L.Const(start, L.INT), L.imul(next(it), step)))
        axis_in += 1
    return tuple(src)
