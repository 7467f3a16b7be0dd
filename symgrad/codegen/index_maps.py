"""Index maps: how a shape operator reads its source (lowering, ``lower.py``).

A transpose permutes indices, a slice offsets them, a broadcast drops them, a reshape
re-splits a flat offset; a scatter, a concatenation and a band matrix select among their
sources by comparing indices. Each returns loop IR; nothing is stored.
"""

from __future__ import annotations

from symgrad.codegen import loopir as L
from symgrad.codegen.gather import gather_source, index_position
from symgrad.codegen.schedule import LEAVES, per_sample
from symgrad.expr.node import Expr


class IndexMaps:
    """The lowering's operators that select among sources by index (mixed into it)."""

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
                start, step = slice_start(e, n.shape[axis]), e[3]
                length = L.size_expr(g.shape[len(src_idx)])
                j = L.IOp("-", i, start)
                if step > 0:
                    conds.append(L.IOp("<=", start, i))
                else:
                    conds.append(L.IOp("<=", i, start))
                    j = L.IOp("-", start, i)
                s = abs(step)
                if s != 1:
                    conds.append(L.IOp("==", L.IOp("%", j, L.Const(s, L.INT)),
                                       L.Const(0, L.INT)))
                    j = L.IOp("//", j, L.Const(s, L.INT))
                conds.append(L.IOp("<", j, length))
                src_idx.append(L.IOp("clamp", j, length))  # safe if unused
            axis += 1
        value = self.expr(g, tuple(src_idx))
        cond = conds[0] if conds else None
        for c in conds[1:]:
            cond = L.IOp("and", cond, c)
        if cond is None:
            return value
        return L.Select(cond, value, L.Const(0, n.dtype), n.dtype)

    def _gather(self, n: Expr, idx: tuple) -> L.Expr:
        """take / take_along_axis: the source read where the index buffer points."""
        a, ids = n.srcs
        batch = self.plan.batch
        if (batch is not None and a.shape[n.arg[0]] == batch and a.op not in LEAVES
                and per_sample(n, batch) and per_sample(a, batch)):
            # the schedule keeps a pass's samples apart: another sample of a value computed
            # in the same pass is not there to read
            raise NotImplementedError(
                f"the compiled backends cannot yet gather along the batch axis {batch!r} of "
                f"a computed value ({n.op.name} of {a.op.name} {a.shape}); gather the "
                "input first, or use backend='numpy'")
        label = self.expr(ids, index_position(n, idx))
        return self.expr(a, gather_source(n, idx, label))

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


def bcast(idx: tuple, out_shape: tuple, src_shape: tuple) -> tuple:
    """Index of a broadcast source: leading axes dropped, stretched axes pinned to 0."""
    lead = len(out_shape) - len(src_shape)
    return tuple(L.Const(0, L.INT) if d == 1 and out_shape[lead + a] != 1 else idx[lead + a]
                 for a, d in enumerate(src_shape))


def reshape_index(idx: tuple, out_shape: tuple, src_shape: tuple) -> tuple:
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


def index_map(idx: tuple, key: tuple, src_shape: tuple) -> tuple:
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
            src.append(L.iadd(slice_start(e, src_shape[axis_in]), L.imul(next(it), e[3])))
        axis_in += 1
    return tuple(src)


def slice_start(e: tuple, dim: int | str) -> L.Expr:
    """The first index a slice entry reads along an axis of length ``dim``: a constant, or
    for a slice of a symbolic dimension (``dslice``) Python's rule at run time (a start
    past the end only matters when the slice is empty, and then nothing is read)."""
    start, step = e[1], e[3]
    if e[0] == "slice":
        return L.Const(start, L.INT)
    n = L.size_expr(dim)
    if start is None:
        return L.Const(0, L.INT) if step > 0 else L.iadd(n, -1)
    if step > 0:  # max(0, N + start) for a negative start
        return L.Const(start, L.INT) if start >= 0 else \
            L.IOp("clamp", L.iadd(n, start), L.iadd(n, 1))
    # a negative step starts at min(start, N - 1), or at N + start
    return L.IOp("clamp", L.Const(start, L.INT), n) if start >= 0 else L.iadd(n, start)
