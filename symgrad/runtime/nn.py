"""Layers as formulas: helpers that create parameters (PyTorch's default initialization)
and return expressions, so a network reads as a line per layer and still prints and
differentiates like any formula.

>>> h = sg.nn.relu(sg.nn.linear(X, 100, name="hidden"))
>>> logits = sg.nn.linear(h, 10, name="out")

Without ``name=``, a layer gets a name not given out before in this process, as Keras
does: ``linear``, ``linear_1``, ``linear_2``, ... (``mlp``, ``mlp_1``, ... for
:func:`mlp`), so two layers never make parameters of one name by default (checkpoints
and ``step.optimizer_state`` key them by name). An explicit ``name=`` is kept as given.
"""

from __future__ import annotations

import threading

import numpy as np

from symgrad.expr.functions import relu, sigmoid, tanh
from symgrad.expr.leaves import param
from symgrad.expr.node import Expr
from symgrad.expr.shapes import fmt

__all__ = ["linear", "relu", "sigmoid", "tanh", "mlp"]

_layer_seeds = np.random.SeedSequence(0)

# every layer name given out (default or explicit) and the next suffix to try per default
_names_lock = threading.Lock()
_names_used: set[str] = set()
_next_suffix: dict[str, int] = {}


def _layer_name(name: str | None, default: str, parts: tuple[str, ...] = ("",)) -> str:
    """``name`` as given (recorded), or the first of ``default``, ``default_1``, ... whose
    layer names (the name + each of ``parts``) were never given out."""
    with _names_lock:
        if name is not None:
            if not isinstance(name, str) or not name:
                raise TypeError(f"layer name must be a non-empty str, got {name!r}")
            _names_used.update(name + p for p in parts)
            return name
        k = _next_suffix.get(default, 0)
        while True:
            candidate = default if k == 0 else f"{default}_{k}"
            k += 1
            if not any(candidate + p in _names_used for p in parts):
                break
        _next_suffix[default] = k
        _names_used.update(candidate + p for p in parts)
        return candidate


def linear(x: Expr, out_features: int, name: str | None = None, bias: bool = True,
           seed: int | None = None, dtype: object = None) -> Expr:
    """``x @ W + b`` with ``W`` of shape (in, out) and ``b`` of shape (out,), both drawn
    from U(-1/sqrt(in), 1/sqrt(in)) as ``torch.nn.Linear`` does. Without ``name``, the
    layer is named ``linear``, ``linear_1``, ... (a name not given out before).

    >>> logits = sg.nn.linear(X, 10, name="out")   # params out_W, out_b
    """
    shown = name if name is not None else "linear"
    if x.ndim < 1 or not isinstance(x.shape[-1], int):
        raise ValueError(f"linear {shown!r}: the input's last axis must have a known size, "
                         f"got shape {fmt(x.shape)}")
    name = _layer_name(name, "linear")
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


def mlp(x: Expr, sizes: list[int], activation=relu, name: str | None = None,
        seed: int | None = None) -> Expr:
    """Linear layers of the given output sizes with ``activation`` between them, named
    ``<name>0``, ``<name>1``, ...; without ``name``, ``mlp``, ``mlp_1``, ... (the first
    whose layer names were not given out before).

    >>> logits = sg.nn.mlp(X, [100, 10])        # 784-100-10 with ReLU: mlp0_W, ..., mlp1_b
    """
    name = _layer_name(name, "mlp", tuple(str(i) for i in range(len(sizes))))
    h = x
    for i, size in enumerate(sizes):
        h = linear(h, size, name=f"{name}{i}", seed=None if seed is None else seed + i)
        if i < len(sizes) - 1:
            h = activation(h)
    return h
