"""The operator table: every operator symgrad has, in one place."""

from __future__ import annotations

import difflib

from symgrad.expr.leaves import CONST, INPUT, PARAM, SIZE
from symgrad.expr.node import Expr, OpDef, toposort
from symgrad.expr.ops_band import BAND_OPS
from symgrad.expr.ops_elementwise import ELEMENTWISE_OPS
from symgrad.expr.ops_gather import GATHER_OPS
from symgrad.expr.ops_index import INDEX_OPS
from symgrad.expr.ops_math import MATH_OPS
from symgrad.expr.ops_reduce import REDUCE_OPS
from symgrad.expr.ops_tensor import TENSOR_OPS

ALL_OPS: tuple[OpDef, ...] = (INPUT, PARAM, CONST, SIZE, *ELEMENTWISE_OPS, *MATH_OPS, *TENSOR_OPS,
                              *INDEX_OPS, *BAND_OPS, *REDUCE_OPS,
                              *GATHER_OPS)
OPS_BY_NAME: dict[str, OpDef] = {op.name: op for op in ALL_OPS}


class _Enumeration:
    """Every operator by name, as one flat enumeration: ``Op.add``, ``Op["add"]``, ``for op
    in Op``. Members are the stanzas themselves (``node.op is Op.exp``); what rules and
    backends ask of one is ``op.has(...)`` (its kind and properties), never its name."""

    def __getattr__(self, name: str) -> OpDef:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return OPS_BY_NAME[name]
        except KeyError:
            close = difflib.get_close_matches(name, OPS_BY_NAME, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise AttributeError(f"no operator {name!r}{hint}") from None

    def __getitem__(self, name: str) -> OpDef:
        return OPS_BY_NAME[name]

    def __iter__(self):
        return iter(ALL_OPS)

    def __len__(self) -> int:
        return len(ALL_OPS)

    def __repr__(self) -> str:
        return f"<the {len(ALL_OPS)} operators of symgrad>"


Op = _Enumeration()


def count_ops(e: Expr | list[Expr]) -> int:
    """The number of distinct nodes in ``e`` (shared subexpressions count once).

    >>> x = sg.input("x"); t = sg.exp(x)
    >>> sg.count_ops(t * t)
    3
    """
    return len(toposort([e] if isinstance(e, Expr) else list(e)))
