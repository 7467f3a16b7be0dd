"""Readable text for the structured nodes derivatives build: NumPy's names for them.

A gradient with respect to a slice of a vector is a ``scatter`` (zeros with the gradient
written into a slice): it prints as ``pad(g, (before, after))``, NumPy's ``np.pad`` with
zeros. A banded Jacobian or Hessian (``bands``, see ``ops_band``) prints as a sum of
diagonals, ``diag(v, k)`` (``np.diag``: ``v`` on the k-th diagonal) and ``c*eye(n, m, k=k)``
for a constant band. Each spelling means exactly what NumPy computes for it; a node these
spellings cannot state truthfully (a vector band of a non-square matrix, a strided or
symbolic slice) keeps its own ``scatter(...)``/``bands(...)`` text.
"""

from __future__ import annotations

from symgrad.expr import ops_elementwise as E
from symgrad.expr import ops_tensor as T
from symgrad.expr.leaves import CONST
from symgrad.expr.node import Expr
from symgrad.expr.ops_band import BANDS
from symgrad.expr.ops_index import SCATTER

_ADD_PREC = E.ADD.prec


def _paren(part: tuple[str, int], prec: int) -> str:
    s, p = part
    return f"({s})" if p < prec else s


def _widths(n: Expr) -> list[tuple[int, int]] | None:
    """``(before, after)`` zeros per axis of a scatter whose key is step-1 slices and ints,
    or ``None`` when ``np.pad`` cannot say it."""
    key, shape = n.arg
    out = []
    for entry, dim in zip(key, shape):
        kind = entry[0]
        if kind == "all":
            out.append((0, 0))
        elif kind == "int" and isinstance(dim, int):
            out.append((entry[1], dim - entry[1] - 1))
        elif kind == "slice" and entry[3] == 1 and entry[2] is not None and isinstance(
                dim, int):
            out.append((entry[1], dim - entry[2]))
        else:
            return None
    return out if len(out) == len(key) else None  # (an inserted axis: no pad for it)


def _pad_text(n: Expr, text: dict) -> tuple[str, int] | None:
    widths = _widths(n)
    if widths is None:
        return None
    key = n.arg[0]
    g = text[n.srcs[0]][0]
    if any(e[0] == "int" for e in key):  # the axis an int removed comes back, of length 1
        items = ["None" if e[0] == "int" else ":" for e in key]
        while items and items[-1] == ":":
            items.pop()
        g = f"{_paren(text[n.srcs[0]], 100)}[{', '.join(items)}]"
    if len(widths) == 1:
        pads = f"{widths[0]}"
    else:
        pads = f"({', '.join(str(w) for w in widths)})"
    return f"pad({g}, {pads})", 100


def _constant(v: Expr) -> Expr | None:
    """The scalar a vector is a broadcast of, else ``None``."""
    return v.srcs[0] if v.op is T.BROADCAST_TO and v.srcs[0].ndim == 0 else None


def _band_term(v: Expr, offset: int, axis: int, shape: tuple, text: dict) -> str | None:
    """One band as ``diag(w, k)`` or ``c*eye(n, m, k=k)``; ``""`` when it holds no entry,
    ``None`` when NumPy's words cannot say it (a vector band of a non-square matrix)."""
    rows, cols = shape
    length, across = (rows, cols) if axis == 0 else (cols, rows)
    lo, hi = max(0, -offset), min(length, across - offset)  # the entries inside
    if lo >= hi:
        return ""
    k = offset if axis == 0 else -offset  # M[i, i + offset] (by row) or M[j + offset, j]
    c = _constant(v)
    if c is not None:
        size = f"{rows}" if rows == cols else f"{rows}, {cols}"
        eye = f"eye({size})" if k == 0 else f"eye({size}, k={k})"
        if c.op is CONST and c.arg.scalar() == 1:
            return eye
        return f"{_paren(text[c], E.MUL.prec)}*{eye}"
    if rows != cols:
        return None  # np.diag builds square matrices only
    if v.op is SCATTER and _widths(v) == [(lo, length - hi)]:  # the band's values, placed
        w = text[v.srcs[0]][0]
    elif lo == 0 and hi == length:
        w = text[v][0]
    else:
        w = f"{_paren(text[v], 100)}[{lo or ''}:{hi if hi < length else ''}]"
    return f"diag({w})" if k == 0 else f"diag({w}, {k})"


def _bands_text(n: Expr, text: dict) -> tuple[str, int] | None:
    shape, layout = n.arg
    if len(shape) != 2 or not all(isinstance(d, int) for d in shape):
        return None
    terms = [_band_term(v, off, axis, shape, text) for v, (off, axis) in zip(n.srcs, layout)]
    if None in terms:
        return None
    terms = [t for t in terms if t]
    if not terms:
        return f"zeros({shape})", 100
    return " + ".join(terms), (100 if len(terms) == 1 else _ADD_PREC)


def readable_structure(n: Expr, text: dict) -> tuple[str, int] | None:
    """The text of a ``scatter`` or ``bands`` node in NumPy's words (``text`` holds every
    node printed so far), or ``None`` to print it as any other node."""
    if n.op is SCATTER:
        return _pad_text(n, text)
    if n.op is BANDS:
        return _bands_text(n, text)
    return None
