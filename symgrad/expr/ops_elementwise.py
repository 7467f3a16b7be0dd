"""Elementwise operators, one stanza each.

Operands of an elementwise operator already share one dtype (the builders in
:mod:`symgrad.expr.functions` promote and insert casts), so the rule is: the shape is the
NumPy broadcast of the operands' shapes and the dtype is theirs (``bool`` for comparisons).
``numpy`` takes the operator's argument first, then the operand values.
"""

from __future__ import annotations

import math

import numpy as np
import sympy

from symgrad.expr.dtypes import BOOL
from symgrad.expr.node import ELEMENTWISE, OpDef
from symgrad.expr.shapes import broadcast

try:  # SciPy's erf is vectorized; math.erf is the exact fallback
    from scipy.special import erf as _np_erf
except ImportError:  # pragma: no cover - scipy is a test dependency
    _np_erf = np.vectorize(math.erf, otypes=[np.float64])


def _same(srcs, arg):
    return broadcast(*(s.shape for s in srcs)), srcs[0].dtype


def _compare(srcs, arg):
    return broadcast(*(s.shape for s in srcs)), BOOL


def _where(srcs, arg):
    return broadcast(*(s.shape for s in srcs)), srcs[1].dtype


def unary(name: str, f, **kw) -> OpDef:
    return OpDef(name, ELEMENTWISE, _same, lambda arg, x: f(x), fn=name, **kw)


def binary(name: str, f, infix: str = "", prec: int = 100, **kw) -> OpDef:
    return OpDef(name, ELEMENTWISE, kw.pop("infer", _same), lambda arg, a, b: f(a, b),
                 fn=name, infix=infix, prec=prec, **kw)


def _sigmoid(x):
    e = np.exp(-np.abs(x))  # never overflows
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype)


def _softplus(x):
    return (np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))).astype(x.dtype)


def _gelu(x):
    return (0.5 * x * (1 + _np_erf(x / np.sqrt(2.0)))).astype(x.dtype)


def _elu(alpha, x):
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0))).astype(x.dtype)


def _leaky_relu(alpha, x):
    return np.where(x > 0, x, alpha * x).astype(x.dtype)


_sp_sigmoid = lambda x: 1 / (1 + sympy.exp(-x))  # noqa: E731

# Precedences follow Python: comparisons < + - < * / @ < unary - < **.
ADD = binary("add", np.add, "+", 10, commutative=True, sympy=lambda a, b: a + b)
SUB = binary("subtract", np.subtract, "-", 10, sympy=lambda a, b: a - b)
MUL = binary("multiply", np.multiply, "*", 20, commutative=True, sympy=lambda a, b: a * b)
DIV = binary("divide", np.divide, "/", 20, sympy=lambda a, b: a / b)
POW = binary("power", np.power, "**", 30, sympy=lambda a, b: a**b)
NEG = unary("negative", np.negative, infix="-", prec=25, sympy=lambda x: -x)
MAXIMUM = binary("maximum", np.maximum, commutative=True, sympy=sympy.Max)
MINIMUM = binary("minimum", np.minimum, commutative=True, sympy=sympy.Min)

LT = binary("less", np.less, "<", 5, infer=_compare, sympy=lambda a, b: a < b)
LE = binary("less_equal", np.less_equal, "<=", 5, infer=_compare, sympy=lambda a, b: a <= b)
GT = binary("greater", np.greater, ">", 5, infer=_compare, sympy=lambda a, b: a > b)
GE = binary("greater_equal", np.greater_equal, ">=", 5, infer=_compare,
            sympy=lambda a, b: a >= b)
EQ = binary("equal", np.equal, infer=_compare, commutative=True, sympy=sympy.Eq)
NE = binary("not_equal", np.not_equal, infer=_compare, commutative=True, sympy=sympy.Ne)

WHERE = OpDef("where", ELEMENTWISE, _where, lambda arg, c, a, b: np.where(c, a, b),
              fn="where", sympy=lambda c, a, b: sympy.Piecewise((a, c), (b, True)))

EXP = unary("exp", np.exp, sympy=sympy.exp, latex=r"\exp")
LOG = unary("log", np.log, sympy=sympy.log, latex=r"\log")
LOG1P = unary("log1p", np.log1p, sympy=lambda x: sympy.log(1 + x))
EXPM1 = unary("expm1", np.expm1, sympy=lambda x: sympy.exp(x) - 1)
SQRT = unary("sqrt", np.sqrt, sympy=sympy.sqrt)
SIN = unary("sin", np.sin, sympy=sympy.sin, latex=r"\sin")
COS = unary("cos", np.cos, sympy=sympy.cos, latex=r"\cos")
TAN = unary("tan", np.tan, sympy=sympy.tan, latex=r"\tan")
TANH = unary("tanh", np.tanh, sympy=sympy.tanh, latex=r"\tanh")
ERF = unary("erf", lambda x: _np_erf(x).astype(x.dtype), sympy=sympy.erf)
ABS = unary("abs", np.abs, sympy=sympy.Abs)
SIGN = unary("sign", np.sign, sympy=sympy.sign)
SIGMOID = unary("sigmoid", _sigmoid, sympy=_sp_sigmoid, latex=r"\sigma")
RELU = unary("relu", lambda x: np.maximum(x, 0).astype(x.dtype),
             sympy=lambda x: sympy.Max(x, 0))
SOFTPLUS = unary("softplus", _softplus, sympy=lambda x: sympy.log(1 + sympy.exp(x)))
GELU = unary("gelu", _gelu, sympy=lambda x: x * (1 + sympy.erf(x / sympy.sqrt(2))) / 2)
LEAKY_RELU = OpDef("leaky_relu", ELEMENTWISE, _same, _leaky_relu, fn="leaky_relu",
                   fmt_arg=lambda a: f"alpha={a!r}",
                   sympy=lambda x, a: sympy.Piecewise((x, x > 0), (a * x, True)))
ELU = OpDef("elu", ELEMENTWISE, _same, _elu, fn="elu", fmt_arg=lambda a: f"alpha={a!r}",
            sympy=lambda x, a: sympy.Piecewise((x, x > 0), (a * (sympy.exp(x) - 1), True)))
CAST = OpDef("cast", ELEMENTWISE, lambda srcs, dt: (srcs[0].shape, dt),
             lambda dt, x: x.astype(dt), fn="cast", sympy=lambda x, dt: x)

ELEMENTWISE_OPS = (ADD, SUB, MUL, DIV, POW, NEG, MAXIMUM, MINIMUM, LT, LE, GT, GE, EQ, NE,
                   WHERE, EXP, LOG, LOG1P, EXPM1, SQRT, SIN, COS, TAN, TANH, ERF, ABS, SIGN,
                   SIGMOID, RELU, SOFTPLUS, GELU, LEAKY_RELU, ELU, CAST)
