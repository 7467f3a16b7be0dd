"""``einsum`` and ``tensordot``, lowered to the operators ``matmul`` is made of.

Each operand first loses its repeated subscripts (``ii``: a diagonal) and the subscripts
no other operand and not the output has (a sum); then the operands are contracted left
to right, each pair as one ``matmul``: the left operand transposed to (batch, free,
contracted) and reshaped to ``(batch..., M, K)``, the right one to ``(batch..., K, N)``.
A symbolic dimension may be any of these (``"ni,ij->nj"``, ``"ni,nj->ij"``,
``"nij,njk->nik"``): alone in its group it is the group; a free symbolic dimension next to
others becomes a batch axis (the other operand has length 1 there); only a contraction
over a symbolic dimension and other axes at once falls back to a broadcast product and a
sum. Derivatives and every backend follow from those operators.
"""

from __future__ import annotations

from math import prod
from typing import Sequence

from symgrad.expr.dtypes import promote
from symgrad.expr.functions import Operand, as_expr, cast, multiply
from symgrad.expr.node import Expr
from symgrad.expr.shape_vocabulary import diagonal
from symgrad.expr.shapes import ShapeError, fmt
from symgrad.expr.tensors import broadcast_to, matmul, reshape, sum, transpose

__all__ = ["einsum", "tensordot"]

Label = str | int  # a letter, or an ellipsis position (-1 is the last)


def _term(term: str, x: Expr, i: int) -> list[Label]:
    """The labels of one operand's subscripts (``...`` expanded to ellipsis positions)."""
    if term.count("...") > 1 or term.replace("...", "").count("."):
        raise ValueError(f"einsum: operand {i}'s subscripts {term!r} may hold one '...' "
                         f"and no other '.'")
    head, dots, tail = term.partition("...")
    for c in head + tail:
        if not (c.isascii() and c.isalpha()):
            raise ValueError(f"einsum: subscripts are letters, got {c!r} in {term!r}")
    named = len(head) + len(tail)
    if (x.ndim != named) if not dots else (x.ndim < named):
        raise ValueError(f"einsum: operand {i} has shape {fmt(x.shape)} ({x.ndim} "
                         f"dimensions) but its subscripts {term!r} name "
                         f"{'at most ' if dots else ''}{named}")
    ell = list(range(-(x.ndim - named), 0)) if dots else []
    return [*head, *ell, *tail]


def _parse(subscripts: str, xs: list[Expr]) -> tuple[list[list[Label]], list[Label]]:
    if not isinstance(subscripts, str):
        raise TypeError(f"einsum: the first argument must be the subscripts string (such as "
                        f"'ij,jk->ik'), got {type(subscripts).__name__}")
    spec = subscripts.replace(" ", "")
    if spec.count("->") > 1:
        raise ValueError(f"einsum: subscripts {subscripts!r} hold more than one '->'")
    ins, arrow, out = spec.partition("->")
    terms = ins.split(",")
    if len(terms) != len(xs):
        raise ValueError(f"einsum: subscripts {subscripts!r} name {len(terms)} operand"
                         f"{'s' if len(terms) != 1 else ''}, got {len(xs)}")
    labels = [_term(t, x, i) for i, (t, x) in enumerate(zip(terms, xs))]
    ell = sorted({lab for ls in labels for lab in ls if isinstance(lab, int)})
    if not arrow:  # implicit: the ellipsis, then the letters seen once, in ASCII order
        seen = [lab for ls in labels for lab in ls if isinstance(lab, str)]
        return labels, [*ell, *sorted(c for c in set(seen) if seen.count(c) == 1)]
    if "..." not in out and ell:
        raise ValueError(f"einsum: subscripts {subscripts!r}: operands have dimensions "
                         f"under '...' but the output names no '...'")
    head, dots, tail = out.partition("...")
    result: list[Label] = [*head, *(ell if dots else []), *tail]
    known = {lab for ls in labels for lab in ls}
    for c in head + tail:
        if not (c.isascii() and c.isalpha()) or c not in known:
            raise ValueError(f"einsum: output subscript {c!r} of {subscripts!r} is not one "
                             f"of the operands' subscripts")
    if len(set(result)) != len(result):
        raise ValueError(f"einsum: output subscripts {out!r} repeat a letter")
    return labels, result


def _sizes(xs: list[Expr], labels: list[list[Label]]) -> dict[Label, object]:
    """Each label's length: equal in every operand, or 1 (which broadcasts)."""
    sizes: dict[Label, object] = {}
    for i, (x, ls) in enumerate(zip(xs, labels)):
        for lab, d in zip(ls, x.shape):
            have = sizes.get(lab, 1)
            if d != 1 and have != 1 and d != have:
                what = "'...' dimension" if isinstance(lab, int) else f"subscript {lab!r}"
                raise ShapeError(f"einsum: {what} has length {have} in an earlier operand "
                                 f"and {d} in operand {i} (shape {fmt(x.shape)})")
            sizes[lab] = d if have == 1 else have
    return sizes


def _unique(x: Expr, ls: list[Label]) -> tuple[Expr, list[Label]]:
    """Repeated labels within one operand (``ii``) become one axis: the diagonal."""
    while len(set(ls)) < len(ls):
        lab = next(lab for lab in ls if ls.count(lab) > 1)
        p = ls.index(lab)
        q = ls.index(lab, p + 1)
        if x.shape[p] != x.shape[q]:
            raise ShapeError(f"einsum: subscript {lab!r} repeated in one operand of shape "
                             f"{fmt(x.shape)} has lengths {x.shape[p]} and {x.shape[q]}")
        x = diagonal(x, 0, p, q)
        ls = [m for i, m in enumerate(ls) if i not in (p, q)] + [lab]
    return x, ls


def _drop(x: Expr, ls: list[Label], keep: set) -> tuple[Expr, list[Label]]:
    """Sum over the labels not in ``keep``."""
    axes = tuple(i for i, lab in enumerate(ls) if lab not in keep)
    if not axes:
        return x, ls
    return sum(x, axis=axes), [lab for lab in ls if lab in keep]


def _arrange(x: Expr, ls: list[Label], order: list[Label], shape: Sequence) -> Expr:
    """``x`` transposed to ``order`` (labels ``x`` lacks get length 1), then reshaped."""
    t = transpose(x, tuple(ls.index(lab) for lab in order if lab in ls))
    return reshape(t, tuple(shape))


def _group(labels: list[Label], sizes: dict, x_ls: list[Label]) -> int | str:
    """The one dimension a group of labels is merged into (the labels as ``x`` has them)."""
    dims = [sizes[lab] if lab in x_ls else 1 for lab in labels]
    return dims[0] if len(dims) == 1 else prod(dims)  # type: ignore[arg-type]


def _contract(a: Expr, la: list[Label], b: Expr, lb: list[Label], keep: set,
              sizes: dict) -> tuple[Expr, list[Label]]:
    a, la = _drop(a, la, keep | set(lb))
    b, lb = _drop(b, lb, keep | set(la))
    batch = [lab for lab in la if lab in lb and lab in keep]
    inner = [lab for lab in la if lab in lb and lab not in keep]
    fa = [lab for lab in la if lab not in lb]
    fb = [lab for lab in lb if lab not in la]
    symbolic_inner = any(isinstance(sizes[lab], str) for lab in inner) and len(inner) > 1
    if not inner or symbolic_inner:  # a broadcast product (and a sum over ``inner``)
        order = batch + fa + fb + inner
        prod_ = multiply(_arrange(a, la, order, [a.shape[la.index(lab)] if lab in la else 1
                                                 for lab in order]),
                         _arrange(b, lb, order, [b.shape[lb.index(lab)] if lab in lb else 1
                                                 for lab in order]))
        return _drop(prod_, order, keep)
    # A symbolic free label next to other free labels is a batch axis of its operand
    pa = [lab for lab in fa if isinstance(sizes[lab], str)] if len(fa) > 1 else []
    pb = [lab for lab in fb if isinstance(sizes[lab], str)] if len(fb) > 1 else []
    ra, rb = [lab for lab in fa if lab not in pa], [lab for lab in fb if lab not in pb]
    # an inner label of length 1 on one side only: stretch it (matmul does not broadcast K)
    for lab in inner:
        if a.shape[la.index(lab)] != sizes[lab]:
            a = broadcast_to(a, tuple(sizes[m] if m == lab else d for m, d in zip(la, a.shape)))
        if b.shape[lb.index(lab)] != sizes[lab]:
            b = broadcast_to(b, tuple(sizes[m] if m == lab else d for m, d in zip(lb, b.shape)))

    def dim(x: Expr, ls: list[Label], lab: Label) -> object:
        return x.shape[ls.index(lab)]

    k = _group(inner, sizes, la)
    m = prod(dim(a, la, lab) for lab in ra) if len(ra) != 1 else dim(a, la, ra[0])
    n = prod(dim(b, lb, lab) for lab in rb) if len(rb) != 1 else dim(b, lb, rb[0])
    a2 = _arrange(a, la, batch + pa + ra + inner,
                  [dim(a, la, lab) for lab in batch + pa] + [1] * len(pb) + [m, k])
    b2 = _arrange(b, lb, batch + pb + inner + rb,
                  [dim(b, lb, lab) for lab in batch] + [1] * len(pa) +
                  [dim(b, lb, lab) for lab in pb] + [k, n])
    out = matmul(a2, b2)
    order = batch + pa + pb + ra + rb
    shape = out.shape[:len(batch) + len(pa) + len(pb)] + tuple(
        [dim(a, la, lab) for lab in ra] + [dim(b, lb, lab) for lab in rb])
    return reshape(out, shape), order


def einsum(subscripts: str, *operands: Operand) -> Expr:
    """NumPy's ``einsum``: explicit (``"ij,jk->ik"``) and implicit (``"ij,jk"``) outputs,
    ``...`` broadcasting, repeated subscripts (``"ii->i"``, ``"ii"``), any number of
    operands (contracted left to right). Symbolic dimensions may be any subscript
    (``sg.einsum("ni,ij->nj", X, W)`` with ``X`` of shape ``(N, 3)``).

    >>> sg.einsum("ni,ij->nj", sg.input("X", shape=("N", 3)), sg.param("W", (3, 4))).shape
    ('N', 4)
    """
    xs = [as_expr(v) for v in operands]
    if not xs:
        raise ValueError("einsum needs at least one operand")
    labels, out = _parse(subscripts, xs)
    sizes = _sizes(xs, labels)
    dt = promote(*(x.dtype for x in xs))
    xs = [cast(x, dt) for x in xs]
    pairs = [_unique(x, ls) for x, ls in zip(xs, labels)]
    # drop, in each operand, what nothing else needs
    needed = [set(out).union(*(set(ls) for j, (_, ls) in enumerate(pairs) if j != i))
              for i in range(len(pairs))]
    pairs = [_drop(x, ls, keep) for (x, ls), keep in zip(pairs, needed)]
    acc, la = pairs[0]
    for i in range(1, len(pairs)):
        keep = set(out).union(*(set(ls) for _, ls in pairs[i + 1:]))
        acc, la = _contract(acc, la, *pairs[i], keep, sizes)
    acc, la = _drop(acc, la, set(out))
    # labels of length 1 broadcast against the others: stretch to the output's lengths
    acc = transpose(acc, tuple(la.index(lab) for lab in out))
    full = tuple(sizes[lab] for lab in out)
    return acc if acc.shape == full else broadcast_to(acc, full)


def tensordot(a: Operand, b: Operand, axes: object = 2) -> Expr:
    """NumPy's ``tensordot``: the sum over the last ``axes`` axes of ``a`` and the first
    ``axes`` of ``b`` (an int), or over the axes paired by ``(a_axes, b_axes)``."""
    a, b = as_expr(a), as_expr(b)
    if isinstance(axes, int):
        if not 0 <= axes <= min(a.ndim, b.ndim):
            raise ShapeError(f"tensordot: axes={axes} needs operands of at least {axes} "
                             f"dimensions, got shapes {fmt(a.shape)} and {fmt(b.shape)}")
        pa, pb = list(range(a.ndim - axes, a.ndim)), list(range(axes))
    else:
        try:
            xa, xb = axes  # type: ignore[misc]
        except (TypeError, ValueError):
            raise TypeError(f"tensordot: axes must be an int or a pair of axis lists, got "
                            f"{axes!r}") from None
        pa = [xa] if isinstance(xa, int) else list(xa)
        pb = [xb] if isinstance(xb, int) else list(xb)
        if len(pa) != len(pb):
            raise ShapeError(f"tensordot: axes {axes!r} pair {len(pa)} axes of a with "
                             f"{len(pb)} of b")
        for p, x, side in ((pa, a, "a"), (pb, b, "b")):
            for v in p:
                if not -x.ndim <= v < x.ndim:
                    raise ShapeError(f"tensordot: axis {v} is out of range for {side} of "
                                     f"shape {fmt(x.shape)}")
        pa, pb = [v % a.ndim for v in pa], [v % b.ndim for v in pb]
        if len(set(pa)) < len(pa) or len(set(pb)) < len(pb):
            raise ShapeError(f"tensordot: axes {axes!r} repeat an axis")
    for i, j in zip(pa, pb):
        if a.shape[i] != b.shape[j]:
            raise ShapeError(f"tensordot: axis {i} of a (shape {fmt(a.shape)}) has length "
                             f"{a.shape[i]} but axis {j} of b (shape {fmt(b.shape)}) has "
                             f"{b.shape[j]}")
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    if a.ndim + b.ndim - len(pa) > len(letters):
        raise ShapeError("tensordot: too many axes")
    sa = letters[:a.ndim]
    free = iter(letters[a.ndim:])
    sb = "".join(sa[pa[pb.index(j)]] if j in pb else next(free) for j in range(b.ndim))
    out = "".join(c for i, c in enumerate(sa) if i not in pa) + "".join(
        c for j, c in enumerate(sb) if j not in pb)
    return einsum(f"{sa},{sb}->{out}", a, b)
