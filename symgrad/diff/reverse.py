"""Reverse-mode symbolic differentiation over the DAG.

One sweep in reverse topological order: each node's adjoint (the sum of its users'
contributions) is handed to its operator's ``vjp`` rule, which returns one cotangent per
source in the output's shape; this sweep, and only it, sums fan-in and undoes broadcasting.
A node used k times is differentiated once, so the derivative is linear in the graph's size.
"""

from __future__ import annotations

from typing import Sequence

from symgrad.expr import functions as F
from symgrad.expr import tensors as T
from symgrad.expr.node import Expr, toposort
from symgrad.expr.shapes import fmt


def zeros(shape: tuple, dtype) -> Expr:
    """A zero array of ``shape`` (symbolic dims allowed) as a broadcast constant."""
    return T.broadcast_to(F.cast(0, dtype), shape)


def unbroadcast(ct: Expr, shape: tuple) -> Expr:
    """Sum ``ct`` over the axes that broadcasting stretched to reach ``shape``."""
    if ct.shape == shape:
        return ct
    lead = ct.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, d in enumerate(shape) if d == 1 and ct.shape[lead + i] != 1)
    out = T.sum(ct, axes) if axes else ct
    return T.reshape(out, shape) if out.shape != shape else out


def _check_wrt(wrt: Expr, what: str) -> None:
    if not isinstance(wrt, Expr):
        raise TypeError(f"{what}: expected a symgrad input or parameter, got "
                        f"{type(wrt).__name__}")
    if wrt.dtype.kind != "f":
        label = f"{wrt.op.name} {wrt.name!r}" if wrt.name else f"a {wrt.op.name} node"
        raise TypeError(f"{what}: {label} has dtype {wrt.dtype}; only floating-point "
                        "values have gradients")


def depends_on(roots: Sequence[Expr], wrts: Sequence[Expr]) -> set[Expr]:
    """The nodes (among those reachable from ``roots``) that depend on any of ``wrts``."""
    targets = set(wrts)
    live: set[Expr] = set()
    for n in toposort(list(roots)):
        if n in targets or any(s in live for s in n.srcs):
            live.add(n)
    return live


def vjp(f: Expr, wrts: Sequence[Expr], seed: Expr) -> list[Expr]:
    """Cotangents of ``wrts`` for the cotangent ``seed`` of ``f`` (the raw, unsimplified
    vector-Jacobian product)."""
    live = depends_on([f], wrts)
    # each node's contributions, summed once all its users are done, in the users' forward
    # order (as the model was written; the simplifier then mostly appends to its sums)
    parts: dict[Expr, list[Expr]] = {f: [seed]}
    adjoint: dict[Expr, Expr] = {}
    for node in reversed(toposort([f])):
        got = parts.pop(node, None)
        if got is None:
            continue
        g = got[-1]
        for ct in reversed(got[:-1]):
            g = g + ct
        adjoint[node] = g
        if node not in live or not node.srcs:
            continue
        if node.op.vjp is None:
            raise NotImplementedError(f"operator {node.op.name!r} has no derivative rule")
        cts = node.op.vjp(g, node, *node.srcs)
        for src, ct in zip(node.srcs, cts):
            if ct is None or src not in live:
                continue
            ct = unbroadcast(ct, src.shape)
            if ct.dtype != src.dtype:
                ct = F.cast(ct, src.dtype)
            parts.setdefault(src, []).append(ct)
    return [adjoint[w] if w in adjoint else zeros(w.shape, w.dtype) for w in wrts]


def raw_grad(f: Expr, wrt: Expr | Sequence[Expr]) -> Expr | list[Expr]:
    """The gradient of scalar ``f`` as the sweep builds it, before simplification."""
    if not isinstance(f, Expr):
        raise TypeError(f"grad: f must be a symgrad expression, got {type(f).__name__}")
    if f.shape != ():
        raise ValueError(f"grad: f must be a scalar, but it has shape {fmt(f.shape)}; "
                         "use sg.jacobian(f, wrt) for a non-scalar f (or reduce it with "
                         "sg.sum / sg.mean)")
    if f.dtype.kind != "f":
        raise TypeError(f"grad: f has dtype {f.dtype}; only floating-point functions have "
                        "gradients")
    single = isinstance(wrt, Expr)
    wrts = [wrt] if single else list(wrt)
    for w in wrts:
        _check_wrt(w, "grad")
    out = vjp(f, wrts, F.cast(1, f.dtype))
    return out[0] if single else out
