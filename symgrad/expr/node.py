"""The one node type: an immutable, hash-consed ``Expr``.

Building the same operator over the same operands with the same argument returns the very
same object (a weak intern table makes sure of it), so equal subexpressions are one node:
the graph is a DAG, common-subexpression elimination is free, and node identity is node
equality. Python ``==`` therefore keeps its identity meaning on nodes; elementwise equality
is :func:`symgrad.equal`.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from symgrad.expr.shapes import Shape, fmt

if TYPE_CHECKING:
    from symgrad.expr.api import Operand

# Operator kinds: the scheduler and the rules ask ``op.kind == ELEMENTWISE``.
LEAF, ELEMENTWISE, REDUCE, SHAPE, CONTRACT = "leaf", "elementwise", "reduce", "shape", "contract"

# Properties an operator may have (``op.has(COMMUTATIVE)``), besides its kind:
# ZERO_DERIVATIVE: piecewise constant (comparisons, sign, floor): every cotangent is 0;
# NOT_DIFFERENTIABLE: no derivative is defined (the rules refuse it);
# NO_SYMPY: SymPy has no counterpart (``to_sympy`` raises, naming it);
# INTERNAL: built by symgrad itself (derivatives, the simplifier), no public function.
COMMUTATIVE, ZERO_DERIVATIVE, NOT_DIFFERENTIABLE = "commutative", "zero_derivative", \
    "not_differentiable"
NO_SYMPY, INTERNAL = "no_sympy", "internal"


@dataclass(frozen=True, eq=False)
class OpDef:
    """Everything the graph stage knows about one operator, declared in one stanza.

    ``infer(srcs, arg) -> (shape, dtype)`` is the shape and dtype rule; ``numpy(*values,
    arg)`` the reference evaluation; ``fn`` and ``infix``/``prec`` the printing; ``sympy``
    the SymPy spelling (``None``: not expressible); ``vjp(g, out, *srcs)`` the
    vector-Jacobian rule, one cotangent (or ``None`` for zero) per source, in the output's
    shape (the reverse sweep undoes broadcasting). ``jvp(tangents, out, nb)`` is the
    forward rule of a non-elementwise operator for tangents with ``nb`` extra leading axes
    (elementwise operators derive theirs from ``vjp``). Backend spellings are not here:
    each backend keeps its own table keyed by ``OpDef``, and compiles ``decompose`` for an
    operator it does not spell.

    The public function is made from the stanza: ``doc`` is its docstring, ``arity`` its
    number of operands, ``promote`` how operands are promoted (``"same"``: NumPy's common
    dtype; ``"float"``: integers become float64 first; ``"exact_int"``: an integer operand
    is returned as is, as ``np.floor`` of an int is that int) and ``param`` the keyword
    that becomes ``arg`` (``(name, default, convert)``); ``builder`` replaces the made one
    where the rule is not one of these. ``decompose(*srcs[, arg])`` writes the operator
    with others (a backend without a spelling of its own compiles that); ``ufunc`` is the
    NumPy ufunc that builds it on expressions (``np.arcsin(x)``); ``props`` its properties
    (``COMMUTATIVE``, ``ZERO_DERIVATIVE``, ``NO_SYMPY``, ...), asked with :meth:`has`.
    """

    name: str
    kind: str
    infer: Callable[..., tuple[Shape, np.dtype]]
    numpy: Callable[..., np.ndarray] | None
    fn: str = ""
    infix: str = ""
    prec: int = 100
    fmt_arg: Callable[[Any], str] | None = None
    latex: str | Callable[..., str] | None = None
    sympy: Callable[..., Any] | None = None
    vjp: Callable[..., tuple] | None = None
    jvp: Callable[..., Any] | None = None
    commutative: bool = False
    extra: dict = field(default_factory=dict)
    arity: int = 0
    doc: str = ""
    promote: str = "same"
    param: tuple | None = None
    builder: Callable[..., Any] | None = None
    decompose: Callable[..., Any] | None = None
    ufunc: Any = None
    props: frozenset = frozenset()

    def has(self, prop: str) -> bool:
        """Whether the operator has ``prop``: its kind (``ELEMENTWISE``, ``REDUCE``, ...) or
        one of its properties (``COMMUTATIVE``, ``ZERO_DERIVATIVE``, ...)."""
        return prop == self.kind or prop in self.props or (
            prop == COMMUTATIVE and self.commutative)

    def __repr__(self) -> str:
        return f"Op.{self.name}"


_interned: weakref.WeakValueDictionary[tuple, Expr] = weakref.WeakValueDictionary()


class Expr:
    """A node of a symgrad graph: an operator applied to source nodes, with a shape and dtype.

    Nodes are built by symgrad's functions and Python operators, never directly::

        >>> import symgrad as sg
        >>> x = sg.input("x")
        >>> (x * 2 + 1) is (x * 2 + 1)   # hash-consed: the same node
        True
        >>> (x * 2 + 1).shape
        ('N',)
    """

    __slots__ = ("op", "dtype", "shape", "srcs", "arg", "_hash", "__weakref__")
    op: OpDef
    dtype: np.dtype
    shape: Shape
    srcs: tuple[Expr, ...]
    arg: Any

    def __new__(cls, op: OpDef, srcs: tuple[Expr, ...] = (), arg: Any = None) -> Expr:
        shape, dtype = op.infer(srcs, arg)
        key = (op, dtype, shape, srcs, arg)
        node = _interned.get(key)
        if node is None:
            node = object.__new__(cls)
            for name, value in zip(("op", "dtype", "shape", "srcs", "arg"), key):
                object.__setattr__(node, name, value)
            object.__setattr__(node, "_hash", hash(key))
            _interned[key] = node
        return node

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "value":
            object.__getattribute__(type(self), "value").__set__(self, value)
            return
        raise AttributeError(f"symgrad nodes are immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"symgrad nodes are immutable; cannot delete {name!r}")

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self):  # nodes are interned; pickling would break identity
        raise TypeError("symgrad expressions cannot be pickled")

    # -- facts --------------------------------------------------------------------------
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def name(self) -> str:
        """The name of an input or parameter (``""`` for other nodes)."""
        if self.op.kind == LEAF and (_is_param(self) or _is_input(self)):
            return self.arg.name
        return ""

    @property
    def value(self) -> np.ndarray:
        """The current value of a parameter: a read-only snapshot, which later training
        steps do not change (``history.append(w.value)`` records each step's value). To
        set it, assign: ``w.value = new`` (checked against the shape and dtype)."""
        if not _is_param(self):
            raise AttributeError(f"only parameters have a value; this is a {self.op.name} node")
        return self.arg.snapshot()

    @value.setter
    def value(self, new: Any) -> None:
        if not _is_param(self):
            raise AttributeError(f"only parameters have a value; this is a {self.op.name} node")
        self.arg.assign(new)

    def walk(self) -> Iterator[Expr]:
        """Every node this one depends on, itself included, sources before users."""
        return iter(toposort([self]))

    # -- printing -----------------------------------------------------------------------
    def __str__(self) -> str:
        from symgrad.expr.printing import to_str

        return to_str(self)

    def __repr__(self) -> str:
        label = self.name or self.op.name
        return f"<{label}: {self.op.kind} {self.dtype} {fmt(self.shape)}>"

    def _repr_latex_(self) -> str:
        from symgrad.expr.printing import latex

        return f"${latex(self)}$"

    # -- operators (NumPy semantics) ----------------------------------------------------
    def __add__(self, o: Operand) -> Expr: return F.add(self, o)
    def __radd__(self, o: Operand) -> Expr: return F.add(o, self)
    def __sub__(self, o: Operand) -> Expr: return F.subtract(self, o)
    def __rsub__(self, o: Operand) -> Expr: return F.subtract(o, self)
    def __mul__(self, o: Operand) -> Expr: return F.multiply(self, o)
    def __rmul__(self, o: Operand) -> Expr: return F.multiply(o, self)
    def __truediv__(self, o: Operand) -> Expr: return F.divide(self, o)
    def __rtruediv__(self, o: Operand) -> Expr: return F.divide(o, self)
    def __pow__(self, o: Operand) -> Expr: return F.power(self, o)
    def __rpow__(self, o: Operand) -> Expr: return F.power(o, self)
    def __matmul__(self, o: Operand) -> Expr: return F.matmul(self, o)
    def __rmatmul__(self, o: Operand) -> Expr: return F.matmul(o, self)
    def __neg__(self) -> Expr: return F.negative(self)
    def __pos__(self) -> Expr: return self
    def __abs__(self) -> Expr: return F.abs(self)
    def __lt__(self, o: Operand) -> Expr: return F.less(self, o)
    def __le__(self, o: Operand) -> Expr: return F.less_equal(self, o)
    def __gt__(self, o: Operand) -> Expr: return F.greater(self, o)
    def __ge__(self, o: Operand) -> Expr: return F.greater_equal(self, o)
    def __getitem__(self, key: Any) -> Expr: return F.index(self, key)

    # NumPy's protocols: np.exp(x), np.sum(x, axis=1), np.ones(3) + x build nodes
    # (the tables are in numpy_protocol.py)
    __array_priority__ = 1000

    def __array_ufunc__(self, ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        from symgrad.expr.numpy_protocol import array_ufunc

        return array_ufunc(ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs) -> Any:
        from symgrad.expr.numpy_protocol import array_function

        return array_function(func, types, args, kwargs)

    def __bool__(self) -> bool:
        raise TypeError("a symgrad expression has no truth value; use sg.where for choices")

    def __iter__(self):
        raise TypeError("a symgrad expression is not iterable; index it instead")

    @property
    def T(self) -> Expr:  # noqa: N802 - NumPy's name
        return F.transpose(self)

    def sum(self, axis=None, keepdims: bool = False) -> Expr:
        return F.sum(self, axis, keepdims)

    def mean(self, axis=None, keepdims: bool = False) -> Expr:
        return F.mean(self, axis, keepdims)

    def reshape(self, *shape) -> Expr:
        return F.reshape(self, shape[0] if len(shape) == 1 else shape)

    def astype(self, dtype) -> Expr:
        return F.cast(self, dtype)

    # NumPy's shape conveniences (symgrad/expr/shape_vocabulary.py)
    @property
    def size(self) -> int:
        """The number of elements (an int; ``TypeError`` naming a symbolic dimension)."""
        return _vocabulary().size_of_expr(self)

    def __len__(self) -> int:
        return _vocabulary().len_of_expr(self)

    def __array__(self, dtype=None, copy=None):
        # With __len__ NumPy would take a node for a sequence (and fail to iterate it):
        # say instead why a node is no array, wherever one is converted (lists, feeds)
        raise TypeError(f"a symgrad expression ({self.op.name} of shape {fmt(self.shape)}) "
                        f"has no NumPy value until it is computed: use sg.evaluate(expr, "
                        f"**feeds) or a compiled sg.function")

    def squeeze(self, axis=None) -> Expr:
        return _vocabulary().squeeze(self, axis)

    def ravel(self) -> Expr:
        return _vocabulary().ravel(self)

    def flatten(self) -> Expr:
        return _vocabulary().flatten(self)

    def diagonal(self, offset: int = 0, axis1: int = 0, axis2: int = 1) -> Expr:
        return _vocabulary().diagonal(self, offset, axis1, axis2)

    def trace(self, offset: int = 0, axis1: int = 0, axis2: int = 1, dtype=None) -> Expr:
        return _vocabulary().trace(self, offset, axis1, axis2, dtype)


def _vocabulary() -> Any:
    from symgrad.expr import shape_vocabulary  # it imports this module

    return shape_vocabulary


def _is_param(node: Expr) -> bool:
    from symgrad.expr.leaves import PARAM  # leaves imports this module

    return node.op is PARAM


def _is_input(node: Expr) -> bool:
    from symgrad.expr.leaves import INPUT

    return node.op is INPUT


def toposort(roots: list[Expr]) -> list[Expr]:
    """All nodes reachable from ``roots``, each after its sources (iteratively: deep graphs
    must not hit Python's recursion limit)."""
    order: list[Expr] = []
    seen: set[int] = set()
    for root in roots:
        if id(root) in seen:
            continue
        stack = [(root, False)]
        while stack:
            node, done = stack.pop()
            if done:
                order.append(node)
                continue
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.append((node, True))
            stack.extend((s, False) for s in reversed(node.srcs) if id(s) not in seen)
    return order


class _Builders:
    """The builder functions, imported on first use (they import this module)."""

    def __getattr__(self, name: str) -> Any:
        from symgrad.expr import api

        return getattr(api, name)


F = _Builders()
