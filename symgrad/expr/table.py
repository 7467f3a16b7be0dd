"""The operator table: every operator symgrad has, in one place."""

from __future__ import annotations

from symgrad.expr.leaves import CONST, INPUT, PARAM, SIZE
from symgrad.expr.node import Expr, OpDef, toposort
from symgrad.expr.ops_band import BAND_OPS
from symgrad.expr.ops_elementwise import ELEMENTWISE_OPS
from symgrad.expr.ops_index import INDEX_OPS
from symgrad.expr.ops_tensor import TENSOR_OPS

ALL_OPS: tuple[OpDef, ...] = (INPUT, PARAM, CONST, SIZE, *ELEMENTWISE_OPS, *TENSOR_OPS,
                              *INDEX_OPS, *BAND_OPS)
OPS_BY_NAME: dict[str, OpDef] = {op.name: op for op in ALL_OPS}


def count_ops(e: Expr | list[Expr]) -> int:
    """The number of distinct nodes in ``e`` (shared subexpressions count once).

    >>> x = sg.input("x"); t = sg.exp(x)
    >>> sg.count_ops(t * t)
    3
    """
    return len(toposort([e] if isinstance(e, Expr) else list(e)))
