"""Indexing by integer arrays: ``take`` (``E[ids]``), ``take_along_axis``, and their adjoints.

``take(a, ids, axis)`` has shape ``a.shape[:axis] + ids.shape + a.shape[axis+1:]``;
``take_along_axis(a, idx, axis)`` has ``idx``'s shape (the builder broadcasts ``a`` and
``idx`` on the other axes first). Indices are int32; a negative index counts from the end
once (NumPy's ``mode="raise"``), anything outside ``[-size, size)`` raises NumPy's
``IndexError``, naming the indices. The derivative is a scatter-add: ids may repeat, and
their contributions add up (``np.add.at``). The argument of each node is ``(axis, label)``
(the scatters add the shape they fill): ``label`` names the indices in errors.
"""

from __future__ import annotations

import numpy as np

from symgrad.expr.node import INTERNAL, SHAPE, Expr, OpDef
from symgrad.expr.shapes import fmt


def checked(ids: np.ndarray, size: int, axis: int, label: str) -> np.ndarray:
    """``ids`` with negatives wrapped once (int64), after the bounds check NumPy makes."""
    ids = np.asarray(ids)
    if ids.size:
        lo, hi = int(ids.min()), int(ids.max())
        if lo < -size or hi >= size:
            bad = lo if lo < -size else hi
            raise IndexError(f"index {bad} is out of bounds for axis {axis} with size {size}"
                             f" ({label}: valid indices are {-size} to {size - 1})")
    ids = ids.astype(np.int64)
    return np.where(ids < 0, ids + size, ids)


def _take_infer(srcs, arg):
    a, ids = srcs
    axis = arg[0]
    return a.shape[:axis] + ids.shape + a.shape[axis + 1:], a.dtype


def _take_eval(arg, a, ids):
    axis, label = arg[:2]
    return np.take(a, checked(ids, a.shape[axis], axis, label), axis=axis)


def _scatter_add_eval(arg, g, ids):
    axis, label, shape = arg
    out = np.zeros(shape, g.dtype)
    flat = checked(ids, shape[axis], axis, label).reshape(-1)
    # move the gathered axes of g to the front, one row per index: out[.., ids[j], ..] += g_j
    lead = tuple(range(axis, axis + ids.ndim))
    rows = np.moveaxis(g, lead, tuple(range(len(lead)))).reshape((flat.size,) + shape[:axis]
                                                                  + shape[axis + 1:])
    np.add.at(np.moveaxis(out, axis, 0), flat, rows)
    return out


def _along_infer(srcs, arg):
    return srcs[1].shape, srcs[0].dtype


def _along_index(ids: np.ndarray, axis: int) -> tuple:
    """The fancy index of ``take_along_axis``: ``ids`` on ``axis``, aranges on the others."""
    grid = list(np.indices(ids.shape, sparse=True))
    grid[axis] = ids
    return tuple(grid)


def _along_eval(arg, a, ids):
    axis, label = arg[:2]
    return a[_along_index(checked(ids, a.shape[axis], axis, label), axis)]


def _scatter_along_eval(arg, g, ids):
    axis, label, shape = arg
    out = np.zeros(shape, g.dtype)
    np.add.at(out, _along_index(checked(ids, shape[axis], axis, label), axis), g)
    return out


def _bind(arg, sizes):
    axis, label, shape = arg
    return axis, label, tuple(sizes[d] if isinstance(d, str) else d for d in shape)


def _fmt(arg) -> str:
    return f"axis={arg[0]}" + (f", {fmt(arg[2])}" if len(arg) > 2 else "")


def _shifted(arg, nb: int, lead: tuple = ()) -> tuple:
    """The argument for tangents with ``nb`` extra leading axes."""
    return (arg[0] + nb, arg[1]) + ((lead + arg[2],) if len(arg) > 2 else ())


# a[..., ids, ...] along one axis: the derivative adds the cotangent at the ids.
TAKE = OpDef("take", SHAPE, _take_infer, _take_eval, fn="take", fmt_arg=_fmt,
             vjp=lambda g, out, a, ids: (
                 Expr(SCATTER_ADD, (g, ids), out.arg + (a.shape,)), None),
             jvp=lambda ts, out, nb: None if ts[0] is None else
             Expr(TAKE, (ts[0], out.srcs[1]), _shifted(out.arg, nb)))

# zeros(shape) with g added at the ids (repeats add up): the adjoint of take.
SCATTER_ADD = OpDef("scatter_add", SHAPE, lambda srcs, a: (a[2], srcs[0].dtype),
                    _scatter_add_eval, fn="scatter_add", fmt_arg=_fmt,
                    props=frozenset({INTERNAL}), extra={"bind": _bind},
                    vjp=lambda g, out, x, ids: (Expr(TAKE, (g, ids), out.arg[:2]), None),
                    jvp=lambda ts, out, nb: None if ts[0] is None else Expr(
                        SCATTER_ADD, (ts[0], out.srcs[1]),
                        _shifted(out.arg, nb, ts[0].shape[:nb])))

# a[i, ..., idx[i, ..., j, ...], ...]: a and idx have one shape but on ``axis``.
TAKE_ALONG = OpDef("take_along_axis", SHAPE, _along_infer, _along_eval, fn="take_along_axis",
                   fmt_arg=_fmt,
                   vjp=lambda g, out, a, ids: (
                       Expr(SCATTER_ALONG, (g, ids), out.arg + (a.shape,)), None),
                   jvp=lambda ts, out, nb: None if ts[0] is None else Expr(
                       TAKE_ALONG, (ts[0], _lead(out.srcs[1], ts[0].shape[:nb])),
                       _shifted(out.arg, nb)))

SCATTER_ALONG = OpDef("scatter_along_axis", SHAPE, lambda srcs, a: (a[2], srcs[0].dtype),
                      _scatter_along_eval, fn="scatter_along_axis", fmt_arg=_fmt,
                      props=frozenset({INTERNAL}), extra={"bind": _bind},
                      vjp=lambda g, out, x, ids: (Expr(TAKE_ALONG, (g, ids), out.arg[:2]),
                                                  None),
                      jvp=lambda ts, out, nb: None if ts[0] is None else Expr(
                          SCATTER_ALONG, (ts[0], _lead(out.srcs[1], ts[0].shape[:nb])),
                          _shifted(out.arg, nb, ts[0].shape[:nb])))


def _lead(ids: Expr, lead: tuple) -> Expr:
    """``ids`` broadcast over the tangents' leading axes (take_along_axis needs one shape)."""
    from symgrad.expr.node import F

    return F.broadcast_to(ids, lead + ids.shape) if lead else ids


GATHER_OPS = (TAKE, SCATTER_ADD, TAKE_ALONG, SCATTER_ALONG)

__all__ = ["TAKE", "SCATTER_ADD", "TAKE_ALONG", "SCATTER_ALONG", "GATHER_OPS", "checked"]
