"""The CPU pass over tiles of samples: groups of loop IR for ``tiles.tile_loop``, and the
contractions over a tile's rows as BLAS calls or loop nests (mixed into the lowering,
``lower.py``; ``docs/architecture.md`` explains the design).
"""

from __future__ import annotations

import numpy as np

from symgrad.codegen import blas, reductions, tiles
from symgrad.codegen import loopir as L
from symgrad.codegen.program import Accumulator
from symgrad.expr import ops_tensor as T
from symgrad.expr.node import Expr

# A contraction over a tile's rows calls BLAS from this many multiply-adds per sample:
# measured (bench/README.md), a tile GEMM beat the loop nests from 4 x 4 (1.7x) to 256 x 10
# (14x); at 16 x 1 (a logistic regression's gradient) the two were even
BLAS_MIN_MACS = 32


class TilePass:
    """A CPU pass in tiles (the lowering's methods for it)."""

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
        prologue[:0] = self._partials_start(accs)
        kernel = self._kernel(f"pass{stage // 2 + 1}", prologue + [loop] + epilogue,
                              self.plan.batch, members)
        kernel.comment = f"tiles of {self.tile} samples" + "".join(
            f"; {note}" for note in self.tile_notes)
        _check_scratch(kernel, self.tile)
        self.tile = None
        return kernel, accs

    def _partials_start(self, accs: list) -> list:
        """This thread's partials set to their identity (before anything reads them)."""
        body: list = []
        for acc in accs:
            spec = self.buffers[acc.partial]
            idx, loops = self._loops(spec.shape)
            start = L.Const(reductions.identity(acc.kind, spec.dtype), np.dtype(spec.dtype))
            body += self._nest(loops, [L.Store(acc.partial, L.flat_offset(idx, spec.shape),
                                               start)])
        return body

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
        return (size >= BLAS_MIN_MACS and self.tile >= 8 and blas.available(n.dtype)
                and self.compilation.on("blas"))

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
            self.tile_notes.append(f"{label} += rows.T @ rows: BLAS gemm (loops for a tile "
                                   f"of under {blas.LOOPS_BELOW_K} samples)")
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
        how = "loops" if depth < blas.LOOPS_BELOW_K else "BLAS gemm"
        self.tile_notes.append(f"{self.labels.get(n, 'matmul')} = rows @ W: {how}")
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


def _elements(shape: tuple, batch: str | None) -> int:
    """Elements of ``shape`` without the batch axis (a symbolic length counts 64)."""
    size = 1
    for d in shape:
        if d != batch:
            size *= d if isinstance(d, int) else 64
    return size


def _main_stack_bytes() -> int:
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_STACK)
    return 64 << 20 if soft in (-1, resource.RLIM_INFINITY) else soft


# Tile scratch lives on the stack of whichever thread runs a slice, the caller's included
# (the pool's threads get ``native_pool.STACK_BYTES``, the main thread its limit, 8 MiB
# by default): at most that, less 1 MiB for everything else on it
SCRATCH_LIMIT = max(1 << 20, _main_stack_bytes() - (1 << 20))


def _check_scratch(kernel: L.Kernel, tile: int) -> None:
    """Refuse, with a clear error, a pass whose tile scratch would overflow a thread's stack
    (a graph of tens of thousands of operators, whose cut loops pass thousands of values
    through tile buffers), instead of crashing when it runs."""
    total = 0
    for s in L.statements(kernel.body):
        if isinstance(s, L.Alloc):
            size = s.size.value if isinstance(s.size, L.Const) else tile
            total += max(1, size) * np.dtype(s.dtype).itemsize
    if total > SCRATCH_LIMIT:
        raise NotImplementedError(
            f"{kernel.name}: the pass needs {total / 2**20:.1f} MiB of tile scratch at "
            f"{tile} samples per tile, over the {SCRATCH_LIMIT / 2**20:.0f} MiB the calling "
            f"thread's stack can hold; split the model into several compiled functions (or steps)")
