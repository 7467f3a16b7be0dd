"""A canonical order for the operands of ``+`` and ``*``, so equal sums hash equal.

Terms are ordered by the first (alphabetical) leaf name they mention, as a person writes
``b + w1*x1 + w2*x2 - y``, then deeper terms first (``x**2 + x``; a chain rule's factors from
the output inwards, so each new factor of a reverse sweep is appended, not inserted), then by
a structural digest that is stable within a process.
"""

from __future__ import annotations

import hashlib
import weakref
from typing import Container

from symgrad.expr.leaves import CONST, INPUT, PARAM, SIZE
from symgrad.expr.node import Expr

_digest: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_lead: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_height: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _leaf_token(n: Expr) -> str:
    if n.op is INPUT:
        return f"input:{n.name}:{n.dtype}:{n.shape}"
    if n.op is PARAM:
        return f"param:{n.name}:{n.arg.serial}"
    if n.op is CONST:
        return f"const:{n.arg._key!r}"
    return f"{n.op.name}:{n.arg!r}"


def unseen_nodes(root: Expr, known: Container[Expr]) -> list[Expr]:
    """The nodes below ``root`` (itself included) not in ``known``, each after its sources;
    the walk does not enter a known node, so its cost is the number of unknown nodes (a
    pass that meets each new node once stays linear; a full sort per node would not)."""
    order: list[Expr] = []
    seen: set[Expr] = set()
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        if done:
            order.append(node)
        elif node not in seen and node not in known:
            seen.add(node)
            stack.append((node, True))
            stack.extend((s, False) for s in reversed(node.srcs)
                         if s not in seen and s not in known)
    return order


def _fill(root: Expr) -> None:
    for n in unseen_nodes(root, _digest):
        h = hashlib.blake2b(digest_size=12)
        h.update(_leaf_token(n).encode() if not n.srcs else
                 f"{n.op.name}:{n.arg!r}:{n.dtype}".encode())
        for s in n.srcs:
            h.update(_digest[s])
        _digest[n] = h.digest()
        _height[n] = 1 + max((_height[s] for s in n.srcs), default=0)
        if n.op is INPUT or n.op is PARAM:
            _lead[n] = n.name
        elif n.op is SIZE:
            _lead[n] = str(n.arg[0][0])
        else:
            _lead[n] = min((_lead[s] for s in n.srcs if _lead[s]), default="")


def sort_key(n: Expr) -> tuple:
    """(leading name, constants first, deeper first, digest)."""
    if n not in _digest:
        _fill(n)
    return (_lead[n], n.op is not CONST, -_height[n], _digest[n])
