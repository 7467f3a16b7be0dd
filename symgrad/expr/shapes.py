"""Shapes: tuples whose entries are ints or symbolic dimension names such as ``"N"``.

A symbolic dimension is bound to a size when a graph is fed; every use of the same name
in one graph must get the same size. Broadcasting follows NumPy: shapes are aligned on the
right and a dimension of 1 stretches. A symbolic dimension only matches itself or 1 (it is
never assumed to be 1).
"""

from __future__ import annotations

import os
import sys
import warnings
from collections import Counter
from math import prod
from typing import Union

Dim = Union[int, str]
Shape = tuple[Dim, ...]


class ShapeError(ValueError):
    """Shapes that do not fit together; raised where the bad node is built."""


class SliceDim(str):
    """The length of a slice of a symbolic dimension: ``x[1:]`` of an ``(N,)`` input has
    shape ``(N-1,)``. Still symbolic (a new ``N`` never recompiles), and still a ``str``:
    its name is a formula of the length, so two slices of one length (``x[1:]`` and
    ``x[:-1]``) have equal dimensions and broadcast together. ``length(sizes)`` is its
    size once ``base`` is bound (Python's slice semantics: exact at N = 0, 1, 2)."""

    base: str
    start: int | None
    stop: int | None
    step: int

    def __new__(cls, base: str, start: int | None, stop: int | None, step: int) -> SliceDim:
        self = super().__new__(cls, _slice_name(base, start, stop, step))
        self.base, self.start, self.stop, self.step = base, start, stop, step
        return self

    def __reduce__(self) -> tuple:
        return SliceDim, (self.base, self.start, self.stop, self.step)

    def length(self, sizes: dict[str, int]) -> int:
        """The size, given the sizes of ``base`` (and of what it is a slice of)."""
        n = sizes[self.base] if self.base in sizes else self.base.length(sizes)
        return len(range(n)[self.start:self.stop:self.step])


def _slice_name(base: str, start: int | None, stop: int | None, step: int) -> str:
    """``N-1`` for ``N[1:]`` and ``N[:-1]``; ``len(N[a:b:c])`` where no shorter formula
    holds at every N."""
    if step > 0 and (start or 0) >= 0 and (stop is None or stop < 0):
        k = (start or 0) - (stop or 0)  # the elements left out: max(0, ceil((N - k) / step))
        return f"{base}-{k}" if step == 1 else f"ceil(({base}-{k})/{step})" if k else \
            f"ceil({base}/{step})"
    if step == -1 and start is None and stop is None:
        return base  # (never built: a reversal keeps the dimension)
    spell = ["" if v is None else str(v) for v in (start, stop)]
    return f"len({base}[{spell[0]}:{spell[1]}:{step}])"


def slice_of(dim: str, start: int | None, stop: int | None, step: int) -> str:
    """The dimension of ``x[start:stop:step]`` along a symbolic axis ``dim``: ``dim`` itself
    when the slice keeps every element (``[:]``, ``[0:]``, ``[::-1]``)."""
    if step == 0:
        raise ValueError("slice step cannot be zero")
    if (start in (None, 0) and stop is None and step == 1) or (
            start is None and stop is None and step == -1):
        return dim
    return SliceDim(dim, start, stop, step)


def bind_derived(dims: frozenset | set, sizes: dict[str, int]) -> None:
    """Add the sizes of the sliced dimensions among ``dims`` to ``sizes`` (their bases are
    bound already, or none of them is: ``check_dims_bound`` names those)."""
    for d in dims:
        if isinstance(d, SliceDim) and d not in sizes:
            try:
                sizes[d] = d.length(sizes)
            except (KeyError, AttributeError):
                pass  # an unbound base: reported as unbound by the caller


class RepeatedDimWarning(UserWarning):
    """A broadcast that puts one symbolic dimension on two axes: ``(N,) - (N, 1)`` is an
    ``(N, N)`` array, NumPy's answer but seldom what was meant."""


def repeated_dims(result: Shape, *shapes: Shape) -> list[str]:
    """Symbolic dimensions that ``result`` holds more often than any one of ``shapes``."""
    counts = Counter(d for d in result if isinstance(d, str))
    most = Counter()
    for s in shapes:
        for d, k in Counter(d for d in s if isinstance(d, str)).items():
            most[d] = max(most[d], k)
    return sorted(d for d, k in counts.items() if k > most[d])


def repeat_advice(shapes: tuple[Shape, ...], dims: list[str]) -> str:
    """What a broadcast that repeats ``dims`` does, and the usual fix."""
    d = dims[0]
    return (f"broadcasting shapes {' and '.join(fmt(s) for s in shapes)} puts {d} on two "
            f"axes (every sample paired with every other sample); if one operand is a column "
            f"of shape ({d}, 1), take y[:, 0] or y.reshape(({d!r},)) to make it ({d},)")


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _user_stacklevel() -> int:
    """The stack level of the first frame outside symgrad: where the user built the node."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level


def as_shape(shape: object, what: str = "shape") -> Shape:
    """Normalise an int, a name or a sequence of them to a shape tuple."""
    if isinstance(shape, (int, str)):
        shape = (shape,)
    try:
        dims = tuple(shape)  # type: ignore[arg-type]
    except TypeError as exc:
        raise TypeError(f"{what}: expected a tuple of ints and dimension names, "
                        f"got {shape!r}") from exc
    out: list[Dim] = []
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, (int, str)):
            if hasattr(d, "__index__") and not isinstance(d, bool):
                d = int(d)  # NumPy integers
            else:
                raise TypeError(f"{what}: dimension {d!r} is neither an int nor a name")
        if isinstance(d, int) and d < 0:
            raise ValueError(f"{what}: dimension {d} is negative")
        if isinstance(d, str) and not d.isidentifier() and not isinstance(d, SliceDim):
            raise ValueError(f"{what}: dimension name {d!r} is not an identifier")
        out.append(d)
    return tuple(out)


def fmt(shape: Shape) -> str:
    """``(N, 3)``, ``()`` or ``(5,)``: a shape the way a user writes it."""
    inner = ", ".join(str(d) for d in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


def broadcast(*shapes: Shape, what: str = "operands", warn: bool = True) -> Shape:
    """The NumPy broadcast of ``shapes``; :class:`ShapeError` names all of them if none.
    A result that repeats a symbolic dimension the operands did not repeat warns
    (:class:`RepeatedDimWarning`) unless ``warn`` is false."""
    ndim = max((len(s) for s in shapes), default=0)
    out: list[Dim] = []
    for axis in range(-ndim, 0):
        dims = {s[axis] for s in shapes if len(s) >= -axis}
        dims.discard(1)
        if len(dims) > 1:
            raise ShapeError(f"cannot broadcast {what} of shapes "
                             f"{' and '.join(fmt(s) for s in shapes)}: dimensions "
                             f"{' vs '.join(str(d) for d in sorted(dims, key=str))} "
                             f"differ at axis {axis}")
        out.append(dims.pop() if dims else 1)
    result = tuple(out)
    syms = [d for d in result if isinstance(d, str)] if warn and len(shapes) > 1 else ()
    if len(syms) > len(set(syms)):  # cheap test first: this runs for every node built
        repeated = repeated_dims(result, *shapes)
        if repeated:  # once per place in the user's code (Python's default filter)
            warnings.warn(repeat_advice(shapes, repeated), RepeatedDimWarning,
                          stacklevel=_user_stacklevel())
    return result


def normalize_axes(axis: object, ndim: int, what: str = "axis") -> tuple[int, ...]:
    """Axes as a sorted tuple of non-negative ints (``None`` means all of them)."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)  # type: ignore[arg-type]
    out = []
    for a in axes:
        if isinstance(a, bool) or not isinstance(a, int):
            raise TypeError(f"{what}: expected an int or a tuple of ints, got {axis!r}")
        if not -ndim <= a < ndim:
            raise ShapeError(f"{what} {a} is out of range for an array of {ndim} dimensions")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ShapeError(f"{what}: repeated axis in {axis!r}")
    return tuple(sorted(out))


def reduced(shape: Shape, axes: tuple[int, ...] | None, keepdims: bool) -> Shape:
    """The shape left after reducing ``axes`` (``None``: all) of ``shape``."""
    if axes is None:
        axes = tuple(range(len(shape)))
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def split(shape: Shape) -> tuple[int, Counter]:
    """The product of the concrete dimensions and the multiset of symbolic ones."""
    return prod(d for d in shape if isinstance(d, int)), Counter(
        d for d in shape if isinstance(d, str))


def reshaped(old: Shape, new: Shape | tuple, what: str = "reshape") -> Shape:
    """Check and complete ``new`` (one ``-1`` allowed) for an array of shape ``old``.

    With symbolic dimensions the new shape must keep the same symbolic names, and the
    concrete parts must have the same product: ``(N, 784)`` may become ``(N, 28, 28)``.
    """
    dims = list(new)
    if sum(1 for d in dims if d == -1) > 1:
        raise ShapeError(f"{what}: only one dimension may be -1, got {tuple(new)}")
    known = as_shape([d for d in dims if d != -1], what)
    old_size, old_syms = split(old)
    new_size, new_syms = split(known)
    if old_syms != new_syms:
        raise ShapeError(f"{what}: cannot reshape {fmt(old)} to {tuple(new)}: the symbolic "
                         "dimensions must stay the same")
    if -1 in dims:
        if new_size == 0 or old_size % new_size:
            raise ShapeError(f"{what}: cannot reshape {fmt(old)} to {tuple(new)}")
        dims[dims.index(-1)] = old_size // new_size
    elif new_size != old_size:
        raise ShapeError(f"{what}: cannot reshape {fmt(old)} ({old_size} elements per "
                         f"symbolic index) to {tuple(new)} ({new_size})")
    return as_shape(dims, what)


def size_of(shape: Shape, sizes: dict[str, int]) -> int:
    """The number of elements once symbolic dimensions are bound by ``sizes``."""
    return prod(sizes[d] if isinstance(d, str) else d for d in shape)
