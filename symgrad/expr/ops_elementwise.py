"""Elementwise operators, one stanza each.

Operands of an elementwise operator already share one dtype (the builders in
:mod:`symgrad.expr.functions` promote and insert casts), so the rule is: the shape is the
NumPy broadcast of the operands' shapes and the dtype is theirs (``bool`` for comparisons).
``numpy`` takes the operator's argument first, then the operand values.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import sympy

from symgrad.expr.dtypes import BOOL
from symgrad.expr.leaves import CONST
from symgrad.expr.node import ELEMENTWISE, ZERO_DERIVATIVE, F, OpDef
from symgrad.expr.shapes import broadcast

try:  # SciPy's erf is vectorized; math.erf is the exact fallback
    from scipy.special import erf as _np_erf
    from scipy.special import erfc as _np_erfc
except ImportError:  # pragma: no cover - scipy is a test dependency
    _np_erf = np.vectorize(math.erf, otypes=[np.float64])
    _np_erfc = np.vectorize(math.erfc, otypes=[np.float64])


def _same(srcs, arg):
    return broadcast(*(s.shape for s in srcs)), srcs[0].dtype


def _compare(srcs, arg):
    return broadcast(*(s.shape for s in srcs)), BOOL


def _where(srcs, arg):
    return broadcast(*(s.shape for s in srcs)), srcs[1].dtype


def _power_infer(srcs, arg):
    """``_same``, refusing what NumPy refuses when it runs: an integer raised to a constant
    negative integer (compiled integer code has no such value to give)."""
    base, exponent = srcs
    if base.dtype.kind in "iub" and exponent.op is CONST and (
            np.asarray(exponent.arg.array) < 0).any():
        raise ValueError(
            f"{base} ** {exponent}: integers to negative integer powers are not allowed "
            f"(NumPy refuses them too); make the base a float first, e.g. "
            f"sg.cast({base}, 'float64') ** {exponent}")
    return _same(srcs, arg)


def _no_bool(what: str, example: str) -> Callable:
    """``_same``, refusing bool operands where NumPy has no bool loop (``np.sign``,
    ``np.negative``, ``np.subtract`` of bools raise TypeError)."""
    def infer(srcs, arg):
        if srcs[0].dtype.kind == "b":
            args = ", ".join(str(x) for x in srcs)
            raise TypeError(f"{what}({args}): NumPy has no {what} of bool arrays; cast "
                            f"first, e.g. {example.format(*srcs)}")
        return _same(srcs, arg)
    return infer


def unary(name: str, f, **kw) -> OpDef:
    """The stanza of a one-operand operator: ``f`` its NumPy evaluation, ``kw`` the rest
    of :class:`OpDef` (``doc`` makes the public function ``sg.<name>``)."""
    return OpDef(name, ELEMENTWISE, kw.pop("infer", _same), lambda arg, x: f(x), fn=name,
                 arity=1, **kw)


def binary(name: str, f, infix: str = "", prec: int = 100, **kw) -> OpDef:
    """The stanza of a two-operand operator (see :func:`unary`)."""
    return OpDef(name, ELEMENTWISE, kw.pop("infer", _same), lambda arg, a, b: f(a, b),
                 fn=name, infix=infix, prec=prec, arity=2, **kw)


def _sigmoid(x):
    e = np.exp(-np.abs(x))  # never overflows
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype)


def _softplus(x):
    return (np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))).astype(x.dtype)


def _gelu(x):
    # x*Phi(x) = x*erfc(-x/sqrt2)/2: no cancellation in the negative tail
    return (0.5 * x * _np_erfc(-x / np.sqrt(2.0))).astype(x.dtype)


def _elu(alpha, x):
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0))).astype(x.dtype)


def _leaky_relu(alpha, x):
    return np.where(x > 0, x, alpha * x).astype(x.dtype)


_sp_sigmoid = lambda x: 1 / (1 + sympy.exp(-x))  # noqa: E731


def _no_grad(g, out, *srcs):
    """Piecewise-constant outputs (comparisons, sign): the derivative is zero."""
    return (None,) * len(srcs)


def _pow_vjp(g, out, a, b):
    # d(a**b) = b*a**(b-1) da + a**b*log(a) db; a constant exponent needs no log(a). At
    # a == 0 the db term is 0 (0**b is flat in b > 0), as in autograd, JAX and PyTorch,
    # not -inf*0 = nan; a < 0 keeps log(a) = nan, as NumPy has it.
    db = None if b.op is CONST else g * F.where(F.equal(a, 0), 0, out * F.log(a))
    return g * b * a ** (b - 1), db


def _extreme_vjp(wins):
    """maximum/minimum: the operand that wins takes ``g``; at a tie each takes ``g/2``, as
    autograd, JAX and PyTorch share it (so ``maximum(x, x)`` differentiates to 1)."""
    def vjp(g, out, a, b):
        tie = F.where(F.equal(a, b), 0.5 * g, 0)
        return F.where(wins(a, b), g, tie), F.where(wins(b, a), g, tie)
    return vjp


def _gelu_vjp(g, out, x):
    # d/dx x*Phi(x) = Phi(x) + x*phi(x)
    return (g * (0.5 * (1 + F.erf(x * _SQRT1_2)) + x * F.exp(-0.5 * x**2) * _RSQRT_2PI),)


_SQRT1_2, _RSQRT_2PI, _2_RSQRT_PI = 0.5**0.5, (2 * math.pi) ** -0.5, 2 / math.sqrt(math.pi)

# Precedences follow Python: comparisons < + - < * / @ < unary - < **.
# Sub-gradients: at a kink (relu, abs) the derivative is 0, as PyTorch's relu and abs have
# it; maximum/minimum share it at a tie (``_extreme_vjp``).
# Each stanza's ``doc`` is the docstring of its public function ``sg.<name>``.
_ZERO = frozenset({ZERO_DERIVATIVE})
ADD = binary("add", np.add, "+", 10, commutative=True, sympy=lambda a, b: a + b,
             vjp=lambda g, out, a, b: (g, g), ufunc=np.add,
             doc="``a + b`` with broadcasting. ``sg.add(x, 1)`` is ``x + 1``.")
SUB = binary("subtract", np.subtract, "-", 10,
             infer=_no_bool("subtract", "sg.cast({0}, 'int32') - ({1})"),
             sympy=lambda a, b: a - b, ufunc=np.subtract,
             vjp=lambda g, out, a, b: (g, -g), doc="``a - b`` with broadcasting.")
MUL = binary("multiply", np.multiply, "*", 20, commutative=True, sympy=lambda a, b: a * b,
             vjp=lambda g, out, a, b: (g * b, g * a), ufunc=np.multiply,
             doc="``a * b`` with broadcasting.")
DIV = binary("divide", np.divide, "/", 20, sympy=lambda a, b: a / b, promote="float",
             vjp=lambda g, out, a, b: (g / b, -g * out / b),  # d(a/b)/db = -(a/b)/b
             ufunc=np.divide, doc="True division ``a / b`` (integers give float64, as in "
             "NumPy).")
POW = binary("power", np.power, "**", 30, infer=_power_infer, sympy=lambda a, b: a**b,
             vjp=_pow_vjp, ufunc=np.power,
             doc="``a ** b``. ``sg.power(x, 2)`` prints as ``x**2``.")
NEG = unary("negative", np.negative, infix="-", prec=25,
            infer=_no_bool("negative", "-sg.cast({0}, 'int32')"), sympy=lambda x: -x,
            vjp=lambda g, out, x: (-g,), ufunc=np.negative, doc="``-x``.")
MAXIMUM = binary("maximum", np.maximum, commutative=True, sympy=sympy.Max,
                 vjp=_extreme_vjp(lambda a, b: a > b), ufunc=np.maximum,
                 doc="Elementwise maximum (NaN propagates, as in NumPy). "
                 "``sg.maximum(x, 0)``.")
MINIMUM = binary("minimum", np.minimum, commutative=True, sympy=sympy.Min,
                 vjp=_extreme_vjp(lambda a, b: a < b), ufunc=np.minimum,
                 doc="Elementwise minimum. ``sg.minimum(x, 1.0)``.")

LT = binary("less", np.less, "<", 5, infer=_compare, sympy=lambda a, b: a < b, vjp=_no_grad,
            props=_ZERO, ufunc=np.less, doc="``a < b`` as a bool array.")
LE = binary("less_equal", np.less_equal, "<=", 5, infer=_compare, sympy=lambda a, b: a <= b,
            vjp=_no_grad, props=_ZERO, ufunc=np.less_equal, doc="``a <= b`` as a bool array.")
GT = binary("greater", np.greater, ">", 5, infer=_compare, sympy=lambda a, b: a > b,
            vjp=_no_grad, props=_ZERO, ufunc=np.greater, doc="``a > b`` as a bool array.")
GE = binary("greater_equal", np.greater_equal, ">=", 5, infer=_compare,
            sympy=lambda a, b: a >= b, vjp=_no_grad, props=_ZERO, ufunc=np.greater_equal,
            doc="``a >= b`` as a bool array.")
EQ = binary("equal", np.equal, infer=_compare, commutative=True, sympy=sympy.Eq,
            vjp=_no_grad, props=_ZERO, ufunc=np.equal,
            doc="Elementwise ``a == b`` (Python ``==`` on nodes keeps its identity meaning).")
NE = binary("not_equal", np.not_equal, infer=_compare, commutative=True, sympy=sympy.Ne,
            vjp=_no_grad, props=_ZERO, ufunc=np.not_equal, doc="Elementwise ``a != b``.")

# where's and cast's public functions are written out in functions.py (their operands are
# not promoted together)
WHERE = OpDef("where", ELEMENTWISE, _where, lambda arg, c, a, b: np.where(c, a, b),
              fn="where", sympy=lambda c, a, b: sympy.Piecewise((a, c), (b, True)),
              vjp=lambda g, out, c, a, b: (None, F.where(c, g, 0), F.where(c, 0, g)),
              arity=3)

EXP = unary("exp", np.exp, sympy=sympy.exp, latex=r"\exp", vjp=lambda g, out, x: (g * out,),
            promote="float", ufunc=np.exp, doc="Elementwise ``e**x``. ``sg.exp(x)``.")
LOG = unary("log", np.log, sympy=sympy.log, latex=r"\log", vjp=lambda g, out, x: (g / x,),
            promote="float", ufunc=np.log, doc="Natural logarithm. ``sg.log(x)``.")
LOG1P = unary("log1p", np.log1p, sympy=lambda x: sympy.log(1 + x),
              vjp=lambda g, out, x: (g / (1 + x),), promote="float", ufunc=np.log1p,
              doc="``log(1 + x)``, accurate for small ``x``. ``sg.log1p(x)``.")
EXPM1 = unary("expm1", np.expm1, sympy=lambda x: sympy.exp(x) - 1,
              vjp=lambda g, out, x: (g * (out + 1),), promote="float", ufunc=np.expm1,
              doc="``exp(x) - 1``, accurate for small ``x``. ``sg.expm1(x)``.")
SQRT = unary("sqrt", np.sqrt, sympy=sympy.sqrt, vjp=lambda g, out, x: (g / (2 * out),),
             promote="float", ufunc=np.sqrt, doc="Square root. ``sg.sqrt(x)``.")
SIN = unary("sin", np.sin, sympy=sympy.sin, latex=r"\sin",
            vjp=lambda g, out, x: (g * F.cos(x),), promote="float", ufunc=np.sin,
            doc="Sine. ``sg.sin(x)``.")
COS = unary("cos", np.cos, sympy=sympy.cos, latex=r"\cos",
            vjp=lambda g, out, x: (-g * F.sin(x),), promote="float", ufunc=np.cos,
            doc="Cosine. ``sg.cos(x)``.")
TAN = unary("tan", np.tan, sympy=sympy.tan, latex=r"\tan",
            vjp=lambda g, out, x: (g * (1 + out**2),), promote="float", ufunc=np.tan,
            doc="Tangent. ``sg.tan(x)``.")
TANH = unary("tanh", np.tanh, sympy=sympy.tanh, latex=r"\tanh",
             vjp=lambda g, out, x: (g * (1 - out**2),), promote="float", ufunc=np.tanh,
             doc="Hyperbolic tangent. ``sg.tanh(x)``.")
ERF = unary("erf", lambda x: _np_erf(x).astype(x.dtype), sympy=sympy.erf,
            vjp=lambda g, out, x: (g * _2_RSQRT_PI * F.exp(-x**2),), promote="float",
            doc="The error function. ``sg.erf(x)``.")
ABS = unary("abs", np.abs, sympy=sympy.Abs, vjp=lambda g, out, x: (g * F.sign(x),),
            ufunc=np.absolute, doc="``|x|``. ``sg.abs(x)`` or ``abs(x)``.")
SIGN = unary("sign", np.sign, infer=_no_bool("sign", "sg.sign(sg.cast({0}, 'int32'))"),
             sympy=sympy.sign, vjp=_no_grad, props=_ZERO, ufunc=np.sign,
             doc="-1, 0 or 1 (NaN stays NaN). ``sg.sign(x)``.")
SIGMOID = unary("sigmoid", _sigmoid, sympy=_sp_sigmoid, latex=r"\sigma",
                vjp=lambda g, out, x: (g * out * (1 - out),), promote="float",
                doc="Logistic ``1/(1 + exp(-x))``, overflow-free. ``sg.sigmoid(x)``.")
RELU = unary("relu", lambda x: np.maximum(x, 0).astype(x.dtype),
             sympy=lambda x: sympy.Max(x, 0), vjp=lambda g, out, x: (F.where(x > 0, g, 0),),
             doc="``max(x, 0)``. ``sg.relu(X @ W + b)``.")
SOFTPLUS = unary("softplus", _softplus, sympy=lambda x: sympy.log(1 + sympy.exp(x)),
                 vjp=lambda g, out, x: (g * F.sigmoid(x),), promote="float",
                 doc="``log(1 + exp(x))``, overflow-free (PyTorch's softplus with beta=1). "
                 "``sg.softplus(x)``.")
GELU = unary("gelu", _gelu, sympy=lambda x: x * (1 + sympy.erf(x / sympy.sqrt(2))) / 2,
             vjp=_gelu_vjp, promote="float",
             doc="Exact GELU ``x*Phi(x)`` (PyTorch's default). ``sg.gelu(x)``.")
LEAKY_RELU = OpDef("leaky_relu", ELEMENTWISE, _same, _leaky_relu, fn="leaky_relu",
                   fmt_arg=lambda a: f"negative_slope={a!r}",
                   sympy=lambda x, a: sympy.Piecewise((x, x > 0), (a * x, True)),
                   vjp=lambda g, out, x: (F.where(x > 0, g, g * out.arg),),
                   arity=1, promote="float", param=("negative_slope", 0.01, float),
                   doc="``x`` for ``x > 0``, else ``negative_slope*x`` (PyTorch's default "
                   "slope 0.01). ``sg.leaky_relu(x, 0.2)``.")
ELU = OpDef("elu", ELEMENTWISE, _same, _elu, fn="elu", fmt_arg=lambda a: f"alpha={a!r}",
            sympy=lambda x, a: sympy.Piecewise((x, x > 0), (a * (sympy.exp(x) - 1), True)),
            vjp=lambda g, out, x: (F.where(x > 0, g, g * (out + out.arg)),),
            arity=1, promote="float", param=("alpha", 1.0, float),
            doc="``x`` for ``x > 0``, else ``alpha*(exp(x) - 1)``. ``sg.elu(x)``.")
CAST = OpDef("cast", ELEMENTWISE, lambda srcs, dt: (srcs[0].shape, dt),
             lambda dt, x: x.astype(dt), fn="cast", sympy=lambda x, dt: x,
             vjp=lambda g, out, x: (F.cast(g, x.dtype) if x.dtype.kind == "f" else None,),
             arity=1)

ELEMENTWISE_OPS = (ADD, SUB, MUL, DIV, POW, NEG, MAXIMUM, MINIMUM, LT, LE, GT, GE, EQ, NE,
                   WHERE, EXP, LOG, LOG1P, EXPM1, SQRT, SIN, COS, TAN, TANH, ERF, ABS, SIGN,
                   SIGMOID, RELU, SOFTPLUS, GELU, LEAKY_RELU, ELU, CAST)
