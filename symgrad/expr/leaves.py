"""Leaves of the graph: data inputs, trainable parameters and constants.

An input is identified by its name, shape and dtype: ``input("x")`` twice is one node, and a
compiled function is fed by input name. Every ``param(...)`` call creates a new parameter
with its own value, whatever its name.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from symgrad.expr.dtypes import FLOAT32, as_dtype
from symgrad.expr.node import INTERNAL, LEAF, Expr, OpDef
from symgrad.expr.shapes import Shape, as_shape, fmt


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: Shape
    dtype: np.dtype


class ConstData:
    """A constant's array, hashable by its bytes so equal constants intern to one node."""

    __slots__ = ("array", "_key")

    def __init__(self, array: np.ndarray):
        self.array = np.array(array)  # a private, read-only copy
        self.array.setflags(write=False)
        self._key = (self.array.dtype.str, self.array.shape, self.array.tobytes())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ConstData) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def scalar(self) -> float | int | bool | None:
        """The value if every element is the same number, else ``None``."""
        flat = self.array.reshape(-1)
        if flat.size and (flat == flat[0]).all() and not np.isnan(flat[0]):
            return flat[0].item()
        return None


class ParamSlot:
    """The storage behind one parameter: its name and its current value.

    Hashed by identity: two parameters are never the same node.
    """

    __slots__ = ("name", "_value", "shape", "dtype", "serial", "mirror", "__weakref__")
    _serials = itertools.count()

    def __init__(self, name: str, value: np.ndarray):
        self.name = name
        self.serial = next(ParamSlot._serials)  # creation order: a stable sort key
        self._value = value
        self.shape: Shape = value.shape
        self.dtype = value.dtype
        # A copy on a GPU (``runtime.cuda_memory.DeviceMirror``), or None. The host array
        # is the truth unless the mirror says the device holds a newer value.
        self.mirror = None

    @property
    def value(self) -> np.ndarray:
        """The current value (fetched from the GPU first if a step there changed it). The
        array may be written in place, so a GPU copy is treated as stale after a read, and a
        step may replace it (``swap``): hold the parameter, not this array."""
        if self.mirror is not None:
            self.mirror.to_host(self._value)
        return self._value

    def swap(self, new: np.ndarray) -> np.ndarray:
        """Make ``new`` the value, without a copy, and return the array it replaces: a
        compiled step's commit of a large new value (``runtime.llvm_function``), whose
        buffer for the next step's new value is then the old array. ``new`` is C-contiguous,
        of this shape and dtype; compiled functions that hold the old array's address
        compare it with the value at their next call."""
        if new.shape != self.shape or new.dtype != self.dtype or \
                not new.flags.c_contiguous or self.mirror is not None:
            raise RuntimeError(f"parameter {self.name!r}: cannot take a "
                                 f"{new.dtype} {new.shape} array in place of its value")
        old, self._value = self._value, new
        return old

    def snapshot(self) -> np.ndarray:
        """A read-only copy of the current value, which later steps do not change."""
        if self.mirror is not None:
            self.mirror.sync_host(self._value)
        out = self._value.copy()
        out.setflags(write=False)
        return out

    def assign(self, new: Any) -> None:
        arr = np.asarray(new)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"parameter {self.name!r}: expected a numeric array of shape "
                            f"{fmt(self.shape)}, got {type(new).__name__} of dtype {arr.dtype}")
        if arr.dtype.kind == "f" and self.dtype.kind != "f":
            raise TypeError(f"parameter {self.name!r}: expected {self.dtype} values, got "
                            f"floating dtype {arr.dtype}")
        if arr.shape != self.shape:
            raise ValueError(f"parameter {self.name!r}: expected shape {fmt(self.shape)}, "
                             f"got {fmt(arr.shape)}")
        # Write in place: the array compiled functions point at (a step may swap it later).
        if self.mirror is not None:
            self.mirror.forget_device()
        self._value[...] = arr.astype(self.dtype, copy=False)

    def __repr__(self) -> str:
        return f"ParamSlot({self.name!r}, {fmt(self.shape)})"


INPUT = OpDef("input", LEAF, lambda srcs, a: (a.shape, a.dtype), None, fn="input")
PARAM = OpDef("param", LEAF, lambda srcs, a: (a.shape, a.dtype), None, fn="param")
CONST = OpDef("const", LEAF, lambda srcs, a: (a.array.shape, a.array.dtype),
              lambda a: a.array, fn="const")

# The number of elements of a (possibly symbolic) shape, as a scalar: ``N`` in a mean's
# derivative. Its argument is ``(dims, dtype)``.
SIZE = OpDef("size", LEAF, lambda srcs, a: ((), a[1]), None, fn="size",
             props=frozenset({INTERNAL}))  # made by the lowering and sg.mean


def size(dims: object, dtype: object = "float32") -> Expr:
    """The number of elements of ``dims`` as a scalar node (``N`` is bound at run time).

    >>> sg.size(("N",))   # prints as N
    """
    shape = as_shape(dims, "size")
    dt = as_dtype(dtype, "size")
    if not any(isinstance(d, str) for d in shape):
        from math import prod

        return const(np.asarray(prod(shape)), dt)
    return Expr(SIZE, (), (shape, dt))


def input(name: str, shape: object = ("N",), dtype: object = "float32") -> Expr:  # noqa: A001
    """A data input, fed by name when the graph runs.

    >>> x = sg.input("x")                          # float32 vector of symbolic length N
    >>> X = sg.input("X", shape=("N", 784))
    >>> labels = sg.input("labels", dtype="int32")
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"input name must be an identifier, got {name!r}")
    return Expr(INPUT, (), InputSpec(name, as_shape(shape, f"input {name!r}"),
                                     as_dtype(dtype, f"input {name!r}")))


def inputs(names: str, shape: object = ("N",), dtype: object = "float32") -> tuple[Expr, ...]:
    """Several inputs of one shape and dtype from a space-separated string.

    >>> x1, x2, y = sg.inputs("x1 x2 y")
    """
    return tuple(input(n, shape, dtype) for n in names.replace(",", " ").split())


Init = Callable[[Shape, np.dtype], np.ndarray]


def param(name: str, shape: object = None, init: float | np.ndarray | Init = 0.0,
          dtype: object = None) -> Expr:
    """A new trainable parameter; ``.value`` reads (a snapshot) and assigns its value.

    ``init`` is a number, an array (the shape is taken from it when not given) or an
    initializer from :mod:`symgrad.init`. Without ``dtype``, a float32 or float64 NumPy
    array keeps its dtype (as ``torch.tensor`` and ``jnp.asarray`` do); a number, a list or
    an initializer gives float32.

    >>> w = sg.param("w", init=0.5)
    >>> W = sg.param("W", shape=(784, 10), init=sg.init.normal(0.0, 0.01, seed=0))
    >>> W.value.shape
    (784, 10)
    """
    if dtype is None:
        own = getattr(init, "dtype", None) if isinstance(init, (np.ndarray, np.generic)) \
            else None
        dtype = own if own in (np.float32, np.float64) else "float32"
    dt = as_dtype(dtype, f"param {name!r}")
    if callable(init):
        shp = as_shape(() if shape is None else shape, f"param {name!r}")
        if any(isinstance(d, str) for d in shp):
            raise ValueError(f"param {name!r}: shape {fmt(shp)} must be concrete ints")
        value = np.asarray(init(shp, dt))
    else:
        arr = np.asarray(init)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"param {name!r}: init must be a number, an array or an "
                            f"initializer, got {init!r}")
        shp = arr.shape if shape is None else as_shape(shape, f"param {name!r}")
        if any(isinstance(d, str) for d in shp):
            raise ValueError(f"param {name!r}: shape {fmt(shp)} must be concrete ints")
        try:
            value = np.broadcast_to(arr, shp)
        except ValueError:
            raise ValueError(f"param {name!r}: init of shape {fmt(arr.shape)} does not fit "
                             f"shape {fmt(shp)}") from None
    if value.shape != shp:
        raise ValueError(f"param {name!r}: initializer gave shape {fmt(value.shape)}, "
                         f"expected {fmt(shp)}")
    # C order: compiled code and device copies read the bytes row-major
    return Expr(PARAM, (), ParamSlot(name, np.array(value, dtype=dt, order="C")))


def params(names: str, shape: object = None, init: float | np.ndarray | Init = 0.0,
           dtype: object = None) -> tuple[Expr, ...]:
    """Several new parameters from a space-separated string, each with its own value.

    ``init`` is shared (a number, an array or an initializer: every parameter starts from
    it), or a list or tuple with one init per name.

    >>> w1, w2, b = sg.params("w1 w2 b", init=0.0)
    >>> w1, w2, b = sg.params("w1 w2 b", init=[5, 8, -2])   # w1 = 5, w2 = 8, b = -2
    """
    split = names.replace(",", " ").split()
    if isinstance(init, (list, tuple)):
        if len(init) != len(split):
            raise ValueError(f"params {names!r}: a list or tuple init gives one init per "
                             f"name: {len(split)} names, got {len(init)} inits (pass a NumPy "
                             f"array to start every parameter from the same array)")
        if shape is not None and as_shape(shape, f"params {names!r}") != () and all(
                np.ndim(i) == 0 and not callable(i) for i in init):
            # params("a b", shape=(2,), init=[0.1, 0.2]): a per-name scalar or one 2-vector?
            raise ValueError(f"params {names!r}: init={list(init)!r} with shape "
                             f"{fmt(as_shape(shape))} is ambiguous; give one init per name "
                             f"as a list of arrays ([[0.1, 0.2], [0.1, 0.2]]) or pass a NumPy "
                             f"array to start every parameter from it")
        return tuple(param(n, shape, i, dtype) for n, i in zip(split, init))
    return tuple(param(n, shape, init, dtype) for n in split)


def const(value: object, dtype: object = None) -> Expr:
    """A constant node. Python floats become float32 and ints int32; a NumPy array keeps
    its dtype (float32, float64, int32).

    >>> sg.const([1.0, 2.0, 3.0]).shape
    (3,)
    """
    if isinstance(value, Expr):
        return value if dtype is None else value.astype(dtype)
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"const: expected a number or numeric array, got {value!r}")
    if dtype is not None:
        dt = as_dtype(dtype, "const")
    elif isinstance(value, (np.ndarray, np.generic)) and arr.dtype in (
            np.float64, np.float32, np.int32):
        dt = arr.dtype  # NumPy arrays and scalars keep their own dtype (they are strong)
    else:  # Python numbers and lists: symgrad's defaults
        dt = {"b": np.dtype(bool), "f": FLOAT32}.get(arr.dtype.kind, np.dtype("int32"))
    out = arr.astype(dt)
    if dt.kind in "iu" and arr.dtype.kind in "iu" and not np.array_equal(out, arr):
        raise OverflowError(f"const: integer value out of bounds for {dt}")  # as NumPy 2 does
    return Expr(CONST, (), ConstData(out))
