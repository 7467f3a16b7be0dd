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

import numpy as np

from symgrad.codegen import fusion, gather, reductions, regions, registers, tiles
from symgrad.codegen import loopir as L
from symgrad.codegen.index_maps import IndexMaps, bcast, index_map, reshape_index
from symgrad.codegen.lower_tiles import TilePass
from symgrad.codegen.passes import Compilation
from symgrad.codegen.program import Accumulator, Program
from symgrad.codegen.schedule import (
    LEAVES,
    Plan,
    choose_batch_dim,
    decompose,
    describe,
    per_sample,
    schedule,
    split_batch_reductions,
    stage_lines,
)
from symgrad.expr import ops_tensor as T
from symgrad.expr.leaves import CONST, INPUT, PARAM, SIZE
from symgrad.expr.node import ELEMENTWISE, Expr, toposort
from symgrad.expr.ops_band import BANDS
from symgrad.expr.ops_gather import GATHER_OPS, SCATTER_ADD
from symgrad.expr.ops_index import INDEX, SCATTER
from symgrad.expr.ops_reduce import PROD
from symgrad.expr.shapes import fmt

# Operators the lowering handles itself (loop nests or index maps); every other operator is
# elementwise and spelled by each backend's own table (``LLVM_OPS``, ...).
LOWERED_OPS = (INPUT, PARAM, CONST, SIZE, T.SUM, T.MEAN, T.MAX, T.MIN, T.ARGMAX,
               T.LOGSUMEXP, T.SOFTMAX, T.LOG_SOFTMAX, T.MATMUL, T.RESHAPE, T.TRANSPOSE,
               T.BROADCAST_TO, T.CONCAT, T.ONE_HOT, INDEX, SCATTER, BANDS, PROD,
               *GATHER_OPS)


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


def lower(outputs: list[Expr], target: str = "cpu",
          compilation: Compilation | None = None) -> Program:
    """Schedule and lower ``outputs`` to kernels for a ``target``: ``"cpu"`` (a thread runs a
    contiguous slice of the batch: samples in blocks against transposed weight copies,
    float32 sums in float64 chunks) or ``"gpu"`` (a thread runs a few samples: one sample
    per loop iteration, weights read in place, so a grid-stride loop can take the batch)."""
    if target not in TARGETS:
        raise ValueError(f"lowering target must be one of {TARGETS}, got {target!r}")
    compilation = compilation or Compilation()
    with compilation.timed("schedule"):
        # the CPU's rewrites over the batch (none on the GPU: no batch named here):
        # scatter-adds over it stay accumulators, the rest become sums (``gather.py``), and
        # reductions over it and other axes are split
        batch = choose_batch_dim(toposort(list(outputs))) if target == "cpu" else None
        work = decompose(gather.expand_scatters(list(outputs), batch))
        work = split_batch_reductions(work, batch)
        plan = schedule(work)
    with compilation.timed("lower"):
        return _Lowerer(plan, work, target, compilation).program()


class _Lowerer(TilePass, IndexMaps):
    def __init__(self, plan: Plan, outputs: list[Expr], target: str = "cpu",
                 compilation: Compilation | None = None):
        self.plan, self.outputs = plan, outputs
        self.compilation = compilation or Compilation()
        self.cpu = target == "cpu"
        self.names = _Names()
        self.buffers: dict[str, L.Buffer] = {}
        self.node_buffer: dict[Expr, str] = {}
        self.const_arrays: dict[str, np.ndarray] = {}
        # every symbolic size a kernel may read: a buffer's, or a slice's length (``N-1``)
        # in an index map of a value that has no buffer
        self.dims: set[str] = {d for n in plan.order for d in n.shape if isinstance(d, str)}
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
        listed = self.plan.stages()
        self.combine: list = []  # combining the last pass's partials, for the next kernel
        for k, (stage, members) in enumerate(listed):
            self.stage = stage
            if stage % 2:
                kernel, stage_accs = self._pass_kernel(stage, members)
                accs[stage] = stage_accs
                work[stage] = sum(_work(n, self.plan.batch) for n in members)
                kernels.append(kernel)
                stages.append(stage)
                if self.cpu:
                    self.combine = self._combine(stage_accs)
                    if k + 1 == len(listed) or listed[k + 1][0] != stage + 1:
                        kernels.append(self._kernel(f"combine{stage // 2 + 1}",
                                                    self._fused(self.combine), None, []))
                        stages.append(stage + 1)
                        self.combine = []
                continue
            kernels.append(self._between_kernel(stage, members))
            stages.append(stage)
        if self.cpu and self.compilation.on("registers"):
            for name in registers.keep_in_registers(kernels, self.buffers):
                self.buffers[name].shape = ()  # (no kernel touches it: one element)
        how = {stage: k.comment for stage, k in zip(stages, kernels) if stage % 2 and k.comment}
        text = describe(self.plan, self.labels, how)
        notes = [lines for _, lines in stage_lines(self.plan, self.labels, how)]
        for i, k in enumerate(kernels):  # a combine-only kernel has no lines of its own
            if k.name.startswith("combine"):
                notes.insert(i, [])
        return Program(kernels, stages, self.buffers, self.node_buffer, accs, self.outputs,
                       self.plan, text, self.const_arrays, sorted(self.dims), work, notes,
                       "cpu" if self.cpu else "gpu")

    def _combine(self, accs: list[Accumulator]) -> list[list]:
        """Every thread's partials combined in thread order into each accumulator's target
        (a mean divided by its count): the same thread count, the same result. Thread t's
        partial is added into thread 0's (the loop over threads outside, so the loop over
        elements vectorizes), then the target is an elementwise copy of it, which fuses
        with the stage's values over its shape. Statement lists, one per loop nest."""
        self.dims.add(L.THREADS.name)
        body: list[list] = []
        for acc in accs:
            spec = self.buffers[acc.partial]
            shape, dt = spec.shape, np.dtype(spec.dtype)
            idx, loops = self._loops(shape)
            offset = L.flat_offset(idx, shape)
            t = L.Index(self.names.fresh("t"))
            mine = L.Load(acc.partial, offset, dt)
            theirs = L.Load(acc.partial, L.iadd(L.imul(t, self._size(shape)), offset), dt)
            joined = L.Op(reductions.COMBINE[acc.kind], (mine, theirs), dt)
            body.append([L.Loop(t.name, L.Const(1, L.INT), L.THREADS,
                                self._nest(loops, [L.Store(acc.partial, offset, joined)]))])
            value: L.Expr = mine
            if acc.mean_of is not None:  # 0 / 0 is nan, as in the reference
                count = L.Op("cast", (self._size(acc.mean_of),), dt, dt)
                value = L.Op("divide", (value, count), dt)
            if dt != acc.node.dtype:
                value = L.Op("cast", (value,), acc.node.dtype, acc.node.dtype)
            at = L.flat_offset(idx[::-1], shape[::-1]) if acc.transposed else offset
            body.append(self._nest(loops, [L.Store(acc.target, at, value)]))
        return body

    def _kernel(self, name: str, body: list, batch: str | None, members: list) -> L.Kernel:
        if self.cpu:  # a large model's code in bounded pieces (``regions.py``)
            body = regions.bounded(regions.split_expressions(body, self.names.fresh))
        return L.Kernel(name, list(self.buffers.values()), sorted(self.dims), body, batch,
                        fuses=[self.labels.get(m, m.op.name) for m in members])

    def _between_kernel(self, stage: int, members: list[Expr]) -> L.Kernel:
        self.scratch, self.locals = {}, {}  # the last pass's per-sample values are gone
        values = [self._compute(n, per_sample=False) for n in members]
        # on the CPU, values over one shape share a loop nest (``fusion.py``); the CUDA
        # printer spreads each nest over a block's threads and keeps them apart
        values, self.combine = self.combine + values, []  # the last pass's partials first
        body = self._fused(values) if self.cpu else [s for v in values for s in v]
        return self._kernel(f"stage{stage // 2}", body, None, members)

    def _fused(self, values: list[list]) -> list:
        """Values' loop nests fused where safe (``fusion.py``), unless the pass is off."""
        return fusion.fuse(values) if self.compilation.on("fuse") else \
            [s for v in values for s in v]

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
        if op in (T.SUM, T.MEAN, T.MAX, T.MIN, T.LOGSUMEXP, T.ARGMAX, PROD):
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
                T.ARGMAX: "argmax", PROD: "prod"}[n.op]
        # each dtype's own identity: bools start from False (True for a min), integers
        # from their extremes (an infinity cast to int32 is INT32_MIN, to bool True)
        init = {"sum": 0, "prod": 1, "max": -np.inf, "min": np.inf, "argmax": -np.inf}[kind]
        if dt.kind == "b" and kind not in ("sum", "prod"):
            init = kind == "min"
        elif dt.kind in "iu" and kind not in ("sum", "prod"):
            info = np.iinfo(dt)
            init = info.max if kind == "min" else info.min
        if dt.kind == "b" and kind in ("sum", "prod"):
            dt = np.dtype("int32")
        if kind == "sum" and dt == np.float32 and any(isinstance(x.shape[a], str)
                                                      for a in axes):
            # a float32 sum over a symbolic length (an (N, N) mean: N*N terms) adds in
            # float64, as NumPy's pairwise sum keeps ~1e-7 where float32 lanes lose ~1e-4
            dt = np.dtype("float64")
        value = self.expr(x, src_idx)
        if L.value_dtype(value) != dt:
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
        a_idx = bcast(batch, n.shape[:batch_len], a.shape[:-2]) + ((i, k) if a.ndim > 1
                                                                   else (k,))
        b_idx = bcast(batch, n.shape[:batch_len], b.shape[:-2]) + ((k, j) if b.ndim > 1
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
        elif n.op is SCATTER_ADD:  # indices over the batch: each sample's rows added where
            g, ids = n.srcs        # its indices point (``gather.py``)
            g_idx, loops = self._loops(g.shape, {self._batch_axis(g): L.Index("n")})
            axis = n.arg[0]
            label = self.expr(ids, g_idx[axis:axis + ids.ndim])
            out_idx = gather.scatter_target(n, g_idx, label)
            value = self.expr(g, g_idx)
        else:
            (x,) = n.srcs
            axes, keep = n.arg
            axes = tuple(range(x.ndim)) if axes is None else axes
            bax = self._batch_axis(x)
            src_idx, loops = self._loops(x.shape, {bax: L.Index("n")})
            out_idx = tuple(L.Const(0, L.INT) if a in axes else i
                            for a, i in enumerate(src_idx) if keep or a not in axes)
            value = self.expr(x, src_idx)
            if L.value_dtype(value) != n.dtype:
                value = L.Op("cast", (value,), n.dtype, n.dtype)
            if n.op is T.MEAN:
                mean_of = tuple(x.shape[a] for a in axes)
        offset = L.flat_offset(out_idx[::-1], n.shape[::-1]) if transposed else \
            L.flat_offset(out_idx, n.shape)
        if not loops and n.op is not SCATTER_ADD:
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
            if self.cpu and kind == "sum" and dt == np.float32 and n.op not in (
                    T.MATMUL, SCATTER_ADD):
                # the same float32 sum over millions of samples, element by element into
                # a memory partial, would lose ~1e-2 (mse over (N, 10) at N = 1e6): the
                # partial adds in float64. (A scatter's partial is the size of the table
                # it scatters into, a thread's copy of a parameter, and each element adds
                # only the samples that hit it: float32, as NumPy's ``add.at``.)
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
            args = tuple(self.expr(s, bcast(idx, n.shape, s.shape)) for s in n.srcs)
            return L.Op(op.name, args, n.dtype, n.arg)
        if op is T.BROADCAST_TO:
            (x,) = n.srcs
            return self.expr(x, bcast(idx, n.shape, x.shape))
        if op is T.TRANSPOSE:
            src = [None] * n.ndim
            for i, p in enumerate(n.arg):
                src[p] = idx[i]
            return self.expr(n.srcs[0], tuple(src))
        if op is T.RESHAPE:
            return self.expr(n.srcs[0], reshape_index(idx, n.shape, n.srcs[0].shape))
        if op is INDEX:
            return self.expr(n.srcs[0], index_map(idx, n.arg, n.srcs[0].shape))
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
        if op in gather.GATHERS:
            return self._gather(n, idx)
        raise NotImplementedError(f"llvm backend: cannot inline operator {op.name!r} "
                                  f"({n.dtype} {fmt(n.shape)})")

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


