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

from symgrad.codegen import blas, tiles
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


# A contraction over a tile's rows calls BLAS from this many multiply-adds per sample:
# measured (bench/README.md), a tile GEMM beat the loop nests from 4 x 4 (1.7x) to 256 x 10
# (14x); at 16 x 1 (a logistic regression's gradient) the two were even
BLAS_MIN_MACS = 32


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
FIXED_NAMES = frozenset("n start stop tile n0 nb".split())


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
        self.tile: int | None = None  # samples per tile, in a CPU pass
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
        how = {stage: k.comment for stage, k in zip(stages, kernels) if stage % 2 and k.comment}
        text = describe(self.plan, self.labels, how)
        notes = [lines for _, lines in stage_lines(self.plan, self.labels, how)]
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
        self.scratch, self.locals, self.transposed, self.block_values = {}, {}, {}, {}
        self.chunk_init, self.chunk_flush = [], []
        if self.cpu:
            return self._tile_pass(stage, members)
        prologue: list = []
        self.pass_prologue = prologue
        inner: list = []
        epilogue: list = []
        accs: list[Accumulator] = []
        for n in members:
            if n in self.plan.accumulators:
                accs.append(self._accumulator(n, prologue, inner, epilogue))
                continue
            if self._sample_shape(n):
                name = self.names.fresh("s")
                prologue.append(L.Alloc(name, n.dtype, self._size(self._sample_shape(n))))
                self.scratch[n] = name
            inner += self._compute(n, per_sample=True)
        reduction = any(a.kind in ("sum", "max", "min") for a in accs)
        loop = L.Loop("n", L.Index("start"), L.Index("stop"), inner, reduction)
        body = prologue + [loop] + epilogue
        return self._kernel(f"pass{stage // 2 + 1}", body, self.plan.batch, members), accs

    def _tile_pass(self, stage: int, members: list[Expr]) -> tuple[L.Kernel, list]:
        """The CPU pass: the batch in tiles of ``T`` samples (``tiles.py``); a contraction
        over a tile's rows is a BLAS call or a loop nest, everything else per-sample loops."""
        self.tile = tiles.tile_size(self._bytes_per_sample(members))
        self.tile_notes: list[str] = []
        prologue: list = []
        self.pass_prologue = prologue
        epilogue: list = []
        accs: list[Accumulator] = []
        groups: list[tiles.Group] = []
        for n in members:
            if n in self.plan.accumulators:
                if self._contraction_over_tile(n):
                    accs.append(self._tile_accumulator(n, prologue, groups))
                else:
                    inner: list = []
                    accs.append(self._accumulator(n, prologue, inner, epilogue))
                    groups.append(tiles.Group(inner))
                continue
            if self._tile_product(n, prologue, groups):
                continue
            if self._sample_shape(n):
                name = self.names.fresh("s")
                size = L.imul(self.tile, self._size(self._sample_shape(n)))
                prologue.append(L.Alloc(name, n.dtype, size))
                self.scratch[n] = name
            groups.append(tiles.Group(self._compute(n, per_sample=True)))
        loop = tiles.tile_loop(groups, self.tile, self.names.fresh, prologue,
                               self.chunk_init, self.chunk_flush)
        kernel = self._kernel(f"pass{stage // 2 + 1}", prologue + [loop] + epilogue,
                              self.plan.batch, members)
        kernel.comment = f"tiles of {self.tile} samples" + "".join(
            f"; {note}" for note in self.tile_notes)
        self.tile = None
        return kernel, accs

    def _bytes_per_sample(self, members: list[Expr]) -> int:
        """About the tile scratch one sample takes: its values' elements, the rows of
        contraction operands (which may be copied into tile buffers)."""
        total = 0
        for n in members:
            if n in self.plan.accumulators:
                if n.op is T.MATMUL:
                    total += n.dtype.itemsize * sum(_elements(s.shape, self.plan.batch)
                                                    for s in n.srcs)
                continue
            total += n.dtype.itemsize * _elements(self._sample_shape(n), None)
        return total

    # -- contractions over a tile ------------------------------------------------------
    def _uses_blas(self, n: Expr, size: int) -> bool:
        """BLAS for a contraction of at least ``BLAS_MIN_MACS`` multiply-adds per sample,
        when SciPy's BLAS is there (else loop nests)."""
        return size >= BLAS_MIN_MACS and self.tile >= 8 and blas.available(n.dtype)

    def _contraction_over_tile(self, n: Expr) -> bool:
        """``A.T @ B`` summed over the batch, a matrix of fixed shape (a weight gradient)."""
        return n.op is T.MATMUL and n.ndim == 2 and all(isinstance(d, int) for d in n.shape)

    def _tile_rows(self, e: L.Expr, i: L.Index, width: int, n: Expr) -> tuple | None:
        """``(buffer, offset of the tile's first row, row stride)`` when ``e``, a sample's
        element ``i`` of a row of ``width``, is read straight from memory: an input's row
        (``X[n, i]``) or a tile buffer's."""
        if not isinstance(e, L.Load) or e.dtype != n.dtype:
            return None
        if e.offset == L.iadd(L.imul(L.Index("n"), width), i):
            return e.buf, L.imul(tiles.TILE_START, width), width
        if e.offset == L.iadd(L.imul(tiles.ROW, width), i):
            return e.buf, L.Const(0, L.INT), width
        return None

    def _rows_of(self, n: Expr, value: L.Expr, i: L.Index, width: int, groups: list) -> tuple:
        """The tile's rows of a per-sample vector ``value`` (over ``i``): in place when
        they are in memory already, else copied into a tile buffer by a per-sample loop."""
        found = self._tile_rows(value, i, width, n)
        if found is not None:
            return found
        buf = self.names.fresh("R")
        self.pass_prologue.append(L.Alloc(buf, n.dtype, L.Const(self.tile * width, L.INT)))
        if width == 1:  # a scalar per sample: joins the loop of the scalars around it
            zero = L.Const(0, L.INT)
            groups.append(tiles.Group([L.Store(buf, tiles.ROW, tiles.substitute(value, i, zero))]))
        else:
            store = L.Store(buf, L.iadd(L.imul(tiles.ROW, width), i), value)
            groups.append(tiles.Group([L.Loop(i.name, L.Const(0, L.INT),
                                              L.Const(width, L.INT), [store])]))
        return buf, L.Const(0, L.INT), width

    def _tile_accumulator(self, n: Expr, prologue: list, groups: list) -> Accumulator:
        """``partial += A_tile.T @ B_tile`` once per tile (``A`` a sample's row of ``rows``,
        ``B`` of ``cols``): a BLAS call with beta = 1, or the same as a loop nest."""
        rows, cols = n.shape
        partial = self.names.fresh("partial")
        self.buffers[partial] = L.Buffer(partial, n.dtype, "partial", n.shape)
        a, b = n.srcs
        i, j = L.Index(self.names.fresh("i")), L.Index(self.names.fresh("j"))
        a_idx, b_idx = self._matmul_operands(n, (i, j), L.Index("n"))
        a_rows = self._rows_of(n, self.expr(a, a_idx), i, rows, groups)
        b_rows = self._rows_of(n, self.expr(b, b_idx), j, cols, groups)
        label = self.labels.get(n, "matmul")
        if self._uses_blas(n, rows * cols):
            groups.append(tiles.Group([L.Gemm(
                a_rows[0], a_rows[1], a_rows[2], True, b_rows[0], b_rows[1], b_rows[2], False,
                partial, L.Const(0, L.INT), cols, L.Const(rows, L.INT), L.Const(cols, L.INT),
                tiles.TILE_COUNT, True, n.dtype)], per_sample=False, last=True))
            self.tile_notes.append(f"{label} += rows.T @ rows: BLAS gemm")
        else:
            k = L.Index(self.names.fresh("k"))
            x = L.Load(a_rows[0], L.iadd(a_rows[1], L.iadd(L.imul(k, a_rows[2]), i)), n.dtype)
            y = L.Load(b_rows[0], L.iadd(b_rows[1], L.iadd(L.imul(k, b_rows[2]), j)), n.dtype)
            at = L.iadd(L.imul(i, cols), j)
            update = L.Store(partial, at, L.Op("add", (L.Load(partial, at, n.dtype), L.Op(
                "multiply", (x, y), n.dtype)), n.dtype))
            nest = self._nest([(k.name, tiles.TILE_COUNT), (i.name, L.Const(rows, L.INT)),
                               (j.name, L.Const(cols, L.INT))], [update])
            groups.append(tiles.Group(nest, per_sample=False, last=True))
            self.tile_notes.append(f"{label} += rows.T @ rows: loops")
        return Accumulator(n, partial, self.node_buffer[n], "sum", None, False)

    def _tile_product(self, n: Expr, prologue: list, groups: list) -> bool:
        """``x @ W`` for every sample of the tile (``x`` a sample's vector, ``W`` a matrix
        without the batch) as one BLAS call into a tile buffer of the products."""
        if n.op is not T.MATMUL or n in self.node_buffer:
            return False
        a, b = n.srcs
        if (self._batch_axis(a) is None or a.ndim != 2 or self._batch_axis(a) != 0
                or b.ndim != 2 or not all(isinstance(d, int) for d in b.shape)
                or self._batch_axis(b) is not None):
            return False
        depth, cols = b.shape
        if not self._uses_blas(n, depth * cols):
            return False
        k = L.Index(self.names.fresh("k"))
        a_rows = self._rows_of(n, self.expr(a, (L.Index("n"), k)), k, depth, groups)
        w, w_offset, ldw, trans = self._matrix(b)
        out = self.names.fresh("Z")
        prologue.append(L.Alloc(out, n.dtype, L.Const(self.tile * cols, L.INT)))
        groups.append(tiles.Group([L.Gemm(
            a_rows[0], a_rows[1], a_rows[2], False, w, w_offset, ldw, trans, out,
            L.Const(0, L.INT), cols, tiles.TILE_COUNT, L.Const(cols, L.INT),
            L.Const(depth, L.INT), False, n.dtype)], per_sample=False))
        self.block_values[n] = (out, cols)
        self.tile_notes.append(f"{self.labels.get(n, 'matmul')} = rows @ W: BLAS gemm")
        return True

    def _matrix(self, b: Expr) -> tuple[str, L.Expr, int, bool]:
        """Matrix ``b`` (no batch axis) in memory as ``(buffer, offset, row stride,
        transposed)``: in place when stored (or a transpose of a stored matrix), else
        computed into scratch before the pass's loop."""
        rows, cols = b.shape
        r, c = L.Index(self.names.fresh("r")), L.Index(self.names.fresh("c"))
        e = self.expr(b, (r, c))
        if isinstance(e, L.Load) and e.dtype == b.dtype:
            if e.offset == L.iadd(L.imul(r, cols), c):
                return e.buf, L.Const(0, L.INT), cols, False
            if e.offset == L.iadd(L.imul(c, rows), r):
                return e.buf, L.Const(0, L.INT), rows, True
        name = self.names.fresh("W")
        self.pass_prologue.append(L.Alloc(name, b.dtype, L.Const(rows * cols, L.INT)))
        self.pass_prologue += self._nest([(r.name, L.Const(rows, L.INT)),
                                          (c.name, L.Const(cols, L.INT))],
                                         [L.Store(name, L.iadd(L.imul(r, cols), c), e)])
        return name, L.Const(0, L.INT), cols, False

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
            out.append((self.scratch[n], self._scratch_offset(n, idx)))
        if n in self.node_buffer:
            out.append((self.node_buffer[n], L.flat_offset(idx, n.shape)))
        return out

    def _scratch_offset(self, n: Expr, idx: tuple) -> L.Expr:
        """Where a sample's element of a per-sample value lies in its scratch: in a tile,
        the sample's row of the tile buffer."""
        offset = self._sample_offset(n, idx)
        if self.tile is None:
            return offset
        return L.iadd(L.imul(tiles.ROW, self._size(self._sample_shape(n))), offset)

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
                return L.Load(self.scratch[n], self._scratch_offset(n, idx), n.dtype)
            if n in self.block_values:  # computed for the whole tile: this sample's row
                buf, cols = self.block_values[n]
                return L.Load(buf, L.iadd(L.imul(tiles.ROW, cols), self._sample_offset(n, idx)),
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


def _elements(shape: tuple, batch: str | None) -> int:
    """Elements of ``shape`` without the batch axis (a symbolic length counts 64)."""
    size = 1
    for d in shape:
        if d != batch:
            size *= d if isinstance(d, int) else 64
    return size


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
