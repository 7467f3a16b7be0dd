"""The dtypes symgrad knows and how they combine.

symgrad follows NumPy 2 promotion (NEP 50): two arrays promote as ``np.result_type``
does (``int32`` with ``float32`` gives ``float64``), and a Python number is *weak*: it
takes the dtype of the array it meets (``float32 * 2.0`` stays ``float32``; ``int32 * 2.5``
gives ``float64``). Comparisons give ``bool``; arithmetic on ``bool`` promotes as NumPy does.
"""

from __future__ import annotations

import numpy as np

FLOAT32 = np.dtype("float32")
FLOAT64 = np.dtype("float64")
INT32 = np.dtype("int32")
BOOL = np.dtype("bool")

DTYPES = (FLOAT32, FLOAT64, INT32, BOOL)
FLOATS = (FLOAT32, FLOAT64)


def as_dtype(dtype: object, what: str = "dtype") -> np.dtype:
    """Normalise ``dtype`` (a string, NumPy type or dtype) to one of :data:`DTYPES`."""
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"{what}: expected one of float32, float64, int32, bool; "
                        f"got {dtype!r}") from exc
    if dt not in DTYPES:
        raise TypeError(f"{what}: expected one of float32, float64, int32, bool; got {dt}")
    return dt


def promote(*dtypes: np.dtype) -> np.dtype:
    """The dtype NumPy gives to an operation over arrays of ``dtypes``."""
    dt = np.result_type(*dtypes)
    if dt not in DTYPES:  # e.g. int32 with int64 never happens here, but be explicit
        raise TypeError(f"dtype promotion of {', '.join(map(str, dtypes))} gives {dt}, "
                        "which symgrad does not support")
    return dt


def promote_with_scalar(dtype: np.dtype, scalar: float | int | bool) -> np.dtype:
    """Promotion of an array of ``dtype`` with a weak Python number (NEP 50)."""
    dt = np.result_type(np.zeros((), dtype), scalar)
    return INT32 if dt == np.int64 else promote(dt)  # bool + 1 is int64 in NumPy; int32 here


def float_of(dtype: np.dtype) -> np.dtype:
    """The floating dtype an elementwise function such as ``exp`` returns for ``dtype``."""
    return dtype if dtype in FLOATS else FLOAT64 if dtype == INT32 else FLOAT32
