"""Elementwise functions and arithmetic: the builders behind ``+ - * / **`` and ``sg.exp``.

Builders accept nodes, Python numbers (weak: they take the other operand's dtype) and
arrays (constants with their own dtype), promote dtypes as NumPy does and insert explicit
casts, so every elementwise node's operands share one dtype. Each operator's function is
made from its stanza (``made_builder``: its ``doc``, ``arity``, ``promote`` and ``param``);
only those below whose rule is none of the stanza's are written out.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Union

import numpy as np

from symgrad.expr import ops_elementwise as E
from symgrad.expr.dtypes import BOOL, as_dtype, float_of, promote, promote_with_scalar
from symgrad.expr.leaves import CONST, ConstData, const
from symgrad.expr.node import Expr, OpDef
from symgrad.expr.ops_math import ALL_ELEMENTWISE_OPS

Operand = Union[Expr, float, int, bool, np.ndarray]

# The hand-written functions; every other one is made from its operator's stanza (below).
_WRITTEN = ["where", "square", "clip", "cast", "as_expr"]


def _is_weak(v: object) -> bool:
    return isinstance(v, (bool, int, float)) and not isinstance(v, np.generic)


def as_expr(v: Operand) -> Expr:
    """A node for ``v``: nodes pass through, numbers and arrays become constants."""
    if isinstance(v, Expr):
        return v
    try:
        return const(v)
    except TypeError:
        raise TypeError(f"expected a symgrad expression, a number or an array, got "
                        f"{type(v).__name__}: {v!r}") from None


def cast(x: Operand, dtype: object) -> Expr:
    """``x`` converted to ``dtype`` (constants are converted at once).

    >>> sg.cast(sg.input("labels", dtype="int32"), "float32").dtype
    dtype('float32')
    """
    dt = as_dtype(dtype, "cast")
    if _is_weak(x):
        return const(np.asarray(x), dt)
    x = as_expr(x)
    if x.dtype == dt:
        return x
    if x.op is CONST:
        return Expr(CONST, (), ConstData(x.arg.array.astype(dt)))
    return Expr(E.CAST, (x,), dt)


def _promoted(*vals: Operand) -> tuple[np.dtype, list[Expr]]:
    """The common dtype of ``vals`` (weak numbers follow the nodes) and the cast operands."""
    strong = [as_expr(v) for v in vals if not _is_weak(v)]
    if strong:
        dt = promote(*(s.dtype for s in strong))
        for v in vals:
            if _is_weak(v):
                dt = promote_with_scalar(dt, v)
    else:
        dt = as_expr(vals[0]).dtype if len(vals) == 1 else promote(
            *(as_expr(v).dtype for v in vals))
    return dt, [cast(v, dt) for v in vals]


def _apply(op: OpDef, *vals: Operand, promote: str = "same", arg: object = None) -> Expr:
    dt, xs = _promoted(*vals)
    if promote == "float" and dt not in (np.float32, np.float64):
        xs = [cast(x, float_of(dt)) for x in xs]
    if promote == "exact_int" and dt.kind in "iub":  # np.floor of an int is that int
        return xs[0]
    return Expr(op, tuple(xs), arg)


_NAMES = ("x",), ("a", "b"), ("a", "b", "c")


def made_builder(op: OpDef) -> Callable[..., Expr]:
    """The public function of an elementwise stanza: its operands (``op.arity`` of them,
    nodes, numbers or arrays) promoted by ``op.promote``, then the keyword ``op.param``
    (if any) converted into the node's argument."""
    names = _NAMES[op.arity - 1]
    kinds = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params = [inspect.Parameter(n, kinds) for n in names]
    if op.param is not None:
        params.append(inspect.Parameter(op.param[0], kinds, default=op.param[1]))
    sig = inspect.Signature(params)

    def build(*args: Operand, **kwargs: Any) -> Expr:
        if kwargs or len(args) != op.arity or op.param is not None:
            try:
                bound = sig.bind(*args, **kwargs)
            except TypeError as e:
                raise TypeError(f"sg.{op.fn}{sig}: {e}") from None
            bound.apply_defaults()
            args = tuple(bound.arguments[n] for n in names)
            if op.param is not None:
                key, _, convert = op.param
                return _apply(op, *args, promote=op.promote,
                              arg=convert(bound.arguments[key]))
        return _apply(op, *args, promote=op.promote)

    build.__name__ = build.__qualname__ = op.fn
    build.__doc__ = op.doc
    build.__signature__ = sig
    build.__module__ = __name__
    return build


def where(cond: Operand, a: Operand, b: Operand) -> Expr:
    """``a`` where ``cond`` holds, else ``b``. ``sg.where(x > 0, x, 0.1 * x)``."""
    c = as_expr(cond)
    if c.dtype != BOOL:
        c = _apply(E.NE, c, 0)
    dt, (xa, xb) = _promoted(a, b)
    return Expr(E.WHERE, (c, xa, xb))


def square(x: Operand) -> Expr:
    """``x**2``. ``sg.square(x)``."""
    return _apply(E.POW, x, 2)


def clip(x: Operand, lo: Operand | None = None, hi: Operand | None = None) -> Expr:
    """``x`` limited to ``[lo, hi]`` (either may be ``None``). ``sg.clip(x, 0, 1)``."""
    out = as_expr(x)
    if lo is not None:
        out = _apply(E.MAXIMUM, out, lo)
    if hi is not None:
        out = _apply(E.MINIMUM, out, hi)
    return out


def _made() -> dict[str, Callable[..., Expr]]:
    out = {}
    for op in ALL_ELEMENTWISE_OPS:
        if op.doc and op.builder is None:
            out[op.fn] = made_builder(op)
        elif op.builder is not None:
            out[op.fn] = op.builder
    return out


MADE = _made()
globals().update(MADE)
__all__ = [*MADE, *_WRITTEN]
