"""The graph stage: nodes, operators, leaves, the reference evaluator, printing, SymPy."""

from symgrad.expr.einsum_lowering import *  # noqa: F403
from symgrad.expr.einsum_lowering import __all__ as _einsum
from symgrad.expr.evaluate import evaluate
from symgrad.expr.functions import *  # noqa: F403
from symgrad.expr.functions import __all__ as _functions
from symgrad.expr.leaves import const, input, inputs, param, params
from symgrad.expr.losses import *  # noqa: F403
from symgrad.expr.losses import __all__ as _losses
from symgrad.expr.node import Expr, OpDef, toposort
from symgrad.expr.printing import latex
from symgrad.expr.shape_vocabulary import *  # noqa: F403
from symgrad.expr.shape_vocabulary import __all__ as _shape_vocabulary
from symgrad.expr.shapes import ShapeError
from symgrad.expr.sympy_bridge import from_sympy, to_sympy
from symgrad.expr.table import ALL_OPS, count_ops
from symgrad.expr.tensors import *  # noqa: F403
from symgrad.expr.tensors import __all__ as _tensors
from symgrad.expr.tensors_reduce import *  # noqa: F403
from symgrad.expr.tensors_reduce import __all__ as _tensors_reduce

__all__ = [*_functions, *_losses, *_tensors, *_tensors_reduce, "evaluate", "const", "input",
           "inputs", "param", "params", "Expr", "OpDef", "toposort", "latex", "ShapeError",
           "from_sympy", "to_sympy", "ALL_OPS", "count_ops"]
__all__ += [*_shape_vocabulary, *_einsum]  # squeeze, stack, pad, einsum, ...
