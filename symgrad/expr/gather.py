"""The builders of indexing by integer arrays (the stanzas are in ``ops_gather.py``)."""

from __future__ import annotations

from symgrad.expr.dtypes import INT32
from symgrad.expr.functions import Operand, as_expr
from symgrad.expr.leaves import INPUT
from symgrad.expr.node import Expr
from symgrad.expr.ops_gather import TAKE, TAKE_ALONG
from symgrad.expr.shapes import ShapeError, broadcast, fmt, normalize_axes


def _indices(indices: Operand, what: str) -> tuple[Expr, str]:
    """The index node (int32) and how errors name it."""
    ids = as_expr(indices)
    if ids.dtype != INT32:
        raise TypeError(f"{what}: indices must be int32, got {ids.dtype} (cast them with "
                        "sg.cast(ids, 'int32') or feed an int32 input)")
    label = f"the indices {ids.name!r}" if ids.op is INPUT else "the computed indices"
    return ids, f"{what}: {label}"


def take(a: Operand, indices: Operand, axis: int | None = None) -> Expr:
    """Elements of ``a`` at int32 ``indices`` along ``axis``, as ``np.take`` (``axis=None``:
    of ``a`` flattened). The result has shape ``a.shape[:axis] + indices.shape +
    a.shape[axis+1:]``; negative indices count from the end, once; an index outside
    ``[-size, size)`` raises ``IndexError`` on every backend. The derivative adds up the
    cotangent at repeated indices. ``sg.take(E, ids, axis=0)`` is ``E[ids]``."""
    a = as_expr(a)
    ids, label = _indices(indices, "take")
    if axis is None:
        a = a.reshape(-1) if a.ndim != 1 else a
        axis = 0
    if a.ndim == 0:
        raise ShapeError("take: cannot index a 0-dimensional array along an axis")
    ax = normalize_axes(axis, a.ndim, "take: axis")[0]
    return Expr(TAKE, (a, ids), (ax, label))


def take_along_axis(arr: Operand, indices: Operand, axis: int) -> Expr:
    """``np.take_along_axis``: ``out[i, ..., j, ...] = arr[i, ..., indices[i, ..., j, ...],
    ...]`` with ``j`` on ``axis``; ``arr`` and the int32 ``indices`` have the same number of
    dimensions and broadcast on the other axes. Bounds and negatives as in ``sg.take``.
    ``sg.take_along_axis(logits, sg.argmax(logits, 1, keepdims=True), 1)``."""
    a = as_expr(arr)
    ids, label = _indices(indices, "take_along_axis")
    if axis is None:
        raise TypeError("take_along_axis: axis=None is not supported; flatten arr and "
                        "indices and use axis=0")
    if a.ndim != ids.ndim or a.ndim == 0:
        raise ShapeError(f"take_along_axis: arr and indices must have the same number of "
                         f"dimensions (at least 1), got {fmt(a.shape)} and {fmt(ids.shape)}")
    ax = normalize_axes(axis, a.ndim, "take_along_axis: axis")[0]
    other = broadcast(tuple(1 if i == ax else d for i, d in enumerate(a.shape)),
                      tuple(1 if i == ax else d for i, d in enumerate(ids.shape)),
                      what="take_along_axis")
    a_shape = other[:ax] + (a.shape[ax],) + other[ax + 1:]
    ids_shape = other[:ax] + (ids.shape[ax],) + other[ax + 1:]
    a = a if a.shape == a_shape else _broadcast(a, a_shape)
    ids = ids if ids.shape == ids_shape else _broadcast(ids, ids_shape)
    return Expr(TAKE_ALONG, (a, ids), (ax, label))


def _broadcast(x: Expr, shape: tuple) -> Expr:
    from symgrad.expr.tensors import broadcast_to

    return broadcast_to(x, shape)


def integer_index(x: Expr, key: object) -> Expr | None:
    """``x[ids]`` and ``x[:, ids]`` (an int32 node after full slices): a take, else None."""
    items = key if isinstance(key, tuple) else (key,)
    at = [i for i, k in enumerate(items) if isinstance(k, Expr)]
    if not at:
        return None
    if len(at) > 1 or any(k != slice(None) for k in items[:at[0]]) or any(
            k != slice(None) for k in items[at[0] + 1:] if k is not Ellipsis):
        raise TypeError("indexing by an integer array supports one array after full "
                        "slices (x[ids], x[:, ids]); use sg.take or sg.take_along_axis")
    return take(x, items[at[0]], axis=at[0])


__all__ = ["take", "take_along_axis"]
