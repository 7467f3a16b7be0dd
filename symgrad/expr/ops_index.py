"""Basic indexing and slicing (``x[1:]``, ``x[:, 0]``, ``x[::-2]``, ``x[..., None]``).

The argument is a normalised key with one entry per source axis plus inserted axes:
``("int", i)``, ``("slice", start, stop, step)`` (``stop`` is ``None`` when a negative
step runs past index 0), ``("all",)`` for a full slice of a symbolic dimension,
``("dslice", start, stop, step)`` for any other slice of one (as written: ``None`` or ints,
negative from the end; the result's length is a ``SliceDim`` such as ``N-1``), and
``("new",)`` for ``None``.
"""

from __future__ import annotations

import numpy as np

from symgrad.expr.node import INTERNAL, SHAPE, Expr, OpDef
from symgrad.expr.shapes import Shape, ShapeError, fmt, slice_of


def normalize_key(shape: Shape, key: object) -> tuple:
    """Turn a Python indexing key into the normalised form above, checking bounds."""
    items = list(key) if isinstance(key, tuple) else [key]
    if sum(1 for k in items if k is Ellipsis) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    used = sum(1 for k in items if k is not None and k is not Ellipsis)
    if used > len(shape):
        raise IndexError(f"too many indices for an array of shape {fmt(shape)}: {used}")
    if Ellipsis in items:
        at = items.index(Ellipsis)
        items[at:at + 1] = [slice(None)] * (len(shape) - used)
    else:
        items += [slice(None)] * (len(shape) - used)
    out: list[tuple] = []
    axis = 0
    for k in items:
        if k is None:
            out.append(("new",))
            continue
        dim = shape[axis]
        if isinstance(k, (int, np.integer)) and not isinstance(k, bool):
            k = int(k)
            if isinstance(dim, int):
                if not -dim <= k < dim:
                    raise IndexError(f"index {k} is out of bounds for axis {axis} of size {dim}"
                                     f" (array of shape {fmt(shape)})")
                k %= dim
            out.append(("int", k))
        elif isinstance(k, slice):
            if isinstance(dim, str):
                out.append(_symbolic_slice(k, dim, axis))
            else:
                start, stop, step = k.indices(dim)
                out.append(("slice", start, stop if stop >= 0 else None, step))
        else:
            raise TypeError(f"unsupported index {k!r}: use ints, slices, '...' or None")
        axis += 1
    return tuple(out)


def _symbolic_slice(k: slice, dim: str, axis: int) -> tuple:
    """The key entry of a slice of symbolic dimension ``dim``: constant start, stop, step."""
    parts = (k.start, k.stop, k.step)
    if not all(v is None or (isinstance(v, (int, np.integer)) and not isinstance(v, bool))
               for v in parts):
        raise TypeError(f"slicing the symbolic dimension {dim!r} (axis {axis}): start, stop "
                        f"and step must be ints or None, got {k}")
    start, stop, step = (None if v is None else int(v) for v in parts)
    step = 1 if step is None else step
    if step == 0:
        raise ValueError("slice step cannot be zero")
    if slice_of(dim, start, stop, step) == dim and step == 1:
        return ("all",)
    return ("dslice", start, stop, step)


def _as_slices(key: tuple) -> tuple:
    spell = {"int": lambda e: e[1], "slice": lambda e: slice(*e[1:]),
             "dslice": lambda e: slice(*e[1:]), "all": lambda e: slice(None),
             "new": lambda e: None}
    return tuple(spell[e[0]](e) for e in key)


def _infer(srcs, key):
    shape, out, axis = srcs[0].shape, [], 0
    for e in key:
        if e[0] == "new":
            out.append(1)
            continue
        if e[0] == "slice":
            out.append(len(range(shape[axis])[slice(*e[1:])]))
        elif e[0] == "dslice":
            out.append(slice_of(shape[axis], *e[1:]))
        elif e[0] == "all":
            out.append(shape[axis])
        axis += 1
    return tuple(out), srcs[0].dtype


def _fmt_entry(e: tuple) -> str:
    if e[0] == "int":
        return str(e[1])
    if e[0] == "new":
        return "None"
    if e[0] == "all":
        return ":"
    start, stop, step = e[1:]
    text = f"{start if start else ''}:{'' if stop is None else stop}"
    return text + (f":{step}" if step != 1 else "")  # (a dslice's start may be None)


def fmt_key(key: tuple) -> str:
    """``1:, 0``: the key as a user writes it (trailing full slices dropped)."""
    parts = [_fmt_entry(e) for e in key]
    while len(parts) > 1 and parts[-1] == ":":
        parts.pop()
    return ", ".join(parts)


def _eval(key, x):
    # Negative ints survive only on symbolic axes; NumPy counts them from the end.
    return np.asarray(x[_as_slices(key)])


def _scatter_eval(arg, g):
    key, shape = arg
    out = np.zeros(shape, g.dtype)
    out[_as_slices(key)] = g
    return out


def _bind_scatter(arg, sizes):
    key, shape = arg
    return key, tuple(sizes[d] if isinstance(d, str) else d for d in shape)


def _prefix(key: tuple, nb: int, batch: tuple) -> tuple:
    """The key for an array with ``nb`` extra leading axes (a batch of tangents)."""
    return tuple(("slice", 0, d, 1) if isinstance(d, int) else ("all",)
                 for d in batch[:nb]) + key


# x[key]: the derivative scatters the cotangent into zeros of x's shape.
INDEX = OpDef("index", SHAPE, _infer, _eval, fn="index", infix="[]", prec=100,
              fmt_arg=fmt_key,
              vjp=lambda g, out, x: (Expr(SCATTER, (g,), (out.arg, x.shape)),),
              jvp=lambda ts, out, nb: Expr(INDEX, ts, _prefix(out.arg, nb, ts[0].shape)))

# zeros(shape) with g written at key: the adjoint of indexing (and linear, so its own
# derivative indexes again).
SCATTER = OpDef("scatter", SHAPE, lambda srcs, a: (a[1], srcs[0].dtype), _scatter_eval,
                fn="scatter", props=frozenset({INTERNAL}),
                fmt_arg=lambda a: f"{fmt(a[1])}, [{fmt_key(a[0])}]",
                extra={"bind": _bind_scatter},
                vjp=lambda g, out, x: (Expr(INDEX, (g,), out.arg[0]),),
                jvp=lambda ts, out, nb: Expr(SCATTER, ts, (
                    _prefix(out.arg[0], nb, ts[0].shape), ts[0].shape[:nb] + out.arg[1])))

INDEX_OPS = (INDEX, SCATTER)

__all__ = ["INDEX", "SCATTER", "INDEX_OPS", "normalize_key", "fmt_key", "ShapeError"]
