"""The simplifier's rules, as data: each is ``Rule("identity", pattern, build)``.

Grouped into named sets that compose with ``+``: ``IDENTITIES`` (algebraic identities and
shape no-ops), ``REDUCTIONS`` (sums of broadcasts, scalar factors out of sums and means),
``STABILIZE`` (numerically stable forms, in ``rules_stable.py``), ``STRUCTURE`` (banded
Jacobians and Hessians, in ``rules_band.py``). Each rule holds where the original is defined;
``tests/diff/test_simplify.py`` checks every one on random inputs.
"""

from __future__ import annotations

from symgrad.diff.collect import product_factors, rebuild_product
from symgrad.diff.patterns import Rule, RuleSet, Var, const_value, op
from symgrad.diff.rules_band import STRUCTURE
from symgrad.diff.rules_stable import STABILIZE
from symgrad.expr import functions as F
from symgrad.expr import ops_tensor as T
from symgrad.expr import tensors
from symgrad.expr.node import Expr

x, y, c = Var("x"), Var("y"), Var("c")
scalar = Var("s", lambda n: n.ndim == 0)


def _is_zero(n: Expr) -> bool:
    """A constant 0, or a broadcast of one (a structural zero: a tangent or cotangent that
    no input reaches, as the simplifier folds ``one_hot - one_hot`` over a length-1 axis)."""
    if n.op is T.BROADCAST_TO:
        n = n.srcs[0]
    v = const_value(n)
    return v is not None and not isinstance(v, bool) and v == 0


zeros = Var("z", _is_zero)

add, sub, mul, div, pow_ = op("add"), op("subtract"), op("multiply"), op("divide"), op("power")
neg, exp, log, sqrt, where = op("negative"), op("exp"), op("log"), op("sqrt"), op("where")
reshape, broadcast_to, transpose = op("reshape"), op("broadcast_to"), op("transpose")
index = op("index")
sum_, mean, matmul = op("sum"), op("mean"), op("matmul")
one_hot = op("one_hot")


def _node(m) -> Expr:
    return m["_"]


def _pull_scalars(reduce):
    """sum(s*x) -> s*sum(x) for scalar factors s (and the same for mean)."""
    def build(m):
        node = _node(m)
        coef, factors = product_factors(node.srcs[0])
        outside = {b: e for b, e in factors.items() if b.ndim == 0}
        if not outside and coef == 1:
            return None
        inside = {b: e for b, e in factors.items() if b.ndim != 0}
        rest = rebuild_product(1.0, inside)
        if not isinstance(rest, Expr) or rest.shape != node.srcs[0].shape:
            return None
        return F.multiply(rebuild_product(coef, outside), reduce(rest, *node.arg))
    return build


def _factor_matmul(m):
    """(s*A) @ B -> s*(A @ B) for scalar factors s of either operand."""
    a, b = _node(m).srcs
    pulled, parts = [], []
    for operand in (a, b):
        coef, factors = product_factors(operand)
        outside = {k: e for k, e in factors.items() if k.ndim == 0}
        inside = rebuild_product(1.0, {k: e for k, e in factors.items() if k.ndim != 0})
        if (outside or coef != 1) and isinstance(inside, Expr) and inside.shape == operand.shape:
            pulled.append(rebuild_product(coef, outside))
            parts.append(inside)
        else:
            parts.append(operand)
    if not pulled:
        return None
    out = tensors.matmul(*parts)
    for s in pulled:
        out = F.multiply(s, out)
    return out


def _over_ones(m) -> bool:
    """Whether a reduction combines one element only (every reduced axis has length 1)."""
    node = _node(m)
    x = node.srcs[0]
    axes = range(x.ndim) if node.arg[0] is None else node.arg[0]
    return all(x.shape[a] == 1 for a in axes)


def _sum_of_broadcast(m):
    """sum(broadcast_to(s, shape), axes) = s*size(shape[axes]), for a scalar s."""
    node, b = _node(m), m["b"]
    return F.multiply(b.srcs[0], T.count(b.shape, node.arg[0], node.dtype))


IDENTITIES = RuleSet("identities", [
    Rule("x*1 -> x", mul(x, 1), lambda m: m["x"]),
    Rule("x*0 -> 0", mul(x, 0), lambda m: 0.0),
    # structural zeros stay zero through broadcasts, so that a Jacobian (whose seed is a
    # broadcast) gets the 0 a gradient gets from ``x - x``: a 0 tangent times an infinite
    # partial (1/sqrt(0) of a std over one element) is 0, not nan
    Rule("x*broadcast_to(0) -> 0", mul(x, zeros), lambda m: 0.0),
    Rule("0/x -> 0", div(zeros, x), lambda m: 0.0),
    Rule("0 @ x -> 0", matmul(zeros, x), lambda m: 0.0),
    Rule("x @ 0 -> 0", matmul(x, zeros), lambda m: 0.0),
    Rule("x + 0 -> x", add(x, 0), lambda m: m["x"]),
    Rule("x - 0 -> x", sub(x, 0), lambda m: m["x"]),
    Rule("0 - x -> -x", sub(0, x), lambda m: F.negative(m["x"])),
    Rule("x - x -> 0", sub(x, x), lambda m: 0.0),
    Rule("x/1 -> x", div(x, 1), lambda m: m["x"]),
    Rule("x/x -> 1", div(x, x), lambda m: 1.0),
    Rule("--x -> x", neg(neg(x)), lambda m: m["x"]),
    Rule("x**1 -> x", pow_(x, 1), lambda m: m["x"]),
    Rule("x**0 -> 1", pow_(x, 0), lambda m: 1.0),
    Rule("exp(log(x)) -> x", exp(log(x)), lambda m: m["x"]),
    Rule("log(exp(x)) -> x", log(exp(x)), lambda m: m["x"]),
    Rule("sqrt(x)**2 -> x", pow_(sqrt(x), 2), lambda m: m["x"]),
    Rule("where(c, x, x) -> x", where(c, x, x), lambda m: m["x"]),
    Rule("reshape(reshape(x)) -> reshape(x)", reshape(reshape(x)),
         lambda m: tensors.reshape(m["x"], _node(m).arg)),
    Rule("broadcast_to(broadcast_to(x)) -> broadcast_to(x)", broadcast_to(broadcast_to(x)),
         lambda m: tensors.broadcast_to(m["x"], _node(m).arg)),
    Rule("reshape(broadcast_to(s)) -> broadcast_to(s)", reshape(broadcast_to(scalar)),
         lambda m: tensors.broadcast_to(m["s"], _node(m).shape)),
    Rule("broadcast_to(s)[k] -> broadcast_to(s)", index(broadcast_to(scalar)),
         lambda m: tensors.broadcast_to(m["s"], _node(m).shape)),
    Rule("transpose(broadcast_to(s)) -> broadcast_to(s)", transpose(broadcast_to(scalar)),
         lambda m: tensors.broadcast_to(m["s"], _node(m).shape)),
    Rule("transpose(transpose(x)) -> transpose(x)", transpose(transpose(x)),
         lambda m: tensors.transpose(m["x"], tuple(
             _node(m).srcs[0].arg[p] for p in _node(m).arg))),
])

REDUCTIONS = RuleSet("reductions", [
    Rule("sum(s) -> s for a scalar s", sum_(scalar), lambda m: m["s"]),
    Rule("mean(s) -> s for a scalar s", mean(scalar), lambda m: m["s"]),
    # reducing axes of length 1 only reshapes (so x - mean(x) over one element is 0)
    Rule("sum(x) over length-1 axes -> x", sum_(x), lambda m: tensors.reshape(
        m["x"], _node(m).shape), when=_over_ones),
    Rule("mean(x) over length-1 axes -> x", mean(x), lambda m: tensors.reshape(
        m["x"], _node(m).shape), when=_over_ones),
    # over any axes: the result is broadcast back to the reduced shape
    Rule("sum(broadcast_to(s)) -> s*size", sum_(Var("b", lambda n: n.op is T.BROADCAST_TO
                                                   and n.srcs[0].ndim == 0)),
         _sum_of_broadcast),
    Rule("mean(broadcast_to(s)) -> s", mean(broadcast_to(scalar)), lambda m: m["s"]),
    Rule("sum(s*x) -> s*sum(x)", sum_(mul(x, y)), _pull_scalars(tensors.sum)),
    Rule("sum(x/s) -> sum(x)/s", sum_(div(x, y)), _pull_scalars(tensors.sum)),
    Rule("sum(-x) -> -sum(x)", sum_(neg(x)), lambda m: F.negative(
        tensors.sum(m["x"], *_node(m).arg))),
    Rule("mean(s*x) -> s*mean(x)", mean(mul(x, y)), _pull_scalars(tensors.mean)),
    Rule("mean(x/s) -> mean(x)/s", mean(div(x, y)), _pull_scalars(tensors.mean)),
    Rule("(s*A) @ B -> s*(A @ B)", matmul(x, y), _factor_matmul),
    Rule("sum(one_hot(l), axis=-1) -> 1", sum_(one_hot(x)), lambda m: 1.0,
         when=lambda m: _node(m).arg[0] == (m["x"].ndim,)
         or (_node(m).arg[0] is None and m["x"].ndim == 0)),
])

DEFAULT_RULES = IDENTITIES + REDUCTIONS + STABILIZE + STRUCTURE
