"""Indexing by integer arrays in compiled code (the stanzas are in ``expr/ops_gather.py``).

A gather (``take``, ``take_along_axis``) is an index map whose source index is a load of the
index buffer: the index, wrapped once if negative and clamped (the bounds are checked before
the kernels run, ``runtime/compiled.py``; the clamp only keeps a read in bounds). Its
adjoint, a scatter-add, is rewritten before scheduling as a comparison and a sum over the
index positions (``dE[v, :] = sum_n where(ids[n] == v, g[n, :], 0)``): when the indices run
over the batch, that sum is an ordinary accumulator over the batch (a partial per thread,
combined in thread order, so results are deterministic), reusing the reductions' lowering.
It costs ``size`` comparisons per cotangent element (the rows of ``E``), not one: correct
first; a direct scatter into the partial is the faster lowering still to write.
"""

from __future__ import annotations

from symgrad.codegen import loopir as L
from symgrad.expr import functions as F
from symgrad.expr import tensors
from symgrad.expr.node import Expr, toposort
from symgrad.expr.ops_gather import SCATTER_ADD, SCATTER_ALONG, TAKE, TAKE_ALONG
from symgrad.expr.shapes import fmt


def position(label: L.Expr, dim: int | str) -> L.Expr:
    """The source index of a gathered index ``label`` along an axis of length ``dim``."""
    n = L.size_expr(dim)
    wrapped = L.Select(L.IOp("<", label, L.Const(0, L.INT)), L.iadd(label, n),
                       L.IOp("+", label, L.Const(0, L.INT)), L.INT)
    return L.IOp("clamp", wrapped, n)


def gather_source(n: Expr, idx: tuple, label: L.Expr) -> tuple:
    """The index into ``n``'s source array of output element ``idx``, given the index
    value ``label`` read for it."""
    a = n.srcs[0]
    axis = n.arg[0]
    width = n.srcs[1].ndim if n.op is TAKE else 1
    return idx[:axis] + (position(label, a.shape[axis]),) + idx[axis + width:]


def index_position(n: Expr, idx: tuple) -> tuple:
    """Where in the index array the index of output element ``idx`` lies."""
    axis, ids = n.arg[0], n.srcs[1]
    return idx[axis:axis + ids.ndim] if n.op is TAKE else idx


def expand_scatters(outputs: list[Expr]) -> list[Expr]:
    """Every scatter-add of the graph rewritten as a comparison and a sum (see above)."""
    memo: dict[Expr, Expr] = {}
    for n in toposort(list(outputs)):
        srcs = tuple(memo[s] for s in n.srcs)
        if n.op is SCATTER_ADD or n.op is SCATTER_ALONG:
            memo[n] = _expanded(n, *srcs)
        else:
            memo[n] = n if srcs == n.srcs else Expr(n.op, srcs, n.arg)
    return [memo[o] for o in outputs]


def _expanded(n: Expr, g: Expr, ids: Expr) -> Expr:
    axis, _, shape = n.arg
    size = shape[axis]
    if not isinstance(size, int):
        raise NotImplementedError(
            f"the compiled backends cannot yet differentiate {n.op.name} into a symbolic "
            f"axis (axis {axis} of {fmt(shape)}): gathering rows of a batched array; use "
            "backend='numpy'")
    wrapped = F.where(ids < 0, ids + size, ids)
    hit = tensors.one_hot(wrapped, size, "bool")  # ids.shape + (size,)
    if n.op is SCATTER_ADD:
        pre, post, k = shape[:axis], shape[axis + 1:], ids.ndim
        hit = tensors.reshape(hit, (1,) * len(pre) + ids.shape + (size,) + (1,) * len(post))
        g = tensors.reshape(g, pre + ids.shape + (1,) + post)
        summed = tuple(range(axis, axis + k))
    else:  # the class axis moved next to the gathered one
        nd = ids.ndim
        hit = tensors.transpose(hit, tuple(range(axis + 1)) + (nd,) + tuple(range(axis + 1, nd)))
        g = tensors.reshape(g, g.shape[:axis + 1] + (1,) + g.shape[axis + 1:])
        summed = (axis,)
    picked = F.where(hit, g, 0)
    if not summed:
        return tensors.reshape(picked, shape)
    return tensors.sum(picked, axis=summed)


GATHERS = (TAKE, TAKE_ALONG)

__all__ = ["position", "gather_source", "index_position", "expand_scatters", "GATHERS"]
