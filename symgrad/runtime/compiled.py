"""What the compiled backends share: the outputs and their inputs, the lowered program, the
calling convention (feeds checked exactly as the NumPy reference checks them, before anything
runs), leaf outputs, committing new parameter values, and the checks the reference makes
while it runs that compiled code cannot (then the reference runs instead).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from symgrad.codegen.lower import Program, lower
from symgrad.expr import ops_tensor as T
from symgrad.expr.evaluate import (
    Outputs,
    as_outputs,
    check_dims_bound,
    check_feeds,
    graph_inputs,
    symbolic_dims,
)
from symgrad.expr.leaves import CONST, INPUT, PARAM, SIZE
from symgrad.expr.node import toposort
from symgrad.expr.ops_index import INDEX, SCATTER
from symgrad.expr.shapes import size_of


class CompiledFunction:
    """Outputs lowered for a ``target`` ("cpu", "gpu"); a backend adds ``run``."""

    def __init__(self, outputs: Outputs, target: str = "cpu"):
        self.outputs, self._single = as_outputs(outputs)
        self.inputs = graph_inputs(self.outputs)
        self._dims = symbolic_dims(self.outputs)
        self.program: Program = lower(self.outputs, target)
        self._guards = _size_guards(self.outputs)

    @property
    def plan(self) -> str:
        return self.program.plan_text

    @property
    def loop_ir(self) -> str:
        return str(self.program)

    def __call__(self, **feeds: Any) -> np.ndarray | tuple[np.ndarray, ...]:
        results = self.call(feeds)
        return results[0] if self._single else tuple(results)

    def call(self, feeds: dict[str, Any], commit: dict[int, Any] | None = None) -> list:
        """Every output as a list; ``commit`` as in ``Function.run``."""
        arrays, sizes = check_feeds(self.inputs, feeds)
        check_dims_bound(self._dims, sizes)
        return commit_on_host(self.run(arrays, sizes), commit)

    def run(self, arrays: dict[str, np.ndarray], sizes: dict[str, int]) -> list:
        raise NotImplementedError

    def reference_needed(self, arrays: dict[str, np.ndarray], sizes: dict[str, int]) -> bool:
        """An index past a symbolic axis, a max over zero samples, a label out of range: the
        reference raises its own error (compiled code would read out of bounds, return -inf
        or a row of zeros)."""
        return any(_fails(g, sizes, arrays) for g in self._guards)


def leaf_result(o: Any, arrays: dict[str, np.ndarray], sizes: dict[str, int]) -> np.ndarray:
    """The value of an output that is a leaf (an input, a parameter, a constant, a size)."""
    if o.op is INPUT:
        return arrays[o.name].copy()
    if o.op is PARAM:
        return o.arg.value.copy()
    if o.op is CONST:
        return np.array(o.arg.array)
    if o.op is SIZE:
        return np.asarray(size_of(o.arg[0], sizes), o.dtype)
    raise TypeError(f"not a leaf: {o.op.name}")


def commit_on_host(results: list, commit: dict[int, Any] | None) -> list:
    """Write ``results[i]`` into parameter slot ``commit[i]`` (every result is computed
    already: the call succeeded) and put ``None`` in its place."""
    for i, slot in (commit or {}).items():
        if results[i] is not None:
            slot.value[...] = results[i]
            results[i] = None
    return results


def _size_guards(outputs: list) -> list[tuple]:
    """What the NumPy reference checks while it runs and compiled code does not: an int index
    on a symbolic axis (``x[-1]``), a max/min/argmax over axes with a symbolic length, and
    the range of one_hot labels fed as an input."""
    guards: list[tuple] = []
    for n in toposort(list(outputs)):
        if n.op is INDEX or n.op is SCATTER:
            key, shape = (n.arg, n.srcs[0].shape) if n.op is INDEX else n.arg
            axis = 0
            for e in key:
                if e[0] != "new":
                    if e[0] == "int" and isinstance(shape[axis], str):
                        guards.append(("index", e[1], shape[axis]))
                    axis += 1
        elif n.op in (T.MAX, T.MIN, T.ARGMAX):
            x = n.srcs[0]
            axes = range(x.ndim) if n.arg[0] is None else n.arg[0]
            dims = tuple(x.shape[a] for a in axes)
            if any(isinstance(d, str) for d in dims):
                guards.append(("empty", dims))
        elif n.op is T.ONE_HOT and n.srcs[0].op is INPUT:
            guards.append(("labels", n.srcs[0].name, n.arg[0]))
    return guards


def _fails(guard: tuple, sizes: dict, arrays: dict) -> bool:
    if guard[0] == "labels":
        labels = arrays[guard[1]]
        return bool(labels.size) and bool(labels.min() < 0 or labels.max() >= guard[2])
    if guard[0] == "index":
        _, k, dim = guard
        return not -sizes[dim] <= k < sizes[dim]
    return size_of(guard[1], sizes) == 0
