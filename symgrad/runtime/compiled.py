"""What the compiled backends share: the outputs and their inputs, the lowered program, the
calling convention (feeds checked exactly as the NumPy reference checks them, before anything
runs), leaf outputs, committing new parameter values, and the checks the reference makes
while it runs.

A compiled function never returns a number the reference would not: what the reference
checks on sizes (an index past a symbolic axis, a max over no samples) is checked before
the kernels run, and what it checks on computed values (one_hot labels in range, no
negative integer exponent) is counted by hidden outputs computed in the same kernels;
when either check fails the reference runs instead (and raises its own error). Nothing is
committed before every check and the caller's ``gate`` have passed.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from symgrad.codegen.lower import Program, lower
from symgrad.codegen.passes import Compilation
from symgrad.expr import functions as F
from symgrad.expr import ops_tensor as T
from symgrad.expr import tensors
from symgrad.expr.evaluate import (
    FeedChecker,
    Outputs,
    as_outputs,
    graph_inputs,
    run_graph,
    symbolic_dims,
)
from symgrad.expr.leaves import CONST, INPUT, PARAM, SIZE, size
from symgrad.expr.node import Expr, toposort
from symgrad.expr.ops_elementwise import POW
from symgrad.expr.ops_gather import GATHER_OPS
from symgrad.expr.ops_index import INDEX, SCATTER
from symgrad.expr.shapes import size_of
from symgrad.runtime.signals import deferred_signals


class CompiledFunction:
    """Outputs lowered for a ``target`` ("cpu", "gpu"); a backend adds ``run``."""

    def __init__(self, outputs: Outputs, target: str = "cpu",
                 compilation: Compilation | None = None):
        self.outputs, self._single = as_outputs(outputs)
        self.inputs = graph_inputs(self.outputs)
        self._dims = symbolic_dims(self.outputs)
        self._checks = value_checks(self.outputs)  # hidden outputs after the user's
        self.compilation = compilation or Compilation()
        self.program: Program = lower(self.outputs + self._checks, target, self.compilation)
        self._guards = _size_guards(self.outputs)
        self._check_feeds = FeedChecker(self.inputs, self._dims)

    @property
    def plan(self) -> str:
        return self.program.plan_text

    @property
    def loop_ir(self) -> str:
        return str(self.program)

    def __call__(self, **feeds: Any) -> np.ndarray | tuple[np.ndarray, ...]:
        results = self.call(feeds)
        return results[0] if self._single else tuple(results)

    def call(self, feeds: dict[str, Any], commit: dict[int, Any] | None = None,
             gate: Gate | None = None, gate_zero: tuple[int, ...] | None = None) -> list:
        """Every output as a list; ``commit``, ``gate`` and ``gate_zero`` as in
        ``Function.run``."""
        arrays, sizes = self._check_feeds(feeds)  # check_feeds, then check_dims_bound
        return self.execute(arrays, sizes, commit, gate, gate_zero)

    def execute(self, arrays: dict[str, np.ndarray], sizes: dict[str, int],
                commit: dict[int, Any] | None = None, gate: Gate | None = None,
                gate_zero: tuple[int, ...] | None = None, **backend_args: Any) -> list:
        """Run on checked feeds: compiled when every check passes, else the reference."""
        n = len(self.outputs)
        if not self.reference_needed(arrays, sizes):
            def accept(results: list) -> bool:
                if len(results) > n and any(results[i] for i in range(n, len(results))):
                    raise _ReferenceNeededError  # a computed value the reference refuses
                return gate is None or gate(results[:n])

            # the outputs that, all zero, pass ``accept`` (a backend may commit natively
            # without calling it): the hidden checks, and the gate's own zero outputs
            gates = None if gate is not None and gate_zero is None else \
                tuple(range(n, n + len(self._checks))) + tuple(gate_zero or ())
            try:
                return self.run(arrays, sizes, commit, accept, gates, **backend_args)[:n]
            except _ReferenceNeededError:
                pass
        if backend_args.get("on_device"):
            raise ValueError("this graph needs a check the NumPy reference makes while it "
                             "runs (an index past a symbolic axis, a max over no samples, "
                             "one_hot labels or gathered indices out of range); feed host "
                             "arrays for it")
        results = distinct_arrays(run_graph(self.outputs, arrays, sizes))
        return commit_on_host(results, commit if gate is None or gate(results) else None)

    def run(self, arrays: dict[str, np.ndarray], sizes: dict[str, int],
            commit: dict[int, Any] | None, accept: Callable[[list], bool],
            gates: tuple[int, ...] | None = None, **backend_args: Any) -> list:
        """The backend's run: every output of the program (hidden checks included);
        ``accept(results)`` is called once every result is known and before anything is
        committed: it raises to abandon the call, or returns False to commit nothing. When
        every output in ``gates`` (if not None) is zero, ``accept`` would pass: a backend
        may then commit without calling it."""
        raise NotImplementedError

    def reference_needed(self, arrays: dict[str, np.ndarray], sizes: dict[str, int]) -> bool:
        """An index past a symbolic axis, a max over zero samples, a label out of range: the
        reference raises its own error (compiled code would read out of bounds, return -inf
        or a row of zeros)."""
        for g in self._guards:
            if _fails(g, sizes, arrays):
                return True
        return False


Gate = Callable[[list], bool]


class _ReferenceNeededError(Exception):
    """A hidden check counted a value the reference refuses: run the reference instead."""


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
    if not commit:
        return results
    # every target fetched (from a GPU) before writing any
    pending = [(i, slot.value) for i, slot in commit.items() if results[i] is not None]
    if not pending:
        return results
    with deferred_signals():  # all or nothing, even under Ctrl-C
        for i, target in pending:
            np.copyto(target, results[i], casting="unsafe")
            results[i] = None
    return results


def distinct_arrays(results: list) -> list:
    """``function([loss, loss])`` returns two arrays, not one array twice."""
    seen: set[int] = set()
    out = []
    for r in results:
        if isinstance(r, np.ndarray) and id(r) in seen:
            r = r.copy()
        seen.add(id(r))
        out.append(r)
    return out


def _labels_outside(n: Expr) -> Expr | None:
    """one_hot(labels, k) of computed labels: how many lie outside [0, k)."""
    labels = n.srcs[0]
    if labels.op is INPUT:
        return None  # checked on the feed itself (``_size_guards``)
    outside = F.where(labels < 0, 1, F.where(labels >= n.arg[0], 1, 0))
    return tensors.sum(outside)


def _gather_span(n: Expr) -> tuple[Expr, int | str]:
    """A gather's or scatter-add's indices and the length of the axis they index."""
    axis = n.arg[0]
    return n.srcs[1], (n.arg[2] if len(n.arg) > 2 else n.srcs[0].shape)[axis]


def _indices_outside(n: Expr) -> Expr | None:
    """take / take_along_axis (and their scatter-adds) of computed indices: how many lie
    outside [-size, size) (NumPy raises IndexError; the kernels clamp and go on)."""
    ids, dim = _gather_span(n)
    if ids.op is INPUT:
        return None  # checked on the feed itself (``_size_guards``)
    k = dim if isinstance(dim, int) else size((dim,), "int32")
    return tensors.sum(F.where(ids < -k, 1, F.where(ids >= k, 1, 0)))


def _negative_int_exponent(n: Expr) -> Expr | None:
    """An integer power with a computed exponent: how many exponents are negative (NumPy
    raises for those; machine code would return garbage)."""
    base, exponent = n.srcs
    if n.dtype.kind not in "iu" or exponent.op is CONST:
        return None
    return tensors.sum(F.where(exponent < 0, 1, 0))


# What the reference checks on computed values, by operator: each builds a scalar count of
# violations computed with the outputs (nonzero: the reference runs and raises its error).
VALUE_CHECKS: dict[Any, Callable[[Expr], Expr | None]] = {
    T.ONE_HOT: _labels_outside,
    POW: _negative_int_exponent,
    **{op: _indices_outside for op in GATHER_OPS},
}


def value_checks(outputs: list[Expr]) -> list[Expr]:
    """The hidden check outputs of a graph (see ``VALUE_CHECKS``)."""
    checks = []
    for n in toposort(list(outputs)):
        rule = VALUE_CHECKS.get(n.op)
        check = rule(n) if rule is not None else None
        if check is not None and check not in checks:
            checks.append(check)
    return checks


def _size_guards(outputs: list) -> list[tuple]:
    """What the NumPy reference checks while it runs and compiled code does not: an int index
    on a symbolic axis (``x[-1]``), a max/min/argmax over axes with a symbolic length, and
    the range of one_hot labels and of gathered indices fed as an input."""
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
            labels = n.srcs[0]
            # signed labels seen as unsigned: a negative one is >= k too (one max, not a min
            # and a max: this runs on every call)
            unsigned = np.dtype(f"u{labels.dtype.itemsize}") if labels.dtype.kind == "i" \
                and 0 <= n.arg[0] <= np.iinfo(labels.dtype).max else None
            guards.append(("labels", labels.name, n.arg[0], unsigned))
        elif n.op in GATHER_OPS and n.srcs[1].op is INPUT:
            ids, dim = _gather_span(n)
            guards.append(("indices", ids.name, dim))
    return guards


def _fails(guard: tuple, sizes: dict, arrays: dict) -> bool:
    if guard[0] == "labels":
        _, name, k, unsigned = guard
        labels = arrays[name]
        if not labels.size:
            return False
        if labels.dtype.kind in "iu":
            if labels.ndim == 1 and labels.size <= 32:  # a few labels: Python ints, exact
                values = labels.tolist()
                return min(values) < 0 or max(values) >= k
            if unsigned is not None:
                return bool(labels.view(unsigned).max() >= k)
        return bool(labels.min() < 0 or labels.max() >= k)
    if guard[0] == "indices":  # NumPy's range: [-size, size)
        _, name, dim = guard
        ids, k = arrays[name], size_of((dim,), sizes)
        return bool(ids.size) and bool(ids.min() < -k or ids.max() >= k)
    if guard[0] == "index":
        _, k, dim = guard
        return not -sizes[dim] <= k < sizes[dim]
    return size_of(guard[1], sizes) == 0
