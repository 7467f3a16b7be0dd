"""NumPy's shape conveniences, each a composition of existing operators (so every backend
and every derivative comes with it): ``squeeze``, ``expand_dims``, ``ravel``/``flatten``,
``stack``, ``split``, ``outer``, ``diagonal``, ``trace``, ``tril``/``triu``, ``pad``.

Symbolic dimensions (``N``) stay axes of their own: an operation that would merge one with
another axis (``ravel`` of an ``(N, 3)`` array) or needs its length as a number (``split``
of an ``N`` axis into equal sections, a mask over it) raises a ``ShapeError`` naming it.
"""

from __future__ import annotations

from math import prod
from typing import Sequence

import numpy as np

from symgrad.expr.functions import Operand, as_expr, cast, multiply, where
from symgrad.expr.node import Expr
from symgrad.expr.shapes import ShapeError, fmt, normalize_axes
from symgrad.expr.tensors import broadcast_to, concat, index, reshape, sum, transpose

__all__ = ["squeeze", "expand_dims", "ravel", "flatten", "stack", "split", "outer",
           "diagonal", "trace", "tril", "triu", "pad"]


def _concrete(x: Expr, axes: Sequence[int], what: str) -> None:
    """Refuse symbolic lengths on ``axes`` (``what`` needs them as numbers)."""
    for a in axes:
        if isinstance(x.shape[a], str):
            raise ShapeError(f"{what} of an array of shape {fmt(x.shape)}: axis {a} has the "
                             f"symbolic length {x.shape[a]}, but needs a known length")


def squeeze(x: Operand, axis: object = None) -> Expr:
    """``x`` without its length-1 axes (or only those in ``axis``). ``sg.squeeze(y)``."""
    x = as_expr(x)
    if axis is None:
        axes = tuple(i for i, d in enumerate(x.shape) if d == 1)
    else:
        axes = normalize_axes(axis, x.ndim, "squeeze: axis")
        for a in axes:
            if x.shape[a] != 1:
                raise ShapeError(f"squeeze: axis {a} of shape {fmt(x.shape)} has length "
                                 f"{x.shape[a]}; only axes of length 1 can be squeezed out")
    return reshape(x, tuple(d for i, d in enumerate(x.shape) if i not in axes))


def expand_dims(x: Operand, axis: object) -> Expr:
    """``x`` with new length-1 axes at ``axis`` (positions in the result, as NumPy's).

    >>> sg.expand_dims(sg.input("x"), 1).shape
    ('N', 1)
    """
    x = as_expr(x)
    n = len(axis) if isinstance(axis, (tuple, list)) else 1
    axes = normalize_axes(axis, x.ndim + n, "expand_dims: axis")
    dims = iter(x.shape)
    return reshape(x, tuple(1 if i in axes else next(dims) for i in range(x.ndim + n)))


def ravel(x: Operand) -> Expr:
    """The elements as a vector, in row-major order. An array with a symbolic dimension
    ravels only when its other dimensions are all 1 (``(N, 1)`` -> ``(N,)``): symgrad
    keeps a symbolic dimension as an axis of its own, never merged with another."""
    x = as_expr(x)
    syms = [d for d in x.shape if isinstance(d, str)]
    if not syms:
        return reshape(x, (prod(x.shape),))
    if prod(d for d in x.shape if isinstance(d, int)) != 1 or len(syms) > 1:
        raise ShapeError(f"ravel of an array of shape {fmt(x.shape)}: the symbolic "
                         f"dimension {syms[0]} cannot be merged with other axes (symbolic "
                         f"dimensions stay axes of their own); reshape keeping it instead, "
                         f"e.g. x.reshape(({syms[0]!r}, -1))")
    return reshape(x, (syms[0],))


def flatten(x: Operand) -> Expr:
    """``ravel``: nodes are immutable, so NumPy's copy-or-view distinction does not arise."""
    return ravel(x)


def size_of_expr(x: Expr) -> int:
    """``x.size``: the number of elements, an int. A symbolic dimension has no number until
    the graph is fed, so a symbolic shape raises ``TypeError`` naming it (an expression in
    its place would compare unequal to every int, silently)."""
    syms = [d for d in x.shape if isinstance(d, str)]
    if syms:
        raise TypeError(f"the size of an expression of shape {fmt(x.shape)} is not an int: "
                        f"dimension {syms[0]} is symbolic (bound only when the graph is "
                        f"fed); use sg.mean for averages over it")
    return prod(x.shape)


def len_of_expr(x: Expr) -> int:
    """``len(x)``: the first dimension; ``TypeError`` for a 0-d or a symbolic one."""
    if x.ndim == 0:
        raise TypeError("len() of a 0-dimensional expression (it has no first axis)")
    if isinstance(x.shape[0], str):
        raise TypeError(f"len() of an expression of shape {fmt(x.shape)}: its first "
                        f"dimension {x.shape[0]} is symbolic (bound only when the graph is "
                        f"fed) and len() must return an int; use x.shape[0]")
    return x.shape[0]


def stack(arrays: Sequence[Operand], axis: int = 0) -> Expr:
    """Join arrays of one shape along a new axis. ``sg.stack([a, b], axis=1)``: two
    ``(N, 3)`` arrays give an ``(N, 2, 3)`` one."""
    nodes = [as_expr(v) for v in arrays]
    if not nodes:
        raise ValueError("stack needs at least one array")
    shapes = {n.shape for n in nodes}
    if len(shapes) > 1:
        raise ShapeError(f"stack: all arrays must have the same shape, got "
                         f"{', '.join(fmt(n.shape) for n in nodes)}")
    ax = normalize_axes(axis, nodes[0].ndim + 1, "stack: axis")[0]
    return concat([expand_dims(n, ax) for n in nodes], ax)


def _along(x: Expr, axis: int, key: object) -> Expr:
    return index(x, (slice(None),) * axis + (key,))


def split(x: Operand, indices_or_sections: object, axis: int = 0) -> list[Expr]:
    """NumPy's ``split``: ``k`` (an int) equal sections, or the pieces between the
    ``indices`` of a list (``[2, 5]``: ``x[:2], x[2:5], x[5:]``), as a list of expressions.
    An axis of symbolic length splits at indices, not into equal sections."""
    x = as_expr(x)
    if x.ndim == 0:
        raise ShapeError("split: a 0-dimensional array has no axis to split")
    ax = normalize_axes(axis, x.ndim, "split: axis")[0]
    d = x.shape[ax]
    if isinstance(indices_or_sections, (int, np.integer)) and not isinstance(
            indices_or_sections, bool):
        k = int(indices_or_sections)
        if k <= 0:
            raise ValueError(f"split: the number of sections must be positive, got {k}")
        if isinstance(d, str):
            raise ShapeError(f"split of shape {fmt(x.shape)} into {k} equal sections: axis "
                             f"{ax} has the symbolic length {d}; give the split indices "
                             f"instead")
        if d % k:
            raise ValueError(f"split: axis {ax} of shape {fmt(x.shape)} (length {d}) does "
                             f"not divide into {k} equal sections")
        cuts = [i * (d // k) for i in range(1, k)]
    else:
        try:
            cuts = [int(c) for c in indices_or_sections]  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise TypeError(f"split: indices_or_sections must be an int or a sequence of "
                            f"ints, got {indices_or_sections!r}") from None
    return [_along(x, ax, slice(a, b)) for a, b in zip([0, *cuts], [*cuts, None])]


def outer(a: Operand, b: Operand) -> Expr:
    """``out[i, j] = a[i] * b[j]`` of the raveled operands. ``sg.outer(u, v)``."""
    u, v = ravel(a), ravel(b)
    return multiply(u[:, None], v[None, :])


def _diag_axes(x: Expr, axis1: int, axis2: int, name: str) -> tuple[int, int]:
    if x.ndim < 2:
        raise ShapeError(f"{name} needs an array of at least two dimensions, got shape "
                         f"{fmt(x.shape)}")
    a1 = normalize_axes(axis1, x.ndim, f"{name}: axis1")[0]
    a2 = normalize_axes(axis2, x.ndim, f"{name}: axis2")[0]
    if a1 == a2:
        raise ShapeError(f"{name}: axis1 and axis2 cannot be the same axis, got {a1} twice")
    _concrete(x, (a1, a2), name)
    return a1, a2


def diagonal(x: Operand, offset: int = 0, axis1: int = 0, axis2: int = 1) -> Expr:
    """NumPy's ``diagonal``: ``x[..., i, i + offset]`` over ``axis1`` and ``axis2``, which
    are removed; the diagonal becomes the last axis. The two axes need known lengths."""
    x = as_expr(x)
    a1, a2 = _diag_axes(x, axis1, axis2, "diagonal")
    if isinstance(offset, bool) or not isinstance(offset, (int, np.integer)):
        raise TypeError(f"diagonal: offset must be an int, got {offset!r}")
    k = int(offset)
    rest = [i for i in range(x.ndim) if i not in (a1, a2)]
    t = transpose(x, (*rest, a1, a2))
    n, m = x.shape[a1], x.shape[a2]
    # In the row-major flattening of the last two axes, the entries of diagonal k are
    # every (m + 1)-th, from (0, k) or (-k, 0): one strided slice, no mask, no sum
    length = max(0, min(n, m - k) if k >= 0 else min(n + k, m))
    start = k if k >= 0 else -k * m
    stop = start + (length - 1) * (m + 1) + 1 if length else start
    flat = reshape(t, t.shape[:-2] + (n * m,))
    return _along(flat, flat.ndim - 1, slice(start, stop, m + 1))


def trace(x: Operand, offset: int = 0, axis1: int = 0, axis2: int = 1,
          dtype: object = None) -> Expr:
    """The sum of ``diagonal(x, offset, axis1, axis2)``. ``sg.trace(A)``."""
    x = as_expr(x)
    if dtype is not None:
        x = cast(x, dtype)
    return sum(diagonal(x, offset, axis1, axis2), axis=-1)


def _triangle(x: Operand, k: int, lower: bool, name: str) -> Expr:
    x = as_expr(x)
    if x.ndim == 0:
        raise ShapeError(f"{name} needs an array of at least one dimension, got shape ()")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"{name}: k must be an int, got {k!r}")
    _concrete(x, range(max(0, x.ndim - 2), x.ndim), name)
    n, m = (x.shape[-1],) * 2 if x.ndim == 1 else x.shape[-2:]
    keep = np.tri(n, m, int(k), dtype=bool)  # a constant mask; a 1-D x is its rows, as NumPy
    keep = keep if lower else ~np.tri(n, m, int(k) - 1, dtype=bool)
    return where(keep, x, cast(0, x.dtype))


def tril(x: Operand, k: int = 0) -> Expr:
    """``x`` with the entries above diagonal ``k`` of its last two axes set to 0."""
    return _triangle(x, k, True, "tril")


def triu(x: Operand, k: int = 0) -> Expr:
    """``x`` with the entries below diagonal ``k`` of its last two axes set to 0."""
    return _triangle(x, k, False, "triu")


def _per_axis(value: object, ndim: int, name: str) -> list[tuple]:
    """NumPy's ``pad_width``/``constant_values`` forms (``n``, ``(b, a)``, ``((b, a),)``,
    one pair per axis) as one ``(before, after)`` pair per axis."""
    try:
        arr = np.asarray(value, dtype=object)
        pairs = np.broadcast_to(arr, (ndim, 2)) if arr.ndim <= 2 else None
    except ValueError:
        pairs = None
    if pairs is None:
        raise ValueError(f"pad: {name} must be a number, a (before, after) pair or one pair "
                         f"per axis for an array of {ndim} dimensions, got {value!r}")
    return [tuple(p) for p in pairs]


def pad(x: Operand, pad_width: object, mode: str = "constant",
        constant_values: object = 0) -> Expr:
    """NumPy's ``pad`` in constant mode: ``pad_width`` is ``n``, ``(before, after)`` or one
    pair per axis; ``constant_values`` takes the same forms. An axis of symbolic length
    cannot be padded (its padded length would be no dimension name).

    >>> sg.pad(sg.input("X", shape=("N", 3)), ((0, 0), (1, 2))).shape
    ('N', 6)
    """
    x = as_expr(x)
    if mode != "constant":
        raise ValueError(f"pad: only mode='constant' is supported, got mode={mode!r}")
    widths = _per_axis(pad_width, x.ndim, "pad_width")
    values = _per_axis(constant_values, x.ndim, "constant_values")
    for axis, pair in enumerate(widths):
        if not all(isinstance(w, (int, np.integer)) and not isinstance(w, bool) and w >= 0
                   for w in pair):
            raise ValueError(f"pad: pad_width must be non-negative ints, got {pair} for "
                             f"axis {axis}")
    out = x
    for axis, ((before, after), fill) in enumerate(zip(widths, values)):
        if not before and not after:
            continue
        _concrete(x, (axis,), "pad")
        parts = []
        for width, v in ((before, fill[0]), (after, fill[1])):
            if width:
                block = out.shape[:axis] + (int(width),) + out.shape[axis + 1:]
                parts.append(broadcast_to(cast(v, x.dtype), block))
        parts.insert(1 if before else 0, out)
        out = concat(parts, axis)
    return out
