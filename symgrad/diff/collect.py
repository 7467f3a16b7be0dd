"""Normal forms for sums and products: like terms collected, powers merged, operands in
canonical order.

A sum is read as ``c0 + sum(c_i * t_i)`` over ``+``, ``-`` and unary ``-`` (``2*x + 3*x``
gives ``5*x``, ``x - x`` gives 0); a product as ``c * prod(b_j ** e_j)`` over ``*``, ``/``,
unary ``-`` and numeric powers (``x*x`` gives ``x**2``, ``x**a * x**b`` gives ``x**(a+b)``,
``x/x`` gives 1). Only floating-point nodes are rewritten, so coefficients never change a
dtype. Both rebuild in :func:`symgrad.diff.order.sort_key` order.
"""

from __future__ import annotations

from symgrad.diff.order import sort_key
from symgrad.diff.patterns import const_value
from symgrad.expr import functions as F
from symgrad.expr import ops_elementwise as E
from symgrad.expr import ops_tensor as T
from symgrad.expr.node import Expr

_SUM_OPS = (E.ADD, E.SUB, E.NEG)
_PRODUCT_OPS = (E.MUL, E.DIV, E.NEG)


def _number(n: Expr) -> float | None:
    """The value of a scalar constant, or of a constant broadcast to a shape (the caller's
    result is broadcast back to the node's shape)."""
    if n.op is T.BROADCAST_TO:
        n = n.srcs[0]
    v = const_value(n)
    return None if v is None or isinstance(v, bool) or n.ndim else float(v)


def sum_terms(node: Expr) -> tuple[float, dict[Expr, float]]:
    """``node`` as ``c0 + sum(coef*term)``: the constant and the coefficient of each term."""
    c0, terms = 0.0, {}
    stack = [(node, 1.0)]
    while stack:
        n, sign = stack.pop()
        v = _number(n)
        if v is not None:
            c0 += sign * v
        elif n.op is E.ADD:
            stack += [(n.srcs[1], sign), (n.srcs[0], sign)]
        elif n.op is E.SUB:
            stack += [(n.srcs[1], -sign), (n.srcs[0], sign)]
        elif n.op is E.NEG:
            stack.append((n.srcs[0], -sign))
        else:
            coef, rest = split_coefficient(n)
            terms[rest] = terms.get(rest, 0.0) + sign * coef
    return c0, terms


def split_coefficient(n: Expr) -> tuple[float, Expr]:
    """``-400*v*x`` -> ``(-400, v*x)``; a node with no numeric factor -> ``(1, n)``."""
    if n.op not in _PRODUCT_OPS:
        return 1.0, n
    coef, factors = product_factors(n)
    rest = rebuild_product(1.0, factors)
    if coef == 1 or not isinstance(rest, Expr) or rest.shape != n.shape:
        return 1.0, n
    return coef, rest


def _scaled(coef: float, term: Expr) -> Expr:
    """``coef*term`` in the product normal form (so product collection leaves it alone)."""
    if coef == 1:
        return term
    c, factors = product_factors(term)
    out = rebuild_product(coef * c, factors)
    return out if isinstance(out, Expr) else F.multiply(coef, term)


def _common_factor(items: list[tuple[Expr, float]]) -> tuple[float, dict[Expr, float]] | None:
    """The non-numeric factors every term shares (``a/N - b/N`` shares ``N**-1``)."""
    if len(items) < 2:
        return None
    parts = [product_factors(t)[1] for t, _ in items]
    common = {b: e for b, e in parts[0].items() if all(p.get(b) == e for p in parts[1:])}
    return (1.0, common) if common else None


def rebuild_sum(c0: float, terms: dict[Expr, float], like: Expr) -> Expr | float:
    # positive terms first, each group in canonical order: b + w*x - y
    items = sorted(((t, c) for t, c in terms.items() if c != 0),
                   key=lambda tc: (tc[1] < 0, sort_key(tc[0])))
    if not items:
        return c0
    shared = _common_factor(items) if c0 == 0 else None
    if shared is not None:  # a/N - b/N -> (a - b)/N
        _, common = shared
        inner: dict[Expr, float] = {}
        for t, c in items:
            coef, factors = product_factors(t)
            rest = rebuild_product(coef, {b: e for b, e in factors.items() if b not in common})
            if not isinstance(rest, Expr):
                return _plain_sum(items, c0)
            inner[rest] = inner.get(rest, 0.0) + c
        return F.multiply(rebuild_sum(0.0, inner, like), rebuild_product(1.0, common)) \
            if all(isinstance(k, Expr) for k in inner) else _plain_sum(items, c0)
    return _plain_sum(items, c0)


def _plain_sum(items: list[tuple[Expr, float]], c0: float) -> Expr | float:
    first, c = items[0]
    if c < 0 and c0 > 0:  # 1 - x rather than -x + 1
        out, c0 = F.subtract(c0, _scaled(-c, first)), 0.0
        items = items[1:]
        for t, c in items:
            out = F.add(out, _scaled(c, t)) if c > 0 else F.subtract(out, _scaled(-c, t))
        return out
    out = _scaled(c, first)  # a negative lead keeps its sign in the product: -400*x
    for t, c in items[1:]:
        out = F.add(out, _scaled(c, t)) if c > 0 else F.subtract(out, _scaled(-c, t))
    if c0 > 0:
        out = F.add(out, c0)
    elif c0 < 0:
        out = F.subtract(out, -c0)
    return out


def collect_sum(node: Expr) -> Expr | float | None:
    """The collected, ordered form of a sum, or ``None`` if it is already that."""
    if node.dtype.kind != "f":
        return None
    c0, terms = sum_terms(node)
    out = rebuild_sum(c0, terms, node)
    return None if out is node else out


def product_factors(node: Expr) -> tuple[float, dict[Expr, float]]:
    """``node`` as ``c * prod(base**exponent)``."""
    coef, factors = 1.0, {}
    stack = [(node, 1.0)]
    while stack:
        n, power = stack.pop()
        v = _number(n)
        if power != int(power) and (n.op in _PRODUCT_OPS or (v is not None and v < 0)):
            # a fractional power does not distribute over a product or a sign:
            # (x*y)**0.5 is not x**0.5*y**0.5 for x, y < 0, nor (-x)**0.5 = -(x**0.5)
            factors[n] = factors.get(n, 0.0) + power
        elif v is not None and v != 0:
            coef *= v**power
        elif n.op is E.MUL:
            stack += [(n.srcs[1], power), (n.srcs[0], power)]
        elif n.op is E.DIV:
            stack += [(n.srcs[1], -power), (n.srcs[0], power)]
        elif n.op is E.NEG:
            coef *= (-1.0) ** int(power)  # (-x)**2 = x**2, (-x)**3 = -(x**3)
            stack.append((n.srcs[0], power))
        elif n.op is E.POW and _number(n.srcs[1]) is not None and power == int(power):
            # (x**e)**k = x**(e*k) for integer k; not for k = 1/2, since (x**2)**0.5 = |x|
            stack.append((n.srcs[0], power * _number(n.srcs[1])))
        else:
            factors[n] = factors.get(n, 0.0) + power
    return coef, factors


def _power(base: Expr, e: float) -> Expr:
    if e == 1:
        return base
    return F.power(base, int(e) if e == int(e) else e)


def rebuild_product(coef: float, factors: dict[Expr, float]) -> Expr | float:
    if coef == 0:
        return 0.0
    items = sorted(((b, e) for b, e in factors.items() if e != 0),
                   key=lambda be: sort_key(be[0]))
    num = [_power(b, e) for b, e in items if e > 0]
    den = [_power(b, -e) for b, e in items if e < 0]
    if not num and not den:
        return coef
    # a coefficient other than -1 leads the product (-2*x); -1 becomes a unary minus
    lead = coef if abs(coef) != 1 else (abs(coef) if not num else None)
    out: Expr | float | None = lead
    for f in num:
        out = f if out is None else F.multiply(out, f)
    denominator = None
    for f in den:
        denominator = f if denominator is None else F.multiply(denominator, f)
    if denominator is not None:
        out = F.divide(out, denominator)
    return F.negative(out) if coef == -1 else out


def _means(factors: dict[Expr, float]) -> dict[Expr, float]:
    """``sum(x)/N -> mean(x)`` where ``N`` is the symbolic count the sum adds up."""
    for b, e in list(factors.items()):
        if b.op is T.SUM and e == 1 and b.dtype.kind == "f":
            n = T.count(b.srcs[0].shape, b.arg[0], b.dtype)
            if n in factors and factors[n] <= -1:
                del factors[b]
                factors[Expr(T.MEAN, b.srcs, b.arg)] = 1.0
                factors[n] += 1
    return factors


def collect_product(node: Expr) -> Expr | float | None:
    """The collected, ordered form of a product, or ``None`` if it is already that."""
    if node.dtype.kind != "f":
        return None
    coef, factors = product_factors(node)
    factors = _means(factors)
    out = rebuild_product(coef, factors)
    return None if out is node else out
