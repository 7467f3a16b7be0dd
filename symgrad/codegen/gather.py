"""Indexing by integer arrays in compiled code (the stanzas are in ``expr/ops_gather.py``).

A gather (``take``, ``take_along_axis``) is an index map whose source index is a load of the
index buffer: the index, wrapped once if negative and clamped (the bounds are checked before
the kernels run, ``runtime/compiled.py``; the clamp only keeps a read in bounds).

Its adjoint, a scatter-add, takes one of two forms:

- **Indices that run over the batch** (an embedding's ``take(E, ids)`` with ``ids`` per
  sample), on the CPU: an accumulator over the batch whose element is named by the index
  (``partial[ids[n], :] += g[n, :]``, ``lower.py``'s ``_accumulator``): one add per
  cotangent element, into the thread's own partial, combined in thread order as every
  sum over the batch is, so the result is deterministic. (Written as a comparison and a
  sum, it cost a comparison per row of ``E`` for each element: 10,000 rows, a 1,000x
  slower step.)
- **Everything else** (indices without the batch, a scatter along another axis, the GPU,
  whose partials are per block): rewritten before scheduling as a comparison and a sum
  over the index positions (``dE[v, :] = sum_k where(ids[k] == v, g[k, :], 0)``), which
  the reductions' lowering then computes.
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


def scatters_over_batch(n: Expr, batch: str | None) -> bool:
    """Whether ``n`` is a scatter-add whose indices run over the batch: the cotangent rows
    of every sample added into one array without the batch (an accumulator)."""
    if n.op is not SCATTER_ADD or batch is None or batch in n.shape:
        return False
    g, ids = n.srcs
    return g.shape.count(batch) == 1 and ids.shape.count(batch) == 1


def scatter_target(n: Expr, g_idx: tuple, label: L.Expr) -> tuple:
    """The element of scatter-add ``n``'s output that cotangent element ``g_idx`` is added
    to, given the index value ``label`` read for it."""
    axis, _, shape = n.arg
    k = n.srcs[1].ndim
    return g_idx[:axis] + (position(label, shape[axis]),) + g_idx[axis + k:]


def expand_scatters(outputs: list[Expr], batch: str | None = None) -> list[Expr]:
    """Every scatter-add of the graph rewritten as a comparison and a sum (see above), but
    those whose indices run over ``batch`` (None: all of them)."""
    memo: dict[Expr, Expr] = {}
    for n in toposort(list(outputs)):
        srcs = tuple(memo[s] for s in n.srcs)
        direct = scatters_over_batch(n, batch)
        if (n.op is SCATTER_ADD or n.op is SCATTER_ALONG) and not direct:
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

__all__ = ["position", "gather_source", "index_position", "expand_scatters",
           "scatters_over_batch", "scatter_target", "GATHERS"]
