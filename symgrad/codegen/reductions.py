"""The reductions over the batch, in one place: how two partial results combine and what
a partial starts from, by kind and dtype."""

from __future__ import annotations

from typing import Any

import numpy as np

KINDS = ("sum", "prod", "max", "min")
# the operator joining two (prod reduces feature axes only, so no batch partial joins it yet)
COMBINE = {"sum": "add", "prod": "multiply", "max": "maximum", "min": "minimum"}


def identity(kind: str, dtype: np.dtype) -> Any:
    """The value a ``sum``/``prod``/``max``/``min`` of ``dtype`` starts from: 0, 1, the
    dtype's lowest or highest value (False/True for bools), or -inf/inf (an infinity cast
    to int32 would be INT32_MIN, and a min would start from it)."""
    dtype = np.dtype(dtype)
    if kind == "sum":
        return 0
    if kind == "prod":
        return 1
    if dtype.kind == "b":
        return kind == "min"
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return info.min if kind == "max" else info.max
    return -np.inf if kind == "max" else np.inf
