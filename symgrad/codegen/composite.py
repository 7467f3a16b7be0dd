"""A backend's spellings by operator name, falling back to decompositions.

Each backend keeps a table of the operators it spells natively (``LLVM_OPS``,
``CUDA_OPS``). :class:`Spellings` looks an operator up there and, for an operator the
table lacks but whose stanza has a ``decompose``, asks the backend's ``compose(op)`` for a
spelling that compiles the decomposition (made once per operator). So a new composite
operator needs no backend change, and a backend may still spell it natively.
"""

from __future__ import annotations

from typing import Callable

from symgrad.expr.node import OpDef
from symgrad.expr.table import OPS_BY_NAME


class Spellings(dict):
    """``name -> spelling``: the native table, then decompositions (``compose(op)``)."""

    def __init__(self, backend: str, native: dict, compose: Callable[[OpDef], Callable]):
        super().__init__({op.name: spell for op, spell in native.items()})
        self.backend, self._compose = backend, compose

    def get(self, name: str, default: Callable | None = None) -> Callable | None:
        spell = super().get(name)
        if spell is None:
            op = OPS_BY_NAME.get(name)
            if op is None or op.decompose is None:
                return default
            spell = self[name] = self._compose(op)
        return spell

    def of(self, name: str) -> Callable:
        """The spelling of ``name``; NotImplementedError naming the backend if none."""
        spell = self.get(name)
        if spell is None:
            raise NotImplementedError(f"the {self.backend} backend has no spelling for "
                                      f"{name!r} and the operator has no decomposition")
        return spell
