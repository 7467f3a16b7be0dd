"""Parameter initializers: each returns ``f(shape, dtype) -> array``.

>>> W = sg.param("W", shape=(784, 10), init=sg.init.glorot(seed=0))
"""

from __future__ import annotations

from math import prod, sqrt

import numpy as np

from symgrad.expr.leaves import Init


def constant(value: float) -> Init:
    """Every element ``value``."""
    return lambda shape, dtype: np.full(shape, value, dtype=dtype)


def normal(mean: float = 0.0, std: float = 1.0, seed: int | None = None) -> Init:
    """Independent draws from N(mean, std**2); ``seed`` makes them reproducible."""
    return lambda shape, dtype: np.random.default_rng(seed).normal(
        mean, std, size=shape).astype(dtype)


def uniform(low: float = 0.0, high: float = 1.0, seed: int | None = None) -> Init:
    """Independent draws from U[low, high)."""
    return lambda shape, dtype: np.random.default_rng(seed).uniform(
        low, high, size=shape).astype(dtype)


def _fans(shape: tuple) -> tuple[int, int]:
    """PyTorch's fan-in/fan-out: a (fan_in, fan_out) matrix, or (out, in, *kernel)."""
    if len(shape) < 2:
        n = prod(shape) if shape else 1
        return n, n
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def glorot(gain: float = 1.0, seed: int | None = None) -> Init:
    """Glorot/Xavier uniform: U(-a, a) with ``a = gain*sqrt(6/(fan_in + fan_out))``.

    For a weight used as ``x @ W`` of shape (in, out), fan_in is ``in``.
    """
    def init(shape, dtype):
        fan_in, fan_out = _fans(shape)
        a = gain * sqrt(6.0 / max(fan_in + fan_out, 1))
        return np.random.default_rng(seed).uniform(-a, a, size=shape).astype(dtype)
    return init
