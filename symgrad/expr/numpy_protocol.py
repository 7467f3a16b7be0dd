"""NumPy's functions on symgrad expressions: ``np.exp(x)``, ``np.sum(e, axis=1)``.

``Expr`` implements NumPy's two override protocols (NEP 13 ``__array_ufunc__`` and NEP 18
``__array_function__``, as Dask and JAX arrays do), so a NumPy ufunc or function given an
expression builds an expression, and ``np.ones(3) + x`` (an array on the left) gives a node
rather than an object array of nodes. Each supported NumPy function maps to one symgrad
builder in the tables below; anything else raises a ``TypeError`` naming the NumPy function
and the nearest symgrad function. Keyword arguments NumPy defines are either honoured
(``axis``, ``keepdims``, ``dtype``) or refused with a ``TypeError`` that says why: ``out=``
(expressions are immutable), ``where=`` masks, ``initial=``, ``order``, ``casting``, ...
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable

import numpy as np

from symgrad.expr import einsum_lowering as ES
from symgrad.expr import functions as F
from symgrad.expr import shape_vocabulary as V
from symgrad.expr import tensors as T
from symgrad.expr import tensors_reduce as R
from symgrad.expr.node import Expr
from symgrad.expr.ops_math import ALL_ELEMENTWISE_OPS
from symgrad.expr.shapes import fmt, normalize_axes

# NumPy's "argument not given" marker (``np._NoValue``): a keyword left at it was not given.
_NOVALUE = getattr(np, "_NoValue", object())
_OPERAND_TYPES = (Expr, np.ndarray, np.generic, bool, int, float, list, tuple)


def _np_name(f: Any) -> str:
    """``np.sum``, ``np.linalg.norm``, ``np.add``: how the user spelled the function."""
    module = getattr(f, "__module__", None) or "numpy"
    module = "np" + module[len("numpy"):] if module.startswith("numpy") else module
    return f"{module}.{getattr(f, '__name__', repr(f))}"


# NumPy names whose counterpart difflib would not find by spelling
_COUNTERPARTS = {"hstack": "concat", "vstack": "concat", "inner": "dot"}


def nearest_symgrad_name(name: str) -> str:
    """The public symgrad function whose name is closest to ``name`` (difflib's ratio)."""
    import symgrad

    if name in _COUNTERPARTS:
        return _COUNTERPARTS[name]
    names = [n for n in symgrad.__all__ if n[:1].islower() and callable(getattr(symgrad, n))]
    return (difflib.get_close_matches(name, names, n=1, cutoff=0.0) or ["function"])[0]


def unsupported(what: str, name: str) -> TypeError:
    """The error for a NumPy function or ufunc method symgrad has no counterpart for."""
    return TypeError(f"{what} is not supported on symgrad expressions; the nearest symgrad "
                     f"function is sg.{nearest_symgrad_name(name)} (or evaluate the expression "
                     f"first with sg.evaluate)")


def _refuse(fname: str, keyword: str, why: str) -> TypeError:
    return TypeError(f"{fname}(..., {keyword}=...) on a symgrad expression: {why}")


def _no_out(fname: str, out: Any) -> None:
    outs = out if isinstance(out, tuple) else (out,)
    if any(o is not None for o in outs):
        raise _refuse(fname, "out", "expressions are immutable and cannot be written into; "
                      "use the returned expression")


def _no_where(fname: str, where: Any, hint: str) -> None:
    if where is not _NOVALUE and where is not True:
        raise _refuse(fname, "where", f"masks are not supported; {hint}")


def _given(value: Any, default: Any) -> Any:
    return default if value is _NOVALUE else value


def _cast_all(values: tuple, dtype: Any) -> tuple:
    """Operands converted to ``dtype`` (NumPy's ``dtype=``: the loop's type)."""
    return tuple(F.cast(v, dtype) for v in values)


# -- ufuncs (np.add, np.exp, ... and ndarray operators with an expression on the right) ------

def _positive(x: Any) -> Expr:
    return F.as_expr(x)


_COMPARISONS = {np.less, np.less_equal, np.greater, np.greater_equal, np.equal, np.not_equal}

# NumPy ufunc -> symgrad builder: each stanza's ``ufunc`` (np.absolute is np.abs,
# np.divide np.true_divide), and those that are no one operator
UFUNCS: dict[np.ufunc, Callable[..., Expr]] = {
    **{op.ufunc: getattr(F, op.fn) for op in ALL_ELEMENTWISE_OPS if op.ufunc is not None},
    np.positive: _positive,
    np.square: F.square,
    np.matmul: T.matmul,
}

# ufunc.reduce -> the symgrad reduction (NumPy's default axis for reduce is 0)
UFUNC_REDUCES: dict[np.ufunc, Callable[..., Expr]] = {
    np.add: T.sum,
    np.multiply: R.prod,
    np.maximum: T.max,
    np.minimum: T.min,
}

# keywords a ufunc call may carry at their defaults (anything else is refused)
_UFUNC_DEFAULTS = {"casting": "same_kind", "order": "K", "subok": True, "signature": None}


def array_ufunc(ufunc: np.ufunc, method: str, inputs: tuple, kwargs: dict) -> Any:
    """``Expr.__array_ufunc__``: the symgrad node for ``ufunc(*inputs, **kwargs)``."""
    if not all(isinstance(v, _OPERAND_TYPES) for v in inputs):
        return NotImplemented  # another array library's object: let NumPy ask it
    fname = _np_name(ufunc) if method == "__call__" else f"{_np_name(ufunc)}.{method}"
    kwargs = dict(kwargs)
    _no_out(fname, kwargs.pop("out", None))
    _no_where(fname, kwargs.pop("where", True), "use np.where(mask, f(x), x) instead")
    dtype = kwargs.pop("dtype", None)
    if method == "reduce":
        return _ufunc_reduce(ufunc, fname, inputs, dtype, kwargs)
    if method != "__call__":
        raise TypeError(f"{fname} is not supported on symgrad expressions: of a ufunc's "
                        f"methods only the call itself and .reduce (of np.add, np.maximum, "
                        f"np.minimum) are")
    for key, value in kwargs.items():
        if key not in _UFUNC_DEFAULTS or value != _UFUNC_DEFAULTS[key]:
            raise _refuse(fname, key, "this keyword is not supported")
    build = UFUNCS.get(ufunc)
    if build is None:
        raise unsupported(fname, ufunc.__name__)
    if dtype is not None:
        if ufunc in _COMPARISONS:
            raise _refuse(fname, "dtype", "a comparison gives bool; cast the operands instead")
        inputs = _cast_all(inputs, dtype)
    return build(*inputs)


def _ufunc_reduce(ufunc: np.ufunc, fname: str, inputs: tuple, dtype: Any,
                  kwargs: dict) -> Expr:
    reduce = UFUNC_REDUCES.get(ufunc)
    if reduce is None:
        raise unsupported(fname, f"{ufunc.__name__}_reduce")
    if len(inputs) != 1:
        raise TypeError(f"{fname} takes one array, got {len(inputs)}")
    axis, keepdims = kwargs.pop("axis", 0), kwargs.pop("keepdims", False)
    if "initial" in kwargs:
        raise _refuse(fname, "initial", "an initial value is not supported; add it to the "
                      "result instead")
    if kwargs:
        raise _refuse(fname, next(iter(kwargs)), "this keyword is not supported")
    (x,) = inputs if dtype is None else _cast_all(inputs, dtype)
    return reduce(x, axis, keepdims)


# -- NumPy functions (np.sum, np.reshape, ...): adapters with NumPy's signatures ---------------

def _sum_like(name: str, reduce: Callable[..., Expr], unit: int,
              initial_hint: str) -> Callable[..., Expr]:
    """np.sum / np.prod: ``dtype`` and ``keepdims`` honoured; ``where=``, ``initial=`` not."""
    def f(a, axis=None, dtype=None, out=None, keepdims=_NOVALUE, initial=_NOVALUE,
          where=_NOVALUE):
        _no_out(name, out)
        _no_where(name, where, f"use {name}(np.where(mask, x, {unit})) instead")
        if initial is not _NOVALUE:
            raise _refuse(name, "initial", initial_hint)
        a = a if dtype is None else F.cast(a, dtype)
        return reduce(a, axis, _given(keepdims, False))
    return f


_sum = _sum_like("np.sum", T.sum, 0, "add the initial value to the result instead")


def _mean(a, axis=None, dtype=None, out=None, keepdims=_NOVALUE, *, where=_NOVALUE):
    _no_out("np.mean", out)
    _no_where("np.mean", where, "divide a masked np.sum by the mask's count instead")
    a = a if dtype is None else F.cast(a, dtype)
    return T.mean(a, axis, _given(keepdims, False))


def _spread(name: str, build: Callable[..., Expr]) -> Callable[..., Expr]:
    """np.var / np.std: ``ddof`` and ``keepdims`` honoured, ``mean=``/``correction=`` not."""
    def f(a, axis=None, dtype=None, out=None, ddof=0, keepdims=_NOVALUE, *,
          where=_NOVALUE, mean=_NOVALUE, correction=_NOVALUE):
        _no_out(name, out)
        _no_where(name, where, "select the samples first")
        if mean is not _NOVALUE or correction is not _NOVALUE:
            raise _refuse(name, "mean" if mean is not _NOVALUE else "correction",
                          "not supported; use ddof=")
        a = a if dtype is None else F.cast(a, dtype)
        return build(a, axis, ddof, _given(keepdims, False))
    return f


def _scan(name: str, build: Callable[..., Expr]) -> Callable[..., Expr]:
    def f(a, axis=None, dtype=None, out=None):
        _no_out(name, out)
        return build(a if dtype is None else F.cast(a, dtype), axis)
    return f


def _norm(x, ord=None, axis=None, keepdims=False):  # noqa: A002 - NumPy's name
    return R.norm(x, ord, axis, keepdims)


def _extremum(name: str, reduce: Callable[..., Expr]) -> Callable[..., Expr]:
    def f(a, axis=None, out=None, keepdims=_NOVALUE, initial=_NOVALUE, where=_NOVALUE):
        _no_out(name, out)
        _no_where(name, where, f"use {name}(np.where(mask, x, fill)) instead")
        if initial is not _NOVALUE:
            raise _refuse(name, "initial", "take np.maximum/np.minimum of the result and the "
                          "initial value instead")
        return reduce(a, axis, _given(keepdims, False))
    return f


def _argmax(a, axis=None, out=None, *, keepdims=_NOVALUE):
    _no_out("np.argmax", out)
    return T.argmax(a, axis, _given(keepdims, False))


def _dot(a, b, out=None):
    _no_out("np.dot", out)
    return T.dot(a, b)


def _transpose(a, axes=None):
    return T.transpose(a, axes)


def _reshape(a, shape=_NOVALUE, order="C", *, newshape=_NOVALUE, copy=None):
    # ``newshape`` is NumPy < 2.1's name; ``copy`` means nothing for an immutable node
    if shape is _NOVALUE and newshape is _NOVALUE:
        raise TypeError("np.reshape: the new shape is missing")
    if order != "C":
        raise _refuse("np.reshape", "order", f"only row-major order 'C' is supported, got "
                      f"{order!r}")
    return T.reshape(a, newshape if shape is _NOVALUE else shape)


def _concatenate(arrays, axis=0, out=None, *, dtype=None, casting="same_kind"):
    _no_out("np.concatenate", out)
    if casting != "same_kind":
        raise _refuse("np.concatenate", "casting", "only the default 'same_kind' is supported")
    arrays = list(arrays)
    if axis is None:  # NumPy flattens every array first
        arrays, axis = [T.reshape(v, (-1,)) for v in arrays], 0
    if dtype is not None:
        arrays = list(_cast_all(tuple(arrays), dtype))
    return T.concat(arrays, axis)


def _where(condition, x=_NOVALUE, y=_NOVALUE):
    if x is _NOVALUE or y is _NOVALUE:
        raise TypeError("np.where(condition) with one argument (the indices where it holds) "
                        "has a data-dependent shape; use np.where(condition, x, y)")
    return F.where(condition, x, y)


def _clip(a, a_min=_NOVALUE, a_max=_NOVALUE, out=None, *, min=_NOVALUE,  # noqa: A002
          max=_NOVALUE, **kwargs):  # noqa: A002 - NumPy's names
    _no_out("np.clip", out)
    if kwargs:
        raise _refuse("np.clip", next(iter(kwargs)), "this keyword is not supported")
    lo = _given(a_min, _given(min, None))
    hi = _given(a_max, _given(max, None))
    return F.clip(a, lo, hi)


def _broadcast_to(array, shape, subok=False):
    return T.broadcast_to(array, shape)


def _shape(a):
    return F.as_expr(a).shape


def _ndim(a):
    return F.as_expr(a).ndim


# np.einsum, np.stack, np.squeeze, ...: NumPy's signatures onto shape_vocabulary / einsum

def _einsum(subscripts, *operands, out=None, optimize=False, dtype=None, order="K",
            casting="safe"):
    _no_out("np.einsum", out)  # ``optimize`` only orders the contractions: the same values
    if order not in ("K", "C", "A"):
        raise _refuse("np.einsum", "order", f"only row-major results exist, got {order!r}")
    return ES.einsum(subscripts, *(operands if dtype is None else _cast_all(operands, dtype)))


def _outer(a, b, out=None):
    _no_out("np.outer", out)
    return V.outer(a, b)


def _stack(arrays, axis=0, out=None, *, dtype=None, casting="same_kind"):
    _no_out("np.stack", out)
    arrays = list(arrays)
    return V.stack(arrays if dtype is None else list(_cast_all(tuple(arrays), dtype)), axis)


def _ravel(a, order="C"):
    if order not in ("C", "K", "A"):
        raise _refuse("np.ravel", "order", f"only row-major order 'C' is supported, got "
                      f"{order!r}")
    return V.ravel(a)


def _trace(a, offset=0, axis1=0, axis2=1, dtype=None, out=None):
    _no_out("np.trace", out)
    return V.trace(a, offset, axis1, axis2, dtype)


def _pad(array, pad_width, mode="constant", **kwargs):
    values = kwargs.pop("constant_values", 0)
    if kwargs:
        raise _refuse("np.pad", next(iter(kwargs)), "only mode='constant' with "
                      "constant_values is supported")
    return V.pad(array, pad_width, mode, values)


def _size(a, axis=None):
    a = F.as_expr(a)
    if axis is None:
        return V.size_of_expr(a)
    d = a.shape[normalize_axes(axis, a.ndim, "np.size: axis")[0]]
    if isinstance(d, str):
        raise TypeError(f"np.size: axis {axis} of shape {fmt(a.shape)} has the symbolic "
                        f"length {d}, bound only when the graph is fed")
    return d


# NumPy function -> adapter, one entry per function (np.amax and np.max are distinct objects)
FUNCTIONS: dict[Callable, Callable[..., Any]] = {
    np.sum: _sum,
    np.mean: _mean,
    np.max: _extremum("np.max", T.max),
    np.amax: _extremum("np.amax", T.max),
    np.min: _extremum("np.min", T.min),
    np.amin: _extremum("np.amin", T.min),
    np.argmax: _argmax,
    np.prod: _sum_like("np.prod", R.prod, 1, "multiply the result by the initial value "
                       "instead"),
    np.var: _spread("np.var", R.var),
    np.std: _spread("np.std", R.std),
    np.cumsum: _scan("np.cumsum", R.cumsum),
    np.cumprod: _scan("np.cumprod", R.cumprod),
    np.linalg.norm: _norm,
    np.dot: _dot,
    np.transpose: _transpose,
    np.reshape: _reshape,
    np.concatenate: _concatenate,
    np.where: _where,
    np.clip: _clip,
    np.broadcast_to: _broadcast_to,
    np.shape: _shape,
    np.ndim: _ndim,
    np.einsum: _einsum,
    np.tensordot: lambda a, b, axes=2: ES.tensordot(a, b, axes),
    np.outer: _outer,
    np.stack: _stack,
    np.split: lambda ary, indices_or_sections, axis=0: V.split(ary, indices_or_sections, axis),
    np.squeeze: lambda a, axis=None: V.squeeze(a, axis),
    np.expand_dims: lambda a, axis: V.expand_dims(a, axis),
    np.ravel: _ravel,
    np.diagonal: lambda a, offset=0, axis1=0, axis2=1: V.diagonal(a, offset, axis1, axis2),
    np.trace: _trace,
    np.tril: lambda m, k=0: V.tril(m, k),
    np.triu: lambda m, k=0: V.triu(m, k),
    np.pad: _pad,
    np.size: _size,
}


def array_function(func: Callable, types: tuple, args: tuple, kwargs: dict) -> Any:
    """``Expr.__array_function__``: the symgrad node for ``func(*args, **kwargs)``."""
    if not all(issubclass(t, (Expr, np.ndarray)) for t in types):
        return NotImplemented
    adapter = FUNCTIONS.get(func)
    if adapter is None:
        raise unsupported(_np_name(func), getattr(func, "__name__", ""))
    try:
        inspect.signature(adapter).bind(*args, **kwargs)
    except TypeError as exc:  # Python's message would name the adapter, not NumPy's function
        raise TypeError(f"{_np_name(func)}: {exc}") from None
    return adapter(*args, **kwargs)
