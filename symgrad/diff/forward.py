"""Forward-mode derivatives with a batch of tangents, for Jacobians, Hessians and HVPs.

A tangent of a node carries ``nb`` extra leading axes (one per seed direction), so a whole
Jacobian is one forward sweep whose seed is the identity, not one sweep per column: the
result stays a formula whose size does not grow with the number of columns. Elementwise
operators take their partial derivatives from their ``vjp`` rule (fed a cotangent of 1);
other operators declare a ``jvp`` rule. Hessians are forward-over-reverse.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from symgrad.diff.reverse import _check_wrt, depends_on, zeros
from symgrad.expr import functions as F
from symgrad.expr import tensors as T
from symgrad.expr.leaves import const
from symgrad.expr.node import ELEMENTWISE, Expr, toposort
from symgrad.expr.ops_band import band_matrix
from symgrad.expr.shapes import fmt


def _align(t: Expr, nb: int, src: Expr, out: Expr) -> Expr:
    """Tangent ``t`` (batch + src.shape) with 1s inserted so it broadcasts against out."""
    missing = out.ndim - src.ndim
    if missing == 0:
        return t
    return T.reshape(t, t.shape[:nb] + (1,) * missing + src.shape)


def _elementwise_jvp(node: Expr, ts: list[Expr | None], nb: int) -> Expr | None:
    partials = node.op.vjp(F.cast(1, node.dtype), node, *node.srcs)
    total = None
    for src, t, p in zip(node.srcs, ts, partials):
        if t is None or p is None:
            continue
        term = F.cast(p * _align(t, nb, src, node), node.dtype)
        total = term if total is None else total + term
    if total is None:
        return None
    batch = next(t for t in ts if t is not None).shape[:nb]
    return T.broadcast_to(total, batch + node.shape)


def jvp(outputs: Sequence[Expr], wrts: Sequence[Expr], tangents: Sequence[Expr],
        nb: int = 0) -> list[Expr | None]:
    """Tangents of ``outputs`` given ``tangents`` (each ``batch + wrt.shape``) of ``wrts``;
    ``None`` where an output does not depend on them."""
    live = depends_on(outputs, wrts)
    tan: dict[Expr, Expr] = dict(zip(wrts, tangents))
    for node in toposort(list(outputs)):
        if node in tan or node not in live:
            continue
        ts = [tan.get(s) for s in node.srcs]
        if all(t is None for t in ts):
            continue
        if node.op.kind == ELEMENTWISE:
            out = _elementwise_jvp(node, ts, nb)
        elif node.op.jvp is not None:
            out = node.op.jvp(tuple(ts), node, nb)
        else:
            raise NotImplementedError(f"operator {node.op.name!r} has no forward rule")
        if out is not None:
            tan[node] = F.cast(out, node.dtype) if out.dtype != node.dtype else out
    return [tan.get(o) for o in outputs]


def identity(shape: tuple, dtype) -> Expr:
    """The identity over ``shape``: an array of shape ``shape + shape``."""
    if any(isinstance(d, str) for d in shape):
        raise ValueError(f"a Jacobian or Hessian needs a variable of known shape, got "
                         f"{fmt(shape)}")
    if len(shape) == 1:  # one band of ones: the structure survives into Hessians
        ones = T.broadcast_to(F.cast(1, dtype), shape)
        return band_matrix(shape + shape, [(ones, 0, 1)])
    n = int(np.prod(shape)) if shape else 1
    if n == 0:  # no seed directions (one_hot has no zero classes): an empty identity
        return zeros(shape + shape, dtype)
    eye = T.one_hot(const(np.arange(n, dtype=np.int32)), n, dtype)
    return T.reshape(eye, shape + shape)


def raw_jacobian(f: Expr, wrt: Expr) -> Expr:
    """d f / d wrt with shape ``f.shape + wrt.shape``, before simplification."""
    _check_wrt(wrt, "jacobian")
    if f.dtype.kind != "f":
        raise TypeError(f"jacobian: f has dtype {f.dtype}; only floating-point functions "
                        "have derivatives")
    nb = wrt.ndim
    (t,) = jvp([f], [wrt], [identity(wrt.shape, wrt.dtype)], nb)
    if t is None:
        return zeros(f.shape + wrt.shape, f.dtype)
    # the tangent is batch (wrt's axes) first; a Jacobian puts f's axes first
    perm = tuple(range(nb, nb + f.ndim)) + tuple(range(nb))
    return T.transpose(t, perm)


def raw_hvp(g: Expr, wrt: Expr, v: Expr) -> Expr:
    """The forward derivative of the gradient ``g`` in direction ``v``."""
    (t,) = jvp([g], [wrt], [v], 0)
    return zeros(g.shape, g.dtype) if t is None else t
