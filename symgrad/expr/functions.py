"""Elementwise functions and arithmetic: the builders behind ``+ - * / **`` and ``sg.exp``.

Builders accept nodes, Python numbers (weak: they take the other operand's dtype) and
arrays (constants with their own dtype), promote dtypes as NumPy does and insert explicit
casts, so every elementwise node's operands share one dtype.
"""

from __future__ import annotations

from typing import Union

import numpy as np

from symgrad.expr import ops_elementwise as E
from symgrad.expr.dtypes import BOOL, as_dtype, float_of, promote, promote_with_scalar
from symgrad.expr.leaves import CONST, ConstData, const
from symgrad.expr.node import Expr, OpDef

Operand = Union[Expr, float, int, bool, np.ndarray]

__all__ = [
    "add", "subtract", "multiply", "divide", "power", "negative", "maximum", "minimum",
    "less", "less_equal", "greater", "greater_equal", "equal", "not_equal", "where",
    "exp", "log", "log1p", "expm1", "sqrt", "sin", "cos", "tan", "tanh", "erf", "abs",
    "sign", "sigmoid", "relu", "leaky_relu", "elu", "gelu", "softplus", "square", "clip",
    "cast", "as_expr",
]


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


def _apply(op: OpDef, *vals: Operand, floating: bool = False, arg: object = None) -> Expr:
    dt, xs = _promoted(*vals)
    if floating and dt not in (np.float32, np.float64):
        xs = [cast(x, float_of(dt)) for x in xs]
    return Expr(op, tuple(xs), arg)


def add(a: Operand, b: Operand) -> Expr:
    """``a + b`` with broadcasting. ``sg.add(x, 1)`` is ``x + 1``."""
    return _apply(E.ADD, a, b)


def subtract(a: Operand, b: Operand) -> Expr:
    """``a - b`` with broadcasting."""
    return _apply(E.SUB, a, b)


def multiply(a: Operand, b: Operand) -> Expr:
    """``a * b`` with broadcasting."""
    return _apply(E.MUL, a, b)


def divide(a: Operand, b: Operand) -> Expr:
    """True division ``a / b`` (integers give float64, as in NumPy)."""
    return _apply(E.DIV, a, b, floating=True)


def power(a: Operand, b: Operand) -> Expr:
    """``a ** b``. ``sg.power(x, 2)`` prints as ``x**2``."""
    return _apply(E.POW, a, b)


def negative(x: Operand) -> Expr:
    """``-x``."""
    return _apply(E.NEG, x)


def maximum(a: Operand, b: Operand) -> Expr:
    """Elementwise maximum (NaN propagates, as in NumPy). ``sg.maximum(x, 0)``."""
    return _apply(E.MAXIMUM, a, b)


def minimum(a: Operand, b: Operand) -> Expr:
    """Elementwise minimum. ``sg.minimum(x, 1.0)``."""
    return _apply(E.MINIMUM, a, b)


def less(a: Operand, b: Operand) -> Expr:
    """``a < b`` as a bool array."""
    return _apply(E.LT, a, b)


def less_equal(a: Operand, b: Operand) -> Expr:
    """``a <= b`` as a bool array."""
    return _apply(E.LE, a, b)


def greater(a: Operand, b: Operand) -> Expr:
    """``a > b`` as a bool array."""
    return _apply(E.GT, a, b)


def greater_equal(a: Operand, b: Operand) -> Expr:
    """``a >= b`` as a bool array."""
    return _apply(E.GE, a, b)


def equal(a: Operand, b: Operand) -> Expr:
    """Elementwise ``a == b`` (Python ``==`` on nodes keeps its identity meaning)."""
    return _apply(E.EQ, a, b)


def not_equal(a: Operand, b: Operand) -> Expr:
    """Elementwise ``a != b``."""
    return _apply(E.NE, a, b)


def where(cond: Operand, a: Operand, b: Operand) -> Expr:
    """``a`` where ``cond`` holds, else ``b``. ``sg.where(x > 0, x, 0.1 * x)``."""
    c = as_expr(cond)
    if c.dtype != BOOL:
        c = not_equal(c, 0)
    dt, (xa, xb) = _promoted(a, b)
    return Expr(E.WHERE, (c, xa, xb))


def _unary_float(op: OpDef, doc: str):
    def f(x: Operand) -> Expr:
        return _apply(op, x, floating=True)
    f.__name__ = f.__qualname__ = op.name
    f.__doc__ = doc
    return f


exp = _unary_float(E.EXP, "Elementwise ``e**x``. ``sg.exp(x)``.")
log = _unary_float(E.LOG, "Natural logarithm. ``sg.log(x)``.")
log1p = _unary_float(E.LOG1P, "``log(1 + x)``, accurate for small ``x``. ``sg.log1p(x)``.")
expm1 = _unary_float(E.EXPM1, "``exp(x) - 1``, accurate for small ``x``. ``sg.expm1(x)``.")
sqrt = _unary_float(E.SQRT, "Square root. ``sg.sqrt(x)``.")
sin = _unary_float(E.SIN, "Sine. ``sg.sin(x)``.")
cos = _unary_float(E.COS, "Cosine. ``sg.cos(x)``.")
tan = _unary_float(E.TAN, "Tangent. ``sg.tan(x)``.")
tanh = _unary_float(E.TANH, "Hyperbolic tangent. ``sg.tanh(x)``.")
erf = _unary_float(E.ERF, "The error function. ``sg.erf(x)``.")
sigmoid = _unary_float(E.SIGMOID, "Logistic ``1/(1 + exp(-x))``, overflow-free. "
                       "``sg.sigmoid(x)``.")
softplus = _unary_float(E.SOFTPLUS, "``log(1 + exp(x))``, overflow-free (PyTorch's "
                        "softplus with beta=1). ``sg.softplus(x)``.")
gelu = _unary_float(E.GELU, "Exact GELU ``x*Phi(x)`` (PyTorch's default). ``sg.gelu(x)``.")


def abs(x: Operand) -> Expr:  # noqa: A001 - NumPy's name
    """``|x|``. ``sg.abs(x)`` or ``abs(x)``."""
    return _apply(E.ABS, x)


def sign(x: Operand) -> Expr:
    """-1, 0 or 1 (NaN stays NaN). ``sg.sign(x)``."""
    return _apply(E.SIGN, x)


def relu(x: Operand) -> Expr:
    """``max(x, 0)``. ``sg.relu(X @ W + b)``."""
    return _apply(E.RELU, x)


def leaky_relu(x: Operand, negative_slope: float = 0.01) -> Expr:
    """``x`` for ``x > 0``, else ``negative_slope*x`` (PyTorch's default slope 0.01).

    >>> sg.leaky_relu(x, 0.2)
    """
    return _apply(E.LEAKY_RELU, x, floating=True, arg=float(negative_slope))


def elu(x: Operand, alpha: float = 1.0) -> Expr:
    """``x`` for ``x > 0``, else ``alpha*(exp(x) - 1)``. ``sg.elu(x)``."""
    return _apply(E.ELU, x, floating=True, arg=float(alpha))


def square(x: Operand) -> Expr:
    """``x**2``. ``sg.square(x)``."""
    return power(x, 2)


def clip(x: Operand, lo: Operand | None = None, hi: Operand | None = None) -> Expr:
    """``x`` limited to ``[lo, hi]`` (either may be ``None``). ``sg.clip(x, 0, 1)``."""
    out = as_expr(x)
    if lo is not None:
        out = maximum(out, lo)
    if hi is not None:
        out = minimum(out, hi)
    return out
