"""Every graph builder in one namespace (what ``Expr``'s operators call)."""

from symgrad.expr.functions import *  # noqa: F403
from symgrad.expr.functions import Operand  # noqa: F401
from symgrad.expr.losses import *  # noqa: F403
from symgrad.expr.tensors import *  # noqa: F403
from symgrad.expr.tensors_reduce import *  # noqa: F403
