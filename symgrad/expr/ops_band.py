"""Banded matrices: a sum of diagonals, each filled from a vector.

``bands(shape, (v, offset, axis), ...)`` is a matrix of ``shape`` that is zero except on
diagonals. A band with ``axis=1`` is indexed by column, ``M[j + offset, j] = v[j]``; with
``axis=0`` by row, ``M[i, i + offset] = v[i]``; entries that fall outside the matrix are
dropped. Jacobians and Hessians of vector functions built from slices and elementwise
operators stay in this form (the identity is one band), so a tridiagonal Hessian is three
vectors, not a dense d x d formula; the simplifier's ``STRUCTURE`` rules keep it so.
"""

from __future__ import annotations

import numpy as np

from symgrad.expr.node import INTERNAL, SHAPE, Expr, F, OpDef
from symgrad.expr.shapes import ShapeError, fmt


def _infer(srcs, arg):
    shape, layout = arg
    for v, (_, axis) in zip(srcs, layout):
        if v.ndim != 1 or v.shape[0] != shape[axis]:
            raise ShapeError(f"bands: a band on axis {axis} of a {fmt(shape)} matrix needs "
                             f"a vector of length {shape[axis]}, got shape {fmt(v.shape)}")
    return shape, srcs[0].dtype


def _positions(n: int, offset: int, axis: int, shape: tuple) -> tuple:
    """(rows, cols, valid) of band entries 0..n-1."""
    idx = np.arange(n)
    other = idx + offset
    valid = (other >= 0) & (other < shape[1 - axis])
    rows, cols = (other, idx) if axis == 1 else (idx, other)
    return rows[valid], cols[valid], valid


def _eval(arg, *vectors):
    shape, layout = arg
    out = np.zeros(shape, vectors[0].dtype)
    flat = out.reshape(-1)  # flat positions: cheaper than fancy 2-D indexing
    for v, (offset, axis) in zip(vectors, layout):
        rows, cols, valid = _positions(len(v), offset, axis, shape)
        flat[rows * shape[1] + cols] += v[valid]  # positions within a band are distinct
    return out


def _mask(shape, offset, axis, dtype):
    """The 0/1 pattern of one band (for the derivative with respect to its vector)."""
    ones = F.broadcast_to(F.cast(1, dtype), (shape[axis],))
    return Expr(BANDS, (ones,), (shape, ((offset, axis),)))


def _vjp(g, out, *vectors):
    shape, layout = out.arg
    # d/dv[j] of sum(g*M) is g at v[j]'s position: mask g to the band, then sum across it
    return tuple(F.sum(g * _mask(shape, off, axis, g.dtype), axis=1 - axis)
                 for (off, axis) in layout)


def _jvp(ts, out, nb):
    if nb:
        raise NotImplementedError("forward derivatives of banded matrices with a batch of "
                                  "tangents (third derivatives) are not supported")
    kept = [(t, lay) for t, lay in zip(ts, out.arg[1]) if t is not None]
    return band_matrix(out.shape, [(t, off, axis) for t, (off, axis) in kept])


def _fmt(arg) -> str:
    shape, layout = arg
    return f"{fmt(shape)}, " + ", ".join(f"offset={o}/axis={a}" for o, a in layout)


BANDS = OpDef("bands", SHAPE, _infer, _eval, fn="bands", fmt_arg=_fmt, vjp=_vjp, jvp=_jvp,
              props=frozenset({INTERNAL}))


def band_matrix(shape: tuple, bands: list[tuple[Expr, int, int]]) -> Expr:
    """A ``shape`` matrix from ``(vector, offset, axis)`` bands (see the module doc)."""
    if not bands:
        raise ValueError("band_matrix needs at least one band")
    vectors = tuple(v for v, _, _ in bands)
    layout = tuple((int(o), int(a)) for _, o, a in bands)
    return Expr(BANDS, vectors, (tuple(shape), layout))


BAND_OPS = (BANDS,)
