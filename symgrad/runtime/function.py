"""``sg.function``: a callable for a set of outputs on a chosen backend."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from symgrad.codegen.passes import Compilation
from symgrad.diff.simplify import simplify
from symgrad.expr.evaluate import (
    Outputs,
    as_outputs,
    check_dims_bound,
    check_feeds,
    graph_inputs,
    merge_feeds,
    run_graph,
    symbolic_dims,
)
from symgrad.runtime.compiled import Gate, commit_on_host, distinct_arrays
from symgrad.runtime.watch import strip_watches, watched_in

BACKENDS = ("numpy", "llvm", "cuda")


class Function:
    """Outputs bound to a backend; call it with feeds by input name. One output node in,
    one array out; a list in, a tuple out.

    >>> f = sg.function([loss, pred], backend="llvm")
    >>> value, p = f(x=xs, y=ys)           # or f({"x": xs, "y": ys})
    >>> print(f.plan)          # what each compiled kernel computes, pass by pass

    Outputs built with ``sg.watch``'d nodes report them in ``f.watched`` after each call.
    """

    def __init__(self, outputs: Outputs, backend: str = "llvm", fast_math: bool = False,
                 passes: Mapping[str, bool] | Compilation | None = None,
                 watch: bool = True):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, "
                             f"got {backend!r}")
        if fast_math and backend != "cuda":
            raise ValueError(f"fast_math=True is an option of backend='cuda' (its __expf, "
                             f"__logf, ... approximations), not of {backend!r}")
        self.backend = backend
        self.compilation = passes if isinstance(passes, Compilation) else \
            Compilation(passes)
        self.outputs, self._single = as_outputs(outputs)
        # watches (``watch=False``: the caller computes them, as a Step does) are computed
        # beside the outputs, in the same call; no backend sees the watch nodes themselves
        self._watches = watched_in(self.outputs) if watch else {}
        self.watched: dict[str, dict[str, object]] = {}
        self._calls = 0
        self.outputs = strip_watches(self.outputs)
        if self.compilation.on("simplify"):
            with self.compilation.timed("simplify"):
                simplified = simplify(self.outputs)
            # a rewrite that drops an input (x - x) would also drop the sizes it sets and
            # the checks on it: the outputs are then compiled as written
            if set(graph_inputs(simplified)) == set(graph_inputs(self.outputs)):
                self.outputs = simplified
        self.inputs = graph_inputs(self.outputs)
        self._dims = symbolic_dims(self.outputs)
        self._compiled = None
        self._all = self.outputs + [s for w in self._watches.values() for s in w.stats]
        if backend == "llvm":
            from symgrad.runtime.llvm_function import LLVMFunction

            self._compiled = LLVMFunction(self._all, self.compilation)
        elif backend == "cuda":
            from symgrad.runtime.cuda_function import CUDAFunction

            self._compiled = CUDAFunction(self._all, fast_math=fast_math,
                                          compilation=self.compilation)

    def __call__(self, feeds: Mapping[Any, Any] | None = None, /,
                 **keywords: Any) -> np.ndarray | tuple[np.ndarray, ...]:
        """The outputs for feeds given as keywords, a dict (``f(batch)``) or both; inputs
        the outputs do not use may be fed and are ignored."""
        results = self.run(keywords if feeds is None else
                           merge_feeds(feeds, keywords, "function call"))
        return results[0] if self._single else tuple(results)

    def run(self, feeds: dict[str, Any], commit: dict[int, Any] | None = None,
            gate: Gate | None = None, gate_zero: tuple[int, ...] | None = None) -> list:
        """Every output as a list. ``commit`` (output position -> parameter slot) makes
        those outputs the parameters' new values once the whole call has succeeded (on the
        GPU for ``cuda``, where they stay) and returns ``None`` in their place. ``gate``
        (results -> bool) sees every result before anything is committed: it may raise,
        or return False to commit nothing. ``gate_zero``: output positions which, all zero,
        mean the gate passes (a compiled call then commits in its native code and need not
        call ``gate``)."""
        if self._compiled is not None:
            results = self._compiled.call(feeds, commit, gate, gate_zero)
        else:
            arrays, sizes = check_feeds(self.inputs, feeds)
            check_dims_bound(self._dims, sizes)
            results = distinct_arrays(run_graph(self._all, arrays, sizes))
            results = commit_on_host(results, commit if gate is None or gate(results)
                                     else None)
        if not self._watches:
            return results
        self._calls += 1
        seen = results[len(self.outputs):]
        for i, w in enumerate(self._watches.values()):
            self.watched[w.name] = w.record(seen[4 * i:4 * i + 4], self._calls)
        return results[:len(self.outputs)]

    def _need_compiled(self, what: str):
        if self._compiled is None:
            raise AttributeError(f"{what} exists for compiled backends; this function runs on "
                                 f"{self.backend!r}")
        return self._compiled

    @property
    def source(self) -> str:
        """The kernel source: LLVM IR as generated (``optimized_source`` after -O3), or
        CUDA C."""
        return self._need_compiled("source").source

    @property
    def optimized_source(self) -> str:
        return self._need_compiled("optimized_source").optimized_source

    @property
    def asm(self) -> str:
        """The machine code, as assembly text."""
        return self._need_compiled("asm").asm

    def cubin(self, arch: str = "sm_80") -> bytes:
        """cuda: the kernels compiled for ``arch`` (``"sm_80"``, ``"sm_90"``; no GPU needed)."""
        return self._need_compiled("cubin").cubin(arch)

    @property
    def timings(self) -> dict[str, float]:
        """Seconds each compiler pass took (``codegen/passes.py``; print
        ``f.compilation.report()`` for a table)."""
        return dict(self.compilation.timings)

    @property
    def plan(self) -> str:
        """The kernels and what each fuses, pass by pass over the batch."""
        return self._need_compiled("plan").plan

    @property
    def loop_ir(self) -> str:
        """The plan and every kernel in the shared loop IR."""
        return self._need_compiled("loop_ir").loop_ir

    def __repr__(self) -> str:
        names = ", ".join(sorted(self.inputs))
        return f"<symgrad.Function backend={self.backend!r} inputs=({names})>"


def function(outputs: Outputs, backend: str = "llvm", fast_math: bool = False,
             passes: Mapping[str, bool] | None = None) -> Function:
    """Compile ``outputs`` (one node or a list) for a backend: ``"llvm"`` (the default,
    vectorized multi-core CPU code), ``"cuda"`` (CUDA C for NVIDIA GPUs; without a GPU it
    still generates and compiles the source, and raises when called), ``"numpy"`` (the
    reference interpreter). ``fast_math=True`` (cuda only) uses the GPU's approximate
    ``__expf``/``__logf``/``__sinf``/``__cosf`` for float32. ``passes`` switches compiler
    passes on or off (``{"simplify": False}`` compiles the outputs as written instead of
    simplified: ``log(1 + exp(x))`` is then not ``softplus(x)``; ``"fuse"``,
    ``"blas"``, ``"optimize"``: ``codegen/passes.py``); ``f.timings`` says where the compile
    time went.

    >>> f = sg.function(sg.mean((w * x - y) ** 2))
    >>> f(x=[1.0, 2.0], y=[2.0, 4.0])
    """
    return Function(outputs, backend, fast_math, passes)
