"""The simplifier: rewrite rules applied bottom-up over the DAG to a fixed point.

Passes, in order at each node: the pattern rules (``symgrad.diff.rules``), constant
folding, dropping broadcasts that elementwise operators do by themselves, and the normal
forms of sums and products (``symgrad.diff.collect``). Every rewrite keeps the node's shape
and dtype: a smaller result is broadcast back, and a rewrite that cannot be is skipped.

The walk is iterative and each walk stops at nodes already simplified, so simplifying a
graph costs time linear in its size, at any depth.
"""

from __future__ import annotations

from typing import Callable, Generator, Sequence

import numpy as np

from symgrad.diff.collect import collect_product, collect_sum
from symgrad.diff.order import unseen_nodes
from symgrad.diff.patterns import RuleSet
from symgrad.diff.rules import DEFAULT_RULES
from symgrad.expr import functions as F
from symgrad.expr import ops_elementwise as E
from symgrad.expr import ops_tensor as T
from symgrad.expr import tensors
from symgrad.expr.leaves import CONST, SIZE, ConstData
from symgrad.expr.node import ELEMENTWISE, LEAF, Expr
from symgrad.expr.shapes import ShapeError, broadcast

FOLD_MAX_SIZE = 4096  # larger non-uniform constant results stay as formulas
MAX_REWRITES_PER_NODE = 64
MAX_DEPTH = 60  # nested rewrites of new nodes; deeper means rules undo each other


def fit(new: Expr | float, old: Expr) -> Expr | None:
    """``new`` with ``old``'s shape and dtype, or ``None`` if it cannot have them."""
    if not isinstance(new, Expr):
        new = F.cast(new, old.dtype)
    if new.shape != old.shape:
        try:
            if broadcast(new.shape, old.shape) != old.shape:
                return None
        except ShapeError:
            return None
        new = tensors.broadcast_to(new, old.shape)
    if new.dtype != old.dtype:
        if new.dtype.kind == "f" and old.dtype.kind != "f":
            return None
        new = F.cast(new, old.dtype)
    return new


def fold_constants(node: Expr) -> Expr | None:
    """An operator over constants is evaluated now (``2*3 -> 6``)."""
    if node.op.kind == LEAF or not node.srcs or any(s.op is not CONST for s in node.srcs):
        return None
    if node.op.extra.get("bind") and any(isinstance(d, str) for d in node.shape):
        return None
    with np.errstate(all="ignore"):
        try:
            value = np.asarray(node.op.numpy(node.arg, *(s.arg.array for s in node.srcs)))
        except (ValueError, IndexError):
            return None  # e.g. one_hot of an out-of-range constant: leave it to fail at run
    value = value.astype(node.dtype)
    uniform = ConstData(value).scalar()
    if uniform is not None and value.ndim:
        return tensors.broadcast_to(Expr(CONST, (), ConstData(value.reshape(-1)[0])),
                                    node.shape)
    if value.size > FOLD_MAX_SIZE:
        return None
    return Expr(CONST, (), ConstData(value))


def drop_implicit_broadcasts(node: Expr) -> Expr | None:
    """``x + broadcast_to(y, s) -> x + y`` when broadcasting gives the same shape anyway
    (also for a reshape that only adds leading 1s)."""
    if node.op.kind != ELEMENTWISE or len(node.srcs) < 2:
        return None
    srcs = list(node.srcs)
    changed = False
    for i, s in enumerate(srcs):
        inner = s.srcs[0] if s.srcs else None
        if s.op is T.BROADCAST_TO or (s.op is T.RESHAPE and s.shape[s.ndim - inner.ndim:] ==
                                       inner.shape and set(s.shape[:s.ndim - inner.ndim])
                                       <= {1}):
            trial = srcs[:i] + [inner] + srcs[i + 1:]
            try:
                if broadcast(*(t.shape for t in trial)) == node.shape:
                    srcs, changed = trial, True
            except ShapeError:
                pass
    return Expr(node.op, tuple(srcs), node.arg) if changed else None


def hoist_broadcast(node: Expr) -> Expr | None:
    """``f(broadcast_to(x, s)) -> broadcast_to(f(x), s)`` for unary elementwise ``f``, so the
    broadcast can meet (and be absorbed by) an operator that broadcasts by itself."""
    if node.op.kind != ELEMENTWISE or len(node.srcs) != 1 or node.srcs[0].op is not T.BROADCAST_TO:
        return None
    return Expr(node.op, node.srcs[0].srcs, node.arg)


def drop_marks(node: Expr) -> Expr | None:
    """An identity that only carries a mark (``sg.watch``) is its operand: the mark belongs
    to the model the user wrote, not to the formulas derived from it."""
    return node.srcs[0] if node.op.extra.get("transparent") else None


def collect(node: Expr) -> Expr | float | None:
    if node.op in (E.ADD, E.SUB) or (node.op is E.NEG and node.srcs[0].op in (E.ADD, E.SUB)):
        return collect_sum(node)
    if node.op in (E.MUL, E.DIV, E.NEG):
        return collect_product(node)
    return None


PASSES: tuple[Callable[[Expr], Expr | float | None], ...] = (
    drop_marks, fold_constants, hoist_broadcast, drop_implicit_broadcasts, collect)


class Simplifier:
    """One simplification run; remembers every node it has simplified.

    Rewriting a node may build new nodes that must be simplified before the node is tried
    again; those nested runs are generators driven from one explicit stack, so a graph of
    any depth simplifies without recursion, and each walk stops at nodes already done.
    """

    def __init__(self, rules: RuleSet = DEFAULT_RULES):
        self.rules = rules
        self.memo: dict[Expr, Expr] = {}
        self.fired: list[str] = []
        self.cut_short = 0  # rewrites stopped by a limit: nonzero means rules undo each other
        self.visited = 0  # nodes simplified (a measure of the work done: linear in the graph)

    def __call__(self, root: Expr) -> Expr:
        if root in self.memo:
            return self.memo[root]
        stack = [self._run(root, 0)]
        result: Expr | None = None
        while stack:
            try:
                request = stack[-1].send(result)
            except StopIteration as done:
                stack.pop()
                result = done.value
                continue
            result = self.memo.get(request)
            if result is None:  # depth = nested runs, as in a recursive simplifier
                stack.append(self._run(request, len(stack)))
        return result

    def _run(self, root: Expr, depth: int) -> Generator[Expr, Expr | None, Expr]:
        """Simplify ``root``'s new nodes, sources first; yields a new node to have it
        simplified, and is sent the result."""
        for node in unseen_nodes(root, self.memo):
            if node in self.memo:  # done meanwhile, by a nested run
                continue
            self.visited += 1
            srcs = tuple(self.memo[s] for s in node.srcs)
            rebuilt = node if srcs == node.srcs else Expr(node.op, srcs, node.arg)
            out = self.memo.get(rebuilt)
            if out is None:
                out = rebuilt
                if rebuilt.srcs or rebuilt.op is SIZE:
                    out = yield from self._rewrite(rebuilt, depth)
            self.memo[node] = self.memo[rebuilt] = self.memo[out] = out
        return self.memo[root]

    def _rewrite(self, node: Expr, depth: int) -> Generator[Expr, Expr | None, Expr]:
        if depth > MAX_DEPTH:  # a cycle of rules; stop rather than nest forever
            self.cut_short += 1
            return node
        for _ in range(MAX_REWRITES_PER_NODE):
            new = self._step(node)
            if new is None:
                return node
            node = yield new  # simplify the new parts, then try this node again
            if node.op.kind == LEAF:
                return node
        self.cut_short += 1
        return node

    def _step(self, node: Expr) -> Expr | None:
        for rule in self.rules.for_node(node):
            out = rule.apply(node)
            if out is not None:
                fitted = fit(out, node)
                if fitted is not None and fitted is not node:
                    self.fired.append(rule.name)
                    return fitted
        for step in PASSES:
            out = step(node)
            if out is not None:
                fitted = fit(out, node)
                if fitted is not None and fitted is not node:
                    self.fired.append(step.__name__)
                    return fitted
        return None


def simplify(e: Expr | Sequence[Expr], rules: RuleSet = DEFAULT_RULES) -> Expr | list[Expr]:
    """``e`` rewritten to a simpler equal formula (same shape, dtype and values).

    >>> x = sg.input("x")
    >>> print(sg.simplify(2 * x + 3 * x - x * 1))
    4*x
    """
    s = Simplifier(rules)
    if isinstance(e, Expr):
        return s(e)
    return [s(n) for n in e]
