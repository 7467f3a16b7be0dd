"""The reductions over the batch, in one place: how two partial results combine and what
a partial starts from, by kind and dtype."""

from __future__ import annotations

from typing import Any

import numpy as np

KINDS = ("sum", "max", "min")
COMBINE = {"sum": "add", "max": "maximum", "min": "minimum"}  # the operator joining two


def identity(kind: str, dtype: np.dtype) -> Any:
    """The value a ``sum``/``max``/``min`` of ``dtype`` starts from: 0, the dtype's lowest or
    highest value (False/True for bools), or -inf/inf (an infinity cast to int32 would be
    INT32_MIN, and a min would start from it)."""
    dtype = np.dtype(dtype)
    if kind == "sum":
        return 0
    if dtype.kind == "b":
        return kind == "min"
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return info.min if kind == "max" else info.max
    return -np.inf if kind == "max" else np.inf
