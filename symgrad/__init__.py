"""symgrad: models written as formulas, differentiated symbolically, compiled to kernels.

>>> import symgrad as sg
>>> x1, x2, y = sg.inputs("x1 x2 y")
>>> w1, w2, b = sg.params("w1 w2 b", init=0.0)
>>> loss = sg.mean((w1 * x1 + w2 * x2 + b - y) ** 2)
>>> print(loss)
mean((w1*x1 + w2*x2 + b - y)**2)
"""

from symgrad.diff import grad, hessian, hvp, jacobian, simplify
from symgrad.expr import *  # noqa: F403
from symgrad.expr import __all__ as _expr_all
from symgrad.expr import init
from symgrad.expr.evaluate import params_of
from symgrad.runtime import (
           Function,
           distributed,  # comm=...: data-parallel over MPI (mpi4py, lazily)
           function,
           get_num_threads,
           nn,
           optim,
           set_num_threads,
)
from symgrad.runtime.checkpoint import CheckpointError, load, save
from symgrad.runtime.fit import History, fit
from symgrad.runtime.minimize import minimize
from symgrad.runtime.step import NonFiniteError, Step, compile_step
from symgrad.runtime.watch import watch

__version__ = "0.1.0"
__all__ = [*_expr_all, "init", "params_of", "Function", "function", "grad", "jacobian",
           "hessian", "hvp", "simplify", "set_num_threads", "get_num_threads", "nn", "optim",
           "fit", "History", "minimize", "Step", "compile_step", "NonFiniteError", "watch",
           "save", "load", "CheckpointError", "distributed"]
