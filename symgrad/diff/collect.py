"""Normal forms for sums and products: like terms collected, powers merged, operands in
canonical order.

A sum is read as ``c0 + sum(c_i * t_i)`` over ``+``, ``-`` and unary ``-`` (``2*x + 3*x``
gives ``5*x``, ``x - x`` gives 0); a product as ``c * prod(b_j ** e_j)`` over ``*``, ``/``,
unary ``-`` and numeric powers (``x*x`` gives ``x**2``, ``x**a * x**b`` gives ``x**(a+b)``,
``x/x`` gives 1). Only floating-point nodes are rewritten, so coefficients never change a
dtype. Both rebuild in :func:`symgrad.diff.order.sort_key` order.

Each node's form is built once, from its operands' forms, and remembered. An operand whose
form already has more than ``MAX_FLAT`` terms (factors) stays one term (factor) of its user
instead of being spread into it again: a chain of n products or sums then costs O(n) rather
than O(n**2), and is rebuilt as nested blocks of at most ``2*MAX_FLAT`` operands.
"""

from __future__ import annotations

import math
import weakref

from symgrad.diff.order import sort_key
from symgrad.diff.patterns import const_value
from symgrad.expr import functions as F
from symgrad.expr import ops_elementwise as E
from symgrad.expr import ops_tensor as T
from symgrad.expr.node import Expr

_SUM_OPS = (E.ADD, E.SUB, E.NEG)
_PRODUCT_OPS = (E.MUL, E.DIV, E.NEG)
MAX_FLAT = 16  # a longer sum or product is one operand of its users (see the docstring)

# node -> (constant, {term: coefficient}) and node -> (coefficient, {base: exponent})
_sums: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_products: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_collected: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # node -> collect's answer
_splits: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # node -> (coefficient, rest)


def _number(n: Expr) -> float | None:
    """The value of a scalar constant, or of a constant broadcast to a shape (the caller's
    result is broadcast back to the node's shape)."""
    if n.op is T.BROADCAST_TO:
        n = n.srcs[0]
    v = const_value(n)
    return None if v is None or isinstance(v, bool) or n.ndim else float(v)


def sum_terms(node: Expr) -> tuple[float, dict[Expr, float]]:
    """``node`` as ``c0 + sum(coef*term)``: the constant and the coefficient of each term."""
    c0, terms = _flat(node, _sum_form, _sum_edges, _sums)
    return c0, dict(terms)


def _sum_edges(n: Expr) -> tuple[tuple[Expr, float], ...]:
    """The operands of a sum node with their signs (none for any other node)."""
    if n.op is E.ADD:
        return (n.srcs[0], 1.0), (n.srcs[1], 1.0)
    if n.op is E.SUB:
        return (n.srcs[0], 1.0), (n.srcs[1], -1.0)
    if n.op is E.NEG:
        return ((n.srcs[0], -1.0),)
    return ()


def _sum_form(n: Expr) -> tuple[float, dict[Expr, float]]:
    """The sum form of ``n`` from its operands' forms (already in ``_sums``)."""
    c0, terms = 0.0, {}
    for s, sign in _sum_edges(n) or ((n, 1.0),):
        v = _number(s)
        inner = _sums.get(s) if s is not n else None
        if v is not None:
            c0 += sign * v
        elif inner is not None and len(inner[1]) <= MAX_FLAT:
            c0 += sign * inner[0]
            for t, c in inner[1].items():
                terms[t] = terms.get(t, 0.0) + sign * c
        else:  # a leaf term, or a sum so long that it stays one term
            coef, rest = split_coefficient(s)
            terms[rest] = terms.get(rest, 0.0) + sign * coef
    return c0, {t: c for t, c in terms.items() if c != 0}


def split_coefficient(n: Expr) -> tuple[float, Expr]:
    """``-400*v*x`` -> ``(-400, v*x)``; a node with no numeric factor -> ``(1, n)``."""
    if n.op not in _PRODUCT_OPS:
        return 1.0, n
    got = _splits.get(n)
    if got is None:
        coef, factors = _flat(n, _product_form, _product_edges, _products)
        rest = rebuild_product(1.0, factors) if coef != 1 else n
        ok = coef != 1 and isinstance(rest, Expr) and rest.shape == n.shape
        # "no split" is kept as None: a value holding its key would keep it alive
        got = _splits[n] = (coef, rest) if ok else (1.0, None)
    return got if got[1] is not None else (1.0, n)


def product_factors(node: Expr) -> tuple[float, dict[Expr, float]]:
    """``node`` as ``c * prod(base**exponent)``."""
    coef, factors = _flat(node, _product_form, _product_edges, _products)
    return coef, dict(factors)


def _product_edges(n: Expr) -> tuple[tuple[Expr, float], ...]:
    """The operands of a product node with their exponents (none for any other node)."""
    if n.op is E.MUL:
        return (n.srcs[0], 1.0), (n.srcs[1], 1.0)
    if n.op is E.DIV:
        return (n.srcs[0], 1.0), (n.srcs[1], -1.0)
    if n.op is E.NEG:
        return ((n.srcs[0], 1.0),)
    if n.op is E.POW:
        e = _number(n.srcs[1])
        if e is not None and math.isfinite(e):
            return ((n.srcs[0], e),)
    return ()


def _product_form(n: Expr) -> tuple[float, dict[Expr, float]]:
    """The product form of ``n`` from its operands' forms (already in ``_products``)."""
    coef, factors = (-1.0 if n.op is E.NEG else 1.0), {}
    for s, power in _product_edges(n) or ((n, 1.0),):
        v = _number(s)
        inner = _products.get(s) if s is not n else None
        if power != int(power) and (s.op in _PRODUCT_OPS or (v is not None and v < 0)):
            # a fractional power does not distribute over a product or a sign:
            # (x*y)**0.5 is not x**0.5*y**0.5 for x, y < 0, nor (-x)**0.5 = -(x**0.5)
            factors[s] = factors.get(s, 0.0) + power
        elif v is not None and v != 0 and _finite_power(v, power) is not None:
            coef *= _finite_power(v, power)
        elif (inner is not None and power == int(power) and len(inner[1]) <= MAX_FLAT
              and _finite_power(inner[0], power) is not None):
            # (x**e)**k = x**(e*k) for integer k; not for k = 1/2, since (x**2)**0.5 = |x|
            coef *= _finite_power(inner[0], power)  # (-x)**2 = x**2, (-x)**3 = -(x**3)
            for b, e in inner[1].items():
                factors[b] = factors.get(b, 0.0) + e * power
        else:  # a leaf factor, or a product so long that it stays one factor
            factors[s] = factors.get(s, 0.0) + power
    return coef, {b: e for b, e in factors.items() if e != 0}


def _finite_power(v: float, p: float) -> float | None:
    """``v**p`` as a float, or ``None`` where that overflows (10.0**1000 stays a factor)."""
    try:
        out = v**p
    except (OverflowError, ZeroDivisionError):
        return None
    return out if isinstance(out, float) and math.isfinite(out) else None


def _flat(node: Expr, form, edges, memo: weakref.WeakKeyDictionary) -> tuple:
    """``form(node)``, memoised per node: the operands' forms first, by an explicit stack
    (a chain 10,000 deep is walked without recursion, and each node's form is built once)."""
    got = memo.get(node)
    if got is not None:
        return got
    if not edges(node):  # a leaf of the form: not kept, as it would keep its key alive
        return form(node)
    stack = [node]
    while stack:
        n = stack[-1]
        if n in memo:
            stack.pop()
            continue
        todo = [s for s, _ in edges(n) if edges(s) and s not in memo]
        if todo:
            stack += todo
            continue
        memo[n] = form(stack.pop())
    return memo[node]


def _term_of(u: Expr) -> tuple[float, dict[Expr, float]]:
    """What operand ``u`` adds to the sum form of its user."""
    v = _number(u)
    if v is not None:
        return v, {}
    inner = _flat(u, _sum_form, _sum_edges, _sums) if u.op in _SUM_OPS else None
    if inner is not None and len(inner[1]) <= MAX_FLAT:
        return inner
    coef, rest = split_coefficient(u)
    return 0.0, {rest: coef}


def _factor_of(f: Expr) -> tuple[float, dict[Expr, float]]:
    """What operand ``f`` multiplies into the product form of its user."""
    v = _number(f)
    if v is not None and v != 0:
        return v, {}
    inner = _flat(f, _product_form, _product_edges, _products) if _product_edges(f) else None
    if inner is not None and len(inner[1]) <= MAX_FLAT:
        return inner
    return 1.0, {f: 1.0}


# --- rebuilding ---------------------------------------------------------------------------
#
# A rebuild also records what it knows about the nodes it builds, so that nothing is read or
# collected twice: each node that provably reads back as the form it was built from gets
# that form (``_sums``/``_products``), and each one that is also what collecting it would
# build is marked done (``_collected[node] = None``). Every claim is checked as the node is
# built (the operand read back, constants exact after the cast to the node's dtype); where a
# check fails nothing is recorded and the node is read and collected as any other.

_made: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_DIRECT = {F.add: E.ADD, F.subtract: E.SUB, F.multiply: E.MUL, F.divide: E.DIV,
           F.negative: E.NEG}


def _make(build, *operands: Expr | float) -> Expr:
    """``build(*operands)``, remembered: a rebuild mostly meets nodes it has made before,
    and this skips their shape and dtype inference."""
    # float.hex tells -0.0 from 0.0 (equal keys) and matches nan (a key unequal to itself)
    key = (build, *((o.hex() if isinstance(o, float) else o, type(o)) for o in operands))
    out = _made.get(key)
    if out is None:
        op = _DIRECT.get(build)
        same = op is not None and all(isinstance(o, Expr) and o.dtype == operands[0].dtype
                                      and o.dtype.kind == "f" for o in operands)
        # floating operands of one dtype: the builder would only check that, then build this
        out = _made[key] = Expr(op, operands) if same else build(*operands)
    return out


def _done(node: Expr) -> None:
    _collected.setdefault(node, None)


def _power(base: Expr, e: float) -> Expr:
    if e == 1:
        return base
    return _make(F.power, base, int(e) if e == int(e) else e)


def _blocks(items: list) -> list[list]:
    """``items`` cut into nearly equal runs of at most ``MAX_FLAT``."""
    if len(items) <= MAX_FLAT:
        return [items]
    k = -(-len(items) // MAX_FLAT)
    size = -(-len(items) // k)
    return [items[i:i + size] for i in range(0, len(items), size)]


def rebuild_product(coef: float, factors: dict[Expr, float]) -> Expr | float:
    """``coef * prod(base**exponent)`` as one node, factors in canonical order; more than
    ``MAX_FLAT`` factors are two blocks (``a*b*...*(m*n*...)``), each of which its user
    spreads again, so rebuilding the result gives the result."""
    if coef == 0:
        return 0.0
    items = sorted(((b, e) for b, e in factors.items() if e != 0),
                   key=lambda be: sort_key(be[0]))
    if not items:
        return coef
    blocks = _blocks(items)
    out, read = _product_chain(coef, blocks[0])
    for block in blocks[1:]:
        part, part_read = _product_chain(1.0, block)
        out = _make(F.multiply, out, part)
        read = read * part_read if read is not None and part_read is not None and len(
            blocks) == 2 else None
    if read is not None and len(blocks) == 2:
        _products.setdefault(out, (read, dict(items)))
        if not _mean_pairs(items):
            _done(out)
    return out


def _product_chain(coef: float, items: list[tuple[Expr, float]]) -> tuple[Expr, float | None]:
    """The product of at most ``MAX_FLAT`` factors, and the coefficient it reads back as
    (``None`` if it may not read back as these factors)."""
    # a coefficient other than -1 leads the product (-2*x); -1 becomes a unary minus
    has_num = any(e > 0 for _, e in items)
    lead = coef if abs(coef) != 1 else (abs(coef) if not has_num else None)
    out: Expr | float | None = lead
    read: float | None = -1.0 if coef == -1 else 1.0
    for b, e in ((b, e) for b, e in items if e > 0):
        f = _power(b, e)
        if _factor_of(f) != (1.0, {b: e}):
            read = None
        if out is None:
            out = f
            continue
        first = not isinstance(out, Expr)
        out = _make(F.multiply, out, f)
        if first and read is not None:
            read = _read(out, 0, lead)
        if read is not None:  # a prefix of a canonical product is the canonical product
            _done(out)
    denominator = None
    for b, e in ((b, -e) for b, e in items if e < 0):
        f = _power(b, e)
        if _factor_of(f) != (1.0, {b: e}):
            read = None
        denominator = f if denominator is None else _make(F.multiply, denominator, f)
        if read is not None and denominator is not f:
            _done(denominator)
    if denominator is not None:
        first = not isinstance(out, Expr)
        out = _make(F.divide, out, denominator)
        if first and read is not None:
            read = _read(out, 0, lead) if coef != -1 else (_read(out, 0, lead) and -1.0)
    if coef == -1:
        out = _make(F.negative, out)
    if read is not None and _product_edges(out):  # (a lone factor is its own form)
        _products.setdefault(out, (read, dict(items)))
        if not _mean_pairs(items) and not (out.op is E.NEG and out.srcs[0].op in _SUM_OPS):
            _done(out)
    return out, read


def _read(node: Expr, i: int, value: float) -> float | None:
    """What operand ``i`` of ``node``, built from the constant ``value``, reads back as
    after the cast to the node's dtype; ``None`` if rebuilding from that would not give the
    same node (a changed sign, or a value rounded to 0 or to +-1)."""
    v = _number(node.srcs[i])
    if v is None or v == 0 or (v < 0) != (value < 0) or (abs(v) == 1) != (abs(value) == 1):
        return None
    return v


def _mean_pairs(factors) -> list[tuple[Expr, Expr]]:
    """``(sum(x), N)`` for each ``sum(x)/N`` among ``factors`` that is a mean."""
    pairs, exps = [], dict(factors)
    for b, e in exps.items():
        if b.op is T.SUM and e == 1 and b.dtype.kind == "f":
            n = T.count(b.srcs[0].shape, b.arg[0], b.dtype)
            if exps.get(n, 0) <= -1:
                pairs.append((b, n))
    return pairs


def _means(factors: dict[Expr, float]) -> dict[Expr, float]:
    """``sum(x)/N -> mean(x)`` where ``N`` is the symbolic count the sum adds up."""
    for b, n in _mean_pairs(factors):
        if factors[n] <= -1:
            del factors[b]
            factors[Expr(T.MEAN, b.srcs, b.arg)] = 1.0
            factors[n] += 1
    return factors


def collect_product(node: Expr) -> Expr | float | None:
    """The collected, ordered form of a product, or ``None`` if it is already that."""
    if node.dtype.kind != "f":
        return None
    if node in _collected:
        return _collected[node]
    coef, factors = product_factors(node)
    out = rebuild_product(coef, _means(factors))
    return _remember(node, None if out is node else out)


def _scaled(coef: float, term: Expr) -> Expr:
    """``coef*term`` in the product normal form (so product collection leaves it alone)."""
    if coef == 1:
        return term
    c, factors = _flat(term, _product_form, _product_edges, _products)
    out = rebuild_product(coef * c, factors)
    return out if isinstance(out, Expr) else F.multiply(coef, term)


def _factors(t: Expr) -> dict[Expr, float]:
    return _flat(t, _product_form, _product_edges, _products)[1]


def _common_factor(items: list[tuple[Expr, float]]) -> tuple[float, dict[Expr, float]] | None:
    """The non-numeric factors every term shares (``a/N - b/N`` shares ``N**-1``)."""
    if len(items) < 2:
        return None
    parts = [_factors(t) for t, _ in items]
    common = {b: e for b, e in parts[0].items() if all(p.get(b) == e for p in parts[1:])}
    return (1.0, common) if common else None


def _ordered(terms: dict[Expr, float]) -> list[tuple[Expr, float]]:
    # positive terms first, each group in canonical order: b + w*x - y
    return sorted(((t, c) for t, c in terms.items() if c != 0),
                  key=lambda tc: (tc[1] < 0, sort_key(tc[0])))


def rebuild_sum(c0: float, terms: dict[Expr, float], like: Expr) -> Expr | float:
    """``c0 + sum(coef*term)`` as one node: positive terms first, each group in canonical
    order (``b + w*x - y``); a factor every term shares is taken out (``(a - b)/N``)."""
    items = _ordered(terms)
    if not items:
        return c0
    shared = _common_factor(items) if c0 == 0 else None
    if shared is None:
        return _plain_sum(items, c0)
    _, common = shared  # a/N - b/N -> (a - b)/N
    inner: dict[Expr, float] = {}
    for t, c in items:
        coef, factors = _flat(t, _product_form, _product_edges, _products)
        rest = rebuild_product(coef, {b: e for b, e in factors.items() if b not in common})
        if not isinstance(rest, Expr):
            return _plain_sum(items, c0)
        inner[rest] = inner.get(rest, 0.0) + c
    # the rest of the terms share no factor (every shared one is in ``common``); a rest that
    # is itself a sum is spread, as collecting ``total`` would do next
    inner_c0, spread = _spread(inner)
    if spread is not None and (inner_c0 != 0 or _common_factor(_ordered(spread)) is None):
        inner = spread
    else:
        inner_c0 = 0.0
    inner_items = _ordered(inner)
    if not inner_items:
        return _make(F.multiply, inner_c0, rebuild_product(1.0, common)) if inner_c0 else 0.0
    total = _plain_sum(inner_items, inner_c0)
    coef, factors = _factor_of(total)  # (a - b)*(1/N) built as the product it collects to
    factors = dict(factors)
    for b, e in common.items():
        factors[b] = factors.get(b, 0.0) + e
    return rebuild_product(coef, factors)


def _spread(terms: dict[Expr, float]) -> tuple[float, dict[Expr, float] | None]:
    """``terms`` with each term that is a short sum replaced by its own terms (``None``
    where nothing is spread, or the result would be longer than ``2*MAX_FLAT`` terms)."""
    c0, out, changed = 0.0, {}, False
    for t, c in terms.items():
        tc0, parts = _term_of(t)
        changed = changed or tc0 != 0 or parts != {t: 1.0}
        c0 += c * tc0
        for u, cu in parts.items():
            out[u] = out.get(u, 0.0) + c * cu
    if not changed or len(out) > 2 * MAX_FLAT:
        return 0.0, None
    return c0, out


def _plain_sum(items: list[tuple[Expr, float]], c0: float) -> Expr:
    """The terms in order; more than ``MAX_FLAT`` are two blocks (``a + b + ... + (m +
    n + ...)``), each of which its user spreads again (see :func:`rebuild_product`)."""
    blocks = _blocks(items)
    out, form = _sum_chain(blocks[0], c0 if len(blocks) == 1 else 0.0)
    for i, block in enumerate(blocks[1:], 2):
        last = c0 if i == len(blocks) else 0.0
        negated = all(c < 0 for _, c in block) and last <= 0
        if negated:  # a - b - (c + d)
            part, part_form = _sum_chain([(t, -c) for t, c in block], -last)
        else:
            part, part_form = _sum_chain(block, last)
        out = _make(F.subtract if negated else F.add, out, part)
        if form is None or part_form is None or len(blocks) != 2:
            form = None
        else:
            sign = -1.0 if negated else 1.0
            form = (form[0] + sign * part_form[0],
                    {**form[1], **{t: sign * c for t, c in part_form[1].items()}})
    if form is not None and len(blocks) == 2:  # what collecting it builds: this rebuild
        _sums.setdefault(out, form)
        _done(out)
    return out


def _sum_chain(items: list[tuple[Expr, float]], c0: float
               ) -> tuple[Expr, tuple[float, dict[Expr, float]] | None]:
    """The sum of at most ``MAX_FLAT`` terms and ``c0``, and the form it reads back as
    (``None`` if it may not read back as these terms)."""
    first, c = items[0]
    lead_c0 = c < 0 and c0 > 0  # 1 - x rather than -x + 1
    scale = -c if lead_c0 else c  # a negative lead keeps its sign: -400*x
    u = _scaled(scale, first)
    terms = _add_term({}, u, first, scale, -1.0 if lead_c0 else 1.0)
    read0: float | None = 0.0
    if lead_c0:
        out = _make(F.subtract, c0, u)
        read0 = _read(out, 0, c0)
        c0 = 0.0
        terms = terms if read0 is not None else None
        if terms is not None:
            _done(out)
    else:
        out = u
    # a prefix with no constant is collected with any factor its terms share taken out
    shared = None if lead_c0 else dict(_factors(first))
    for t, c in items[1:]:
        u = _scaled(abs(c), t)
        out = _make(F.add if c > 0 else F.subtract, out, u)
        terms = _add_term(terms, u, t, abs(c), 1.0 if c > 0 else -1.0)
        if shared:
            ft = _factors(t)
            shared = {b: e for b, e in shared.items() if ft.get(b) == e}
        if terms is not None and not shared:
            _done(out)
    if c0 != 0:
        out = _make(F.add if c0 > 0 else F.subtract, out, abs(c0))
        v = _read(out, 1, abs(c0))
        terms = terms if v is not None else None
        read0 = None if v is None else v if c0 > 0 else -v
        if terms is not None:
            _done(out)
    if terms is None or read0 is None or out.op not in _SUM_OPS:
        return out, None
    _sums.setdefault(out, (read0, terms))
    return out, (read0, terms)


def _add_term(terms: dict[Expr, float] | None, u: Expr, t: Expr, scale: float,
              sign: float) -> dict[Expr, float] | None:
    """``terms`` with ``sign`` times what ``u = _scaled(scale, t)`` reads back as, if that
    is ``t`` with a coefficient of ``scale``'s sign; else ``None`` (the sum may not read
    back as its terms)."""
    if terms is None:
        return None
    c0, got = _term_of(u)
    c = got.get(t, 0.0)
    if c0 != 0 or len(got) != 1 or c == 0 or (c > 0) != (scale > 0):
        return None
    terms[t] = sign * c
    return terms


def collect_sum(node: Expr) -> Expr | float | None:
    """The collected, ordered form of a sum, or ``None`` if it is already that."""
    if node.dtype.kind != "f":
        return None
    if node in _collected:
        return _collected[node]
    c0, terms = sum_terms(node)
    out = rebuild_sum(c0, terms, node)
    return _remember(node, None if out is node else out)


def _remember(node: Expr, out: Expr | float | None) -> Expr | float | None:
    _collected[node] = out
    return out
