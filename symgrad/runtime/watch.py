"""``sg.watch``: see intermediate values of a compiled step (TensorFlow's ``tf.Print``).

``sg.watch(e, "name")`` marks a node; a step compiled from a loss that uses it computes, in
the same compiled call, the node's mean, min, max and first values over the batch, and
``step.watched["name"]`` holds them after each call. Nothing changes in the formula: the
mark is kept beside the graph (nodes are immutable and shared), so the node prints,
differentiates and simplifies as before.
"""

from __future__ import annotations

import weakref

from symgrad.expr import tensors
from symgrad.expr.node import Expr, toposort

__all__ = ["watch", "watched_in"]

FIRST = 5  # how many leading values a watch reports
_marks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def watch(e: Expr, name: str) -> Expr:
    """Mark ``e`` so that compiled steps report its batch statistics under ``name``;
    returns ``e`` itself.

    >>> hidden = sg.watch(sg.relu(X @ W1 + b1), "hidden")
    >>> step = sg.compile_step(loss, sg.optim.SGD(lr=0.1))
    >>> step(X=images, labels=digits)
    >>> step.watched["hidden"]      # {'mean': ..., 'min': ..., 'max': ..., 'first': array}
    """
    if not isinstance(e, Expr):
        raise TypeError(f"watch: expected a symgrad expression, got {type(e).__name__}")
    if not isinstance(name, str) or not name:
        raise ValueError(f"watch: the name must be a non-empty string, got {name!r}")
    _marks[e] = name
    return e


def watched_in(roots: list[Expr]) -> dict[str, tuple[Expr, list[Expr]]]:
    """The watched nodes ``roots`` depend on: name -> (node, [mean, min, max, first])."""
    out: dict[str, tuple[Expr, list[Expr]]] = {}
    for n in toposort(list(roots)):
        name = _marks.get(n)
        if name is None:
            continue
        values = n if n.dtype.kind == "f" else n.astype("float64")
        flat = values if values.ndim <= 1 else None
        stats = [tensors.mean(values), tensors.min(values), tensors.max(values)]
        if flat is not None and values.ndim == 1 and isinstance(values.shape[0], int):
            stats.append(values[:FIRST])
        elif values.ndim == 0:
            stats.append(values)
        else:  # the first sample (or row) along the leading axis
            stats.append(values[(0,) * (values.ndim - 1)][:FIRST] if isinstance(
                values.shape[-1], int) else values[(0,) * values.ndim])
        out[name] = (n, stats)
    return out
