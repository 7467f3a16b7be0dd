"""More elementwise operators, one stanza each: inverse trigonometric and hyperbolic
functions, logarithms in other bases, ``logaddexp``, ``cbrt``, rounding, remainders and
``stop_gradient``.

Most are written with other operators (``decompose``), so no backend spells them: only
``arctan``, ``floor``, ``rint`` and ``fmod`` are new primitives. Each decomposition is
chosen for accuracy where the textbook one loses it: ``sinh`` through ``expm1`` (no
cancellation near 0), ``arcsin`` through ``arctan(x/sqrt((1-x)(1+x)))`` (``1 - x`` is exact
near 1), ``arctanh`` through ``log1p`` of ``|x|`` (exact ``1 - |x|`` near 1), ``cbrt`` as
``|x|**(1/3)`` refined by one Newton step, ``mod`` as ``fmod`` (exact) moved to the
divisor's sign, as NumPy computes it.
"""

from __future__ import annotations

import math

import numpy as np
import sympy

from symgrad.expr.node import ELEMENTWISE, NO_SYMPY, ZERO_DERIVATIVE, F, OpDef
from symgrad.expr.ops_elementwise import (
    ELEMENTWISE_OPS,
    _no_bool,
    _no_grad,
    _same,
    binary,
    unary,
)

_LN2, _LN10 = math.log(2.0), math.log(10.0)
_ZERO, _NONE = frozenset({ZERO_DERIVATIVE}), frozenset({NO_SYMPY})


def _one_minus_x2(x):
    return (1 - x) * (1 + x)  # exact factors near |x| = 1, where 1 - x*x cancels


def _negative_sign(x):
    """x < 0 or x is -0 (1/-0 = -inf): the sign bit, without a copysign operator."""
    return F.where(x < 0, True, 1 / x < 0)


def _atan2(y, x):
    # arctan of the smaller over the larger magnitude (in [0, 1]), then the octant: exact
    # for zeros and infinities on either side, as C99 and NumPy have them
    ax, ay = F.abs(x), F.abs(y)
    big, small = F.maximum(ax, ay), F.minimum(ax, ay)
    t = F.where(F.equal(big, 0), 0, F.where(F.equal(small, math.inf), 1, small / big))
    r = F.arctan(t)
    r = F.where(ay > ax, math.pi / 2 - r, r)
    r = F.where(_negative_sign(x), math.pi - r, r)
    return F.where(_negative_sign(y), -r, r)


def _half_exp_squared(x):
    h = F.exp(F.abs(x) / 2)  # exp(|x|)/2 without overflowing before exp(|x|)/2 does
    return h * (0.5 * h)


def _sinh(x):
    return F.where(F.abs(x) < 20, (F.expm1(x) - F.expm1(-x)) / 2,
                   F.sign(x) * _half_exp_squared(x))


def _cosh(x):
    return F.where(F.abs(x) < 20, (F.exp(x) + F.exp(-x)) / 2, _half_exp_squared(x))


def _arcsinh(x):
    a = F.abs(x)
    small = F.log1p(a + a * a / (1 + F.sqrt(1 + a * a)))
    s = F.where(a > 2.0**28, F.log(a) + _LN2, small)  # a*a would overflow
    return F.where(x < 0, -s, s)


def _arctanh(x):
    a = F.abs(x)
    s = 0.5 * F.log1p(2 * a / (1 - a))
    return F.where(x < 0, -s, s)


def _logaddexp(a, b):
    m = F.maximum(a, b)  # equal operands (infinities too): a + log(2)
    return F.where(F.equal(a, b), a + _LN2, m + F.log1p(F.exp(-F.abs(a - b))))


def _cbrt(x):
    a = F.abs(x)
    r = a ** (1.0 / 3.0)
    r = r - (r - a / (r * r)) / 3  # one Newton step: |x|**(1/3) has the error of 1/3
    r = F.where(F.equal(a, 0), a, F.where(F.equal(a, math.inf), a, r))
    return F.where(x < 0, -r, r)


def _round(x, decimals):
    """NumPy's rule: rint(x * 10**d) / 10**d, or rint(x / 10**-d) * 10**-d for d < 0."""
    if x.dtype.kind in "iub":
        if decimals >= 0:
            return x
        scale = 10.0**-decimals
        return F.cast(F.rint(F.cast(x, "float64") / scale) * scale, x.dtype)
    if decimals == 0:
        return F.rint(x)
    if decimals > 0:
        return F.rint(x * 10.0**decimals) / 10.0**decimals
    return F.rint(x / 10.0**-decimals) * 10.0**-decimals


def _mod(a, b):
    r = F.fmod(a, b)  # exact; then the sign of the divisor, as Python's % has it
    moved = F.where(F.not_equal(r, 0), F.not_equal(r < 0, b < 0), False)
    return F.where(moved, r + b, r)


def _trunc(q):
    return F.where(q < 0, F.ceil(q), F.floor(q))


ARCTAN = unary("arctan", np.arctan, sympy=sympy.atan, promote="float", ufunc=np.arctan,
               vjp=lambda g, out, x: (g / (1 + x * x),),
               doc="Inverse tangent, in (-pi/2, pi/2). ``sg.arctan(x)``.")
ARCSIN = unary("arcsin", np.arcsin, sympy=sympy.asin, promote="float", ufunc=np.arcsin,
               vjp=lambda g, out, x: (g / F.sqrt(_one_minus_x2(x)),),
               decompose=lambda x: F.arctan(x / F.sqrt(_one_minus_x2(x))),
               doc="Inverse sine, in [-pi/2, pi/2] (NaN outside [-1, 1]). ``sg.arcsin(x)``.")
ARCCOS = unary("arccos", np.arccos, sympy=sympy.acos, promote="float", ufunc=np.arccos,
               vjp=lambda g, out, x: (-g / F.sqrt(_one_minus_x2(x)),),
               decompose=lambda x: 2 * F.arctan(F.sqrt((1 - x) / (1 + x))),
               doc="Inverse cosine, in [0, pi] (NaN outside [-1, 1]). ``sg.arccos(x)``.")
ARCTAN2 = binary("arctan2", np.arctan2, sympy=sympy.atan2, promote="float", ufunc=np.arctan2,
                 vjp=lambda g, out, y, x: (g * x / (x * x + y * y), -g * y / (x * x + y * y)),
                 decompose=_atan2,
                 doc="The angle of the point ``(x, y)``, in [-pi, pi]; ``y`` comes first, as "
                 "in NumPy. ``sg.arctan2(y, x)``.")
SINH = unary("sinh", np.sinh, sympy=sympy.sinh, promote="float", ufunc=np.sinh,
             vjp=lambda g, out, x: (g * F.cosh(x),), decompose=_sinh,
             doc="Hyperbolic sine. ``sg.sinh(x)``.")
COSH = unary("cosh", np.cosh, sympy=sympy.cosh, promote="float", ufunc=np.cosh,
             vjp=lambda g, out, x: (g * F.sinh(x),), decompose=_cosh,
             doc="Hyperbolic cosine. ``sg.cosh(x)``.")
ARCSINH = unary("arcsinh", np.arcsinh, sympy=sympy.asinh, promote="float", ufunc=np.arcsinh,
                vjp=lambda g, out, x: (g / F.sqrt(1 + x * x),), decompose=_arcsinh,
                doc="Inverse hyperbolic sine. ``sg.arcsinh(x)``.")
ARCTANH = unary("arctanh", np.arctanh, sympy=sympy.atanh, promote="float", ufunc=np.arctanh,
                vjp=lambda g, out, x: (g / _one_minus_x2(x),), decompose=_arctanh,
                doc="Inverse hyperbolic tangent (+-inf at +-1, NaN beyond). "
                "``sg.arctanh(x)``.")
LOG2 = unary("log2", np.log2, sympy=lambda x: sympy.log(x, 2), promote="float",
             ufunc=np.log2, vjp=lambda g, out, x: (g / (x * _LN2),),
             decompose=lambda x: F.log(x) / _LN2, doc="Base-2 logarithm. ``sg.log2(x)``.")
LOG10 = unary("log10", np.log10, sympy=lambda x: sympy.log(x, 10), promote="float",
              ufunc=np.log10, vjp=lambda g, out, x: (g / (x * _LN10),),
              decompose=lambda x: F.log(x) / _LN10, doc="Base-10 logarithm. ``sg.log10(x)``.")
LOGADDEXP = binary("logaddexp", np.logaddexp, commutative=True, promote="float",
                   sympy=lambda a, b: sympy.log(sympy.exp(a) + sympy.exp(b)),
                   ufunc=np.logaddexp, decompose=_logaddexp,
                   vjp=lambda g, out, a, b: (g * F.exp(a - out), g * F.exp(b - out)),
                   doc="``log(exp(a) + exp(b))`` without overflow. ``sg.logaddexp(a, b)``.")
CBRT = unary("cbrt", np.cbrt, promote="float", ufunc=np.cbrt, decompose=_cbrt,
             sympy=lambda x: sympy.sign(x) * sympy.Abs(x) ** sympy.Rational(1, 3),
             vjp=lambda g, out, x: (g / (3 * out * out),),
             doc="Real cube root (negative for negative ``x``). ``sg.cbrt(x)``.")

# Rounding: piecewise constant, so every derivative is 0 (as in JAX and PyTorch)
FLOOR = unary("floor", np.floor, sympy=sympy.floor, promote="exact_int", ufunc=np.floor,
              vjp=_no_grad, props=_ZERO,
              doc="The largest integer <= ``x`` (an integer ``x`` is returned as is, as in "
              "NumPy). ``sg.floor(x)``.")
CEIL = unary("ceil", np.ceil, sympy=sympy.ceiling, promote="exact_int", ufunc=np.ceil,
             vjp=_no_grad, props=_ZERO, decompose=lambda x: -F.floor(-x),
             doc="The smallest integer >= ``x``. ``sg.ceil(x)``.")
RINT = unary("rint", np.rint, promote="float", ufunc=np.rint, vjp=_no_grad,
             props=_ZERO | _NONE,
             doc="The nearest integer, halves to even (``rint(2.5) = 2``). ``sg.rint(x)``.")
ROUND = OpDef("round", ELEMENTWISE, _same, lambda d, x: np.round(x, d), fn="round", arity=1,
              vjp=_no_grad, props=_ZERO | _NONE, param=("decimals", 0, int),
              decompose=_round, fmt_arg=lambda d: f"decimals={d}",
              doc="``x`` rounded to ``decimals`` digits, halves to even (NumPy's "
              "``np.round``). ``sg.round(x, 2)``.")
FMOD = binary("fmod", np.fmod, infer=_no_bool("fmod", "sg.fmod(sg.cast({0}, 'int32'), {1})"),
              vjp=lambda g, out, a, b: (g, -g * _trunc(a / b)), props=_NONE, ufunc=np.fmod,
              doc="C's remainder: the sign of ``a`` (``fmod(-7, 3) = -1``; 0 for an integer "
              "``b = 0``). ``sg.fmod(a, b)``.")
MOD = binary("mod", np.mod, infer=_no_bool("mod", "sg.mod(sg.cast({0}, 'int32'), {1})"),
             sympy=sympy.Mod, ufunc=np.remainder, decompose=_mod,
             vjp=lambda g, out, a, b: (g, -g * F.floor(a / b)),
             doc="Python's remainder: the sign of ``b`` (``mod(-7, 3) = 2``), NumPy's "
             "``np.mod``. ``sg.mod(a, b)``.")
STOP_GRADIENT = unary("stop_gradient", lambda x: x, vjp=lambda g, out, x: (None,),
                      props=_NONE, decompose=lambda x: x,
                      doc="``x``, with a zero derivative (JAX's ``lax.stop_gradient``): "
                      "``sg.stop_gradient(target) - pred``.")

MATH_OPS = (ARCTAN, ARCSIN, ARCCOS, ARCTAN2, SINH, COSH, ARCSINH, ARCTANH, LOG2, LOG10,
            LOGADDEXP, CBRT, FLOOR, CEIL, RINT, ROUND, FMOD, MOD, STOP_GRADIENT)
ALL_ELEMENTWISE_OPS = (*ELEMENTWISE_OPS, *MATH_OPS)
