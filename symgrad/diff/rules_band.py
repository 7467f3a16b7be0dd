"""``STRUCTURE``: rules that keep banded matrices banded (see ``symgrad.expr.ops_band``).

The identity seeding a Jacobian is one band; slicing, scaling by a row vector, scattering,
negating, adding and transposing a banded matrix give a banded matrix, and linear operators
distribute over sums that contain one. So the Hessian of a function built from slices and
elementwise operators (Rosenbrock's is tridiagonal) is a few vectors, whatever the size.
"""

from __future__ import annotations

import weakref

from symgrad.diff.patterns import Rule, RuleSet, Var, op
from symgrad.expr import functions as F
from symgrad.expr import tensors
from symgrad.expr.node import ELEMENTWISE, Expr
from symgrad.expr.ops_band import BANDS, band_matrix
from symgrad.expr.ops_elementwise import ADD, SUB
from symgrad.expr.ops_index import INDEX, SCATTER

band = Var("m", lambda n: n.op is BANDS)
by_column = Var("m", lambda n: n.op is BANDS and all(a == 1 for _, a in n.arg[1]))
x, y, w = Var("x"), Var("y"), Var("w")
add, sub, mul, neg = op("add"), op("subtract"), op("multiply"), op("negative")
index, scatter, transpose = op("index"), op("scatter"), op("transpose")


def _bands(m: Expr) -> list[tuple[Expr, int, int]]:
    return [(v, o, a) for v, (o, a) in zip(m.srcs, m.arg[1])]


def _column_slice(key: tuple, rows: int) -> tuple[int, int] | None:
    """(start, stop) when ``key`` is ``[:, start:stop]`` with step 1."""
    if len(key) != 2 or key[0] != ("slice", 0, rows, 1) or key[1][0] != "slice":
        return None
    _, start, stop, step = key[1]
    return (start, stop) if step == 1 and stop is not None else None


def _index_bands(m):
    node, mat = m["_"], m["m"]
    cut = _column_slice(node.arg, mat.shape[0])
    if cut is None:
        return None
    s, e = cut
    return band_matrix(node.shape, [(v[s:e], o + s, a) for v, o, a in _bands(mat)])


def _scatter_bands(m):
    node, mat = m["_"], m["m"]
    key, shape = node.arg
    cut = _column_slice(key, shape[0])
    if cut is None or isinstance(shape[1], str):
        return None
    s, e = cut
    return band_matrix(shape, [(Expr(SCATTER, (v,), ((("slice", s, e, 1),), (shape[1],))),
                                o - s, a) for v, o, a in _bands(mat)])


def _scale_bands(m):
    mat, w = m["m"], m["w"]
    cols = mat.shape[1]
    if w.shape not in ((), (cols,), (1, cols)):
        return None  # only a row vector scales each column's band entry alike
    row = F.reshape(w, (cols,)) if w.ndim == 2 else w
    return band_matrix(mat.shape, [(v * row, o, a) for v, o, a in _bands(mat)])


def _merge(sign: float):
    def build(m):
        a, b = m["m"], m["n"]
        if a.shape != b.shape:
            return None
        merged: dict[tuple[int, int], Expr] = {}
        for (v, o, ax), s in [(band_, 1.0) for band_ in _bands(a)] + [
                (band_, sign) for band_ in _bands(b)]:
            v = v if s == 1 else F.negative(v)
            merged[(o, ax)] = merged[(o, ax)] + v if (o, ax) in merged else v
        return band_matrix(a.shape, [(v, o, ax) for (o, ax), v in merged.items()])
    return build


_band_sums: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _has_band(n: Expr) -> bool:
    """Whether the sum ``n`` (over ``+`` and ``-``) has a banded term; remembered per node
    and found without recursion, so a long sum is walked once, not once per user."""
    stack = [n]
    while stack:
        m = stack[-1]
        if m in _band_sums:
            stack.pop()
        elif m.op is BANDS or m.op not in (ADD, SUB):
            _band_sums[stack.pop()] = m.op is BANDS
        else:
            todo = [s for s in m.srcs if s not in _band_sums]
            if todo:
                stack += todo
            else:
                _band_sums[stack.pop()] = any(_band_sums[s] for s in m.srcs)
    return _band_sums[n]


def _scales_bands(total: Expr, w: Expr) -> bool:
    """Whether ``w`` turns every banded term of the sum ``total`` into bands (a row
    scaling of column bands: what ``bands * row -> bands`` absorbs)."""
    cols = total.shape[-1] if total.ndim == 2 else None
    if cols is None or w.shape not in ((), (cols,), (1, cols)):
        return False
    stack = [total]
    while stack:
        n = stack.pop()
        if n.op in (ADD, SUB):
            stack += n.srcs
        elif n.op is BANDS and any(a != 1 for _, a in n.arg[1]):
            return False
    return True


def _distribute(rebuild):
    """f(x + y) -> f(x) + f(y) for a linear f, when the sum holds a banded matrix."""
    def build(m):
        node, total = m["_"], m["_"].srcs[0]
        swapped = False
        if node.op.kind == ELEMENTWISE:  # (x + y)*w, matched either way round
            w_ = m["w"]
            swapped = node.srcs[0] is w_ and node.srcs[1] is not w_
            total = node.srcs[1] if swapped else total
        if total.op not in (ADD, SUB) or not _has_band(total):
            return None
        if node.op.kind == ELEMENTWISE and not _scales_bands(total, m["w"]):
            return None  # the products stay dense, and collecting w would undo this
        if swapped:
            node = Expr(node.op, (total, m["w"]), node.arg)
        a, b = total.srcs
        if node.op.kind != ELEMENTWISE:  # a shape operator expects the sum's own shape
            a, b = (tensors.broadcast_to(p, total.shape) for p in (a, b))
        fa, fb = rebuild(node, a), rebuild(node, b)
        return fa + fb if total.op is ADD else fa - fb
    return build


other = Var("n", lambda n: n.op is BANDS)

STRUCTURE = RuleSet("structure", [
    Rule("I[:, s:e] -> bands", index(by_column), _index_bands),
    Rule("scatter(bands, [:, s:e]) -> bands", scatter(by_column), _scatter_bands),
    Rule("bands * row -> bands", mul(by_column, w), _scale_bands),
    Rule("-bands -> bands", neg(band), lambda m: band_matrix(
        m["m"].shape, [(F.negative(v), o, a) for v, o, a in _bands(m["m"])])),
    Rule("bands + bands -> bands", add(band, other), _merge(1.0)),
    Rule("bands - bands -> bands", sub(band, other), _merge(-1.0)),
    Rule("bands.T -> bands", transpose(band), lambda m: band_matrix(
        m["_"].shape, [(v, o, 1 - a) for v, o, a in _bands(m["m"])])),
    Rule("(x + y)*w -> x*w + y*w (with bands)", mul(add(x, y), w),
         _distribute(lambda node, part: part * node.srcs[1])),
    Rule("(x - y)*w -> x*w - y*w (with bands)", mul(sub(x, y), w),
         _distribute(lambda node, part: part * node.srcs[1])),
    Rule("scatter(x + y) -> scatter(x) + scatter(y) (with bands)", scatter(add(x, y)),
         _distribute(lambda node, part: Expr(SCATTER, (part,), node.arg))),
    Rule("scatter(x - y) -> scatter(x) - scatter(y) (with bands)", scatter(sub(x, y)),
         _distribute(lambda node, part: Expr(SCATTER, (part,), node.arg))),
    Rule("(x + y)[k] -> x[k] + y[k] (with bands)", index(add(x, y)),
         _distribute(lambda node, part: Expr(INDEX, (part,), node.arg))),
    Rule("(x - y)[k] -> x[k] - y[k] (with bands)", index(sub(x, y)),
         _distribute(lambda node, part: Expr(INDEX, (part,), node.arg))),
    Rule("(x + y).T -> x.T + y.T (with bands)", transpose(add(x, y)),
         _distribute(lambda node, part: Expr(node.op, (part,), node.arg))),
    Rule("(x - y).T -> x.T - y.T (with bands)", transpose(sub(x, y)),
         _distribute(lambda node, part: Expr(node.op, (part,), node.arg))),
])
