"""The public derivative functions: simplified formulas, ready to print or compile."""

from __future__ import annotations

from typing import Sequence

from symgrad.diff.forward import raw_hvp, raw_jacobian
from symgrad.diff.reverse import raw_grad
from symgrad.diff.simplify import Simplifier, simplify
from symgrad.expr.functions import Operand, as_expr, cast
from symgrad.expr.leaves import INPUT, PARAM
from symgrad.expr.node import Expr
from symgrad.expr.shapes import ShapeError, fmt


def grad(f: Expr, wrt: Expr | Sequence[Expr], simplified: bool = True) -> Expr | list[Expr]:
    """The gradient of scalar ``f`` with respect to ``wrt`` (a node or a list), as a
    simplified formula of ``wrt``'s shape. By inputs and parameters, ``f`` is simplified
    first, so a naive formula is differentiated in its stable form:
    ``sg.grad(sg.sum(sg.log(1 + sg.exp(x))), x)`` is ``sigmoid(x)``.

    >>> print(sg.grad(sg.mean((w1 * x1 + w2 * x2 + b - y) ** 2), w1))
    2*mean((b + w1*x1 + w2*x2 - y)*x1)
    """
    if not simplified:
        return raw_grad(f, wrt)
    s = Simplifier()
    g = raw_grad(_stable(s, f, wrt), wrt)
    return s(g) if isinstance(g, Expr) else [s(n) for n in g]


def _stable(s: Simplifier, f: Expr, wrt: Expr | Sequence[Expr]) -> Expr:
    """``f`` simplified first, so that its derivative is taken from the stable operators
    (``log(1 + exp(x))`` as ``softplus(x)``: ``sigmoid(x)``, not ``exp(x)/(1 + exp(x))``);
    only when differentiating by inputs and parameters, which simplifying keeps."""
    wrts = [wrt] if isinstance(wrt, Expr) else list(wrt)
    if not isinstance(f, Expr) or not all(isinstance(w, Expr) and w.op in (INPUT, PARAM)
                                          for w in wrts):
        return f
    return s(f)


def jacobian(f: Expr, wrt: Expr | Sequence[Expr],
             simplified: bool = True) -> Expr | list[Expr]:
    """d f / d wrt, of shape ``f.shape + wrt.shape`` (a list for a list of ``wrt``).

    >>> x = sg.input("x", shape=(3,))
    >>> sg.evaluate(sg.jacobian(x**2, x), x=[1.0, 2.0, 3.0])   # diag(2*x)
    """
    wrts = [wrt] if isinstance(wrt, Expr) else list(wrt)
    if simplified:
        s = Simplifier()
        f = _stable(s, f, wrts)
        out = [s(raw_jacobian(f, w)) for w in wrts]
    else:
        out = [raw_jacobian(f, w) for w in wrts]
    return out[0] if isinstance(wrt, Expr) else out


def hessian(f: Expr, wrt: Expr | Sequence[Expr],
            simplified: bool = True) -> Expr | list[list[Expr]]:
    """The Hessian of scalar ``f``: shape ``wrt.shape + wrt.shape`` (blocks for a list),
    by forward-mode over the simplified gradient — one formula, not one per column.

    >>> H = sg.hessian(sg.sum(100 * (x[1:] - x[:-1]**2)**2 + (1 - x[:-1])**2), x)
    """
    if isinstance(wrt, Expr):
        return jacobian(grad(f, wrt), wrt, simplified)
    wrts = list(wrt)
    grads = grad(f, wrts)
    return [jacobian(g, wrts, simplified) for g in grads]


def hvp(f: Expr, wrt: Expr, v: Operand, simplified: bool = True) -> Expr:
    """The Hessian-vector product ``H @ v`` of scalar ``f`` (shape of ``wrt``), without
    building the Hessian.

    >>> sg.hvp(f, x, sg.input("v", shape=(3,)))
    """
    v = as_expr(v)
    if v.shape != wrt.shape:
        raise ShapeError(f"hvp: v must have the shape of wrt {fmt(wrt.shape)}, got "
                         f"{fmt(v.shape)}")
    out = raw_hvp(grad(f, wrt), wrt, cast(v, wrt.dtype))
    return simplify(out) if simplified else out
