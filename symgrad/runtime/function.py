"""``sg.function``: a callable for a set of outputs on a chosen backend."""

from __future__ import annotations

from typing import Any

import numpy as np

from symgrad.expr.evaluate import (
    Outputs,
    as_outputs,
    check_dims_bound,
    check_feeds,
    graph_inputs,
    run_graph,
)

BACKENDS = ("numpy", "llvm", "cuda")


class Function:
    """Outputs bound to a backend; call it with feeds by input name.

    >>> f = sg.function([loss, pred], backend="numpy")
    >>> value, p = f(x=xs, y=ys)
    """

    def __init__(self, outputs: Outputs, backend: str = "numpy"):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, "
                             f"got {backend!r}")
        if backend != "numpy":
            raise NotImplementedError(f"backend {backend!r} is not built yet; use "
                                      "backend='numpy'")
        self.backend = backend
        self.outputs, self._single = as_outputs(outputs)
        self.inputs = graph_inputs(self.outputs)

    def __call__(self, **feeds: Any) -> np.ndarray | tuple[np.ndarray, ...]:
        arrays, sizes = check_feeds(self.inputs, feeds)
        check_dims_bound(self.outputs, sizes)
        results = run_graph(self.outputs, arrays, sizes)
        return results[0] if self._single else tuple(results)

    def __repr__(self) -> str:
        names = ", ".join(sorted(self.inputs))
        return f"<symgrad.Function backend={self.backend!r} inputs=({names})>"


def function(outputs: Outputs, backend: str = "numpy") -> Function:
    """Bind ``outputs`` (one node or a list) to a backend; one node in, one array out.

    >>> f = sg.function(sg.mean((w * x - y) ** 2))
    >>> f(x=[1.0, 2.0], y=[2.0, 4.0])
    """
    return Function(outputs, backend)
