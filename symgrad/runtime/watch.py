"""``sg.watch``: see intermediate values of a compiled step or function (``tf.Print``).

``h = sg.watch(e, "name")`` returns a node equal to ``e`` that carries the watch: a step or
function compiled from outputs built with ``h`` computes, in the same compiled call, the
node's mean, min, max and first values, keeps them in ``.watched["name"]`` after each call,
and with ``print_every=k`` prints them on the first call and every k-th after it. The watch
belongs to the graphs built from the node it returns, so a model built separately from
``e`` itself (a shared layer, the same formula: nodes are hash-consed) does not report it.

The watch node prints as ``e`` does, differentiates as ``e`` (the simplifier drops it from
derivative formulas), evaluates as ``e`` in ``sg.evaluate``, and is taken out before code is
generated (:func:`strip_watches`), so no backend needs to spell it. A watch whose returned
node is thrown away without ever being compiled warns when it goes (``sg.watch(h, "h")`` as
a statement watches nothing: write ``h = sg.watch(h, "h")``); two watches with one name in
one graph are refused.
"""

from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass

import numpy as np

from symgrad.expr import tensors
from symgrad.expr.node import ELEMENTWISE, INTERNAL, Expr, OpDef, toposort

__all__ = ["watch", "watched_in", "strip_watches", "Watch", "WATCH"]

FIRST = 5  # how many leading values a watch reports

WATCH = OpDef(
    "watch", ELEMENTWISE, lambda srcs, arg: (srcs[0].shape, srcs[0].dtype),
    lambda arg, x: x, fn="watch", sympy=lambda x, arg: x, vjp=lambda g, out, x: (g,),
    arity=1, props=frozenset({INTERNAL}), extra={"transparent": True},
    doc="The identity, carrying a watch (``arg`` is ``(name, print_every)``).")

# per watch node: whether a compiled step or function has taken it in (else it warns when
# it goes: its watch was lost)
_compiled: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def watch(e: Expr, name: str, print_every: int | None = None) -> Expr:
    """``e``, watched: steps and functions compiled from outputs built with the returned node
    report its batch statistics under ``name`` (``.watched[name]``: mean, min, max, first
    values) and, with ``print_every=k``, print them on the first call and every k-th after.

    >>> hidden = sg.watch(sg.relu(X @ W1 + b1), "hidden", print_every=100)
    >>> step = sg.compile_step(sg.cross_entropy(hidden @ W2, labels), sg.optim.SGD(lr=0.1))
    >>> step(X=images, labels=digits)   # prints: watch 'hidden' call 1: mean=... min=...
    >>> step.watched["hidden"]          # {'mean': ..., 'min': ..., 'max': ..., 'first': array}
    """
    if not isinstance(e, Expr):
        raise TypeError(f"watch: expected a symgrad expression, got {type(e).__name__}")
    if not isinstance(name, str) or not name:
        raise ValueError(f"watch: the name must be a non-empty string, got {name!r}")
    if print_every is not None and (isinstance(print_every, bool) or not isinstance(
            print_every, (int, np.integer)) or print_every < 1):
        raise ValueError(f"watch {name!r}: print_every must be a positive int (print every "
                         f"k-th call) or None, got {print_every!r}")
    node = Expr(WATCH, (e,), (name, None if print_every is None else int(print_every)))
    if node not in _compiled:  # (hash-consed: the same watch twice is one node)
        state = [False]
        _compiled[node] = state
        weakref.finalize(node, _lost, name, state).atexit = False
    return node


def _lost(name: str, state: list) -> None:
    if not state[0]:
        warnings.warn(f"sg.watch(..., {name!r}): the watched node was discarded without being "
                      f"compiled into a step or function, so nothing reports it. Build the "
                      f"loss from the node sg.watch returns: h = sg.watch(h, {name!r})",
                      UserWarning, stacklevel=3)  # (the line that let it go)


@dataclass
class Watch:
    """One watch of a compiled graph: the watched node, its statistics (mean, min, max,
    first values) as formulas, and how often to print them (``None``: never)."""

    name: str
    node: Expr
    stats: list[Expr]
    print_every: int | None

    def record(self, values: list, calls: int) -> dict[str, object]:
        """The statistics of one call, as ``.watched`` holds them; printed when due."""
        mean, low, high, first = values
        out = {"mean": float(mean), "min": float(low), "max": float(high),
               "first": np.asarray(first)}
        if self.print_every is not None and (calls - 1) % self.print_every == 0:
            print(format_watch(self.name, out, calls), flush=True)
        return out


def format_watch(name: str, stats: dict, calls: int) -> str:
    """One printed line: ``watch 'hidden' call 1: mean=0.31 min=0 max=2.4 first=[...]``."""
    first = np.array2string(np.asarray(stats["first"]), precision=4, separator=", ")
    return (f"watch {name!r} call {calls}: mean={stats['mean']:.6g} min={stats['min']:.6g} "
            f"max={stats['max']:.6g} first={first}")


def _stats(n: Expr) -> list[Expr]:
    values = n if n.dtype.kind == "f" else n.astype("float64")
    stats = [tensors.mean(values), tensors.min(values), tensors.max(values)]
    if values.ndim == 1 and isinstance(values.shape[0], int):
        stats.append(values[:FIRST])
    elif values.ndim == 0:
        stats.append(values)
    else:  # the first sample (or row) along the leading axis
        stats.append(values[(0,) * (values.ndim - 1)][:FIRST] if isinstance(
            values.shape[-1], int) else values[(0,) * values.ndim])
    return stats


def watched_in(roots: list[Expr]) -> dict[str, Watch]:
    """The watches ``roots`` are built with, by name (marked as compiled: the caller
    compiles them). Two watches with one name are refused."""
    out: dict[str, Watch] = {}
    for n in toposort(list(roots)):
        if n.op is not WATCH:
            continue
        name, every = n.arg
        inner = n.srcs[0]
        seen = out.get(name)
        if seen is not None:
            raise ValueError(
                f"two watches are named {name!r} in one graph: on {_short(seen.node)} "
                f"(print_every={seen.print_every}) and on {_short(inner)} "
                f"(print_every={every}); give each watch its own name")
        out[name] = Watch(name, inner, _stats(inner), every)
        state = _compiled.get(n)
        if state is not None:
            state[0] = True
    return out


def _short(e: Expr, width: int = 60) -> str:
    text = str(e).split("\n")[0]
    return text if len(text) <= width else text[:width - 3] + "..."


def strip_watches(outputs: list[Expr]) -> list[Expr]:
    """``outputs`` with every watch node replaced by the node it watches (what code is
    generated from); the same list when there is none."""
    nodes = toposort(list(outputs))
    if not any(n.op is WATCH for n in nodes):
        return list(outputs)
    memo: dict[Expr, Expr] = {}
    for n in nodes:
        srcs = tuple(memo[s] for s in n.srcs)
        if n.op is WATCH:
            memo[n] = srcs[0]
        else:
            memo[n] = n if srcs == n.srcs else Expr(n.op, srcs, n.arg)
    return [memo[o] for o in outputs]
