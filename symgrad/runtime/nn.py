"""Layers as formulas: helpers that create parameters (PyTorch's default initialization)
and return expressions, so a network reads as a line per layer and still prints and
differentiates like any formula.

>>> h = sg.nn.relu(sg.nn.linear(X, 100, name="hidden"))
>>> logits = sg.nn.linear(h, 10, name="out")
"""

from __future__ import annotations

import numpy as np

from symgrad.expr.functions import relu, sigmoid, tanh
from symgrad.expr.leaves import param
from symgrad.expr.node import Expr
from symgrad.expr.shapes import fmt

__all__ = ["linear", "relu", "sigmoid", "tanh", "mlp"]

_layer_seeds = np.random.SeedSequence(0)


def linear(x: Expr, out_features: int, name: str = "linear", bias: bool = True,
           seed: int | None = None, dtype: object = None) -> Expr:
    """``x @ W + b`` with ``W`` of shape (in, out) and ``b`` of shape (out,), both drawn
    from U(-1/sqrt(in), 1/sqrt(in)) as ``torch.nn.Linear`` does.

    >>> logits = sg.nn.linear(X, 10, name="out")   # params out_W, out_b
    """
    if x.ndim < 1 or not isinstance(x.shape[-1], int):
        raise ValueError(f"linear {name!r}: the input's last axis must have a known size, "
                         f"got shape {fmt(x.shape)}")
    fan_in = x.shape[-1]
    bound = 1.0 / np.sqrt(fan_in)
    rng = np.random.default_rng(seed if seed is not None else _layer_seeds.spawn(1)[0])
    dt = dtype or x.dtype
    W = param(f"{name}_W", init=rng.uniform(-bound, bound, (fan_in, out_features)), dtype=dt)
    out = x @ W
    if bias:
        b = param(f"{name}_b", init=rng.uniform(-bound, bound, (out_features,)), dtype=dt)
        out = out + b
    return out


def mlp(x: Expr, sizes: list[int], activation=relu, name: str = "mlp",
        seed: int | None = None) -> Expr:
    """Linear layers of the given output sizes with ``activation`` between them.

    >>> logits = sg.nn.mlp(X, [100, 10])        # 784-100-10 with ReLU
    """
    h = x
    for i, size in enumerate(sizes):
        h = linear(h, size, name=f"{name}{i}", seed=None if seed is None else seed + i)
        if i < len(sizes) - 1:
            h = activation(h)
    return h
