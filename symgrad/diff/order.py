"""A canonical order for the operands of ``+`` and ``*``, so equal sums hash equal.

Terms are ordered by the first (alphabetical) leaf name they mention, as a person writes
``b + w1*x1 + w2*x2 - y``, then by a structural digest that is stable within a process.
"""

from __future__ import annotations

import hashlib
import weakref

from symgrad.expr.leaves import CONST, INPUT, PARAM, SIZE
from symgrad.expr.node import Expr, toposort

_digest: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_lead: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _leaf_token(n: Expr) -> str:
    if n.op is INPUT:
        return f"input:{n.name}:{n.dtype}:{n.shape}"
    if n.op is PARAM:
        return f"param:{n.name}:{n.arg.serial}"
    if n.op is CONST:
        return f"const:{n.arg._key!r}"
    return f"{n.op.name}:{n.arg!r}"


def _fill(root: Expr) -> None:
    for n in toposort([root]):
        if n in _digest:
            continue
        h = hashlib.blake2b(digest_size=12)
        h.update(_leaf_token(n).encode() if not n.srcs else
                 f"{n.op.name}:{n.arg!r}:{n.dtype}".encode())
        for s in n.srcs:
            h.update(_digest[s])
        _digest[n] = h.digest()
        if n.op is INPUT or n.op is PARAM:
            _lead[n] = n.name
        elif n.op is SIZE:
            _lead[n] = str(n.arg[0][0])
        else:
            _lead[n] = min((_lead[s] for s in n.srcs if _lead[s]), default="")


def sort_key(n: Expr) -> tuple:
    """(leading name, constants first, digest)."""
    if n not in _digest:
        _fill(n)
    return (_lead[n], n.op is not CONST, _digest[n])
