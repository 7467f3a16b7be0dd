"""More reductions, one stanza each: ``prod``, and the square root the standard deviation
and the 2-norm end in.

``prod`` is a reduction kind of its own (the loop IR's ``prod`` accumulator, starting from
1); its derivative is the product of the *other* elements, computed without dividing by a
zero: with ``z`` zeros among the reduced elements, an element's cofactor is ``p/x`` when
``z = 0``, the product of the nonzero elements for the zero itself when ``z = 1``, and 0
otherwise. (Its second derivative takes the cofactor of an element beside two zeros as
the constant 0, so a Hessian with two or more zeros in one product is not exact there.)

``safe_sqrt`` is ``sqrt`` whose derivative is 0 where its value is 0 (instead of
``inf``): ``std`` and ``norm`` of a constant (or zero) vector sit on a kink there, and 0
is the subgradient every peer's convention gives (as ``abs`` has at 0). It is internal:
no public function; backends compile its decomposition, ``sqrt``.
"""

from __future__ import annotations

import numpy as np

from symgrad.expr.node import INTERNAL, NO_SYMPY, F
from symgrad.expr.ops_elementwise import unary
from symgrad.expr.ops_tensor import _reduce_jvp, _reduce_vjp, _sum_dtype, reduction


def cofactors(out, x):
    """For each element of ``x``, the product of the other elements ``prod`` (``out``)
    combined over its reduced axes, exact with zeros among them (no ``0/0``)."""
    axes, _ = out.arg
    is_zero = F.equal(x, 0)
    safe = F.where(is_zero, F.cast(1, x.dtype), x)  # no division by 0, in any branch
    zeros = F.sum(F.cast(is_zero, "int32"), axes, keepdims=True)
    nonzero = F.prod(safe, axes, keepdims=True)  # = the product itself when z == 0
    return F.where(is_zero, F.where(F.equal(zeros, 1), nonzero, 0),
                   F.where(F.equal(zeros, 0), nonzero / safe, 0))


# d prod = g * (the product of the others), by :func:`cofactors`
PROD = reduction("prod", np.prod, _sum_dtype, vjp=_reduce_vjp(cofactors),
                 jvp=_reduce_jvp(cofactors))


def _safe_sqrt_vjp(g, out, x):
    positive = out > 0
    return (g * F.where(positive, 0.5 / F.where(positive, out, 1), 0),)


SAFE_SQRT = unary("safe_sqrt", np.sqrt, promote="float", vjp=_safe_sqrt_vjp,
                  decompose=lambda x: F.sqrt(x), props=frozenset({INTERNAL, NO_SYMPY}))

REDUCE_OPS = (PROD, SAFE_SQRT)
