"""``sg.minimize``: full-batch minimization through SciPy with a compiled value and
gradient."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from symgrad.diff import grad
from symgrad.expr.leaves import PARAM
from symgrad.expr.node import Expr, toposort
from symgrad.runtime.function import Function

__all__ = ["minimize"]


def minimize(loss: Expr, data: Mapping[str, Any] | None = None, method: str = "L-BFGS-B",
             params: Sequence[Expr] | None = None, backend: str = "llvm", comm: Any = None,
             **options: Any) -> Any:
    """Minimize scalar ``loss`` over its parameters on the whole of ``data`` with
    ``scipy.optimize.minimize``; the solution is written into the parameters and SciPy's
    result object is returned. ``options`` go to SciPy (``tol``, ``options={...}``).

    ``comm`` (an mpi4py communicator): the data are split across processes, each passing
    its own shard; every value and gradient is that of the whole data (the pass's sums
    reduced across the processes), so every process takes the same iterates from rank 0's
    starting point and ends with the same solution.

    >>> result = sg.minimize(loss, {"x1": a1, "x2": a2, "y": t})
    >>> result.success, w1.value
    """
    try:
        from scipy import optimize
    except ImportError:
        raise ImportError("sg.minimize needs SciPy: pip install scipy") from None
    params = list(params) if params is not None else [
        n for n in toposort([loss]) if n.op is PARAM]
    if not params:
        raise ValueError("minimize: the loss depends on no parameter")
    fn = Function([loss, *grad(loss, params)], backend)
    if comm is not None:
        from symgrad.runtime import distributed

        fn = distributed.DataParallel(fn, comm, what="minimize(comm=...)")
        distributed.broadcast_params(comm, [p.arg for p in params])
    feeds = dict(data or {})
    sizes = [p.value.size for p in params]
    splits = np.cumsum(sizes)[:-1]
    start = np.concatenate([p.value.ravel() for p in params]).astype(np.float64)
    saved = [p.value.copy() for p in params]

    def set_params(flat: np.ndarray) -> None:
        for p, part in zip(params, np.split(flat, splits)):
            p.value = part.reshape(p.value.shape)

    def value_and_grad(flat: np.ndarray) -> tuple[float, np.ndarray]:
        set_params(flat)
        value, *grads = fn(**feeds)
        return float(value), np.concatenate([np.ravel(g) for g in grads]).astype(np.float64)

    try:
        result = optimize.minimize(value_and_grad, start, jac=True, method=method, **options)
    except BaseException:
        for p, v in zip(params, saved):  # a failure leaves the parameters as they were
            p.value = v
        raise
    set_params(result.x)
    return result
