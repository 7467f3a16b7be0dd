"""``STABILIZE``: rules that turn formulas that overflow or cancel into stable operators.

``log(1 + exp(x))`` overflows for ``x`` near 100 in float32 (and its derivative
``exp(x)/(1 + exp(x))`` is inf/inf = nan); ``softplus(x)`` and ``sigmoid(x)`` do not. The
rules below rewrite the naive spellings, and the products and logs that derivatives of
them build, into ``softplus``, ``sigmoid``, ``logsumexp``, ``softmax``, ``log_softmax``,
``expm1`` and ``log1p``. Products are read in their normal form (``collect``), so operand
order, constant factors and powers do not matter: ``2*y*exp(u)/(exp(u) + 1)`` has the
factors ``exp(u)`` and ``(1 + exp(u))**-1`` whatever the order they were written in.

Each rule holds where the original is defined; where the original overflows to inf or nan
the rewrite gives the finite limit (that is the point). Products with ``where(c, x, 0)``
take their other factor inside the select, so that a derivative of the untaken branch
(``1/(2*sqrt(x))`` at ``x = 0``) meets no ``0*inf``.
"""

from __future__ import annotations

import math
from typing import Callable

from symgrad.diff.collect import product_factors, rebuild_product, sum_terms
from symgrad.diff.patterns import Rule, RuleSet, Var, op
from symgrad.expr import functions as F
from symgrad.expr import ops_elementwise as E
from symgrad.expr import ops_tensor as T
from symgrad.expr import tensors
from symgrad.expr.leaves import CONST
from symgrad.expr.node import Expr
from symgrad.expr.ops_index import INDEX
from symgrad.expr.shapes import reduced

x, y, c = Var("x"), Var("y"), Var("c")
const_exponent = Var("k", lambda n: n.op is CONST)

add, sub, mul, div, pow_ = op("add"), op("subtract"), op("multiply"), op("divide"), op("power")
neg, exp, log, log1p = op("negative"), op("exp"), op("log"), op("log1p")
expm1 = op("expm1")
sigmoid, where, index = op("sigmoid"), op("where"), op("index")
sum_, mean, softmax, log_softmax = op("sum"), op("mean"), op("softmax"), op("log_softmax")
logsumexp = op("logsumexp")


def _node(m) -> Expr:
    return m["_"]


# --- shapes of reductions -------------------------------------------------------------

def _drop_ones(shape: tuple, leading_only: bool) -> tuple:
    if not leading_only:
        return tuple(d for d in shape if d != 1)
    i = 0
    while i < len(shape) and shape[i] == 1:
        i += 1
    return tuple(shape[i:])


def _reduction_of(base: Expr, reduce_op) -> Expr | None:
    """The reduction ``r = reduce_op(u, axes)`` when ``base`` is ``r`` with its reduced axes
    kept as 1s, or reshaped or broadcast so that it meets ``u`` as ``keepdims=True`` would
    (``sum(e, axis=1)[:, None]``, the reverse sweep's ``broadcast_to(reshape(lse))``)."""
    n = base.srcs[0] if base.op is T.BROADCAST_TO else base
    r = n.srcs[0] if n.op in (T.RESHAPE, INDEX) else n
    if r.op is not reduce_op:
        return None
    if n is not r:  # only 1s inserted or dropped: the elements keep their order
        if _drop_ones(r.shape, False) != _drop_ones(n.shape, False):
            return None
        kept = [e for e in n.arg if e[0] != "new"] if n.op is INDEX else []
        if any(e != ("all",) and e != ("slice", 0, d, 1) for e, d in zip(kept, r.shape)):
            return None  # an index that does more than insert axes
    keep = reduced(r.srcs[0].shape, r.arg[0], True)
    return r if _drop_ones(n.shape, True) == _drop_ones(keep, True) else None


def _softmax(u: Expr, axes) -> Expr:
    """``exp(u)/sum(exp(u), axes, keepdims=True)``: softmax over one axis, else exp(u - lse)."""
    every = tuple(range(u.ndim)) if axes is None else axes
    if len(every) == 1:
        return tensors.softmax(u, every[0])
    return F.exp(u - Expr(T.LOGSUMEXP, (u,), (axes, True)))


# --- sigmoid and softmax inside products ------------------------------------------------

def _one_plus_exp(b: Expr) -> Expr | None:
    """``u`` when ``b`` is ``1 + exp(u)`` (in any order)."""
    if b.op not in (E.ADD, E.SUB):
        return None
    c0, terms = sum_terms(b)
    if c0 != 1 or len(terms) != 1:
        return None
    ((t, k),) = terms.items()
    return t.srcs[0] if t.op is E.EXP and k == 1 else None


def _negates(v: Expr, u: Expr) -> bool:
    """Whether ``v`` is ``-u`` (read as sums: ``-2*x - 1`` negates ``2*x + 1``)."""
    c0, t = sum_terms(v)
    d0, s = sum_terms(u)
    return c0 == -d0 and t.keys() == s.keys() and all(t[k] == -s[k] for k in t)


def _sigmoid_products(m):
    """exp(u)**a * (1 + exp(u))**-b = sigmoid(u)**j * sigmoid(-u)**(b-j) * exp(u)**(a-j),
    j = min(a, b) (a factor sigmoid(-u)**b counts as (1 + exp(u))**-b)."""
    coef, factors = product_factors(_node(m))
    out, changed = dict(factors), False
    for b in factors:
        e = out.get(b, 0.0)  # (an earlier pair may have changed it)
        if e < 0 and _one_plus_exp(b) is not None:
            u, k, rest = _one_plus_exp(b), -e, None
        elif e > 0 and b.op is E.SIGMOID:
            u = next((ex.srcs[0] for ex, a in out.items() if ex.op is E.EXP and a > 0
                      and _negates(b.srcs[0], ex.srcs[0])), None)
            if u is None:
                continue
            k, rest = e, b
        else:
            continue
        ex = Expr(E.EXP, (u,))
        j = min(max(out.get(ex, 0.0), 0.0), k)
        _bump(out, b, -e)
        _bump(out, ex, -j)
        _bump(out, F.sigmoid(u), j)
        _bump(out, rest if rest is not None else F.sigmoid(F.negative(u)), k - j)
        changed = True
    return rebuild_product(coef, out) if changed else None


def _softmax_products(m):
    """exp(u)**a * sum(exp(u))**-b = softmax(u)**j * exp(u)**(a-j) * sum(exp(u))**-(b-j),
    j = min(a, b), for the sum kept (or reshaped) so that it lines up with u."""
    coef, factors = product_factors(_node(m))
    out, changed = dict(factors), False
    for b, e in factors.items():
        r = _reduction_of(b, T.SUM) if e < 0 else None
        if r is None or r.srcs[0].op is not E.EXP:
            continue
        ex = r.srcs[0]
        j = min(out.get(ex, 0.0), -e)
        if j <= 0:
            continue
        _bump(out, ex, -j)
        _bump(out, b, j)
        _bump(out, _softmax(ex.srcs[0], r.arg[0]), j)
        changed = True
    return rebuild_product(coef, out) if changed else None


def _bump(factors: dict, base: Expr, by: float) -> None:
    e = factors.get(base, 0.0) + by
    if e:
        factors[base] = e
    else:
        factors.pop(base, None)


# --- logs of positive factors -----------------------------------------------------------

def _log_of_sum(b: Expr) -> Expr | None:
    u = b.srcs[0]
    return Expr(T.LOGSUMEXP, u.srcs, b.arg) if u.op is E.EXP else None


def _log_of_mean(b: Expr) -> Expr | None:
    u = b.srcs[0]
    if u.op is not E.EXP:
        return None
    n = T.count(u.shape, b.arg[0], b.dtype)
    return Expr(T.LOGSUMEXP, u.srcs, b.arg) - F.log(n)


def _log_of_index(b: Expr) -> Expr | None:
    inner = b.srcs[0]  # log(exp(u)[k]) = u[k], log(softmax(u)[k]) = log_softmax(u)[k]
    if inner.op is E.EXP:
        return Expr(INDEX, inner.srcs, b.arg)
    if inner.op is T.SOFTMAX:
        return Expr(INDEX, (tensors.log_softmax(inner.srcs[0], inner.arg),), b.arg)
    return None


# The log of a factor that is positive, by its operator (None: no stable form known).
POSITIVE_LOGS: dict[str, Callable[[Expr], Expr | None]] = {
    "exp": lambda b: b.srcs[0],                                   # log(exp(u)) = u
    "sigmoid": lambda b: -F.softplus(-b.srcs[0]),                 # = -softplus(-u)
    "softmax": lambda b: tensors.log_softmax(b.srcs[0], b.arg),   # = log_softmax(u)
    "sum": _log_of_sum,                                           # log(sum(exp(u))) = lse(u)
    "mean": _log_of_mean,                                         # = lse(u) - log(n)
    "index": _log_of_index,                                       # log(exp(u)[k]) = u[k]
}


def _log_of(b: Expr) -> Expr | None:
    rule = POSITIVE_LOGS.get(b.op.name)
    return rule(b) if rule is not None else None


def _log_known(m):
    """log(b) for one positive factor b of the table above."""
    return _log_of(_node(m).srcs[0])


def _log_product(m):
    """log(c * prod(b**e) * rest) = sum(e*log(b)) + log(c*rest) for the positive factors b
    of the table (log(exp(z[k])/sum(exp(z))) = z[k] - logsumexp(z))."""
    coef, factors = product_factors(_node(m).srcs[0])
    logs, rest = [], {}
    for b, e in factors.items():
        lb = _log_of(b)
        if lb is None:
            rest[b] = e
        else:
            logs.append(lb if e == 1 else F.multiply(e, lb))
    if not logs or (coef < 0 and not rest):
        return None
    total = logs[0]
    for lb in logs[1:]:
        total = total + lb
    remaining = rebuild_product(coef, rest)
    if isinstance(remaining, Expr):
        return total + F.log(remaining)
    return total + math.log(remaining) if remaining != 1 else total


# --- softmax from exp(x - logsumexp(x)) ------------------------------------------------

def _exp_minus_lse(m):
    """exp(u - logsumexp(u, axis, keepdims=True)) = softmax(u, axis)."""
    arg = _node(m).srcs[0]
    if arg.op not in (E.ADD, E.SUB):
        return None
    c0, terms = sum_terms(arg)
    for t, k in terms.items():
        r = _reduction_of(t, T.LOGSUMEXP) if k == -1 else None
        if r is None:
            continue
        u = r.srcs[0]
        rest = {s: v for s, v in terms.items() if s is not t}
        if (c0, rest) == sum_terms(u):
            every = tuple(range(u.ndim)) if r.arg[0] is None else r.arg[0]
            return tensors.softmax(u, every[0]) if len(every) == 1 else None
    return None


def _into_where(combine, zero_first: bool):
    """where(c, x, 0) (op) y -> where(c, x (op) y, 0); the zero branch stays zero (the
    original is 0*y there, nan where y is not finite: an untaken branch's derivative)."""
    def build(m):
        inner = combine(m["x"], m["y"])
        return F.where(m["c"], 0, inner) if zero_first else F.where(m["c"], inner, 0)
    return build


STABILIZE = RuleSet("stabilize", [
    Rule("log(sigmoid(x)) -> -softplus(-x)", log(sigmoid(x)),
         lambda m: F.negative(F.softplus(F.negative(m["x"])))),
    Rule("log(1 + x) -> log1p(x)", log(add(x, 1)), lambda m: F.log1p(m["x"])),
    Rule("log(1 - x) -> log1p(-x)", log(sub(1, x)), lambda m: F.log1p(F.negative(m["x"]))),
    Rule("exp(x) - 1 -> expm1(x)", sub(exp(x), 1), lambda m: F.expm1(m["x"])),
    Rule("expm1(x) + 1 -> exp(x)", add(expm1(x), 1), lambda m: F.exp(m["x"])),
    Rule("1 - exp(x) -> -expm1(x)", sub(1, exp(x)), lambda m: F.negative(F.expm1(m["x"]))),
    Rule("log1p(exp(x)) -> softplus(x)", log1p(exp(x)), lambda m: F.softplus(m["x"])),
    Rule("1/(1 + exp(-x)) -> sigmoid(x)", div(1, add(exp(neg(x)), 1)),
         lambda m: F.sigmoid(m["x"])),
    Rule("1 - sigmoid(x) -> sigmoid(-x)", sub(1, sigmoid(x)),
         lambda m: F.sigmoid(F.negative(m["x"]))),
    Rule("sigmoid(x) - 1 -> -sigmoid(-x)", sub(sigmoid(x), 1),
         lambda m: F.negative(F.sigmoid(F.negative(m["x"])))),
    # exp(u)**a * (1 + exp(u))**-b, in any product (also sigmoid(-u) as (1 + exp(u))**-1)
    Rule("exp(x)/(1 + exp(x)) -> sigmoid(x)", div(x, y), _sigmoid_products),
    Rule("exp(x)*sigmoid(-x) -> sigmoid(x)", mul(x, y), _sigmoid_products),
    Rule("(1 + exp(x))**-k -> sigmoid(-x)**k", pow_(add(x, y), const_exponent),
         _sigmoid_products),
    Rule("log(exp(x) + exp(y)) -> y + softplus(x - y)", log(add(exp(x), exp(y))),
         lambda m: m["y"] + F.softplus(m["x"] - m["y"])),
    Rule("log(sum(exp(x))) -> logsumexp(x)", log(sum_(exp(x))), _log_known),
    Rule("log(mean(exp(x))) -> logsumexp(x) - log(n)", log(mean(exp(x))), _log_known),
    Rule("log(exp(x)[k]) -> x[k]", log(index(exp(x))), _log_known),
    Rule("log(softmax(x)[k]) -> log_softmax(x)[k]", log(index(softmax(x))), _log_known),
    Rule("exp(x)/sum(exp(x)) -> softmax(x)", div(x, y), _softmax_products),
    Rule("exp(x - logsumexp(x)) -> softmax(x)", exp(x), _exp_minus_lse),
    Rule("log(softmax(x)) -> log_softmax(x)", log(softmax(x)),
         lambda m: tensors.log_softmax(m["x"], _node(m).srcs[0].arg)),
    Rule("exp(log_softmax(x)) -> softmax(x)", exp(log_softmax(x)),
         lambda m: tensors.softmax(m["x"], _node(m).srcs[0].arg)),
    # logs of products with positive factors (exp, sigmoid, softmax, sum(exp), ...)
    Rule("log(exp(x)*y) -> x + log(y)", log(mul(x, y)), _log_product),
    Rule("log(exp(x)/y) -> x - log(y)", log(div(x, y)), _log_product),
    Rule("log(exp(x)**k) -> k*x", log(pow_(x, const_exponent)), _log_product),
    Rule("log(1/x) -> -log(x)", log(div(1, x)), lambda m: F.negative(F.log(m["x"]))),
    # the untaken branch of a select: its factors go inside, so 0*inf cannot appear
    Rule("where(c, x, 0)*y -> where(c, x*y, 0)", mul(where(c, x, 0), y),
         _into_where(F.multiply, False)),
    Rule("where(c, 0, x)*y -> where(c, 0, x*y)", mul(where(c, 0, x), y),
         _into_where(F.multiply, True)),
    Rule("where(c, x, 0)/y -> where(c, x/y, 0)", div(where(c, x, 0), y),
         _into_where(F.divide, False)),
    Rule("where(c, 0, x)/y -> where(c, 0, x/y)", div(where(c, 0, x), y),
         _into_where(F.divide, True)),
])
