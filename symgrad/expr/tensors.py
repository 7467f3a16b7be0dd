"""Reductions, contractions and shape functions, with NumPy's names and ``axis`` semantics."""

from __future__ import annotations

from typing import Sequence

from symgrad.expr import ops_tensor as T
from symgrad.expr.dtypes import INT32, as_dtype, promote
from symgrad.expr.functions import Operand, as_expr, cast, multiply
from symgrad.expr.gather import integer_index, take, take_along_axis  # noqa: F401
from symgrad.expr.node import Expr, OpDef
from symgrad.expr.ops_index import INDEX, normalize_key
from symgrad.expr.shapes import ShapeError, as_shape, broadcast, fmt, normalize_axes, reshaped

__all__ = [
    "sum", "mean", "max", "min", "argmax", "logsumexp", "softmax", "log_softmax", "matmul",
    "dot", "transpose", "reshape", "broadcast_to", "index", "concat", "one_hot",
    "take", "take_along_axis",
]


def _reduce(op: OpDef, x: Operand, axis: object, keepdims: bool) -> Expr:
    x = as_expr(x)
    axes = normalize_axes(axis, x.ndim, f"{op.name}: axis")
    # Canonical: ``None`` when every axis is reduced, so sum(x) is sum(x, axis=0) for vectors.
    return Expr(op, (x,), (None if len(axes) == x.ndim else axes, bool(keepdims)))


def sum(x: Operand, axis: object = None, keepdims: bool = False) -> Expr:  # noqa: A001
    """Sum over ``axis`` (an int, a tuple, or ``None`` for all). ``sg.sum(x**2)``."""
    return _reduce(T.SUM, x, axis, keepdims)


def mean(x: Operand, axis: object = None, keepdims: bool = False) -> Expr:
    """Mean over ``axis``; a symbolic length ``N`` divides at run time. ``sg.mean(x)``."""
    return _reduce(T.MEAN, x, axis, keepdims)


def max(x: Operand, axis: object = None, keepdims: bool = False) -> Expr:  # noqa: A001
    """Largest element over ``axis``. ``sg.max(logits, axis=1)``."""
    return _reduce(T.MAX, x, axis, keepdims)


def min(x: Operand, axis: object = None, keepdims: bool = False) -> Expr:  # noqa: A001
    """Smallest element over ``axis``. ``sg.min(x)``."""
    return _reduce(T.MIN, x, axis, keepdims)


def argmax(x: Operand, axis: int | None = None, keepdims: bool = False) -> Expr:
    """Index (int32) of the first largest element along one axis (``None``: a vector's).

    >>> sg.argmax(logits, axis=1)
    """
    x = as_expr(x)
    if axis is None:
        if x.ndim != 1:
            raise ValueError(f"argmax of an array of shape {fmt(x.shape)} needs an axis")
        axis = 0
    if not isinstance(axis, int):
        raise TypeError(f"argmax: axis must be a single int, got {axis!r}")
    return _reduce(T.ARGMAX, x, axis, keepdims)


def logsumexp(x: Operand, axis: object = None, keepdims: bool = False) -> Expr:
    """``log(sum(exp(x)))`` computed stably (the max is subtracted first)."""
    return _reduce(T.LOGSUMEXP, cast_float(x), axis, keepdims)


def cast_float(x: Operand) -> Expr:
    x = as_expr(x)
    return x if x.dtype.kind == "f" else cast(x, "float64" if x.dtype == INT32 else "float32")


def _one_axis(x: Expr, axis: int, name: str) -> int:
    return normalize_axes(axis, x.ndim, f"{name}: axis")[0]


def softmax(x: Operand, axis: int = -1) -> Expr:
    """``exp(x)/sum(exp(x))`` along ``axis``, computed stably. ``sg.softmax(logits)``."""
    x = cast_float(x)
    return Expr(T.SOFTMAX, (x,), _one_axis(x, axis, "softmax"))


def log_softmax(x: Operand, axis: int = -1) -> Expr:
    """``x - logsumexp(x)`` along ``axis``; never overflows. ``sg.log_softmax(logits)``."""
    x = cast_float(x)
    return Expr(T.LOG_SOFTMAX, (x,), _one_axis(x, axis, "log_softmax"))


def matmul(a: Operand, b: Operand) -> Expr:
    """Matrix product with NumPy's rules (1-D operands, batch broadcasting). ``X @ W``."""
    a, b = as_expr(a), as_expr(b)
    dt = promote(a.dtype, b.dtype)
    return Expr(T.MATMUL, (cast(a, dt), cast(b, dt)))


def dot(a: Operand, b: Operand) -> Expr:
    """``np.dot``: ``*`` when either side is a scalar, the inner product of two vectors, the
    matrix product of 2-D operands, the sum over the last axis of ``a`` and the only one of a
    1-D ``b``; for N-D ``a`` and M-D ``b`` (M >= 2) the sum over the last axis of ``a`` and
    the second-to-last of ``b``, of shape ``a.shape[:-1] + b.shape[:-2] + b.shape[-1:]``
    (not ``matmul``'s batch broadcasting: use ``sg.matmul`` or ``@`` for that).

    >>> sg.dot(w, x)
    """
    a, b = as_expr(a), as_expr(b)
    if a.ndim == 0 or b.ndim == 0:
        return multiply(a, b)
    if a.ndim == 1 or b.ndim <= 2:
        return matmul(a, b)  # here np.dot and matmul agree
    # out[i..., j..., n] = sum_k a[i..., k] b[j..., k, n]: a as a batch of 1 x k rows whose
    # batch axes i... broadcast against b's j...; the unit axes only ever come and go
    lead, batch = a.shape[:-1], b.shape[:-2]
    rows = reshape(a, lead + (1,) * len(batch) + (1, a.shape[-1]))
    return reshape(matmul(rows, b), lead + batch + b.shape[-1:])


def transpose(x: Operand, axes: Sequence[int] | None = None) -> Expr:
    """Axes reversed (or permuted by ``axes``). ``W.T``, ``sg.transpose(x, (1, 0, 2))``."""
    x = as_expr(x)
    perm = tuple(reversed(range(x.ndim))) if axes is None else tuple(
        a % x.ndim if x.ndim else a for a in axes)
    if sorted(perm) != list(range(x.ndim)):
        raise ShapeError(f"transpose: axes {axes} are not a permutation of the "
                         f"{x.ndim} axes of shape {fmt(x.shape)}")
    if perm == tuple(range(x.ndim)):
        return x
    return Expr(T.TRANSPOSE, (x,), perm)


def reshape(x: Operand, shape: object) -> Expr:
    """The same elements in a new shape (one ``-1`` allowed; symbolic dims must stay).

    >>> sg.reshape(images, ("N", 28, 28))
    """
    x = as_expr(x)
    new = reshaped(x.shape, (shape,) if isinstance(shape, (int, str)) else tuple(shape),
                   f"reshape of {fmt(x.shape)}")
    return x if new == x.shape else Expr(T.RESHAPE, (x,), new)


def broadcast_to(x: Operand, shape: object) -> Expr:
    """``x`` stretched to ``shape`` by NumPy broadcasting. ``sg.broadcast_to(b, ("N", 10))``."""
    x = as_expr(x)
    shape = as_shape(shape, "broadcast_to")
    if len(shape) < x.ndim or broadcast(x.shape, shape, what="broadcast_to") != shape:
        raise ShapeError(f"broadcast_to: cannot broadcast shape {fmt(x.shape)} to "
                         f"{fmt(shape)}")
    return x if shape == x.shape else Expr(T.BROADCAST_TO, (x,), shape)


def index(x: Operand, key: object) -> Expr:
    """Basic indexing and slicing: ``x[1:]``, ``x[:, 0]``, ``x[::-1]``, ``x[..., None]``."""
    x = as_expr(x)
    gathered = integer_index(x, key)  # x[ids], x[:, ids]: a take
    if gathered is not None:
        return gathered
    if isinstance(key, tuple) and any(isinstance(k, list) for k in key) or \
            isinstance(key, list):
        raise TypeError("indexing with lists is not supported; index with an int32 node "
                        "(x[ids], sg.take) or slices")
    norm = normalize_key(x.shape, key)
    if all(e[0] == "all" or (e[0] == "slice" and e[1:] == (0, d, 1))
           for e, d in zip(norm, x.shape)) and len(norm) == x.ndim:
        return x
    return Expr(INDEX, (x,), norm)


def concat(xs: Sequence[Operand], axis: int = 0) -> Expr:
    """Join arrays along an existing axis. ``sg.concat([a, b], axis=1)``."""
    nodes = [as_expr(v) for v in xs]
    if not nodes:
        raise ValueError("concat needs at least one array")
    if nodes[0].ndim == 0:
        raise ShapeError("concat: zero-dimensional arrays cannot be concatenated")
    dt = promote(*(n.dtype for n in nodes))
    ax = normalize_axes(axis, nodes[0].ndim, "concat: axis")[0]
    if len(nodes) == 1:
        return cast(nodes[0], dt)
    return Expr(T.CONCAT, tuple(cast(n, dt) for n in nodes), ax)


def one_hot(labels: Operand, num_classes: int, dtype: object = "float32") -> Expr:
    """One-hot rows for int32 ``labels``: shape ``labels.shape + (num_classes,)``.

    >>> sg.one_hot(sg.input("labels", dtype="int32"), 10).shape
    ('N', 10)
    """
    labels = as_expr(labels)
    if labels.dtype != INT32:
        raise TypeError(f"one_hot: labels must be int32, got {labels.dtype}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"one_hot: num_classes must be a positive int, got {num_classes!r}")
    return Expr(T.ONE_HOT, (labels,), (num_classes, as_dtype(dtype, "one_hot")))
