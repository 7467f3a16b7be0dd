"""The loop IR shared by every backend: kernels of loop nests over scalar expressions.

A kernel reads and writes flat buffers (row-major) and runtime sizes; its body is a list of
statements: ``Loop`` (a counted loop over an index), ``Let`` (a named scalar), ``Store``
(write a buffer element), ``Acc`` (update an accumulator with +, max, min or argmax) and
``Alloc`` (a scratch buffer local to the kernel). Expressions are scalar: ``Load``, ``Op``
(an operator of the graph's table, applied elementwise to scalars), ``Const``, ``Dim`` (a
runtime size), index arithmetic (``IOp``) and ``Select``. Backends (LLVM, CUDA C) are
builders/printers over this IR; ``str(kernel)`` prints it for people.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from typing import Callable, Union

import numpy as np

# -- expressions -----------------------------------------------------------------------


@dataclass(frozen=True)
class Const:
    value: float | int | bool
    dtype: np.dtype


@dataclass(frozen=True)
class Dim:
    """A runtime size (a symbolic dimension such as ``N``); int64."""
    name: str


@dataclass(frozen=True)
class Index:
    """A loop index or other int64 variable."""
    name: str


@dataclass(frozen=True)
class IOp:
    """Integer index arithmetic and comparisons: ``+ - * // % < <= == and``, and
    ``clamp`` (``min(max(a, 0), b - 1)``: a safe index for a value a select discards)."""
    op: str
    a: Expr
    b: Expr


@dataclass(frozen=True)
class Load:
    buf: str
    offset: Expr  # flat element offset (int64)
    dtype: np.dtype


@dataclass(frozen=True)
class Op:
    """Operator ``op`` (an ``OpDef`` name) on scalar arguments; ``arg`` as in the graph."""
    op: str
    args: tuple
    dtype: np.dtype
    arg: object = None


@dataclass(frozen=True)
class Select:
    cond: Expr
    a: Expr
    b: Expr
    dtype: np.dtype


@dataclass(frozen=True)
class Local:
    """The value of a ``Let`` or an accumulator."""
    name: str
    dtype: np.dtype


Expr = Union[Const, Dim, Index, IOp, Load, Op, Select, Local]
# The runtime size a pass's combine step reads: how many threads ran the pass (each with its
# own partials, one after another in the partial's buffer). Not a user dimension's name.
THREADS = Dim("#threads")
INT = np.dtype("int64")
BOOL = np.dtype("bool")


def value_dtype(e: Expr) -> np.dtype:
    """The dtype of an expression (index arithmetic is int64)."""
    return e.dtype if hasattr(e, "dtype") else INT


def int_expr(v: Expr | int) -> Expr:
    return Const(v, INT) if isinstance(v, (int, np.integer)) else v


def iadd(a, b) -> Expr:
    a, b = int_expr(a), int_expr(b)
    if isinstance(a, Const) and a.value == 0:
        return b
    if isinstance(b, Const) and b.value == 0:
        return a
    if isinstance(a, Const) and isinstance(b, Const):
        return Const(a.value + b.value, INT)
    return IOp("+", a, b)


def imul(a, b) -> Expr:
    a, b = int_expr(a), int_expr(b)
    for x, y in ((a, b), (b, a)):
        if isinstance(x, Const) and x.value == 1:
            return y
        if isinstance(x, Const) and x.value == 0:
            return x
    if isinstance(a, Const) and isinstance(b, Const):
        return Const(a.value * b.value, INT)
    return IOp("*", a, b)


def size_expr(dim: int | str) -> Expr:
    return Const(dim, INT) if isinstance(dim, int) else Dim(dim)


def flat_offset(idx: tuple, shape: tuple) -> Expr:
    """Row-major offset of ``idx`` in an array of ``shape`` (Horner form)."""
    out: Expr = Const(0, INT)
    for i, d in zip(idx, shape):
        out = iadd(imul(out, size_expr(d)), i)
    return out


# -- statements ------------------------------------------------------------------------


@dataclass
class Loop:
    index: str
    start: Expr
    stop: Expr
    body: list
    reduction: bool = False  # accumulates: the backend may reassociate


@dataclass
class Let:
    name: str
    value: Expr


@dataclass
class Store:
    buf: str
    offset: Expr
    value: Expr


@dataclass
class AccInit:
    name: str
    dtype: np.dtype
    init: Expr
    kind: str = "sum"  # sum, max, min, argmax (then ``name`` holds the value, name_i the index)


@dataclass
class Acc:
    name: str
    kind: str
    value: Expr
    index: Expr | None = None  # argmax: the position of ``value``


@dataclass
class Alloc:
    """A scratch buffer of ``size`` elements, private to one run of the kernel."""
    buf: str
    dtype: np.dtype
    size: Expr


@dataclass
class Gemm:
    """``C (+)= op(A) @ op(B)`` on row-major blocks of buffers, by a BLAS call: ``C`` is
    ``m x n`` at ``c[c_offset]`` with row stride ``ldc``; ``op(A)`` is ``m x k`` (``A``
    stored ``k x m`` when ``trans_a``), ``op(B)`` is ``k x n``. ``accumulate`` adds into
    ``C`` (BLAS's beta = 1) instead of overwriting it. Only the CPU lowering emits it."""
    a: str
    a_offset: Expr
    lda: int
    trans_a: bool
    b: str
    b_offset: Expr
    ldb: int
    trans_b: bool
    c: str
    c_offset: Expr
    ldc: int
    m: Expr
    n: Expr
    k: Expr
    accumulate: bool
    dtype: np.dtype


@dataclass
class Region:
    """Statements a backend may compile as a function of its own, called where the region
    stands (the LLVM builder does: LLVM's passes are superlinear in a function's size, so a
    large model's code is cut into bounded regions, ``regions.py``). A region's ``Let``s
    are not read after it; it reads and updates the enclosing code's values, accumulators
    and buffers."""
    body: list


Stmt = Union[Loop, Let, Store, AccInit, Acc, Alloc, Gemm, Region]


def gemm_as_loops(g: Gemm, tag: str) -> list:
    """The same contraction as loops: ``k`` rank-1 updates of ``C``, row by row, the
    innermost loop along a row of ``C`` and of ``op(B)``. What a backend runs where a
    BLAS call's own cost is most of the work (a tile of one sample's weight gradient).
    ``tag`` keeps its loop indices apart from other statements'."""
    i, k, j = (Index(f"{name}.{tag}") for name in ("gi", "gk", "gj"))

    def element(buf: str, offset: Expr, row: Expr, col: Expr, ld: int, trans: bool) -> Load:
        r, c = (col, row) if trans else (row, col)
        return Load(buf, iadd(offset, iadd(imul(r, ld), c)), g.dtype)

    def along_row(col: Expr) -> tuple[Expr, Store]:
        at = iadd(g.c_offset, iadd(imul(i, g.ldc), col))
        return at, Store(g.c, at, Op("add", (Load(g.c, at, g.dtype), Op(
            "multiply", (a, element(g.b, g.b_offset, k, col, g.ldb, g.trans_b)), g.dtype)),
            g.dtype))

    def each_column(body: Callable[[Expr], Stmt]) -> list:
        # a short row of C written out (the vectorizer then packs it without masks)
        if isinstance(g.n, Const) and g.n.value <= 16:
            return [body(Const(c, INT)) for c in range(g.n.value)]
        return [Loop(j.name, Const(0, INT), g.n, [body(j)])]

    a = Local(f"ga.{tag}", g.dtype)
    rank1 = Loop(k.name, Const(0, INT), g.k, [
        Let(a.name, element(g.a, g.a_offset, i, k, g.lda, g.trans_a)),
        *each_column(lambda col: along_row(col)[1])])
    zero = [] if g.accumulate else each_column(
        lambda col: Store(g.c, along_row(col)[0], Const(0, g.dtype)))
    return [Loop(i.name, Const(0, INT), g.m, zero + [rank1])]


@dataclass
class Buffer:
    name: str
    dtype: np.dtype
    role: str  # input, param, const, output, partial (per-thread accumulator), temp
    shape: tuple = ()


@dataclass
class Kernel:
    """One compiled function: ``name(buffers, dims, start, stop)``. A batch kernel runs its
    outer loop over ``[start, stop)`` of the batch dimension, so threads split it."""
    name: str
    buffers: list[Buffer]
    dims: list[str]
    body: list
    batch_dim: str | None = None
    comment: str = ""
    fuses: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        head = f"kernel {self.name}({', '.join(b.name for b in self.buffers)})"
        if self.batch_dim:
            head += f"  # loop over {self.batch_dim} in [start, stop)"
        if self.comment:
            head += f"; {self.comment}"
        return "\n".join([head] + _fmt_block(self.body, 1))


# -- walking ---------------------------------------------------------------------


def collect(stmts: list, kind: type | tuple) -> list:
    """Every sub-expression of type ``kind`` in the statements (recursively), in order;
    a walk without recursion that builds nothing."""
    found: list = []
    stack: list = list(reversed(stmts))
    while stack:
        x = stack.pop()
        if isinstance(x, kind):
            found.append(x)
        if isinstance(x, Op):
            stack.extend(reversed(x.args))
            continue
        parts = _PARTS.get(type(x))
        if parts is None:
            parts = _PARTS[type(x)] = _parts_of(type(x))
        for name in parts:
            part = getattr(x, name)
            if isinstance(part, list):
                stack.extend(reversed(part))
            elif part is not None and not isinstance(part, str):  # (a Gemm's buffer names)
                stack.append(part)
    return found


_PARTS: dict[type, tuple[str, ...]] = {}  # loop IR node type -> the fields holding IR


def _parts_of(t: type) -> tuple[str, ...]:
    """The fields of a loop IR node that hold expressions or statements, last first (the
    walk pops them in order)."""
    if not is_dataclass(t) or t in (Const, Dim, Index, Local):
        return ()
    return tuple(reversed([f.name for f in fields(t)
                           if f.name in ("body", "start", "stop", "offset", "value", "init",
                                         "index", "cond", "a", "b", "size", "a_offset",
                                         "b_offset", "c_offset", "m", "n", "k")]))


def statements(body: list):
    """Every statement of ``body``, loop and region bodies included, in order; a walk
    without recursion."""
    stack = list(reversed(body))
    while stack:
        s = stack.pop()
        yield s
        if isinstance(s, (Loop, Region)):
            stack.extend(reversed(s.body))


# -- printing --------------------------------------------------------------------------


def fmt_expr(e: Expr) -> str:
    if isinstance(e, Const):
        return repr(e.value) if not isinstance(e.value, float) else f"{e.value:g}"
    if isinstance(e, (Dim, Index, Local)):
        return e.name
    if isinstance(e, IOp):
        return f"({fmt_expr(e.a)} {e.op} {fmt_expr(e.b)})"
    if isinstance(e, Load):
        return f"{e.buf}[{fmt_expr(e.offset)}]"
    if isinstance(e, Op):
        extra = [] if e.arg is None else [repr(e.arg)]
        return f"{e.op}({', '.join([fmt_expr(a) for a in e.args] + extra)})"
    if isinstance(e, Select):
        return f"({fmt_expr(e.cond)} ? {fmt_expr(e.a)} : {fmt_expr(e.b)})"
    raise TypeError(f"not a loop IR expression: {e!r}")


def _fmt_block(body: list, depth: int) -> list[str]:
    pad = "  " * depth
    out: list[str] = []
    for s in body:
        if isinstance(s, Loop):
            tag = "  # reduction" if s.reduction else ""
            out.append(f"{pad}for {s.index} in {fmt_expr(s.start)}..{fmt_expr(s.stop)}:{tag}")
            out += _fmt_block(s.body, depth + 1)
        elif isinstance(s, Region):
            out.append(f"{pad}region:  # compiled as a function of its own")
            out += _fmt_block(s.body, depth + 1)
        elif isinstance(s, Let):
            out.append(f"{pad}{s.name} = {fmt_expr(s.value)}")
        elif isinstance(s, Store):
            out.append(f"{pad}{s.buf}[{fmt_expr(s.offset)}] = {fmt_expr(s.value)}")
        elif isinstance(s, AccInit):
            out.append(f"{pad}{s.name} = {fmt_expr(s.init)}  # {s.kind} accumulator")
        elif isinstance(s, Acc):
            sym = {"sum": "+=", "prod": "*=", "max": "max=", "min": "min=",
                   "argmax": "argmax="}[s.kind]
            out.append(f"{pad}{s.name} {sym} {fmt_expr(s.value)}")
        elif isinstance(s, Alloc):
            out.append(f"{pad}{s.buf} = scratch {s.dtype}[{fmt_expr(s.size)}]")
        elif isinstance(s, Gemm):
            ta, tb = ".T" if s.trans_a else "", ".T" if s.trans_b else ""
            out.append(f"{pad}{s.c}[{fmt_expr(s.c_offset)}:] {'+=' if s.accumulate else '='} "
                       f"{s.a}[{fmt_expr(s.a_offset)}:]{ta} @ {s.b}[{fmt_expr(s.b_offset)}:]{tb}"
                       f"  # BLAS gemm m={fmt_expr(s.m)} n={fmt_expr(s.n)} k={fmt_expr(s.k)}")
        else:
            raise TypeError(f"not a loop IR statement: {s!r}")
    return out
