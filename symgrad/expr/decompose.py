"""Operators written with other operators: the decompositions backends compile.

A stanza's ``decompose(*srcs[, arg])`` builds the operator from others with the public
functions (``sinh(x) = (expm1(x) - expm1(-x))/2``). A backend that has no spelling of its
own for an operator calls :func:`expand`: the decomposition is built once per operator,
operand dtypes and argument, over scalar placeholders, and each of its nodes is handed to
the backend's own callbacks (which spell it natively, or expand it in turn).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import numpy as np

from symgrad.expr.functions import as_expr
from symgrad.expr.leaves import CONST, input
from symgrad.expr.node import ELEMENTWISE, Expr, OpDef, toposort


@functools.cache
def expansion(op: OpDef, dtypes: tuple[np.dtype, ...], arg: Any) -> tuple[Expr, tuple]:
    """``op``'s decomposition over scalar placeholders of ``dtypes``: ``(graph, leaves)``.
    It must be elementwise and keep the operator's dtype."""
    if op.decompose is None:
        raise NotImplementedError(f"the operator {op.name!r} has no decomposition")
    leaves = tuple(input(f"a{i}", (), dt) for i, dt in enumerate(dtypes))
    out = as_expr(op.decompose(*leaves) if arg is None else op.decompose(*leaves, arg))
    want = Expr(op, leaves, arg).dtype
    if out.dtype != want or out.shape != ():
        raise TypeError(f"the decomposition of {op.name!r} gives {out.dtype} "
                        f"{out.shape}; the operator gives {want} ()")
    for n in toposort([out]):
        if n.op.kind != ELEMENTWISE and n.op is not CONST and n not in leaves:
            raise TypeError(f"the decomposition of {op.name!r} uses {n.op.name!r}: "
                            "decompositions are elementwise")
        if n.op is CONST and n.arg.scalar() is None:
            raise TypeError(f"the decomposition of {op.name!r} has a constant array")
    return out, leaves


def expand(op: OpDef, arg: Any, dtypes: tuple, values: list,
           node: Callable[[OpDef, list, np.dtype, Any], Any],
           const: Callable[[Any, np.dtype], Any]) -> Any:
    """``op(*values)`` by its decomposition: ``node(op, operand values, dtype, arg)`` makes
    each operator node of it and ``const(value, dtype)`` each constant."""
    graph, leaves = expansion(op, tuple(np.dtype(d) for d in dtypes), arg)
    made: dict[Expr, Any] = dict(zip(leaves, values))
    for n in toposort([graph]):
        if n in made:
            continue
        if n.op is CONST:
            made[n] = const(n.arg.scalar(), n.dtype)
        else:
            made[n] = node(n.op, [made[s] for s in n.srcs], n.dtype, n.arg)
    return made[graph]


def primitives(op: OpDef, dtypes: tuple, arg: Any = None) -> set[OpDef]:
    """The operators ``op`` comes down to when every decomposition is expanded (itself
    when it has none): what a backend without composite spellings must spell."""
    if op.decompose is None:
        return {op}
    graph, leaves = expansion(op, tuple(np.dtype(d) for d in dtypes), arg)
    out: set[OpDef] = set()
    for n in toposort([graph]):
        if n.op is not CONST and n not in leaves:
            out |= primitives(n.op, tuple(s.dtype for s in n.srcs), n.arg)
    return out
