"""The bridge to SymPy: ``to_sympy`` and ``from_sympy``.

Elementwise expressions map one to one, each array read as its generic element (``x``
stands for ``x[i]``). A ``sum`` or ``mean`` over a whole vector becomes a SymPy ``Sum`` over
an index ``i`` with ``IndexedBase`` symbols, so ``mean((w*x - y)**2)`` reads
``Sum((w*x[i] - y[i])**2, (i, 0, N - 1))/N``. Other tensor operators raise
``NotImplementedError`` naming the operator.
"""

from __future__ import annotations

from typing import Any, Mapping

import sympy

from symgrad.expr import functions as F
from symgrad.expr import ops_tensor as T
from symgrad.expr import tensors
from symgrad.expr.leaves import CONST, INPUT, PARAM, SIZE, size
from symgrad.expr.node import ELEMENTWISE, Expr, toposort
from symgrad.expr.ops_math import ALL_ELEMENTWISE_OPS
from symgrad.expr.printing import _leaf_names

_INDEX = sympy.Idx("i")


def _size_symbol(dim: int | str) -> sympy.Expr:
    return sympy.Integer(dim) if isinstance(dim, int) else sympy.Symbol(
        dim, integer=True, positive=True)


def _number(node: Expr) -> sympy.Expr:
    value = node.arg.scalar()
    if value is None:
        raise NotImplementedError(f"to_sympy: a non-uniform constant array of shape "
                                  f"{node.shape} has no SymPy scalar form")
    if isinstance(value, bool):
        return sympy.true if value else sympy.false
    if float(value).is_integer():
        return sympy.Integer(int(value))
    return sympy.Float(value)


def to_sympy(e: Expr) -> sympy.Expr:
    """The SymPy form of a scalar or elementwise expression.

    >>> w, b = sg.params("w b"); x = sg.input("x")
    >>> sg.to_sympy(sg.sigmoid(w * x + b))
    1/(1 + exp(-b - w*x))
    """
    nodes = toposort([e])
    names = _leaf_names(nodes)
    symbols = {n: sympy.Symbol(names[n].replace("#", "_"), real=True) for n in names}
    memo: dict[tuple[Expr, bool], sympy.Expr] = {}

    def conv(node: Expr, indexed: bool) -> sympy.Expr:
        key = (node, indexed)
        if key in memo:
            return memo[key]
        op = node.op
        if op is INPUT or op is PARAM:
            sym = symbols[node]
            out = sympy.IndexedBase(sym)[_INDEX] if indexed and node.ndim else sym
        elif op is CONST:
            out = _number(node)
        elif op is SIZE:
            out = sympy.Mul(*(_size_symbol(d) for d in node.arg[0]))
        elif op.kind == ELEMENTWISE and op.sympy is not None:
            args = [conv(s, indexed) for s in node.srcs]
            out = op.sympy(*args) if node.arg is None else op.sympy(*args, node.arg)
        elif op in (T.SUM, T.MEAN) and not indexed:
            (src,) = node.srcs
            if src.ndim == 0:
                out = conv(src, False)
            elif src.ndim == 1:
                n = _size_symbol(src.shape[0])
                out = sympy.Sum(conv(src, True), (_INDEX, 0, n - 1))
                out = out / n if op is T.MEAN else out
            else:
                raise NotImplementedError(f"to_sympy: {op.name} over axes {node.arg[0]} of "
                                          f"shape {src.shape} (only whole vectors map to Sum)")
        else:
            raise NotImplementedError(f"to_sympy: the operator {op.name!r} has no SymPy form "
                                      "here (elementwise operators, and sum/mean of vectors)")
        memo[key] = out
        return out

    return conv(e, False)


def _functions() -> dict:
    """SymPy function -> symgrad builder, from the stanzas whose SymPy spelling is a SymPy
    function (``sympy.asin``): ``to_sympy`` and ``from_sympy`` read the same entry. Other
    spellings (``log1p`` as ``log(1 + x)``) come back through their parts."""
    return {op.sympy: getattr(F, op.fn) for op in ALL_ELEMENTWISE_OPS
            if isinstance(op.sympy, sympy.FunctionClass) and hasattr(F, op.fn)}


_FUNCS = _functions()
_RELATIONS = {sympy.StrictLessThan: F.less, sympy.LessThan: F.less_equal,
              sympy.StrictGreaterThan: F.greater, sympy.GreaterThan: F.greater_equal,
              sympy.Equality: F.equal, sympy.Unequality: F.not_equal}


def from_sympy(expr: Any, bindings: Mapping[Any, Any]) -> Expr:
    """A symgrad graph from a SymPy expression; ``bindings`` maps each symbol (or its name)
    to a node or number. ``IndexedBase`` symbols inside a ``Sum`` bind to vectors.

    >>> x = sg.input("x"); w = sg.param("w")
    >>> e = sg.from_sympy(sympy.sympify("w*x + 1"), {"w": w, "x": x})
    >>> str(e)
    'w*x + 1'
    """
    table = {str(k): v for k, v in bindings.items()}

    def leaf(name: str) -> Any:
        if name not in table:
            raise ValueError(f"from_sympy: no binding for the symbol {name!r}; bindings "
                             f"has {', '.join(sorted(table)) or 'nothing'}")
        return table[name]

    def conv(s: Any) -> Any:
        if isinstance(s, sympy.Indexed):
            return leaf(str(s.base))
        if isinstance(s, sympy.Symbol):
            if s.name not in table and s.is_integer and s.is_positive:
                return size((s.name,))  # a symbolic dimension, as to_sympy writes N
            return leaf(s.name)
        if s is sympy.true or s is sympy.false:
            return bool(s)
        if s.is_Number:
            if s in (sympy.oo, -sympy.oo, sympy.nan):
                return float(s)
            return int(s) if s.is_Integer else float(s)
        if s.is_Add:  # positive terms first (in SymPy's printed order), then the negative
            terms = sorted(s.as_ordered_terms(), key=lambda a: a.could_extract_minus_sign())
            out = conv(terms[0])
            for a in terms[1:]:
                out = F.subtract(out, conv(-a)) if a.could_extract_minus_sign() else F.add(
                    out, conv(a))
            return out
        if s.is_Mul:
            return _mul(s)
        if s.is_Pow:
            base, ex = s.args
            if ex == sympy.Rational(1, 2):
                return F.sqrt(conv(base))
            if ex == -1:
                return F.divide(1, conv(base))
            if base == sympy.E:
                return F.exp(conv(ex))
            return F.power(conv(base), conv(ex))
        if isinstance(s, sympy.Sum):
            (idx, lo, hi), = s.limits
            if lo != 0:
                raise NotImplementedError(f"from_sympy: a Sum from {lo} (only sums over a "
                                          f"whole vector, from 0, map to sum): {s}")
            if not s.function.has(idx):  # a term free of i is added hi - lo + 1 times
                return F.multiply(conv(hi - lo + 1), conv(s.function))
            return tensors.sum(conv(s.function))
        if isinstance(s, sympy.Piecewise):
            (value, cond), *rest = s.args
            if cond is sympy.true:
                return conv(value)
            return F.where(conv(cond), conv(value), conv(sympy.Piecewise(*rest)))
        if isinstance(s, (sympy.Max, sympy.Min)):
            f = F.maximum if isinstance(s, sympy.Max) else F.minimum
            return _fold(f, [conv(a) for a in s.args])
        for cls, f in _RELATIONS.items():
            if isinstance(s, cls):
                return f(conv(s.lhs), conv(s.rhs))
        if isinstance(s, (sympy.And, sympy.Or)):  # SymPy merges nested Piecewise conditions
            # a and b is where(a, b, False); a or b is where(a, True, b)
            both = isinstance(s, sympy.And)
            return _fold(lambda a, c: F.where(a, c, False) if both else F.where(a, True, c),
                         [conv(a) for a in s.args])
        if isinstance(s, sympy.Not):
            return F.where(conv(s.args[0]), False, True)
        if isinstance(s, sympy.ITE):  # a condition chosen by a condition
            return F.where(*(conv(a) for a in s.args))
        if s.func in _FUNCS:
            return _FUNCS[s.func](*(conv(a) for a in s.args))
        raise NotImplementedError(f"from_sympy: no symgrad operator for {s.func.__name__} "
                                  f"(in {s})")

    def _mul(s: Any) -> Any:
        if s.could_extract_minus_sign() and s.args[0] == -1:
            return F.negative(conv(-s))
        args = list(_ordered(s.args))
        # Sum(f, (i, 0, n - 1)) * n**-1 is a mean over the vector
        for a in args:
            if isinstance(a, sympy.Sum):
                n = a.limits[0][2] + 1
                if sympy.Pow(n, -1) in args:
                    args.remove(a)
                    args.remove(sympy.Pow(n, -1))
                    args.append(_MeanOf(a))
                    break
        return _fold(F.multiply, [tensors.mean(conv(a.sum.function)) if isinstance(a, _MeanOf)
                                  else conv(a) for a in args])

    out = conv(sympy.sympify(expr))
    return F.as_expr(out)


class _MeanOf:
    def __init__(self, sum_: Any):
        self.sum = sum_


def _ordered(args: tuple) -> list:
    """Numbers first, as a person writes ``2*x`` (SymPy's order otherwise)."""
    return sorted(args, key=lambda a: not getattr(a, "is_Number", False))


def _fold(f: Any, values: list) -> Any:
    out = values[0]
    for v in values[1:]:
        out = f(out, v)
    return out
