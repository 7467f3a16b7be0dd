"""Reductions and scans with NumPy's names and semantics: ``prod``, ``var``, ``std``,
``norm``, ``cumsum``, ``cumprod``.

``var`` and ``std`` are written with existing operators, as NumPy computes them:
``sum((x - mean(x))**2) / max(n - ddof, 0)`` (so 0 samples, or ``n <= ddof``, give nan or
inf as NumPy does), ``std`` its square root through ``safe_sqrt`` (derivative 0 at a zero
variance, where ``sqrt``'s would be ``inf * 0 = nan``). ``norm`` is ``np.linalg.norm``
spelled with ``sum``, ``abs``, ``max``/``min`` and ``safe_sqrt``.

The scans run along an axis of fixed length ``n``: ``cumsum`` as a product with the
upper-triangular matrix of ones (``x @ triu(ones((n, n)))``: one contraction, which the
backends already compile well; the ``n**2`` multiply-adds are cheap against the ``n``-long
chain of dependent additions a loop would be at the lengths of feature axes), ``cumprod``
as the chain ``out[k] = out[k-1] * x[k]`` of ``n`` multiplies (a product has no linear
form; each step is an exact multiply, so its derivative is right with zeros in ``x``). A
scan along a symbolic (batch) axis is refused: the schedule has no carried accumulator
across samples.
"""

from __future__ import annotations

import math

import numpy as np

from symgrad.expr import ops_reduce as R
from symgrad.expr import tensors as T
from symgrad.expr.dtypes import INT32
from symgrad.expr.functions import Operand, as_expr, cast, maximum
from symgrad.expr.node import Expr
from symgrad.expr.ops_tensor import count
from symgrad.expr.shapes import ShapeError, fmt, normalize_axes

__all__ = ["prod", "var", "std", "norm", "cumsum", "cumprod"]


def prod(x: Operand, axis: object = None, keepdims: bool = False) -> Expr:
    """Product over ``axis`` (an int, a tuple, or ``None`` for all); int32 and bool give
    int32, as ``sum``. ``sg.prod(x, axis=1)``."""
    return T._reduce(R.PROD, x, axis, keepdims)


def _float(x: Operand) -> Expr:
    return T.cast_float(x)


def var(x: Operand, axis: object = None, ddof: int = 0, keepdims: bool = False) -> Expr:
    """Variance over ``axis``, ``sum((x - mean(x))**2) / (n - ddof)`` as ``np.var``; ints
    give float64. ``sg.var(X, axis=0, ddof=1)``."""
    x = _float(x)
    if isinstance(ddof, bool) or not isinstance(ddof, (int, np.integer)):
        raise TypeError(f"var: ddof must be an int, got {ddof!r}")
    axes = normalize_axes(axis, x.ndim, "var: axis")
    centred = x - T.mean(x, axes, keepdims=True)
    total = T.sum(centred * centred, axes, keepdims=keepdims)
    # NumPy divides by max(n - ddof, 0): n <= ddof gives inf (or nan for 0/0), with n symbolic
    n = count(x.shape, axes, x.dtype)
    return total / (n if ddof == 0 else maximum(n - int(ddof), 0))


def std(x: Operand, axis: object = None, ddof: int = 0, keepdims: bool = False) -> Expr:
    """Standard deviation, ``sqrt(var(x, axis, ddof))`` as ``np.std``; its derivative is 0
    where the variance is 0. ``sg.std(x, ddof=1)``."""
    return Expr(R.SAFE_SQRT, (var(x, axis, ddof, keepdims),))


def _sqrt_sum_sq(x: Expr, axes, keepdims: bool) -> Expr:
    return Expr(R.SAFE_SQRT, (T.sum(x * x, axes, keepdims=keepdims),))


def _vector_norm(x: Expr, ord: object, axes: tuple, keepdims: bool) -> Expr:  # noqa: A002
    if ord is None or ord == 2:
        return _sqrt_sum_sq(x, axes, keepdims)
    a = abs(x)
    if ord == math.inf:
        return T.max(a, axes, keepdims=keepdims)
    if ord == -math.inf:
        return T.min(a, axes, keepdims=keepdims)
    if ord == 1:
        return T.sum(a, axes, keepdims=keepdims)
    if ord == 0:
        return T.sum(cast(x != 0, x.dtype), axes, keepdims=keepdims)
    if isinstance(ord, (int, float)) and not isinstance(ord, bool):
        return T.sum(a ** float(ord), axes, keepdims=keepdims) ** (1.0 / float(ord))
    raise ValueError(f"norm: invalid ord {ord!r} for a vector (None, 2, 1, inf, -inf, 0 "
                     "or a number)")


def _matrix_norm(x: Expr, ord: object, axes: tuple, keepdims: bool) -> Expr:  # noqa: A002
    r, c = axes
    if ord in (None, "fro"):
        return _sqrt_sum_sq(x, axes, keepdims)
    a = abs(x)
    # NumPy: 1 / -1 take the largest / smallest column sum, inf / -inf the row sums
    along = {1: r, -1: r, math.inf: c, -math.inf: c}.get(ord)  # type: ignore[call-overload]
    if along is None:
        raise ValueError(f"norm: ord {ord!r} for a matrix is not supported (singular "
                         "values); use None/'fro', 1, -1, inf or -inf")
    sums = T.sum(a, along, keepdims=True)
    pick = T.max if ord in (1, math.inf) else T.min
    return pick(sums, axes, keepdims=keepdims)


def norm(x: Operand, ord: object = None, axis: object = None,  # noqa: A002
         keepdims: bool = False) -> Expr:
    """``np.linalg.norm``: the 2-norm of all elements by default; for vectors ``ord`` None
    or 2, 1, inf, -inf, 0 or a number; for matrices (2-D ``x`` or a 2-tuple ``axis``)
    None/'fro', 1, -1, inf, -inf. The 2-norm's derivative is 0 at 0. ``sg.norm(w)``."""
    x = _float(x)
    if axis is None:
        if ord is None:
            return _sqrt_sum_sq(x, tuple(range(x.ndim)), keepdims)
        if x.ndim not in (1, 2):
            raise ValueError(f"norm: ord={ord!r} needs a 1-D or 2-D array or an axis, got "
                             f"shape {fmt(x.shape)}")
        axis = tuple(range(x.ndim))
    given = (axis,) if isinstance(axis, int) else tuple(axis)  # type: ignore[arg-type]
    axes = normalize_axes(axis, x.ndim, "norm: axis")
    if len(axes) == 1:
        return _vector_norm(x, ord, axes, keepdims)
    if len(axes) == 2:
        if ord not in (None, "fro") and given[0] % x.ndim > given[1] % x.ndim:
            axes = axes[::-1]  # (1, 0): rows and columns exchange roles, as in NumPy
        return _matrix_norm(x, ord, axes, keepdims)
    raise ValueError(f"norm: axis must name one or two axes, got {axis!r}")


def _scan_axis(x: Expr, axis: object, name: str) -> tuple[Expr, int]:
    """``x`` (flattened when ``axis`` is None, as NumPy does) and the scan's axis."""
    if axis is None:
        symbolic = [d for d in x.shape if isinstance(d, str)]
        if symbolic:
            raise ShapeError(f"{name} of {x} flattened (shape {fmt(x.shape)}): the length "
                             f"{symbolic[0]!r} is symbolic, and a scan runs along a "
                             "fixed-length axis only; give a feature axis")
        x, axis = T.reshape(x, (-1,)), 0
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{name}: axis must be an int or None, got {axis!r}")
    (a,) = normalize_axes(int(axis), x.ndim, f"{name}: axis")
    if isinstance(x.shape[a], str):
        raise ShapeError(f"{name} along axis {a} of {x} (shape {fmt(x.shape)}): the length "
                         f"{x.shape[a]!r} is symbolic, and a scan runs along a fixed-length "
                         "axis only; scan a feature axis, or feed the batch as a fixed axis")
    return x, a


def _moved(x: Expr, a: int) -> tuple[Expr, tuple | None]:
    """``x`` with axis ``a`` last, and the permutation that puts it back (None: none)."""
    if a == x.ndim - 1:
        return x, None
    perm = tuple(i for i in range(x.ndim) if i != a) + (a,)
    return T.transpose(x, perm), tuple(int(i) for i in np.argsort(perm))


def cumsum(x: Operand, axis: int | None = None) -> Expr:
    """Cumulative sum along ``axis`` (``None``: of the flattened array), as ``np.cumsum``;
    int32 and bool give int32. ``sg.cumsum(x, axis=1)``."""
    x = as_expr(x)
    x, a = _scan_axis(x, axis, "cumsum")
    if x.dtype.kind in "bi":
        x = cast(x, INT32)
    n = x.shape[a]
    if n == 0:
        return x
    moved, back = _moved(x, a)
    tri = np.triu(np.ones((n, n), dtype=x.dtype))
    out = T.matmul(moved, tri)
    return out if back is None else T.transpose(out, back)


def cumprod(x: Operand, axis: int | None = None) -> Expr:
    """Cumulative product along ``axis`` (``None``: of the flattened array), as
    ``np.cumprod``; int32 and bool give int32. ``sg.cumprod(x, axis=0)``."""
    x = as_expr(x)
    x, a = _scan_axis(x, axis, "cumprod")
    if x.dtype.kind in "bi":
        x = cast(x, INT32)
    n = x.shape[a]
    if n <= 1:
        return x
    lead = (slice(None),) * a
    run = x[lead + (slice(0, 1),)]
    parts = [run]
    for k in range(1, n):
        run = run * x[lead + (slice(k, k + 1),)]
        parts.append(run)
    return T.concat(parts, a)

