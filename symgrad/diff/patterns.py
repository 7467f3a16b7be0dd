"""A small pattern language for rewrite rules: ``Rule("x*1 -> x", mul(x, 1), take(x))``.

A pattern is a :class:`Var` (matches any node; a name used twice must match the same node),
a Python number (matches a constant whose every element equals it), or an operator applied
to patterns, :class:`Pat`. Commutative operators match either operand order. A rule's
replacement is a function of the match; the engine keeps shapes and dtypes (a smaller
result is broadcast back, a rewrite that cannot keep them is skipped).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

from symgrad.expr.leaves import CONST
from symgrad.expr.node import Expr, OpDef


@dataclass(frozen=True)
class Var:
    """A pattern variable; ``test`` (optional) must accept the node it binds."""

    name: str
    test: Callable[[Expr], bool] | None = None


@dataclass(frozen=True)
class Pat:
    """``op`` applied to sub-patterns; ``arg`` (optional) tests the op's argument."""

    op: OpDef
    srcs: tuple
    arg: Callable[[Any], bool] | None = None


Match = dict


_values: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_NOT_UNIFORM = object()


def const_value(node: Expr) -> float | int | bool | None:
    """The value of a constant whose elements are all equal, else ``None`` (remembered per
    node: rules ask it of the same constants again and again)."""
    if node.op is not CONST:
        return None
    v = _values.get(node)
    if v is None:
        v = node.arg.scalar()
        _values[node] = _NOT_UNIFORM if v is None else v
    return None if v is _NOT_UNIFORM else v


def match(pat: Any, node: Expr, m: Match) -> Match | None:
    if isinstance(pat, Var):
        bound = m.get(pat.name)
        if bound is not None:
            return m if bound is node else None
        if pat.test is not None and not pat.test(node):
            return None
        return {**m, pat.name: node}
    if isinstance(pat, (int, float)):
        v = const_value(node)
        return m if v is not None and not isinstance(v, bool) and v == pat else None
    if node.op is not pat.op or len(node.srcs) != len(pat.srcs):
        return None
    if pat.arg is not None and not pat.arg(node.arg):
        return None
    orders = [node.srcs]
    if node.op.commutative and len(node.srcs) == 2:
        orders.append(node.srcs[::-1])
    for srcs in orders:
        out: Match | None = m
        for p, s in zip(pat.srcs, srcs):
            out = match(p, s, out)
            if out is None:
                break
        if out is not None:
            return out
    return None


@dataclass(frozen=True)
class Rule:
    """``name`` reads as the identity (``"x*1 -> x"``); ``build(match)`` gives the new node
    (or ``None`` to decline); ``when(match)`` is an optional extra condition."""

    name: str
    pattern: Any
    build: Callable[[Match], Expr | float | None]
    when: Callable[[Match], bool] | None = None
    tags: tuple = field(default=())

    def apply(self, node: Expr) -> Expr | float | None:
        m = match(self.pattern, node, {"_": node})  # "_" is the whole node
        if m is None or (self.when is not None and not self.when(m)):
            return None
        return self.build(m)


class RuleSet:
    """A named list of rules; rule sets compose with ``+``."""

    def __init__(self, name: str, rules: list[Rule]):
        self.name, self.rules = name, list(rules)
        self._by_op: dict[OpDef, list[Rule]] = {}
        self._heads: dict[OpDef, list[tuple[Rule, tuple]]] = {}
        for r in self.rules:
            self._by_op.setdefault(r.pattern.op, []).append(r)
            # a number in a pattern matches a constant node only (see ``match``)
            need = tuple(p.op if isinstance(p, Pat) else CONST if isinstance(
                p, (int, float)) else None for p in r.pattern.srcs)
            self._heads.setdefault(r.pattern.op, []).append((r, need))

    def __add__(self, other: RuleSet) -> RuleSet:
        return RuleSet(f"{self.name}+{other.name}", self.rules + other.rules)

    def for_op(self, op: OpDef) -> list[Rule]:
        return self._by_op.get(op, [])

    def for_node(self, node: Expr) -> list[Rule]:
        """The rules whose pattern may match ``node``: its operator, and its operands'
        operators where the pattern names them (a quick test before the full match)."""
        heads = self._heads.get(node.op)
        if not heads:
            return []
        names = tuple(s.op for s in node.srcs)
        flipped = names[::-1] if node.op.commutative and len(names) == 2 else None
        return [r for r, need in heads
                if _fits(need, names) or (flipped is not None and _fits(need, flipped))]

    def __iter__(self):
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def __repr__(self) -> str:
        return f"RuleSet({self.name!r}, {len(self.rules)} rules)"


def _fits(need: tuple, names: tuple) -> bool:
    """Whether operands with operators ``names`` can match a pattern's ``need`` (an operator
    per operand, or ``None`` for any)."""
    if len(need) != len(names):
        return False
    for k, name in zip(need, names):
        if k is not None and k is not name:
            return False
    return True


def op(name: str) -> Callable[..., Pat]:
    """``op("exp")(x)`` is the pattern ``exp(x)`` (the name is looked up in the operator
    table at once: a misspelt one raises instead of never matching)."""
    from symgrad.expr.table import OPS_BY_NAME

    if name not in OPS_BY_NAME:
        raise KeyError(f"op({name!r}): no such operator; the table has "
                       f"{', '.join(sorted(OPS_BY_NAME))}")
    found = OPS_BY_NAME[name]

    def make(*srcs: Any, arg: Callable[[Any], bool] | None = None) -> Pat:
        return Pat(found, tuple(srcs), arg)
    return make
